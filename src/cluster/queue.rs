//! The cluster's run queue. A firing (on any node) writes its `queued` record, the run's
//! payload under `queue/<run>` and, for `overlap: skip` and `queue` jobs, the job's
//! `busy/<job>` key, in one transaction; a job already busy gets a `skipped` record, or
//! (`queue`) its one pending run under `pending/<job>` (a later firing coalesces into it).
//! Every node's `cluster-queue` thread claims queued runs for its own idle workers with a
//! transaction that creates `claims/<run>` under the node's lease. When a run ends, its
//! queue entry and claim go, and the job's pending run (if any) becomes the busy one and is
//! queued. A claim dies with its node's lease, so a queued run whose claimer died is claimed
//! again. A run that starts leaves the queue, its payload kept as `payload/<run>`; if its
//! node dies, the leader's reaper (`runs.rs`) queues it again when the job has retries left,
//! else closes it `interrupted` and releases the job.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::Receiver;
use serde_json::{json, Map, Value};

use super::etcd::{Compare, EtcdError, Op};
use super::Cluster;
use crate::run::RunRecord;

/// A run waiting in the cluster's queue, as a node claims it.
#[derive(Debug)]
pub struct Queued {
    pub job_id: String,
    pub run: RunRecord,
    pub vars: Map<String, Value>,
    pub body: Option<Vec<u8>>,
}

/// What a firing became in the cluster.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued for any node's workers.
    Queued,
    /// The job is busy (`overlap: skip`).
    Busy,
    /// Parked as the job's pending run (`overlap: queue`).
    Parked,
    /// Merged into the job's pending run, which has this id.
    Coalesced(String),
}

/// The overlap policy, as the queue needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Parallel,
    Skip,
    Queue,
}

impl Cluster {
    fn payload(rec: &RunRecord, vars: &Map<String, Value>, body: Option<&[u8]>) -> Vec<u8> {
        json!({
            "job": rec.job_id,
            "run": rec,
            "vars": vars,
            "body": body.map(crate::ids::base64_std),
        })
        .to_string()
        .into_bytes()
    }

    /// Records a firing and queues it, under the job's overlap policy (module doc).
    pub fn enqueue(
        &self,
        rec: &RunRecord,
        vars: &Map<String, Value>,
        body: Option<&[u8]>,
        gate: Gate,
    ) -> Result<Enqueued, EtcdError> {
        let r = match self.enqueue_inner(rec, vars, body, gate, 3) {
            // Sent, unanswered: what happened is read back (the run id is unique).
            Err(EtcdError::Unknown(e)) => self.enqueued_after_all(rec).and_then(|r| {
                r.ok_or(EtcdError::Unreachable(format!(
                    "{e} (the run was not queued)"
                )))
            }),
            r => r,
        };
        if let Err(e) = &r {
            self.failed(e);
        }
        r
    }

    /// After a write whose answer was lost: whether the firing's record reached etcd, and
    /// then whether it was queued or parked.
    fn enqueued_after_all(&self, rec: &RunRecord) -> Result<Option<Enqueued>, EtcdError> {
        let run_key = self.key(&format!("runs/{}/{}", rec.job_id, rec.id));
        if self.etcd.get(&run_key)?.is_none() {
            return Ok(None);
        }
        let pending = self.key(&format!("pending/{}", rec.job_id));
        let parked = self
            .etcd
            .get(&pending)?
            .and_then(|kv| parse_payload(&kv.value))
            .is_some_and(|q| q.run.id == rec.id);
        Ok(Some(if parked {
            Enqueued::Parked
        } else {
            Enqueued::Queued
        }))
    }

