//! Turns user JSON (an API body, a merged PATCH, a file on disk) into a [`Job`], or into a
//! [`FieldError`] naming the exact field path, e.g. `triggers[0].cron`.
//!
//! Validation walks the `serde_json::Value` by hand rather than deriving `Deserialize`, so
//! that wrong types and unknown fields are reported with their full path. This is the only
//! place a `Job` is constructed.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::model::*;
use crate::schedule::cron::CronSchedule;
use crate::schedule::zone::Zone;

/// A validation failure: `{"error": ..., "field": ...}` in the API, exit 2 in the CLI.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// Path of the offending field, e.g. `limits.timeout_seconds` or `triggers[1].path`.
    pub field: String,
    /// What is wrong, in words a user can act on.
    pub error: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.error)
        } else {
            write!(f, "{}: {}", self.field, self.error)
        }
    }
}

impl std::error::Error for FieldError {}

type R<T> = Result<T, FieldError>;

fn err<T>(field: &str, error: impl Into<String>) -> R<T> {
    Err(FieldError {
        field: field.to_string(),
        error: error.into(),
    })
}

/// Fields the daemon computes; accepted on input (so a fetched job can be sent back) and
/// ignored.
const READ_ONLY: &[&str] = &["id", "created_at", "next_fire_at", "warnings"];

const TOP_KEYS: &[&str] = &[
    "name",
    "prompt",
    "agent",
    "model",
    "working_dir",
    "env",
    "triggers",
    "outputs",
    "limits",
    "overlap",
    "max_retries",
    "retry_backoff_seconds",
    "catch_up",
    "history",
    "enabled",
];

/// Largest accepted `max_output_kb` (64 MiB): captured output is held in memory.
pub const MAX_OUTPUT_KB_LIMIT: u64 = 65536;

/// Validates `v` as a job. `id` and `created_at` are the daemon's (new or existing); any
/// read-only fields in `v` are ignored.
pub fn validate_job(v: &Value, id: &str, created_at: &str) -> R<Job> {
    let m = object(v, "")?;
    check_keys(m, "", TOP_KEYS, READ_ONLY)?;

    let name = req_str(m, "", "name")?;
    validate_name(&name).or_else(|e| err("name", e))?;
    let prompt = req_str(m, "", "prompt")?;
    if prompt.trim().is_empty() {
        return err("prompt", "must not be empty");
    }
    let agent = match m.get("agent") {
        None | Some(Value::Null) => None,
        Some(a) => Some(agent(a)?),
    };
    let model = opt_str(m, "", "model")?.unwrap_or_default();
    let working_dir = match opt_str(m, "", "working_dir")? {
        Some(p) => Some(abs_path(&p, "working_dir")?),
        None => None,
    };
    let env = string_map(m.get("env"), "env")?;
    for k in env.keys() {
        if !is_env_name(k) {
            return err(
                &format!("env.{k}"),
                "environment variable names are letters, digits and _ and do not start with a digit",
            );
        }
    }

    let triggers = match m.get("triggers") {
        None | Some(Value::Null) => return err("triggers", "at least one trigger is required"),
        Some(Value::Array(a)) if a.is_empty() => {
            return err("triggers", "at least one trigger is required")
        }
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, t)| trigger(t, &format!("triggers[{i}]"), working_dir.as_deref()))
            .collect::<R<Vec<_>>>()?,
        Some(other) => return err("triggers", expected("an array", other)),
    };
    let outputs = match m.get("outputs") {
        None | Some(Value::Null) => vec![Output {
            target: Target::Log,
            on: vec![OnStatus::Succeeded, OnStatus::Failed],
        }],
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, o)| output(o, &format!("outputs[{i}]")))
            .collect::<R<Vec<_>>>()?,
        Some(other) => return err("outputs", expected("an array", other)),
    };
    let limits = limits(m.get("limits"))?;
    let overlap = match opt_str(m, "", "overlap")?.as_deref() {
        None | Some("queue") => Overlap::Queue,
        Some("skip") => Overlap::Skip,
        Some("parallel") => Overlap::Parallel,
        Some(o) => {
            return err(
                "overlap",
                format!("unknown overlap policy \"{o}\": expected queue, skip or parallel"),
            )
        }
    };
    let max_retries = opt_uint(m, "", "max_retries", 0, 100)?.unwrap_or(0) as u32;
    let retry_backoff_seconds =
        opt_num(m, "", "retry_backoff_seconds", 0.0, 86400.0)?.unwrap_or(2.0);
    let catch_up = opt_bool(m, "", "catch_up")?.unwrap_or(false);
    let history = opt_uint(m, "", "history", 1, 100_000)?.unwrap_or(100) as u32;
    let enabled = opt_bool(m, "", "enabled")?.unwrap_or(true);

    Ok(Job {
        id: id.to_string(),
        name,
        prompt,
        agent,
        model,
        working_dir,
        env,
        triggers,
        outputs,
        limits,
        overlap,
        max_retries,
        retry_backoff_seconds,
        catch_up,
        history,
        enabled,
        created_at: created_at.to_string(),
    })
}

