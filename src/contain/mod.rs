//! How an agent run is contained: the one place that knows what this operating system
//! offers and turns a run's limits into it. [`crate::agent`] asks it for a [`Jail`] per
//! attempt, configures the child with it, and asks it to signal and finally kill every
//! process of the run; [`env`] decides what the agent may see of the daemon's environment
//! and what must be redacted from what it says.
//!
//! The mode is decided once, at start ([`init`]), and said in the log and in `/health`:
//!
//! - `cgroup_v2`: the daemon's cgroup is delegated (systemd `Delegate=yes`); each run gets
//!   a child cgroup with `memory.max` and `pids.max`, ended with `cgroup.kill`.
//! - `cgroup_v1`: the `memory`, `pids` and `freezer` hierarchies are writable; each run
//!   gets a cgroup in each, ended with freeze, SIGKILL to every member, thaw.
//! - `process_group`: neither; the run is its process group plus `RLIMIT_DATA` and
//!   `RLIMIT_NPROC`, and processes that left the group are found by their `BOG_RUN_ID`
//!   entry in `/proc`.
//!
//! Landlock, for `limits.filesystem: "working_dir"`, is independent of the mode. A port
//! to another OS adds its mode here (a Windows job object, say) and leaves the callers be.

pub mod env;

#[cfg(target_os = "linux")]
mod cgroup;
#[cfg(target_os = "linux")]
mod landlock;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use serde_json::{json, Value};

/// How runs are contained on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    CgroupV2,
    CgroupV1,
    ProcessGroup,
}

impl Mode {
    /// The name used in the log, `/health` and the docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::CgroupV2 => "cgroup_v2",
            Mode::CgroupV1 => "cgroup_v1",
            Mode::ProcessGroup => "process_group",
        }
    }

    /// Whether runs get a cgroup.
    pub fn is_cgroup(self) -> bool {
        self != Mode::ProcessGroup
    }
}

/// What `config.json` `containment` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preference {
    /// The best the machine offers: cgroup v2, else v1, else process group.
    Auto,
    /// Process group and rlimits even where cgroups work.
    ProcessGroup,
}

/// The machine's containment, detected once.
#[derive(Debug)]
pub struct Containment {
    mode: Mode,
    #[cfg(target_os = "linux")]
    tree: Option<cgroup::Tree>,
    /// Why there is no cgroup (None when there is one).
    no_cgroup: Option<String>,
    /// The Landlock ABI version, or why Landlock cannot be used.
    landlock: &'static Result<i32, String>,
}

/// The Landlock ABI version, or why Landlock cannot be used. Probed once, with no side
/// effect (unlike [`init`]), so the CLI may ask too.
pub fn landlock_status() -> &'static Result<i32, String> {
    static LANDLOCK: OnceLock<Result<i32, String>> = OnceLock::new();
    LANDLOCK.get_or_init(|| {
        #[cfg(target_os = "linux")]
        return landlock::probe();
        #[cfg(not(target_os = "linux"))]
        return Err("Landlock is Linux only".to_string());
    })
}

static CURRENT: OnceLock<Containment> = OnceLock::new();

/// Detects the containment (once per process) and returns it. The daemon calls it at start,
/// before its threads exist: with cgroup v2 it moves itself into a leaf cgroup.
pub fn init(pref: Preference) -> &'static Containment {
    CURRENT.get_or_init(|| Containment::detect(pref))
}

/// The containment in force ([`init`] with [`Preference::Auto`] if nobody called it).
pub fn current() -> &'static Containment {
    init(Preference::Auto)
}

