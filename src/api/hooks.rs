//! `POST /hooks/...`: the HTTP side of webhook intake. The head decides whether the body is
//! read at all ([`jobs_for`]); [`answer`] hands the delivery to
//! [`crate::triggers::webhook::Intake`] and turns its [`Outcome`] into a status and body
//! (README "webhook" and "Security model").

use std::sync::Arc;

use serde_json::json;

use super::{Api, Req, Resp};
use crate::job::Job;
use crate::triggers::webhook::{Delivery, Outcome};

/// The jobs listening on the request's hook path, or the answer when there are none (404)
/// or the method is wrong (405): decided from the head alone, before the body is read.
pub fn jobs_for(api: &Api, req: &Req) -> Result<Vec<Arc<Job>>, Resp> {
    api.hooks
        .jobs_for(&api.engine, &req.method, &req.path)
        .map_err(|o| to_resp(&req.path, o))
}

/// Authenticates and fires a delivery whose body has been read; the body moves into the
/// runs.
pub fn answer(api: &Api, jobs: Vec<Arc<Job>>, req: &mut Req) -> Resp {
    let delivery = Delivery {
        path: &req.path,
        headers: &req.headers,
        body: std::mem::take(&mut req.body),
    };
    let outcome = api.hooks.accept(&api.engine, jobs, delivery);
    to_resp(&req.path, outcome)
}

fn to_resp(path: &str, o: Outcome) -> Resp {
    match o {
        Outcome::NoJobs => Resp::error(
            404,
            format!("no enabled job has a webhook trigger on {path}"),
        ),
        Outcome::WrongMethod => {
            Resp::error(405, "webhooks are POST requests").with("Allow", "POST")
        }
        Outcome::Refused(r) => Resp::error(401, r.text()),
        Outcome::QueueFull => {
            Resp::error(429, "the work queue is full; retry later").with("Retry-After", "5")
        }
        Outcome::OverBudget { secs, run_ids } => {
            Resp::json(
                429,
                &json!({
                    "error": format!("over the run budget (limits.max_runs_per_hour/max_runs_per_day); retry after {secs} s"),
                    "run_ids": run_ids,
                }),
            )
            .with("Retry-After", secs.to_string())
        }
        Outcome::Duplicate(id) => {
            Resp::json(200, &json!({"run_ids": [], "duplicate_delivery": id}))
        }
        Outcome::Accepted(run_ids) => Resp::json(202, &json!({ "run_ids": run_ids })),
        // A 2xx, so the sender does not retry a delivery that will never match.
        Outcome::Challenge(c) => Resp::json(200, &json!({ "challenge": c })),
        Outcome::Filtered(why) => Resp::json(202, &json!({"run_ids": [], "filtered": why})),
        Outcome::ShuttingDown => {
            Resp::error(503, "the daemon is shutting down").with("Retry-After", "10")
        }
        Outcome::StoreFailed(e) => Resp::error(500, format!("could not record the run: {e}")),
        Outcome::Unavailable(e) => Resp::error(503, e),
        Outcome::Rejected(status, e) => Resp::error(status, e),
    }
}
