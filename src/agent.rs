//! Runs one agent process: contain → spawn → wait → capture → kill what is left.
//!
//! [`crate::contain`] provides the run's [`Jail`](crate::contain::Jail): its own process
//! group, and its cgroup (memory and pids limits) or rlimits, and Landlock when asked. A
//! timeout or shutdown signals every process of the run. stdout is captured up to a byte
//! limit (the rest is read and counted, so the agent never blocks on a full pipe); the last
//! bytes of stderr are kept. When the agent exits, every process it left running is killed.
//! The agent's environment is exactly `Spec::env`; nothing else is inherited. This module
//! knows nothing of jobs or run records; [`crate::worker`] translates.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};

use crate::contain::{self, Jail};
use crate::sys::Stop;

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
    /// The agent's whole environment (the daemon's own is not inherited).
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    pub timeout: Option<Duration>,
    pub cpu_seconds: Option<u64>,
    /// The run's cgroup memory limit, else `RLIMIT_DATA`.
    pub memory_mb: Option<u64>,
    /// The run's cgroup pids limit, else `RLIMIT_NPROC` (all processes of the user).
    pub max_processes: Option<u64>,
    /// `limits.filesystem: "working_dir"`: writes only in `cwd` and a private `$TMPDIR`.
    pub confine_writes: bool,
    pub max_output_bytes: usize,
    /// Names the run's cgroup and `$TMPDIR` (the run id).
    pub name: String,
    /// Followers of the run's output (`job logs -f`): stdout is also pushed here as it is
    /// read, line by line.
    pub live: Option<std::sync::Arc<crate::live::Live>>,
    /// An environment entry (`NAME=value`, also in `env`) that marks this run's processes:
    /// without a cgroup, when the agent ends, every process still carrying it is killed,
    /// including those that left the process group with `setsid` (via `/proc/<pid>/environ`).
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
    /// A process that escaped the group kept the output pipes open past the agent's exit.
    pub pipes_held_open: bool,
    /// Processes outside the agent's group that were killed when the run ended.
    pub escaped_killed: usize,
    /// What the kernel counted against the run's cgroup limits.
    pub verdict: contain::Verdict,
    /// The containment the run had.
    pub mode: Option<contain::Mode>,
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

/// Why an agent could not start, or could not be waited for; its text goes into the run
/// record.
#[derive(Debug)]
pub enum Error {
    EmptyCommand,
    NoWorkingDir(PathBuf),
    /// The run's containment could not be made (fail closed).
    Contain(contain::PrepareError),
    NotFound(String),
    NotExecutable {
        program: String,
        source: io::Error,
    },
    Spawn {
        program: String,
        source: io::Error,
    },
    /// A thread of the run (`stdin`, `output`, `wait`) could not be started.
    Thread {
        what: &'static str,
        source: io::Error,
    },
    Wait(io::Error),
    WaitThreadGone,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::EmptyCommand => write!(f, "the agent command is empty"),
            Error::NoWorkingDir(d) => write!(
                f,
                "working directory {} does not exist or is not a directory",
                d.display()
            ),
            Error::Contain(e) => write!(f, "{e}"),
            Error::NotFound(p) => write!(
                f,
                "agent command {p:?} not found (is it installed and on the daemon's PATH?)"
            ),
            Error::NotExecutable { program, source } => {
                write!(f, "agent command {program:?} is not executable: {source}")
            }
            Error::Spawn { program, source } => {
                write!(f, "cannot start agent command {program:?}: {source}")
            }
            Error::Thread { what, source } => write!(f, "cannot start {what} thread: {source}"),
            Error::Wait(e) => write!(f, "waiting for the agent failed: {e}"),
            Error::WaitThreadGone => write!(f, "agent wait thread vanished"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Contain(e) => Some(e),
            Error::NotExecutable { source, .. }
            | Error::Spawn { source, .. }
            | Error::Thread { source, .. }
            | Error::Wait(source) => Some(source),
            _ => None,
        }
    }
}

/// Spawns and waits for the agent ([`ready`], then [`Ready::run`]). `on_spawn` receives
/// the process-group id as soon as the process exists (it has exec'd: `Command::spawn`
/// returns after the exec), and how long the fork and exec took. Errors are reasons the
/// agent could not start, in words for the run record.
pub fn run(
    spec: &Spec,
    control: &Control,
    on_spawn: impl FnOnce(i32, Duration),
) -> Result<Outcome, Error> {
    ready(spec)?.run(spec, control, on_spawn)
}

/// An agent ready to start: its containment made (cgroup, Landlock ruleset, `$TMPDIR`) and
/// its command built, so that [`Ready::run`] only forks and execs. A worker makes it ahead of
/// a run's slot and starts it at the slot; dropped unstarted, it removes what it made.
pub struct Ready {
    jail: Jail,
    cmd: Command,
    /// When the agent execs ([`Ready::start_at`]); None: at once.
    start_at: Option<SystemTime>,
}

