//! Reads served from memory (issue 11): `GET /jobs`, `GET /jobs/{id}` and the run listings
//! come from caches in the daemon. Each test warms the cache first, then changes what it holds
//! in every way the daemon knows of (API create / patch / delete, a job file edited, added or
//! removed by hand + SIGHUP, a run recorded, a run pruned, a record removed by hand + SIGHUP,
//! the clock moving on), and checks the next read shows the change: a missed invalidation
//! fails here. Also: a large answer carries its exact Content-Length and is not chunked.

use crate::common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn names(d: &Daemon) -> Vec<String> {
    let (st, v) = d.get("/jobs");
    assert_eq!(st, 200, "{v}");
    v.as_array()
        .expect("list")
        .iter()
        .map(|j| j["name"].as_str().expect("name").to_string())
        .collect()
}

fn patch(d: &Daemon, job: &str, body: &Value) -> (u16, Value) {
    d.req("PATCH", &format!("/jobs/{job}"), Some(&body.to_string()))
}

fn hand_write(d: &Daemon, id: &str, v: &Value) {
    let tmp = d.dir.join(format!("edit-{id}.tmp"));
    std::fs::write(&tmp, v.to_string()).expect("write");
    std::fs::rename(&tmp, d.dir.join("jobs").join(format!("{id}.json"))).expect("rename");
}

