//! The intake journal (`src/store/journal.rs`): a firing's first record is durable once its
//! 202 is sent, though its file is written only at the journal's next checkpoint. These
//! tests hold checkpoints off (`BOG_JOURNAL_CHECKPOINT_MS`, and fewer records than fill a
//! segment), so after `kill -9` the journal is the only durable copy of what was
//! acknowledged: the state a power cut leaves when the page cache is lost.

use crate::common::*;
use serde_json::{json, Value};

const SECRET: &str = "journal-secret";
/// Long enough that no checkpoint runs during a test.
const HOLD: (&str, &str) = ("BOG_JOURNAL_CHECKPOINT_MS", "600000");

fn hook_job(name: &str, path: &str) -> Value {
    json!({
        "name": name, "prompt": "p", "overlap": "skip", "history": 1000,
        "agent": {"command": ["sleep", "60"]},
        "triggers": [{"type": "webhook", "path": path, "secret_env": "JOURNAL_SECRET"}],
    })
}

/// `n` signed deliveries to `path` from 8 threads at once; the run ids of their 202s.
fn deliver(d: &Daemon, path: &str, n: usize) -> Vec<String> {
    let ids = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..8 {
            let ids = &ids;
            s.spawn(move || {
                for k in (t..n).step_by(8) {
                    let body = json!({"k": k}).to_string();
                    let sig = github_signature(SECRET, body.as_bytes());
                    let (st, _, text) = d.raw(
                        "POST",
                        path,
                        Some(body.as_bytes()),
                        &[("X-Hub-Signature-256", &sig)],
                    );
                    assert_eq!(st, 202, "{text}");
                    let v: Value = serde_json::from_str(&text).unwrap();
                    let id = v["run_ids"][0].as_str().unwrap().to_string();
                    ids.lock().unwrap().push(id);
                }
            });
        }
    });
    ids.into_inner().unwrap()
}

fn metric(d: &Daemon, name: &str) -> u64 {
    d.get("/metrics").1[name].as_u64().unwrap()
}

/// 200 concurrent deliveries are acknowledged; the daemon is killed before any checkpoint,
/// so none of the skipped runs has a file yet. After the restart every acknowledged run has
/// its record (the one that ran: `interrupted`; the rest: `skipped`), restored from the
/// journal, and a second restart restores nothing (the journal was retired).
#[test]
fn acknowledged_records_come_back_from_the_journal_alone() {
    let _g = heavy();
    let t = tempdir();
    let env = [("JOURNAL_SECRET", SECRET), HOLD];
    let mut d = Daemon::start_env(t.path(), &[], &env);
    let job = d.create(&hook_job("wh", "/hooks/j"));
    let job_id = job["id"].as_str().unwrap().to_string();
    let ids = deliver(&d, "/hooks/j", 200);
    assert_eq!(ids.len(), 200);
    // Served from memory before their files exist.
    let (st, listed) = d.get("/jobs/wh/runs?limit=1000");
    assert_eq!(st, 200);
    assert_eq!(listed.as_array().unwrap().len(), 200, "{listed}");
    assert!(metric(&d, "journal_records_total") >= 199);
    assert_eq!(metric(&d, "journal_checkpoints_total"), 0);
    d.kill9();
    let runs = d.dir.join("runs").join(&job_id);
    let on_disk = ids
        .iter()
        .filter(|id| runs.join(format!("{id}.json")).exists())
        .count();
    // At most the run that started has a file (its `running` record is written durably).
    assert!(
        on_disk <= 1,
        "{on_disk} records were written before a checkpoint"
    );

    let mut d = Daemon::start_env(t.path(), &[], &env);
    let log = d.stderr();
    assert!(
        log.contains("restored from the intake journal"),
        "no replay in the log:\n{log}"
    );
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for id in &ids {
        let (st, r) = d.get(&format!("/jobs/wh/runs/{id}"));
        assert_eq!(
            st, 200,
            "run {id} was acknowledged with 202 and has no record"
        );
        *statuses
            .entry(r["status"].as_str().unwrap().to_string())
            .or_default() += 1;
        assert!(runs.join(format!("{id}.json")).exists(), "{id}: no file");
    }
    assert_eq!(statuses.get("skipped"), Some(&199), "{statuses:?}");
    assert_eq!(statuses.get("interrupted"), Some(&1), "{statuses:?}");
    d.kill9();
    let d = Daemon::start_env(t.path(), &[], &env);
    assert!(
        !d.stderr().contains("restored from the intake journal"),
        "the journal was replayed twice:\n{}",
        d.stderr()
    );
    assert_eq!(
        d.get("/jobs/wh/runs?limit=1000")
            .1
            .as_array()
            .unwrap()
            .len(),
        200
    );
}

