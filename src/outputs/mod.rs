//! The output dispatcher: after every finished run, each of the job's outputs whose `on`
//! matches the run's status gets the result. One small file per target; a new target is one
//! file plus one arm in [`deliver`]. A failing output never fails the run: its error lands
//! in the record's `dispatch_errors`.
//!
//! Local outputs (log, stdout, file) are written in order on the worker's thread. Network
//! outputs (slack, webhook, email, github_comment) are delivered side by side, one scoped
//! thread each, so a run's dispatch takes as long as its slowest output, never the sum;
//! each of them is bounded by [`retry::BUDGET`]. Errors are recorded in the job's order of
//! outputs either way. A target fails with a [`DeliveryError`]; it becomes text here, when
//! it is filed in the record.

mod email;
mod error;
mod file;
mod github;
mod http;
mod limits;
mod log;
mod retry;
mod slack;
mod stdout;
mod webhook;

use std::time::Instant;

use crossbeam_channel::Receiver;
use serde_json::Value;

pub use error::DeliveryError;
use error::SecretProblem;

use crate::job::{Job, OnStatus, Output, Target};
use crate::run::{RunRecord, RunStatus};

/// Network outputs retry at least this many times, whatever the job's `max_retries`.
pub const MIN_RETRIES: u32 = 2;

/// What a network delivery needs besides its target and the run.
pub struct Ctx<'a> {
    /// Retries after the first attempt: `max(job.max_retries, MIN_RETRIES)`.
    pub retries: u32,
    /// Disconnects when the daemon begins to stop: backoff waits end early, no more retries.
    pub stop: &'a Receiver<()>,
    /// The firing's template variables (as for the prompt), for templated settings such
    /// as a `github_comment` `issue` of `{{payload.pull_request.number}}`.
    pub vars: &'a Value,
}

/// Delivers `run` to every matching output of `job`, recording failures in the run.
/// `vars` are the firing's template variables (`worker::template_vars`); `stop` is the
/// engine's shutdown signal.
pub fn dispatch(job: &Job, run: &mut RunRecord, vars: &Value, stop: &Receiver<()>) {
    let ctx = Ctx {
        retries: job.max_retries.max(MIN_RETRIES),
        stop,
        vars,
    };
    let rec: &RunRecord = run;
    let failures: Vec<(&'static str, DeliveryError)> = std::thread::scope(|s| {
        let pending: Vec<(&'static str, Pending)> = job
            .outputs
            .iter()
            .filter(|o| wants(o, rec.status))
            .map(|o| {
                let t = &o.target;
                if !is_network(t) {
                    return (t.kind(), Pending::Done(timed(t, job, rec, &ctx)));
                }
                let spawned = std::thread::Builder::new()
                    .name(format!("output-{}", t.kind()))
                    .spawn_scoped(s, || timed(t, job, rec, &ctx));
                let p = match spawned {
                    Ok(h) => Pending::Running(h),
                    // No thread to be had: deliver on this one instead.
                    Err(_) => Pending::Done(timed(t, job, rec, &ctx)),
                };
                (t.kind(), p)
            })
            .collect();
        pending
            .into_iter()
            .filter_map(|(kind, p)| {
                let r = match p {
                    Pending::Done(r) => r,
                    Pending::Running(h) => h.join().unwrap_or(Err(DeliveryError::Panicked)),
                };
                r.err().map(|e| (kind, e))
            })
            .collect()
    });
    for (kind, e) in failures {
        run.add_dispatch_error(kind, e.to_string());
    }
}

/// An output delivered inline, or still being delivered on its own thread.
enum Pending<'scope> {
    Done(Result<(), DeliveryError>),
    Running(std::thread::ScopedJoinHandle<'scope, Result<(), DeliveryError>>),
}

/// Whether output `o` is for runs that ended with `status` (`timed_out` counts as failed;
/// `missed` is a dead-man's switch notice, for outputs that ask for it only).
pub fn wants(o: &Output, status: RunStatus) -> bool {
    match status {
        RunStatus::Succeeded => o.on.contains(&OnStatus::Succeeded),
        RunStatus::Failed | RunStatus::TimedOut => o.on.contains(&OnStatus::Failed),
        RunStatus::Missed => o.on.contains(&OnStatus::Missed),
        _ => false,
    }
}

