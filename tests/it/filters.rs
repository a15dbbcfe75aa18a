//! Webhook filters end to end: real signed deliveries over loopback, shaped like GitHub's and
//! GitLab's documented example payloads (`fixtures/`), against the README's three recipes as
//! written. Matching deliveries run once; every other one is answered 2xx with the rule that
//! did not match and leaves no record; bad rules are refused at creation with their field;
//! unsigned or badly signed deliveries never reach a filter.

use crate::common::*;
use serde_json::{json, Value};

const SECRET: &str = "filter-test-secret";

fn fixture(name: &str) -> Value {
    let p = format!(
        "{}/tests/it/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// The job JSON of each `##### Recipe:` in README's "Webhook filters", with an agent that
/// prints the rendered prompt.
fn readme_recipes() -> Vec<Value> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut jobs = Vec::new();
    for part in readme.split("\n##### Recipe:").skip(1) {
        let start = part.find("```json\n").expect("a json block") + 8;
        let end = part[start..].find("```").unwrap() + start;
        let mut job: Value = serde_json::from_str(&part[start..end]).expect("recipe JSON");
        job["agent"] = json!({"command": ["sh", "-c", "echo \"$1\"", "sh", "{prompt}"]});
        job.as_object_mut().unwrap().remove("outputs");
        jobs.push(job);
    }
    jobs
}

/// POSTs `body` to `path`, signed GitHub's way, with the event header; (status, JSON).
fn deliver(d: &Daemon, path: &str, event: &str, body: &[u8]) -> (u16, Value) {
    let sig = github_signature(SECRET, body);
    let (st, _, text) = d.raw(
        "POST",
        path,
        Some(body),
        &[
            ("X-Hub-Signature-256", &sig),
            ("X-GitHub-Event", event),
            ("Content-Type", "application/json"),
        ],
    );
    (st, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// (what, event header, body, the job that runs and a piece of its rendered prompt, or a
/// piece of the reason the delivery was filtered).
type Case = (
    &'static str,
    &'static str,
    Vec<u8>,
    Result<(&'static str, &'static str), &'static str>,
);

/// (what, body, headers) of a delivery that must be refused.
type Unsigned<'a> = (&'a str, &'a [u8], Vec<(&'a str, &'a str)>);

fn run_count(d: &Daemon, job: &str) -> usize {
    d.get(&format!("/jobs/{job}/runs?limit=1000"))
        .1
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn readme_recipes_run_for_their_events_and_filter_the_rest() {
    let t = tempdir();
    let d = Daemon::start_env(t.path(), &[], &[("GITHUB_WEBHOOK_SECRET", SECRET)]);
    let recipes = readme_recipes();
    assert_eq!(recipes.len(), 3, "three recipes in the README");
    for r in &recipes {
        d.create(r);
    }
    let pr = fixture("github_pull_request_opened");
    let mut pr_main = pr.clone();
    pr_main["pull_request"]["base"]["ref"] = json!("main");
    let mut pr_closed = pr_main.clone();
    pr_closed["action"] = json!("closed");
    let labeled = fixture("github_issues_labeled");
    let mut labeled_agent = labeled.clone();
    labeled_agent["label"]["name"] = json!("agent");
    let mut assigned_bot = fixture("github_issues_assigned");
    assigned_bot["assignee"]["login"] = json!("acme-bot");
    let assigned_other = fixture("github_issues_assigned");
    let suite_ok = fixture("github_check_suite_completed");
    let mut suite_failed = suite_ok.clone();
    suite_failed["check_suite"]["conclusion"] = json!("failure");
    let mut suite_failed_no_pr = suite_failed.clone();
    suite_failed_no_pr["check_suite"]["pull_requests"] = json!([]);
    let push = fixture("github_push");

    let cases: Vec<Case> = vec![
        ("pr opened on main", "pull_request", pr_main.to_string().into_bytes(),
            Ok(("review-pr", "Review pull request #2 of Codertocat/Hello-World"))),
        ("pr opened on master", "pull_request", pr.to_string().into_bytes(),
            Err("review-pr: match: pull_request.base.ref is \"master\", not \"main\"")),
        ("pr closed", "pull_request", pr_closed.to_string().into_bytes(),
            Err("review-pr: events: \"pull_request.closed\" is not one of pull_request.opened")),
        ("issue labeled agent", "issues", labeled_agent.to_string().into_bytes(),
            Ok(("issue-agent", "Work on issue #1 of Codertocat/Hello-World: Spelling error"))),
        ("issue labeled bug", "issues", labeled.to_string().into_bytes(),
            Err("issue-agent: match.any: none of its 2 rules matched")),
        ("issue assigned to the bot", "issues", assigned_bot.to_string().into_bytes(),
            Ok(("issue-agent", "Work on issue #1"))),
        ("issue assigned to a person", "issues", assigned_other.to_string().into_bytes(),
            Err("issue-agent: match.any")),
        ("check suite failed on a pr", "check_suite", suite_failed.to_string().into_bytes(),
            Ok(("repair-ci", "ended failure on pull request #2"))),
        ("check suite succeeded", "check_suite", suite_ok.to_string().into_bytes(),
            Err("repair-ci: match.all[0]: check_suite.conclusion is \"success\", not one of the 2 values listed")),
        ("check suite failed, no pr", "check_suite", suite_failed_no_pr.to_string().into_bytes(),
            Err("repair-ci: match.all[1]: check_suite.pull_requests.0.number is missing")),
        ("push", "push", push.to_string().into_bytes(),
            Err("issue-agent: events: \"push\" is not one of issues.labeled, issues.assigned")),
        ("a body that is not JSON", "pull_request", b"action=opened".to_vec(),
            Err("review-pr: events: \"pull_request\" is not one of pull_request.opened")),
        ("a star", "star", br#"{"action": "created"}"#.to_vec(),
            Err("repair-ci: events: \"star.created\" is not one of check_suite.completed")),
    ];
    let mut filtered = 0;
    for (what, event, body, want) in &cases {
        let (st, v) = deliver(&d, "/hooks/github", event, body);
        assert_eq!(st, 202, "{what}: {v}");
        match want {
            Ok((job, says)) => {
                let ids = v["run_ids"].as_array().unwrap();
                assert_eq!(ids.len(), 1, "{what}: exactly one job runs: {v}");
                assert!(v.get("filtered").is_none(), "{what}: {v}");
                let r = d.wait_final(job, ids[0].as_str().unwrap(), 30);
                assert_eq!(r["status"], "succeeded", "{what}: {r}");
                let out = r["output"].as_str().unwrap();
                assert!(out.contains(says), "{what}: {out}");
            }
            Err(why) => {
                filtered += 1;
                assert_eq!(v["run_ids"], json!([]), "{what}: {v}");
                let reason = v["filtered"].as_str().unwrap_or_default();
                assert!(reason.contains(why), "{what}: {reason}");
            }
        }
    }
    // Each matching delivery ran its job once, and nothing else left a record.
    assert_eq!(run_count(&d, "review-pr"), 1);
    assert_eq!(run_count(&d, "issue-agent"), 2);
    assert_eq!(run_count(&d, "repair-ci"), 1);
    let m = d.get("/metrics").1;
    assert_eq!(m["webhooks_filtered_total"], filtered, "{m}");
    let n = cases.len() as u64;
    assert_eq!(
        m["webhooks_filtered_by_job"],
        json!({"review-pr": n - 1, "issue-agent": n - 2, "repair-ci": n - 1}),
        "{m}"
    );
    let auth = format!("Bearer {}", d.token);
    let (_, _, text) = d.raw(
        "GET",
        "/metrics",
        None,
        &[("Authorization", &auth), ("Accept", "text/plain")],
    );
    assert!(
        text.lines().any(|l| l
            == format!(
                "bog_webhooks_filtered_by_job_total{{job=\"repair-ci\"}} {}",
                n - 1
            )),
        "{text}"
    );
    let log = d.stderr();
    assert_eq!(
        log.matches("webhook.filtered").count() as u64,
        3 * n - 4,
        "one debug line per filtered job and delivery: {log}"
    );
    assert!(!log.contains(SECRET));
}

#[test]
fn gitlab_deliveries_are_filtered_by_normalised_event_and_action() {
    let t = tempdir();
    let d = Daemon::start_env(t.path(), &[], &[("GITLAB_TOKEN_VAR", SECRET)]);
    d.create(&sh_job(
        "mr",
        "echo merge request",
        json!([{"type": "webhook", "path": "/hooks/gitlab", "secret_env": "GITLAB_TOKEN_VAR",
            "events": ["merge_request.open", "merge_request.reopen"],
            "match": {"path": "object_attributes.target_branch", "equals": "master"}}]),
    ));
    let send = |event: &str, body: &Value| {
        let (st, _, text) = d.raw(
            "POST",
            "/hooks/gitlab",
            Some(body.to_string().as_bytes()),
            &[("X-Gitlab-Token", SECRET), ("X-Gitlab-Event", event)],
        );
        (
            st,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        )
    };
    let mr = fixture("gitlab_merge_request");
    let (st, v) = send("Merge Request Hook", &mr);
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["run_ids"].as_array().unwrap().len(), 1, "{v}");
    let r = d.wait_final("mr", v["run_ids"][0].as_str().unwrap(), 30);
    assert_eq!(r["status"], "succeeded", "{r}");

    let mut update = mr.clone();
    update["object_attributes"]["action"] = json!("update");
    let (st, v) = send("Merge Request Hook", &update);
    assert_eq!((st, v["run_ids"].clone()), (202, json!([])), "{v}");
    assert_eq!(
        v["filtered"],
        "events: \"merge_request.update\" is not one of merge_request.open, merge_request.reopen"
    );
    let mut other_branch = mr.clone();
    other_branch["object_attributes"]["target_branch"] = json!("develop");
    let (st, v) = send("Merge Request Hook", &other_branch);
    assert_eq!(st, 202);
    assert_eq!(
        v["filtered"],
        "match: object_attributes.target_branch is \"develop\", not \"master\""
    );
    let (st, v) = send("Push Hook", &fixture("gitlab_push"));
    assert_eq!(st, 202);
    assert_eq!(
        v["filtered"],
        "events: \"push\" is not one of merge_request.open, merge_request.reopen"
    );
    // A wrong token is refused before any filter.
    let (st, _, _) = d.raw(
        "POST",
        "/hooks/gitlab",
        Some(mr.to_string().as_bytes()),
        &[
            ("X-Gitlab-Token", "wrong"),
            ("X-Gitlab-Event", "Merge Request Hook"),
        ],
    );
    assert_eq!(st, 401);
    assert_eq!(run_count(&d, "mr"), 1);
    assert_eq!(d.get("/metrics").1["webhooks_filtered_total"], 3);
}

#[test]
fn bad_rules_are_refused_at_creation_with_their_field() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let hook = |extra: Value| {
        let mut t = json!({"type": "webhook", "path": "/hooks/x", "secret_env": "S"});
        for (k, v) in extra.as_object().unwrap() {
            t[k] = v.clone();
        }
        sh_job(
            "bad",
            "true",
            json!([{"type": "cron", "cron": "0 0 1 1 *"}, t]),
        )
    };
    let mut deep = json!({"path": "a", "exists": true});
    for _ in 0..20 {
        deep = json!({ "not": deep });
    }
    let cases = [
        (
            json!({"match": {"all": [{"path": "a", "equals": 1}, {"path": "b", "regex": "(unclosed"}]}}),
            "triggers[1].match.all[1].regex",
            "invalid regular expression",
        ),
        (
            json!({"match": {"path": "a", "regex": "a{1000}{1000}"}}),
            "triggers[1].match.regex",
            "too large",
        ),
        (
            json!({"match": deep}),
            "triggers[1].match.not.not.not.not.not.not.not.not",
            "levels deep",
        ),
        (
            json!({"match": {"path": "a", "like": 1}}),
            "triggers[1].match.like",
            "unknown test",
        ),
        (
            json!({"match": {"all": []}}),
            "triggers[1].match.all",
            "at least one rule",
        ),
        (
            json!({"events": ["pull request"]}),
            "triggers[1].events[0]",
            "not an event name",
        ),
        (
            json!({"events": "push"}),
            "triggers[1].events",
            "expected an array",
        ),
    ];
    for (extra, field, says) in cases {
        let (st, v) = d.post("/jobs", &hook(extra.clone()));
        assert_eq!(st, 400, "{extra}: {v}");
        assert_eq!(v["field"], field, "{extra}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{extra}: {v}");
    }
    assert_eq!(d.get("/jobs").1.as_array().unwrap().len(), 0);

    // The CLI: --event and --match make the filter; a bad --match is named as the flag.
    let add = |extra: &[&str]| {
        let mut args = vec!["job", "add", "--name", "c", "--prompt", "p"];
        args.extend_from_slice(extra);
        cli(&d.dir, &args)
    };
    let (code, _, err) = add(&["--webhook", "/hooks/c", "--match", "head.ref~=(x"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--match") && err.contains("invalid regular expression"),
        "{err}"
    );
    let (code, _, err) = add(&["--event", "push"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("go with --webhook"), "{err}");
    let (code, out, err) = add(&[
        "--webhook",
        "/hooks/c",
        "--event",
        "pull_request.opened",
        "--event",
        "pull_request.reopened",
        "--match",
        "pull_request.base.ref=main",
        "--match",
        "pull_request.head.ref~=^feat/",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let job: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        job["triggers"][0]["events"],
        json!(["pull_request.opened", "pull_request.reopened"])
    );
    assert_eq!(
        job["triggers"][0]["match"],
        json!({"all": [{"path": "pull_request.base.ref", "equals": "main"},
                       {"path": "pull_request.head.ref", "regex": "^feat/"}]})
    );
    let (code, out, err) = cli(
        &d.dir,
        &[
            "job",
            "set",
            "c",
            "--event",
            "push",
            "--match",
            "ref=refs/heads/main",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let t0 = &d.get("/jobs/c").1["triggers"][0];
    assert_eq!(t0["events"], json!(["push"]));
    assert_eq!(
        t0["match"],
        json!({"path": "ref", "equals": "refs/heads/main"})
    );
}

#[test]
fn unsigned_or_badly_signed_deliveries_never_reach_the_filter() {
    let t = tempdir();
    let d = Daemon::start_env(t.path(), &[], &[("HOOK_SECRET", SECRET)]);
    d.create(&sh_job(
        "guarded",
        "echo ran",
        json!([{"type": "webhook", "path": "/hooks/guarded", "secret_env": "HOOK_SECRET",
            "events": ["push"], "match": {"path": "ref", "equals": "refs/heads/main"}}]),
    ));
    let matching = br#"{"ref": "refs/heads/main"}"#;
    let other = br#"{"ref": "refs/heads/dev"}"#;
    let wrong = github_signature("not-the-secret", matching);
    let cases: Vec<Unsigned> = vec![
        (
            "unsigned, matching",
            matching,
            vec![("X-GitHub-Event", "push")],
        ),
        (
            "unsigned, not matching",
            other,
            vec![("X-GitHub-Event", "push")],
        ),
        (
            "unsigned, wrong event",
            matching,
            vec![("X-GitHub-Event", "star")],
        ),
        (
            "wrong secret, matching",
            matching,
            vec![("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &wrong)],
        ),
        (
            "wrong secret, not JSON",
            b"xx",
            vec![("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &wrong)],
        ),
        (
            "wrong gitlab token",
            matching,
            vec![("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "nope")],
        ),
    ];
    for (what, body, headers) in &cases {
        let (st, _, text) = d.raw("POST", "/hooks/guarded", Some(body), headers);
        assert_eq!(st, 401, "{what}: {text}");
        assert!(!text.contains("filtered"), "{what}: {text}");
    }
    let m = d.get("/metrics").1;
    assert_eq!(m["webhooks_filtered_total"], 0, "{m}");
    assert_eq!(m["webhooks_filtered_by_job"], json!({}), "{m}");
    assert_eq!(m["webhooks_rejected_total"], cases.len() as u64, "{m}");
    assert_eq!(run_count(&d, "guarded"), 0);
    // Signed, the same bodies reach the filter: one runs, one is filtered.
    let (st, v) = deliver(&d, "/hooks/guarded", "push", other);
    assert_eq!((st, v["filtered"].as_str().is_some()), (202, true), "{v}");
    let (st, v) = deliver(&d, "/hooks/guarded", "push", matching);
    assert_eq!(st, 202, "{v}");
    d.wait_final("guarded", v["run_ids"][0].as_str().unwrap(), 30);
    assert_eq!(run_count(&d, "guarded"), 1);
}
