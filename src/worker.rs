//! The worker pool: fixed threads that take [`Work`] from the bounded channel and execute
//! runs: render the prompt, write the event file, run the agent (with retries), dispatch
//! outputs, write the final record, apply retention.

use std::ffi::OsString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{select, Receiver, Sender};
use serde_json::{Map, Value};

use crate::agent::{self, Control, Spec};
use crate::contain::env::{self as agent_env, Redactor, SecretNames};
use crate::engine::{Engine, Extra, Work};
use crate::job::{Filesystem, Job, PromptVia};
use crate::metrics::Metrics;
use crate::run::{RunRecord, RunStatus};
use crate::sys::sig;

/// Starts `n` workers. Each exits when shutdown begins (after marking the runs still
/// waiting in the queue `interrupted`) or when the work channel closes.
/// Each worker holds a clone of `exited`; when all are gone its receiver disconnects.
pub fn spawn_pool(
    engine: Arc<Engine>,
    rx: Receiver<Work>,
    n: usize,
    exited: Sender<()>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..n)
        .map(|i| {
            let engine = engine.clone();
            let rx = rx.clone();
            let stop = engine.shutdown_signal();
            let exited = exited.clone();
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    worker_loop(&engine, &rx, &stop);
                    drop(exited);
                })
        })
        .collect()
}

fn worker_loop(engine: &Engine, rx: &Receiver<Work>, stop: &Receiver<()>) {
    loop {
        let work = select! {
            recv(rx) -> w => match w { Ok(w) => w, Err(_) => return },
            recv(stop) -> _ => {
                // Intake has stopped: whatever is still queued will not start.
                while let Ok(w) = rx.try_recv() {
                    interrupt_unstarted(engine, w);
                }
                return;
            }
        };
        // One of the `max_concurrent_runs` slots for as long as this worker runs (the job's
        // pending runs included): a `job test --exec` agent holds one too, so the work
        // waits queued here meanwhile.
        let Some(_slot) = engine.agent_slots.wait(stop) else {
            Metrics::dec(&engine.metrics.runs_queued);
            interrupt_unstarted(engine, work);
            while let Ok(w) = rx.try_recv() {
                interrupt_unstarted(engine, w);
            }
            return;
        };
        let mut next = Some(work);
        while let Some(w) = next {
            let job_id = w.job.id.clone();
            let run_id = w.run.id.clone();
            Metrics::dec(&engine.metrics.runs_queued);
            if engine.is_shutting_down() {
                interrupt_unstarted(engine, w);
            } else if let Some(w) = engine.start_run(w) {
                if catch_unwind(AssertUnwindSafe(|| execute(engine, w))).is_err() {
                    log::error!(event = "worker.panic", job = job_id.as_str(), run = run_id.as_str(); "internal error while executing the run; the worker carries on");
                    if let Some(mut rec) = engine.store.load_run(&job_id, &run_id) {
                        if !rec.status.is_final() {
                            rec.close(
                                RunStatus::Failed,
                                "internal error in the daemon (see its log)",
                            );
                            save(engine, &rec);
                        }
                    }
                    engine.unregister_running(&run_id);
                }
            }
            next = engine.finish_run(&job_id, &run_id);
        }
    }
}

/// Marks a run that never started as interrupted.
pub fn interrupt_unstarted(engine: &Engine, w: Work) {
    let job_id = w.job.id.clone();
    let run_id = w.run.id.clone();
    interrupt_record(engine, w.run);
    engine.finish_run(&job_id, &run_id);
}

/// Closes the record of a run that never started: the daemon stopped first.
fn interrupt_record(engine: &Engine, mut rec: RunRecord) {
    rec.interrupt("the daemon stopped before this run started");
    save(engine, &rec);
    Metrics::inc(&engine.metrics.runs_interrupted_total);
}

/// A running run's [`crate::live::Live`] output on the engine's board; finished (followers
/// end) and taken off the board when dropped.
struct LiveGuard<'a>(Arc<crate::live::Live>, &'a Engine, String);

impl<'a> LiveGuard<'a> {
    fn new(engine: &'a Engine, run_id: &str, redactor: &Redactor) -> LiveGuard<'a> {
        let r = redactor.clone();
        let live = crate::live::Live::new(Some(Arc::new(move |s: &str| r.redact(s, false, false))));
        engine.live.insert(run_id, live.clone());
        LiveGuard(live, engine, run_id.to_string())
    }
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0.finish();
        self.1.live.remove(&self.2);
    }
}

/// Writes a run record, unless its job was deleted meanwhile (its records went with it).
fn save(engine: &Engine, rec: &RunRecord) {
    engine.save_record(rec);
}

/// The template variables of a run: job name, trigger type, the trigger's context, and the
/// firing's extra context (a webhook's `payload` and `body`, from [`firing_vars`]).
#[cfg(test)]
pub fn template_vars(job: &Job, trigger: &Value, extra: &Map<String, Value>) -> Value {
    template_vars_from(job, trigger, extra.clone())
}

/// [`template_vars`] taking the extra context by value (a webhook payload is not copied).
fn template_vars_from(job: &Job, trigger: &Value, extra: Map<String, Value>) -> Value {
    let mut vars = serde_json::Map::new();
    vars.insert("job_name".into(), job.name.clone().into());
    vars.insert("job_id".into(), job.id.clone().into());
    if let Value::Object(t) = trigger {
        for (k, v) in t {
            if k == "type" {
                vars.insert("trigger".into(), v.clone());
            } else {
                vars.insert(k.clone(), v.clone());
            }
        }
    }
    for (k, v) in extra {
        vars.insert(k, v);
    }
    Value::Object(vars)
}

/// The argv to run: the job's agent, else `config.json` `default_agent`, else
/// `bog-agents -p {prompt}` (plus `-M {model}` when the job sets a model).
pub fn agent_argv(job: &Job, default_agent: Option<&[String]>) -> (Vec<String>, PromptVia) {
    match (&job.agent, default_agent) {
        (Some(a), _) => (a.command.clone(), a.prompt_via),
        (None, Some(d)) => (d.to_vec(), PromptVia::Arg),
        (None, None) => {
            let mut v: Vec<String> = vec!["bog-agents".into(), "-p".into(), "{prompt}".into()];
            if !job.model.is_empty() {
                v.push("-M".into());
                v.push(job.model.clone());
            }
            (v, PromptVia::Arg)
        }
    }
}

