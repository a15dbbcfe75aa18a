//! Load and soak: a burst of signed webhooks against a small worker pool and queue, and a
//! bounded soak with every-second jobs plus webhooks. Nothing accepted is lost, a full queue
//! answers 429, and memory, descriptors and threads stay bounded.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

const SECRET: &str = "load-secret";

fn sign(body: &[u8]) -> String {
    github_signature(SECRET, body)
}

fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn hook_job(name: &str) -> Value {
    json!({
        "name": name, "prompt": "p", "agent": {"command": ["true"]},
        "overlap": "parallel", "history": 100000,
        "triggers": [{"type": "webhook", "path": "/hooks/load", "secret_env": "LOAD_SECRET"}],
    })
}

/// Sends `n` signed webhooks from `threads` client threads; returns (accepted run ids,
/// number of 429 answers, anything else).
fn burst(d: &Daemon, n: usize, threads: usize) -> (Vec<String>, usize, Vec<u16>) {
    let body = format!("{{\"pad\": \"{}\"}}", "x".repeat(1500));
    let sig = sign(body.as_bytes());
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let throttled = Arc::new(Mutex::new(0usize));
    let other = Arc::new(Mutex::new(Vec::new()));
    let port = d.port;
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (body, sig) = (body.clone(), sig.clone());
            let (accepted, throttled, other) = (accepted.clone(), throttled.clone(), other.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(std::time::Duration::from_secs(30))
                    .build();
                for _ in (t..n).step_by(threads) {
                    let r = agent
                        .post(&format!("http://127.0.0.1:{port}/hooks/load"))
                        .set("X-Hub-Signature-256", &sig)
                        .send_string(&body);
                    match r {
                        Ok(resp) => {
                            let v: Value =
                                serde_json::from_str(&resp.into_string().unwrap()).unwrap();
                            for id in v["run_ids"].as_array().unwrap() {
                                accepted
                                    .lock()
                                    .unwrap()
                                    .push(id.as_str().unwrap().to_string());
                            }
                        }
                        Err(ureq::Error::Status(429, resp)) => {
                            assert!(resp.header("Retry-After").is_some());
                            *throttled.lock().unwrap() += 1;
                        }
                        Err(ureq::Error::Status(s, _)) => other.lock().unwrap().push(s),
                        Err(e) => panic!("request failed: {e}"),
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let a = accepted.lock().unwrap().clone();
    let t = *throttled.lock().unwrap();
    let o = other.lock().unwrap().clone();
    (a, t, o)
}

#[test]
fn webhook_burst_loses_nothing_accepted_and_throttles() {
    let _g = heavy();
    let t = tempdir();
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("config.json"), r#"{"queue_capacity": 32}"#).unwrap();
    let d = Daemon::start_env(t.path(), &["--workers", "1"], &[("LOAD_SECRET", SECRET)]);
    d.create(&hook_job("load"));
    let (accepted, throttled, other) = burst(&d, 10_000, 16);
    assert!(other.is_empty(), "unexpected statuses: {other:?}");
    assert_eq!(accepted.len() + throttled, 10_000);
    assert!(
        throttled > 0,
        "a 32-slot queue behind one worker must fill up"
    );
    assert!(!accepted.is_empty());
    let rss_kib = proc_status(d.pid(), "VmRSS:");
    assert!(rss_kib < 64 * 1024, "RSS after the burst: {rss_kib} KiB");
    // Every accepted event becomes a run record that reaches a final state.
    let want: HashSet<String> = accepted.into_iter().collect();
    wait_for(300, "every accepted webhook's run to finish", || {
        let (_, runs) = d.get("/jobs/load/runs?limit=100000");
        let runs = runs.as_array()?.clone();
        let done: HashSet<String> = runs
            .iter()
            .filter(|r| !matches!(r["status"].as_str(), Some("queued" | "running")))
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        want.is_subset(&done).then_some(())
    });
}

#[test]
fn soak_holds_memory_descriptors_and_threads_flat() {
    let _g = heavy();
    let secs: u64 = std::env::var("BOG_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let t = tempdir();
    let d = Daemon::start_env(t.path(), &[], &[("LOAD_SECRET", SECRET)]);
    for i in 0..4 {
        d.create(&json!({"name": format!("sec{i}"), "prompt": "p", "agent": {"command": ["sh", "-c", "echo tick"]},
            "history": 20, "triggers": [{"type": "cron", "cron": "* * * * * *"}]}));
    }
    let mut job = hook_job("soakhook");
    job["history"] = json!(20);
    d.create(&job);
    let pid = d.pid();
    let sample = || {
        (
            proc_status(pid, "VmRSS:"),
            fds(pid),
            proc_status(pid, "Threads:"),
        )
    };
    // Warm up under the same load for a third of the time (thread stacks, allocator arenas
    // and caches grow to their working size), then take the baseline.
    let start = std::time::Instant::now();
    let warm = start + std::time::Duration::from_secs(secs / 3);
    let end = start + std::time::Duration::from_secs(secs);
    let mut base = None;
    let mut worst = (0, 0, 0);
    let mut next_print = start;
    while std::time::Instant::now() < end {
        burst(&d, 100, 4);
        let s = sample();
        // The baseline is the floor after warm-up: in-flight runs and connections add
        // descriptors and threads for a moment; a leak raises the floor.
        if std::time::Instant::now() >= warm {
            let b: (u64, usize, u64) = base.unwrap_or(s);
            base = Some((b.0.min(s.0), b.1.min(s.1), b.2.min(s.2)));
        }
        worst = (worst.0.max(s.0), worst.1.max(s.1), worst.2.max(s.2));
        if std::time::Instant::now() >= next_print {
            eprintln!("sample {s:?}");
            next_print += std::time::Duration::from_secs(10);
        }
    }
    let base = base.expect("baseline taken");
    // The load has stopped (the every-second jobs go on): wait for a sample at the floor
    // again. What leaked never comes back down; what was in flight does.
    let settle_by = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let after = loop {
        let s = sample();
        let at_floor = s.1 <= base.1 + 16 && s.2 <= base.2 + 16;
        if at_floor || std::time::Instant::now() > settle_by {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let settled = after.1 <= base.1 + 16 && after.2 <= base.2 + 16;
    eprintln!(
        "soak {secs}s: baseline floor {base:?}, worst {worst:?}, end {after:?} (RSS KiB, fds, threads; settled: {settled})"
    );
    assert!(
        after.0 < base.0 + 8 * 1024,
        "RSS grew from {} to {} KiB",
        base.0,
        after.0
    );
    assert!(
        after.1 <= base.1 + 16,
        "descriptors grew from {} to {}",
        base.1,
        after.1
    );
    assert!(
        after.2 <= base.2 + 16,
        "threads grew from {} to {}",
        base.2,
        after.2
    );
    let (_, m) = d.get("/metrics");
    assert!(
        m["runs_succeeded_total"].as_u64().unwrap() > secs * 2,
        "{m}"
    );
}
