//! The data directory (README "Data directory and durability"): the only code that reads or writes files under it.
//!
//! Layout: `jobs/<id>.json`, `runs/<job-id>/<run-id>.json`, `journal/{0,1}`, `state.json`,
//! `.token`, `config.json`, `daemon.lock`. Every write goes through
//! [`crate::fsio::write_atomic`], except a firing's first record in a daemon, which is made
//! durable through the intake journal ([`journal`]). Files that do not parse are renamed to
//! `*.corrupt` and logged; loading carries on.

pub mod journal;
pub mod lock;
pub mod state;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use crate::fsio;
use crate::job::{validate_job, Job};
use crate::run::RunRecord;

/// Where run records are shared in cluster mode (`cluster/runs.rs`): every node writes
/// its records there as well as in its own data dir, and reads the cluster's from there
/// (its own files when etcd is out of reach).
pub trait SharedRuns: Send + Sync {
    /// Writes a record (an error is etcd's, in words).
    fn save(&self, rec: &RunRecord) -> Result<(), String>;
    /// Up to `limit` records of a job, newest first; None when etcd cannot be reached.
    fn list(&self, job_id: &str, limit: usize) -> Option<Vec<RunRecord>>;
    /// One record (Some(None): there is none); None when etcd cannot be reached.
    fn load(&self, job_id: &str, run_id: &str) -> Option<Option<RunRecord>>;
    /// Deletes records of a job.
    fn remove(&self, job_id: &str, run_ids: &[String]);
    /// Deletes every record of a job.
    fn remove_all(&self, job_id: &str);
    /// Deletes a job's oldest records beyond `keep` that are final (not queued or running
    /// anywhere) and not in `active`.
    fn prune(&self, job_id: &str, keep: usize, active: &HashSet<String>);
}

impl std::fmt::Debug for dyn SharedRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedRuns")
    }
}

/// Handle on one data directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
    /// The run ids of each job whose `runs/<job-id>/` has been read once, kept up to date by
    /// the writes below (this store is the data dir's only writer), so listing runs reads no
    /// directory. A job's entry is loaded on first use (a daemon at rest holds none) with the
    /// lock held, so a record saved meanwhile is either in the listing or added after it.
    runs: Arc<Mutex<HashMap<String, BTreeSet<Box<str>>>>>,
    /// Cluster mode: the cluster's run records (None on a single machine).
    shared: Option<Arc<dyn SharedRuns>>,
    /// The intake journal (the daemon's store; None for the CLI's reads and in tests that
    /// do not open one): [`Store::save_new_run`] commits through it.
    journal: Option<journal::Journal>,
}

/// Where the data dir is: `--data-dir`, else `$BOG_AGENTS_HOME/daemon`, else
/// `~/.bog-agents/daemon` (Windows: `%APPDATA%\bog-agents\daemon`).
pub fn resolve_data_dir(flag: Option<&Path>) -> io::Result<PathBuf> {
    if let Some(d) = flag {
        return Ok(absolute(d));
    }
    if let Some(h) = std::env::var_os("BOG_AGENTS_HOME").filter(|h| !h.is_empty()) {
        return Ok(absolute(&PathBuf::from(h).join("daemon")));
    }
    crate::sys::default_data_dir()
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Sets an existing data dir that this user owns to mode 0700 when group or others have any
/// access to it (one made by hand, or by an older installer). Returns the mode it had when it
/// was changed; a dir owned by someone else is left alone.
pub fn tighten_data_dir(dir: &Path) -> io::Result<Option<u32>> {
    crate::sys::tighten_private_dir(dir).map_err(|e| ctx(e, "cannot set mode 0700 on", dir))
}

/// Adds the path to an I/O error so the user knows which file failed.
pub fn ctx(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(
        e.kind(),
        IoContext {
            what: what.to_string(),
            path: path.to_path_buf(),
            source: e,
        },
    )
}

/// Why a job file cannot be loaded (a run record that cannot be read or parsed gets the
/// first two).
#[derive(Debug)]
pub enum JobFileError {
    Read(io::Error),
    Json(serde_json::Error),
    /// Its `"id"` is not its file name.
    IdMismatch {
        id: String,
        stem: String,
    },
    /// `"created_at"` is missing or not RFC 3339.
    CreatedAt,
    Invalid(crate::job::FieldError),
}

impl std::fmt::Display for JobFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobFileError::Read(e) => write!(f, "cannot read: {e}"),
            JobFileError::Json(e) => write!(f, "not valid JSON: {e}"),
            JobFileError::IdMismatch { id, stem } => write!(
                f,
                "its \"id\" ({id:?}) does not match the file name ({stem:?})"
            ),
            JobFileError::CreatedAt => write!(f, "missing or invalid \"created_at\""),
            JobFileError::Invalid(e) => write!(f, "invalid job: {e}"),
        }
    }
}