/// A run rendered and made ready to start: everything of it but the fork and exec, which a
/// run taken ahead of its slot does at the slot: forked [`FORK_AHEAD`] before it, exec'd at
/// it ([`wait_for_slot`]).
struct Staged<'e> {
    run: Prepared,
    /// The template variables (the outputs render with them).
    vars: Value,
    redactor: Redactor,
    /// Followers of the output (`job logs -f`) read it redacted, line by line, while the
    /// run lasts; the guard ends them when the run is over, however it ends.
    live: LiveGuard<'e>,
    spec: Spec,
    /// Why the agent cannot be started at all, known before the first attempt.
    unstartable: Option<String>,
    /// The first attempt's agent, ready to start (its containment made), or why not.
    first: Option<Result<agent::Ready, String>>,
    /// When the rendering was done and when the containment was made (`agent.spawned`).
    rendered: Instant,
    contained: Instant,
}

impl Staged<'_> {
    /// Renders the run, writes its files and makes its first attempt's containment. The
    /// webhook body is kept beside the record when `keep_body`.
    fn new<'e>(
        engine: &'e Engine,
        setup: &Setup<'_>,
        job: &Job,
        rec: &RunRecord,
        fired: &Extra,
        keep_body: bool,
    ) -> Staged<'e> {
        // The body is parsed here, once per run, and dropped when the run has started.
        let mut run = prepare(setup, job, &rec.id, &rec.trigger, firing_vars(fired));
        // Kept with the run's redactor: no secret of the daemon or the job is stored.
        if let (true, Some(b)) = (keep_body, &fired.body) {
            keep_payload(engine, rec, b, &run.redactor);
        }
        if !run.unknown.is_empty() {
            log::warn!(event = "template.unknown", job = job.name.as_str(), run = rec.id.as_str(); "prompt names unknown template variables (rendered empty): {}", run.unknown.join(", "));
        }
        let files = run.materialize();
        let vars = std::mem::take(&mut run.vars);
        let redactor = run.redactor.clone();
        let live = LiveGuard::new(engine, &rec.id, &redactor);
        let mut spec = run.spec(job);
        spec.live = Some(live.0.clone());
        let unstartable = files.err().or_else(|| run.problem.clone());
        let rendered = Instant::now();
        let first = ready(&spec, &unstartable);
        Staged {
            run,
            vars,
            redactor,
            live,
            spec,
            unstartable,
            first: Some(first),
            rendered,
            contained: Instant::now(),
        }
    }

    /// Removes what was made for a run that will not start as staged.
    fn discard(mut self) {
        drop(self.first.take());
        self.run.cleanup(false);
    }
}

/// An attempt's agent made ready to start ([`agent::ready`]), or why it cannot start.
fn ready(spec: &Spec, unstartable: &Option<String>) -> Result<agent::Ready, String> {
    match unstartable {
        Some(reason) => Err(reason.clone()),
        None => agent::ready(spec).map_err(|e| e.to_string()),
    }
}

/// How long before its slot the agent of a run taken ahead of it is forked: the child
/// joins the run's cgroup and applies its limits (under load the cgroup join alone takes
/// milliseconds), then sleeps until the slot and execs (`sys::PreExec::start_at`). The
/// last point at which the run's job and shutdown are checked.
const FORK_AHEAD: Duration = Duration::from_millis(20);

/// The longest a worker holds a run taken ahead of its slot before its last check: more
/// than the clock's lead (`triggers/clock.rs` `LEAD`, 100 ms), the most a run is handed
/// over ahead of its slot, so a wall clock stepped back meanwhile cannot hold the worker
/// (and the runs queued behind it) for as long as the step.
const MAX_HOLD: Duration = Duration::from_millis(250);

/// Waits until [`FORK_AHEAD`] before the slot of a run taken ahead of it (`Work::due`), then
/// says whether it starts: the job as it is then, or None when the run was closed instead
/// (the daemon began to stop: interrupted; the job was deleted or disabled meanwhile:
/// [`Engine::at_slot`]).
fn wait_for_slot(engine: &Engine, rec: &RunRecord, due: SystemTime) -> Option<Arc<Job>> {
    log::debug!(event = "run.staged", run = rec.id.as_str(); "prepared ahead of its slot; the agent is forked {} ms before it and execs at it", FORK_AHEAD.as_millis());
    if wait_or_shutdown(engine, until_fork(due, SystemTime::now())) {
        interrupt_record(engine, rec.clone());
        return None;
    }
    engine.at_slot(rec)
}

/// How long the worker of a run staged for `slot` waits, at `now`, before its last check
/// and the fork: until [`FORK_AHEAD`] before the slot, at most [`MAX_HOLD`].
fn until_fork(slot: SystemTime, now: SystemTime) -> Duration {
    let fork_at = slot.checked_sub(FORK_AHEAD).unwrap_or(slot);
    fork_at
        .duration_since(now)
        .unwrap_or(Duration::ZERO)
        .min(MAX_HOLD)
}

/// When the agent of a run staged for `slot` execs, decided at its last check (`now`): at
/// the slot while it is still ahead (by at most [`MAX_HOLD`]); else at once (None), so that
/// `started_at` says when it started: the slot passed while the run was staged (a loaded
/// machine), or the wall clock was stepped back meanwhile.
fn exec_at(slot: SystemTime, now: SystemTime) -> Option<SystemTime> {
    slot.duration_since(now)
        .is_ok_and(|ahead| !ahead.is_zero() && ahead <= MAX_HOLD)
        .then_some(slot)
}

