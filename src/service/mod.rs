//! Running as a service: unit/agent/task files for systemd, launchd and the Windows Task
//! Scheduler. Each generator is a pure function from [`Options`] to text, so `--print`, the
//! installers and the contrib copies all come from the same code.

pub mod launchd;
pub mod systemd;
pub mod windows;

use std::path::{Path, PathBuf};

/// What every generated service file needs to know.
#[derive(Clone, Debug)]
pub struct Options {
    /// Absolute path of the daemon binary.
    pub binary: PathBuf,
    /// `--port` for the daemon; None: `config.json`'s port, else 7878, read at each start.
    pub port: Option<u16>,
    /// `--bind` for the daemon; None: `config.json`'s, else 127.0.0.1.
    pub bind: Option<String>,
    /// `--grace` for the daemon; None: `config.json`'s `grace_seconds`.
    pub grace: Option<u64>,
    /// The grace the daemon will use (the flag, `config.json`, or 30): the service manager
    /// waits longer than this for a stop.
    pub grace_seconds: u64,
    /// An explicit data dir (None: the daemon's default for the service's user).
    pub data_dir: Option<PathBuf>,
    /// Home directory of the user the service runs as.
    pub home: PathBuf,
}

impl Options {
    /// The arguments after the binary: `run [--port N] [--bind ADDR] [--grace S]
    /// [--data-dir DIR]`. What is not given here the daemon takes from `config.json`.
    pub fn run_args(&self) -> Vec<String> {
        let mut v = vec!["run".to_string()];
        if let Some(p) = self.port {
            v.push("--port".into());
            v.push(p.to_string());
        }
        if let Some(b) = &self.bind {
            v.push("--bind".into());
            v.push(b.clone());
        }
        if let Some(g) = self.grace {
            v.push("--grace".into());
            v.push(g.to_string());
        }
        if let Some(d) = &self.data_dir {
            v.push("--data-dir".into());
            v.push(d.display().to_string());
        }
        v
    }

    /// The data dir the service will use.
    pub fn effective_data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| self.home.join(".bog-agents").join("daemon"))
    }

    /// What the service manager waits for a stop: the grace, the 5 s SIGTERM→SIGKILL delay
    /// of the agents' groups, and a margin.
    pub fn stop_timeout(&self) -> u64 {
        self.grace_seconds.saturating_add(5 + 10)
    }
}

/// Seconds the daemon waits for running agents on SIGTERM by default.
pub const DRAIN_GRACE_SECONDS: u64 = 30;

/// A service file (or its directory) that could not be written or removed.
pub type FileError = crate::fsio::PathError;

fn file_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
    crate::fsio::PathError::at(what, path)
}

/// Writes `text` to `path` with mode 0644 (creating parent directories). Returns false if
/// the file already had exactly this content.
pub fn write_file(path: &Path, text: &[u8]) -> Result<bool, FileError> {
    if std::fs::read(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(file_err("create", parent))?;
    }
    crate::fsio::write_atomic(path, text, 0o644).map_err(file_err("write", path))?;
    Ok(true)
}

/// Removes `path`; returns false if it was not there.
pub fn remove_file(path: &Path) -> Result<bool, FileError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(file_err("remove", path)(e)),
    }
}

/// Escapes text for XML element content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}
