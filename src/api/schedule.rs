//! `/schedule` (the next firings of every enabled job's clock triggers, for the dashboard's
//! time line) and `/schedule/preview` (a cron expression's next fire times in a time zone,
//! computed like the `next` command). Both use [`crate::plan`] and [`crate::schedule`], the
//! code the scheduler clock itself plans with.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::jobs::query_param;
use super::{Api, Req, Resp};
use crate::job::Trigger;
use crate::schedule::zone::Zone;
use crate::schedule::{Dialect, Schedule};

/// Most firings listed per trigger by `/schedule` (an `interval` of one second fires 86 400
/// times a day); a trigger cut there is marked `"truncated": true`.
const MAX_FIRES_PER_TRIGGER: usize = 500;

fn bad(field: &str, msg: String) -> Resp {
    Resp::json(400, &json!({"error": msg, "field": field}))
}

/// A whole-number query parameter within `range`, or `default` when absent.
fn number(
    req: &Req,
    name: &str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, Resp> {
    match query_param(&req.query, name) {
        None => Ok(default),
        Some(s) => match s.trim().parse::<i64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(bad(
                name,
                format!(
                    "{name} must be a whole number from {} to {}, got \"{s}\"",
                    range.start(),
                    range.end()
                ),
            )),
        },
    }
}

/// `GET /schedule?hours=24`: for each enabled job with clock triggers, its fire instants
/// from now to `hours` ahead (1 to 168), in UTC.
pub fn upcoming(api: &Api, req: &Req) -> Resp {
    let hours = match number(req, "hours", 24, 1..=168) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let now = Utc::now();
    let until = now + chrono::Duration::hours(hours);
    let engine = &api.engine;
    let mut jobs = Vec::new();
    for job in engine.jobs().iter().filter(|j| j.enabled) {
        if !job
            .triggers
            .iter()
            .any(|t| matches!(t, Trigger::Cron { .. } | Trigger::Interval { .. }))
        {
            continue;
        }
        let mut fires: Vec<DateTime<Utc>> = Vec::new();
        let mut truncated = false;
        for t in &job.triggers {
            let Some(plan) = crate::plan::make_plan(job, t, engine.started_at) else {
                continue;
            };
            let mut at = now;
            let mut n = 0;
            while let Some(next) = crate::plan::next_after(&plan, at).filter(|&x| x <= until) {
                if n == MAX_FIRES_PER_TRIGGER {
                    truncated = true;
                    break;
                }
                fires.push(next);
                at = next;
                n += 1;
            }
        }
        fires.sort();
        fires.dedup();
        jobs.push(json!({
            "id": job.id,
            "name": job.name,
            "fires": fires.into_iter().map(crate::time::rfc3339).collect::<Vec<_>>(),
            "truncated": truncated,
        }));
    }
    Resp::json(
        200,
        &json!({
            "from": crate::time::rfc3339(now),
            "until": crate::time::rfc3339(until),
            "jobs": jobs,
        }),
    )
}

/// `GET /schedule/preview?cron=…&timezone=…&dialect=…&count=…&from=…`: the next `count` (1 to 100,
/// default 5) fire instants of a cron expression after `from` (RFC 3339, default now), as
/// RFC 3339 with the zone's offset: the `next` command's answer, as JSON.
pub fn preview(req: &Req) -> Resp {
    let Some(expr) = query_param(&req.query, "cron").filter(|s| !s.trim().is_empty()) else {
        return bad(
            "cron",
            "cron is required: a cron expression such as \"0 9 * * 1-5\"".into(),
        );
    };
    let dialect = match query_param(&req.query, "dialect").as_deref() {
        None | Some("") | Some("vixie") => Dialect::Vixie,
        Some("quartz") => Dialect::Quartz,
        Some(d) => return bad("dialect", format!("\"{d}\": expected vixie or quartz")),
    };
    let sched = match Schedule::parse(&expr, dialect) {
        Ok(s) => s,
        Err(e) => return bad("cron", format!("invalid cron expression {expr:?}: {e}")),
    };
    let tz = query_param(&req.query, "timezone").filter(|s| !s.trim().is_empty());
    let zone = match Zone::parse(tz.as_deref()) {
        Ok(z) => z,
        Err(e) => return bad("timezone", e.to_string()),
    };
    let count = match number(req, "count", 5, 1..=100) {
        Ok(n) => n as usize,
        Err(r) => return r,
    };
    let from = match query_param(&req.query, "from").filter(|s| !s.trim().is_empty()) {
        None => Utc::now(),
        Some(s) => match crate::time::parse_rfc3339(&s) {
            Some(t) => t,
            None => {
                return bad(
                    "from",
                    format!("{s:?} is not an RFC 3339 timestamp (e.g. 2026-11-24T09:00:00+01:00)"),
                )
            }
        },
    };
    let fires: Vec<Value> = crate::schedule::next_fires(&sched, &zone, from, count)
        .into_iter()
        .map(|t| Value::String(zone.to_fixed(t).to_rfc3339_opts(SecondsFormat::Secs, false)))
        .collect();
    Resp::json(
        200,
        &json!({"cron": expr, "timezone": zone.name(), "fires": fires}),
    )
}