fn execute(engine: &Engine, w: Work) {
    // When the worker took the run (for the `agent.spawned` debug line: fire → fork → exec).
    let picked = Instant::now();
    let Work {
        mut job,
        run: mut rec,
        extra: fired,
        due,
    } = w;
    let setup = Setup::of(engine);
    // A run taken ahead of its slot is staged (rendered, its files written, its containment
    // made) before it, and its agent forked just before it, so that at the slot only the
    // exec remains.
    let due = due.filter(|d| SystemTime::now() < *d);
    let mut keep_body = true;
    // Staged again, once, when its job changed meanwhile (a second change starts it as
    // staged then, like one made after the last check).
    let mut restaged = false;
    // When the first attempt starts: its slot for a staged run whose slot is still ahead at
    // its last check (its agent execs then; `exec_at`).
    let mut start_at = None;
    let mut staged = loop {
        let mut staged = Staged::new(engine, &setup, &job, &rec, &fired, keep_body);
        keep_body = false;
        let Some(slot) = due else {
            break staged;
        };
        match wait_for_slot(engine, &rec, slot) {
            Some(now) if restaged || Arc::ptr_eq(&now, &job) => {
                if let (Some(Ok(agent)), Some(at)) =
                    (&mut staged.first, exec_at(slot, SystemTime::now()))
                {
                    agent.start_at(at);
                    start_at = Some(chrono::DateTime::<chrono::Utc>::from(at));
                }
                break staged;
            }
            Some(now) => {
                // Changed while staged: a run starts with the job as it is at start.
                staged.discard();
                rec.job_name = now.name.clone();
                job = now;
                restaged = true;
            }
            None => {
                staged.discard();
                return;
            }
        }
    };
    drop(fired);
    let spec = &staged.spec;
    let mut picked = Some(picked);

    let first_start = start_at.unwrap_or_else(chrono::Utc::now);
    rec.started_at = Some(crate::time::rfc3339(first_start));
    loop {
        rec.attempts += 1;
        rec.status = RunStatus::Running;
        Metrics::inc(&engine.metrics.runs_started_total);
        Metrics::inc(&engine.metrics.runs_running);
        if rec.attempts > 1 {
            staged
                .live
                .0
                .push(format!("[bog-agents-daemon: attempt {}]\n", rec.attempts).as_bytes());
        }
        // The first attempt's containment was made with the rendering; a retry's now.
        let (agent, rendered, contained) = match staged.first.take() {
            Some(a) => (a, staged.rendered, staged.contained),
            None => {
                let t = Instant::now();
                (ready(spec, &staged.unstartable), t, Instant::now())
            }
        };
        let (control, kill_tx) = Control::new();
        engine.register_running(&rec.id, kill_tx);
        log::info!(event = "run.started", job = job.name.as_str(), run = rec.id.as_str(), attempt = rec.attempts; "agent starting: {}", spec.argv.first().map(String::as_str).unwrap_or(""));
        // Fire first, write after: the `queued` record is already durable, so the agent
        // starts at once and the `running` record is written beside it, on a thread started
        // once the process exists. The writer is joined before any later write of the
        // record, so the record never goes back to `running`. An agent that cannot start
        // gets no `running` record: its final one follows.
        let running = rec.clone();
        let result = thread::scope(|sc| {
            let mut writer = None;
            let r = agent.and_then(|a| {
                a.run(spec, &control, |pid, fork_exec| {
                    let spawned = thread::Builder::new()
                        .name("run-record".into())
                        .spawn_scoped(sc, || save(engine, &running));
                    match spawned {
                        Ok(h) => writer = Some(h),
                        Err(_) => save(engine, &running),
                    }
                    // Where the time went (contrib/bench/perfcore.py): worker took the run
                    // → prompt, environment, event file → containment set-up → waiting for
                    // the slot → fork + exec.
                    let forked = Instant::now().checked_sub(fork_exec).unwrap_or(contained);
                    let us = |d: Duration| d.as_micros() as u64;
                    log::debug!(event = "agent.spawned", run = running.id.as_str(), pid = pid,
                        prepare_us = picked.map(|p| us(rendered.saturating_duration_since(p))).unwrap_or(0),
                        contain_us = us(contained.saturating_duration_since(rendered)),
                        wait_us = us(forked.saturating_duration_since(contained)),
                        fork_exec_us = us(fork_exec),
                        at_us = chrono::Utc::now().timestamp_micros();
                        "agent process started");
                })
                .map_err(|e| e.to_string())
            });
            if let Some(w) = writer {
                let _ = w.join();
            }
            r
        });
        picked = None;
        engine.unregister_running(&rec.id);
        Metrics::dec(&engine.metrics.runs_running);
        apply_outcome(&job, &mut rec, result, &staged.redactor);
        if staged.unstartable.is_some() {
            break;
        }

        let retryable = matches!(rec.status, RunStatus::Failed | RunStatus::TimedOut);
        if !retryable || rec.attempts > job.max_retries || engine.is_shutting_down() {
            break;
        }
        let backoff = crate::backoff::exponential(
            Duration::try_from_secs_f64(job.retry_backoff_seconds).unwrap_or(Duration::ZERO),
            rec.attempts - 1,
            Duration::from_secs(3600),
        );
        log::info!(event = "run.retry", job = job.name.as_str(), run = rec.id.as_str(), attempt = rec.attempts; "{}; retrying in {:.1}s", rec.error.as_deref().unwrap_or("failed"), backoff.as_secs_f64());
        rec.status = RunStatus::Running;
        save(engine, &rec);
        if wait_or_shutdown(engine, backoff) {
            break;
        }
    }
    let finished = chrono::Utc::now();
    rec.finished_at = Some(crate::time::rfc3339(finished));
    if rec.status == RunStatus::Succeeded {
        // Known now, before the outputs are delivered (which may take their whole retry
        // budget): a dead-man's switch whose deadline comes meanwhile counts this success.
        engine.note_success(&job.id, &rec.id, finished);
    }
    rec.duration_ms = Some((finished - first_start).num_milliseconds().max(0) as u64);
    let failed = !matches!(rec.status, RunStatus::Succeeded);
    rec.checkout = staged.run.cleanup(failed);

    match rec.status {
        RunStatus::Succeeded => Metrics::inc(&engine.metrics.runs_succeeded_total),
        RunStatus::TimedOut => Metrics::inc(&engine.metrics.runs_timed_out_total),
        RunStatus::Interrupted => Metrics::inc(&engine.metrics.runs_interrupted_total),
        _ => Metrics::inc(&engine.metrics.runs_failed_total),
    }
    if rec.status != RunStatus::Interrupted {
        let before = rec.dispatch_errors.len();
        crate::outputs::dispatch(&job, &mut rec, &staged.vars, &engine.shutdown_signal());
        for e in &rec.dispatch_errors[before..] {
            Metrics::inc(&engine.metrics.dispatch_errors_total);
            log::warn!(event = "dispatch.error", job = job.name.as_str(), run = rec.id.as_str(), target = e.target.as_str(); "{}", e.error);
        }
    }
    save(engine, &rec);
    log::info!(
        event = "run.finished", job = job.name.as_str(), run = rec.id.as_str(),
        status = rec.status.as_str(), exit_code = rec.exit_code.map(i64::from).unwrap_or(-1),
        duration_ms = rec.duration_ms.unwrap_or(0), attempts = rec.attempts;
        "run {}{}", rec.status.as_str(), rec.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
    );
    engine.prune_runs(&job.id, job.history as usize);
}

