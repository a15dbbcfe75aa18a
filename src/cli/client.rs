//! The CLI's view of a running daemon: found through `daemon.lock`, spoken to over the REST
//! API with the token from `.token`.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::store::lock::{holder, Holder, LockInfo};
use crate::store::Store;

/// A connection to the daemon running on a data dir.
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// The daemon holding `dir`'s lock, if one runs.
pub fn running_daemon(dir: &Path) -> Option<LockInfo> {
    match holder(dir) {
        Ok(Holder::Held(info)) => info,
        _ => None,
    }
}

impl Client {
    /// Connects to the daemon on `dir`, or explains why not.
    pub fn connect(dir: &Path) -> Result<Client, String> {
        match holder(dir) {
            Ok(Holder::Held(Some(info))) => Client::to(dir, &info),
            Ok(Holder::Held(None)) => Err(format!(
                "a daemon holds the lock of {} but has not said where it listens yet; try again",
                dir.display()
            )),
            Ok(Holder::Free { stale }) => Err(format!(
                "no daemon is running on data dir {}{} (start one with `bog-agents-daemon run`)",
                dir.display(),
                stale
                    .map(|s| format!(
                        "; daemon.lock is left over from pid {}, which is gone",
                        s.pid
                    ))
                    .unwrap_or_default()
            )),
            Err(e) => Err(format!("cannot check {}: {e}", dir.display())),
        }
    }

    /// A client for the daemon described by `info`.
    pub fn to(dir: &Path, info: &LockInfo) -> Result<Client, String> {
        let token = Store::at(dir)
            .read_token()
            .map_err(|e| format!("cannot read the API token in {}: {e}", dir.display()))?;
        let host = match info.bind.as_str() {
            "0.0.0.0" | "" => "127.0.0.1".to_string(),
            "::" => "[::1]".to_string(),
            b if b.contains(':') => format!("[{b}]"),
            b => b.to_string(),
        };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build();
        Ok(Client {
            base: format!("http://{host}:{}", info.port),
            token,
            agent,
        })
    }

    /// The same client with another overall timeout per request (None: none, for an
    /// answer that comes when an agent has run, bounded by the job's own timeout).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Client {
        let mut b = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(5));
        if let Some(t) = timeout {
            b = b.timeout(t);
        }
        self.agent = b.build();
        self
    }

    /// A GET whose body is read as it arrives, for as long as the daemon streams it (no
    /// overall timeout): the output of a running run.
    pub fn stream(&self, path: &str) -> Result<impl std::io::Read, String> {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .build();
        match agent
            .get(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
            .call()
        {
            Ok(r) => Ok(r.into_reader()),
            Err(ureq::Error::Status(st, r)) => Err(format!(
                "the daemon answered {st}: {}",
                r.into_string().unwrap_or_default().trim()
            )),
            Err(e) => Err(format!("cannot reach the daemon at {}: {e}", self.base)),
        }
    }

    /// Sends a request; returns the status and the JSON body (`null` when empty).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let req = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token));
        let res = match body {
            Some(b) => req
                .set("Content-Type", "application/json")
                .send_string(&b.to_string()),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(format!("cannot reach the daemon at {}: {e}", self.base)),
        };
        let status = resp.status();
        let text = resp
            .into_string()
            .map_err(|e| format!("cannot read the daemon's answer: {e}"))?;
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, v))
    }
}
