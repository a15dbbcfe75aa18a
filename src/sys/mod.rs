//! The operating system, in one place: everything that differs between Unix (Linux, macOS)
//! and Windows lives in `unix.rs` or `windows.rs`, behind the same names, so the
//! rest of the crate has no `cfg` and no `unsafe` of its own (the one exception is
//! [`crate::contain`]'s Linux-only cgroup and Landlock code, behind `contain`'s interface).
//!
//! What is here: a child's process tree (Unix: its own process group plus rlimits, set up
//! between fork and exec; Windows: a job object with kill-on-close and the job's memory,
//! process and CPU-time limits), stopping that tree, stop and reload requests to the daemon
//! (Unix: SIGTERM/SIGINT/SIGHUP taken by `sigwait`; Windows: Ctrl-C, Ctrl-Break, console
//! close and a named event that `stop` sets), the data dir's lock (flock / LockFileEx), file
//! modes (Unix modes; Windows: the data dir's ACL, this user alone), the default data dir,
//! user lookup, the escapee sweep (Linux's `/proc`), process-limit probes and the names of
//! signals.
//!
//! A new platform implements the same items in a new file; a new platform-specific need
//! adds an item to both sides here, never a `cfg` at the call site.

use std::io;
use std::path::PathBuf;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

pub use imp::{
    arg_max, create_dir, create_file, dir_identity, exit_signal, home_of, how_stopped, pid_alive,
    release_startup_memory, rename_durable, request_stop, resource_caps, restore_sigpipe,
    set_dir_mode, set_file_mode, set_listener_nodelay, signal_name, sweep_marked, sync_dir,
    tighten_private_dir, try_lock_file, tune_allocator, write_at, FsFlush, Tree, JOB_OBJECTS,
    STOP_REQUEST, WATCHER_SEES_ROOT_REMOVAL, WINDOWS,
};
/// For the Linux cgroup code in [`crate::contain`].
#[cfg(target_os = "linux")]
pub use imp::{process_group_of, raw_signal};

pub use imp::sig;

/// The data dir when neither `--data-dir` nor `$BOG_AGENTS_HOME` says: `~/.bog-agents/daemon`
/// on Unix, `%APPDATA%\bog-agents\daemon` on Windows.
pub fn default_data_dir() -> io::Result<PathBuf> {
    let (var, dir) = imp::DATA_DIR_UNDER;
    match std::env::var_os(var).filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(dir).join("daemon")),
        None => Err(io::Error::other(format!(
            "cannot find the data dir: {var} is not set; pass --data-dir or set BOG_AGENTS_HOME"
        ))),
    }
}

/// A request to the daemon from outside, as [`wait_signal`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Drain and exit (SIGTERM, SIGINT; Ctrl-C, Ctrl-Break, console close, `stop`). The
    /// name says which, for the log.
    Stop(&'static str),
    /// Reload jobs from disk (SIGHUP; Windows has no equivalent: use the API or job files).
    #[cfg_attr(windows, allow(dead_code))]
    Reload,
}

/// Readies the process for [`wait_signal`]: on Unix, blocks SIGTERM, SIGINT and SIGHUP in
/// the calling thread and every thread started afterwards (call it before any thread
/// exists); on Windows, installs the console control handler and the `stop` event.
pub fn prepare_signals() -> io::Result<()> {
    imp::prepare_signals()
}

/// Blocks until the next stop or reload request.
pub fn wait_signal() -> Signal {
    imp::wait_signal()
}

/// How a stop reaches the run's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Ask them to end (Unix: SIGTERM; Windows has no such request for a job: as `Kill`).
    Term,
    /// End them now (SIGKILL; TerminateJobObject).
    Kill,
}

/// The limits a run's processes are started under, as the OS enforces them without a
/// cgroup: Unix rlimits (`RLIMIT_CPU`, `RLIMIT_DATA`, `RLIMIT_NPROC`), or the Windows job's
/// CPU time, memory and active process limits.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    pub cpu_seconds: Option<u64>,
    pub memory_mb: Option<u64>,
    pub max_processes: Option<u64>,
}

/// How [`create_file`] opens the file it creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    /// A new file, for writing; it must not exist.
    New,
    /// For appending, created if missing (an existing file keeps its mode or ACL).
    Append,
}

/// What the OS recorded about a run's limits beyond how its agent ended (Windows: the job
/// object's accounting; Unix reports nothing here, its rlimits show in the exit signal).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitHits {
    /// The run used its whole `cpu_seconds` (the job's CPU time limit ended it).
    pub cpu_seconds: bool,
    /// The run's committed memory peaked at its `memory_mb` (allocations past it failed).
    pub memory_mb: bool,
}

/// What the Linux containment does in the child between fork and exec (ignored elsewhere):
/// `join_fds` after the signal mask is cleared and before the rlimits, `last` after them.
#[derive(Default)]
#[cfg_attr(windows, allow(dead_code))]
pub struct PreExec {
    /// Descriptors to write `"0"` to (a cgroup's `cgroup.procs`: joins it).
    pub join_fds: Vec<i32>,
    /// Called last, with its descriptor (Landlock's `restrict_self` on its ruleset). It must
    /// only make system calls: it runs between fork and exec.
    pub last: Option<(ChildHook, i32)>,
    /// The wall-clock instant the agent starts (a run's slot): on Unix the child, forked
    /// ahead of it, does every step above and then sleeps until it to exec, so only the
    /// exec is left for the slot (it dies with the daemon meanwhile on Linux); on Windows the
    /// process is created at it. None: at once.
    pub start_at: Option<std::time::SystemTime>,
}

/// A step of [`PreExec`]: only system calls, on the descriptor it is given.
pub type ChildHook = unsafe fn(i32) -> io::Result<()>;