/// Sleeps up to `d`; returns true if shutdown began meanwhile.
fn wait_or_shutdown(engine: &Engine, d: Duration) -> bool {
    let _ = engine.shutdown_signal().recv_timeout(d);
    engine.is_shutting_down()
}

/// Turns an agent outcome into the record's status, exit code, output and error.
/// What the agent said passes through `redactor` before anything else sees it.
pub fn apply_outcome(
    job: &Job,
    rec: &mut RunRecord,
    result: Result<agent::Outcome, String>,
    redactor: &Redactor,
) {
    rec.signal = None;
    rec.exit_code = None;
    let o = match result {
        Ok(o) => o,
        Err(reason) => {
            rec.status = RunStatus::Failed;
            rec.error = Some(redactor.redact(&reason, false, false));
            return;
        }
    };
    rec.exit_code = o.exit_code;
    rec.signal = o.signal.map(agent::signal_name);
    rec.output_bytes = o.stdout_total;
    rec.output_truncated = o.stdout_total > o.stdout.len() as u64;
    // Redacted before the cut note is added: a secret cut in half at the end goes too.
    rec.output = redactor.redact(
        &String::from_utf8_lossy(&o.stdout),
        false,
        rec.output_truncated,
    );
    if rec.output_truncated {
        rec.output.push_str(&format!(
            "\n[output cut at max_output_kb = {} KiB: {} more bytes were not kept]\n",
            job.limits.max_output_kb,
            o.stdout_total - o.stdout.len() as u64
        ));
    }
    // The tail may start in the middle of a secret.
    rec.stderr_tail = redactor.redact(
        &String::from_utf8_lossy(&o.stderr_tail),
        o.stderr_tail.len() >= agent::STDERR_TAIL_BYTES,
        false,
    );
    let mut notes = Vec::new();
    if o.pipes_held_open {
        notes
            .push("a process that left the agent's process group kept its output open".to_string());
    }
    if o.escaped_killed > 0 {
        notes.push(format!(
            "killed {} leftover process(es) of this run that had left its process group",
            o.escaped_killed
        ));
    }
    let cgroup = o.mode.is_some_and(crate::contain::Mode::is_cgroup);
    if o.verdict.pids_max_hits > 0 {
        notes.push(format!(
            "max_processes limit of {} reached: the kernel refused {} fork(s) of this run",
            job.limits.max_processes.unwrap_or(0),
            o.verdict.pids_max_hits
        ));
    }
    let (status, error) = if o.killed {
        (
            RunStatus::Interrupted,
            Some("the daemon stopped and its grace period ran out; every process of the run was killed".to_string()),
        )
    } else if o.timed_out {
        (
            RunStatus::TimedOut,
            Some(format!(
                "timed out after timeout_seconds = {}; {}",
                job.limits.timeout_seconds.unwrap_or(0),
                agent::how_stopped()
            )),
        )
    } else if o.verdict.oom_kills > 0 {
        // The cgroup says so: no guessing.
        let how = match (o.signal, o.exit_code) {
            (Some(sig), _) => format!("the agent was killed by {}", agent::signal_name(sig)),
            (None, Some(c)) => format!("the agent exited with code {c}"),
            (None, None) => "the agent ended".to_string(),
        };
        (
            RunStatus::Failed,
            Some(format!(
                "{how}: out of memory: memory_mb limit is {} MiB, and the kernel killed {} process(es) of this run that went past it",
                job.limits.memory_mb.unwrap_or(0),
                o.verdict.oom_kills
            )),
        )
    } else if o.exit_code == Some(0) {
        (RunStatus::Succeeded, None)
    } else if let Some(e) = job_object_limits(job, &o) {
        (RunStatus::Failed, Some(e))
    } else if let Some(sig) = o.signal {
        let mut e = format!("the agent was killed by {}", agent::signal_name(sig));
        match job.limits.cpu_seconds {
            Some(cpu) if sig == sig::SIGXCPU || sig == sig::SIGKILL => e.push_str(&format!(
                ": cpu_seconds limit of {cpu} s reached (RLIMIT_CPU)"
            )),
            _ => e.push_str(&limit_hints(job, cgroup, &o)),
        }
        (RunStatus::Failed, Some(e))
    } else {
        let e = format!(
            "the agent exited with code {}{}",
            o.exit_code.unwrap_or(-1),
            limit_hints(job, cgroup, &o)
        );
        (RunStatus::Failed, Some(e))
    };
    rec.status = status;
    notes.extend(error);
    rec.error = if notes.is_empty() {
        None
    } else {
        Some(redactor.redact(&notes.join("; "), false, false))
    };
}

/// For a failed run whose job object (Windows) counted it at a limit: the message, in the
/// words the Unix limits use. None elsewhere (Unix never sets [`crate::sys::LimitHits`]).
fn job_object_limits(job: &Job, o: &agent::Outcome) -> Option<String> {
    let hit = o.verdict.limits_hit;
    let mut e = format!("the agent exited with code {}", o.exit_code.unwrap_or(-1));
    match (job.limits.cpu_seconds, job.limits.memory_mb) {
        (Some(cpu), _) if hit.cpu_seconds => e.push_str(&format!(
            ": cpu_seconds limit of {cpu} s reached (the job object's CPU time limit ended every process of the run)"
        )),
        (_, Some(mb)) if hit.memory_mb => e.push_str(&format!(
            ": memory_mb limit of {mb} MiB reached (the job object's committed memory limit: allocations past it fail)"
        )),
        _ => return None,
    }
    Some(e)
}

