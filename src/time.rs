//! Time formatting shared by records, logs and the API.

use chrono::{DateTime, SecondsFormat, Utc};

/// Now as RFC 3339 UTC with milliseconds, e.g. `2026-11-24T06:25:20.123Z`.
pub fn now_rfc3339() -> String {
    rfc3339(Utc::now())
}

/// An instant as RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp into UTC.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
