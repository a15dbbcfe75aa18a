//! Network outputs through the real daemon, delivered to real servers on loopback that the
//! tests start: a small HTTP server playing Slack's, GitHub's and a webhook receiver's
//! endpoints (it records every request and answers from a script), and an SMTP server
//! (Python's aiosmtpd). Covers retries (429 + Retry-After, 5xx), no retries (4xx), Slack's
//! `ok: false`, webhook signatures checked with independent HMAC code, the dispatch_errors
//! cap, `on`, and that no secret value reaches the data dir or the daemon's log.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use crate::support::http::{reply, Req, Server};
use crate::support::smtp::SmtpSink;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Helpers.

fn manual(d: &Daemon, job: &str) -> String {
    let (st, v) = d.post(&format!("/jobs/{job}/run"), &json!({}));
    assert_eq!(st, 202, "{v}");
    v["run_id"].as_str().expect("run_id").to_string()
}

/// Creates a job whose agent runs `script`, with `outputs`; runs it once; returns the
/// final record (dispatch is over by then: the final record is written after it).
fn run_once(d: &Daemon, name: &str, script: &str, outputs: Value) -> Value {
    let mut j = sh_job(name, script, idle_trigger());
    j["outputs"] = outputs;
    d.create(&j);
    let id = manual(d, name);
    d.wait_final(name, &id, 90)
}

