//! The engine's side of cluster mode: where a job change is made durable (etcd instead of
//! `jobs/`), how a change seen by the cluster's watch is applied (as a job file written by
//! hand is), and the refusal of writes while etcd is out of reach. Nothing here runs on a
//! single machine.

use std::collections::HashSet;

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{lock, log_job_warnings, Engine, Extra, FireError, Fired, JobError, Work};
use crate::cluster::jobs::{JobEvent, JobWriteError};
use crate::cluster::queue::{Enqueued, Gate};
use crate::cluster::EtcdError;
use crate::job::{FieldError, Job, Overlap, Trigger};
use crate::metrics::Metrics;
use crate::run::RunRecord;

impl Engine {
    /// A failed job write's error: etcd's own refusal (4xx) is the client's to fix, not a
    /// reason to try again.
    fn job_write_error(&self, e: &EtcdError) -> JobError {
        match e {
            EtcdError::Server {
                status: 400..=499,
                message,
            } => {
                let status = if message.contains("too large") {
                    413
                } else {
                    400
                };
                JobError::Rejected(
                    status,
                    format!("the cluster's store (etcd) refused the job: {message}; nothing was changed (an etcd value holds at most about 1.5 MiB: shorten the prompt)"),
                )
            }
            e => JobError::Unavailable(self.unavailable(e)),
        }
    }

    fn unavailable(&self, e: &EtcdError) -> String {
        match self.cluster() {
            Some(c) => format!("{} ({e})", c.unavailable_text()),
            None => e.to_string(),
        }
    }

    /// Makes a new or changed job durable: in etcd in cluster mode, else its job file.
    /// `previous` is the version the change was made on (None: a new job); in cluster mode
    /// a job changed elsewhere meanwhile is a conflict, and the node takes etcd's version.
    pub(super) fn persist_job(&self, job: &Job, previous: Option<&Job>) -> Result<(), JobError> {
        match self.cluster() {
            Some(c) => match c.save_job(job, previous) {
                Ok(()) => Ok(()),
                Err(JobWriteError::Etcd(e)) => Err(self.job_write_error(&e)),
                Err(JobWriteError::Conflict(now)) => {
                    // This node's version was stale: it takes etcd's (the watch would).
                    match now {
                        Some(j) => self.apply_cluster_job(*j),
                        None => {
                            if previous.is_some() && matches!(c.load_job(&job.id), Ok(None)) {
                                self.unload(&job.id);
                            }
                        }
                    }
                    Err(JobError::Conflict(format!(
                        "job {} was changed on another node of the cluster meanwhile; nothing was changed: read it again (GET /jobs/{}) and retry",
                        job.name, job.id
                    )))
                }
            },
            None => self.store.save_job(job).map_err(JobError::Store),
        }
    }

    /// Deletes a job from etcd (cluster mode; nothing on a single machine).
    pub(super) fn unpersist_job(&self, id: &str) -> Result<(), JobError> {
        if let Some(c) = self.cluster() {
            c.delete_job(id)
                .map_err(|e| JobError::Unavailable(self.unavailable(&e)))?;
            c.forget_slots(id);
            c.forget_queue(id);
        }
        Ok(())
    }

    /// Cluster mode's extra rule for a job about to be stored: a file_change trigger names
    /// the node whose files it watches.
    pub fn check_for_cluster(&self, job: Job) -> Result<Job, FieldError> {
        if self.cluster().is_none() {
            return Ok(job);
        }
        for (i, t) in job.triggers.iter().enumerate() {
            if let Trigger::FileChange { node: None, .. } = t {
                return Err(FieldError {
                    field: format!("triggers[{i}].node"),
                    error: "is required in cluster mode: a file_change trigger watches the files of one machine; name its node, like \"node\": \"a\"".into(),
                });
            }
        }
        // Kept per node today, so in a cluster they would be wrong: a budget counted by each
        // node that fires, a switch that sees only the successes of its own node.
        let per_node = [
            ("expect", job.expect.is_some(), "a dead-man's switch"),
            (
                "limits.max_runs_per_hour",
                job.limits.max_runs_per_hour.is_some(),
                "a run budget",
            ),
            (
                "limits.max_runs_per_day",
                job.limits.max_runs_per_day.is_some(),
                "a run budget",
            ),
        ];
        if let Some((field, _, what)) = per_node.into_iter().find(|(_, set, _)| *set) {
            return Err(FieldError {
                field: field.into(),
                error: format!("is not supported in cluster mode yet: {what} is kept per node, and would not hold across the cluster; remove it, or run this job on a single daemon"),
            });
        }
        Ok(job)
    }

    /// Whether this node watches the files of a file_change trigger: always on a single
    /// machine; in cluster mode only the node it names.
    pub fn watches_files_here(&self, t: &Trigger) -> bool {
        match (self.cluster(), t) {
            (Some(c), Trigger::FileChange { node, .. }) => node.as_deref() == Some(c.node()),
            _ => true,
        }
    }

