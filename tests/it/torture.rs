//! Crash torture: the daemon is SIGKILLed at random moments while jobs are being created and
//! runs recorded. After every restart, every job whose POST got a 201 is there and every file
//! under the data dir parses.

use crate::common::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

fn check_files(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            check_files(&p);
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".json") {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(
                serde_json::from_str::<Value>(&text).is_ok(),
                "{} does not parse: {text:?}",
                p.display()
            );
        }
        assert!(
            !name.ends_with(".corrupt"),
            "{} was quarantined",
            p.display()
        );
    }
}

/// A signed delivery for `/hooks/torture` (HMAC-SHA256 of the body with the test secret).
fn signature(body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    m.update(body);
    let bytes = m.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

const SECRET: &str = "torture-secret";

/// A run record by job and id; `hook-?` is either hook job (a delivery's ids are not named).
fn get_run(d: &Daemon, job: &str, run: &str) -> (u16, Value) {
    if job == "hook-?" {
        let a = d.get(&format!("/jobs/hook-a/runs/{run}"));
        if a.0 == 200 {
            return a;
        }
        return d.get(&format!("/jobs/hook-b/runs/{run}"));
    }
    d.get(&format!("/jobs/{job}/runs/{run}"))
}

/// What a client got a 2xx for: job names (201) and (job, run id) pairs (202).
#[derive(Default)]
struct Acked {
    jobs: Vec<String>,
    runs: Vec<(String, String)>,
}

/// Kills the daemon at random moments while one client creates jobs and five others fire
/// runs at once (three `POST /jobs/runner/run` loops, two signed webhook loops whose every
/// delivery starts a run of two jobs), so run records are committed in concurrent groups
/// (`fsio::sync_dir_grouped`). After every restart, every job whose POST got a 201 is there,
/// every run whose firing got a 202 has its record (final: recovery marked the unfinished
/// ones `interrupted`), and every file under the data dir parses.
#[test]
fn kill9_at_random_moments_loses_nothing_acknowledged() {
    let _g = heavy();
    let iterations: usize = std::env::var("BOG_TORTURE_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let t = tempdir();
    let mut seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let env = [("TORTURE_SECRET", SECRET)];
    let mut checked_runs = 0;
    for i in 0..iterations {
        let mut d = Daemon::start_env(t.path(), &[], &env);
        // Everything acknowledged so far survived.
        let (_, jobs) = d.get("/jobs");
        let names: std::collections::HashSet<String> = jobs
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["name"].as_str().unwrap().to_string())
            .collect();
        let a = acked.lock().unwrap();
        for n in &a.jobs {
            assert!(
                names.contains(n),
                "iteration {i}: job {n} was acknowledged with 201 and is gone"
            );
        }
        for (job, run) in &a.runs[checked_runs..] {
            let (st, r) = get_run(&d, job, run);
            assert_eq!(
                st, 200,
                "iteration {i}: run {run} of {job} was acknowledged with 202 and has no record"
            );
            assert!(
                !matches!(r["status"].as_str(), Some("queued" | "running")),
                "iteration {i}: left unfinished: {r}"
            );
        }
        checked_runs = a.runs.len();
        drop(a);
        check_files(&d.dir);
        if i == 0 {
            let mut runner = sh_job("runner", "echo run", idle_trigger());
            runner["overlap"] = json!("parallel");
            runner["history"] = json!(100000);
            d.create(&runner);
            for n in ["hook-a", "hook-b"] {
                d.create(&json!({
                    "name": n, "prompt": "p", "agent": {"command": ["true"]}, "history": 100000,
                    "overlap": "parallel",
                    "triggers": [{"type": "webhook", "path": "/hooks/torture", "secret_env": "TORTURE_SECRET"}],
                }));
            }
            acked
                .lock()
                .unwrap()
                .jobs
                .extend(["runner", "hook-a", "hook-b"].map(String::from));
        }
        // Kill the daemon after a random number of acknowledged requests.
        let port = d.port;
        let token = d.token.clone();
        let stop_after = rnd(24) as usize;
        let (tx, rx) = crossbeam_channel::unbounded::<()>();
        let clients: Vec<_> = (0..6)
            .map(|c| {
                let (a, tx, token) = (acked.clone(), tx.clone(), token.clone());
                std::thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(std::time::Duration::from_secs(5))
                        .build();
                    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
                    let auth = format!("Bearer {token}");
                    for k in 0.. {
                        match c {
                            0 => {
                                let name = format!("j{i}-{k}");
                                let body = json!({"name": name, "prompt": "p", "agent": {"command": ["true"]}, "triggers": [{"type": "cron", "cron": "0 0 1 1 *"}]});
                                match agent.post(&url("/jobs")).set("Authorization", &auth).send_string(&body.to_string()) {
                                    Ok(r) if r.status() == 201 => a.lock().unwrap().jobs.push(name),
                                    _ => return,
                                }
                            }
                            1..=3 => {
                                let r = agent.post(&url("/jobs/runner/run")).set("Authorization", &auth).call();
                                let Ok(r) = r.map_err(drop).and_then(|r| {
                                    (r.status() == 202).then_some(r).ok_or(())
                                }) else {
                                    return;
                                };
                                let Ok(v) = r.into_string().map_err(drop).and_then(|t| serde_json::from_str::<Value>(&t).map_err(drop)) else { return };
                                let id = v["run_id"].as_str().unwrap_or_default().to_string();
                                a.lock().unwrap().runs.push(("runner".into(), id));
                            }
                            _ => {
                                let body = json!({"client": c, "k": k, "i": i}).to_string();
                                let r = agent
                                    .post(&url("/hooks/torture"))
                                    .set("X-Hub-Signature-256", &signature(body.as_bytes()))
                                    .set("Content-Type", "application/json")
                                    .send_string(&body);
                                let Ok(r) = r.map_err(drop).and_then(|r| {
                                    (r.status() == 202).then_some(r).ok_or(())
                                }) else {
                                    return;
                                };
                                let Ok(v) = r.into_string().map_err(drop).and_then(|t| serde_json::from_str::<Value>(&t).map_err(drop)) else { return };
                                let ids: Vec<String> = v["run_ids"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .filter_map(|x| x.as_str().map(String::from))
                                    .collect();
                                assert_eq!(ids.len(), 2, "a delivery starts a run of each hook job: {v}");
                                // Which id belongs to which job is read back after the restart.
                                let mut g = a.lock().unwrap();
                                g.runs.extend(ids.into_iter().map(|id| ("hook-?".to_string(), id)));
                            }
                        }
                        let _ = tx.send(());
                    }
                })
            })
            .collect();
        drop(tx);
        for _ in 0..stop_after {
            if rx.recv_timeout(std::time::Duration::from_secs(10)).is_err() {
                break;
            }
        }
        d.kill9();
        for c in clients {
            c.join().unwrap();
        }
    }
    let d = Daemon::start_env(t.path(), &[], &env);
    let (_, jobs) = d.get("/jobs");
    assert!(jobs.as_array().unwrap().len() >= acked.lock().unwrap().jobs.len());
    let a = acked.lock().unwrap();
    for (job, run) in &a.runs[checked_runs..] {
        let (st, _) = get_run(&d, job, run);
        assert_eq!(
            st, 200,
            "run {run} of {job} was acknowledged with 202 and has no record"
        );
    }
    assert!(
        a.runs.len() >= iterations / 2,
        "too few acknowledged runs to prove anything: {}",
        a.runs.len()
    );
    eprintln!(
        "{} acknowledged runs, {} jobs, all recorded",
        a.runs.len(),
        a.jobs.len()
    );
    check_files(&d.dir);
}

