//! Quartz cron expressions (`dialect: "quartz"`), for users coming from Spring, Quartz or
//! AWS EventBridge: `second minute hour day-of-month month day-of-week [year]`, `?` for "no
//! specific value" in a day field, day-of-week 1–7 = SUN–SAT (or `SUN`…`SAT`), names,
//! lists, ranges, steps (`0/15`), and `@yearly`…`@hourly`.
//!
//! Which wall times match is the `cron` crate's answer (it is built for this dialect; when
//! both day fields are restricted, a day must match both). `L`, `W` and `#` are refused with
//! a clear error: that crate does not parse them. The wall times are turned into instants by
//! [`super::cron::next_instant`], the same DST rules as Vixie expressions (a fixed time in a
//! spring-forward gap fires once at the first instant after it, a repeated one once at its
//! first occurrence; a minute or hour field starting with `*` follows real time). The crate
//! is given wall times as if they were UTC, so its own DST handling never applies.

use std::str::FromStr;

use chrono::{Duration, NaiveDateTime};

use super::cron::{CronError, WallSchedule};

/// A parsed Quartz expression.
#[derive(Clone, Debug)]
pub struct QuartzSchedule {
    sched: cron::Schedule,
    real_time: bool,
}

impl QuartzSchedule {
    /// Parses a 6-field (or 7-field, with a year) expression or an `@` macro.
    pub fn parse(expr: &str) -> Result<QuartzSchedule, CronError> {
        let expr = expr.trim();
        if expr.is_empty() {
            return Err(CronError("the expression is empty".into()));
        }
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let macro_ = expr.starts_with('@');
        if !macro_ && !(6..=7).contains(&fields.len()) {
            let hint = if fields.len() == 5 {
                " (a 5-field expression is Vixie cron: leave out \"dialect\", or add seconds first)"
            } else {
                ""
            };
            return Err(CronError(format!(
                "expected 6 fields (second minute hour day-of-month month day-of-week) or 7 with a year, got {}{hint}",
                fields.len()
            )));
        }
        for (i, f) in fields
            .iter()
            .enumerate()
            .filter(|(i, _)| *i == 3 || *i == 5)
        {
            if uses_l_w_or_hash(f) {
                return Err(CronError(format!(
                    "{} \"{f}\": L, W and # are not supported (list the days instead)",
                    FIELD_NAMES[i]
                )));
            }
        }
        let sched = cron::Schedule::from_str(expr).map_err(|e| {
            if macro_ {
                CronError(format!(
                    "unknown macro \"{expr}\": expected @yearly, @monthly, @weekly, @daily or @hourly"
                ))
            } else {
                crate_error(expr, &e)
            }
        })?;
        let real_time = !macro_ && (fields[1].starts_with('*') || fields[2].starts_with('*'));
        let real_time = real_time || expr.eq_ignore_ascii_case("@hourly");
        let s = QuartzSchedule { sched, real_time };
        // From the start of the crate's range of years, so an impossible day (30 February)
        // is refused, and a job whose year has passed still loads.
        let epoch =
            chrono::NaiveDate::from_ymd_opt(1970, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0));
        if epoch.and_then(|e| s.next_wall(e)).is_none() {
            return Err(CronError("never fires: no date matches every field".into()));
        }
        Ok(s)
    }
}

/// The crate's error on one line, naming the field it points at: its text is the
/// expression, a line with `^` under the failing spot, then the reason.
fn crate_error(expr: &str, e: &cron::error::Error) -> CronError {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    // The reason line, when the crate gives one after its caret line.
    let reason = lines
        .last()
        .map(|l| l.trim())
        .filter(|l| lines.len() > 2 && !l.chars().all(|c| c == '^'));
    let field = lines
        .iter()
        .find_map(|l| l.trim_start().starts_with('^').then(|| l.find('^')))
        .flatten()
        .and_then(|col| expr.get(..col))
        .map(|before| {
            before
                .split_whitespace()
                .count()
                .saturating_sub(usize::from(
                    !before.ends_with(char::is_whitespace) && !before.is_empty(),
                ))
        })
        .and_then(|i| {
            FIELD_NAMES
                .get(i)
                .map(|n| (*n, expr.split_whitespace().nth(i)))
        });
    match (field, reason) {
        (Some((name, Some(value))), Some(r)) => CronError(format!("{name} \"{value}\": {r}")),
        (Some((name, Some(value))), None) => {
            let i = FIELD_NAMES.iter().position(|n| *n == name).unwrap_or(0);
            CronError(format!(
                "{name} \"{value}\": not a valid value; expected {}",
                FIELD_VALUES[i]
            ))
        }
        (_, r) => CronError(format!(
            "not a valid Quartz expression{}",
            r.map(|r| format!(": {r}")).unwrap_or_default()
        )),
    }
}

/// What each field takes, for an error the crate gives no reason for.
const FIELD_VALUES: &[&str] = &[
    "0-59, lists, ranges and steps",
    "0-59, lists, ranges and steps",
    "0-23, lists, ranges and steps",
    "1-31 or ?, lists, ranges and steps",
    "1-12 or JAN-DEC, lists, ranges and steps",
    "1-7 (SUN=1) or SUN-SAT or ?, lists, ranges and steps",
    "1970-2099, lists, ranges and steps",
];

const FIELD_NAMES: &[&str] = &[
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
    "year",
];

