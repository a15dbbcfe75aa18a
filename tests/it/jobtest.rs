//! `job test` and `POST /jobs/{id}/test` against the real binary: the rendering matches
//! what a real run of the same firing gets, nothing runs or is recorded or delivered, a
//! recorded webhook run replays with its kept body, `--exec` runs the agent once, and the
//! kept bodies go with their records.

use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

const SECRET: &str = "s3cr3t-hook-value";
const SLACK: &str = "xoxb-slack-token-value";

fn hook_job(name: &str, dir: &Path, history: u32) -> Value {
    json!({
        "name": name,
        "prompt": "pr={{payload.pull_request.number}} event={{event}}",
        "agent": {"command": ["sh", "-c",
            "echo \"$1\"; cat \"$BOG_EVENT_FILE\"; touch ran-$BOG_RUN_ID", "sh", "{prompt}"]},
        "working_dir": dir.to_str().unwrap(),
        "history": history,
        "env": {"PLAIN": "plain-value"},
        "triggers": [{"type": "webhook", "path": format!("/hooks/{name}"), "secret_env": "HOOK_SECRET"}],
        "outputs": [
            {"type": "file", "path": dir.join("delivered.txt").to_str().unwrap(), "on": ["succeeded"]},
            {"type": "slack", "channel": "#ops", "token_env": "SLACK_TOKEN_X", "on": ["failed"]},
        ],
    })
}

