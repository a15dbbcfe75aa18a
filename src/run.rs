//! Run records (README "Run records"): one per firing, stored as
//! `runs/<job-id>/<run-id>.json`. [`RunRecord`]'s methods own the transitions that close a
//! run early (`skip`, `interrupt`, `close`); the worker fills in a finished run.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Lifecycle of a run. `queued` and `running` are the only non-final states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Skipped,
    Interrupted,
    /// Not a run: the status of a dead-man's switch notice (`expect`) as outputs with `on:
    /// ["missed"]` get it. Never stored.
    Missed,
}

impl RunStatus {
    /// Whether no more changes will be made to a run in this state.
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }

    /// The snake_case name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Skipped => "skipped",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Missed => "missed",
        }
    }
}

/// One failed delivery to an output target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DispatchError {
    pub target: String,
    pub error: String,
}

/// Most `dispatch_errors` entries kept before the overflow entry.
pub const MAX_DISPATCH_ERRORS: usize = 20;

/// A run record as stored and served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub job_id: String,
    pub job_name: String,
    /// `{"type": "<trigger type>", ...context}`.
    pub trigger: Value,
    pub status: RunStatus,
    pub attempts: u32,
    pub exit_code: Option<i32>,
    /// Name of the signal that ended the agent, e.g. `SIGKILL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    pub queued_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub output: String,
    /// True when stdout went past `max_output_kb` and was cut.
    #[serde(default)]
    pub output_truncated: bool,
    /// Total stdout bytes the agent wrote, kept or not.
    #[serde(default)]
    pub output_bytes: u64,
    pub stderr_tail: String,
    pub error: Option<String>,
    pub dispatch_errors: Vec<DispatchError>,
    /// The fresh checkout the agent ran in (`checkout: true`): repo, commit, path and
    /// whether it was `kept` (a failed run with `keep_checkout_on_failure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<Value>,
    /// Cluster mode: the node the agent ran on (README "Running a cluster").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl RunRecord {
    /// A new `queued` record for a firing.
    pub fn queued(id: String, job_id: &str, job_name: &str, trigger: Value) -> RunRecord {
        RunRecord {
            id,
            job_id: job_id.to_string(),
            job_name: job_name.to_string(),
            trigger,
            status: RunStatus::Queued,
            attempts: 0,
            exit_code: None,
            signal: None,
            queued_at: crate::time::now_rfc3339(),
            started_at: None,
            finished_at: None,
            duration_ms: None,
            output: String::new(),
            output_truncated: false,
            output_bytes: 0,
            stderr_tail: String::new(),
            error: None,
            dispatch_errors: Vec::new(),
            checkout: None,
            node: None,
        }
    }

    /// Ends a run that did not run to its end: `status` with `reason` as its error, finished
    /// now (or when it already said). The one place a record is closed outside the worker's
    /// normal finish.
    pub fn close(&mut self, status: RunStatus, reason: impl Into<String>) {
        self.status = status;
        self.error = Some(reason.into());
        if self.finished_at.is_none() {
            self.finished_at = Some(crate::time::now_rfc3339());
        }
    }

    /// Closes a run that will not run (`skipped`): overlap, a full queue, a removed job.
    pub fn skip(&mut self, reason: impl Into<String>) {
        self.close(RunStatus::Skipped, reason);
    }

    /// Closes a run cut short by the daemon stopping or dying (`interrupted`).
    pub fn interrupt(&mut self, reason: impl Into<String>) {
        self.close(RunStatus::Interrupted, reason);
    }

    /// Appends a dispatch error, keeping at most [`MAX_DISPATCH_ERRORS`] plus one
    /// `(overflow)` entry that counts the rest.
    pub fn add_dispatch_error(&mut self, target: &str, error: String) {
        let n = self.dispatch_errors.len();
        if n < MAX_DISPATCH_ERRORS {
            self.dispatch_errors.push(DispatchError {
                target: target.to_string(),
                error,
            });
            return;
        }
        let omitted = match self.dispatch_errors.get(MAX_DISPATCH_ERRORS) {
            Some(e) => e
                .error
                .split_whitespace()
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0),
            None => 0,
        } + 1;
        self.dispatch_errors.truncate(MAX_DISPATCH_ERRORS);
        self.dispatch_errors.push(DispatchError {
            target: "(overflow)".into(),
            error: format!("{omitted} more dispatch errors omitted"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_keeps_an_earlier_finish_time() {
        let mut r = RunRecord::queued("run_1".into(), "job_1", "a", Value::Null);
        r.skip("busy");
        assert_eq!(r.status, RunStatus::Skipped);
        assert_eq!(r.error.as_deref(), Some("busy"));
        assert!(r.finished_at.is_some());
        r.finished_at = Some("2026-01-01T00:00:00Z".into());
        r.interrupt("stopped");
        assert_eq!(r.status, RunStatus::Interrupted);
        assert_eq!(r.finished_at.as_deref(), Some("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn dispatch_errors_cap_at_twenty_plus_overflow() {
        let mut r = RunRecord::queued("run_1".into(), "job_1", "a", Value::Null);
        for i in 0..25 {
            r.add_dispatch_error("file", format!("e{i}"));
        }
        assert_eq!(r.dispatch_errors.len(), 21);
        assert_eq!(r.dispatch_errors[19].error, "e19");
        assert_eq!(r.dispatch_errors[20].target, "(overflow)");
        assert_eq!(
            r.dispatch_errors[20].error,
            "5 more dispatch errors omitted"
        );
    }
}
