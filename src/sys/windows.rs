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
    CloseHandle, GetLastError, LocalFree, ERROR_ACCESS_DENIED, ERROR_INVALID_FUNCTION,
    ERROR_INVALID_PARAMETER, ERROR_IO_PENDING, ERROR_LOCK_VIOLATION, ERROR_NOT_SUPPORTED,
    ERROR_SHARING_VIOLATION, GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE, STILL_ACTIVE,
    WAIT_OBJECT_0,
};
use windows_sys::Win32::Security::Authorization::{
    GetNamedSecurityInfoW, SetNamedSecurityInfoW, SE_FILE_OBJECT,
};
use windows_sys::Win32::Security::{
    AddAccessAllowedAceEx, GetLengthSid, GetSecurityDescriptorControl, GetTokenInformation,
    InitializeAcl, InitializeSecurityDescriptor, SetSecurityDescriptorControl,
    SetSecurityDescriptorDacl, TokenUser, ACCESS_ALLOWED_ACE, ACE_FLAGS, ACL, ACL_REVISION,
    CONTAINER_INHERIT_ACE, DACL_SECURITY_INFORMATION, OBJECT_INHERIT_ACE,
    PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES,
    SECURITY_DESCRIPTOR, SE_DACL_PROTECTED, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateDirectoryW, CreateFileW, GetFileInformationByHandle, LockFileEx,
    BY_HANDLE_FILE_INFORMATION, CREATE_NEW, FILE_ALL_ACCESS, FILE_ATTRIBUTE_DIRECTORY,
    FILE_ATTRIBUTE_NORMAL, FILE_FLAG_BACKUP_SEMANTICS, FILE_GENERIC_WRITE, FILE_SHARE_DELETE,
    FILE_SHARE_READ, FILE_SHARE_WRITE, FILE_WRITE_DATA, LOCKFILE_EXCLUSIVE_LOCK,
    LOCKFILE_FAIL_IMMEDIATELY, OPEN_ALWAYS,
};
use windows_sys::Win32::System::Console::{
    SetConsoleCtrlHandler, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_C_EVENT, CTRL_LOGOFF_EVENT,
    CTRL_SHUTDOWN_EVENT,
};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Thread32First, Thread32Next, TH32CS_SNAPTHREAD, THREADENTRY32,
};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectBasicAccountingInformation,
    JobObjectExtendedLimitInformation, QueryInformationJobObject, SetInformationJobObject,
    TerminateJobObject, JOBOBJECTINFOCLASS, JOBOBJECT_BASIC_ACCOUNTING_INFORMATION,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JOB_OBJECT_LIMIT_ACTIVE_PROCESS,
    JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION, JOB_OBJECT_LIMIT_JOB_MEMORY,
    JOB_OBJECT_LIMIT_JOB_TIME, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};
use windows_sys::Win32::System::Threading::{
    CreateEventW, GetCurrentProcess, GetExitCodeProcess, OpenEventW, OpenProcess, OpenProcessToken,
    OpenThread, ResumeThread, SetEvent, WaitForSingleObject, CREATE_NO_WINDOW, CREATE_SUSPENDED,
    EVENT_MODIFY_STATE, INFINITE, PROCESS_QUERY_LIMITED_INFORMATION, THREAD_SUSPEND_RESUME,
};
use windows_sys::Win32::System::IO::OVERLAPPED;

use super::{Create, LimitHits, Limits, PreExec, Signal, Stop};

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

/// Runs on a thread the system starts for each console event. A close (and a logoff or
/// shutdown, which Windows sends to services only: the daemon, started by the Task
/// Scheduler, is ended without them) ends the process when this returns, or about 5 s
/// after the event whatever it does. So it sends a second stop at once, as a second Ctrl-C
/// would: runs are killed and recorded as interrupted within those seconds instead of
/// being cut off while the drain waits for its grace; then it never returns (the daemon
/// exits first, or Windows ends it).
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
        let _ = channel().0.send(Signal::Stop(name));
        loop {
            std::thread::park();
        }
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
    limits: Limits,
}

