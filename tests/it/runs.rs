//! Agent execution through the real daemon: interval firing, run records, overlap
//! policies, timeouts that kill whole process groups, rlimits, output cuts, retries.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn manual(d: &Daemon, job: &str) -> String {
    let (st, v) = d.post(&format!("/jobs/{job}/run"), &json!({}));
    assert_eq!(st, 202, "{v}");
    v["run_id"].as_str().expect("run_id").to_string()
}

#[test]
fn interval_job_runs_and_records_everything() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let mut job = sh_job(
        "tick",
        "echo \"out:$BOG_JOB_NAME:$BOG_TRIGGER:$1\"; echo to-stderr >&2; test -s \"$BOG_EVENT_FILE\" && echo event-ok; echo \"env:$GREETING\"",
        json!([{"type": "interval", "seconds": 1}]),
    );
    job["agent"]["command"] = json!(["sh", "-c", job["agent"]["command"][2], "sh", "{prompt}"]);
    job["env"] = json!({"GREETING": "hi"});
    d.create(&job);
    let r = d.wait_run("tick", 20, "a succeeded interval run", |r| {
        r["status"] == "succeeded"
    });
    let out = r["output"].as_str().unwrap();
    assert!(
        out.contains("out:tick:interval:test prompt for tick"),
        "{out}"
    );
    assert!(out.contains("event-ok"), "{out}");
    assert!(out.contains("env:hi"), "{out}");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["attempts"], 1);
    assert_eq!(r["stderr_tail"], "to-stderr\n");
    assert!(r["duration_ms"].is_u64());
    assert!(r["started_at"].is_string() && r["finished_at"].is_string());
    assert_eq!(r["trigger"]["type"], "interval");
    assert_eq!(r["trigger"]["seconds"], 1);
    assert!(r["trigger"]["scheduled_at"].is_string());
    // The record on disk is the one served.
    let p = d
        .dir
        .join("runs")
        .join(r["job_id"].as_str().unwrap())
        .join(format!("{}.json", r["id"].as_str().unwrap()));
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    assert_eq!(on_disk["status"], "succeeded");
}

#[test]
fn prompt_via_stdin_and_failed_exit_and_retries() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let mut job = sh_job("stdin", "cat; exit 3", idle_trigger());
    job["agent"]["prompt_via"] = json!("stdin");
    job["max_retries"] = json!(2);
    job["retry_backoff_seconds"] = json!(0.05);
    d.create(&job);
    let id = manual(&d, "stdin");
    let r = d.wait_final("stdin", &id, 20);
    assert_eq!(r["status"], "failed");
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["attempts"], 3);
    assert_eq!(r["output"], "test prompt for stdin");
    assert!(r["error"].as_str().unwrap().contains("code 3"), "{r}");
}

#[test]
fn missing_command_and_working_dir_fail_with_reason() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    d.create(&json!({"name": "nocmd", "prompt": "p", "agent": {"command": ["/no/such/agent-bin"]}, "triggers": idle_trigger()}));
    let r = d.wait_final("nocmd", &manual(&d, "nocmd"), 20);
    assert_eq!(r["status"], "failed");
    assert!(r["error"].as_str().unwrap().contains("not found"), "{r}");

    let mut job = sh_job("nodir", "true", idle_trigger());
    job["working_dir"] = json!("/no/such/dir/anywhere");
    d.create(&job);
    let r = d.wait_final("nodir", &manual(&d, "nodir"), 20);
    assert_eq!(r["status"], "failed");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("/no/such/dir/anywhere"),
        "{r}"
    );
}

#[test]
fn default_agent_from_config_gets_prompt_and_model() {
    let t = tempdir();
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("config.json"),
        r#"{"default_agent": ["sh", "-c", "echo \"[$0] [$1]\"", "{model}", "{prompt}"]}"#,
    )
    .unwrap();
    let d = Daemon::start(t.path(), &[]);
    d.create(&json!({"name": "dflt", "prompt": "hello {{job_name}} via {{trigger}}", "model": "m1", "triggers": idle_trigger()}));
    let r = d.wait_final("dflt", &manual(&d, "dflt"), 20);
    assert_eq!(r["output"], "[m1] [hello dflt via manual]\n", "{r}");
}

