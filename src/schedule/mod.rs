//! Time: cron expressions with Vixie crontab semantics ([`cron`]) or in the Quartz dialect
//! ([`quartz`]), evaluated in IANA time zones with explicit DST rules ([`zone`], [`tz`]).
//!
//! Two dialects, two parsers. Vixie expressions (the default) are our own: the `cron` crate
//! numbers weekdays differently from crontab, has no day-of-month/day-of-week OR rule, and
//! does not fire skipped or repeated DST wall times the way cron users expect. Quartz
//! expressions (`dialect: "quartz"`) are exactly what that crate is built for, so it decides
//! which wall times they match; both dialects then share one wall-time → instant mapping
//! ([`cron::next_instant`]), so they fire alike around DST changes.

pub mod cron;
pub mod quartz;
pub mod tz;
mod tz_fallback;
pub mod zone;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Which cron dialect an expression is written in (a cron trigger's `dialect`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// Crontab: `minute hour day-of-month month day-of-week`, Sunday 0 or 7.
    #[default]
    Vixie,
    /// Quartz: `second minute hour day-of-month month day-of-week [year]`, Sunday 1.
    Quartz,
}

impl Dialect {
    pub fn is_vixie(&self) -> bool {
        *self == Dialect::Vixie
    }
}

/// A parsed cron expression of either dialect.
#[derive(Clone, Debug)]
pub enum Schedule {
    Vixie(cron::CronSchedule),
    Quartz(Box<quartz::QuartzSchedule>),
}

impl Schedule {
    /// Parses `expr` in `dialect`. A Vixie expression that fails and looks like a Quartz one
    /// (a `?`, a year, 7 fields) gets a hint to say `quartz`.
    pub fn parse(expr: &str, dialect: Dialect) -> Result<Schedule, cron::CronError> {
        match dialect {
            Dialect::Quartz => quartz::QuartzSchedule::parse(expr).map(|s| Schedule::Quartz(Box::new(s))),
            Dialect::Vixie => cron::CronSchedule::parse(expr)
                .map(Schedule::Vixie)
                .map_err(|e| {
                    if quartz::looks_like_quartz(expr) {
                        cron::CronError(format!(
                            "{e}; this looks like a Quartz expression (seconds first, \"?\", a year): \
                             use the quartz dialect (\"dialect\": \"quartz\" on the trigger, \
                             --dialect quartz on the command line), e.g. \"0 0 9 ? * MON-FRI 2026\""
                        ))
                    } else {
                        e
                    }
                }),
        }
    }

    /// The first fire instant strictly after `after` in `zone` (the DST rules of
    /// [`cron`]); `None` when it never fires again.
    pub fn next_after(&self, after: DateTime<Utc>, zone: &zone::Zone) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Vixie(s) => s.next_after(after, zone),
            Schedule::Quartz(s) => cron::next_instant(s.as_ref(), after, zone),
        }
    }
}

/// The first `count` fire instants of `sched` in `zone` strictly after `from` (fewer when
/// the expression stops firing): the `next` command's and `GET /schedule/preview`'s answer.
pub fn next_fires(
    sched: &Schedule,
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
