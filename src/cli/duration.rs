//! Durations on the command line: `90`, `90s`, `5m`, `1h30m`, `500ms`, `2d`, `1.5h`. A
//! plain number is seconds. Used as clap value parsers, so a bad value is reported with the
//! flag's name and exit code 2.

use std::fmt;

/// A command-line value that is not a duration (clap prints it after the flag's name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DurationError {
    Empty,
    /// Not a number, a negative one, or an unknown unit: the value as given.
    Invalid(String),
    /// A fraction of a second for a flag that counts whole seconds.
    NotWhole(String),
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Empty => {
                write!(f, "empty duration; give e.g. 30, 30s, 5m, 1h30m or 500ms")
            }
            DurationError::Invalid(s) => write!(
                f,
                "{s:?} is not a duration; give seconds (30) or a number with a unit: 500ms, 30s, 5m, 1h30m, 2d"
            ),
            DurationError::NotWhole(s) => write!(
                f,
                "{s:?} is not a whole number of seconds (this setting counts whole seconds)"
            ),
        }
    }
}

impl std::error::Error for DurationError {}

/// Seconds in `s`, which is a plain number (seconds) or number-unit pairs (`ms`, `s`, `m`,
/// `h`, `d`), e.g. `1h30m`.
pub fn parse_seconds(s: &str) -> Result<f64, DurationError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(DurationError::Empty);
    }
    if let Ok(n) = t.parse::<f64>() {
        return check(n, s);
    }
    let mut total = 0.0;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad(s));
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad(s))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(bad(s)),
        };
        rest = &rest[unit_len..];
        total += n * factor;
    }
    check(total, s)
}

fn check(n: f64, s: &str) -> Result<f64, DurationError> {
    if n.is_finite() && n >= 0.0 {
        Ok(n)
    } else {
        Err(bad(s))
    }
}

fn bad(s: &str) -> DurationError {
    DurationError::Invalid(s.to_string())
}

/// Clap parser for flags that take whole seconds.
pub fn whole_seconds(s: &str) -> Result<u64, DurationError> {
    let x = parse_seconds(s)?;
    if x.fract() != 0.0 || x > u64::MAX as f64 {
        return Err(DurationError::NotWhole(s.to_string()));
    }
    Ok(x as u64)
}

/// Clap parser for flags that take seconds with a fraction.
pub fn seconds(s: &str) -> Result<f64, DurationError> {
    parse_seconds(s)
}

/// `3h 12m`, `45s`, `2d 4h`: the two largest units of a span in seconds.
pub fn human(secs: i64) -> String {
    let s = secs.unsigned_abs();
    let (d, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        if h > 0 {
            format!("{d}d {h}h")
        } else {
            format!("{d}d")
        }
    } else if h > 0 {
        if m > 0 {
            format!("{h}h {m}m")
        } else {
            format!("{h}h")
        }
    } else if m > 0 {
        if sec > 0 {
            format!("{m}m {sec}s")
        } else {
            format!("{m}m")
        }
    } else {
        format!("{sec}s")
    }
}

/// A number of seconds the way a user would type it back: `300` → `5m`, `5400` → `1h30m`.
pub fn compact(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut s = secs;
    for (unit, n) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= n {
            out.push_str(&format!("{}{unit}", s / n));
            s %= n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_seconds("90").unwrap(), 90.0);
        assert_eq!(parse_seconds("2.5").unwrap(), 2.5);
        assert_eq!(parse_seconds("5m").unwrap(), 300.0);
        assert_eq!(parse_seconds("1h30m").unwrap(), 5400.0);
        assert_eq!(parse_seconds("500ms").unwrap(), 0.5);
        assert_eq!(parse_seconds("2d").unwrap(), 172800.0);
        assert_eq!(parse_seconds("1.5h").unwrap(), 5400.0);
        for bad in ["", "m", "5x", "-5", "5m3", "h1", "1 h", "nan", "inf"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(whole_seconds("1h30m").unwrap(), 5400);
        assert_eq!(
            whole_seconds("1500ms"),
            Err(DurationError::NotWhole("1500ms".into()))
        );
        assert_eq!(parse_seconds(" "), Err(DurationError::Empty));
        assert_eq!(human(3 * 3600 + 12 * 60 + 5), "3h 12m");
        assert_eq!(human(45), "45s");
        assert_eq!(human(86400 * 2 + 3600 * 4), "2d 4h");
        assert_eq!(compact(300), "5m");
        assert_eq!(compact(5400), "1h30m");
        assert_eq!(compact(7), "7s");
    }
}
