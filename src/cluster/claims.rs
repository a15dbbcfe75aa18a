//! The transactions that make a firing happen once in the whole cluster.
//!
//! - A cron or interval slot is claimed before it is queued: one transaction that holds only
//!   if this node's name is the `leader` key's value *and* `slots/<job>/<trigger>/<unix-s>`
//!   does not exist, and then creates that key (under a shared 2-hour lease) and, for a
//!   `catch_up` cron trigger, records the slot as the trigger's last under
//!   `last/<job>/<trigger>` (no lease: a new leader reads it to catch up, as a single daemon
//!   reads `state.json`). Two nodes that both believe they lead cannot fire a slot twice.
//! - A webhook delivery id is claimed by creating `deliveries/<sha256 of the id>` under a
//!   shared lease of at least 24 hours left, on whichever node the delivery arrives.

use chrono::{DateTime, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::etcd::{Compare, EtcdError, Op};
use super::Cluster;

impl Cluster {
    /// Claims slot `at` of trigger `index` of a job for this node, as leader. `last_expr` is
    /// the cron expression of a `catch_up` trigger (its slot is then remembered as the last
    /// fired). Returns whether the slot is this node's to fire.
    pub fn claim_slot(
        &self,
        job_id: &str,
        index: usize,
        at: DateTime<Utc>,
        last_expr: Option<&str>,
    ) -> Result<bool, EtcdError> {
        let lease = self
            .slot_lease
            .get(&self.etcd)
            .inspect_err(|e| self.failed(e))?;
        let leader = self.key("leader");
        let slot = self.key(&format!("slots/{job_id}/{index}/{}", at.timestamp()));
        let last_key = self.key(&format!("last/{job_id}/{index}"));
        let last = json!({"cron": last_expr, "at": crate::time::rfc3339(at), "node": self.node()})
            .to_string();
        let mut ops = vec![Op::Put {
            key: &slot,
            value: self.node().as_bytes(),
            lease,
        }];
        if last_expr.is_some() {
            ops.push(Op::Put {
                key: &last_key,
                value: last.as_bytes(),
                lease: 0,
            });
        }
        let r = match self.etcd.txn(
            &[
                Compare::ValueIs(&leader, self.node().as_bytes()),
                Compare::Absent(&slot),
            ],
            &ops,
        ) {
            // Sent, unanswered: the slot is this node's if it names it under this lease.
            Err(e @ EtcdError::Unknown(_)) => match self.etcd.get(&slot) {
                Ok(Some(kv)) => Ok(kv.value == self.node().as_bytes() && kv.lease == lease),
                _ => Err(e),
            },
            r => r,
        };
        if let Err(e) = &r {
            self.slot_lease.drop_current();
            self.failed(e);
        }
        r
    }

    /// Whether this node may fire a clock slot: it leads, and it claimed the slot (errors are
    /// logged: no claim, no firing).
    pub fn may_fire_slot(
        &self,
        job_id: &str,
        index: usize,
        at: DateTime<Utc>,
        last_expr: Option<&str>,
    ) -> bool {
        if !self.is_leader() {
            return false;
        }
        match self.claim_slot(job_id, index, at, last_expr) {
            Ok(true) => true,
            Ok(false) => {
                log::debug!(event = "clock.slot_taken", job = job_id; "slot {} was claimed elsewhere (or this node no longer leads)", crate::time::rfc3339(at));
                false
            }
            Err(e) => {
                log::error!(event = "clock.slot_unclaimed", job = job_id; "slot {} not fired: it could not be claimed: {e}", crate::time::rfc3339(at));
                false
            }
        }
    }

    /// The last slot fired of a `catch_up` cron trigger, if it was recorded for this same
    /// expression.
    pub fn last_slot(
        &self,
        job_id: &str,
        index: usize,
        expr: &str,
    ) -> Result<Option<DateTime<Utc>>, EtcdError> {
        let Some(kv) = self
            .etcd
            .get(&self.key(&format!("last/{job_id}/{index}")))?
        else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        if v["cron"].as_str() != Some(expr) {
            return Ok(None);
        }
        Ok(v["at"].as_str().and_then(crate::time::parse_rfc3339))
    }

    /// Forgets the slot records of a deleted job.
    pub fn forget_slots(&self, job_id: &str) {
        for p in [format!("slots/{job_id}/"), format!("last/{job_id}/")] {
            let _ = self.etcd.delete_prefix(&self.key(&p));
        }
    }

    fn delivery_key(&self, id: &str) -> String {
        self.key(&format!(
            "deliveries/{}",
            crate::ids::hex(&Sha256::digest(id.as_bytes()))
        ))
    }

    /// Records a webhook delivery id cluster-wide; false when any node saw it within 24 h.
    pub fn first_delivery(&self, id: &str) -> Result<bool, EtcdError> {
        let lease = self
            .dedupe_lease
            .get(&self.etcd)
            .inspect_err(|e| self.failed(e))?;
        // The value names this claim alone, so an unanswered write can be read back.
        let key = self.delivery_key(id);
        let mine = format!("{} {}", self.node(), crate::ids::new_run_id());
        let r = match self.etcd.create(&key, mine.as_bytes(), lease) {
            Err(e @ EtcdError::Unknown(_)) => match self.etcd.get(&key) {
                Ok(Some(kv)) => Ok(kv.value == mine.as_bytes()),
                _ => Err(e),
            },
            r => r,
        };
        if let Err(e) = &r {
            self.dedupe_lease.drop_current();
            self.failed(e);
        }
        r
    }

    /// Forgets a delivery id that was recorded but could not be queued (the sender's retry
    /// must fire).
    pub fn forget_delivery(&self, id: &str) {
        if let Err(e) = self.etcd.delete(&self.delivery_key(id)) {
            log::warn!(event = "cluster.dedupe", node = self.node(); "could not forget a delivery id that was not queued: {e}; a retry of it within 24 h is answered as a duplicate");
        }
    }
}
