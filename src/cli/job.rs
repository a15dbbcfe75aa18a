//! `job …` and `token`. `job add` writes the job file itself (the daemon need not run; a
//! running one picks the file up at once). The other commands use the API when a daemon
//! runs on the data dir, and the files directly when none does; `job run` needs the daemon.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Map, Value};

use super::client::{running_daemon, Client};
use super::duration;
use crate::job::{validate_job, Job};
use crate::store::{self, Store};

/// Flags of `job add` (and, with the meaning "change this", of `job set`). Trigger and
/// output flags add to what `-f` gives. Durations take units: `90`, `5m`, `1h30m`, `500ms`.
#[derive(Args, Debug, Default)]
pub struct AddArgs {
    /// Job name (unique; letters, digits, '.', '_', '-')
    #[arg(long)]
    pub name: Option<String>,
    /// Prompt given to the agent ({{job_name}}, {{fired_at}}, ... are filled in)
    #[arg(long)]
    pub prompt: Option<String>,
    /// Cron trigger: 5-field crontab (or 6 with leading seconds, or @daily ...)
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// IANA time zone of --cron (default local)
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,
    /// Dialect of --cron: vixie (crontab, default) or quartz (seconds first, optional year)
    #[arg(long, value_name = "DIALECT", value_parser = ["vixie", "quartz"])]
    pub dialect: Option<String>,
    /// Interval trigger: every DURATION (90, 5m, 1h30m; a plain number is seconds)
    #[arg(long, value_name = "DURATION", value_parser = duration::whole_seconds)]
    pub interval: Option<u64>,
    /// file_change trigger: glob relative to --root (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub watch: Vec<String>,
    /// Root directory of --watch (default the working dir)
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Quiet time before a file_change trigger fires (default 5s; 500ms, 2s ...)
    #[arg(long, value_name = "DURATION", value_parser = duration::seconds)]
    pub debounce: Option<f64>,
    /// webhook trigger: path under /hooks/
    #[arg(long, value_name = "PATH")]
    pub webhook: Option<String>,
    /// Environment variable holding the webhook secret (default BOG_WEBHOOK_SECRET)
    #[arg(long, value_name = "VAR")]
    pub secret_env: Option<String>,
    /// Webhook requests must carry an X-Bog-Timestamp at most this old (replay window)
    #[arg(long, value_name = "DURATION", value_parser = duration::whole_seconds)]
    pub max_age: Option<u64>,
    /// How the webhook sender signs: github, gitlab, standard, slack or stripe (default:
    /// GitHub's signature or GitLab's token)
    #[arg(long, value_name = "SCHEME")]
    pub scheme: Option<String>,
    /// Webhook filter: run only for this event, EVENT or EVENT.ACTION (repeatable; e.g.
    /// pull_request.opened)
    #[arg(long = "event", value_name = "EVENT")]
    pub events: Vec<String>,
    /// Webhook filter: PATH=VALUE, or PATH~=REGEX, on the payload (header.X-Name for a
    /// header); repeatable, all must hold
    #[arg(long = "match", value_name = "RULE")]
    pub matches: Vec<String>,
    /// git_push trigger: path of the repository
    #[arg(long, value_name = "R")]
    pub git_repo: Option<PathBuf>,
    /// Branch glob of --git-repo (default *)
    #[arg(long, value_name = "GLOB")]
    pub branch: Option<String>,
    /// git_push trigger: run the agent in a fresh git worktree at the pushed commit,
    /// removed after the run
    #[arg(long)]
    pub checkout: bool,
    /// git_push trigger with --checkout: keep the worktree when the run fails
    #[arg(long)]
    pub keep_checkout_on_failure: bool,
    /// Output: log, stdout, file:PATH, slack:#channel, slack-webhook:VAR, webhook:URL,
    /// email:ADDR, github_comment:owner/repo#123 (repeatable; default log)
    #[arg(long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Deliver the --output outputs only for runs that end this way: succeeded or failed;
    /// missed: the dead-man's switch notice (needs --expect-within/--expect-after-slot);
    /// several comma-separated (failed,missed)
    #[arg(long = "on", value_name = "STATUS")]
    pub on: Option<String>,
    /// File outputs overwrite the file with each result instead of appending to it
    #[arg(long)]
    pub no_append: bool,
    /// Environment variable holding the token of slack:#channel and github_comment outputs
    /// (default SLACK_BOT_TOKEN, GITHUB_TOKEN)
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    /// API base URL of slack and github_comment outputs (e.g. GitHub Enterprise's
    /// https://ghe.example.com/api/v3)
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,
    /// Prefix of the SMTP_HOST, SMTP_PORT, ... variables of email outputs (default SMTP_)
    #[arg(long, value_name = "PREFIX")]
    pub smtp_env_prefix: Option<String>,
    /// HTTP header of webhook outputs, NAME=VALUE (repeatable)
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Environment variable holding the HMAC secret that signs webhook outputs
    #[arg(long, value_name = "VAR")]
    pub hmac_secret_env: Option<String>,
    /// From: address of email outputs
    #[arg(long, value_name = "ADDR")]
    pub email_from: Option<String>,
    /// Agent command line, split as a POSIX shell would; {prompt} is replaced
    #[arg(long, value_name = "CMD")]
    pub agent: Option<String>,
    /// Give the prompt on the agent's stdin instead of in {prompt}
    #[arg(long)]
    pub prompt_stdin: bool,
    /// Start the agent from a clean environment (PATH HOME LANG USER TERM, --env and
    /// --env-allow) instead of the daemon's; needs --agent
    #[arg(long)]
    pub no_inherit_env: bool,
    /// A daemon variable the agent gets even with --no-inherit-env (repeatable); needs --agent
    #[arg(long, value_name = "NAME")]
    pub env_allow: Vec<String>,
    /// Model name (BOG_MODEL; -M for the default agent)
    #[arg(long)]
    pub model: Option<String>,
    /// Working directory of the agent (default the current directory)
    #[arg(long, value_name = "DIR")]
    pub working_dir: Option<PathBuf>,
    /// Extra environment variable for the agent, NAME=VALUE (repeatable; not for secrets)
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Kill the agent after DURATION (default 1h; 90, 30m, 1h30m)
    #[arg(long, value_name = "DURATION", value_parser = duration::whole_seconds)]
    pub timeout: Option<u64>,
    /// RLIMIT_CPU of the agent (seconds of CPU time; 90, 10m)
    #[arg(long, value_name = "DURATION", value_parser = duration::whole_seconds)]
    pub cpu_seconds: Option<u64>,
    /// Memory limit of a run in MiB (its cgroup, else RLIMIT_DATA)
    #[arg(long, value_name = "MB")]
    pub memory_mb: Option<u64>,
    /// Process limit of a run (its cgroup, else RLIMIT_NPROC of its user)
    #[arg(long, value_name = "N")]
    pub max_processes: Option<u64>,
    /// Where the agent may write: full, or working_dir (Landlock)
    #[arg(long, value_name = "MODE")]
    pub filesystem: Option<String>,
    /// Keep at most this many KiB of output (default 1024)
    #[arg(long, value_name = "KB")]
    pub max_output_kb: Option<u64>,
    /// What a firing does while a run is active: queue, skip or parallel
    #[arg(long, value_name = "POLICY")]
    pub overlap: Option<String>,
    /// Retries of a failed run
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,
    /// First retry delay (doubles each time; default 2s)
    #[arg(long, value_name = "DURATION", value_parser = duration::seconds)]
    pub retry_backoff: Option<f64>,
    /// Runs started per hour at most; later firings are skipped (run budget)
    #[arg(long, value_name = "N")]
    pub max_runs_per_hour: Option<u64>,
    /// Runs started per day at most; later firings are skipped (run budget)
    #[arg(long, value_name = "N")]
    pub max_runs_per_day: Option<u64>,
    /// Dead-man's switch: tell the `--on missed` outputs when no run has succeeded for
    /// DURATION (1h, 1d)
    #[arg(long, value_name = "DURATION", value_parser = duration::whole_seconds,
          conflicts_with = "expect_after_slot")]
    pub expect_within: Option<u64>,
    /// Dead-man's switch of a cron job: a run must succeed within DURATION after each slot
    #[arg(long, value_name = "DURATION", value_parser = duration::whole_seconds)]
    pub expect_after_slot: Option<u64>,
    /// Fire once at start-up for a cron slot missed while the daemon was down
    #[arg(long)]
    pub catch_up: bool,
    /// Run records kept (default 100)
    #[arg(long, value_name = "N")]
    pub history: Option<u32>,
    /// Add the job disabled
    #[arg(long)]
    pub disabled: bool,
    /// Job JSON file ("-" for stdin); flags are applied on top
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Print the job as saved (JSON) instead of a summary
    #[arg(long)]
    pub json: bool,
}

