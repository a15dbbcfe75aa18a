//! Fresh checkouts per run (`checkout: true` on a git_push trigger) with real git: the agent
//! sees the pushed commit while the working copy holds other content, concurrent runs get
//! their own worktree, it is removed after success (kept after a failure with the flag), the
//! repository's `git worktree list` is clean afterwards, bare repositories and linked
//! worktrees work, and a crash's leftovers go at the next start.

use crate::common::*;
use crate::triggers::{commit, git, repos, wait_baseline};
use serde_json::{json, Value};
use std::path::Path;

/// The repository's worktrees other than its own (bare or main).
fn extra_worktrees(repo: &Path) -> Vec<String> {
    git(repo, &["worktree", "list", "--porcelain"])
        .lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .skip(1)
        .map(String::from)
        .collect()
}

fn checkout_job(name: &str, repo: &Path, script: &str, extra: Value) -> Value {
    let mut t = json!({"type": "git_push", "repo": repo.to_str().unwrap(), "branch": "main",
        "checkout": true});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            t[k] = v;
        }
    }
    json!({
        "name": name, "prompt": "p",
        "agent": {"command": ["sh", "-c", script]},
        "overlap": "parallel",
        "triggers": [t],
    })
}

/// Starts a manual run; returns its id.
fn run_now(d: &Daemon, job: &str) -> String {
    let (st, v) = d.post(&format!("/jobs/{job}/run"), &json!({}));
    assert_eq!(st, 202, "{v}");
    v["run_id"].as_str().unwrap().to_string()
}

const SHOW: &str = "pwd; cat f.txt; echo; echo \"$BOG_CHECKOUT $BOG_COMMIT\"";

fn final_runs(d: &Daemon, job: &str, n: usize) -> Vec<Value> {
    wait_for(30, &format!("{n} finished runs of {job}"), || {
        let (_, v) = d.get(&format!("/jobs/{job}/runs"));
        let rs = v.as_array().cloned().unwrap_or_default();
        let done = rs
            .iter()
            .filter(|r| !matches!(r["status"].as_str(), Some("queued" | "running")))
            .count();
        (rs.len() >= n && done == rs.len()).then_some(rs)
    })
}

