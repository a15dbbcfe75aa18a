//! A small, typed, blocking client of etcd v3's JSON/HTTP gateway (`/v3/kv/*`,
//! `/v3/lease/*`, `/v3/watch`), on `ureq`: no gRPC, no async runtime.
//!
//! Keys and values travel base64-encoded, int64 fields come back as strings. Every request
//! has a deadline; the endpoints are tried in turn (the one that answered last first), so
//! a stopped member costs one refused connection. A transaction goes to the next
//! endpoint only when it was never sent (the connection failed): after a timeout or a 5xx
//! it may have taken effect, and sending it again could apply it twice, so it fails with
//! [`EtcdError::Unknown`] and the caller reads back what happened (each write's value
//! names its writer: a run id, a node and lease, a record).
//! Connections are not pooled, so a connection that a restarted member closed is never
//! mistaken for an answer lost in flight. etcd is trusted infrastructure, but an
//! answer is still bounded in size.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

/// Deadline of one request to one endpoint.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read from etcd (a range of every job, say).
const MAX_ANSWER: u64 = 64 << 20;

/// What went wrong talking to etcd.
#[derive(Debug)]
pub enum EtcdError {
    /// No endpoint could be reached, or none answered in time (the last error).
    Unreachable(String),
    /// etcd answered with an error (no quorum, unknown lease, …).
    Server { status: u16, message: String },
    /// The answer was not what the gateway sends.
    BadAnswer(String),
    /// A write reached etcd but no answer came back (a timeout, a 5xx): it may or may not
    /// have taken effect.
    Unknown(String),
    /// A write about a run was refused because the run is no longer this node's (its
    /// claim or its `active/` key names another node or an older lease of this one).
    Lost(String),
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdError::Unreachable(e) => write!(f, "etcd is unreachable: {e}"),
            EtcdError::Server { status, message } => {
                write!(f, "etcd refused the request ({status}): {message}")
            }
            EtcdError::BadAnswer(e) => write!(f, "unexpected answer from etcd: {e}"),
            EtcdError::Lost(e) => write!(f, "{e}"),
            EtcdError::Unknown(e) => write!(f, "etcd did not answer a write in time: {e}"),
        }
    }
}

impl std::error::Error for EtcdError {}

/// One key-value pair as etcd stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

/// A change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Put(Kv),
    Delete(String),
}

/// A condition of a transaction.
pub enum Compare<'a> {
    /// The key does not exist.
    Absent(&'a str),
    /// The key holds exactly this value.
    ValueIs(&'a str, &'a [u8]),
    /// The key exists.
    Present(&'a str),
    /// The key exists under this lease.
    LeaseIs(&'a str, i64),
}

/// A write of a transaction.
#[derive(Clone, Copy)]
pub enum Op<'a> {
    Put {
        key: &'a str,
        value: &'a [u8],
        lease: i64,
    },
    Delete(&'a str),
}

impl<'a> Op<'a> {
    /// A put without a lease.
    pub fn put(key: &'a str, value: &'a [u8]) -> Op<'a> {
        Op::Put {
            key,
            value,
            lease: 0,
        }
    }
}

/// A client of one etcd cluster (its client URLs).
pub struct Etcd {
    endpoints: Vec<String>,
    agent: ureq::Agent,
    /// The endpoint to try first: the one that answered last.
    first: AtomicUsize,
}

fn b64(b: &[u8]) -> String {
    crate::ids::base64_std(b)
}

fn unb64(s: &str) -> Result<Vec<u8>, EtcdError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| EtcdError::BadAnswer(format!("bad base64: {e}")))
}

/// An int64 of the gateway's JSON: a string, a number, or absent (zero).
pub fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// The end of the key range that holds every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn kv(v: &Value) -> Result<Kv, EtcdError> {
    let key = unb64(v["key"].as_str().unwrap_or(""))?;
    Ok(Kv {
        key: String::from_utf8(key)
            .map_err(|_| EtcdError::BadAnswer("a key is not UTF-8".into()))?,
        value: unb64(v["value"].as_str().unwrap_or(""))?,
        create_revision: int(&v["create_revision"]),
        mod_revision: int(&v["mod_revision"]),
        lease: int(&v["lease"]),
    })
}

