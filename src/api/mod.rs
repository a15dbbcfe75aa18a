//! The REST API (README "REST API") on tiny_http (patched in `vendor/tiny_http`): each open
//! connection has a thread of its own, bounded in number, with deadlines on the request head
//! and body; requests are answered through [`router::handle`], a pure function from [`Req`]
//! to [`Resp`] that never panics on input (and if it did, the request gets a 500 and the
//! thread carries on). README "Security model" says what a client can and cannot do.

mod hooks;
mod jobs;
mod output;
pub mod router;
mod schedule;
mod system;
mod test;
pub mod web;

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::engine::Engine;

/// An HTTP request reduced to what the handlers need.
#[derive(Debug, Clone, Default)]
pub struct Req {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: String,
    /// Headers with lower-case names, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response: status, content type, extra headers, body.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// A JSON response.
    pub fn json(status: u16, v: &serde_json::Value) -> Resp {
        Resp {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: serde_json::to_vec(v).unwrap_or_default(),
        }
    }

    /// A JSON response from bytes already serialised.
    pub fn json_bytes(status: u16, body: Vec<u8>) -> Resp {
        Resp {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body,
        }
    }

    /// `{"error": msg}`.
    pub fn error(status: u16, msg: impl Into<String>) -> Resp {
        Resp::json(status, &serde_json::json!({ "error": msg.into() }))
    }

    /// `{"error": msg, "field": field}`.
    pub fn field_error(e: &crate::job::FieldError) -> Resp {
        Resp::json(
            400,
            &serde_json::json!({ "error": e.error, "field": e.field }),
        )
    }

    /// Adds a header.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Resp {
        self.headers.push((name, value.into()));
        self
    }
}

/// The API: the engine plus the token every request must carry.
pub struct Api {
    pub engine: Arc<Engine>,
    pub token: String,
    /// Webhook intake (`/hooks/...`, authenticated by HMAC instead of the token).
    pub hooks: crate::triggers::webhook::Intake,
    /// Wakes the git poller (`POST /git/notify`, called by the post-receive hook).
    pub git_kick: crossbeam_channel::Sender<()>,
    /// The connection layer's counters (for `/metrics`).
    pub http: Arc<tiny_http::Stats>,
    /// Bytes of request bodies held in memory at once, across all connections.
    pub bodies: BodyBudget,
}

/// Bounds the memory that request bodies take at once: a body is read only after its
/// size (declared, or the route's limit for a chunked one) is reserved here; past the
/// budget the request is answered 503 without reading it.
pub struct BodyBudget {
    max: usize,
    used: AtomicUsize,
}

/// Bytes reserved from a [`BodyBudget`], given back when dropped.
pub struct Reserved<'a> {
    budget: &'a BodyBudget,
    n: usize,
}

impl BodyBudget {
    pub fn new(max: usize) -> BodyBudget {
        BodyBudget {
            max,
            used: AtomicUsize::new(0),
        }
    }

    fn reserve(&self, n: usize) -> Option<Reserved<'_>> {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let next = cur.checked_add(n).filter(|&v| v <= self.max)?;
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(Reserved { budget: self, n }),
                Err(v) => cur = v,
            }
        }
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.n, Ordering::AcqRel);
    }
}

/// Starts serving the API on `listener`: tiny_http's accept thread admits connections
/// within `limits`, and each connection's own thread answers its requests through
/// [`answer`]. A slow or hostile client holds its own thread only, never another's.
pub fn serve(
    api: Arc<Api>,
    listener: std::net::TcpListener,
    limits: tiny_http::Limits,
) -> std::io::Result<tiny_http::Server> {
    let handler: tiny_http::Handler = Arc::new(move |rq| answer(&api, rq));
    tiny_http::Server::with_handler(listener, limits, handler).map_err(std::io::Error::other)
}

/// Splits a request target into path and query. An absolute-form target
/// (`http://host:port/path?q`, which RFC 9112 section 3.2.2 says a server must accept) is
/// routed like its path.
fn split_target(url: &str) -> (String, String) {
    let origin = match url.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphabetic()) =>
        {
            match rest.find(['/', '?']) {
                Some(i) if rest[i..].starts_with('?') => format!("/{}", &rest[i..]),
                Some(i) => rest[i..].to_string(),
                None => "/".to_string(),
            }
        }
        _ => url.to_string(),
    };
    match origin.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (origin, String::new()),
    }
}

