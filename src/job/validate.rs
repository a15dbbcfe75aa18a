//! Turns user JSON (an API body, a merged PATCH, a file on disk) into a [`Job`], or into a
//! [`FieldError`] naming the exact field path, e.g. `triggers[0].cron`.
//!
//! Two steps. Serde reads the shape into the derived input types of `super::input` (an
//! unknown field or a wrong type is reported with its full path there). Then the checks
//! serde cannot express, here: ranges, cron expressions and zones, globs, absolute paths,
//! the webhook path prefix, NUL bytes, environment variable names, URLs and e-mail
//! addresses parsed exactly as delivery parses them (`url::Url` as ureq does, lettre's
//! `Mailbox`), and the defaults. [`validate_job`] is the only place a `Job` is constructed.

use serde_json::{Map, Number, Value};

pub use super::input::FieldError;
use super::input::{
    err, expected, from_value, tagged, AgentIn, ExpectIn, JobIn, LimitsIn, Obj, TargetIn,
    TriggerIn, R,
};
use super::model::*;
use crate::schedule::zone::Zone;
use crate::schedule::Schedule;

/// Largest accepted `max_output_kb` (64 MiB): captured output is held in memory.
pub const MAX_OUTPUT_KB_LIMIT: u64 = 65536;

// ---- the checks ----

/// Validates `v` as a job. `id` and `created_at` are the daemon's (new or existing); any
/// read-only fields in `v` are ignored.
pub fn validate_job(v: &Value, id: &str, created_at: &str) -> R<Job> {
    let Obj(j) = from_value::<Obj<JobIn>>(v, "", &[])?;

    let name = required(j.name, "name")?;
    validate_name(&name)?;
    let prompt = required(j.prompt, "prompt")?;
    if prompt.trim().is_empty() {
        return err("prompt", "must not be empty");
    }
    no_nul(&prompt, "prompt")?;
    let agent = j.agent.map(|Obj(a)| agent(a)).transpose()?;
    let model = j.model.unwrap_or_default();
    no_nul(&model, "model")?;
    let working_dir = j
        .working_dir
        .map(|p| abs_path(&p, "working_dir"))
        .transpose()?;
    let env = j.env.unwrap_or_default();
    for (k, val) in &env {
        if !is_env_name(k) {
            return err(
                &format!("env.{k}"),
                "environment variable names are letters, digits and _ and do not start with a digit",
            );
        }
        no_nul(val, &format!("env.{k}"))?;
    }

    let triggers = match j.triggers {
        Some(a) if !a.is_empty() => a
            .iter()
            .enumerate()
            .map(|(i, t)| trigger(t, &format!("triggers[{i}]"), working_dir.as_deref()))
            .collect::<R<Vec<_>>>()?,
        _ => return err("triggers", "at least one trigger is required"),
    };
    let outputs = match j.outputs {
        None => vec![Output {
            target: Target::Log,
            on: vec![OnStatus::Succeeded, OnStatus::Failed],
        }],
        Some(a) => a
            .iter()
            .enumerate()
            .map(|(i, o)| output(o, &format!("outputs[{i}]")))
            .collect::<R<Vec<_>>>()?,
    };
    let limits = match j.limits {
        Some(Obj(l)) => limits(l)?,
        None => Limits::default(),
    };
    // A job whose every trigger runs it in a fresh checkout needs no working_dir: the
    // checkout is where it may write.
    let all_checkouts = !triggers.is_empty()
        && triggers
            .iter()
            .all(|t| matches!(t, Trigger::GitPush { checkout: true, .. }));
    if limits.filesystem == Filesystem::WorkingDir && working_dir.is_none() && !all_checkouts {
        return err(
            "limits.filesystem",
            "\"working_dir\" confines the agent's writes to the job's working_dir: set working_dir (or give every trigger a fresh checkout)",
        );
    }
    let max_retries = uint(j.max_retries, "max_retries", 0, 100)?.unwrap_or(0) as u32;
    let retry_backoff_seconds = num(
        j.retry_backoff_seconds,
        "retry_backoff_seconds",
        0.0,
        86400.0,
    )?
    .unwrap_or(2.0);
    let history = uint(j.history, "history", 1, 100_000)?.unwrap_or(100) as u32;
    let expect = j.expect.map(|Obj(e)| expect(e, &triggers)).transpose()?;
    if expect.is_none() {
        if let Some(i) = outputs
            .iter()
            .position(|o| o.on.contains(&OnStatus::Missed))
        {
            return err(
                &format!("outputs[{i}].on"),
                "\"missed\" is told when the job's dead-man's switch goes off: set expect (e.g. {\"within_seconds\": 86400})",
            );
        }
    }

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
        overlap: j.overlap.unwrap_or(Overlap::Queue),
        max_retries,
        retry_backoff_seconds,
        catch_up: j.catch_up.unwrap_or(false),
        history,
        enabled: j.enabled.unwrap_or(true),
        created_at: created_at.to_string(),
        expect,
    })
}

/// `expect`: `{"within_seconds": N}` or, for a job with a cron trigger, `{"after_slot": S}`.
fn expect(e: ExpectIn, triggers: &[Trigger]) -> R<Expect> {
    const YEAR: u64 = 366 * 86400;
    match (e.within_seconds, e.after_slot) {
        (Some(n), None) => Ok(Expect::WithinSeconds(
            uint(Some(n), "expect.within_seconds", 1, YEAR)?.unwrap_or(1),
        )),
        (None, Some(s)) => {
            let s = uint(Some(s), "expect.after_slot", 0, YEAR)?.unwrap_or(0);
            if !triggers.iter().any(|t| matches!(t, Trigger::Cron { .. })) {
                return err(
                    "expect.after_slot",
                    "counts from each cron slot, and this job has no cron trigger: use within_seconds",
                );
            }
            Ok(Expect::AfterSlot(s))
        }
        _ => err(
            "expect",
            "give exactly one of within_seconds (a successful run at least every N seconds) or after_slot (within S seconds after each cron slot)",
        ),
    }
}