/// A 1 GiB output flood, a memory bomb and a CPU spinner at once: each ends with its limit
/// named, the daemon's memory stays bounded, and an every-second job keeps firing meanwhile.
#[test]
fn resource_hogs_are_contained_and_other_jobs_keep_firing() {
    let _g = heavy();
    let t = tempdir();
    let d = Daemon::start(t.path(), &["--workers", "4"]);
    let mut flood = sh_job("flood", "head -c 1073741824 /dev/zero", idle_trigger());
    flood["limits"] = json!({"max_output_kb": 1024});
    d.create(&flood);
    d.create(&json!({
        "name": "bomb", "prompt": "p",
        "agent": {"command": ["python3", "-c", "b = []\nwhile True: b.append(bytearray(64 << 20))"]},
        "limits": {"memory_mb": 256}, "triggers": idle_trigger()
    }));
    let mut spin = sh_job("spin", "while :; do :; done", idle_trigger());
    spin["limits"] = json!({"cpu_seconds": 2, "timeout_seconds": 120});
    d.create(&spin);
    // max_processes is the run's pids limit (its cgroup), else RLIMIT_NPROC.
    let mut procs = sh_job(
        "procs",
        "grep 'Max processes' /proc/self/limits; \
         p=$(grep -E '^[0-9]+:(.*,)?pids(,.*)?:' /proc/self/cgroup | cut -d: -f3); \
         [ -n \"$p\" ] && cat /sys/fs/cgroup/pids$p/pids.max; \
         p=$(grep '^0::' /proc/self/cgroup | cut -d: -f3); \
         [ -n \"$p\" ] && cat /sys/fs/cgroup$p/pids.max 2>/dev/null; true",
        idle_trigger(),
    );
    procs["limits"] = json!({"max_processes": 77});
    d.create(&procs);
    d.create(
        &json!({"name": "tick", "prompt": "p", "agent": {"command": ["true"]},
        "triggers": [{"type": "cron", "cron": "* * * * * *"}]}),
    );
    let ids: Vec<(String, String)> = ["flood", "bomb", "spin", "procs"]
        .iter()
        .map(|n| {
            let (st, v) = d.post(&format!("/jobs/{n}/run"), &json!({}));
            assert_eq!(st, 202);
            (n.to_string(), v["run_id"].as_str().unwrap().to_string())
        })
        .collect();
    let mut max_rss = 0;
    let finals: Vec<Value> = ids
        .iter()
        .map(|(n, id)| {
            wait_for(180, &format!("{n} to finish"), || {
                max_rss = max_rss.max(proc_status(d.pid(), "VmRSS:"));
                let (st, r) = d.get(&format!("/jobs/{n}/runs/{id}"));
                (st == 200 && !matches!(r["status"].as_str(), Some("queued" | "running")))
                    .then_some(r)
            })
        })
        .collect();
    let (flood, bomb, spin, procs) = (&finals[0], &finals[1], &finals[2], &finals[3]);
    assert_eq!(flood["status"], "succeeded", "{flood}");
    assert_eq!(flood["output_bytes"], 1u64 << 30);
    assert_eq!(flood["output_truncated"], true);
    assert!(flood["output"]
        .as_str()
        .unwrap()
        .contains("max_output_kb = 1024"));
    assert_eq!(bomb["status"], "failed");
    assert!(
        bomb["error"]
            .as_str()
            .unwrap()
            .contains("memory_mb limit is 256 MiB"),
        "{bomb}"
    );
    assert_eq!(spin["status"], "failed");
    assert!(
        spin["error"]
            .as_str()
            .unwrap()
            .contains("cpu_seconds limit of 2 s"),
        "{spin}"
    );
    let line = procs["output"].as_str().unwrap();
    if d.get("/health").1["containment"]["mode"] == "process_group" {
        assert!(
            line.split_whitespace().filter(|w| *w == "77").count() == 2,
            "soft and hard RLIMIT_NPROC: {line}"
        );
    } else {
        assert!(
            line.lines().any(|l| l.trim() == "77"),
            "the run's pids.max: {line}"
        );
    }
    assert!(max_rss < 64 * 1024, "daemon RSS reached {max_rss} KiB");
    // The every-second job fired while the spinner was burning its CPU limit.
    let (s0, s1) = (
        spin["started_at"].as_str().unwrap().to_string(),
        spin["finished_at"].as_str().unwrap().to_string(),
    );
    let (_, ticks) = d.get("/jobs/tick/runs?limit=1000");
    let during = ticks
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .filter(|r| {
            let s = r["started_at"].as_str().unwrap();
            s > s0.as_str() && s < s1.as_str()
        })
        .count();
    assert!(during >= 1, "no tick between {s0} and {s1}: {spin}");
}