#[test]
fn a_push_to_a_bare_repository_runs_the_agent_in_a_checkout_of_the_pushed_commit() {
    let t = tempdir();
    let (bare, work) = repos(t.path());
    let d = Daemon::start(t.path(), &["--git-poll-ms", "100"]);
    d.create(&checkout_job("bare", &bare, SHOW, json!({})));
    wait_baseline(&d, &bare);
    let pushed = commit(&work, "pushed content");
    // The clone's working copy moves on; the agent must see what was pushed.
    std::fs::write(work.join("f.txt"), "uncommitted edit").unwrap();
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    let r = &final_runs(&d, "bare", 1)[0];
    assert_eq!(r["status"], "succeeded", "{r}");
    let run_id = r["id"].as_str().unwrap();
    let path = d.dir.join("checkouts").join(run_id);
    let want = format!(
        "{}\npushed content\n{} {pushed}\n",
        path.display(),
        path.display()
    );
    assert_eq!(r["output"], want.as_str());
    assert_eq!(r["trigger"]["after"], pushed.as_str());
    assert_eq!(r["checkout"]["commit"], pushed.as_str());
    assert_eq!(r["checkout"]["path"], path.to_str().unwrap());
    assert_eq!(r["checkout"]["kept"], false);
    assert!(!path.exists(), "removed after the run");
    assert_eq!(extra_worktrees(&bare), Vec::<String>::new());

    // job test shows the checkout; --exec runs in one and removes it.
    let (code, out, err) = cli(&d.dir, &["job", "test", "bare", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rep: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rep["checkout"]["commit"], pushed.as_str(), "{rep}");
    let test_path = rep["checkout"]["path"].as_str().unwrap();
    assert_eq!(rep["working_dir"], test_path);
    let (code, out, err) = cli(&d.dir, &["job", "test", "bare", "--exec"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\npushed content\n"), "{out}");
    assert!(!d.dir.join("checkouts").read_dir().unwrap().any(|_| true));
    assert_eq!(extra_worktrees(&bare), Vec::<String>::new());
    assert_eq!(
        final_runs(&d, "bare", 1).len(),
        1,
        "job test recorded nothing"
    );
}

#[test]
fn concurrent_runs_get_their_own_checkout_and_a_failure_keeps_it_with_the_flag() {
    let t = tempdir();
    let (_bare, work) = repos(t.path());
    commit(&work, "committed on main");
    std::fs::write(work.join("f.txt"), "working copy edit").unwrap();
    let seen = t.path().join("seen");
    std::fs::create_dir_all(&seen).unwrap();
    // Each run says where it is, waits (up to 20 s) until the other has said so too, then
    // fails when told to.
    let script = format!(
        "pwd > {s}/$BOG_RUN_ID; i=0; while [ $(ls {s} | wc -l) -lt 2 ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; cat f.txt; [ ! -e {s}/fail ]",
        s = seen.display()
    );
    let d = Daemon::start(t.path(), &[]);
    d.create(&checkout_job(
        "keep",
        &work,
        &script,
        json!({"keep_checkout_on_failure": true}),
    ));
    // Two manual runs at once: both succeed, each in its own checkout of main's head.
    for _ in 0..2 {
        assert_eq!(d.post("/jobs/keep/run", &json!({})).0, 202);
    }
    let rs = final_runs(&d, "keep", 2);
    let dirs: Vec<String> = rs
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "succeeded", "{r}");
            assert_eq!(r["output"], "committed on main", "{r}");
            let id = r["id"].as_str().unwrap();
            let pwd = std::fs::read_to_string(seen.join(id)).unwrap();
            assert_eq!(
                pwd.trim(),
                d.dir.join("checkouts").join(id).to_str().unwrap()
            );
            pwd
        })
        .collect();
    assert_ne!(dirs[0], dirs[1], "each run has its own checkout");
    assert_eq!(extra_worktrees(&work), Vec::<String>::new());

    // A failed run keeps its checkout, and says where.
    for e in std::fs::read_dir(&seen).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    std::fs::write(seen.join("fail"), "").unwrap();
    let id = run_now(&d, "keep");
    let r = d.wait_final("keep", &id, 30);
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["checkout"]["kept"], true, "{r}");
    let kept = d.dir.join("checkouts").join(&id);
    assert_eq!(r["checkout"]["path"], kept.to_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(kept.join("f.txt")).unwrap(),
        "committed on main"
    );
    assert_eq!(extra_worktrees(&work), vec![kept.display().to_string()]);
    assert!(d.stderr().contains("its checkout is kept at"), "logged");

    // Without the flag a failed run's checkout goes too.
    d.create(&checkout_job("nokeep", &work, &script, json!({})));
    let id = run_now(&d, "nokeep");
    let r = d.wait_final("nokeep", &id, 30);
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["checkout"]["kept"], false, "{r}");
    assert!(!d.dir.join("checkouts").join(&id).exists());
    assert_eq!(extra_worktrees(&work), vec![kept.display().to_string()]);
    // keep_checkout_on_failure without checkout is refused, naming the field.
    let mut bad = checkout_job(
        "bad",
        &work,
        "true",
        json!({"keep_checkout_on_failure": true}),
    );
    bad["triggers"][0]["checkout"] = json!(false);
    let (st, v) = d.post("/jobs", &bad);
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["field"], "triggers[0].keep_checkout_on_failure");
}