/// Checks a job name: `[A-Za-z0-9._-]{1,64}`; the error names the field `name`.
pub fn validate_name(name: &str) -> R<()> {
    if name.is_empty() || name.len() > 64 {
        return err(
            "name",
            format!(
                "must be 1 to 64 characters long (got {})",
                name.chars().count()
            ),
        );
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return err(
            "name",
            format!("invalid character {c:?}: names use only letters, digits, '.', '_' and '-'"),
        );
    }
    if name == "." || name == ".." {
        return err("name", "must not be \".\" or \"..\"");
    }
    Ok(())
}

fn agent(a: AgentIn) -> R<Agent> {
    let command = match a.command {
        None => return err("agent.command", "is required"),
        Some(c) if c.is_empty() => return err("agent.command", "must name a program"),
        Some(c) => c,
    };
    for (i, s) in command.iter().enumerate() {
        no_nul(s, &format!("agent.command[{i}]"))?;
    }
    if command.first().is_some_and(|c| c.trim().is_empty()) {
        return err("agent.command[0]", "the program name must not be empty");
    }
    no_prompt_through_cmd(&command)?;
    let env_allow = a.env_allow.unwrap_or_default();
    for (i, n) in env_allow.iter().enumerate() {
        if !is_env_name(n) {
            return err(
                &format!("agent.env_allow[{i}]"),
                format!("\"{n}\" is not an environment variable name (letters, digits, _)"),
            );
        }
    }
    Ok(Agent {
        command,
        prompt_via: a.prompt_via.unwrap_or(PromptVia::Arg),
        inherit_env: a.inherit_env.unwrap_or(true),
        env_allow,
    })
}

/// Refuses `{prompt}` in an argument after `cmd` (any path, any case, `.exe` or not) or a
/// `.bat`/`.cmd` program ([`prompt_through_cmd`]).
fn no_prompt_through_cmd(command: &[String]) -> R<()> {
    match prompt_through_cmd(command) {
        Some((i, why)) => err(&format!("agent.command[{i}]"), why),
        None => Ok(()),
    }
}

/// The index of the first argument holding `{prompt}` after `cmd` (any path, any case,
/// `.exe` or not) or a `.bat`/`.cmd` program, and why that is refused: cmd.exe parses its
/// command line again, so `&`, `|`, `%VAR%` and quotes in a payload would run as commands
/// whatever the quoting. Checked on every platform (job files and `config.json`'s
/// `default_agent` move between machines).
pub fn prompt_through_cmd(command: &[String]) -> Option<(usize, String)> {
    let is_cmd = |a: &str| {
        let name = a
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or(a)
            .to_ascii_lowercase();
        let stem = name.split_once('.').map_or(name.as_str(), |(s, _)| s);
        stem == "cmd" || name.ends_with(".bat") || name.ends_with(".cmd")
    };
    let shell = command.iter().position(|a| is_cmd(a))?;
    let i = command
        .iter()
        .skip(shell + 1)
        .position(|a| a.contains("{prompt}"))?;
    Some((
        shell + 1 + i,
        format!(
            "{{prompt}} is an argument of {:?}, which cmd.exe parses again: a payload holding `&`, `|`, `%` or quotes would run as commands; give the prompt on stdin (\"prompt_via\": \"stdin\") or as a file ({{prompt_file}})",
            command[shell]
        ),
    ))
}

fn limits(l: LimitsIn) -> R<Limits> {
    let d = Limits::default();
    const MONTH: u64 = 30 * 86400;
    Ok(Limits {
        timeout_seconds: match l.timeout_seconds {
            None => d.timeout_seconds,
            Some(n) => uint(n, "limits.timeout_seconds", 1, MONTH)?,
        },
        cpu_seconds: uint(l.cpu_seconds, "limits.cpu_seconds", 1, MONTH)?,
        memory_mb: uint(l.memory_mb, "limits.memory_mb", 1, 1 << 30)?,
        max_processes: uint(l.max_processes, "limits.max_processes", 1, 1 << 22)?,
        max_output_kb: uint(
            l.max_output_kb,
            "limits.max_output_kb",
            1,
            MAX_OUTPUT_KB_LIMIT,
        )?
        .unwrap_or(d.max_output_kb),
        filesystem: l.filesystem.unwrap_or_default(),
        // Run budgets; the engine keeps one start time per counted run, so these bound its
        // memory too.
        max_runs_per_hour: uint(l.max_runs_per_hour, "limits.max_runs_per_hour", 1, 10_000)?,
        max_runs_per_day: uint(l.max_runs_per_day, "limits.max_runs_per_day", 1, 100_000)?,
    })
}

