//! Webhook senders end to end (a trigger's `scheme`): real deliveries over loopback, signed
//! the way Standard Webhooks, Slack, Stripe, GitLab and GitHub sign them. A good signature
//! runs the job once (a repeated delivery id does not); a timestamp outside the window, a
//! wrong secret or another sender's header is a 401; Slack's url_verification is answered
//! only once signed.

use crate::common::*;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn post(d: &Daemon, path: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, Value) {
    let (st, _, text) = d.raw("POST", path, Some(body), headers);
    (st, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn hook_job(name: &str, path: &str, var: &str, scheme: &str, extra: Value) -> Value {
    let mut t = json!({"type": "webhook", "path": path, "secret_env": var, "scheme": scheme});
    for (k, v) in extra.as_object().unwrap() {
        t[k] = v.clone();
    }
    sh_job(name, "echo ran", json!([t]))
}

/// A daemon with `secret` in `var`, running `job`.
fn start(var: &str, secret: &str, job: Value) -> (tempfile::TempDir, Daemon) {
    let t = tempdir();
    let d = Daemon::start_env(t.path(), &[], &[(var, secret)]);
    d.create(&job);
    (t, d)
}

fn runs(d: &Daemon, job: &str) -> usize {
    d.get(&format!("/jobs/{job}/runs?limit=1000"))
        .1
        .as_array()
        .map_or(0, Vec::len)
}

/// Runs the job of an accepted delivery to its end; returns the run record.
fn ran(d: &Daemon, job: &str, (st, v): (u16, Value)) -> Value {
    assert_eq!(st, 202, "{v}");
    let ids = v["run_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "{v}");
    let r = d.wait_final(job, ids[0].as_str().unwrap(), 30);
    assert_eq!(r["status"], "succeeded", "{r}");
    r
}

#[test]
fn standard_webhooks_signatures_windows_and_ids() {
    let key = b"a key of twenty-four bytes";
    let secret = format!("whsec_{}", b64(key));
    let (_t, d) = start(
        "STD_SECRET",
        &secret,
        hook_job(
            "std",
            "/hooks/std",
            "STD_SECRET",
            "standard",
            json!({"events": ["invoice.paid"]}),
        ),
    );
    let send = |key: &[u8], id: &str, ts: i64, body: &[u8], extra_sig: Option<&str>| {
        let mut signed = format!("{id}.{ts}.").into_bytes();
        signed.extend_from_slice(body);
        let sig = format!("v1,{}", b64(&mac(key, &signed)));
        let sigs = match extra_sig {
            Some(x) => format!("{x} {sig}"),
            None => sig,
        };
        let ts = ts.to_string();
        post(
            &d,
            "/hooks/std",
            body,
            &[
                ("webhook-id", id),
                ("webhook-timestamp", &ts),
                ("webhook-signature", &sigs),
            ],
        )
    };
    let paid = br#"{"type": "invoice.paid", "timestamp": "2022-11-03T20:26:10.344522Z", "data": {"id": "in_1"}}"#;
    let r = ran(&d, "std", send(key, "msg_1", now(), paid, None));
    assert_eq!(r["trigger"]["delivery"], "msg_1", "{r}");
    assert_eq!(r["trigger"]["scheme"], "standard", "{r}");
    // The same id again (a retry, signed anew) does not run twice.
    let (st, v) = send(key, "msg_1", now(), paid, None);
    assert_eq!(
        (st, &v["duplicate_delivery"]),
        (200, &json!("msg_1")),
        "{v}"
    );
    // Replays outside five minutes, other keys and missing headers are refused.
    let (st, v) = send(key, "msg_2", now() - 600, paid, None);
    assert_eq!(st, 401, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("webhook-timestamp"),
        "{v}"
    );
    assert_eq!(send(key, "msg_2", now() + 600, paid, None).0, 401);
    assert_eq!(
        send(b"another key entirely", "msg_2", now(), paid, None).0,
        401
    );
    let (st, _) = post(
        &d,
        "/hooks/std",
        paid,
        &[("X-Hub-Signature-256", &github_signature(&secret, paid))],
    );
    assert_eq!(
        st, 401,
        "a GitHub signature is no Standard Webhooks signature"
    );
    // A list of signatures (secret rotation): any v1 may match.
    ran(
        &d,
        "std",
        send(
            key,
            "msg_3",
            now(),
            paid,
            Some("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="),
        ),
    );
    // The event is the payload's type.
    let created = br#"{"type": "invoice.created", "data": {}}"#;
    let (st, v) = send(key, "msg_4", now(), created, None);
    assert_eq!(st, 202, "{v}");
    assert_eq!(
        v["filtered"],
        "events: \"invoice.created\" is not one of invoice.paid"
    );
    assert_eq!(runs(&d, "std"), 2);
}

#[test]
fn standard_webhooks_secret_that_is_not_base64_refuses_and_is_logged() {
    let (_t, d) = start(
        "STD_SECRET",
        "not-a-whsec-secret!",
        hook_job("std", "/hooks/std", "STD_SECRET", "standard", json!({})),
    );
    let (st, v) = post(
        &d,
        "/hooks/std",
        b"{}",
        &[
            ("webhook-id", "m"),
            ("webhook-timestamp", &now().to_string()),
            ("webhook-signature", "v1,AAAA"),
        ],
    );
    assert_eq!(st, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not usable"), "{v}");
    let log = d.stderr();
    assert!(
        log.contains("webhook.bad_secret") && log.contains("STD_SECRET"),
        "{log}"
    );
    assert!(
        !log.contains("not-a-whsec-secret!"),
        "the secret never reaches the log"
    );
}

#[test]
fn slack_signatures_and_the_url_verification_handshake() {
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let (_t, d) = start(
        "SLACK_SIGNING_SECRET",
        secret,
        hook_job(
            "slack",
            "/hooks/slack",
            "SLACK_SIGNING_SECRET",
            "slack",
            json!({"events": ["app_mention"]}),
        ),
    );
    let send = |secret: &str, ts: i64, body: &[u8]| {
        let base: Vec<u8> = format!("v0:{ts}:")
            .bytes()
            .chain(body.iter().copied())
            .collect();
        let sig = format!("v0={}", hex(&mac(secret.as_bytes(), &base)));
        let ts = ts.to_string();
        post(
            &d,
            "/hooks/slack",
            body,
            &[
                ("X-Slack-Signature", &sig),
                ("X-Slack-Request-Timestamp", &ts),
                ("Content-Type", "application/json"),
            ],
        )
    };
    let challenge = br#"{"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}"#;
    // Unsigned or badly signed: no handshake.
    let (st, v) = post(&d, "/hooks/slack", challenge, &[]);
    assert_eq!(st, 401, "{v}");
    assert_eq!(send("wrong", now(), challenge).0, 401);
    let (st, v) = send(secret, now(), challenge);
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v,
        json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    assert_eq!(runs(&d, "slack"), 0, "the handshake runs nothing");

    let mention = br#"{"token": "z26uFbvR1xHJEdHE1OQiO6t8", "team_id": "T061EG9RZ", "api_app_id": "A0FFV41KK", "event": {"type": "app_mention", "user": "U061F7AUR", "text": "<@U0LAN0Z89> is it everything a river should be?", "ts": "1515449522.000016", "channel": "C0LAN2Q65", "event_ts": "1515449522000016"}, "type": "event_callback", "event_id": "Ev0LAN670R", "event_time": 1515449522000016}"#;
    let r = ran(&d, "slack", send(secret, now(), mention));
    assert_eq!(r["trigger"]["delivery"], "Ev0LAN670R", "{r}");
    // Slack's retry of the same event is not run again.
    let (st, v) = send(secret, now(), mention);
    assert_eq!(
        (st, &v["duplicate_delivery"]),
        (200, &json!("Ev0LAN670R")),
        "{v}"
    );
    // Older than five minutes, or signed with another secret: 401.
    let (st, v) = send(secret, now() - 301, mention);
    assert_eq!(st, 401, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("X-Slack-Request-Timestamp"),
        "{v}"
    );
    assert_eq!(
        send("8f742231b10e8888abcd99yyyzzz85a6", now(), mention).0,
        401
    );
    // Another event type is filtered by `events` (the event's type).
    let message = br#"{"type": "event_callback", "event_id": "Ev2", "event": {"type": "message", "text": "hi"}}"#;
    let (st, v) = send(secret, now(), message);
    assert_eq!(st, 202, "{v}");
    assert_eq!(
        v["filtered"],
        "events: \"message\" is not one of app_mention"
    );
    assert_eq!(runs(&d, "slack"), 1);
}

#[test]
fn stripe_signatures_windows_and_event_ids() {
    let secret = "whsec_stripe_test_secret";
    let (_t, d) = start(
        "STRIPE_SECRET",
        secret,
        hook_job(
            "pay",
            "/hooks/stripe",
            "STRIPE_SECRET",
            "stripe",
            json!({"events": ["payment_intent.succeeded"]}),
        ),
    );
    let sig = |secret: &str, t: i64, body: &[u8]| {
        let signed: Vec<u8> = format!("{t}.")
            .bytes()
            .chain(body.iter().copied())
            .collect();
        hex(&mac(secret.as_bytes(), &signed))
    };
    let send = |header: String, body: &[u8]| {
        post(&d, "/hooks/stripe", body, &[("Stripe-Signature", &header)])
    };
    let evt1 = br#"{"id": "evt_1", "object": "event", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_1"}}}"#;
    let ts = now();
    let r = ran(
        &d,
        "pay",
        send(format!("t={ts},v1={}", sig(secret, ts, evt1)), evt1),
    );
    assert_eq!(r["trigger"]["delivery"], "evt_1", "{r}");
    // Stripe's retry of the same event (signed anew) is not run again.
    let ts = now();
    let (st, v) = send(format!("t={ts},v1={}", sig(secret, ts, evt1)), evt1);
    assert_eq!(
        (st, &v["duplicate_delivery"]),
        (200, &json!("evt_1")),
        "{v}"
    );
    let evt2 =
        br#"{"id": "evt_2", "object": "event", "type": "payment_intent.succeeded", "data": {}}"#;
    let old = now() - 600;
    let (st, v) = send(format!("t={old},v1={}", sig(secret, old, evt2)), evt2);
    assert_eq!(st, 401, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("Stripe-Signature"),
        "{v}"
    );
    let ts = now();
    assert_eq!(
        send(format!("t={ts},v1={}", sig("whsec_other", ts, evt2)), evt2).0,
        401
    );
    assert_eq!(send(format!("t={ts}"), evt2).0, 401);
    // Several v1 (a rolled secret) and a v0: any v1 may match.
    let header = format!(
        "t={ts},v1={},v1={},v0=00",
        sig("whsec_old", ts, evt2),
        sig(secret, ts, evt2)
    );
    ran(&d, "pay", send(header, evt2));
    let evt3 = br#"{"id": "evt_3", "type": "charge.refunded"}"#;
    let (st, v) = send(format!("t={ts},v1={}", sig(secret, ts, evt3)), evt3);
    assert_eq!(st, 202, "{v}");
    assert!(
        v["filtered"].as_str().unwrap().contains("charge.refunded"),
        "{v}"
    );
    assert_eq!(runs(&d, "pay"), 2);
}

#[test]
fn explicit_github_and_gitlab_schemes_take_only_their_own_header() {
    let secret = "shared-secret-value";
    let (_t, d) = start(
        "HOOK_SECRET",
        secret,
        hook_job("gl", "/hooks/gl", "HOOK_SECRET", "gitlab", json!({})),
    );
    d.create(&hook_job(
        "gh",
        "/hooks/gh",
        "HOOK_SECRET",
        "github",
        json!({}),
    ));
    let body = br#"{"object_kind": "push"}"#;
    let sig = github_signature(secret, body);
    // GitLab: the token, with Idempotency-Key as the delivery id.
    let r = ran(
        &d,
        "gl",
        post(
            &d,
            "/hooks/gl",
            body,
            &[("X-Gitlab-Token", secret), ("Idempotency-Key", "k-1")],
        ),
    );
    assert_eq!(r["trigger"]["delivery"], "k-1", "{r}");
    let (st, v) = post(
        &d,
        "/hooks/gl",
        body,
        &[("X-Gitlab-Token", secret), ("Idempotency-Key", "k-1")],
    );
    assert_eq!((st, &v["duplicate_delivery"]), (200, &json!("k-1")), "{v}");
    assert_eq!(
        post(&d, "/hooks/gl", body, &[("X-Gitlab-Token", "wrong")]).0,
        401
    );
    assert_eq!(
        post(&d, "/hooks/gl", body, &[("X-Hub-Signature-256", &sig)]).0,
        401
    );
    // GitHub: the signature; a GitLab token (the secret in clear) is not taken.
    ran(
        &d,
        "gh",
        post(&d, "/hooks/gh", body, &[("X-Hub-Signature-256", &sig)]),
    );
    assert_eq!(
        post(&d, "/hooks/gh", body, &[("X-Gitlab-Token", secret)]).0,
        401
    );
    assert_eq!(runs(&d, "gl"), 1);
    assert_eq!(runs(&d, "gh"), 1);

    // Validation: a scheme is one of five; GitLab sends no timestamp for max_age_seconds.
    let (st, v) = d.post(
        "/jobs",
        &hook_job("x", "/hooks/x", "S", "bitbucket", json!({})),
    );
    assert_eq!(
        (st, v["field"].as_str()),
        (400, Some("triggers[0].scheme")),
        "{v}"
    );
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("github, gitlab, standard, slack or stripe"),
        "{v}"
    );
    let (st, v) = d.post(
        "/jobs",
        &hook_job(
            "x",
            "/hooks/x",
            "S",
            "gitlab",
            json!({"max_age_seconds": 60}),
        ),
    );
    assert_eq!(
        (st, v["field"].as_str()),
        (400, Some("triggers[0].max_age_seconds")),
        "{v}"
    );
    // The CLI's --scheme.
    let (code, out, err) = cli(
        &d.dir,
        &[
            "job",
            "add",
            "--name",
            "c",
            "--prompt",
            "p",
            "--webhook",
            "/hooks/c",
            "--scheme",
            "stripe",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let job: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["triggers"][0]["scheme"], "stripe");
    let (code, _, err) = cli(&d.dir, &["job", "set", "c", "--scheme", "fax"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--scheme"), "{err}");
    let (code, out, err) = cli(&d.dir, &["job", "set", "c", "--scheme", "standard"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(d.get("/jobs/c").1["triggers"][0]["scheme"], "standard");
}

#[test]
fn one_event_id_runs_on_every_hook_it_reaches() {
    // Two hooks, one secret: Stripe (or a Standard Webhooks sender) may deliver the same
    // event to both. Each hook runs it once; a redelivery to the same hook is a duplicate.
    let secret = "whsec_shared_secret";
    let (_t, d) = start(
        "STRIPE_SECRET",
        secret,
        hook_job("pay-a", "/hooks/a", "STRIPE_SECRET", "stripe", json!({})),
    );
    d.create(&hook_job(
        "pay-b",
        "/hooks/b",
        "STRIPE_SECRET",
        "stripe",
        json!({}),
    ));
    let evt = br#"{"id": "evt_shared", "type": "payment_intent.succeeded"}"#;
    let send = |path: &str| {
        let ts = now();
        let signed: Vec<u8> = format!("{ts}.")
            .bytes()
            .chain(evt.iter().copied())
            .collect();
        let header = format!("t={ts},v1={}", hex(&mac(secret.as_bytes(), &signed)));
        post(&d, path, evt, &[("Stripe-Signature", &header)])
    };
    ran(&d, "pay-a", send("/hooks/a"));
    ran(&d, "pay-b", send("/hooks/b"));
    for path in ["/hooks/a", "/hooks/b"] {
        let (st, v) = send(path);
        assert_eq!(
            (st, &v["duplicate_delivery"]),
            (200, &json!("evt_shared")),
            "{path}: {v}"
        );
    }
    assert_eq!((runs(&d, "pay-a"), runs(&d, "pay-b")), (1, 1));
}
