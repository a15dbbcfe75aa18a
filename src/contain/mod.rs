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
//! - `process_group`: neither (or not Linux); the run is its process group plus
//!   `RLIMIT_DATA` and `RLIMIT_NPROC`, and (Linux only) processes that left the group are
//!   found by their `BOG_RUN_ID` entry in `/proc`.
//! - `job_object` (Windows): the run is a job object with the job's memory, active process
//!   and CPU time limits; every descendant is in it and dies with it.
//!
//! Landlock, for `limits.filesystem: "working_dir"`, is independent of the mode (Linux
//! only). The process tree and the rlimits or job limits are [`crate::sys::Tree`]'s; this
//! module adds the Linux cgroups and Landlock (the only `cfg` and `unsafe` outside `sys`).

pub mod env;

#[cfg(target_os = "linux")]
mod cgroup;
#[cfg(target_os = "linux")]
mod landlock;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use serde_json::{json, Value};

/// How runs are contained on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    CgroupV2,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    CgroupV1,
    ProcessGroup,
    JobObject,
}

impl Mode {
    /// The name used in the log, `/health` and the docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::CgroupV2 => "cgroup_v2",
            Mode::CgroupV1 => "cgroup_v1",
            Mode::ProcessGroup => "process_group",
            Mode::JobObject => "job_object",
        }
    }

    /// Whether runs get a cgroup.
    pub fn is_cgroup(self) -> bool {
        matches!(self, Mode::CgroupV1 | Mode::CgroupV2)
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
    landlock: &'static Result<i32, LandlockUnavailable>,
}

/// Why Landlock cannot be used on this machine. (Linux makes all but `NotLinux`, other
/// systems only that one.)
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LandlockUnavailable {
    /// Not Linux.
    NotLinux,
    /// ENOSYS from the probe.
    NotInKernel,
    /// EOPNOTSUPP: built in, not enabled.
    NotEnabled,
    /// EPERM: a seccomp filter forbids it.
    Forbidden,
    /// Another errno from the probe.
    ProbeFailed(i32),
    /// The probe said yes, but no ruleset was made.
    NotCreated,
}

impl std::fmt::Display for LandlockUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LandlockUnavailable::NotLinux => write!(f, "Landlock is Linux only"),
            LandlockUnavailable::NotInKernel => write!(f, "the kernel has no Landlock support (ENOSYS; Linux 5.13+ built with CONFIG_SECURITY_LANDLOCK)"),
            LandlockUnavailable::NotEnabled => write!(f, "Landlock is built into the kernel but not enabled (add landlock to the lsm= boot parameter)"),
            LandlockUnavailable::Forbidden => write!(f, "a seccomp filter (container runtime?) forbids the Landlock system calls"),
            LandlockUnavailable::ProbeFailed(code) => write!(
                f,
                "the Landlock probe failed: {}",
                std::io::Error::from_raw_os_error(*code)
            ),
            LandlockUnavailable::NotCreated => write!(f, "the ruleset was not created"),
        }
    }
}

impl std::error::Error for LandlockUnavailable {}

/// The Landlock ABI version, or why Landlock cannot be used. Probed once, with no side
/// effect (unlike [`init`]), so the CLI may ask too.
pub fn landlock_status() -> &'static Result<i32, LandlockUnavailable> {
    static LANDLOCK: OnceLock<Result<i32, LandlockUnavailable>> = OnceLock::new();
    LANDLOCK.get_or_init(|| {
        #[cfg(target_os = "linux")]
        return landlock::probe();
        #[cfg(not(target_os = "linux"))]
        return Err(LandlockUnavailable::NotLinux);
    })
}

