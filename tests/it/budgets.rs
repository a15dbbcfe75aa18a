//! Run budgets through the real binary: `limits.max_runs_per_hour` / `max_runs_per_day`
//! turn firings past the budget into `skipped` records naming the budget (manual runs and
//! webhooks alike; a webhook answers 429 with `Retry-After`), survive a restart (counted
//! from the run records), and show in `GET /jobs/{id}`, `job list` and `/metrics`; and
//! `max_concurrent_runs` holds runs queued instead of running them side by side.

use crate::common::*;
use serde_json::{json, Value};

const SECRET: &str = "budget-hook-secret";

#[test]
fn manual_runs_past_the_hourly_budget_are_skipped_even_after_a_restart() {
    let t = tempdir();
    let mut d = Daemon::start(t.path(), &[]);
    let mut job = sh_job("spend", "echo ran", idle_trigger());
    job["limits"] = json!({"max_runs_per_hour": 2});
    d.create(&job);
    for _ in 0..2 {
        let (st, v) = d.post("/jobs/spend/run", &json!({}));
        assert_eq!((st, v["status"].as_str()), (202, Some("queued")), "{v}");
        d.wait_final("spend", v["run_id"].as_str().unwrap(), 20);
    }
    let (st, v) = d.post("/jobs/spend/run", &json!({}));
    assert_eq!((st, v["status"].as_str()), (202, Some("skipped")), "{v}");
    let wait = v["over_budget"]["retry_after_seconds"].as_u64().unwrap();
    assert!(wait > 3000 && wait <= 3600, "{v}");
    let r = d.wait_final("spend", v["run_id"].as_str().unwrap(), 5);
    assert_eq!(r["status"], "skipped");
    let why = r["error"].as_str().unwrap();
    assert!(
        why.contains("limits.max_runs_per_hour is 2") && why.contains("the next run may start at"),
        "{why}"
    );
    let (_, j) = d.get("/jobs/spend");
    assert_eq!(
        j["budget_use"],
        json!({"max_runs_per_hour": {"used": 2, "max": 2}})
    );
    let (code, out, err) = cli(&d.dir, &["job", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("BUDGET") && out.contains("2/2 per hour"),
        "{out}"
    );
    let (_, m) = d.get("/metrics");
    assert_eq!(m["runs_over_budget_total"], 1, "{m}");
    assert_eq!(m["jobs_over_budget"], 1, "{m}");
    // A job fetched with its budget_use can be sent back (the field is read-only).
    let (st, v) = d.req("PATCH", "/jobs/spend", Some(&j.to_string()));
    assert_eq!(st, 200, "{v}");

    // The budget is counted from the records after a restart: still used up.
    d.kill9();
    let d = Daemon::start(t.path(), &[]);
    let (st, v) = d.post("/jobs/spend/run", &json!({}));
    assert_eq!((st, v["status"].as_str()), (202, Some("skipped")), "{v}");
    let (_, runs) = d.get("/jobs/spend/runs?limit=1000");
    let n = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .count();
    assert_eq!(n, 2, "no third run started");
    // Raising the budget lets the next firing run.
    let (st, _) = d.req(
        "PATCH",
        "/jobs/spend",
        Some(r#"{"limits": {"max_runs_per_hour": 3}}"#),
    );
    assert_eq!(st, 200);
    let (_, v) = d.post("/jobs/spend/run", &json!({}));
    assert_eq!(v["status"], "queued", "{v}");
}

#[test]
fn a_webhook_past_the_daily_budget_gets_429_with_retry_after() {
    let t = tempdir();
    let d = Daemon::start_env(t.path(), &[], &[("BUDGET_SECRET", SECRET)]);
    d.create(&json!({
        "name": "hooked",
        "prompt": "p",
        "agent": {"command": ["sh", "-c", "true"]},
        "triggers": [{"type": "webhook", "path": "/hooks/b", "secret_env": "BUDGET_SECRET"}],
        "limits": {"max_runs_per_day": 1},
    }));
    let body = br#"{"n": 1}"#;
    let s = github_signature(SECRET, body);
    let post = |delivery: &str| {
        d.raw(
            "POST",
            "/hooks/b",
            Some(body),
            &[("X-Hub-Signature-256", &s), ("X-GitHub-Delivery", delivery)],
        )
    };
    let (st, _, text) = post("d-1");
    assert_eq!(st, 202, "{text}");
    let (st, headers, text) = post("d-2");
    assert_eq!(st, 429, "{text}");
    let retry: u64 = headers
        .iter()
        .find(|(k, _)| k == "retry-after")
        .map(|(_, v)| v.parse().unwrap())
        .expect("Retry-After");
    assert!(
        retry > 86_000 && retry <= 86_400,
        "frees a day after the first run: {retry}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    let skipped = v["run_ids"][0].as_str().unwrap();
    let r = d.wait_final("hooked", skipped, 5);
    assert_eq!(r["status"], "skipped");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("limits.max_runs_per_day is 1"),
        "{r}"
    );
    // The refused delivery was not remembered: its retry is judged again (and refused again).
    let (st, _, _) = post("d-2");
    assert_eq!(st, 429);
}

#[test]
fn max_concurrent_runs_holds_runs_queued_instead_of_side_by_side() {
    let t = tempdir();
    write_config(t.path(), r#"{"workers": 4, "max_concurrent_runs": 1}"#);
    let d = Daemon::start(t.path(), &[]);
    let (_, m) = d.get("/metrics");
    assert_eq!(m["max_concurrent_runs"], 1, "{m}");
    // Every run holds until the release file exists.
    let release = t.path().join("release");
    let script = format!("{}; echo done", hold_until(&release));
    let mut job = sh_job("capped", &script, idle_trigger());
    job["overlap"] = json!("parallel");
    d.create(&job);
    let fire = || {
        let (_, v) = d.post("/jobs/capped/run", &json!({}));
        assert_eq!(v["status"], "queued", "{v}");
        v["run_id"].as_str().unwrap().to_string()
    };
    let first = fire();
    d.wait_run("capped", 20, "the first run running", |r| {
        r["id"] == first.as_str() && r["status"] == "running"
    });
    let second = fire();
    // While the first holds the one slot, the second waits queued: never started.
    let (_, r) = d.get(&format!("/jobs/capped/runs/{second}"));
    assert_eq!(r["status"], "queued", "{r}");
    let (_, r1) = d.get(&format!("/jobs/capped/runs/{first}"));
    assert_eq!(r1["status"], "running", "{r1}");
    std::fs::write(&release, "").unwrap();
    let r1 = d.wait_final("capped", &first, 30);
    let r2 = d.wait_final("capped", &second, 30);
    assert_eq!(
        (&r1["status"], &r2["status"]),
        (&json!("succeeded"), &json!("succeeded"))
    );
    // One at a time: the second started only once the first was over.
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert!(
        at(&r2["started_at"]) >= at(&r1["finished_at"]),
        "{r1}\n{r2}"
    );
}

#[test]
fn retention_keeps_the_runs_a_budget_counts_across_a_restart() {
    // history 2, two runs a day, overlap skip: the skipped firings made while the runs held
    // are newer than both runs, yet retention must not drop the runs the budget counts.
    let t = tempdir();
    let mut d = Daemon::start(t.path(), &[]);
    let release = t.path().join("release");
    let script = format!("{}; rm -f {}", hold_until(&release), release.display());
    let mut job = sh_job("daily", &script, idle_trigger());
    job["history"] = json!(2);
    job["overlap"] = json!("skip");
    job["limits"] = json!({"max_runs_per_day": 2});
    d.create(&job);
    let mut skipped = Vec::new();
    for _ in 0..2 {
        let (_, v) = d.post("/jobs/daily/run", &json!({}));
        assert_eq!(v["status"], "queued", "{v}");
        let id = v["run_id"].as_str().unwrap().to_string();
        d.wait_run("daily", 20, "the run running", |r| {
            r["id"] == id.as_str() && r["status"] == "running"
        });
        for _ in 0..2 {
            let (_, v) = d.post("/jobs/daily/run", &json!({}));
            assert_eq!(v["status"], "skipped", "{v}");
            skipped.push(v["run_id"].as_str().unwrap().to_string());
        }
        std::fs::write(&release, "").unwrap();
        assert_eq!(d.wait_final("daily", &id, 20)["status"], "succeeded");
    }
    // Retention ran after the second run: the oldest skipped records are gone.
    wait_for(20, "retention after the second run", || {
        let (st, _) = d.get(&format!("/jobs/daily/runs/{}", skipped[0]));
        (st == 404).then_some(())
    });
    let (_, runs) = d.get("/jobs/daily/runs?limit=100");
    let ok = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .count();
    assert_eq!(ok, 2, "{runs}");

    d.kill9();
    let d = Daemon::start(t.path(), &[]);
    let (_, j) = d.get("/jobs/daily");
    assert_eq!(
        j["budget_use"],
        json!({"max_runs_per_day": {"used": 2, "max": 2}}),
        "{j}"
    );
    let (_, v) = d.post("/jobs/daily/run", &json!({}));
    assert_eq!(v["status"], "skipped", "{v}");
    let r = d.wait_final("daily", v["run_id"].as_str().unwrap(), 5);
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("limits.max_runs_per_day is 2"),
        "{r}"
    );
}
