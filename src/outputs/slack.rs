//! `slack`: a message naming the job, status, trigger and duration, then the output as a
//! code block; posted with `chat.postMessage` and a bot token, or to an incoming webhook
//! whose URL (itself a secret) comes from the environment.
//!
//! Slack answers most API errors with HTTP 200 and `{"ok": false, "error": "..."}`: that is
//! a failure carrying Slack's error string. Rate limits (429 + `Retry-After`) are retried by
//! `http.rs`.

use serde_json::{json, Value};

use super::error::{DeliveryError, SecretProblem};
use super::http::{self, Post};
use super::Ctx;
use crate::job::Job;
use crate::run::RunRecord;

/// Most bytes of output quoted in a message; Slack advises keeping `text` under 4,000
/// characters and truncates it past 40,000.
const MAX_OUTPUT_BYTES: usize = 3000;

/// How the message reaches Slack.
pub enum Via<'a> {
    /// `POST {api_url}/chat.postMessage` with `Authorization: Bearer $token_env`.
    Bot {
        token_env: &'a str,
        api_url: &'a str,
    },
    /// `POST $url_env` (an incoming-webhook URL).
    IncomingWebhook { url_env: &'a str },
}

/// Posts the run to Slack.
pub fn deliver(
    via: &Via,
    channel: Option<&str>,
    job: &Job,
    run: &RunRecord,
    ctx: &Ctx,
) -> Result<(), DeliveryError> {
    let text = message(job, run);
    let mut body = json!({"text": text});
    if let Some(c) = channel {
        body["channel"] = c.into();
    }
    match via {
        Via::Bot { token_env, api_url } => {
            let token = super::secret_env(token_env, "token_env")?;
            body["unfurl_links"] = false.into();
            body["unfurl_media"] = false.into();
            let url = format!("{}/chat.postMessage", api_url.trim_end_matches('/'));
            let post = Post {
                url: &url,
                shown_as: format!("Slack chat.postMessage ({})", http::shown_url(&url)),
                headers: vec![("Authorization".into(), format!("Bearer {token}"))],
                body: body.to_string().into_bytes(),
                secrets: vec![token],
            };
            let reply = http::post(&post, ctx.retries, ctx.stop)?;
            check_ok(&reply, channel).map_err(|e| e.redact(&post.secrets))
        }
        Via::IncomingWebhook { url_env } => {
            let url = super::secret_env(url_env, "webhook_url_env")?;
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(DeliveryError::Secret {
                    var: url_env.to_string(),
                    field: "webhook_url_env",
                    problem: SecretProblem::NotHttpUrl,
                });
            }
            let post = Post {
                url: &url,
                shown_as: format!("Slack incoming webhook (URL from ${url_env})"),
                headers: Vec::new(),
                body: body.to_string().into_bytes(),
                secrets: vec![url.clone()],
            };
            http::post(&post, ctx.retries, ctx.stop).map(|_| ())
        }
    }
}

/// Checks a `chat.postMessage` reply: `ok: true`, else Slack's error string (the error
/// adds a hint for the common ones).
fn check_ok(body: &str, channel: Option<&str>) -> Result<(), DeliveryError> {
    let v: Value = serde_json::from_str(body).map_err(|_| DeliveryError::NotJson {
        endpoint: "Slack chat.postMessage".into(),
        excerpt: http::service_message(body).unwrap_or_default(),
    })?;
    if v.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(());
    }
    let code = v.get("error").and_then(Value::as_str).unwrap_or("unknown");
    Err(DeliveryError::Slack {
        channel: channel.map(str::to_string),
        code: code.to_string(),
    })
}

/// The message text (Slack mrkdwn): a summary line, the error if any, then the output in
/// a code block, cut to [`MAX_OUTPUT_BYTES`] with a note naming the run.
pub fn message(job: &Job, run: &RunRecord) -> String {
    let mut t = format!(
        "*{}* {} (trigger: {}, duration: {}, run `{}`)",
        escape(&job.name),
        super::status_words(run),
        escape(super::trigger_name(run)),
        super::human_duration(run.duration_ms),
        run.id
    );
    if let Some(e) = &run.error {
        t.push_str(&format!("\nerror: {}", escape(e)));
    }
    let out = run.output.trim_end();
    if out.is_empty() {
        t.push_str("\n_(no output)_");
        return t;
    }
    let (kept, note) = super::cut(out, MAX_OUTPUT_BYTES, &run.id);
    // A code block cannot be escaped out of; a zero-width space breaks a ``` run.
    let kept = escape(kept).replace("```", "`\u{200b}``");
    t.push_str(&format!("\n```\n{kept}\n```"));
    if let Some(n) = note {
        t.push_str(&format!("\n{n}"));
    }
    t
}

/// Escapes the three characters Slack's mrkdwn gives meaning to.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RunStatus;

    fn job() -> Job {
        crate::job::validate_job(
            &json!({"name": "nightly", "prompt": "p", "triggers": [{"type": "interval", "seconds": 9}]}),
            "job_1",
            "2026-01-01T00:00:00Z",
        )
        .unwrap()
    }

    #[test]
    fn message_has_summary_code_block_and_truncation_note() {
        let mut r = RunRecord::queued("run_9".into(), "job_1", "nightly", json!({"type": "cron"}));
        r.status = RunStatus::Failed;
        r.duration_ms = Some(12_345);
        r.error = Some("the agent exited with code 3".into());
        r.output = format!("a<b & ```x```\n{}", "y".repeat(5000));
        let m = message(&job(), &r);
        assert!(m.starts_with(
            "*nightly* failed (trigger: cron, duration: 12.3 s, run `run_9`)\nerror: the agent exited with code 3\n```\na&lt;b &amp; `\u{200b}``x`\u{200b}``\n"
        ), "{m}");
        assert!(
            m.ends_with(&format!(
                "\n```\n(truncated, {} bytes more; full output in run run_9)",
                r.output.len() - MAX_OUTPUT_BYTES
            )),
            "{m}"
        );
    }

    #[test]
    fn ok_false_is_an_error_with_slacks_string() {
        assert!(check_ok(r#"{"ok": true, "ts": "1"}"#, Some("#c")).is_ok());
        let e = check_ok(r#"{"ok": false, "error": "not_in_channel"}"#, Some("#c"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("error \"not_in_channel\"") && e.contains("invite"),
            "{e}"
        );
        assert!(check_ok("<html>", None)
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
    }
}
