//! Durability and lifecycle: kill -9 after a 201, kill -9 mid-run, corrupt files, the
//! data dir lock, SIGTERM draining, SIGHUP reloads.

use crate::common::*;
use serde_json::json;

#[test]
fn job_survives_kill9_right_after_201() {
    let t = tempdir();
    let mut d = Daemon::start(t.path(), &[]);
    let mut ids = Vec::new();
    for i in 0..20 {
        let j = d.create(&sh_job(&format!("j{i}"), "true", idle_trigger()));
        ids.push(j["id"].as_str().unwrap().to_string());
    }
    d.kill9();
    let d = Daemon::start(t.path(), &[]);
    for (i, id) in ids.iter().enumerate() {
        let (st, j) = d.get(&format!("/jobs/{id}"));
        assert_eq!(st, 200, "job {id} lost");
        assert_eq!(j["name"], format!("j{i}"));
    }
    // No temp files or quarantined files were left.
    for e in std::fs::read_dir(d.dir.join("jobs")).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            n.ends_with(".json") && !n.starts_with('.'),
            "stray file {n}"
        );
    }
}

#[test]
fn kill9_during_a_run_marks_it_interrupted_after_restart() {
    let t = tempdir();
    let mut d = Daemon::start(t.path(), &[]);
    let pidfile = t.path().join("agent.pid");
    d.create(&sh_job(
        "long",
        &format!("echo $$ > {}; exec sleep 30", pidfile.display()),
        idle_trigger(),
    ));
    let (_, v) = d.post("/jobs/long/run", &json!({}));
    let id = v["run_id"].as_str().unwrap().to_string();
    d.wait_run("long", 20, "run to be running", |r| {
        r["id"] == id.as_str() && r["status"] == "running"
    });
    let pid: i32 = wait_pid_file(&pidfile, "agent pid");
    d.kill9();
    assert!(
        alive(pid),
        "the orphaned agent outlives a kill -9 of the daemon"
    );
    let d = Daemon::start(t.path(), &[]);
    wait_for(10, "the orphaned agent to be killed at restart", || {
        (!alive(pid)).then_some(())
    });
    let (_, r) = d.get(&format!("/jobs/long/runs/{id}"));
    assert_eq!(r["status"], "interrupted", "{r}");
    assert!(r["error"].as_str().unwrap().contains("daemon stopped"));
    assert!(d.stderr().contains("run.interrupted"));
}

#[test]
fn corrupt_job_file_is_quarantined_and_daemon_starts() {
    let t = tempdir();
    let mut d = Daemon::start(t.path(), &[]);
    let good = d.create(&sh_job("good", "true", idle_trigger()));
    let bad = d.create(&sh_job("bad", "true", idle_trigger()));
    d.kill9();
    let bad_path = d
        .dir
        .join("jobs")
        .join(format!("{}.json", bad["id"].as_str().unwrap()));
    let text = std::fs::read_to_string(&bad_path).unwrap();
    std::fs::write(&bad_path, &text[..text.len() / 2]).unwrap();
    let d = Daemon::start(t.path(), &[]);
    let (st, _) = d.get(&format!("/jobs/{}", good["id"].as_str().unwrap()));
    assert_eq!(st, 200);
    assert_eq!(d.get("/jobs/bad").0, 404);
    assert!(!bad_path.exists());
    assert!(bad_path.with_extension("json.corrupt").exists());
    assert!(d.stderr().contains("store.quarantined"), "{}", d.stderr());
}

#[test]
fn second_daemon_refuses_at_once_naming_the_live_holder() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let out = std::process::Command::new(BIN)
        .args(["run", "--port", "0", "--data-dir"])
        .arg(&d.dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
    // Decided from the first look at the lock: its holder is a live daemon, so there is
    // nothing to wait for (a wait happens only for a holder that is not a live daemon).
    assert!(err.contains(&format!("pid {} is alive", d.pid())), "{err}");
    assert!(!err.contains("waited"), "{err}");
    assert_eq!(d.get("/health").0, 200);
}