    fn enqueue_inner(
        &self,
        rec: &RunRecord,
        vars: &Map<String, Value>,
        body: Option<&[u8]>,
        gate: Gate,
        tries: u32,
    ) -> Result<Enqueued, EtcdError> {
        let payload = Self::payload(rec, vars, body);
        let record = serde_json::to_vec(rec)
            .map_err(|e| EtcdError::BadAnswer(format!("cannot serialise the record: {e}")))?;
        let run_key = self.key(&format!("runs/{}/{}", rec.job_id, rec.id));
        let queue_key = self.key(&format!("queue/{}", rec.id));
        let busy = self.key(&format!("busy/{}", rec.job_id));
        let pending = self.key(&format!("pending/{}", rec.job_id));
        let record_op = Op::put(&run_key, &record);
        let queue_op = Op::put(&queue_key, &payload);
        if gate == Gate::Parallel {
            self.etcd.txn(&[], &[record_op, queue_op])?;
            return Ok(Enqueued::Queued);
        }
        let busy_op = Op::put(&busy, rec.id.as_bytes());
        if self
            .etcd
            .txn(&[Compare::Absent(&busy)], &[record_op, queue_op, busy_op])?
        {
            return Ok(Enqueued::Queued);
        }
        if gate == Gate::Skip {
            return Ok(Enqueued::Busy);
        }
        let pending_op = Op::put(&pending, &payload);
        if self
            .etcd
            .txn(&[Compare::Absent(&pending)], &[record_op, pending_op])?
        {
            return Ok(Enqueued::Parked);
        }
        let waiting = self
            .etcd
            .get(&pending)?
            .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .and_then(|v| v["run"]["id"].as_str().map(str::to_string));
        match waiting {
            Some(id) => Ok(Enqueued::Coalesced(id)),
            // It was promoted meanwhile: try again, as a new firing.
            None if tries > 0 => self.enqueue_inner(rec, vars, body, gate, tries - 1),
            None => Err(EtcdError::BadAnswer(
                "the job's queue kept changing under this firing; try again".into(),
            )),
        }
    }