/// Checks a job name: `[A-Za-z0-9._-]{1,64}`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!(
            "must be 1 to 64 characters long (got {})",
            name.chars().count()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "invalid character {c:?}: names use only letters, digits, '.', '_' and '-'"
        ));
    }
    if name == "." || name == ".." {
        return Err("must not be \".\" or \"..\"".into());
    }
    Ok(())
}

fn agent(v: &Value) -> R<Agent> {
    let m = object(v, "agent")?;
    check_keys(m, "agent", &["command", "prompt_via"], &[])?;
    let command = match m.get("command") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Value::String(s) => Ok(s.clone()),
                other => err(&format!("agent.command[{i}]"), expected("a string", other)),
            })
            .collect::<R<Vec<_>>>()?,
        Some(Value::Array(_)) => return err("agent.command", "must name a program"),
        None | Some(Value::Null) => return err("agent.command", "is required"),
        Some(other) => {
            return err(
                "agent.command",
                expected("an array of strings (argv)", other),
            )
        }
    };
    if command[0].trim().is_empty() {
        return err("agent.command[0]", "the program name must not be empty");
    }
    let prompt_via = match opt_str(m, "agent", "prompt_via")?.as_deref() {
        None | Some("arg") => PromptVia::Arg,
        Some("stdin") => PromptVia::Stdin,
        Some(o) => {
            return err(
                "agent.prompt_via",
                format!("unknown value \"{o}\": expected arg or stdin"),
            )
        }
    };
    Ok(Agent {
        command,
        prompt_via,
    })
}

fn limits(v: Option<&Value>) -> R<Limits> {
    let d = Limits::default();
    let m = match v {
        None | Some(Value::Null) => return Ok(d),
        Some(v) => object(v, "limits")?,
    };
    check_keys(
        m,
        "limits",
        &[
            "timeout_seconds",
            "cpu_seconds",
            "memory_mb",
            "max_processes",
            "max_output_kb",
        ],
        &[],
    )?;
    let timeout_seconds = if m.contains_key("timeout_seconds") {
        opt_uint(m, "limits", "timeout_seconds", 1, 30 * 86400)?
    } else {
        d.timeout_seconds
    };
    Ok(Limits {
        timeout_seconds,
        cpu_seconds: opt_uint(m, "limits", "cpu_seconds", 1, 30 * 86400)?,
        memory_mb: opt_uint(m, "limits", "memory_mb", 1, 1 << 30)?,
        max_processes: opt_uint(m, "limits", "max_processes", 1, 1 << 22)?,
        max_output_kb: opt_uint(m, "limits", "max_output_kb", 1, MAX_OUTPUT_KB_LIMIT)?
            .unwrap_or(d.max_output_kb),
    })
}

