//! The REST API (SPEC §5) on tiny_http: a few threads take requests from one listening
//! socket and answer them through [`router::handle`], a pure function from [`Req`] to
//! [`Resp`] that never panics on input (and if it did, the request gets a 500 and the
//! thread carries on).

mod jobs;
pub mod router;
mod system;

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

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
}

/// Starts `threads` request threads on `server`.
pub fn spawn(
    api: Arc<Api>,
    server: Arc<tiny_http::Server>,
    threads: usize,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..threads)
        .map(|i| {
            let api = api.clone();
            let server = server.clone();
            thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || serve(&api, &server))
        })
        .collect()
}

fn serve(api: &Api, server: &tiny_http::Server) {
    loop {
        let rq = match server.recv() {
            Ok(rq) => rq,
            Err(_) if api.engine.is_shutting_down() => return,
            Err(e) => {
                log::warn!(event = "http.error"; "accepting a request failed: {e}");
                continue;
            }
        };
        crate::metrics::Metrics::inc(&api.engine.metrics.http_requests_total);
        answer(api, rq);
    }
}

fn answer(api: &Api, mut rq: tiny_http::Request) {
    let limit = api.engine.settings.max_body_bytes;
    let url = rq.url().to_string();
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (url, String::new()),
    };
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
    // Only webhooks are read before they are authenticated: a client without the token
    // cannot hold a request thread by trickling a body.
    let resp = if !req.path.starts_with("/hooks/") && !router::authorized(api, &req) {
        router::handle(api, &req)
    } else if rq.body_length().is_some_and(|n| n > limit) {
        too_large(limit)
    } else {
        let mut body = Vec::new();
        match rq.as_reader().take(limit as u64 + 1).read_to_end(&mut body) {
            Ok(_) if body.len() > limit => too_large(limit),
            Ok(_) => {
                req.body = body;
                match catch_unwind(AssertUnwindSafe(|| router::handle(api, &req))) {
                    Ok(r) => r,
                    Err(_) => {
                        log::error!(event = "http.panic", method = req.method.as_str(), path = req.path.as_str(); "internal error while answering; the server carries on");
                        Resp::error(500, "internal error (see the daemon's log)")
                    }
                }
            }
            Err(e) => Resp::error(400, format!("cannot read the request body: {e}")),
        }
    };
    let mut r = tiny_http::Response::from_data(resp.body).with_status_code(resp.status);
    if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", resp.content_type) {
        r = r.with_header(h);
    }
    for (k, v) in resp.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(k, v.as_bytes()) {
            r = r.with_header(h);
        }
    }
    if let Err(e) = rq.respond(r) {
        log::debug!(event = "http.error"; "writing a response failed: {e}");
    }
}

fn too_large(limit: usize) -> Resp {
    Resp::error(
        413,
        format!("request body is larger than the limit of {limit} bytes"),
    )
}
