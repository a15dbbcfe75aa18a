//! Runs one agent process: spawn → limits → wait → capture.
//!
//! The agent gets its own process group, so a timeout or shutdown can signal it and every
//! descendant that stayed in the group. `RLIMIT_CPU` and `RLIMIT_AS` are set in the child
//! before `exec`. stdout is captured up to a byte limit (the rest is read and counted, so
//! the agent never blocks on a full pipe); the last bytes of stderr are kept. When the agent
//! exits, anything it left running in its group is killed. This module knows nothing of
//! jobs or run records; [`crate::worker`] translates.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};

/// Seconds between SIGTERM and SIGKILL when a run is stopped.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// Bytes of stderr kept in the run record.
pub const STDERR_TAIL_BYTES: usize = 4096;

/// What to run and under which limits.
#[derive(Clone, Debug)]
pub struct Spec {
    pub argv: Vec<String>,
    /// Written to stdin (then closed); `None` means stdin is `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// Added to (and overriding) the daemon's environment.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub timeout: Option<Duration>,
    pub cpu_seconds: Option<u64>,
    pub memory_mb: Option<u64>,
    /// `RLIMIT_NPROC` (counts all processes of the user; root is exempt).
    pub max_processes: Option<u64>,
    pub max_output_bytes: usize,
    /// An environment entry (`NAME=value`, also in `env`) that marks this run's processes:
    /// when the agent ends, every process still carrying it is killed, including those that
    /// left the process group with `setsid` (Linux, via `/proc/<pid>/environ`).
    pub marker: Option<String>,
}

/// How an agent process ended.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// Stopped because `timeout` passed.
    pub timed_out: bool,
    /// Stopped because [`Control::kill`] was called (daemon shutdown).
    pub killed: bool,
    pub stdout: Vec<u8>,
    /// Total stdout bytes written, captured or not.
    pub stdout_total: u64,
    pub stderr_tail: Vec<u8>,
    pub duration: Duration,
    /// A process that escaped the group kept the output pipes open past the agent's exit.
    pub pipes_held_open: bool,
    /// Processes outside the agent's group that carried its marker and were killed.
    pub escaped_killed: usize,
}

/// Lets another thread stop a running agent (used at shutdown).
#[derive(Clone)]
pub struct Control {
    kill_rx: Receiver<()>,
}

impl Control {
    /// A control and the sender whose message (or drop) kills the agent's group.
    pub fn new() -> (Control, crossbeam_channel::Sender<()>) {
        let (tx, rx) = bounded(1);
        (Control { kill_rx: rx }, tx)
    }
}

