//! The CLI's view of a running daemon: found through `daemon.lock`, spoken to over the REST
//! API with the token from `.token`. Failures are [`ClientError`]s; the commands turn them
//! into an error line and exit code 1.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
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

/// Why the CLI cannot talk to the daemon, or did not get an answer it can read.
#[derive(Debug)]
pub enum ClientError {
    /// A daemon holds the lock but has not written where it listens yet.
    NotListening { dir: PathBuf },
    /// Nobody holds the lock; `stale_pid` is the pid a leftover `daemon.lock` names.
    NotRunning {
        dir: PathBuf,
        stale_pid: Option<u32>,
    },
    /// `daemon.lock` could not be checked.
    Lock { dir: PathBuf, source: io::Error },
    /// The API token could not be read.
    Token { dir: PathBuf, source: io::Error },
    /// The request got no HTTP answer.
    Unreachable {
        base: String,
        source: Box<ureq::Error>,
    },
    /// A streamed request was answered with an error status.
    Refused { status: u16, body: String },
    /// The answer's body could not be read.
    Read(io::Error),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NotListening { dir } => write!(
                f,
                "a daemon holds the lock of {} but has not said where it listens yet; try again",
                dir.display()
            ),
            ClientError::NotRunning { dir, stale_pid } => {
                write!(f, "no daemon is running on data dir {}", dir.display())?;
                if let Some(pid) = stale_pid {
                    write!(
                        f,
                        "; daemon.lock is left over from pid {pid}, which is gone"
                    )?;
                }
                write!(f, " (start one with `bog-agents-daemon run`)")
            }
            ClientError::Lock { dir, source } => {
                write!(f, "cannot check {}: {source}", dir.display())
            }
            ClientError::Token { dir, source } => write!(
                f,
                "cannot read the API token in {}: {source}",
                dir.display()
            ),
            ClientError::Unreachable { base, source } => {
                write!(f, "cannot reach the daemon at {base}: {source}")
            }
            ClientError::Refused { status, body } => {
                write!(f, "the daemon answered {status}: {body}")
            }
            ClientError::Read(e) => write!(f, "cannot read the daemon's answer: {e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Lock { source, .. } | ClientError::Token { source, .. } => Some(source),
            ClientError::Unreachable { source, .. } => Some(source.as_ref()),
            ClientError::Read(e) => Some(e),
            _ => None,
        }
    }
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
    pub fn connect(dir: &Path) -> Result<Client, ClientError> {
        let dir_buf = || dir.to_path_buf();
        match holder(dir) {
            Ok(Holder::Held(Some(info))) => Client::to(dir, &info),
            Ok(Holder::Held(None)) => Err(ClientError::NotListening { dir: dir_buf() }),
            Ok(Holder::Free { stale }) => Err(ClientError::NotRunning {
                dir: dir_buf(),
                stale_pid: stale.map(|s| s.pid),
            }),
            Err(source) => Err(ClientError::Lock {
                dir: dir_buf(),
                source,
            }),
        }
    }

    /// A client for the daemon described by `info`.
    pub fn to(dir: &Path, info: &LockInfo) -> Result<Client, ClientError> {
        let token = Store::at(dir)
            .read_token()
            .map_err(|source| ClientError::Token {
                dir: dir.to_path_buf(),
                source,
            })?;
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
    pub fn stream(&self, path: &str) -> Result<impl std::io::Read, ClientError> {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .build();
        match agent
            .get(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
            .call()
        {
            Ok(r) => Ok(r.into_reader()),
            Err(ureq::Error::Status(status, r)) => Err(ClientError::Refused {
                status,
                body: r.into_string().unwrap_or_default().trim().to_string(),
            }),
            Err(e) => Err(self.unreachable(e)),
        }
    }

    /// Sends a request; returns the status and the JSON body (`null` when empty).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
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
            Err(e) => return Err(self.unreachable(e)),
        };
        let status = resp.status();
        let text = resp.into_string().map_err(ClientError::Read)?;
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, v))
    }

    fn unreachable(&self, e: ureq::Error) -> ClientError {
        ClientError::Unreachable {
            base: self.base.clone(),
            source: Box::new(e),
        }
    }
}
