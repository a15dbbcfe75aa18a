//! `job …` and `token`. `job add` writes the job file itself (the daemon need not run; a
//! running one picks the file up at once). The other commands use the API when a daemon
//! runs on the data dir, and the files directly when none does; `job run` needs the daemon.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Map, Value};

use super::client::{running_daemon, Client};
use super::JobCmd;
use crate::job::{validate_job, Job};
use crate::store::{self, Store};

/// Flags of `job add`. Trigger and output flags add to what `-f` gives.
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
    /// Interval trigger: every S seconds
    #[arg(long, value_name = "S")]
    pub interval: Option<u64>,
    /// file_change trigger: glob relative to --root (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub watch: Vec<String>,
    /// Root directory of --watch (default the working dir)
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Quiet time before a file_change trigger fires (seconds, default 5)
    #[arg(long, value_name = "S")]
    pub debounce: Option<f64>,
    /// webhook trigger: path under /hooks/
    #[arg(long, value_name = "PATH")]
    pub webhook: Option<String>,
    /// Environment variable holding the webhook secret (default BOG_WEBHOOK_SECRET)
    #[arg(long, value_name = "VAR")]
    pub secret_env: Option<String>,
    /// git_push trigger: path of the repository
    #[arg(long, value_name = "R")]
    pub git_repo: Option<PathBuf>,
    /// Branch glob of --git-repo (default *)
    #[arg(long, value_name = "GLOB")]
    pub branch: Option<String>,
    /// Output: log, stdout, file:PATH, slack:#channel, webhook:URL, email:ADDR,
    /// github_comment:owner/repo#123 (repeatable; default log)
    #[arg(long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Agent command line, split as a POSIX shell would; {prompt} is replaced
    #[arg(long, value_name = "CMD")]
    pub agent: Option<String>,
    /// Give the prompt on the agent's stdin instead of in {prompt}
    #[arg(long)]
    pub prompt_stdin: bool,
    /// Model name (BOG_MODEL; -M for the default agent)
    #[arg(long)]
    pub model: Option<String>,
    /// Working directory of the agent (default the current directory)
    #[arg(long, value_name = "DIR")]
    pub working_dir: Option<PathBuf>,
    /// Extra environment variable for the agent, NAME=VALUE (repeatable; not for secrets)
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Kill the agent after S seconds (default 3600)
    #[arg(long, value_name = "S")]
    pub timeout: Option<u64>,
    /// RLIMIT_CPU of the agent in seconds
    #[arg(long, value_name = "S")]
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
    /// First retry delay in seconds (doubles each time; default 2)
    #[arg(long, value_name = "S")]
    pub retry_backoff: Option<f64>,
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
}

fn data_dir(flag: Option<&Path>) -> Result<PathBuf, String> {
    store::resolve_data_dir(flag).map_err(|e| e.to_string())
}

/// Runs a `job` subcommand.
pub fn run(dir_flag: Option<&Path>, cmd: JobCmd) -> i32 {
    let dir = match data_dir(dir_flag) {
        Ok(d) => d,
        Err(e) => return fail(1, &e),
    };
    let r = match cmd {
        JobCmd::Add(a) => add(&dir, &a),
        JobCmd::List { json } => list(&dir, json),
        JobCmd::Show { id } => show(&dir, &id),
        JobCmd::Rm { id } => rm(&dir, &id),
        JobCmd::Run { id, wait } => run_now(&dir, &id, wait),
        JobCmd::Runs { id, limit, json } => runs(&dir, &id, limit, json),
        JobCmd::Enable { id } => set_enabled(&dir, &id, true),
        JobCmd::Disable { id } => set_enabled(&dir, &id, false),
    };
    match r {
        Ok(code) => code,
        Err((code, msg)) => fail(code, &msg),
    }
}

