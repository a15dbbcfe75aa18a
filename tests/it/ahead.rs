//! Runs the clock prepares ahead of their slot (`triggers/clock.rs` `LEAD`): the `queued`
//! record is written shortly before the second and the run handed to a worker at once, which
//! renders it, makes its containment, checks its job a last time and forks its agent just
//! before the second, which execs at the second (`worker::wait_for_slot`). A job changed in
//! that window fires each slot once, with the job as it is at that last check; one disabled
//! or deleted before it does not run; a daemon stopped in it starts no agent and leaves no
//! run `queued`; one worker still runs two every-second jobs and a manual run queued behind
//! them; a follower of a run's output reads it though the run was staged again.
//!
//! The window is short (100 ms), so each test first waits for a run's `queued` record to
//! appear ahead of its slot, then acts, and checks what must follow only when its action
//! returned before the run's last check (else it tries the next second; a few tries at
//! most).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::common::*;

/// Tries per test to land a change within a run's lead (a try that misses costs about a
/// second; a loaded machine, whose fsyncs are slow, misses more).
const TRIES: usize = 25;

/// How long before its slot a staged run's job is checked for the last time, and its agent
/// forked to exec at the slot (`worker.rs` `FORK_AHEAD`): a change must land before it.
const FORK_AHEAD: Duration = Duration::from_millis(20);

/// Whether a change that returned now landed before the last check of the run at `slot`.
fn before_check(slot: SystemTime) -> bool {
    SystemTime::now() + FORK_AHEAD < slot
}

/// An every-second job whose agent appends its run id to `marks` (what ran), then runs
/// `then`.
fn every_second(name: &str, marks: &Path, then: &str) -> Value {
    let mut j = sh_job(
        name,
        &format!("echo $BOG_RUN_ID >> {}; {then}", marks.display()),
        json!([{"type": "cron", "cron": "* * * * * *", "timezone": "UTC"}]),
    );
    j["overlap"] = json!("parallel");
    j
}

/// Whether the agent of run `id` ran (its id is in `marks`).
fn ran(marks: &Path, id: &str) -> bool {
    std::fs::read_to_string(marks)
        .unwrap_or_default()
        .lines()
        .any(|l| l == id)
}