/// A script that starts and stays busy until a flag file appears.
fn blocker(flag: &std::path::Path) -> String {
    format!(
        "while [ ! -e {} ]; do sleep 0.02; done; echo done",
        flag.display()
    )
}

#[test]
fn overlap_skip_queue_parallel() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &["--workers", "4"]);
    for (name, policy) in [("skip", "skip"), ("queue", "queue"), ("par", "parallel")] {
        let flag = t.path().join(format!("flag-{name}"));
        let mut job = sh_job(name, &blocker(&flag), idle_trigger());
        job["overlap"] = json!(policy);
        d.create(&job);
        let first = manual(&d, name);
        d.wait_run(name, 20, "first run running", |r| {
            r["id"] == first.as_str() && r["status"] == "running"
        });
        let (_, a) = d.post(&format!("/jobs/{name}/run"), &json!({}));
        let (_, b) = d.post(&format!("/jobs/{name}/run"), &json!({}));
        match policy {
            "skip" => {
                assert_eq!(a["status"], "skipped");
                assert_eq!(b["status"], "skipped");
                let r = d.wait_final(name, a["run_id"].as_str().unwrap(), 5);
                assert_eq!(r["status"], "skipped");
                assert!(r["error"].as_str().unwrap().contains("overlap"));
            }
            "queue" => {
                assert_eq!(a["status"], "queued");
                assert_eq!(b["status"], "coalesced");
                assert_eq!(
                    a["run_id"], b["run_id"],
                    "second firing coalesces into the pending run"
                );
            }
            _ => {
                assert_eq!(a["status"], "queued");
                assert_eq!(b["status"], "queued");
                // All three run at once: each is running before any is released.
                for id in [&a["run_id"], &b["run_id"]] {
                    d.wait_run(name, 20, "parallel run running", |r| {
                        &r["id"] == id && r["status"] == "running"
                    });
                }
            }
        }
        std::fs::write(&flag, "").unwrap();
        let r = d.wait_final(name, &first, 20);
        assert_eq!(r["status"], "succeeded");
        if policy == "queue" {
            let r = d.wait_final(name, a["run_id"].as_str().unwrap(), 20);
            assert_eq!(r["status"], "succeeded");
            let (_, runs) = d.get(&format!("/jobs/{name}/runs"));
            assert_eq!(
                runs.as_array().unwrap().len(),
                2,
                "one active + one coalesced pending"
            );
        }
        if policy == "parallel" {
            for id in [&a["run_id"], &b["run_id"]] {
                assert_eq!(
                    d.wait_final(name, id.as_str().unwrap(), 20)["status"],
                    "succeeded"
                );
            }
        }
    }
}

#[test]
fn timeout_kills_the_process_group_including_grandchildren() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let pids = t.path().join("pids");
    // The agent starts a grandchild that ignores SIGTERM, records both pids, then waits.
    let script = format!(
        "sh -c 'trap \"\" TERM; while true; do sleep 0.05; done' & echo $$ $! > {p}.tmp; mv {p}.tmp {p}; wait",
        p = pids.display()
    );
    let mut job = sh_job("slow", &script, idle_trigger());
    job["limits"] = json!({"timeout_seconds": 1});
    d.create(&job);
    let id = manual(&d, "slow");
    let text = wait_for(20, "pid file", || std::fs::read_to_string(&pids).ok());
    let ps: Vec<i32> = text
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(ps.len(), 2);
    assert!(ps.iter().all(|p| alive(*p)), "agent and grandchild started");
    let r = d.wait_final("slow", &id, 30);
    assert_eq!(r["status"], "timed_out");
    assert!(
        r["error"].as_str().unwrap().contains("timeout_seconds"),
        "{r}"
    );
    for p in ps {
        wait_for(10, &format!("pid {p} gone"), || (!alive(p)).then_some(()));
    }
}

