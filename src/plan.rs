//! Where a job's clock triggers (`cron`, `interval`) fire next: the one computation that the
//! scheduler clock plans with and that the API shows as `next_fire_at` for a job the clock has
//! not planned yet; and when a job's dead-man's switch (`expect`) is next due. A leaf: it
//! knows jobs and schedules, nothing of threads or the engine.

use chrono::{DateTime, Utc};

use crate::job::{Expect, Job, Trigger};
use crate::schedule::zone::Zone;
use crate::schedule::Schedule;

/// How one clock trigger is scheduled.
pub enum Plan {
    Cron {
        sched: Schedule,
        zone: Zone,
        expr: String,
    },
    Interval {
        anchor: DateTime<Utc>,
        every_ms: i64,
    },
}

/// The plan of trigger `t` of `job` (None for triggers that are not clock triggers).
pub fn make_plan(job: &Job, t: &Trigger, daemon_start: DateTime<Utc>) -> Option<Plan> {
    match t {
        Trigger::Cron {
            cron,
            timezone,
            dialect,
        } => {
            let sched = Schedule::parse(cron, *dialect).ok()?;
            let zone = Zone::parse(timezone.as_deref()).ok()?;
            Some(Plan::Cron {
                sched,
                zone,
                expr: cron.clone(),
            })
        }
        Trigger::Interval { seconds } => {
            let created = crate::time::parse_rfc3339(&job.created_at).unwrap_or(daemon_start);
            Some(Plan::Interval {
                anchor: created.max(daemon_start),
                every_ms: (*seconds as i64).saturating_mul(1000),
            })
        }
        _ => None,
    }
}

/// The next instant after `now` at which any clock trigger of an enabled `job` fires; the
/// same computation the clock plans with, so the API can show it without asking the clock.
pub fn job_next_fire(
    job: &Job,
    daemon_start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if !job.enabled {
        return None;
    }
    job.triggers
        .iter()
        .filter_map(|t| make_plan(job, t, daemon_start))
        .filter_map(|p| next_after(&p, now))
        .min()
}

/// When `job`'s dead-man's switch goes off if no run succeeds after `anchor` (the latest of
/// its last success, the start of its watch and its last notice): `within_seconds` after
/// the anchor, or `after_slot` seconds after the first cron slot past it. None without
/// `expect`, or when no cron slot comes.
pub fn expect_deadline(
    job: &Job,
    anchor: DateTime<Utc>,
    daemon_start: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match job.expect? {
        Expect::WithinSeconds(n) => Some(anchor + chrono::Duration::seconds(n as i64)),
        Expect::AfterSlot(s) => job
            .triggers
            .iter()
            .filter(|t| matches!(t, Trigger::Cron { .. }))
            .filter_map(|t| make_plan(job, t, daemon_start))
            .filter_map(|p| next_after(&p, anchor))
            .min()
            .map(|slot| slot + chrono::Duration::seconds(s as i64)),
    }
}

/// Where the period after a notice at `now` starts: `now` for `within_seconds`; for
/// `after_slot`, `now - after_slot`, so the next slot watched is the first whose grace ends
/// after `now` (slots missed while the daemon was down make one notice, not one each).
pub fn expect_reported_anchor(expect: Expect, now: DateTime<Utc>) -> DateTime<Utc> {
    match expect {
        Expect::WithinSeconds(_) => now,
        Expect::AfterSlot(s) => now - chrono::Duration::seconds(s as i64),
    }
}

/// The first fire instant of `plan` strictly after `after`.
pub fn next_after(plan: &Plan, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match plan {
        Plan::Cron { sched, zone, .. } => sched.next_after(after, zone),
        Plan::Interval { anchor, every_ms } => Some(interval_next(*anchor, *every_ms, after)),
    }
}

/// `anchor + k * every` for the smallest k >= 1 with a result after `after`: no drift,
/// however late the clock woke.
pub fn interval_next(anchor: DateTime<Utc>, every_ms: i64, after: DateTime<Utc>) -> DateTime<Utc> {
    let every_ms = every_ms.max(1);
    let elapsed = (after - anchor).num_milliseconds();
    let k = if elapsed < 0 {
        1
    } else {
        elapsed / every_ms + 1
    };
    anchor + chrono::Duration::milliseconds(k.saturating_mul(every_ms))
}
#[cfg(test)]
mod tests {
    use super::*;

    fn job(expect: serde_json::Value) -> Job {
        crate::job::validate_job(
            &serde_json::json!({
                "name": "j", "prompt": "p",
                "triggers": [{"type": "cron", "cron": "0 3 * * *", "timezone": "UTC"}],
                "expect": expect,
            }),
            "job_1",
            "2026-01-01T00:00:00Z",
        )
        .unwrap()
    }

    #[test]
    fn dead_mans_switch_deadlines() {
        let t = |s: &str| crate::time::parse_rfc3339(s).unwrap();
        let start = t("2026-01-01T00:00:00Z");
        let within = job(serde_json::json!({"within_seconds": 3600}));
        assert_eq!(
            expect_deadline(&within, t("2026-01-02T10:00:00Z"), start),
            Some(t("2026-01-02T11:00:00Z"))
        );
        // after_slot: the first slot after the anchor, plus the grace.
        let slot = job(serde_json::json!({"after_slot": 600}));
        assert_eq!(
            expect_deadline(&slot, t("2026-01-02T03:00:05Z"), start),
            Some(t("2026-01-03T03:10:00Z"))
        );
        assert_eq!(
            expect_deadline(&slot, t("2026-01-02T02:00:00Z"), start),
            Some(t("2026-01-02T03:10:00Z"))
        );
        // After a notice at 03:10:00 the next slot watched is tomorrow's; one that was
        // down for days makes one notice, then watches the next slot to come.
        let now = t("2026-01-05T12:00:00Z");
        let anchor = expect_reported_anchor(Expect::AfterSlot(600), now);
        assert_eq!(
            expect_deadline(&slot, anchor, start),
            Some(t("2026-01-06T03:10:00Z"))
        );
        assert_eq!(expect_reported_anchor(Expect::WithinSeconds(60), now), now);
        assert_eq!(
            expect_deadline(&job(serde_json::Value::Null), now, start),
            None
        );
    }

    #[test]
    fn interval_has_no_drift() {
        let a = crate::time::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let late = crate::time::parse_rfc3339("2026-01-01T00:00:10.700Z").unwrap();
        assert_eq!(
            crate::time::rfc3339(interval_next(a, 5000, late)),
            "2026-01-01T00:00:15.000Z"
        );
        assert_eq!(
            crate::time::rfc3339(interval_next(a, 5000, a)),
            "2026-01-01T00:00:05.000Z"
        );
        let before = crate::time::parse_rfc3339("2025-12-31T00:00:00Z").unwrap();
        assert_eq!(
            interval_next(a, 5000, before),
            a + chrono::Duration::seconds(5)
        );
    }
}