#[test]
fn lock_held_by_a_leftover_process_is_waited_for() {
    // A process that is not a daemon holds the lock (as a dead daemon's child between fork
    // and exec would), and the lock file names a pid that is gone: the new daemon waits a
    // moment for it, then refuses and says what it found.
    let t = tempdir();
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let lock = data.join("daemon.lock");
    std::fs::write(
        &lock,
        r#"{"pid":999999999,"port":1,"bind":"127.0.0.1","started_at":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let ino = std::fs::metadata(&lock).unwrap().ino();
    let mut holder = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sleep", "600"])
        .process_group(0)
        .spawn()
        .unwrap();
    wait_for(10, "flock to hold the lock", || {
        std::fs::read_to_string("/proc/locks")
            .ok()?
            .lines()
            .any(|l| l.contains("FLOCK") && l.contains(&format!(":{ino} ")))
            .then_some(())
    });
    let out = std::process::Command::new(BIN)
        .args(["run", "--port", "0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    // SAFETY: kill(2) on the process group of our own child (flock and its sleep).
    unsafe {
        libc::kill(-(holder.id() as i32), libc::SIGKILL);
    }
    let _ = holder.wait();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("waited"), "{err}");
    assert!(err.contains("999999999"), "{err}");
}

#[test]
fn run_tightens_an_open_data_dir() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempdir();
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(t.path(), &[]);
    assert_eq!(
        std::fs::metadata(&d.dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(d.stderr().contains("data_dir.tightened"), "{}", d.stderr());
}

#[test]
fn data_dir_and_token_modes() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.dir), 0o700);
    assert_eq!(mode(&d.dir.join(".token")), 0o600);
    assert_eq!(d.token.len(), 43);
    assert!(
        d.stderr().contains(&d.token),
        "token printed once on first start"
    );
    let (code, out, _) = cli(&d.dir, &["token"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), d.token);
}

#[test]
fn sigterm_drains_a_running_agent_and_exits_zero() {
    let t = tempdir();
    let mut d = Daemon::start(t.path(), &["--grace", "20"]);
    let release = t.path().join("release");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.02; done; echo finished",
        release.display()
    );
    d.create(&sh_job("drain", &script, idle_trigger()));
    let (_, v) = d.post("/jobs/drain/run", &json!({}));
    let id = v["run_id"].as_str().unwrap().to_string();
    d.wait_run("drain", 20, "running", |r| {
        r["id"] == id.as_str() && r["status"] == "running"
    });
    d.signal(libc::SIGTERM);
    // While it drains, the API still answers: reads work, new runs are refused with 503.
    wait_for(10, "firings refused with 503", || {
        (d.post("/jobs/drain/run", &json!({})).0 == 503).then_some(())
    });
    assert_eq!(d.get("/health").0, 200);
    assert_eq!(d.get("/jobs/drain").0, 200);
    std::fs::write(&release, "").unwrap();
    let st = d.wait_exit(30);
    assert_eq!(st.code(), Some(0));
    let dir = d.dir.clone();
    let d2 = Daemon::start(t.path(), &[]);
    assert_eq!(d2.dir, dir);
    let (_, r) = d2.get(&format!("/jobs/drain/runs/{id}"));
    assert_eq!(
        r["status"], "succeeded",
        "the run finished within the grace period: {r}"
    );
    assert_eq!(r["output"], "finished\n");
}

#[test]
fn sigterm_past_grace_kills_and_records_interrupted() {
    let t = tempdir();
    let mut d = Daemon::start(t.path(), &["--grace", "1"]);
    let pidfile = t.path().join("agent.pid");
    d.create(&sh_job(
        "stuck",
        &format!("echo $$ > {}; exec sleep 60", pidfile.display()),
        idle_trigger(),
    ));
    let (_, v) = d.post("/jobs/stuck/run", &json!({}));
    let id = v["run_id"].as_str().unwrap().to_string();
    let pid: i32 = wait_pid_file(&pidfile, "agent pid");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(30).code(), Some(0));
    assert!(!alive(pid), "agent {pid} survived the daemon");
    let d2 = Daemon::start(t.path(), &[]);
    let (_, r) = d2.get(&format!("/jobs/stuck/runs/{id}"));
    assert_eq!(r["status"], "interrupted", "{r}");
}

#[test]
fn sighup_reloads_jobs_from_disk() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let j = d.create(&sh_job("hup", "true", idle_trigger()));
    let path = d
        .dir
        .join("jobs")
        .join(format!("{}.json", j["id"].as_str().unwrap()));
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["prompt"] = json!("changed by hand");
    // Write elsewhere and rename in, as an editor would.
    let tmp = t.path().join("edit.json");
    std::fs::write(&tmp, v.to_string()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    d.signal(libc::SIGHUP);
    wait_for(10, "prompt reloaded", || {
        (d.get("/jobs/hup").1["prompt"] == "changed by hand").then_some(())
    });
    std::fs::remove_file(&path).unwrap();
    d.signal(libc::SIGHUP);
    wait_for(10, "job unloaded", || {
        (d.get("/jobs/hup").0 == 404).then_some(())
    });
}
