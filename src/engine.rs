//! The daemon's shared state: the job table, which runs are active per job, and the one
//! function every trigger calls, [`Engine::fire`].
//!
//! `fire` applies the overlap policy, writes the `queued` (or `skipped`) run record, and
//! hands the work to the pool over a bounded channel. Job changes (API, CLI file drops,
//! SIGHUP) go through [`Engine::put_job`] / [`Engine::remove_job`], which also tell the
//! clock to re-plan. Nothing else mutates the job table.
//!
//! A queued run carries the job as it was fired; [`Engine::start_run`] swaps in the job as
//! it is when a worker takes the run, or closes the run if the job is gone. Every run-record
//! write of a job (firing, worker, retention) holds that job's `deleted` guard shared, and a
//! deletion holds it exclusively, so records are never written into a job being deleted.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::{Map, Value};

use crate::job::{Job, Overlap};
use crate::metrics::Metrics;
use crate::run::{RunRecord, RunStatus};
use crate::store::Store;

/// Daemon settings resolved from flags, `config.json` and defaults.
#[derive(Clone, Debug)]
pub struct Settings {
    pub default_agent: Option<Vec<String>>,
    pub workers: usize,
    pub grace_seconds: u64,
    pub max_body_bytes: usize,
    pub queue_capacity: usize,
    /// How often the git poller reads watched repositories.
    pub git_poll: std::time::Duration,
}

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

/// Messages to the scheduler clock.
#[derive(Debug)]
pub enum ClockMsg {
    /// A job was added, changed or removed: re-plan it.
    Job(String),
    /// Stop the clock thread.
    Stop,
}

/// What a firing turned into.
#[derive(Debug, Clone, PartialEq)]
pub enum Fired {
    /// A new run is queued (or pending behind the active one).
    Queued(String),
    /// Merged into the already pending run with this id (overlap `queue`).
    Coalesced(String),
    /// Recorded as a skipped run.
    Skipped(String),
}

impl Fired {
    /// The run id the firing maps to.
    pub fn run_id(&self) -> &str {
        match self {
            Fired::Queued(id) | Fired::Coalesced(id) | Fired::Skipped(id) => id,
        }
    }
}

/// Why a firing did not happen.
#[derive(Debug)]
pub enum FireError {
    NoSuchJob,
    Disabled,
    ShuttingDown,
    Store(String),
}

#[derive(Default)]
struct JobTable {
    by_id: HashMap<String, Arc<Job>>,
    by_name: HashMap<String, String>,
}

/// One job's run bookkeeping. Lock order: `runs`, then `deleted`.
#[derive(Default)]
struct JobSlot {
    runs: Mutex<JobRuns>,
    /// Guards the job's run records against its deletion: every record write holds it
    /// shared and checks it; [`Engine::remove_job`] holds it exclusively while it removes the
    /// records, then sets it. Once set, nothing is written for the job again, so no write can
    /// fail halfway through a deletion, make it fail, or leave a `runs/<job-id>/` behind.
    deleted: RwLock<bool>,
}

/// Active and pending runs of one job.
#[derive(Default)]
struct JobRuns {
    /// Runs handed to the pool (queued in the channel or executing).
    active: HashSet<String>,
    /// Overlap `queue`: the one run waiting behind the active one.
    pending: Option<Work>,
    /// Since when the job has had a run queued or executing.
    busy_since: Option<SystemTime>,
    /// The last stretch during which it had one (for the file_change self-trigger rule).
    last_busy: Option<(SystemTime, SystemTime)>,
}