impl std::error::Error for JobFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JobFileError::Read(e) => Some(e),
            JobFileError::Json(e) => Some(e),
            _ => None,
        }
    }
}

/// An I/O error with what was being done and to which path; the OS error stays its
/// `source()`, so callers can still tell its kind and cause.
#[derive(Debug)]
pub struct IoContext {
    pub what: String,
    pub path: PathBuf,
    pub source: io::Error,
}

impl std::fmt::Display for IoContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.what, self.path.display(), self.source)
    }
}

impl std::error::Error for IoContext {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A stored job (a job file's bytes, or a cluster's `jobs/<id>` value) read and validated;
/// its `"id"` must be `expected_id`.
pub fn job_from_json(data: &[u8], expected_id: &str) -> Result<Job, JobFileError> {
    let v: Value = serde_json::from_slice(data).map_err(JobFileError::Json)?;
    let stem = expected_id.to_string();
    let id = v.get("id").and_then(Value::as_str).unwrap_or("");
    if id != stem {
        return Err(JobFileError::IdMismatch {
            id: id.to_string(),
            stem,
        });
    }
    let created = v
        .get("created_at")
        .and_then(Value::as_str)
        .filter(|s| crate::time::parse_rfc3339(s).is_some())
        .ok_or(JobFileError::CreatedAt)?;
    validate_job(&v, id, created).map_err(JobFileError::Invalid)
}

/// A file that could not be loaded and was moved aside.
#[derive(Debug)]
pub struct Quarantined {
    pub path: PathBuf,
    pub moved_to: Option<PathBuf>,
    pub reason: String,
}

impl Store {
    /// Opens (creating with mode 0700 if needed) the data dir and its `jobs/` and `runs/`.
    pub fn open(dir: &Path) -> io::Result<Store> {
        for d in [dir.to_path_buf(), dir.join("jobs"), dir.join("runs")] {
            fsio::create_dir_all_mode(&d, 0o700).map_err(|e| ctx(e, "cannot create", &d))?;
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            runs: Arc::default(),
            shared: None,
            journal: None,
        })
    }