/// A job deleted after its deliveries were acknowledged stays deleted: replay restores no
/// record into its removed directory. Another job's records, in the same journal, come back.
#[test]
fn a_deleted_job_s_records_are_not_brought_back() {
    let t = tempdir();
    let env = [("JOURNAL_SECRET", SECRET), HOLD];
    let mut d = Daemon::start_env(t.path(), &[], &env);
    let gone = d.create(&hook_job("gone", "/hooks/gone"));
    d.create(&hook_job("kept", "/hooks/kept"));
    let gone_ids = deliver(&d, "/hooks/gone", 16);
    let kept_ids = deliver(&d, "/hooks/kept", 16);
    let (st, _) = d.req("DELETE", "/jobs/gone", None);
    assert_eq!(st, 204);
    d.kill9();
    let d = Daemon::start_env(t.path(), &[], &env);
    assert_eq!(d.get("/jobs/gone").0, 404);
    let dir = d.dir.join("runs").join(gone["id"].as_str().unwrap());
    assert!(!dir.exists(), "{} was recreated", dir.display());
    for id in &kept_ids {
        assert_eq!(d.get(&format!("/jobs/kept/runs/{id}")).0, 200, "{id}");
    }
    assert_eq!(gone_ids.len(), 16);
}

/// A clean stop checkpoints: the files are written and the next start replays nothing.
#[test]
fn a_clean_stop_writes_every_file() {
    let t = tempdir();
    let env = [("JOURNAL_SECRET", SECRET), HOLD];
    let mut d = Daemon::start_env(t.path(), &[], &env);
    let job = d.create(&hook_job("wh", "/hooks/s"));
    let ids = deliver(&d, "/hooks/s", 24);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(60).success());
    let runs = d.dir.join("runs").join(job["id"].as_str().unwrap());
    for id in &ids {
        let text = std::fs::read_to_string(runs.join(format!("{id}.json")))
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let r: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(r["id"], json!(id));
    }
    let d = Daemon::start_env(t.path(), &[], &env);
    assert!(!d.stderr().contains("restored from the intake journal"));
}

/// A checkpoint that cannot write a record's file (here its job's directory was replaced
/// by a file) does not hold the daemon's stop: the daemon exits with the records still in
/// the journal, and the next start restores them. It once retried for ever, and the daemon
/// never exited.
#[test]
fn a_failing_checkpoint_does_not_hold_the_stop() {
    let t = tempdir();
    let env = [("JOURNAL_SECRET", SECRET), HOLD];
    let mut d = Daemon::start_env(t.path(), &[], &env);
    // The first delivery's run is held while the others come (they are skipped), then ends.
    let flag = t.path().join("go");
    let mut job = hook_job("wh", "/hooks/f");
    job["agent"] = json!({"command": ["sh", "-c", hold_until(&flag)]});
    let job = d.create(&job);
    let ids = deliver(&d, "/hooks/f", 8);
    std::fs::write(&flag, b"").unwrap();
    // Every run is final: the one that ran has its file; the skipped ones are only in the
    // journal.
    for id in &ids {
        d.wait_final("wh", id, 60);
    }
    let runs = d.dir.join("runs").join(job["id"].as_str().unwrap());
    let held: Vec<&String> = ids
        .iter()
        .filter(|id| !runs.join(format!("{id}.json")).exists())
        .collect();
    assert_eq!(held.len(), 7, "the skipped runs are only in the journal");
    let aside = d.dir.join("runs-aside");
    std::fs::rename(&runs, &aside).unwrap();
    std::fs::write(&runs, b"not a directory").unwrap();
    let pid = d.pid();
    // Whatever happens, no daemon is left behind.
    struct Reap(i32);
    impl Drop for Reap {
        fn drop(&mut self) {
            if self.0 > 0 {
                // SAFETY: kill(2) on a child this test started and has not reaped.
                unsafe {
                    libc::kill(self.0, libc::SIGKILL);
                }
            }
        }
    }
    let mut reap = Reap(pid);
    d.signal(libc::SIGTERM);
    let st = d.wait_exit(60);
    reap.0 = 0;
    assert!(st.success(), "{st:?}\n{}", d.stderr());
    assert!(
        d.stderr().contains("journal checkpoint failed"),
        "{}",
        d.stderr()
    );
    std::fs::remove_file(&runs).unwrap();
    std::fs::rename(&aside, &runs).unwrap();
    let d = Daemon::start_env(t.path(), &[], &env);
    for id in &held {
        let (st, r) = d.get(&format!("/jobs/wh/runs/{id}"));
        assert_eq!(st, 200, "run {id} was acknowledged and is lost");
        assert_eq!(r["status"], json!("skipped"));
        assert!(runs.join(format!("{id}.json")).exists(), "{id}: no file");
    }
}