/// For a failed run without a cgroup (which would have said so for sure): the rlimits that
/// are the likely cause, named only when the way the agent ended fits them: a fatal signal
/// of a failed allocation, or an allocation or fork error in its stderr.
fn limit_hints(job: &Job, cgroup: bool, o: &agent::Outcome) -> String {
    if cgroup {
        return String::new();
    }
    let stderr = String::from_utf8_lossy(&o.stderr_tail).to_lowercase();
    let mut h = Vec::new();
    if let Some(mb) = job.limits.memory_mb {
        const SIGNALS: [i32; 5] = [
            sig::SIGSEGV,
            sig::SIGABRT,
            sig::SIGBUS,
            sig::SIGTRAP,
            sig::SIGKILL,
        ];
        const WORDS: [&str; 6] = [
            "memoryerror",
            "out of memory",
            "cannot allocate memory",
            "allocation failed",
            "bad_alloc",
            "enomem",
        ];
        let fits = o.signal.is_some_and(|s| SIGNALS.contains(&s))
            || o.exit_code
                .is_some_and(|c| SIGNALS.iter().any(|s| c == 128 + s))
            || WORDS.iter().any(|w| stderr.contains(w));
        if fits {
            h.push(format!(
                "memory_mb limit is {mb} MiB (RLIMIT_DATA): allocations past it fail, the likely cause"
            ));
        }
    }
    if let Some(n) = job.limits.max_processes {
        if stderr.contains("fork") || stderr.contains("resource temporarily unavailable") {
            h.push(format!(
                "max_processes limit is {n} (RLIMIT_NPROC, all processes of the daemon's user): fork fails past it"
            ));
        }
    }
    if h.is_empty() {
        String::new()
    } else {
        format!(" ({})", h.join("; "))
    }
}

/// Linux's limit on one argument (`MAX_ARG_STRLEN`, 32 pages), terminating NUL included.
const MAX_ARG_BYTES: usize = 32 * 4096;

/// Why this argv cannot be exec'd (too long, or a NUL from the rendered prompt), in words.
fn argv_problem(
    argv: &[String],
    env: &[(std::ffi::OsString, std::ffi::OsString)],
) -> Option<String> {
    if let Some((i, _)) = argv.iter().enumerate().find(|(_, a)| a.contains('\0')) {
        return Some(format!(
            "argument {i} of the agent command contains a NUL byte after rendering (from the firing's payload?); a program cannot receive it: use \"prompt_via\": \"stdin\" or {{prompt_file}}"
        ));
    }
    if let Some((i, a)) = argv
        .iter()
        .enumerate()
        .find(|(_, a)| a.len() + 1 > MAX_ARG_BYTES)
    {
        return Some(format!(
            "argument {i} of the agent command is {} bytes once the prompt is rendered; one argument can hold at most {} bytes on Linux (E2BIG): use \"prompt_via\": \"stdin\", or {{prompt_file}} in agent.command to pass the prompt as a file",
            a.len(),
            MAX_ARG_BYTES - 1
        ));
    }
    let arg_max = crate::sys::arg_max().unwrap_or(usize::MAX);
    let total: usize = argv.iter().map(|a| a.len() + 1 + 8).sum::<usize>()
        + env
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2 + 8)
            .sum::<usize>();
    if total > arg_max {
        return Some(format!(
            "the agent command and environment are {total} bytes once the prompt is rendered, over the system's limit of {arg_max} (E2BIG): use \"prompt_via\": \"stdin\", or {{prompt_file}} in agent.command"
        ));
    }
    None
}

/// A firing's extra variables with its webhook body (if any) read and parsed.
pub fn firing_vars(extra: &Extra) -> Map<String, Value> {
    let mut m = extra.vars.clone();
    if let Some(b) = &extra.body {
        m.extend(b.vars());
    }
    m
}

// ---- what a run's agent is given: one rendering for the worker and `job test` ----

/// What the rendering of a run needs from outside the job: where the data dir is, the
/// daemon's default agent, the secret names of every job and the daemon's environment.
pub struct Setup<'a> {
    pub data_dir: &'a Path,
    pub default_agent: Option<&'a [String]>,
    /// Variables any job names in a `*_env` field (no agent sees them).
    pub secrets: SecretNames,
    /// The environment the agent's is built from (the daemon's own).
    pub daemon_env: Vec<(OsString, OsString)>,
    /// The daemon's shutdown signal (none without a daemon): making a checkout stops then.
    pub stop: Option<Receiver<()>>,
}

impl<'a> Setup<'a> {
    /// The daemon's: its data dir, settings, jobs and environment.
    pub fn of(engine: &'a Engine) -> Setup<'a> {
        let jobs = engine.jobs();
        let mut s = Setup::new(
            engine.store.dir(),
            engine.settings.default_agent.as_deref(),
            jobs.iter().map(|j| &**j),
        );
        s.stop = Some(engine.shutdown_signal());
        s
    }

    /// From parts (the CLI's rendering without a daemon reads them from the data dir).
    pub fn new<'j>(
        data_dir: &'a Path,
        default_agent: Option<&'a [String]>,
        jobs: impl Iterator<Item = &'j Job>,
    ) -> Setup<'a> {
        let mut secrets = SecretNames::default();
        for j in jobs {
            add_secrets(&mut secrets, j);
        }
        Setup {
            data_dir,
            default_agent,
            secrets,
            daemon_env: std::env::vars_os().collect(),
            stop: None,
        }
    }
}

fn add_secrets(secrets: &mut SecretNames, job: &Job) {
    let (names, prefixes) = job.secret_env();
    secrets.names.extend(names.into_iter().map(String::from));
    secrets
        .prefixes
        .extend(prefixes.into_iter().map(String::from));
}