#[test]
fn a_linked_worktree_repository_and_a_crash_mid_run() {
    let t = tempdir();
    let (_bare, work) = repos(t.path());
    let linked = t.path().join("linked");
    let add = [
        "worktree",
        "add",
        "-q",
        "-b",
        "main2",
        linked.to_str().unwrap(),
    ];
    git(&work, &add);
    let on_side = commit(&linked, "on the linked worktree's branch");
    std::fs::write(linked.join("f.txt"), "linked working copy edit").unwrap();
    let mut d = Daemon::start(t.path(), &[]);
    let mut job = checkout_job("linked", &linked, SHOW, json!({}));
    job["triggers"][0]["branch"] = json!("main2");
    d.create(&job);
    let id = run_now(&d, "linked");
    let r = d.wait_final("linked", &id, 30);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert!(
        r["output"]
            .as_str()
            .unwrap()
            .contains("\non the linked worktree's branch\n"),
        "{r}"
    );
    assert_eq!(r["checkout"]["commit"], on_side.as_str());
    assert_eq!(extra_worktrees(&work), vec![linked.display().to_string()]);

    // A daemon killed mid-run leaves its checkout; the next start removes it.
    let mut slow = checkout_job("slow", &work, "sleep 60", json!({}));
    slow["limits"] = json!({"timeout_seconds": 120});
    d.create(&slow);
    let id = run_now(&d, "slow");
    let path = d.dir.join("checkouts").join(&id);
    d.wait_run("slow", 20, "the slow run to start", |r| {
        r["id"] == id.as_str() && r["status"] == "running"
    });
    assert!(path.join("f.txt").exists());
    d.kill9();
    assert_eq!(extra_worktrees(&work).len(), 2, "linked + the run's");
    let d = Daemon::start(t.path(), &[]);
    let r = d.wait_final("slow", &id, 10);
    assert_eq!(r["status"], "interrupted");
    assert!(!path.exists(), "the crash's checkout is removed at start");
    assert_eq!(extra_worktrees(&work), vec![linked.display().to_string()]);
}

#[test]
fn with_landlock_the_checkout_is_the_one_place_the_agent_may_write() {
    let t = tempdir();
    let (_bare, work) = repos(t.path());
    let d = Daemon::start(t.path(), &[]);
    let script = format!(
        "echo x > in-checkout.txt && echo checkout-write-ok; (echo x > {}/escape.txt) 2>/dev/null || echo repo-write-refused",
        work.display()
    );
    let mut job = checkout_job("confined", &work, &script, json!({}));
    job["limits"] = json!({"filesystem": "working_dir"});
    d.create(&job);
    let landlock = d.get("/health").1["containment"]["landlock"] == true;
    let id = run_now(&d, "confined");
    let r = d.wait_final("confined", &id, 30);
    if !landlock {
        // Fail closed: no run without the confinement asked for, and no checkout left.
        assert_eq!(r["status"], "failed", "{r}");
        assert_eq!(extra_worktrees(&work), Vec::<String>::new());
        eprintln!("SKIP landlock writes in a checkout: Landlock is not available");
        return;
    }
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(
        r["output"], "checkout-write-ok\nrepo-write-refused\n",
        "{r}"
    );
    assert!(!work.join("escape.txt").exists());
    assert_eq!(extra_worktrees(&work), Vec::<String>::new());
}

#[test]
fn at_start_every_checkout_but_the_kept_ones_goes() {
    let t = tempdir();
    let (_bare, work) = repos(t.path());
    commit(&work, "committed on main");
    let mut d = Daemon::start(t.path(), &[]);
    d.create(&checkout_job(
        "keep",
        &work,
        "exit 1",
        json!({"keep_checkout_on_failure": true}),
    ));
    let id = run_now(&d, "keep");
    let r = d.wait_final("keep", &id, 30);
    assert_eq!(r["checkout"]["kept"], true, "{r}");
    let kept = d.dir.join("checkouts").join(&id);

    // A `job test --exec` agent's checkout, left by a daemon killed while it ran.
    d.create(&checkout_job("probe", &work, "sleep 20", json!({})));
    let (port, token) = (d.port, d.token.clone());
    std::thread::spawn(move || {
        let _ = ureq::post(&format!("http://127.0.0.1:{port}/jobs/probe/test"))
            .set("Authorization", &format!("Bearer {token}"))
            .send_string(r#"{"exec": true}"#);
    });
    let checkouts = d.dir.join("checkouts");
    let probe = wait_for(20, "the test agent's checkout", || {
        std::fs::read_dir(&checkouts)
            .ok()?
            .map(|e| e.unwrap().path())
            .find(|p| p.is_dir() && *p != kept && p.join("f.txt").exists())
    });
    d.kill9();
    assert_eq!(extra_worktrees(&work).len(), 2, "the kept one + the test's");

    let _d = Daemon::start(t.path(), &[]);
    assert!(
        !probe.exists(),
        "the test agent's checkout is removed at start"
    );
    assert!(kept.join("f.txt").exists(), "the kept checkout stays");
    assert_eq!(extra_worktrees(&work), vec![kept.display().to_string()]);
}