/// A run that goes on while its job keeps firing (overlap `skip`): the skipped records are
/// pruned as they arrive, down to `history`, not when the run ends. Those only the journal
/// held never get a file, and after `kill -9` the replay brings back exactly the records
/// that were listed, not the pruned ones.
#[test]
fn skipped_records_are_pruned_as_they_arrive_and_stay_pruned_after_a_crash() {
    let t = tempdir();
    let mut d = Daemon::start_env(t.path(), &[], &[HOLD]);
    let job = d.create(&json!({
        "name": "busy", "prompt": "p", "overlap": "skip", "history": 20,
        "agent": {"command": ["sleep", "60"]},
        "triggers": [{"type": "cron", "cron": "0 0 1 1 *"}],
    }));
    let job_id = job["id"].as_str().unwrap().to_string();
    let count = |d: &Daemon| {
        d.get("/jobs/busy/runs?limit=1000")
            .1
            .as_array()
            .unwrap()
            .len()
    };
    // With history 20 the job may hold 20 + 16 records before a prune takes it back to
    // 20 (and the run that is going on, which is never pruned).
    let mut fired = Vec::new();
    let mut pruned = 0;
    while pruned < 2 {
        let before = count(&d);
        let (st, r) = d.post("/jobs/busy/run", &json!({}));
        assert_eq!(st, 202, "{r}");
        fired.push(r["run_id"].as_str().unwrap().to_string());
        let after = count(&d);
        assert!(after <= 20 + 16 + 1, "{after} records kept with history 20");
        if after < before {
            assert_eq!(after, 21, "a prune keeps history and the active run");
            pruned += 1;
        }
        assert!(fired.len() < 200, "no prune after {} firings", fired.len());
    }
    // One more firing flushes the last prune's tombstones with its record.
    let (st, r) = d.post("/jobs/busy/run", &json!({}));
    assert_eq!(st, 202, "{r}");
    fired.push(r["run_id"].as_str().unwrap().to_string());
    let listed = |d: &Daemon| -> std::collections::BTreeSet<String> {
        d.get("/jobs/busy/runs?limit=1000")
            .1
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let kept = listed(&d);
    assert_eq!(kept.len(), 22);
    assert!(kept.contains(&fired[0]), "the active run was pruned");
    assert!(kept.contains(fired.last().unwrap()));
    assert!(metric(&d, "journal_discarded_total") >= 32);
    // A flood of skipped firings writes one info line (a minute's worth), the rest at the
    // debug level.
    let log = d.stderr();
    let info = log.matches("INFO  run.skipped").count();
    let debug = log.matches("DEBUG run.skipped").count();
    assert_eq!(info, 1, "{log}");
    assert_eq!(info + debug, fired.len() - 1, "one per skipped firing");
    d.kill9();
    // Nothing was checkpointed: only the running record has a file.
    let runs = d.dir.join("runs").join(&job_id);
    let files = std::fs::read_dir(&runs)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))
        })
        .count();
    assert!(
        files <= 1,
        "{files} record files written for pruned firings"
    );
    let d = Daemon::start_env(t.path(), &[], &[HOLD]);
    assert_eq!(listed(&d), kept, "the replay brought pruned records back");
}
