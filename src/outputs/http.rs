//! One JSON `POST` with the rules every HTTP output follows (README "Outputs"): a connect timeout and
//! a total timeout on each request, retries through [`super::retry`] on connect errors,
//! timeouts, 429 (honouring `Retry-After`) and 5xx only, no redirects, and errors
//! ([`DeliveryError::Status`], [`DeliveryError::Transport`] with ureq's cause) that name the
//! status and the service's own error string but never a secret.
//!
//! Not here: what a 2xx reply means (Slack's `ok: false` is checked in `slack.rs`).

use std::io::Read;
use std::time::Duration;

use crossbeam_channel::Receiver;
use serde_json::Value;

use super::error::DeliveryError;
use super::limits::{CONNECT_TIMEOUT, REQUEST_TIMEOUT};
use super::retry::{self, Failure, Retry};

/// Most bytes of a reply body that are read (enough for any error document).
const MAX_REPLY_BYTES: u64 = 64 * 1024;
/// Longest service error string quoted in a dispatch error.
const MAX_QUOTE_CHARS: usize = 300;

/// A request to send.
pub struct Post<'a> {
    pub url: &'a str,
    /// How the endpoint is named in errors: a URL without query and credentials, or for a
    /// URL that is itself a secret, the variable that holds it.
    pub shown_as: String,
    /// Headers besides `Content-Type: application/json` and `User-Agent`; later ones win.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Values that must never appear in an error text (tokens, secret URLs).
    pub secrets: Vec<String>,
}

/// The `User-Agent` of every request (GitHub requires one).
pub fn user_agent() -> String {
    format!("bog-agents-daemon/{}", env!("CARGO_PKG_VERSION"))
}

/// Sends `p` with up to `retries` retries; `Ok` (with the reply body) only for a 2xx reply.
pub fn post(p: &Post, retries: u32, stop: &Receiver<()>) -> Result<String, DeliveryError> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT)
        .redirects(0)
        .user_agent(&user_agent())
        .build();
    retry::run(retries, stop, |left| attempt(&agent, p, left)).map_err(|e| e.redact(&p.secrets))
}

fn attempt(agent: &ureq::Agent, p: &Post, left: Duration) -> Result<String, Failure> {
    let mut req = agent.post(p.url).timeout(REQUEST_TIMEOUT.min(left));
    for (k, v) in merged_headers(&p.headers) {
        req = req.set(k, v);
    }
    let who = &p.shown_as;
    match req.send_bytes(&p.body) {
        Ok(resp) => Ok(read_body(resp)),
        Err(ureq::Error::Status(code, resp)) => Err(status_failure(who, code, resp)),
        Err(ureq::Error::Transport(t)) => Err(transport_failure(who, t)),
    }
}

/// `Content-Type: application/json` and then `extra`, each name once (compared without
/// case; the last one wins).
fn merged_headers(extra: &[(String, String)]) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = vec![("Content-Type", "application/json; charset=utf-8")];
    for (k, v) in extra {
        out.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        out.push((k, v));
    }
    out
}