/// `token`: prints the API token, creating the data dir and token if needed; with `--etcd`,
/// the cluster's (created in etcd if missing).
pub fn token(dir_flag: Option<&Path>, a: &super::TokenArgs) -> i32 {
    if let Some(urls) = &a.etcd {
        let r = crate::cluster::Options::new(urls, Some("cli"), a.etcd_prefix.as_deref())
            .and_then(|o| crate::cluster::token(o).map_err(|e| e.to_string()));
        return match r {
            Ok(t) => {
                println!("{t}");
                0
            }
            Err(e) => fail(1, &e),
        };
    }
    let r = store::resolve_data_dir(dir_flag).and_then(|d| Store::open(&d)?.ensure_token());
    match r {
        Ok((t, _)) => {
            println!("{t}");
            0
        }
        Err(e) => fail(1, &e.to_string()),
    }
}

pub(super) fn fail(code: i32, msg: &str) -> i32 {
    eprintln!("error: {msg}");
    code
}

pub(super) type CmdResult = Result<i32, (i32, String)>;

/// Exit code 1 and the error's text (the CLI's edge: errors become text here).
pub(super) fn e1(msg: impl std::fmt::Display) -> (i32, String) {
    (1, msg.to_string())
}

/// Exit code 2 (bad usage or input) and the error's text.
pub(super) fn e2(msg: impl std::fmt::Display) -> (i32, String) {
    (2, msg.to_string())
}

/// Maps an API error answer to an exit code and message.
pub(super) fn api_error(status: u16, body: &Value) -> (i32, String) {
    let msg = body
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("unexpected answer")
        .to_string();
    let msg = match body.get("field").and_then(Value::as_str) {
        Some(f) if !f.is_empty() => format!("{f}: {msg}"),
        _ => msg,
    };
    if status == 400 {
        (2, msg)
    } else {
        (1, format!("{msg} (HTTP {status})"))
    }
}

/// Which flag set which field: `("triggers[1]", "--cron")`, `("limits.timeout_seconds",
/// "--timeout")`. Errors about a field a flag set name the flag, not the JSON path.
pub(super) type Origins = Vec<(String, String)>;

/// The flag that set `field` (the longest recorded prefix of it), if any.
pub(super) fn flag_of<'a>(field: &str, origins: &'a Origins) -> Option<&'a str> {
    origins
        .iter()
        .filter(|(p, _)| {
            field == p
                || field
                    .strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('.') || r.starts_with('['))
        })
        .max_by_key(|(p, _)| p.len())
        .map(|(_, f)| f.as_str())
}

