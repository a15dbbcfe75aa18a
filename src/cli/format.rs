//! How the CLI shows times, triggers and errors in its tables and summaries.

use chrono::{DateTime, Local, Utc};
use serde_json::Value;

use super::duration;

/// An instant in local time with how far away it is: `2026-12-01 14:00:00 (in 3h 12m)`.
pub fn local_relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let local = t.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S");
    let secs = (t - now).num_seconds();
    let rel = if secs > 0 {
        format!("in {}", duration::human(secs))
    } else if secs < 0 {
        format!("{} ago", duration::human(secs))
    } else {
        "now".into()
    };
    format!("{local} ({rel})")
}

/// An RFC 3339 timestamp in local time, or `-`.
pub fn local(ts: Option<&str>) -> String {
    ts.and_then(crate::time::parse_rfc3339)
        .map(|t| {
            t.with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// The NEXT of a job (as the API or `offline_view` shows it): its next clock firing in
/// local time, or why there is none.
pub fn next_text(job: &Value, online: bool) -> String {
    if job["enabled"] == false {
        return "none (disabled)".into();
    }
    if let Some(t) = job["next_fire_at"]
        .as_str()
        .and_then(crate::time::parse_rfc3339)
    {
        return local_relative(t, Utc::now());
    }
    let triggers = job["triggers"].as_array().cloned().unwrap_or_default();
    if !online && triggers.iter().any(|t| t["type"] == "interval") {
        return "when the daemon runs (intervals count from its start)".into();
    }
    if triggers
        .iter()
        .all(|t| t["type"] == "cron" || t["type"] == "interval")
    {
        return "none (the cron expression has no future time)".into();
    }
    "on its next event".into()
}

/// A trigger in full: `cron 0 9 * * 1-5 Europe/Berlin`, `every 5m`, `file src/**/*.py`,
/// `webhook /hooks/deploy`, `git /srv/repo main`.
pub fn trigger(t: &Value) -> String {
    let s = |k: &str| t[k].as_str().unwrap_or("").to_string();
    match t["type"].as_str().unwrap_or("") {
        "cron" => {
            let name = match t["dialect"].as_str() {
                Some("quartz") => "quartz",
                _ => "cron",
            };
            match t["timezone"].as_str() {
                Some(tz) => format!("{name} {} {tz}", s("cron")),
                None => format!("{name} {}", s("cron")),
            }
        }
        "interval" => format!(
            "every {}",
            duration::compact(t["seconds"].as_u64().unwrap_or(0))
        ),
        "file_change" => {
            let pats: Vec<&str> = t["patterns"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!("file {}", pats.join(" "))
        }
        "webhook" => format!("webhook {}", s("path")),
        "git_push" => format!("git {} {}", s("repo"), s("branch")),
        other => other.to_string(),
    }
}

/// The first line of `s`, cut to `max` characters with `…`.
pub fn shorten(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    let cut = line.chars().count() > max || s.lines().nth(1).is_some();
    if line.chars().count() > max {
        let head: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{head}…")
    } else if cut {
        format!("{line} …")
    } else {
        line.to_string()
    }
}

/// Prints rows as columns two spaces apart (the last column unpadded).
pub fn table(rows: &[Vec<String>]) {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut w = vec![0; n];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(w[i] - c.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    print!("{out}");
}

/// A job's run budget use as `job list` shows it: `3/10 per hour, 12/50 per day`, or `-`.
pub fn budget_use(b: &Value) -> String {
    let part = |k: &str, per: &str| {
        let w = &b[k];
        w.is_object().then(|| {
            format!(
                "{}/{} per {per}",
                w["used"].as_u64().unwrap_or(0),
                w["max"].as_u64().unwrap_or(0)
            )
        })
    };
    let parts: Vec<String> = [
        part("max_runs_per_hour", "hour"),
        part("max_runs_per_day", "day"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}