/// `token`: prints the API token, creating the data dir and token if needed.
pub fn token(dir_flag: Option<&Path>) -> i32 {
    let r = data_dir(dir_flag).and_then(|d| {
        let s = Store::open(&d).map_err(|e| e.to_string())?;
        s.ensure_token().map_err(|e| e.to_string())
    });
    match r {
        Ok((t, _)) => {
            println!("{t}");
            0
        }
        Err(e) => fail(1, &e),
    }
}

fn fail(code: i32, msg: &str) -> i32 {
    eprintln!("error: {msg}");
    code
}

type CmdResult = Result<i32, (i32, String)>;

fn e1(msg: impl Into<String>) -> (i32, String) {
    (1, msg.into())
}

fn e2(msg: impl Into<String>) -> (i32, String) {
    (2, msg.into())
}

/// Maps an API error answer to an exit code and message.
fn api_error(status: u16, body: &Value) -> (i32, String) {
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

fn add(dir: &Path, a: &AddArgs) -> CmdResult {
    let mut v = match &a.file {
        None => json!({}),
        Some(p) => {
            let text = if p.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .map_err(|e| e1(format!("cannot read stdin: {e}")))?;
                s
            } else {
                std::fs::read_to_string(p)
                    .map_err(|e| e2(format!("cannot read {}: {e}", p.display())))?
            };
            serde_json::from_str(&text)
                .map_err(|e| e2(format!("{} is not valid JSON: {e}", p.display())))?
        }
    };
    let Value::Object(m) = &mut v else {
        return Err(e2("the job file must hold a JSON object"));
    };
    apply_flags(m, a)?;
    let store = Store::open(dir).map_err(|e| e1(e.to_string()))?;
    let id = crate::ids::new_job_id().map_err(|e| e1(e.to_string()))?;
    let job =
        validate_job(&v, &id, &crate::time::now_rfc3339()).map_err(|fe| e2(fe.to_string()))?;
    for p in store.job_files() {
        if let Ok(other) = store.load_job_file(&p) {
            if other.name == job.name {
                return Err(e2(format!(
                    "name: a job named \"{}\" already exists ({})",
                    job.name, other.id
                )));
            }
        }
    }
    store.save_job(&job).map_err(|e| e1(e.to_string()))?;
    for w in job.warnings() {
        eprintln!("warning: {w}");
    }
    let note = if running_daemon(dir).is_some() {
        "the running daemon picks it up now"
    } else {
        "start the daemon with `bog-agents-daemon run` to schedule it"
    };
    println!("added job {} ({}); {note}", job.name, job.id);
    Ok(0)
}

