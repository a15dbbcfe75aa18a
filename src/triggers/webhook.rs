//! Inbound webhooks: `POST /hooks/...` fires every enabled job whose webhook trigger
//! declares that exact path and whose secret authenticates the request.
//!
//! Authentication, checked on the HTTP thread before anything is queued, is the trigger's
//! `scheme` ([`super::scheme::verify`]: GitHub's signature or GitLab's token by default;
//! Standard Webhooks, Slack, Stripe). Only then its filter ([`super::filter::check`]) may
//! read the body; a Slack `url_verification` is answered once its signature checks.
//!
//! The secret is read from the environment variable named by `secret_env` at request time;
//! unset or empty refuses every request (fail closed) and is logged once per job; the 401
//! itself never names the variable. Refusals are logged at most once a minute, with a count.
//!
//! The hook's jobs are found from the request head alone ([`Intake::jobs_for`]): a path no
//! job listens on is answered 404 before a byte of its body is read. The body is kept once
//! for all the runs a delivery fires ([`crate::payload::Body`]), and parsed when each starts.
//! A delivery id seen within 24 hours (the scheme's: `X-GitHub-Delivery`, GitLab's
//! `Idempotency-Key`, `webhook-id`, Slack's `event_id`, Stripe's event `id`;
//! [`super::scheme::delivery_id`]) is answered without firing again (kept in memory: a
//! restart forgets). A full work queue answers 429 with `Retry-After`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::filter::Filtered;
pub use super::scheme::Reject;
use super::scheme::{self, Scheme};
use crate::engine::{lock, Engine, Extra, FireError};
use crate::job::{Job, Trigger};
use crate::logging::{held_back, Throttle};
use crate::metrics::Metrics;

/// How long a delivery id is remembered.
const DEDUPE_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Most delivery ids remembered; the oldest are dropped past this.
const DEDUPE_MAX: usize = 100_000;
/// Headers copied into the run's trigger context.
const CONTEXT_HEADERS: &[&str] = &[
    "x-github-event",
    "x-github-delivery",
    "x-gitlab-event",
    "x-gitlab-event-uuid",
    "idempotency-key",
    "webhook-id",
    "content-type",
    "user-agent",
];

/// What intake looks at in a webhook request: its path, headers (lower-case names) and body.
/// The HTTP side (`api/hooks.rs`) builds it; nothing here knows HTTP types.
pub struct Delivery<'a> {
    pub path: &'a str,
    pub headers: &'a [(String, String)],
    pub body: Vec<u8>,
}

impl Delivery<'_> {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What became of a webhook request; `api/hooks.rs` turns it into an HTTP answer.
#[derive(Debug)]
pub enum Outcome {
    /// No enabled job listens on the path (404).
    NoJobs,
    /// Not a POST (405).
    WrongMethod,
    /// Not authenticated (401).
    Refused(Reject),
    /// The work queue is full (429).
    QueueFull,
    /// Every job it fired is over its run budget (429, `Retry-After`: the seconds until the
    /// soonest frees); the skipped records' ids.
    OverBudget { secs: u64, run_ids: Vec<String> },
    /// This delivery id fired already within the dedupe window (200, nothing fired).
    Duplicate(String),
    /// The runs it fired (202).
    Accepted(Vec<String>),
    /// Slack's `url_verification` handshake, authenticated: the challenge to echo (200).
    Challenge(String),
    /// Authenticated, but no job's filter let it through (202, nothing fired): which rule did
    /// not match.
    Filtered(String),
    /// The daemon is stopping (503).
    ShuttingDown,
    /// A run record could not be written (500).
    StoreFailed(std::io::Error),
    /// Cluster mode, and etcd refused the firing for good (413 or 400, etcd's message).
    Rejected(u16, String),
    /// Cluster mode, and etcd cannot be reached (503).
    Unavailable(String),
}