impl Tree {
    /// Starts `cmd` suspended, puts it in a new job object with `limits` (`memory_mb` → the
    /// job's committed memory limit, `max_processes` → its active process limit,
    /// `cpu_seconds` → its user-mode CPU time limit, which ends every process), then lets
    /// it run, so not even its first instruction runs outside the job. The agent gets a
    /// console of its own (CREATE_NO_WINDOW: hidden), which by Windows' rules keeps the
    /// daemon's console's Ctrl-C from it (not tested: Wine turns a Linux signal into the
    /// event for one process). `pre` is Linux's.
    pub fn spawn(cmd: &mut Command, limits: Limits, pre: PreExec) -> io::Result<(Child, Tree)> {
        // Created at its instant: only the process is left for it. At most two seconds,
        // as on Unix, however the wall clock is stepped meanwhile (the worker's kill switch
        // and the daemon's stop are not heard during this sleep).
        if let Some(at) = pre.start_at {
            if let Ok(left) = at.duration_since(std::time::SystemTime::now()) {
                std::thread::sleep(left.min(std::time::Duration::from_secs(2)));
            }
        }
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
            limits,
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

    /// What the job object counted against the run's limits: its user-mode CPU time at the
    /// `cpu_seconds` limit (Windows then ends every process of the job with code 1816,
    /// ERROR_NOT_ENOUGH_QUOTA), its peak committed memory within 1/16 of `memory_mb` (an
    /// allocation past the limit fails; how far the failed one reached is not recorded).
    /// A query that fails reports nothing.
    pub fn limits_hit(&self) -> LimitHits {
        let mut hits = LimitHits::default();
        if let Some(cpu) = self.limits.cpu_seconds {
            let acct: Option<JOBOBJECT_BASIC_ACCOUNTING_INFORMATION> =
                self.query(JobObjectBasicAccountingInformation);
            let limit = i64::try_from(cpu.saturating_mul(10_000_000)).unwrap_or(i64::MAX);
            hits.cpu_seconds = acct.is_some_and(|a| a.TotalUserTime >= limit);
        }
        if let Some(mb) = self.limits.memory_mb {
            let info: Option<JOBOBJECT_EXTENDED_LIMIT_INFORMATION> =
                self.query(JobObjectExtendedLimitInformation);
            let limit = mb.saturating_mul(1024 * 1024);
            let peak = info.map_or(0, |i| i.PeakJobMemoryUsed as u64);
            hits.memory_mb = peak > 0 && peak >= limit - limit / 16;
        }
        hits
    }

    /// One of the job's information classes, as the plain struct `T` it is; None if the
    /// query fails.
    fn query<T: Default>(&self, class: JOBOBJECTINFOCLASS) -> Option<T> {
        let mut info = T::default();
        // SAFETY: a valid job handle and an out-struct of the size given; `T` is the plain
        // struct the caller names for `class`.
        let ok = unsafe {
            QueryInformationJobObject(
                self.job.as_raw_handle() as HANDLE,
                class,
                (&mut info as *mut T).cast(),
                std::mem::size_of::<T>() as u32,
                std::ptr::null_mut(),
            )
        };
        (ok != 0).then_some(info)
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

/// Unix modes do not exist here, and OpenOptions takes no security descriptor: a file opened
/// this way takes the ACL its directory passes on. Files that must be private are made by
/// [`create_file`] (fsio's writers), which gives them their own ACL.
pub fn set_file_mode(_o: &mut OpenOptions, _mode: u32) {}

/// As [`set_file_mode`], for directories ([`create_dir`] makes private ones).
pub fn set_dir_mode(_b: &mut fs::DirBuilder, _mode: u32) {}

/// Whether a Unix mode keeps group and others out (0o600, 0o700): such files and
/// directories get [`user_only_acl`] when they are created.
fn private(mode: u32) -> bool {
    mode & 0o077 == 0
}

/// A security descriptor whose DACL is protected (nothing inherited from the parent) and
/// has one entry, this user with full control; with `inherit`, passed on to what is made
/// inside (a directory's). The descriptor points into the ACL buffer it is kept with.
struct PrivateSd {
    sd: Box<SECURITY_DESCRIPTOR>,
    _acl: Vec<u32>,
}

impl PrivateSd {
    fn new(inherit: bool) -> io::Result<PrivateSd> {
        let mut acl = user_only_acl(if inherit {
            OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE
        } else {
            0
        })?;
        let mut sd = Box::new(SECURITY_DESCRIPTOR::default());
        let p: PSECURITY_DESCRIPTOR = (&mut *sd as *mut SECURITY_DESCRIPTOR).cast();
        // SAFETY: `p` points to a SECURITY_DESCRIPTOR that lives as long as `self`; the
        // ACL buffer moves into `self` with it (a Vec's heap buffer does not move).
        let ok = unsafe {
            InitializeSecurityDescriptor(p, 1) != 0
                && SetSecurityDescriptorDacl(p, 1, acl.as_mut_ptr().cast::<ACL>(), 0) != 0
                && SetSecurityDescriptorControl(p, SE_DACL_PROTECTED, SE_DACL_PROTECTED) != 0
        };
        if !ok {
            return Err(io::Error::last_os_error());
        }
        Ok(PrivateSd { sd, _acl: acl })
    }

    /// Attributes for CreateFileW and CreateDirectoryW; valid while `self` is.
    fn attributes(&mut self) -> SECURITY_ATTRIBUTES {
        SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: (&mut *self.sd as *mut SECURITY_DESCRIPTOR).cast(),
            bInheritHandle: 0,
        }
    }
}

/// Creates `path` as `how` says. A private `mode` (0o600) gives a new file this user's
/// protected ACL in the same call that creates it (CreateFileW's security attributes), so
/// no other account can open it even for a moment, whatever its directory passes on; an
/// ACL that cannot be built is an error, never a file left open to others. An existing file
/// (`Append`) keeps its ACL. Other modes: the directory's ACL, as std makes files.
pub fn create_file(path: &Path, mode: u32, how: Create) -> io::Result<File> {
    if !private(mode) {
        let mut o = OpenOptions::new();
        match how {
            Create::New => o.write(true).create_new(true),
            Create::Append => o.append(true).create(true),
        };
        return o.open(path);
    }
    let mut sd = PrivateSd::new(false)?;
    let sa = sd.attributes();
    let (access, disposition) = match how {
        Create::New => (GENERIC_WRITE, CREATE_NEW),
        // As std opens for appending: every write goes to the end.
        Create::Append => (FILE_GENERIC_WRITE & !FILE_WRITE_DATA, OPEN_ALWAYS),
    };
    let name = wide(path.as_os_str());
    // SAFETY: a valid NUL-terminated path and security attributes that outlive the call.
    let h = unsafe {
        CreateFileW(
            name.as_ptr(),
            access,
            FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
            &sa,
            disposition,
            FILE_ATTRIBUTE_NORMAL,
            std::ptr::null_mut(),
        )
    };
    if h == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new file handle nothing else owns, opened for synchronous I/O as std's are.
    Ok(unsafe { File::from_raw_handle(h) })
}

/// Creates the directory `path`; a private `mode` (0o700) gives it this user's protected
/// ACL, passed on to what is made inside, in the call that creates it.
pub fn create_dir(path: &Path, mode: u32) -> io::Result<()> {
    if !private(mode) {
        return fs::create_dir(path);
    }
    let mut sd = PrivateSd::new(true)?;
    let sa = sd.attributes();
    let name = wide(path.as_os_str());
    // SAFETY: a valid NUL-terminated path and security attributes that outlive the call.
    if unsafe { CreateDirectoryW(name.as_ptr(), &sa) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `dir`'s DACL is protected (inherits nothing from its parent): one the daemon
/// made, or one its user set on purpose.
fn dacl_protected(dir: &Path) -> io::Result<bool> {
    let name = wide(dir.as_os_str());
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: a valid path; the descriptor the call allocates is freed below.
    let r = unsafe {
        GetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r as i32));
    }
    let (mut control, mut rev) = (0u16, 0u32);
    // SAFETY: the descriptor GetNamedSecurityInfoW returned, freed right after.
    let ok = unsafe {
        let ok = GetSecurityDescriptorControl(sd, &mut control, &mut rev);
        LocalFree(sd);
        ok
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(control & SE_DACL_PROTECTED != 0)
}

/// The ACL with one entry, this user (the process token's) with full control, `flags` its
/// inheritance; a buffer of u32s (ACLs are 4-aligned) that holds the ACL.
fn user_only_acl(flags: ACE_FLAGS) -> io::Result<Vec<u32>> {
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
    // SAFETY: a buffer of `acl_len` bytes, 4-aligned; the SID is valid (the token buffer
    // `user` lives until the end of this function, and the ACE copies the SID).
    unsafe {
        if InitializeAcl(acl_ptr, acl_len as u32, ACL_REVISION) == 0
            || AddAccessAllowedAceEx(acl_ptr, ACL_REVISION, flags, FILE_ALL_ACCESS, sid) == 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(acl)
}

/// Gives `dir` a protected ACL (nothing inherited from its parent) with one entry: this
/// user, full control, passed on to everything in it, the files already there included
/// (SetNamedSecurityInfoW propagates it) — unless its DACL is already protected (made by
/// [`create_dir`], or set by its user on purpose): then it is left alone, so entries a user
/// added (a backup account, say) are not removed at every start. Never reports a mode.
pub fn tighten_private_dir(dir: &Path) -> io::Result<Option<u32>> {
    if dacl_protected(dir)? {
        return Ok(None);
    }
    let mut acl = user_only_acl(OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE)?;
    let acl_ptr = acl.as_mut_ptr().cast::<ACL>();
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

/// How long a rename waits when the file it replaces is held without FILE_SHARE_DELETE.
const RENAME_PATIENCE: Duration = Duration::from_secs(2);

/// Renames `from` over `to` with std's rename, which (Rust 1.78 and later) asks for POSIX
/// semantics (FileRenameInfoEx): an existing `to` is replaced even while readers have it
/// open with FILE_SHARE_DELETE, as every std `File` does, and they keep reading the old
/// content. Where that is not available (FAT, older Windows, Wine) std falls back to
/// MoveFileExW, which fails while anyone has `to` open (a sharing violation; Wine 8 says
/// access denied, for std's rename too): that is tried again, for up to
/// [`RENAME_PATIENCE`]; any other error at once. On Windows proper with NTFS neither
/// happens for the daemon's own readers. Durability is [`sync_dir`]'s, after the rename.
pub fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    let deadline = std::time::Instant::now() + RENAME_PATIENCE;
    let mut pause = Duration::from_millis(1);
    loop {
        let e = match fs::rename(from, to) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let busy = matches!(
            e.raw_os_error().map(|c| c as u32),
            Some(ERROR_SHARING_VIOLATION | ERROR_ACCESS_DENIED)
        );
        if !busy || std::time::Instant::now() >= deadline {
            return Err(e);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Flushes the directory's entries to disk: FlushFileBuffers on the directory opened for
/// writing with backup semantics (NTFS writes the directory's metadata, which a rename or
/// a creation changed). A file system that refuses to open or flush a directory that way
/// (access denied, not supported) leaves it to its own journal: that is not an error, as a
/// missing directory is.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    use std::os::windows::fs::OpenOptionsExt;
    let refused = |e: &io::Error| {
        matches!(
            e.raw_os_error().map(|c| c as u32),
            Some(
                ERROR_ACCESS_DENIED
                    | ERROR_INVALID_FUNCTION
                    | ERROR_INVALID_PARAMETER
                    | ERROR_NOT_SUPPORTED
            )
        )
    };
    let f = match OpenOptions::new()
        .write(true)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(dir)
    {
        Ok(f) => f,
        Err(e) if refused(&e) && fs::metadata(dir)?.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    match f.sync_all() {
        Err(e) if refused(&e) => Ok(()),
        r => r,
    }
}

/// Writes all of `buf` at `offset` of `f` (positioned writes; the cursor moves, and no
/// caller uses it).
pub fn write_at(f: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_write(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// No filesystem-wide flush without administrator rights here: [`FsFlush::flush`] says
/// `Ok(false)`, and the caller flushes file by file.
#[derive(Debug)]
pub struct FsFlush {}

impl FsFlush {
    /// Nothing to open.
    pub fn open(_dir: &Path) -> io::Result<FsFlush> {
        Ok(FsFlush {})
    }

    /// `Ok(false)`: flush file by file.
    pub fn flush(&self) -> io::Result<bool> {
        Ok(false)
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
