//! Counters and gauges served by `GET /metrics`, as JSON or Prometheus text.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Most job names [`PerJob`] keeps; deliveries for further names count in the totals only.
const PER_JOB_MAX: usize = 10_000;

/// A counter per job name (a leaf lock, held for one map operation).
#[derive(Default, Debug)]
pub struct PerJob(Mutex<BTreeMap<String, u64>>);

impl PerJob {
    /// Adds one to `job`'s count.
    pub fn inc(&self, job: &str) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(job) {
            *n += 1;
        } else if m.len() < PER_JOB_MAX {
            m.insert(job.to_string(), 1);
        }
    }

    /// The counts, by job name.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

macro_rules! metrics {
    ($($(#[doc = $doc:literal])* $name:ident: $kind:literal),* $(,)?) => {
        /// Daemon-wide counters (monotonic) and gauges, all lock-free; and the per-job
        /// counts of filtered webhook deliveries.
        #[derive(Default, Debug)]
        pub struct Metrics {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
            /// Webhook deliveries filtered out, by job name (since the daemon started).
            pub webhooks_filtered_by_job: PerJob,
        }

        impl Metrics {
            /// `(name, kind, help, value)` for every metric.
            pub fn snapshot(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
                vec![$((stringify!($name), $kind, concat!($($doc),*), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

metrics! {
    /// HTTP requests answered.
    http_requests_total: "counter",
    /// HTTP requests refused for a missing or wrong token.
    http_unauthorized_total: "counter",
    /// Firings from any trigger (including manual runs).
    firings_total: "counter",
    /// Agent runs started (each retry attempt counts once).
    runs_started_total: "counter",
    /// Runs that ended succeeded.
    runs_succeeded_total: "counter",
    /// Runs that ended failed.
    runs_failed_total: "counter",
    /// Runs that ended timed_out.
    runs_timed_out_total: "counter",
    /// Firings recorded as skipped (overlap skip or full queue).
    runs_skipped_total: "counter",
    /// Runs marked interrupted (shutdown or crash recovery).
    runs_interrupted_total: "counter",
    /// Firings recorded as skipped because a run budget (limits.max_runs_per_hour or
    /// max_runs_per_day) was used up (also counted in runs_skipped_total).
    runs_over_budget_total: "counter",
    /// Firings merged into an already pending run (overlap queue).
    runs_coalesced_total: "counter",
    /// Dead-man's switch notices: a job with `expect` had no successful run in time.
    missed_total: "counter",
    /// Output deliveries that failed.
    dispatch_errors_total: "counter",
    /// Webhook requests received on /hooks/ paths.
    webhooks_received_total: "counter",
    /// Webhook requests refused (unknown path, bad signature, unset secret, full queue).
    webhooks_rejected_total: "counter",
    /// Webhook requests with an already seen delivery id (X-GitHub-Delivery, or the scheme's; not fired again).
    webhooks_duplicate_total: "counter",
    /// Signed webhook deliveries that no job's filter (events, match) let through.
    webhooks_filtered_total: "counter",
    /// File-change firings.
    file_change_firings_total: "counter",
    /// Git-push firings.
    git_push_firings_total: "counter",
    /// Times the scheduler clock woke because a deadline was due.
    scheduler_wakeups_total: "counter",
    /// Times the scheduler clock woke to re-plan (job change or wall-clock re-check).
    scheduler_replans_total: "counter",
    /// Jobs loaded.
    jobs: "gauge",
    /// Agent processes running now.
    runs_running: "gauge",
    /// Runs waiting for a worker.
    runs_queued: "gauge",
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one from a gauge, never below zero.
    pub fn dec(c: &AtomicU64) {
        let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(1))
        });
    }

    /// The snapshot as a JSON object.
    pub fn to_json(&self, extra: &[(&str, u64)]) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (name, _, _, v) in self.snapshot() {
            m.insert(name.into(), v.into());
        }
        for (k, v) in extra {
            m.insert((*k).into(), (*v).into());
        }
        let by_job: serde_json::Map<String, serde_json::Value> = self
            .webhooks_filtered_by_job
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        m.insert(
            "webhooks_filtered_by_job".into(),
            serde_json::Value::Object(by_job),
        );
        serde_json::Value::Object(m)
    }

    /// The snapshot in the Prometheus text exposition format (version 0.0.4).
    pub fn to_prometheus(&self, extra: &[(&str, u64)]) -> String {
        let mut s = String::new();
        for (name, kind, help, v) in self.snapshot() {
            s.push_str(&format!(
                "# HELP bog_{name} {}\n# TYPE bog_{name} {kind}\nbog_{name} {v}\n",
                help.trim()
            ));
        }
        for (k, v) in extra {
            let kind = if k.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            s.push_str(&format!("# TYPE bog_{k} {kind}\nbog_{k} {v}\n"));
        }
        s.push_str("# HELP bog_webhooks_filtered_by_job_total Signed webhook deliveries a job's filter let not through, by job name.\n# TYPE bog_webhooks_filtered_by_job_total counter\n");
        for (job, v) in self.webhooks_filtered_by_job.snapshot() {
            // Job names are [A-Za-z0-9._-]: nothing to escape in a label value.
            s.push_str(&format!(
                "bog_webhooks_filtered_by_job_total{{job=\"{job}\"}} {v}\n"
            ));
        }
        s
    }
}
