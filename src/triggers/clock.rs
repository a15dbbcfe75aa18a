//! The scheduler clock thread: fires `cron` and `interval` triggers.
//!
//! It keeps every scheduled trigger in one ordered set and sleeps until the earliest
//! deadline (there is no tick), a job change ([`Engine::subscribe`], which re-plans that job
//! only) or shutdown ([`Engine::shutdown_signal`]), like every trigger thread. Sleeps are capped at a minute so a
//! wall-clock change (NTP step, suspend) is noticed; those re-checks count as re-plans, not
//! wakeups. A slot missed by more than its period (the machine slept) fires once, then the
//! schedule continues from now.
//!
//! The same set holds each job's dead-man's switch (`expect`): one deadline per job, when
//! it goes off unless a run succeeds first ([`crate::plan::expect_deadline`]). Successes do
//! not wake the clock: at the deadline it asks the engine for the job's last success (kept
//! in memory, read from the run records once) and moves the deadline on if there was one; otherwise it tells the outputs with `on:
//! ["missed"]` (on a short-lived `missed-notice` thread, so a slow output never delays a
//! firing) and watches the next period. `state.json` keeps since when each switch watches
//! and where its last notice left off, so a daemon that was down for a period reports it
//! when it starts, and no period is reported twice; and a notice until its delivery has run
//! to its end (`pending`, cleared when the `missed-notice` thread says so), so one a stop
//! cut short is sent again at the next start: at least once.

use std::collections::{BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crossbeam_channel::{select, unbounded, Receiver, Sender};
use serde_json::{Map, Value};

use crate::engine::Engine;
use crate::job::{Expect, Job, Trigger};
use crate::metrics::Metrics;
use crate::plan::{expect_deadline, expect_reported_anchor, make_plan, next_after, Plan};
use crate::run::{RunRecord, RunStatus};
use crate::store::state::{trigger_key, ExpectState, SchedState};

/// Longest sleep before the wall clock is checked again.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The queue index of a job's dead-man's switch (trigger indexes are small).
const EXPECT: usize = usize::MAX;

/// How long before its slot a run is prepared ([`Engine::fire_held`]: the overlap decision,
/// the budget, the durable `queued` record) and handed to a worker, which renders it, makes
/// its containment and waits for the slot to fork and exec the agent
/// (`worker::wait_for_slot`), so that at the slot only the fork and exec remain. Longer than
/// a burst of record writes and a run's preparation usually take; a run that is ready later
/// starts as soon as it is.
const LEAD: Duration = Duration::from_millis(100);

/// A run prepared ahead of its slot and handed to the pool: (slot, job id, trigger index,
/// run id), kept until the slot so that a re-plan does not plan that slot again.
type Held = (DateTime<Utc>, String, usize, String);

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
    /// Each job's dead-man's switch deadline in `queue`.
    expects: HashMap<String, DateTime<Utc>>,
    state: SchedState,
    /// `missed-notice` threads say here which notice (job id, its `trigger.deadline`) was
    /// delivered to its end.
    delivered: Sender<(String, Value)>,
    /// Runs prepared ahead of their slot that has not come yet, oldest slot first.
    held: BTreeSet<Held>,
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
        let (delivered, delivered_rx) = unbounded();
        let mut clock = Clock {
            state: engine.store.load_state(),
            engine,
            queue: BTreeSet::new(),
            jobs: HashMap::new(),
            expects: HashMap::new(),
            delivered,
            held: BTreeSet::new(),
        };
        if clock.engine.cluster().is_none() {
            clock.catch_up();
            clock.forget_gone_expects();
            clock.resend_pending();
        }
        for j in clock.engine.jobs() {
            clock.plan(&j.id);
        }
        if clock.engine.cluster().is_some_and(|c| c.is_leader()) {
            clock.cluster_catch_up();
        }
        clock.run(&changes, &delivered_rx, &stop, &leading);
    })
}

