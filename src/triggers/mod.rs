//! What turns the outside world into firings: the scheduler clock (cron and interval),
//! webhook intake (on the HTTP threads), the file watcher, the git poller, and the
//! jobs-directory watcher that picks up job files written by the CLI.

pub mod clock;
pub mod files;
pub mod filter;
pub mod git;
pub mod glob;
pub mod jobs_dir;
pub mod scheme;
pub mod webhook;

use serde_json::{Map, Value};

/// The start of every run record's `trigger` object: `{"type": kind, "fired_at": now}`; each
/// trigger adds its own context (README "Run records").
pub fn context(kind: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), kind.into());
    m.insert("fired_at".into(), crate::time::now_rfc3339().into());
    m
}