/// Spawns and waits for the agent. `on_spawn` receives the process-group id as soon as the
/// process exists. Errors are reasons the agent could not start, in words for the run record.
pub fn run(spec: &Spec, control: &Control, on_spawn: impl FnOnce(i32)) -> Result<Outcome, String> {
    let Some(program) = spec.argv.first() else {
        return Err("the agent command is empty".into());
    };
    if !spec.cwd.is_dir() {
        return Err(format!(
            "working directory {} does not exist or is not a directory",
            spec.cwd.display()
        ));
    }
    let mut cmd = Command::new(program);
    cmd.args(&spec.argv[1..])
        .current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    prepare_child(
        &mut cmd,
        spec.cpu_seconds,
        spec.memory_mb,
        spec.max_processes,
    );

    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!(
            "agent command {program:?} not found (is it installed and on the daemon's PATH?)"
        ),
        io::ErrorKind::PermissionDenied => {
            format!("agent command {program:?} is not executable: {e}")
        }
        _ => format!("cannot start agent command {program:?}: {e}"),
    })?;
    let pgid = child.id() as i32;
    on_spawn(pgid);

    if let (Some(input), Some(mut stdin)) = (spec.stdin.clone(), child.stdin.take()) {
        thread::Builder::new()
            .name("agent-stdin".into())
            .spawn(move || {
                // EPIPE (the agent ignored its stdin) is not an error worth reporting.
                let _ = stdin.write_all(&input);
            })
            .map_err(|e| format!("cannot start stdin thread: {e}"))?;
    }

    let out = Arc::new(Mutex::new(Capture::new(spec.max_output_bytes, false)));
    let err = Arc::new(Mutex::new(Capture::new(STDERR_TAIL_BYTES, true)));
    let (done_tx, done_rx) = bounded::<()>(2);
    for (pipe, cap) in [
        (
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            out.clone(),
        ),
        (
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            err.clone(),
        ),
    ] {
        let done = done_tx.clone();
        let spawned = thread::Builder::new()
            .name("agent-pipe".into())
            .spawn(move || {
                if let Some(mut p) = pipe {
                    let mut buf = [0u8; 16384];
                    loop {
                        match p.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => lock(&cap).push(&buf[..n]),
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(_) => break,
                        }
                    }
                }
                let _ = done.send(());
            });
        if let Err(e) = spawned {
            kill_group(pgid, libc::SIGKILL);
            let _ = child.wait();
            return Err(format!("cannot start output thread: {e}"));
        }
    }
    drop(done_tx);

    let (exit_tx, exit_rx) = bounded::<io::Result<ExitStatus>>(1);
    thread::Builder::new()
        .name("agent-wait".into())
        .spawn(move || {
            let _ = exit_tx.send(child.wait());
        })
        .map_err(|e| {
            kill_group(pgid, libc::SIGKILL);
            format!("cannot start wait thread: {e}")
        })?;

    let mut outcome = Outcome::default();
    let deadline = spec.timeout.map(|t| started + t);
    let status = wait_or_stop(&exit_rx, &control.kill_rx, deadline, pgid, &mut outcome)?;
    // Whatever the agent left running, in its group or escaped from it, goes with it.
    kill_group(pgid, libc::SIGKILL);
    if let Some(m) = &spec.marker {
        outcome.escaped_killed = sweep_marked(m);
    }
    outcome.duration = started.elapsed();
    if let Some(code) = status.code() {
        outcome.exit_code = Some(code);
    }
    outcome.signal = exit_signal(&status);

    // Pipes close when every holder is gone; a process that left the group (setsid) may
    // keep them open, so do not wait for it forever.
    let pipe_deadline = Instant::now() + Duration::from_secs(2);
    for _ in 0..2 {
        if done_rx.recv_deadline(pipe_deadline).is_err() {
            outcome.pipes_held_open = true;
            break;
        }
    }
    let o = lock(&out).take();
    outcome.stdout = o.0;
    outcome.stdout_total = o.1;
    outcome.stderr_tail = lock(&err).take().0;
    Ok(outcome)
}

fn wait_or_stop(
    exit_rx: &Receiver<io::Result<ExitStatus>>,
    kill_rx: &Receiver<()>,
    deadline: Option<Instant>,
    pgid: i32,
    outcome: &mut Outcome,
) -> Result<ExitStatus, String> {
    let wait_err = |e: io::Error| format!("waiting for the agent failed: {e}");
    // Phase 1: until exit, timeout, or kill request.
    let far = Instant::now() + Duration::from_secs(100 * 365 * 86400);
    crossbeam_channel::select! {
        recv(exit_rx) -> r => return r.map_err(|_| "agent wait thread vanished".to_string())?.map_err(wait_err),
        recv(kill_rx) -> _ => outcome.killed = true,
        default(deadline.unwrap_or(far).saturating_duration_since(Instant::now())) => outcome.timed_out = true,
    }
    // Phase 2: SIGTERM the group, SIGKILL after the grace.
    kill_group(pgid, libc::SIGTERM);
    match exit_rx.recv_timeout(KILL_GRACE) {
        Ok(r) => return r.map_err(wait_err),
        Err(RecvTimeoutError::Disconnected) => return Err("agent wait thread vanished".into()),
        Err(RecvTimeoutError::Timeout) => {}
    }
    kill_group(pgid, libc::SIGKILL);
    exit_rx
        .recv()
        .map_err(|_| "agent wait thread vanished".to_string())?
        .map_err(wait_err)
}

/// Kills (SIGKILL) every other process whose environment holds `marker`; returns how many.
/// Repeats a few times, since one of them may fork while the sweep runs.
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