#[test]
fn job_views_show_every_change() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let a = d.create(&sh_job("alpha", "true", idle_trigger()));
    let id = a["id"].as_str().expect("id").to_string();
    // Warm both caches.
    assert_eq!(names(&d), ["alpha"]);
    assert_eq!(d.get("/jobs/alpha").1["prompt"], a["prompt"]);

    // API patch.
    let (st, v) = patch(&d, "alpha", &json!({"prompt": "patched"}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(d.get("/jobs/alpha").1["prompt"], "patched");
    assert_eq!(d.get("/jobs").1[0]["prompt"], "patched");
    // A rename: the old name is gone from the list and from lookups.
    let (st, v) = patch(&d, &id, &json!({"name": "gamma"}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(names(&d), ["gamma"]);
    assert_eq!(d.get("/jobs/alpha").0, 404);

    // API create and delete.
    d.create(&sh_job("beta", "true", idle_trigger()));
    assert_eq!(names(&d), ["beta", "gamma"]);
    assert_eq!(d.req("DELETE", "/jobs/beta", None).0, 204);
    assert_eq!(names(&d), ["gamma"]);
    assert_eq!(d.get("/jobs/beta").0, 404);

    // Disabling drops next_fire_at; enabling brings it back.
    assert!(d.get("/jobs/gamma").1["next_fire_at"].is_string());
    assert_eq!(patch(&d, "gamma", &json!({"enabled": false})).0, 200);
    assert!(d.get("/jobs/gamma").1["next_fire_at"].is_null());
    assert!(d.get("/jobs").1[0]["next_fire_at"].is_null());
    assert_eq!(patch(&d, "gamma", &json!({"enabled": true})).0, 200);
    assert!(d.get("/jobs").1[0]["next_fire_at"].is_string());

    // A hand edit + SIGHUP.
    let path = d.dir.join("jobs").join(format!("{id}.json"));
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    v["prompt"] = json!("edited by hand");
    hand_write(&d, &id, &v);
    d.signal(libc::SIGHUP);
    wait_for(10, "the hand edit in GET /jobs/{id}", || {
        (d.get("/jobs/gamma").1["prompt"] == "edited by hand").then_some(())
    });
    assert_eq!(d.get("/jobs").1[0]["prompt"], "edited by hand");

    // A job file added by hand + SIGHUP.
    let mut w = v.clone();
    w["id"] = json!("job_0123456789abcdef");
    w["name"] = json!("delta");
    hand_write(&d, "job_0123456789abcdef", &w);
    d.signal(libc::SIGHUP);
    wait_for(10, "the added job in GET /jobs", || {
        (names(&d) == ["delta", "gamma"]).then_some(())
    });

    // A job file removed by hand + SIGHUP.
    std::fs::remove_file(&path).expect("remove");
    d.signal(libc::SIGHUP);
    wait_for(10, "the removed job gone from GET /jobs", || {
        (names(&d) == ["delta"]).then_some(())
    });
    assert_eq!(d.get("/jobs/gamma").0, 404);
}

#[test]
fn next_fire_at_moves_on_with_the_clock() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    d.create(&json!({
        "name": "tick", "prompt": "p", "agent": {"command": ["true"]},
        "triggers": [{"type": "cron", "cron": "* * * * * *"}],
    }));
    let next = |path: &str, pick: &dyn Fn(&Value) -> Value| -> String {
        let (st, v) = d.get(path);
        assert_eq!(st, 200, "{v}");
        pick(&v).as_str().expect("next_fire_at").to_string()
    };
    let one = |v: &Value| v["next_fire_at"].clone();
    let first = |v: &Value| v[0]["next_fire_at"].clone();
    for (path, pick) in [
        ("/jobs/tick", &one as &dyn Fn(&Value) -> Value),
        ("/jobs", &first),
    ] {
        let t0 = next(path, pick);
        let t1 = wait_for(10, &format!("next_fire_at of {path} to move on"), || {
            let t = next(path, pick);
            (t != t0).then_some(t)
        });
        assert!(t1 > t0, "{path}: next_fire_at went back from {t0} to {t1}");
    }
}

#[test]
fn run_listings_show_every_change() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let mut j = sh_job("runner", "echo hi", idle_trigger());
    j["history"] = json!(2);
    d.create(&j);
    // Warm the index while the job has no runs.
    assert_eq!(d.get("/jobs/runner/runs").1, json!([]));
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (st, v) = d.post("/jobs/runner/run", &json!({}));
        assert_eq!(st, 202, "{v}");
        let id = v["run_id"].as_str().expect("run_id").to_string();
        d.wait_final("runner", &id, 30);
        ids.push(id);
    }
    // Retention (history 2) pruned the first run: gone from the listing and by id.
    wait_for(10, "the oldest run pruned", || {
        let (_, v) = d.get("/jobs/runner/runs");
        let listed: Vec<&str> = v
            .as_array()?
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        (listed == [ids[2].as_str(), ids[1].as_str()]).then_some(())
    });
    assert_eq!(d.get(&format!("/jobs/runner/runs/{}", ids[0])).0, 404);

    // A record removed by hand and one added by hand (a restore from a backup, say), then
    // SIGHUP: the listing is read again.
    let job_id = d.get("/jobs/runner").1["id"]
        .as_str()
        .expect("id")
        .to_string();
    let dir = d.dir.join("runs").join(&job_id);
    std::fs::remove_file(dir.join(format!("{}.json", ids[1]))).expect("remove record");
    let restored = "run_ffffffffffff0000000000";
    let mut rec: Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!("{}.json", ids[2]))).expect("read record"),
    )
    .expect("record");
    rec["id"] = json!(restored);
    std::fs::write(dir.join(format!("{restored}.json")), rec.to_string()).expect("write");
    d.signal(libc::SIGHUP);
    wait_for(10, "the listing read again", || {
        let (_, v) = d.get("/jobs/runner/runs");
        let listed: Vec<&str> = v
            .as_array()?
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        (listed == [restored, ids[2].as_str()]).then_some(())
    });
    assert_eq!(d.get(&format!("/jobs/runner/runs/{restored}")).0, 200);
    assert_eq!(d.get(&format!("/jobs/runner/runs/{}", ids[1])).0, 404);
}

/// One raw HTTP/1.1 exchange on `s`: the head (lower-case) and exactly Content-Length bytes.
fn exchange(s: &mut TcpStream, req: &str) -> (String, Vec<u8>) {
    s.write_all(req.as_bytes()).expect("send");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).expect("read head"),
            1,
            "connection closed in the head"
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .unwrap_or_else(|| panic!("no content-length in {head}"))
        .trim()
        .parse()
        .expect("length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("body");
    (head, body)
}

#[test]
fn a_large_list_has_its_exact_length_and_is_not_chunked() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let long = "x".repeat(2000);
    for i in 0..40 {
        let mut j = sh_job(&format!("job{i:02}"), "true", idle_trigger());
        j["prompt"] = json!(long);
        d.create(&j);
    }
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!(
        "GET /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        d.token
    );
    // Twice on one connection: the first answer's framing must leave the second intact.
    for _ in 0..2 {
        let (head, body) = exchange(&mut s, &req);
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert!(body.len() > 64 * 1024, "{} bytes", body.len());
        let v: Value = serde_json::from_slice(&body).expect("the body is the whole JSON list");
        assert_eq!(v.as_array().map(Vec::len), Some(40));
    }
}