fn answer(api: &Api, mut rq: tiny_http::Request) {
    crate::metrics::Metrics::inc(&api.engine.metrics.http_requests_total);
    let (path, query) = split_target(rq.url());
    let mut req = Req {
        method: rq.method().as_str().to_ascii_uppercase(),
        path,
        query,
        headers: rq
            .headers()
            .iter()
            .map(|h| {
                (
                    h.field.as_str().as_str().to_ascii_lowercase(),
                    h.value.as_str().to_string(),
                )
            })
            .collect(),
        body: Vec::new(),
    };
    // Nothing is read of a body before the request is known to be wanted: a webhook path
    // without jobs, a request without the token, a body over the limit or over the memory
    // budget are answered from the head alone.
    let resp = if req.path.starts_with("/hooks/") {
        match hooks::jobs_for(api, &req) {
            Err(r) => r,
            Ok(jobs) => match read_body(api, &mut rq) {
                Ok((body, _reserved)) => {
                    req.body = body;
                    let (m, p) = (req.method.clone(), req.path.clone());
                    guarded(&m, &p, || hooks::answer(api, jobs, &mut req))
                }
                Err(r) => r,
            },
        }
    } else if !router::authorized(api, &req) {
        router::handle(api, &req)
    } else if let Some(reader) = output::route(&req.path)
        .filter(|_| req.method == "GET")
        .and_then(|(id, run_id)| output::follow(api, &id, &run_id))
    {
        // A queued or running run's output is streamed by the connection's own thread.
        output::respond(rq, reader);
        return;
    } else {
        match read_body(api, &mut rq) {
            Ok((body, _reserved)) => {
                req.body = body;
                guarded(&req.method, &req.path, || router::handle(api, &req))
            }
            Err(r) => r,
        }
    };
    // Never chunked: the length is known, and head and body go out in one write.
    let mut r = tiny_http::Response::from_data(resp.body)
        .with_status_code(resp.status)
        .with_chunked_threshold(usize::MAX);
    if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", resp.content_type) {
        r = r.with_header(h);
    }
    // Every answer is what its Content-Type says (the dashboard's files set it themselves).
    let sniff = resp
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("X-Content-Type-Options"));
    for (k, v) in resp.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(k, v.as_bytes()) {
            r = r.with_header(h);
        }
    }
    if !sniff {
        if let Ok(h) = tiny_http::Header::from_bytes("X-Content-Type-Options", "nosniff") {
            r = r.with_header(h);
        }
    }
    if let Err(e) = rq.respond(r) {
        log::debug!(event = "http.error"; "writing a response failed: {e}");
    }
}

/// Runs a handler; a panic becomes a 500 and the connection thread carries on.
fn guarded(method: &str, path: &str, f: impl FnOnce() -> Resp) -> Resp {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            log::error!(event = "http.panic", method = method, path = path; "internal error while answering; the server carries on");
            Resp::error(500, "internal error (see the daemon's log)")
        }
    }
}

/// Reads a request's body within the body limit, the memory budget and the connection's
/// body deadline (set by the connection layer from the declared length).
fn read_body<'a>(
    api: &'a Api,
    rq: &mut tiny_http::Request,
) -> Result<(Vec<u8>, Option<Reserved<'a>>), Resp> {
    let limit = api.engine.settings.max_body_bytes;
    let declared = rq.body_length();
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let chunked = rq
        .headers()
        .iter()
        .any(|h| h.field.equiv("Transfer-Encoding"));
    let want = match declared {
        Some(n) => n,
        None if chunked => limit,
        None => return Ok((Vec::new(), None)),
    };
    if want == 0 {
        return Ok((Vec::new(), None));
    }
    let Some(reserved) = api.bodies.reserve(want) else {
        return Err(Resp::error(
            503,
            "the daemon is reading too many request bodies at once; retry in a moment",
        )
        .with("Retry-After", "1")
        .with("Connection", "close"));
    };
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    match rq.as_reader().take(limit as u64 + 1).read_to_end(&mut body) {
        Ok(_) if body.len() > limit => Err(too_large(limit)),
        Ok(_) => Ok((body, Some(reserved))),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            Err(Resp::error(408, "the request body did not arrive in time")
                .with("Connection", "close"))
        }
        Err(e) => Err(
            Resp::error(400, format!("cannot read the request body: {e}"))
                .with("Connection", "close"),
        ),
    }
}

fn too_large(limit: usize) -> Resp {
    Resp::error(
        413,
        format!("request body is larger than the limit of {limit} bytes"),
    )
    .with("Connection", "close")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_in_origin_and_absolute_form() {
        let s = |u: &str| split_target(u);
        assert_eq!(s("/health"), ("/health".into(), "".into()));
        assert_eq!(
            s("/jobs/a/runs?limit=2"),
            ("/jobs/a/runs".into(), "limit=2".into())
        );
        assert_eq!(s("http://h:1/health"), ("/health".into(), "".into()));
        assert_eq!(s("HTTP://h/jobs?x=1"), ("/jobs".into(), "x=1".into()));
        assert_eq!(s("http://h"), ("/".into(), "".into()));
        assert_eq!(s("http://h?x"), ("/".into(), "x".into()));
        assert_eq!(s("/a?b=http://c/d"), ("/a".into(), "b=http://c/d".into()));
    }

    #[test]
    fn the_body_budget_is_never_overdrawn() {
        let b = BodyBudget::new(100);
        let r1 = b.reserve(60).unwrap();
        assert!(b.reserve(41).is_none());
        let r2 = b.reserve(40).unwrap();
        assert!(b.reserve(1).is_none());
        drop(r1);
        assert!(b.reserve(60).is_some());
        drop(r2);
        assert!(b.reserve(usize::MAX).is_none());
    }
}
