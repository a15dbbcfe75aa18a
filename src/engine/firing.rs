//! How a firing becomes a run, and how runs end: the overlap decision ([`super::runs::decide`])
//! under the job's lock, the `queued` or `skipped` record written durably before anything is
//! sent, the run budget (`limits.max_runs_per_*`, checked by one call, [`Engine::spend_budget`],
//! after the overlap decision), the hand-over to the pool, and the bookkeeping a worker does
//! as a run starts and ends. Every record write of a job holds its `deleted` guard shared (see `runs.rs`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::TrySendError;
use serde_json::{Map, Value};

use super::runs::{
    decide, has_budget, Budget, BudgetUse, Decision, JobRuns, JobSlot, OverBudget, Success,
};
use super::{lock, Engine, Extra, FireError, Fired, Work};
use crate::job::Job;
use crate::metrics::Metrics;
use crate::run::{RunRecord, RunStatus};

/// What a trigger thread, which has no one to answer, keeps of a firing: a disabled or
/// deleted job and shutdown are not errors there; a failed write is logged.
fn trigger_outcome(job_id: &str, r: Result<Fired, FireError>) -> Option<Fired> {
    match r {
        Ok(f) => Some(f),
        Err(FireError::Disabled) | Err(FireError::NoSuchJob) | Err(FireError::ShuttingDown) => None,
        Err(FireError::Unavailable(e)) | Err(FireError::Rejected(_, e)) => {
            log::warn!(event = "fire.unavailable", job = job_id; "{e}");
            None
        }
        Err(FireError::Store(e)) => {
            log::error!(event = "fire.error", job = job_id; "cannot record the run: {e}");
            None
        }
    }
}

/// Takes back a budget admission whose run was not queued after all.
fn refund(runs: &mut JobRuns) {
    if let Some(b) = runs.budget.as_mut() {
        b.refund();
    }
}

/// Most records read, newest first, to find a job's last success after a restart (the
/// clock's thread reads them for a dead-man's switch); `state.json` remembers a success
/// older than that ([`crate::store::state::ExpectState::last_success`]).
pub const SUCCESS_WALK: usize = 256;

impl Engine {
    /// Fires a job: applies its overlap policy, records the run and queues it.
    /// `trigger` is the run record's `trigger` object (`{"type": ..., ...context}`).
    /// `manual` firings run even when the job is disabled.
    pub fn fire(
        &self,
        id_or_name: &str,
        trigger: Map<String, Value>,
        extra: Extra,
        manual: bool,
    ) -> Result<Fired, FireError> {
        self.fire_or_hold(id_or_name, trigger, extra, manual, None)
    }

    /// [`Engine::fire`] ahead of the slot `due`, but a run that would be handed to the pool
    /// is held in the job's slot instead (`JobRuns::held`), its `queued` record already
    /// durable, until [`Engine::release_held`] sends it (the clock does at once unless it is
    /// stopping); its worker then prepares it and starts the agent at `due` (`Work::due`), so
    /// no fsync and no preparation stand between the slot and the agent. Returns
    /// `Fired::Queued` for a held run too. Like [`Engine::fire_from_trigger`], it returns only
    /// the held run's id (None when nothing is held: a skip, a run parked behind an active
    /// one, a disabled or deleted job, shutdown, a failed write, which is logged).
    pub fn fire_held(
        &self,
        job_id: &str,
        trigger: Map<String, Value>,
        due: SystemTime,
    ) -> Option<String> {
        match trigger_outcome(
            job_id,
            self.fire_or_hold(job_id, trigger, Extra::default(), false, Some(due)),
        )? {
            Fired::Queued(id) => Some(id),
            _ => None,
        }
    }

