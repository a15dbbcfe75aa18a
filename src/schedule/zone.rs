//! Time zones for cron triggers: the daemon's local zone or a named IANA zone, and the
//! mapping from a wall-clock time to instants (one, two around a fall-back, none in a
//! spring-forward gap). Named zones come from [`super::tz`] (the system's tz database, else
//! a built-in table of current rules).

use std::sync::Arc;

use chrono::offset::LocalResult;
use chrono::{DateTime, Duration, FixedOffset, Local, NaiveDateTime, Offset, TimeZone, Utc};

use super::tz::Tz;

/// A time zone name that is neither empty (the local zone) nor a known IANA name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownZone(pub String);

impl std::fmt::Display for UnknownZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown time zone \"{}\": expected an IANA name such as Europe/Berlin",
            self.0
        )
    }
}

impl std::error::Error for UnknownZone {}

/// The zone a cron trigger is evaluated in.
#[derive(Clone, Debug, PartialEq)]
pub enum Zone {
    /// The daemon's local zone (`TZ`, else `/etc/localtime`).
    Local,
    /// A named IANA zone such as `Europe/Berlin`.
    Named(Arc<Tz>),
}

/// What a wall-clock time is in a zone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WallTime {
    /// It happens once.
    Single(DateTime<Utc>),
    /// It happens twice (fall-back): earliest, latest.
    Ambiguous(DateTime<Utc>, DateTime<Utc>),
    /// It does not happen (spring-forward gap).
    Gap,
}

fn classify<T: TimeZone>(r: LocalResult<DateTime<T>>) -> WallTime {
    match r {
        LocalResult::Single(t) => WallTime::Single(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
            WallTime::Ambiguous(a.min(b), a.max(b))
        }
        LocalResult::None => WallTime::Gap,
    }
}

impl Zone {
    /// `None` or `""` is the local zone; anything else must be an IANA name.
    pub fn parse(name: Option<&str>) -> Result<Zone, UnknownZone> {
        match name.map(str::trim) {
            None | Some("") => Ok(Zone::Local),
            Some(n) => Tz::named(n)
                .map(Zone::Named)
                .ok_or_else(|| UnknownZone(n.to_string())),
        }
    }

    /// `local` or the IANA name.
    pub fn name(&self) -> String {
        match self {
            Zone::Local => "local".into(),
            Zone::Named(tz) => tz.name().to_string(),
        }
    }

    /// The instants at which `wall` happens in this zone.
    pub fn resolve(&self, wall: NaiveDateTime) -> WallTime {
        match self {
            Zone::Local => classify(Local.from_local_datetime(&wall)),
            Zone::Named(tz) => {
                let at =
                    |t: i64| DateTime::from_timestamp(t, wall.and_utc().timestamp_subsec_nanos());
                match tz.instants_of(wall.and_utc().timestamp()).as_slice() {
                    [] => WallTime::Gap,
                    [one] => at(*one).map_or(WallTime::Gap, WallTime::Single),
                    [first, .., last] => match (at(*first), at(*last)) {
                        (Some(a), Some(b)) => WallTime::Ambiguous(a, b),
                        _ => WallTime::Gap,
                    },
                }
            }
        }
    }

    /// The wall-clock time of `instant` in this zone.
    pub fn to_wall(&self, instant: DateTime<Utc>) -> NaiveDateTime {
        match self {
            Zone::Local => instant.with_timezone(&Local).naive_local(),
            Zone::Named(tz) => {
                instant.naive_utc() + Duration::seconds(tz.offset_at(instant.timestamp()).into())
            }
        }
    }

    /// `instant` with this zone's offset at that instant, for RFC 3339 printing.
    pub fn to_fixed(&self, instant: DateTime<Utc>) -> DateTime<FixedOffset> {
        match self {
            Zone::Local => instant.with_timezone(&Local).fixed_offset(),
            Zone::Named(tz) => {
                let off = FixedOffset::east_opt(tz.offset_at(instant.timestamp()));
                instant.with_timezone(&off.unwrap_or_else(|| Utc.fix()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn parse_names() {
        assert_eq!(Zone::parse(None).unwrap(), Zone::Local);
        assert_eq!(Zone::parse(Some("")).unwrap(), Zone::Local);
        assert_eq!(Zone::parse(Some("UTC")).unwrap().name(), "UTC");
        assert_eq!(
            Zone::parse(Some("Mars/Base")).unwrap_err().to_string(),
            "unknown time zone \"Mars/Base\": expected an IANA name such as Europe/Berlin"
        );
    }

    #[test]
    fn gaps_and_repeats_in_berlin() {
        let z = Zone::parse(Some("Europe/Berlin")).unwrap();
        assert_eq!(z.resolve(wall("2026-03-29 02:30:00")), WallTime::Gap);
        match z.resolve(wall("2026-10-25 02:30:00")) {
            WallTime::Ambiguous(a, b) => {
                assert_eq!(a.to_rfc3339(), "2026-10-25T00:30:00+00:00");
                assert_eq!(b.to_rfc3339(), "2026-10-25T01:30:00+00:00");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            z.resolve(wall("2026-06-01 12:00:00")),
            WallTime::Single(_)
        ));
    }
}