fn trigger(v: &Value, p: &str, working_dir: Option<&str>) -> R<Trigger> {
    let f = |k: &str| format!("{p}.{k}");
    Ok(
        match tagged::<TriggerIn>(object(v, p)?, p, "trigger", &["type"])? {
            TriggerIn::Cron {
                cron,
                timezone,
                dialect,
            } => {
                let cron = required(cron, &f("cron"))?;
                let dialect = dialect.unwrap_or_default();
                if let Err(e) = Schedule::parse(&cron, dialect) {
                    return err(&f("cron"), format!("invalid cron expression {cron:?}: {e}"));
                }
                let timezone = timezone.filter(|s| !s.is_empty());
                if let Err(e) = Zone::parse(timezone.as_deref()) {
                    return err(&f("timezone"), e.to_string());
                }
                Trigger::Cron {
                    cron,
                    timezone,
                    dialect,
                }
            }
            TriggerIn::Interval { seconds } => Trigger::Interval {
                seconds: required(
                    uint(seconds, &f("seconds"), 1, 10 * 366 * 86400)?,
                    &f("seconds"),
                )?,
            },
            TriggerIn::FileChange {
                patterns,
                root,
                debounce_seconds,
                node,
            } => {
                if let Some(n) = &node {
                    if !valid_node_name(n) {
                        return err(&f("node"), "must be a cluster node's name: 1 to 64 letters, digits, '.', '_' or '-'");
                    }
                }
                let patterns = strings(patterns, &f("patterns"))?;
                for (i, pat) in patterns.iter().enumerate() {
                    check_pattern(pat, &format!("{p}.patterns[{i}]"))?;
                }
                let root = match root {
                    Some(r) => Some(abs_path(&r, &f("root"))?),
                    None if working_dir.is_none() => {
                        return err(&f("root"), "is required when the job has no working_dir")
                    }
                    None => None,
                };
                Trigger::FileChange {
                    patterns,
                    root,
                    debounce_seconds: num(debounce_seconds, &f("debounce_seconds"), 0.0, 3600.0)?
                        .unwrap_or(5.0),
                    node,
                }
            }
            TriggerIn::Webhook {
                path,
                secret_env,
                max_age_seconds,
                scheme,
                events,
                rule,
            } => {
                let path = required(path, &f("path"))?;
                validate_hook_path(&path, &f("path"))?;
                let filter = crate::triggers::filter::Filter::parse(events, rule.as_ref())
                    .or_else(|e| err(&f(&e.field), e.error))?;
                Trigger::Webhook {
                    path,
                    secret_env: required(
                        env_name(secret_env, &f("secret_env"))?,
                        &f("secret_env"),
                    )?,
                    max_age_seconds: {
                        let m = uint(max_age_seconds, &f("max_age_seconds"), 1, 7 * 86400)?;
                        if m.is_some() && scheme == Some(crate::triggers::scheme::Scheme::Gitlab) {
                            return err(
                                &f("max_age_seconds"),
                                "GitLab sends no timestamp to check: remove max_age_seconds, or sign with scheme \"github\"",
                            );
                        }
                        m
                    },
                    scheme,
                    filter,
                }
            }
            TriggerIn::GitPush {
                repo,
                branch,
                checkout,
                keep_checkout_on_failure,
            } => {
                let repo = abs_path(&required(repo, &f("repo"))?, &f("repo"))?;
                let branch = branch.unwrap_or_else(|| "*".into());
                if branch.is_empty() {
                    return err(
                        &f("branch"),
                        "must not be empty (use \"*\" for every branch)",
                    );
                }
                if let Err(e) = crate::triggers::glob::validate(&branch) {
                    return err(&f("branch"), format!("invalid glob {branch:?}: {e}"));
                }
                let checkout = checkout.unwrap_or(false);
                let keep_checkout_on_failure = keep_checkout_on_failure.unwrap_or(false);
                if keep_checkout_on_failure && !checkout {
                    return err(
                        &f("keep_checkout_on_failure"),
                        "needs \"checkout\": true (there is no checkout to keep otherwise)",
                    );
                }
                Trigger::GitPush {
                    repo,
                    branch,
                    checkout,
                    keep_checkout_on_failure,
                }
            }
        },
    )
}

/// A cluster node's name (`run --node`, a file_change trigger's `node`): 1 to 64 letters,
/// digits, '.', '_' or '-'.
pub fn valid_node_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A `file_change` pattern: relative to the root, and a glob the watcher can compile.
fn check_pattern(pat: &str, field: &str) -> R<()> {
    if pat.starts_with('/') {
        return err(
            field,
            "patterns are relative to root; remove the leading '/'",
        );
    }
    if let Err(e) = crate::triggers::glob::validate(pat) {
        return err(field, format!("invalid glob {pat:?}: {e}"));
    }
    Ok(())
}

/// Checks a webhook trigger's `path` (the field `field`).
fn validate_hook_path(path: &str, field: &str) -> R<()> {
    let Some(rest) = path.strip_prefix("/hooks/") else {
        return err(field, "must start with /hooks/");
    };
    if rest.is_empty() {
        return err(field, "needs a name after /hooks/");
    }
    if path.len() > 256 {
        return err(field, "must be at most 256 characters");
    }
    if let Some(c) = rest
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '~')))
    {
        return err(
            field,
            format!("invalid character {c:?}: use letters, digits, '-', '_', '.', '~' and '/'"),
        );
    }
    if rest
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return err(field, "must not contain empty, '.' or '..' segments");
    }
    Ok(())
}

