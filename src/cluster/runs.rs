//! Run records in cluster mode: `runs/<job>/<run-id>` holds each record (its output capped
//! by the job's `max_output_kb`, as in a file), so every node's API lists the cluster's
//! runs; `active/<run-id>` names the node of each run that is `queued` or `running`, written
//! in the same transaction as the record. The leader reaps: a run whose node's lease has
//! expired (the node died or lost etcd for longer than the lease) is closed `interrupted`,
//! with the node and the reason.
//!
//! Fencing: a node writes a run it claimed only while the run is still its own — the
//! `running` record with a transaction that compares `claims/<run>` (this node, under the
//! lease it claimed with), the final one comparing `active/<run>` (which names the node and
//! that lease). When the comparison fails (the lease lapsed and the leader retried or
//! closed the run), the write is dropped with a log line and the run is fenced: its agent is
//! killed.

use serde_json::{json, Value};

use super::etcd::{Compare, EtcdError, Op};
use super::Cluster;
use crate::run::{RunRecord, RunStatus};
use crate::store::SharedRuns;

impl Cluster {
    fn run_key(&self, job_id: &str, run_id: &str) -> String {
        self.key(&format!("runs/{job_id}/{run_id}"))
    }

    fn active_key(&self, run_id: &str) -> String {
        self.key(&format!("active/{run_id}"))
    }

