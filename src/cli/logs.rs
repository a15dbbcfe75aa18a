//! `job logs NAME|RUN_ID [--run N]`: a run's output (stdout), then its stderr tail, error,
//! exit code and delivery errors (stderr). Exit 0 if the run succeeded, 1 otherwise.
//!
//! With `-f`, a queued or running run's output is followed as the agent writes it, through
//! `GET /jobs/{id}/runs/{run_id}/output` (a stream that ends when the run ends); then the
//! final record's summary is printed and the exit code is the run's.

use std::path::Path;

use clap::Args;
use serde_json::Value;

use super::client::Client;
use super::job::{api_error, client_if_running, e1, e2, enc, find_on_disk, CmdResult};
use crate::store::Store;

/// Flags of `job logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Job id or name, or a run id (run_…)
    pub target: String,
    /// Which run: 1 is the latest (the default), 2 the one before ...; or a run id
    #[arg(long, value_name = "N|RUN_ID")]
    pub run: Option<String>,
    /// Print the run record as JSON
    #[arg(long)]
    pub json: bool,
    /// Follow a queued or running run's output as the agent writes it, until the run ends;
    /// exit 0 if it succeeded, 1 otherwise
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// Which run of a job.
enum Pick {
    Nth(usize),
    Id(String),
}

fn is_run_id(s: &str) -> bool {
    s.strip_prefix("run_")
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `job logs`.
pub fn logs(dir: &Path, a: &LogsArgs) -> CmdResult {
    let pick = match a.run.as_deref() {
        None => Pick::Nth(1),
        Some(r) if is_run_id(r) => Pick::Id(r.to_string()),
        Some(r) => match r.parse::<usize>() {
            Ok(n) if n >= 1 => Pick::Nth(n),
            _ => {
                return Err(e2(format!(
                    "--run {r:?}: give 1 for the latest run, 2 for the one before, ... or a run id (run_...)"
                )))
            }
        },
    };
    let client = client_if_running(dir)?;
    let record = if is_run_id(&a.target) {
        if a.run.is_some() {
            return Err(e2("--run goes with a job name, not with a run id"));
        }
        find_run(dir, client.as_ref(), &a.target)?
    } else {
        job_run(dir, client.as_ref(), &a.target, &pick)?
    };
    let open = matches!(record["status"].as_str(), Some("queued" | "running"));
    if a.follow && open && !a.json {
        if let Some(c) = &client {
            return follow(c, &record);
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&record).unwrap_or_default()
        );
        return Ok(exit_code(&record));
    }
    Ok(print_record(&record))
}

/// 0 for a succeeded run, 1 for any other status.
pub fn exit_code(r: &Value) -> i32 {
    if r["status"] == "succeeded" {
        0
    } else {
        1
    }
}

/// The run of job `job` that `pick` names.
fn job_run(dir: &Path, c: Option<&Client>, job: &str, pick: &Pick) -> Result<Value, (i32, String)> {
    let none_yet = || {
        e1(format!(
            "job {job} has no runs yet (start one with `bog-agents-daemon job run {job}`)"
        ))
    };
    match (c, pick) {
        (Some(c), Pick::Nth(n)) => {
            let (st, body) = c
                .call("GET", &format!("/jobs/{}/runs?limit={n}", enc(job)), None)
                .map_err(e1)?;
            if st != 200 {
                return Err(api_error(st, &body));
            }
            let runs = body.as_array().cloned().unwrap_or_default();
            nth(runs, *n, job).ok_or_else(none_yet)?
        }
        (Some(c), Pick::Id(id)) => {
            let (st, body) = c
                .call("GET", &format!("/jobs/{}/runs/{id}", enc(job)), None)
                .map_err(e1)?;
            if st != 200 {
                return Err(api_error(st, &body));
            }
            Ok(body)
        }
        (None, pick) => {
            let store = Store::at(dir);
            let j = find_on_disk(&store, job)?;
            match pick {
                Pick::Nth(n) => {
                    let runs: Vec<Value> = store
                        .list_runs(&j.id, *n)
                        .iter()
                        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
                        .collect();
                    nth(runs, *n, job).ok_or_else(none_yet)?
                }
                Pick::Id(id) => store
                    .load_run(&j.id, id)
                    .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
                    .ok_or_else(|| e1(format!("job {job} has no run {id}"))),
            }
        }
    }
}

fn nth(runs: Vec<Value>, n: usize, job: &str) -> Option<Result<Value, (i32, String)>> {
    if runs.is_empty() {
        return None;
    }
    let count = runs.len();
    Some(runs.into_iter().nth(n - 1).ok_or_else(|| {
        e1(format!(
            "job {job} has {count} run(s) on record; --run {n} is further back"
        ))
    }))
}

