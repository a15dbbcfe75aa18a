//! `config.json`: optional daemon defaults. Command-line flags override it.

use std::path::Path;

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
    /// Milliseconds between reads of watched git repositories (default 1000).
    pub git_poll_ms: Option<u64>,
    /// How runs are contained: `auto` (default: a cgroup per run where possible) or
    /// `process_group` (process group and rlimits only).
    pub containment: Option<String>,
}

/// Reads `config.json` from the data dir; a missing file is the defaults.
pub fn load(dir: &Path) -> Result<FileConfig, String> {
    let p = dir.join("config.json");
    match std::fs::read(&p) {
        Ok(d) => {
            let c: FileConfig =
                serde_json::from_slice(&d).map_err(|e| format!("{}: {e}", p.display()))?;
            if let Some(a) = &c.default_agent {
                if a.first().is_none_or(|s| s.trim().is_empty()) {
                    return Err(format!(
                        "{}: default_agent must be a non-empty argv array",
                        p.display()
                    ));
                }
            }
            if let Some(m) = &c.containment {
                if m != "auto" && m != "process_group" {
                    return Err(format!(
                        "{}: containment \"{m}\": expected auto or process_group",
                        p.display()
                    ));
                }
            }
            Ok(c)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
}
