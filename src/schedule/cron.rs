//! Cron expressions with standard Vixie crontab semantics, and the search for the next
//! fire instant in a time zone.
//!
//! Fields: `[second] minute hour day-of-month month day-of-week`. Values, names (`jan`,
//! `mon`), lists, ranges, steps (`*/5`, `1-10/2`, `5/15` = `5-max/15`), `0` and `7` both
//! Sunday, and the macros `@yearly @annually @monthly @weekly @daily @midnight @hourly`.
//! Day rule (Vixie): a day field whose text starts with `*` is unrestricted; when both
//! day fields are restricted a day matches if EITHER does, otherwise both must.
//!
//! DST, as Vixie cron does it; the search walks wall-clock times.
//! - A job whose minute or hour field starts with `*` (`*/10 * * * *`, `0 * * * *`,
//!   `@hourly`) follows real time: it fires at every instant whose wall time matches, so
//!   in a repeated (fall-back) hour it fires in both passes, and a wall time inside a
//!   spring-forward gap is skipped.
//! - A job with fixed minute and hour (`30 2 * * *`): a wall time that does not exist fires
//!   once at the first valid instant after the gap (several skipped times collapse into that
//!   one firing); a wall time that happens twice fires once, at its first occurrence.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Timelike, Utc};

use super::zone::{WallTime, Zone};

/// How far ahead `next_after` searches before concluding the expression never fires.
const SEARCH_YEARS: i32 = 30;

/// A parsed cron expression.
#[derive(Clone, Debug, PartialEq)]
pub struct CronSchedule {
    seconds: u64,
    minutes: u64,
    hours: u64,
    /// Bits 1..=31.
    days: u64,
    /// Bits 1..=12.
    months: u64,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u64,
    days_star: bool,
    weekdays_star: bool,
    /// The minute or hour field starts with `*`: DST changes are followed in real time.
    real_time: bool,
}

/// Why an expression is invalid (the reason only; callers add the expression).
#[derive(Clone, Debug, PartialEq)]
pub struct CronError(pub String);

impl std::fmt::Display for CronError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CronError {}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MONTH_NAMES: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAY_NAMES: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: MONTH_NAMES,
};
const DOW: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: DAY_NAMES,
};

fn err<T>(msg: String) -> Result<T, CronError> {
    Err(CronError(msg))
}

impl Field {
    fn value(&self, s: &str) -> Result<u32, CronError> {
        if s.is_empty() {
            return err(format!("{}: missing value", self.name));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u32>() {
                Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
                _ => err(format!(
                    "{} {s} out of range {}-{}",
                    self.name, self.min, self.max
                )),
            };
        }
        let lower = s.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            // Month names start at 1, day names at 0.
            return Ok(i as u32 + if self.min == 1 { 1 } else { 0 });
        }
        err(format!("{}: invalid value \"{s}\"", self.name))
    }

    fn parse(&self, text: &str) -> Result<u64, CronError> {
        let mut bits = 0u64;
        for item in text.split(',') {
            if item.is_empty() {
                return err(format!("{}: empty item in list \"{text}\"", self.name));
            }
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let step = match s.parse::<u32>() {
                        Ok(0) => return err(format!("{}: step must be at least 1", self.name)),
                        Ok(n) => n,
                        Err(_) => return err(format!("{}: invalid step \"{s}\"", self.name)),
                    };
                    (r, Some(step))
                }
                None => (item, None),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return err(format!("{} range {a}-{b} is reversed", self.name));
                }
                (a, b)
            } else {
                let v = self.value(range)?;
                (v, if step.is_some() { self.max } else { v })
            };
            let step = step.unwrap_or(1) as usize;
            for v in (lo..=hi).step_by(step) {
                bits |= 1 << v;
            }
        }
        Ok(bits)
    }
}

