//! The Unix side of [`crate::sys`] (Linux and macOS; a few items are Linux-only inside).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};

use super::{Limits, PreExec, Signal, Stop};

/// Runs' processes are a process group; there is no job object.
pub const JOB_OBJECTS: bool = false;

/// Whether this is Windows (the Task Scheduler is there to register with).
pub const WINDOWS: bool = false;

/// Whether the file watcher reports the removal of a watched root itself: inotify does
/// (IN_DELETE_SELF); FSEvents is not tested, so macOS re-checks each root's identity as
/// Windows does.
pub const WATCHER_SEES_ROOT_REMOVAL: bool = cfg!(target_os = "linux");

/// What `stop` sends the daemon, for its message.
pub const STOP_REQUEST: &str = "SIGTERM";

/// Signal numbers, for naming how a process ended.
pub mod sig {
    pub use libc::{SIGABRT, SIGBUS, SIGKILL, SIGSEGV, SIGTRAP, SIGXCPU};
}

fn handled() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut s, sig);
        }
        s
    }
}

pub(super) fn prepare_signals() -> io::Result<()> {
    let s = handled();
    // SAFETY: pthread_sigmask with a valid set.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &s, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

pub(super) fn wait_signal() -> Signal {
    let s = handled();
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait with a valid set and out-pointer.
        if unsafe { libc::sigwait(&s, &mut sig) } != 0 {
            continue;
        }
        return match sig {
            libc::SIGHUP => Signal::Reload,
            libc::SIGINT => Signal::Stop("SIGINT"),
            _ => Signal::Stop("SIGTERM"),
        };
    }
}

