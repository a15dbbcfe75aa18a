//! The daemon's shared state, one `Arc<Engine>` handed to every thread, split by concept:
//!
//! - `jobs.rs` — the job table (by id, by name, by webhook path); plain data;
//! - `changes.rs` — how the table changes (API, job files, SIGHUP), and how trigger threads
//!   hear of it ([`Engine::subscribe`]: the clock, the file watcher and the git poller alike);
//! - `runs.rs` — one job's runs and the overlap policy as a pure function ([`runs::decide`]);
//! - `views.rs` — the API's job JSON kept serialised in memory, dropped on change;
//! - `slots.rs` — the daemon-wide cap on running agents (`max_concurrent_runs`);
//! - `firing.rs` — [`Engine::fire`], the one function every trigger calls, and the run
//!   bookkeeping of workers (`start_run`, `finish_run`, record writes);
//! - here — the struct, running agents' kill switches, and shutdown
//!   ([`Engine::shutdown_signal`], which every thread waits on).
//!
//! Lock order (never take one while holding a later one): `mutate` → a job slot's `runs` →
//! that slot's `deleted` → `jobs` (the table) → `next_fire`; `runs` (the slot map),
//! `running`, `listeners` and `views` are leaves, held for a lookup only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, Sender};

mod changes;
mod cluster;
mod firing;
mod jobs;
mod runs;
mod slots;
mod views;

use crate::job::Job;
use crate::metrics::Metrics;
use crate::store::Store;
use jobs::JobTable;
use runs::JobSlot;
pub use runs::{Extra, Work};
pub use slots::AgentSlots;

/// Daemon settings resolved from flags, `config.json` and defaults.
#[derive(Clone, Debug)]
pub struct Settings {
    pub default_agent: Option<Vec<String>>,
    pub workers: usize,
    /// `config.json` `max_concurrent_runs`, at most `workers`: the workers that execute runs
    /// (the others are not started), so runs beyond it wait in the work queue.
    pub max_concurrent_runs: usize,
    pub grace_seconds: u64,
    pub max_body_bytes: usize,
    pub queue_capacity: usize,
    /// How often the git poller reads watched repositories.
    pub git_poll: std::time::Duration,
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
    /// Recorded as a skipped run because a run budget is used up; it frees after this many
    /// seconds (rounded up, at least 1; webhooks answer 429 with it as `Retry-After`).
    OverBudget(String, u64),
}

impl Fired {
    /// The run id the firing maps to.
    pub fn run_id(&self) -> &str {
        match self {
            Fired::Queued(id)
            | Fired::Coalesced(id)
            | Fired::Skipped(id)
            | Fired::OverBudget(id, _) => id,
        }
    }
}

/// Why a firing did not happen.
#[derive(Debug)]
pub enum FireError {
    NoSuchJob,
    Disabled,
    ShuttingDown,
    /// The run record could not be written (the error names the file).
    Store(std::io::Error),
    /// Cluster mode, and etcd cannot be reached: nothing fires (503; the text says so).
    Unavailable(String),
    /// Cluster mode, and etcd refused the firing for good (413 when too large, else 400),
    /// with etcd's message: trying again would not help.
    Rejected(u16, String),
}

/// Shared daemon state; one `Arc<Engine>` is handed to every thread.
pub struct Engine {
    pub store: Store,
    pub settings: Settings,
    pub metrics: Metrics,
    pub started: Instant,
    pub started_at: DateTime<Utc>,
    /// Jobs by id, name and webhook path.
    jobs: RwLock<JobTable>,
    /// Serializes job mutations (check name, write file, swap in memory).
    mutate: Mutex<()>,
    runs: Mutex<HashMap<String, Arc<JobSlot>>>,
    /// The output of running agents as they write it, by run id (`job logs -f`).
    pub live: crate::live::Board,
    /// Kill switches of running agents, by run id.
    running: Mutex<HashMap<String, Sender<()>>>,
    /// `max_concurrent_runs`: a worker takes one per run, a `job test --exec` agent one too.
    pub agent_slots: AgentSlots,
    work_tx: Sender<Work>,
    /// Trigger threads that re-plan a job when it changes (clock, file watcher, git poller).
    listeners: Mutex<Vec<Sender<String>>>,
    /// Next fire instant per job, published by the clock.
    next_fire: Mutex<HashMap<String, Option<DateTime<Utc>>>>,
    /// The API's job JSON, kept serialised (`views.rs`); a leaf lock.
    views: views::Views,
    shutting_down: AtomicBool,
    /// Dropped at shutdown, which wakes every receiver of `shutdown_rx` at once.
    shutdown_tx: Mutex<Option<Sender<()>>>,
    shutdown_rx: Receiver<()>,
    /// Cluster mode's membership (`cluster/`), set once at start-up; None on a single machine.
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
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
    /// The job file could not be written or removed (the error names the file).
    Store(std::io::Error),
    /// Cluster mode, and etcd cannot be reached: nothing was changed (503).
    Unavailable(String),
    /// Cluster mode, and etcd refused the write for good (a job too large for an etcd
    /// value: 413; another 4xx: 400), with etcd's message. Nothing was changed.
    Rejected(u16, String),
    /// Cluster mode: the job was changed on another node meanwhile; nothing was changed
    /// here (409; read it again and retry).
    Conflict(String),
}

