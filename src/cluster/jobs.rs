//! Jobs in cluster mode: `jobs/<id>` holds the job's JSON (the same document as a job file),
//! and every node follows the prefix with an etcd watch on its `cluster-jobs` thread, which
//! hands each change to the engine through a channel (the engine applies it as it applies a
//! job file written by hand). A job created on one node is live on all within a watch round
//! trip.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::etcd::{Compare, EtcdError, Event, Kv, Op, WatchError};
use super::Cluster;
use crate::job::Job;

/// A change of the cluster's jobs, for the engine.
#[derive(Debug)]
pub enum JobEvent {
    /// A job was created or changed (valid).
    Put(Box<Job>),
    /// A job was deleted.
    Delete(String),
    /// The whole set, after the watch lost track (compaction): anything else is gone.
    All(Vec<Job>),
}

/// Why a job was not written.
#[derive(Debug)]
pub enum JobWriteError {
    Etcd(EtcdError),
    /// The job was changed (or created, or deleted: None) elsewhere since the version this
    /// change was made on; the version etcd holds now.
    Conflict(Option<Box<Job>>),
}

impl From<EtcdError> for JobWriteError {
    fn from(e: EtcdError) -> Self {
        JobWriteError::Etcd(e)
    }
}

/// The jobs read from etcd, the keys that hold no valid job (with why), and the revision.
pub type Loaded = (Vec<Job>, Vec<(String, String)>, i64);

/// How long a watch may stay silent before it is opened again (an idle stream cannot tell a
/// dead member from a quiet cluster).
const WATCH_IDLE: Duration = Duration::from_secs(10);

impl Cluster {
    fn job_key(&self, id: &str) -> String {
        self.key(&format!("jobs/{id}"))
    }

    /// Writes a job: created (`previous` None: only if absent) or changed from `previous`,
    /// the version this node's change was made on — only if etcd still holds that version.
    /// A job changed meanwhile elsewhere is `Conflict` with the version etcd holds (None:
    /// deleted), and nothing is written.
    pub fn save_job(&self, job: &Job, previous: Option<&Job>) -> Result<(), JobWriteError> {
        let ser = |j: &Job| {
            serde_json::to_vec_pretty(j)
                .map_err(|e| EtcdError::BadAnswer(format!("cannot serialise the job: {e}")))
        };
        let data = ser(job)?;
        let key = self.job_key(&job.id);
        let mut expected = match previous {
            Some(p) => Some(ser(p)?),
            None => None,
        };
        // A few rounds at most: etcd may hold the same version serialised otherwise (another
        // daemon version), which is compared again as it is; and a write sent but not
        // answered (a member going down) that did not take effect is sent again.
        let mut unanswered = None;
        for _ in 0..3 {
            let compare = match &expected {
                Some(v) => Compare::ValueIs(&key, v),
                None => Compare::Absent(&key),
            };
            let done = match self.etcd.txn(&[compare], &[Op::put(&key, &data)]) {
                Ok(d) => d,
                // Sent, unanswered: written if etcd holds this very job (read below).
                Err(EtcdError::Unknown(e)) => {
                    unanswered = Some(e);
                    false
                }
                Err(e) => {
                    self.failed(&e);
                    return Err(e.into());
                }
            };
            if done {
                return Ok(());
            }
            let now = self.etcd.get(&key).inspect_err(|e| self.failed(e))?;
            let Some(kv) = now else {
                if expected.is_none() && unanswered.is_some() {
                    // A creation that was not answered and did not take effect: again.
                    continue;
                }
                return Err(JobWriteError::Conflict(None));
            };
            if kv.value == data {
                return Ok(());
            }
            let theirs = self.parse(&kv).ok();
            match (previous, theirs) {
                (Some(p), Some(t)) if *p == t && expected.as_deref() != Some(&kv.value[..]) => {
                    expected = Some(kv.value);
                }
                (_, t) => return Err(JobWriteError::Conflict(t.map(Box::new))),
            }
        }
        match unanswered {
            // etcd never answered the write and does not hold it: not written, try later.
            Some(e) => {
                let e = EtcdError::Unknown(e);
                self.failed(&e);
                Err(e.into())
            }
            None => Err(JobWriteError::Conflict(None)),
        }
    }

