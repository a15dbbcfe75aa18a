//! The `job add` / `job set` flags of the job fields that came with fresh checkouts, the
//! dead-man's switch, run budgets and the agent's environment: each flag lands in the job
//! (`job show`, and `GET /jobs/{id}` when a daemon runs), `job list` shows it, `job set`
//! changes and removes it, and a bad value is refused with the flag's name and no job
//! saved. Both ways the CLI saves a job are covered: through the daemon's API and, with no
//! daemon, in the job file.

use std::path::Path;

use serde_json::{json, Value};

use crate::common::*;

fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = cli(dir, args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

fn show(dir: &Path, name: &str) -> Value {
    serde_json::from_str(&ok(dir, &["job", "show", name])).unwrap()
}

/// Refused with exit 2, an error naming `flag` and holding `words`, and nothing saved.
fn refused(dir: &Path, args: &[&str], flag: &str, words: &str) {
    let (code, out, err) = cli(dir, args);
    assert_eq!(code, 2, "{args:?} was accepted: {out}{err}");
    assert!(
        err.contains(flag) && err.contains(words),
        "{args:?}: the error should name {flag} and say {words:?}: {err}"
    );
}

/// A real git repository (git_push triggers need one).
fn git_repo(dir: &Path) -> String {
    let repo = dir.join("repo");
    let st = std::process::Command::new("git")
        .args(["init", "-q"])
        .arg(&repo)
        .status()
        .unwrap();
    assert!(st.success());
    repo.display().to_string()
}

/// Adds a job with every new flag, checks what was saved and shown, then changes and
/// removes the fields with `job set`. `d`: the daemon the CLI talks to, if one runs.
fn round_trip(t: &Path, data: &Path, d: Option<&Daemon>) {
    let repo = git_repo(t);
    let out_file = t.join("result.txt").display().to_string();
    ok(
        data,
        &[
            "job",
            "add",
            "--name",
            "pushy",
            "--prompt",
            "review {{commit}}",
            "--agent",
            "sh -c 'echo {prompt}'",
            "--no-inherit-env",
            "--env-allow",
            "LANGUAGE",
            "--env-allow",
            "TZ",
            "--git-repo",
            &repo,
            "--branch",
            "main",
            "--checkout",
            "--keep-checkout-on-failure",
            "--expect-within",
            "1d",
            "--max-runs-per-hour",
            "5",
            "--max-runs-per-day",
            "40",
            "--output",
            &format!("file:{out_file}"),
            "--no-append",
            "--output",
            "github_comment:acme/app#12",
            "--token-env",
            "GHE_TOKEN",
            "--api-url",
            "https://ghe.example.com/api/v3",
            "--output",
            "email:ops@example.com",
            "--smtp-env-prefix",
            "MAIL_",
        ],
    );
    let j = show(data, "pushy");
    assert_eq!(
        j["triggers"][0],
        json!({"type": "git_push", "repo": repo, "branch": "main",
               "checkout": true, "keep_checkout_on_failure": true}),
        "{j}"
    );
    assert_eq!(j["expect"], json!({"within_seconds": 86400}), "{j}");
    assert_eq!(j["limits"]["max_runs_per_hour"], 5, "{j}");
    assert_eq!(j["limits"]["max_runs_per_day"], 40, "{j}");
    assert_eq!(j["agent"]["inherit_env"], false, "{j}");
    assert_eq!(j["agent"]["env_allow"], json!(["LANGUAGE", "TZ"]), "{j}");
    assert_eq!(j["outputs"][0]["append"], false, "{j}");
    assert_eq!(j["outputs"][1]["token_env"], "GHE_TOKEN", "{j}");
    assert_eq!(
        j["outputs"][1]["api_url"], "https://ghe.example.com/api/v3",
        "{j}"
    );
    assert_eq!(j["outputs"][2]["smtp_env_prefix"], "MAIL_", "{j}");
    if let Some(d) = d {
        // The daemon has the same job, and counts the budget.
        let (st, api) = d.get("/jobs/pushy");
        assert_eq!(st, 200, "{api}");
        for k in ["triggers", "expect", "limits", "agent", "outputs"] {
            assert_eq!(api[k], j[k], "{k}");
        }
        assert_eq!(
            api["budget_use"],
            json!({"max_runs_per_hour": {"used": 0, "max": 5},
                   "max_runs_per_day": {"used": 0, "max": 40}}),
            "{api}"
        );
    }
    let list = ok(data, &["job", "list"]);
    let head = list.lines().next().unwrap();
    let row = list.lines().find(|l| l.starts_with("pushy")).unwrap();
    assert!(head.contains("EXPECT"), "{list}");
    assert!(
        row.contains(&format!("git {repo} main checkout (kept on failure)")),
        "{list}"
    );
    assert!(row.contains("success every 1d"), "{list}");
    if d.is_some() {
        assert!(
            head.contains("BUDGET") && row.contains("0/5 per hour, 0/40 per day"),
            "{list}"
        );
    }

    // job set: remove the switch, one budget, the checkout and the clean environment.
    let out = ok(
        data,
        &[
            "job",
            "set",
            "pushy",
            "--unset",
            "expect",
            "--unset",
            "limits.max_runs_per_hour",
            "--no-checkout",
            "--inherit-env",
        ],
    );
    assert!(
        out.contains("expect: {\"within_seconds\":86400} -> (unset)"),
        "{out}"
    );
    assert!(
        out.contains("triggers[0].checkout: true -> (unset)"),
        "{out}"
    );
    let j = show(data, "pushy");
    assert!(j.get("expect").is_none(), "{j}");
    assert!(j["limits"]["max_runs_per_hour"].is_null(), "{j}");
    assert_eq!(j["limits"]["max_runs_per_day"], 40, "{j}");
    assert!(j["triggers"][0].get("checkout").is_none(), "{j}");
    assert!(
        j["triggers"][0].get("keep_checkout_on_failure").is_none(),
        "{j}"
    );
    assert!(j["agent"].get("inherit_env").is_none(), "{j}");
    assert_eq!(j["agent"]["env_allow"], json!(["LANGUAGE", "TZ"]), "{j}");
    let list = ok(data, &["job", "list"]);
    assert!(
        !list.contains("EXPECT") && !list.contains("checkout"),
        "{list}"
    );

    // job set: set them again, the other way.
    ok(
        data,
        &[
            "job",
            "set",
            "pushy",
            "--checkout",
            "--max-runs-per-hour",
            "3",
            "--expect-within",
            "2h",
        ],
    );
    let j = show(data, "pushy");
    assert_eq!(j["triggers"][0]["checkout"], true, "{j}");
    assert!(
        j["triggers"][0].get("keep_checkout_on_failure").is_none(),
        "{j}"
    );
    assert_eq!(j["limits"]["max_runs_per_hour"], 3, "{j}");
    assert_eq!(j["expect"], json!({"within_seconds": 7200}), "{j}");
    // after_slot counts from cron slots: refused until the job has a cron trigger.
    refused(
        data,
        &["job", "set", "pushy", "--expect-after-slot", "30m"],
        "--expect-after-slot",
        "use --expect-within",
    );
    ok(
        data,
        &[
            "job",
            "set",
            "pushy",
            "--add-trigger",
            "--cron",
            "0 9 * * *",
            "--expect-after-slot",
            "30m",
        ],
    );
    let j = show(data, "pushy");
    assert_eq!(j["expect"], json!({"after_slot": 1800}), "{j}");
    let list = ok(data, &["job", "list"]);
    assert!(list.contains("success within 30m of each slot"), "{list}");
    if let Some(d) = d {
        let (_, api) = d.get("/jobs/pushy");
        assert_eq!(api["expect"], json!({"after_slot": 1800}), "{api}");
        assert_eq!(api["limits"]["max_runs_per_hour"], 3, "{api}");
    }
    ok(
        data,
        &[
            "job",
            "set",
            "pushy",
            "--unset",
            "expect",
            "--unset",
            "limits.max_runs_per_hour",
            "--unset",
            "limits.max_runs_per_day",
        ],
    );
    let j = show(data, "pushy");
    assert!(j.get("expect").is_none(), "{j}");
    assert!(j["limits"]["max_runs_per_day"].is_null(), "{j}");
    if let Some(d) = d {
        let (_, api) = d.get("/jobs/pushy");
        assert!(api.get("budget_use").is_none(), "{api}");
    }
}

#[test]
fn new_flags_round_trip_through_the_running_daemon() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    round_trip(t.path(), &d.dir, Some(&d));
}