/// What the job format's errors tell a JSON writer to do, and the same advice in flags.
const FLAG_ADVICE: &[(&str, &str)] = &[
    ("use within_seconds", "use --expect-within DURATION"),
    ("needs \"checkout\": true", "needs --checkout"),
    (
        "the token named by token_env",
        "the token named by --token-env",
    ),
    (
        "set expect (e.g. {\"within_seconds\": 86400})",
        "add --expect-within DURATION (or --expect-after-slot DURATION for a cron job)",
    ),
];

/// A validation error, worded for the command line.
pub(super) fn field_message(field: &str, error: &str, origins: &Origins) -> String {
    match flag_of(field, origins) {
        Some(flag) => {
            let error = FLAG_ADVICE
                .iter()
                .fold(error.to_string(), |e, (json, cli)| e.replace(json, cli));
            format!("{flag}: {error}")
        }
        None if field.is_empty() => error.to_string(),
        None => format!("{field}: {error}"),
    }
}

/// Reads `-f FILE` (or stdin for `-`) as a JSON object.
pub(super) fn read_json_file(p: &Path) -> Result<Value, (i32, String)> {
    let text = if p.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| e1(format!("cannot read stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(p)
            .map_err(|e| e2(format!("-f: cannot read {}: {e}", p.display())))?
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| e2(format!("-f: {} is not valid JSON: {e}", p.display())))?;
    if !v.is_object() {
        return Err(e2(format!("-f: {} must hold a JSON object", p.display())));
    }
    Ok(v)
}

pub(super) fn add(dir: &Path, a: &AddArgs) -> CmdResult {
    let mut v = match &a.file {
        None => json!({}),
        Some(p) => read_json_file(p)?,
    };
    let mut origins = Origins::new();
    let Value::Object(m) = &mut v else {
        return Err(e2("the job file must hold a JSON object"));
    };
    apply_scalars(m, a, true, &mut origins)?;
    let base = m
        .get("triggers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let triggers = new_triggers(a)?;
    let list = m.entry("triggers").or_insert_with(|| json!([]));
    if let Value::Array(list) = list {
        for (i, (t, flags)) in triggers.into_iter().enumerate() {
            record_trigger(&mut origins, base + i, &flags);
            list.push(t);
        }
    }
    if !a.outputs.is_empty() {
        let base = m
            .get("outputs")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let outs = outputs_from_flags(&a.outputs, "--output", a)?;
        let list = m.entry("outputs").or_insert_with(|| json!([]));
        if let Value::Array(list) = list {
            for (i, (o, flag)) in outs.into_iter().enumerate() {
                record_output(&mut origins, base + i, flag, a);
                list.push(o);
            }
        }
    } else {
        output_options_need_outputs(a)?;
    }
    if m.get("triggers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        return Err(e2(
            "a job needs a trigger: --cron, --interval, --watch, --webhook or --git-repo (or triggers in -f)",
        ));
    }

    let store = Store::open(dir).map_err(|e| e1(e.to_string()))?;
    if let Some(c) = client_if_running(dir)? {
        // Through the API: the answer comes once the daemon has the job, so a `job run`
        // right after cannot miss it.
        let (st, body) = c.call("POST", "/jobs", Some(&v)).map_err(e1)?;
        if st != 201 {
            return Err(save_error(st, &body, &origins));
        }
        return report_saved("added", &body, true, a.json);
    }
    let id = crate::ids::new_job_id().map_err(|e| e1(e.to_string()))?;
    let job = validate_job(&v, &id, &crate::time::now_rfc3339())
        .map_err(|fe| e2(field_message(&fe.field, &fe.error, &origins)))?;
    unique_name(&store, &job.name, &job.id)?;
    store.save_job(&job).map_err(|e| e1(e.to_string()))?;
    report_saved("added", &offline_view(&job), false, a.json)
}

/// Refuses `name` if a job file other than `id`'s uses it.
pub(super) fn unique_name(store: &Store, name: &str, id: &str) -> Result<(), (i32, String)> {
    for p in store.job_files() {
        if let Ok(other) = store.load_job_file(&p) {
            if other.name == name && other.id != id {
                return Err(e2(format!(
                    "--name: a job named \"{name}\" already exists ({})",
                    other.id
                )));
            }
        }
    }
    Ok(())
}

/// A job as `job show` prints it with the daemon stopped: the stored fields, the save
/// warnings, and the next cron time (interval times start with the daemon).
pub(super) fn offline_view(job: &Job) -> Value {
    let mut v = serde_json::to_value(job).unwrap_or(Value::Null);
    let mut cron_only = job.clone();
    cron_only
        .triggers
        .retain(|t| matches!(t, crate::job::Trigger::Cron { .. }));
    let now = chrono::Utc::now();
    let next = crate::plan::job_next_fire(&cron_only, now, now);
    v["next_fire_at"] = next
        .map(|t| Value::String(crate::time::rfc3339(t)))
        .unwrap_or(Value::Null);
    v["warnings"] = json!(crate::job::validate::save_warnings(job));
    v
}

/// An API answer to a save that failed, as an exit code and a message naming the flag.
pub(super) fn save_error(st: u16, body: &Value, origins: &Origins) -> (i32, String) {
    let msg = body["error"].as_str().unwrap_or("unexpected answer");
    let field = body["field"].as_str().unwrap_or("");
    match st {
        400 => e2(field_message(field, msg, origins)),
        409 if field == "name" => e2(format!("--name: {msg}")),
        _ => api_error(st, body),
    }
}