    /// Deletes a job.
    pub fn delete_job(&self, id: &str) -> Result<(), EtcdError> {
        self.etcd
            .delete(&self.job_key(id))
            .inspect_err(|e| self.failed(e))
    }

    /// Every job, the keys that do not hold a valid job (with why), and the revision read.
    pub fn load_jobs(&self) -> Result<Loaded, EtcdError> {
        let (kvs, rev) = self.etcd.range_prefix(&self.key("jobs/"))?;
        let mut jobs = Vec::new();
        let mut bad = Vec::new();
        for kv in kvs {
            match self.parse(&kv) {
                Ok(j) => jobs.push(j),
                Err(why) => bad.push((kv.key, why)),
            }
        }
        Ok((jobs, bad, rev))
    }

    /// One job as etcd has it now (None: deleted; an error for a key that holds no usable
    /// job, which leaves the node's version alone).
    pub fn load_job(&self, id: &str) -> Result<Option<Job>, EtcdError> {
        match self.etcd.get(&self.job_key(id))? {
            None => Ok(None),
            Some(kv) => self.parse(&kv).map(Some).map_err(EtcdError::BadAnswer),
        }
    }

    fn parse(&self, kv: &Kv) -> Result<Job, String> {
        let prefix = self.key("jobs/");
        let id = kv.key.strip_prefix(&prefix).unwrap_or("");
        crate::store::job_from_json(&kv.value, id).map_err(|e| e.to_string())
    }

    /// Starts the `cluster-jobs` thread: follows `jobs/` from revision `from + 1` and sends
    /// each change to `apply` until `stop` disconnects. A key that does not hold a valid job is
    /// logged and left alone (the node keeps the version it has).
    pub fn follow_jobs(
        self: &Arc<Self>,
        from: i64,
        apply: impl Fn(JobEvent) + Send + 'static,
        stop: Receiver<()>,
    ) -> std::io::Result<JoinHandle<()>> {
        let c = self.clone();
        thread::Builder::new()
            .name("cluster-jobs".into())
            .spawn(move || {
                let prefix = c.key("jobs/");
                let mut rev = from;
                let mut resync = false;
                loop {
                    if stop.try_recv() != Err(crossbeam_channel::TryRecvError::Empty) {
                        return;
                    }
                    if resync {
                        match c.load_jobs() {
                            Ok((jobs, bad, r)) => {
                                for (key, why) in bad {
                                    log::error!(event = "job.invalid", key = key.as_str(); "etcd key {key} is not a usable job: {why}");
                                }
                                apply(JobEvent::All(jobs));
                                rev = r;
                                resync = false;
                            }
                            Err(_) => {
                                if pause(&stop) {
                                    return;
                                }
                                continue;
                            }
                        }
                    }
                    let r = c.etcd.watch(&prefix, rev + 1, WATCH_IDLE, |events, at| {
                        for e in events {
                            let msg = match e {
                                Event::Put(kv) => match c.parse(&kv) {
                                    Ok(j) => JobEvent::Put(Box::new(j)),
                                    Err(why) => {
                                        log::error!(event = "job.invalid", key = kv.key.as_str(); "etcd key {} is not a usable job: {why}; keeping the previous version if any", kv.key);
                                        continue;
                                    }
                                },
                                Event::Delete(key) => match key.strip_prefix(&prefix) {
                                    Some(id) => JobEvent::Delete(id.to_string()),
                                    None => continue,
                                },
                            };
                            apply(msg);
                        }
                        rev = rev.max(at);
                        stop.try_recv() == Err(crossbeam_channel::TryRecvError::Empty)
                    });
                    match r {
                        Ok(()) => {}
                        Err(WatchError::Compacted) => resync = true,
                        Err(WatchError::Etcd(e)) => {
                            log::debug!(event = "cluster.watch"; "the watch of jobs/ ended: {e}");
                            // The `cluster` thread reports etcd's state; a missed change is
                            // read again with everything once the watch is back.
                            resync = true;
                            if pause(&stop) {
                                return;
                            }
                        }
                    }
                }
            })
    }
}

/// Waits a second, or returns true when the daemon stops.
fn pause(stop: &Receiver<()>) -> bool {
    matches!(
        stop.recv_timeout(Duration::from_secs(1)),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) | Ok(())
    )
}