impl Engine {
    /// Builds the engine with the jobs loaded from disk.
    pub fn new(store: Store, settings: Settings, jobs: Vec<Job>, work_tx: Sender<Work>) -> Engine {
        let table = JobTable::new(jobs);
        let (shutdown_tx, shutdown_rx) = crossbeam_channel::bounded(0);
        let metrics = Metrics::default();
        let agent_slots = AgentSlots::new(settings.max_concurrent_runs);
        metrics.jobs.store(table.len() as u64, Ordering::Relaxed);
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
            agent_slots,
            live: Default::default(),
            work_tx,
            listeners: Mutex::new(Vec::new()),
            next_fire: Mutex::new(HashMap::new()),
            views: views::Views::default(),
            shutting_down: AtomicBool::new(false),
            shutdown_tx: Mutex::new(Some(shutdown_tx)),
            shutdown_rx,
            cluster: std::sync::OnceLock::new(),
        }
    }

    /// Puts the engine in cluster mode (once, at start-up, before any thread).
    pub fn set_cluster(&self, c: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(c);
    }

    /// The cluster this node belongs to (None: a single machine).
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.get()
    }

    // ---- jobs ----

    fn table(&self) -> std::sync::RwLockReadGuard<'_, JobTable> {
        self.jobs.read().unwrap_or_else(|p| p.into_inner())
    }

    fn table_mut(&self) -> std::sync::RwLockWriteGuard<'_, JobTable> {
        self.jobs.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A job by id or name.
    pub fn job(&self, id_or_name: &str) -> Option<Arc<Job>> {
        self.table().get(id_or_name)
    }

    /// A job by id only.
    pub fn job_by_id(&self, id: &str) -> Option<Arc<Job>> {
        self.table().by_id(id)
    }

    /// All jobs, sorted by name.
    pub fn jobs(&self) -> Vec<Arc<Job>> {
        self.table().sorted()
    }

    /// Number of jobs.
    pub fn job_count(&self) -> usize {
        self.table().len()
    }

    fn notify_change(&self, id: &str) {
        lock(&self.listeners).retain(|l| l.send(id.to_string()).is_ok());
    }

    /// A channel that receives the id of every job that is added, changed or removed.
    pub fn subscribe(&self) -> Receiver<String> {
        let (tx, rx) = crossbeam_channel::unbounded();
        lock(&self.listeners).push(tx);
        rx
    }

    /// The jobs with a webhook trigger on `path`.
    pub fn hook_jobs(&self, path: &str) -> Vec<Arc<Job>> {
        self.table().hook_jobs(path)
    }

    // ---- running agents ----

    /// Registers the kill switch of a running agent.
    pub fn register_running(&self, run_id: &str, kill: Sender<()>) {
        lock(&self.running).insert(run_id.to_string(), kill.clone());
        // Cluster mode: fenced between its start and now (engine/cluster.rs).
        if self.fenced_here(run_id) {
            let _ = kill.try_send(());
        }
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

/// Logs, once per load, what of `job` this machine cannot do as asked (`Job::warnings`).
pub fn log_job_warnings(job: &Job) {
    for w in job.warnings() {
        log::warn!(event = "job.warning", job = job.name.as_str(); "{w}");
    }
}
