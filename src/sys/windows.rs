//! The Windows side of [`crate::sys`]: job objects for runs, console control events and a
//! named event for stop requests, `LockFileEx` for the data dir's lock. Win32 calls go
//! through `windows-sys` (plain bindings, no runtime).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::TcpListener;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::os::windows::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::OnceLock;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};
use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, ERROR_ACCESS_DENIED, ERROR_IO_PENDING, ERROR_LOCK_VIOLATION,
    ERROR_SHARING_VIOLATION, HANDLE, INVALID_HANDLE_VALUE, STILL_ACTIVE, WAIT_OBJECT_0,
};
use windows_sys::Win32::Security::Authorization::{SetNamedSecurityInfoW, SE_FILE_OBJECT};
use windows_sys::Win32::Security::{
    AddAccessAllowedAceEx, GetLengthSid, GetTokenInformation, InitializeAcl, TokenUser,
    ACCESS_ALLOWED_ACE, ACL, ACL_REVISION, CONTAINER_INHERIT_ACE, DACL_SECURITY_INFORMATION,
    OBJECT_INHERIT_ACE, PROTECTED_DACL_SECURITY_INFORMATION, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::Storage::FileSystem::{
    GetFileInformationByHandle, LockFileEx, MoveFileExW, BY_HANDLE_FILE_INFORMATION,
    FILE_ALL_ACCESS, FILE_ATTRIBUTE_DIRECTORY, FILE_FLAG_BACKUP_SEMANTICS, LOCKFILE_EXCLUSIVE_LOCK,
    LOCKFILE_FAIL_IMMEDIATELY, MOVEFILE_REPLACE_EXISTING, MOVEFILE_WRITE_THROUGH,
};
use windows_sys::Win32::System::Console::{
    SetConsoleCtrlHandler, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_C_EVENT, CTRL_LOGOFF_EVENT,
    CTRL_SHUTDOWN_EVENT,
};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Thread32First, Thread32Next, TH32CS_SNAPTHREAD, THREADENTRY32,
};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
    SetInformationJobObject, TerminateJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JOB_OBJECT_LIMIT_ACTIVE_PROCESS, JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION,
    JOB_OBJECT_LIMIT_JOB_MEMORY, JOB_OBJECT_LIMIT_JOB_TIME, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};
use windows_sys::Win32::System::Threading::{
    CreateEventW, GetCurrentProcess, GetExitCodeProcess, OpenEventW, OpenProcess, OpenProcessToken,
    OpenThread, ResumeThread, SetEvent, WaitForSingleObject, CREATE_NO_WINDOW, CREATE_SUSPENDED,
    EVENT_MODIFY_STATE, INFINITE, PROCESS_QUERY_LIMITED_INFORMATION, THREAD_SUSPEND_RESUME,
};
use windows_sys::Win32::System::IO::OVERLAPPED;

use super::{Limits, PreExec, Signal, Stop};

/// Runs' processes are a job object.
pub const JOB_OBJECTS: bool = true;

/// Whether this is Windows (the Task Scheduler is there to register with).
pub const WINDOWS: bool = true;

/// Whether the file watcher reports the removal of a watched root itself (ReadDirectoryChangesW says nothing).
pub const WATCHER_SEES_ROOT_REMOVAL: bool = false;

/// What `stop` sends the daemon, for its message.
pub const STOP_REQUEST: &str = "a stop request (its named event)";

/// Signal numbers, for naming how a process ended. No Windows process ends by a signal
/// ([`exit_signal`] is always `None`); these are the POSIX numbers, so code that names a
/// Unix ending compiles and never matches.
pub mod sig {
    pub const SIGTRAP: i32 = 5;
    pub const SIGABRT: i32 = 6;
    pub const SIGBUS: i32 = 7;
    pub const SIGKILL: i32 = 9;
    pub const SIGSEGV: i32 = 11;
    pub const SIGXCPU: i32 = 24;
}

/// Stop requests, from the console handler and the stop-event thread to [`wait_signal`].
fn channel() -> &'static (Sender<Signal>, Receiver<Signal>) {
    static CH: OnceLock<(Sender<Signal>, Receiver<Signal>)> = OnceLock::new();
    CH.get_or_init(unbounded)
}