fn kvs(v: &Value) -> Result<Vec<Kv>, EtcdError> {
    match v["kvs"].as_array() {
        Some(a) => a.iter().map(kv).collect(),
        None => Ok(Vec::new()),
    }
}

/// Checks a list of etcd client URLs (`http://host:port`, comma-separated).
pub fn parse_endpoints(list: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let u = url::Url::parse(part)
            .map_err(|e| format!("etcd endpoint {part:?} is not a URL: {e}"))?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err(format!(
                "etcd endpoint {part:?}: expected http:// or https://, like http://127.0.0.1:2379"
            ));
        }
        if u.host_str().is_none_or(str::is_empty) {
            return Err(format!("etcd endpoint {part:?} has no host"));
        }
        out.push(part.trim_end_matches('/').to_string());
    }
    if out.is_empty() {
        return Err("--etcd needs at least one client URL, like http://127.0.0.1:2379".into());
    }
    Ok(out)
}

impl Etcd {
    /// A client of the cluster reachable at `endpoints` (already checked by
    /// [`parse_endpoints`]).
    pub fn new(endpoints: Vec<String>) -> Etcd {
        Etcd {
            endpoints,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_millis(500))
                .timeout(REQUEST_TIMEOUT)
                .redirects(0)
                .max_idle_connections(0)
                .build(),
            first: AtomicUsize::new(0),
        }
    }

    /// POSTs `body` to `path` on each endpoint in turn until one answers (a read).
    fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        self.send(path, body, true)
    }

    /// POSTs a write: to the next endpoint only while it could not be sent at all.
    fn call_write(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        self.send(path, body, false)
    }

    fn send(&self, path: &str, body: &Value, repeatable: bool) -> Result<Value, EtcdError> {
        let n = self.endpoints.len();
        let start = self.first.load(Ordering::Relaxed);
        let mut last = EtcdError::Unreachable("no endpoint".into());
        for i in 0..n {
            let at = (start + i) % n;
            let url = format!("{}{path}", self.endpoints[at]);
            match self
                .agent
                .post(&url)
                .set("Content-Type", "application/json")
                .send_string(&body.to_string())
            {
                Ok(resp) => {
                    self.first.store(at, Ordering::Relaxed);
                    return read_json(resp).map_err(|e| match e {
                        EtcdError::Unreachable(m) if !repeatable => EtcdError::Unknown(m),
                        e => e,
                    });
                }
                Err(ureq::Error::Status(status, resp)) => {
                    let v = read_json(resp).unwrap_or(Value::Null);
                    let message = v["message"]
                        .as_str()
                        .or(v["error"].as_str())
                        .unwrap_or("no message")
                        .to_string();
                    // A member without quorum or leader: another may have both (a read);
                    // a write may have been applied (a timeout inside etcd).
                    if status < 500 {
                        return Err(EtcdError::Server { status, message });
                    }
                    if !repeatable {
                        return Err(EtcdError::Unknown(format!(
                            "{}: {status} {message}",
                            self.endpoints[at]
                        )));
                    }
                    last = EtcdError::Server { status, message };
                }
                Err(ureq::Error::Transport(t))
                    if !repeatable
                        && !matches!(
                            t.kind(),
                            ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns
                        ) =>
                {
                    return Err(EtcdError::Unknown(format!("{}: {t}", self.endpoints[at])));
                }
                Err(e) => last = EtcdError::Unreachable(format!("{}: {e}", self.endpoints[at])),
            }
        }
        Err(last)
    }

    /// One key, if it exists.
    pub fn get(&self, key: &str) -> Result<Option<Kv>, EtcdError> {
        let v = self.call("/v3/kv/range", &json!({ "key": b64(key.as_bytes()) }))?;
        Ok(kvs(&v)?.into_iter().next())
    }

    /// Every key under `prefix`, and the store's revision they were read at.
    pub fn range_prefix(&self, prefix: &str) -> Result<(Vec<Kv>, i64), EtcdError> {
        let v = self.call(
            "/v3/kv/range",
            &json!({ "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)) }),
        )?;
        Ok((kvs(&v)?, int(&v["header"]["revision"])))
    }

    /// Every key under `prefix`, without the values (`keys_only`: a listing stays small
    /// however big the values are).
    pub fn keys_prefix(&self, prefix: &str) -> Result<Vec<String>, EtcdError> {
        let v = self.call(
            "/v3/kv/range",
            &json!({
                "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)),
                "keys_only": true,
            }),
        )?;
        Ok(kvs(&v)?.into_iter().map(|kv| kv.key).collect())
    }

    /// At most `limit` keys under `prefix`, the greatest first (`keys_only`: without values).
    pub fn range_prefix_desc(
        &self,
        prefix: &str,
        limit: usize,
        keys_only: bool,
    ) -> Result<Vec<Kv>, EtcdError> {
        let v = self.call(
            "/v3/kv/range",
            &json!({
                "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)),
                "limit": limit.to_string(), "sort_order": "DESCEND", "sort_target": "KEY",
                "keys_only": keys_only,
            }),
        )?;
        kvs(&v)
    }

    /// Writes a key (under `lease`, 0 for none).
    pub fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), EtcdError> {
        let mut body = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
        if lease != 0 {
            body["lease"] = lease.to_string().into();
        }
        // The same put twice leaves the same state: it may go to the next endpoint.
        self.call("/v3/kv/put", &body).map(drop)
    }

    /// Deletes a key (absent is fine).
    pub fn delete(&self, key: &str) -> Result<(), EtcdError> {
        self.call("/v3/kv/deleterange", &json!({ "key": b64(key.as_bytes()) }))
            .map(drop)
    }

    /// Deletes every key under `prefix`.
    pub fn delete_prefix(&self, prefix: &str) -> Result<(), EtcdError> {
        self.call(
            "/v3/kv/deleterange",
            &json!({ "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)) }),
        )
        .map(drop)
    }

    /// A transaction: when every comparison holds, the writes are made and it returns true;
    /// else nothing is written and it returns false.
    pub fn txn(&self, compare: &[Compare<'_>], ops: &[Op<'_>]) -> Result<bool, EtcdError> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| match c {
                Compare::Absent(k) => json!({
                    "key": b64(k.as_bytes()), "target": "CREATE", "result": "EQUAL",
                    "create_revision": "0",
                }),
                Compare::Present(k) => json!({
                    "key": b64(k.as_bytes()), "target": "CREATE", "result": "GREATER",
                    "create_revision": "0",
                }),
                Compare::LeaseIs(k, l) => json!({
                    "key": b64(k.as_bytes()), "target": "LEASE", "result": "EQUAL",
                    "lease": l.to_string(),
                }),
                Compare::ValueIs(k, v) => json!({
                    "key": b64(k.as_bytes()), "target": "VALUE", "result": "EQUAL",
                    "value": b64(v),
                }),
            })
            .collect();
        let success: Vec<Value> = ops
            .iter()
            .map(|o| match o {
                Op::Put { key, value, lease } => {
                    let mut p = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
                    if *lease != 0 {
                        p["lease"] = lease.to_string().into();
                    }
                    json!({ "request_put": p })
                }
                Op::Delete(k) => json!({ "request_delete_range": { "key": b64(k.as_bytes()) } }),
            })
            .collect();
        let v = self.call_write(
            "/v3/kv/txn",
            &json!({ "compare": compare, "success": success, "failure": [] }),
        )?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }

    /// Creates `key` with `value` under `lease` unless it exists; returns whether it did.
    pub fn create(&self, key: &str, value: &[u8], lease: i64) -> Result<bool, EtcdError> {
        self.txn(&[Compare::Absent(key)], &[Op::Put { key, value, lease }])
    }

    /// A new lease of `ttl` seconds; its id.
    pub fn grant(&self, ttl: i64) -> Result<i64, EtcdError> {
        let v = self.call("/v3/lease/grant", &json!({ "TTL": ttl.to_string() }))?;
        match int(&v["ID"]) {
            0 => Err(EtcdError::BadAnswer(format!(
                "lease grant without an ID: {}",
                v["error"].as_str().unwrap_or("")
            ))),
            id => Ok(id),
        }
    }

    /// Renews a lease; returns its TTL now (0: it had expired and is gone).
    pub fn keepalive(&self, id: i64) -> Result<i64, EtcdError> {
        let v = self.call("/v3/lease/keepalive", &json!({ "ID": id.to_string() }))?;
        if let Some(e) = v["error"].as_object() {
            return Err(EtcdError::Server {
                status: int(&e["http_code"]) as u16,
                message: e["message"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(int(&v["result"]["TTL"]))
    }

    /// Ends a lease now: its keys are deleted.
    pub fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", &json!({ "ID": id.to_string() }))
            .map(drop)
    }

    /// Watches every key under `prefix` from revision `from`, calling `each` with the events
    /// of each answer and the revision they bring the watcher to, until `each` returns false,
    /// the stream ends or fails, or nothing arrives for `idle` (then it returns Ok and the
    /// caller watches again from the last revision). `Err(Compacted)` means `from` is gone:
    /// read everything again.
    pub fn watch(
        &self,
        prefix: &str,
        from: i64,
        idle: Duration,
        mut each: impl FnMut(Vec<Event>, i64) -> bool,
    ) -> Result<(), WatchError> {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_millis(500))
            .timeout_read(idle)
            .redirects(0)
            .build();
        let body = json!({ "create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix)),
            "start_revision": from.to_string(),
        }});
        let n = self.endpoints.len();
        let at = self.first.load(Ordering::Relaxed) % n;
        let url = format!("{}/v3/watch", self.endpoints[at]);
        let resp = match agent
            .post(&url)
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
        {
            Ok(r) => r,
            Err(e) => {
                // Try the next endpoint next time.
                self.first.store((at + 1) % n, Ordering::Relaxed);
                return Err(WatchError::Etcd(EtcdError::Unreachable(format!(
                    "{}: {e}",
                    self.endpoints[at]
                ))));
            }
        };
        // Past this many bytes the stream ends and the caller watches again from the last
        // revision: memory stays bounded however long a watch lives.
        let reader = resp.into_reader().take(MAX_ANSWER);
        for item in serde_json::Deserializer::from_reader(reader).into_iter::<Value>() {
            let v = match item {
                Ok(v) => v,
                // An idle timeout or a closed stream: the caller watches again.
                Err(_) => return Ok(()),
            };
            let r = &v["result"];
            if int(&r["compact_revision"]) > 0 {
                return Err(WatchError::Compacted);
            }
            if r["canceled"].as_bool() == Some(true) {
                return Err(WatchError::Etcd(EtcdError::Server {
                    status: 0,
                    message: r["cancel_reason"]
                        .as_str()
                        .unwrap_or("watch canceled")
                        .into(),
                }));
            }
            if let Some(e) = v["error"].as_object() {
                return Err(WatchError::Etcd(EtcdError::Server {
                    status: int(&e["http_code"]) as u16,
                    message: e["message"].as_str().unwrap_or("").to_string(),
                }));
            }
            let rev = int(&r["header"]["revision"]);
            let mut events = Vec::new();
            for e in r["events"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                let k = kv(&e["kv"]).map_err(WatchError::Etcd)?;
                events.push(if e["type"].as_str() == Some("DELETE") {
                    Event::Delete(k.key)
                } else {
                    Event::Put(k)
                });
            }
            if !each(events, rev) {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Why a watch ended.
#[derive(Debug)]
pub enum WatchError {
    Etcd(EtcdError),
    /// The start revision was compacted away.
    Compacted,
}

fn read_json(resp: ureq::Response) -> Result<Value, EtcdError> {
    let mut buf = Vec::new();
    resp.into_reader()
        .take(MAX_ANSWER)
        .read_to_end(&mut buf)
        .map_err(|e| EtcdError::Unreachable(format!("reading the answer: {e}")))?;
    serde_json::from_slice(&buf).map_err(|e| EtcdError::BadAnswer(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_and_endpoints() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(int(&json!("12")), 12);
        assert_eq!(int(&Value::Null), 0);
        assert_eq!(
            parse_endpoints("http://h1:2379, http://h2:2379/").unwrap(),
            vec!["http://h1:2379", "http://h2:2379"]
        );
        assert!(parse_endpoints("h1:2379").is_err());
        assert!(parse_endpoints("").is_err());
    }
}