fn output(v: &Value, p: &str) -> R<Output> {
    let f = |k: &str| format!("{p}.{k}");
    let mut m = object(v, p)?;
    let on = match m.remove("on") {
        None | Some(Value::Null) => vec![OnStatus::Succeeded, OnStatus::Failed],
        Some(list) => {
            let list: Vec<OnStatus> = from_value(&list, &f("on"), &[])?;
            if list.is_empty() {
                return err(&f("on"), "must not be empty");
            }
            let mut on = Vec::new();
            for st in list {
                if !on.contains(&st) {
                    on.push(st);
                }
            }
            on
        }
    };
    let target = match tagged::<TargetIn>(m, p, "output", &["type", "on"])? {
        TargetIn::Log {} => Target::Log,
        TargetIn::Stdout {} => Target::Stdout,
        TargetIn::File { path, append } => {
            let path = required(path, &f("path"))?;
            if !(path.starts_with('/') || path == "~" || path.starts_with("~/")) {
                return err(&f("path"), "must be an absolute path (or start with ~/)");
            }
            Target::File {
                path,
                append: append.unwrap_or(true),
            }
        }
        TargetIn::Slack {
            channel,
            token_env,
            webhook_url_env,
            api_url,
        } => {
            let channel = channel.filter(|c| !c.is_empty());
            let token_env = env_name(token_env, &f("token_env"))?;
            let webhook_url_env = env_name(webhook_url_env, &f("webhook_url_env"))?;
            match (&token_env, &webhook_url_env) {
                (None, None) => return err(
                    &f("token_env"),
                    "slack needs token_env (a bot token) or webhook_url_env (an incoming webhook)",
                ),
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
                api_url: api_base(api_url, &f("api_url"), "https://slack.com/api")?,
            }
        }
        TargetIn::Webhook {
            url,
            hmac_secret_env,
            headers,
        } => {
            let url = required(url, &f("url"))?;
            http_url(&url, &f("url"), UrlUse::Endpoint)?;
            let headers = headers.unwrap_or_default();
            for (k, val) in &headers {
                let field = format!("{p}.headers.{k}");
                if k.is_empty() || !k.bytes().all(is_header_name_byte) {
                    return err(&field, "not a valid HTTP header name");
                }
                if !val.bytes().all(is_header_value_byte) {
                    return err(
                        &field,
                        "not a valid HTTP header value: printable ASCII, spaces and tabs only",
                    );
                }
            }
            Target::Webhook {
                url,
                hmac_secret_env: env_name(hmac_secret_env, &f("hmac_secret_env"))?,
                headers,
            }
        }
        TargetIn::Email {
            to,
            from,
            smtp_env_prefix,
        } => {
            let to = match to {
                Some(Value::String(s)) => vec![s],
                other => strings(
                    other
                        .map(|v| from_value::<Vec<String>>(&v, &f("to"), &[]))
                        .transpose()?,
                    &f("to"),
                )?,
            };
            for (i, a) in to.iter().enumerate() {
                mailbox(a, &format!("{p}.to[{i}]"))?;
            }
            if let Some(a) = &from {
                mailbox(a, &f("from"))?;
            }
            let smtp_env_prefix = smtp_env_prefix.unwrap_or_else(|| "SMTP_".into());
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
        TargetIn::GithubComment {
            repo,
            issue,
            token_env,
            api_url,
        } => {
            let repo = required(repo, &f("repo"))?;
            let ok = repo.split('/').count() == 2
                && repo.split('/').all(|s| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                });
            if !ok {
                return err(&f("repo"), "must be owner/name");
            }
            let issue = match issue {
                Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => n.to_string(),
                Some(Value::String(s)) if s.contains("{{") => s,
                Some(Value::String(s)) if s.parse::<u64>().is_ok_and(|n| n > 0) => s,
                Some(Value::String(s)) => {
                    return err(
                        &f("issue"),
                        format!("\"{s}\" is neither an issue number nor a {{{{template}}}}"),
                    )
                }
                None => return err(&f("issue"), "is required"),
                Some(other) => {
                    return err(
                        &f("issue"),
                        expected("a positive issue number or a template string", &other),
                    )
                }
            };
            Target::GithubComment {
                repo,
                issue,
                token_env: required(env_name(token_env, &f("token_env"))?, &f("token_env"))?,
                api_url: api_base(api_url, &f("api_url"), "https://api.github.com")?,
            }
        }
    };
    Ok(Output { target, on })
}

// ---- URLs and addresses, read as delivery reads them ----

/// How delivery uses a URL.
#[derive(Clone, Copy, PartialEq)]
enum UrlUse {
    /// Posted to as given (webhook `url`); `user:password@` in it becomes Basic
    /// authentication, as ureq sends it.
    Endpoint,
    /// A base that delivery appends API paths to (`api_url`), sent with the token named by
    /// `token_env`: credentials, a query or a fragment would be ignored or misplaced.
    ApiBase,
}

/// Checks `s` as ureq will read it when delivering: `url::Url::parse`, a host, and http or
/// https (ureq refuses any other scheme). The URL is not quoted back: it may hold a secret.
fn http_url(s: &str, field: &str, usage: UrlUse) -> R<()> {
    let u = match url::Url::parse(s) {
        Ok(u) => u,
        Err(e) => {
            return err(
                field,
                format!("not a valid URL ({e}): give an http:// or https:// URL"),
            )
        }
    };
    if !matches!(u.scheme(), "http" | "https") {
        return err(
            field,
            format!(
                "scheme \"{}\" cannot be delivered to: give an http:// or https:// URL",
                u.scheme()
            ),
        );
    }
    if u.host_str().is_none_or(str::is_empty) {
        return err(field, "has no host: give an http:// or https:// URL");
    }
    if usage == UrlUse::ApiBase {
        if !u.username().is_empty() || u.password().is_some() {
            return err(
                field,
                "must not contain credentials (user:password@): requests are authenticated with the token named by token_env",
            );
        }
        if u.query().is_some() || u.fragment().is_some() {
            return err(
                field,
                "must not have a query (?) or fragment (#): API paths are appended to it",
            );
        }
    }
    Ok(())
}