/// Whether a day field uses Quartz's `L` (last), `W` (nearest weekday) or `#` (nth weekday).
/// No month or day name ends in L or W, so a part that does (`L`, `5L`, `15W`, `LW`) is one.
fn uses_l_w_or_hash(field: &str) -> bool {
    field.contains('#')
        || field
            .split([',', '-', '/'])
            .any(|p| p.to_ascii_uppercase().ends_with(['L', 'W']))
}

impl WallSchedule for QuartzSchedule {
    fn next_wall(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        // The crate answers strictly after its argument, in whole seconds.
        let before = (from - Duration::seconds(1)).and_utc();
        self.sched.after(&before).next().map(|t| t.naive_utc())
    }

    fn real_time(&self) -> bool {
        self.real_time
    }
}

/// Whether a Vixie expression that did not parse looks like a Quartz one: a `?`, a `#`, 7
/// fields, or a year (a number above 59) in its last field.
pub fn looks_like_quartz(expr: &str) -> bool {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    fields.len() == 7
        || expr.contains('?')
        || expr.contains('#')
        || fields.len() >= 6
            && fields
                .last()
                .and_then(|f| f.split(['-', ',', '/']).next())
                .and_then(|f| f.parse::<u32>().ok())
                .is_some_and(|y| y >= 1970)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::zone::Zone;
    use chrono::{DateTime, Utc};

    fn seq(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let s = QuartzSchedule::parse(expr).unwrap();
        let z = Zone::parse(Some(tz)).unwrap();
        let mut t: DateTime<Utc> = DateTime::parse_from_rfc3339(from).unwrap().into();
        (0..n)
            .map(|_| {
                t = super::super::cron::next_instant(&s, t, &z).unwrap();
                z.to_fixed(t).to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn weekdays_count_from_sunday_and_years_bound_the_schedule() {
        // 2026-12-04 is a Friday; 2-6 = MON-FRI.
        assert_eq!(
            seq("0 0 9 ? * 2-6 2026", "UTC", "2026-12-04T10:00:00Z", 2),
            ["2026-12-07T09:00:00+00:00", "2026-12-08T09:00:00+00:00"]
        );
        assert_eq!(
            seq("0 0 9 ? * MON-FRI", "UTC", "2026-12-04T10:00:00Z", 1),
            ["2026-12-07T09:00:00+00:00"]
        );
        let s = QuartzSchedule::parse("0 0 9 ? * MON-FRI 2026").unwrap();
        let z = Zone::parse(Some("UTC")).unwrap();
        let t: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-12-31T10:00:00Z")
            .unwrap()
            .into();
        assert_eq!(super::super::cron::next_instant(&s, t, &z), None);
    }

    #[test]
    fn dst_rules_are_vixie_rules() {
        // 02:30 does not exist on 2026-03-29 in Berlin: once, at 03:00 CEST.
        assert_eq!(
            seq("0 30 2 * * ?", "Europe/Berlin", "2026-03-28T12:00:00Z", 2),
            ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
        );
        // 02:30 happens twice on 2026-10-25: once, at the first.
        assert_eq!(
            seq("0 30 2 * * ?", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
        );
        // Real time: every hour at :00 fires in both passes of the repeated hour.
        assert_eq!(
            seq(
                "0 0 * * * ?",
                "Europe/Berlin",
                "2026-10-25T00:30:00+02:00",
                3
            ),
            [
                "2026-10-25T01:00:00+02:00",
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T02:00:00+01:00"
            ]
        );
    }

    #[test]
    fn clear_errors() {
        let e = |s: &str| QuartzSchedule::parse(s).unwrap_err().0;
        assert!(
            e("0 9 * * 1-5").contains("expected 6 fields"),
            "{}",
            e("0 9 * * 1-5")
        );
        assert!(e("0 9 * * 1-5").contains("Vixie"));
        assert!(e("0 0 9 L * ?").contains("L, W and # are not supported"));
        assert!(e("0 0 9 ? * 6#3").starts_with("day-of-week \"6#3\""));
        assert_eq!(
            e("0 0 9 ? * 9"),
            "day-of-week \"9\": Days of Week must be less than 7. ('9' specified.)"
        );
        assert_eq!(
            e("0 0 0 30 2 ?"),
            "never fires: no date matches every field"
        );
        assert_eq!(
            e("0 0 0 1 1 ? 1969"),
            "year \"1969\": not a valid value; expected 1970-2099, lists, ranges and steps"
        );
        assert!(e("99999999999 * * * * ?").starts_with("second \"99999999999\": not a valid value"));
        assert!(e("@reboot").starts_with("unknown macro \"@reboot\""));
        assert!(QuartzSchedule::parse("0 0 9 ? * MON-FRI 2020").is_ok());
        assert!(QuartzSchedule::parse("@daily").is_ok());
        assert!(QuartzSchedule::parse("0 0 12 ? * WED").is_ok());
    }

    #[test]
    fn quartz_habits_are_recognised_in_vixie_errors() {
        assert!(looks_like_quartz("0 9 * * 1-5 2026"));
        assert!(looks_like_quartz("0 0 9 ? * MON-FRI"));
        assert!(looks_like_quartz("0 0 9 * * * 2026"));
        assert!(!looks_like_quartz("0 9 * * 1-5"));
        assert!(!looks_like_quartz("0 0 9 * * 8"));
    }
}