    fn fire_or_hold(
        &self,
        id_or_name: &str,
        trigger: Map<String, Value>,
        extra: Extra,
        manual: bool,
        hold: Option<SystemTime>,
    ) -> Result<Fired, FireError> {
        if self.is_shutting_down() {
            return Err(FireError::ShuttingDown);
        }
        self.cluster_ready()?;
        let job = self.job(id_or_name).ok_or(FireError::NoSuchJob)?;
        if !job.enabled && !manual {
            return Err(FireError::Disabled);
        }
        Metrics::inc(&self.metrics.firings_total);
        // Cluster mode: into the cluster's queue (engine/cluster.rs).
        if let Some(r) = self.fire_clustered(&job, &trigger, &extra) {
            return r;
        }
        let slot = self.job_slot(&job.id);
        self.seed_budget(&slot, &job);
        let mut runs = lock(&slot.runs);
        let mut rec = RunRecord::queued(
            crate::ids::new_run_id(),
            &job.id,
            &job.name,
            Value::Object(trigger),
        );
        rec.node = self.cluster().map(|c| c.node().to_string());
        let decision = decide(&runs, job.overlap);
        // Run budgets: only a firing that would become a run spends one.
        if matches!(decision, Decision::Park | Decision::Send) {
            if let Err(over) = self.spend_budget(&mut runs, &job, &rec.id) {
                drop(runs);
                let retry_after = over.retry_after();
                rec.skip(over.to_string());
                Metrics::inc(&self.metrics.runs_over_budget_total);
                let id = self
                    .record_skip(&slot, rec, &job, false)?
                    .run_id()
                    .to_string();
                return Ok(Fired::OverBudget(id, retry_after));
            }
        }
        match decision {
            Decision::Skip => {
                // A skipped record is final and no worker will touch it: write it outside
                // the job's lock, so a burst of firings does not queue behind one fsync at a
                // time.
                drop(runs);
                rec.skip("a run of this job was still active (overlap: skip)");
                return self.record_skip(&slot, rec, &job, false);
            }
            Decision::Coalesce(id) => {
                Metrics::inc(&self.metrics.runs_coalesced_total);
                return Ok(Fired::Coalesced(id));
            }
            Decision::Park => {
                if let Err(e) = self.save_fired(&slot, &rec, false) {
                    refund(&mut runs);
                    return Err(e);
                }
                let id = rec.id.clone();
                log::info!(event = "run.queued", job = job.name.as_str(), run = id.as_str(); "queued behind the active run (overlap: queue)");
                runs.pending = Some(Work {
                    job,
                    run: rec,
                    extra: Arc::new(extra),
                    due: None,
                });
                Metrics::inc(&self.metrics.runs_queued);
                return Ok(Fired::Queued(id));
            }
            Decision::Send => {}
        }
        if let Err(e) = self.save_fired(&slot, &rec, false) {
            refund(&mut runs);
            return Err(e);
        }
        let id = rec.id.clone();
        runs.activate(&id);
        let work = Work {
            job,
            run: rec,
            extra: Arc::new(extra),
            due: hold,
        };
        // Counted before the send: a worker may take it (and count it down) at once.
        Metrics::inc(&self.metrics.runs_queued);
        if hold.is_some() {
            runs.held.push(work);
            return Ok(Fired::Queued(id));
        }
        self.send_work(&slot, runs, work)
    }

    /// Hands a held run ([`Engine::fire_held`]) to the pool now. Nothing happens if it is
    /// no longer held (shutdown took it).
    pub fn release_held(&self, job_id: &str, run_id: &str) {
        let slot = self.job_slot(job_id);
        let mut runs = lock(&slot.runs);
        let Some(i) = runs.held.iter().position(|w| w.run.id == run_id) else {
            return;
        };
        let work = runs.held.swap_remove(i);
        trigger_outcome(job_id, self.send_work(&slot, runs, work));
    }

    /// Takes a held run back (the clock stops before its slot): the caller closes it.
    pub fn take_held(&self, job_id: &str, run_id: &str) -> Option<Work> {
        let slot = self.job_slot(job_id);
        let mut runs = lock(&slot.runs);
        let i = runs.held.iter().position(|w| w.run.id == run_id)?;
        Some(runs.held.swap_remove(i))
    }

    /// `try_send`s an active run's work to the pool, under its job's lock (`runs`); a full
    /// queue turns it into a `skipped` record.
    fn send_work(
        &self,
        slot: &JobSlot,
        mut runs: std::sync::MutexGuard<'_, JobRuns>,
        work: Work,
    ) -> Result<Fired, FireError> {
        let id = work.run.id.clone();
        match self.work_tx.try_send(work) {
            Ok(()) => Ok(Fired::Queued(id)),
            Err(TrySendError::Full(w)) | Err(TrySendError::Disconnected(w)) => {
                Metrics::dec(&self.metrics.runs_queued);
                runs.deactivate(&id);
                // This run's own admission: a held run's was made at its preparation, and
                // other firings may have been admitted since (`refund` takes the newest).
                if let Some(b) = runs.budget.as_mut() {
                    b.forget(&id);
                }
                let mut rec = w.run;
                rec.skip(format!(
                    "the work queue is full ({} runs waiting for {} workers); this firing was dropped",
                    self.settings.queue_capacity, self.settings.workers
                ));
                let job = w.job;
                drop(runs);
                // Its `queued` record was written already: this one replaces it.
                self.record_skip(slot, rec, &job, true)
            }
        }
    }

