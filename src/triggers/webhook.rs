//! Inbound webhooks: `POST /hooks/...` fires every enabled job whose webhook trigger
//! declares that exact path and whose secret authenticates the request.
//!
//! Authentication, checked on the HTTP thread before anything is queued:
//! - `X-Hub-Signature-256: sha256=<hex>` (GitHub): HMAC-SHA256 of the raw body with the
//!   secret, compared on the decoded bytes in constant time (hex case does not matter);
//! - `X-Gitlab-Token: <secret>` (GitLab), compared in constant time;
//! - with `max_age_seconds`, `X-Bog-Timestamp: <unix seconds>` must be within the window
//!   and the HMAC covers `"<timestamp>.<body>"` (GitLab tokens are not accepted then).
//!
//! The secret is read from the environment variable named by `secret_env` at request time;
//! unset or empty refuses every request (fail closed) and is logged once per job; the 401
//! itself never names the variable. Refusals are logged at most once a minute, with a count.
//!
//! The hook's jobs are found from the request head alone ([`Intake::jobs_for`]): a path no
//! job listens on is answered 404 before a byte of its body is read. The body is kept once
//! for all the runs a delivery fires ([`crate::payload::Body`]), and parsed when each starts.
//! A repeated `X-GitHub-Delivery` within 24 hours is answered without firing again (kept in
//! memory: a restart forgets). A full work queue answers 429 with `Retry-After`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::engine::{lock, Engine, Extra, FireError};
use crate::ids::constant_time_eq;
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
    "content-type",
    "user-agent",
];

/// Why a request was refused (all answered 401).
#[derive(Debug, PartialEq, Eq)]
pub enum Reject {
    NoSecret(String),
    Missing,
    Malformed,
    BadSignature,
    BadTimestamp,
}

impl Reject {
    /// What the sender is told (never the name of a missing secret variable).
    pub fn text(&self) -> String {
        match self {
            Reject::NoSecret(_) => "this hook cannot authenticate requests yet (its secret is not configured; see the daemon's log)".into(),
            Reject::Missing => "missing signature: send X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body> or X-Gitlab-Token".into(),
            Reject::Malformed => "malformed X-Hub-Signature-256: expected sha256=<64 hex digits>".into(),
            Reject::BadSignature => "signature does not match".into(),
            Reject::BadTimestamp => "X-Bog-Timestamp is missing, not Unix seconds, or outside the allowed window".into(),
        }
    }
}

/// Decodes hex (either case) into bytes.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

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
    /// This delivery id fired already within the dedupe window (200, nothing fired).
    Duplicate(String),
    /// The runs it fired (202).
    Accepted(Vec<String>),
    /// The daemon is stopping (503).
    ShuttingDown,
    /// A run record could not be written (500).
    StoreFailed(std::io::Error),
    /// Cluster mode, and etcd cannot be reached (503).
    Unavailable(String),
}

