//! Time: cron expressions with Vixie crontab semantics ([`cron`]) evaluated in IANA time
//! zones with explicit DST rules ([`zone`], [`tz`]).
//!
//! The `cron` crate is not used: it numbers weekdays differently from crontab, has no
//! day-of-month/day-of-week OR rule, and does not fire skipped or repeated DST wall times
//! the way cron users expect; a direct implementation is smaller than a translation layer.

pub mod cron;
pub mod tz;
mod tz_fallback;
pub mod zone;

use chrono::{DateTime, Utc};

/// The first `count` fire instants of `sched` in `zone` strictly after `from` (fewer when
/// the expression stops firing): the `next` command's and `GET /schedule/preview`'s answer.
pub fn next_fires(
    sched: &cron::CronSchedule,
    zone: &zone::Zone,
    from: DateTime<Utc>,
    count: usize,
) -> Vec<DateTime<Utc>> {
    let mut out = Vec::with_capacity(count.min(1000));
    let mut t = from;
    while out.len() < count {
        match sched.next_after(t, zone) {
            Some(n) => {
                out.push(n);
                t = n;
            }
            None => break,
        }
    }
    out
}