/// An `api_url`, or `default` when absent.
fn api_base(v: Option<String>, field: &str, default: &str) -> R<String> {
    match v {
        Some(s) => http_url(&s, field, UrlUse::ApiBase).map(|()| s),
        None => Ok(default.into()),
    }
}

/// Checks `a` as the email output will parse it: lettre's `Mailbox`
/// (`a@example.com` or `Name <a@example.com>`).
fn mailbox(a: &str, field: &str) -> R<()> {
    match a.parse::<lettre::message::Mailbox>() {
        Ok(_) => Ok(()),
        Err(e) => err(
            field,
            format!(
                "\"{a}\" is not an email address ({}): give a@example.com or Name <a@example.com>",
                e.to_string().to_lowercase()
            ),
        ),
    }
}

// ---- small helpers; each error names the full field path ----

fn required<T>(v: Option<T>, field: &str) -> R<T> {
    v.ok_or_else(|| FieldError {
        field: field.into(),
        error: "is required".into(),
    })
}

fn object(v: &Value, p: &str) -> R<Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m.clone()),
        other => err(p, expected("a JSON object", other)),
    }
}

/// A required, non-empty list of non-empty strings.
fn strings(v: Option<Vec<String>>, field: &str) -> R<Vec<String>> {
    let v = required(v, field)?;
    if v.is_empty() {
        return err(field, "must not be empty");
    }
    if let Some(i) = v.iter().position(String::is_empty) {
        return err(&format!("{field}[{i}]"), "must not be empty");
    }
    Ok(v)
}

fn uint(n: Option<Number>, field: &str, min: u64, max: u64) -> R<Option<u64>> {
    match n {
        None => Ok(None),
        Some(n) => match n.as_u64() {
            Some(x) if (min..=max).contains(&x) => Ok(Some(x)),
            _ => err(
                field,
                format!("must be a whole number from {min} to {max}, got {n}"),
            ),
        },
    }
}

fn num(n: Option<Number>, field: &str, min: f64, max: f64) -> R<Option<f64>> {
    match n {
        None => Ok(None),
        Some(n) => match n.as_f64() {
            Some(x) if x >= min && x <= max => Ok(Some(x)),
            _ => err(
                field,
                format!("must be a number from {min} to {max}, got {n}"),
            ),
        },
    }
}

/// A `*_env` field: the NAME of a variable holding a secret, never the secret.
fn env_name(v: Option<String>, field: &str) -> R<Option<String>> {
    match v {
        Some(s) if !is_env_name(&s) => err(
            field,
            format!("\"{s}\" is not an environment variable name: give the variable's NAME (letters, digits, _), never the secret itself"),
        ),
        v => Ok(v),
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

/// A NUL byte cannot reach a program (argv and the environment are C strings): refused
/// here rather than failing every run.
fn no_nul(s: &str, field: &str) -> R<()> {
    if s.contains('\0') {
        return err(
            field,
            "must not contain a NUL byte (\\u0000): it cannot be passed to a program",
        );
    }
    Ok(())
}

fn is_env_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// RFC 9110 token characters, as ureq checks a header name before sending.
fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Visible ASCII, space and tab: what ureq accepts in a header value before sending.
fn is_header_value_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | 0x21..=0x7e)
}

/// Everything worth telling the user when a job is saved: [`Job::warnings`] plus things
/// the job says that it probably does not mean (the prompt never reaches the agent, a
/// template written with one brace). The API returns these in `warnings`; the CLI prints them.
pub fn save_warnings(job: &Job) -> Vec<String> {
    let mut w = job.warnings();
    if let Some(a) = &job.agent {
        let has = |needle: &str| a.command.iter().any(|s| s.contains(needle));
        for (i, s) in a.command.iter().enumerate() {
            if s.contains("{{prompt}}") {
                w.push(format!(
                    "agent.command[{i}]: {{{{prompt}}}} is not a placeholder here: the agent command takes {{prompt}} (one brace); {{{{...}}}} is for templates in the prompt"
                ));
            }
        }
        match a.prompt_via {
            PromptVia::Arg if !has("{prompt}") => w.push(
                "agent.command: has no {prompt} and agent.prompt_via is \"arg\": the agent never sees the prompt; put {prompt} where the prompt goes, or give it on stdin (prompt_via \"stdin\", --prompt-stdin)".into(),
            ),
            PromptVia::Stdin if has("{prompt}") => w.push(
                "agent.command: has {prompt} and agent.prompt_via is \"stdin\": the agent gets the prompt twice, in its arguments and on stdin; drop one".into(),
            ),
            _ => {}
        }
    }
    if let Some(day) = job
        .limits
        .max_runs_per_day
        .filter(|d| *d > u64::from(job.history))
    {
        w.push(format!(
            "limits.max_runs_per_day: {day} is above history ({}): after a restart only the {} newest run records count against the budget; raise history to at least {day}",
            job.history, job.history
        ));
    }
    for name in single_brace_names(&job.prompt) {
        w.push(format!(
            "prompt: {{{name}}} is left as it is: template variables take two braces, {{{{{name}}}}}"
        ));
    }
    w
}