fn apply_flags(m: &mut Map<String, Value>, a: &AddArgs) -> Result<(), (i32, String)> {
    let mut set = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    if let Some(n) = &a.name {
        set("name", json!(n));
    }
    if let Some(p) = &a.prompt {
        set("prompt", json!(p));
    }
    if let Some(x) = &a.model {
        set("model", json!(x));
    }
    if let Some(x) = &a.overlap {
        set("overlap", json!(x));
    }
    if let Some(x) = a.max_retries {
        set("max_retries", json!(x));
    }
    if let Some(x) = a.retry_backoff {
        set("retry_backoff_seconds", json!(x));
    }
    if let Some(x) = a.history {
        set("history", json!(x));
    }
    if a.catch_up {
        set("catch_up", json!(true));
    }
    if a.disabled {
        set("enabled", json!(false));
    }
    if let Some(cmd) = &a.agent {
        let argv = super::shellwords::split(cmd).map_err(|e| e2(format!("--agent: {e}")))?;
        if argv.is_empty() {
            return Err(e2("--agent: the command is empty"));
        }
        set(
            "agent",
            json!({"command": argv, "prompt_via": if a.prompt_stdin { "stdin" } else { "arg" }}),
        );
    } else if a.prompt_stdin {
        return Err(e2("--prompt-stdin needs --agent"));
    }
    let wd = match &a.working_dir {
        Some(d) => Some(absolute(d)?),
        None if !m.contains_key("working_dir") => Some(
            std::env::current_dir()
                .map_err(|e| e1(format!("cannot read the current directory: {e}")))?
                .display()
                .to_string(),
        ),
        None => None,
    };
    if let Some(wd) = wd {
        m.insert("working_dir".into(), json!(wd));
    }
    if !a.env.is_empty() {
        let env = m.entry("env").or_insert_with(|| json!({}));
        for kv in &a.env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| e2(format!("--env {kv:?}: expected NAME=VALUE")))?;
            if let Value::Object(e) = env {
                e.insert(k.to_string(), json!(v));
            }
        }
    }
    if a.timeout.is_some()
        || a.cpu_seconds.is_some()
        || a.memory_mb.is_some()
        || a.max_processes.is_some()
        || a.max_output_kb.is_some()
        || a.filesystem.is_some()
    {
        let l = m.entry("limits").or_insert_with(|| json!({}));
        if let Value::Object(l) = l {
            for (k, v) in [
                ("timeout_seconds", a.timeout),
                ("cpu_seconds", a.cpu_seconds),
                ("memory_mb", a.memory_mb),
                ("max_processes", a.max_processes),
                ("max_output_kb", a.max_output_kb),
            ] {
                if let Some(v) = v {
                    l.insert(k.into(), json!(v));
                }
            }
            if let Some(f) = &a.filesystem {
                l.insert("filesystem".into(), json!(f));
            }
        }
    }

    let mut triggers = Vec::new();
    if let Some(c) = &a.cron {
        let mut t = json!({"type": "cron", "cron": c});
        if let Some(tz) = &a.timezone {
            t["timezone"] = json!(tz);
        }
        triggers.push(t);
    } else if a.timezone.is_some() {
        return Err(e2("--timezone needs --cron"));
    }
    if let Some(s) = a.interval {
        triggers.push(json!({"type": "interval", "seconds": s}));
    }
    if !a.watch.is_empty() {
        let mut t = json!({"type": "file_change", "patterns": a.watch});
        if let Some(r) = &a.root {
            t["root"] = json!(absolute(r)?);
        }
        if let Some(d) = a.debounce {
            t["debounce_seconds"] = json!(d);
        }
        triggers.push(t);
    }
    if let Some(p) = &a.webhook {
        triggers.push(json!({"type": "webhook", "path": p,
            "secret_env": a.secret_env.clone().unwrap_or_else(|| "BOG_WEBHOOK_SECRET".into())}));
    }
    if let Some(r) = &a.git_repo {
        triggers.push(json!({"type": "git_push", "repo": absolute(r)?,
            "branch": a.branch.clone().unwrap_or_else(|| "*".into())}));
    }
    if !triggers.is_empty() {
        let t = m.entry("triggers").or_insert_with(|| json!([]));
        if let Value::Array(list) = t {
            list.extend(triggers);
        }
    }
    if !a.outputs.is_empty() {
        let outs = a
            .outputs
            .iter()
            .map(|s| output_spec(s))
            .collect::<Result<Vec<_>, _>>()?;
        let o = m.entry("outputs").or_insert_with(|| json!([]));
        if let Value::Array(list) = o {
            list.extend(outs);
        }
    }
    Ok(())
}

fn absolute(p: &Path) -> Result<String, (i32, String)> {
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
        ("file", p) if !p.is_empty() => json!({"type": "file", "path": p}),
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
                "expected log, stdout, file:PATH, slack:#channel, webhook:URL, email:ADDR or github_comment:owner/repo#123",
            ))
        }
    };
    Ok(v)
}

// ---- the other job commands: API when a daemon runs, files otherwise ----

fn client_if_running(dir: &Path) -> Result<Option<Client>, (i32, String)> {
    match running_daemon(dir) {
        Some(info) => Client::to(dir, &info).map(Some).map_err(e1),
        None => Ok(None),
    }
}

/// A job from the files, by id or name.
fn find_on_disk(store: &Store, id: &str) -> Result<Job, (i32, String)> {
    for p in store.job_files() {
        if let Ok(j) = store.load_job_file(&p) {
            if j.id == id || j.name == id {
                return Ok(j);
            }
        }
    }
    Err(e1(format!("no job with id or name \"{id}\"")))
}