fn errors(run: &Value) -> Vec<(String, String)> {
    run["dispatch_errors"]
        .as_array()
        .expect("dispatch_errors")
        .iter()
        .map(|e| {
            (
                e["target"].as_str().unwrap().to_string(),
                e["error"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A receiver's check of `X-Bog-Signature-256`, written from the documented recipe.
fn signature_ok(secret: &str, req: &Req) -> bool {
    let Some(sig) = req
        .header("x-bog-signature-256")
        .and_then(|s| s.strip_prefix("sha256="))
    else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&req.body);
    sig.len() == 64 && mac.verify_slice(&unhex(sig)).is_ok()
}

// ---------------------------------------------------------------------------------------
// Slack.

#[test]
fn slack_bot_posts_chat_post_message_and_reports_ok_false() {
    let t = tempdir();
    let slack = Server::start(reply(200, r#"{"ok": true, "channel": "C1", "ts": "1.2"}"#));
    let d = Daemon::start_env(t.path(), &[], &[("SLACK_TOKEN", "xoxb-test-token")]);
    let out = |channel: &str| {
        json!([{"type": "slack", "channel": channel, "token_env": "SLACK_TOKEN",
                "api_url": slack.url("/api")}])
    };
    let r = run_once(&d, "slacker", "echo 'hello <team> & all'", out("#ops"));
    assert_eq!(r["status"], "succeeded");
    assert_eq!(errors(&r), vec![], "{r}");
    let reqs = slack.requests();
    assert_eq!(reqs.len(), 1);
    let q = &reqs[0];
    assert_eq!(q.method, "POST");
    assert_eq!(q.path, "/api/chat.postMessage");
    assert_eq!(q.header("authorization"), Some("Bearer xoxb-test-token"));
    assert!(q
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    let body = q.json();
    assert_eq!(body["channel"], "#ops");
    let text = body["text"].as_str().unwrap();
    let id = r["id"].as_str().unwrap();
    assert!(
        text.starts_with("*slacker* succeeded (trigger: manual, duration: "),
        "{text}"
    );
    assert!(text.contains(&format!("run `{id}`)")), "{text}");
    assert!(
        text.ends_with("\n```\nhello &lt;team&gt; &amp; all\n```"),
        "{text}"
    );

    // ok: false in a 200 is a failure carrying Slack's error string; not retried.
    slack.script(
        "/api/chat.postMessage",
        vec![reply(200, r#"{"ok": false, "error": "channel_not_found"}"#)],
    );
    let r = run_once(&d, "slack-nochan", "echo hi", out("#nope"));
    assert_eq!(r["status"], "succeeded", "an output never fails the run");
    let e = errors(&r);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "slack");
    assert!(e[0].1.contains("\"channel_not_found\""), "{}", e[0].1);
    assert!(e[0].1.contains("#nope"), "{}", e[0].1);
    assert_eq!(slack.requests().len(), 2, "ok:false is not retried");
}

#[test]
fn slack_429_waits_retry_after_and_500_is_retried() {
    let t = tempdir();
    let slack = Server::start(reply(200, r#"{"ok": true}"#));
    let d = Daemon::start_env(t.path(), &[], &[("SLACK_TOKEN", "xoxb-t")]);
    let out = json!([{"type": "slack", "channel": "#ops", "token_env": "SLACK_TOKEN",
                      "api_url": slack.url("/api")}]);
    let mut limited = reply(429, r#"{"ok": false, "error": "ratelimited"}"#);
    limited.headers.push(("Retry-After".into(), "1".into()));
    slack.script("/api/chat.postMessage", vec![limited]);
    let r = run_once(&d, "limited", "echo hi", out.clone());
    assert_eq!(errors(&r), vec![], "{r}");
    let reqs = slack.requests();
    assert_eq!(reqs.len(), 2, "one 429, then the retry");
    let waited = reqs[1].at - reqs[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "the retry came {waited:?} after the 429; Retry-After said 1 s"
    );

    slack.script("/api/chat.postMessage", vec![reply(500, "upstream broke")]);
    let r = run_once(&d, "flaky", "echo hi", out);
    assert_eq!(errors(&r), vec![], "{r}");
    assert_eq!(slack.requests().len(), 4, "one 500, then the retry");
}

#[test]
fn slack_incoming_webhook_from_env_and_unset_variable() {
    let t = tempdir();
    let hook = Server::start(reply(200, "ok"));
    let hook_url = hook.url("/services/T000/B000/XXXXsecret");
    let d = Daemon::start_env(t.path(), &[], &[("SLACK_HOOK", hook_url.as_str())]);
    let r = run_once(
        &d,
        "hooked",
        "echo out; exit 4",
        json!([{"type": "slack", "webhook_url_env": "SLACK_HOOK"},
               {"type": "slack", "webhook_url_env": "SLACK_HOOK_UNSET"}]),
    );
    assert_eq!(r["status"], "failed");
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/services/T000/B000/XXXXsecret");
    let text = reqs[0].json()["text"].as_str().unwrap().to_string();
    assert!(
        text.starts_with("*hooked* failed (trigger: manual"),
        "{text}"
    );
    assert!(
        text.contains("\nerror: the agent exited with code 4\n"),
        "{text}"
    );
    let e = errors(&r);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].1.contains("SLACK_HOOK_UNSET") && e[0].1.contains("not set"),
        "{}",
        e[0].1
    );
}

// ---------------------------------------------------------------------------------------
// Outbound webhook.

#[test]
fn webhook_is_signed_and_keeps_its_delivery_id_across_retries() {
    let t = tempdir();
    let recv = Server::start(reply(204, ""));
    let secret = "whsec-test-value";
    let d = Daemon::start_env(t.path(), &[], &[("WH_SECRET", secret)]);
    recv.script(
        "/signed",
        vec![reply(503, "busy"), reply(500, "still busy")],
    );
    let r = run_once(
        &d,
        "hooker",
        "echo result-text",
        json!([
            {"type": "webhook", "url": recv.url("/signed"), "hmac_secret_env": "WH_SECRET",
             "headers": {"X-Team": "infra", "Content-Type": "application/json"}},
            {"type": "webhook", "url": recv.url("/plain")}
        ]),
    );
    assert_eq!(errors(&r), vec![], "{r}");
    let signed = recv.requests_to("/signed");
    assert_eq!(signed.len(), 3, "503, 500, then 204");
    let delivery = signed[0].header("x-bog-delivery").expect("X-Bog-Delivery");
    assert!(delivery.starts_with("dlv_"), "{delivery}");
    for q in &signed {
        assert_eq!(q.method, "POST");
        assert!(signature_ok(secret, q), "signature does not verify: {q:?}");
        assert!(!signature_ok("another-secret", q));
        assert_eq!(q.header("x-bog-delivery"), Some(delivery));
        assert_eq!(
            q.header("x-bog-timestamp"),
            signed[0].header("x-bog-timestamp")
        );
        assert_eq!(q.header("x-team"), Some("infra"));
        assert_eq!(q.header("content-type"), Some("application/json"));
        assert_eq!(q.body, signed[0].body);
    }
    let ts: i64 = signed[0]
        .header("x-bog-timestamp")
        .unwrap()
        .parse()
        .expect("X-Bog-Timestamp is Unix seconds");
    assert!(ts > 1_700_000_000);
    let doc = signed[0].json();
    assert_eq!(doc["event"], "run.finished");
    assert_eq!(doc["job"]["name"], "hooker");
    assert_eq!(doc["job"]["id"], r["job_id"]);
    for k in [
        "id",
        "status",
        "trigger",
        "started_at",
        "finished_at",
        "duration_ms",
        "exit_code",
        "error",
    ] {
        assert_eq!(doc["run"][k], r[k], "run.{k}");
    }
    assert_eq!(doc["run"]["output"], "result-text\n");

    let plain = recv.requests_to("/plain");
    assert_eq!(plain.len(), 1);
    assert!(plain[0].header("x-bog-signature-256").is_none());
    assert!(plain[0].header("x-bog-delivery").is_some());
    assert_ne!(plain[0].header("x-bog-delivery"), Some(delivery));
}

#[test]
fn webhook_4xx_is_not_retried_and_down_receiver_is_reported() {
    let t = tempdir();
    let recv = Server::start(reply(422, r#"{"error": "unknown job"}"#));
    let d = Daemon::start(t.path(), &[]);
    let down = format!("http://127.0.0.1:{}/x?token=abc", closed_port());
    let r = run_once(
        &d,
        "rejected",
        "true",
        json!([{"type": "webhook", "url": recv.url("/in")}, {"type": "webhook", "url": down}]),
    );
    assert_eq!(r["status"], "succeeded");
    assert_eq!(recv.requests().len(), 1, "a 422 is not retried");
    let e = errors(&r);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].1.contains("HTTP 422") && e[0].1.contains("unknown job"),
        "{}",
        e[0].1
    );
    assert!(e[1].1.contains("cannot connect"), "{}", e[1].1);
    assert!(e[1].1.contains("gave up after 3 attempts"), "{}", e[1].1);
    assert!(
        !e[1].1.contains("token=abc"),
        "query strings are not quoted: {}",
        e[1].1
    );
}

// ---------------------------------------------------------------------------------------
// GitHub.

#[test]
fn github_comment_posts_to_the_issue_and_401_is_not_retried() {
    let t = tempdir();
    let gh = Server::start(reply(
        201,
        r#"{"id": 1, "html_url": "https://github.com/o/r/issues/42#c1"}"#,
    ));
    let d = Daemon::start_env(t.path(), &[], &[("GH_TOKEN", "ghp_testtoken")]);
    let out = |issue: Value| {
        json!([{"type": "github_comment", "repo": "octo/repo", "issue": issue,
                "token_env": "GH_TOKEN", "api_url": gh.url("")}])
    };
    let r = run_once(&d, "reviewer", "echo 'looks good'", out(json!(42)));
    assert_eq!(errors(&r), vec![], "{r}");
    let reqs = gh.requests();
    assert_eq!(reqs.len(), 1);
    let q = &reqs[0];
    assert_eq!(q.method, "POST");
    assert_eq!(q.path, "/repos/octo/repo/issues/42/comments");
    assert_eq!(q.header("authorization"), Some("Bearer ghp_testtoken"));
    assert_eq!(q.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(q.header("x-github-api-version"), Some("2022-11-28"));
    assert!(q
        .header("user-agent")
        .is_some_and(|u| u.starts_with("bog-agents-daemon/")));
    let body = q.json()["body"].as_str().unwrap().to_string();
    assert!(
        body.starts_with("**reviewer** succeeded (trigger: manual"),
        "{body}"
    );
    assert!(body.ends_with("\n```\nlooks good\n```\n"), "{body}");

    // The issue template renders from the run's context: here the job's name.
    let r = run_once(&d, "17", "echo x", out(json!("{{job_name}}")));
    assert_eq!(errors(&r), vec![], "{r}");
    assert_eq!(gh.requests()[1].path, "/repos/octo/repo/issues/17/comments");

    // A template with nothing behind it in this firing: an error, nothing posted.
    let r = run_once(
        &d,
        "pr-less",
        "echo x",
        out(json!("{{payload.pull_request.number}}")),
    );
    let e = errors(&r);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].1.contains("payload.pull_request.number"), "{}", e[0].1);
    assert!(e[0].1.contains("not a positive issue number"), "{}", e[0].1);
    assert_eq!(gh.requests().len(), 2);

    // 401: the service's message, one request only.
    gh.script(
        "/repos/octo/repo/issues/5/comments",
        vec![reply(401, r#"{"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}"#)],
    );
    let r = run_once(&d, "unauthorized", "echo x", out(json!(5)));
    let e = errors(&r);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "github_comment");
    assert!(
        e[0].1.contains("HTTP 401") && e[0].1.contains("Bad credentials"),
        "{}",
        e[0].1
    );
    assert_eq!(
        gh.requests_to("/repos/octo/repo/issues/5/comments").len(),
        1,
        "a 401 is not retried"
    );
}

#[test]
fn github_comment_lands_on_the_pull_request_that_fired_the_webhook() {
    let t = tempdir();
    let gh = Server::start(reply(201, r#"{"id": 2}"#));
    let d = Daemon::start_env(
        t.path(),
        &[],
        &[("GH_TOKEN", "ghp_pr"), ("HOOK_SECRET", "hook-secret")],
    );
    d.create(&json!({
        "name": "pr-review",
        "prompt": "review PR {{payload.pull_request.number}}",
        "agent": {"command": ["sh", "-c", "echo \"$1\"", "sh", "{prompt}"]},
        "triggers": [{"type": "webhook", "path": "/hooks/pr", "secret_env": "HOOK_SECRET"}],
        "outputs": [{"type": "github_comment", "repo": "octo/repo",
                     "issue": "{{payload.pull_request.number}}", "token_env": "GH_TOKEN",
                     "api_url": gh.url("/api/v3")}]
    }));
    let body = br#"{"action": "opened", "pull_request": {"number": 99}}"#;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"hook-secret").unwrap();
    mac.update(body);
    let sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (st, _, text) = d.raw(
        "POST",
        "/hooks/pr",
        Some(body),
        &[("X-Hub-Signature-256", &format!("sha256={sig}"))],
    );
    assert_eq!(st, 202, "{text}");
    let r = d.wait_run("pr-review", 60, "the webhook's run to finish", |r| {
        !matches!(r["status"].as_str(), Some("queued") | Some("running"))
    });
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(errors(&r), vec![], "{r}");
    let reqs = gh.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/api/v3/repos/octo/repo/issues/99/comments");
    let comment = reqs[0].json()["body"].as_str().unwrap().to_string();
    assert!(comment.contains("\nreview PR 99\n"), "{comment}");
}

// ---------------------------------------------------------------------------------------
// Email.

#[test]
fn email_reaches_a_real_smtp_server_and_a_closed_port_is_a_dispatch_error() {
    let t = tempdir();
    let smtp = SmtpSink::start(t.path());
    let port = smtp.port.to_string();
    let bad_port = closed_port().to_string();
    let d = Daemon::start_env(
        t.path(),
        &[],
        &[
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_PORT", port.as_str()),
            ("SMTP_TLS", "none"),
            ("DOWN_HOST", "127.0.0.1"),
            ("DOWN_PORT", bad_port.as_str()),
            ("DOWN_TLS", "none"),
        ],
    );
    let r = run_once(
        &d,
        "mailer",
        "printf 'line one\\nline two\\n'",
        json!([
            {"type": "email", "to": ["ops@example.com", "Dev Team <dev@example.com>"], "from": "bog@example.com"},
            {"type": "email", "to": "solo@example.com"},
            {"type": "email", "to": "x@example.com", "smtp_env_prefix": "DOWN_"}
        ]),
    );
    assert_eq!(
        r["status"], "succeeded",
        "a failing output never fails the run"
    );
    let e = errors(&r);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "email");
    assert!(
        e[0].1.contains(&format!("SMTP 127.0.0.1:{bad_port}")),
        "{}",
        e[0].1
    );
    assert!(e[0].1.contains("onnection refused"), "{}", e[0].1);

    let mut mails = smtp.messages();
    assert_eq!(mails.len(), 2, "{mails:?}");
    mails.sort_by_key(|m| m["rcpt_tos"].to_string());
    let m = &mails[0];
    assert_eq!(m["mail_from"], "bog@example.com");
    assert_eq!(m["rcpt_tos"], json!(["ops@example.com", "dev@example.com"]));
    let h = &m["headers"];
    assert_eq!(h["Subject"], "[bog-agents] mailer succeeded");
    assert_eq!(h["From"], "bog@example.com");
    assert!(
        h["To"]
            .as_str()
            .unwrap()
            .contains("Dev Team <dev@example.com>"),
        "{h}"
    );
    assert!(h["Date"].as_str().is_some_and(|d| d.len() > 20), "{h}");
    let mid = h["Message-ID"].as_str().expect("Message-ID");
    assert!(
        mid.starts_with(&format!("<{}.", r["id"].as_str().unwrap())) && mid.ends_with('>'),
        "{mid}"
    );
    assert!(
        h["Content-Type"]
            .as_str()
            .unwrap()
            .starts_with("text/plain"),
        "{h}"
    );
    // On the wire, lines end in CRLF.
    let body = m["body"].as_str().unwrap().replace("\r\n", "\n");
    assert!(body.contains("Job:      mailer ("), "{body}");
    assert!(body.contains("Status:   succeeded (exit code 0)"), "{body}");
    assert!(
        body.trim_end()
            .ends_with("--- output ---\nline one\nline two"),
        "{body:?}"
    );
    assert_eq!(m["auth"], Value::Null);

    let solo = &mails[1];
    assert_eq!(solo["rcpt_tos"], json!(["solo@example.com"]));
    assert!(
        solo["mail_from"]
            .as_str()
            .unwrap()
            .starts_with("bog-agents-daemon@"),
        "{solo}"
    );
    assert_ne!(solo["headers"]["Message-ID"], h["Message-ID"]);
}

// ---------------------------------------------------------------------------------------
// Rules for all outputs.

#[test]
fn on_limits_outputs_to_succeeded_or_failed_runs() {
    let t = tempdir();
    let recv = Server::start(reply(200, "{}"));
    let d = Daemon::start(t.path(), &[]);
    let outs = |job: &str| {
        json!([
            {"type": "webhook", "url": recv.url(&format!("/{job}/failed-only")), "on": ["failed"]},
            {"type": "webhook", "url": recv.url(&format!("/{job}/succeeded-only")), "on": ["succeeded"]},
            {"type": "webhook", "url": recv.url(&format!("/{job}/both"))}
        ])
    };
    run_once(&d, "good", "true", outs("good"));
    run_once(&d, "bad", "exit 1", outs("bad"));
    let mut paths: Vec<String> = recv.requests().into_iter().map(|r| r.path).collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            "/bad/both",
            "/bad/failed-only",
            "/good/both",
            "/good/succeeded-only"
        ]
    );
}

#[test]
fn twenty_five_failing_outputs_keep_twenty_errors_and_an_overflow_entry_on_disk() {
    let t = tempdir();
    let recv = Server::start(reply(400, "bad request"));
    let d = Daemon::start(t.path(), &[]);
    let mut outs = Vec::new();
    for i in 0..25 {
        outs.push(match i % 4 {
            0 => json!({"type": "webhook", "url": recv.url(&format!("/o{i}"))}),
            1 => json!({"type": "slack", "channel": "#c", "token_env": "NO_SUCH_SLACK_TOKEN"}),
            2 => json!({"type": "email", "to": "a@example.com", "smtp_env_prefix": "NO_SUCH_SMTP_"}),
            _ => json!({"type": "github_comment", "repo": "o/r", "issue": 1, "token_env": "NO_SUCH_GH_TOKEN"}),
        });
    }
    for (name, script, status) in [("ok25", "true", "succeeded"), ("bad25", "exit 2", "failed")] {
        let r = run_once(&d, name, script, Value::Array(outs.clone()));
        assert_eq!(r["status"], status);
        let p = d
            .dir
            .join("runs")
            .join(r["job_id"].as_str().unwrap())
            .join(format!("{}.json", r["id"].as_str().unwrap()));
        let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        let e = errors(&on_disk);
        assert_eq!(e.len(), 21, "{e:?}");
        let kinds = ["webhook", "slack", "email", "github_comment"];
        for (i, (target, error)) in e.iter().take(20).enumerate() {
            assert_eq!(
                target,
                kinds[i % 4],
                "entry {i} keeps the job's output order"
            );
            assert!(!error.is_empty());
        }
        assert_eq!(
            e[20],
            (
                "(overflow)".to_string(),
                "5 more dispatch errors omitted".to_string()
            )
        );
    }
    assert_eq!(recv.requests().len(), 2 * 7, "400s are not retried");
}

#[test]
fn stopping_the_daemon_ends_an_outputs_retry_wait() {
    let t = tempdir();
    let recv = Server::start(reply(204, ""));
    let mut busy = reply(503, "maintenance");
    busy.headers.push(("Retry-After".into(), "25".into()));
    recv.script("/slow", vec![busy]);
    let mut d = Daemon::start(t.path(), &[]);
    let mut j = sh_job("stopper", "echo done", idle_trigger());
    j["outputs"] = json!([{"type": "webhook", "url": recv.url("/slow")}]);
    let job_id = d.create(&j)["id"].as_str().unwrap().to_string();
    let run_id = manual(&d, "stopper");
    wait_for(30, "the first delivery attempt", || {
        (!recv.requests().is_empty()).then_some(())
    });
    // The daemon now waits 25 s before retrying; stopping must not wait for that.
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(15).code(), Some(0));
    let p = d
        .dir
        .join("runs")
        .join(&job_id)
        .join(format!("{run_id}.json"));
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    assert_eq!(rec["status"], "succeeded");
    let e = errors(&rec);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].1.contains("HTTP 503") && e[0].1.contains("the daemon is stopping"),
        "{}",
        e[0].1
    );
    assert_eq!(recv.requests().len(), 1);
}

#[test]
fn secrets_never_reach_the_data_dir_or_the_log() {
    let t = tempdir();
    let smtp = SmtpSink::start(t.path());
    let port = smtp.port.to_string();
    let slack_token = "xoxb-sekret-slack-4f1b9c";
    let gh_token = "ghp_sekret-gh-93e1d";
    let wh_secret = "sekret-hmac-0c3d7";
    let smtp_password = "sekret-smtp-pass-5e2a";
    let hook_secret_part = "sekret-hookpath-77aa1";
    // Replies that echo the secrets back, as a careless service might.
    let srv = Server::start(reply(200, r#"{"ok": true}"#));
    srv.script(
        "/gh-fail/repos/o/r/issues/3/comments",
        vec![reply(
            401,
            &format!(r#"{{"message": "Bad credentials: {gh_token}"}}"#),
        )],
    );
    srv.script(
        "/slack-fail/chat.postMessage",
        vec![reply(
            200,
            &format!(r#"{{"ok": false, "error": "invalid_auth {slack_token}"}}"#),
        )],
    );
    srv.script(
        "/wh-fail",
        vec![reply(400, &format!("bad secret {wh_secret}"))],
    );
    let hook_ok = srv.url(&format!("/services/T0/B0/{hook_secret_part}"));
    srv.script(
        &format!("/services/T0/B0/{hook_secret_part}-gone"),
        vec![reply(404, "no_service")],
    );
    let hook_gone = format!("{hook_ok}-gone");
    let d = Daemon::start_env(
        t.path(),
        &[],
        &[
            ("SLACK_TOKEN", slack_token),
            ("GH_TOKEN", gh_token),
            ("WH_SECRET", wh_secret),
            ("SLACK_HOOK", hook_ok.as_str()),
            ("SLACK_HOOK_GONE", hook_gone.as_str()),
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_PORT", port.as_str()),
            ("SMTP_TLS", "none"),
            ("SMTP_USER", "mailer"),
            ("SMTP_PASSWORD", smtp_password),
        ],
    );
    let outputs = |tag: &str| {
        json!([
            {"type": "slack", "channel": "#c", "token_env": "SLACK_TOKEN", "api_url": srv.url(&format!("/slack-{tag}"))},
            {"type": "slack", "webhook_url_env": if tag == "ok" { "SLACK_HOOK" } else { "SLACK_HOOK_GONE" }},
            {"type": "webhook", "url": srv.url(&format!("/wh-{tag}")), "hmac_secret_env": "WH_SECRET"},
            {"type": "github_comment", "repo": "o/r", "issue": 3, "token_env": "GH_TOKEN", "api_url": srv.url(&format!("/gh-{tag}"))},
            {"type": "email", "to": "a@example.com"}
        ])
    };
    let ok = run_once(&d, "all-ok", "echo fine", outputs("ok"));
    assert_eq!(errors(&ok), vec![], "{ok}");
    let bad = run_once(&d, "all-fail", "echo fine; exit 1", outputs("fail"));
    let e = errors(&bad);
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(
        e.iter().filter(|(_, m)| m.contains("[redacted]")).count() >= 3,
        "{e:?}"
    );
    assert!(
        e[1].1.contains("SLACK_HOOK_GONE") && e[1].1.contains("no_service"),
        "{e:?}"
    );

    // The secrets were used...
    let reqs = srv.requests();
    assert!(reqs
        .iter()
        .any(|r| r.header("authorization") == Some(&format!("Bearer {slack_token}"))));
    assert!(reqs
        .iter()
        .any(|r| r.header("authorization") == Some(&format!("Bearer {gh_token}"))));
    assert!(reqs.iter().any(|r| r.path.contains(hook_secret_part)));
    assert!(reqs.iter().any(|r| signature_ok(wh_secret, r)));
    let mails = smtp.messages();
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[0]["auth"], json!(["mailer", smtp_password]));

    // ...and are nowhere in the data dir or the daemon's output.
    let secrets = [
        slack_token,
        gh_token,
        wh_secret,
        smtp_password,
        hook_secret_part,
    ];
    let mut files = Vec::new();
    walk(&d.dir, &mut files);
    assert!(files.len() >= 5, "{files:?}");
    let mut texts: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read(p).unwrap_or_default(),
            )
        })
        .collect();
    texts.push(("daemon stderr".into(), d.stderr().into_bytes()));
    texts.push(("daemon stdout".into(), d.stdout().into_bytes()));
    assert!(
        d.stderr().contains("dispatch.error"),
        "the failures were logged"
    );
    for (name, bytes) in &texts {
        let text = String::from_utf8_lossy(bytes);
        for s in secrets {
            assert!(!text.contains(s), "secret {s:?} found in {name}");
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}