#[test]
fn memory_limit_stops_an_agent_that_allocates_past_it() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    d.create(&json!({
        "name": "mem", "prompt": "p",
        "agent": {"command": ["python3", "-c", "x = bytearray(512 * 1024 * 1024); print('allocated')"]},
        "limits": {"memory_mb": 128},
        "triggers": idle_trigger()
    }));
    let r = d.wait_final("mem", &manual(&d, "mem"), 30);
    assert_eq!(r["status"], "failed", "{r}");
    assert!(!r["output"].as_str().unwrap().contains("allocated"));
    assert!(r["error"].as_str().unwrap().contains("memory_mb"), "{r}");
    if d.get("/health").1["containment"]["mode"] == "process_group" {
        // RLIMIT_DATA: the allocation fails inside the agent.
        assert!(
            r["stderr_tail"].as_str().unwrap().contains("MemoryError"),
            "{r}"
        );
    } else {
        // The run's cgroup: the kernel's OOM killer ends it, and the record says so.
        assert_eq!(r["signal"], "SIGKILL", "{r}");
        assert!(
            r["error"].as_str().unwrap().contains("out of memory"),
            "{r}"
        );
    }
}

#[test]
fn cpu_limit_is_named() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let mut job = sh_job("spin", "while :; do :; done", idle_trigger());
    job["limits"] = json!({"cpu_seconds": 1, "timeout_seconds": 60});
    d.create(&job);
    let r = d.wait_final("spin", &manual(&d, "spin"), 60);
    assert_eq!(r["status"], "failed", "{r}");
    assert!(r["error"].as_str().unwrap().contains("cpu_seconds"), "{r}");
}

#[test]
fn output_is_cut_at_max_output_kb() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let mut job = sh_job(
        "flood",
        "head -c 300000 /dev/zero | tr '\\0' a",
        idle_trigger(),
    );
    job["limits"] = json!({"max_output_kb": 4});
    d.create(&job);
    let r = d.wait_final("flood", &manual(&d, "flood"), 30);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["output_truncated"], true);
    assert_eq!(r["output_bytes"], 300000);
    let out = r["output"].as_str().unwrap();
    assert!(out.starts_with(&"a".repeat(4096)));
    assert!(
        out.contains("output cut at max_output_kb = 4 KiB"),
        "{}",
        &out[4096..]
    );
    assert!(out.len() < 4096 + 200);
}

#[test]
fn file_and_stdout_outputs_and_dispatch_errors() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let f = t.path().join("result.txt");
    let mut job = sh_job("outs", "echo result-text; exit 1", idle_trigger());
    job["outputs"] = json!([
        {"type": "file", "path": f.to_str().unwrap()},
        {"type": "stdout", "on": ["succeeded"]},
        {"type": "file", "path": "/no/such/dir/out.txt", "on": ["failed"]},
        {"type": "log"}
    ]);
    d.create(&job);
    let id = manual(&d, "outs");
    let r = d.wait_final("outs", &id, 20);
    assert_eq!(r["status"], "failed");
    let text = std::fs::read_to_string(&f).unwrap();
    assert!(
        text.contains(&format!("=== outs run {id}"))
            && text.contains("failed")
            && text.contains("result-text"),
        "{text}"
    );
    assert!(
        !d.stdout().contains("result-text"),
        "stdout output is only for succeeded runs"
    );
    let errs = r["dispatch_errors"].as_array().unwrap();
    assert_eq!(errs.len(), 1, "{r}");
    assert_eq!(errs[0]["target"], "file");
    assert!(errs[0]["error"]
        .as_str()
        .unwrap()
        .contains("/no/such/dir/out.txt"));
    assert!(d.stderr().contains("output.log"), "log output line");
}

