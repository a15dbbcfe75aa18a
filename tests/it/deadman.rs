//! The dead-man's switch (`expect`) through the real binary: a job that does not succeed in
//! time gets a `missed` notice on its outputs with `on: ["missed"]` (a `file` output here),
//! once per period, counted in `/metrics`; a success starts the period anew; a daemon that
//! was down for the whole period reports it when it starts; a success counts from its
//! outcome, however slow its delivery; a notice a stop cut short is sent again at start;
//! `after_slot` counts from each cron slot; and the fields are validated.

use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;

fn notices(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("=== "))
        .map(String::from)
        .collect()
}

/// The instant a missed notice names (its fifth word, RFC 3339).
fn notice_time(n: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let t = n.split_whitespace().nth(4).unwrap();
    chrono::DateTime::parse_from_rfc3339(t).unwrap()
}

fn watched_job(name: &str, script: &str, triggers: Value, expect: Value, file: &Path) -> Value {
    let mut j = sh_job(name, script, triggers);
    j["expect"] = expect;
    j["outputs"] = json!([{"type": "file", "path": file.to_str().unwrap(), "on": ["missed"]}]);
    j
}

#[test]
fn a_job_without_a_success_in_time_is_reported_once_per_period() {
    let t = tempdir();
    let file = t.path().join("missed.txt");
    let d = Daemon::start(t.path(), &[]);
    d.create(&watched_job(
        "nightly-report",
        "echo done",
        idle_trigger(),
        json!({"within_seconds": 2}),
        &file,
    ));
    let first = wait_for(20, "a missed notice", || notices(&file).first().cloned());
    assert!(
        first.contains(" missed ")
            && first.contains(
                "no successful run of nightly-report since its dead-man's switch was set at"
            )
            && first.contains("expected one at least every 2 s"),
        "{first}"
    );
    assert!(
        first.starts_with("=== nightly-report run missed_"),
        "{first}"
    );
    // Once per period: a second notice follows the first, for the same watch (no success
    // came between them).
    let two = wait_for(20, "a second missed notice", || {
        let n = notices(&file);
        (n.len() >= 2).then_some(n)
    });
    assert!(notice_time(&two[1]) > notice_time(&two[0]), "{two:?}");
    let since = |n: &str| {
        n.split("switch was set at ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .map(String::from)
    };
    assert!(since(&two[0]).is_some(), "{two:?}");
    assert_eq!(since(&two[0]), since(&two[1]), "{two:?}");
    let (_, m) = d.get("/metrics");
    assert!(m["missed_total"].as_u64().unwrap() >= 2, "{m}");
    // No run record was made for it.
    let (_, runs) = d.get("/jobs/nightly-report/runs");
    assert_eq!(runs, json!([]));

    // A success starts the period anew: the next notice counts from it.
    let (_, v) = d.post("/jobs/nightly-report/run", &json!({}));
    let r = d.wait_final("nightly-report", v["run_id"].as_str().unwrap(), 20);
    assert_eq!(r["status"], "succeeded");
    let ok_at = r["finished_at"].as_str().unwrap().to_string();
    let after = wait_for(20, "a notice counting from the success", || {
        notices(&file)
            .into_iter()
            .find(|n| n.contains(&format!("since {ok_at}")))
    });
    assert!(
        after.contains("no successful run of nightly-report since"),
        "{after}"
    );
    // The success's own output is not sent to a missed-only output.
    assert!(!std::fs::read_to_string(&file).unwrap().contains("done"));
}

#[test]
fn a_period_that_passed_while_the_daemon_was_down_is_reported_at_start() {
    let t = tempdir();
    let file = t.path().join("missed.txt");
    let mut d = Daemon::start(t.path(), &[]);
    let j = d.create(&watched_job(
        "down",
        "true",
        idle_trigger(),
        json!({"within_seconds": 4}),
        &file,
    ));
    let id = j["id"].as_str().unwrap().to_string();
    let state = d.dir.join("state.json");
    let since = wait_for(20, "the switch's watch in state.json", || {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&state).ok()?).ok()?;
        v["expect"][&id]["since"].as_str().map(String::from)
    });
    d.kill9();
    assert!(
        notices(&file).is_empty(),
        "reported before the period ended"
    );
    // The whole period passes while no daemon runs.
    let since_t = chrono::DateTime::parse_from_rfc3339(&since).unwrap();
    wait_for(20, "the period to pass", || {
        (chrono::Utc::now() > since_t + chrono::Duration::milliseconds(4500)).then_some(())
    });
    let d = Daemon::start(t.path(), &[]);
    let n = wait_for(20, "the notice of the daemon that was down", || {
        notices(&file).first().cloned()
    });
    assert!(
        n.contains(&format!("since its dead-man's switch was set at {since}")),
        "{n}"
    );
    let (_, m) = d.get("/metrics");
    assert_eq!(m["missed_total"], 1, "{m}");
    // Once delivered, the notice is no longer pending (else the next start sends it again).
    let v = wait_for(20, "the notice no longer pending in state.json", || {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&state).ok()?).ok()?;
        v["expect"][&id]["pending"].is_null().then_some(v)
    });
    assert!(v["expect"][&id]["reported"].is_string(), "{v}");

    // Restarted again at once, the daemon does not report that period a second time: the
    // next notice is for the period that starts at the recorded report.
    let reported =
        chrono::DateTime::parse_from_rfc3339(v["expect"][&id]["reported"].as_str().unwrap())
            .unwrap();
    let mut d = d;
    d.kill9();
    let _d = Daemon::start(t.path(), &[]);
    let two = wait_for(20, "the next period's notice", || {
        let n = notices(&file);
        (n.len() >= 2).then_some(n)
    });
    assert!(notice_time(&two[1]) > notice_time(&two[0]), "{two:?}");
    // Not before that period's deadline (the recorded report + 4 s): a bound the daemon
    // computes, not a speed.
    assert!(
        notice_time(&two[1]) >= reported + chrono::Duration::seconds(4),
        "{two:?}"
    );
}