/// Prints what a save did: the job, its next run and its warnings.
pub(super) fn report_saved(verb: &str, job: &Value, online: bool, as_json: bool) -> CmdResult {
    if let Some(w) = job["warnings"].as_array() {
        for w in w.iter().filter_map(Value::as_str) {
            eprintln!("warning: {w}");
        }
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(job).unwrap_or_default());
        return Ok(0);
    }
    println!(
        "{verb} job {} ({})",
        job["name"].as_str().unwrap_or(""),
        job["id"].as_str().unwrap_or("")
    );
    let next = super::format::next_text(job, online);
    println!("next run: {next}");
    if !online && verb == "added" {
        println!("no daemon is running: start it with `bog-agents-daemon run` to schedule the job");
    }
    Ok(0)
}

/// Applies everything but trigger and output flags to `m`. `adding`: a new job, so the
/// working dir defaults to the current directory.
pub(super) fn apply_scalars(
    m: &mut Map<String, Value>,
    a: &AddArgs,
    adding: bool,
    origins: &mut Origins,
) -> Result<(), (i32, String)> {
    let mut set = |k: &str, v: Value, flag: &str| {
        m.insert(k.to_string(), v);
        origins.push((k.to_string(), flag.to_string()));
    };
    if let Some(n) = &a.name {
        set("name", json!(n), "--name");
    }
    if let Some(p) = &a.prompt {
        set("prompt", json!(p), "--prompt");
    }
    if let Some(x) = &a.model {
        set("model", json!(x), "--model");
    }
    if let Some(x) = &a.overlap {
        set("overlap", json!(x), "--overlap");
    }
    if let Some(x) = a.max_retries {
        set("max_retries", json!(x), "--max-retries");
    }
    if let Some(x) = a.retry_backoff {
        set("retry_backoff_seconds", json!(x), "--retry-backoff");
    }
    if let Some(x) = a.history {
        set("history", json!(x), "--history");
    }
    if a.catch_up {
        set("catch_up", json!(true), "--catch-up");
    }
    if a.disabled {
        set("enabled", json!(false), "--disabled");
    }
    if let Some(cmd) = &a.agent {
        let argv = super::shellwords::split(cmd).map_err(|e| e2(format!("--agent: {e}")))?;
        if argv.is_empty() {
            return Err(e2("--agent: the command is empty"));
        }
        let via = if a.prompt_stdin {
            "stdin"
        } else if adding {
            "arg"
        } else {
            m.get("agent")
                .and_then(|x| x["prompt_via"].as_str())
                .unwrap_or("arg")
        }
        .to_string();
        // A new command keeps the agent's other settings (inherit_env, env_allow).
        let agent = m.entry("agent").or_insert_with(|| json!({}));
        if !agent.is_object() {
            *agent = json!({});
        }
        agent["command"] = json!(argv);
        agent["prompt_via"] = json!(via);
        origins.push(("agent".into(), "--agent".into()));
    } else if a.prompt_stdin {
        match m.get_mut("agent") {
            Some(Value::Object(ag)) if !adding => {
                ag.insert("prompt_via".into(), json!("stdin"));
                origins.push(("agent.prompt_via".into(), "--prompt-stdin".into()));
            }
            _ => return Err(e2(
                "--prompt-stdin needs --agent (the default agent takes the prompt as an argument)",
            )),
        }
    }
    agent_env_flags(m, a, origins)?;
    if let Some(n) = a.expect_within {
        m.insert("expect".into(), json!({"within_seconds": n}));
        origins.push(("expect".into(), "--expect-within".into()));
    }
    if let Some(n) = a.expect_after_slot {
        m.insert("expect".into(), json!({"after_slot": n}));
        origins.push(("expect".into(), "--expect-after-slot".into()));
    }
    let wd = match &a.working_dir {
        Some(d) => Some(absolute(d)?),
        None if adding && !m.contains_key("working_dir") => Some(
            std::env::current_dir()
                .map_err(|e| e1(format!("cannot read the current directory: {e}")))?
                .display()
                .to_string(),
        ),
        None => None,
    };
    if let Some(wd) = wd {
        m.insert("working_dir".into(), json!(wd));
        if a.working_dir.is_some() {
            origins.push(("working_dir".into(), "--working-dir".into()));
        }
    }
    if !a.env.is_empty() {
        let env = m.entry("env").or_insert_with(|| json!({}));
        if env.is_null() {
            *env = json!({});
        }
        for kv in &a.env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| e2(format!("--env {kv:?}: expected NAME=VALUE")))?;
            if let Value::Object(e) = env {
                e.insert(k.to_string(), json!(v));
            }
            origins.push((format!("env.{k}"), format!("--env {kv}")));
        }
    }
    let limits = [
        ("timeout_seconds", a.timeout, "--timeout"),
        ("cpu_seconds", a.cpu_seconds, "--cpu-seconds"),
        ("memory_mb", a.memory_mb, "--memory-mb"),
        ("max_processes", a.max_processes, "--max-processes"),
        ("max_output_kb", a.max_output_kb, "--max-output-kb"),
        (
            "max_runs_per_hour",
            a.max_runs_per_hour,
            "--max-runs-per-hour",
        ),
        ("max_runs_per_day", a.max_runs_per_day, "--max-runs-per-day"),
    ];
    if limits.iter().any(|(_, v, _)| v.is_some()) || a.filesystem.is_some() {
        let l = m.entry("limits").or_insert_with(|| json!({}));
        if l.is_null() {
            *l = json!({});
        }
        if let Value::Object(l) = l {
            for (k, v, flag) in limits {
                if let Some(v) = v {
                    l.insert(k.into(), json!(v));
                    origins.push((format!("limits.{k}"), flag.into()));
                }
            }
            if let Some(f) = &a.filesystem {
                l.insert("filesystem".into(), json!(f));
                origins.push(("limits.filesystem".into(), "--filesystem".into()));
            }
        }
    }
    Ok(())
}

