//! How a firing becomes a run, and how runs end: the overlap decision ([`super::runs::decide`])
//! under the job's lock, the `queued` or `skipped` record written durably before anything is
//! sent, the hand-over to the pool, and the bookkeeping a worker does as a run starts and
//! ends. Every record write of a job holds its `deleted` guard shared (see `runs.rs`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::TrySendError;
use serde_json::{Map, Value};

use super::runs::{decide, Decision, JobSlot};
use super::{lock, Engine, Extra, FireError, Fired, Work};
use crate::metrics::Metrics;
use crate::run::RunRecord;

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
        let mut runs = lock(&slot.runs);
        let mut rec = RunRecord::queued(
            crate::ids::new_run_id(),
            &job.id,
            &job.name,
            Value::Object(trigger),
        );
        rec.node = self.cluster().map(|c| c.node().to_string());
        match decide(&runs, job.overlap) {
            Decision::Skip => {
                // A skipped record is final and no worker will touch it: write it outside
                // the job's lock, so a burst of firings does not queue behind one fsync at a
                // time.
                drop(runs);
                rec.skip("a run of this job was still active (overlap: skip)");
                return self.record_skip(&slot, rec);
            }
            Decision::Coalesce(id) => {
                Metrics::inc(&self.metrics.runs_coalesced_total);
                return Ok(Fired::Coalesced(id));
            }
            Decision::Park => {
                self.save_fired(&slot, &rec)?;
                let id = rec.id.clone();
                log::info!(event = "run.queued", job = job.name.as_str(), run = id.as_str(); "queued behind the active run (overlap: queue)");
                runs.pending = Some(Work {
                    job,
                    run: rec,
                    extra: Arc::new(extra),
                });
                Metrics::inc(&self.metrics.runs_queued);
                return Ok(Fired::Queued(id));
            }
            Decision::Send => {}
        }
        self.save_fired(&slot, &rec)?;
        let id = rec.id.clone();
        runs.activate(&id);
        let work = Work {
            job,
            run: rec,
            extra: Arc::new(extra),
        };
        // Counted before the send: a worker may take it (and count it down) at once.
        Metrics::inc(&self.metrics.runs_queued);
        match self.work_tx.try_send(work) {
            Ok(()) => Ok(Fired::Queued(id)),
            Err(TrySendError::Full(w)) | Err(TrySendError::Disconnected(w)) => {
                Metrics::dec(&self.metrics.runs_queued);
                runs.deactivate(&id);
                let mut rec = w.run;
                rec.skip(format!(
                    "the work queue is full ({} runs waiting for {} workers); this firing was dropped",
                    self.settings.queue_capacity, self.settings.workers
                ));
                drop(runs);
                self.record_skip(&slot, rec)
            }
        }
    }

    /// [`Engine::fire`] for trigger threads, which have no one to answer: a disabled or
    /// deleted job and shutdown are not errors there; a failed write is logged.
    pub fn fire_from_trigger(&self, job_id: &str, trigger: Map<String, Value>) {
        match self.fire(job_id, trigger, Extra::default(), false) {
            Ok(_)
            | Err(FireError::Disabled)
            | Err(FireError::NoSuchJob)
            | Err(FireError::ShuttingDown) => {}
            Err(FireError::Unavailable(e)) => {
                log::warn!(event = "fire.unavailable", job = job_id; "{e}")
            }
            Err(FireError::Store(e)) => {
                log::error!(event = "fire.error", job = job_id; "cannot record the run: {e}")
            }
        }
    }

    /// Writes a firing's record unless the job was deleted or unloaded meanwhile (then the
    /// firing is for no job: `NoSuchJob`).
    fn save_fired(&self, slot: &JobSlot, rec: &RunRecord) -> Result<(), FireError> {
        let deleted = slot.deleted.read().unwrap_or_else(|p| p.into_inner());
        if *deleted || self.job_by_id(&rec.job_id).is_none() {
            return Err(FireError::NoSuchJob);
        }
        self.store.save_run(rec).map_err(FireError::Store)
    }

    fn record_skip(&self, slot: &JobSlot, rec: RunRecord) -> Result<Fired, FireError> {
        self.save_fired(slot, &rec)?;
        Metrics::inc(&self.metrics.runs_skipped_total);
        log::info!(event = "run.skipped", job = rec.job_name.as_str(), run = rec.id.as_str(); "{}", rec.error.as_deref().unwrap_or(""));
        Ok(Fired::Skipped(rec.id))
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

    /// Deletes a job's oldest final records beyond `keep` (never a queued or running one).
    pub fn prune_runs(&self, job_id: &str, keep: usize) {
        let active = self.active_runs(job_id);
        let slot = self.job_slot(job_id);
        let deleted = slot.deleted.read().unwrap_or_else(|p| p.into_inner());
        if !*deleted {
            self.store.prune_runs(job_id, keep, &active);
        }
    }

    /// Called by a worker as it takes a run, before anything of it starts. Returns the run
    /// with the job as it is now: a PATCH made while the run waited applies (the prompt,
    /// agent, limits and outputs are the job's at start). None when the job is gone: the
    /// run is then closed without starting (see [`Engine::cancel_unstarted`]).
    pub fn start_run(&self, mut w: Work) -> Option<Work> {
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

    /// Takes every pending run (at shutdown, to mark them interrupted).
    pub fn take_all_pending(&self) -> Vec<Work> {
        let slots: Vec<_> = lock(&self.runs).values().cloned().collect();
        slots
            .iter()
            .filter_map(|s| lock(&s.runs).pending.take())
            .collect()
    }
}