fn trigger(v: &Value, p: &str, working_dir: Option<&str>) -> R<Trigger> {
    let m = object(v, p)?;
    let kind = req_str(m, p, "type")?;
    let f = |k: &str| format!("{p}.{k}");
    match kind.as_str() {
        "cron" => {
            check_keys(m, p, &["type", "cron", "timezone"], &[])?;
            let cron = req_str(m, p, "cron")?;
            if let Err(e) = CronSchedule::parse(&cron) {
                return err(&f("cron"), format!("invalid cron expression {cron:?}: {e}"));
            }
            let timezone = opt_str(m, p, "timezone")?.filter(|s| !s.is_empty());
            if let Err(e) = Zone::parse(timezone.as_deref()) {
                return err(&f("timezone"), e);
            }
            Ok(Trigger::Cron { cron, timezone })
        }
        "interval" => {
            check_keys(m, p, &["type", "seconds"], &[])?;
            let seconds = opt_uint(m, p, "seconds", 1, 10 * 366 * 86400)?;
            match seconds {
                Some(seconds) => Ok(Trigger::Interval { seconds }),
                None => err(&f("seconds"), "is required"),
            }
        }
        "file_change" => {
            check_keys(
                m,
                p,
                &["type", "patterns", "root", "debounce_seconds"],
                &[],
            )?;
            let patterns = str_list(m.get("patterns"), &f("patterns"), false)?;
            for (i, pat) in patterns.iter().enumerate() {
                let fp = format!("{p}.patterns[{i}]");
                if pat.starts_with('/') {
                    return err(&fp, "patterns are relative to root; remove the leading '/'");
                }
                if let Err(e) = crate::triggers::glob::validate(pat) {
                    return err(&fp, format!("invalid glob {pat:?}: {e}"));
                }
            }
            let root = match opt_str(m, p, "root")? {
                Some(r) => Some(abs_path(&r, &f("root"))?),
                None if working_dir.is_none() => {
                    return err(&f("root"), "is required when the job has no working_dir")
                }
                None => None,
            };
            let debounce_seconds = opt_num(m, p, "debounce_seconds", 0.0, 3600.0)?.unwrap_or(5.0);
            Ok(Trigger::FileChange {
                patterns,
                root,
                debounce_seconds,
            })
        }
        "webhook" => {
            check_keys(
                m,
                p,
                &["type", "path", "secret_env", "max_age_seconds"],
                &[],
            )?;
            let path = req_str(m, p, "path")?;
            validate_hook_path(&path).or_else(|e| err(&f("path"), e))?;
            let secret_env = env_name(m, p, "secret_env")?
                .ok_or_else(|| missing(&f("secret_env")))?;
            let max_age_seconds = opt_uint(m, p, "max_age_seconds", 1, 7 * 86400)?;
            Ok(Trigger::Webhook {
                path,
                secret_env,
                max_age_seconds,
            })
        }
        "git_push" => {
            check_keys(m, p, &["type", "repo", "branch"], &[])?;
            let repo = abs_path(&req_str(m, p, "repo")?, &f("repo"))?;
            let branch = opt_str(m, p, "branch")?.unwrap_or_else(|| "*".into());
            if branch.is_empty() {
                return err(&f("branch"), "must not be empty (use \"*\" for every branch)");
            }
            if let Err(e) = crate::triggers::glob::validate(&branch) {
                return err(&f("branch"), format!("invalid glob {branch:?}: {e}"));
            }
            Ok(Trigger::GitPush { repo, branch })
        }
        other => err(
            &f("type"),
            format!(
                "unknown trigger type \"{other}\": expected cron, interval, file_change, webhook or git_push"
            ),
        ),
    }
}

fn validate_hook_path(path: &str) -> Result<(), String> {
    let rest = path
        .strip_prefix("/hooks/")
        .ok_or("must start with /hooks/")?;
    if rest.is_empty() {
        return Err("needs a name after /hooks/".into());
    }
    if path.len() > 256 {
        return Err("must be at most 256 characters".into());
    }
    if let Some(c) = rest
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '~')))
    {
        return Err(format!(
            "invalid character {c:?}: use letters, digits, '-', '_', '.', '~' and '/'"
        ));
    }
    if rest
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err("must not contain empty, '.' or '..' segments".into());
    }
    Ok(())
}