/// `--no-inherit-env` and `--env-allow`: settings of the agent object (given with
/// `--agent`, in `-f`, or already in the job `job set` changes).
fn agent_env_flags(
    m: &mut Map<String, Value>,
    a: &AddArgs,
    origins: &mut Origins,
) -> Result<(), (i32, String)> {
    if !a.no_inherit_env && a.env_allow.is_empty() {
        return Ok(());
    }
    let Some(Value::Object(ag)) = m.get_mut("agent") else {
        return Err(e2(
            "--no-inherit-env and --env-allow set up the environment of an agent given with --agent (the default agent always inherits the daemon's environment)",
        ));
    };
    if a.no_inherit_env {
        ag.insert("inherit_env".into(), json!(false));
        origins.push(("agent.inherit_env".into(), "--no-inherit-env".into()));
    }
    if !a.env_allow.is_empty() {
        ag.insert("env_allow".into(), json!(a.env_allow));
        origins.push(("agent.env_allow".into(), "--env-allow".into()));
    }
    Ok(())
}

/// Records which flags made trigger `i`, field by field.
pub(super) fn record_trigger(origins: &mut Origins, i: usize, flags: &[(&str, &str)]) {
    if let Some((_, first)) = flags.first() {
        origins.push((format!("triggers[{i}]"), first.to_string()));
    }
    for (field, flag) in flags {
        origins.push((format!("triggers[{i}].{field}"), flag.to_string()));
    }
}

/// A trigger built from flags, with the (field, flag) pairs that made it.
pub(super) type FlagTrigger = (Value, Vec<(&'static str, &'static str)>);

/// The triggers the flags of `job add` describe, each new.
pub(super) fn new_triggers(a: &AddArgs) -> Result<Vec<FlagTrigger>, (i32, String)> {
    let mut triggers = Vec::new();
    if let Some(c) = &a.cron {
        let mut t = json!({"type": "cron", "cron": c});
        let mut f = vec![("cron", "--cron")];
        if let Some(tz) = &a.timezone {
            t["timezone"] = json!(tz);
            f.push(("timezone", "--timezone"));
        }
        if let Some(d) = &a.dialect {
            t["dialect"] = json!(d);
            f.push(("dialect", "--dialect"));
        }
        triggers.push((t, f));
    } else if a.timezone.is_some() {
        return Err(e2("--timezone needs --cron"));
    } else if a.dialect.is_some() {
        return Err(e2("--dialect needs --cron"));
    }
    if let Some(s) = a.interval {
        triggers.push((
            json!({"type": "interval", "seconds": s}),
            vec![("seconds", "--interval")],
        ));
    }
    if !a.watch.is_empty() {
        let mut t = json!({"type": "file_change", "patterns": a.watch});
        let mut f = vec![("patterns", "--watch")];
        if let Some(r) = &a.root {
            t["root"] = json!(absolute(r)?);
            f.push(("root", "--root"));
        }
        if let Some(d) = a.debounce {
            t["debounce_seconds"] = json!(d);
            f.push(("debounce_seconds", "--debounce"));
        }
        triggers.push((t, f));
    } else if a.root.is_some() || a.debounce.is_some() {
        return Err(e2("--root and --debounce go with --watch"));
    }
    if let Some(p) = &a.webhook {
        let mut t = json!({"type": "webhook", "path": p,
            "secret_env": a.secret_env.clone().unwrap_or_else(|| "BOG_WEBHOOK_SECRET".into())});
        let mut f = vec![("path", "--webhook"), ("secret_env", "--secret-env")];
        if let Some(x) = a.max_age {
            t["max_age_seconds"] = json!(x);
            f.push(("max_age_seconds", "--max-age"));
        }
        if let Some(x) = &a.scheme {
            t["scheme"] = json!(x);
            f.push(("scheme", "--scheme"));
        }
        for (key, v, flag) in webhook_filter_flags(a)? {
            t[key] = v;
            f.push((key, flag));
        }
        triggers.push((t, f));
    } else if a.secret_env.is_some()
        || a.max_age.is_some()
        || a.scheme.is_some()
        || !a.events.is_empty()
        || !a.matches.is_empty()
    {
        return Err(e2(
            "--secret-env, --max-age, --scheme, --event and --match go with --webhook",
        ));
    }
    if let Some(r) = &a.git_repo {
        let mut t = json!({"type": "git_push", "repo": absolute(r)?,
            "branch": a.branch.clone().unwrap_or_else(|| "*".into())});
        let mut f = vec![("repo", "--git-repo"), ("branch", "--branch")];
        for (key, v, flag) in checkout_flags(a) {
            t[key] = v;
            f.push((key, flag));
        }
        triggers.push((t, f));
    } else if a.branch.is_some() || a.checkout || a.keep_checkout_on_failure {
        return Err(e2(
            "--branch, --checkout and --keep-checkout-on-failure go with --git-repo",
        ));
    }
    Ok(triggers)
}

/// Trigger fields set by flags: (JSON key, value, flag).
pub(super) type FlagFields = Vec<(&'static str, Value, &'static str)>;

