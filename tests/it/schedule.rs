//! The scheduler clock through the real daemon: cron jobs fire, `next_fire_at` is served,
//! `catch_up` fires a slot missed while the daemon was down; and JSON logs.

use crate::common::*;
use serde_json::{json, Value};

#[test]
fn six_field_cron_fires_every_second_with_context() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let j = d.create(&sh_job(
        "sec",
        "echo $BOG_TRIGGER",
        json!([{"type": "cron", "cron": "* * * * * *", "timezone": "UTC"}]),
    ));
    assert!(j["next_fire_at"].is_string(), "{j}");
    let r = d.wait_run("sec", 20, "a cron run", |r| r["status"] == "succeeded");
    assert_eq!(r["output"], "cron\n");
    assert_eq!(r["trigger"]["cron"], "* * * * * *");
    assert_eq!(r["trigger"]["timezone"], "UTC");
    let sched = r["trigger"]["scheduled_at"].as_str().unwrap();
    assert!(
        sched.ends_with(".000Z"),
        "fires on the whole second: {sched}"
    );
    // Disabling stops the schedule.
    let (st, j) = d.req("PATCH", "/jobs/sec", Some(r#"{"enabled": false}"#));
    assert_eq!(st, 200);
    assert_eq!(j["next_fire_at"], Value::Null);
}

#[test]
fn catch_up_fires_once_for_a_slot_missed_while_down() {
    let t = tempdir();
    let mut d = Daemon::start(t.path(), &[]);
    let mut job = sh_job(
        "cu",
        "true",
        json!([{"type": "cron", "cron": "* * * * * *", "timezone": "UTC"}]),
    );
    job["catch_up"] = json!(true);
    let j = d.create(&job);
    let state = d.dir.join("state.json");
    let last = wait_for(20, "state.json with a last fire time", || {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&state).ok()?).ok()?;
        v["last_fire"]
            .as_object()?
            .values()
            .next()?
            .as_str()
            .map(String::from)
    });
    d.kill9();
    // Make sure at least one whole slot passes while the daemon is down.
    let last_t = chrono::DateTime::parse_from_rfc3339(&last).unwrap();
    wait_for(10, "a missed slot", || {
        (chrono::Utc::now() > last_t + chrono::Duration::milliseconds(2500)).then_some(())
    });
    let d = Daemon::start(t.path(), &[]);
    let r = d.wait_run(j["id"].as_str().unwrap(), 20, "catch-up run", |r| {
        r["trigger"]["catch_up"] == true
    });
    assert_eq!(r["trigger"]["type"], "cron");
    let (_, runs) = d.get("/jobs/cu/runs?limit=1000");
    let n = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"]["catch_up"] == true)
        .count();
    assert_eq!(n, 1, "exactly one catch-up run");
    assert!(d.stderr().contains("clock.catch_up"));
}

#[test]
fn json_log_format_is_one_object_per_line() {
    let t = tempdir();
    let mut d = Daemon::start(t.path(), &["--log-format", "json"]);
    d.create(&sh_job("lj", "echo x", idle_trigger()));
    let (_, v) = d.post("/jobs/lj/run", &json!({}));
    d.wait_final("lj", v["run_id"].as_str().unwrap(), 20);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(30).code(), Some(0));
    let log = d.stderr();
    let mut events = Vec::new();
    for line in log.lines() {
        let o: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            o["ts"].is_string() && o["level"].is_string() && o["event"].is_string(),
            "{line}"
        );
        events.push(o);
    }
    let fin = events
        .iter()
        .find(|e| e["event"] == "run.finished")
        .expect("run.finished event");
    assert_eq!(fin["job"], "lj");
    assert_eq!(fin["status"], "succeeded");
    assert!(fin["run"].as_str().unwrap().starts_with("run_"));
    assert!(events.iter().any(|e| e["event"] == "daemon.stopped"));
}
