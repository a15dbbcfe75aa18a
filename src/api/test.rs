//! `POST /jobs/{id}/test` (README "Testing a job"): the rendering `job test` prints, from
//! [`crate::jobtest`]; with `"exec": true` the agent runs once and the answer carries how it
//! went (output bounded by the job's `max_output_kb`). Nothing is delivered or recorded.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

use super::{Api, Req, Resp};
use crate::jobtest;

pub fn test(api: &Api, id: &str, req: &Req) -> Resp {
    let Some(job) = api.engine.job(id) else {
        return Resp::error(404, format!("no job with id or name \"{id}\""));
    };
    let r: jobtest::Request = if req.body.iter().all(u8::is_ascii_whitespace) {
        jobtest::Request::default()
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(r) => r,
            Err(e) => {
                return Resp::error(
                    400,
                    format!("request body is not a test request: {e} (fields: trigger, body, payload, event, headers, from_run, exec)"),
                )
            }
        }
    };
    let firing = match jobtest::firing(&job, &r, &api.engine.store) {
        Ok(f) => f,
        Err(e) => {
            let status = if e.not_found { 404 } else { 400 };
            return Resp::json(status, &json!({"error": e.message, "field": e.field}));
        }
    };
    let setup = crate::worker::Setup::of(&api.engine);
    let containment = Some(crate::contain::current().summary());
    let (mut report, prepared) = jobtest::render(&setup, &job, &firing, containment);
    if r.exec {
        if api.engine.is_shutting_down() {
            return Resp::error(503, "the daemon is shutting down");
        }
        // Test agents run beside the pool, not in it: at most as many at once as it has
        // workers, so a client cannot start agents without bound.
        let Some(_slot) = ExecSlot::take(api.engine.settings.workers) else {
            return Resp::error(
                429,
                format!(
                    "{} job test agents are running already (as many as the daemon has workers); retry when one has ended",
                    api.engine.settings.workers
                ),
            )
            .with("Retry-After", "5");
        };
        let rec = jobtest::exec(
            &api.engine,
            &job,
            prepared,
            Value::Object(firing.trigger.clone()),
        );
        report["exec"] = serde_json::to_value(rec).unwrap_or(Value::Null);
    }
    Resp::json(200, &report)
}

/// Test agents running now.
static EXECS: AtomicUsize = AtomicUsize::new(0);

/// One of the test agents allowed at once, given back when dropped.
struct ExecSlot;

impl ExecSlot {
    fn take(max: usize) -> Option<ExecSlot> {
        EXECS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ExecSlot)
    }
}

impl Drop for ExecSlot {
    fn drop(&mut self) {
        EXECS.fetch_sub(1, Ordering::AcqRel);
    }
}