    /// Spends one run of the job's budget for a `job test --exec` agent, which counts like a
    /// manual run (README "Run budgets"), or says which budget is used up. It leaves no
    /// record, so a restart does not count it again.
    pub fn spend_budget_for_test(&self, job: &Job, test_id: &str) -> Result<(), OverBudget> {
        let slot = self.job_slot(&job.id);
        self.seed_budget(&slot, job);
        let mut runs = lock(&slot.runs);
        self.spend_budget(&mut runs, job, test_id)
    }

    /// Seeds a job's budget from its records if it has a budget not known yet: the records
    /// are read without the job's lock (firings of other kinds and the worker's record writes
    /// go on meanwhile), then filled in only if no one did it first.
    fn seed_budget(&self, slot: &JobSlot, job: &Job) {
        if !has_budget(&job.limits) || lock(&slot.runs).budget.is_some() {
            return;
        }
        let seeded = self.budget_from_records(job, chrono::Utc::now());
        let mut runs = lock(&slot.runs);
        if runs.budget.is_none() {
            runs.budget = Some(seeded);
        }
    }

    /// Spends one run of the job's budget for run `run_id`, if it has one, or says which
    /// budget is used up. The budget was seeded by [`Engine::seed_budget`] before the lock
    /// was taken; only if a concurrent change of the job's limits dropped it meanwhile are
    /// the records read here, under the lock.
    fn spend_budget(&self, runs: &mut JobRuns, job: &Job, run_id: &str) -> Result<(), OverBudget> {
        if !has_budget(&job.limits) {
            runs.budget = None;
            return Ok(());
        }
        let now = chrono::Utc::now();
        let budget = runs
            .budget
            .get_or_insert_with(|| self.budget_from_records(job, now));
        budget.admit(&job.limits, now, run_id)?;
        // The API's view shows the budget's use.
        self.views.invalidate(&job.id);
        Ok(())
    }

    /// A job's budget as its run records say, so a restart does not reset it: the queue
    /// times of its records of the last 24 hours that are not `skipped` (ids are in time
    /// order, so the walk stops at the first older one; retention bounds it, and never
    /// deletes a record a budget counts: [`Engine::prune_runs`]).
    fn budget_from_records(&self, job: &Job, now: chrono::DateTime<chrono::Utc>) -> Budget {
        let horizon = now - chrono::Duration::days(1);
        let mut starts = Vec::new();
        for id in self.store.local_run_ids(&job.id) {
            let Some(r) = self.store.load_run(&job.id, &id) else {
                continue;
            };
            let Some(t) = crate::time::parse_rfc3339(&r.queued_at) else {
                continue;
            };
            if t <= horizon {
                break;
            }
            if r.status != RunStatus::Skipped {
                starts.push((t, id));
            }
        }
        Budget::seeded(starts, &job.limits, now)
    }

    /// The use of a job's run budget (`(field, used, max)` per window) and when it next
    /// drops; empty for a job without one.
    pub fn budget_use(&self, job: &Job) -> (Vec<BudgetUse>, Option<chrono::DateTime<chrono::Utc>>) {
        if !has_budget(&job.limits) {
            return (Vec::new(), None);
        }
        let now = chrono::Utc::now();
        let slot = self.job_slot(&job.id);
        self.seed_budget(&slot, job);
        let mut runs = lock(&slot.runs);
        let budget = runs
            .budget
            .get_or_insert_with(|| self.budget_from_records(job, now));
        (
            budget.usage(&job.limits, now),
            budget.next_change(&job.limits, now),
        )
    }