impl Containment {
    #[cfg(target_os = "linux")]
    fn detect(pref: Preference) -> Containment {
        let landlock = landlock_status();
        let (mode, tree, no_cgroup) = match pref {
            Preference::ProcessGroup => (
                Mode::ProcessGroup,
                None,
                Some("config.json sets containment to process_group".to_string()),
            ),
            Preference::Auto => match cgroup::detect() {
                Ok(t @ cgroup::Tree::V2 { .. }) => (Mode::CgroupV2, Some(t), None),
                Ok(t @ cgroup::Tree::V1 { .. }) => (Mode::CgroupV1, Some(t), None),
                Err(cgroup::NotAvailable(why)) => (Mode::ProcessGroup, None, Some(why)),
            },
        };
        Containment {
            mode,
            tree,
            no_cgroup,
            landlock,
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn detect(_pref: Preference) -> Containment {
        Containment {
            mode: Mode::ProcessGroup,
            no_cgroup: Some("cgroups are Linux only".into()),
            landlock: landlock_status(),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether `limits.filesystem: "working_dir"` can be enforced.
    pub fn landlock_available(&self) -> bool {
        self.landlock.is_ok()
    }

    /// One sentence for the start-up log.
    pub fn summary(&self) -> String {
        let runs = match self.mode {
            Mode::CgroupV2 | Mode::CgroupV1 => format!(
                "each run gets its own {} cgroup (memory_mb: memory limit, max_processes: pids limit, every process killed at the run's end)",
                if self.mode == Mode::CgroupV2 { "v2" } else { "v1 memory+pids+freezer" }
            ),
            Mode::ProcessGroup => format!(
                "no cgroup ({}); each run is a process group with RLIMIT_DATA for memory_mb and RLIMIT_NPROC for max_processes, escapees found by BOG_RUN_ID",
                self.no_cgroup.as_deref().unwrap_or("")
            ),
        };
        let ll = match self.landlock {
            Ok(v) => format!("Landlock ABI {v}: filesystem \"working_dir\" is enforced"),
            Err(e) => {
                format!("no Landlock ({e}): runs of jobs with filesystem \"working_dir\" fail")
            }
        };
        format!("containment {}: {runs}; {ll}", self.mode.as_str())
    }

    /// The `containment` object of `/health`.
    pub fn health(&self) -> Value {
        let mut v = json!({
            "mode": self.mode.as_str(),
            "landlock": self.landlock.is_ok(),
        });
        if let Some(why) = &self.no_cgroup {
            v["no_cgroup_reason"] = why.clone().into();
        }
        match self.landlock {
            Ok(abi) => v["landlock_abi"] = (*abi).into(),
            Err(e) => v["landlock_reason"] = e.clone().into(),
        }
        v
    }

    /// Makes the containment of one attempt of a run.
    pub fn prepare(&self, req: &Request<'_>) -> Result<Jail, PrepareError> {
        static UNIQUE: AtomicU64 = AtomicU64::new(1);
        // The pid too: in cluster mode a run retried after its node died can start again
        // on another daemon of the same machine while the old attempt's cgroup is left.
        let unique = (u64::from(std::process::id()) << 32)
            | (UNIQUE.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff);
        let mut jail = Jail {
            mode: self.mode,
            #[cfg(target_os = "linux")]
            cgroup: None,
            #[cfg(target_os = "linux")]
            landlock: None,
            tmpdir: None,
            cpu_seconds: req.cpu_seconds,
            rlimit_data_mb: None,
            rlimit_nproc: None,
            escaped_signalled: AtomicUsize::new(0),
        };
        if let Some(work) = req.confine_writes_to {
            if let Err(e) = self.landlock {
                return Err(PrepareError::NoLandlock(e.clone()));
            }
            let tmp = std::env::temp_dir().join(format!("bog-run-{}-{unique}", req.name));
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&tmp)
                .map_err(|source| PrepareError::TmpDir {
                    path: tmp.clone(),
                    source,
                })?;
            jail.tmpdir = Some(tmp.clone());
            #[cfg(target_os = "linux")]
            {
                jail.landlock =
                    Some(landlock::write_ruleset(&[work, &tmp]).map_err(PrepareError::Landlock)?);
            }
            #[cfg(not(target_os = "linux"))]
            let _ = work;
        }
        match self.mode {
            Mode::ProcessGroup => {
                jail.rlimit_data_mb = req.memory_mb;
                jail.rlimit_nproc = req.max_processes;
            }
            Mode::CgroupV1 | Mode::CgroupV2 =>
            {
                #[cfg(target_os = "linux")]
                if let Some(tree) = &self.tree {
                    jail.cgroup = Some(
                        cgroup::RunCgroup::create(
                            tree,
                            req.name,
                            unique,
                            req.memory_mb,
                            req.max_processes,
                        )
                        .map_err(PrepareError::Cgroup)?,
                    );
                }
            }
        }
        Ok(jail)
    }

    /// Kills what a previous daemon's run `run_id` left running (the daemon died before
    /// the run ended): its cgroup, and processes carrying its `BOG_RUN_ID`.
    pub fn kill_leftovers(&self, run_id: &str) -> usize {
        #[allow(unused_mut)]
        let mut killed = 0;
        #[cfg(target_os = "linux")]
        if let Some(t) = &self.tree {
            killed += cgroup::kill_leftovers(t, run_id);
        }
        killed + sweep_marked(&format!("BOG_RUN_ID={run_id}"))
    }
}

use std::os::unix::fs::DirBuilderExt;

/// Why a run's containment could not be made; the agent is not started (fail closed).
#[derive(Debug)]
pub enum PrepareError {
    /// `limits.filesystem: "working_dir"` on a machine without Landlock, and why.
    NoLandlock(String),
    /// The Landlock ruleset could not be built.
    Landlock(String),
    /// The private `$TMPDIR` could not be made.
    TmpDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The run's cgroup could not be made or limited.
    #[cfg(target_os = "linux")]
    Cgroup(cgroup::CgroupError),
}

impl std::fmt::Display for PrepareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrepareError::NoLandlock(why) => write!(
                f,
                "limits.filesystem is \"working_dir\" but this machine cannot enforce it: {why}; the agent was not started"
            ),
            PrepareError::Landlock(e) => write!(f, "{e}; the agent was not started"),
            PrepareError::TmpDir { path, source } => write!(
                f,
                "cannot create the run's TMPDIR {}: {source}; the agent was not started",
                path.display()
            ),
            #[cfg(target_os = "linux")]
            PrepareError::Cgroup(e) => {
                write!(f, "cannot set up the run's cgroup: {e}; the agent was not started")
            }
        }
    }
}