/// Everything a run's agent gets, rendered before anything of it happens: the worker
/// executes it, `job test` shows it (and with `--exec` executes it the same way).
pub struct Prepared {
    pub run_id: String,
    pub prompt: String,
    /// Template variables the prompt names that the firing does not have.
    pub unknown: Vec<String>,
    /// The template variables (outputs render with them too).
    pub vars: Value,
    pub argv: Vec<String>,
    pub via: PromptVia,
    /// The agent's whole environment.
    pub env: Vec<(OsString, OsString)>,
    /// The secret names the environment was built with (for showing it).
    pub secrets: SecretNames,
    pub redactor: Redactor,
    pub cwd: PathBuf,
    /// The event file's content and where it goes (`BOG_EVENT_FILE`).
    pub event: Vec<u8>,
    pub event_path: PathBuf,
    /// Where `{prompt_file}` points, when the argv uses it.
    pub prompt_path: Option<PathBuf>,
    /// A fresh checkout the agent runs in (`checkout: true` on a git_push trigger).
    pub checkout: Option<crate::checkout::Plan>,
    /// Why the agent cannot start, when that is known from the rendering alone.
    pub problem: Option<String>,
    /// Files made by [`Prepared::materialize`], removed by [`Prepared::cleanup`].
    made: Vec<PathBuf>,
    /// Whether [`Prepared::materialize`] made (or began to make) the checkout.
    checkout_made: bool,
    /// The daemon's shutdown signal, which cuts a checkout being made short.
    stop: Option<Receiver<()>>,
}

/// Renders a run of `job` with id `run_id`, fired with `trigger` (the run record's object)
/// and the firing's extra variables (from [`firing_vars`]). Writes nothing.
pub fn prepare(
    setup: &Setup<'_>,
    job: &Job,
    run_id: &str,
    trigger: &Value,
    extra: Map<String, Value>,
) -> Prepared {
    let extra_keys: Vec<String> = extra.keys().cloned().collect();
    let vars = template_vars_from(job, trigger, extra);
    let (prompt, unknown) = crate::template::render(&job.prompt, &vars);
    let events = setup.data_dir.join("events");
    let (argv_t, via) = agent_argv(job, setup.default_agent);
    let prompt_path = argv_t
        .iter()
        .any(|a| a.contains("{prompt_file}"))
        .then(|| events.join(format!("{run_id}.prompt")));
    let argv: Vec<String> = argv_t
        .iter()
        .map(|a| {
            // {model} first: a prompt that happens to contain "{model}" stays as written.
            let mut a = a.replace("{model}", &job.model);
            if let Some(p) = &prompt_path {
                a = a.replace("{prompt_file}", &p.display().to_string());
            }
            if via == PromptVia::Arg {
                a.replace("{prompt}", &prompt)
            } else {
                a
            }
        })
        .collect();
    let event_path = events.join(format!("{run_id}.json"));
    let event = event_json(job, run_id, trigger, &vars, &extra_keys, &prompt);
    let checkout = crate::checkout::plan(job, trigger, setup.data_dir, run_id);
    let trigger_type = trigger
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let job_env: Vec<(String, String)> = job
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut env = job_env.clone();
    env.extend([
        ("BOG_JOB_ID".to_string(), job.id.clone()),
        ("BOG_JOB_NAME".to_string(), job.name.clone()),
        ("BOG_RUN_ID".to_string(), run_id.to_string()),
        ("BOG_TRIGGER".to_string(), trigger_type),
        ("BOG_MODEL".to_string(), job.model.clone()),
        (
            "BOG_EVENT_FILE".to_string(),
            event_path.display().to_string(),
        ),
    ]);
    let cwd = match &checkout {
        Some(Ok(c)) => {
            env.push(("BOG_CHECKOUT".into(), c.path.display().to_string()));
            env.push(("BOG_COMMIT".into(), c.commit.clone()));
            c.path.clone()
        }
        _ => job
            .working_dir
            .clone()
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/")),
    };
    // The job's own secret names count even before it is in the table (a job being tested).
    let mut secrets = setup.secrets.clone();
    add_secrets(&mut secrets, job);
    let (inherit, allow) = match &job.agent {
        Some(a) => (a.inherit_env, a.env_allow.as_slice()),
        None => (true, &[][..]),
    };
    let policy = agent_env::EnvPolicy {
        secrets: &secrets,
        inherit,
        allow,
    };
    let env = agent_env::agent_env(&setup.daemon_env, &policy, &env);
    let redactor = Redactor::new(&setup.daemon_env, &secrets, &job_env);
    let (checkout, checkout_problem) = match checkout {
        Some(Ok(c)) => (Some(c), None),
        Some(Err(e)) => (None, Some(e.to_string())),
        None => (None, None),
    };
    let problem = checkout_problem.or_else(|| argv_problem(&argv, &env));
    Prepared {
        run_id: run_id.to_string(),
        prompt,
        unknown,
        vars,
        argv,
        via,
        env,
        secrets,
        redactor,
        cwd,
        event,
        event_path,
        prompt_path,
        checkout,
        problem,
        made: Vec::new(),
        checkout_made: false,
        stop: setup.stop.clone(),
    }
}