fn read_body(resp: ureq::Response) -> String {
    let mut buf = Vec::new();
    let _ = resp
        .into_reader()
        .take(MAX_REPLY_BYTES)
        .read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// A non-2xx reply: 429 and 5xx are retried, everything else is final.
fn status_failure(who: &str, code: u16, resp: ureq::Response) -> Failure {
    let retry_after = resp
        .header("Retry-After")
        .and_then(retry::parse_retry_after);
    let location = match code {
        300..=399 => resp.header("Location").map(shown_url),
        _ => None,
    };
    let reason = resp.status_text().to_string();
    let body = read_body(resp);
    let retry = match (code, retry_after) {
        (429 | 500..=599, Some(d)) => Retry::After(d),
        (429 | 500..=599, None) => Retry::Backoff,
        _ => Retry::No,
    };
    let error = DeliveryError::Status {
        endpoint: who.to_string(),
        code,
        reason,
        service: service_message(&body),
        location,
        hint: None,
    };
    Failure {
        error: Box::new(error),
        retry,
    }
}

/// A connection-level error: connect errors, DNS and I/O (timeouts) are retried.
fn transport_failure(who: &str, t: ureq::Transport) -> Failure {
    use ureq::ErrorKind as K;
    let kind = t.kind();
    let what = match kind {
        K::Dns => "cannot resolve the host name",
        K::ConnectionFailed => "cannot connect",
        K::Io => "network error",
        K::ProxyConnect => "cannot connect to the proxy",
        K::InvalidUrl => "invalid URL",
        K::UnknownScheme => "unsupported URL scheme",
        K::BadStatus | K::BadHeader => "the server's reply is not valid HTTP",
        K::TooManyRedirects => "too many redirects",
        _ => "request failed",
    };
    let error = DeliveryError::transport(who, what, t);
    match kind {
        K::Dns | K::ConnectionFailed | K::Io | K::ProxyConnect => Failure::transient(error),
        _ => Failure::permanent(error),
    }
}

/// The service's own error text in a reply body: Slack's `error`, GitHub's `message` (with
/// its `errors[].message` details), or the first line of a plain-text body.
pub fn service_message(body: &str) -> Option<String> {
    let body = body.trim();
    if body.is_empty() {
        return None;
    }
    let text = match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(m)) => {
            let main = ["error", "message"]
                .iter()
                .find_map(|k| m.get(*k).and_then(Value::as_str))
                .map(str::to_string);
            let details: Vec<&str> = m
                .get("errors")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.get("message").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            match (main, details.is_empty()) {
                (Some(m), true) => m,
                (Some(m), false) => format!("{m} ({})", details.join("; ")),
                (None, _) => body.to_string(),
            }
        }
        _ => body.lines().next().unwrap_or("").to_string(),
    };
    let mut t: String = text.chars().take(MAX_QUOTE_CHARS).collect();
    if text.chars().count() > MAX_QUOTE_CHARS {
        t.push('…');
    }
    Some(t)
}

/// A URL as shown in errors and logs: without `user:password@` and without the query,
/// where tokens often hide.
pub fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let tail = if rest[end..].starts_with('?') {
        "?…"
    } else {
        ""
    };
    let rest = &rest[..end];
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{host}{path}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_messages_of_slack_github_and_text() {
        assert_eq!(
            service_message(r#"{"ok": false, "error": "channel_not_found"}"#).unwrap(),
            "channel_not_found"
        );
        assert_eq!(
            service_message(
                r#"{"message": "Validation Failed", "errors": [{"message": "body is too long"}]}"#
            )
            .unwrap(),
            "Validation Failed (body is too long)"
        );
        assert_eq!(service_message("no_service\nmore").unwrap(), "no_service");
        assert_eq!(service_message("  "), None);
        assert_eq!(
            service_message(&"x".repeat(1000)).unwrap().chars().count(),
            MAX_QUOTE_CHARS + 1
        );
    }

    #[test]
    fn shown_urls_hide_credentials_and_queries() {
        assert_eq!(
            shown_url("https://u:p@example.com:8443/a/b?token=s#f"),
            "https://example.com:8443/a/b?…"
        );
        assert_eq!(shown_url("http://h/x"), "http://h/x");
        assert_eq!(shown_url("http://h"), "http://h");
    }

    #[test]
    fn later_headers_replace_earlier_ones_whatever_their_case() {
        let extra = vec![
            ("content-type".to_string(), "text/plain".to_string()),
            ("X-A".to_string(), "1".to_string()),
            ("x-a".to_string(), "2".to_string()),
        ];
        assert_eq!(
            merged_headers(&extra),
            vec![("content-type", "text/plain"), ("x-a", "2")]
        );
    }
}
