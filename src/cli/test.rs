//! `job test NAME`: what a run of the job would get, printed without running anything
//! (README "Testing a job"); with `--exec`, the agent runs once (through the daemon, with its
//! environment, limits and containment), its output printed, nothing delivered or recorded.
//! With a daemon the rendering is its own (`POST /jobs/{id}/test`); without one it is made
//! here from the data dir, by the same code ([`crate::jobtest`]).

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Map, Value};

use super::job::{api_error, client_if_running, e1, e2, enc, find_on_disk, CmdResult};
use crate::store::Store;

/// Flags of `job test`.
#[derive(Args, Debug)]
pub struct TestArgs {
    /// Job id or name
    pub id: String,
    /// Which trigger fires: cron, interval, manual, webhook, file_change or git_push
    /// (default: webhook with --payload, else manual)
    #[arg(long, value_name = "KIND")]
    pub trigger: Option<String>,
    /// A webhook body to fire with (a file; "-" for stdin)
    #[arg(long, value_name = "FILE")]
    pub payload: Option<PathBuf>,
    /// The webhook's X-GitHub-Event header
    #[arg(long, value_name = "NAME")]
    pub event: Option<String>,
    /// A header of the webhook request, 'Name: value' (repeatable)
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Replay a recorded run's trigger context (and a webhook run's kept body)
    #[arg(long, value_name = "RUN_ID", conflicts_with_all = ["trigger", "payload", "event", "headers"])]
    pub from_run: Option<String>,
    /// Run the agent once in the foreground (needs the daemon): nothing delivered, no run
    /// recorded; exit 0 if it succeeded
    #[arg(long)]
    pub exec: bool,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// `job test`.
pub fn test(dir: &Path, a: &TestArgs) -> CmdResult {
    let req = request(a)?;
    let report = match client_if_running(dir)? {
        Some(c) => {
            let c = c.with_timeout(if a.exec {
                None
            } else {
                Some(std::time::Duration::from_secs(60))
            });
            let (st, body) = c
                .call("POST", &format!("/jobs/{}/test", enc(&a.id)), Some(&req))
                .map_err(e1)?;
            if st != 200 {
                let (code, msg) = api_error(st, &body);
                return Err((code, flagged(msg)));
            }
            body
        }
        None if a.exec => {
            return Err(e1(
                "--exec needs the daemon (the agent runs with its environment, limits and containment): start it with `bog-agents-daemon run`, or leave out --exec to see the rendering",
            ))
        }
        None => offline(dir, a, &req)?,
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", human(&report));
    }
    match report.get("exec") {
        Some(rec) if !rec.is_null() => {
            if !a.json {
                println!("agent output:");
                print!("{}", rec["output"].as_str().unwrap_or(""));
                let tail = rec["stderr_tail"].as_str().unwrap_or("");
                if !tail.is_empty() {
                    eprint!("{tail}");
                    if !tail.ends_with('\n') {
                        eprintln!();
                    }
                }
                eprintln!(
                    "test run {}{}",
                    rec["status"].as_str().unwrap_or(""),
                    rec["error"]
                        .as_str()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                );
            }
            Ok(if rec["status"] == "succeeded" { 0 } else { 1 })
        }
        _ => Ok(0),
    }
}

/// The API's request body from the flags.
fn request(a: &TestArgs) -> Result<Value, (i32, String)> {
    let mut m = Map::new();
    if let Some(t) = &a.trigger {
        m.insert("trigger".into(), json!(t));
    }
    if let Some(p) = &a.payload {
        let data = if p.as_os_str() == "-" {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
                .map_err(|e| e1(format!("--payload: cannot read stdin: {e}")))?;
            v
        } else {
            std::fs::read(p)
                .map_err(|e| e2(format!("--payload: cannot read {}: {e}", p.display())))?
        };
        let text = String::from_utf8(data).map_err(|_| {
            e2(format!(
                "--payload: {} is not UTF-8 text (a test takes text and JSON bodies)",
                p.display()
            ))
        })?;
        m.insert("body".into(), json!(text));
    }
    if let Some(e) = &a.event {
        m.insert("event".into(), json!(e));
    }
    let mut hs = Map::new();
    for h in &a.headers {
        let (k, v) = h
            .split_once(':')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| e2(format!("--header {h:?}: expected 'Name: value'")))?;
        hs.insert(k.trim().to_string(), json!(v.trim()));
    }
    if !hs.is_empty() {
        m.insert("headers".into(), Value::Object(hs));
    }
    if let Some(r) = &a.from_run {
        m.insert("from_run".into(), json!(r));
    }
    if a.exec {
        m.insert("exec".into(), json!(true));
    }
    Ok(Value::Object(m))
}

/// An API field name in an error, as the flag that set it.
fn flagged(msg: String) -> String {
    for (field, flag) in [
        ("trigger: ", "--trigger: "),
        ("from_run: ", "--from-run: "),
        ("payload: ", "--payload: "),
    ] {
        if let Some(rest) = msg.strip_prefix(field) {
            return format!("{flag}{rest}");
        }
    }
    msg
}