/// Does everything of starting `spec`'s agent that can be done before the instant it
/// should start: checks the command and working directory, makes the run's containment
/// (fail closed) and builds the command.
pub fn ready(spec: &Spec) -> Result<Ready, Error> {
    let Some(program) = spec.argv.first() else {
        return Err(Error::EmptyCommand);
    };
    if !spec.cwd.is_dir() {
        return Err(Error::NoWorkingDir(spec.cwd.clone()));
    }
    let jail = contain::current()
        .prepare(&contain::Request {
            name: &spec.name,
            memory_mb: spec.memory_mb,
            max_processes: spec.max_processes,
            cpu_seconds: spec.cpu_seconds,
            confine_writes_to: spec.confine_writes.then_some(spec.cwd.as_path()),
        })
        .map_err(Error::Contain)?;
    let mut cmd = Command::new(program);
    cmd.args(&spec.argv[1..])
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .envs(jail.env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    Ok(Ready {
        jail,
        cmd,
        start_at: None,
    })
}

impl Ready {
    /// Makes [`Ready::run`] fork ahead of `at` and exec at `at` (a run's slot): the child
    /// joins the cgroup and applies the limits, then waits for it (`sys::PreExec::start_at`).
    pub fn start_at(&mut self, at: SystemTime) {
        self.start_at = Some(at);
    }

    /// Starts the agent (fork + exec, nothing else before it; at its [`Ready::start_at`])
    /// and waits for it; `spec` is the one this was made [`ready`] from. The timeout counts
    /// from the exec.
    pub fn run(
        self,
        spec: &Spec,
        control: &Control,
        on_spawn: impl FnOnce(i32, Duration),
    ) -> Result<Outcome, Error> {
        let Ready {
            mut jail,
            mut cmd,
            start_at,
        } = self;
        let forked = Instant::now();
        let mut child = jail.spawn(&mut cmd, start_at).map_err(|source| {
            let program = spec.argv.first().cloned().unwrap_or_default();
            match source.kind() {
                io::ErrorKind::NotFound => Error::NotFound(program),
                io::ErrorKind::PermissionDenied => Error::NotExecutable { program, source },
                _ => Error::Spawn { program, source },
            }
        })?;
        // `Command::spawn` returns once the child has exec'd.
        let started = Instant::now();
        on_spawn(jail.id().unwrap_or(0), started - forked);

        if let (Some(input), Some(mut stdin)) = (spec.stdin.clone(), child.stdin.take()) {
            let spawned = thread::Builder::new()
                .name("agent-stdin".into())
                .spawn(move || {
                    // EPIPE (the agent ignored its stdin) is not an error worth reporting.
                    let _ = stdin.write_all(&input);
                });
            if let Err(source) = spawned {
                return Err(abandon(&jail, &mut child, spec, "stdin", source));
            }
        }

        let out = Arc::new(Mutex::new(Capture::new(spec.max_output_bytes, false)));
        let err = Arc::new(Mutex::new(Capture::new(STDERR_TAIL_BYTES, true)));
        let (done_tx, done_rx) = bounded::<()>(2);
        for (pipe, cap, live) in [
            (
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn Read + Send>),
                out.clone(),
                spec.live.clone(),
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn Read + Send>),
                err.clone(),
                None,
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
                                Ok(n) => {
                                    lock(&cap).push(&buf[..n]);
                                    if let Some(l) = &live {
                                        l.push(&buf[..n]);
                                    }
                                }
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                                Err(_) => break,
                            }
                        }
                    }
                    let _ = done.send(());
                });
            if let Err(source) = spawned {
                return Err(abandon(&jail, &mut child, spec, "output", source));
            }
        }
        drop(done_tx);

        let (exit_tx, exit_rx) = bounded::<io::Result<ExitStatus>>(1);
        thread::Builder::new()
            .name("agent-wait".into())
            .spawn(move || {
                let _ = exit_tx.send(child.wait());
            })
            .map_err(|source| {
                jail.kill_all(spec.marker.as_deref());
                Error::Thread {
                    what: "wait",
                    source,
                }
            })?;

        let mut outcome = Outcome {
            mode: Some(jail.mode()),
            ..Outcome::default()
        };
        let deadline = spec.timeout.map(|t| started + t);
        let status = wait_or_stop(&exit_rx, &control.kill_rx, deadline, &jail, &mut outcome);
        // Whatever the agent left running, in its group or escaped from it, goes with it.
        let left = jail.kill_all(spec.marker.as_deref());
        outcome.escaped_killed = left.escaped;
        outcome.verdict = jail.verdict();
        drop(jail);
        let status = status?;
        if let Some(code) = status.code() {
            outcome.exit_code = Some(code);
        }
        outcome.signal = crate::sys::exit_signal(&status);

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
}