/// Shared daemon state; one `Arc<Engine>` is handed to every thread.
pub struct Engine {
    pub store: Store,
    pub settings: Settings,
    pub metrics: Metrics,
    pub started: Instant,
    pub started_at: DateTime<Utc>,
    jobs: RwLock<JobTable>,
    /// Serializes job mutations (check name, write file, swap in memory).
    mutate: Mutex<()>,
    runs: Mutex<HashMap<String, Arc<JobSlot>>>,
    /// Kill switches of running agents, by run id.
    running: Mutex<HashMap<String, Sender<()>>>,
    work_tx: Sender<Work>,
    clock_tx: Sender<ClockMsg>,
    /// Trigger threads that re-plan a job when it changes (file watcher, git poller).
    listeners: Mutex<Vec<Sender<String>>>,
    /// Next fire instant per job, published by the clock.
    next_fire: Mutex<HashMap<String, Option<DateTime<Utc>>>>,
    /// Webhook path → ids of the jobs with a webhook trigger on it.
    hooks: RwLock<HashMap<String, Vec<String>>>,
    shutting_down: AtomicBool,
    /// Dropped at shutdown, which wakes every receiver of `shutdown_rx` at once.
    shutdown_tx: Mutex<Option<Sender<()>>>,
    shutdown_rx: Receiver<()>,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Errors from job mutations, mapped to HTTP statuses by the API.
#[derive(Debug)]
pub enum JobError {
    NameTaken(String),
    NotFound,
    Store(String),
}

impl Engine {
    /// Builds the engine with the jobs loaded from disk.
    pub fn new(
        store: Store,
        settings: Settings,
        jobs: Vec<Job>,
        work_tx: Sender<Work>,
        clock_tx: Sender<ClockMsg>,
    ) -> Engine {
        let mut table = JobTable::default();
        let mut hooks: HashMap<String, Vec<String>> = HashMap::new();
        for j in &jobs {
            for p in hook_paths(j) {
                hooks.entry(p).or_default().push(j.id.clone());
            }
        }
        for j in jobs {
            table.by_name.insert(j.name.clone(), j.id.clone());
            table.by_id.insert(j.id.clone(), Arc::new(j));
        }
        let (shutdown_tx, shutdown_rx) = crossbeam_channel::bounded(0);
        let metrics = Metrics::default();
        metrics
            .jobs
            .store(table.by_id.len() as u64, Ordering::Relaxed);
        Engine {
            store,
            settings,
            metrics,
            started: Instant::now(),
            started_at: Utc::now(),
            jobs: RwLock::new(table),
            mutate: Mutex::new(()),
            runs: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            work_tx,
            clock_tx,
            listeners: Mutex::new(Vec::new()),
            hooks: RwLock::new(hooks),
            next_fire: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            shutdown_tx: Mutex::new(Some(shutdown_tx)),
            shutdown_rx,
        }
    }

    // ---- jobs ----

    /// A job by id or name.
    pub fn job(&self, id_or_name: &str) -> Option<Arc<Job>> {
        let t = self.jobs.read().unwrap_or_else(|p| p.into_inner());
        t.by_id.get(id_or_name).cloned().or_else(|| {
            t.by_name
                .get(id_or_name)
                .and_then(|id| t.by_id.get(id))
                .cloned()
        })
    }

    /// A job by id only.
    pub fn job_by_id(&self, id: &str) -> Option<Arc<Job>> {
        let t = self.jobs.read().unwrap_or_else(|p| p.into_inner());
        t.by_id.get(id).cloned()
    }

    /// All jobs, sorted by name.
    pub fn jobs(&self) -> Vec<Arc<Job>> {
        let t = self.jobs.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = t.by_id.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Number of jobs.
    pub fn job_count(&self) -> usize {
        self.jobs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .len()
    }

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
            self.store
                .save_job(&job)
                .map_err(|e| JobError::Store(e.to_string()))?;
        }
        Ok(Ok(self.install(job)))
    }

    /// Puts `job` in memory (no disk write) and re-plans it.
    fn install(&self, job: Job) -> Arc<Job> {
        let job = Arc::new(job);
        {
            let mut t = self.jobs.write().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = t.by_id.get(&job.id).cloned() {
                t.by_name.remove(&old.name);
                self.unindex_hooks(&old);
            }
            self.index_hooks(&job);
            // Until the clock has re-planned it, the next fire time is computed on demand.
            lock(&self.next_fire).remove(&job.id);
            t.by_name.insert(job.name.clone(), job.id.clone());
            t.by_id.insert(job.id.clone(), job.clone());
            self.metrics
                .jobs
                .store(t.by_id.len() as u64, Ordering::Relaxed);
        }
        self.notify_change(&job.id);
        job
    }