    /// Up to `n` queued runs no node has claimed, oldest first, each claimed for this node.
    pub fn claim_runs(&self, n: usize) -> Result<Vec<Queued>, EtcdError> {
        let lease = self.lease.load(std::sync::atomic::Ordering::SeqCst);
        if n == 0 || lease == 0 || !self.available() {
            return Ok(Vec::new());
        }
        let prefix = self.key("queue/");
        let (queued, _) = self
            .etcd
            .range_prefix(&prefix)
            .inspect_err(|e| self.failed(e))?;
        if queued.is_empty() {
            return Ok(Vec::new());
        }
        // Runs claimed already are passed over without a transaction each.
        let claims = self.key("claims/");
        let (taken, _) = self.etcd.range_prefix(&claims)?;
        // A claim of this node (this lease) it does not know of: made by a claim whose answer
        // was lost. Given back, so any node (this one too) claims the run again.
        let orphans: Vec<String> = {
            let known = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
            taken
                .iter()
                .filter(|kv| kv.value == self.node().as_bytes() && kv.lease == lease)
                .filter(|kv| {
                    kv.key
                        .strip_prefix(&claims)
                        .is_some_and(|id| !known.contains_key(id))
                })
                .map(|kv| kv.key.clone())
                .collect()
        };
        for key in &orphans {
            log::warn!(event = "cluster.queue", key = key.as_str(); "giving back a claim of this node it had lost track of (an unanswered write)");
            self.etcd.txn(
                &[
                    Compare::ValueIs(key, self.node().as_bytes()),
                    Compare::LeaseIs(key, lease),
                ],
                &[Op::Delete(key)],
            )?;
        }
        let taken: std::collections::HashSet<&str> = taken
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(&claims))
            .collect();
        let mut out = Vec::new();
        for kv in &queued {
            if out.len() >= n {
                break;
            }
            let Some(run_id) = kv.key.strip_prefix(&prefix) else {
                continue;
            };
            if taken.contains(run_id) {
                continue;
            }
            let claim = self.key(&format!("claims/{run_id}"));
            let claimed = match self.etcd.txn(
                &[Compare::Absent(&claim), Compare::Present(&kv.key)],
                &[Op::Put {
                    key: &claim,
                    value: self.node().as_bytes(),
                    lease,
                }],
            ) {
                // Sent, unanswered: the claim is this node's if it names it, under its lease.
                Err(EtcdError::Unknown(_)) => self
                    .etcd
                    .get(&claim)?
                    .is_some_and(|c| c.value == self.node().as_bytes() && c.lease == lease),
                r => r?,
            };
            if !claimed {
                continue;
            }
            self.claimed(run_id, &kv.value, lease);
            match parse_payload(&kv.value) {
                Some(q) => out.push(q),
                None => {
                    log::error!(event = "cluster.queue", run = run_id; "queued run {run_id} is unreadable; dropped");
                    let _ = self
                        .etcd
                        .txn(&[], &[Op::Delete(&kv.key), Op::Delete(&claim)]);
                    self.claimed_done(run_id);
                }
            }
        }
        Ok(out)
    }

    /// A run is over (or will never start): its queue entry and claim go, and the job's
    /// pending run becomes the busy one, queued.
    pub fn finish_queued(&self, job_id: &str, run_id: &str) -> Result<(), EtcdError> {
        let queue_key = self.key(&format!("queue/{run_id}"));
        let claim = self.key(&format!("claims/{run_id}"));
        self.etcd
            .txn(&[], &[Op::Delete(&queue_key), Op::Delete(&claim)])?;
        self.release(job_id, run_id)
    }

    /// Releases `busy/<job>` held by `run_id`, promoting the pending run.
    pub(super) fn release(&self, job_id: &str, run_id: &str) -> Result<(), EtcdError> {
        let busy = self.key(&format!("busy/{job_id}"));
        let pending = self.key(&format!("pending/{job_id}"));
        for _ in 0..5 {
            match self.etcd.get(&busy)? {
                Some(kv) if kv.value == run_id.as_bytes() => {}
                _ => return Ok(()),
            }
            let done = match self.etcd.get(&pending)? {
                Some(p) => {
                    let next = parse_payload(&p.value).map(|q| q.run.id);
                    let Some(next) = next else {
                        self.etcd.delete(&pending)?;
                        continue;
                    };
                    let next_queue = self.key(&format!("queue/{next}"));
                    self.etcd.txn(
                        &[
                            Compare::ValueIs(&busy, run_id.as_bytes()),
                            Compare::ValueIs(&pending, &p.value),
                        ],
                        &[
                            Op::Put {
                                key: &busy,
                                value: next.as_bytes(),
                                lease: 0,
                            },
                            Op::Put {
                                key: &next_queue,
                                value: &p.value,
                                lease: 0,
                            },
                            Op::Delete(&pending),
                        ],
                    )?
                }
                None => self.etcd.txn(
                    &[
                        Compare::ValueIs(&busy, run_id.as_bytes()),
                        Compare::Absent(&pending),
                    ],
                    &[Op::Delete(&busy)],
                )?,
            };
            if done {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The leader's round over `busy/`: a job held by a run that is final or gone (its
    /// finisher could not reach etcd) is released.
    pub(super) fn heal_busy(&self) -> Result<(), EtcdError> {
        let prefix = self.key("busy/");
        let (kvs, _) = self.etcd.range_prefix(&prefix)?;
        for kv in kvs {
            let Some(job) = kv.key.strip_prefix(&prefix) else {
                continue;
            };
            let run = String::from_utf8_lossy(&kv.value).into_owned();
            let rec = self
                .etcd
                .get(&self.key(&format!("runs/{job}/{run}")))?
                .and_then(|r| serde_json::from_slice::<RunRecord>(&r.value).ok());
            if rec.is_none_or(|r| r.status.is_final()) {
                self.finish_queued(job, &run)?;
            }
        }
        Ok(())
    }

    /// Forgets a deleted job's queue state.
    pub fn forget_queue(&self, job_id: &str) {
        for k in [format!("busy/{job_id}"), format!("pending/{job_id}")] {
            let _ = self.etcd.delete(&self.key(&k));
        }
    }

    /// Starts the `cluster-queue` thread: calls `take` when the queue changes (an etcd watch
    /// of `queue/`), when [`Cluster::kick_queue`] is called (a worker became free), and every
    /// second.
    pub fn spawn_queue(
        self: &Arc<Self>,
        take: impl Fn() + Send + 'static,
        stop: Receiver<()>,
    ) -> std::io::Result<JoinHandle<()>> {
        let c = self.clone();
        let watch_stop = stop.clone();
        thread::Builder::new()
            .name("cluster-queue-watch".into())
            .spawn(move || {
                let prefix = c.key("queue/");
                while watch_stop.try_recv() == Err(crossbeam_channel::TryRecvError::Empty) {
                    // From now on (revision 0): what is already queued is found by the
                    // thread's own reads.
                    let r = c
                        .etcd
                        .watch(&prefix, 0, Duration::from_secs(10), |events, _| {
                            if !events.is_empty() {
                                c.kick_queue();
                            }
                            watch_stop.try_recv() == Err(crossbeam_channel::TryRecvError::Empty)
                        });
                    if r.is_err() {
                        let _ = watch_stop.recv_timeout(Duration::from_secs(1));
                    }
                }
            })?;
        let c = self.clone();
        thread::Builder::new()
            .name("cluster-queue".into())
            .spawn(move || loop {
                crossbeam_channel::select! {
                    recv(stop) -> _ => return,
                    recv(c.kick_rx) -> _ => {},
                    default(Duration::from_secs(1)) => {},
                }
                take();
            })
    }

    /// Gives back a claim this node cannot honour (its local queue is full): only while the
    /// claim is still this node's, under the lease it was made with.
    pub fn unclaim(&self, run_id: &str) {
        let lease = self
            .claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
            .map(|c| c.lease);
        if let Some(lease) = lease {
            let claim = self.key(&format!("claims/{run_id}"));
            match self.etcd.txn(
                &[
                    Compare::ValueIs(&claim, self.node().as_bytes()),
                    Compare::LeaseIs(&claim, lease),
                ],
                &[Op::Delete(&claim)],
            ) {
                Ok(true) => {}
                Ok(false) => {
                    log::info!(event = "cluster.queue", run = run_id; "claim of run {run_id} was already gone (this node's lease lapsed)")
                }
                Err(e) => {
                    log::warn!(event = "cluster.queue", run = run_id; "could not give back the claim of run {run_id} ({e}); it lapses with this node's lease")
                }
            }
        }
        self.claimed_done(run_id);
    }

    /// Notes a run this node claimed under `lease`, and its payload; the count limits
    /// further claims.
    fn claimed(&self, run_id: &str, payload: &[u8], lease: i64) {
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                run_id.to_string(),
                super::Claim {
                    payload: payload.to_vec(),
                    lease,
                    started: false,
                },
            );
    }

    /// The payload of a run this node claimed.
    pub(super) fn claimed_payload(&self, run_id: &str) -> Option<Vec<u8>> {
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
            .map(|c| c.payload.clone())
    }

    /// Forgets a claimed run; whether it was one.
    pub fn claimed_done(&self, run_id: &str) -> bool {
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id)
            .is_some()
    }

    /// How many claimed runs this node has not finished.
    pub fn claimed_count(&self) -> usize {
        self.claimed.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Wakes the `cluster-queue` thread (a worker became free, the queue changed).
    pub fn kick_queue(&self) {
        let _ = self.kick_tx.try_send(());
    }
}

fn parse_payload(data: &[u8]) -> Option<Queued> {
    let v: Value = serde_json::from_slice(data).ok()?;
    let run: RunRecord = serde_json::from_value(v["run"].clone()).ok()?;
    let body = match v["body"].as_str() {
        Some(b) => {
            use base64::Engine as _;
            Some(base64::engine::general_purpose::STANDARD.decode(b).ok()?)
        }
        None => None,
    };
    Some(Queued {
        job_id: v["job"].as_str()?.to_string(),
        vars: v["vars"].as_object().cloned().unwrap_or_default(),
        body,
        run,
    })
}
