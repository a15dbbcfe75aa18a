//! Runs the clock prepares ahead of their slot (`triggers/clock.rs` `LEAD`: the `queued`
//! record is written shortly before the second, the run handed to a worker at it): a job
//! changed in that window still fires each slot once, and a daemon stopped in it leaves no
//! run `queued` behind.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::common::*;

fn every_second(name: &str) -> Value {
    let mut j = sh_job(
        name,
        "true",
        json!([{"type": "cron", "cron": "* * * * * *", "timezone": "UTC"}]),
    );
    j["overlap"] = json!("parallel");
    j
}

/// Sleeps until `before` ahead of the next whole second (aiming a change at the window in
/// which the clock holds a prepared run; the assertions hold wherever it lands).
fn until_before_next_second(before: Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = Duration::from_nanos(u64::from(now.subsec_nanos()));
    let to_next = Duration::from_secs(1) - into;
    let wait = if to_next > before {
        to_next - before
    } else {
        to_next + Duration::from_secs(1) - before
    };
    std::thread::sleep(wait);
}

#[test]
fn a_job_changed_while_its_run_is_prepared_fires_each_slot_once() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    d.create(&every_second("ahead"));
    d.wait_run("ahead", 20, "a first run", |r| r["status"] == "succeeded");
    // Changes that land while a run is held make the clock re-plan the job: it must not
    // plan the held slot again.
    for i in 0..6 {
        until_before_next_second(Duration::from_millis(40));
        let (st, _) = d.req(
            "PATCH",
            "/jobs/ahead",
            Some(&format!(r#"{{"prompt": "change {i}"}}"#)),
        );
        assert_eq!(st, 200);
    }
    let (st, _) = d.req("PATCH", "/jobs/ahead", Some(r#"{"enabled": false}"#));
    assert_eq!(st, 200);
    let runs = wait_for(20, "every run final", || {
        let (_, runs) = d.get("/jobs/ahead/runs?limit=1000");
        let runs = runs.as_array()?.clone();
        runs.iter()
            .all(|r| !matches!(r["status"].as_str(), Some("queued" | "running")))
            .then_some(runs)
    });
    assert!(runs.len() >= 5, "{runs:?}");
    let mut seen = HashSet::new();
    for r in &runs {
        let at = r["trigger"]["scheduled_at"].as_str().unwrap().to_string();
        assert!(seen.insert(at.clone()), "slot {at} fired twice: {runs:#?}");
        assert_eq!(r["status"], "succeeded", "{r}");
    }
}

#[test]
fn a_stop_while_a_run_is_prepared_leaves_none_queued() {
    let t = tempdir();
    for _ in 0..3 {
        let mut d = Daemon::start(t.path(), &[]);
        if d.get("/jobs/ahead").0 == 404 {
            d.create(&every_second("ahead"));
        }
        d.wait_run("ahead", 20, "a run", |r| r["status"] == "succeeded");
        until_before_next_second(Duration::from_millis(40));
        d.signal(libc::SIGTERM);
        assert!(d.wait_exit(30).success());
        // Read from disk: no daemon runs now, so nothing can change them.
        for e in std::fs::read_dir(d.dir.join("runs")).unwrap() {
            for f in std::fs::read_dir(e.unwrap().path()).unwrap() {
                let p = f.unwrap().path();
                if p.extension().is_some_and(|x| x == "json") {
                    let r: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                    assert!(
                        !matches!(r["status"].as_str(), Some("queued" | "running")),
                        "a clean stop left {r}"
                    );
                }
            }
        }
    }
}
