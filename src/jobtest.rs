//! `job test` and `POST /jobs/{id}/test` (README "Testing a job"): what a run of a job would
//! get — its trigger context, prompt, argv, environment (secret values hidden), event file,
//! working dir (or fresh checkout), limits, containment and the outputs each result would
//! reach — rendered by the worker's own [`worker::prepare`], so it cannot drift from what a
//! run gets; and with `exec`, one run of the agent under the same limits and containment,
//! which delivers nothing and records nothing.
//!
//! The firing is made up the way its trigger would make it (`--trigger`), from a webhook
//! payload given by the caller, or replayed from a recorded run (`--from-run`: its trigger
//! object and, for a webhook run, the body kept beside its record).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::agent::{self, Control};
use crate::contain::env as agent_env;
use crate::engine::Engine;
use crate::job::{Job, Trigger};
use crate::run::{RunRecord, RunStatus};
use crate::store::Store;
use crate::worker::{self, Prepared, Setup};

/// The trigger kinds a test can make up.
pub const KINDS: &[&str] = &[
    "cron",
    "interval",
    "manual",
    "webhook",
    "file_change",
    "git_push",
];

/// What to test: the API's JSON body (the CLI sends the same, built from its flags).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Which trigger fires (default: `webhook` with a body, else `manual`).
    pub trigger: Option<String>,
    /// A webhook body as text.
    pub body: Option<String>,
    /// A webhook body as a JSON value (sent as its JSON text).
    pub payload: Option<Value>,
    /// The `X-GitHub-Event` header of a webhook firing.
    pub event: Option<String>,
    /// More headers of a webhook firing.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Replay this recorded run's trigger context (and kept webhook body).
    pub from_run: Option<String>,
    /// Run the agent once (nothing delivered, nothing recorded).
    #[serde(default)]
    pub exec: bool,
}