/// Names written `{name}` (one brace on each side, not part of `{{name}}`) in a prompt.
fn single_brace_names(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'{' && (i == 0 || b[i - 1] != b'{') && b.get(i + 1) != Some(&b'{') {
            let start = i + 1;
            let mut j = start;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'.') {
                j += 1;
            }
            if j > start
                && b.get(j) == Some(&b'}')
                && b.get(j + 1) != Some(&b'}')
                && b[start].is_ascii_alphabetic()
            {
                let name = text[start..j].to_string();
                if !out.contains(&name) {
                    out.push(name);
                }
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::input::READ_ONLY;
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
    fn prompt_through_cmd_is_refused() {
        let field = |cmd: Value| field_of(with(base(), "agent", json!({"command": cmd})));
        for cmd in [
            json!(["cmd", "/c", "claude", "-p", "{prompt}"]),
            json!([
                "C:\\Windows\\System32\\CMD.EXE",
                "/c",
                "claude",
                "-p",
                "{prompt}"
            ]),
            json!(["cmd.exe", "/c", "claude", "-p", "x{prompt}y"]),
            json!(["run.bat", "a", "b", "c", "{prompt}"]),
            json!(["D:/tools/Agent.CMD", "a", "b", "c", "{prompt}"]),
            json!(["env", "cmd", "/c", "x", "{prompt}"]),
        ] {
            let f = field(cmd.clone());
            assert!(f == "agent.command[4]", "{cmd}: {f}");
        }
        let mut j = with(
            base(),
            "agent",
            json!({"command": ["cmd", "/c", "a", "b", "{prompt}"]}),
        );
        let e = v(j.clone()).unwrap_err().to_string();
        assert!(
            e.contains("prompt_via") && e.contains("{prompt_file}"),
            "{e}"
        );
        // What remains possible: the prompt on stdin or as a file, and {prompt} elsewhere.
        j["agent"] = json!({"command": ["cmd", "/c", "agent", "{prompt_file}"]});
        assert!(v(j.clone()).is_ok());
        j["agent"] = json!({"command": ["cmd", "/c", "agent"], "prompt_via": "stdin"});
        assert!(v(j.clone()).is_ok());
        for ok in [
            json!(["claude", "-p", "{prompt}"]),
            json!(["cmdline-tool", "{prompt}"]),
            json!(["/usr/bin/bash.cmdx", "{prompt}"]),
            json!(["{prompt}", "cmd"]),
        ] {
            j["agent"] = json!({"command": ok.clone()});
            assert!(v(j.clone()).is_ok(), "{ok}");
        }
    }

    #[test]
    fn containment_fields() {
        let mut j = base();
        j["prompt"] = json!("a\u{0}b");
        assert_eq!(field_of(j), "prompt");
        assert_eq!(
            field_of(with(base(), "agent", json!({"command": ["x", "a\u{0}"]}))),
            "agent.command[1]"
        );
        assert_eq!(
            field_of(with(base(), "env", json!({"A": "\u{0}"}))),
            "env.A"
        );
        assert_eq!(
            field_of(with(
                base(),
                "agent",
                json!({"command": ["x"], "env_allow": ["OK", "not ok"]})
            )),
            "agent.env_allow[1]"
        );
        assert_eq!(
            field_of(with(
                base(),
                "agent",
                json!({"command": ["x"], "inherit_env": "no"})
            )),
            "agent.inherit_env"
        );
        assert_eq!(
            field_of(with(base(), "limits", json!({"filesystem": "working_dir"}))),
            "limits.filesystem"
        );
        assert_eq!(
            field_of(with(base(), "limits", json!({"filesystem": "some"}))),
            "limits.filesystem"
        );
        let mut j = with(base(), "limits", json!({"filesystem": "working_dir"}));
        j["working_dir"] = json!("/tmp");
        j["agent"] =
            json!({"command": ["x"], "inherit_env": false, "env_allow": ["OPENAI_API_KEY"]});
        let job = v(j).unwrap();
        assert_eq!(job.limits.filesystem, Filesystem::WorkingDir);
        let a = job.agent.clone().unwrap();
        assert!(!a.inherit_env);
        assert_eq!(a.env_allow, ["OPENAI_API_KEY"]);
        let s = serde_json::to_value(&job).unwrap();
        assert_eq!(s["limits"]["filesystem"], "working_dir");
        assert_eq!(validate_job(&s, &job.id, &job.created_at).unwrap(), job);
        // Defaults stay out of the stored form.
        let plain = serde_json::to_value(v(base()).unwrap()).unwrap();
        assert!(plain["limits"].get("filesystem").is_none());
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
    #[test]
    fn save_warnings_catch_prompts_that_go_nowhere() {
        let agent = |cmd: Value, via: &str| {
            let mut b = with(base(), "agent", json!({"command": cmd, "prompt_via": via}));
            b["prompt"] = json!("at {{fired_at}}");
            save_warnings(&v(b).unwrap())
        };
        assert!(agent(json!(["x", "{prompt}"]), "arg").is_empty());
        assert!(agent(json!(["x"]), "stdin").is_empty());
        let w = agent(json!(["x"]), "arg");
        assert!(
            w.len() == 1 && w[0].starts_with("agent.command: has no {prompt}"),
            "{w:?}"
        );
        let w = agent(json!(["x", "{{prompt}}"]), "arg");
        assert!(w[0].starts_with("agent.command[1]: {{prompt}}"), "{w:?}");
        let w = agent(json!(["x", "{prompt}"]), "stdin");
        assert!(w.len() == 1 && w[0].contains("twice"), "{w:?}");
        let w = save_warnings(
            &v(with(
                base(),
                "prompt",
                json!("at {fired_at} and {{job_name}} {x y} {}"),
            ))
            .unwrap(),
        );
        assert_eq!(w, ["prompt: {fired_at} is left as it is: template variables take two braces, {{fired_at}}"]);
        assert!(save_warnings(&v(base()).unwrap()).is_empty());
    }

    fn out(o: Value) -> Value {
        with(base(), "outputs", json!([o]))
    }

    fn err_of(j: Value) -> FieldError {
        v(j).unwrap_err()
    }

    #[test]
    fn urls_are_read_as_delivery_reads_them() {
        let hook = |u: &str| out(json!({"type": "webhook", "url": u}));
        for bad in [
            "http://h:99999/x",
            "ftp://h/x",
            "h/x",
            "/x",
            "https://",
            "http://exa mple.com/",
            "mailto:a@example.com",
            "",
        ] {
            let e = err_of(hook(bad));
            assert_eq!(e.field, "outputs[0].url", "{bad}: {e}");
            assert!(e.error.contains("http://"), "{bad}: {e}");
        }
        assert!(err_of(hook("http://h:99999/x"))
            .error
            .contains("invalid port number"));
        for good in [
            "http://h:65535/x",
            "https://example.com",
            "https://u:secret@example.com/x?token=1#f",
            "http://[::1]:8080/hook",
        ] {
            assert!(v(hook(good)).is_ok(), "{good}");
        }
        // A URL is never quoted back: it may hold a secret.
        let e = err_of(hook("http://u:s3cret@h:99999/x"));
        assert!(!e.error.contains("s3cret"), "{e}");

        // api_url: a base for API paths, sent with token_env's token.
        let slack = |u: &str| {
            out(json!({"type": "slack", "channel": "#a", "token_env": "T", "api_url": u}))
        };
        let gh = |u: &str| {
            out(
                json!({"type": "github_comment", "repo": "o/r", "issue": 1, "token_env": "T", "api_url": u}),
            )
        };
        for bad in [
            "https://u:p@h/api",
            "https://u@h/api",
            "https://h/api?x=1",
            "https://h/api#f",
            "https://h:70000/api",
            "file:///api",
        ] {
            assert_eq!(field_of(slack(bad)), "outputs[0].api_url", "{bad}");
            assert_eq!(field_of(gh(bad)), "outputs[0].api_url", "{bad}");
        }
        assert!(err_of(slack("https://u:p@h/api"))
            .error
            .contains("credentials"));
        let j = v(gh("http://127.0.0.1:9/api/")).unwrap();
        assert!(
            matches!(&j.outputs[0].target, Target::GithubComment { api_url, .. } if api_url == "http://127.0.0.1:9/api/")
        );
        let j = v(out(json!({"type": "slack", "webhook_url_env": "W"}))).unwrap();
        assert!(
            matches!(&j.outputs[0].target, Target::Slack { api_url, .. } if api_url == "https://slack.com/api")
        );
    }

    #[test]
    fn email_addresses_are_read_as_lettre_reads_them() {
        let mail = |to: Value| out(json!({"type": "email", "to": to}));
        for good in [
            json!("a@example.com"),
            json!(["ops@example.com", "Dev Team <dev@example.com>"]),
            json!("a@localhost"),
        ] {
            assert!(v(mail(good.clone())).is_ok(), "{good}");
        }
        for bad in ["x@", "@x", "a b@example.com", "<a@example.com", "plain", ""] {
            let e = err_of(mail(json!(["ok@example.com", bad])));
            assert_eq!(e.field, "outputs[0].to[1]", "{bad}: {e}");
            if !bad.is_empty() {
                assert!(e.error.contains("is not an email address"), "{bad}: {e}");
            }
        }
        assert_eq!(field_of(mail(json!("nope"))), "outputs[0].to[0]");
        assert_eq!(field_of(mail(json!([]))), "outputs[0].to");
        assert_eq!(field_of(mail(json!(5))), "outputs[0].to");
        assert_eq!(
            field_of(mail(json!(["a@example.com", 5]))),
            "outputs[0].to[1]"
        );
        assert_eq!(
            field_of(out(
                json!({"type": "email", "to": "a@example.com", "from": "bog at example.com"})
            )),
            "outputs[0].from"
        );
        // Each address given is one the email output can send to.
        for a in ["a@example.com", "Dev Team <dev@example.com>", "a@localhost"] {
            assert!(a.parse::<lettre::message::Mailbox>().is_ok(), "{a}");
        }
    }

    #[test]
    fn unknown_fields_are_refused_at_every_level() {
        let trig = |t: Value| with(base(), "triggers", json!([t]));
        let cases = [
            (with(base(), "bogus", json!(1)), "bogus"),
            (
                with(base(), "agent", json!({"command": ["x"], "cmd": 1})),
                "agent.cmd",
            ),
            (
                with(base(), "limits", json!({"memory": 5})),
                "limits.memory",
            ),
            (
                trig(json!({"type": "cron", "cron": "* * * * *", "tz": "UTC"})),
                "triggers[0].tz",
            ),
            (
                trig(json!({"type": "interval", "seconds": 5, "x": 1})),
                "triggers[0].x",
            ),
            (
                trig(json!({"type": "file_change", "patterns": ["a"], "root": "/tmp", "glob": 1})),
                "triggers[0].glob",
            ),
            (
                trig(
                    json!({"type": "webhook", "path": "/hooks/a", "secret_env": "S", "secret": "x"}),
                ),
                "triggers[0].secret",
            ),
            (
                trig(json!({"type": "git_push", "repo": "/r", "ref": "x"})),
                "triggers[0].ref",
            ),
            (
                out(json!({"type": "log", "level": "info"})),
                "outputs[0].level",
            ),
            (out(json!({"type": "stdout", "x": 1})), "outputs[0].x"),
            (
                out(json!({"type": "file", "path": "/tmp/x", "mode": 1})),
                "outputs[0].mode",
            ),
            (
                out(json!({"type": "slack", "webhook_url_env": "W", "token": "x"})),
                "outputs[0].token",
            ),
            (
                out(json!({"type": "webhook", "url": "https://h/x", "secret": "x"})),
                "outputs[0].secret",
            ),
            (
                out(json!({"type": "email", "to": "a@example.com", "cc": "b@example.com"})),
                "outputs[0].cc",
            ),
            (
                out(
                    json!({"type": "github_comment", "repo": "o/r", "issue": 1, "token_env": "T", "token": "x"}),
                ),
                "outputs[0].token",
            ),
        ];
        for (j, field) in cases {
            let e = err_of(j);
            assert_eq!(e.field, field, "{e}");
            assert!(
                e.error.starts_with("unknown field; expected one of: "),
                "{e}"
            );
        }
        // The list names what the object takes, read-only fields and all common ones aside.
        assert_eq!(
            err_of(trig(json!({"type": "interval", "seconds": 5, "x": 1}))).error,
            "unknown field; expected one of: type, seconds"
        );
        assert_eq!(
            err_of(out(json!({"type": "log", "x": 1}))).error,
            "unknown field; expected one of: type, on"
        );
        assert!(!err_of(with(base(), "bogus", json!(1)))
            .error
            .contains("next_fire_at"));
    }

    #[test]
    fn wrong_types_name_the_field_and_what_is_expected() {
        let cases = [
            (json!([1]), "", "expected a JSON object, got an array"),
            (with(base(), "name", json!(5)), "name", "expected a string, got a number"),
            (with(base(), "enabled", json!("yes")), "enabled", "expected true or false, got a string"),
            (with(base(), "env", json!([])), "env", "expected an object, got an array"),
            (with(base(), "env", json!({"A": null})), "env.A", "expected a string, got null"),
            (with(base(), "triggers", json!({})), "triggers", "expected an array, got an object"),
            (with(base(), "triggers", json!([5])), "triggers[0]", "expected a JSON object, got a number"),
            (with(base(), "triggers", json!([{"type": 5}])), "triggers[0].type", "expected a string, got a number"),
            (with(base(), "triggers", json!([{"seconds": 5}])), "triggers[0].type", "is required"),
            (
                with(base(), "triggers", json!([{"type": "interval", "seconds": "5"}])),
                "triggers[0].seconds",
                "expected a number, got a string",
            ),
            (with(base(), "overlap", json!(5)), "overlap", "expected a string, got a number"),
            (
                with(base(), "overlap", json!("sometimes")),
                "overlap",
                "unknown value \"sometimes\": expected queue, skip or parallel",
            ),
            (
                out(json!({"type": "log", "on": ["maybe"]})),
                "outputs[0].on[0]",
                "unknown value \"maybe\": expected succeeded, failed or missed",
            ),
            (
                with(base(), "triggers", json!([{"type": "sundial"}])),
                "triggers[0].type",
                "unknown trigger type \"sundial\": expected cron, interval, file_change, webhook or git_push",
            ),
            (
                out(json!({"type": "fax"})),
                "outputs[0].type",
                "unknown output type \"fax\": expected log, stdout, file, slack, webhook, email or github_comment",
            ),
            // A struct is an object, never the array of its fields in order.
            (with(base(), "agent", json!([["sh"]])), "agent", "expected a JSON object, got an array"),
            (with(base(), "limits", json!([1])), "limits", "expected a JSON object, got an array"),
            (
                with(base(), "limits", json!({"timeout_seconds": 1.5})),
                "limits.timeout_seconds",
                "must be a whole number from 1 to 2592000, got 1.5",
            ),
        ];
        for (j, field, error) in cases {
            let e = err_of(j);
            assert_eq!((e.field.as_str(), e.error.as_str()), (field, error));
        }
    }

    #[test]
    fn null_is_absent_and_a_null_timeout_is_no_timeout() {
        let j = v(with(base(), "limits", json!({"timeout_seconds": null}))).unwrap();
        assert_eq!(j.limits.timeout_seconds, None);
        let j = v(with(base(), "limits", json!({"cpu_seconds": null}))).unwrap();
        assert_eq!(j.limits.timeout_seconds, Some(3600));
        let mut nulls = base();
        for k in [
            "agent",
            "model",
            "working_dir",
            "env",
            "outputs",
            "limits",
            "overlap",
        ] {
            nulls[k] = Value::Null;
        }
        for k in [
            "max_retries",
            "retry_backoff_seconds",
            "catch_up",
            "history",
            "enabled",
        ] {
            nulls[k] = Value::Null;
        }
        assert_eq!(v(nulls).unwrap(), v(base()).unwrap());
        for k in READ_ONLY {
            assert!(v(with(base(), k, json!({"any": ["thing"]}))).is_ok(), "{k}");
        }
    }

    #[test]
    fn header_values_are_ones_ureq_sends() {
        let h = |k: &str, val: &str| {
            out(json!({"type": "webhook", "url": "https://h/x", "headers": {k: val}}))
        };
        assert!(v(h("X-A", "b c\td")).is_ok());
        assert_eq!(field_of(h("X-A", "é")), "outputs[0].headers.X-A");
        assert_eq!(field_of(h("X-A", "a\r\nX-B: c")), "outputs[0].headers.X-A");
        assert_eq!(field_of(h("X A", "b")), "outputs[0].headers.X A");
    }
}