#[test]
fn history_keeps_the_newest_runs() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let mut job = sh_job("hist", "echo x", idle_trigger());
    job["history"] = json!(3);
    let j = d.create(&job);
    let mut ids = Vec::new();
    for _ in 0..6 {
        let id = manual(&d, "hist");
        d.wait_final("hist", &id, 20);
        ids.push(id);
    }
    let want: Vec<&str> = ids.iter().rev().take(3).map(String::as_str).collect();
    // The worker prunes just after it writes the final record: wait for it.
    wait_for(10, "history pruned to the newest 3", || {
        let (_, runs) = d.get("/jobs/hist/runs");
        let got: Vec<String> = runs
            .as_array()?
            .iter()
            .filter_map(|r| r["id"].as_str().map(String::from))
            .collect();
        (got == want).then_some(())
    });
    let files = std::fs::read_dir(d.dir.join("runs").join(j["id"].as_str().unwrap()))
        .unwrap()
        .count();
    assert_eq!(files, 3);
}

/// An agent whose grandchild escapes into its own session (setsid) and ignores SIGTERM:
/// nothing of it survives the run, whether the agent exits, times out, or the daemon stops.
#[test]
fn escaped_grandchildren_do_not_survive() {
    let t = tempdir();
    let mut d = Daemon::start(t.path(), &["--grace", "1"]);
    let script = |pidfile: &std::path::Path, tail: &str| {
        format!(
            "setsid sh -c 'trap \"\" TERM; echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 300' </dev/null >/dev/null 2>&1 & \
             while [ ! -s {p} ]; do sleep 0.01; done; {tail}",
            p = pidfile.display()
        )
    };
    let cases = [("exits", "echo done"), ("hangs", "trap '' TERM; sleep 300")];
    let mut pids = Vec::new();
    for (name, tail) in cases {
        let pidfile = t.path().join(format!("{name}.pid"));
        let mut job = sh_job(name, &script(&pidfile, tail), idle_trigger());
        // Long enough for the escaped process to start and write its pid on a busy machine.
        job["limits"] = json!({"timeout_seconds": 5});
        d.create(&job);
        let id = manual(&d, name);
        let pid: i32 = wait_pid_file(&pidfile, "escaped pid");
        let r = d.wait_final(name, &id, 30);
        // A run that exits leaves the escapee behind and its record counts it; at a timeout
        // a run cgroup kills every process at once, so the count depends on which kill
        // reached the escapee first: only its absence is certain there.
        if name == "exits" {
            assert!(
                r["error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("left its process group"),
                "{r}"
            );
        }
        wait_for(10, &format!("escaped pid {pid} gone"), || {
            (!alive(pid)).then_some(())
        });
        pids.push(pid);
    }
    // Daemon shutdown with the agent still running.
    let pidfile = t.path().join("shutdown.pid");
    d.create(&sh_job(
        "shutdown",
        &script(&pidfile, "sleep 300"),
        idle_trigger(),
    ));
    manual(&d, "shutdown");
    let pid: i32 = wait_pid_file(&pidfile, "escaped pid");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(30).code(), Some(0));
    wait_for(
        10,
        &format!("escaped pid {pid} gone after shutdown"),
        || (!alive(pid)).then_some(()),
    );
}

/// A job whose agent leaves a marker named after its run id, waits for `gate`, then echoes
/// its prompt.
fn gated_job(name: &str, t: &std::path::Path, overlap: &str, prompt: &str) -> Value {
    let script = format!(
        "touch {m}/$BOG_RUN_ID; while [ ! -e {g} ]; do sleep 0.02; done; echo \"$1\"",
        m = t.join("markers").display(),
        g = t.join("gate").display()
    );
    json!({
        "name": name, "prompt": prompt, "overlap": overlap,
        "agent": {"command": ["sh", "-c", script, "sh", "{prompt}"]},
        "triggers": idle_trigger(),
    })
}

