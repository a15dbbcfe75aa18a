//! One job's runs as the engine sees them: which are handed to the pool, the one waiting
//! behind them (overlap `queue`), the start times its run budget counts ([`Budget`]), and
//! the guard that keeps run records out of a job being deleted. [`decide`] is the overlap
//! policy as a pure function of that state.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

use crate::job::{Job, Limits, Overlap};
use crate::run::RunRecord;

/// One unit of work for the pool: a run to execute.
#[derive(Debug)]
pub struct Work {
    pub job: Arc<Job>,
    pub run: RunRecord,
    /// Firing context that is too big or too raw for the run record: given to the prompt
    /// template and the event file only.
    pub extra: Arc<Extra>,
    /// The slot of a run the clock prepared ahead of it ([`super::Engine::fire_held`]): the
    /// worker takes it early, prepares everything, and starts the agent at this instant.
    /// None: at once.
    pub due: Option<SystemTime>,
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
    /// A prune of the job's records after a `skipped` one is under way
    /// (`Engine::prune_skipped`): a burst of firings runs one at a time, not one each.
    pub pruning: std::sync::atomic::AtomicBool,
    /// How many records that prune left (what it could not remove raises the point at which
    /// the next one starts).
    pub pruned_to: std::sync::atomic::AtomicUsize,
    /// `run.skipped` lines: a flood of firings against a long run (a client can cause one
    /// at will) writes one a minute, with a count; the rest go to the debug level.
    pub skipped_log: crate::logging::Throttle,
}

/// Active and pending runs of one job.
#[derive(Default)]
pub struct JobRuns {
    /// Runs handed to the pool (queued in the channel or executing).
    pub active: HashSet<String>,
    /// Overlap `queue`: the one run waiting behind the active one.
    pub pending: Option<Work>,
    /// Runs the clock prepared ahead of their slot (`Engine::fire_held`): active, their
    /// `queued` record durable, until the clock hands them to the pool
    /// (`Engine::release_held`), where a worker prepares them and waits for the slot.
    pub held: Vec<Work>,
    /// Since when the job has had a run queued or executing.
    pub busy_since: Option<SystemTime>,
    /// The last stretch during which it had one (for the file_change self-trigger rule).
    pub last_busy: Option<(SystemTime, SystemTime)>,
    /// Start times the run budget counts; `None` until a job with a budget first fires
    /// (then seeded from its run records, so a restart does not reset it), and again when
    /// the job has no budget.
    pub budget: Option<Budget>,
    /// Its newest successful run (the dead-man's switch asks); `None` until first asked
    /// (then read from its records) or until a run succeeds, kept by the worker from then on.
    pub last_success: Option<Option<Success>>,
}

/// A job's newest successful run: when it ended, and its id (retention keeps its record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Success {
    pub at: DateTime<Utc>,
    pub run: String,
}

/// The rolling windows of a job's run budget (README "Run budgets"): `limits.
/// max_runs_per_hour` counts the runs admitted in the last 60 minutes, `max_runs_per_day`
/// those of the last 24 hours, at the moment of each firing. A firing is admitted (its time
/// recorded) or refused; a refused one is not counted. Memory: the times of the longest
/// window, at most its maximum (refusals keep every window at or below its maximum).
/// Each start keeps its run's id: retention never deletes a record a budget counts, so a
/// restart counts the same runs again (see [`Budget::runs`]).
#[derive(Debug, Default)]
pub struct Budget {
    /// Admitted firings and their run ids, oldest first.
    starts: VecDeque<(DateTime<Utc>, String)>,
}

/// One window of a budget: its field, maximum and length.
struct Window {
    field: &'static str,
    max: u64,
    len: Duration,
    words: &'static str,
}

fn windows(l: &Limits) -> impl Iterator<Item = Window> {
    let hour = l.max_runs_per_hour.map(|max| Window {
        field: "limits.max_runs_per_hour",
        max,
        len: Duration::hours(1),
        words: "hour",
    });
    let day = l.max_runs_per_day.map(|max| Window {
        field: "limits.max_runs_per_day",
        max,
        len: Duration::days(1),
        words: "24 hours",
    });
    hour.into_iter().chain(day)
}