/// Waits (at most 20 s, polling every 2 ms: the window is 100 ms) for a run of `job`
/// prepared ahead: its record `queued` while its slot is still to come. Its id and slot.
fn queued_ahead(d: &Daemon, job: &str) -> (String, SystemTime) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, runs) = d.get(&format!("/jobs/{job}/runs?limit=5"));
        let now = SystemTime::now();
        let found = (st == 200)
            .then_some(runs)
            .and_then(|r| r.as_array().cloned())
            .into_iter()
            .flatten()
            .find_map(|r| {
                if r["status"] != "queued" {
                    return None;
                }
                let at = r["trigger"]["scheduled_at"].as_str()?;
                let slot: SystemTime = chrono::DateTime::parse_from_rfc3339(at).ok()?.into();
                (slot > now).then(|| (r["id"].as_str().unwrap().to_string(), slot))
            });
        if let Some(f) = found {
            return f;
        }
        assert!(
            Instant::now() < deadline,
            "no run of {job} queued ahead of its slot within 20 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether the daemon logged `event` for run `id`.
fn logged(d: &Daemon, event: &str, id: &str) -> bool {
    d.stderr()
        .lines()
        .any(|l| l.contains(event) && l.contains(id))
}

/// Every run of `job`, once none is queued or running.
fn all_final(d: &Daemon, job: &str) -> Vec<Value> {
    wait_for(20, "every run final", || {
        let (_, runs) = d.get(&format!("/jobs/{job}/runs?limit=1000"));
        let runs = runs.as_array()?.clone();
        runs.iter()
            .all(|r| !matches!(r["status"].as_str(), Some("queued" | "running")))
            .then_some(runs)
    })
}

#[test]
fn a_job_changed_while_its_run_is_prepared_fires_each_slot_once_as_it_is_at_the_slot() {
    let t = tempdir();
    let marks = t.path().join("marks");
    let d = Daemon::start(t.path(), &[]);
    // The agent prints the prompt it was given (from its event file), then its clock.
    let show = r#"sed -n 's/^ *"prompt": "\(.*\)",*$/\1/p' "$BOG_EVENT_FILE"; date +%s%N"#;
    d.create(&every_second("ahead", &marks, show));
    d.wait_run("ahead", 20, "a first run", |r| r["status"] == "succeeded");
    // A change while the run is staged (rendered, its worker waiting for the slot) makes
    // the clock re-plan the job, which must not plan the held slot again; and the run must
    // start with the job as it is at the slot.
    let mut landed = 0;
    for i in 0..TRIES {
        let (id, slot) = queued_ahead(&d, "ahead");
        let prompt = format!("version {i}");
        let (st, _) = d.req(
            "PATCH",
            "/jobs/ahead",
            Some(&json!({ "prompt": prompt }).to_string()),
        );
        assert_eq!(st, 200);
        if !before_check(slot) {
            continue;
        }
        let r = d.wait_final("ahead", &id, 20);
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(
            r["output"].as_str().unwrap().lines().next(),
            Some(&*prompt),
            "{r}"
        );
        landed += 1;
        if landed == 3 {
            break;
        }
    }
    assert!(
        landed > 0,
        "no change landed before a slot in {TRIES} tries"
    );
    let (st, _) = d.req("PATCH", "/jobs/ahead", Some(r#"{"enabled": false}"#));
    assert_eq!(st, 200);
    let runs = all_final(&d, "ahead");
    assert!(runs.len() >= 2, "{runs:?}");
    let mut seen = HashSet::new();
    for r in &runs {
        let at = r["trigger"]["scheduled_at"].as_str().unwrap().to_string();
        assert!(seen.insert(at.clone()), "slot {at} fired twice: {runs:#?}");
        // The last one may have been staged when the job was disabled.
        let disabled = r["status"] == "skipped"
            && r["error"]
                .as_str()
                .is_some_and(|e| e.contains("disabled before"));
        assert!(r["status"] == "succeeded" || disabled, "{r}");
        assert_eq!(ran(&marks, r["id"].as_str().unwrap()), !disabled, "{r}");
        // No agent starts before its slot, staged again after a change or not.
        if !disabled {
            let clock: i128 = r["output"]
                .as_str()
                .unwrap()
                .lines()
                .last()
                .unwrap()
                .parse()
                .unwrap();
            let slot = chrono::DateTime::parse_from_rfc3339(&at).unwrap();
            let slot = i128::from(slot.timestamp_nanos_opt().unwrap());
            assert!(clock >= slot, "the agent ran before its slot: {r}");
        }
    }
}

#[test]
fn a_job_disabled_before_the_slot_of_its_prepared_run_does_not_run_it() {
    let t = tempdir();
    let marks = t.path().join("marks");
    let d = Daemon::start(t.path(), &[]);
    d.create(&every_second("off", &marks, "true"));
    for _ in 0..TRIES {
        let (st, _) = d.req("PATCH", "/jobs/off", Some(r#"{"enabled": true}"#));
        assert_eq!(st, 200);
        let (id, slot) = queued_ahead(&d, "off");
        let (st, _) = d.req("PATCH", "/jobs/off", Some(r#"{"enabled": false}"#));
        assert_eq!(st, 200);
        let in_time = before_check(slot);
        let r = d.wait_final("off", &id, 20);
        // Its worker took it ahead (its debug line `run.staged`) and checked the job before
        // the fork (a worker that takes a run after its slot, on a busy machine, starts it
        // as any queued run).
        if !in_time || !logged(&d, "run.staged", &id) {
            // Disabled after the last check: the run starts and finishes. Again.
            continue;
        }
        assert_eq!(r["status"], "skipped", "{r}");
        assert!(
            r["error"]
                .as_str()
                .unwrap()
                .contains("the job was disabled before this run's slot"),
            "{r}"
        );
        assert!(!ran(&marks, &id), "the agent of {id} ran: {r}");
        assert!(r["started_at"].is_null(), "{r}");
        return;
    }
    panic!("no disable landed before a slot in {TRIES} tries");
}

#[test]
fn a_job_deleted_before_the_slot_of_its_prepared_run_does_not_run_it() {
    let t = tempdir();
    let marks = t.path().join("marks");
    let d = Daemon::start(t.path(), &[]);
    for _ in 0..TRIES {
        d.create(&every_second("gone", &marks, "true"));
        let (id, slot) = queued_ahead(&d, "gone");
        let (st, _) = d.req("DELETE", "/jobs/gone", None);
        assert_eq!(st, 204);
        if !before_check(slot) {
            continue;
        }
        // Its worker closes it at the slot (its record went with the job).
        wait_for(20, "the run cancelled", || {
            logged(&d, "run.cancelled", &id).then_some(())
        });
        assert!(!ran(&marks, &id), "the agent of {id} ran");
        assert!(!logged(&d, "agent.spawned", &id), "{}", d.stderr());
        assert_eq!(d.get(&format!("/jobs/gone/runs/{id}")).0, 404);
        return;
    }
    panic!("no deletion landed before a slot in {TRIES} tries");
}

#[test]
fn a_stop_while_a_run_is_prepared_starts_no_agent_and_leaves_none_queued() {
    let t = tempdir();
    let marks = t.path().join("marks");
    for _ in 0..TRIES {
        let mut d = Daemon::start(t.path(), &[]);
        if d.get("/jobs/ahead").0 == 404 {
            d.create(&every_second("ahead", &marks, "true"));
        }
        let (id, _) = queued_ahead(&d, "ahead");
        d.signal(libc::SIGTERM);
        assert!(d.wait_exit(30).success());
        // Read from disk: no daemon runs now, so nothing can change them.
        let mut found = None;
        for e in std::fs::read_dir(d.dir.join("runs")).unwrap() {
            for f in std::fs::read_dir(e.unwrap().path()).unwrap() {
                let p = f.unwrap().path();
                if p.extension().is_some_and(|x| x == "json") {
                    let r: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                    assert!(
                        !matches!(r["status"].as_str(), Some("queued" | "running")),
                        "a clean stop left {r}"
                    );
                    if r["id"] == id.as_str() {
                        found = Some(r);
                    }
                }
            }
        }
        let r = found.expect("the prepared run's record");
        // The stop is seen by the daemon a little after the signal is sent: the run may
        // have been forked for its slot meanwhile, and then runs. Its record says which; a
        // stop seen in time is what this test waits for.
        if ran(&marks, &id) {
            assert_eq!(r["status"], "succeeded", "{r}");
        } else {
            assert_eq!(r["status"], "interrupted", "{r}");
            assert_eq!(
                r["error"], "the daemon stopped before this run started",
                "{r}"
            );
            return;
        }
    }
    panic!("no stop landed before a slot in {TRIES} tries");
}

#[test]
fn one_worker_runs_two_every_second_jobs_and_a_run_queued_behind() {
    let t = tempdir();
    write_config(t.path(), r#"{"workers": 1}"#);
    let marks = t.path().join("marks");
    let d = Daemon::start(t.path(), &[]);
    assert_eq!(d.get("/health").1["workers"], 1);
    for name in ["one", "two"] {
        let mut j = every_second(name, &marks, "true");
        j["overlap"] = json!("skip");
        d.create(&j);
    }
    d.create(&sh_job("manual", "echo by hand", idle_trigger()));
    // While the one worker waits for a slot with a run taken ahead, a manual run queued
    // behind it still runs.
    queued_ahead(&d, "one");
    let (st, v) = d.post("/jobs/manual/run", &json!({}));
    assert_eq!(st, 202, "{v}");
    let r = d.wait_final("manual", v["run_id"].as_str().unwrap(), 20);
    assert_eq!(r["status"], "succeeded", "{r}");
    for name in ["one", "two"] {
        wait_for(30, "three runs of each job", || {
            let (_, runs) = d.get(&format!("/jobs/{name}/runs?limit=1000"));
            (runs
                .as_array()?
                .iter()
                .filter(|r| r["status"] == "succeeded")
                .count()
                >= 3)
                .then_some(())
        });
    }
    for name in ["one", "two"] {
        let (st, _) = d.req(
            "PATCH",
            &format!("/jobs/{name}"),
            Some(r#"{"enabled": false}"#),
        );
        assert_eq!(st, 200);
    }
    for name in ["one", "two"] {
        let runs = all_final(&d, name);
        // One record per slot, none lost: each ran, or says why not (its previous run was
        // still active: overlap skip; or it was staged when the job was disabled).
        let mut slots: Vec<i64> = runs
            .iter()
            .map(|r| {
                let at = r["trigger"]["scheduled_at"].as_str().unwrap();
                chrono::DateTime::parse_from_rfc3339(at)
                    .unwrap()
                    .timestamp()
            })
            .collect();
        slots.sort();
        for w in slots.windows(2) {
            assert_eq!(w[1] - w[0], 1, "slots of {name}: {slots:?}");
        }
        for r in &runs {
            let ok = r["status"] == "succeeded"
                || (r["status"] == "skipped"
                    && r["error"].as_str().is_some_and(|e| {
                        e.contains("overlap: skip") || e.contains("disabled before")
                    }));
            assert!(ok, "{r}");
            assert_eq!(
                ran(&marks, r["id"].as_str().unwrap()),
                r["status"] == "succeeded",
                "{r}"
            );
        }
    }
}

#[test]
fn a_follower_of_a_run_staged_again_after_a_change_reads_its_output() {
    let t = tempdir();
    let marks = t.path().join("marks");
    let d = Daemon::start(t.path(), &[]);
    d.create(&every_second("told", &marks, "echo said $BOG_RUN_ID"));
    d.wait_run("told", 20, "a first run", |r| r["status"] == "succeeded");
    // A follower of a staged run's output (`job logs -f`) that a change makes the worker
    // stage again must still read the output of the agent that then runs, not end empty
    // when the first staging is put away.
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    for i in 0..TRIES {
        let (id, slot) = queued_ahead(&d, "told");
        let url = format!("http://127.0.0.1:{}/jobs/told/runs/{id}/output", d.port);
        let auth = format!("Bearer {}", d.token);
        let follower = {
            let agent = agent.clone();
            std::thread::spawn(move || {
                let resp = agent.get(&url).set("Authorization", &auth).call();
                resp.map(|r| r.into_string().unwrap_or_default())
                    .map_err(|e| e.to_string())
            })
        };
        let (st, _) = d.req(
            "PATCH",
            "/jobs/told",
            Some(&json!({ "prompt": format!("version {i}") }).to_string()),
        );
        assert_eq!(st, 200);
        let in_time = before_check(slot);
        let r = d.wait_final("told", &id, 20);
        let followed = follower.join().unwrap().expect("the output stream");
        if !in_time {
            continue;
        }
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["output"], format!("said {id}\n"), "{r}");
        assert_eq!(
            followed,
            format!("said {id}\n"),
            "what the follower read of {r}"
        );
        return;
    }
    panic!("no change landed before a slot in {TRIES} tries");
}