fn output(v: &Value, p: &str) -> R<Output> {
    let m = object(v, p)?;
    let kind = req_str(m, p, "type")?;
    let f = |k: &str| format!("{p}.{k}");
    let on = match m.get("on") {
        None | Some(Value::Null) => vec![OnStatus::Succeeded, OnStatus::Failed],
        Some(_) => {
            let list = str_list(m.get("on"), &f("on"), false)?;
            let mut on = Vec::new();
            for (i, s) in list.iter().enumerate() {
                let st = match s.as_str() {
                    "succeeded" => OnStatus::Succeeded,
                    "failed" => OnStatus::Failed,
                    o => {
                        return err(
                            &format!("{p}.on[{i}]"),
                            format!("unknown status \"{o}\": expected succeeded or failed"),
                        )
                    }
                };
                if !on.contains(&st) {
                    on.push(st);
                }
            }
            on
        }
    };
    let target = match kind.as_str() {
        "log" | "stdout" => {
            check_keys(m, p, &["type", "on"], &[])?;
            if kind == "log" {
                Target::Log
            } else {
                Target::Stdout
            }
        }
        "file" => {
            check_keys(m, p, &["type", "on", "path", "append"], &[])?;
            let path = req_str(m, p, "path")?;
            if !(path.starts_with('/') || path == "~" || path.starts_with("~/")) {
                return err(&f("path"), "must be an absolute path (or start with ~/)");
            }
            Target::File {
                path,
                append: opt_bool(m, p, "append")?.unwrap_or(true),
            }
        }
        "slack" => {
            check_keys(
                m,
                p,
                &["type", "on", "channel", "token_env", "webhook_url_env", "api_url"],
                &[],
            )?;
            let channel = opt_str(m, p, "channel")?.filter(|c| !c.is_empty());
            let token_env = env_name(m, p, "token_env")?;
            let webhook_url_env = env_name(m, p, "webhook_url_env")?;
            match (&token_env, &webhook_url_env) {
                (None, None) => {
                    return err(
                        &f("token_env"),
                        "slack needs token_env (a bot token) or webhook_url_env (an incoming webhook)",
                    )
                }
                (Some(_), Some(_)) => {
                    return err(
                        &f("webhook_url_env"),
                        "give token_env or webhook_url_env, not both",
                    )
                }
                (Some(_), None) if channel.is_none() => {
                    return err(&f("channel"), "is required with token_env")
                }
                _ => {}
            }
            Target::Slack {
                channel,
                token_env,
                webhook_url_env,
                api_url: url(m, p, "api_url")?.unwrap_or_else(|| "https://slack.com/api".into()),
            }
        }
        "webhook" => {
            check_keys(
                m,
                p,
                &["type", "on", "url", "hmac_secret_env", "headers"],
                &[],
            )?;
            let url = url(m, p, "url")?.ok_or_else(|| missing(&f("url")))?;
            let headers = string_map(m.get("headers"), &f("headers"))?;
            for k in headers.keys() {
                if k.is_empty() || !k.bytes().all(is_header_name_byte) {
                    return err(&format!("{p}.headers.{k}"), "not a valid HTTP header name");
                }
            }
            Target::Webhook {
                url,
                hmac_secret_env: env_name(m, p, "hmac_secret_env")?,
                headers,
            }
        }
        "email" => {
            check_keys(
                m,
                p,
                &["type", "on", "to", "from", "smtp_env_prefix"],
                &[],
            )?;
            let to = match m.get("to") {
                Some(Value::String(s)) => vec![s.clone()],
                Some(_) => str_list(m.get("to"), &f("to"), false)?,
                None => return err(&f("to"), "is required"),
            };
            for (i, a) in to.iter().enumerate() {
                if !looks_like_address(a) {
                    return err(
                        &format!("{p}.to[{i}]"),
                        format!("\"{a}\" is not an email address"),
                    );
                }
            }
            let from = opt_str(m, p, "from")?;
            if let Some(a) = &from {
                if !looks_like_address(a) {
                    return err(&f("from"), format!("\"{a}\" is not an email address"));
                }
            }
            let smtp_env_prefix = opt_str(m, p, "smtp_env_prefix")?.unwrap_or_else(|| "SMTP_".into());
            if !is_env_name(&format!("{smtp_env_prefix}HOST")) {
                return err(
                    &f("smtp_env_prefix"),
                    "must be a prefix of environment variable names (letters, digits, _)",
                );
            }
            Target::Email {
                to,
                from,
                smtp_env_prefix,
            }
        }
        "github_comment" => {
            check_keys(
                m,
                p,
                &["type", "on", "repo", "issue", "token_env", "api_url"],
                &[],
            )?;
            let repo = req_str(m, p, "repo")?;
            let ok = repo.split('/').count() == 2
                && repo.split('/').all(|s| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                });
            if !ok {
                return err(&f("repo"), "must be owner/name");
            }
            let issue = match m.get("issue") {
                Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => n.to_string(),
                Some(Value::String(s)) if s.contains("{{") => s.clone(),
                Some(Value::String(s)) if s.parse::<u64>().is_ok_and(|n| n > 0) => s.clone(),
                Some(Value::String(s)) => {
                    return err(
                        &f("issue"),
                        format!("\"{s}\" is neither an issue number nor a {{{{template}}}}"),
                    )
                }
                None | Some(Value::Null) => return err(&f("issue"), "is required"),
                Some(other) => {
                    return err(
                        &f("issue"),
                        expected("a positive issue number or a template string", other),
                    )
                }
            };
            Target::GithubComment {
                repo,
                issue,
                token_env: env_name(m, p, "token_env")?
                    .ok_or_else(|| missing(&f("token_env")))?,
                api_url: url(m, p, "api_url")?
                    .unwrap_or_else(|| "https://api.github.com".into()),
            }
        }
        other => {
            return err(
                &f("type"),
                format!(
                    "unknown output type \"{other}\": expected log, stdout, file, slack, webhook, email or github_comment"
                ),
            )
        }
    };
    Ok(Output { target, on })
}