impl Clock {
    fn run(
        &mut self,
        changes: &Receiver<String>,
        delivered: &Receiver<(String, Value)>,
        stop: &Receiver<()>,
        leading: &Receiver<bool>,
    ) {
        enum Msg {
            Job(String),
            Delivered(String, Value),
            Due,
            Stop,
            Leading(bool),
        }
        loop {
            let timer = match self.next_wake() {
                Some(t) => {
                    let wait = (t - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    crossbeam_channel::after(wait.min(MAX_SLEEP))
                }
                None => crossbeam_channel::never(),
            };
            let msg = select! {
                recv(changes) -> m => m.map(Msg::Job).unwrap_or(Msg::Stop),
                recv(delivered) -> m => m.map(|(id, d)| Msg::Delivered(id, d)).unwrap_or(Msg::Stop),
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
                Msg::Delivered(id, deadline) => {
                    // Only that notice: a newer one may be pending by now.
                    if let Some(st) = self.state.expect.get_mut(&id) {
                        let same = st
                            .pending
                            .as_ref()
                            .is_some_and(|p| p["trigger"]["deadline"] == deadline);
                        if same {
                            st.pending = None;
                            self.save_state();
                        }
                    }
                    true
                }
                Msg::Stop => false,
                Msg::Due => {
                    self.fire_due();
                    // Shutdown may have begun while a run was being prepared.
                    !self.engine.is_shutting_down()
                }
                Msg::Leading(true) => {
                    self.cluster_catch_up();
                    true
                }
                Msg::Leading(false) => true,
            }));
            match step {
                Ok(true) => {}
                Ok(false) => {
                    // Runs prepared for a slot that has not come will not start.
                    self.drop_held();
                    return;
                }
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
        if let Some(d) = self.expects.remove(job_id) {
            self.queue.remove(&(d, job_id.to_string(), EXPECT));
        }
        let Some(job) = self.engine.job(job_id).filter(|j| j.enabled) else {
            self.engine.set_next_fire(job_id, None);
            // A disabled job expects nothing; enabled again, its switch watches anew.
            if self.state.expect.remove(job_id).is_some() {
                self.save_state();
            }
            return;
        };
        self.plan_expect(&job);
        let now = Utc::now();
        let mut entries = Vec::new();
        for (index, t) in job.triggers.iter().enumerate() {
            let Some(plan) = make_plan(&job, t, self.engine.started_at) else {
                continue;
            };
            // Not a slot already prepared ahead and held.
            let from = self
                .held
                .iter()
                .filter(|h| h.1 == job.id && h.2 == index)
                .map(|h| h.0)
                .fold(now, DateTime::max);
            if let Some(next) = next_after(&plan, from) {
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

    /// How long before a slot its run is prepared: [`LEAD`] on a single machine; none in
    /// cluster mode, where the leader claims each slot in etcd and fires it at the slot.
    fn lead(&self) -> chrono::Duration {
        match self.engine.cluster() {
            Some(_) => chrono::Duration::zero(),
            None => chrono::Duration::from_std(LEAD).unwrap_or_default(),
        }
    }

    /// When the clock must act next: a held run's slot, a dead-man's switch deadline, or
    /// [`LEAD`] before a trigger's slot.
    fn next_wake(&self) -> Option<DateTime<Utc>> {
        let lead = self.lead();
        let queued = self
            .queue
            .first()
            .map(|(t, _, index)| if *index == EXPECT { *t } else { *t - lead });
        let held = self.held.first().map(|(t, _, _, _)| *t);
        match (queued, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Forgets the runs prepared ahead whose slot has come (their workers started them).
    fn release_due(&mut self) {
        if self.engine.is_shutting_down() {
            self.drop_held();
            return;
        }
        while let Some((t, _, _, _)) = self.held.first() {
            if *t > Utc::now() {
                break;
            }
            if let Some((_, job_id, _, _)) = self.held.pop_first() {
                // The API's next_fire_at showed the held slot until now.
                let next = self
                    .jobs
                    .get(&job_id)
                    .and_then(|e| e.iter().map(|s| s.next).min());
                self.engine.set_next_fire(&job_id, next);
            }
        }
    }

    /// At shutdown: the runs still held will not start (marked interrupted, as the queued
    /// ones; those handed over already are their workers' to interrupt).
    fn drop_held(&mut self) {
        while let Some((_, job_id, _, run_id)) = self.held.pop_first() {
            self.interrupt_held(&job_id, &run_id);
        }
    }

    /// Marks a run still held interrupted (shutdown has begun: it will not start).
    fn interrupt_held(&self, job_id: &str, run_id: &str) {
        if let Some(w) = self.engine.take_held(job_id, run_id) {
            Metrics::dec(&self.engine.metrics.runs_queued);
            crate::worker::interrupt_unstarted(&self.engine, w);
        }
    }

    /// Prepares the runs of the slots due within [`LEAD`] and hands them to the pool,
    /// checks due dead-man's switches, and forgets the held runs whose slot has come.
    fn fire_due(&mut self) {
        self.release_due();
        let now = Utc::now();
        let lead = self.lead();
        let mut fired = false;
        while let Some((t, job_id, index)) = self.queue.first().cloned() {
            if t > now + lead || (index == EXPECT && t > now) {
                break;
            }
            self.queue.pop_first();
            fired = true;
            if index == EXPECT {
                if self.expects.get(&job_id) == Some(&t) {
                    self.expects.remove(&job_id);
                    self.check_expect(&job_id, now);
                }
                continue;
            }
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
            // The slot is in the future when prepared ahead; one missed by more than its
            // period (the machine slept) fires once, then the schedule continues from now.
            if let Some(next) = next_after(&s.plan, now.max(t)) {
                s.next = next;
                self.queue.insert((next, job_id.clone(), index));
            } else {
                entries.retain(|e| e.index != index);
            }
            // A slot prepared ahead is still the next one until it is released.
            let next_fire = entries
                .iter()
                .map(|s| s.next)
                .chain(Some(t).filter(|t| *t > now))
                .min();
            self.engine.set_next_fire(&job_id, next_fire);
            self.fire(&job_id, index, kind, scheduled, ctx, key);
        }
        self.release_due();
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
        if scheduled > Utc::now() {
            // Prepared ahead; to a worker at once, which starts the agent at the slot.
            if let Some(run) = self.engine.fire_held(job_id, trigger, scheduled.into()) {
                if self.engine.is_shutting_down() {
                    // The workers may have drained the queue already: interrupted here.
                    self.interrupt_held(job_id, &run);
                } else {
                    self.engine.release_held(job_id, &run);
                    self.held
                        .insert((scheduled, job_id.to_string(), index, run));
                }
            }
        } else {
            self.engine.fire_from_trigger(job_id, trigger);
        }
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

    fn save_state(&self) {
        if let Err(e) = self.engine.store.save_state(&self.state) {
            log::error!(event = "store.error"; "{e}");
        }
    }

    /// At start-up: sends again each notice a stopped daemon recorded but did not deliver to
    /// its end (its job still expecting, enabled).
    fn resend_pending(&mut self) {
        let pending: Vec<(String, Value)> = self
            .state
            .expect
            .iter()
            .filter_map(|(id, st)| Some((id.clone(), st.pending.clone()?)))
            .collect();
        for (id, notice) in pending {
            let job = self
                .engine
                .job(&id)
                .filter(|j| j.enabled && j.expect.is_some());
            let (Some(job), Some(text), Some(Value::Object(trigger))) = (
                job,
                notice.get("text").and_then(Value::as_str),
                notice.get("trigger").cloned(),
            ) else {
                if let Some(st) = self.state.expect.get_mut(&id) {
                    st.pending = None;
                }
                self.save_state();
                continue;
            };
            log::info!(event = "job.missed", job = job.name.as_str(); "sending again a missed notice the last daemon did not finish delivering: {text}");
            tell_missed(
                &self.engine,
                job,
                text.to_string(),
                trigger,
                self.delivered.clone(),
            );
        }
    }

    /// At start-up: forgets the switches of jobs that no longer exist or no longer expect.
    fn forget_gone_expects(&mut self) {
        let before = self.state.expect.len();
        let engine = &self.engine;
        self.state
            .expect
            .retain(|id, _| engine.job(id).is_some_and(|j| j.expect.is_some()));
        if self.state.expect.len() != before {
            self.save_state();
        }
    }

    /// Puts `job`'s dead-man's switch in the queue (starting its watch now if it is new).
    fn plan_expect(&mut self, job: &Arc<Job>) {
        // Cluster mode has no dead-man's switch yet (`Engine::check_for_cluster` refuses
        // `expect`): successes happen on every node, this node's records see only its own.
        if job.expect.is_none() || self.engine.cluster().is_some() {
            if self.state.expect.remove(&job.id).is_some() {
                self.save_state();
            }
            return;
        }
        if !self.state.expect.contains_key(&job.id) {
            let since = crate::time::rfc3339(Utc::now());
            self.state.expect.insert(
                job.id.clone(),
                ExpectState {
                    since,
                    reported: None,
                    last_success: None,
                    pending: None,
                },
            );
            self.save_state();
        }
        if let Some((anchor, _)) = self.expect_anchor(job) {
            if let Some(d) = expect_deadline(job, anchor, self.engine.started_at) {
                self.queue.insert((d, job.id.clone(), EXPECT));
                self.expects.insert(job.id.clone(), d);
            }
        }
    }

    /// Where `job`'s current period starts (the latest of its watch's start, its last notice
    /// and its last success), and its last success.
    fn expect_anchor(&self, job: &Job) -> Option<(DateTime<Utc>, Option<DateTime<Utc>>)> {
        let st = self.state.expect.get(&job.id)?;
        let since = crate::time::parse_rfc3339(&st.since)?;
        let reported = st.reported.as_deref().and_then(crate::time::parse_rfc3339);
        let kept = st
            .last_success
            .as_deref()
            .and_then(crate::time::parse_rfc3339);
        let last_ok = self.engine.last_success(&job.id).max(kept);
        let anchor = [Some(since), reported, last_ok]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(since);
        Some((anchor, last_ok))
    }

    /// A dead-man's switch deadline has come: moves it on if a run succeeded meanwhile,
    /// else tells the job's `missed` outputs once and watches the next period.
    fn check_expect(&mut self, job_id: &str, now: DateTime<Utc>) {
        let Some(job) = self.engine.job(job_id).filter(|j| j.enabled) else {
            return;
        };
        let Some(expect) = job.expect else {
            return;
        };
        let Some((anchor, last_ok)) = self.expect_anchor(&job) else {
            return;
        };
        // Remember a success newer than the one kept: a restart may not find its record
        // among the newest ones it reads.
        if let (Some(t), Some(st)) = (last_ok, self.state.expect.get_mut(&job.id)) {
            let t = crate::time::rfc3339(t);
            if st.last_success.as_deref() != Some(t.as_str()) {
                st.last_success = Some(t);
                self.save_state();
            }
        }
        let start = self.engine.started_at;
        let due = match expect_deadline(&job, anchor, start) {
            Some(d) if d > now => {
                self.queue.insert((d, job.id.clone(), EXPECT));
                self.expects.insert(job.id.clone(), d);
                return;
            }
            Some(d) => d,
            None => return,
        };
        let since = match last_ok {
            Some(t) => crate::time::rfc3339(t),
            None => format!(
                "its dead-man's switch was set at {}",
                self.state
                    .expect
                    .get(&job.id)
                    .map_or("?", |s| s.since.as_str())
            ),
        };
        let mut trigger = super::context("expect");
        let why = match expect {
            Expect::WithinSeconds(n) => {
                trigger.insert("within_seconds".into(), n.into());
                format!("expected one at least every {n} s")
            }
            Expect::AfterSlot(s) => {
                let slot = crate::time::rfc3339(due - chrono::Duration::seconds(s as i64));
                trigger.insert("after_slot".into(), s.into());
                trigger.insert("slot".into(), slot.clone().into());
                format!("expected one within {s} s after the slot at {slot}")
            }
        };
        trigger.insert("deadline".into(), crate::time::rfc3339(due).into());
        if let Some(t) = last_ok {
            trigger.insert("last_success".into(), crate::time::rfc3339(t).into());
        }
        let text = format!("no successful run of {} since {since} ({why})", job.name);
        // Recorded before it is told: a period is reported once, even across a crash; and
        // pending until its delivery has run to its end, so a stop does not lose it.
        let reported = expect_reported_anchor(expect, now);
        if let Some(st) = self.state.expect.get_mut(&job.id) {
            st.reported = Some(crate::time::rfc3339(reported));
            st.pending = Some(serde_json::json!({"text": text, "trigger": trigger}));
        }
        self.save_state();
        Metrics::inc(&self.engine.metrics.missed_total);
        log::warn!(event = "job.missed", job = job.name.as_str(); "{text}");
        tell_missed(
            &self.engine,
            job.clone(),
            text,
            trigger,
            self.delivered.clone(),
        );
        let anchor = last_ok.map_or(reported, |t| t.max(reported));
        if let Some(d) = expect_deadline(&job, anchor, start) {
            self.queue.insert((d, job.id.clone(), EXPECT));
            self.expects.insert(job.id.clone(), d);
        }
    }
}

/// Delivers a dead-man's switch notice to the job's outputs with `on: ["missed"]`, through
/// `outputs::dispatch` like a run's result: a record made for them only (status `missed`,
/// the notice as its `error`, an id starting `missed_`), never stored, since no run
/// happened. On its own thread: network outputs may take up to their retry budget. Says on
/// `delivered` when the delivery ran to its end (not cut short by a stop).
fn tell_missed(
    engine: &Arc<Engine>,
    job: Arc<Job>,
    text: String,
    trigger: Map<String, Value>,
    delivered: Sender<(String, Value)>,
) {
    let id = crate::ids::new_run_id().replacen("run_", "missed_", 1);
    let deadline = trigger.get("deadline").cloned().unwrap_or(Value::Null);
    let mut rec = RunRecord::queued(id, &job.id, &job.name, Value::Object(trigger));
    rec.status = RunStatus::Missed;
    rec.finished_at = Some(crate::time::now_rfc3339());
    rec.error = Some(text);
    let engine = engine.clone();
    let name = job.name.clone();
    let spawned = thread::Builder::new()
        .name("missed-notice".into())
        .spawn(move || {
            let vars = serde_json::json!({"job_name": job.name, "job_id": job.id});
            crate::outputs::dispatch(&job, &mut rec, &vars, &engine.shutdown_signal());
            for e in &rec.dispatch_errors {
                Metrics::inc(&engine.metrics.dispatch_errors_total);
                log::warn!(event = "dispatch.error", job = job.name.as_str(), run = rec.id.as_str(), target = e.target.as_str(); "{}", e.error);
            }
            // A failure while stopping may be the stop's doing: the notice stays pending.
            if !engine.is_shutting_down() || rec.dispatch_errors.is_empty() {
                let _ = delivered.send((job.id.clone(), deadline));
            }
        });
    if let Err(e) = spawned {
        log::error!(event = "job.missed", job = name.as_str(); "cannot start the thread that tells the missed notice: {e}");
    }
}