fn is_network(t: &Target) -> bool {
    !matches!(t, Target::Log | Target::Stdout | Target::File { .. })
}

/// [`deliver`], with a debug log line saying how long it took.
fn timed(t: &Target, job: &Job, run: &RunRecord, ctx: &Ctx) -> Result<(), DeliveryError> {
    let start = Instant::now();
    let r = deliver(t, job, run, ctx);
    ::log::debug!(
        event = "output.done", job = job.name.as_str(), run = run.id.as_str(),
        target = t.kind(), ok = r.is_ok(), elapsed_ms = start.elapsed().as_millis() as u64;
        "{} delivery {}", t.kind(), if r.is_ok() { "done" } else { "failed" }
    );
    r
}

fn deliver(target: &Target, job: &Job, run: &RunRecord, ctx: &Ctx) -> Result<(), DeliveryError> {
    match target {
        Target::Log => log::deliver(job, run),
        Target::Stdout => stdout::deliver(job, run),
        Target::File { path, append } => file::deliver(path, *append, job, run),
        Target::Slack {
            channel,
            token_env,
            webhook_url_env,
            api_url,
        } => {
            let via = match (token_env, webhook_url_env) {
                (Some(t), _) => slack::Via::Bot {
                    token_env: t,
                    api_url,
                },
                (None, Some(w)) => slack::Via::IncomingWebhook { url_env: w },
                (None, None) => {
                    return Err(DeliveryError::Config(
                        "slack needs token_env or webhook_url_env",
                    ))
                }
            };
            slack::deliver(&via, channel.as_deref(), job, run, ctx)
        }
        Target::Webhook {
            url,
            hmac_secret_env,
            headers,
        } => webhook::deliver(url, hmac_secret_env.as_deref(), headers, job, run, ctx),
        Target::Email {
            to,
            from,
            smtp_env_prefix,
        } => email::deliver(to, from.as_deref(), smtp_env_prefix, job, run, ctx),
        Target::GithubComment {
            repo,
            issue,
            token_env,
            api_url,
        } => github::deliver(repo, issue, token_env, api_url, job, run, ctx),
    }
}

/// The value of the environment variable `name`, read now (secrets are never stored).
/// `field` is the job field that names it, for the error. Empty counts as unset.
pub fn secret_env(name: &str, field: &'static str) -> Result<String, DeliveryError> {
    let problem = match std::env::var(name) {
        Ok(v) if !v.is_empty() => return Ok(v),
        Ok(_) => SecretProblem::Empty,
        Err(std::env::VarError::NotPresent) => SecretProblem::Unset,
        Err(std::env::VarError::NotUnicode(_)) => SecretProblem::NotUnicode,
    };
    Err(DeliveryError::Secret {
        var: name.to_string(),
        field,
        problem,
    })
}

/// The status as a notification says it: `succeeded`, `failed`, `timed out`.
pub fn status_words(run: &RunRecord) -> &'static str {
    match run.status {
        RunStatus::TimedOut => "timed out",
        s => s.as_str(),
    }
}

/// The trigger type of a run (`cron`, `webhook`, `manual`, ...).
pub fn trigger_name(run: &RunRecord) -> &str {
    run.trigger
        .get("type")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("unknown")
}