// ---- small typed accessors; each error names the full field path ----

fn path_of(p: &str, k: &str) -> String {
    if p.is_empty() {
        k.to_string()
    } else {
        format!("{p}.{k}")
    }
}

fn missing(field: &str) -> FieldError {
    FieldError {
        field: field.into(),
        error: "is required".into(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn expected(what: &str, got: &Value) -> String {
    format!("expected {what}, got {}", type_name(got))
}

fn object<'a>(v: &'a Value, p: &str) -> R<&'a Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        other => err(p, expected("a JSON object", other)),
    }
}

fn check_keys(m: &Map<String, Value>, p: &str, known: &[&str], ignored: &[&str]) -> R<()> {
    for k in m.keys() {
        if !known.contains(&k.as_str()) && !ignored.contains(&k.as_str()) {
            return err(
                &path_of(p, k),
                format!("unknown field; expected one of: {}", known.join(", ")),
            );
        }
    }
    Ok(())
}

fn opt_str(m: &Map<String, Value>, p: &str, k: &str) -> R<Option<String>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => err(&path_of(p, k), expected("a string", other)),
    }
}

fn req_str(m: &Map<String, Value>, p: &str, k: &str) -> R<String> {
    opt_str(m, p, k)?.ok_or_else(|| missing(&path_of(p, k)))
}

fn opt_bool(m: &Map<String, Value>, p: &str, k: &str) -> R<Option<bool>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => err(&path_of(p, k), expected("true or false", other)),
    }
}

fn opt_uint(m: &Map<String, Value>, p: &str, k: &str, min: u64, max: u64) -> R<Option<u64>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(x) if (min..=max).contains(&x) => Ok(Some(x)),
            _ => err(
                &path_of(p, k),
                format!("must be a whole number from {min} to {max}, got {n}"),
            ),
        },
        Some(other) => err(&path_of(p, k), expected("a whole number", other)),
    }
}

fn opt_num(m: &Map<String, Value>, p: &str, k: &str, min: f64, max: f64) -> R<Option<f64>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if x >= min && x <= max => Ok(Some(x)),
            _ => err(
                &path_of(p, k),
                format!("must be a number from {min} to {max}, got {n}"),
            ),
        },
        Some(other) => err(&path_of(p, k), expected("a number", other)),
    }
}

fn str_list(v: Option<&Value>, field: &str, allow_empty: bool) -> R<Vec<String>> {
    match v {
        Some(Value::Array(a)) => {
            if a.is_empty() && !allow_empty {
                return err(field, "must not be empty");
            }
            a.iter()
                .enumerate()
                .map(|(i, s)| match s {
                    Value::String(s) if !s.is_empty() => Ok(s.clone()),
                    Value::String(_) => err(&format!("{field}[{i}]"), "must not be empty"),
                    other => err(&format!("{field}[{i}]"), expected("a string", other)),
                })
                .collect()
        }
        None | Some(Value::Null) => err(field, "is required"),
        Some(other) => err(field, expected("an array of strings", other)),
    }
}

fn string_map(v: Option<&Value>, field: &str) -> R<BTreeMap<String, String>> {
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => err(&format!("{field}.{k}"), expected("a string", other)),
            })
            .collect(),
        Some(other) => err(field, expected("an object of strings", other)),
    }
}

fn env_name(m: &Map<String, Value>, p: &str, k: &str) -> R<Option<String>> {
    match opt_str(m, p, k)? {
        None => Ok(None),
        Some(s) if is_env_name(&s) => Ok(Some(s)),
        Some(s) => err(
            &path_of(p, k),
            format!("\"{s}\" is not an environment variable name: give the variable's NAME (letters, digits, _), never the secret itself"),
        ),
    }
}

