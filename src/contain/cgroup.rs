//! Linux control groups: one cgroup per agent run, so that the run's memory and process
//! count are limited on their own (not per user, not per address space) and so that every
//! process of the run, including those that left its process group or session, can be
//! found and killed without scanning `/proc`.
//!
//! Two layouts are supported. **cgroup v2**, when the daemon's own cgroup is delegated to it
//! (systemd `Delegate=yes`): the daemon moves itself into a `daemon` leaf, enables the
//! `memory` and `pids` controllers for its subtree, and makes `run-…` siblings; a run ends
//! with `cgroup.kill`. **cgroup v1**, when the `memory`, `pids` and `freezer` hierarchies are
//! mounted and writable: a `bog-run-…` child of the daemon's cgroup in each of the three; a
//! run ends with freeze, SIGKILL to every member, thaw. Which one applies is decided once, at
//! start ([`detect`]).

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which cgroup layout the daemon uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tree {
    /// cgroup v2: run cgroups are made in `base` (the daemon's delegated cgroup).
    V2 { base: PathBuf },
    /// cgroup v1: run cgroups are made in the daemon's cgroup of each hierarchy.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        freezer: PathBuf,
    },
}

/// Why no cgroup layout could be used (for the start-up log and `/health`).
#[derive(Debug)]
pub enum NotAvailable {
    /// `/proc/self/cgroup` or `/proc/self/mountinfo` could not be read.
    Proc(io::Error),
    /// Neither version can be used, and why.
    Neither { v2: Unusable, v1: Unusable },
}

impl std::fmt::Display for NotAvailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotAvailable::Proc(e) => write!(
                f,
                "cannot read /proc/self/cgroup or /proc/self/mountinfo: {e}"
            ),
            NotAvailable::Neither { v2, v1 } => write!(f, "cgroup v2: {v2}; cgroup v1: {v1}"),
        }
    }
}

impl std::error::Error for NotAvailable {}

/// Why one cgroup version cannot be used.
#[derive(Debug)]
pub enum Unusable {
    NoV2Membership,
    NoV2Mount,
    /// The daemon's v2 cgroup does not offer `memory` and `pids`.
    MissingControllers(PathBuf),
    /// The daemon is in no v1 hierarchy of this controller.
    NoHierarchy(&'static str),
    /// The controller's v1 hierarchy is not mounted where the daemon can see it.
    NotMounted(&'static str),
    /// A file of the hierarchy could not be made or written.
    Io(CgroupError),
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::NoV2Membership => write!(f, "the daemon is in no cgroup v2 hierarchy"),
            Unusable::NoV2Mount => write!(f, "no cgroup2 mount shows the daemon's cgroup"),
            Unusable::MissingControllers(dir) => write!(
                f,
                "{} does not offer the memory and pids controllers (delegate them: Delegate=yes)",
                dir.display()
            ),
            Unusable::NoHierarchy(ctl) => write!(f, "no {ctl} hierarchy"),
            Unusable::NotMounted(ctl) => write!(f, "the {ctl} hierarchy is not mounted here"),
            Unusable::Io(e) => write!(f, "{e}"),
        }
    }
}

/// A failure while making or using a run's cgroup, with the file it concerned.
pub type CgroupError = crate::fsio::PathError;

fn cg_err(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> CgroupError {
    crate::fsio::PathError::at(what, path)
}

/// One line of `/proc/self/cgroup`: hierarchy id, controllers, path.
struct Membership {
    controllers: Vec<String>,
    path: String,
}

/// One cgroup mount from `/proc/self/mountinfo`.
struct Mount {
    root: String,
    point: PathBuf,
    v2: bool,
    options: Vec<String>,
}

fn memberships() -> io::Result<Vec<Membership>> {
    let text = fs::read_to_string("/proc/self/cgroup")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some(Membership {
                controllers: controllers
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect())
}

/// Undoes the octal escapes (`\040` for a space) of mountinfo fields.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mounts() -> io::Result<Vec<Mount>> {
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            let fstype = *r.first()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            Some(Mount {
                root: unescape(f.get(3)?),
                point: PathBuf::from(unescape(f.get(4)?)),
                v2: fstype == "cgroup2",
                options: r.get(2)?.split(',').map(str::to_string).collect(),
            })
        })
        .collect())
}

