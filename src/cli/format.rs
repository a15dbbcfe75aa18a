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
/// `webhook /hooks/deploy`, `webhook /hooks/pr scheme=github events=pull_request.opened
/// match=pull_request.base.ref=main`, `git /srv/repo main`, `git /srv/repo main checkout`.
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
        "webhook" => {
            let mut out = format!("webhook {}", s("path"));
            if let Some(x) = t["scheme"].as_str() {
                out.push_str(&format!(" scheme={x}"));
            }
            let events: Vec<&str> = t["events"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !events.is_empty() {
                out.push_str(&format!(" events={}", events.join(",")));
            }
            if !t["match"].is_null() {
                out.push_str(&format!(" match={}", shorten(&rule(&t["match"]), 60)));
            }
            out
        }
        "git_push" => {
            let mut out = format!("git {} {}", s("repo"), s("branch"));
            if t["checkout"] == true {
                out.push_str(" checkout");
                if t["keep_checkout_on_failure"] == true {
                    out.push_str(" (kept on failure)");
                }
            }
            out
        }
        other => other.to_string(),
    }
}

/// A webhook filter's `match` rule in one line, in the words of `--match`: `a.b=main`,
/// `a~=^v[0-9]`, `a in [x,y]`, `a exists`, `(r1 & r2)`, `(r1 | r2)`, `!r`.
pub fn rule(r: &Value) -> String {
    let list = |k: &str, sep: &str| {
        let parts: Vec<String> = r[k]
            .as_array()
            .map(|a| a.iter().map(rule).collect())
            .unwrap_or_default();
        format!("({})", parts.join(sep))
    };
    let scalar = |v: &Value| match v {
        Value::String(x) => x.clone(),
        other => other.to_string(),
    };
    let path = r["path"].as_str().unwrap_or("?");
    if r.get("all").is_some() {
        list("all", " & ")
    } else if r.get("any").is_some() {
        list("any", " | ")
    } else if let Some(n) = r.get("not") {
        format!("!{}", rule(n))
    } else if let Some(v) = r.get("equals") {
        format!("{path}={}", scalar(v))
    } else if let Some(v) = r.get("regex") {
        format!("{path}~={}", scalar(v))
    } else if let Some(v) = r.get("in") {
        let vs: Vec<String> = v
            .as_array()
            .map(|a| a.iter().map(scalar).collect())
            .unwrap_or_default();
        format!("{path} in [{}]", vs.join(","))
    } else if r.get("exists") == Some(&Value::Bool(false)) {
        format!("{path} absent")
    } else if r.get("exists").is_some() {
        format!("{path} exists")
    } else {
        r.to_string()
    }
}

/// A job's dead-man's switch: `success every 1d`, `success within 30m of each slot`, or `-`.
pub fn expect(e: &Value) -> String {
    if let Some(n) = e["within_seconds"].as_u64() {
        format!("success every {}", duration::compact(n))
    } else if let Some(n) = e["after_slot"].as_u64() {
        format!("success within {} of each slot", duration::compact(n))
    } else {
        "-".into()
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn triggers_show_their_scheme_filter_and_checkout() {
        let hook = json!({"type": "webhook", "path": "/hooks/pr", "secret_env": "S"});
        assert_eq!(trigger(&hook), "webhook /hooks/pr");
        let hook = json!({"type": "webhook", "path": "/hooks/pr", "secret_env": "S",
            "scheme": "github", "events": ["pull_request.opened", "issues.labeled"],
            "match": {"any": [{"path": "a.b", "equals": "main"},
                              {"not": {"path": "c", "regex": "^v"}},
                              {"path": "d", "in": ["x", 1]},
                              {"path": "header.X-Y", "exists": false}]}});
        assert_eq!(
            trigger(&hook),
            "webhook /hooks/pr scheme=github events=pull_request.opened,issues.labeled match=(a.b=main | !c~=^v | d in [x,1] | header.X-Y absent)"
        );
        let git = json!({"type": "git_push", "repo": "/r", "branch": "main"});
        assert_eq!(trigger(&git), "git /r main");
        let git = json!({"type": "git_push", "repo": "/r", "branch": "main", "checkout": true});
        assert_eq!(trigger(&git), "git /r main checkout");
        assert_eq!(
            expect(&json!({"within_seconds": 5400})),
            "success every 1h30m"
        );
        assert_eq!(
            expect(&json!({"after_slot": 0})),
            "success within 0s of each slot"
        );
        assert_eq!(expect(&Value::Null), "-");
    }
}