    /// What a write of `rec` must find in etcd: the run's claim or `active/` key still this
    /// node's when this node claimed it; nothing for other records. Err when the run was
    /// fenced already.
    fn guard(&self, rec: &RunRecord) -> Result<Guard, EtcdError> {
        if let Some(g) = self.fenced_guard(&rec.id) {
            return Ok(g);
        }
        let claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match claimed.get(&rec.id) {
            Some(c) if c.started => Guard::Active(c.lease),
            Some(c) => Guard::Claim(c.lease),
            None => Guard::Free,
        })
    }

    fn lost(&self, rec: &RunRecord) -> EtcdError {
        EtcdError::Lost(format!(
            "run {} is no longer this node's (its lease lapsed; the cluster retried or closed the run); its {} record is kept in this node's data dir only",
            rec.id,
            rec.status.as_str()
        ))
    }

    /// The value of `active/<run>`: the run's job, node and the lease it runs under.
    fn marker(&self, rec: &RunRecord, lease: i64) -> String {
        json!({"job": rec.job_id, "node": rec.node.as_deref().unwrap_or(self.node()), "lease": lease})
            .to_string()
    }

    fn save_run(&self, rec: &RunRecord) -> Result<(), EtcdError> {
        let guard = self.guard(rec)?;
        self.save_guarded(rec, guard)
    }

    fn save_guarded(&self, rec: &RunRecord, guard: Guard) -> Result<(), EtcdError> {
        if guard == Guard::Gone {
            return Err(self.lost(rec));
        }
        let data = shared_copy(rec, self.node())?;
        let key = self.run_key(&rec.job_id, &rec.id);
        let active = self.active_key(&rec.id);
        let queue = self.key(&format!("queue/{}", rec.id));
        let claim = self.key(&format!("claims/{}", rec.id));
        let payload_key = self.key(&format!("payload/{}", rec.id));
        let payload = match rec.status {
            RunStatus::Running => self.claimed_payload(&rec.id),
            _ => None,
        };
        let lease = match guard {
            Guard::Claim(l) | Guard::Active(l) => l,
            Guard::Free | Guard::Gone => self.lease.load(std::sync::atomic::Ordering::SeqCst),
        };
        let marker = self.marker(rec, lease);
        let node = self.node().as_bytes();
        let compare: Vec<Compare<'_>> = match guard {
            Guard::Free | Guard::Gone => Vec::new(),
            Guard::Claim(l) => vec![Compare::ValueIs(&claim, node), Compare::LeaseIs(&claim, l)],
            Guard::Active(_) => vec![Compare::ValueIs(&active, marker.as_bytes())],
        };
        let mut ops = vec![Op::Put {
            key: &key,
            value: &data,
            lease: 0,
        }];
        match rec.status {
            // A queued run belongs to the cluster's queue, not to a node.
            RunStatus::Queued => {}
            // Started: it leaves the queue (no node claims it again, whatever happens to its
            // claim); if its node dies now, the reaper closes it.
            RunStatus::Running => {
                ops.push(Op::Put {
                    key: &active,
                    value: marker.as_bytes(),
                    lease: 0,
                });
                ops.push(Op::Delete(&queue));
                ops.push(Op::Delete(&claim));
                if let Some(p) = &payload {
                    ops.push(Op::put(&payload_key, p));
                }
            }
            // A final record ends the run everywhere: nobody claims it again.
            _ => {
                ops.push(Op::Delete(&active));
                ops.push(Op::Delete(&queue));
                ops.push(Op::Delete(&claim));
                ops.push(Op::Delete(&payload_key));
            }
        }
        let mut unknown = None;
        let done = match self.etcd.txn(&compare, &ops) {
            Ok(d) => d,
            // Sent, unanswered: applied if the record in etcd is this one (read below).
            Err(e @ EtcdError::Unknown(_)) => {
                unknown = Some(e);
                false
            }
            Err(e) => {
                self.failed(&e);
                return Err(e);
            }
        };
        // Not applied, or not known to be: the write took effect (this try, or an earlier
        // one whose answer was lost) when etcd holds this very record.
        if !done {
            let mine = self
                .etcd
                .get(&key)
                .inspect_err(|e| self.failed(e))?
                .is_some_and(|kv| kv.value == data);
            if !mine {
                return Err(match unknown {
                    // Not applied: kept and written again later.
                    Some(e) => {
                        self.failed(&e);
                        e
                    }
                    None => self.lost(rec),
                });
            }
        }
        if rec.status == RunStatus::Running {
            if let Some(c) = self
                .claimed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&rec.id)
            {
                c.started = true;
            }
        }
        Ok(())
    }

    /// The leader's round: closes the runs of nodes that are gone (not in `alive`). A live
    /// node closes its own: fenced runs through their old guard, an earlier life's runs at
    /// start-up ([`Cluster::reconcile_own`]).
    pub(super) fn reap(&self, alive: &[String]) -> Result<(), EtcdError> {
        let prefix = self.key("active/");
        let (kvs, _) = self.etcd.range_prefix(&prefix)?;
        for kv in kvs {
            let Some(run_id) = kv.key.strip_prefix(&prefix) else {
                continue;
            };
            let v: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            let (Some(job), Some(node)) = (v["job"].as_str(), v["node"].as_str()) else {
                self.etcd.delete(&kv.key)?;
                continue;
            };
            if alive.iter().any(|n| n == node) {
                continue;
            }
            let rec = self
                .etcd
                .get(&self.run_key(job, run_id))?
                .and_then(|r| serde_json::from_slice::<RunRecord>(&r.value).ok());
            match rec {
                Some(r) if r.status == RunStatus::Running && self.retry_elsewhere(&r, node)? => {}
                Some(mut r) if !r.status.is_final() => {
                    let was = r.status;
                    r.interrupt(format!(
                        "node {node} stopped answering (its etcd lease expired) while this run was {}",
                        was.as_str()
                    ));
                    r.node = Some(node.to_string());
                    log::warn!(event = "run.interrupted", job = r.job_name.as_str(), run = r.id.as_str(), node = node;
                        "node {node} is gone; its run is marked interrupted");
                    self.save_run(&r)?;
                    self.release(job, &r.id)?;
                }
                _ => self.etcd.delete(&kv.key)?,
            }
        }
        Ok(())
    }
}