    /// A handle that does not create anything (for CLI reads).
    pub fn at(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
            runs: Arc::default(),
            shared: None,
            journal: None,
        }
    }

    /// Opens the intake journal (the daemon, under the data dir's lock, before runs are
    /// recovered): restores every record the last daemon acknowledged through it whose file
    /// a crash lost or tore, makes the files it kept durable, and starts the journal afresh.
    /// Returns the store that commits through it and how many records were restored.
    pub fn with_journal(mut self) -> io::Result<(Store, usize)> {
        let (j, replayed) = journal::Journal::open(&self.dir)?;
        let mut restored = 0;
        // Records retention let go of before they had a file (`Journal::discard`): the
        // entries before each one's last tombstone (replay is in the order written).
        let discarded: HashMap<&str, usize> = replayed
            .iter()
            .enumerate()
            .filter_map(|(i, d)| Some((journal::tombstone_id(d)?, i)))
            .collect();
        for (i, data) in replayed.iter().enumerate() {
            if journal::tombstone_id(data).is_some() {
                continue;
            }
            let Ok(rec) = serde_json::from_slice::<RunRecord>(data) else {
                log::warn!(event = "journal.skipped"; "a journal entry is not a run record; left out");
                continue;
            };
            if !crate::ids::is_run_id(&rec.id)
                || !is_plain_name(&rec.job_id)
                || discarded.get(rec.id.as_str()).is_some_and(|&t| t > i)
            {
                continue;
            }
            let d = self.runs_dir(&rec.job_id);
            if !d.is_dir() {
                // Its job was deleted: its records went with it.
                continue;
            }
            let p = d.join(format!("{}.json", rec.id));
            let parses = fs::read(&p)
                .ok()
                .is_some_and(|b| serde_json::from_slice::<RunRecord>(&b).is_ok());
            if parses {
                // This record or a newer one: kept, and made durable before the entry goes.
                match journal::make_durable(&p) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(ctx(e, "cannot flush run record", &p))
                    }
                    _ => {}
                }
            } else {
                fsio::write_atomic(&p, data, 0o600)
                    .map_err(|e| ctx(e, "cannot restore run record", &p))?;
                log::warn!(event = "journal.restored", job = rec.job_name.as_str(), run = rec.id.as_str();
                    "run record restored from the intake journal (its file was {})", if p.exists() { "torn" } else { "missing" });
                restored += 1;
            }
        }
        j.restart()?;
        self.journal = Some(j);
        Ok((self, restored))
    }

    /// The intake journal, if this store has one.
    pub fn journal(&self) -> Option<&journal::Journal> {
        self.journal.as_ref()
    }

    /// Cluster mode: run records are shared through `shared` too.
    pub fn share_runs(mut self, shared: Arc<dyn SharedRuns>) -> Store {
        self.shared = Some(shared);
        self
    }

    fn run_index(&self) -> MutexGuard<'_, HashMap<String, BTreeSet<Box<str>>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the in-memory run index (SIGHUP: records changed by hand are read again).
    pub fn forget_run_index(&self) {
        self.run_index().clear();
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `jobs/`.
    pub fn jobs_dir(&self) -> PathBuf {
        self.dir.join("jobs")
    }

    fn job_path(&self, id: &str) -> PathBuf {
        self.jobs_dir().join(format!("{id}.json"))
    }

    fn runs_dir(&self, job_id: &str) -> PathBuf {
        self.dir.join("runs").join(job_id)
    }

    // ---- token ----

    /// Path of the API token file.
    pub fn token_path(&self) -> PathBuf {
        self.dir.join(".token")
    }

    /// Reads the token, creating it (mode 0600) if missing. Returns it and whether it was
    /// created now.
    pub fn ensure_token(&self) -> io::Result<(String, bool)> {
        match self.read_token() {
            Ok(t) => return Ok((t, false)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let t = crate::ids::new_token()?;
        self.save_token(&t)?;
        Ok((t, true))
    }

    /// Writes the token file (mode 0600): a new token, or a cluster node's copy of the
    /// cluster's, so the CLI on that node finds it as on a single machine.
    pub fn save_token(&self, t: &str) -> io::Result<()> {
        if self.read_token().is_ok_and(|old| old == t) {
            return Ok(());
        }
        let p = self.token_path();
        fsio::write_atomic(&p, format!("{t}\n").as_bytes(), 0o600)
            .map_err(|e| ctx(e, "cannot write token file", &p))
    }

    /// Reads the token file.
    pub fn read_token(&self) -> io::Result<String> {
        let p = self.token_path();
        let s = fs::read_to_string(&p)?;
        let t = s.trim().to_string();
        if t.is_empty() {
            return Err(io::Error::other(format!(
                "token file {} is empty; delete it and restart the daemon to make a new one",
                p.display()
            )));
        }
        Ok(t)
    }

    // ---- jobs ----

    /// Writes a job durably.
    pub fn save_job(&self, job: &Job) -> io::Result<()> {
        let p = self.job_path(&job.id);
        let data = serde_json::to_vec_pretty(job).map_err(io::Error::other)?;
        fsio::write_atomic(&p, &data, 0o600).map_err(|e| ctx(e, "cannot write job file", &p))
    }

    /// Removes a job's file and its run records.
    pub fn delete_job(&self, id: &str) -> io::Result<()> {
        if let Some(s) = &self.shared {
            s.remove_all(id);
        }
        // No record file of the job is written by the journal from here on.
        let _files = self.journal.as_ref().map(|j| j.files_guard());
        let p = self.job_path(id);
        fsio::remove_durable(&p).map_err(|e| ctx(e, "cannot remove job file", &p))?;
        if let Some(j) = &self.journal {
            j.forget_job(id);
        }
        let r = self.runs_dir(id);
        let mut index = self.run_index();
        let done = match fs::remove_dir_all(&r) {
            Ok(()) => fsio::sync_dir(&self.dir.join("runs")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ctx(e, "cannot remove run records", &r)),
        };
        // Read again on next use, whatever a failed removal left.
        index.remove(id);
        done
    }

    /// Loads every `jobs/*.json`, quarantining files that do not parse or validate.
    pub fn load_jobs(&self) -> (Vec<Job>, Vec<Quarantined>) {
        let mut jobs = Vec::new();
        let mut bad = Vec::new();
        let mut seen_names = HashSet::new();
        for path in self.job_files() {
            match self.load_job_file(&path) {
                Ok(job) => {
                    if !seen_names.insert(job.name.clone()) {
                        bad.push(self.quarantine(
                            &path,
                            format!("job name \"{}\" is used by another job file", job.name),
                        ));
                        continue;
                    }
                    jobs.push(job);
                }
                Err(reason) => bad.push(self.quarantine(&path, reason.to_string())),
            }
        }
        (jobs, bad)
    }

    /// The `jobs/*.json` paths, sorted.
    pub fn job_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = match fs::read_dir(self.jobs_dir()) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| is_job_file(p))
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// Reads and validates one job file; the error says why it is unusable.
    pub fn load_job_file(&self, path: &Path) -> Result<Job, JobFileError> {
        let data = fs::read(path).map_err(JobFileError::Read)?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        job_from_json(&data, &stem)
    }

    /// Moves `path` aside to `<path>.corrupt` (or `.corrupt.N` if taken).
    pub fn quarantine(&self, path: &Path, reason: String) -> Quarantined {
        let mut target = PathBuf::from(format!("{}.corrupt", path.display()));
        let mut n = 1;
        while target.exists() {
            target = PathBuf::from(format!("{}.corrupt.{n}", path.display()));
            n += 1;
        }
        let moved_to = match fs::rename(path, &target) {
            Ok(()) => {
                if let Some(parent) = path.parent() {
                    let _ = fsio::sync_dir(parent);
                }
                Some(target)
            }
            Err(_) => None,
        };
        Quarantined {
            path: path.to_path_buf(),
            moved_to,
            reason,
        }
    }

    // ---- runs ----

    /// Writes a run record durably.
    pub fn save_run(&self, run: &RunRecord) -> io::Result<()> {
        let d = self.runs_dir(&run.job_id);
        if !d.is_dir() {
            fsio::create_dir_all_mode(&d, 0o700).map_err(|e| ctx(e, "cannot create", &d))?;
        }
        let p = d.join(format!("{}.json", run.id));
        let data = serde_json::to_vec_pretty(run).map_err(io::Error::other)?;
        fsio::write_atomic(&p, &data, 0o600).map_err(|e| ctx(e, "cannot write run record", &p))?;
        if let Some(j) = &self.journal {
            j.superseded(&run.id);
        }
        self.after_save(run)
    }

    /// Writes a firing's first record (`queued` or `skipped`) durably: through the intake
    /// journal when the store has one (the call returns once a journal flush that covers
    /// it returned; the file is written by the journal's next checkpoint, and the record is
    /// read from the journal until then), else as [`Store::save_run`].
    pub fn save_new_run(&self, run: &RunRecord) -> io::Result<()> {
        let Some(j) = &self.journal else {
            return self.save_run(run);
        };
        let d = self.runs_dir(&run.job_id);
        if !d.is_dir() {
            fsio::create_dir_all_mode(&d, 0o700).map_err(|e| ctx(e, "cannot create", &d))?;
        }
        let p = d.join(format!("{}.json", run.id));
        let data = serde_json::to_vec_pretty(run).map_err(io::Error::other)?;
        // Served from the journal until its checkpoint writes the file.
        let journaled = j
            .append(&p, &run.job_id, &run.id, &data)
            .map_err(|e| ctx(e, "cannot write to the intake journal for", &p))?;
        if !journaled {
            fsio::write_atomic(&p, &data, 0o600)
                .map_err(|e| ctx(e, "cannot write run record", &p))?;
        }
        self.after_save(run)
    }

    /// What every record write does once the file is durable: the cluster's copy, the index.
    fn after_save(&self, run: &RunRecord) -> io::Result<()> {
        if let Some(s) = &self.shared {
            s.save(run).map_err(|e| {
                io::Error::other(format!("cannot share run record {} in etcd: {e}", run.id))
            })?;
        }
        // Only an index already loaded is updated: one loaded later reads the file.
        if let Some(ids) = self.run_index().get_mut(&run.job_id) {
            if !ids.contains(run.id.as_str()) {
                ids.insert(run.id.as_str().into());
            }
        }
        Ok(())
    }

    /// Keeps a webhook run's body as `runs/<job-id>/<run-id>.payload` (for `job test
    /// --from-run`); it goes with the record (retention, job removal). Atomic and durable
    /// (`fsio::write_atomic`): a replay after a crash reads what the run was given, never a
    /// torn or empty file. Written only for webhook runs, before their agent starts.
    pub fn save_payload(&self, job_id: &str, run_id: &str, data: &[u8]) -> io::Result<()> {
        let d = self.runs_dir(job_id);
        if !d.is_dir() {
            fsio::create_dir_all_mode(&d, 0o700).map_err(|e| ctx(e, "cannot create", &d))?;
        }
        let p = d.join(format!("{run_id}.payload"));
        // Durable like the record it belongs to: `--from-run` replays it after a crash.
        fsio::write_atomic(&p, data, 0o600).map_err(|e| ctx(e, "cannot write payload", &p))
    }

    /// The webhook body kept for a run, if any (see [`Store::save_payload`]).
    pub fn load_payload(&self, job_id: &str, run_id: &str) -> Option<Vec<u8>> {
        if !crate::ids::is_run_id(run_id) {
            return None;
        }
        fs::read(self.runs_dir(job_id).join(format!("{run_id}.payload"))).ok()
    }

    /// Run ids of a job in this data dir, newest first, from the index (loaded from the
    /// directory once).
    pub fn local_run_ids(&self, job_id: &str) -> Vec<String> {
        self.with_run_ids(job_id, |ids| {
            ids.iter().rev().map(|s| s.to_string()).collect()
        })
    }

    fn with_run_ids<T>(&self, job_id: &str, f: impl FnOnce(&BTreeSet<Box<str>>) -> T) -> T {
        let mut index = self.run_index();
        let ids = index
            .entry(job_id.to_string())
            .or_insert_with(|| self.read_run_ids(job_id));
        f(ids)
    }

    /// Run ids of a job as found in its directory, and those the journal holds.
    fn read_run_ids(&self, job_id: &str) -> BTreeSet<Box<str>> {
        self.read_run_ids_then(job_id, || {})
    }

    /// [`Store::read_run_ids`], running `meanwhile` between its two reads (a test's
    /// checkpoint there). The journal's ids are read first: it lets go of a record only once
    /// its file exists (checkpointed, or superseded by a worker's), so a record it let go of
    /// meanwhile is in the directory read after — read the other way round, it would be in
    /// neither.
    fn read_run_ids_then(&self, job_id: &str, meanwhile: impl FnOnce()) -> BTreeSet<Box<str>> {
        let held = self.journal.as_ref().map(|j| j.held_ids(job_id));
        meanwhile();
        let mut ids = self.read_run_dir(job_id);
        ids.extend(held.into_iter().flatten());
        ids
    }

    fn read_run_dir(&self, job_id: &str) -> BTreeSet<Box<str>> {
        match fs::read_dir(self.runs_dir(job_id)) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let p = e.path();
                    if is_job_file(&p) {
                        p.file_stem().map(|s| s.to_string_lossy().into())
                    } else {
                        None
                    }
                })
                .collect(),
            Err(_) => BTreeSet::new(),
        }
    }

    /// Reads one run record (none without reading when the index does not know it).
    pub fn load_run(&self, job_id: &str, run_id: &str) -> Option<RunRecord> {
        if let Some(r) = self.shared.as_ref().and_then(|s| s.load(job_id, run_id)) {
            return r;
        }
        if !self.with_run_ids(job_id, |ids| ids.contains(run_id)) {
            return None;
        }
        self.read_run(job_id, run_id)
    }

    /// Reads one run record from this node's data dir only (cluster mode's start-up
    /// reconciliation, `cluster/runs.rs`).
    pub fn read_run(&self, job_id: &str, run_id: &str) -> Option<RunRecord> {
        if let Some(b) = self.journal.as_ref().and_then(|j| j.read(job_id, run_id)) {
            return serde_json::from_slice(&b).ok();
        }
        let p = self.runs_dir(job_id).join(format!("{run_id}.json"));
        let data = fs::read(&p).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Up to `limit` run records of a job, newest first. Unreadable records are skipped.
    pub fn list_runs(&self, job_id: &str, limit: usize) -> Vec<RunRecord> {
        if let Some(l) = self.shared.as_ref().and_then(|s| s.list(job_id, limit)) {
            return l;
        }
        self.local_run_ids(job_id)
            .iter()
            .filter_map(|id| self.read_run(job_id, id))
            .take(limit)
            .collect()
    }

    /// Deletes the oldest final run records beyond `keep`; runs in `active` are never removed.
    /// A record only the journal's live segment holds is let go of there
    /// (`Journal::discard`: no file is ever written for it). One in the segment being
    /// checkpointed, or whose file a worker wrote since, is waited for, at most `patience`
    /// (a replay would bring it back if it were removed first); one still held after that
    /// stays for a later prune. `ids` are the job's run ids as [`Store::local_run_ids`] gave
    /// them *before* `active` was taken: a run fired in between is in neither, and a list
    /// read after would count it among the old ones once `keep` newer records followed it.
    /// Removed files are flushed from the directory only when `patience` is not zero.
    pub fn prune_runs(
        &self,
        job_id: &str,
        ids: Vec<String>,
        keep: usize,
        active: &HashSet<String>,
        patience: std::time::Duration,
    ) -> usize {
        if let Some(s) = &self.shared {
            // The cluster's records of the job: the newest `keep` stay, wherever they ran.
            s.prune(job_id, keep, active);
        }
        if ids.len() <= keep {
            return 0;
        }
        let d = self.runs_dir(job_id);
        let doomed: Vec<&str> = ids
            .iter()
            .skip(keep)
            .filter(|id| !active.contains(*id))
            .map(String::as_str)
            .collect();
        let mut discarded = vec![false; doomed.len()];
        if let Some(j) = &self.journal {
            discarded = j.discard(&doomed);
            let rest: Vec<&str> = doomed
                .iter()
                .zip(&discarded)
                .filter(|(_, gone)| !**gone)
                .map(|(id, _)| *id)
                .collect();
            if !rest.is_empty() {
                j.settle(&rest, patience);
            }
        }
        let mut removed = 0;
        let mut unlinked = false;
        for (id, gone) in doomed.into_iter().zip(discarded) {
            if !gone && self.journal.as_ref().is_some_and(|j| j.holds(id)) {
                continue;
            }
            let _ = fs::remove_file(d.join(format!("{id}.payload")));
            // A discarded record has no file (`Journal::discard` lets go of none that has).
            let had_file = fs::remove_file(d.join(format!("{id}.json"))).is_ok();
            unlinked |= had_file;
            if had_file || gone {
                removed += 1;
                if let Some(ids) = self.run_index().get_mut(job_id) {
                    ids.remove(id);
                }
            }
        }
        // A removal lost to a crash brings a pruned record back for the next prune (as a
        // tombstone lost does): the prune on the intake path (no patience) does not wait
        // for the directory's flush; a worker's does, as it always has.
        if unlinked && !patience.is_zero() {
            let _ = fsio::sync_dir(&d);
        }
        removed
    }

    /// How many run records a job has here (from the index).
    pub fn local_run_count(&self, job_id: &str) -> usize {
        self.with_run_ids(job_id, |ids| ids.len())
    }

    /// At start-up: every run left `queued` or `running` by a crash becomes `interrupted`;
    /// unreadable records are quarantined. Returns the recovered records and the quarantined
    /// files.
    pub fn recover_runs(&self) -> (Vec<RunRecord>, Vec<Quarantined>) {
        let mut fixed = Vec::new();
        let mut bad = Vec::new();
        let Ok(rd) = fs::read_dir(self.dir.join("runs")) else {
            return (fixed, bad);
        };
        for dir in rd.filter_map(|e| e.ok()).map(|e| e.path()) {
            let Ok(files) = fs::read_dir(&dir) else {
                continue;
            };
            for p in files.filter_map(|e| e.ok()).map(|e| e.path()) {
                if !is_job_file(&p) {
                    // Leftover temp files from a crash mid-write.
                    if p.file_name()
                        .is_some_and(|n| n.to_string_lossy().ends_with(".tmp"))
                    {
                        let _ = fs::remove_file(&p);
                    }
                    continue;
                }
                let rec = fs::read(&p).map_err(JobFileError::Read).and_then(|d| {
                    serde_json::from_slice::<RunRecord>(&d).map_err(JobFileError::Json)
                });
                match rec {
                    Ok(mut r) if !r.status.is_final() => {
                        let was = r.status;
                        r.interrupt(format!(
                            "the daemon stopped while this run was {}",
                            was.as_str()
                        ));
                        if self.save_run(&r).is_ok() {
                            fixed.push(r);
                        }
                    }
                    Ok(_) => {}
                    Err(reason) => bad.push(self.quarantine(&p, format!("run record: {reason}"))),
                }
            }
        }
        // Records moved aside here are not runs any more.
        self.forget_run_index();
        (fixed, bad)
    }

    /// Removes temp files left in `jobs/` by a crash mid-write, and event files of runs
    /// that a crash cut short.
    pub fn clean_temp_files(&self) {
        let _ = fs::remove_dir_all(self.dir.join("events"));
        if let Ok(rd) = fs::read_dir(self.jobs_dir()) {
            for p in rd.filter_map(|e| e.ok()).map(|e| e.path()) {
                if p.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with(".tmp"))
                {
                    let _ = fs::remove_file(&p);
                }
            }
        }
    }
}