    fn notify_change(&self, id: &str) {
        let _ = self.clock_tx.send(ClockMsg::Job(id.to_string()));
        lock(&self.listeners).retain(|l| l.send(id.to_string()).is_ok());
    }

    /// A channel that receives the id of every job that is added, changed or removed.
    pub fn subscribe(&self) -> Receiver<String> {
        let (tx, rx) = crossbeam_channel::unbounded();
        lock(&self.listeners).push(tx);
        rx
    }

    fn index_hooks(&self, job: &Job) {
        let mut h = self.hooks.write().unwrap_or_else(|p| p.into_inner());
        for p in hook_paths(job) {
            let ids = h.entry(p).or_default();
            if !ids.contains(&job.id) {
                ids.push(job.id.clone());
            }
        }
    }

    fn unindex_hooks(&self, job: &Job) {
        let mut h = self.hooks.write().unwrap_or_else(|p| p.into_inner());
        for p in hook_paths(job) {
            if let Some(ids) = h.get_mut(&p) {
                ids.retain(|i| i != &job.id);
                if ids.is_empty() {
                    h.remove(&p);
                }
            }
        }
    }

    /// The jobs with a webhook trigger on `path`.
    pub fn hook_jobs(&self, path: &str) -> Vec<Arc<Job>> {
        let ids = self
            .hooks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
            .unwrap_or_default();
        ids.iter().filter_map(|id| self.job(id)).collect()
    }