#[test]
fn after_slot_counts_from_each_cron_slot() {
    let t = tempdir();
    let file = t.path().join("missed.txt");
    let _d = Daemon::start(t.path(), &[]);
    let d = &_d;
    d.create(&watched_job(
        "every-second",
        "exit 3",
        json!([{"type": "cron", "cron": "* * * * * *", "timezone": "UTC"}]),
        json!({"after_slot": 1}),
        &file,
    ));
    let n = wait_for(20, "a missed slot", || notices(&file).first().cloned());
    assert!(
        n.contains("expected one within 1 s after the slot at"),
        "{n}"
    );
    // The failed runs themselves go nowhere: the output is for missed notices only.
    let runs = d.wait_run("every-second", 20, "a failed run", |r| {
        r["status"] == "failed"
    });
    assert_eq!(runs["exit_code"], 3);
}

#[test]
fn expect_and_missed_are_validated_by_field() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let file = t.path().join("x.txt");
    let mut no_expect = sh_job("v", "true", idle_trigger());
    no_expect["outputs"] =
        json!([{"type": "file", "path": file.to_str().unwrap(), "on": ["missed"]}]);
    let cases = [
        (no_expect, "outputs[0].on"),
        (
            watched_job(
                "v",
                "true",
                json!([{"type": "interval", "seconds": 60}]),
                json!({"after_slot": 60}),
                &file,
            ),
            "expect.after_slot",
        ),
        (
            watched_job("v", "true", idle_trigger(), json!({}), &file),
            "expect",
        ),
        (
            watched_job(
                "v",
                "true",
                idle_trigger(),
                json!({"within_seconds": 0}),
                &file,
            ),
            "expect.within_seconds",
        ),
        (
            watched_job("v", "true", idle_trigger(), json!({"within": 5}), &file),
            "expect.within",
        ),
    ];
    for (body, field) in cases {
        let (st, v) = d.post("/jobs", &body);
        assert_eq!(st, 400, "{v}");
        assert_eq!(v["field"], field, "{v}");
    }
    let (st, v) = d.post(
        "/jobs",
        &watched_job(
            "ok",
            "true",
            idle_trigger(),
            json!({"after_slot": 0}),
            &file,
        ),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["expect"], json!({"after_slot": 0}));
    assert_eq!(v["outputs"][0]["on"], json!(["missed"]));
}