fn deliver(d: &Daemon, path: &str, body: &[u8], delivery: &str) -> String {
    let s = github_signature(SECRET, body);
    let (st, _, text) = d.raw(
        "POST",
        path,
        Some(body),
        &[
            ("X-Hub-Signature-256", &s),
            ("X-GitHub-Event", "pull_request"),
            ("X-GitHub-Delivery", delivery),
        ],
    );
    assert_eq!(st, 202, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["run_ids"][0].as_str().unwrap().to_string()
}

fn test_json(d: &Daemon, args: &[&str]) -> Value {
    let mut a = vec!["job", "test"];
    a.extend_from_slice(args);
    a.push("--json");
    let (code, out, err) = cli(&d.dir, &a);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn env_names(r: &Value) -> Vec<String> {
    r["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

fn ran_markers(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("ran-")
        })
        .count()
}

/// A daemon with the secrets the jobs name, and a working dir for them.
fn start() -> (tempfile::TempDir, std::path::PathBuf, Daemon) {
    let t = tempdir();
    let work = t.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let d = Daemon::start_env(
        t.path(),
        &[],
        &[("HOOK_SECRET", SECRET), ("SLACK_TOKEN_X", SLACK)],
    );
    (t, work, d)
}

#[test]
fn the_rendering_is_what_a_real_run_gets_and_nothing_runs() {
    let (t, work, d) = start();
    d.create(&hook_job("gh", &work, 100));
    let body = br#"{"pull_request": {"number": 42}, "note": "raw  spacing kept"}"#;
    let payload = t.path().join("payload.json");
    std::fs::write(&payload, body).unwrap();

    let r = test_json(
        &d,
        &[
            "gh",
            "--payload",
            payload.to_str().unwrap(),
            "--event",
            "pull_request",
            "--header",
            "X-GitHub-Delivery: d-test",
        ],
    );
    assert_eq!(r["prompt"], "pr=42 event=pull_request", "{r}");
    assert_eq!(
        r["argv"],
        json!([
            "sh",
            "-c",
            "echo \"$1\"; cat \"$BOG_EVENT_FILE\"; touch ran-$BOG_RUN_ID",
            "sh",
            "pr=42 event=pull_request"
        ])
    );
    assert_eq!(r["trigger"]["type"], "webhook");
    assert_eq!(r["trigger"]["delivery"], "d-test");
    assert_eq!(r["filter"], "no filter");
    assert_eq!(r["working_dir"], work.to_str().unwrap());
    assert_eq!(
        r["event_file"]["content"]["trigger"]["body"]
            .as_str()
            .unwrap()
            .as_bytes(),
        body
    );
    assert_eq!(
        r["event_file"]["content"]["trigger"]["payload"]["pull_request"]["number"],
        42
    );
    let names = env_names(&r);
    for n in [
        "BOG_RUN_ID",
        "BOG_EVENT_FILE",
        "BOG_TRIGGER",
        "PLAIN",
        "PATH",
    ] {
        assert!(names.contains(&n.to_string()), "{n} in {names:?}");
    }
    // Secrets a job names are not given to the agent; the report names them, no value.
    for n in ["HOOK_SECRET", "SLACK_TOKEN_X"] {
        assert!(
            !names.contains(&n.to_string()),
            "{n} must not reach the agent"
        );
        assert!(
            r["withheld_env"].as_array().unwrap().contains(&json!(n)),
            "{r}"
        );
    }
    let text = r.to_string();
    assert!(
        !text.contains(SECRET) && !text.contains(SLACK),
        "no secret value: {text}"
    );
    assert_eq!(r["outputs"]["succeeded"][0]["type"], "file");
    assert_eq!(r["outputs"]["failed"][0]["type"], "slack");
    assert_eq!(r["outputs"]["timed_out"][0]["type"], "slack");
    assert_eq!(r["limits"]["timeout_seconds"], 3600);
    assert!(
        r["containment"].as_str().is_some_and(|c| !c.is_empty()),
        "{r}"
    );
    // Nothing ran, nothing was recorded or delivered, no event file was left.
    assert_eq!(ran_markers(&work), 0);
    assert_eq!(d.get("/jobs/gh/runs").1, json!([]));
    assert!(!work.join("delivered.txt").exists());
    assert!(std::fs::read_dir(d.dir.join("events")).map_or(true, |mut r| r.next().is_none()));

    // A real delivery of the same body: the agent gets the prompt and event file shown.
    let id = deliver(&d, "/hooks/gh", body, "d-real");
    let rec = d.wait_final("gh", &id, 20);
    assert_eq!(rec["status"], "succeeded", "{rec}");
    let out = rec["output"].as_str().unwrap();
    let (first, event) = out.split_once('\n').unwrap();
    assert_eq!(first, r["prompt"]);
    let ev: Value = serde_json::from_str(event).unwrap();
    let shown = &r["event_file"]["content"];
    assert_eq!(ev["prompt"], shown["prompt"]);
    assert_eq!(ev["trigger"]["body"], shown["trigger"]["body"]);
    assert_eq!(ev["trigger"]["payload"], shown["trigger"]["payload"]);
    assert_eq!(ev["trigger"]["event"], shown["trigger"]["event"]);
    assert_eq!(ev["job"], shown["job"]);
    assert_eq!(ran_markers(&work), 1);

    // --from-run replays the recorded run with its kept body.
    let kept = d
        .dir
        .join("runs")
        .join(rec["job_id"].as_str().unwrap())
        .join(format!("{id}.payload"));
    assert_eq!(std::fs::read(&kept).unwrap(), body);
    let replay = test_json(&d, &["gh", "--from-run", &id]);
    assert_eq!(replay["prompt"], "pr=42 event=pull_request", "{replay}");
    assert_eq!(replay["trigger"]["delivery"], "d-real");
    assert_eq!(
        replay["event_file"]["content"]["trigger"]["body"]
            .as_str()
            .unwrap()
            .as_bytes(),
        body
    );

    // --exec runs the agent once: its output on the terminal, nothing recorded or delivered.
    std::fs::remove_file(work.join("delivered.txt")).unwrap();
    let (code, out, err) = cli(
        &d.dir,
        &[
            "job",
            "test",
            "gh",
            "--payload",
            payload.to_str().unwrap(),
            "--event",
            "push",
            "--exec",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\npr=42 event=push\n"), "{out}");
    assert!(err.contains("test run succeeded"), "{err}");
    assert_eq!(ran_markers(&work), 2, "the agent ran once more");
    assert_eq!(
        d.get("/jobs/gh/runs").1.as_array().unwrap().len(),
        1,
        "no run recorded"
    );
    assert!(!work.join("delivered.txt").exists(), "no output delivered");

    // The API's exec answers with the run's outcome; a failing agent exits 1 in the CLI.
    let (st, v) = d.post(
        "/jobs/gh/test",
        &json!({"payload": {"pull_request": {"number": 7}}, "event": "push", "exec": true}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["exec"]["status"], "succeeded", "{v}");
    assert!(
        v["exec"]["output"]
            .as_str()
            .unwrap()
            .starts_with("pr=7 event=push\n"),
        "{v}"
    );
    assert_eq!(d.get("/jobs/gh/runs").1.as_array().unwrap().len(), 1);
    let (st, v) = d.post("/jobs/gh/test", &json!({"trigger": "interval"}));
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["field"], "trigger");
    assert_eq!(v["error"], "the job has no interval trigger");
    let (st, v) = d.post("/jobs/gh/test", &json!({"from_run": "run_0123"}));
    assert_eq!(st, 404, "{v}");
    let (st, _) = d.post("/jobs/gh/test", &json!({"exec": "yes"}));
    assert_eq!(st, 400);
    let (st, _) = d.req("GET", "/jobs/gh/test", None);
    assert_eq!(st, 405);
}

#[test]
fn kept_bodies_are_pruned_with_their_records() {
    let (_t, work, d) = start();
    let job = d.create(&hook_job("small", &work, 2));
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = format!("{{\"pull_request\": {{\"number\": {i}}}}}");
        let id = deliver(&d, "/hooks/small", body.as_bytes(), &format!("d-{i}"));
        assert_eq!(d.wait_final("small", &id, 20)["status"], "succeeded");
        ids.push(id);
    }
    let runs = d.dir.join("runs").join(job["id"].as_str().unwrap());
    // Retention runs after the final record is saved: wait for it to have pruned.
    let want = vec![format!("{}.payload", ids[1]), format!("{}.payload", ids[2])];
    wait_for(20, "the oldest kept body pruned with its record", || {
        let mut kept: Vec<String> = std::fs::read_dir(&runs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".payload"))
            .collect();
        kept.sort();
        (kept == want).then_some(())
    });
    let (code, _, err) = cli(&d.dir, &["job", "test", "small", "--from-run", &ids[0]]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("has no run"), "{err}");
    let r = test_json(&d, &["small", "--from-run", &ids[2]]);
    assert_eq!(r["prompt"], "pr=2 event=pull_request");
    // Removing the job takes the kept bodies with the records.
    assert_eq!(d.req("DELETE", "/jobs/small", None).0, 204);
    assert!(!runs.exists());
}

#[test]
fn without_a_daemon_the_rendering_comes_from_the_data_dir() {
    let t = tempdir();
    let data = t.path().join("data");
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env("DEPLOY_API_KEY", "deploy-key-value-123")
            .env("HOOK_SECRET", SECRET)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "job",
        "add",
        "--name",
        "nightly",
        "--cron",
        "0 3 * * *",
        "--timezone",
        "UTC",
        "--prompt",
        "fired by {{trigger}} at {{scheduled_at}}",
        "--agent",
        "my-agent {prompt}",
        "--working-dir",
        t.path().to_str().unwrap(),
        "--output",
        "log",
        "--on",
        "failed",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&["job", "test", "nightly", "--trigger", "cron", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["trigger"]["cron"], "0 3 * * *");
    assert_eq!(r["trigger"]["timezone"], "UTC");
    assert!(
        r["prompt"]
            .as_str()
            .unwrap()
            .starts_with("fired by cron at 20"),
        "{r}"
    );
    assert_eq!(r["argv"][0], "my-agent");
    assert_eq!(r["outputs"]["succeeded"], json!([]));
    assert_eq!(r["outputs"]["failed"], json!([{"type": "log"}]));
    assert!(r["containment"].is_null());
    // A variable named like a credential is given but its value is not shown.
    let key = r["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "DEPLOY_API_KEY")
        .unwrap();
    assert!(key["value"].is_null(), "{key}");
    assert!(!out.contains("deploy-key-value-123"));

    // The text form says the same.
    let (code, out, _) = run(&["job", "test", "nightly"]);
    assert_eq!(code, 0);
    assert!(out.contains("filter       no filter\n"), "{out}");
    assert!(out.contains("on failed    log\n"), "{out}");
    assert!(out.contains("on succeeded nothing\n"), "{out}");
    assert!(out.contains("  DEPLOY_API_KEY (hidden)\n"), "{out}");
    assert!(out.contains("  | fired by manual at \n"), "{out}");
    assert!(
        out.contains("unknown      scheduled_at (rendered empty)"),
        "{out}"
    );

    // Bad input names the flag; --exec needs the daemon.
    let (code, _, err) = run(&["job", "test", "nightly", "--trigger", "sundial"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--trigger: unknown trigger \"sundial\""),
        "{err}"
    );
    let (code, _, err) = run(&["job", "test", "nightly", "--trigger", "webhook"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--trigger: the job has no webhook trigger"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "job",
        "test",
        "nightly",
        "--trigger",
        "cron",
        "--header",
        "nocolon",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--header \"nocolon\""), "{err}");
    let (code, _, err) = run(&["job", "test", "nightly", "--exec"]);
    assert_eq!(code, 1);
    assert!(err.contains("--exec needs the daemon"), "{err}");
    assert!(
        !data.join("runs").exists()
            || std::fs::read_dir(data.join("runs"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[test]
fn test_agents_are_bounded_and_a_daemon_that_stops_stops_them() {
    let t = tempdir();
    let pidfile = t.path().join("agent.pid");
    let mut d = Daemon::start(t.path(), &["--grace", "1", "--workers", "1"]);
    let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    d.create(&sh_job("sleeper", &script, idle_trigger()));
    let (port, token) = (d.port, d.token.clone());
    let client = std::thread::spawn(move || {
        ureq::post(&format!("http://127.0.0.1:{port}/jobs/sleeper/test"))
            .set("Authorization", &format!("Bearer {token}"))
            .send_string(r#"{"exec": true}"#)
            .map(|r| r.into_string().unwrap_or_default())
            .unwrap_or_else(|e| e.to_string())
    });
    let pid: i32 = wait_pid_file(&pidfile, "the test agent to start");
    assert!(alive(pid));
    // Test agents are bounded by the worker count: a second one now is refused.
    let (st, v) = d.post("/jobs/sleeper/test", &json!({"exec": true}));
    assert_eq!(st, 429, "{v}");
    // A rendering alone is always answered.
    assert_eq!(d.post("/jobs/sleeper/test", &json!({})).0, 200);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(30).success());
    wait_for(10, "the test agent to be gone", || {
        (!alive(pid)).then_some(())
    });
    let answer = client.join().unwrap();
    // The answer, when it still went out, says the agent was stopped.
    if let Ok(v) = serde_json::from_str::<Value>(&answer) {
        assert_eq!(v["exec"]["status"], "interrupted", "{v}");
    }
    assert!(
        d.stderr().contains("stopping 1 job test agent(s)"),
        "{}",
        d.stderr()
    );
}

/// `job test` tries a webhook trigger's filter on a payload from a file: the same verdict,
/// in the same words, as intake gives a real delivery; the event header is the sender's.
#[test]
fn job_test_says_whether_the_filter_matches_and_why() {
    let (t, work, d) = start();
    let mut job = hook_job("pr-main", &work, 5);
    job["triggers"][0]["events"] = json!(["pull_request.opened"]);
    job["triggers"][0]["match"] = json!({"path": "pull_request.base.ref", "equals": "main"});
    d.create(&job);
    let file = |name: &str, v: Value| {
        let p = t.path().join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let to_main = file(
        "main.json",
        json!({"action": "opened", "pull_request": {"number": 7, "base": {"ref": "main"}}}),
    );
    let to_dev = file(
        "dev.json",
        json!({"action": "opened", "pull_request": {"number": 8, "base": {"ref": "dev"}}}),
    );
    let verdict = |p: &Path, event: &str| {
        test_json(
            &d,
            &[
                "pr-main",
                "--payload",
                p.to_str().unwrap(),
                "--event",
                event,
            ],
        )["filter"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(verdict(&to_main, "pull_request"), "matches");
    let dev = verdict(&to_dev, "pull_request");
    assert!(dev.starts_with("does not match: match"), "{dev}");
    assert!(dev.contains("\"dev\""), "{dev}");
    let push = verdict(&to_main, "push");
    assert!(push.starts_with("does not match: events"), "{push}");
    // The same verdict as a real, signed delivery of the dev payload: filtered, no run.
    let body = std::fs::read(&to_dev).unwrap();
    let s = github_signature(SECRET, &body);
    let (st, _, text) = d.raw(
        "POST",
        "/hooks/pr-main",
        Some(&body),
        &[
            ("X-Hub-Signature-256", &s),
            ("X-GitHub-Event", "pull_request"),
            ("X-GitHub-Delivery", "d-dev"),
        ],
    );
    assert_eq!(st, 202, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["run_ids"], json!([]), "{v}");
    assert_eq!(
        format!("does not match: {}", v["filtered"].as_str().unwrap()),
        dev
    );
}

/// A job with a dead-man's switch lists the outputs its `missed` notice would go to; a job
/// without one has no `missed` entry.
#[test]
fn job_test_lists_the_missed_notice_outputs_of_a_dead_mans_switch() {
    let (_t, work, d) = start();
    let mut job = hook_job("watched", &work, 5);
    job["expect"] = json!({"within_seconds": 3600});
    job["outputs"][1]["on"] = json!(["failed", "missed"]);
    d.create(&job);
    let r = test_json(&d, &["watched", "--trigger", "manual"]);
    assert_eq!(r["outputs"]["missed"][0]["type"], "slack", "{r}");
    assert_eq!(r["outputs"]["missed"].as_array().unwrap().len(), 1, "{r}");
    let (code, out, err) = cli(&d.dir, &["job", "test", "watched", "--trigger", "manual"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("on missed"), "{out}");
    d.create(&hook_job("plain", &work, 5));
    let r = test_json(&d, &["plain", "--trigger", "manual"]);
    assert!(r["outputs"].get("missed").is_none(), "{r}");
}

/// A `job test --exec` agent counts like a manual run: it spends the job's run budget (429
/// with Retry-After past it, and a run after it is skipped for the budget) and takes one of
/// the daemon-wide `max_concurrent_runs` slots (429 while a run holds the only one).
#[test]
fn test_agents_spend_the_run_budget_and_take_a_concurrency_slot() {
    let t = tempdir();
    write_config(t.path(), r#"{"workers": 4, "max_concurrent_runs": 1}"#);
    let d = Daemon::start(t.path(), &[]);
    let mut job = sh_job("budgeted", "echo tested", idle_trigger());
    job["limits"] = json!({"max_runs_per_hour": 1});
    d.create(&job);
    let (st, v) = d.post("/jobs/budgeted/test", &json!({"exec": true}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["exec"]["status"], "succeeded", "{v}");
    let (_, j) = d.get("/jobs/budgeted");
    assert_eq!(
        j["budget_use"],
        json!({"max_runs_per_hour": {"used": 1, "max": 1}}),
        "{j}"
    );
    let (st, headers, text) = d.raw(
        "POST",
        "/jobs/budgeted/test",
        Some(br#"{"exec": true}"#),
        &[("Authorization", &format!("Bearer {}", d.token))],
    );
    assert_eq!(st, 429, "{text}");
    assert!(text.contains("limits.max_runs_per_hour is 1"), "{text}");
    assert!(
        headers.iter().any(|(k, _)| k == "retry-after"),
        "{headers:?}"
    );
    let (_, v) = d.post("/jobs/budgeted/run", &json!({}));
    assert_eq!(v["status"], "skipped", "{v}");

    // The concurrency cap: a run holds the one slot, so a test agent is refused meanwhile.
    let release = t.path().join("release");
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done", release.display());
    d.create(&sh_job("holder", &script, idle_trigger()));
    d.create(&sh_job("free", "echo free", idle_trigger()));
    let (_, v) = d.post("/jobs/holder/run", &json!({}));
    let held = v["run_id"].as_str().unwrap().to_string();
    d.wait_run("holder", 20, "the holder running", |r| {
        r["status"] == "running"
    });
    let (st, v) = d.post("/jobs/free/test", &json!({"exec": true}));
    assert_eq!(st, 429, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("max_concurrent_runs"),
        "{v}"
    );
    std::fs::write(&release, "").unwrap();
    d.wait_final("holder", &held, 20);
    // The worker gives its slot back once the run is over (just after its final record).
    let v = wait_for(20, "the slot given back", || {
        let (st, v) = d.post("/jobs/free/test", &json!({"exec": true}));
        (st == 200).then_some(v)
    });
    assert_eq!(v["exec"]["status"], "succeeded", "{v}");
}