/// The run record's `trigger` object for a delivery: its path, event, delivery id (as the
/// scheme reads it, [`scheme::delivery_id`]), the scheme that verified it, the headers in [`CONTEXT_HEADERS`] (never one that authenticates) and the body's size.
pub fn trigger_context(
    req: &Delivery<'_>,
    delivery_id: Option<&str>,
    scheme: Option<Scheme>,
) -> Map<String, Value> {
    let mut trigger = super::context("webhook");
    trigger.insert("path".into(), req.path.into());
    let mut headers = Map::new();
    for h in CONTEXT_HEADERS {
        if let Some(v) = req.header(h) {
            headers.insert((*h).into(), v.into());
        }
    }
    if let Some(e) = req.header("x-github-event") {
        trigger.insert("event".into(), e.into());
    }
    if let Some(d) = delivery_id {
        trigger.insert("delivery".into(), d.into());
    }
    if let Some(sc) = scheme {
        trigger.insert("scheme".into(), sc.name().into());
    }
    trigger.insert("headers".into(), Value::Object(headers));
    trigger.insert("body_bytes".into(), req.body.len().into());
    trigger
}

/// Webhook intake state shared by the HTTP threads.
#[derive(Default)]
pub struct Intake {
    seen: Mutex<HashMap<String, Instant>>,
    warned_unset: Mutex<HashSet<String>>,
    /// Refusals are logged at most once a minute.
    refused_log: Throttle,
}

impl Intake {
    /// The enabled jobs listening on `path`, decided from the request head alone: 404 when
    /// none does, 405 for another method than POST. Nothing of the body is needed.
    pub fn jobs_for(
        &self,
        engine: &Engine,
        method: &str,
        path: &str,
    ) -> Result<Vec<Arc<Job>>, Outcome> {
        Metrics::inc(&engine.metrics.webhooks_received_total);
        let jobs: Vec<_> = engine
            .hook_jobs(path)
            .into_iter()
            .filter(|j| j.enabled)
            .collect();
        if jobs.is_empty() {
            Metrics::inc(&engine.metrics.webhooks_rejected_total);
            return Err(Outcome::NoJobs);
        }
        if method != "POST" {
            return Err(Outcome::WrongMethod);
        }
        Ok(jobs)
    }