/// The webhook filter fields that `--event` and `--match` give: (JSON key, value, flag).
/// Several `--match` rules must all hold.
pub(super) fn webhook_filter_flags(a: &AddArgs) -> Result<FlagFields, (i32, String)> {
    let mut out = Vec::new();
    if !a.events.is_empty() {
        out.push(("events", json!(a.events), "--event"));
    }
    let rules = a
        .matches
        .iter()
        .map(|m| match_rule(m).map_err(|e| e2(format!("--match {m:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    match rules.len() {
        0 => {}
        1 => out.push(("match", rules[0].clone(), "--match")),
        _ => out.push(("match", json!({ "all": rules }), "--match")),
    }
    Ok(out)
}

/// The git_push fields that `--checkout` and `--keep-checkout-on-failure` give.
pub(super) fn checkout_flags(a: &AddArgs) -> FlagFields {
    let mut out = Vec::new();
    if a.checkout {
        out.push(("checkout", json!(true), "--checkout"));
    }
    if a.keep_checkout_on_failure {
        out.push((
            "keep_checkout_on_failure",
            json!(true),
            "--keep-checkout-on-failure",
        ));
    }
    out
}

/// `PATH=VALUE` (equals; the value is a string, which also matches a number or boolean
/// written the same way) or `PATH~=REGEX` as a `match` rule.
fn match_rule(s: &str) -> Result<Value, String> {
    let (lhs, value) = s
        .split_once('=')
        .ok_or("expected PATH=VALUE or PATH~=REGEX, e.g. pull_request.base.ref=main")?;
    let (path, test) = match lhs.strip_suffix('~') {
        Some(p) => (p, "regex"),
        None => (lhs, "equals"),
    };
    if path.is_empty() {
        return Err("the path before = is empty".into());
    }
    Ok(json!({"path": path, test: value}))
}

/// Records which flags made output `i`: its `--output` (or `--add-output`) spec, and the
/// output options given with it.
pub(super) fn record_output(origins: &mut Origins, i: usize, flag: String, a: &AddArgs) {
    origins.push((format!("outputs[{i}]"), flag));
    let options = [
        ("on", a.on.is_some(), "--on"),
        ("headers", !a.headers.is_empty(), "--header"),
        (
            "hmac_secret_env",
            a.hmac_secret_env.is_some(),
            "--hmac-secret-env",
        ),
        ("from", a.email_from.is_some(), "--email-from"),
        ("append", a.no_append, "--no-append"),
        ("token_env", a.token_env.is_some(), "--token-env"),
        ("api_url", a.api_url.is_some(), "--api-url"),
        (
            "smtp_env_prefix",
            a.smtp_env_prefix.is_some(),
            "--smtp-env-prefix",
        ),
    ];
    for (key, given, opt) in options {
        if given {
            origins.push((format!("outputs[{i}].{key}"), opt.to_string()));
        }
    }
}

/// Refuses output options (--on, --header, ...) when no output flag is there to take them.
pub(super) fn output_options_need_outputs(a: &AddArgs) -> Result<(), (i32, String)> {
    if a.on.is_some()
        || !a.headers.is_empty()
        || a.hmac_secret_env.is_some()
        || a.email_from.is_some()
        || a.no_append
        || a.token_env.is_some()
        || a.api_url.is_some()
        || a.smtp_env_prefix.is_some()
    {
        return Err(e2(
            "--on, --header, --hmac-secret-env, --email-from, --no-append, --token-env, --api-url and --smtp-env-prefix apply to the outputs given with --output on the same command line",
        ));
    }
    Ok(())
}

/// Outputs from `--output` specs (named `flag` in errors), with the output options applied.
pub(super) fn outputs_from_flags(
    specs: &[String],
    flag: &str,
    a: &AddArgs,
) -> Result<Vec<(Value, String)>, (i32, String)> {
    let mut outs = Vec::new();
    for s in specs {
        let mut o = output_spec(s).map_err(|(c, m)| (c, m.replacen("--output", flag, 1)))?;
        if let Some(on) = &a.on {
            let list: Vec<&str> = on.split(',').map(str::trim).collect();
            if let Some(bad) = list
                .iter()
                .find(|s| !matches!(**s, "succeeded" | "failed" | "missed"))
            {
                return Err(e2(format!(
                    "--on {bad:?}: expected succeeded, failed or missed (or several, comma-separated: failed,missed)"
                )));
            }
            o["on"] = json!(list);
        }
        outs.push((o, format!("{flag} {s}")));
    }
    let has = |outs: &[(Value, String)], kind: &str| outs.iter().any(|(o, _)| o["type"] == kind);
    if !a.headers.is_empty() || a.hmac_secret_env.is_some() {
        if !has(&outs, "webhook") {
            return Err(e2(
                "--header and --hmac-secret-env apply to webhook outputs: add one with --output webhook:URL",
            ));
        }
        for (o, _) in outs.iter_mut().filter(|(o, _)| o["type"] == "webhook") {
            let mut hs = Map::new();
            for kv in &a.headers {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| e2(format!("--header {kv:?}: expected NAME=VALUE")))?;
                hs.insert(k.to_string(), json!(v));
            }
            if !hs.is_empty() {
                o["headers"] = Value::Object(hs);
            }
            if let Some(e) = &a.hmac_secret_env {
                o["hmac_secret_env"] = json!(e);
            }
        }
    }
    if let Some(from) = &a.email_from {
        if !has(&outs, "email") {
            return Err(e2(
                "--email-from applies to email outputs: add one with --output email:ADDR",
            ));
        }
        for (o, _) in outs.iter_mut().filter(|(o, _)| o["type"] == "email") {
            o["from"] = json!(from);
        }
    }
    // Options of one output kind: (flag, value, JSON key, which outputs take it, what to add).
    let no_append = a.no_append.then_some(Value::Bool(false));
    let options = [
        (
            "--no-append",
            no_append,
            "append",
            &(|o: &Value| o["type"] == "file") as &dyn Fn(&Value) -> bool,
            "a file output with --output file:PATH",
        ),
        (
            "--token-env",
            a.token_env.as_ref().map(|x| json!(x)),
            "token_env",
            &|o: &Value| o.get("token_env").is_some(),
            "a slack:#channel or github_comment:owner/repo#N output",
        ),
        (
            "--api-url",
            a.api_url.as_ref().map(|x| json!(x)),
            "api_url",
            &|o: &Value| matches!(o["type"].as_str(), Some("slack" | "github_comment")),
            "a slack or github_comment output",
        ),
        (
            "--smtp-env-prefix",
            a.smtp_env_prefix.as_ref().map(|x| json!(x)),
            "smtp_env_prefix",
            &|o: &Value| o["type"] == "email",
            "an email output with --output email:ADDR",
        ),
    ];
    for (flag, value, key, takes, what) in options {
        let Some(value) = value else { continue };
        if !outs.iter().any(|(o, _)| takes(o)) {
            return Err(e2(format!("{flag} applies to {what}: add one")));
        }
        for (o, _) in outs.iter_mut().filter(|(o, _)| takes(o)) {
            o[key] = value.clone();
        }
    }
    Ok(outs)
}

pub(super) fn absolute(p: &Path) -> Result<String, (i32, String)> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| e1(format!("cannot read the current directory: {e}")))?
            .join(p)
    };
    Ok(abs.display().to_string())
}

