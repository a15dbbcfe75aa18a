//! `state.json`: the clock's memory across restarts. The last fire time of each cron trigger,
//! so `catch_up` can fire a slot missed while the daemon was down; and each dead-man's
//! switch (`expect`): since when it watches, the last time it went off, the newest success
//! seen and a notice not yet delivered to its end, so a daemon that was down for a whole
//! period reports it at start, never reports one period twice, and sends again a notice a
//! stop cut short.
//!
//! `last_fire` keys are `<job-id>:<trigger-index>:<cron expression>`, so editing a trigger
//! forgets its history instead of catching up on a schedule that no longer exists.

use std::collections::BTreeMap;
use std::fs;

use serde::{Deserialize, Serialize};

use super::Store;
use crate::fsio;

/// Scheduler state persisted across restarts.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SchedState {
    /// Last fire time (RFC 3339) per trigger key.
    #[serde(default)]
    pub last_fire: BTreeMap<String, String>,
    /// Dead-man's switches by job id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub expect: BTreeMap<String, ExpectState>,
}

/// One job's dead-man's switch (RFC 3339 times).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ExpectState {
    /// When the switch was first seen: a job never succeeded is measured from here.
    pub since: String,
    /// Where the period after the last notice starts (none yet: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<String>,
    /// The newest success the clock has seen at a deadline: after a restart the engine
    /// reads only the newest records (`engine::SUCCESS_WALK`), so one older is kept here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    /// A notice recorded but not yet delivered to the end (`{"text", "trigger"}`): the
    /// next start sends it again, so a notice a stop cut short is not lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<serde_json::Value>,
}

/// The key of a cron trigger in [`SchedState::last_fire`].
pub fn trigger_key(job_id: &str, index: usize, expr: &str) -> String {
    format!("{job_id}:{index}:{expr}")
}

impl Store {
    /// Loads `state.json`; a missing file is empty state, a corrupt one is quarantined.
    pub fn load_state(&self) -> SchedState {
        let p = self.dir().join("state.json");
        match fs::read(&p) {
            Ok(d) => match serde_json::from_slice(&d) {
                Ok(s) => s,
                Err(e) => {
                    let q = self.quarantine(&p, format!("state.json: {e}"));
                    log::error!(event = "store.quarantined", path = q.path.display().to_string().as_str(); "state.json is not valid ({}); moved aside, catch-up history starts empty", q.reason);
                    SchedState::default()
                }
            },
            Err(_) => SchedState::default(),
        }
    }

    /// Writes `state.json` durably.
    pub fn save_state(&self, s: &SchedState) -> std::io::Result<()> {
        let p = self.dir().join("state.json");
        let data = serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?;
        fsio::write_atomic(&p, &data, 0o600).map_err(|e| super::ctx(e, "cannot write", &p))
    }
}