/// A run by its id alone: looked for in every job's runs.
fn find_run(dir: &Path, c: Option<&Client>, run_id: &str) -> Result<Value, (i32, String)> {
    match c {
        Some(c) => {
            let (st, jobs) = c.call("GET", "/jobs", None).map_err(e1)?;
            if st != 200 {
                return Err(api_error(st, &jobs));
            }
            for j in jobs.as_array().into_iter().flatten() {
                let id = j["id"].as_str().unwrap_or("");
                let (st, r) = c
                    .call("GET", &format!("/jobs/{}/runs/{run_id}", enc(id)), None)
                    .map_err(e1)?;
                if st == 200 {
                    return Ok(r);
                }
            }
        }
        None => {
            let store = Store::at(dir);
            for p in store.job_files() {
                if let Ok(j) = store.load_job_file(&p) {
                    if let Some(r) = store.load_run(&j.id, run_id) {
                        return Ok(serde_json::to_value(r).unwrap_or(Value::Null));
                    }
                }
            }
        }
    }
    Err(e1(format!("no job has a run {run_id}")))
}

/// Copies a running run's output to stdout as it is written, then prints the summary of its
/// final record. Returns the exit code (0 succeeded, 1 otherwise).
fn follow(c: &Client, record: &Value) -> CmdResult {
    use std::io::{Read, Write};
    let job = record["job_id"].as_str().unwrap_or("");
    let run = record["id"].as_str().unwrap_or("");
    let mut stream = c
        .stream(&format!("/jobs/{}/runs/{}/output", enc(job), enc(run)))
        .map_err(e1)?;
    let mut out = std::io::stdout();
    let mut buf = [0u8; 8192];
    let mut last = b'\n';
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                last = buf[n - 1];
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    return Ok(1); // stdout closed (a pager quit): stop following
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e1(format!("the output stream broke off: {e}"))),
        }
    }
    if last != b'\n' {
        println!();
    }
    // The stream ends when the run does; its final record is written just after.
    let path = format!("/jobs/{}/runs/{}", enc(job), enc(run));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (st, r) = c.call("GET", &path, None).map_err(e1)?;
        if st != 200 {
            return Err(api_error(st, &r));
        }
        let done = !matches!(r["status"].as_str(), Some("queued" | "running"));
        if done || std::time::Instant::now() > deadline {
            return Ok(print_summary(&r));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Prints a run record: its output on stdout; its stderr tail, status line, error and
/// delivery errors on stderr. Returns the exit code (0 succeeded, 1 otherwise).
pub fn print_record(r: &Value) -> i32 {
    let out = r["output"].as_str().unwrap_or("");
    print!("{out}");
    if !out.is_empty() && !out.ends_with('\n') {
        println!();
    }
    print_summary(r)
}

/// A run record's stderr tail, status line, error and delivery errors (on stderr).
fn print_summary(r: &Value) -> i32 {
    let s = |k: &str| r[k].as_str().unwrap_or("");
    if r["output_truncated"] == true {
        eprintln!(
            "[output cut at the job's max_output_kb; the agent wrote {} bytes]",
            r["output_bytes"]
        );
    }
    let status = s("status");
    let tail = s("stderr_tail");
    if !tail.is_empty() && status != "succeeded" {
        eprintln!("--- stderr (last lines) ---");
        eprint!("{tail}");
        if !tail.ends_with('\n') {
            eprintln!();
        }
    }
    let mut line = format!("run {} of job {}: {status}", s("id"), s("job_name"));
    match (r["exit_code"].as_i64(), r["signal"].as_str()) {
        (Some(c), _) => line.push_str(&format!(", exit code {c}")),
        (None, Some(sig)) => line.push_str(&format!(", killed by {sig}")),
        _ => {}
    }
    match r["duration_ms"].as_u64() {
        Some(ms) if ms < 1000 => line.push_str(&format!(", {ms} ms")),
        Some(ms) => line.push_str(&format!(", {:.1} s", ms as f64 / 1000.0)),
        None => {}
    }
    line.push_str(&format!(
        ", trigger {}, started {}",
        r["trigger"]["type"].as_str().unwrap_or("?"),
        super::format::local(r["started_at"].as_str())
    ));
    if r["attempts"].as_u64().is_some_and(|a| a > 1) {
        line.push_str(&format!(", {} attempts", r["attempts"]));
    }
    eprintln!("{line}");
    if matches!(status, "queued" | "running") {
        eprintln!(
            "the run has not ended: follow it with `job logs -f`, or run this again when it has"
        );
    }
    if let Some(e) = r["error"].as_str() {
        eprintln!("error: {e}");
    }
    for d in r["dispatch_errors"].as_array().into_iter().flatten() {
        eprintln!(
            "delivery to {} failed: {}",
            d["target"].as_str().unwrap_or("?"),
            d["error"].as_str().unwrap_or("")
        );
    }
    exit_code(r)
}