/// A single path component that names nothing else (`..`, a separator): safe to join.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\', '\0'])
}

/// `*.json` files that are not hidden temp files.
pub fn is_job_file(p: &Path) -> bool {
    let Some(name) = p.file_name().map(|n| n.to_string_lossy()) else {
        return false;
    };
    name.ends_with(".json") && !name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RunStatus;
    use serde_json::json;

    fn job(name: &str) -> Job {
        validate_job(
            &json!({"name": name, "prompt": "p", "triggers": [{"type": "interval", "seconds": 5}]}),
            &crate::ids::new_job_id().unwrap(),
            "2026-01-01T00:00:00.000Z",
        )
        .unwrap()
    }

    #[test]
    fn jobs_round_trip_and_corrupt_files_are_quarantined() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let a = job("a");
        s.save_job(&a).unwrap();
        fs::write(s.jobs_dir().join("job_bad.json"), b"{\"id\": \"job_b").unwrap();
        let (jobs, bad) = s.load_jobs();
        assert_eq!(jobs, vec![a]);
        assert_eq!(bad.len(), 1);
        assert!(s.jobs_dir().join("job_bad.json.corrupt").exists());
    }

    #[test]
    fn runs_newest_first_prune_and_recover() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            let mut r = RunRecord::queued(crate::ids::new_run_id(), "job_x", "x", json!({}));
            r.status = if i == 0 {
                RunStatus::Running
            } else {
                RunStatus::Succeeded
            };
            s.save_run(&r).unwrap();
            ids.push(r.id);
        }
        let listed: Vec<_> = s.list_runs("job_x", 3).into_iter().map(|r| r.id).collect();
        assert_eq!(listed, vec![ids[4].clone(), ids[3].clone(), ids[2].clone()]);
        let active: HashSet<String> = [ids[0].clone()].into();
        let listed = s.local_run_ids("job_x");
        assert_eq!(
            s.prune_runs(
                "job_x",
                listed,
                2,
                &active,
                std::time::Duration::from_secs(10)
            ),
            2
        );
        assert_eq!(s.local_run_ids("job_x").len(), 3);
        let (fixed, _) = s.recover_runs();
        assert_eq!(fixed.len(), 1);
        assert_eq!(
            s.load_run("job_x", &ids[0]).unwrap().status,
            RunStatus::Interrupted
        );
    }

    /// The journal lets go of a record (its checkpoint wrote the file) while a job's run
    /// index is being read: the index still has the run. It was once read from the
    /// directory first and from the journal second, and a run checkpointed between the two
    /// was in neither: listed by no one, and a 404 for an acknowledged run, until a restart.
    #[test]
    fn a_record_checkpointed_while_the_index_is_read_is_in_it() {
        let d = tempfile::tempdir().unwrap();
        let (s, restored) = Store::open(d.path()).unwrap().with_journal().unwrap();
        assert_eq!(restored, 0);
        let j = s.journal().unwrap().clone();
        let t = j.start().unwrap();
        let r = RunRecord::queued(crate::ids::new_run_id(), "job_x", "x", json!({}));
        s.save_new_run(&r).unwrap();
        assert!(j.holds(&r.id));
        let ids = s.read_run_ids_then("job_x", || {
            assert!(j.settle(&[r.id.as_str()], std::time::Duration::from_secs(60)));
        });
        assert!(!j.holds(&r.id), "checkpointed meanwhile");
        assert!(ids.contains(r.id.as_str()), "{ids:?}");
        assert_eq!(s.load_run("job_x", &r.id).unwrap().id, r.id);
        j.close();
        t.join().unwrap();
    }

    /// A run whose `queued` record the journal's live segment holds, and whose worker has
    /// written its final record since, is pruned: a crash before the journal's next batch
    /// (which would carry the tombstone) must not bring the run back as `queued` (then
    /// `interrupted` at recovery) once its final file is gone. It was once discarded there
    /// and its file removed at once.
    #[test]
    fn a_pruned_run_never_comes_back_older_than_it_was() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(d.path()).unwrap().with_journal().unwrap();
        let mut a = RunRecord::queued(crate::ids::new_run_id(), "job_x", "x", json!({}));
        s.save_new_run(&a).unwrap();
        a.status = RunStatus::Succeeded;
        s.save_run(&a).unwrap();
        for _ in 0..2 {
            let mut r = RunRecord::queued(crate::ids::new_run_id(), "job_x", "x", json!({}));
            r.skip("overlap");
            s.save_new_run(&r).unwrap();
        }
        let listed = s.local_run_ids("job_x");
        s.prune_runs(
            "job_x",
            listed,
            2,
            &HashSet::new(),
            std::time::Duration::ZERO,
        );
        drop(s);
        // "Crash": no batch was flushed since the prune.
        let (s, _) = Store::open(d.path()).unwrap().with_journal().unwrap();
        s.recover_runs();
        let back = s.load_run("job_x", &a.id).map(|r| r.status);
        assert!(
            back.is_none() || back == Some(RunStatus::Succeeded),
            "came back as {back:?}"
        );
    }

    /// Retention takes the active runs after the run ids: a run fired between the two is in
    /// neither, and is not pruned though `keep` newer records followed it by the time the
    /// prune runs. (The ids were once listed after the active runs were taken, and such a
    /// run, acknowledged and queued, was discarded: not served, and lost at a crash.)
    #[test]
    fn a_run_fired_after_the_ids_were_listed_is_not_pruned() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(d.path()).unwrap().with_journal().unwrap();
        let mut old = RunRecord::queued(crate::ids::new_run_id(), "job_x", "x", json!({}));
        old.skip("overlap");
        s.save_new_run(&old).unwrap();
        let listed = s.local_run_ids("job_x");
        // Fired meanwhile: a queued run (not in the active runs taken before), then a skip.
        let queued = RunRecord::queued(crate::ids::new_run_id(), "job_x", "x", json!({}));
        s.save_new_run(&queued).unwrap();
        let mut skipped = RunRecord::queued(crate::ids::new_run_id(), "job_x", "x", json!({}));
        skipped.skip("overlap");
        s.save_new_run(&skipped).unwrap();
        s.prune_runs(
            "job_x",
            listed,
            0,
            &HashSet::new(),
            std::time::Duration::ZERO,
        );
        assert_eq!(
            s.load_run("job_x", &queued.id).map(|r| r.status),
            Some(RunStatus::Queued)
        );
        assert!(s.load_run("job_x", &old.id).is_none());
    }

    /// A firing the work queue could not take records its run id twice: `queued`, then
    /// `skipped`. A prune between the two discards the first; the tombstone it leaves must
    /// not take the second with it at a replay (it once did: an acknowledged record lost).
    #[test]
    fn a_record_written_again_after_its_discard_is_replayed() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(d.path()).unwrap().with_journal().unwrap();
        let mut r = RunRecord::queued(crate::ids::new_run_id(), "job_x", "x", json!({}));
        s.save_new_run(&r).unwrap();
        let listed = s.local_run_ids("job_x");
        assert_eq!(
            s.prune_runs(
                "job_x",
                listed,
                0,
                &HashSet::new(),
                std::time::Duration::ZERO
            ),
            1
        );
        r.skip("the work queue is full");
        s.save_new_run(&r).unwrap();
        assert_eq!(
            s.journal()
                .unwrap()
                .stats()
                .discarded
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        drop(s);
        // "Crash": the record is in the journal alone.
        let (s, restored) = Store::open(d.path()).unwrap().with_journal().unwrap();
        assert_eq!(restored, 1);
        assert_eq!(
            s.load_run("job_x", &r.id).map(|r| r.status),
            Some(RunStatus::Skipped)
        );
    }

    /// A run's second record (`skipped`, after the full work queue refused its `queued`
    /// one) is written with `save_run`: whatever the checkpoints do, its file ends with it.
    /// Through the journal again (`save_new_run`), the checkpoint of the segment that held
    /// the `queued` copy, held up across the switch here, wrote that one, and the next
    /// checkpoint left the file as it found it: the run stayed `queued`.
    #[test]
    fn a_second_record_written_across_a_switch_is_the_one_kept() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(d.path()).unwrap().with_journal().unwrap();
        let j = s.journal().unwrap().clone();
        let mut r = RunRecord::queued(crate::ids::new_run_id(), "job_x", "x", json!({}));
        s.save_new_run(&r).unwrap();
        let files = j.files_guard();
        let t = j.start().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !j.switched() {
            assert!(
                std::time::Instant::now() < deadline,
                "no switch within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        r.skip("the work queue is full");
        s.save_run(&r).unwrap();
        drop(files);
        assert!(j.settle(&[r.id.as_str()], std::time::Duration::from_secs(30)));
        let p = s.runs_dir("job_x").join(format!("{}.json", r.id));
        let on_disk: RunRecord = serde_json::from_slice(&fs::read(p).unwrap()).unwrap();
        assert_eq!(on_disk.status, RunStatus::Skipped);
        j.close();
        t.join().unwrap();
    }

    #[test]
    fn token_is_created_once() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let (t1, created) = s.ensure_token().unwrap();
        assert!(created);
        let (t2, created) = s.ensure_token().unwrap();
        assert!(!created);
        assert_eq!(t1, t2);
    }
}