fn days_in_month_max(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The lowest set bit of `mask` at or above `from` and at most `max`.
fn next_bit(mask: u64, from: u32, max: u32) -> Option<u32> {
    if from > max {
        return None;
    }
    let m = mask >> from;
    if m == 0 {
        return None;
    }
    let v = from + m.trailing_zeros();
    (v <= max).then_some(v)
}

impl CronSchedule {
    /// Parses a 5-field (or 6-field, leading seconds) expression or an `@` macro.
    pub fn parse(expr: &str) -> Result<CronSchedule, CronError> {
        let expr = expr.trim();
        if expr.is_empty() {
            return err("the expression is empty".into());
        }
        let expanded = if let Some(m) = expr.strip_prefix('@') {
            match m.to_ascii_lowercase().as_str() {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                "reboot" => {
                    return err("@reboot is not supported: the daemon has no start-up trigger".into())
                }
                _ => {
                    return err(format!(
                        "unknown macro \"{expr}\": expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
                    ))
                }
            }
        } else {
            expr
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        let (with_seconds, f) = match f.len() {
            5 => (false, f),
            6 => (true, f),
            n => {
                return err(format!(
                    "expected 5 fields (or 6 with leading seconds), got {n}"
                ))
            }
        };
        let (sec, rest) = if with_seconds {
            (SECOND.parse(f[0])?, &f[1..])
        } else {
            (1, &f[..])
        };
        let mut weekdays = DOW.parse(rest[4])?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        let s = CronSchedule {
            seconds: sec,
            minutes: MINUTE.parse(rest[0])?,
            hours: HOUR.parse(rest[1])?,
            days: DOM.parse(rest[2])?,
            months: MONTH.parse(rest[3])?,
            weekdays,
            days_star: rest[2].starts_with('*'),
            weekdays_star: rest[4].starts_with('*'),
            real_time: rest[0].starts_with('*') || rest[1].starts_with('*'),
        };
        if s.weekdays_star && !s.days_star {
            let first_day = s.days.trailing_zeros();
            let possible = (1..=12)
                .filter(|m| s.months & (1 << m) != 0)
                .any(|m| first_day <= days_in_month_max(m));
            if !possible {
                return err(format!(
                    "never fires: no selected month has day {first_day}"
                ));
            }
        }
        Ok(s)
    }

    fn day_matches(&self, d: NaiveDate) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0;
        if self.days_star || self.weekdays_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// Whether a wall time matches every field (the brute-force reference in tests).
    #[cfg(test)]
    fn matches(&self, t: NaiveDateTime) -> bool {
        self.months & (1 << t.month()) != 0
            && self.day_matches(t.date())
            && self.hours & (1 << t.hour()) != 0
            && self.minutes & (1 << t.minute()) != 0
            && self.seconds & (1 << t.second()) != 0
    }

    /// The first matching wall time at or after `from`, skipping whole months, days,
    /// hours and minutes that cannot match.
    fn next_wall(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let limit = from.year() + SEARCH_YEARS;
        let mut t = from.with_nanosecond(0)?;
        loop {
            if t.year() > limit {
                return None;
            }
            let date = t.date();
            if self.months & (1 << t.month()) == 0 {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if !self.day_matches(date) {
                t = date.succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            let Some(h) = next_bit(self.hours, t.hour(), 23) else {
                t = date.succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            };
            if h != t.hour() {
                t = date.and_hms_opt(h, 0, 0)?;
                continue;
            }
            let Some(m) = next_bit(self.minutes, t.minute(), 59) else {
                t = date.and_hms_opt(h, 0, 0)? + Duration::hours(1);
                continue;
            };
            if m != t.minute() {
                t = date.and_hms_opt(h, m, 0)?;
                continue;
            }
            let Some(s) = next_bit(self.seconds, t.second(), 59) else {
                t = date.and_hms_opt(h, m, 0)? + Duration::minutes(1);
                continue;
            };
            return date.and_hms_opt(h, m, s);
        }
    }

    /// The first fire instant strictly after `after`, evaluated in `zone` (see the module
    /// doc for the DST rules). `None` if it does not fire within 30 years.
    pub fn next_after(&self, after: DateTime<Utc>, zone: &Zone) -> Option<DateTime<Utc>> {
        next_instant(self, after, zone)
    }
}

impl WallSchedule for CronSchedule {
    fn next_wall(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        CronSchedule::next_wall(self, from)
    }

    fn real_time(&self) -> bool {
        self.real_time
    }
}

/// What the DST mapping needs of an expression, whatever its dialect: the matching wall
/// times, and whether it follows real time (its minute or hour field starts with `*`).
/// Vixie expressions ([`CronSchedule`]) and Quartz ones ([`super::quartz`]) share
/// [`next_instant`], so both fire the same way around DST changes.
pub trait WallSchedule {
    /// The first matching wall time at or after `from` (whole seconds), `None` if none.
    fn next_wall(&self, from: NaiveDateTime) -> Option<NaiveDateTime>;
    /// The minute or hour field starts with `*`: DST changes are followed in real time.
    fn real_time(&self) -> bool;
}

/// The first fire instant of `s` strictly after `after` in `zone`, by the DST rules of the
/// module doc.
pub fn next_instant<S: WallSchedule + ?Sized>(
    s: &S,
    after: DateTime<Utc>,
    zone: &Zone,
) -> Option<DateTime<Utc>> {
    if s.real_time() {
        return next_after_real_time(s, after, zone);
    }
    let mut from = zone.to_wall(after).with_nanosecond(0)? + Duration::seconds(1);
    loop {
        let cand = s.next_wall(from)?;
        let instant = match zone.resolve(cand) {
            WallTime::Single(i) => Some(i),
            // Fire once, at the first occurrence.
            WallTime::Ambiguous(first, _) => Some(first),
            WallTime::Gap => first_valid_after_gap(zone, cand),
        };
        match instant {
            Some(i) if i > after => return Some(i),
            _ => from = cand + Duration::seconds(1),
        }
    }
}

/// [`next_instant`] for a job that follows real time: the earliest instant after `after`
/// whose wall time matches; gap times never happen, repeated ones twice.
fn next_after_real_time<S: WallSchedule + ?Sized>(
    s: &S,
    after: DateTime<Utc>,
    zone: &Zone,
) -> Option<DateTime<Utc>> {
    let wall = zone.to_wall(after).with_nanosecond(0)?;
    // Walking on from `after`'s wall time finds the next instant, except in one case:
    // `after` in the first pass of a repeated stretch, when the second pass of the wall
    // times at or before it comes sooner than anything beyond the stretch.
    let mut from = wall + Duration::seconds(1);
    let mut next = loop {
        let cand = s.next_wall(from)?;
        let found = match zone.resolve(cand) {
            WallTime::Single(i) => Some(i),
            WallTime::Ambiguous(a, b) => Some(if a > after { a } else { b }),
            WallTime::Gap => None,
        };
        match found {
            Some(i) if i > after => break i,
            _ => from = cand + Duration::seconds(1),
        }
    };
    if let WallTime::Ambiguous(a, b) = zone.resolve(wall) {
        if after < b {
            // The repeated stretch started at most (b - a) of wall time before `wall`; the
            // first match in it is the earliest second-pass instant.
            let mut from = wall - (b - a);
            while let Some(cand) = s.next_wall(from).filter(|c| *c <= wall) {
                if let WallTime::Ambiguous(_, second) = zone.resolve(cand) {
                    if second > after {
                        next = next.min(second);
                        break;
                    }
                }
                from = cand + Duration::seconds(1);
            }
        }
    }
    Some(next)
}

/// The first instant after a gap that contains `wall`: the earliest existing wall time
/// after it, probed minute by minute (gaps are whole minutes in the tz database).
fn first_valid_after_gap(zone: &Zone, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    let mut t = wall.with_second(0)?;
    for _ in 0..(48 * 60) {
        t += Duration::minutes(1);
        match zone.resolve(t) {
            WallTime::Single(i) | WallTime::Ambiguous(i, _) => return Some(i),
            WallTime::Gap => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn seq(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let s = CronSchedule::parse(expr).unwrap();
        let z = Zone::parse(Some(tz)).unwrap();
        let mut t = utc(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next_after(t, &z).unwrap();
            out.push(z.to_fixed(t).to_rfc3339());
        }
        out
    }

    fn e(expr: &str) -> String {
        CronSchedule::parse(expr).unwrap_err().0
    }

    #[test]
    fn error_messages() {
        assert_eq!(e("61 * * * *"), "minute 61 out of range 0-59");
        assert_eq!(e("* 24 * * *"), "hour 24 out of range 0-23");
        assert_eq!(e("* * 0 * *"), "day-of-month 0 out of range 1-31");
        assert_eq!(e("* * * 13 *"), "month 13 out of range 1-12");
        assert_eq!(e("* * * * 8"), "day-of-week 8 out of range 0-7");
        assert_eq!(e("60 * * * * *"), "second 60 out of range 0-59");
        assert_eq!(
            e("* * *"),
            "expected 5 fields (or 6 with leading seconds), got 3"
        );
        assert_eq!(e("x * * * *"), "minute: invalid value \"x\"");
        assert_eq!(e("*/0 * * * *"), "minute: step must be at least 1");
        assert_eq!(e("* * * * fri-mon"), "day-of-week range 5-1 is reversed");
        assert_eq!(e("1,,2 * * * *"), "minute: empty item in list \"1,,2\"");
        assert_eq!(e(""), "the expression is empty");
        assert!(e("@reboot").contains("not supported"));
        assert!(e("@often").contains("unknown macro"));
        assert!(e("0 0 30 2 *").starts_with("never fires"));
        assert!(e("0 0 31 4,6 *").starts_with("never fires"));
        assert_eq!(
            e("99999999999999999999 * * * *"),
            "minute 99999999999999999999 out of range 0-59"
        );
    }

    #[test]
    fn nasty_inputs_never_panic() {
        for s in [
            "-",
            "/5",
            "*/",
            "1-",
            "-1",
            "1-2-3",
            "1//2",
            "*/99999999999",
            "é * * * *",
            "* * * * * * *",
            "\t",
            "@",
            "@@daily",
            "1-60/0",
            "a-b * * * *",
            ",",
            "*,*",
            "0-59/60 * * * *",
            "7-7 * * * *",
            "* * * jan-dec sun-sat",
            "* * * * 7-0",
        ] {
            let _ = CronSchedule::parse(s);
        }
        assert!(CronSchedule::parse("* * * jan-dec sun-sat").is_ok());
        assert!(CronSchedule::parse("0 0 29 2 *").is_ok());
    }

    #[test]
    fn weekdays_and_sunday() {
        assert_eq!(
            seq("0 9 * * 1-5", "UTC", "2026-11-27T10:00:00Z", 3),
            [
                "2026-11-30T09:00:00+00:00",
                "2026-12-01T09:00:00+00:00",
                "2026-12-02T09:00:00+00:00"
            ]
        );
        let a = seq("0 12 * * 0", "UTC", "2026-11-24T00:00:00Z", 3);
        assert_eq!(a, seq("0 12 * * 7", "UTC", "2026-11-24T00:00:00Z", 3));
        assert_eq!(a, seq("0 12 * * SUN", "UTC", "2026-11-24T00:00:00Z", 3));
        assert_eq!(a[0], "2026-11-29T12:00:00+00:00");
        // 5-7 = Fri, Sat, Sun.
        assert_eq!(
            seq("0 0 * * 5-7", "UTC", "2026-11-24T00:00:00Z", 4),
            [
                "2026-11-27T00:00:00+00:00",
                "2026-11-28T00:00:00+00:00",
                "2026-11-29T00:00:00+00:00",
                "2026-12-04T00:00:00+00:00"
            ]
        );
    }

    #[test]
    fn or_rule_and_star_step_and_rule() {
        assert_eq!(
            seq("0 0 13 * 5", "UTC", "2026-11-01T00:00:00Z", 5),
            [
                "2026-11-06T00:00:00+00:00",
                "2026-11-13T00:00:00+00:00",
                "2026-11-20T00:00:00+00:00",
                "2026-11-27T00:00:00+00:00",
                "2026-12-04T00:00:00+00:00"
            ]
        );
        // `*/2` starts with `*`: unrestricted for the OR rule, so odd days that are Fridays
        // (Fridays in Dec 2026: 4, 11, 18, 25).
        assert_eq!(
            seq("0 0 */2 * 5", "UTC", "2026-11-01T00:00:00Z", 3),
            [
                "2026-11-13T00:00:00+00:00",
                "2026-11-27T00:00:00+00:00",
                "2026-12-11T00:00:00+00:00"
            ]
        );
    }

    #[test]
    fn macros_names_and_seconds() {
        assert_eq!(
            seq("@yearly", "UTC", "2026-05-05T00:00:00Z", 1),
            ["2027-01-01T00:00:00+00:00"]
        );
        assert_eq!(
            seq("@hourly", "UTC", "2026-05-05T10:59:59Z", 1),
            ["2026-05-05T11:00:00+00:00"]
        );
        assert_eq!(
            seq("0 0 1 feb,Mar *", "UTC", "2026-01-05T00:00:00Z", 2),
            ["2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"]
        );
        assert_eq!(
            seq("*/20 * * * * *", "UTC", "2026-05-05T00:00:00.500Z", 3),
            [
                "2026-05-05T00:00:20+00:00",
                "2026-05-05T00:00:40+00:00",
                "2026-05-05T00:01:00+00:00"
            ]
        );
        assert_eq!(
            seq("5/20 * * * *", "UTC", "2026-05-05T00:00:00Z", 3),
            [
                "2026-05-05T00:05:00+00:00",
                "2026-05-05T00:25:00+00:00",
                "2026-05-05T00:45:00+00:00"
            ]
        );
    }

    #[test]
    fn leap_day() {
        assert_eq!(
            seq("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", 2),
            ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]
        );
    }

    #[test]
    fn spring_forward() {
        assert_eq!(
            seq("30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T02:30:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-30T02:30:00+02:00"
            ]
        );
        assert_eq!(
            seq("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 2),
            ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
        );
        // Fixed minute and hour: every skipped time collapses into one firing at the end of
        // the gap.
        assert_eq!(
            seq(
                "0,15,30 2 * * *",
                "Europe/Berlin",
                "2026-03-28T23:00:00Z",
                2
            ),
            ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"]
        );
        // A star in the minute (or hour) field: real time, the gap's slots are skipped.
        assert_eq!(
            seq("*/15 2 * * *", "Europe/Berlin", "2026-03-28T23:00:00Z", 2),
            ["2026-03-30T02:00:00+02:00", "2026-03-30T02:15:00+02:00"]
        );
        assert_eq!(
            seq("45 * * * *", "America/New_York", "2026-03-08T06:00:00Z", 2),
            ["2026-03-08T01:45:00-05:00", "2026-03-08T03:45:00-04:00"]
        );
    }

    #[test]
    fn fall_back() {
        assert_eq!(
            seq("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
        );
        // From inside the first pass of the repeated hour, the next is tomorrow.
        assert_eq!(
            seq("30 1 * * *", "America/New_York", "2026-11-01T05:31:00Z", 1),
            ["2026-11-02T01:30:00-05:00"]
        );
        // Fixed minute and hour: the repeated 01:xx fires once.
        assert_eq!(
            seq("0 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T01:00:00-04:00", "2026-11-02T01:00:00-05:00"]
        );
        // A star in the hour or minute field: real time, both passes fire.
        assert_eq!(
            seq("0 * * * *", "America/New_York", "2026-11-01T03:30:00Z", 4),
            [
                "2026-11-01T00:00:00-04:00",
                "2026-11-01T01:00:00-04:00",
                "2026-11-01T01:00:00-05:00",
                "2026-11-01T02:00:00-05:00"
            ]
        );
        assert_eq!(
            seq("*/30 * * * *", "Europe/Berlin", "2026-10-24T23:45:00Z", 6),
            [
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-25T02:00:00+01:00",
                "2026-10-25T02:30:00+01:00",
                "2026-10-25T03:00:00+01:00",
                "2026-10-25T03:30:00+01:00"
            ]
        );
        // From the end of the first pass, the cadence carries on into the second.
        assert_eq!(
            seq(
                "*/10 * * * *",
                "America/New_York",
                "2026-11-01T05:45:00Z",
                4
            ),
            [
                "2026-11-01T01:50:00-04:00",
                "2026-11-01T01:00:00-05:00",
                "2026-11-01T01:10:00-05:00",
                "2026-11-01T01:20:00-05:00"
            ]
        );
        // From inside the second pass.
        assert_eq!(
            seq(
                "*/30 * * * *",
                "America/New_York",
                "2026-11-01T06:10:00Z",
                2
            ),
            ["2026-11-01T01:30:00-05:00", "2026-11-01T02:00:00-05:00"]
        );
        // `*` in the hour only (minute fixed), and @hourly, are real time too.
        assert_eq!(
            seq("@hourly", "America/New_York", "2026-11-01T05:00:00Z", 2),
            ["2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"]
        );
    }

    /// Jobs that follow real time, in zones with DST (New York, Berlin, Lord Howe's 30-minute
    /// shift) around their transitions: the search must agree with a minute-by-minute scan of
    /// instants whose wall time matches.
    #[test]
    fn real_time_search_agrees_with_an_instant_scan() {
        let mut x: u64 = 0x9E3779B97F4A7C15;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let windows = [
            (
                "America/New_York",
                "2026-03-07T20:00:00Z",
                "2026-11-01T00:00:00Z",
            ),
            (
                "Europe/Berlin",
                "2026-03-28T20:00:00Z",
                "2026-10-24T20:00:00Z",
            ),
            (
                "Australia/Lord_Howe",
                "2026-04-04T10:00:00Z",
                "2026-10-03T10:00:00Z",
            ),
        ];
        let mut checked = 0;
        for i in 0..120 {
            let minute = match rnd(4) {
                0 => "*".to_string(),
                1 => format!("*/{}", 1 + rnd(30)),
                2 => format!("{}", rnd(60)),
                _ => format!("{},{}", rnd(60), rnd(60)),
            };
            let hour = if minute.starts_with('*') && rnd(2) == 0 {
                format!("{}-{}", rnd(4), 1 + rnd(23))
            } else {
                ["*", "*/2", "*/3"][rnd(3) as usize].to_string()
            };
            let expr = format!("{minute} {hour} * * *");
            let Ok(s) = CronSchedule::parse(&expr) else {
                continue;
            };
            assert!(s.real_time, "{expr}");
            let (tz, spring, fall) = windows[i % windows.len()];
            let z = Zone::parse(Some(tz)).unwrap();
            for start in [spring, fall] {
                let start = utc(start);
                let horizon = start + Duration::hours(12);
                let mut t = start;
                loop {
                    let got = s.next_after(t, &z);
                    let mut scan = (t + Duration::minutes(1)).with_second(0).unwrap();
                    while scan <= horizon && !s.matches(z.to_wall(scan)) {
                        scan += Duration::minutes(1);
                    }
                    if scan > horizon {
                        assert!(got.is_none_or(|g| g > horizon), "{expr} in {tz}: {got:?}");
                        break;
                    }
                    assert_eq!(got, Some(scan), "{expr} in {tz} after {t}");
                    t = scan;
                    checked += 1;
                }
            }
        }
        assert!(checked > 2000, "only {checked} instants checked");
    }

    /// Deterministic pseudo-random expressions; the search must agree with a minute-by-
    /// minute scan using the field matcher.
    #[test]
    fn search_agrees_with_brute_force() {
        let mut x: u64 = 0x2545F4914F6CDD1D;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut field = |min: u64, max: u64| -> String {
            let span = max - min + 1;
            match rnd(6) {
                0 => "*".into(),
                1 => format!("{}", min + rnd(span)),
                2 => {
                    let a = min + rnd(span);
                    format!("{a}-{}", a + rnd(max - a + 1))
                }
                3 => format!("*/{}", 1 + rnd(span.min(12))),
                4 => format!("{},{}", min + rnd(span), min + rnd(span)),
                _ => {
                    let a = min + rnd(span);
                    format!("{a}-{max}/{}", 1 + rnd(5))
                }
            }
        };
        let z = Zone::parse(Some("UTC")).unwrap();
        let mut checked = 0;
        for _ in 0..200 {
            let expr = format!(
                "{} {} {} {} {}",
                field(0, 59),
                field(0, 23),
                field(1, 31),
                field(1, 12),
                field(0, 7)
            );
            let Ok(s) = CronSchedule::parse(&expr) else {
                continue;
            };
            let start = utc("2026-01-30T22:17:00Z");
            let horizon = start + Duration::days(120);
            let mut t = start;
            let mut scan = start;
            for _ in 0..20 {
                let got = s.next_after(t, &z);
                // Brute force: the first whole minute after t that matches.
                scan = (scan.max(t) + Duration::minutes(1)).with_second(0).unwrap();
                while scan <= horizon && !s.matches(scan.naive_utc()) {
                    scan += Duration::minutes(1);
                }
                if scan > horizon {
                    assert!(got.is_none_or(|g| g > horizon), "{expr}: {got:?}");
                    break;
                }
                assert_eq!(got, Some(scan), "{expr} after {t}");
                t = scan;
                checked += 1;
            }
        }
        assert!(checked > 500, "only {checked} instants checked");
    }
}