/// A run's duration for people: `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`.
pub fn human_duration(ms: Option<u64>) -> String {
    let Some(ms) = ms else {
        return "-".into();
    };
    let s = ms / 1000;
    match ms {
        0..=999 => format!("{ms} ms"),
        1000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a char boundary,
/// and a note for what was left out: `(truncated, N bytes more; full output in run <id>)`.
pub fn cut<'a>(text: &'a str, max_bytes: usize, run_id: &str) -> (&'a str, Option<String>) {
    if text.len() <= max_bytes {
        return (text, None);
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let note = format!(
        "(truncated, {} bytes more; full output in run {run_id})",
        text.len() - end
    );
    (&text[..end], Some(note))
}

/// The header line written before a result: job, run id, time and status.
pub fn header(job: &Job, run: &RunRecord) -> String {
    let mut h = format!(
        "=== {} run {} {} {}",
        job.name,
        run.id,
        run.finished_at.as_deref().unwrap_or("-"),
        run.status.as_str()
    );
    if let Some(c) = run.exit_code {
        h.push_str(&format!(" exit={c}"));
    }
    if let Some(e) = &run.error {
        h.push_str(&format!(" error={e:?}"));
    }
    h.push_str(" ===\n");
    h
}

/// The result text with a trailing newline.
pub fn body(run: &RunRecord) -> String {
    let mut b = run.output.clone();
    if !b.is_empty() && !b.ends_with('\n') {
        b.push('\n');
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(outputs: serde_json::Value) -> Job {
        crate::job::validate_job(
            &json!({"name": "j", "prompt": "p", "triggers": [{"type": "interval", "seconds": 9}], "outputs": outputs}),
            "job_1",
            "2026-01-01T00:00:00Z",
        )
        .unwrap()
    }

    #[test]
    fn file_output_appends_with_header_and_on_filters() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.txt");
        let j = job(json!([
            {"type": "file", "path": p.to_str().unwrap()},
            {"type": "file", "path": "/nonexistent-dir/x", "on": ["failed"]}
        ]));
        let mut r = RunRecord::queued("run_1".into(), "job_1", "j", json!({"type": "manual"}));
        r.status = RunStatus::Succeeded;
        r.output = "hello".into();
        let (_tx, stop) = crossbeam_channel::bounded(0);
        dispatch(&j, &mut r, &json!({}), &stop);
        dispatch(&j, &mut r, &json!({}), &stop);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.matches("=== j run run_1").count(), 2);
        assert!(text.contains("hello\n"));
        assert!(r.dispatch_errors.is_empty(), "{:?}", r.dispatch_errors);
        r.status = RunStatus::Failed;
        dispatch(&j, &mut r, &json!({}), &stop);
        assert_eq!(r.dispatch_errors.len(), 1);
        assert!(r.dispatch_errors[0].error.contains("/nonexistent-dir/x"));
    }

    #[test]
    fn unset_secret_variables_are_named_and_errors_keep_the_job_order() {
        let j = job(json!([
            {"type": "slack", "channel": "#c", "token_env": "BOG_TEST_UNSET_SLACK"},
            {"type": "file", "path": "/nonexistent-dir/x"},
            {"type": "github_comment", "repo": "o/r", "issue": 1, "token_env": "BOG_TEST_UNSET_GH"},
            {"type": "webhook", "url": "http://127.0.0.1:9/x", "hmac_secret_env": "BOG_TEST_UNSET_WH"},
            {"type": "email", "to": "a@example.com", "smtp_env_prefix": "BOG_TEST_UNSET_"}
        ]));
        let mut r = RunRecord::queued("run_1".into(), "job_1", "j", json!({}));
        r.status = RunStatus::Failed;
        let (_tx, stop) = crossbeam_channel::bounded(0);
        dispatch(&j, &mut r, &json!({}), &stop);
        let got: Vec<(&str, &str)> = r
            .dispatch_errors
            .iter()
            .map(|e| (e.target.as_str(), e.error.as_str()))
            .collect();
        assert_eq!(got.len(), 5, "{got:?}");
        let want = [
            ("slack", "BOG_TEST_UNSET_SLACK"),
            ("file", "/nonexistent-dir/x"),
            ("github_comment", "BOG_TEST_UNSET_GH"),
            ("webhook", "BOG_TEST_UNSET_WH"),
            ("email", "BOG_TEST_UNSET_HOST"),
        ];
        for ((t, e), (wt, we)) in got.iter().zip(want) {
            assert_eq!(*t, wt);
            assert!(e.contains(we), "{e}");
        }
    }

    #[test]
    fn helpers_cut_and_format() {
        assert_eq!(
            cut("héllo", 2, "run_1"),
            (
                "h",
                Some("(truncated, 5 bytes more; full output in run run_1)".into())
            )
        );
        assert_eq!(cut("abc", 3, "r"), ("abc", None));
        assert_eq!(human_duration(Some(850)), "850 ms");
        assert_eq!(human_duration(Some(12_345)), "12.3 s");
        assert_eq!(human_duration(Some(245_000)), "4 min 05 s");
        assert_eq!(human_duration(Some(7_380_000)), "2 h 03 min");
        assert_eq!(human_duration(None), "-");
    }
}