#[test]
fn new_flags_round_trip_through_the_job_files_with_no_daemon() {
    let t = tempdir();
    let data = t.path().join("data");
    round_trip(t.path(), &data, None);
}

/// The refusals, each naming the flag. `data`: where the jobs go.
fn refusals(t: &Path, data: &Path) {
    let repo = git_repo(t);
    let base = ["job", "add", "--name", "bad", "--prompt", "p"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            with(&[
                "--cron",
                "0 9 * * *",
                "--expect-within",
                "1d",
                "--expect-after-slot",
                "1h",
            ]),
            "--expect-within",
            "cannot be used with '--expect-after-slot",
        ),
        (
            with(&["--interval", "5m", "--expect-within", "soon"]),
            "--expect-within",
            "is not a duration",
        ),
        (
            with(&["--interval", "5m", "--expect-within", "0"]),
            "--expect-within",
            "from 1 to",
        ),
        (
            with(&["--interval", "5m", "--expect-after-slot", "1h"]),
            "--expect-after-slot",
            "use --expect-within",
        ),
        (
            with(&["--interval", "5m", "--max-runs-per-hour", "0"]),
            "--max-runs-per-hour",
            "from 1 to 10000",
        ),
        (
            with(&["--interval", "5m", "--max-runs-per-day", "many"]),
            "--max-runs-per-day",
            "invalid digit",
        ),
        (
            with(&["--interval", "5m", "--checkout"]),
            "--checkout",
            "go with --git-repo",
        ),
        (
            with(&["--git-repo", &repo, "--keep-checkout-on-failure"]),
            "--keep-checkout-on-failure",
            "needs --checkout",
        ),
        (
            with(&["--interval", "5m", "--output", "log", "--on", "missed"]),
            "--on",
            "add --expect-within",
        ),
        (
            with(&["--interval", "5m", "--output", "log", "--on", "later"]),
            "--on",
            "expected succeeded, failed or missed",
        ),
        (
            with(&["--interval", "5m", "--no-inherit-env"]),
            "--no-inherit-env",
            "--agent",
        ),
        (
            with(&["--interval", "5m", "--agent", "true", "--env-allow", "1BAD"]),
            "--env-allow",
            "not an environment variable name",
        ),
        (
            with(&["--interval", "5m", "--output", "log", "--token-env", "T"]),
            "--token-env",
            "add one",
        ),
        (
            with(&[
                "--interval",
                "5m",
                "--output",
                "slack:#ops",
                "--token-env",
                "xoxb-1",
            ]),
            "--token-env",
            "not an environment variable name",
        ),
        (
            with(&[
                "--interval",
                "5m",
                "--output",
                "github_comment:a/b#1",
                "--api-url",
                "https://u:p@ghe.example.com",
            ]),
            "--api-url",
            "credentials",
        ),
        (
            with(&["--interval", "5m", "--no-append"]),
            "--no-append",
            "--output",
        ),
        (
            with(&[
                "--interval",
                "5m",
                "--output",
                "email:a@example.com",
                "--smtp-env-prefix",
                "1",
            ]),
            "--smtp-env-prefix",
            "prefix of environment variable names",
        ),
    ];
    for (args, flag, words) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(data, &args, flag, words);
    }
    // Nothing was saved.
    let (code, _, err) = cli(data, &["job", "show", "bad"]);
    assert_eq!(code, 1, "{err}");
    // --on missed goes with a dead-man's switch.
    ok(
        data,
        &[
            "job",
            "add",
            "--name",
            "watched",
            "--prompt",
            "p",
            "--interval",
            "1h",
            "--expect-within",
            "90m",
            "--output",
            "log",
            "--on",
            "failed,missed",
        ],
    );
    let j = show(data, "watched");
    assert_eq!(j["outputs"][0]["on"], json!(["failed", "missed"]), "{j}");
    assert_eq!(j["expect"], json!({"within_seconds": 5400}), "{j}");
    // An output told of missed periods needs the switch: --unset expect says which one.
    refused(
        data,
        &["job", "set", "watched", "--unset", "expect"],
        "--unset expect",
        "--rm-output 0",
    );
    ok(
        data,
        &[
            "job",
            "set",
            "watched",
            "--unset",
            "expect",
            "--rm-output",
            "0",
        ],
    );
    let j = show(data, "watched");
    assert!(j.get("expect").is_none(), "{j}");
    assert_eq!(j["outputs"], json!([]), "{j}");
}

#[test]
fn bad_values_are_refused_naming_the_flag_by_the_daemon() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    refusals(t.path(), &d.dir);
}

#[test]
fn bad_values_are_refused_naming_the_flag_with_no_daemon() {
    let t = tempdir();
    refusals(t.path(), &t.path().join("data"));
}