impl Prepared {
    /// Writes the event file and the prompt file (not fsynced: they do not outlive the
    /// run) and makes the checkout. An event file that cannot be written is logged and
    /// left out of the environment; a prompt file or checkout that cannot be made is the
    /// error (the agent cannot start).
    pub fn materialize(&mut self) -> Result<(), String> {
        let dir = self.event_path.parent().map(Path::to_path_buf);
        let dir_ok = match &dir {
            Some(d) => crate::fsio::create_dir_all_mode(d, 0o700)
                .map_err(|e| format!("cannot create {}: {e}", d.display())),
            None => Ok(()),
        };
        match dir_ok.and_then(|()| {
            crate::fsio::write_volatile(&self.event_path, &self.event, 0o600)
                .map_err(|e| format!("cannot write event file {}: {e}", self.event_path.display()))
        }) {
            Ok(()) => self.made.push(self.event_path.clone()),
            Err(e) => {
                log::error!(event = "store.error", run = self.run_id.as_str(); "{e}");
                self.env.retain(|(k, _)| k != "BOG_EVENT_FILE");
            }
        }
        if let Some(p) = &self.prompt_path {
            crate::fsio::write_volatile(p, self.prompt.as_bytes(), 0o600)
                .map_err(|e| format!("cannot write the prompt file {}: {e}", p.display()))?;
            self.made.push(p.clone());
        }
        if let Some(c) = &self.checkout {
            // Marked first: a failed `worktree add` may leave a half-made one behind.
            self.checkout_made = true;
            c.create(self.stop.as_ref()).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The process to start, under the job's limits.
    pub fn spec(&self, job: &Job) -> Spec {
        Spec {
            argv: self.argv.clone(),
            stdin: (self.via == PromptVia::Stdin).then(|| self.prompt.clone().into_bytes()),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            timeout: job.limits.timeout_seconds.map(Duration::from_secs),
            cpu_seconds: job.limits.cpu_seconds,
            memory_mb: job.limits.memory_mb,
            max_processes: job.limits.max_processes,
            confine_writes: job.limits.filesystem == Filesystem::WorkingDir,
            max_output_bytes: (job.limits.max_output_kb as usize).saturating_mul(1024),
            name: self.run_id.clone(),
            marker: Some(format!("BOG_RUN_ID={}", self.run_id)),
            live: None,
        }
    }

    /// Removes the files [`Prepared::materialize`] wrote, and the checkout unless the run
    /// `failed` and its trigger keeps it then. Returns what the run record says of the
    /// checkout.
    pub fn cleanup(&mut self, failed: bool) -> Option<Value> {
        for p in self.made.drain(..) {
            let _ = std::fs::remove_file(p);
        }
        let c = self.checkout.as_ref().filter(|_| self.checkout_made)?;
        self.checkout_made = false;
        let keep = failed && c.keep_on_failure;
        if keep {
            log::info!(event = "checkout.kept", run = self.run_id.as_str(); "the run failed: its checkout is kept at {} (keep_checkout_on_failure)", c.path.display());
        }
        if let Err(e) = c.remove(keep) {
            log::warn!(event = "checkout.error", run = self.run_id.as_str(); "{e}");
        }
        Some(c.record(keep))
    }
}

/// The event file (`BOG_EVENT_FILE`): the job, the run, the trigger object with the
/// firing's extra variables (`extra_keys`, taken from `vars`) merged in, and the prompt;
/// serialized from borrowed data so a large webhook payload is not copied again.
fn event_json(
    job: &Job,
    run_id: &str,
    trigger: &Value,
    vars: &Value,
    extra_keys: &[String],
    prompt: &str,
) -> Vec<u8> {
    /// The trigger object with the extra variables merged in (they win on equal keys).
    struct TriggerView<'a> {
        trigger: &'a Value,
        vars: &'a Value,
        extra_keys: &'a [String],
    }
    impl serde::Serialize for TriggerView<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let own = self
                .trigger
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| !self.extra_keys.contains(k));
            let extra = self
                .extra_keys
                .iter()
                .filter_map(|k| self.vars.get(k).map(|v| (k, v)));
            s.collect_map(own.chain(extra))
        }
    }
    #[derive(serde::Serialize)]
    struct Event<'a> {
        job: Named<'a>,
        run: Attempt<'a>,
        trigger: TriggerView<'a>,
        prompt: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Named<'a> {
        id: &'a str,
        name: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Attempt<'a> {
        id: &'a str,
        attempt: u32,
    }
    serde_json::to_vec_pretty(&Event {
        job: Named {
            id: &job.id,
            name: &job.name,
        },
        run: Attempt {
            id: run_id,
            attempt: 1,
        },
        trigger: TriggerView {
            trigger,
            vars,
            extra_keys,
        },
        prompt,
    })
    .unwrap_or_default()
}

/// Keeps a webhook run's body beside its record (`job test --from-run` replays it), pruned
/// with the record. Only what the sender sent (no header is in it), less its secrets:
/// [`storable_payload`].
fn keep_payload(
    engine: &Engine,
    rec: &RunRecord,
    body: &crate::payload::Body,
    redactor: &Redactor,
) {
    match body.bytes() {
        Ok(b) => {
            let slack = rec.trigger.get("scheme").and_then(Value::as_str) == Some("slack");
            engine.save_payload(rec, &storable_payload(&b, slack, redactor))
        }
        Err(e) => {
            log::warn!(event = "store.error", run = rec.id.as_str(); "cannot read the webhook body back to keep it: {e}")
        }
    }
}