/// A loopback HTTP server that answers 200 to each request only once `release` exists: a
/// webhook output whose delivery is held as long as the test wants. Returns its URL and the
/// requests it has read (head and body as text).
fn held_receiver(
    release: std::path::PathBuf,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/held",
        listener.local_addr().unwrap().port()
    );
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let (release, log) = (release.clone(), log.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                let mut n = 0;
                let _ = conn.set_read_timeout(Some(std::time::Duration::from_millis(300)));
                while let Ok(k) = conn.read(&mut buf[n..]) {
                    if k == 0 || n + k == buf.len() {
                        break;
                    }
                    n += k;
                }
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                wait_for(60, "the test to release the delivery", || {
                    release.exists().then_some(())
                });
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            });
        }
    });
    (url, seen)
}

#[test]
fn a_success_counts_from_its_outcome_not_from_its_slow_delivery() {
    let t = tempdir();
    let file = t.path().join("missed.txt");
    let release = t.path().join("release");
    let (url, _) = held_receiver(release.clone());
    let d = Daemon::start(t.path(), &[]);
    let mut job = watched_job(
        "slow-report",
        "echo done",
        idle_trigger(),
        json!({"within_seconds": 3}),
        &file,
    );
    job["outputs"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "webhook", "url": url, "on": ["succeeded"]}));
    d.create(&job);
    let (_, v) = d.post("/jobs/slow-report/run", &json!({}));
    let id = v["run_id"].as_str().unwrap().to_string();
    // The run succeeds at once, but its delivery is held past the switch's first deadline
    // (3 s after it was set) and the next (3 s after the success): the first notice the
    // switch gives counts from the success, never "since it was set".
    let first = wait_for(30, "a missed notice while the delivery is held", || {
        notices(&file).first().cloned()
    });
    std::fs::write(&release, "").unwrap();
    let r = d.wait_final("slow-report", &id, 30);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert!(!first.contains("was set at"), "a false notice: {first}");
    assert!(
        first.contains(&format!(
            "no successful run of slow-report since {}",
            r["finished_at"].as_str().unwrap()
        )),
        "{first}\n{r}"
    );
}

#[test]
fn a_notice_a_stop_cut_short_is_sent_again_at_the_next_start() {
    let t = tempdir();
    let file = t.path().join("missed.txt");
    let release = t.path().join("release");
    let (url, seen) = held_receiver(release.clone());
    let mut d = Daemon::start(t.path(), &["--grace", "1"]);
    let mut job = watched_job(
        "cut-short",
        "true",
        idle_trigger(),
        json!({"within_seconds": 2}),
        &file,
    );
    job["outputs"] = json!([{"type": "webhook", "url": url, "on": ["missed"]}]);
    let j = d.create(&job);
    let id = j["id"].as_str().unwrap().to_string();
    // The notice is on its way (held by the receiver) when the daemon stops.
    wait_for(20, "the notice to reach the receiver", || {
        (!seen.lock().unwrap().is_empty()).then_some(())
    });
    let state = d.dir.join("state.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let pending = &v["expect"][&id]["pending"];
    assert!(pending["text"].is_string(), "pending in state.json: {v}");
    // The period's deadline names this notice (a later period's has another).
    let deadline = pending["trigger"]["deadline"].as_str().unwrap().to_string();
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(30).success());
    let before = seen.lock().unwrap().len();
    std::fs::write(&release, "").unwrap();
    let _d = Daemon::start(t.path(), &[]);
    // The next start sends it again (at least once), then it is no longer pending.
    wait_for(20, "the notice sent again", || {
        let s = seen.lock().unwrap();
        s[before..]
            .iter()
            .any(|r| r.contains(&format!("\"deadline\":\"{deadline}\"")))
            .then_some(())
    });
    wait_for(20, "the notice no longer pending", || {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&state).ok()?).ok()?;
        v["expect"][&id]["pending"].is_null().then_some(())
    });
}