impl Cluster {
    /// At start-up: the runs this node executed in an earlier life (their `active/` key names
    /// this node and another lease) whose final record never reached etcd (it ended while
    /// etcd was away, and the daemon stopped before etcd was back; or the daemon was killed).
    /// The final record in the data dir (`local`) is written, else the run is closed
    /// `interrupted`, in a transaction compared on the `active/` key; then the job is
    /// released.
    pub fn reconcile_own(&self, local: impl Fn(&str, &str) -> Option<RunRecord>) {
        let prefix = self.active_key("");
        let lease = self.lease.load(std::sync::atomic::Ordering::SeqCst);
        let kvs = match self.etcd.range_prefix(&prefix) {
            Ok((kvs, _)) => kvs,
            Err(e) => {
                log::warn!(event = "cluster.reconcile", node = self.node(); "cannot read this node's earlier runs from etcd: {e}; the leader closes them as interrupted");
                return;
            }
        };
        for kv in kvs {
            let v: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            let (Some(job), Some(node), Some(run)) = (
                v["job"].as_str(),
                v["node"].as_str(),
                kv.key.strip_prefix(&prefix),
            ) else {
                continue;
            };
            if node != self.node() || super::etcd::int(&v["lease"]) == lease {
                continue;
            }
            let (rec, found) = match local(job, run).filter(|r| r.status.is_final()) {
                Some(r) => (r, true),
                None => {
                    let shared = self
                        .etcd
                        .get(&self.run_key(job, run))
                        .ok()
                        .flatten()
                        .and_then(|kv| serde_json::from_slice::<RunRecord>(&kv.value).ok());
                    let Some(mut r) = shared.filter(|r| !r.status.is_final()) else {
                        continue;
                    };
                    r.interrupt(format!(
                        "node {node} stopped while this run was {} (it restarted without a final record of it)",
                        r.status.as_str()
                    ));
                    (r, false)
                }
            };
            let r = self.write_final_over(&rec, &kv.key, &kv.value);
            match r {
                Ok(true) => {
                    if found {
                        log::info!(event = "cluster.reconcile", job = rec.job_name.as_str(), run = run; "run {run} ended while etcd was away; its {} record is now in etcd", rec.status.as_str());
                    } else {
                        log::warn!(event = "run.interrupted", job = rec.job_name.as_str(), run = run; "run {run} of this node's earlier life has no final record here; marked interrupted");
                    }
                    if let Err(e) = self.release(job, run) {
                        log::warn!(event = "cluster.reconcile", run = run; "could not release the job of run {run}: {e}; the leader releases it");
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    log::warn!(event = "cluster.reconcile", run = run; "could not write the record of run {run} to etcd: {e}; the leader closes it as interrupted")
                }
            }
        }
    }

    /// Writes a final record in place of the `running` one, if `active` still holds `held`.
    fn write_final_over(
        &self,
        rec: &RunRecord,
        active: &str,
        held: &[u8],
    ) -> Result<bool, EtcdError> {
        let data = shared_copy(rec, self.node())?;
        let key = self.run_key(&rec.job_id, &rec.id);
        let queue = self.key(&format!("queue/{}", rec.id));
        let claim = self.key(&format!("claims/{}", rec.id));
        let payload = self.key(&format!("payload/{}", rec.id));
        self.etcd.txn(
            &[Compare::ValueIs(active, held)],
            &[
                Op::put(&key, &data),
                Op::Delete(active),
                Op::Delete(&queue),
                Op::Delete(&claim),
                Op::Delete(&payload),
            ],
        )
    }

    /// A run whose node died while executing it goes back to the queue when its job has
    /// retries left (the attempts it made count); returns whether it did.
    fn retry_elsewhere(&self, r: &RunRecord, node: &str) -> Result<bool, EtcdError> {
        let payload_key = self.key(&format!("payload/{}", r.id));
        let Some(p) = self.etcd.get(&payload_key)? else {
            return Ok(false);
        };
        let Some(job) = self.load_job(&r.job_id).ok().flatten() else {
            return Ok(false);
        };
        if r.attempts > job.max_retries {
            return Ok(false);
        }
        let mut v: Value = match serde_json::from_slice(&p.value) {
            Ok(v) => v,
            Err(_) => return Ok(false),
        };
        let mut again = r.clone();
        again.status = RunStatus::Queued;
        again.node = None;
        again.error = Some(format!(
            "node {node} stopped answering (its etcd lease expired) during attempt {}; queued again for another node",
            r.attempts
        ));
        v["run"] = serde_json::to_value(&again)
            .map_err(|e| EtcdError::BadAnswer(format!("cannot serialise the record: {e}")))?;
        let data = serde_json::to_vec(&again)
            .map_err(|e| EtcdError::BadAnswer(format!("cannot serialise the record: {e}")))?;
        let payload = v.to_string();
        let run_key = self.run_key(&r.job_id, &r.id);
        let queue = self.key(&format!("queue/{}", r.id));
        let active = self.active_key(&r.id);
        self.etcd.txn(
            &[],
            &[
                Op::put(&run_key, &data),
                Op::put(&queue, payload.as_bytes()),
                Op::Delete(&active),
                Op::Delete(&payload_key),
            ],
        )?;
        log::warn!(event = "run.retry", job = r.job_name.as_str(), run = r.id.as_str(), node = node;
            "node {node} is gone; its run is queued again for another node (attempt {} of {})", r.attempts, job.max_retries + 1);
        Ok(true)
    }
}

/// What a write of a run record compares (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Guard {
    /// Not a run this node claimed: written as is.
    Free,
    /// Claimed, not started: `claims/<run>` names this node, under this lease.
    Claim(i64),
    /// Started: `active/<run>` names this node and this lease.
    Active(i64),
    /// Given up: nothing more of the run is written.
    Gone,
}