/// The rendering without a daemon: the job and the others' secret names from the data dir,
/// `config.json`'s default agent, this process's environment (a daemon started here would
/// have it).
fn offline(dir: &Path, a: &TestArgs, req: &Value) -> Result<Value, (i32, String)> {
    let store = Store::at(dir);
    let job = find_on_disk(&store, &a.id)?;
    let r: crate::jobtest::Request =
        serde_json::from_value(req.clone()).map_err(|e| e2(e.to_string()))?;
    let firing = crate::jobtest::firing(&job, &r, &store).map_err(|e| {
        let msg = flagged(e.to_string());
        if e.not_found {
            e1(msg)
        } else {
            e2(msg)
        }
    })?;
    let cfg = crate::config::load(dir).map_err(e1)?;
    let jobs: Vec<crate::job::Job> = store
        .job_files()
        .iter()
        .filter_map(|p| store.load_job_file(p).ok())
        .collect();
    let setup = crate::worker::Setup::new(dir, cfg.default_agent.as_deref(), jobs.iter());
    let (report, _) = crate::jobtest::render(&setup, &job, &firing, None);
    Ok(report)
}

/// The report as text.
fn human(r: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
    line("job", format!("{} ({})", s(&r["job"]), s(&r["job_id"])));
    line("run id", format!("{} (not recorded)", s(&r["run_id"])));
    line(
        "trigger",
        serde_json::to_string(&r["trigger"]).unwrap_or_default(),
    );
    line("filter", s(&r["filter"]));
    let argv: Vec<String> = r["argv"]
        .as_array()
        .map(|a| a.iter().map(|x| quote(x.as_str().unwrap_or(""))).collect())
        .unwrap_or_default();
    line("argv", argv.join(" "));
    line("prompt via", s(&r["prompt_via"]));
    if let Some(p) = r["prompt_file"].as_str() {
        line("prompt file", p.to_string());
    }
    line("working dir", s(&r["working_dir"]));
    if let Some(c) = r["checkout"].as_object() {
        line(
            "checkout",
            format!(
                "fresh worktree of {} at {}, removed after the run",
                c.get("repo").and_then(Value::as_str).unwrap_or(""),
                c.get("commit").and_then(Value::as_str).unwrap_or("")
            ),
        );
    }
    let limits: Vec<String> = r["limits"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.as_str().map(String::from).unwrap_or(v.to_string())
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    line("limits", limits.join(" "));
    line(
        "containment",
        r["containment"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| "decided by the daemon when it starts (none is running)".into()),
    );
    for st in ["succeeded", "failed", "timed_out", "missed"] {
        if st == "missed" && r["outputs"].get(st).is_none() {
            continue;
        }
        let outs: Vec<String> = r["outputs"][st]
            .as_array()
            .map(|a| a.iter().map(output_text).collect())
            .unwrap_or_default();
        let v = if outs.is_empty() {
            "nothing".to_string()
        } else {
            outs.join(", ")
        };
        line(&format!("on {st}"), v);
    }
    if let Some(p) = r["problem"].as_str() {
        line("problem", p.to_string());
    }
    for n in r["notes"].as_array().into_iter().flatten() {
        line("note", s(n));
    }
    if let Some(u) = r["unknown_variables"].as_array().filter(|u| !u.is_empty()) {
        let names: Vec<String> = u.iter().map(&s).collect();
        line("unknown", format!("{} (rendered empty)", names.join(", ")));
    }
    out.push_str("environment (values of secrets hidden):\n");
    for e in r["env"].as_array().into_iter().flatten() {
        match e["value"].as_str() {
            Some(v) => out.push_str(&format!("  {}={}\n", s(&e["name"]), v)),
            None => out.push_str(&format!("  {} (hidden)\n", s(&e["name"]))),
        }
    }
    let withheld: Vec<String> = r["withheld_env"]
        .as_array()
        .map(|a| a.iter().map(&s).collect())
        .unwrap_or_default();
    if !withheld.is_empty() {
        out.push_str(&format!(
            "  not given to the agent (secrets a job names): {}\n",
            withheld.join(", ")
        ));
    }
    out.push_str("prompt:\n");
    for l in s(&r["prompt"]).lines() {
        out.push_str(&format!("  | {l}\n"));
    }
    out.push_str(&format!("event file {}:\n", s(&r["event_file"]["path"])));
    let ev = serde_json::to_string_pretty(&r["event_file"]["content"]).unwrap_or_default();
    for l in ev.lines() {
        out.push_str(&format!("  {l}\n"));
    }
    out
}

/// An output as `log`, `file /tmp/x`, `slack #ops`, `webhook https://…`.
fn output_text(o: &Value) -> String {
    let kind = o["type"].as_str().unwrap_or("");
    if kind == "github_comment" {
        return format!(
            "github_comment {}#{}",
            o["repo"].as_str().unwrap_or(""),
            o["issue"].as_str().unwrap_or("")
        );
    }
    let detail = ["path", "channel", "url", "to", "repo"]
        .iter()
        .find_map(|k| match &o[*k] {
            Value::String(v) => Some(v.clone()),
            Value::Array(a) => Some(
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        });
    match detail {
        Some(d) => format!("{kind} {d}"),
        None => kind.to_string(),
    }
}

/// A word as a POSIX shell would need it written.
fn quote(w: &str) -> String {
    if !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}
