//! The engine's side of cluster mode: where a job change is made durable (etcd instead of
//! `jobs/`), how a change seen by the cluster's watch is applied (as a job file written by
//! hand is), and the refusal of writes while etcd is out of reach. Nothing here runs on a
//! single machine.

use std::collections::HashSet;

use super::{lock, log_job_warnings, Engine, FireError, JobError};
use crate::cluster::jobs::JobEvent;
use crate::cluster::EtcdError;
use crate::job::{FieldError, Job, Trigger};

impl Engine {
    fn unavailable(&self, e: &EtcdError) -> String {
        match self.cluster() {
            Some(c) => format!("{} ({e})", c.unavailable_text()),
            None => e.to_string(),
        }
    }

    /// Makes a new or changed job durable: in etcd in cluster mode, else its job file.
    pub(super) fn persist_job(&self, job: &Job) -> Result<(), JobError> {
        match self.cluster() {
            Some(c) => c
                .save_job(job)
                .map_err(|e| JobError::Unavailable(self.unavailable(&e))),
            None => self.store.save_job(job).map_err(JobError::Store),
        }
    }

    /// Deletes a job from etcd (cluster mode; nothing on a single machine).
    pub(super) fn unpersist_job(&self, id: &str) -> Result<(), JobError> {
        if let Some(c) = self.cluster() {
            c.delete_job(id)
                .map_err(|e| JobError::Unavailable(self.unavailable(&e)))?;
            c.forget_slots(id);
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
                let ids: HashSet<String> = jobs.iter().map(|j| j.id.clone()).collect();
                for j in self.jobs() {
                    if !ids.contains(&j.id) {
                        self.unload(&j.id);
                        log::info!(event = "job.removed", job = j.name.as_str(); "job no longer in the cluster; unloaded");
                    }
                }
                for job in jobs {
                    self.apply_cluster_job(job);
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
}
