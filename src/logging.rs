//! Logging on stderr through `log` + `env_logger`: text (`ts LEVEL event key=value… msg`) or
//! one JSON object per event (`{"ts", "level", "event", "job", "run", …, "msg"}`).
//! `RUST_LOG` sets the level (default `info` for the daemon, `warn` for libraries).

use std::io::Write;

use log::kv::{Key, Value as KvValue, VisitSource};
use serde_json::{Map, Value};

/// Output format of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// A log format name other than `text` and `json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownFormat(pub String);

impl std::fmt::Display for UnknownFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown log format \"{}\": expected text or json",
            self.0
        )
    }
}

impl std::error::Error for UnknownFormat {}

impl std::str::FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, UnknownFormat> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            o => Err(UnknownFormat(o.to_string())),
        }
    }
}

struct Collect(Vec<(String, Value)>);

impl<'kvs> VisitSource<'kvs> for Collect {
    fn visit_pair(&mut self, key: Key<'kvs>, value: KvValue<'kvs>) -> Result<(), log::kv::Error> {
        let v = if let Some(b) = value.to_bool() {
            Value::Bool(b)
        } else if let Some(n) = value.to_u64() {
            n.into()
        } else if let Some(n) = value.to_i64() {
            n.into()
        } else {
            Value::String(value.to_string())
        };
        self.0.push((key.as_str().to_string(), v));
        Ok(())
    }
}

/// Installs the logger. Safe to call once; later calls are ignored.
pub fn init(format: Format) {
    let mut b = env_logger::Builder::new();
    b.filter_level(log::LevelFilter::Warn)
        .filter_module("bog_agents_daemon", log::LevelFilter::Info);
    if let Ok(s) = std::env::var("RUST_LOG") {
        b.parse_filters(&s);
    }
    b.target(env_logger::Target::Stderr);
    b.format(move |buf, record| {
        let mut kv = Collect(Vec::new());
        let _ = record.key_values().visit(&mut kv);
        let ts = crate::time::now_rfc3339();
        let level = record.level().as_str().to_ascii_lowercase();
        let msg = record.args().to_string();
        match format {
            Format::Json => {
                let mut m = Map::new();
                m.insert("ts".into(), ts.into());
                m.insert("level".into(), level.into());
                let mut event = None;
                for (k, v) in kv.0 {
                    if k == "event" {
                        event = Some(v);
                    } else {
                        m.insert(k, v);
                    }
                }
                m.insert(
                    "event".into(),
                    event.unwrap_or_else(|| record.target().into()),
                );
                m.insert("msg".into(), msg.into());
                writeln!(buf, "{}", Value::Object(m))
            }
            Format::Text => {
                let mut line = format!("{ts} {:<5}", record.level());
                let mut rest = String::new();
                for (k, v) in kv.0 {
                    let s = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    if k == "event" {
                        line.push(' ');
                        line.push_str(&s);
                    } else if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"') {
                        rest.push_str(&format!(" {k}={s:?}"));
                    } else {
                        rest.push_str(&format!(" {k}={s}"));
                    }
                }
                writeln!(buf, "{line}{rest} {msg}")
            }
        }
    });
    let _ = b.try_init();
}

/// Rate-limits one kind of log line, for events a client can cause at will (refused
/// webhooks, refused connections): the first is written at once; later ones within the
/// next minute are only counted, and the count goes with the first line written after it.
pub struct Throttle {
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

impl Throttle {
    /// The window in which only one line is written.
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

    pub const fn new() -> Throttle {
        Throttle {
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when a line should be written now, `n` being how many were held back
    /// since the last one; `None` when this one is only counted.
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        match s.0 {
            Some(t) if now.duration_since(t) < Self::WINDOW => {
                s.1 += 1;
                None
            }
            _ => {
                let held = s.1;
                *s = (Some(now), 0);
                Some(held)
            }
        }
    }
}

/// " (N more in the last minute)" for a throttled line, or nothing.
pub fn held_back(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more like it since the last such line)")
    }
}

#[cfg(test)]
mod throttle_tests {
    use super::Throttle;

    #[test]
    fn the_first_line_is_written_and_the_rest_of_the_window_is_counted() {
        let t = Throttle::new();
        assert_eq!(t.allow(), Some(0));
        for _ in 0..1999 {
            assert_eq!(t.allow(), None);
        }
        // The window has not passed: still counted.
        assert_eq!(t.allow(), None);
        let Some(past) = std::time::Instant::now().checked_sub(Throttle::WINDOW) else {
            return; // a machine up for less than a minute
        };
        t.state.lock().unwrap().0 = Some(past);
        assert_eq!(t.allow(), Some(2000));
        assert_eq!(t.allow(), None);
    }
}