/// The directory of cgroup `path` under mount `m`, if the mount shows it.
fn dir_of(m: &Mount, path: &str) -> Option<PathBuf> {
    let rel = if m.root == "/" {
        path
    } else {
        let r = path.strip_prefix(m.root.as_str())?;
        if !(r.is_empty() || r.starts_with('/')) {
            return None;
        }
        r
    };
    let rel = rel.trim_start_matches('/');
    Some(if rel.is_empty() {
        m.point.clone()
    } else {
        m.point.join(rel)
    })
}

/// Finds the cgroup layout this daemon may use; cgroup v2 (delegated) first, then v1.
/// May move the daemon into a leaf cgroup (v2), so call it before starting threads.
pub fn detect() -> Result<Tree, NotAvailable> {
    let (ms, mounts) = match (memberships(), mounts()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Err(NotAvailable::Proc(e)),
    };
    let v2_reason = match detect_v2(&ms, &mounts) {
        Ok(t) => return Ok(t),
        Err(e) => e,
    };
    match detect_v1(&ms, &mounts) {
        Ok(t) => Ok(t),
        Err(v1) => Err(NotAvailable::Neither { v2: v2_reason, v1 }),
    }
}

fn detect_v2(ms: &[Membership], mounts: &[Mount]) -> Result<Tree, Unusable> {
    let own = ms
        .iter()
        .find(|m| m.controllers.is_empty())
        .ok_or(Unusable::NoV2Membership)?;
    let dir = mounts
        .iter()
        .filter(|m| m.v2)
        .find_map(|m| dir_of(m, &own.path))
        .ok_or(Unusable::NoV2Mount)?;
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let has = |c: &str| available.split_whitespace().any(|x| x == c);
    if !(has("memory") && has("pids")) {
        return Err(Unusable::MissingControllers(dir));
    }
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let on = |c: &str| enabled.split_whitespace().any(|x| x == c);
    if on("memory") && on("pids") {
        // Already set up (a previous exec of this daemon, or a supervisor that did it).
        return probe_dir(&dir).map(|()| Tree::V2 { base: dir });
    }
    // "No internal processes": the daemon moves into a leaf before enabling controllers.
    let leaf = dir.join("daemon");
    match fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Unusable::Io(cg_err(&leaf, "create")(e))),
    }
    write_file(&leaf.join("cgroup.procs"), b"0")
        .map_err(|e| Unusable::Io(cg_err(&leaf, "move the daemon into")(e)))?;
    if let Err(e) = write_file(&dir.join("cgroup.subtree_control"), b"+memory +pids") {
        // Other processes share the daemon's cgroup: go back and give up on v2.
        let _ = write_file(&dir.join("cgroup.procs"), b"0");
        let _ = fs::remove_dir(&leaf);
        return Err(Unusable::Io(cg_err(
            &dir.join("cgroup.subtree_control"),
            "enable memory and pids in",
        )(e)));
    }
    probe_dir(&dir).map(|()| Tree::V2 { base: dir })
}

fn detect_v1(ms: &[Membership], mounts: &[Mount]) -> Result<Tree, Unusable> {
    let find = |ctl: &'static str| -> Result<PathBuf, Unusable> {
        let own = ms
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == ctl))
            .ok_or(Unusable::NoHierarchy(ctl))?;
        let dir = mounts
            .iter()
            .filter(|m| !m.v2 && m.options.iter().any(|o| o == ctl))
            .find_map(|m| dir_of(m, &own.path))
            .ok_or(Unusable::NotMounted(ctl))?;
        probe_dir(&dir)?;
        Ok(dir)
    };
    let memory = find("memory")?;
    let pids = find("pids")?;
    let freezer = find("freezer")?;
    Ok(Tree::V1 {
        memory,
        pids,
        freezer,
    })
}

/// Checks that a child cgroup can be made (and removed) in `dir`.
fn probe_dir(dir: &Path) -> Result<(), Unusable> {
    let p = dir.join(format!("bog-probe-{}", std::process::id()));
    fs::create_dir(&p).map_err(|e| Unusable::Io(cg_err(dir, "create a cgroup in")(e)))?;
    let _ = fs::remove_dir(&p);
    Ok(())
}

fn write_file(p: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(p)?;
    f.write_all(data)
}

/// Pids listed in a `cgroup.procs` file (empty when the cgroup is gone).
fn procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A named counter from a flat-keyed file such as `memory.events` (`oom_kill 2`).
fn counter(p: &Path, key: &str) -> u64 {
    fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0)
}

