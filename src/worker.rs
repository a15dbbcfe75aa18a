//! The worker pool: fixed threads that take [`Work`] from the bounded channel and execute
//! runs: render the prompt, write the event file, run the agent (with retries), dispatch
//! outputs, write the final record, apply retention.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{select, Receiver, Sender};
use serde_json::{Map, Value};

use crate::agent::{self, Control, Spec};
use crate::engine::{Engine, Extra, Work};
use crate::job::{Job, PromptVia};
use crate::metrics::Metrics;
use crate::run::{RunRecord, RunStatus};

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
    let mut rec = w.run;
    rec.interrupt("the daemon stopped before this run started");
    save(engine, &rec);
    Metrics::inc(&engine.metrics.runs_interrupted_total);
    engine.finish_run(&w.job.id, &rec.id);
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

fn execute(engine: &Engine, w: Work) {
    let job = w.job;
    let mut rec = w.run;
    // The body is parsed here, once per run, and dropped when the run has started.
    let extra = firing_vars(&w.extra);
    drop(w.extra);
    let extra_keys: Vec<String> = extra.keys().cloned().collect();
    let vars = template_vars_from(&job, &rec.trigger, extra);
    let (prompt, unknown) = crate::template::render(&job.prompt, &vars);
    if !unknown.is_empty() {
        log::warn!(event = "template.unknown", job = job.name.as_str(), run = rec.id.as_str(); "prompt names unknown template variables (rendered empty): {}", unknown.join(", "));
    }
    let (argv_t, via) = agent_argv(&job, engine.settings.default_agent.as_deref());
    let argv: Vec<String> = argv_t
        .iter()
        .map(|a| {
            // {model} first: a prompt that happens to contain "{model}" stays as written.
            let a = a.replace("{model}", &job.model);
            if via == PromptVia::Arg {
                a.replace("{prompt}", &prompt)
            } else {
                a
            }
        })
        .collect();

    let event_file = write_event_file(engine, &job, &rec, &vars, &extra_keys, &prompt);
    let trigger_type = rec
        .trigger
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut env: Vec<(String, String)> = job
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.extend([
        ("BOG_JOB_ID".to_string(), job.id.clone()),
        ("BOG_JOB_NAME".to_string(), job.name.clone()),
        ("BOG_RUN_ID".to_string(), rec.id.clone()),
        ("BOG_TRIGGER".to_string(), trigger_type),
        ("BOG_MODEL".to_string(), job.model.clone()),
    ]);
    if let Some(p) = &event_file {
        env.push(("BOG_EVENT_FILE".into(), p.display().to_string()));
    }
    let cwd = job
        .working_dir
        .clone()
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/"));
    let spec = Spec {
        argv,
        stdin: (via == PromptVia::Stdin).then(|| prompt.clone().into_bytes()),
        env,
        cwd,
        timeout: job.limits.timeout_seconds.map(Duration::from_secs),
        cpu_seconds: job.limits.cpu_seconds,
        memory_mb: job.limits.memory_mb,
        max_processes: job.limits.max_processes,
        max_output_bytes: (job.limits.max_output_kb as usize).saturating_mul(1024),
        marker: Some(format!("BOG_RUN_ID={}", rec.id)),
    };

    let first_start = chrono::Utc::now();
    rec.started_at = Some(crate::time::rfc3339(first_start));
    loop {
        rec.attempts += 1;
        rec.status = RunStatus::Running;
        save(engine, &rec);
        Metrics::inc(&engine.metrics.runs_started_total);
        Metrics::inc(&engine.metrics.runs_running);
        log::info!(event = "run.started", job = job.name.as_str(), run = rec.id.as_str(), attempt = rec.attempts; "agent starting: {}", spec.argv.first().map(String::as_str).unwrap_or(""));
        let (control, kill_tx) = Control::new();
        engine.register_running(&rec.id, kill_tx);
        let result = agent::run(&spec, &control, |_| {});
        engine.unregister_running(&rec.id);
        Metrics::dec(&engine.metrics.runs_running);
        apply_outcome(&job, &mut rec, result);

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
    rec.duration_ms = Some((finished - first_start).num_milliseconds().max(0) as u64);
    if let Some(p) = &event_file {
        let _ = std::fs::remove_file(p);
    }

    match rec.status {
        RunStatus::Succeeded => Metrics::inc(&engine.metrics.runs_succeeded_total),
        RunStatus::TimedOut => Metrics::inc(&engine.metrics.runs_timed_out_total),
        RunStatus::Interrupted => Metrics::inc(&engine.metrics.runs_interrupted_total),
        _ => Metrics::inc(&engine.metrics.runs_failed_total),
    }
    if rec.status != RunStatus::Interrupted {
        let before = rec.dispatch_errors.len();
        crate::outputs::dispatch(&job, &mut rec, &vars, &engine.shutdown_signal());
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
fn apply_outcome(job: &Job, rec: &mut RunRecord, result: Result<agent::Outcome, String>) {
    rec.signal = None;
    rec.exit_code = None;
    let o = match result {
        Ok(o) => o,
        Err(reason) => {
            rec.status = RunStatus::Failed;
            rec.error = Some(reason);
            return;
        }
    };
    rec.exit_code = o.exit_code;
    rec.signal = o.signal.map(agent::signal_name);
    rec.output = String::from_utf8_lossy(&o.stdout).into_owned();
    rec.output_bytes = o.stdout_total;
    rec.output_truncated = o.stdout_total > o.stdout.len() as u64;
    if rec.output_truncated {
        rec.output.push_str(&format!(
            "\n[output cut at max_output_kb = {} KiB: {} more bytes were not kept]\n",
            job.limits.max_output_kb,
            o.stdout_total - o.stdout.len() as u64
        ));
    }
    rec.stderr_tail = String::from_utf8_lossy(&o.stderr_tail).into_owned();
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
    let (status, error) = if o.killed {
        (
            RunStatus::Interrupted,
            Some("the daemon stopped and its grace period ran out; the agent's process group was killed".to_string()),
        )
    } else if o.timed_out {
        (
            RunStatus::TimedOut,
            Some(format!(
                "timed out after timeout_seconds = {}; the process group got SIGTERM, then SIGKILL after {} s",
                job.limits.timeout_seconds.unwrap_or(0),
                agent::KILL_GRACE.as_secs()
            )),
        )
    } else if o.exit_code == Some(0) {
        (RunStatus::Succeeded, None)
    } else if let Some(sig) = o.signal {
        let mut e = format!("the agent was killed by {}", agent::signal_name(sig));
        match job.limits.cpu_seconds {
            Some(cpu) if sig == libc::SIGXCPU || sig == libc::SIGKILL => e.push_str(&format!(
                ": cpu_seconds limit of {cpu} s reached (RLIMIT_CPU)"
            )),
            _ => e.push_str(&limit_hints(job)),
        }
        (RunStatus::Failed, Some(e))
    } else {
        let e = format!(
            "the agent exited with code {}{}",
            o.exit_code.unwrap_or(-1),
            limit_hints(job)
        );
        (RunStatus::Failed, Some(e))
    };
    rec.status = status;
    notes.extend(error);
    rec.error = if notes.is_empty() {
        None
    } else {
        Some(notes.join("; "))
    };
}

/// For a failed run: the limits that make allocations or forks fail inside the agent, which
/// is how those limits show (the process sees an error, not a signal).
fn limit_hints(job: &Job) -> String {
    let mut h = Vec::new();
    if let Some(mb) = job.limits.memory_mb {
        h.push(format!(
            "memory_mb limit is {mb} MiB of address space; allocations past it fail"
        ));
    }
    if let Some(n) = job.limits.max_processes {
        h.push(format!(
            "max_processes limit is {n} (RLIMIT_NPROC); fork fails past it"
        ));
    }
    if h.is_empty() {
        String::new()
    } else {
        format!(" ({})", h.join("; "))
    }
}

/// A firing's extra variables with its webhook body (if any) read and parsed.
pub fn firing_vars(extra: &Extra) -> Map<String, Value> {
    let mut m = extra.vars.clone();
    if let Some(b) = &extra.body {
        m.extend(b.vars());
    }
    m
}

/// Writes the firing context to `<data dir>/events/<run-id>.json` for `BOG_EVENT_FILE`:
/// the run's trigger object plus the firing's extra variables (`extra_keys`, taken from
/// `vars`), serialized from borrowed data so a large webhook payload is not copied again.
fn write_event_file(
    engine: &Engine,
    job: &Job,
    rec: &RunRecord,
    vars: &Value,
    extra_keys: &[String],
    prompt: &str,
) -> Option<PathBuf> {
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
    let dir = engine.store.dir().join("events");
    if let Err(e) = crate::fsio::create_dir_all_mode(&dir, 0o700) {
        log::error!(event = "store.error", run = rec.id.as_str(); "cannot create {}: {e}", dir.display());
        return None;
    }
    let p = dir.join(format!("{}.json", rec.id));
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
    let data = serde_json::to_vec_pretty(&Event {
        job: Named {
            id: &job.id,
            name: &job.name,
        },
        run: Attempt {
            id: &rec.id,
            attempt: rec.attempts + 1,
        },
        trigger: TriggerView {
            trigger: &rec.trigger,
            vars,
            extra_keys,
        },
        prompt,
    })
    .unwrap_or_default();
    match crate::fsio::write_atomic(&p, &data, 0o600) {
        Ok(()) => Some(p),
        Err(e) => {
            log::error!(event = "store.error", run = rec.id.as_str(); "cannot write event file {}: {e}", p.display());
            None
        }
    }
}