/// Parses an `--output` shorthand into output JSON.
pub fn output_spec(s: &str) -> Result<Value, (i32, String)> {
    let (kind, arg) = s.split_once(':').unwrap_or((s, ""));
    let bad = |why: &str| e2(format!("--output {s:?}: {why}"));
    let v = match (kind, arg) {
        ("log", "") => json!({"type": "log"}),
        ("stdout", "") => json!({"type": "stdout"}),
        ("file", p) if !p.is_empty() => {
            let p = if p == "~" || p.starts_with("~/") {
                p.to_string()
            } else {
                absolute(Path::new(p))?
            };
            json!({"type": "file", "path": p})
        }
        ("slack-webhook", v) if !v.is_empty() => {
            json!({"type": "slack", "webhook_url_env": v})
        }
        ("slack", c) if !c.is_empty() => {
            json!({"type": "slack", "channel": c, "token_env": "SLACK_BOT_TOKEN"})
        }
        ("webhook", u) if !u.is_empty() => json!({"type": "webhook", "url": u}),
        ("email", a) if !a.is_empty() => json!({"type": "email", "to": a}),
        ("github_comment", r) => {
            let (repo, issue) = r
                .split_once('#')
                .ok_or_else(|| bad("expected github_comment:owner/repo#123"))?;
            json!({"type": "github_comment", "repo": repo, "issue": issue, "token_env": "GITHUB_TOKEN"})
        }
        _ => {
            return Err(bad(
                "expected log, stdout, file:PATH, slack:#channel, slack-webhook:VAR, webhook:URL, email:ADDR or github_comment:owner/repo#123",
            ))
        }
    };
    Ok(v)
}

// ---- the other job commands: API when a daemon runs, files otherwise ----

pub(super) fn client_if_running(dir: &Path) -> Result<Option<Client>, (i32, String)> {
    match running_daemon(dir) {
        Some(info) => Client::to(dir, &info).map(Some).map_err(e1),
        None => Ok(None),
    }
}

/// A job from the files, by id or name.
pub(super) fn find_on_disk(store: &Store, id: &str) -> Result<Job, (i32, String)> {
    for p in store.job_files() {
        if let Ok(j) = store.load_job_file(&p) {
            if j.id == id || j.name == id {
                return Ok(j);
            }
        }
    }
    Err(e1(format!("no job with id or name \"{id}\"")))
}

pub(super) fn jobs_json(dir: &Path) -> Result<Vec<Value>, (i32, String)> {
    if let Some(c) = client_if_running(dir)? {
        let (st, body) = c.call("GET", "/jobs", None).map_err(e1)?;
        if st != 200 {
            return Err(api_error(st, &body));
        }
        return Ok(body.as_array().cloned().unwrap_or_default());
    }
    let store = Store::at(dir);
    let mut v: Vec<Value> = store
        .job_files()
        .iter()
        .filter_map(|p| store.load_job_file(p).ok())
        .map(|j| offline_view(&j))
        .collect();
    v.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(v)
}

pub(super) fn list(dir: &Path, as_json: bool) -> CmdResult {
    let online = running_daemon(dir).is_some();
    let jobs = jobs_json(dir)?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&jobs).unwrap_or_default()
        );
        return Ok(0);
    }
    let mut rows = vec![["NAME", "ID", "ENABLED", "NEXT", "TRIGGERS"]
        .map(String::from)
        .to_vec()];
    // Dead-man's switches and run budgets' use (from a running daemon), as last columns only
    // when a job has one.
    let expects = jobs.iter().any(|j| j.get("expect").is_some());
    if expects {
        rows[0].push("EXPECT".into());
    }
    let budgets = jobs.iter().any(|j| j.get("budget_use").is_some());
    if budgets {
        rows[0].push("BUDGET".into());
    }
    for j in &jobs {
        let triggers: Vec<String> = j["triggers"]
            .as_array()
            .map(|a| a.iter().map(super::format::trigger).collect())
            .unwrap_or_default();
        let has_interval = triggers.iter().any(|t| t.starts_with("every "));
        let next = if j["enabled"] == false {
            "-".to_string()
        } else {
            match j["next_fire_at"]
                .as_str()
                .and_then(crate::time::parse_rfc3339)
            {
                Some(t) => super::format::local_relative(t, chrono::Utc::now()),
                None if !online && has_interval => "(daemon stopped)".into(),
                None => "on event".into(),
            }
        };
        rows.push(vec![
            j["name"].as_str().unwrap_or("").to_string(),
            j["id"].as_str().unwrap_or("").to_string(),
            j["enabled"].as_bool().unwrap_or(false).to_string(),
            next,
            triggers.join(", "),
        ]);
        let last = rows.len() - 1;
        if expects {
            rows[last].push(super::format::expect(&j["expect"]));
        }
        if budgets {
            rows[last].push(super::format::budget_use(&j["budget_use"]));
        }
    }
    super::format::table(&rows);
    Ok(0)
}

