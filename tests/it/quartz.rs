//! Quartz cron expressions (`dialect: "quartz"`) through the real binary: `next --dialect
//! quartz` in a time zone (SUN = 1, a year field, DST as for Vixie), a job that fires from
//! one, the field-named validation errors, and the hint a Quartz-looking Vixie expression
//! gets.

use crate::common::*;
use serde_json::json;

/// `next` in Europe/Berlin from `from`: (exit code, stdout, stderr).
fn next_berlin(dialect: &str, from: &str, count: &str, expr: &str) -> (i32, String, String) {
    let t = tempdir();
    let args = [
        "next",
        "--dialect",
        dialect,
        "--timezone",
        "Europe/Berlin",
        "--from",
        from,
        "--count",
        count,
        expr,
    ];
    cli(t.path(), &args)
}

#[test]
fn next_evaluates_quartz_in_the_zone_with_the_vixie_output() {
    // MON-FRI (2-6, Sunday is 1) at 09:00 Berlin time, only in 2026.
    let (code, out, err) = next_berlin(
        "quartz",
        "2026-12-29T12:00:00+01:00",
        "5",
        "0 0 9 ? * 2-6 2026",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out, "2026-12-30T09:00:00+01:00\n2026-12-31T09:00:00+01:00\n",
        "weekdays 2-6 are MON-FRI and the year ends the schedule"
    );
    // A fixed time in the spring-forward gap fires once, right after it, as Vixie does.
    let (code, out, _) = next_berlin("quartz", "2026-03-28T12:00:00Z", "2", "0 30 2 * * ?");
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "2026-03-29T03:00:00+02:00\n2026-03-30T02:30:00+02:00\n"
    );
    // The same instants as the equivalent Vixie expression.
    let vixie = next_berlin("vixie", "2026-03-28T12:00:00Z", "2", "30 2 * * *");
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
    let cases = [
        (
            json!({"cron": "0 0 9 ? * MON-FRI"}),
            "triggers[0].cron",
            "\"dialect\": \"quartz\"",
        ),
        (
            json!({"cron": "0 0 9 ? * 9", "dialect": "quartz"}),
            "triggers[0].cron",
            "day-of-week \"9\"",
        ),
        (
            json!({"cron": "0 0 9 * * ?", "dialect": "cron"}),
            "triggers[0].dialect",
            "expected vixie or quartz",
        ),
    ];
    for (mut trigger, field, says) in cases {
        trigger["type"] = json!("cron");
        let (st, v) = d.post("/jobs", &sh_job("q", "true", json!([trigger])));
        assert_eq!(st, 400, "{v}");
        assert_eq!(v["field"], field, "{v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{v}");
    }
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
    // `job add --dialect quartz` (through the running daemon's API).
    let (code, _, err) = cli(
        &d.dir,
        &[
            "job",
            "add",
            "--name",
            "qa",
            "--prompt",
            "p",
            "--agent",
            "echo {prompt}",
            "--cron",
            "0 0 9 ? * MON-FRI",
            "--dialect",
            "quartz",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (_, qa) = d.get("/jobs/qa");
    assert_eq!(qa["triggers"][0]["dialect"], "quartz", "{qa}");
    // The API's preview takes the dialect too.
    let (st, p) = d.get(
        "/schedule/preview?cron=0+0+9+%3F+*+MON-FRI&dialect=quartz&timezone=UTC&count=2&from=2026-12-04T10:00:00Z",
    );
    assert_eq!(st, 200, "{p}");
    assert_eq!(
        p["fires"],
        json!(["2026-12-07T09:00:00+00:00", "2026-12-08T09:00:00+00:00"])
    );
    let (st, p) = d.get("/schedule/preview?cron=0+0+9+%3F+*+MON-FRI&dialect=spring");
    assert_eq!((st, p["field"].as_str()), (400, Some("dialect")), "{p}");
    // A Vixie job's stored JSON does not grow a dialect field.
    let v = d.create(&sh_job("vx", "true", idle_trigger()));
    assert!(v["triggers"][0].get("dialect").is_none(), "{v}");
}