/// Asks the daemon `pid` to drain and exit (SIGTERM).
pub fn request_stop(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) on the pid recorded by the daemon that holds the lock right now.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A command whose output goes into `| head` ends quietly when the reader does, as other
/// Unix tools do, instead of panicking on EPIPE. Call before any thread starts.
pub fn restore_sigpipe() {
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A run's processes: the agent's own process group (its pgid is the agent's pid).
#[derive(Debug)]
pub struct Tree {
    pgid: i32,
}

impl Tree {
    /// Starts `cmd` as the leader of a new process group, with a clean signal mask, `pre`
    /// (the cgroup join and Landlock) and the rlimits of `limits` applied between fork and
    /// exec: `cpu_seconds` → `RLIMIT_CPU` (SIGXCPU, SIGKILL 5 s later), `memory_mb` →
    /// `RLIMIT_DATA`, `max_processes` → `RLIMIT_NPROC` (all processes of the user).
    pub fn spawn(cmd: &mut Command, limits: Limits, pre: PreExec) -> io::Result<(Child, Tree)> {
        cmd.process_group(0);
        let Limits {
            cpu_seconds,
            memory_mb,
            max_processes,
        } = limits;
        let PreExec {
            join_fds,
            last,
            start_at,
        } = pre;
        let start_at = start_at.map(timespec_of);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure only makes system calls (sigprocmask, write, setrlimit, `last`,
        // which promises the same, and the wait for `start_at`) on values computed before the
        // fork; it does not allocate.
        unsafe {
            cmd.pre_exec(move || {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                // Into the cgroup first: from here on every descendant is the run's.
                for fd in &join_fds {
                    if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if let Some(cpu) = cpu_seconds {
                    // SIGXCPU at the soft limit, SIGKILL a few seconds later.
                    set_rlimit(libc::RLIMIT_CPU, cpu, cpu.saturating_add(5))?;
                }
                if let Some(mb) = memory_mb {
                    // RLIMIT_DATA counts private writable memory, not reserved address space
                    // (RLIMIT_AS would stop V8, which reserves far more than it uses).
                    let b = mb.saturating_mul(1024 * 1024);
                    set_rlimit(libc::RLIMIT_DATA, b, b)?;
                }
                if let Some(n) = max_processes {
                    set_rlimit(libc::RLIMIT_NPROC, n, n)?;
                }
                if let Some((f, fd)) = last {
                    f(fd)?;
                }
                if let Some(at) = &start_at {
                    sleep_until(at, parent)?;
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pgid = child.id() as i32;
        Ok((child, Tree { pgid }))
    }

    /// The process group id (the agent's pid).
    pub fn id(&self) -> i32 {
        self.pgid
    }

    /// SIGTERM or SIGKILL to the whole group; a group that is already gone is fine.
    pub fn stop(&self, how: Stop) {
        kill_group(self.pgid, raw_signal(how));
    }

    /// Whether processes that left the group must be looked for ([`sweep_marked`]); a job
    /// object holds every descendant, a process group does not.
    pub fn may_leak(&self) -> bool {
        true
    }

    /// Nothing beyond the exit signal: `RLIMIT_CPU` ends the agent with SIGXCPU or SIGKILL,
    /// and `RLIMIT_DATA` makes allocations fail, which the worker reads from how it ended.
    pub fn limits_hit(&self) -> super::LimitHits {
        super::LimitHits::default()
    }
}

/// What [`Tree::stop`] with `Term`, then `Kill` after `grace`, does, for a run's record.
pub fn how_stopped(grace: std::time::Duration) -> String {
    format!(
        "every process of the run got SIGTERM, then SIGKILL after {} s",
        grace.as_secs()
    )
}

/// The signal number of a stop.
pub fn raw_signal(how: Stop) -> i32 {
    match how {
        Stop::Term => libc::SIGTERM,
        Stop::Kill => libc::SIGKILL,
    }
}

/// The process group of `pid` (-1 when it is gone).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub fn process_group_of(pid: i32) -> i32 {
    // SAFETY: getpgid(2) on a pid; a pid that is gone gives -1.
    unsafe { libc::getpgid(pid) }
}

fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type Resource = libc::c_int;

/// setrlimit(2) for the child; only a system call.
fn set_rlimit(res: Resource, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit with a pointer to a local struct.
    if unsafe { libc::setrlimit(res, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A wall-clock instant as a `timespec` (before the epoch: the epoch).
fn timespec_of(t: std::time::SystemTime) -> libc::timespec {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as _,
    }
}

/// In a forked child, before its exec: sleeps until the wall-clock instant `at` (system
/// calls only), at most about two seconds however the wall clock is stepped meanwhile. On
/// Linux a daemon (`parent`) that dies meanwhile kills the child, so it never execs an
/// agent nobody watches.
fn sleep_until(at: &libc::timespec, parent: libc::pid_t) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl and getppid on the calling process only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = parent;
    let began = clock(libc::CLOCK_MONOTONIC);
    loop {
        let now = clock(libc::CLOCK_REALTIME);
        let mut left = libc::timespec {
            tv_sec: at.tv_sec - now.tv_sec,
            tv_nsec: at.tv_nsec - now.tv_nsec,
        };
        if left.tv_nsec < 0 {
            left.tv_sec -= 1;
            left.tv_nsec += 1_000_000_000;
        }
        let done = left.tv_sec < 0 || (left.tv_sec == 0 && left.tv_nsec == 0);
        if done || clock(libc::CLOCK_MONOTONIC).tv_sec - began.tv_sec > 1 {
            break;
        }
        if left.tv_sec > 0 {
            left = libc::timespec {
                tv_sec: 1,
                tv_nsec: 0,
            };
        }
        // SAFETY: nanosleep with a pointer to a local; an interrupted sleep is taken up
        // again by the loop.
        unsafe {
            libc::nanosleep(&left, std::ptr::null_mut());
        }
    }
    #[cfg(target_os = "linux")]
    // SAFETY: prctl on the calling process only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, 0);
    }
    Ok(())
}

/// The time of clock `id` (a system call; no allocation).
fn clock(id: libc::clockid_t) -> libc::timespec {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a pointer to a local.
    unsafe {
        libc::clock_gettime(id, &mut t);
    }
    t
}

/// The signal that ended a process, if any.
pub fn exit_signal(status: &ExitStatus) -> Option<i32> {
    status.signal()
}

/// The conventional name of a signal number, e.g. `SIGKILL`.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// Kills (SIGKILL) every other process whose environment holds `marker`; returns how many.
/// Repeats a few times, since one of them may fork while the sweep runs. The
/// process-group mode's way to find escapees; cgroup modes do not need it. Linux only
/// (`/proc/<pid>/environ`); elsewhere there is nothing to sweep and the process-group kill
/// is all there is.
pub fn sweep_marked(marker: &str) -> usize {
    if !cfg!(target_os = "linux") {
        return 0;
    }
    let me = std::process::id();
    let needle = marker.as_bytes();
    let mut killed = 0;
    for _ in 0..5 {
        let mut found = 0;
        let Ok(rd) = fs::read_dir("/proc") else {
            return killed;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
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

/// Whether a process with this pid exists (EPERM: it exists, owned by someone else).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Takes an exclusive lock on `f` without waiting (flock: held by the open file, released
/// when every descriptor of it is closed or the process dies). `Ok(false)`: someone has it.
pub fn try_lock_file(f: &File) -> io::Result<bool> {
    // SAFETY: flock on a valid, owned descriptor.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Creates files with Unix mode `mode` (e.g. 0o600).
pub fn set_file_mode(o: &mut OpenOptions, mode: u32) {
    o.mode(mode);
}

/// Creates `path` with Unix mode `mode` (before any data is written), as `how` says.
pub fn create_file(path: &Path, mode: u32, how: super::Create) -> io::Result<File> {
    let mut o = OpenOptions::new();
    match how {
        super::Create::New => o.write(true).create_new(true),
        super::Create::Append => o.append(true).create(true),
    };
    o.mode(mode).open(path)
}

/// Creates the directory `path` (not its parents) with Unix mode `mode`.
pub fn create_dir(path: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().mode(mode).create(path)
}

/// Creates directories with Unix mode `mode` (e.g. 0o700).
pub fn set_dir_mode(b: &mut fs::DirBuilder, mode: u32) {
    b.mode(mode);
}

/// Sets a directory that this user owns to mode 0700 when group or others have any access
/// to it. Returns the mode it had when it was changed; a dir owned by someone else is left
/// alone.
pub fn tighten_private_dir(dir: &Path) -> io::Result<Option<u32>> {
    let m = fs::metadata(dir)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mode = m.mode() & 0o7777;
    if m.uid() != me || mode & 0o077 == 0 {
        return Ok(None);
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    Ok(Some(mode))
}

/// Renames `from` over `to` (rename(2): atomic, replaces an existing file).
pub fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)
}

/// Fsyncs a directory so that renames, creations and removals in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes all of `buf` at `offset` of `f` (pwrite; the file's cursor does not move).
pub fn write_at(f: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.write_all_at(buf, offset)
}

/// A handle on the filesystem that holds a directory, to flush all of it in one call
/// (Linux: `syncfs(2)`). Opened once and kept: `syncfs` reports a write-back error that
/// happened since its descriptor was opened (Linux 5.8+), so a handle opened per call would
/// miss errors of the background write-back before it.
#[derive(Debug)]
pub struct FsFlush {
    #[cfg(target_os = "linux")]
    dir: File,
}

impl FsFlush {
    /// Opens the handle on `dir`'s filesystem.
    pub fn open(dir: &Path) -> io::Result<FsFlush> {
        #[cfg(target_os = "linux")]
        {
            Ok(FsFlush {
                dir: File::open(dir)?,
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = dir;
            Ok(FsFlush {})
        }
    }

    /// Flushes every file of that filesystem; `Ok(false)` where there is no such call (the
    /// caller then fsyncs file by file).
    pub fn flush(&self) -> io::Result<bool> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: syncfs on a descriptor this handle owns.
            if unsafe { libc::syncfs(self.dir.as_raw_fd()) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(true)
        }
        #[cfg(not(target_os = "linux"))]
        {
            Ok(false)
        }
    }
}

/// (device, inode) of a directory; None if `p` is not one.
pub fn dir_identity(p: &Path) -> Option<(u64, u64)> {
    fs::metadata(p)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// The default data dir is `~/.bog-agents/daemon`.
pub(super) const DATA_DIR_UNDER: (&str, &str) = ("HOME", ".bog-agents");

/// The home directory of a user, from the password database.
pub fn home_of(user: &str) -> Option<PathBuf> {
    let name = std::ffi::CString::new(user).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; read immediately.
    unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() || (*pw).pw_dir.is_null() {
            return None;
        }
        let dir = std::ffi::CStr::from_ptr((*pw).pw_dir);
        Some(PathBuf::from(dir.to_string_lossy().into_owned()))
    }
}

/// The soft limits on open files and on processes (threads count against it on Linux) that
/// are not unlimited: each API connection takes a descriptor and a thread.
pub fn resource_caps() -> Vec<usize> {
    [
        soft_limit(libc::RLIMIT_NOFILE),
        soft_limit(libc::RLIMIT_NPROC),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn soft_limit(resource: Resource) -> Option<usize> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        usize::try_from(r.rlim_cur).ok()
    }
}

/// The system's limit on the bytes of a new program's arguments and environment.
pub fn arg_max() -> Option<usize> {
    // SAFETY: sysconf has no memory arguments.
    let n = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
    usize::try_from(n).ok().filter(|n| *n > 0)
}

/// glibc gives each thread that allocates its own arena (up to 8 per core); the daemon's
/// short-lived agent and connection threads then spread small allocations over many arenas
/// that are never returned. Two are plenty for this workload. Call before any thread.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // A fixed mmap threshold: large buffers (request bodies, webhook payloads, agent
        // output) are mapped and given back to the OS when freed. glibc's default raises the
        // threshold after the first such free, and the memory then stays in the heap.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Gives back what start-up used and idling does not: heap freed after loading (glibc's
/// `malloc_trim`), and the pages of this executable's code and read-only data that the
/// kernel mapped in while starting (`MADV_PAGEOUT` on its read-only file mappings, Linux
/// 5.4+). Those are clean file pages: what idling touches comes back on first use, the rest
/// (argument parsing, config and job loading, start-up checks) stays on disk. Call once the
/// daemon is up. Best effort: an older kernel refuses the advice, and nothing changes.
pub fn release_startup_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
    #[cfg(target_os = "linux")]
    page_out_own_code();
}

/// `MADV_PAGEOUT` over the read-only mappings of `/proc/self/exe` (see
/// [`release_startup_memory`]).
#[cfg(target_os = "linux")]
fn page_out_own_code() {
    let (Ok(exe), Ok(maps)) = (
        fs::read_link("/proc/self/exe"),
        fs::read_to_string("/proc/self/maps"),
    ) else {
        return;
    };
    let exe = exe.to_string_lossy();
    for line in maps.lines() {
        // "start-end perms offset dev inode path"
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        if perms.contains('w') || f.nth(3) != Some(exe.as_ref()) {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            continue;
        };
        // SAFETY: advice on a mapping of this process that stays mapped (the executable's
        // own read-only segments); MADV_PAGEOUT only drops clean pages from the resident
        // set, their contents stay as they are.
        unsafe {
            libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_PAGEOUT);
        }
    }
}

/// Sets TCP_NODELAY on the listener (accepted connections inherit it): without it Nagle's
/// algorithm meets the client's delayed ACK and answers written in pieces wait 40 ms.
pub fn set_listener_nodelay(listener: &TcpListener) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a pointer to a local c_int.
    unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