    /// Cluster mode: firings need etcd (claims, the shared records); Err while it is out of
    /// reach.
    pub(super) fn cluster_ready(&self) -> Result<(), FireError> {
        match self.cluster() {
            Some(c) if !c.available() => Err(FireError::Unavailable(c.unavailable_text())),
            _ => Ok(()),
        }
    }

    /// Applies a change of the cluster's jobs seen by the `cluster-jobs` watch.
    pub fn apply_cluster_jobs(&self, ev: JobEvent) {
        let _g = lock(&self.mutate);
        match ev {
            JobEvent::Put(job) => self.apply_cluster_job(*job),
            JobEvent::Delete(id) => {
                if let Some(job) = self.job_by_id(&id) {
                    let name = job.name.clone();
                    if let Err(e) = self.delete_loaded(job, false) {
                        log::error!(event = "job.removed", job = name.as_str(); "the job was deleted in the cluster but its local run records could not be removed: {e:?}");
                    } else {
                        log::info!(event = "job.removed", job = name.as_str(); "job deleted in the cluster");
                    }
                }
            }
            JobEvent::All(jobs) => {
                // The snapshot may predate a change this node made since (the API's writes
                // do not wait for the watch): a job that differs is read again first.
                let Some(c) = self.cluster() else {
                    return;
                };
                let ids: HashSet<String> = jobs.iter().map(|j| j.id.clone()).collect();
                for j in self.jobs() {
                    if !ids.contains(&j.id) {
                        match c.load_job(&j.id) {
                            Ok(None) => {
                                self.unload(&j.id);
                                log::info!(event = "job.removed", job = j.name.as_str(); "job no longer in the cluster; unloaded");
                            }
                            Ok(Some(now)) => self.apply_cluster_job(now),
                            Err(_) => {}
                        }
                    }
                }
                for job in jobs {
                    if self.job_by_id(&job.id).as_deref() == Some(&job) {
                        continue;
                    }
                    if let Ok(Some(now)) = c.load_job(&job.id) {
                        self.apply_cluster_job(now);
                    }
                }
            }
        }
    }

    fn apply_cluster_job(&self, job: Job) {
        if self.job_by_id(&job.id).as_deref() == Some(&job) {
            return;
        }
        if let Some(other) = self.job(&job.name) {
            if other.id != job.id {
                log::error!(event = "job.rejected", job = job.name.as_str(); "job {} in the cluster uses the name {:?} of job {}; not loaded", job.id, job.name, other.id);
                return;
            }
        }
        log::info!(event = "job.loaded", job = job.name.as_str(), id = job.id.as_str(); "job loaded from the cluster");
        log_job_warnings(&job);
        self.install(job);
    }

    /// SIGHUP in cluster mode: every job read again from etcd.
    pub(super) fn resync_cluster_jobs(&self) {
        let Some(c) = self.cluster() else {
            return;
        };
        match c.load_jobs() {
            Ok((jobs, bad, _)) => {
                for (key, why) in bad {
                    log::error!(event = "job.invalid", key = key.as_str(); "etcd key {key} is not a usable job: {why}");
                }
                self.apply_cluster_jobs(JobEvent::All(jobs));
            }
            Err(e) => {
                log::error!(event = "daemon.reload"; "cannot read the jobs from etcd: {e}; keeping the ones loaded")
            }
        }
    }