/// A webhook body as it may be stored: a Slack payload's top-level `token` (the app's
/// verification token, which Slack sends in every Events API payload) is dropped, and every
/// secret value the run's redactor knows is replaced. A body that is not UTF-8 is stored as
/// its lossy text, redacted the same way.
fn storable_payload(body: &[u8], slack: bool, redactor: &Redactor) -> Vec<u8> {
    let mut text = String::from_utf8_lossy(body).into_owned();
    if slack {
        if let Ok(Value::Object(mut m)) = serde_json::from_str::<Value>(&text) {
            if m.remove("token").is_some() {
                text = Value::Object(m).to_string();
            }
        }
    }
    redactor.redact(&text, false, false).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contain::{Mode, Verdict};

    #[test]
    fn kept_payloads_hold_no_secret() {
        let secrets = crate::contain::env::SecretNames::default();
        let r = Redactor::new(
            &[("API_TOKEN".into(), "sk-live-0123456789".into())],
            &secrets,
            &[],
        );
        let body =
            br#"{"token": "slack-verification-abc", "event": {"text": "key sk-live-0123456789"}}"#;
        let kept = String::from_utf8(storable_payload(body, true, &r)).unwrap();
        assert!(!kept.contains("slack-verification-abc"), "{kept}");
        assert!(!kept.contains("sk-live-0123456789"), "{kept}");
        let v: Value = serde_json::from_str(&kept).unwrap();
        assert!(
            v.get("token").is_none() && v["event"]["text"].is_string(),
            "{v}"
        );
        // Other senders' `token` fields are theirs to keep; secrets are still redacted.
        let kept = String::from_utf8(storable_payload(body, false, &r)).unwrap();
        assert!(kept.contains("slack-verification-abc") && !kept.contains("sk-live"));
    }
    use serde_json::json;

    #[test]
    fn a_staged_run_never_holds_its_worker_longer_than_a_lead_however_the_clock_is_stepped() {
        let now = SystemTime::now();
        // As handed over: forked FORK_AHEAD before the slot.
        let slot = now + Duration::from_millis(90);
        assert_eq!(until_fork(slot, now), Duration::from_millis(70));
        assert_eq!(until_fork(now, now), Duration::ZERO);
        assert_eq!(
            until_fork(now - Duration::from_secs(5), now),
            Duration::ZERO
        );
        // The wall clock was stepped back an hour after the clock handed the run over: the
        // slot seems an hour away, but the run was handed over at most a lead before it.
        let stepped = now + Duration::from_secs(3600);
        assert!(
            until_fork(stepped, now) <= MAX_HOLD,
            "{:?}",
            until_fork(stepped, now)
        );
    }

    #[test]
    fn a_staged_agent_waits_for_its_slot_only_when_the_slot_is_still_ahead() {
        let now = SystemTime::now();
        let slot = now + FORK_AHEAD;
        assert_eq!(exec_at(slot, now), Some(slot));
        // Staging took longer than the lead (a loaded machine): the slot passed, so the
        // agent starts at once and its record says when it did, not the slot.
        assert_eq!(exec_at(now - Duration::from_secs(3), now), None);
        assert_eq!(exec_at(now, now), None);
        // An hour ahead: the wall clock was stepped back while the run was staged.
        assert_eq!(exec_at(now + Duration::from_secs(3600), now), None);
    }

    fn job(limits: Value) -> Job {
        crate::job::validate_job(
            &json!({"name": "j", "prompt": "p", "limits": limits,
                    "triggers": [{"type": "interval", "seconds": 5}]}),
            "job_000000000001",
            "2026-01-01T00:00:00Z",
        )
        .expect("valid job")
    }

    fn error_for(j: &Job, o: agent::Outcome) -> (RunStatus, String) {
        let mut rec = RunRecord::queued("run_1".into(), &j.id, &j.name, json!({"type": "manual"}));
        apply_outcome(j, &mut rec, Ok(o), &Redactor::default());
        (rec.status, rec.error.unwrap_or_default())
    }

    fn ended(mode: Mode, code: Option<i32>, signal: Option<i32>, stderr: &str) -> agent::Outcome {
        agent::Outcome {
            exit_code: code,
            signal,
            stderr_tail: stderr.as_bytes().to_vec(),
            mode: Some(mode),
            ..Default::default()
        }
    }

    /// Issue 13, defect 6: the memory note only when the limit is the likely cause.
    #[test]
    fn memory_note_only_when_the_limit_fits() {
        let j = job(json!({"memory_mb": 500}));
        let pg = Mode::ProcessGroup;
        let (st, e) = error_for(&j, ended(pg, Some(3), None, "usage: bad flag"));
        assert_eq!(st, RunStatus::Failed);
        assert_eq!(e, "the agent exited with code 3");
        let (_, e) = error_for(&j, ended(pg, Some(1), None, "MemoryError"));
        assert!(e.contains("memory_mb limit is 500 MiB"), "{e}");
        let (_, e) = error_for(&j, ended(pg, None, Some(sig::SIGABRT), ""));
        assert!(e.contains("memory_mb limit is 500 MiB"), "{e}");
        let (_, e) = error_for(&j, ended(pg, Some(134), None, ""));
        assert!(e.contains("memory_mb limit is 500 MiB"), "{e}");
        // With a cgroup the kernel's count decides, not the guess.
        let v1 = Mode::CgroupV1;
        let (_, e) = error_for(&j, ended(v1, Some(1), None, "MemoryError"));
        assert!(!e.contains("memory_mb"), "{e}");
        let mut o = ended(v1, None, Some(sig::SIGKILL), "");
        o.verdict = Verdict {
            oom_kills: 1,
            pids_max_hits: 0,
            ..Verdict::default()
        };
        let (st, e) = error_for(&j, o);
        assert_eq!(st, RunStatus::Failed);
        assert!(
            e.contains("killed by SIGKILL: out of memory: memory_mb limit is 500 MiB"),
            "{e}"
        );
        // A child OOM-killed while the agent carried on and exited 0 still fails the run.
        let mut o = ended(v1, Some(0), None, "");
        o.verdict.oom_kills = 2;
        assert_eq!(error_for(&j, o).0, RunStatus::Failed);
    }

    #[test]
    fn job_object_limits_are_named() {
        let j = job(json!({"cpu_seconds": 2, "memory_mb": 64}));
        let mut o = ended(Mode::JobObject, Some(1816), None, "");
        o.verdict.limits_hit.cpu_seconds = true;
        let (st, e) = error_for(&j, o);
        assert_eq!(st, RunStatus::Failed);
        assert!(
            e.starts_with("the agent exited with code 1816: cpu_seconds limit of 2 s reached"),
            "{e}"
        );
        let mut o = ended(Mode::JobObject, Some(3), None, "");
        o.verdict.limits_hit.memory_mb = true;
        let (_, e) = error_for(&j, o);
        assert!(e.contains("memory_mb limit of 64 MiB reached"), "{e}");
        // Nothing counted: the plain exit code.
        let (_, e) = error_for(&j, ended(Mode::JobObject, Some(1816), None, ""));
        assert_eq!(e, "the agent exited with code 1816");
    }

    #[test]
    fn pids_limit_hit_is_noted() {
        let j = job(json!({"max_processes": 50}));
        let mut o = ended(Mode::CgroupV1, Some(0), None, "");
        o.verdict.pids_max_hits = 12;
        let (st, e) = error_for(&j, o);
        assert_eq!(st, RunStatus::Succeeded);
        assert_eq!(
            e,
            "max_processes limit of 50 reached: the kernel refused 12 fork(s) of this run"
        );
    }

    #[test]
    fn too_long_and_nul_arguments_are_named_before_the_run() {
        let env = Vec::new();
        let e = argv_problem(&["sh".into(), "x".repeat(MAX_ARG_BYTES)], &env).unwrap();
        assert!(
            e.contains("prompt_via") && e.contains("{prompt_file}"),
            "{e}"
        );
        let e = argv_problem(&["sh".into(), "a\0b".into()], &env).unwrap();
        assert!(e.contains("NUL"), "{e}");
        assert_eq!(
            argv_problem(&["sh".into(), "x".repeat(MAX_ARG_BYTES - 1)], &env),
            None
        );
    }
}
