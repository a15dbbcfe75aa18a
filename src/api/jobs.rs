//! `/jobs` handlers: list, create, get, patch (JSON merge patch), delete, runs, run now.

use serde_json::{json, Value};

use super::{Api, Req, Resp};
use crate::engine::{Engine, FireError, Fired, JobError};
use crate::job::{validate_job, FieldError, Job};

/// A job as the API shows it: the stored fields plus `next_fire_at`, `warnings` and, for a
/// job with a run budget, `budget_use`.
pub fn view(engine: &Engine, job: &Job) -> Value {
    view_at(engine, job, engine.next_fire(job))
}

/// [`view`] with the next fire time given.
fn view_at(engine: &Engine, job: &Job, next_fire: Option<chrono::DateTime<chrono::Utc>>) -> Value {
    let mut v = serde_json::to_value(job).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        let (budget, _) = engine.budget_use(job);
        if !budget.is_empty() {
            let windows: serde_json::Map<String, Value> = budget
                .iter()
                .map(|(field, used, max)| {
                    let name = field.trim_start_matches("limits.");
                    (name.to_string(), json!({"used": used, "max": max}))
                })
                .collect();
            m.insert("budget_use".into(), Value::Object(windows));
        }
        m.insert(
            "next_fire_at".into(),
            next_fire
                .map(|t| Value::String(crate::time::rfc3339(t)))
                .unwrap_or(Value::Null),
        );
        m.insert("warnings".into(), json!(warnings(job)));
    }
    v
}

/// The job's save warnings, plus what only the daemon can tell: a webhook trigger whose
/// secret variable is unset in the daemon's environment (every request would be refused).
pub fn warnings(job: &Job) -> Vec<String> {
    let mut w = crate::job::validate::save_warnings(job);
    for (i, t) in job.triggers.iter().enumerate() {
        if let crate::job::Trigger::Webhook { secret_env, .. } = t {
            if std::env::var_os(secret_env).is_none_or(|v| v.is_empty()) {
                w.push(format!(
                    "triggers[{i}].secret_env: {secret_env} is not set in the running daemon's environment: every request to this webhook is refused until it is (set it where the daemon starts, e.g. the env file of its service, and restart it)"
                ));
            }
        }
    }
    w
}

fn parse_body(req: &Req) -> Result<Value, Resp> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(Resp::error(
            400,
            "request body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| Resp::error(400, format!("request body is not valid JSON: {e}")))
}

fn job_error(e: JobError) -> Resp {
    match e {
        JobError::NameTaken(n) => Resp::json(
            409,
            &json!({"error": format!("a job named \"{n}\" already exists"), "field": "name"}),
        ),
        JobError::NotFound => Resp::error(404, "no such job"),
        JobError::Store(e) => {
            log::error!(event = "store.error"; "{e}");
            Resp::error(500, format!("could not store the job: {e}"))
        }
        JobError::Unavailable(e) => Resp::error(503, e),
        JobError::Rejected(status, e) => Resp::error(status, e),
        JobError::Conflict(e) => Resp::error(409, e),
    }
}

fn not_found(id: &str) -> Resp {
    Resp::error(404, format!("no job with id or name \"{id}\""))
}

/// Renders a job for the engine's view cache (`engine/views.rs`).
fn render(engine: &Engine, job: &Job, next_fire: Option<chrono::DateTime<chrono::Utc>>) -> Vec<u8> {
    serde_json::to_vec(&view_at(engine, job, next_fire)).unwrap_or_default()
}

/// `GET /jobs`: kept serialised in memory by the engine, re-rendered only on change.
pub fn list(api: &Api) -> Resp {
    let r = |j: &Job, n| render(&api.engine, j, n);
    Resp::json_bytes(200, api.engine.jobs_json(&r).to_vec())
}

pub fn create(api: &Api, req: &Req) -> Resp {
    let body = match parse_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let id = match crate::ids::new_job_id() {
        Ok(id) => id,
        Err(e) => return Resp::error(500, format!("cannot make a job id: {e}")),
    };
    let now = crate::time::now_rfc3339();
    match api.engine.put_job(None, |_| {
        validate_job(&body, &id, &now).and_then(|j| api.engine.check_for_cluster(j))
    }) {
        Ok(Ok(job)) => {
            log::info!(event = "job.created", job = job.name.as_str(), id = job.id.as_str(); "job created");
            crate::engine::log_job_warnings(&job);
            Resp::json(201, &view(&api.engine, &job)).with("Location", format!("/jobs/{}", job.id))
        }
        Ok(Err(fe)) => Resp::field_error(&fe),
        Err(e) => job_error(e),
    }
}

pub fn get(api: &Api, id: &str) -> Resp {
    match api.engine.job(id) {
        Some(j) => {
            let r = |j: &Job, n| render(&api.engine, j, n);
            Resp::json_bytes(200, api.engine.job_json(&j, &r).to_vec())
        }
        None => not_found(id),
    }
}

pub fn patch(api: &Api, id: &str, req: &Req) -> Resp {
    let patch = match parse_body(req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if !patch.is_object() {
        return Resp::error(400, "a PATCH body is a JSON object (a JSON merge patch)");
    }
    let Some(current) = api.engine.job(id) else {
        return not_found(id);
    };
    let r = api.engine.put_job(Some(&current.id), |cur| {
        let cur = cur.ok_or(FieldError {
            field: String::new(),
            error: "the job was deleted meanwhile".into(),
        })?;
        let mut v = serde_json::to_value(cur).unwrap_or(Value::Null);
        crate::job::merge_patch(&mut v, &patch);
        validate_job(&v, &cur.id, &cur.created_at).and_then(|j| api.engine.check_for_cluster(j))
    });
    match r {
        Ok(Ok(job)) => {
            log::info!(event = "job.updated", job = job.name.as_str(), id = job.id.as_str(); "job updated");
            Resp::json(200, &view(&api.engine, &job))
        }
        Ok(Err(fe)) => Resp::field_error(&fe),
        Err(e) => job_error(e),
    }
}

pub fn delete(api: &Api, id: &str) -> Resp {
    match api.engine.remove_job(id) {
        Ok(job) => {
            log::info!(event = "job.deleted", job = job.name.as_str(), id = job.id.as_str(); "job deleted");
            Resp {
                status: 204,
                content_type: "application/json",
                headers: Vec::new(),
                body: Vec::new(),
            }
        }
        Err(JobError::NotFound) => not_found(id),
        Err(e) => job_error(e),
    }
}

/// The value of query parameter `name`, percent-decoded (`+` is a space, as in forms).
pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| decode(k) == name)
        .map(|(_, v)| decode(v))
}

