//! The CLI against the real binary: `job add` with the daemon stopped and running, the
//! file-based and API-based job commands, exit codes, and `next` against hand-checked
//! calendars.

use crate::common::*;

fn data(t: &tempfile::TempDir) -> std::path::PathBuf {
    t.path().join("data")
}

#[test]
fn job_add_with_daemon_stopped_then_start_schedules_it() {
    let t = tempdir();
    let dir = data(&t);
    let (code, out, err) = cli(
        &dir,
        &[
            "job",
            "add",
            "--name",
            "offline",
            "--interval",
            "1",
            "--prompt",
            "p",
            "--agent",
            "sh -c 'echo \"offline run $BOG_JOB_NAME\"'",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added job offline"), "{out}");
    let (code, out, _) = cli(&dir, &["job", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("offline") && out.contains("every 1s"), "{out}");
    let d = Daemon::start(t.path(), &[]);
    let r = d.wait_run("offline", 20, "scheduled run", |r| {
        r["status"] == "succeeded"
    });
    assert_eq!(r["output"], "offline run offline\n");
}

#[test]
fn job_add_while_running_is_picked_up() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let (code, out, err) = cli(
        &d.dir,
        &[
            "job",
            "add",
            "--name",
            "live",
            "--interval",
            "1",
            "--prompt",
            "p",
            "--agent",
            "echo live",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("added job live") && out.contains("next run: "),
        "{out}"
    );
    let r = d.wait_run("live", 20, "run of a job added by file", |r| {
        r["status"] == "succeeded"
    });
    assert_eq!(r["output"], "live\n");
}

#[test]
fn invalid_input_exits_2_with_the_field() {
    let t = tempdir();
    let dir = data(&t);
    let (code, _, err) = cli(
        &dir,
        &[
            "job",
            "add",
            "--name",
            "x",
            "--cron",
            "61 * * * *",
            "--prompt",
            "p",
        ],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("--cron") && err.contains("61") && !err.contains("triggers[0]"),
        "{err}"
    );
    let (code, _, err) = cli(
        &dir,
        &[
            "job",
            "add",
            "--name",
            "bad name",
            "--interval",
            "5",
            "--prompt",
            "p",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("name"), "{err}");
    let (code, _, err) = cli(&dir, &["job", "add", "--name", "x", "--prompt", "p"]);
    assert_eq!(code, 2, "no trigger");
    assert!(err.contains("triggers"), "{err}");
    let (code, _, err) = cli(
        &dir,
        &[
            "job",
            "add",
            "--name",
            "x",
            "--interval",
            "5",
            "--prompt",
            "p",
            "--agent",
            "sh -c 'oops",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--agent"), "{err}");
    let (code, _, err) = cli(
        &dir,
        &[
            "job",
            "add",
            "--name",
            "x",
            "--interval",
            "5",
            "--prompt",
            "p",
            "--output",
            "carrier-pigeon",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--output"), "{err}");
    let (code, _, _) = cli(&dir, &["job", "add", "--bogus-flag"]);
    assert_eq!(code, 2, "usage error");
    let bad = t.path().join("bad.json");
    std::fs::write(&bad, "{\"name\": \"x\", \"prompt\": \"p\", \"triggers\": [{\"type\": \"interval\", \"seconds\": 5}], \"nope\": 1}").unwrap();
    let (code, _, err) = cli(&dir, &["job", "add", "-f", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("nope"), "{err}");
    std::fs::write(&bad, "{not json").unwrap();
    let (code, _, _) = cli(&dir, &["job", "add", "-f", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    // Nothing was written by any of the failures.
    let n = std::fs::read_dir(dir.join("jobs"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(n, 0);
    // Duplicate names are refused.
    assert_eq!(
        cli(
            &dir,
            &[
                "job",
                "add",
                "--name",
                "dup",
                "--interval",
                "5",
                "--prompt",
                "p"
            ]
        )
        .0,
        0
    );
    let (code, _, err) = cli(
        &dir,
        &[
            "job",
            "add",
            "--name",
            "dup",
            "--interval",
            "5",
            "--prompt",
            "p",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn job_commands_offline_and_online() {
    let t = tempdir();
    let dir = data(&t);
    let f = t.path().join("job.json");
    std::fs::write(
        &f,
        r#"{"name": "viaf", "prompt": "p", "agent": {"command": ["sh", "-c", "echo from-file"]}, "triggers": [{"type": "cron", "cron": "0 0 1 1 *"}]}"#,
    )
    .unwrap();
    assert_eq!(cli(&dir, &["job", "add", "-f", f.to_str().unwrap()]).0, 0);
    // Offline: files.
    assert_eq!(cli(&dir, &["job", "disable", "viaf"]).0, 0);
    let (_, out, _) = cli(&dir, &["job", "show", "viaf"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["enabled"], false);
    let (code, _, err) = cli(&dir, &["job", "run", "viaf"]);
    assert_eq!(code, 1, "job run needs the daemon");
    assert!(err.contains("no daemon is running"), "{err}");
    assert_eq!(cli(&dir, &["job", "enable", "viaf"]).0, 0);

    // Online: the API.
    let d = Daemon::start(t.path(), &[]);
    let (code, out, err) = cli(&dir, &["job", "run", "viaf", "--wait"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "from-file\n");
    let (code, out, _) = cli(&dir, &["job", "runs", "viaf"]);
    assert_eq!(code, 0);
    assert!(out.contains("succeeded") && out.contains("manual"), "{out}");
    assert_eq!(cli(&dir, &["job", "disable", "viaf"]).0, 0);
    assert_eq!(d.get("/jobs/viaf").1["enabled"], false);
    let (code, _, err) = cli(&dir, &["job", "show", "nosuch"]);
    assert_eq!(code, 1);
    assert!(err.contains("nosuch"), "{err}");
    assert_eq!(cli(&dir, &["job", "rm", "viaf"]).0, 0);
    assert_eq!(d.get("/jobs/viaf").0, 404);
}

fn next(args: &[&str]) -> (i32, Vec<String>, String) {
    let t = tempdir();
    let (code, out, err) = cli(t.path(), &[&["next"], args].concat());
    (code, out.lines().map(String::from).collect(), err)
}

#[test]
fn next_weekdays_in_utc() {
    // 2026-11-27 is a Friday.
    let (code, lines, err) = next(&[
        "0 9 * * 1-5",
        "--from",
        "2026-11-27T10:00:00Z",
        "--timezone",
        "UTC",
        "--count",
        "4",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        lines,
        [
            "2026-11-30T09:00:00+00:00",
            "2026-12-01T09:00:00+00:00",
            "2026-12-02T09:00:00+00:00",
            "2026-12-03T09:00:00+00:00"
        ]
    );
}

#[test]
fn next_sunday_is_0_and_7() {
    let a = next(&[
        "30 6 * * 0",
        "--from",
        "2026-11-24T00:00:00Z",
        "--timezone",
        "UTC",
        "--count",
        "3",
    ]);
    let b = next(&[
        "30 6 * * 7",
        "--from",
        "2026-11-24T00:00:00Z",
        "--timezone",
        "UTC",
        "--count",
        "3",
    ]);
    let c = next(&[
        "30 6 * * sun",
        "--from",
        "2026-11-24T00:00:00Z",
        "--timezone",
        "UTC",
        "--count",
        "3",
    ]);
    assert_eq!(
        a.1,
        [
            "2026-11-29T06:30:00+00:00",
            "2026-12-06T06:30:00+00:00",
            "2026-12-13T06:30:00+00:00"
        ]
    );
    assert_eq!(a.1, b.1);
    assert_eq!(a.1, c.1);
}

#[test]
fn next_day_of_month_or_day_of_week() {
    // The 13th of each month OR any Friday: Dec 2026 Fridays are 4, 11, 18, 25.
    let (_, lines, _) = next(&[
        "0 0 13 * 5",
        "--from",
        "2026-12-01T00:00:00Z",
        "--timezone",
        "UTC",
        "--count",
        "6",
    ]);
    assert_eq!(
        lines,
        [
            "2026-12-04T00:00:00+00:00",
            "2026-12-11T00:00:00+00:00",
            "2026-12-13T00:00:00+00:00",
            "2026-12-18T00:00:00+00:00",
            "2026-12-25T00:00:00+00:00",
            "2027-01-01T00:00:00+00:00",
        ]
    );
}

#[test]
fn next_across_spring_forward_and_fall_back() {
    // Europe/Berlin: 2026-03-29 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
    let (_, lines, _) = next(&[
        "30 2 * * *",
        "--from",
        "2026-03-27T12:00:00Z",
        "--timezone",
        "Europe/Berlin",
        "--count",
        "3",
    ]);
    assert_eq!(
        lines,
        [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00"
        ]
    );
    // 2026-10-25 03:00 CEST falls back to 02:00 CET; 02:30 happens twice and fires once.
    let (_, lines, _) = next(&[
        "30 2 * * *",
        "--from",
        "2026-10-24T12:00:00Z",
        "--timezone",
        "Europe/Berlin",
        "--count",
        "3",
    ]);
    assert_eq!(
        lines,
        [
            "2026-10-25T02:30:00+02:00",
            "2026-10-26T02:30:00+01:00",
            "2026-10-27T02:30:00+01:00"
        ]
    );
}

#[test]
fn next_rejects_bad_input_with_exit_2() {
    let (code, lines, err) = next(&["61 * * * *"]);
    assert_eq!(code, 2);
    assert!(lines.is_empty());
    assert!(err.contains("61"), "{err}");
    assert_eq!(next(&["* * * *"]).0, 2);
    assert_eq!(next(&["@reboot"]).0, 2);
    assert_eq!(next(&["* * * * *", "--timezone", "Mars/Olympus"]).0, 2);
    assert_eq!(next(&["* * * * *", "--from", "yesterday"]).0, 2);
    assert_eq!(next(&["* * * * *", "--count", "0"]).0, 2);
}

#[test]
fn help_exists_for_every_command() {
    let t = tempdir();
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["job", "--help"],
        vec!["job", "add", "--help"],
        vec!["job", "list", "--help"],
        vec!["job", "runs", "--help"],
        vec!["job", "set", "--help"],
        vec!["job", "edit", "--help"],
        vec!["job", "logs", "--help"],
        vec!["install-man", "--help"],
        vec!["next", "--help"],
        vec!["token", "--help"],
    ] {
        let (code, out, _) = cli(t.path(), &args);
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains("Usage"), "{args:?}: {out}");
    }
}

#[test]
fn next_follows_real_time_through_dst_when_minute_or_hour_is_a_star() {
    let ny = |args: &[&str]| {
        let (code, lines, err) = next(&[args, &["--timezone", "America/New_York"]].concat());
        assert_eq!(code, 0, "{err}");
        lines
    };
    // Fall-back: 01:00 happens twice and fires twice.
    assert_eq!(
        ny(&[
            "0 * * * *",
            "--from",
            "2026-11-01T03:30:00Z",
            "--count",
            "4"
        ]),
        [
            "2026-11-01T00:00:00-04:00",
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T02:00:00-05:00"
        ]
    );
    // Fall-back with a step: `*/10` keeps firing every 10 minutes through the repeated hour.
    assert_eq!(
        ny(&[
            "*/10 * * * *",
            "--from",
            "2026-11-01T05:35:00Z",
            "--count",
            "4"
        ]),
        [
            "2026-11-01T01:40:00-04:00",
            "2026-11-01T01:50:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T01:10:00-05:00"
        ]
    );
    // Spring-forward: 02:45 does not exist and is skipped.
    assert_eq!(
        ny(&[
            "45 * * * *",
            "--from",
            "2026-03-08T06:00:00Z",
            "--count",
            "2"
        ]),
        ["2026-03-08T01:45:00-05:00", "2026-03-08T03:45:00-04:00"]
    );
    // Fixed minute and hour: the skipped 02:30 fires once, at the end of the gap.
    assert_eq!(
        ny(&[
            "30 2 * * *",
            "--from",
            "2026-03-08T06:00:00Z",
            "--count",
            "1"
        ]),
        ["2026-03-08T03:00:00-04:00"]
    );
}

/// Runs the CLI with extra environment variables.
fn cli_env(data: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = std::process::Command::new(BIN);
    c.arg("--data-dir").arg(data).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn job_json(dir: &std::path::Path, name: &str) -> serde_json::Value {
    let (code, out, err) = cli(dir, &["job", "show", name]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// An $EDITOR: a shell script run with the file to edit as $1.
fn editor(t: &tempfile::TempDir, name: &str, script: &str) -> String {
    let p = t.path().join(name);
    std::fs::write(&p, format!("#!/bin/sh\nf=\"$1\"\n{script}\n")).unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&p)
        .status()
        .unwrap();
    p.display().to_string()
}

fn add_idle(dir: &std::path::Path, name: &str, extra: &[&str]) {
    let (code, _, err) = cli(
        dir,
        &[
            &[
                "job",
                "add",
                "--name",
                name,
                "--prompt",
                "p {{job_name}}",
                "--agent",
                "sh -c 'echo out-$0; echo err-$0 >&2; exit 3' {prompt}",
                "--cron",
                "0 9 * * 1-5",
                "--timezone",
                "Europe/Berlin",
            ],
            extra,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
}

fn edit_job_with_scripted_editors(t: &tempfile::TempDir, dir: &std::path::Path) {
    // A change: applied, and printed as a diff.
    let ed = editor(t, "ed1", r#"sed -i 's/"history": 100/"history": 7/' "$f""#);
    let (code, out, err) = cli_env(dir, &["job", "edit", "e"], &[("EDITOR", &ed)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("history: 100 -> 7"), "{out}");
    assert_eq!(job_json(dir, "e")["history"], 7);
    // Nothing changed: "no changes". $VISUAL wins over $EDITOR.
    let (code, out, _) = cli_env(
        dir,
        &["job", "edit", "e"],
        &[("VISUAL", "true"), ("EDITOR", "false")],
    );
    assert_eq!(code, 0);
    assert!(out.contains("no changes"), "{out}");
    // An invalid edit: the file comes back with the error at the top; the fix is applied.
    let seen = t.path().join("seen-error");
    let ed = editor(
        t,
        "ed2",
        &format!(
            r#"if head -1 "$f" | grep -q '^# error: history'; then cp "$f" {seen}; sed -i 's/"history": 0/"history": 9/' "$f"; else sed -i 's/"history": 7/"history": 0/' "$f"; fi"#,
            seen = seen.display()
        ),
    );
    let (code, out, err) = cli_env(dir, &["job", "edit", "e"], &[("EDITOR", &ed)]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("history"), "{err}");
    assert!(out.contains("history: 7 -> 9"), "{out}");
    let reopened = std::fs::read_to_string(&seen).unwrap();
    assert!(
        reopened.starts_with("# error: history: must be a whole number from 1 to 100000"),
        "{reopened}"
    );
    assert_eq!(job_json(dir, "e")["history"], 9);
    // Invalid JSON, then giving up by saving the reopened file unchanged: exit 1, no change.
    let ed = editor(
        t,
        "ed3",
        r#"grep -q '^# error' "$f" || sed -i 's/"history": 9/"history": 9,,/' "$f""#,
    );
    let (code, _, err) = cli_env(dir, &["job", "edit", "e"], &[("EDITOR", &ed)]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not valid JSON") && err.contains("cancelled"),
        "{err}"
    );
    assert_eq!(job_json(dir, "e")["history"], 9);
}

#[test]
fn job_edit_with_a_scripted_editor_daemon_stopped_and_running() {
    let t = tempdir();
    let dir = data(&t);
    add_idle(&dir, "e", &[]);
    edit_job_with_scripted_editors(&t, &dir);
    let d = Daemon::start(t.path(), &[]);
    std::fs::remove_file(t.path().join("seen-error")).unwrap();
    let ed = editor(&t, "ed0", r#"sed -i 's/"history": 9/"history": 100/' "$f""#);
    assert_eq!(
        cli_env(&dir, &["job", "edit", "e"], &[("EDITOR", &ed)]).0,
        0
    );
    edit_job_with_scripted_editors(&t, &dir);
    // Through the API: the running daemon has the change.
    assert_eq!(d.get("/jobs/e").1["history"], 9);
    // A rename to a taken name is an error shown in the editor too; giving up keeps both.
    add_idle(&dir, "other", &[]);
    let ed = editor(
        &t,
        "ed4",
        r#"grep -q '^# error' "$f" || sed -i 's/"name": "e"/"name": "other"/' "$f""#,
    );
    let (code, _, err) = cli_env(&dir, &["job", "edit", "e"], &[("EDITOR", &ed)]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(d.get("/jobs/e").0, 200);
}

fn set_keeps_the_time_zone(dir: &std::path::Path) {
    let (code, out, err) = cli(dir, &["job", "set", "tz", "--cron", "30 8 * * 1-5"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(r#"triggers[0].cron: "0 9 * * 1-5" -> "30 8 * * 1-5""#),
        "{out}"
    );
    assert!(!out.contains("timezone"), "{out}");
    let j = job_json(dir, "tz");
    assert_eq!(
        j["triggers"],
        serde_json::json!([{"type": "cron", "cron": "30 8 * * 1-5", "timezone": "Europe/Berlin"}])
    );
    // Unchanged values: "no changes".
    let (code, out, _) = cli(dir, &["job", "set", "tz", "--cron", "30 8 * * 1-5"]);
    assert_eq!(code, 0);
    assert!(out.contains("no changes"), "{out}");
    // Outputs: add, remove by type or index; durations with units.
    let (code, out, err) = cli(
        dir,
        &[
            "job",
            "set",
            "tz",
            "--add-output",
            "stdout",
            "--add-output",
            "file:rel.log",
            "--timeout",
            "1h30m",
            "--env",
            "A=1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("limits.timeout_seconds: 3600 -> 5400"),
        "{out}"
    );
    let j = job_json(dir, "tz");
    assert_eq!(j["outputs"].as_array().unwrap().len(), 3);
    let path = j["outputs"][2]["path"].as_str().unwrap();
    assert!(
        path.starts_with('/') && path.ends_with("/rel.log"),
        "{path}"
    );
    assert_eq!(j["env"]["A"], "1");
    let (code, _, err) = cli(
        dir,
        &[
            "job",
            "set",
            "tz",
            "--rm-output",
            "stdout",
            "--rm-output",
            "0",
            "--rm-env",
            "A",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let j = job_json(dir, "tz");
    assert_eq!(j["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(j["outputs"][0]["type"], "file");
    assert_eq!(j["env"], serde_json::json!({}));
    // A second trigger, then a change that must say which.
    assert_eq!(
        cli(
            dir,
            &["job", "set", "tz", "--add-trigger", "--cron", "0 12 * * *"]
        )
        .0,
        0
    );
    let (code, _, err) = cli(dir, &["job", "set", "tz", "--cron", "0 13 * * *"]);
    assert_eq!(code, 2);
    assert!(err.contains("--trigger N"), "{err}");
    let (code, _, err) = cli(
        dir,
        &["job", "set", "tz", "--trigger", "1", "--timezone", "UTC"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(job_json(dir, "tz")["triggers"][1]["timezone"], "UTC");
    assert_eq!(cli(dir, &["job", "set", "tz", "--rm-trigger", "1"]).0, 0);
    assert_eq!(job_json(dir, "tz")["triggers"].as_array().unwrap().len(), 1);
    // Errors name the flag and change nothing.
    let (code, _, err) = cli(dir, &["job", "set", "tz", "--cron", "61 * * * *"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("error: --cron: invalid cron expression"),
        "{err}"
    );
    let (code, _, err) = cli(dir, &["job", "set", "tz", "--timeout", "1500ms"]);
    assert_eq!(code, 2);
    assert!(err.contains("--timeout"), "{err}");
    let (code, _, err) = cli(dir, &["job", "set", "tz", "--interval", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("--interval"), "{err}");
    let (code, _, err) = cli(dir, &["job", "set", "tz", "--rm-output", "7"]);
    assert_eq!(code, 2);
    assert!(err.contains("--rm-output 7"), "{err}");
    let (code, _, err) = cli(dir, &["job", "set", "nosuch", "--history", "5"]);
    assert_eq!(code, 1);
    assert!(err.contains("nosuch"), "{err}");
    assert_eq!(job_json(dir, "tz")["triggers"][0]["cron"], "30 8 * * 1-5");
    // Put it back for the next round.
    assert_eq!(
        cli(
            dir,
            &[
                "job",
                "set",
                "tz",
                "--cron",
                "0 9 * * 1-5",
                "--output",
                "log",
                "--timeout",
                "1h"
            ]
        )
        .0,
        0
    );
}

#[test]
fn job_set_changes_only_what_the_flags_name() {
    let t = tempdir();
    let dir = data(&t);
    add_idle(&dir, "tz", &[]);
    set_keeps_the_time_zone(&dir);
    let d = Daemon::start(t.path(), &[]);
    set_keeps_the_time_zone(&dir);
    // Through the API, so the daemon's view changed.
    let (code, _, err) = cli(
        &dir,
        &["job", "set", "tz", "--timezone", "America/New_York"],
    );
    assert_eq!(code, 0, "{err}");
    let j = d.get("/jobs/tz").1;
    assert_eq!(j["triggers"][0]["timezone"], "America/New_York");
    assert_eq!(j["triggers"][0]["cron"], "0 9 * * 1-5");
}

#[test]
fn add_then_run_never_misses_the_job() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    for i in 0..100 {
        let name = format!("r{i}");
        let (code, out, err) = cli(
            &d.dir,
            &[
                "job",
                "add",
                "--name",
                &name,
                "--prompt",
                "p",
                "--agent",
                "true",
                "--cron",
                "0 0 1 1 *",
            ],
        );
        assert_eq!(code, 0, "add {name}: {err}");
        assert!(out.contains("next run: "), "{out}");
        let (code, out, err) = cli(&d.dir, &["job", "run", &name]);
        assert_eq!(code, 0, "run {name} right after add: {err}");
        assert!(out.starts_with("run_"), "{out}");
    }
    // Every add went through the API (created, not picked up from a file later).
    let log = d.stderr();
    assert_eq!(log.matches("job created").count(), 100, "{log}");
    assert!(!log.contains("job loaded from"), "{log}");
}

#[test]
fn job_logs_prints_a_finished_run() {
    let t = tempdir();
    let dir = data(&t);
    add_idle(&dir, "lg", &[]);
    let mut d = Daemon::start(t.path(), &[]);
    let (code, _, err) = cli(&dir, &["job", "run", "lg", "--wait"]);
    assert_eq!(code, 1, "{err}");
    let (code, out, err) = cli(&dir, &["job", "run", "lg"]);
    assert_eq!(code, 0, "{err}");
    let second = out.trim().to_string();
    d.wait_final("lg", &second, 20);
    let check = |args: &[&str], run: &str| {
        let (code, out, err) = cli(&dir, args);
        assert_eq!(code, 1, "a failed run exits 1: {err}");
        assert_eq!(out, "out-p lg\n");
        assert!(err.contains("err-p lg"), "stderr tail: {err}");
        assert!(
            err.contains(&format!("run {run} of job lg: failed, exit code 3")),
            "{err}"
        );
        assert!(err.contains("error: the agent exited with code 3"), "{err}");
    };
    check(&["job", "logs", "lg"], &second);
    check(&["job", "logs", &second], &second);
    let (_, runs, _) = cli(&dir, &["job", "runs", "lg", "--json"]);
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    let first = runs[1]["id"].as_str().unwrap().to_string();
    check(&["job", "logs", "lg", "--run", "2"], &first);
    check(&["job", "logs", "lg", "--run", &first], &first);
    let (code, _, err) = cli(&dir, &["job", "logs", "lg", "--run", "3"]);
    assert_eq!(code, 1);
    assert!(err.contains("--run 3"), "{err}");
    let (code, out, _) = cli(&dir, &["job", "logs", "lg", "--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["id"], second.as_str());
    // The runs table shows why.
    let (_, out, _) = cli(&dir, &["job", "runs", "lg"]);
    assert!(
        out.lines().next().unwrap().ends_with("ERROR")
            && out.contains("the agent exited with code 3"),
        "{out}"
    );
    // And with the daemon stopped, from the files.
    d.signal(libc::SIGTERM);
    d.wait_exit(30);
    check(&["job", "logs", "lg"], &second);
    check(&["job", "logs", &first], &first);
    // A job without runs.
    add_idle(&dir, "fresh", &[]);
    let (code, _, err) = cli(&dir, &["job", "logs", "fresh"]);
    assert_eq!(code, 1);
    assert!(err.contains("no runs yet"), "{err}");
}

#[test]
fn warnings_when_a_job_is_saved() {
    let t = tempdir();
    let dir = data(&t);
    let add = |dir: &std::path::Path, extra: &[&str]| {
        cli(
            dir,
            &[&["job", "add", "--cron", "0 0 1 1 *"], extra].concat(),
        )
    };
    let (code, _, err) = add(
        &dir,
        &["--name", "a", "--prompt", "p", "--agent", "echo hi"],
    );
    assert_eq!(code, 0);
    assert!(
        err.contains("warning: agent.command: has no {prompt}"),
        "{err}"
    );
    let (_, _, err) = add(
        &dir,
        &["--name", "b", "--prompt", "p", "--agent", "echo {{prompt}}"],
    );
    assert!(
        err.contains("warning: agent.command[1]: {{prompt}}"),
        "{err}"
    );
    let (_, _, err) = add(&dir, &["--name", "c", "--prompt", "at {fired_at}"]);
    assert!(
        err.contains("warning: prompt: {fired_at}") && err.contains("{{fired_at}}"),
        "{err}"
    );
    let (_, _, err) = add(
        &dir,
        &[
            "--name",
            "d",
            "--prompt",
            "p",
            "--agent",
            "cat {prompt}",
            "--prompt-stdin",
        ],
    );
    assert!(err.contains("twice"), "{err}");
    let (_, _, err) = add(
        &dir,
        &[
            "--name",
            "e",
            "--prompt",
            "p {{job_name}}",
            "--agent",
            "echo {prompt}",
        ],
    );
    assert!(!err.contains("warning"), "{err}");
    // The running daemon knows its environment: an unset webhook secret is a warning.
    let d = Daemon::start_env(t.path(), &[], &[("SET_SECRET", "s3cret")]);
    let (code, _, err) = cli(
        &dir,
        &[
            "job",
            "add",
            "--name",
            "h1",
            "--prompt",
            "p",
            "--webhook",
            "/hooks/h1",
            "--secret-env",
            "UNSET_SECRET_XYZ",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: triggers[0].secret_env: UNSET_SECRET_XYZ is not set"),
        "{err}"
    );
    let (_, _, err) = cli(
        &dir,
        &[
            "job",
            "add",
            "--name",
            "h2",
            "--prompt",
            "p",
            "--webhook",
            "/hooks/h2",
            "--secret-env",
            "SET_SECRET",
        ],
    );
    assert!(!err.contains("warning"), "{err}");
    let w = d.get("/jobs/h1").1["warnings"].clone();
    assert!(w[0].as_str().unwrap().contains("UNSET_SECRET_XYZ"), "{w}");
    assert!(d.get("/jobs/a").1["warnings"][0]
        .as_str()
        .unwrap()
        .contains("{prompt}"));
}

#[test]
fn job_list_shows_next_in_local_time_and_triggers_in_full() {
    let t = tempdir();
    let dir = data(&t);
    let (code, _, err) = cli(
        &dir,
        &[
            "job",
            "add",
            "--name",
            "full",
            "--prompt",
            "p",
            "--cron",
            "0 9 * * 1-5",
            "--timezone",
            "Europe/Berlin",
            "--watch",
            "src/**/*.py",
            "--root",
            "/tmp",
            "--git-repo",
            "/srv/repo",
            "--branch",
            "main",
            "--interval",
            "5m",
            "--debounce",
            "500ms",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = cli_env(&dir, &["job", "list"], &[("TZ", "UTC")]);
    assert_eq!(code, 0);
    let row = out.lines().find(|l| l.starts_with("full")).unwrap();
    assert!(
        row.contains(
            "cron 0 9 * * 1-5 Europe/Berlin, every 5m, file src/**/*.py, git /srv/repo main"
        ),
        "{out}"
    );
    // The next weekday 09:00 Berlin (08:00 UTC in winter, 07:00 in summer), shown in local
    // time (TZ=UTC here) with how far away it is.
    assert!(
        (row.contains(" 08:00:00 (in ") || row.contains(" 07:00:00 (in ")),
        "{out}"
    );
    let j = job_json(&dir, "full");
    assert_eq!(j["triggers"][1]["seconds"], 300);
    assert_eq!(j["triggers"][2]["debounce_seconds"], 0.5);
    let (code, out, _) = cli(&dir, &["job", "list", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["name"], "full");
    let (code, out, _) = cli(&dir, &["job", "set", "full", "--disabled", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["enabled"], false);
    // Nothing to change: with --json still the job, for scripts.
    let (code, out, _) = cli(&dir, &["job", "set", "full", "--disabled", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "full");
}

/// `job logs -f` shows a line the agent printed while it is still running, ends when the run
/// ends, and exits with the run's status.
#[test]
fn job_logs_follow_shows_lines_before_the_run_ends() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let flag = t.path().join("go-on");
    for (name, tail, code) in [("ok", "exit 0", 0), ("bad", "exit 3", 1)] {
        let script = format!(
            "echo started {name}; while [ ! -e {f}-{name} ]; do sleep 0.05; done; echo finished {name}; {tail}",
            f = flag.display()
        );
        d.create(&sh_job(name, &script, idle_trigger()));
        let (c, out, err) = cli(&d.dir, &["job", "run", name]);
        assert_eq!(c, 0, "{out}{err}");
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(&d.dir)
            .args(["job", "logs", "-f", name])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("job logs -f");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        assert_eq!(lines.next().unwrap().unwrap(), format!("started {name}"));
        // The agent waits for this flag: the line above arrived while it ran.
        std::fs::write(format!("{}-{name}", flag.display()), "").unwrap();
        assert_eq!(lines.next().unwrap().unwrap(), format!("finished {name}"));
        assert!(lines.next().is_none());
        let st = child.wait().expect("exit");
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err).unwrap();
        assert_eq!(st.code(), Some(code), "{err}");
        assert!(err.contains(&format!("of job {name}:")), "{err}");
    }
}

/// A TZif v2 file with no transitions, UTC+1, and a POSIX rule footer.
fn tzif(footer: &str) -> Vec<u8> {
    let mut block = Vec::new();
    block.extend(b"TZif2");
    block.extend([0u8; 15]);
    for n in [0u32, 0, 0, 0, 1, 4] {
        block.extend(n.to_be_bytes());
    }
    block.extend(3600i32.to_be_bytes());
    block.extend([0, 0]);
    block.extend(b"CET\0");
    let mut f = block.clone();
    f.extend(&block);
    f.extend(format!("\n{footer}\n").as_bytes());
    f
}

#[test]
fn next_reads_zones_from_tzdir() {
    let t = tempdir();
    let zones = t.path().join("zones");
    std::fs::create_dir_all(zones.join("Test")).unwrap();
    std::fs::write(zones.join("Test/Zone"), tzif("CET-1CEST,M3.5.0,M10.5.0/3")).unwrap();
    std::fs::write(zones.join("Test/Broken"), b"TZif2 not really").unwrap();
    let run = |tz: &str| {
        let out = std::process::Command::new(BIN)
            .env("TZDIR", &zones)
            .args(["--data-dir"])
            .arg(t.path())
            .args(["next", "30 2 * * *", "--from", "2026-03-27T12:00:00Z"])
            .args(["--count", "3", "--timezone", tz])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.code(),
            stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Spring-forward in the zone read from $TZDIR: the skipped 02:30 fires at 03:00.
    let (code, out, err) = run("Test/Zone");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00"
        ]
    );
    // A file that is not a valid TZif, a missing name and a path outside the database are
    // unknown zones (exit 2), as with any unknown name.
    for bad in [
        "Test/Broken",
        "Test/Missing",
        "../zones/Test/Zone",
        "/etc/passwd",
    ] {
        let (code, _, err) = run(bad);
        assert_eq!(code, Some(2), "{bad}: {err}");
        assert!(err.contains("unknown time zone"), "{bad}: {err}");
    }
    // Names the system database has still work with $TZDIR set.
    let (code, out, err) = run("Europe/Berlin");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("2026-03-28T02:30:00+01:00\n"), "{out}");
}