/// Why a test cannot be rendered: a request field that does not fit the job.
#[derive(Debug, PartialEq)]
pub struct Error {
    /// The request field (`trigger`, `from_run`, ...).
    pub field: &'static str,
    pub message: String,
    /// No such run (404 rather than 400).
    pub not_found: bool,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for Error {}

fn bad(field: &'static str, message: impl Into<String>) -> Error {
    Error {
        field,
        message: message.into(),
        not_found: false,
    }
}

/// A made-up (or replayed) firing.
#[derive(Debug)]
pub struct Firing {
    /// The run record's `trigger` object.
    pub trigger: Map<String, Value>,
    /// A webhook body.
    pub body: Option<Vec<u8>>,
    /// The webhook request's headers (lower-case names), for the trigger's filter.
    pub headers: Vec<(String, String)>,
    /// What the caller should know (a replayed webhook run without its body, ...).
    pub notes: Vec<String>,
}

/// Makes up the firing `req` asks for.
pub fn firing(job: &Job, req: &Request, store: &Store) -> Result<Firing, Error> {
    let body = match (&req.body, &req.payload) {
        (Some(_), Some(_)) => return Err(bad("payload", "give body or payload, not both")),
        (Some(b), None) => Some(b.clone().into_bytes()),
        (None, Some(p)) => Some(serde_json::to_vec(p).unwrap_or_default()),
        (None, None) => None,
    };
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    if let Some(e) = &req.event {
        // The header the job's sender names events with (none for senders that name them
        // in the payload).
        for (name, value) in crate::triggers::filter::event_headers(hook_scheme(job), e) {
            headers.retain(|(k, _)| *k != name);
            headers.push((name, value));
        }
    }
    if let Some(run_id) = &req.from_run {
        if req.trigger.is_some() || body.is_some() || !headers.is_empty() {
            return Err(bad(
                "from_run",
                "replays the run's own trigger and payload: leave out trigger, payload, event and headers",
            ));
        }
        return replay(job, run_id, store);
    }
    let kind = match &req.trigger {
        Some(k) if KINDS.contains(&k.as_str()) => k.as_str(),
        Some(k) => {
            return Err(bad(
                "trigger",
                format!("unknown trigger {k:?}: expected {}", KINDS.join(", ")),
            ))
        }
        None if body.is_some() || !headers.is_empty() => "webhook",
        None => "manual",
    };
    if kind != "webhook" && (body.is_some() || !headers.is_empty()) {
        return Err(bad(
            "trigger",
            format!("a payload, event or headers go with a webhook firing, not {kind}"),
        ));
    }
    let mut notes = Vec::new();
    let missing = |what: &str| bad("trigger", format!("the job has no {what} trigger"));
    let trigger = match kind {
        "manual" => crate::triggers::context("manual"),
        "cron" => {
            let (cron, tz) = job
                .triggers
                .iter()
                .find_map(|t| match t {
                    Trigger::Cron { cron, timezone, .. } => Some((cron, timezone)),
                    _ => None,
                })
                .ok_or_else(|| missing("cron"))?;
            let mut m = crate::triggers::context("cron");
            m.insert("cron".into(), cron.clone().into());
            let zone = crate::schedule::zone::Zone::parse(tz.as_deref())
                .map(|z| z.name())
                .unwrap_or_default();
            m.insert("timezone".into(), zone.into());
            m.insert("scheduled_at".into(), m["fired_at"].clone());
            m
        }
        "interval" => {
            let seconds = job
                .triggers
                .iter()
                .find_map(|t| match t {
                    Trigger::Interval { seconds } => Some(*seconds),
                    _ => None,
                })
                .ok_or_else(|| missing("interval"))?;
            let mut m = crate::triggers::context("interval");
            m.insert("seconds".into(), seconds.into());
            m.insert("scheduled_at".into(), m["fired_at"].clone());
            m
        }
        "file_change" => {
            let root = job
                .triggers
                .iter()
                .find_map(|t| match t {
                    Trigger::FileChange { root, .. } => {
                        Some(root.clone().or_else(|| job.working_dir.clone()))
                    }
                    _ => None,
                })
                .ok_or_else(|| missing("file_change"))?;
            let mut m = crate::triggers::context("file_change");
            m.insert("root".into(), root.unwrap_or_default().into());
            m.insert("changed_files".into(), json!([]));
            notes.push("changed_files is empty: a test changes no file".to_string());
            m
        }
        "webhook" => {
            let path = job
                .triggers
                .iter()
                .find_map(|t| match t {
                    Trigger::Webhook { path, .. } => Some(path.clone()),
                    _ => None,
                })
                .ok_or_else(|| missing("webhook"))?;
            let delivery = crate::triggers::webhook::Delivery {
                path: &path,
                headers: &headers,
                body: body.clone().unwrap_or_default(),
            };
            let scheme = hook_scheme(job);
            let payload = body.as_deref().and_then(|b| serde_json::from_slice(b).ok());
            let id = crate::triggers::scheme::delivery_id(scheme, &headers, payload.as_ref());
            crate::triggers::webhook::trigger_context(&delivery, id.as_deref(), scheme)
        }
        _ => {
            let (repo, branch) = job
                .triggers
                .iter()
                .find_map(|t| match t {
                    Trigger::GitPush { repo, branch, .. } => Some((repo, branch)),
                    _ => None,
                })
                .ok_or_else(|| missing("git_push"))?;
            let repo = std::path::Path::new(repo);
            let (b, after) =
                crate::triggers::git::current_branch(repo, branch).ok_or_else(|| {
                    bad(
                        "trigger",
                        format!(
                            "{} has no branch matching {branch:?} (or is not a git repository)",
                            repo.display()
                        ),
                    )
                })?;
            let one = json!({"ref": format!("refs/heads/{b}"), "branch": b,
                "before": after, "after": after});
            notes.push(format!(
                "a push is made up from branch {b}'s current commit (before = after)"
            ));
            crate::triggers::git::push_context(repo, vec![one]).unwrap_or_default()
        }
    };
    Ok(Firing {
        trigger,
        body,
        headers,
        notes,
    })
}

/// A recorded run's firing: its trigger object, and its webhook body when one was kept.
fn replay(job: &Job, run_id: &str, store: &Store) -> Result<Firing, Error> {
    let rec = crate::ids::is_run_id(run_id)
        .then(|| store.load_run(&job.id, run_id))
        .flatten()
        .ok_or_else(|| Error {
            field: "from_run",
            message: format!("job \"{}\" has no run \"{run_id}\"", job.name),
            not_found: true,
        })?;
    let Value::Object(mut trigger) = rec.trigger else {
        return Err(bad("from_run", "the run's trigger object is not an object"));
    };
    trigger.insert("fired_at".into(), crate::time::now_rfc3339().into());
    let mut notes = vec![format!("replaying run {run_id}")];
    let body = store.load_payload(&job.id, run_id);
    let is_hook = trigger.get("type").and_then(Value::as_str) == Some("webhook");
    if is_hook && body.is_none() {
        notes.push(format!(
            "the body of run {run_id} was not kept (older than the job's history, or recorded before bodies were kept): payload and body are missing"
        ));
    }
    let headers = match trigger.get("headers") {
        Some(Value::Object(h)) => h
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Firing {
        trigger,
        body: body.filter(|_| is_hook),
        headers,
        notes,
    })
}

/// The sender scheme of the job's (first) webhook trigger.
fn hook_scheme(job: &Job) -> Option<crate::triggers::scheme::Scheme> {
    job.triggers.iter().find_map(|t| match t {
        Trigger::Webhook { scheme, .. } => *scheme,
        _ => None,
    })
}

/// Whether the job's webhook filter lets this firing through, and if not, which rule did
/// not match: `no filter`, `matches`, or `does not match: <rule>` (the words intake logs).
pub fn filter_verdict(job: &Job, firing: &Firing) -> String {
    let Some((filter, scheme)) = job.triggers.iter().find_map(|t| match t {
        Trigger::Webhook { filter, scheme, .. } if !filter.is_empty() => Some((filter, *scheme)),
        _ => None,
    }) else {
        return "no filter".to_string();
    };
    if firing.trigger.get("type").and_then(Value::as_str) != Some("webhook") {
        return "not checked: the filter applies to webhook deliveries".to_string();
    }
    let payload: Option<Value> = firing
        .body
        .as_deref()
        .and_then(|b| serde_json::from_slice(b).ok());
    match crate::triggers::filter::check(filter, scheme, &firing.headers, payload.as_ref()) {
        Ok(()) => "matches".to_string(),
        Err(why) => format!("does not match: {why}"),
    }
}

/// The run `firing` would start, rendered by the worker's own code, and the report of it.
/// `containment`: how the daemon contains runs (None: not known, no daemon runs).
pub fn render(
    setup: &Setup<'_>,
    job: &Job,
    firing: &Firing,
    containment: Option<String>,
) -> (Value, Prepared) {
    let run_id = crate::ids::new_run_id();
    let extra = match &firing.body {
        Some(b) => crate::payload::Body::new(b.clone(), &setup.data_dir.join("spool")).vars(),
        None => Map::new(),
    };
    let trigger = Value::Object(firing.trigger.clone());
    let p = worker::prepare(setup, job, &run_id, &trigger, extra);
    let env: Vec<Value> = agent_env::shown(&p.env, &p.secrets, &p.redactor)
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    // Daemon variables the agent does not get because a job names them as secrets.
    let withheld: Vec<String> = setup
        .daemon_env
        .iter()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .filter(|k| {
            p.secrets.contains(k) && !p.env.iter().any(|(n, _)| n.as_os_str() == k.as_str())
        })
        .collect();
    let mut outputs = Map::new();
    // `missed` is a dead-man's switch notice, not a run's result: listed only with `expect`.
    let missed = job.expect.as_ref().map(|_| RunStatus::Missed);
    for st in [RunStatus::Succeeded, RunStatus::Failed, RunStatus::TimedOut]
        .into_iter()
        .chain(missed)
    {
        let fire: Vec<Value> = job
            .outputs
            .iter()
            .filter(|o| crate::outputs::wants(o, st))
            .map(|o| serde_json::to_value(&o.target).unwrap_or(Value::Null))
            .collect();
        outputs.insert(st.as_str().into(), Value::Array(fire));
    }
    let event: Value = serde_json::from_slice(&p.event).unwrap_or(Value::Null);
    let report = json!({
        "job": job.name,
        "job_id": job.id,
        "run_id": p.run_id,
        "trigger": trigger,
        "filter": filter_verdict(job, firing),
        "headers": firing.headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "prompt": p.prompt,
        "unknown_variables": p.unknown,
        "argv": p.argv,
        "prompt_via": p.via,
        "prompt_file": p.prompt_path.as_ref().map(|x| x.display().to_string()),
        "working_dir": p.cwd.display().to_string(),
        "checkout": p.checkout.as_ref().map(|c| {
            let mut v = c.record(false);
            if let Value::Object(m) = &mut v { m.remove("kept"); }
            v
        }),
        "env": env,
        "withheld_env": withheld,
        "event_file": {"path": p.event_path.display().to_string(), "content": event},
        "limits": job.limits,
        "containment": containment,
        "outputs": outputs,
        "problem": p.problem,
        "notes": firing.notes,
    });
    (report, p)
}

/// Runs the agent of a rendered test once, under the job's limits and the daemon's
/// containment (a daemon that stops kills it as it kills runs). Nothing is delivered and no
/// record is written; the returned record (output redacted and bounded by `max_output_kb`,
/// stderr's tail) says how it went.
pub fn exec(engine: &Engine, job: &Job, mut p: Prepared, trigger: Value) -> RunRecord {
    let mut rec = RunRecord::queued(p.run_id.clone(), &job.id, &job.name, trigger);
    let made = p.materialize();
    let spec = p.spec(job);
    let unstartable = made.err().or_else(|| p.problem.clone());
    let started = chrono::Utc::now();
    rec.started_at = Some(crate::time::rfc3339(started));
    rec.attempts = 1;
    let result = match unstartable {
        Some(reason) => Err(reason),
        None => {
            let (control, kill_tx) = Control::new();
            engine.register_running(&p.run_id, kill_tx);
            log::info!(event = "test.exec", job = job.name.as_str(), run = p.run_id.as_str(); "job test: running the agent once (nothing delivered, nothing recorded)");
            let r = agent::run(&spec, &control, |_, _| {}).map_err(|e| e.to_string());
            engine.unregister_running(&p.run_id);
            r
        }
    };
    worker::apply_outcome(job, &mut rec, result, &p.redactor);
    let finished = chrono::Utc::now();
    rec.finished_at = Some(crate::time::rfc3339(finished));
    rec.duration_ms = Some((finished - started).num_milliseconds().max(0) as u64);
    rec.checkout = p.cleanup(rec.status != RunStatus::Succeeded);
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(v: Value) -> Job {
        crate::job::validate_job(&v, "job_000000000001", "2026-01-01T00:00:00Z").expect("valid")
    }

    #[test]
    fn firings_are_made_up_per_trigger_and_refuse_what_does_not_fit() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::at(t.path());
        let j = job(json!({"name": "j", "prompt": "p", "working_dir": "/tmp",
            "triggers": [{"type": "cron", "cron": "0 9 * * *", "timezone": "UTC"},
                         {"type": "webhook", "path": "/hooks/gh", "secret_env": "S"}]}));
        let r = |v: Value| serde_json::from_value::<Request>(v).unwrap();
        let f = firing(&j, &r(json!({})), &store).unwrap();
        assert_eq!(f.trigger["type"], "manual");
        let f = firing(&j, &r(json!({"trigger": "cron"})), &store).unwrap();
        assert_eq!(f.trigger["cron"], "0 9 * * *");
        assert_eq!(f.trigger["timezone"], "UTC");
        let f = firing(
            &j,
            &r(json!({"payload": {"a": 1}, "event": "push", "headers": {"User-Agent": "x"}})),
            &store,
        )
        .unwrap();
        assert_eq!(f.trigger["type"], "webhook");
        assert_eq!(f.trigger["event"], "push");
        assert_eq!(f.trigger["headers"]["user-agent"], "x");
        assert_eq!(f.body.as_deref(), Some(&b"{\"a\":1}"[..]));
        let e = firing(&j, &r(json!({"trigger": "interval"})), &store).unwrap_err();
        assert_eq!(e.message, "the job has no interval trigger");
        let e = firing(&j, &r(json!({"trigger": "cron", "body": "x"})), &store).unwrap_err();
        assert_eq!(e.field, "trigger");
        let e = firing(&j, &r(json!({"trigger": "sundial"})), &store).unwrap_err();
        assert!(e.message.contains("expected cron, interval"), "{e}");
        let e = firing(&j, &r(json!({"from_run": "run_00ff"})), &store).unwrap_err();
        assert!(e.not_found);
        let e = firing(&j, &r(json!({"from_run": "../x"})), &store).unwrap_err();
        assert!(e.not_found);
    }
}