pub fn runs(api: &Api, id: &str, req: &Req) -> Resp {
    let Some(job) = api.engine.job(id) else {
        return not_found(id);
    };
    let limit = match query_param(&req.query, "limit") {
        None => 100,
        Some(s) => match s.trim().parse::<usize>() {
            Ok(n) if (1..=100_000).contains(&n) => n,
            _ => {
                return Resp::json(
                    400,
                    &json!({"error": format!("limit must be a whole number from 1 to 100000, got \"{s}\""), "field": "limit"}),
                )
            }
        },
    };
    let runs = api.engine.store.list_runs(&job.id, limit);
    Resp::json(200, &serde_json::to_value(runs).unwrap_or(Value::Null))
}

pub fn run(api: &Api, id: &str, run_id: &str) -> Resp {
    let Some(job) = api.engine.job(id) else {
        return not_found(id);
    };
    match crate::ids::is_run_id(run_id)
        .then(|| api.engine.store.load_run(&job.id, run_id))
        .flatten()
    {
        Some(r) => Resp::json(200, &serde_json::to_value(r).unwrap_or(Value::Null)),
        None => Resp::error(404, format!("job \"{id}\" has no run \"{run_id}\"")),
    }
}

pub fn trigger(api: &Api, id: &str, req: &Req) -> Resp {
    if !req.body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(Value::Object(m)) if m.is_empty() => {}
            _ => return Resp::error(400, "this endpoint takes no body (or {})"),
        }
    }
    match api.engine.fire(
        id,
        crate::triggers::context("manual"),
        Default::default(),
        true,
    ) {
        Ok(f) => {
            let status = match &f {
                Fired::Queued(_) => "queued",
                Fired::Coalesced(_) => "coalesced",
                Fired::Skipped(_) | Fired::OverBudget(..) => "skipped",
            };
            let mut body = json!({"run_id": f.run_id(), "status": status});
            if let Fired::OverBudget(_, secs) = &f {
                body["over_budget"] = json!({"retry_after_seconds": secs});
            }
            Resp::json(202, &body)
        }
        Err(FireError::NoSuchJob) => not_found(id),
        Err(FireError::Disabled) => Resp::error(409, "the job is disabled"),
        Err(FireError::ShuttingDown) => Resp::error(503, "the daemon is shutting down"),
        Err(FireError::Store(e)) => Resp::error(500, format!("could not record the run: {e}")),
        Err(FireError::Unavailable(e)) => Resp::error(503, e),
        Err(FireError::Rejected(status, e)) => Resp::error(status, e),
    }
}