fn jobs_json(dir: &Path) -> Result<Vec<Value>, (i32, String)> {
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
        .map(|j| serde_json::to_value(&j).unwrap_or(Value::Null))
        .collect();
    v.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(v)
}

fn list(dir: &Path, as_json: bool) -> CmdResult {
    let jobs = jobs_json(dir)?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&jobs).unwrap_or_default()
        );
        return Ok(0);
    }
    println!(
        "{:<24} {:<17} {:<8} {:<30} NEXT",
        "NAME", "ID", "ENABLED", "TRIGGERS"
    );
    for j in &jobs {
        let triggers: Vec<String> = j["triggers"]
            .as_array()
            .map(|a| a.iter().map(describe_trigger).collect())
            .unwrap_or_default();
        println!(
            "{:<24} {:<17} {:<8} {:<30} {}",
            j["name"].as_str().unwrap_or(""),
            j["id"].as_str().unwrap_or(""),
            j["enabled"].as_bool().unwrap_or(false),
            triggers.join(", "),
            j.get("next_fire_at").and_then(Value::as_str).unwrap_or("-")
        );
    }
    Ok(0)
}

fn describe_trigger(t: &Value) -> String {
    match t["type"].as_str().unwrap_or("") {
        "cron" => format!("cron {}", t["cron"].as_str().unwrap_or("")),
        "interval" => format!("every {}s", t["seconds"]),
        "file_change" => "file_change".into(),
        "webhook" => format!("webhook {}", t["path"].as_str().unwrap_or("")),
        "git_push" => "git_push".into(),
        other => other.into(),
    }
}

fn show(dir: &Path, id: &str) -> CmdResult {
    let v = if let Some(c) = client_if_running(dir)? {
        let (st, body) = c
            .call("GET", &format!("/jobs/{}", enc(id)), None)
            .map_err(e1)?;
        if st != 200 {
            return Err(api_error(st, &body));
        }
        body
    } else {
        let j = find_on_disk(&Store::at(dir), id)?;
        let mut v = serde_json::to_value(&j).unwrap_or(Value::Null);
        v["warnings"] = json!(j.warnings());
        v
    };
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(0)
}

fn rm(dir: &Path, id: &str) -> CmdResult {
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

fn set_enabled(dir: &Path, id: &str, enabled: bool) -> CmdResult {
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

fn run_now(dir: &Path, id: &str, wait: bool) -> CmdResult {
    let c = Client::connect(dir).map_err(e1)?;
    let (st, body) = c
        .call("POST", &format!("/jobs/{}/run", enc(id)), None)
        .map_err(e1)?;
    if st != 202 {
        return Err(api_error(st, &body));
    }
    let run_id = body["run_id"].as_str().unwrap_or("").to_string();
    if !wait {
        println!("{run_id}");
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

fn runs(dir: &Path, id: &str, limit: usize, as_json: bool) -> CmdResult {
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
    println!(
        "{:<26} {:<12} {:<11} {:<25} {:>10} EXIT",
        "RUN", "STATUS", "TRIGGER", "STARTED", "MS"
    );
    for r in &runs {
        println!(
            "{:<26} {:<12} {:<11} {:<25} {:>10} {}",
            r["id"].as_str().unwrap_or(""),
            r["status"].as_str().unwrap_or(""),
            r["trigger"]["type"].as_str().unwrap_or(""),
            r["started_at"].as_str().unwrap_or("-"),
            r["duration_ms"]
                .as_u64()
                .map(|d| d.to_string())
                .unwrap_or("-".into()),
            r["exit_code"]
                .as_i64()
                .map(|d| d.to_string())
                .unwrap_or("-".into()),
        );
    }
    Ok(0)
}

/// Percent-encodes an id or name for a URL path (names are already URL-safe; this guards
/// against anything else a user types).
fn enc(s: &str) -> String {
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