/// The containment without cgroups: the OS's process tree ([`crate::sys::Tree`]).
fn fallback_mode() -> Mode {
    if crate::sys::JOB_OBJECTS {
        Mode::JobObject
    } else {
        Mode::ProcessGroup
    }
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
                fallback_mode(),
                None,
                Some("config.json sets containment to process_group".to_string()),
            ),
            Preference::Auto => match cgroup::detect() {
                Ok(t @ cgroup::Tree::V2 { .. }) => (Mode::CgroupV2, Some(t), None),
                Ok(t @ cgroup::Tree::V1 { .. }) => (Mode::CgroupV1, Some(t), None),
                Err(why) => (fallback_mode(), None, Some(why.to_string())),
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
            mode: fallback_mode(),
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
                "no cgroup ({}); each run is a process group with RLIMIT_DATA for memory_mb and RLIMIT_NPROC for max_processes{}",
                self.no_cgroup.as_deref().unwrap_or(""),
                if cfg!(target_os = "linux") { ", escapees found by BOG_RUN_ID" } else { "" }
            ),
            Mode::JobObject => "each run is a job object (memory_mb: job memory limit, max_processes: active process limit, cpu_seconds: job CPU time limit, every process killed at the run's end)".to_string(),
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
            Err(e) => v["landlock_reason"] = e.to_string().into(),
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
            limits: crate::sys::Limits {
                cpu_seconds: req.cpu_seconds,
                ..Default::default()
            },
            tree: None,
            escaped_signalled: AtomicUsize::new(0),
        };
        if let Some(work) = req.confine_writes_to {
            if let Err(e) = self.landlock {
                return Err(PrepareError::NoLandlock(*e));
            }
            let tmp = std::env::temp_dir().join(format!("bog-run-{}-{unique}", req.name));
            let mut dir = std::fs::DirBuilder::new();
            crate::sys::set_dir_mode(&mut dir, 0o700);
            dir.create(&tmp).map_err(|source| PrepareError::TmpDir {
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
            Mode::ProcessGroup | Mode::JobObject => {
                jail.limits.memory_mb = req.memory_mb;
                jail.limits.max_processes = req.max_processes;
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
        killed + crate::sys::sweep_marked(&format!("BOG_RUN_ID={run_id}"))
    }
}

/// Why a run's containment could not be made; the agent is not started (fail closed).
#[derive(Debug)]
pub enum PrepareError {
    /// `limits.filesystem: "working_dir"` on a machine without Landlock, and why.
    NoLandlock(LandlockUnavailable),
    /// The Landlock ruleset could not be built.
    #[cfg(target_os = "linux")]
    Landlock(landlock::RulesetError),
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
            #[cfg(target_os = "linux")]
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
    /// The rlimits (process-group mode; only `cpu_seconds` with a cgroup) or job limits.
    limits: crate::sys::Limits,
    /// The run's processes, once spawned.
    tree: Option<crate::sys::Tree>,
    /// Escaped processes (outside the run's process group) that a SIGKILL to the whole
    /// cgroup (a timeout or shutdown) already killed, so that [`Jail::kill_all`] still counts
    /// them: they may be gone from the cgroup by the time it looks.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    escaped_signalled: AtomicUsize,
}

/// What the kernel recorded about a run's limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Processes of the run killed by the OOM killer at the memory limit (cgroup modes).
    pub oom_kills: u64,
    /// Forks refused at the pids limit (cgroup modes).
    pub pids_max_hits: u64,
    /// What the process tree's OS object counted (Windows' job object; nothing on Unix).
    pub limits_hit: crate::sys::LimitHits,
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

    /// Starts the agent in the run's process tree ([`crate::sys::Tree`]: a new process
    /// group with a clean signal mask and the rlimits, or a job object), with the run's
    /// cgroup joined and Landlock applied between fork and exec (Linux); at `start_at`
    /// (then the child waits for it after all that, just before its exec).
    pub fn spawn(
        &mut self,
        cmd: &mut Command,
        start_at: Option<std::time::SystemTime>,
    ) -> std::io::Result<Child> {
        #[allow(unused_mut)]
        let mut pre = crate::sys::PreExec {
            start_at,
            ..Default::default()
        };
        #[cfg(target_os = "linux")]
        {
            pre.join_fds = self
                .cgroup
                .as_ref()
                .map(|c| c.join_fds())
                .unwrap_or_default();
            pre.last = self
                .landlock
                .as_ref()
                .map(|fd| (landlock::restrict_self as _, landlock::raw(fd)));
        }
        let (child, tree) = crate::sys::Tree::spawn(cmd, self.limits, pre)?;
        self.tree = Some(tree);
        Ok(child)
    }

    /// The agent's process (group) id, once spawned.
    pub fn id(&self) -> Option<i32> {
        self.tree.as_ref().map(|t| t.id())
    }

    /// Stops the agent's process tree and every other process of the run.
    pub fn signal(&self, how: crate::sys::Stop) {
        let Some(tree) = &self.tree else { return };
        tree.stop(how);
        #[cfg(target_os = "linux")]
        if let Some(c) = &self.cgroup {
            if how == crate::sys::Stop::Kill {
                let escaped = c
                    .members()
                    .iter()
                    .filter(|p| crate::sys::process_group_of(**p) != tree.id())
                    .count();
                self.escaped_signalled.fetch_max(escaped, Ordering::Relaxed);
            }
            c.signal_all(crate::sys::raw_signal(how));
        }
    }

    /// Kills every process of the run that is still alive (the agent has ended or is being
    /// killed): the cgroup, or else the process tree and the processes carrying `marker`.
    pub fn kill_all(&self, marker: Option<&str>) -> Leftovers {
        let Some(tree) = &self.tree else {
            return Leftovers::default();
        };
        #[cfg(target_os = "linux")]
        if let Some(c) = &self.cgroup {
            let found = c.kill_all();
            let escaped = found
                .iter()
                .filter(|p| crate::sys::process_group_of(**p) != tree.id())
                .count()
                .max(self.escaped_signalled.load(Ordering::Relaxed));
            tree.stop(crate::sys::Stop::Kill);
            return Leftovers {
                killed: found.len(),
                escaped,
            };
        }
        tree.stop(crate::sys::Stop::Kill);
        let escaped = match marker {
            Some(m) if tree.may_leak() => crate::sys::sweep_marked(m),
            _ => 0,
        };
        Leftovers {
            killed: escaped,
            escaped,
        }
    }

    /// What the kernel counted in the run's cgroup, or the job object against the run's
    /// limits (zeros without either).
    pub fn verdict(&self) -> Verdict {
        #[cfg(target_os = "linux")]
        if let Some(c) = &self.cgroup {
            let k = c.counters();
            return Verdict {
                oom_kills: k.oom_kills,
                pids_max_hits: k.pids_max_hits,
                ..Verdict::default()
            };
        }
        Verdict {
            limits_hit: self
                .tree
                .as_ref()
                .map(|t| t.limits_hit())
                .unwrap_or_default(),
            ..Verdict::default()
        }
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
