//! `POST /jobs/{id}/test` (README "Testing a job"): the rendering `job test` prints, from
//! [`crate::jobtest`]; with `"exec": true` the agent runs once and the answer carries how it
//! went (output bounded by the job's `max_output_kb`). Nothing is delivered or recorded, but
//! the agent counts like a manual run: it takes one of the `max_concurrent_runs` slots and
//! spends the job's run budget (429 with `Retry-After` when either is used up).

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
        // A test agent is an agent like a run's: it takes one of the daemon-wide
        // `max_concurrent_runs` slots (never waiting for one: the client is answered at once)
        // and spends the job's run budget as a manual run does.
        let slots = &api.engine.agent_slots;
        let Some(_slot) = slots.try_take() else {
            return Resp::error(
                429,
                format!(
                    "{} agents are running already (max_concurrent_runs); retry when one has ended",
                    slots.max()
                ),
            )
            .with("Retry-After", "5");
        };
        if let Err(over) = api.engine.spend_budget_for_test(&job, &prepared.run_id) {
            return Resp::json(
                429,
                &json!({"error": over.to_string(), "over_budget": {"retry_after_seconds": over.retry_after()}}),
            )
            .with("Retry-After", over.retry_after().to_string());
        }
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