/// Runs on a thread the system starts for each console event. For a close, logoff or
/// shutdown the process ends when this returns (or after about 5 s, whatever it does), so
/// it waits that long: the drain gets those seconds, not its whole grace.
unsafe extern "system" fn on_console_event(ctrl: u32) -> i32 {
    let (name, ends_process) = match ctrl {
        CTRL_C_EVENT => ("Ctrl-C", false),
        CTRL_BREAK_EVENT => ("Ctrl-Break", false),
        CTRL_CLOSE_EVENT => ("console close", true),
        CTRL_LOGOFF_EVENT => ("logoff", true),
        CTRL_SHUTDOWN_EVENT => ("shutdown", true),
        _ => return 0,
    };
    let _ = channel().0.send(Signal::Stop(name));
    if ends_process {
        std::thread::sleep(Duration::from_secs(5));
    }
    1
}

fn stop_event_name(pid: u32) -> Vec<u16> {
    wide(format!("Local\\bog-agents-daemon-stop-{pid}").as_ref())
}

fn wide(s: &std::ffi::OsStr) -> Vec<u16> {
    s.encode_wide().chain(std::iter::once(0)).collect()
}

pub(super) fn prepare_signals() -> io::Result<()> {
    // SAFETY: registers a handler with the right signature; it lives as long as the process.
    if unsafe { SetConsoleCtrlHandler(Some(on_console_event), 1) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // `stop`: an auto-reset event named after this process, set by `request_stop`.
    let name = stop_event_name(std::process::id());
    // SAFETY: a valid NUL-terminated name; default security; the handle is owned below.
    let h = unsafe { CreateEventW(std::ptr::null(), 0, 0, name.as_ptr()) };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `h` is a new event handle that nothing else owns.
    let event = unsafe { OwnedHandle::from_raw_handle(h) };
    std::thread::Builder::new()
        .name("stop-event".into())
        .spawn(move || loop {
            // SAFETY: waits on an event handle this thread owns.
            let r = unsafe { WaitForSingleObject(event.as_raw_handle() as HANDLE, INFINITE) };
            if r != WAIT_OBJECT_0 {
                return;
            }
            if channel().0.send(Signal::Stop("stop request")).is_err() {
                return;
            }
        })?;
    Ok(())
}

pub(super) fn wait_signal() -> Signal {
    match channel().1.recv() {
        Ok(s) => s,
        // The channel is static: never disconnected.
        Err(_) => Signal::Stop("stop request"),
    }
}

/// Asks the daemon `pid` to drain and exit: sets the event it waits on. The event is in
/// the session's namespace (`Local\`): `stop` must run in the daemon's logon session.
pub fn request_stop(pid: u32) -> io::Result<()> {
    let name = stop_event_name(pid);
    // SAFETY: a valid NUL-terminated name.
    let h = unsafe { OpenEventW(EVENT_MODIFY_STATE, 0, name.as_ptr()) };
    if h.is_null() {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot open its stop event ({e}); is it running in another logon session?"),
        ));
    }
    // SAFETY: `h` is a new handle that nothing else owns.
    let h = unsafe { OwnedHandle::from_raw_handle(h) };
    // SAFETY: sets an event we hold a handle to.
    if unsafe { SetEvent(h.as_raw_handle() as HANDLE) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Nothing to do: Windows has no SIGPIPE.
pub fn restore_sigpipe() {}

/// A run's processes: a job object. Every process the agent starts is in it (breakaway is
/// not allowed), closing its handle kills them all (kill-on-close), and its limits apply to
/// all of them together.
#[derive(Debug)]
pub struct Tree {
    job: OwnedHandle,
    pid: u32,
}

impl Tree {
    /// Starts `cmd` suspended, puts it in a new job object with `limits` (`memory_mb` → the
    /// job's committed memory limit, `max_processes` → its active process limit,
    /// `cpu_seconds` → its user-mode CPU time limit, which ends every process), then lets
    /// it run, so not even its first instruction runs outside the job. The agent gets a
    /// console of its own (hidden), so the daemon's Ctrl-C does not reach it: the daemon
    /// decides when runs end. `pre` is Linux's.
    pub fn spawn(cmd: &mut Command, limits: Limits, _pre: PreExec) -> io::Result<(Child, Tree)> {
        // SAFETY: no name, default security; the handle is owned at once.
        let h = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        if h.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new job handle nothing else owns.
        let job = unsafe { OwnedHandle::from_raw_handle(h) };
        let mut info = JOBOBJECT_EXTENDED_LIMIT_INFORMATION::default();
        let b = &mut info.BasicLimitInformation;
        b.LimitFlags =
            JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION;
        if let Some(cpu) = limits.cpu_seconds {
            b.LimitFlags |= JOB_OBJECT_LIMIT_JOB_TIME;
            // In 100 ns units.
            b.PerJobUserTimeLimit =
                i64::try_from(cpu.saturating_mul(10_000_000)).unwrap_or(i64::MAX);
        }
        if let Some(n) = limits.max_processes {
            b.LimitFlags |= JOB_OBJECT_LIMIT_ACTIVE_PROCESS;
            b.ActiveProcessLimit = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(mb) = limits.memory_mb {
            b.LimitFlags |= JOB_OBJECT_LIMIT_JOB_MEMORY;
            info.JobMemoryLimit =
                usize::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        }
        // SAFETY: a valid job handle and a pointer to a struct of the size given.
        let ok = unsafe {
            SetInformationJobObject(
                job.as_raw_handle() as HANDLE,
                JobObjectExtendedLimitInformation,
                (&info as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast(),
                std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        cmd.creation_flags(CREATE_SUSPENDED | CREATE_NO_WINDOW);
        let mut child = cmd.spawn()?;
        let tree = Tree {
            job,
            pid: child.id(),
        };
        let started = (|| {
            // SAFETY: valid job and process handles.
            let ok = unsafe {
                AssignProcessToJobObject(
                    tree.job.as_raw_handle() as HANDLE,
                    child.as_raw_handle() as HANDLE,
                )
            };
            if ok == 0 {
                return Err(io::Error::last_os_error());
            }
            resume_threads(tree.pid)
        })();
        if let Err(e) = started {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok((child, tree))
    }

    /// The agent's process id.
    pub fn id(&self) -> i32 {
        self.pid as i32
    }

    /// Ends every process of the job at once: Windows has no polite request for a job's
    /// console programs, so `Term` is `Kill`.
    pub fn stop(&self, _how: Stop) {
        // SAFETY: a valid job handle.
        unsafe {
            TerminateJobObject(self.job.as_raw_handle() as HANDLE, 1);
        }
    }

    /// Whether processes that left the run must be looked for: no, the job holds them all.
    pub fn may_leak(&self) -> bool {
        false
    }
}

/// What [`Tree::stop`] does, for a run's record.
pub fn how_stopped(_grace: Duration) -> String {
    "every process of the run was terminated (its job object)".to_string()
}

/// Resumes the threads of a process started suspended (its main thread; std does not hand
/// out the thread handle CreateProcess returned).
fn resume_threads(pid: u32) -> io::Result<()> {
    // SAFETY: a snapshot of all threads; the handle is closed below.
    let snap = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0) };
    if snap == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new snapshot handle nothing else owns.
    let snap = unsafe { OwnedHandle::from_raw_handle(snap) };
    let mut entry = THREADENTRY32 {
        dwSize: std::mem::size_of::<THREADENTRY32>() as u32,
        cntUsage: 0,
        th32ThreadID: 0,
        th32OwnerProcessID: 0,
        tpBasePri: 0,
        tpDeltaPri: 0,
        dwFlags: 0,
    };
    let mut resumed = 0;
    // SAFETY: a valid snapshot and an entry whose dwSize is set.
    let mut more = unsafe { Thread32First(snap.as_raw_handle() as HANDLE, &mut entry) } != 0;
    while more {
        if entry.th32OwnerProcessID == pid {
            // SAFETY: opens a thread by id; the handle is closed right after use.
            let t = unsafe { OpenThread(THREAD_SUSPEND_RESUME, 0, entry.th32ThreadID) };
            if !t.is_null() {
                // SAFETY: a thread handle we just opened.
                unsafe {
                    if ResumeThread(t) != u32::MAX {
                        resumed += 1;
                    }
                    CloseHandle(t);
                }
            }
        }
        // SAFETY: as for Thread32First.
        more = unsafe { Thread32Next(snap.as_raw_handle() as HANDLE, &mut entry) } != 0;
    }
    if resumed == 0 {
        return Err(io::Error::other("cannot resume the agent's main thread"));
    }
    Ok(())
}

/// No process ends by a signal on Windows.
pub fn exit_signal(_status: &ExitStatus) -> Option<i32> {
    None
}

/// The POSIX name of a signal number (never seen on Windows; see [`sig`]).
pub fn signal_name(sig: i32) -> String {
    format!("signal {sig}")
}

/// Nothing to sweep: the job object holds every process of a run.
pub fn sweep_marked(_marker: &str) -> usize {
    0
}

/// Whether a process with this pid is running (access denied: it is, someone else's).
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: opens a process by id; the handle is owned at once.
    let h = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if h.is_null() {
        // SAFETY: reads this thread's last error.
        return unsafe { GetLastError() } == ERROR_ACCESS_DENIED;
    }
    // SAFETY: a new process handle nothing else owns.
    let h = unsafe { OwnedHandle::from_raw_handle(h) };
    let mut code = 0u32;
    // SAFETY: a valid process handle and an out-pointer.
    let ok = unsafe { GetExitCodeProcess(h.as_raw_handle() as HANDLE, &mut code) };
    ok != 0 && code == STILL_ACTIVE as u32
}

/// Takes an exclusive lock without waiting (LockFileEx, released when the handle closes or
/// the process dies). The locked byte is far past the end of the file, so the lock, which
/// Windows enforces on reads too, never stops a client reading where the daemon listens.
pub fn try_lock_file(f: &File) -> io::Result<bool> {
    let mut ov = OVERLAPPED::default();
    ov.Anonymous.Anonymous.OffsetHigh = 0x4000_0000;
    // SAFETY: a valid file handle and an OVERLAPPED that outlives the (synchronous) call.
    let ok = unsafe {
        LockFileEx(
            f.as_raw_handle() as HANDLE,
            LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY,
            0,
            1,
            0,
            &mut ov,
        )
    };
    if ok != 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error().map(|c| c as u32) {
        Some(ERROR_LOCK_VIOLATION) | Some(ERROR_IO_PENDING) => Ok(false),
        _ => Err(e),
    }
}

/// Unix modes do not exist here: a new file takes the ACL its directory passes on (the data
/// dir's is this user alone: [`tighten_private_dir`]).
pub fn set_file_mode(_o: &mut OpenOptions, _mode: u32) {}

/// As [`set_file_mode`], for directories.
pub fn set_dir_mode(_b: &mut fs::DirBuilder, _mode: u32) {}

/// Gives `dir` a protected ACL (nothing inherited from its parent) with one entry: this
/// user, full control, passed on to everything in it, the files already there included
/// (SetNamedSecurityInfoW propagates it). Never reports a mode.
pub fn tighten_private_dir(dir: &Path) -> io::Result<Option<u32>> {
    // The user's SID, from the process token.
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the current process's pseudo-handle and an out-pointer for the token.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new token handle nothing else owns.
    let token = unsafe { OwnedHandle::from_raw_handle(token) };
    let mut len = 0u32;
    // SAFETY: asks for the size only (no buffer); fails with the size in `len`.
    unsafe {
        GetTokenInformation(
            token.as_raw_handle() as HANDLE,
            TokenUser,
            std::ptr::null_mut(),
            0,
            &mut len,
        )
    };
    if len == 0 {
        return Err(io::Error::last_os_error());
    }
    // u64s: aligned for TOKEN_USER.
    let mut user = vec![0u64; (len as usize).div_ceil(8)];
    // SAFETY: a buffer of at least `len` bytes.
    let ok = unsafe {
        GetTokenInformation(
            token.as_raw_handle() as HANDLE,
            TokenUser,
            user.as_mut_ptr().cast(),
            len,
            &mut len,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: GetTokenInformation(TokenUser) filled the buffer with a TOKEN_USER, whose SID
    // points into the same buffer, which lives until the end of this function.
    let sid = unsafe { (*user.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    // SAFETY: a valid SID.
    let sid_len = unsafe { GetLengthSid(sid) } as usize;
    // The ACL header and one ACCESS_ALLOWED_ACE, whose last u32 (SidStart) is the SID's
    // first; a multiple of 4 bytes.
    let acl_len = (std::mem::size_of::<ACL>() + std::mem::size_of::<ACCESS_ALLOWED_ACE>()
        - std::mem::size_of::<u32>()
        + sid_len)
        .next_multiple_of(4);
    let mut acl = vec![0u32; acl_len / 4];
    let acl_ptr = acl.as_mut_ptr().cast::<ACL>();
    // SAFETY: a buffer of `acl_len` bytes, 4-aligned; the SID is valid.
    unsafe {
        if InitializeAcl(acl_ptr, acl_len as u32, ACL_REVISION) == 0
            || AddAccessAllowedAceEx(
                acl_ptr,
                ACL_REVISION,
                OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE,
                FILE_ALL_ACCESS,
                sid,
            ) == 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    let name = wide(dir.as_os_str());
    // SAFETY: a valid NUL-terminated path and ACL; no owner, group or SACL change.
    let r = unsafe {
        SetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            acl_ptr,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r as i32));
    }
    Ok(None)
}

/// How long a rename waits for readers of the file it replaces.
const RENAME_PATIENCE: Duration = Duration::from_secs(2);

/// Renames `from` over `to` with MoveFileExW(MOVEFILE_REPLACE_EXISTING |
/// MOVEFILE_WRITE_THROUGH): replaces an existing file, and returns only once the move is
/// on disk. Windows refuses to replace a file while anyone has it open (a reader of a run
/// record, an indexer, an antivirus scan: access denied or a sharing violation); such
/// handles are short-lived, so the rename is tried again, for up to [`RENAME_PATIENCE`].
pub fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    let (a, b) = (wide(from.as_os_str()), wide(to.as_os_str()));
    let deadline = std::time::Instant::now() + RENAME_PATIENCE;
    let mut pause = Duration::from_millis(1);
    loop {
        // SAFETY: two valid NUL-terminated paths.
        let ok = unsafe {
            MoveFileExW(
                a.as_ptr(),
                b.as_ptr(),
                MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH,
            )
        };
        if ok != 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        let busy = matches!(
            e.raw_os_error().map(|c| c as u32),
            Some(ERROR_ACCESS_DENIED | ERROR_SHARING_VIOLATION)
        );
        if !busy || std::time::Instant::now() >= deadline {
            return Err(e);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A directory cannot be fsynced on Windows (it cannot even be opened as a file without
/// backup semantics); NTFS journals the rename itself. A missing directory is still an
/// error, as on Unix.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    if fs::metadata(dir)?.is_dir() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )))
    }
}

/// (volume serial number, file index) of a directory, Windows' (device, inode); None if `p`
/// is not one.
pub fn dir_identity(p: &Path) -> Option<(u64, u64)> {
    use std::os::windows::fs::OpenOptionsExt;
    // No access asked, only the handle; backup semantics: a directory can be opened.
    let f = OpenOptions::new()
        .access_mode(0)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(p)
        .ok()?;
    let mut info = BY_HANDLE_FILE_INFORMATION::default();
    // SAFETY: a valid handle and an out-struct of the right type.
    if unsafe { GetFileInformationByHandle(f.as_raw_handle() as HANDLE, &mut info) } == 0 {
        return None;
    }
    (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY != 0).then_some((
        u64::from(info.dwVolumeSerialNumber),
        u64::from(info.nFileIndexHigh) << 32 | u64::from(info.nFileIndexLow),
    ))
}

/// The default data dir is `%APPDATA%\bog-agents\daemon`.
pub(super) const DATA_DIR_UNDER: (&str, &str) = ("APPDATA", "bog-agents");

/// No password database here (only `install-systemd --system` asks).
pub fn home_of(_user: &str) -> Option<PathBuf> {
    None
}

/// No per-process limits on handles or threads that matter at this scale.
pub fn resource_caps() -> Vec<usize> {
    Vec::new()
}

/// No fixed total here; CreateProcess's 32767-character command line limit shows as the
/// spawn's error.
pub fn arg_max() -> Option<usize> {
    None
}

/// Nothing to tune.
pub fn tune_allocator() {}

/// Nothing to give back: Windows trims an idle process's working set by itself.
pub fn release_startup_memory() {}

/// Accepted connections get TCP_NODELAY from tiny_http; nothing to do on the listener.
pub fn set_listener_nodelay(_listener: &TcpListener) {}