pub(super) fn show(dir: &Path, id: &str) -> CmdResult {
    let v = if let Some(c) = client_if_running(dir)? {
        let (st, body) = c
            .call("GET", &format!("/jobs/{}", enc(id)), None)
            .map_err(e1)?;
        if st != 200 {
            return Err(api_error(st, &body));
        }
        body
    } else {
        offline_view(&find_on_disk(&Store::at(dir), id)?)
    };
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(0)
}

pub(super) fn rm(dir: &Path, id: &str) -> CmdResult {
    if let Some(c) = client_if_running(dir)? {
        let (st, body) = c
            .call("DELETE", &format!("/jobs/{}", enc(id)), None)
            .map_err(e1)?;
        if st != 204 {
            return Err(api_error(st, &body));
        }
    } else {
        let store = Store::at(dir);
        let j = find_on_disk(&store, id)?;
        store.delete_job(&j.id).map_err(|e| e1(e.to_string()))?;
    }
    println!("removed job {id}");
    Ok(0)
}

pub(super) fn set_enabled(dir: &Path, id: &str, enabled: bool) -> CmdResult {
    if let Some(c) = client_if_running(dir)? {
        let (st, body) = c
            .call(
                "PATCH",
                &format!("/jobs/{}", enc(id)),
                Some(&json!({"enabled": enabled})),
            )
            .map_err(e1)?;
        if st != 200 {
            return Err(api_error(st, &body));
        }
    } else {
        let store = Store::at(dir);
        let mut j = find_on_disk(&store, id)?;
        j.enabled = enabled;
        store.save_job(&j).map_err(|e| e1(e.to_string()))?;
    }
    println!("{} job {id}", if enabled { "enabled" } else { "disabled" });
    Ok(0)
}

pub(super) fn run_now(dir: &Path, id: &str, wait: bool, as_json: bool) -> CmdResult {
    let c = Client::connect(dir).map_err(e1)?;
    let (st, body) = c
        .call("POST", &format!("/jobs/{}/run", enc(id)), None)
        .map_err(e1)?;
    if st != 202 {
        return Err(api_error(st, &body));
    }
    let run_id = body["run_id"].as_str().unwrap_or("").to_string();
    if !wait {
        if as_json {
            println!("{body}");
        } else {
            println!("{run_id}");
        }
        return Ok(0);
    }
    eprintln!(
        "run {run_id} {}; waiting",
        body["status"].as_str().unwrap_or("")
    );
    let mut delay = Duration::from_millis(50);
    let start = Instant::now();
    loop {
        let (st, r) = c
            .call("GET", &format!("/jobs/{}/runs/{run_id}", enc(id)), None)
            .map_err(e1)?;
        if st == 200 {
            let status = r["status"].as_str().unwrap_or("");
            if !matches!(status, "queued" | "running") {
                if as_json {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                    return Ok(if status == "succeeded" { 0 } else { 1 });
                }
                print!("{}", r["output"].as_str().unwrap_or(""));
                eprintln!(
                    "run {run_id} {status}{}",
                    r["error"]
                        .as_str()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                );
                return Ok(if status == "succeeded" { 0 } else { 1 });
            }
        } else if st != 404 || start.elapsed() > Duration::from_secs(10) {
            return Err(api_error(st, &r));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

pub(super) fn runs(dir: &Path, id: &str, limit: usize, as_json: bool) -> CmdResult {
    let runs: Vec<Value> = if let Some(c) = client_if_running(dir)? {
        let (st, body) = c
            .call(
                "GET",
                &format!("/jobs/{}/runs?limit={limit}", enc(id)),
                None,
            )
            .map_err(e1)?;
        if st != 200 {
            return Err(api_error(st, &body));
        }
        body.as_array().cloned().unwrap_or_default()
    } else {
        let store = Store::at(dir);
        let j = find_on_disk(&store, id)?;
        store
            .list_runs(&j.id, limit)
            .iter()
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
            .collect()
    };
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&runs).unwrap_or_default()
        );
        return Ok(0);
    }
    let mut rows = vec![
        ["RUN", "STATUS", "TRIGGER", "STARTED", "MS", "EXIT", "ERROR"]
            .map(String::from)
            .to_vec(),
    ];
    for r in &runs {
        let exit = match (r["exit_code"].as_i64(), r["signal"].as_str()) {
            (Some(c), _) => c.to_string(),
            (None, Some(sig)) => sig.to_string(),
            (None, None) => "-".into(),
        };
        rows.push(vec![
            r["id"].as_str().unwrap_or("").to_string(),
            r["status"].as_str().unwrap_or("").to_string(),
            r["trigger"]["type"].as_str().unwrap_or("").to_string(),
            super::format::local(r["started_at"].as_str()),
            r["duration_ms"]
                .as_u64()
                .map(|d| d.to_string())
                .unwrap_or("-".into()),
            exit,
            r["error"]
                .as_str()
                .map(|e| super::format::shorten(e, 60))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    super::format::table(&rows);
    Ok(0)
}

/// Percent-encodes an id or name for a URL path (names are already URL-safe; this guards
/// against anything else a user types).
pub(super) fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
