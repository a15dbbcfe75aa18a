//! The CLI against the real binary: `job add` with the daemon stopped and running, the
//! file-based and API-based job commands, exit codes, and `next` against hand-checked
//! calendars.

mod common;
use common::*;

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
    assert!(out.contains("picks it up"), "{out}");
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
        err.contains("triggers[0].cron") && err.contains("61"),
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