/// The cgroup(s) of one run. Dropping it kills whatever is still inside and removes it.
#[derive(Debug)]
pub struct RunCgroup {
    tree: Tree,
    /// One directory for v2; memory, pids, freezer for v1.
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each dir, opened before the fork: the child joins by writing "0".
    procs_fds: Vec<OwnedFd>,
}

/// What the kernel counted in a run's cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Processes killed by the OOM killer because of the memory limit.
    pub oom_kills: u64,
    /// Forks refused because of the pids limit.
    pub pids_max_hits: u64,
}

/// The name prefix of a run's cgroup: `bog-run-<id>-`; [`kill_leftovers`] finds it again.
fn prefix(run_name: &str) -> String {
    format!("bog-run-{run_name}-")
}

impl RunCgroup {
    /// Makes the run's cgroup(s) with its limits. `unique` tells attempts of a run apart.
    pub fn create(
        tree: &Tree,
        run_name: &str,
        unique: u64,
        memory_mb: Option<u64>,
        max_processes: Option<u64>,
    ) -> Result<RunCgroup, CgroupError> {
        let name = format!("{}{unique}", prefix(run_name));
        let dirs: Vec<PathBuf> = match tree {
            Tree::V2 { base } => vec![base.join(&name)],
            Tree::V1 {
                memory,
                pids,
                freezer,
            } => vec![memory.join(&name), pids.join(&name), freezer.join(&name)],
        };
        let mut cg = RunCgroup {
            tree: tree.clone(),
            dirs: Vec::new(),
            procs_fds: Vec::new(),
        };
        for d in &dirs {
            fs::create_dir(d).map_err(cg_err(d, "create cgroup"))?;
            // Pushed at once, so a later failure removes what was made (Drop).
            cg.dirs.push(d.clone());
        }
        if let Some(mb) = memory_mb {
            let bytes = mb.saturating_mul(1024 * 1024).to_string();
            let (limit, swap, swap_value) = match tree {
                Tree::V2 { .. } => ("memory.max", "memory.swap.max", "0".to_string()),
                Tree::V1 { .. } => (
                    "memory.limit_in_bytes",
                    "memory.memsw.limit_in_bytes",
                    bytes.clone(),
                ),
            };
            let p = cg.dirs[0].join(limit);
            write_file(&p, bytes.as_bytes()).map_err(cg_err(&p, "set the memory limit in"))?;
            // No swapping past the limit either; absent without swap accounting.
            let s = cg.dirs[0].join(swap);
            if s.exists() {
                write_file(&s, swap_value.as_bytes())
                    .map_err(cg_err(&s, "set the swap limit in"))?;
            }
        }
        if let Some(n) = max_processes {
            let p = cg.pids_dir().join("pids.max");
            write_file(&p, n.to_string().as_bytes())
                .map_err(cg_err(&p, "set the pids limit in"))?;
        }
        for d in &cg.dirs {
            let p = d.join("cgroup.procs");
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(cg_err(&p, "open"))?;
            cg.procs_fds.push(OwnedFd::from(f));
        }
        Ok(cg)
    }

    fn pids_dir(&self) -> &Path {
        match self.tree {
            Tree::V2 { .. } => &self.dirs[0],
            Tree::V1 { .. } => &self.dirs[1],
        }
    }

    fn freezer_dir(&self) -> &Path {
        match self.tree {
            Tree::V2 { .. } => &self.dirs[0],
            Tree::V1 { .. } => &self.dirs[2],
        }
    }

