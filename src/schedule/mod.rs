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