/// Checks one request against one secret. `now` is Unix seconds.
pub fn verify(
    secret: &[u8],
    req: &Delivery<'_>,
    max_age_seconds: Option<u64>,
    now: i64,
) -> Result<(), Reject> {
    let sig = req.header("x-hub-signature-256");
    let gitlab = req.header("x-gitlab-token");
    // What precedes the body in the signed string (nothing, or "<timestamp>."); the body
    // itself is fed to the MAC in place, never copied.
    let prefix: String = match max_age_seconds {
        None => String::new(),
        Some(max) => {
            let ts = req
                .header("x-bog-timestamp")
                .and_then(|t| t.trim().parse::<i64>().ok())
                .ok_or(Reject::BadTimestamp)?;
            if (now - ts).unsigned_abs() > max {
                return Err(Reject::BadTimestamp);
            }
            format!("{ts}.")
        }
    };
    if let Some(sig) = sig {
        let hex = sig
            .trim()
            .strip_prefix("sha256=")
            .ok_or(Reject::Malformed)?;
        let want = unhex(hex)
            .filter(|b| b.len() == 32)
            .ok_or(Reject::Malformed)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| Reject::BadSignature)?;
        mac.update(prefix.as_bytes());
        mac.update(&req.body);
        return mac.verify_slice(&want).map_err(|_| Reject::BadSignature);
    }
    match (gitlab, max_age_seconds) {
        (Some(tok), None) if constant_time_eq(tok.as_bytes(), secret) => Ok(()),
        (Some(_), None) => Err(Reject::BadSignature),
        _ => Err(Reject::Missing),
    }
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
        for job in &jobs {
            for t in &job.triggers {
                let Trigger::Webhook {
                    path,
                    secret_env,
                    max_age_seconds,
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
                    verify(secret.as_bytes(), &req, *max_age_seconds, now)
                };
                match r {
                    Ok(()) => {
                        accepted.push(job.clone());
                        break;
                    }
                    Err(e) => reject = Some(e),
                }
            }
        }
        if accepted.is_empty() {
            Metrics::inc(&engine.metrics.webhooks_rejected_total);
            let e = reject.unwrap_or(Reject::Missing);
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
        // must fire when the sender retries it.
        let delivery = req
            .header("x-github-delivery")
            .filter(|d| !d.is_empty())
            .map(str::to_string);
        let delivery = delivery.as_deref();
        if let Some(id) = delivery {
            // Cluster mode: the id is claimed in etcd, whichever node the delivery reached.
            let first = match engine.cluster() {
                Some(c) => match c.first_delivery(id) {
                    Ok(first) => first,
                    Err(e) => {
                        return Outcome::Unavailable(format!("{} ({e})", c.unavailable_text()))
                    }
                },
                None => self.first_delivery(id),
            };
            if !first {
                Metrics::inc(&engine.metrics.webhooks_duplicate_total);
                return Outcome::Duplicate(id.to_string());
            }
        }

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
        if let Some(d) = req.header("x-github-delivery") {
            trigger.insert("delivery".into(), d.into());
        }
        trigger.insert("headers".into(), Value::Object(headers));
        trigger.insert("body_bytes".into(), req.body.len().into());
        // One copy of the body for every run of this delivery; parsed when a run starts.
        let body = Arc::new(crate::payload::Body::new(
            std::mem::take(&mut req.body),
            &engine.store.dir().join("spool"),
        ));

        let mut run_ids = Vec::new();
        for job in accepted {
            let extra = Extra {
                vars: Map::new(),
                body: Some(body.clone()),
            };
            match engine.fire(&job.id, trigger.clone(), extra, false) {
                Ok(f) => run_ids.push(f.run_id().to_string()),
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
                Err(FireError::NoSuchJob) | Err(FireError::Disabled) => {}
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: &[u8], headers: &[(&str, &str)]) -> Delivery<'static> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        Delivery {
            path: "/hooks/x",
            headers: Box::leak(headers.into_boxed_slice()),
            body: body.to_vec(),
        }
    }

    fn sign(secret: &[u8], data: &[u8]) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        m.update(data);
        crate::ids::hex(&m.finalize().into_bytes())
    }

    #[test]
    fn github_signatures() {
        let s = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        // GitHub's documented example.
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(format!("sha256={}", sign(s, body)), good);
        assert_eq!(
            verify(s, &req(body, &[("X-Hub-Signature-256", good)]), None, 0),
            Ok(())
        );
        let upper = format!("sha256={}", &good[7..].to_ascii_uppercase());
        assert_eq!(
            verify(s, &req(body, &[("X-Hub-Signature-256", &upper)]), None, 0),
            Ok(())
        );
        let mut bad = good.to_string();
        bad.replace_range(70.., "8");
        assert_eq!(
            verify(s, &req(body, &[("X-Hub-Signature-256", &bad)]), None, 0),
            Err(Reject::BadSignature)
        );
        assert_eq!(
            verify(
                s,
                &req(body, &[("X-Hub-Signature-256", &good[..40])]),
                None,
                0
            ),
            Err(Reject::Malformed)
        );
        assert_eq!(
            verify(
                s,
                &req(body, &[("X-Hub-Signature-256", "sha1=abc")]),
                None,
                0
            ),
            Err(Reject::Malformed)
        );
        assert_eq!(
            verify(
                s,
                &req(b"Hello, World?", &[("X-Hub-Signature-256", good)]),
                None,
                0
            ),
            Err(Reject::BadSignature)
        );
        assert_eq!(
            verify(
                b"other",
                &req(body, &[("X-Hub-Signature-256", good)]),
                None,
                0
            ),
            Err(Reject::BadSignature)
        );
        assert_eq!(verify(s, &req(body, &[]), None, 0), Err(Reject::Missing));
    }

    #[test]
    fn gitlab_tokens_and_timestamps() {
        assert_eq!(
            verify(b"tok", &req(b"{}", &[("X-Gitlab-Token", "tok")]), None, 0),
            Ok(())
        );
        assert_eq!(
            verify(b"tok", &req(b"{}", &[("X-Gitlab-Token", "toK")]), None, 0),
            Err(Reject::BadSignature)
        );
        let sig = format!("sha256={}", sign(b"k", b"1000.{}"));
        let h = [
            ("X-Hub-Signature-256", sig.as_str()),
            ("X-Bog-Timestamp", "1000"),
        ];
        assert_eq!(verify(b"k", &req(b"{}", &h), Some(60), 1030), Ok(()));
        assert_eq!(
            verify(b"k", &req(b"{}", &h), Some(60), 1061),
            Err(Reject::BadTimestamp)
        );
        assert_eq!(
            verify(b"k", &req(b"{}", &h[..1]), Some(60), 1000),
            Err(Reject::BadTimestamp)
        );
        assert_eq!(
            verify(
                b"tok",
                &req(
                    b"{}",
                    &[("X-Gitlab-Token", "tok"), ("X-Bog-Timestamp", "5")]
                ),
                Some(60),
                5
            ),
            Err(Reject::Missing)
        );
    }

    #[test]
    fn deliveries_are_deduplicated() {
        let i = Intake::default();
        assert!(i.first_delivery("a"));
        assert!(!i.first_delivery("a"));
        assert!(i.first_delivery("b"));
    }

    #[test]
    fn garbage_never_panics() {
        for h in [
            "sha256=",
            "sha256=zz",
            "sha256=é",
            "sha256=0",
            "",
            "sha256=💥💥",
        ] {
            let _ = verify(b"k", &req(b"x", &[("X-Hub-Signature-256", h)]), None, 0);
            let _ = verify(
                b"k",
                &req(b"x", &[("X-Hub-Signature-256", h), ("X-Bog-Timestamp", h)]),
                Some(1),
                0,
            );
        }
    }
}