fn url(m: &Map<String, Value>, p: &str, k: &str) -> R<Option<String>> {
    match opt_str(m, p, k)? {
        None => Ok(None),
        Some(s) => {
            let rest = s
                .strip_prefix("https://")
                .or_else(|| s.strip_prefix("http://"));
            match rest {
                Some(r)
                    if !r.is_empty() && !r.starts_with('/') && !s.contains(char::is_whitespace) =>
                {
                    Ok(Some(s))
                }
                _ => err(
                    &path_of(p, k),
                    format!("\"{s}\" is not an http:// or https:// URL"),
                ),
            }
        }
    }
}

/// Checks that `p` is absolute; `~` and `~/...` are expanded with `$HOME`.
fn abs_path(p: &str, field: &str) -> R<String> {
    let expanded = expand_tilde(p);
    if expanded.is_empty() || !std::path::Path::new(&expanded).is_absolute() {
        return err(field, format!("\"{p}\" must be an absolute path"));
    }
    if expanded.contains('\0') {
        return err(field, "must not contain NUL");
    }
    Ok(expanded)
}

/// Expands a leading `~` or `~/` with `$HOME`; anything else is returned unchanged.
pub fn expand_tilde(p: &str) -> String {
    if p == "~" || p.starts_with("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return format!("{}{}", home.to_string_lossy(), &p[1..]);
        }
    }
    p.to_string()
}

