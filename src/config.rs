//! `config.json`: optional daemon defaults. Command-line flags override it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Daemon settings from `config.json` (every field optional).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// argv used for jobs without `agent`; `{prompt}` and `{model}` are substituted.
    pub default_agent: Option<Vec<String>>,
    pub workers: Option<usize>,
    pub port: Option<u16>,
    pub bind: Option<String>,
    pub grace_seconds: Option<u64>,
    pub log_format: Option<String>,
    /// Largest accepted request body in bytes (default 1 MiB).
    pub max_body_bytes: Option<usize>,
    /// Capacity of the work queue between triggers and workers (default 1024).
    pub queue_capacity: Option<usize>,
    /// Agents running at once, daemon-wide (default and most: `workers`); further runs wait
    /// queued, they are not skipped (README "Run budgets").
    pub max_concurrent_runs: Option<usize>,
    /// Milliseconds between reads of watched git repositories (default 1000).
    pub git_poll_ms: Option<u64>,
    /// How runs are contained: `auto` (default: a cgroup per run where possible) or
    /// `process_group` (process group and rlimits only).
    pub containment: Option<String>,
    /// Limits and deadlines of the API's connections.
    #[serde(default)]
    pub http: HttpConfig,
    /// Cluster mode: etcd client URLs (`"http://h1:2379,http://h2:2379"` or an array).
    pub etcd: Option<Endpoints>,
    /// Cluster mode: this node's name (default: the host name).
    pub node: Option<String>,
    /// Cluster mode: prefix of every etcd key (default `/bog-agents/`).
    pub etcd_prefix: Option<String>,
}

/// `config.json` `"etcd"`: one comma-separated string or an array of URLs.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Endpoints {
    List(String),
    Array(Vec<String>),
}

impl Endpoints {
    /// The URLs as one comma-separated list.
    pub fn joined(&self) -> String {
        match self {
            Endpoints::List(s) => s.clone(),
            Endpoints::Array(a) => a.join(","),
        }
    }
}

/// `config.json` `"http"`: limits and deadlines of the API's connections (README
/// "Security model"). Times are seconds and may have a fraction.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Connections open at once (default 1024, lowered to fit `RLIMIT_NOFILE`/`RLIMIT_NPROC`).
    pub max_connections: Option<usize>,
    /// Connections open at once from one IP address (default 256; 0 = no such limit).
    pub max_connections_per_ip: Option<usize>,
    /// A request line and headers must arrive within this time (default 10).
    pub head_timeout_seconds: Option<f64>,
    /// A body must arrive within this time plus its length at `body_min_bytes_per_second`
    /// (default 10).
    pub body_timeout_seconds: Option<f64>,
    /// The slowest body upload allowed (default 65536 bytes per second).
    pub body_min_bytes_per_second: Option<u64>,
    /// An idle keep-alive connection is closed after this time (default 30).
    pub keep_alive_seconds: Option<f64>,
    /// Writing one response must take no longer (default 30).
    pub write_timeout_seconds: Option<f64>,
    /// Bytes of a request head in all (default 65536; 431 past it).
    pub max_head_bytes: Option<usize>,
    /// Header lines of a request (default 100; 431 past it).
    pub max_headers: Option<usize>,
    /// Bytes of request bodies held in memory at once, all connections together
    /// (default 64 MiB, at least `max_body_bytes`; 503 past it).
    pub max_body_memory_bytes: Option<usize>,
}

impl HttpConfig {
    /// The seconds in `v` (named `field` in errors) as a duration, or `default`.
    pub fn seconds(
        v: Option<f64>,
        field: &'static str,
        default: f64,
    ) -> Result<std::time::Duration, ConfigError> {
        let s = v.unwrap_or(default);
        if !s.is_finite() || s <= 0.0 || s > 86_400.0 {
            return Err(ConfigError::HttpSeconds { field, got: s });
        }
        Ok(std::time::Duration::from_secs_f64(s))
    }
}

/// What is wrong with `config.json`: each names the file or the key, and says what to do.
#[derive(Debug)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not JSON, or a key or value serde refuses (an unknown key among them).
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// `default_agent` is empty or starts with an empty program.
    DefaultAgent { path: PathBuf },
    /// `default_agent` hands `{prompt}` to a command interpreter (`cmd /c`, a `.bat`), which
    /// would read payload text as commands.
    DefaultAgentPrompt {
        path: PathBuf,
        index: usize,
        why: String,
    },
    /// `max_concurrent_runs` is 0.
    MaxConcurrentRuns { path: PathBuf },
    /// `containment` names no mode.
    Containment { path: PathBuf, got: String },
    /// An `http.*_seconds` value out of range.
    HttpSeconds { field: &'static str, got: f64 },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            ConfigError::Json { path, source } => write!(f, "{}: {source}", path.display()),
            ConfigError::DefaultAgent { path } => write!(
                f,
                "{}: default_agent must be a non-empty argv array",
                path.display()
            ),
            ConfigError::DefaultAgentPrompt { path, index, why } => {
                write!(f, "{}: default_agent[{index}]: {why}", path.display())
            }
            ConfigError::MaxConcurrentRuns { path } => write!(
                f,
                "{}: max_concurrent_runs must be at least 1 (leave it out for no cap beyond workers)",
                path.display()
            ),
            ConfigError::Containment { path, got } => write!(
                f,
                "{}: containment \"{got}\": expected auto or process_group",
                path.display()
            ),
            ConfigError::HttpSeconds { field, got } => write!(
                f,
                "config.json: http.{field} must be a number of seconds above 0 and at most 86400, got {got}"
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Json { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Reads `config.json` from the data dir; a missing file is the defaults.
pub fn load(dir: &Path) -> Result<FileConfig, ConfigError> {
    let path = dir.join("config.json");
    let d = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    let c: FileConfig = match serde_json::from_slice(&d) {
        Ok(c) => c,
        Err(source) => return Err(ConfigError::Json { path, source }),
    };
    if let Some(a) = &c.default_agent {
        if a.first().is_none_or(|s| s.trim().is_empty()) {
            return Err(ConfigError::DefaultAgent { path });
        }
        if let Some((index, why)) = crate::job::validate::prompt_through_cmd(a) {
            return Err(ConfigError::DefaultAgentPrompt { path, index, why });
        }
    }
    if c.max_concurrent_runs == Some(0) {
        return Err(ConfigError::MaxConcurrentRuns { path });
    }
    // The http deadlines are checked here, with the rest, before anything is started.
    let h = &c.http;
    for (v, field) in [
        (h.head_timeout_seconds, "head_timeout_seconds"),
        (h.body_timeout_seconds, "body_timeout_seconds"),
        (h.keep_alive_seconds, "keep_alive_seconds"),
        (h.write_timeout_seconds, "write_timeout_seconds"),
    ] {
        if v.is_some() {
            HttpConfig::seconds(v, field, 1.0)?;
        }
    }
    if let Some(m) = &c.containment {
        if m != "auto" && m != "process_group" {
            return Err(ConfigError::Containment {
                path,
                got: m.clone(),
            });
        }
    }
    Ok(c)
}