#[test]
fn patch_applies_to_a_run_that_has_not_started() {
    let t = tempdir();
    std::fs::create_dir_all(t.path().join("markers")).unwrap();
    let d = Daemon::start(t.path(), &["--workers", "2"]);
    d.create(&gated_job("q", t.path(), "queue", "v1"));
    let first = manual(&d, "q");
    d.wait_run("q", 20, "first run running", |r| {
        r["id"] == first.as_str() && r["status"] == "running"
    });
    let pending = manual(&d, "q");
    let (st, v) = d.req("PATCH", "/jobs/q", Some(r#"{"prompt": "v2"}"#));
    assert_eq!(st, 200, "{v}");
    std::fs::write(t.path().join("gate"), "").unwrap();
    assert_eq!(d.wait_final("q", &first, 20)["output"], "v1\n");
    let r = d.wait_final("q", &pending, 20);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(
        r["output"], "v2\n",
        "the pending run renders the job as it is at start"
    );
}

#[test]
fn delete_cancels_runs_that_have_not_started() {
    let t = tempdir();
    let markers = t.path().join("markers");
    std::fs::create_dir_all(&markers).unwrap();
    // One worker: a run waits for it in the queue, and runs happen one after another.
    let d = Daemon::start(t.path(), &["--workers", "1"]);
    d.create(&gated_job("q", t.path(), "queue", "old"));
    d.create(&gated_job("p", t.path(), "parallel", "old"));
    d.create(&sh_job("fence", "true", idle_trigger()));
    let running = manual(&d, "q");
    d.wait_run("q", 20, "first run running", |r| {
        r["id"] == running.as_str() && r["status"] == "running"
    });
    let pending = manual(&d, "q"); // overlap queue: pending behind the running one
    let waiting = manual(&d, "p"); // in the work queue, waiting for the one worker
    assert_eq!(d.req("DELETE", "/jobs/q", None).0, 204);
    assert_eq!(d.req("DELETE", "/jobs/p", None).0, 204);
    std::fs::write(t.path().join("gate"), "").unwrap();
    // The fence runs on the same worker after anything still queued before it.
    let fence = manual(&d, "fence");
    assert_eq!(d.wait_final("fence", &fence, 30)["status"], "succeeded");
    assert!(markers.join(&running).exists(), "the running run went on");
    for id in [&pending, &waiting] {
        assert!(
            !markers.join(id).exists(),
            "run {id} started after its job was deleted"
        );
    }
    let left: Vec<String> = std::fs::read_dir(d.dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left.len(),
        1,
        "only the fence job's records remain: {left:?}"
    );
}

#[test]
fn concurrent_delete_and_run_of_one_job() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &["--workers", "4"]);
    let mut statuses: std::collections::BTreeMap<u16, usize> = Default::default();
    let mut errors = Vec::new();
    for round in 0..40 {
        let name = format!("race{round}");
        let mut job = sh_job(&name, "true", idle_trigger());
        job["overlap"] = json!("parallel");
        d.create(&job);
        let barrier = std::sync::Barrier::new(12);
        let results: Vec<Vec<(u16, Value)>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..12)
                .map(|i| {
                    let (d, name, barrier) = (&d, &name, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        (0..4)
                            .map(|k| {
                                if (i + k) % 4 == 2 {
                                    d.req("DELETE", &format!("/jobs/{name}"), None)
                                } else {
                                    d.post(&format!("/jobs/{name}/run"), &json!({}))
                                }
                            })
                            .collect()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (st, v) in results.into_iter().flatten() {
            *statuses.entry(st).or_default() += 1;
            if ![202, 204, 404].contains(&st) {
                errors.push(format!("{st} {v}"));
            }
        }
    }
    assert!(
        errors.is_empty(),
        "{statuses:?}, {} unexpected answers, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    // Every job is gone; once nothing runs, no record directory may be left behind.
    wait_for(30, "all runs to finish", || {
        let m = d.get("/metrics").1;
        (m["runs_running"] == 0 && m["runs_queued"] == 0 && d.get("/health").1["running"] == 0)
            .then_some(())
    });
    let left: Vec<String> = std::fs::read_dir(d.dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.is_empty(),
        "orphan run directories: {left:?} ({statuses:?})"
    );
}

#[test]
fn job_file_removed_by_hand_during_a_run_still_finishes_its_records() {
    let t = tempdir();
    std::fs::create_dir_all(t.path().join("markers")).unwrap();
    let d = Daemon::start(t.path(), &["--workers", "2"]);
    let j = d.create(&gated_job("hand", t.path(), "queue", "p"));
    let id = j["id"].as_str().unwrap().to_string();
    let running = manual(&d, "hand");
    d.wait_run("hand", 20, "run running", |r| {
        r["id"] == running.as_str() && r["status"] == "running"
    });
    let pending = manual(&d, "hand");
    std::fs::remove_file(d.dir.join("jobs").join(format!("{id}.json"))).unwrap();
    d.signal(libc::SIGHUP);
    wait_for(10, "job unloaded", || {
        (d.get("/jobs/hand").0 == 404).then_some(())
    });
    std::fs::write(t.path().join("gate"), "").unwrap();
    let record = |run: &str| -> Option<Value> {
        let p = d.dir.join("runs").join(&id).join(format!("{run}.json"));
        serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
    };
    let r = wait_for(20, "the running run's record to be final", || {
        record(&running).filter(|r| r["status"] != "running" && r["status"] != "queued")
    });
    assert_eq!(r["status"], "succeeded", "{r}");
    let r = wait_for(20, "the pending run's record to be final", || {
        record(&pending).filter(|r| r["status"] != "queued")
    });
    assert_eq!(r["status"], "skipped", "{r}");
    assert!(r["error"].as_str().unwrap().contains("removed"), "{r}");
}

/// A running run's output is streamed as the agent writes it, redacted, and the stream ends
/// when the run ends; a finished run's output is answered whole.
#[test]
fn a_running_runs_output_streams_line_by_line_and_ends_with_the_run() {
    use std::io::{BufRead, BufReader};
    let t = tempdir();
    let d = Daemon::start_env(t.path(), &[], &[("OPENAI_API_KEY", "sk-stream-secret-42")]);
    let flag = t.path().join("go-on");
    let script = format!(
        "echo first line; echo \"key $OPENAI_API_KEY\"; while [ ! -e {f} ]; do sleep 0.05; done; echo last line",
        f = flag.display()
    );
    let mut job = sh_job("talker", &script, idle_trigger());
    job["limits"] = json!({"timeout_seconds": 60});
    d.create(&job);
    let run = manual(&d, "talker");
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let resp = agent
        .get(&format!(
            "http://127.0.0.1:{}/jobs/talker/runs/{run}/output",
            d.port
        ))
        .set("Authorization", &format!("Bearer {}", d.token))
        .call()
        .expect("output stream");
    assert_eq!(resp.header("Transfer-Encoding"), Some("chunked"));
    let mut lines = BufReader::new(resp.into_reader()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first line");
    // The agent is still running: it waits for the flag that only this test makes.
    assert_eq!(lines.next().unwrap().unwrap(), "key [redacted]");
    // The `running` record is written beside the starting agent (fire first, write after),
    // so it may trail the first lines by a moment.
    wait_for(20, "the record says running", || {
        let (_, rec) = d.get(&format!("/jobs/talker/runs/{run}"));
        (rec["status"] == "running").then_some(())
    });
    std::fs::write(&flag, "").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "last line");
    assert!(lines.next().is_none(), "the stream ends with the run");
    let rec = d.wait_final("talker", &run, 30);
    assert_eq!(rec["status"], "succeeded", "{rec}");
    // Finished: the whole output at once, not chunked.
    let resp = agent
        .get(&format!(
            "http://127.0.0.1:{}/jobs/talker/runs/{run}/output",
            d.port
        ))
        .set("Authorization", &format!("Bearer {}", d.token))
        .call()
        .expect("finished output");
    assert!(resp.header("Transfer-Encoding").is_none());
    assert_eq!(
        resp.into_string().unwrap(),
        "first line\nkey [redacted]\nlast line\n"
    );
    // Unknown runs and a missing token.
    assert_eq!(d.get("/jobs/talker/runs/run_nope/output").0, 404);
    let (st, _, _) = d.raw(
        "GET",
        &format!("/jobs/talker/runs/{run}/output"),
        None,
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(st, 401);
}
