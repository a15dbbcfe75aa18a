//! Where a job's clock triggers (`cron`, `interval`) fire next: the one computation that the
//! scheduler clock plans with and that the API shows as `next_fire_at` for a job the clock has
//! not planned yet. A leaf: it knows jobs and schedules, nothing of threads or the engine.

use chrono::{DateTime, Utc};

use crate::job::{Job, Trigger};
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