    /// The raw `cgroup.procs` descriptors the child writes "0" to before exec.
    pub fn join_fds(&self) -> Vec<i32> {
        self.procs_fds.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// Every process now in the run's cgroup (in any of its hierarchies).
    pub fn members(&self) -> Vec<i32> {
        let mut all: Vec<i32> = self.dirs.iter().flat_map(|d| procs(d)).collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Sends `sig` to every member (a fork racing with this may miss it; [`Self::kill_all`]
    /// does not).
    pub fn signal_all(&self, sig: i32) {
        for pid in self.members() {
            // SAFETY: kill(2) on a pid; no memory involved.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// Kills every process of the run and waits (bounded) until the cgroup is empty.
    /// Returns the pids that were still there.
    pub fn kill_all(&self) -> Vec<i32> {
        let dir = self.freezer_dir().to_path_buf();
        let found = self.members();
        if found.is_empty() {
            // Nobody left to fork, and nobody else can move in: nothing to do.
            return found;
        }
        match &self.tree {
            Tree::V2 { .. } => {
                let k = dir.join("cgroup.kill");
                if write_file(&k, b"1").is_err() {
                    // Kernels before 5.14: freeze, kill each, thaw.
                    let _ = write_file(&dir.join("cgroup.freeze"), b"1");
                    wait_until(Duration::from_secs(2), || {
                        counter(&dir.join("cgroup.events"), "frozen") == 1
                    });
                    self.signal_all(libc::SIGKILL);
                    let _ = write_file(&dir.join("cgroup.freeze"), b"0");
                }
            }
            Tree::V1 { .. } => {
                // Frozen, no member can fork while the list is read and killed.
                let state = dir.join("freezer.state");
                let _ = write_file(&state, b"FROZEN");
                wait_until(Duration::from_secs(2), || {
                    fs::read_to_string(&state).is_ok_and(|s| s.trim() == "FROZEN")
                });
                self.signal_all(libc::SIGKILL);
                let _ = write_file(&state, b"THAWED");
            }
        }
        // A process in uninterruptible sleep dies when it wakes; do not wait forever.
        let gone = wait_until(Duration::from_secs(5), || {
            let left = self.members();
            if !left.is_empty() {
                for pid in left {
                    // SAFETY: kill(2) on a pid; no memory involved.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
                return false;
            }
            true
        });
        if !gone {
            log::warn!(event = "cgroup.busy", cgroup = dir.display().to_string().as_str(); "processes of a finished run did not exit within 5 s of SIGKILL");
        }
        found
    }

    /// What the kernel counted: OOM kills and refused forks.
    pub fn counters(&self) -> Counters {
        let (mem_file, mem_key) = match self.tree {
            Tree::V2 { .. } => ("memory.events", "oom_kill"),
            Tree::V1 { .. } => ("memory.oom_control", "oom_kill"),
        };
        Counters {
            oom_kills: counter(&self.dirs[0].join(mem_file), mem_key),
            pids_max_hits: counter(&self.pids_dir().join("pids.events"), "max"),
        }
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        self.procs_fds.clear();
        if !self.dirs.is_empty() {
            let _ = self.kill_all();
        }
        for d in &self.dirs {
            let _ = fs::remove_dir(d);
        }
    }
}

/// Polls `f` (1 ms, doubling to 20 ms) until it is true or `limit` passed; returns the last
/// answer. Used only for kernel state that changes within milliseconds.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Kills and removes the cgroups a previous daemon left for run `run_name` (it died before
/// the run ended). Returns how many processes were killed.
pub fn kill_leftovers(tree: &Tree, run_name: &str) -> usize {
    let bases: Vec<&PathBuf> = match tree {
        Tree::V2 { base } => vec![base],
        Tree::V1 {
            memory,
            pids,
            freezer,
        } => vec![memory, pids, freezer],
    };
    let pre = prefix(run_name);
    let mut names = std::collections::BTreeSet::new();
    for b in &bases {
        if let Ok(rd) = fs::read_dir(b) {
            for e in rd.filter_map(Result::ok) {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&pre) {
                    names.insert(n);
                }
            }
        }
    }
    let mut killed = 0;
    for n in names {
        // Every hierarchy's dir, in the tree's order (a missing one reads as empty).
        let dirs: Vec<PathBuf> = bases.iter().map(|b| b.join(&n)).collect();
        let cg = RunCgroup {
            tree: tree.clone(),
            dirs,
            procs_fds: Vec::new(),
        };
        killed += cg.members().len();
        drop(cg);
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields_are_unescaped() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn cgroup_dirs_follow_the_mount_root() {
        let m = Mount {
            root: "/kube/pod1".into(),
            point: "/sys/fs/cgroup/memory".into(),
            v2: false,
            options: vec!["memory".into()],
        };
        assert_eq!(
            dir_of(&m, "/kube/pod1/ctr"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/ctr"))
        );
        assert_eq!(dir_of(&m, "/other"), None);
        let r = Mount {
            root: "/".into(),
            ..m
        };
        assert_eq!(
            dir_of(&r, "/"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
    }
}