impl std::error::Error for PrepareError {}

/// The limits of one run, as the containment needs them.
#[derive(Clone, Debug, Default)]
pub struct Request<'a> {
    /// Names the run's cgroup and `$TMPDIR` (the run id).
    pub name: &'a str,
    pub memory_mb: Option<u64>,
    pub max_processes: Option<u64>,
    pub cpu_seconds: Option<u64>,
    /// `limits.filesystem: "working_dir"`: writes only beneath this dir and the `$TMPDIR`.
    pub confine_writes_to: Option<&'a Path>,
}

/// The containment of one attempt. Dropping it kills whatever is left in the run's cgroup,
/// removes the cgroup and the private `$TMPDIR`.
pub struct Jail {
    mode: Mode,
    #[cfg(target_os = "linux")]
    cgroup: Option<cgroup::RunCgroup>,
    #[cfg(target_os = "linux")]
    landlock: Option<std::os::fd::OwnedFd>,
    tmpdir: Option<PathBuf>,
    cpu_seconds: Option<u64>,
    rlimit_data_mb: Option<u64>,
    rlimit_nproc: Option<u64>,
    /// Escaped processes (outside the run's process group) that a SIGKILL to the whole
    /// cgroup (a timeout or shutdown) already killed, so that [`Jail::kill_all`] still counts
    /// them: they may be gone from the cgroup by the time it looks.
    escaped_signalled: AtomicUsize,
}

/// What the kernel recorded about a run's limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Processes of the run killed by the OOM killer at the memory limit (cgroup modes).
    pub oom_kills: u64,
    /// Forks refused at the pids limit (cgroup modes).
    pub pids_max_hits: u64,
}

/// Processes killed when the run ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// All processes of the run still alive after the agent itself ended.
    pub killed: usize,
    /// Of those, the ones that had left the agent's process group.
    pub escaped: usize,
}

impl Jail {
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Environment entries the jail adds (`TMPDIR` for a confined run).
    pub fn env(&self) -> Vec<(String, String)> {
        match &self.tmpdir {
            Some(t) => vec![("TMPDIR".into(), t.display().to_string())],
            None => Vec::new(),
        }
    }