    /// When the job's newest successful run ended: from memory once known, else from its
    /// newest [`SUCCESS_WALK`] records, read without the job's lock (a success the worker
    /// notes meanwhile wins: it is newer than any record).
    pub fn last_success(&self, job_id: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        let slot = self.job_slot(job_id);
        if let Some(known) = &lock(&slot.runs).last_success {
            return known.as_ref().map(|s| s.at);
        }
        let found = self
            .store
            .local_run_ids(job_id)
            .iter()
            .take(SUCCESS_WALK)
            .filter_map(|id| self.store.load_run(job_id, id))
            .find(|r| r.status == RunStatus::Succeeded)
            .and_then(|r| {
                let at = r
                    .finished_at
                    .as_deref()
                    .and_then(crate::time::parse_rfc3339)?;
                Some(Success { at, run: r.id })
            });
        let mut runs = lock(&slot.runs);
        runs.last_success
            .get_or_insert(found)
            .as_ref()
            .map(|s| s.at)
    }

    /// Notes a run's success as soon as its outcome is known (before its outputs are
    /// delivered and its record written), so a dead-man's switch whose deadline comes during
    /// a slow delivery counts it. The newest success is always the one just noted.
    pub fn note_success(&self, job_id: &str, run_id: &str, at: chrono::DateTime<chrono::Utc>) {
        let slot = self.job_slot(job_id);
        let mut runs = lock(&slot.runs);
        let newer = match &runs.last_success {
            Some(Some(known)) => at >= known.at,
            _ => true,
        };
        if newer {
            runs.last_success = Some(Some(Success {
                at,
                run: run_id.to_string(),
            }));
        }
    }

    /// How many jobs would refuse a firing now because a run budget is used up.
    pub fn jobs_over_budget(&self) -> u64 {
        self.jobs()
            .iter()
            .filter(|j| {
                self.budget_use(j)
                    .0
                    .iter()
                    .any(|(_, used, max)| used >= max)
            })
            .count() as u64
    }

    /// [`Engine::fire`] for trigger threads, which have no one to answer: a disabled or
    /// deleted job and shutdown are not errors there; a failed write is logged.
    pub fn fire_from_trigger(&self, job_id: &str, trigger: Map<String, Value>) {
        trigger_outcome(job_id, self.fire(job_id, trigger, Extra::default(), false));
    }

    /// Writes a firing's record unless the job was deleted or unloaded meanwhile (then the
    /// firing is for no job: `NoSuchJob`). `again`: the run has a record already (a `queued`
    /// one the full work queue refused): this one replaces its file (`Store::save_run`), not
    /// through the intake journal, whose checkpoint never replaces a file — when a segment
    /// switch fell between the two, the checkpoint of the older segment wrote the `queued`
    /// copy, and the newer one, finding a file, left it: the run stayed `queued` on disk.
    fn save_fired(&self, slot: &JobSlot, rec: &RunRecord, again: bool) -> Result<(), FireError> {
        let deleted = slot.deleted.read().unwrap_or_else(|p| p.into_inner());
        if *deleted || self.job_by_id(&rec.job_id).is_none() {
            return Err(FireError::NoSuchJob);
        }
        if again {
            return self.store.save_run(rec).map_err(FireError::Store);
        }
        self.store.save_new_run(rec).map_err(FireError::Store)
    }

    fn record_skip(
        &self,
        slot: &JobSlot,
        rec: RunRecord,
        job: &Job,
        again: bool,
    ) -> Result<Fired, FireError> {
        self.save_fired(slot, &rec, again)?;
        Metrics::inc(&self.metrics.runs_skipped_total);
        let why = rec.error.as_deref().unwrap_or("");
        match slot.skipped_log.allow() {
            Some(n) => {
                log::info!(event = "run.skipped", job = rec.job_name.as_str(), run = rec.id.as_str(); "{why}{}", crate::logging::held_back(n))
            }
            None => {
                log::debug!(event = "run.skipped", job = rec.job_name.as_str(), run = rec.id.as_str(); "{why}")
            }
        }
        self.prune_skipped(slot, job);
        Ok(Fired::Skipped(rec.id))
    }

