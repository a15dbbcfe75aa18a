//! Quartz cron expressions (`dialect: "quartz"`) through the real binary: `next --dialect
//! quartz` in a time zone (SUN = 1, a year field, DST as for Vixie), a job that fires from
//! one, the field-named validation errors, and the hint a Quartz-looking Vixie expression
//! gets.

use crate::common::*;
use serde_json::json;

#[test]
fn next_evaluates_quartz_in_the_zone_with_the_vixie_output() {
    let t = tempdir();
    // 2026-12-04 is a Friday; MON-FRI at 09:00 Berlin time, only in 2026.
    let (code, out, err) = cli(
        t.path(),
        &[
            "next",
            "--dialect",
            "quartz",
            "--timezone",
            "Europe/Berlin",
            "--from",
            "2026-12-29T12:00:00+01:00",
            "--count",
            "5",
            "0 0 9 ? * 2-6 2026",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out, "2026-12-30T09:00:00+01:00\n2026-12-31T09:00:00+01:00\n",
        "weekdays 2-6 are MON-FRI and the year ends the schedule"
    );
    // A fixed time in the spring-forward gap fires once, right after it, as Vixie does.
    let (code, out, _) = cli(
        t.path(),
        &[
            "next",
            "--dialect",
            "quartz",
            "--timezone",
            "Europe/Berlin",
            "--from",
            "2026-03-28T12:00:00Z",
            "--count",
            "2",
            "0 30 2 * * ?",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "2026-03-29T03:00:00+02:00\n2026-03-30T02:30:00+02:00\n"
    );
    // The same instants as the equivalent Vixie expression.
    let vixie = cli(
        t.path(),
        &[
            "next",
            "--timezone",
            "Europe/Berlin",
            "--from",
            "2026-03-28T12:00:00Z",
            "--count",
            "2",
            "30 2 * * *",
        ],
    );
    assert_eq!(vixie.1, out);
}

#[test]
fn a_vixie_expression_that_looks_like_quartz_suggests_the_dialect() {
    let t = tempdir();
    let (code, _, err) = cli(t.path(), &["next", "0 9 * * 1-5 2026"]);
    assert_eq!(code, 2);
    assert!(err.contains("day-of-week 2026 out of range 0-7"), "{err}");
    assert!(err.contains("--dialect quartz"), "{err}");
    let (code, _, err) = cli(t.path(), &["next", "--dialect", "quartz", "0 0 9 L * ?"]);
    assert_eq!(code, 2);
    assert!(err.contains("L, W and # are not supported"), "{err}");

    let d = Daemon::start(t.path(), &[]);
    let (st, v) = d.post(
        "/jobs",
        &sh_job(
            "q",
            "true",
            json!([{"type": "cron", "cron": "0 0 9 ? * MON-FRI"}]),
        ),
    );
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["field"], "triggers[0].cron");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("\"dialect\": \"quartz\""),
        "{v}"
    );
    let (st, v) = d.post(
        "/jobs",
        &sh_job(
            "q",
            "true",
            json!([{"type": "cron", "cron": "0 0 9 ? * 9", "dialect": "quartz"}]),
        ),
    );
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["field"], "triggers[0].cron");
    assert!(
        v["error"].as_str().unwrap().contains("day-of-week \"9\""),
        "{v}"
    );
    let (st, v) = d.post(
        "/jobs",
        &sh_job(
            "q",
            "true",
            json!([{"type": "cron", "cron": "0 0 9 * * ?", "dialect": "cron"}]),
        ),
    );
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["field"], "triggers[0].dialect");
}

#[test]
fn a_quartz_job_fires_and_keeps_its_dialect() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let j = d.create(&sh_job(
        "qs",
        "echo $BOG_TRIGGER",
        json!([{"type": "cron", "cron": "* * * ? * *", "dialect": "quartz", "timezone": "UTC"}]),
    ));
    assert_eq!(j["triggers"][0]["dialect"], "quartz");
    assert!(j["next_fire_at"].is_string(), "{j}");
    let r = d.wait_run("qs", 20, "a quartz cron run", |r| {
        r["status"] == "succeeded"
    });
    assert_eq!(r["trigger"]["cron"], "* * * ? * *");
    let (code, out, err) = cli(&d.dir, &["job", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("quartz * * * ? * * UTC"), "{out}");
    // A Vixie job's stored JSON does not grow a dialect field.
    let v = d.create(&sh_job("vx", "true", idle_trigger()));
    assert!(v["triggers"][0].get("dialect").is_none(), "{v}");
}