    /// Deletes a job, its file and its run records. Its pending run is dropped and runs
    /// still waiting in the work queue never start (see [`Engine::start_run`]); a run that is
    /// executing finishes, but its record is not kept.
    pub fn remove_job(&self, id_or_name: &str) -> Result<Arc<Job>, JobError> {
        let _g = lock(&self.mutate);
        let job = self.job(id_or_name).ok_or(JobError::NotFound)?;
        let slot = self.job_slot(&job.id);
        let pending = {
            let mut runs = lock(&slot.runs);
            let mut deleted = slot.deleted.write().unwrap_or_else(|p| p.into_inner());
            self.store
                .delete_job(&job.id)
                .map_err(|e| JobError::Store(e.to_string()))?;
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
    fn unload(&self, id: &str) {
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
    fn cancel_unstarted(&self, mut rec: RunRecord) {
        rec.status = RunStatus::Skipped;
        rec.error = Some("the job was removed before this run started".into());
        rec.finished_at = Some(crate::time::now_rfc3339());
        log::info!(event = "run.cancelled", job = rec.job_name.as_str(), run = rec.id.as_str(); "the job was removed before this run started");
        if self.save_record(&rec) {
            Metrics::inc(&self.metrics.runs_skipped_total);
        }
    }

    fn forget(&self, id: &str) {
        lock(&self.next_fire).remove(id);
        {
            let mut t = self.jobs.write().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = t.by_id.remove(id) {
                t.by_name.remove(&old.name);
                self.unindex_hooks(&old);
            }
            self.metrics
                .jobs
                .store(t.by_id.len() as u64, Ordering::Relaxed);
        }
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
                warn_inactive(&job);
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
        let mut m = lock(&self.next_fire);
        match at {
            Some(_) => m.insert(job_id.to_string(), at),
            // Not scheduled (disabled, no clock trigger, deleted): computed on demand.
            None => m.remove(job_id),
        };
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
        crate::triggers::clock::job_next_fire(job, self.started_at, Utc::now())
    }

    // ---- firing ----

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
        let job = self.job(id_or_name).ok_or(FireError::NoSuchJob)?;
        if !job.enabled && !manual {
            return Err(FireError::Disabled);
        }
        Metrics::inc(&self.metrics.firings_total);
        let slot = self.job_slot(&job.id);
        let mut runs = lock(&slot.runs);
        let mut rec = RunRecord::queued(
            crate::ids::new_run_id(),
            &job.id,
            &job.name,
            Value::Object(trigger),
        );
        let busy = !runs.active.is_empty();
        if busy && job.overlap == Overlap::Skip {
            // A skipped record is final and no worker will touch it: write it outside the
            // job's lock, so a burst of firings does not queue behind one fsync at a time.
            drop(runs);
            rec.status = RunStatus::Skipped;
            rec.error = Some("a run of this job was still active (overlap: skip)".into());
            rec.finished_at = Some(crate::time::now_rfc3339());
            return self.record_skip(&slot, rec);
        }
        if busy && job.overlap == Overlap::Queue {
            if let Some(p) = &runs.pending {
                Metrics::inc(&self.metrics.runs_coalesced_total);
                return Ok(Fired::Coalesced(p.run.id.clone()));
            }
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
        self.save_fired(&slot, &rec)?;
        let id = rec.id.clone();
        if runs.active.is_empty() && runs.pending.is_none() {
            runs.busy_since = Some(SystemTime::now());
        }
        runs.active.insert(id.clone());
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
                runs.active.remove(&id);
                if runs.active.is_empty() {
                    runs.busy_since = None;
                }
                let mut rec = w.run;
                rec.status = RunStatus::Skipped;
                rec.error = Some(format!(
                    "the work queue is full ({} runs waiting for {} workers); this firing was dropped",
                    self.settings.queue_capacity, self.settings.workers
                ));
                rec.finished_at = Some(crate::time::now_rfc3339());
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
        self.store
            .save_run(rec)
            .map_err(|e| FireError::Store(e.to_string()))
    }

    fn record_skip(&self, slot: &JobSlot, rec: RunRecord) -> Result<Fired, FireError> {
        self.save_fired(slot, &rec)?;
        Metrics::inc(&self.metrics.runs_skipped_total);
        log::info!(event = "run.skipped", job = rec.job_name.as_str(), run = rec.id.as_str(); "{}", rec.error.as_deref().unwrap_or(""));
        Ok(Fired::Skipped(rec.id))
    }

    fn job_slot(&self, job_id: &str) -> Arc<JobSlot> {
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
        let slot = self.job_slot(job_id);
        let mut runs = lock(&slot.runs);
        runs.active.remove(run_id);
        let next = runs.pending.take();
        if let Some(w) = &next {
            runs.active.insert(w.run.id.clone());
        }
        let idle = runs.active.is_empty();
        if idle {
            let now = SystemTime::now();
            runs.last_busy = Some((runs.busy_since.take().unwrap_or(now), now));
        }
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

    // ---- running agents ----

    /// Registers the kill switch of a running agent.
    pub fn register_running(&self, run_id: &str, kill: Sender<()>) {
        lock(&self.running).insert(run_id.to_string(), kill);
    }

    /// Forgets a finished agent.
    pub fn unregister_running(&self, run_id: &str) {
        lock(&self.running).remove(run_id);
    }

    /// Number of agents running now.
    pub fn running_count(&self) -> usize {
        lock(&self.running).len()
    }

    /// Stops every running agent (SIGTERM to its group, SIGKILL after 5 s).
    pub fn kill_all_running(&self) -> usize {
        let m = lock(&self.running);
        for tx in m.values() {
            let _ = tx.try_send(());
        }
        m.len()
    }

    // ---- shutdown ----

    /// Stops intake: triggers and the API no longer queue runs.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        lock(&self.shutdown_tx).take();
        let _ = self.clock_tx.send(ClockMsg::Stop);
    }

    /// A receiver that disconnects when shutdown begins (for `select!` and timed waits).
    pub fn shutdown_signal(&self) -> Receiver<()> {
        self.shutdown_rx.clone()
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// The webhook paths a job listens on.
fn hook_paths(job: &Job) -> Vec<String> {
    job.triggers
        .iter()
        .filter_map(|t| match t {
            crate::job::Trigger::Webhook { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect()
}

/// Logs, once per load, the triggers and outputs of `job` that this build does not act on.
pub fn warn_inactive(job: &Job) {
    for w in job.warnings() {
        log::warn!(event = "job.inactive_part", job = job.name.as_str(); "{w}");
    }
}