    /// New process group, clean signal mask, the run's cgroup, rlimits and Landlock,
    /// applied in the child between fork and exec.
    pub fn configure(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        #[cfg(target_os = "linux")]
        let join: Vec<i32> = self
            .cgroup
            .as_ref()
            .map(|c| c.join_fds())
            .unwrap_or_default();
        #[cfg(target_os = "linux")]
        let landlock_fd: Option<i32> = self.landlock.as_ref().map(landlock::raw);
        let cpu_seconds = self.cpu_seconds;
        let data_mb = self.rlimit_data_mb;
        let nproc = self.rlimit_nproc;
        // SAFETY: the closure only makes system calls (sigprocmask, write, setrlimit, prctl,
        // landlock_restrict_self) on values computed before the fork; it does not allocate.
        unsafe {
            cmd.pre_exec(move || {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                // Into the cgroup first: from here on every descendant is the run's.
                #[cfg(target_os = "linux")]
                for fd in &join {
                    if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(cpu) = cpu_seconds {
                    // SIGXCPU at the soft limit, SIGKILL a few seconds later.
                    set_rlimit(libc::RLIMIT_CPU, cpu, cpu.saturating_add(5))?;
                }
                if let Some(mb) = data_mb {
                    // RLIMIT_DATA counts private writable memory, not reserved address space
                    // (RLIMIT_AS would stop V8, which reserves far more than it uses).
                    let b = mb.saturating_mul(1024 * 1024);
                    set_rlimit(libc::RLIMIT_DATA, b, b)?;
                }
                if let Some(n) = nproc {
                    set_rlimit(libc::RLIMIT_NPROC, n, n)?;
                }
                #[cfg(target_os = "linux")]
                if let Some(fd) = landlock_fd {
                    landlock::restrict_self(fd)?;
                }
                Ok(())
            });
        }
    }

    /// Sends `sig` to the agent's process group and to every other process of the run.
    pub fn signal(&self, pgid: i32, sig: i32) {
        kill_group(pgid, sig);
        #[cfg(target_os = "linux")]
        if let Some(c) = &self.cgroup {
            if sig == libc::SIGKILL {
                let escaped = c
                    .members()
                    .iter()
                    // SAFETY: getpgid(2) on a pid; a pid that is gone gives -1.
                    .filter(|p| unsafe { libc::getpgid(**p) } != pgid)
                    .count();
                self.escaped_signalled.fetch_max(escaped, Ordering::Relaxed);
            }
            c.signal_all(sig);
        }
    }

    /// Kills every process of the run that is still alive (the agent has ended or is being
    /// killed): the cgroup, or else the process group and the processes carrying `marker`.
    pub fn kill_all(&self, pgid: i32, marker: Option<&str>) -> Leftovers {
        #[cfg(target_os = "linux")]
        if let Some(c) = &self.cgroup {
            let found = c.kill_all();
            let escaped = found
                .iter()
                // SAFETY: getpgid(2) on a pid; a pid that is gone gives -1.
                .filter(|p| unsafe { libc::getpgid(**p) } != pgid)
                .count()
                .max(self.escaped_signalled.load(Ordering::Relaxed));
            kill_group(pgid, libc::SIGKILL);
            return Leftovers {
                killed: found.len(),
                escaped,
            };
        }
        kill_group(pgid, libc::SIGKILL);
        let escaped = marker.map(sweep_marked).unwrap_or(0);
        Leftovers {
            killed: escaped,
            escaped,
        }
    }

    /// What the kernel counted in the run's cgroup (zeros without one).
    pub fn verdict(&self) -> Verdict {
        #[cfg(target_os = "linux")]
        if let Some(c) = &self.cgroup {
            let k = c.counters();
            return Verdict {
                oom_kills: k.oom_kills,
                pids_max_hits: k.pids_max_hits,
            };
        }
        Verdict::default()
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        drop(self.cgroup.take());
        if let Some(t) = self.tmpdir.take() {
            // remove_dir_all does not follow symlinks the agent may have planted.
            if let Err(e) = std::fs::remove_dir_all(&t) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!(event = "tmpdir.error", path = t.display().to_string().as_str(); "cannot remove a run's TMPDIR: {e}");
                }
            }
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type Resource = libc::c_int;

/// setrlimit(2) for the child; only a system call.
fn set_rlimit(res: Resource, soft: u64, hard: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit with a pointer to a local struct.
    if unsafe { libc::setrlimit(res, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `sig` to process group `pgid`; a group that is already gone is fine.
pub fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Kills (SIGKILL) every other process whose environment holds `marker`; returns how many.
/// Repeats a few times, since one of them may fork while the sweep runs. The
/// process-group mode's way to find escapees; cgroup modes do not need it.
#[cfg(target_os = "linux")]
pub fn sweep_marked(marker: &str) -> usize {
    let me = std::process::id();
    let needle = marker.as_bytes();
    let mut killed = 0;
    for _ in 0..5 {
        let mut found = 0;
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return killed;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if env.split(|b| *b == 0).any(|kv| kv == needle) {
                // SAFETY: kill(2) on a pid; no memory involved.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
                found += 1;
            }
        }
        killed += found;
        if found == 0 {
            break;
        }
    }
    killed
}

/// Without `/proc` there is nothing to sweep; the process group kill still applies.
#[cfg(not(target_os = "linux"))]
pub fn sweep_marked(_marker: &str) -> usize {
    0
}