fn records(kvs: Vec<super::etcd::Kv>) -> Vec<RunRecord> {
    kvs.into_iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect()
}

/// Largest run record kept in etcd (its output is cut to fit).
const MAX_SHARED_RECORD: usize = 1 << 20;

/// The record as etcd keeps it: the JSON, its output cut to fit [`MAX_SHARED_RECORD`] (an
/// etcd value is at most 1.5 MiB; the node's own file keeps all of it). `node` is where the
/// whole record is when the run names no node.
fn shared_copy(rec: &RunRecord, node: &str) -> Result<Vec<u8>, EtcdError> {
    let ser = |r: &RunRecord| {
        serde_json::to_vec(r)
            .map_err(|e| EtcdError::BadAnswer(format!("cannot serialise the record: {e}")))
    };
    let data = ser(rec)?;
    if data.len() <= MAX_SHARED_RECORD {
        return Ok(data);
    }
    // Each byte of output removed shortens the JSON by at least one byte.
    let mut cut = rec.clone();
    let over = data.len() - MAX_SHARED_RECORD + 256;
    let mut keep = cut.output.len().saturating_sub(over);
    while !cut.output.is_char_boundary(keep) {
        keep -= 1;
    }
    cut.output.truncate(keep);
    cut.output.push_str(&format!(
        "\n[output cut for the cluster's store; the whole output is in the run record on node {}]\n",
        rec.node.as_deref().unwrap_or(node)
    ));
    cut.output_truncated = true;
    ser(&cut)
}

impl Cluster {
    /// Writes the records that could not be written while etcd was out of reach (the
    /// `cluster` thread, after a good round), oldest run first; stops at the first failure.
    pub(super) fn flush_backlog(&self) -> Result<(), EtcdError> {
        loop {
            let next = {
                let b = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
                b.values().next().cloned()
            };
            let Some((rec, guard)) = next else {
                return Ok(());
            };
            match self.save_guarded(&rec, guard) {
                // Its node could not release the job as the run ended: done now.
                Ok(()) if rec.status.is_final() => self.release(&rec.job_id, &rec.id)?,
                Ok(()) => {}
                Err(e @ EtcdError::Lost(_)) => {
                    log::warn!(event = "cluster.fenced", run = rec.id.as_str(); "{e}");
                }
                // etcd refuses this one for good: it stays in the node's data dir only.
                Err(
                    e @ EtcdError::Server {
                        status: 400..=499, ..
                    },
                )
                | Err(e @ EtcdError::BadAnswer(_)) => {
                    log::error!(event = "store.error", run = rec.id.as_str(); "run record not written to etcd: {e}; it stays in this node's data dir");
                }
                Err(e) => return Err(e),
            }
            let mut b = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
            // Unless a newer version of it was queued meanwhile.
            if b.get(&rec.id).is_some_and(|(r, _)| *r == rec) {
                b.remove(&rec.id);
            }
        }
    }
}

impl Cluster {
    /// `history` pruning in etcd, by keys only (a record's output can be large): the
    /// newest `keep` run ids stay; of the older ones, those queued, parked or running
    /// anywhere (keys under `queue/`, `pending/<job>`, `active/`) stay too.
    fn prune_shared(
        &self,
        job_id: &str,
        keep: usize,
        active: &std::collections::HashSet<String>,
    ) -> Result<(), EtcdError> {
        let prefix = self.key(&format!("runs/{job_id}/"));
        let mut ids: Vec<String> = self
            .etcd
            .keys_prefix(&prefix)?
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect();
        if ids.len() <= keep {
            return Ok(());
        }
        // Run ids sort by time: the newest last.
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let live = |p: &str| -> Result<std::collections::HashSet<String>, EtcdError> {
            let full = self.key(p);
            Ok(self
                .etcd
                .keys_prefix(&full)?
                .iter()
                .filter_map(|k| k.strip_prefix(&full).map(str::to_string))
                .collect())
        };
        let (queued, running) = (live("queue/")?, live("active/")?);
        let parked = self
            .etcd
            .get(&self.key(&format!("pending/{job_id}")))?
            .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .and_then(|v| v["run"]["id"].as_str().map(str::to_string));
        let old: Vec<String> = ids
            .into_iter()
            .skip(keep)
            .filter(|id| {
                !active.contains(id)
                    && !queued.contains(id)
                    && !running.contains(id)
                    && parked.as_deref() != Some(id.as_str())
            })
            .collect();
        for id in &old {
            self.etcd.delete(&self.run_key(job_id, id))?;
        }
        Ok(())
    }
}