    /// Cluster mode: a firing goes to the cluster's queue, under the job's overlap policy
    /// kept in etcd (`cluster/queue.rs`). None when it runs on this node as on one machine:
    /// not in cluster mode, a file_change firing (its agent works on this node's files), or
    /// a webhook body too big for an etcd value.
    pub(super) fn fire_clustered(
        &self,
        job: &Arc<Job>,
        trigger: &Map<String, Value>,
        extra: &Extra,
    ) -> Option<Result<Fired, FireError>> {
        let c = self.cluster()?;
        if trigger.get("type").and_then(Value::as_str) == Some("file_change") {
            return None;
        }
        let body = match &extra.body {
            Some(b) => match b.bytes() {
                Ok(d) if d.len() <= QUEUE_BODY_MAX => Some(d.into_owned()),
                _ => return None,
            },
            None => None,
        };
        let mut rec = RunRecord::queued(
            crate::ids::new_run_id(),
            &job.id,
            &job.name,
            Value::Object(trigger.clone()),
        );
        let gate = match job.overlap {
            Overlap::Parallel => Gate::Parallel,
            Overlap::Skip => Gate::Skip,
            Overlap::Queue => Gate::Queue,
        };
        let r = match c.enqueue(&rec, &extra.vars, body.as_deref(), gate) {
            Ok(Enqueued::Queued) => {
                c.kick_queue();
                Ok(Fired::Queued(rec.id))
            }
            Ok(Enqueued::Parked) => {
                log::info!(event = "run.queued", job = job.name.as_str(), run = rec.id.as_str(); "queued behind the active run (overlap: queue)");
                Ok(Fired::Queued(rec.id))
            }
            Ok(Enqueued::Coalesced(id)) => {
                Metrics::inc(&self.metrics.runs_coalesced_total);
                Ok(Fired::Coalesced(id))
            }
            Ok(Enqueued::Busy) => {
                rec.skip("a run of this job was still active in the cluster (overlap: skip)");
                match self.store.save_run(&rec) {
                    Ok(()) => {
                        Metrics::inc(&self.metrics.runs_skipped_total);
                        log::info!(event = "run.skipped", job = rec.job_name.as_str(), run = rec.id.as_str(); "{}", rec.error.as_deref().unwrap_or(""));
                        Ok(Fired::Skipped(rec.id))
                    }
                    Err(e) => Err(FireError::Store(e)),
                }
            }
            Err(EtcdError::Server {
                status: 400..=499,
                message,
            }) => Err(FireError::Rejected(
                if message.contains("too large") { 413 } else { 400 },
                format!("the cluster's store (etcd) refused the run: {message}; nothing was queued (an etcd value holds at most about 1.5 MiB: send smaller variables or body)"),
            )),
            Err(e) => Err(FireError::Unavailable(self.unavailable(&e))),
        };
        Some(r)
    }

    /// The `cluster-queue` thread's round: claims queued runs for this node's idle workers
    /// and hands them to the pool.
    pub fn take_cluster_runs(&self) {
        let Some(c) = self.cluster() else {
            return;
        };
        if self.is_shutting_down() {
            return;
        }
        let busy = (self.running_count() + self.work_tx.len()).max(c.claimed_count());
        let free = self.settings.workers.saturating_sub(busy);
        let runs = match c.claim_runs(free) {
            Ok(r) => r,
            Err(e) => {
                log::warn!(event = "cluster.queue"; "cannot claim queued runs: {e}");
                return;
            }
        };
        for q in runs {
            let Some(job) = self.job_by_id(&q.job_id) else {
                // Deleted meanwhile: the run never starts, and its record goes with the job.
                c.claimed_done(&q.run.id);
                let _ = c.finish_queued(&q.job_id, &q.run.id);
                crate::store::SharedRuns::remove(c.as_ref(), &q.job_id, &[q.run.id]);
                continue;
            };
            let body = q.body.map(|b| {
                Arc::new(crate::payload::Body::new(
                    b,
                    &self.store.dir().join("spool"),
                ))
            });
            let id = q.run.id.clone();
            let work = Work {
                job,
                run: q.run,
                extra: Arc::new(Extra { vars: q.vars, body }),
                due: None,
            };
            Metrics::inc(&self.metrics.runs_queued);
            if self.work_tx.try_send(work).is_err() {
                Metrics::dec(&self.metrics.runs_queued);
                c.unclaim(&id);
            }
        }
    }

    /// Cluster mode, as a run ends on this node: a run claimed from the queue lets go of it
    /// (the job's pending run is queued) and the queue thread looks for more work.
    pub(super) fn finish_cluster_run(&self, job_id: &str, run_id: &str) {
        let Some(c) = self.cluster() else {
            return;
        };
        if c.claimed_done(run_id) {
            if let Err(e) = c.finish_queued(job_id, run_id) {
                log::warn!(event = "cluster.queue", run = run_id; "could not release the run in etcd ({e}); the leader releases it");
            }
            c.kick_queue();
        } else {
            // A fenced run (this node's lease lapsed): the cluster has it now.
            c.unfence(run_id);
        }
    }

    /// Cluster mode: whether a run taken by a worker was given up when this node's lease
    /// lapsed (it must not start: another node may be running it).
    pub(super) fn fenced_here(&self, run_id: &str) -> bool {
        self.cluster().is_some_and(|c| c.is_fenced(run_id))
    }

    /// Kills the agents of runs this node gave up when its lease lapsed (the
    /// `cluster-fence` thread, through [`crate::cluster::Cluster::on_fence`]).
    pub fn kill_fenced(&self, run_ids: &[String]) {
        let m = lock(&self.running);
        for id in run_ids {
            if let Some(tx) = m.get(id) {
                log::warn!(event = "run.fenced", run = id.as_str(); "killing the agent of run {id}: this node's lease lapsed and the cluster may run it elsewhere");
                let _ = tx.try_send(());
            }
        }
    }
}

/// Largest webhook body that travels through the cluster's queue (an etcd value is at most
/// 1.5 MiB, and base64 grows it by a third); a bigger one runs on the node it reached.
const QUEUE_BODY_MAX: usize = 512 * 1024;
