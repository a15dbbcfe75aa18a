//! How the job table changes: API writes (`put_job`, `remove_job`), job files written or
//! removed while the daemon runs, and SIGHUP. Every change is made durable first (through
//! the store), then swapped in, then announced to the trigger threads
//! ([`Engine::subscribe`]). Nothing else mutates the job table.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{lock, log_job_warnings, Engine, JobError};
use crate::job::Job;
use crate::metrics::Metrics;
use crate::run::RunRecord;

impl Engine {
    /// Stores a new or changed job durably, then swaps it in and re-plans it. `build` gets
    /// the current version (None for a new job) under the mutation lock.
    pub fn put_job<E>(
        &self,
        existing_id: Option<&str>,
        build: impl FnOnce(Option<&Job>) -> Result<Job, E>,
    ) -> Result<Result<Arc<Job>, E>, JobError> {
        let _g = lock(&self.mutate);
        let current = match existing_id {
            Some(id) => Some(self.job(id).ok_or(JobError::NotFound)?),
            None => None,
        };
        let job = match build(current.as_deref()) {
            Ok(j) => j,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(other) = self.job(&job.name) {
            if other.id != job.id {
                return Err(JobError::NameTaken(job.name));
            }
        }
        if current.as_deref() != Some(&job) {
            self.persist_job(&job, current.as_deref())?;
        }
        Ok(Ok(self.install(job)))
    }

    /// Puts `job` in memory (no disk write) and re-plans it.
    pub(super) fn install(&self, job: Job) -> Arc<Job> {
        let job = Arc::new(job);
        {
            let mut t = self.table_mut();
            t.insert(job.clone());
            // Until the clock has re-planned it, the next fire time is computed on demand.
            lock(&self.next_fire).remove(&job.id);
            self.metrics.jobs.store(t.len() as u64, Ordering::Relaxed);
        }
        self.views.invalidate(&job.id);
        self.notify_change(&job.id);
        job
    }

    /// Deletes a job, its file and its run records. Its pending run is dropped and runs
    /// still waiting in the work queue never start (see [`Engine::start_run`]); a run that is
    /// executing finishes, but its record is not kept.
    pub fn remove_job(&self, id_or_name: &str) -> Result<Arc<Job>, JobError> {
        let _g = lock(&self.mutate);
        let job = self.job(id_or_name).ok_or(JobError::NotFound)?;
        self.delete_loaded(job, true)
    }

    /// Deletes a loaded job (under `mutate`): from the cluster too when `shared` (an API
    /// deletion; a deletion seen by the cluster's watch is only applied here).
    pub(super) fn delete_loaded(&self, job: Arc<Job>, shared: bool) -> Result<Arc<Job>, JobError> {
        let slot = self.job_slot(&job.id);
        let pending = {
            let mut runs = lock(&slot.runs);
            let mut deleted = slot.deleted.write().unwrap_or_else(|p| p.into_inner());
            if shared {
                self.unpersist_job(&job.id)?;
            }
            self.store.delete_job(&job.id).map_err(JobError::Store)?;
            *deleted = true;
            runs.pending.take()
        };
        if let Some(w) = pending {
            Metrics::dec(&self.metrics.runs_queued);
            log::info!(event = "run.cancelled", job = job.name.as_str(), run = w.run.id.as_str(); "the job was deleted before this run started");
        }
        self.forget(&job.id);
        Ok(job)
    }

    /// Unloads a job whose file is gone (removed by hand), keeping its records: its pending
    /// run is recorded `skipped`; runs that are executing finish and are recorded.
    pub(super) fn unload(&self, id: &str) {
        let pending = lock(&self.runs)
            .get(id)
            .cloned()
            .and_then(|slot| lock(&slot.runs).pending.take());
        if let Some(w) = pending {
            Metrics::dec(&self.metrics.runs_queued);
            self.cancel_unstarted(w.run);
        }
        self.forget(id);
    }

    /// Closes a run that will not start because its job is gone: recorded `skipped`, unless
    /// its records were deleted with the job.
    pub(super) fn cancel_unstarted(&self, mut rec: RunRecord) {
        rec.skip("the job was removed before this run started");
        log::info!(event = "run.cancelled", job = rec.job_name.as_str(), run = rec.id.as_str(); "the job was removed before this run started");
        if self.save_record(&rec) {
            Metrics::inc(&self.metrics.runs_skipped_total);
        }
    }

    fn forget(&self, id: &str) {
        lock(&self.next_fire).remove(id);
        {
            let mut t = self.table_mut();
            t.remove(id);
            self.metrics.jobs.store(t.len() as u64, Ordering::Relaxed);
        }
        self.views.invalidate(id);
        self.notify_change(id);
    }

    /// Re-reads one job file after it changed on disk (a CLI `job add`, a hand edit).
    /// Identical content is a no-op; a vanished file removes the job.
    pub fn reload_job_file(&self, path: &Path) {
        let _g = lock(&self.mutate);
        let Some(id) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            return;
        };
        if !path.exists() {
            if self.job(&id).is_some_and(|j| j.id == id) {
                self.unload(&id);
                log::info!(event = "job.removed", job = id.as_str(); "job file {} was removed; job unloaded", path.display());
            }
            return;
        }
        match self.store.load_job_file(path) {
            Ok(job) => {
                if self.job(&id).as_deref() == Some(&job) {
                    return;
                }
                if let Some(other) = self.job(&job.name) {
                    if other.id != job.id {
                        log::error!(event = "job.rejected", job = job.name.as_str(); "job file {} uses the name {:?} of job {}; not loaded", path.display(), job.name, other.id);
                        return;
                    }
                }
                log::info!(event = "job.loaded", job = job.name.as_str(), id = job.id.as_str(); "job loaded from {}", path.display());
                log_job_warnings(&job);
                self.install(job);
            }
            Err(reason) => {
                // A file being written by hand may be caught mid-edit; report, keep the old.
                log::error!(event = "job.invalid", path = path.display().to_string().as_str(); "job file {} is not usable: {reason}; keeping the previous version if any", path.display());
            }
        }
    }

