//! `webhook`: `POST url` with the JSON document `{event, job, run}`, the job's extra
//! headers, and, when `hmac_secret_env` is set, a signature a receiver can check:
//!
//! - `X-Bog-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>`
//! - `X-Bog-Timestamp: <Unix seconds of the first attempt>`
//! - `X-Bog-Delivery: <id>`: one id per delivery, the same on each retry of it, so a
//!   receiver can drop duplicates.
//!
//! `X-Bog-Delivery`, `X-Bog-Timestamp` and `X-Bog-Event` are sent on unsigned deliveries too.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::error::DeliveryError;
use super::http::{self, Post};
use super::Ctx;
use crate::job::Job;
use crate::run::RunRecord;

/// Posts the signed run document to `url`.
pub fn deliver(
    url: &str,
    hmac_secret_env: Option<&str>,
    headers: &BTreeMap<String, String>,
    job: &Job,
    run: &RunRecord,
    ctx: &Ctx,
) -> Result<(), DeliveryError> {
    let secret = match hmac_secret_env {
        Some(name) => Some(super::secret_env(name, "hmac_secret_env")?),
        None => None,
    };
    let body = serde_json::to_vec(&document(job, run)).map_err(|e| DeliveryError::Internal {
        what: "encode the webhook body",
        source: e.into(),
    })?;
    let mut h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    h.push(("X-Bog-Event".into(), "run.finished".into()));
    h.push(("X-Bog-Delivery".into(), delivery_id()?));
    h.push((
        "X-Bog-Timestamp".into(),
        chrono::Utc::now().timestamp().to_string(),
    ));
    if let Some(s) = &secret {
        h.push(("X-Bog-Signature-256".into(), signature(s.as_bytes(), &body)));
    }
    let post = Post {
        url,
        shown_as: format!("webhook POST {}", http::shown_url(url)),
        headers: h,
        body,
        secrets: secret.into_iter().collect(),
    };
    http::post(&post, ctx.retries, ctx.stop).map(|_| ())
}

/// The body: `{event: "run.finished", job: {id, name}, run: {...}}`.
pub fn document(job: &Job, run: &RunRecord) -> Value {
    json!({
        "event": "run.finished",
        "job": {"id": job.id, "name": job.name},
        "run": {
            "id": run.id,
            "status": run.status,
            "trigger": run.trigger,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "duration_ms": run.duration_ms,
            "exit_code": run.exit_code,
            "output": run.output,
            "error": run.error,
        },
    })
}

/// `sha256=` and the lower-case hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", crate::ids::hex(&mac.finalize().into_bytes()))
}

/// A new delivery id: `dlv_` and 24 random hex digits.
fn delivery_id() -> Result<String, DeliveryError> {
    let mut b = [0u8; 12];
    crate::ids::random_bytes(&mut b).map_err(|e| DeliveryError::Internal {
        what: "make a delivery id",
        source: e.into(),
    })?;
    Ok(format!("dlv_{}", crate::ids::hex(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc4231_test_case_2() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn delivery_ids_differ() {
        let a = delivery_id().unwrap();
        assert_eq!(a.len(), 28);
        assert_ne!(a, delivery_id().unwrap());
    }
}
