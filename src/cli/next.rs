//! `next`: the next fire instants of a cron expression, one RFC 3339 line each.

use chrono::{SecondsFormat, Utc};

use super::NextArgs;
use crate::schedule::zone::Zone;
use crate::schedule::{Dialect, Schedule};

pub fn run(a: &NextArgs) -> i32 {
    let dialect = match a.dialect.as_str() {
        "quartz" => Dialect::Quartz,
        _ => Dialect::Vixie,
    };
    let sched = match Schedule::parse(&a.expr, dialect) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: invalid cron expression {:?}: {e}", a.expr);
            return 2;
        }
    };
    let zone = match Zone::parse(a.timezone.as_deref()) {
        Ok(z) => z,
        Err(e) => {
            eprintln!("error: --timezone: {e}");
            return 2;
        }
    };
    let mut t = match &a.from {
        None => Utc::now(),
        Some(s) => match crate::time::parse_rfc3339(s) {
            Some(t) => t,
            None => {
                eprintln!("error: --from: {s:?} is not an RFC 3339 timestamp (e.g. 2026-11-24T09:00:00+01:00)");
                return 2;
            }
        },
    };
    let mut out = String::new();
    for _ in 0..a.count {
        match sched.next_after(t, &zone) {
            Some(n) => {
                out.push_str(&zone.to_fixed(n).to_rfc3339_opts(SecondsFormat::Secs, false));
                out.push('\n');
                t = n;
            }
            None => break,
        }
    }
    print!("{out}");
    0
}