/// Whether `l` sets a run budget.
pub fn has_budget(l: &Limits) -> bool {
    windows(l).next().is_some()
}

/// A firing refused by a budget: which one, and when it admits a run again.
#[derive(Debug, Clone, PartialEq)]
pub struct OverBudget {
    pub field: &'static str,
    pub max: u64,
    pub words: &'static str,
    pub frees_at: DateTime<Utc>,
}

impl OverBudget {
    /// Whole seconds until the budget frees (at least 1): a `Retry-After`.
    pub fn retry_after(&self) -> u64 {
        let wait = (self.frees_at - Utc::now()).to_std().unwrap_or_default();
        (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
    }
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "over the run budget: {} is {} and {} runs started in the last {}; the next run may start at {}",
            self.field,
            self.max,
            self.max,
            self.words,
            crate::time::rfc3339(self.frees_at)
        )
    }
}

/// A window's use: `(field, runs counted, max)`.
pub type BudgetUse = (&'static str, u64, u64);

impl Budget {
    /// A budget holding `starts` (any order; only those within the longest window of `l`
    /// are kept, at most its maximum).
    pub fn seeded(
        starts: impl IntoIterator<Item = (DateTime<Utc>, String)>,
        l: &Limits,
        now: DateTime<Utc>,
    ) -> Budget {
        let mut v: Vec<(DateTime<Utc>, String)> = starts.into_iter().collect();
        v.sort();
        let mut b = Budget {
            starts: v.into_iter().collect(),
        };
        b.forget_old(l, now);
        b
    }

    /// Drops start times no window of `l` counts any more, and any beyond the largest max.
    fn forget_old(&mut self, l: &Limits, now: DateTime<Utc>) {
        let longest = windows(l).map(|w| w.len).max().unwrap_or(Duration::zero());
        let cap = windows(l).map(|w| w.max).max().unwrap_or(0) as usize;
        while self
            .starts
            .front()
            .is_some_and(|(t, _)| *t <= now - longest)
            || self.starts.len() > cap
        {
            self.starts.pop_front();
        }
    }

    fn count_within(&self, len: Duration, now: DateTime<Utc>) -> (u64, Option<DateTime<Utc>>) {
        let from = now - len;
        let mut oldest = None;
        let mut n = 0;
        for (t, _) in self.starts.iter().rev().take_while(|(t, _)| *t > from) {
            n += 1;
            oldest = Some(*t);
        }
        (n, oldest)
    }

    /// Admits a firing at `now` for run `run` (recording it) or refuses it, naming the
    /// budget that is used up; when several are, the one that frees last.
    pub fn admit(&mut self, l: &Limits, now: DateTime<Utc>, run: &str) -> Result<(), OverBudget> {
        self.forget_old(l, now);
        let mut over: Option<OverBudget> = None;
        for w in windows(l) {
            let (n, _) = self.count_within(w.len, now);
            if n >= w.max {
                // The run that frees the window is the max-th newest within it.
                let idx = self.starts.len() - w.max as usize;
                let frees_at = self.starts[idx].0 + w.len;
                if over.as_ref().is_none_or(|o| frees_at > o.frees_at) {
                    over = Some(OverBudget {
                        field: w.field,
                        max: w.max,
                        words: w.words,
                        frees_at,
                    });
                }
            }
        }
        match over {
            Some(o) => Err(o),
            None => {
                self.starts.push_back((now, run.to_string()));
                Ok(())
            }
        }
    }

    /// The ids of the runs the budget counts (at most its largest maximum): retention keeps
    /// their records.
    pub fn runs(&self) -> impl Iterator<Item = &str> {
        self.starts.iter().map(|(_, id)| id.as_str())
    }

    /// Takes back the newest admission (its run could not be queued after all).
    pub fn refund(&mut self) {
        self.starts.pop_back();
    }

    /// Takes back the admission of run `run` (it was closed without starting).
    pub fn forget(&mut self, run: &str) {
        self.starts.retain(|(_, id)| id != run);
    }

    /// Each window's use at `now`.
    pub fn usage(&self, l: &Limits, now: DateTime<Utc>) -> Vec<BudgetUse> {
        windows(l)
            .map(|w| (w.field, self.count_within(w.len, now).0, w.max))
            .collect()
    }

    /// When a window's count next drops (the oldest counted start leaves it).
    pub fn next_change(&self, l: &Limits, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        windows(l)
            .filter_map(|w| self.count_within(w.len, now).1.map(|t| t + w.len))
            .min()
    }
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
            due: None,
        }
    }

    fn limits(hour: Option<u64>, day: Option<u64>) -> Limits {
        Limits {
            max_runs_per_hour: hour,
            max_runs_per_day: day,
            ..Limits::default()
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        crate::time::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn budgets_are_rolling_windows() {
        let l = limits(Some(2), Some(3));
        let mut b = Budget::default();
        assert!(b.admit(&l, at("2026-01-01T10:00:00Z"), "run_x").is_ok());
        assert!(b.admit(&l, at("2026-01-01T10:20:00Z"), "run_x").is_ok());
        // Third in the hour: refused, frees when the 10:00 run leaves the hour.
        let e = b
            .admit(&l, at("2026-01-01T10:30:00Z"), "run_x")
            .unwrap_err();
        assert_eq!(e.field, "limits.max_runs_per_hour");
        assert_eq!(e.frees_at, at("2026-01-01T11:00:00Z"));
        assert!(
            e.to_string().contains("limits.max_runs_per_hour is 2"),
            "{e}"
        );
        assert_eq!(
            b.usage(&l, at("2026-01-01T10:30:00Z")),
            vec![
                ("limits.max_runs_per_hour", 2, 2),
                ("limits.max_runs_per_day", 2, 3)
            ]
        );
        assert_eq!(
            b.next_change(&l, at("2026-01-01T10:30:00Z")),
            Some(at("2026-01-01T11:00:00Z"))
        );
        // A rolling hour later: admitted; the day's budget is then used up.
        assert!(b.admit(&l, at("2026-01-01T11:00:01Z"), "run_x").is_ok());
        let e = b
            .admit(&l, at("2026-01-01T12:30:00Z"), "run_x")
            .unwrap_err();
        assert_eq!(e.field, "limits.max_runs_per_day");
        assert_eq!(e.frees_at, at("2026-01-02T10:00:00Z"));
        // A refund gives the newest admission back; forgetting a run gives its own back.
        b.refund();
        assert!(b.admit(&l, at("2026-01-01T12:30:00Z"), "run_y").is_ok());
        b.forget("run_y");
        assert!(b.admit(&l, at("2026-01-01T12:30:00Z"), "run_z").is_ok());
        assert_eq!(b.runs().last(), Some("run_z"));
    }

    #[test]
    fn a_seeded_budget_keeps_only_what_its_windows_count() {
        let l = limits(Some(2), None);
        let now = at("2026-01-01T10:30:00Z");
        let b = Budget::seeded(
            [
                (at("2026-01-01T10:10:00Z"), "run_a".to_string()),
                (at("2025-12-31T10:00:00Z"), "run_b".to_string()),
                (at("2026-01-01T09:00:00Z"), "run_c".to_string()),
                (at("2026-01-01T10:20:00Z"), "run_d".to_string()),
                (at("2026-01-01T10:25:00Z"), "run_e".to_string()),
            ],
            &l,
            now,
        );
        // Only the last hour, and at most the max (the newest).
        assert_eq!(b.starts.len(), 2);
        assert_eq!(b.starts[0].0, at("2026-01-01T10:20:00Z"));
        assert_eq!(b.runs().collect::<Vec<_>>(), ["run_d", "run_e"]);
        assert_eq!(b.usage(&l, now), vec![("limits.max_runs_per_hour", 2, 2)]);
        assert!(!has_budget(&Limits::default()));
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