    /// Reloads every job file (SIGHUP).
    pub fn reload_all(&self) {
        // A hand edit anywhere is seen: nothing cached survives a SIGHUP.
        self.views.invalidate_all();
        self.store.forget_run_index();
        if self.cluster().is_some() {
            // Jobs live in etcd: read them all again.
            self.resync_cluster_jobs();
            return;
        }
        let files = self.store.job_files();
        let on_disk: HashSet<String> = files
            .iter()
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        for j in self.jobs() {
            if !on_disk.contains(&j.id) {
                let _g = lock(&self.mutate);
                self.unload(&j.id);
                log::info!(event = "job.removed", job = j.name.as_str(); "job file gone; job unloaded");
            }
        }
        for p in files {
            self.reload_job_file(&p);
        }
    }

    /// Records the next fire instant of a job as planned by the clock (None: not scheduled).
    pub fn set_next_fire(&self, job_id: &str, at: Option<DateTime<Utc>>) {
        let old = {
            let mut m = lock(&self.next_fire);
            match at {
                Some(_) => m.insert(job_id.to_string(), at),
                // Not scheduled (disabled, no clock trigger, deleted): computed on demand.
                None => m.remove(job_id),
            }
        };
        // After the plan changed, so a view rendered from the old plan is not kept.
        let changed = match at {
            Some(_) => old != Some(at),
            None => old.is_some(),
        };
        if changed {
            self.views.invalidate(job_id);
        }
    }

    /// The next instant any of a job's clock triggers fires (None: not scheduled). The
    /// clock's plan when it has one; computed here for a job it has not planned yet (just
    /// created), so an API answer never shows a stale or missing time.
    pub fn next_fire(&self, job: &Job) -> Option<DateTime<Utc>> {
        if let Some(at) = lock(&self.next_fire).get(&job.id) {
            if at.is_none_or(|t| t > Utc::now()) {
                return *at;
            }
        }
        crate::plan::job_next_fire(job, self.started_at, Utc::now())
    }
}