/// Ends a run whose `what` thread could not be started: kills it, reaps the agent.
fn abandon(
    jail: &Jail,
    child: &mut Child,
    spec: &Spec,
    what: &'static str,
    source: io::Error,
) -> Error {
    jail.kill_all(spec.marker.as_deref());
    let _ = child.wait();
    Error::Thread { what, source }
}

fn wait_or_stop(
    exit_rx: &Receiver<io::Result<ExitStatus>>,
    kill_rx: &Receiver<()>,
    deadline: Option<Instant>,
    jail: &Jail,
    outcome: &mut Outcome,
) -> Result<ExitStatus, Error> {
    let wait_err = Error::Wait;
    // Phase 1: until exit, timeout, or kill request.
    let far = Instant::now() + Duration::from_secs(100 * 365 * 86400);
    crossbeam_channel::select! {
        recv(exit_rx) -> r => return r.map_err(|_| Error::WaitThreadGone)?.map_err(wait_err),
        recv(kill_rx) -> _ => outcome.killed = true,
        default(deadline.unwrap_or(far).saturating_duration_since(Instant::now())) => outcome.timed_out = true,
    }
    // Phase 2: SIGTERM the run, SIGKILL after the grace.
    jail.signal(Stop::Term);
    match exit_rx.recv_timeout(KILL_GRACE) {
        Ok(r) => return r.map_err(wait_err),
        Err(RecvTimeoutError::Disconnected) => return Err(Error::WaitThreadGone),
        Err(RecvTimeoutError::Timeout) => {}
    }
    jail.signal(Stop::Kill);
    exit_rx
        .recv()
        .map_err(|_| Error::WaitThreadGone)?
        .map_err(wait_err)
}

/// What a timeout or shutdown does to a run's processes, for its record.
pub fn how_stopped() -> String {
    crate::sys::how_stopped(KILL_GRACE)
}

/// The conventional name of a signal number, e.g. `SIGKILL`.
pub fn signal_name(sig: i32) -> String {
    crate::sys::signal_name(sig)
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
            env: vec![
                ("X_TEST".into(), "v".into()),
                ("PATH".into(), "/usr/bin:/bin".into()),
            ],
            cwd: std::env::temp_dir(),
            timeout: Some(Duration::from_secs(30)),
            cpu_seconds: None,
            memory_mb: None,
            max_processes: None,
            confine_writes: false,
            max_output_bytes: 1024,
            name: "agent-unit-test".into(),
            marker: None,
            live: None,
        }
    }

    #[test]
    fn captures_output_exit_code_and_env() {
        let (c, _tx) = Control::new();
        let o = run(&spec("echo $X_TEST; echo err >&2; exit 3"), &c, |_, _| {}).unwrap();
        assert_eq!(o.stdout, b"v\n");
        assert_eq!(o.stderr_tail, b"err\n");
        assert_eq!(o.exit_code, Some(3));
        assert!(!o.timed_out);
    }

    #[test]
    fn output_is_cut_and_counted() {
        let (c, _tx) = Control::new();
        let o = run(&spec("head -c 5000 /dev/zero"), &c, |_, _| {}).unwrap();
        assert_eq!(o.stdout.len(), 1024);
        assert_eq!(o.stdout_total, 5000);
    }

    #[test]
    fn stdin_prompt_is_delivered() {
        let (c, _tx) = Control::new();
        let mut s = spec("cat");
        s.stdin = Some(b"hello".to_vec());
        let o = run(&s, &c, |_, _| {}).unwrap();
        assert_eq!(o.stdout, b"hello");
    }

    #[test]
    fn missing_command_and_dir_are_reasons() {
        let (c, _tx) = Control::new();
        let mut s = spec("true");
        s.argv = vec!["/nonexistent/agent-binary".into()];
        assert!(run(&s, &c, |_, _| {})
            .unwrap_err()
            .to_string()
            .contains("not found"));
        let mut s = spec("true");
        s.cwd = "/nonexistent/dir".into();
        assert!(run(&s, &c, |_, _| {})
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
    }

    #[test]
    fn a_ready_agent_execs_at_its_instant_not_before() {
        let (c, _tx) = Control::new();
        let s = spec("date +%s%N");
        let mut r = ready(&s).unwrap();
        let at = SystemTime::now() + Duration::from_millis(300);
        r.start_at(at);
        let o = r.run(&s, &c, |_, _| {}).unwrap();
        let ran: u128 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
        let at = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        assert!(ran >= at, "ran at {ran}, due at {at}");
    }

    #[test]
    fn kill_request_stops_the_group() {
        let (c, tx) = Control::new();
        let t = thread::spawn(move || run(&spec("sleep 60"), &c, |_, _| {}).unwrap());
        tx.send(()).unwrap();
        let o = t.join().unwrap();
        assert!(o.killed);
        assert_eq!(o.signal, Some(libc::SIGTERM));
    }
}