/// Sends `sig` to process group `pgid`; a group that is already gone is fine.
pub fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

fn exit_signal(status: &ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
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

/// New process group, limits, and a clean signal mask, applied in the child before exec.
fn prepare_child(
    cmd: &mut Command,
    cpu_seconds: Option<u64>,
    memory_mb: Option<u64>,
    max_processes: Option<u64>,
) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    // SAFETY: the closure only calls async-signal-safe functions (setrlimit, sigprocmask)
    // on values computed before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            if let Some(cpu) = cpu_seconds {
                let lim = libc::rlimit {
                    rlim_cur: cpu as libc::rlim_t,
                    // SIGXCPU at the soft limit, SIGKILL a few seconds later.
                    rlim_max: cpu.saturating_add(5) as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_CPU, &lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(mb) = memory_mb {
                let bytes = mb.saturating_mul(1024 * 1024) as libc::rlim_t;
                let lim = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(n) = max_processes {
                let lim = libc::rlimit {
                    rlim_cur: n as libc::rlim_t,
                    rlim_max: n as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NPROC, &lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Bounded capture of a pipe: the first `limit` bytes (or, for a tail, the last).
struct Capture {
    buf: VecDeque<u8>,
    limit: usize,
    tail: bool,
    total: u64,
}

impl Capture {
    fn new(limit: usize, tail: bool) -> Capture {
        Capture {
            buf: VecDeque::new(),
            limit,
            tail,
            total: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        if self.tail {
            self.buf.extend(data);
            let over = self.buf.len().saturating_sub(self.limit);
            self.buf.drain(..over);
        } else {
            let room = self.limit.saturating_sub(self.buf.len());
            self.buf.extend(&data[..room.min(data.len())]);
        }
    }

    fn take(&mut self) -> (Vec<u8>, u64) {
        (std::mem::take(&mut self.buf).into(), self.total)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(script: &str) -> Spec {
        Spec {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            stdin: None,
            env: vec![("X_TEST".into(), "v".into())],
            cwd: std::env::temp_dir(),
            timeout: Some(Duration::from_secs(30)),
            cpu_seconds: None,
            memory_mb: None,
            max_processes: None,
            max_output_bytes: 1024,
            marker: None,
        }
    }

    #[test]
    fn captures_output_exit_code_and_env() {
        let (c, _tx) = Control::new();
        let o = run(&spec("echo $X_TEST; echo err >&2; exit 3"), &c, |_| {}).unwrap();
        assert_eq!(o.stdout, b"v\n");
        assert_eq!(o.stderr_tail, b"err\n");
        assert_eq!(o.exit_code, Some(3));
        assert!(!o.timed_out);
    }

    #[test]
    fn output_is_cut_and_counted() {
        let (c, _tx) = Control::new();
        let o = run(&spec("head -c 5000 /dev/zero"), &c, |_| {}).unwrap();
        assert_eq!(o.stdout.len(), 1024);
        assert_eq!(o.stdout_total, 5000);
    }

    #[test]
    fn stdin_prompt_is_delivered() {
        let (c, _tx) = Control::new();
        let mut s = spec("cat");
        s.stdin = Some(b"hello".to_vec());
        let o = run(&s, &c, |_| {}).unwrap();
        assert_eq!(o.stdout, b"hello");
    }

    #[test]
    fn missing_command_and_dir_are_reasons() {
        let (c, _tx) = Control::new();
        let mut s = spec("true");
        s.argv = vec!["/nonexistent/agent-binary".into()];
        assert!(run(&s, &c, |_| {}).unwrap_err().contains("not found"));
        let mut s = spec("true");
        s.cwd = "/nonexistent/dir".into();
        assert!(run(&s, &c, |_| {}).unwrap_err().contains("does not exist"));
    }

    #[test]
    fn kill_request_stops_the_group() {
        let (c, tx) = Control::new();
        let t = thread::spawn(move || run(&spec("sleep 60"), &c, |_| {}).unwrap());
        tx.send(()).unwrap();
        let o = t.join().unwrap();
        assert!(o.killed);
        assert_eq!(o.signal, Some(libc::SIGTERM));
    }
}
