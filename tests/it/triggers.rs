//! Event triggers end to end: signed webhooks over real HTTP, file changes through real
//! inotify, pushes into real git repositories (polled, and through the installed hook).

use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SECRET: &str = "s3cr3t-hook-value";

fn sig(secret: &str, body: &[u8]) -> String {
    github_signature(secret, body)
}

fn hook_job(name: &str, path: &str, var: &str) -> Value {
    json!({
        "name": name,
        "prompt": "pr={{payload.pull_request.number}} event={{event}}",
        "agent": {"command": ["sh", "-c", "echo \"$1\"; cat \"$BOG_EVENT_FILE\"", "sh", "{prompt}"]},
        "triggers": [{"type": "webhook", "path": path, "secret_env": var}],
    })
}

fn post_hook(d: &Daemon, path: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, Value) {
    let (st, _, text) = d.raw("POST", path, Some(body), headers);
    (st, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn runs(d: &Daemon, job: &str) -> Vec<Value> {
    d.get(&format!("/jobs/{job}/runs?limit=1000"))
        .1
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn webhook_valid_signature_fires_with_raw_body_and_payload() {
    let t = tempdir();
    let d = Daemon::start_env(t.path(), &[], &[("HOOK_SECRET", SECRET)]);
    d.create(&hook_job("gh", "/hooks/gh", "HOOK_SECRET"));
    let body = br#"{"pull_request": {"number": 42}, "note": "raw  spacing kept"}"#;
    let s = sig(SECRET, body);
    let (st, v) = post_hook(
        &d,
        "/hooks/gh",
        body,
        &[
            ("X-Hub-Signature-256", &s),
            ("X-GitHub-Event", "pull_request"),
            ("X-GitHub-Delivery", "d-1"),
            ("Content-Type", "application/json"),
        ],
    );
    assert_eq!(st, 202, "{v}");
    let id = v["run_ids"][0].as_str().unwrap().to_string();
    let r = d.wait_final("gh", &id, 20);
    assert_eq!(r["status"], "succeeded", "{r}");
    let out = r["output"].as_str().unwrap();
    let (first, event_file) = out.split_once('\n').unwrap();
    assert_eq!(first, "pr=42 event=pull_request");
    let ev: Value = serde_json::from_str(event_file).unwrap();
    assert_eq!(
        ev["trigger"]["body"].as_str().unwrap().as_bytes(),
        body,
        "exact raw body"
    );
    assert_eq!(ev["trigger"]["payload"]["pull_request"]["number"], 42);
    assert_eq!(r["trigger"]["type"], "webhook");
    assert_eq!(r["trigger"]["delivery"], "d-1");
    assert_eq!(r["trigger"]["headers"]["x-github-event"], "pull_request");
    assert!(
        r["trigger"].get("body").is_none(),
        "the body stays out of the run record"
    );

    // Uppercase hex is the same signature; a repeated delivery id does not fire again.
    let upper = format!("sha256={}", s[7..].to_ascii_uppercase());
    let (st, v) = post_hook(
        &d,
        "/hooks/gh",
        body,
        &[
            ("X-Hub-Signature-256", &upper),
            ("X-GitHub-Delivery", "d-1"),
        ],
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["run_ids"], json!([]));
    let (st, v) = post_hook(
        &d,
        "/hooks/gh",
        body,
        &[
            ("X-Hub-Signature-256", &upper),
            ("X-GitHub-Delivery", "d-2"),
        ],
    );
    assert_eq!(st, 202, "{v}");
    d.wait_final("gh", v["run_ids"][0].as_str().unwrap(), 20);
    // A non-JSON body is fine; no token is needed on /hooks/.
    let (st, v) = post_hook(
        &d,
        "/hooks/gh",
        b"plain text",
        &[("X-Hub-Signature-256", &sig(SECRET, b"plain text"))],
    );
    assert_eq!(st, 202, "{v}");
    let r = d.wait_final("gh", v["run_ids"][0].as_str().unwrap(), 20);
    assert!(
        r["output"]
            .as_str()
            .unwrap()
            .contains("\"body\": \"plain text\""),
        "{r}"
    );
    assert_eq!(runs(&d, "gh").len(), 3);
}

#[test]
fn webhook_rejections_fire_nothing() {
    let t = tempdir();
    let d = Daemon::start_env(t.path(), &[], &[("HOOK_SECRET", SECRET)]);
    d.create(&hook_job("rej", "/hooks/rej", "HOOK_SECRET"));
    d.create(&hook_job("unset", "/hooks/unset", "NO_SUCH_SECRET_VAR"));
    let body = br#"{"a": 1}"#;
    let good = sig(SECRET, body);
    let mut one_off = good.clone();
    let last = one_off.pop().unwrap();
    one_off.push(if last == '0' { '1' } else { '0' });
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a [u8]);
    let cases: Vec<Case> = vec![
        ("missing", vec![], body),
        ("wrong", vec![("X-Hub-Signature-256", one_off)], body),
        (
            "truncated",
            vec![("X-Hub-Signature-256", good[..good.len() - 2].to_string())],
            body,
        ),
        (
            "other secret",
            vec![("X-Hub-Signature-256", sig("other", body))],
            body,
        ),
        (
            "different body",
            vec![("X-Hub-Signature-256", good.clone())],
            br#"{"a": 2}"#,
        ),
        (
            "wrong gitlab token",
            vec![("X-Gitlab-Token", "nope".into())],
            body,
        ),
        (
            "no prefix",
            vec![("X-Hub-Signature-256", good[7..].to_string())],
            body,
        ),
    ];
    for (what, hs, b) in &cases {
        let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (st, v) = post_hook(&d, "/hooks/rej", b, &hs);
        assert_eq!(st, 401, "{what}: {v}");
        assert!(v["error"].is_string(), "{what}");
    }
    let (st, _) = post_hook(
        &d,
        "/hooks/unset",
        body,
        &[("X-Hub-Signature-256", &sig("", body))],
    );
    assert_eq!(st, 401, "unset secret variable refuses everything");
    assert!(d.stderr().contains("NO_SUCH_SECRET_VAR"));
    assert_eq!(
        post_hook(
            &d,
            "/hooks/nobody-here",
            body,
            &[("X-Hub-Signature-256", &good)]
        )
        .0,
        404
    );
    let big = vec![b'x'; 2 * 1024 * 1024];
    assert_eq!(
        post_hook(
            &d,
            "/hooks/rej",
            &big,
            &[("X-Hub-Signature-256", &sig(SECRET, &big))]
        )
        .0,
        413
    );
    assert!(runs(&d, "rej").is_empty());
    assert!(runs(&d, "unset").is_empty());
    let m = d.get("/metrics").1;
    assert_eq!(m["webhooks_rejected_total"], cases.len() as u64 + 2, "{m}");
    // GitLab's token is accepted.
    let (st, v) = post_hook(&d, "/hooks/rej", body, &[("X-Gitlab-Token", SECRET)]);
    assert_eq!(st, 202, "{v}");
}

#[test]
fn webhook_shared_path_and_replay_window() {
    let t = tempdir();
    let d = Daemon::start_env(t.path(), &[], &[("HOOK_SECRET", SECRET)]);
    d.create(&hook_job("a", "/hooks/shared", "HOOK_SECRET"));
    d.create(&hook_job("b", "/hooks/shared", "HOOK_SECRET"));
    let body = b"{}";
    let (st, v) = post_hook(
        &d,
        "/hooks/shared",
        body,
        &[("X-Hub-Signature-256", &sig(SECRET, body))],
    );
    assert_eq!(st, 202);
    assert_eq!(v["run_ids"].as_array().unwrap().len(), 2, "both jobs fire");

    let mut j = hook_job("ts", "/hooks/ts", "HOOK_SECRET");
    j["triggers"][0]["max_age_seconds"] = json!(60);
    d.create(&j);
    let now = chrono::Utc::now().timestamp();
    let signed = format!("{now}.{{}}");
    let (st, v) = post_hook(
        &d,
        "/hooks/ts",
        body,
        &[
            ("X-Hub-Signature-256", &sig(SECRET, signed.as_bytes())),
            ("X-Bog-Timestamp", &now.to_string()),
        ],
    );
    assert_eq!(st, 202, "{v}");
    let old = now - 3600;
    let signed = format!("{old}.{{}}");
    let (st, _) = post_hook(
        &d,
        "/hooks/ts",
        body,
        &[
            ("X-Hub-Signature-256", &sig(SECRET, signed.as_bytes())),
            ("X-Bog-Timestamp", &old.to_string()),
        ],
    );
    assert_eq!(st, 401, "outside the window");
    let (st, _) = post_hook(
        &d,
        "/hooks/ts",
        body,
        &[("X-Hub-Signature-256", &sig(SECRET, body))],
    );
    assert_eq!(st, 401, "timestamp required");
}

fn write(p: &Path, s: &str) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(p, s).unwrap();
}

fn file_job(name: &str, root: &Path, patterns: Value, script: &str) -> Value {
    json!({
        "name": name,
        "prompt": "{{changed_files}}",
        "agent": {"command": ["sh", "-c", script, "sh", "{prompt}"]},
        "triggers": [{"type": "file_change", "root": root.to_str().unwrap(), "patterns": patterns, "debounce_seconds": 0.2}],
    })
}

/// Creates a file_change job and waits until the daemon watches its root.
fn create_watched(d: &Daemon, job: &Value, root: &Path) {
    let before = d.stderr().matches("files.watching").count();
    d.create(job);
    let want = format!("watching {}", root.display());
    wait_for(10, "the root to be watched", || {
        let log = d.stderr();
        (log.matches("files.watching").count() > before && log.contains(&want)).then_some(())
    });
}

/// Waits until the job has exactly `n` finished runs; returns them, oldest first.
fn wait_runs(d: &Daemon, job: &str, n: usize) -> Vec<Value> {
    let mut v = wait_for(30, &format!("{n} finished runs of {job}"), || {
        let rs = runs(d, job);
        let done = rs
            .iter()
            .filter(|r| !matches!(r["status"].as_str(), Some("queued" | "running")))
            .count();
        (rs.len() >= n && done == rs.len()).then_some(rs)
    });
    assert_eq!(v.len(), n, "{v:?}");
    v.reverse();
    // A file whose modification time falls inside a run counts as the run's own change, and
    // file times come from a coarse clock: let the clock pass the run's end before the test
    // writes again.
    let end = v
        .iter()
        .filter_map(|r| r["finished_at"].as_str())
        .max()
        .map(String::from);
    if let Some(end) = end {
        let end = chrono::DateTime::parse_from_rfc3339(&end).unwrap();
        wait_for(5, "the clock to pass the run's end", || {
            (chrono::Utc::now() > end + chrono::Duration::milliseconds(30)).then_some(())
        });
    }
    v
}

fn changed(r: &Value) -> Vec<String> {
    r["trigger"]["changed_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn file_change_globs_git_ignore_and_debounce() {
    let t = tempdir();
    let root = t.path().join("w");
    std::fs::create_dir_all(root.join(".git")).unwrap();
    let d = Daemon::start(t.path(), &[]);
    create_watched(
        &d,
        &file_job("fc", &root, json!(["src/**/*.py", "*.md"]), "echo \"$1\""),
        &root,
    );
    // Not matching: nested .md, a .txt, anything under .git/. Matching: the rest.
    write(&root.join("docs/nested.md"), "x");
    write(&root.join("src/notes.txt"), "x");
    write(&root.join(".git/x.md"), "x");
    write(&root.join("src/a/b/c.py"), "x");
    write(&root.join("README.md"), "x");
    let r = &wait_runs(&d, "fc", 1)[0];
    assert_eq!(changed(r), ["README.md", "src/a/b/c.py"]);
    assert_eq!(r["output"], "README.md\nsrc/a/b/c.py\n");
    // A directory of 300 matching files moved in whole makes one run (its files make no
    // events of their own: the daemon scans it), listing 200 and counting the rest.
    let stage = t.path().join("stage");
    for i in 0..300 {
        write(&stage.join(format!("f{i}.py")), "x");
    }
    std::fs::rename(&stage, root.join("src/burst")).unwrap();
    let rs = wait_runs(&d, "fc", 2);
    let listed = changed(&rs[1]);
    let omitted = rs[1]["trigger"]["changed_files_omitted"]
        .as_u64()
        .unwrap_or(0) as usize;
    let missing: Vec<String> = (0..300)
        .map(|i| format!("src/burst/f{i}.py"))
        .filter(|f| !listed.contains(f))
        .take(5)
        .collect();
    assert_eq!(listed.len() + omitted, 300, "some not listed: {missing:?}");
    assert_eq!(listed.len(), 200);
    // The fence afterwards makes exactly one more run, with only itself.
    write(&root.join("fence.md"), "x");
    let rs = wait_runs(&d, "fc", 3);
    assert_eq!(changed(&rs[2]), ["fence.md"]);
}

#[test]
fn file_change_burst_of_writes_makes_one_run() {
    let t = tempdir();
    let root = t.path().join("w");
    std::fs::create_dir_all(&root).unwrap();
    let d = Daemon::start(t.path(), &[]);
    let mut job = file_job("burst", &root, json!(["*.txt"]), "echo \"$1\"");
    job["triggers"][0]["debounce_seconds"] = json!(1);
    create_watched(&d, &job, &root);
    // Fifty writes, each timed: the debounce promises one run only while no two writes are
    // a debounce apart, so that is checked rather than hoped for.
    let mut longest = Duration::ZERO;
    let mut last = Instant::now();
    for i in 0..50 {
        write(&root.join(format!("f{i:02}.txt")), "x");
        longest = longest.max(last.elapsed());
        last = Instant::now();
    }
    if longest >= Duration::from_millis(500) {
        eprintln!("writes were {longest:?} apart: the burst's coalescing was not checked");
        return;
    }
    let rs = wait_runs(&d, "burst", 1);
    let want: Vec<String> = (0..50).map(|i| format!("f{i:02}.txt")).collect();
    assert_eq!(changed(&rs[0]), want);
    // Nothing else of the burst fires later: the fence's run has only the fence.
    write(&root.join("fence.txt"), "x");
    let rs = wait_runs(&d, "burst", 2);
    assert_eq!(changed(&rs[1]), ["fence.txt"]);
}

/// A directory moved in with more files than a scan lists (10,000): the run says its list
/// is incomplete (`events_overflowed`), as after a kernel queue overflow, instead of
/// counting 9,999 and leaving the rest out unsaid.
#[test]
fn file_change_directory_moved_in_beyond_the_scan_bound_says_so() {
    let t = tempdir();
    let root = t.path().join("w");
    std::fs::create_dir_all(&root).unwrap();
    let d = Daemon::start(t.path(), &[]);
    create_watched(
        &d,
        &file_job("big", &root, json!(["**/*.txt"]), "true"),
        &root,
    );
    let stage = t.path().join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    for i in 0..10_050 {
        std::fs::write(stage.join(format!("f{i:05}.txt")), "x").unwrap();
    }
    std::fs::rename(&stage, root.join("big")).unwrap();
    let r = &wait_runs(&d, "big", 1)[0];
    assert_eq!(changed(r).len(), 200);
    assert_eq!(r["trigger"]["events_overflowed"], true, "{}", r["trigger"]);
}

#[test]
fn file_change_agent_edits_do_not_refire() {
    let t = tempdir();
    let root = t.path().join("w");
    std::fs::create_dir_all(&root).unwrap();
    let d = Daemon::start(t.path(), &[]);
    let script = format!(
        "echo edited >> {}/agent-output.md; echo \"$1\"",
        root.display()
    );
    create_watched(
        &d,
        &file_job("selfish", &root, json!(["*.md"]), &script),
        &root,
    );
    write(&root.join("input.md"), "1");
    wait_runs(&d, "selfish", 1);
    // The agent wrote a matching file during its run; only our next write fires again.
    write(&root.join("fence1.md"), "x");
    let rs = wait_runs(&d, "selfish", 2);
    write(&root.join("fence2.md"), "x");
    let rs2 = wait_runs(&d, "selfish", 3);
    assert_eq!(changed(&rs[1]), ["fence1.md"]);
    assert_eq!(changed(&rs2[2]), ["fence2.md"]);
    assert!(rs2
        .iter()
        .all(|r| !changed(r).contains(&"agent-output.md".to_string())));
}

#[test]
fn file_change_root_created_later_and_recreated() {
    let t = tempdir();
    let root = t.path().join("later");
    let d = Daemon::start(t.path(), &[]);
    d.create(&file_job("later", &root, json!(["*.txt"]), "echo \"$1\""));
    wait_for(10, "missing root logged", || {
        d.stderr().contains("files.root_missing").then_some(())
    });
    std::fs::create_dir_all(&root).unwrap();
    wait_for(10, "root watched", || {
        d.stderr().contains("files.root_back").then_some(())
    });
    write(&root.join("a.txt"), "x");
    assert_eq!(changed(&wait_runs(&d, "later", 1)[0]), ["a.txt"]);
    std::fs::remove_dir_all(&root).unwrap();
    wait_for(10, "root gone logged", || {
        d.stderr().contains("files.root_gone").then_some(())
    });
    std::fs::create_dir_all(&root).unwrap();
    wait_for(10, "root watched again", || {
        (d.stderr().matches("files.root_back").count() >= 2).then_some(())
    });
    write(&root.join("b.txt"), "x");
    assert_eq!(changed(&wait_runs(&d, "later", 2)[1]), ["b.txt"]);
    // Removing the job removes its watch: a write now fires nothing, which a new job on
    // the same root proves by seeing only its own fence.
    assert_eq!(d.req("DELETE", "/jobs/later", None).0, 204);
    create_watched(
        &d,
        &file_job("after", &root, json!(["fence.txt"]), "true"),
        &root,
    );
    write(&root.join("c.txt"), "x");
    write(&root.join("fence.txt"), "x");
    assert_eq!(changed(&wait_runs(&d, "after", 1)[0]), ["fence.txt"]);
    assert_eq!(d.get("/jobs/later/runs").0, 404);
}

/// Waits until the daemon has noticed that `root` was replaced and watches it again: one more
/// `files.root_gone` line and one more "watching <root>" line than `before` counted.
fn wait_rewatched(d: &Daemon, root: &Path, before: (usize, usize)) {
    let want = format!("watching {}", root.display());
    wait_for(
        15,
        "the replaced root to be logged gone and watched again",
        || {
            let log = d.stderr();
            (log.matches("files.root_gone").count() > before.0
                && log.matches(&want).count() > before.1)
                .then_some(())
        },
    );
}

fn watch_counts(d: &Daemon, root: &Path) -> (usize, usize) {
    let log = d.stderr();
    let want = format!("watching {}", root.display());
    (
        log.matches("files.root_gone").count(),
        log.matches(&want).count(),
    )
}

#[test]
fn file_change_root_replaced_by_another_directory_is_watched_again() {
    let t = tempdir();
    let root = t.path().join("w");
    std::fs::create_dir_all(&root).unwrap();
    let d = Daemon::start(t.path(), &[]);
    create_watched(
        &d,
        &file_job("swap", &root, json!(["**/*.txt"]), "echo \"$1\""),
        &root,
    );
    // Deleted and at once recreated (the recreated directory may exist before the daemon
    // hears of the deletion), several times over.
    for i in 0..5 {
        let before = watch_counts(&d, &root);
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::create_dir_all(root.join("src")).unwrap();
        wait_rewatched(&d, &root, before);
        // (The removal of the previous round's file may fire a run of its own.)
        let f = format!("src/new{i}.txt");
        write(&root.join(&f), "x");
        d.wait_run("swap", 30, &format!("a run for {f}"), |r| {
            r["status"] == "succeeded" && changed(r).contains(&f)
        });
    }
    // Swapped with another directory in one atomic step: the path stays a directory all
    // along, but it is another inode.
    let other = t.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let before = watch_counts(&d, &root);
    let (a, b) = (
        std::ffi::CString::new(root.to_str().unwrap()).unwrap(),
        std::ffi::CString::new(other.to_str().unwrap()).unwrap(),
    );
    // SAFETY: renameat2 with two valid NUL-terminated paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(r, 0, "renameat2: {}", std::io::Error::last_os_error());
    wait_rewatched(&d, &root, before);
    // The old directory (now at `other`) is no longer watched; the new one is.
    write(&other.join("src/old.txt"), "x");
    write(&root.join("swapped.txt"), "x");
    d.wait_run("swap", 30, "a run for swapped.txt", |r| {
        r["status"] == "succeeded" && changed(r).contains(&"swapped.txt".to_string())
    });
    assert!(
        runs(&d, "swap")
            .iter()
            .all(|r| !changed(r).contains(&"src/old.txt".to_string())),
        "a write into the directory swapped out fired the job"
    );
}

#[test]
fn git_push_on_a_linked_worktree_fires() {
    let t = tempdir();
    let (_bare, work) = repos(t.path());
    let linked = t.path().join("linked");
    git(
        &work,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "side",
            linked.to_str().unwrap(),
        ],
    );
    assert!(
        linked.join(".git").is_file(),
        "a linked worktree has a .git file"
    );
    let d = Daemon::start(t.path(), &["--git-poll-ms", "100"]);
    d.create(&git_job("wt", &linked, "*"));
    wait_baseline(&d, &linked);
    // A commit in the linked worktree moves `side`; one in the main worktree moves `main`:
    // both refs live in the main repository's git dir (the worktree's `commondir`).
    let before = git(&linked, &["rev-parse", "HEAD"]);
    let after = commit(&linked, "in the linked worktree");
    let r = &wait_runs(&d, "wt", 1)[0];
    assert_eq!(r["trigger"]["branch"], "side");
    assert_eq!(r["trigger"]["before"], before.as_str());
    assert_eq!(r["trigger"]["after"], after.as_str());
    let main_after = commit(&work, "in the main worktree");
    let r = &wait_runs(&d, "wt", 2)[1];
    assert_eq!(r["trigger"]["branch"], "main");
    assert_eq!(r["trigger"]["after"], main_after.as_str());
    // The hook goes where git looks for it: the common dir's hooks/.
    let (code, out, err) = cli(
        &d.dir,
        &["install-git-hook", "--repo", linked.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("post-receive"), "{out}");
    assert!(work.join(".git/hooks/post-receive").is_file(), "{out}");
}

pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repo and a clone of it with one commit on main pushed.
pub(crate) fn repos(t: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let bare = t.join("origin.git");
    let work = t.join("work");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "--bare", "-q"]);
    git(
        t,
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    commit(&work, "first");
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    (bare, work)
}

pub(crate) fn commit(work: &Path, msg: &str) -> String {
    std::fs::write(work.join("f.txt"), msg).unwrap();
    git(work, &["add", "f.txt"]);
    git(work, &["commit", "-q", "-m", msg]);
    git(work, &["rev-parse", "HEAD"])
}

/// Waits until the poller has read the repository once (pushes after that fire).
pub(crate) fn wait_baseline(d: &Daemon, repo: &Path) {
    let want = format!("watching {}:", repo.display());
    wait_for(10, "the repository's baseline", || {
        d.stderr().contains(&want).then_some(())
    });
}

fn git_job(name: &str, repo: &Path, branch: &str) -> Value {
    json!({
        "name": name, "prompt": "{{branch}} {{before}} {{after}}",
        "agent": {"command": ["sh", "-c", "echo \"$1\"", "sh", "{prompt}"]},
        "triggers": [{"type": "git_push", "repo": repo.to_str().unwrap(), "branch": branch}],
    })
}

#[test]
fn git_push_fires_for_matching_branches() {
    let t = tempdir();
    let (bare, work) = repos(t.path());
    let d = Daemon::start(t.path(), &["--git-poll-ms", "100"]);
    d.create(&git_job("main", &bare, "main"));
    d.create(&git_job("feat", &bare, "feature/*"));
    wait_baseline(&d, &bare);
    let before = git(&work, &["rev-parse", "HEAD"]);
    // Push to a branch nobody watches, then to main: one run, for main.
    git(&work, &["push", "-q", "origin", "HEAD:other"]);
    let after = commit(&work, "second");
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    let r = &wait_runs(&d, "main", 1)[0];
    assert_eq!(r["trigger"]["branch"], "main");
    assert_eq!(r["trigger"]["ref"], "refs/heads/main");
    assert_eq!(r["trigger"]["before"], before.as_str());
    assert_eq!(r["trigger"]["after"], after.as_str());
    assert_eq!(r["output"], format!("main {before} {after}\n"));

    // A new feature branch: before is all zeros.
    git(&work, &["push", "-q", "origin", "HEAD:feature/login"]);
    let r = &wait_runs(&d, "feat", 1)[0];
    assert_eq!(r["trigger"]["branch"], "feature/login");
    assert_eq!(
        r["trigger"]["before"],
        "0000000000000000000000000000000000000000"
    );
    // Deleting it does not fire; the next push (to another feature branch) is the fence.
    git(&work, &["push", "-q", "origin", ":feature/login"]);
    git(&work, &["push", "-q", "origin", "HEAD:feature/fence"]);
    let rs = wait_runs(&d, "feat", 2);
    assert_eq!(rs[1]["trigger"]["branch"], "feature/fence");

    // Force push (rewrite main) after packing refs: still seen, with the right before.
    git(&bare, &["pack-refs", "--all"]);
    assert!(
        !bare.join("refs/heads/main").exists(),
        "main is only in packed-refs now"
    );
    git(&work, &["reset", "-q", "--hard", &before]);
    let forced = commit(&work, "rewritten");
    git(&work, &["push", "-q", "-f", "origin", "HEAD:main"]);
    let rs = wait_runs(&d, "main", 2);
    assert_eq!(rs[1]["trigger"]["before"], after.as_str());
    assert_eq!(rs[1]["trigger"]["after"], forced.as_str());
}

#[test]
fn installed_hook_notifies_the_daemon_at_once() {
    let t = tempdir();
    let (bare, work) = repos(t.path());
    // Polling is effectively off: only the hook can make this fire.
    let d = Daemon::start(t.path(), &["--git-poll-ms", "3600000"]);
    d.create(&git_job("hooked", &bare, "*"));
    wait_baseline(&d, &bare);
    let (code, out, err) = cli(
        &d.dir,
        &["install-git-hook", "--repo", bare.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("post-receive"));
    let hook = std::fs::read_to_string(bare.join("hooks/post-receive")).unwrap();
    assert!(hook.starts_with("#!/bin/sh"));
    assert!(
        !hook.contains(&d.token),
        "the token is never copied into the hook"
    );
    let sh = Command::new("sh")
        .arg("-n")
        .arg(bare.join("hooks/post-receive"))
        .status()
        .unwrap();
    assert!(sh.success(), "valid /bin/sh syntax");
    let after = commit(&work, "hooked");
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    let r = &wait_runs(&d, "hooked", 1)[0];
    assert_eq!(r["trigger"]["after"], after.as_str());

    // With the daemon stopped, a push still succeeds.
    let mut d = d;
    d.kill9();
    commit(&work, "daemon down");
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    // A foreign hook is not replaced without --force.
    std::fs::write(bare.join("hooks/post-receive"), "#!/bin/sh\necho mine\n").unwrap();
    let (code, _, err) = cli(
        &d.dir,
        &["install-git-hook", "--repo", bare.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(err.contains("--force"), "{err}");
    let (code, _, _) = cli(
        &d.dir,
        &["install-git-hook", "--repo", t.path().to_str().unwrap()],
    );
    assert_eq!(code, 2, "not a repository");
}
