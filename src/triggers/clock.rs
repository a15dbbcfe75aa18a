//! The scheduler clock thread: fires `cron` and `interval` triggers.
//!
//! It keeps every scheduled trigger in one ordered set and sleeps until the earliest
//! deadline (there is no tick), a job change ([`Engine::subscribe`], which re-plans that job
//! only) or shutdown ([`Engine::shutdown_signal`]), like every trigger thread. Sleeps are capped at a minute so a
//! wall-clock change (NTP step, suspend) is noticed; those re-checks count as re-plans, not
//! wakeups. A slot missed by more than its period (the machine slept) fires once, then the
//! schedule continues from now.

use std::collections::{BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crossbeam_channel::{select, Receiver};
use serde_json::{Map, Value};

use crate::engine::Engine;
use crate::job::{Job, Trigger};
use crate::metrics::Metrics;
use crate::plan::{make_plan, next_after, Plan};
use crate::store::state::{trigger_key, SchedState};

/// Longest sleep before the wall clock is checked again.
const MAX_SLEEP: Duration = Duration::from_secs(60);

struct Scheduled {
    index: usize,
    plan: Plan,
    next: DateTime<Utc>,
}

/// The clock's state; owned by its thread.
struct Clock {
    engine: Arc<Engine>,
    queue: BTreeSet<(DateTime<Utc>, String, usize)>,
    jobs: HashMap<String, Vec<Scheduled>>,
    state: SchedState,
}

/// Starts the clock thread. With `catch_up`, jobs with `catch_up: true` first fire once for
/// a cron slot missed while the daemon was down.
pub fn spawn(engine: Arc<Engine>) -> std::io::Result<JoinHandle<()>> {
    // Subscribed before the first plan: no change can fall between the two.
    let changes = engine.subscribe();
    let stop = engine.shutdown_signal();
    // Cluster mode: told when this node starts or stops leading (it catches up then).
    let leading = match engine.cluster() {
        Some(c) => c.subscribe_leadership(),
        None => crossbeam_channel::never(),
    };
    thread::Builder::new().name("clock".into()).spawn(move || {
        let mut clock = Clock {
            state: engine.store.load_state(),
            engine,
            queue: BTreeSet::new(),
            jobs: HashMap::new(),
        };
        if clock.engine.cluster().is_none() {
            clock.catch_up();
        }
        for j in clock.engine.jobs() {
            clock.plan(&j.id);
        }
        if clock.engine.cluster().is_some_and(|c| c.is_leader()) {
            clock.cluster_catch_up();
        }
        clock.run(&changes, &stop, &leading);
    })
}

impl Clock {
    fn run(&mut self, changes: &Receiver<String>, stop: &Receiver<()>, leading: &Receiver<bool>) {
        enum Msg {
            Job(String),
            Due,
            Stop,
            Leading(bool),
        }
        loop {
            let timer = match self.queue.first() {
                Some((t, _, _)) => {
                    let wait = (*t - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    crossbeam_channel::after(wait.min(MAX_SLEEP))
                }
                None => crossbeam_channel::never(),
            };
            let msg = select! {
                recv(changes) -> m => m.map(Msg::Job).unwrap_or(Msg::Stop),
                recv(stop) -> _ => Msg::Stop,
                recv(timer) -> _ => Msg::Due,
                recv(leading) -> m => m.map(Msg::Leading).unwrap_or(Msg::Stop),
            };
            let step = catch_unwind(AssertUnwindSafe(|| match msg {
                Msg::Job(id) => {
                    Metrics::inc(&self.engine.metrics.scheduler_replans_total);
                    self.plan(&id);
                    true
                }
                Msg::Stop => false,
                Msg::Due => {
                    self.fire_due();
                    true
                }
                Msg::Leading(true) => {
                    self.cluster_catch_up();
                    true
                }
                Msg::Leading(false) => true,
            }));
            match step {
                Ok(true) => {}
                Ok(false) => return,
                Err(_) => {
                    log::error!(event = "clock.panic"; "internal error in the scheduler clock; it carries on")
                }
            }
        }
    }

    /// Re-plans one job from the engine's current version (or drops it).
    fn plan(&mut self, job_id: &str) {
        if let Some(old) = self.jobs.remove(job_id) {
            for s in old {
                self.queue.remove(&(s.next, job_id.to_string(), s.index));
            }
        }
        let Some(job) = self.engine.job(job_id).filter(|j| j.enabled) else {
            self.engine.set_next_fire(job_id, None);
            return;
        };
        let now = Utc::now();
        let mut entries = Vec::new();
        for (index, t) in job.triggers.iter().enumerate() {
            let Some(plan) = make_plan(&job, t, self.engine.started_at) else {
                continue;
            };
            if let Some(next) = next_after(&plan, now) {
                self.queue.insert((next, job.id.clone(), index));
                entries.push(Scheduled { index, plan, next });
            }
        }
        self.engine
            .set_next_fire(&job.id, entries.iter().map(|s| s.next).min());
        if !entries.is_empty() {
            self.jobs.insert(job.id.clone(), entries);
        }
    }

    fn fire_due(&mut self) {
        let now = Utc::now();
        let mut fired = false;
        while let Some((t, job_id, index)) = self.queue.first().cloned() {
            if t > now {
                break;
            }
            self.queue.pop_first();
            fired = true;
            let Some(entries) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            let Some(s) = entries.iter_mut().find(|s| s.index == index) else {
                continue;
            };
            let mut ctx = Map::new();
            let (kind, key) = match &s.plan {
                Plan::Cron { expr, zone, .. } => {
                    ctx.insert("cron".into(), expr.clone().into());
                    ctx.insert("timezone".into(), zone.name().into());
                    ("cron", Some(trigger_key(&job_id, index, expr)))
                }
                Plan::Interval { every_ms, .. } => {
                    ctx.insert("seconds".into(), (every_ms / 1000).into());
                    ("interval", None)
                }
            };
            let scheduled = t;
            if let Some(next) = next_after(&s.plan, now) {
                s.next = next;
                self.queue.insert((next, job_id.clone(), index));
            } else {
                entries.retain(|e| e.index != index);
            }
            let next_fire = entries.iter().map(|s| s.next).min();
            self.engine.set_next_fire(&job_id, next_fire);
            self.fire(&job_id, index, kind, scheduled, ctx, key);
        }
        if fired {
            Metrics::inc(&self.engine.metrics.scheduler_wakeups_total);
        } else {
            Metrics::inc(&self.engine.metrics.scheduler_replans_total);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn fire(
        &mut self,
        job_id: &str,
        index: usize,
        kind: &str,
        scheduled: DateTime<Utc>,
        mut ctx: Map<String, Value>,
        state_key: Option<String>,
    ) {
        let catch_up = self.engine.job(job_id).is_some_and(|j| j.catch_up);
        let expr = ctx
            .get("cron")
            .and_then(Value::as_str)
            .filter(|_| catch_up)
            .map(str::to_string);
        let mut trigger = super::context(kind);
        trigger.append(&mut ctx);
        trigger.insert(
            "scheduled_at".into(),
            crate::time::rfc3339(scheduled).into(),
        );
        if let Some(c) = self.engine.cluster() {
            // Only the leader fires, and only a slot it claims in etcd (README "Running a
            // cluster"); the slot's record there replaces state.json.
            if c.may_fire_slot(job_id, index, scheduled, expr.as_deref()) {
                self.engine.fire_from_trigger(job_id, trigger);
            }
            return;
        }
        self.engine.fire_from_trigger(job_id, trigger);
        if let (Some(key), true) = (state_key, catch_up) {
            self.state
                .last_fire
                .insert(key, crate::time::rfc3339(scheduled));
            if let Err(e) = self.engine.store.save_state(&self.state) {
                log::error!(event = "store.error"; "{e}");
            }
        }
    }

    /// At start-up: one run per `catch_up` cron trigger whose slot passed while the daemon
    /// was down. Also forgets state of jobs that no longer exist.
    fn catch_up(&mut self) {
        let jobs = self.engine.jobs();
        let now = Utc::now();
        let mut keep = std::collections::BTreeMap::new();
        for job in &jobs {
            for (index, t) in job.triggers.iter().enumerate() {
                let Trigger::Cron { cron, .. } = t else {
                    continue;
                };
                let key = trigger_key(&job.id, index, cron);
                let Some(last) = self.state.last_fire.get(&key).cloned() else {
                    continue;
                };
                keep.insert(key.clone(), last.clone());
                if !job.catch_up || !job.enabled {
                    continue;
                }
                let Some(last_t) = crate::time::parse_rfc3339(&last) else {
                    continue;
                };
                self.catch_up_slot(job, index, last_t, now, Some(key), "the daemon was down");
            }
        }
        // Drop entries of deleted jobs or changed triggers.
        if keep.len() != self.state.last_fire.len() {
            self.state.last_fire.retain(|k, _| keep.contains_key(k));
            if let Err(e) = self.engine.store.save_state(&self.state) {
                log::error!(event = "store.error"; "{e}");
            }
        }
    }

    /// Cluster mode, when this node starts leading: one run per `catch_up` cron trigger whose
    /// slot passed since the last one fired anywhere in the cluster (the `catch_up` rule of a
    /// single daemon, with etcd's record instead of `state.json`). The slot is claimed like
    /// any other, so a slot the previous leader fired is not fired again.
    fn cluster_catch_up(&mut self) {
        let Some(c) = self.engine.cluster().cloned() else {
            return;
        };
        let now = Utc::now();
        for job in self.engine.jobs() {
            if !job.catch_up || !job.enabled {
                continue;
            }
            for (index, t) in job.triggers.iter().enumerate() {
                let Trigger::Cron { cron, .. } = t else {
                    continue;
                };
                let last = match c.last_slot(&job.id, index, cron) {
                    Ok(Some(l)) => l,
                    Ok(None) => continue,
                    Err(e) => {
                        log::warn!(event = "clock.catch_up", job = job.name.as_str(); "cannot read the last slot fired: {e}");
                        continue;
                    }
                };
                self.catch_up_slot(&job, index, last, now, None, "no node led");
            }
        }
    }

    /// Fires once the slot of cron trigger `index` that follows `last`, when it has passed.
    fn catch_up_slot(
        &mut self,
        job: &Job,
        index: usize,
        last: DateTime<Utc>,
        now: DateTime<Utc>,
        state_key: Option<String>,
        why: &str,
    ) {
        let Some(t @ Trigger::Cron { cron, .. }) = job.triggers.get(index) else {
            return;
        };
        let Some(plan) = make_plan(job, t, self.engine.started_at) else {
            return;
        };
        let missed = match next_after(&plan, last) {
            Some(m) if m <= now => m,
            _ => return,
        };
        log::info!(event = "clock.catch_up", job = job.name.as_str(); "slot {} was missed while {why}; firing once now", crate::time::rfc3339(missed));
        let mut ctx = Map::new();
        ctx.insert("cron".into(), cron.clone().into());
        if let Plan::Cron { zone, .. } = &plan {
            ctx.insert("timezone".into(), zone.name().into());
        }
        ctx.insert("catch_up".into(), true.into());
        self.fire(&job.id, index, "cron", missed, ctx, state_key);
    }
}