    /// Retention for skipped firings, as they arrive: a job whose run goes on (overlap
    /// `skip`, a full queue, a spent budget) while its triggers keep firing would otherwise
    /// pile up records without bound until the run ends. Once it has a quarter of `history`
    /// (at least 16) records too many, its oldest final ones go down to `history`, in one
    /// prune for many firings. It never waits: a record the journal is still checkpointing
    /// stays for a later prune, and one only the journal holds is let go of there without a
    /// file ever being written (`Store::prune_runs`).
    fn prune_skipped(&self, slot: &JobSlot, job: &Job) {
        use std::sync::atomic::Ordering;
        let keep = job.history as usize;
        let slack = (keep / 4).max(16);
        // From what the last prune left: records it had to keep (a budget's runs, the newest
        // success, ones the journal was checkpointing) do not make every firing prune again.
        let floor = keep.max(slot.pruned_to.load(Ordering::Relaxed));
        if self.cluster().is_some() || self.store.local_run_count(&job.id) <= floor + slack {
            return;
        }
        if slot.pruning.swap(true, Ordering::AcqRel) {
            return;
        }
        let left = self.prune_within(&job.id, keep, Duration::ZERO);
        slot.pruned_to.store(left, Ordering::Relaxed);
        slot.pruning.store(false, Ordering::Release);
    }

    pub(super) fn job_slot(&self, job_id: &str) -> Arc<JobSlot> {
        lock(&self.runs)
            .entry(job_id.to_string())
            .or_default()
            .clone()
    }

    /// Writes a run record for a worker; returns whether it was written. Nothing is written
    /// for a job deleted meanwhile (its records went with it); a job whose file was removed
    /// by hand keeps its records, so its runs are still recorded.
    pub fn save_record(&self, rec: &RunRecord) -> bool {
        // A run is active from its firing until `finish_run`, and its slot stays until
        // then, so the slot found here is the one a deletion marked.
        let slot = self.job_slot(&rec.job_id);
        let deleted = slot.deleted.read().unwrap_or_else(|p| p.into_inner());
        if *deleted {
            return false;
        }
        match self.store.save_run(rec) {
            Ok(()) => true,
            Err(e) => {
                log::error!(event = "store.error", job = rec.job_name.as_str(), run = rec.id.as_str(); "{e}");
                false
            }
        }
    }

    /// Keeps a webhook run's body beside its record (`Store::save_payload`), under the same
    /// guard as the record: nothing is written for a deleted job.
    pub fn save_payload(&self, rec: &RunRecord, data: &[u8]) {
        let slot = self.job_slot(&rec.job_id);
        let deleted = slot.deleted.read().unwrap_or_else(|p| p.into_inner());
        if *deleted {
            return;
        }
        if let Err(e) = self.store.save_payload(&rec.job_id, &rec.id, data) {
            log::warn!(event = "store.error", job = rec.job_name.as_str(), run = rec.id.as_str(); "{e}");
        }
    }

    /// Deletes a job's oldest final records beyond `keep`: never a queued or running one,
    /// nor one a restart needs — the runs its budget counts (at most its largest maximum)
    /// and its newest success (the dead-man's switch's). No extra write on any path: the
    /// records themselves stay the durable memory of both.
    pub fn prune_runs(&self, job_id: &str, keep: usize) {
        self.prune_within(job_id, keep, Duration::from_secs(10));
    }

    /// [`Engine::prune_runs`], waiting at most `patience` for records the journal is
    /// checkpointing (zero: the prune after a skipped firing, on the intake path, which
    /// neither waits for the journal nor flushes the directory). Returns how many records
    /// the job has left.
    fn prune_within(&self, job_id: &str, keep: usize, patience: Duration) -> usize {
        // The ids first: a run fired after them is not among them, and every run among
        // them that is active is in `active`, which is taken after (a firing saves its
        // record and activates it under its job's `runs`).
        let ids = self.store.local_run_ids(job_id);
        let mut active = self.active_runs(job_id);
        let slot = self.job_slot(job_id);
        {
            let runs = lock(&slot.runs);
            if let Some(b) = &runs.budget {
                active.extend(b.runs().map(String::from));
            }
            if let Some(Some(ok)) = &runs.last_success {
                active.insert(ok.run.clone());
            }
        }
        let deleted = slot.deleted.read().unwrap_or_else(|p| p.into_inner());
        let listed = ids.len();
        if *deleted {
            return listed;
        }
        listed - self.store.prune_runs(job_id, ids, keep, &active, patience)
    }