    /// Authenticates a delivery for `jobs` (from [`Intake::jobs_for`]) and fires those it
    /// authenticates for. An accepted body is moved into the runs, never copied.
    pub fn accept(&self, engine: &Engine, jobs: Vec<Arc<Job>>, mut req: Delivery<'_>) -> Outcome {
        let now = chrono::Utc::now().timestamp();
        let mut accepted = Vec::new();
        let mut reject = None;
        // Jobs authenticated but filtered out, with the rule that did not match.
        let mut filtered: Vec<(&str, Filtered)> = Vec::new();
        // The body as JSON, parsed once, after a signature checked out, and only when a
        // filter, a Slack handshake or a delivery id needs it (`None` inside: not JSON).
        // Dropped after intake: a run parses it again when it starts, so queued runs never
        // hold it (`payload.rs`).
        let mut payload: Option<Option<Value>> = None;
        // The scheme of the first trigger that let the delivery through: it names the id.
        let mut used: Option<Option<Scheme>> = None;
        for job in &jobs {
            let mut job_filtered = None;
            for t in &job.triggers {
                let Trigger::Webhook {
                    path,
                    secret_env,
                    max_age_seconds,
                    scheme,
                    filter,
                } = t
                else {
                    continue;
                };
                if path != req.path {
                    continue;
                }
                let secret = std::env::var(secret_env).unwrap_or_default();
                let r = if secret.is_empty() {
                    if lock(&self.warned_unset).insert(format!("{}:{secret_env}", job.id)) {
                        log::error!(event = "webhook.no_secret", job = job.name.as_str(), var = secret_env.as_str();
                            "webhook secret variable {secret_env} is unset or empty in the daemon's environment; requests to {path} are refused");
                    }
                    Err(Reject::NoSecret(secret_env.clone()))
                } else {
                    scheme::verify(
                        *scheme,
                        secret.as_bytes(),
                        req.headers,
                        &req.body,
                        *max_age_seconds,
                        now,
                    )
                };
                let r = match r {
                    Err(Reject::BadSecret(_)) => {
                        if lock(&self.warned_unset).insert(format!("{}:{secret_env}:bad", job.id)) {
                            log::error!(event = "webhook.bad_secret", job = job.name.as_str(), var = secret_env.as_str();
                                "webhook secret variable {secret_env} does not hold a Standard Webhooks secret (whsec_ and base64); requests to {path} are refused");
                        }
                        Err(Reject::BadSecret(secret_env.clone()))
                    }
                    r => r,
                };
                match r {
                    // The signature is always checked first: a filter never sees an
                    // unauthenticated body.
                    Ok(()) => {
                        let slack = *scheme == Some(Scheme::Slack);
                        if slack || !filter.is_empty() || scheme::id_in_payload(*scheme) {
                            payload.get_or_insert_with(|| serde_json::from_slice(&req.body).ok());
                        }
                        let p = payload.as_ref().and_then(Option::as_ref);
                        if slack {
                            if let Some(c) = scheme::slack_challenge(p) {
                                log::info!(event = "webhook.slack_challenge", job = job.name.as_str(), path = req.path; "answered Slack's url_verification");
                                return Outcome::Challenge(c);
                            }
                        }
                        if let Err(why) = super::filter::check(filter, *scheme, req.headers, p) {
                            job_filtered = Some(why);
                            continue;
                        }
                        job_filtered = None;
                        used.get_or_insert(*scheme);
                        accepted.push(job.clone());
                        break;
                    }
                    Err(e) => reject = Some(e),
                }
            }
            if let Some(why) = job_filtered {
                filtered.push((job.name.as_str(), why));
            }
        }
        for (name, why) in &filtered {
            engine.metrics.webhooks_filtered_by_job.inc(name);
            log::debug!(event = "webhook.filtered", job = *name, path = req.path; "delivery filtered out: {why}");
        }
        if accepted.is_empty() && !filtered.is_empty() {
            Metrics::inc(&engine.metrics.webhooks_filtered_total);
            let reason = match &filtered[..] {
                [(_, why)] => why.to_string(),
                many => many
                    .iter()
                    .map(|(name, why)| format!("{name}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            };
            return Outcome::Filtered(reason);
        }
        if accepted.is_empty() {
            Metrics::inc(&engine.metrics.webhooks_rejected_total);
            let e = reject.unwrap_or(Reject::Missing("a signature"));
            if let Some(n) = self.refused_log.allow() {
                log::warn!(event = "webhook.rejected", path = req.path; "{}{}", e.text(), held_back(n));
            }
            return Outcome::Refused(e);
        }
        if engine.queue_full() {
            Metrics::inc(&engine.metrics.webhooks_rejected_total);
            return Outcome::QueueFull;
        }
        // Remembered only once it is sure to be queued: a delivery refused with 429 or 5xx
        // must fire when the sender retries it. Ids are kept per hook path and scheme: one
        // event a sender delivers to two hooks runs on both, and whoever holds one hook's
        // secret cannot use up another hook's delivery ids.
        let scheme_used = used.flatten();
        let delivery_id = scheme::delivery_id(
            scheme_used,
            req.headers,
            payload.as_ref().and_then(Option::as_ref),
        );
        drop(payload);
        let key = delivery_id
            .as_ref()
            .map(|id| dedupe_key(req.path, scheme_used.map_or("github", Scheme::name), id));
        let delivery = key.as_deref();
        if let (Some(k), Some(id)) = (delivery, &delivery_id) {
            // Cluster mode: the key is claimed in etcd, whichever node the delivery reached.
            let first = match engine.cluster() {
                Some(c) => match c.first_delivery(k) {
                    Ok(first) => first,
                    Err(e) => {
                        return Outcome::Unavailable(format!("{} ({e})", c.unavailable_text()))
                    }
                },
                None => self.first_delivery(k),
            };
            if !first {
                Metrics::inc(&engine.metrics.webhooks_duplicate_total);
                return Outcome::Duplicate(id.clone());
            }
        }

        let trigger = trigger_context(&req, delivery_id.as_deref(), scheme_used);
        // One copy of the body for every run of this delivery; parsed when a run starts.
        let body = Arc::new(crate::payload::Body::new(
            std::mem::take(&mut req.body),
            &engine.store.dir().join("spool"),
        ));

        let mut run_ids = Vec::new();
        // When every run it fired was refused by a run budget: the soonest one frees.
        let mut over_budget: Option<u64> = None;
        let mut admitted = false;
        for job in accepted {
            let extra = Extra {
                vars: Map::new(),
                body: Some(body.clone()),
            };
            match engine.fire(&job.id, trigger.clone(), extra, false) {
                Ok(crate::engine::Fired::OverBudget(id, wait)) => {
                    run_ids.push(id);
                    over_budget = Some(over_budget.map_or(wait, |w| w.min(wait)));
                }
                Ok(f) => {
                    admitted = true;
                    run_ids.push(f.run_id().to_string());
                }
                Err(FireError::ShuttingDown) => {
                    self.forget_delivery(engine, delivery);
                    return Outcome::ShuttingDown;
                }
                Err(FireError::Store(e)) => {
                    self.forget_delivery(engine, delivery);
                    return Outcome::StoreFailed(e);
                }
                Err(FireError::Unavailable(e)) => {
                    self.forget_delivery(engine, delivery);
                    return Outcome::Unavailable(e);
                }
                Err(FireError::Rejected(status, e)) => {
                    self.forget_delivery(engine, delivery);
                    return Outcome::Rejected(status, e);
                }
                Err(FireError::NoSuchJob) | Err(FireError::Disabled) => {}
            }
        }
        if let (Some(wait), false) = (over_budget, admitted) {
            // The sender may retry once the budget frees: that delivery must fire then.
            self.forget_delivery(engine, delivery);
            Metrics::inc(&engine.metrics.webhooks_rejected_total);
            return Outcome::OverBudget {
                secs: wait,
                run_ids,
            };
        }
        log::info!(event = "webhook.accepted", path = req.path, runs = run_ids.len(); "webhook accepted");
        Outcome::Accepted(run_ids)
    }

    /// Forgets a delivery id that was recorded but could not be queued.
    fn forget_delivery(&self, engine: &Engine, id: Option<&str>) {
        if let (Some(c), Some(id)) = (engine.cluster(), id) {
            c.forget_delivery(id);
        } else if let Some(id) = id {
            lock(&self.seen).remove(id);
        }
    }

    /// Records a delivery id; false if it was seen within the window.
    fn first_delivery(&self, id: &str) -> bool {
        let mut seen = lock(&self.seen);
        let now = Instant::now();
        if let Some(t) = seen.get(id) {
            if now.duration_since(*t) < DEDUPE_WINDOW {
                return false;
            }
        }
        if seen.len() >= DEDUPE_MAX {
            seen.retain(|_, t| now.duration_since(*t) < DEDUPE_WINDOW);
            if seen.len() >= DEDUPE_MAX {
                if let Some(oldest) = seen.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                    seen.remove(&oldest);
                }
            }
        }
        seen.insert(id.to_string(), now);
        true
    }
}

/// The dedupe key of a delivery: hook path, scheme and the sender's delivery id. The path
/// comes first and the id last (a path has no NUL), so no two triples share a key.
fn dedupe_key(path: &str, scheme: &str, id: &str) -> String {
    format!("{path}\0{scheme}:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_keys_differ_per_hook_path() {
        let i = Intake::default();
        assert!(i.first_delivery(&dedupe_key("/hooks/a", "stripe", "evt_1")));
        assert!(i.first_delivery(&dedupe_key("/hooks/b", "stripe", "evt_1")));
        assert!(!i.first_delivery(&dedupe_key("/hooks/a", "stripe", "evt_1")));
        assert_ne!(
            dedupe_key("/a", "github", "x"),
            dedupe_key("/a", "stripe", "x")
        );
    }

    #[test]
    fn deliveries_are_deduplicated() {
        let i = Intake::default();
        assert!(i.first_delivery("a"));
        assert!(!i.first_delivery("a"));
        assert!(i.first_delivery("b"));
    }
}