fn is_env_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn looks_like_address(a: &str) -> bool {
    let addr = match (a.find('<'), a.rfind('>')) {
        (Some(l), Some(r)) if l < r => &a[l + 1..r],
        _ => a,
    };
    match addr.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !addr.contains(char::is_whitespace)
                && !domain.contains('@')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(j: Value) -> R<Job> {
        validate_job(&j, "job_000000000001", "2026-01-01T00:00:00Z")
    }

    fn base() -> Value {
        json!({"name": "a", "prompt": "p", "triggers": [{"type": "interval", "seconds": 5}]})
    }

    fn with(mut b: Value, k: &str, val: Value) -> Value {
        b[k] = val;
        b
    }

    fn field_of(j: Value) -> String {
        v(j).unwrap_err().field
    }

    #[test]
    fn minimal_job_gets_defaults() {
        let j = v(base()).unwrap();
        assert_eq!(j.overlap, Overlap::Queue);
        assert_eq!(j.history, 100);
        assert_eq!(j.limits.timeout_seconds, Some(3600));
        assert_eq!(j.outputs.len(), 1);
        assert_eq!(j.outputs[0].target, Target::Log);
        assert!(j.enabled);
    }

    #[test]
    fn names() {
        assert!(validate_name("ok.name_-1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("é").is_err());
        assert_eq!(field_of(with(base(), "name", json!("a/b"))), "name");
        assert_eq!(field_of(with(base(), "name", json!(5))), "name");
    }

    #[test]
    fn field_paths() {
        assert_eq!(field_of(with(base(), "bogus", json!(1))), "bogus");
        assert_eq!(field_of(with(base(), "prompt", json!(""))), "prompt");
        assert_eq!(
            field_of(with(
                base(),
                "triggers",
                json!([{"type": "cron", "cron": "61 * * * *"}])
            )),
            "triggers[0].cron"
        );
        let e = v(with(
            base(),
            "triggers",
            json!([{"type": "cron", "cron": "61 * * * *"}]),
        ))
        .unwrap_err();
        assert!(
            e.error
                .starts_with("invalid cron expression \"61 * * * *\": "),
            "{}",
            e.error
        );
        assert_eq!(
            field_of(with(
                base(),
                "triggers",
                json!([{"type": "interval", "seconds": 1}, {"type": "cron", "cron": "* * * * *", "timezone": "Mars/Base"}])
            )),
            "triggers[1].timezone"
        );
        assert_eq!(
            field_of(with(base(), "triggers", json!([{"type": "nope"}]))),
            "triggers[0].type"
        );
        assert_eq!(field_of(with(base(), "triggers", json!([]))), "triggers");
        assert_eq!(
            field_of(with(
                base(),
                "triggers",
                json!([{"type": "interval", "seconds": 0}])
            )),
            "triggers[0].seconds"
        );
        assert_eq!(
            field_of(with(
                base(),
                "triggers",
                json!([{"type": "interval", "seconds": "5"}])
            )),
            "triggers[0].seconds"
        );
        assert_eq!(
            field_of(with(
                base(),
                "triggers",
                json!([{"type": "interval", "seconds": 5, "x": 1}])
            )),
            "triggers[0].x"
        );
        assert_eq!(
            field_of(with(
                base(),
                "triggers",
                json!([{"type": "file_change", "patterns": ["src/[a"], "root": "/tmp"}])
            )),
            "triggers[0].patterns[0]"
        );
        assert_eq!(
            field_of(with(
                base(),
                "triggers",
                json!([{"type": "webhook", "path": "/x", "secret_env": "S"}])
            )),
            "triggers[0].path"
        );
        assert_eq!(
            field_of(with(
                base(),
                "triggers",
                json!([{"type": "git_push", "repo": "relative/repo"}])
            )),
            "triggers[0].repo"
        );
        assert_eq!(
            field_of(with(base(), "outputs", json!([{"type": "file"}]))),
            "outputs[0].path"
        );
        assert_eq!(
            field_of(with(
                base(),
                "outputs",
                json!([{"type": "log", "on": ["maybe"]}])
            )),
            "outputs[0].on[0]"
        );
        assert_eq!(
            field_of(with(
                base(),
                "outputs",
                json!([{"type": "slack", "channel": "#x", "token_env": "xoxb-secret-value"}])
            )),
            "outputs[0].token_env"
        );
        assert_eq!(
            field_of(with(base(), "limits", json!({"timeout_seconds": -1}))),
            "limits.timeout_seconds"
        );
        assert_eq!(
            field_of(with(base(), "limits", json!({"memory": 5}))),
            "limits.memory"
        );
        assert_eq!(
            field_of(with(base(), "overlap", json!("sometimes"))),
            "overlap"
        );
        assert_eq!(
            field_of(with(base(), "agent", json!({"command": []}))),
            "agent.command"
        );
        assert_eq!(
            field_of(with(base(), "agent", json!({"command": ["x", 1]}))),
            "agent.command[1]"
        );
        assert_eq!(
            field_of(with(base(), "working_dir", json!("rel"))),
            "working_dir"
        );
        assert_eq!(field_of(with(base(), "env", json!({"A": 1}))), "env.A");
        assert_eq!(field_of(with(base(), "env", json!({"1A": "x"}))), "env.1A");
        assert_eq!(field_of(json!([1])), "");
    }

    #[test]
    fn all_types_accepted() {
        let j = with(
            with(
                base(),
                "triggers",
                json!([
                    {"type": "cron", "cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"},
                    {"type": "interval", "seconds": 60},
                    {"type": "file_change", "patterns": ["src/**/*.rs"], "root": "/tmp"},
                    {"type": "webhook", "path": "/hooks/deploy", "secret_env": "HOOK_SECRET"},
                    {"type": "git_push", "repo": "/srv/repo.git", "branch": "feature/*"}
                ]),
            ),
            "outputs",
            json!([
                {"type": "log"}, {"type": "stdout", "on": ["failed"]},
                {"type": "file", "path": "~/out.txt"},
                {"type": "slack", "channel": "#ops", "token_env": "SLACK_TOKEN"},
                {"type": "webhook", "url": "https://example.com/x", "hmac_secret_env": "WH", "headers": {"X-A": "b"}},
                {"type": "email", "to": "a@example.com"},
                {"type": "github_comment", "repo": "o/r", "issue": "{{payload.pull_request.number}}", "token_env": "GH"}
            ]),
        );
        let job = v(j).unwrap();
        assert_eq!(job.triggers.len(), 5);
        assert_eq!(job.outputs.len(), 7);
        assert!(job.warnings().is_empty(), "{:?}", job.warnings());
    }

    #[test]
    fn read_only_fields_are_ignored() {
        let j = with(
            with(base(), "id", json!("job_x")),
            "next_fire_at",
            json!(null),
        );
        assert_eq!(v(j).unwrap().id, "job_000000000001");
    }

    #[test]
    fn round_trip_through_serialization() {
        let job = v(with(
            base(),
            "outputs",
            json!([{"type": "file", "path": "/tmp/x", "append": false, "on": ["failed"]}]),
        ))
        .unwrap();
        let s = serde_json::to_value(&job).unwrap();
        let again = validate_job(&s, &job.id, &job.created_at).unwrap();
        assert_eq!(job, again);
    }
}