    /// Called by a worker as it takes a run, before anything of it starts. Returns the run
    /// with the job as it is now: a PATCH made while the run waited applies (the prompt,
    /// agent, limits and outputs are the job's at start). None when the job is gone: the
    /// run is then closed without starting (see [`Engine::cancel_unstarted`]).
    pub fn start_run(&self, mut w: Work) -> Option<Work> {
        if self.fenced_here(&w.run.id) {
            log::warn!(event = "run.fenced", job = w.run.job_name.as_str(), run = w.run.id.as_str(); "not started: this node's lease lapsed after it claimed the run, which the cluster may run elsewhere");
            return None;
        }
        match self.job_by_id(&w.job.id) {
            Some(job) => {
                w.run.job_name = job.name.clone();
                w.run.node = self.cluster().map(|c| c.node().to_string());
                w.job = job;
                Some(w)
            }
            None => {
                self.cancel_unstarted(w.run);
                None
            }
        }
    }

    /// Called by a worker at the slot of a run it took ahead of it (`Work::due`), just before
    /// the agent would start, when it was there before the slot: the job as it is now, or
    /// None when the run must not start, which is then closed. A job deleted or unloaded
    /// meanwhile cancels it as [`Engine::start_run`] does; one disabled before the slot skips
    /// it (its firing is the slot's, which a disabled job does not have: its budget gets the
    /// run back).
    pub fn at_slot(&self, rec: &RunRecord) -> Option<Arc<Job>> {
        let Some(job) = self.job_by_id(&rec.job_id) else {
            self.cancel_unstarted(rec.clone());
            return None;
        };
        if job.enabled {
            return Some(job);
        }
        if let Some(b) = lock(&self.job_slot(&job.id).runs).budget.as_mut() {
            b.forget(&rec.id);
        }
        self.views.invalidate(&job.id);
        let mut rec = rec.clone();
        rec.skip("the job was disabled before this run's slot");
        log::info!(event = "run.skipped", job = rec.job_name.as_str(), run = rec.id.as_str(); "the job was disabled before this run's slot");
        if self.save_record(&rec) {
            Metrics::inc(&self.metrics.runs_skipped_total);
        }
        None
    }

    /// Called by a worker when a run is over. Returns the job's pending run, which the same
    /// worker executes next (it stays active, so the overlap rule keeps holding).
    pub fn finish_run(&self, job_id: &str, run_id: &str) -> Option<Work> {
        self.finish_cluster_run(job_id, run_id);
        let slot = self.job_slot(job_id);
        let mut runs = lock(&slot.runs);
        let next = runs.pending.take();
        if let Some(w) = &next {
            runs.active.insert(w.run.id.clone());
        }
        let idle = runs.deactivate(run_id);
        drop(runs);
        if idle && self.job(job_id).is_none() {
            lock(&self.runs).remove(job_id);
        }
        next
    }

    /// Whether a change to a file of a job's file_change root counts as the job's own: made
    /// while a run is queued or executing. `mtime` is the file's modification time (None if it
    /// is gone); without it, a change seen within `grace` after the last run is the run's.
    pub fn is_own_change(&self, job_id: &str, mtime: Option<SystemTime>, grace: Duration) -> bool {
        let slot = self.job_slot(job_id);
        let runs = lock(&slot.runs);
        if !runs.active.is_empty() || runs.pending.is_some() {
            return true;
        }
        let Some((start, end)) = runs.last_busy else {
            return false;
        };
        match mtime {
            Some(m) => m >= start && m <= end,
            None => SystemTime::now()
                .duration_since(end)
                .is_ok_and(|d| d < grace),
        }
    }

    /// Whether the work queue is full (webhooks answer 429 then).
    pub fn queue_full(&self) -> bool {
        self.work_tx.is_full()
    }

    /// Run ids that are queued or executing for a job (protected from retention).
    pub fn active_runs(&self, job_id: &str) -> HashSet<String> {
        let slot = self.job_slot(job_id);
        let runs = lock(&slot.runs);
        let mut s = runs.active.clone();
        if let Some(p) = &runs.pending {
            s.insert(p.run.id.clone());
        }
        s
    }

    /// Takes every pending and held run (at shutdown, to mark them interrupted).
    pub fn take_all_pending(&self) -> Vec<Work> {
        let slots: Vec<_> = lock(&self.runs).values().cloned().collect();
        slots
            .iter()
            .flat_map(|s| {
                let mut runs = lock(&s.runs);
                let mut out: Vec<Work> = runs.held.drain(..).collect();
                out.extend(runs.pending.take());
                out
            })
            .collect()
    }
}