impl SharedRuns for Cluster {
    /// Never fails: the record is in the node's data dir already, and one etcd could not
    /// take now is kept and written when it answers (so a firing is answered as what it
    /// is, queued, and runs).
    fn save(&self, rec: &RunRecord) -> Result<(), String> {
        let mut b = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        let guard = match self.guard(rec) {
            Ok(g) => g,
            Err(e) => {
                log::warn!(event = "cluster.fenced", run = rec.id.as_str(); "{e}");
                return Ok(());
            }
        };
        match self.save_guarded(rec, guard) {
            Ok(()) => {
                b.remove(&rec.id);
                Ok(())
            }
            Err(e @ EtcdError::Lost(_)) => {
                // Another node has the run now: this one stops it, and keeps its record.
                b.remove(&rec.id);
                log::warn!(event = "cluster.fenced", run = rec.id.as_str(); "{e}");
                drop(b);
                self.fence_run(&rec.id);
                Ok(())
            }
            Err(e) => {
                // Kept, newest version only, with its condition, and written when etcd
                // answers again.
                b.insert(rec.id.clone(), (rec.clone(), guard));
                log::warn!(event = "store.error", run = rec.id.as_str(); "run record not written to etcd now ({e}); it is kept and written when etcd answers again");
                Ok(())
            }
        }
    }

    fn list(&self, job_id: &str, limit: usize) -> Option<Vec<RunRecord>> {
        // Out of reach: the node's own records answer (its cache).
        if !self.available() {
            return None;
        }
        let prefix = self.key(&format!("runs/{job_id}/"));
        match self.etcd.range_prefix_desc(&prefix, limit, false) {
            Ok(kvs) => Some(records(kvs)),
            Err(e) => {
                log::warn!(event = "store.error", job = job_id; "cannot list the job's runs in etcd ({e}); answering with this node's own records");
                None
            }
        }
    }

    fn prune(&self, job_id: &str, keep: usize, active: &std::collections::HashSet<String>) {
        if !self.available() {
            return;
        }
        if let Err(e) = self.prune_shared(job_id, keep, active) {
            log::warn!(event = "store.error", job = job_id; "cannot prune the job's runs in etcd: {e}; tried again after its next run");
        }
    }

    fn load(&self, job_id: &str, run_id: &str) -> Option<Option<RunRecord>> {
        // Out of reach: the node's own records answer (its cache).
        if !self.available() {
            return None;
        }
        let kv = self.etcd.get(&self.run_key(job_id, run_id)).ok()?;
        Some(kv.and_then(|kv| serde_json::from_slice(&kv.value).ok()))
    }

    fn remove(&self, job_id: &str, run_ids: &[String]) {
        for id in run_ids {
            if self.etcd.delete(&self.run_key(job_id, id)).is_err() {
                return;
            }
        }
    }

    fn remove_all(&self, job_id: &str) {
        let _ = self
            .etcd
            .delete_prefix(&self.key(&format!("runs/{job_id}/")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_record_is_cut_to_fit_etcd() {
        let mut r = RunRecord::queued("run_1".into(), "job_1", "j", serde_json::json!({}));
        r.output = "é".repeat(400_000) + &"\u{1}".repeat(100_000);
        let data = shared_copy(&r, "a").unwrap();
        assert!(data.len() <= MAX_SHARED_RECORD, "{}", data.len());
        let back: RunRecord = serde_json::from_slice(&data).unwrap();
        assert!(back.output_truncated);
        assert!(
            back.output.ends_with("on node a]\n"),
            "{}",
            &back.output[back.output.len() - 80..]
        );
        r.output = "small".into();
        assert_eq!(
            shared_copy(&r, "a").unwrap(),
            serde_json::to_vec(&r).unwrap()
        );
    }
}
