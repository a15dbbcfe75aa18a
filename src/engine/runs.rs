//! One job's runs as the engine sees them: which are handed to the pool, the one waiting
//! behind them (overlap `queue`), and the guard that keeps run records out of a job being
//! deleted. [`decide`] is the overlap policy as a pure function of that state.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::job::{Job, Overlap};
use crate::run::RunRecord;

/// One unit of work for the pool: a run to execute.
#[derive(Debug)]
pub struct Work {
    pub job: Arc<Job>,
    pub run: RunRecord,
    /// Firing context that is too big or too raw for the run record: given to the prompt
    /// template and the event file only.
    pub extra: Arc<Extra>,
}

/// What a firing carries besides its run record's `trigger` object.
#[derive(Debug, Default)]
pub struct Extra {
    /// Template and event-file variables.
    pub vars: Map<String, Value>,
    /// A webhook's body, shared by every run of the delivery, parsed only when a run starts.
    pub body: Option<Arc<crate::payload::Body>>,
}

/// One job's run bookkeeping. Lock order: `runs`, then `deleted`.
#[derive(Default)]
pub struct JobSlot {
    pub runs: Mutex<JobRuns>,
    /// Guards the job's run records against its deletion: every record write holds it
    /// shared and checks it; the engine's `remove_job` holds it exclusively while it removes
    /// the records, then sets it. Once set, nothing is written for the job again, so no write
    /// can fail halfway through a deletion, make it fail, or leave a `runs/<job-id>/` behind.
    pub deleted: RwLock<bool>,
}

/// Active and pending runs of one job.
#[derive(Default)]
pub struct JobRuns {
    /// Runs handed to the pool (queued in the channel or executing).
    pub active: HashSet<String>,
    /// Overlap `queue`: the one run waiting behind the active one.
    pub pending: Option<Work>,
    /// Since when the job has had a run queued or executing.
    pub busy_since: Option<SystemTime>,
    /// The last stretch during which it had one (for the file_change self-trigger rule).
    pub last_busy: Option<(SystemTime, SystemTime)>,
}

/// What a new firing of a job becomes, given its runs and its overlap policy.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// `skip` while a run is active: recorded as a skipped run.
    Skip,
    /// `queue` while a run is active and another already waits: merged into that one.
    Coalesce(String),
    /// `queue` while a run is active and none waits: it waits behind it.
    Park,
    /// Nothing active, or `parallel`: handed to the pool now.
    Send,
}

/// The overlap policy (README "overlap").
pub fn decide(runs: &JobRuns, overlap: Overlap) -> Decision {
    if runs.active.is_empty() {
        return Decision::Send;
    }
    match overlap {
        Overlap::Skip => Decision::Skip,
        Overlap::Queue => match &runs.pending {
            Some(p) => Decision::Coalesce(p.run.id.clone()),
            None => Decision::Park,
        },
        Overlap::Parallel => Decision::Send,
    }
}

impl JobRuns {
    /// Marks `run_id` handed to the pool.
    pub fn activate(&mut self, run_id: &str) {
        if self.active.is_empty() && self.pending.is_none() {
            self.busy_since = Some(SystemTime::now());
        }
        self.active.insert(run_id.to_string());
    }

    /// Marks `run_id` over (or never sent); returns whether the job is now idle, closing its
    /// busy stretch then.
    pub fn deactivate(&mut self, run_id: &str) -> bool {
        self.active.remove(run_id);
        let idle = self.active.is_empty() && self.pending.is_none();
        if idle {
            let now = SystemTime::now();
            if let Some(since) = self.busy_since.take() {
                self.last_busy = Some((since, now));
            }
        }
        idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(id: &str) -> Work {
        let job = serde_json::json!({
            "name": "j", "prompt": "p", "agent": {"command": ["true"]},
            "triggers": [{"type": "interval", "seconds": 60}],
        });
        Work {
            job: Arc::new(
                crate::job::validate_job(&job, "job_1", "2026-01-01T00:00:00Z").expect("valid"),
            ),
            run: RunRecord::queued(id.into(), "job_1", "j", Value::Null),
            extra: Arc::default(),
        }
    }

    #[test]
    fn the_overlap_policy() {
        let mut r = JobRuns::default();
        for o in [Overlap::Skip, Overlap::Queue, Overlap::Parallel] {
            assert_eq!(decide(&r, o), Decision::Send, "idle, {o:?}");
        }
        r.activate("run_1");
        assert_eq!(decide(&r, Overlap::Skip), Decision::Skip);
        assert_eq!(decide(&r, Overlap::Queue), Decision::Park);
        assert_eq!(decide(&r, Overlap::Parallel), Decision::Send);
        r.pending = Some(work("run_2"));
        assert_eq!(
            decide(&r, Overlap::Queue),
            Decision::Coalesce("run_2".into())
        );
        // The active run ends; the pending one has not been handed over yet: not idle.
        assert!(!r.deactivate("run_1"));
        r.pending = None;
        r.activate("run_3");
        assert!(r.deactivate("run_3"));
        assert!(r.last_busy.is_some());
    }
}
