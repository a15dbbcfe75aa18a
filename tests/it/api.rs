//! The REST API (SPEC §5) against the real binary: the token on every endpoint, create /
//! get / list / patch / delete by id and by name, validation errors that name the field,
//! name conflicts, body limits, malformed bodies, unknown paths and methods, manual runs
//! and run listings, /health and /metrics, every trigger and output type accepted without
//! warnings (a failing output is a dispatch error, never a failed run), the unread body of
//! a refused request never run as a request of its own, and a loop of garbage bodies that
//! must never get a 5xx or a dropped connection.

use crate::common::*;
use chrono::Datelike;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The daemon's default request body limit (1 MiB).
const LIMIT: usize = 1 << 20;

fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Status, headers and JSON body (Null if empty or not JSON) of a request with the token.
fn call(
    d: &Daemon,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> (u16, Vec<(String, String)>, Value) {
    let auth = format!("Bearer {}", d.token);
    let (st, hs, text) = d.raw(method, path, body, &[("Authorization", &auth)]);
    (st, hs, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn patch(d: &Daemon, job: &str, body: &Value) -> (u16, Value) {
    d.req("PATCH", &format!("/jobs/{job}"), Some(&body.to_string()))
}

fn manual(d: &Daemon, job: &str) -> String {
    let (st, v) = d.post(&format!("/jobs/{job}/run"), &json!({}));
    assert_eq!(st, 202, "{v}");
    v["run_id"].as_str().expect("run_id").to_string()
}

fn runs(d: &Daemon, job: &str) -> Vec<Value> {
    let (st, v) = d.get(&format!("/jobs/{job}/runs"));
    assert_eq!(st, 200, "{v}");
    v.as_array().expect("runs array").clone()
}

fn job_files(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d.dir.join("jobs"))
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

fn assert_400(st: u16, v: &Value, field: &str, what: &str) {
    assert_eq!(st, 400, "{what}: {v}");
    assert!(v["error"].is_string(), "{what}: no error text: {v}");
    assert_eq!(v["field"], field, "{what}: {v}");
}

fn sig(secret: &str, body: &[u8]) -> String {
    github_signature(secret, body)
}

/// Authorization headers that must all be refused (None: no header at all).
fn bad_auth(token: &str) -> Vec<Option<String>> {
    let flip = |i: usize| {
        let mut b = token.as_bytes().to_vec();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    vec![
        None,
        Some("Bearer wrong".into()),
        Some(format!("Bearer {}", flip(token.len() - 1))),
        Some(format!("Bearer {}", flip(0))),
        Some(format!("Bearer {}", &token[..token.len() - 1])),
        Some(format!("Bearer {token}x")),
        Some(format!("Basic {token}")),
        Some(token.to_string()),
        Some("Bearer".into()),
    ]
}

#[test]
fn every_endpoint_refuses_a_missing_or_wrong_token_and_changes_nothing() {
    let t = tempdir();
    let d = Daemon::start_env(t.path(), &[], &[("API_TEST_HOOK_SECRET", "hook-s3cret")]);
    let keep = d.create(&sh_job("keep", "echo kept", idle_trigger()));
    let id = keep["id"].as_str().unwrap();
    let run_id = manual(&d, "keep");
    assert_eq!(d.wait_final("keep", &run_id, 20)["status"], "succeeded");

    let jobs_before = d.get("/jobs").1;
    let runs_before = runs(&d, "keep");
    let file_before = std::fs::read(d.dir.join("jobs").join(format!("{id}.json"))).unwrap();
    let files_before = job_files(&d);

    let new_job = sh_job("intruder", "true", idle_trigger()).to_string();
    let endpoints: Vec<(&str, String, Option<String>)> = vec![
        ("GET", "/jobs".into(), None),
        ("POST", "/jobs".into(), Some(new_job)),
        ("GET", format!("/jobs/{id}"), None),
        ("GET", "/jobs/keep".into(), None),
        (
            "PATCH",
            format!("/jobs/{id}"),
            Some(r#"{"enabled": false, "name": "renamed"}"#.into()),
        ),
        ("DELETE", format!("/jobs/{id}"), None),
        ("DELETE", "/jobs/keep".into(), None),
        ("GET", format!("/jobs/{id}/runs"), None),
        ("GET", format!("/jobs/{id}/runs/{run_id}"), None),
        ("POST", format!("/jobs/{id}/run"), Some("{}".into())),
        ("POST", "/jobs/keep/run".into(), None),
        ("GET", "/health".into(), None),
        ("GET", "/metrics".into(), None),
        ("POST", "/git/notify".into(), None),
        // Authentication comes before routing: unknown paths and methods do not leak.
        ("GET", "/nope".into(), None),
        ("PUT", "/jobs".into(), None),
    ];
    let mut refused = 0;
    for auth in bad_auth(&d.token) {
        for (method, path, body) in &endpoints {
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("Authorization", a)])
                .unwrap_or_default();
            let (st, hs, text) = d.raw(method, path, body.as_deref().map(str::as_bytes), &headers);
            let what = format!("{method} {path} with Authorization {auth:?}");
            assert_eq!(st, 401, "{what}: {text}");
            let v: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
            assert!(
                v["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{what}: {v}"
            );
            let www = header(&hs, "www-authenticate")
                .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"));
            assert!(www.starts_with("Bearer"), "{what}: WWW-Authenticate {www}");
            refused += 1;
        }
    }

    // Nothing changed: same jobs, same runs, same file, nothing created, no run fired.
    assert_eq!(d.get("/jobs").1, jobs_before);
    assert_eq!(runs(&d, "keep"), runs_before);
    assert_eq!(runs_before.len(), 1);
    assert_eq!(
        std::fs::read(d.dir.join("jobs").join(format!("{id}.json"))).unwrap(),
        file_before
    );
    assert_eq!(job_files(&d), files_before);
    assert_eq!(d.get("/jobs/intruder").0, 404);
    let m = d.get("/metrics").1;
    assert_eq!(m["http_unauthorized_total"], refused, "{m}");
    assert_eq!(
        m["firings_total"], 1,
        "only the one authorized run fired: {m}"
    );

    // The scheme is case-insensitive (RFC 7235).
    let lower = format!("bearer {}", d.token);
    assert_eq!(
        d.req_with("GET", "/jobs/keep", None, &[("Authorization", &lower)])
            .0,
        200
    );

    // /hooks/ paths are authenticated by their HMAC, never by the token.
    d.create(&sh_job(
        "hooked",
        "echo hooked",
        json!([{"type": "webhook", "path": "/hooks/api-test", "secret_env": "API_TEST_HOOK_SECRET"}]),
    ));
    let body = br#"{"event": "x"}"#;
    let wrong = format!("sha256={}", "0".repeat(64));
    let auth = format!("Bearer {}", d.token);
    for headers in [
        vec![("X-Hub-Signature-256", wrong.as_str())],
        vec![
            ("X-Hub-Signature-256", wrong.as_str()),
            ("Authorization", "Bearer wrong"),
        ],
        vec![
            ("X-Hub-Signature-256", wrong.as_str()),
            ("Authorization", auth.as_str()),
        ],
    ] {
        let (st, _, text) = d.raw("POST", "/hooks/api-test", Some(body), &headers);
        assert_eq!(st, 401, "{headers:?}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let e = v["error"].as_str().unwrap();
        assert!(e.contains("signature"), "{e}");
        assert!(
            !e.contains("token"),
            "a hook is not refused for the API token: {e}"
        );
    }
    assert!(runs(&d, "hooked").is_empty());
    // A valid signature is enough even with a wrong API token.
    let good = sig("hook-s3cret", body);
    let (st, _, text) = d.raw(
        "POST",
        "/hooks/api-test",
        Some(body),
        &[
            ("X-Hub-Signature-256", &good),
            ("Authorization", "Bearer wrong"),
        ],
    );
    assert_eq!(st, 202, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let hook_run = v["run_ids"][0].as_str().unwrap();
    assert_eq!(d.wait_final("hooked", hook_run, 20)["status"], "succeeded");
}

#[test]
fn create_get_list_delete_by_id_and_by_name() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let before = chrono::Utc::now();

    let body = sh_job(
        "cron-job",
        "true",
        json!([{"type": "cron", "cron": "0 0 1 1 *", "timezone": "UTC"}]),
    );
    let (st, hs, c) = call(&d, "POST", "/jobs", Some(body.to_string().as_bytes()));
    assert_eq!(st, 201, "{c}");
    let cid = c["id"].as_str().unwrap().to_string();
    assert!(cid.starts_with("job_") && cid.len() > 4, "{cid}");
    assert_eq!(
        header(&hs, "location"),
        Some(format!("/jobs/{cid}").as_str())
    );
    assert!(header(&hs, "content-type").is_some_and(|c| c.starts_with("application/json")));
    assert!(is_rfc3339(&c["created_at"]), "{c}");
    assert!(is_rfc3339(&c["next_fire_at"]), "{c}");
    // Midnight UTC on the next New Year's Day.
    let next = chrono::DateTime::parse_from_rfc3339(c["next_fire_at"].as_str().unwrap()).unwrap();
    let new_year = format!("{}-01-01T00:00:00Z", before.year() + 1);
    assert_eq!(
        next,
        chrono::DateTime::parse_from_rfc3339(&new_year).unwrap()
    );
    // The agent (`sh -c …`) has no {prompt}: the one save warning.
    assert_eq!(c["warnings"].as_array().map(Vec::len), Some(1), "{c}");
    assert!(c["warnings"][0]
        .as_str()
        .is_some_and(|w| w.starts_with("agent.command: has no {prompt}")));
    // The stored job has every default filled in.
    assert_eq!(c["name"], "cron-job");
    assert_eq!(c["enabled"], true);
    assert_eq!(c["overlap"], "queue");
    assert_eq!(
        c["outputs"],
        json!([{"type": "log", "on": ["succeeded", "failed"]}])
    );
    assert_eq!(c["limits"]["timeout_seconds"], 3600);

    let i = d.create(&sh_job(
        "interval-job",
        "true",
        json!([{"type": "interval", "seconds": 3600}]),
    ));
    let iid = i["id"].as_str().unwrap().to_string();
    assert_ne!(iid, cid);
    assert!(is_rfc3339(&i["next_fire_at"]), "{i}");
    assert_only_no_prompt_warning(&i);
    // A job without clock triggers has no next fire time.
    let h = d.create(&sh_job(
        "hook-job",
        "true",
        json!([{"type": "webhook", "path": "/hooks/x", "secret_env": "NOT_SET_HERE"}]),
    ));
    assert_eq!(h["next_fire_at"], Value::Null, "{h}");

    // GET by id and by name give the job as created; the stored file exists.
    for key in [cid.as_str(), "cron-job"] {
        let (st, g) = d.get(&format!("/jobs/{key}"));
        assert_eq!(st, 200, "{g}");
        assert_eq!(g, c, "GET /jobs/{key}");
    }
    assert_eq!(d.get(&format!("/jobs/{iid}")).1["name"], "interval-job");
    assert_eq!(d.get("/jobs/interval-job").1["id"], iid.as_str());
    assert!(d.dir.join("jobs").join(format!("{cid}.json")).exists());

    // The list holds all three, sorted by name.
    let (st, list) = d.get("/jobs");
    assert_eq!(st, 200);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cron-job", "hook-job", "interval-job"]);
    assert_eq!(list[0], c);
    assert_eq!(d.get("/health").1["jobs"], 3);

    // A fetched job can be sent back as a new one: read-only fields are ignored.
    let mut copy = c.clone();
    copy["name"] = json!("cron-copy");
    copy["warnings"] = json!(["ignored"]);
    let cc = d.create(&copy);
    assert_ne!(cc["id"], c["id"]);
    assert!(
        cc["created_at"].as_str() >= c["created_at"].as_str(),
        "{cc}"
    );
    assert_only_no_prompt_warning(&cc);
    assert_eq!(cc["triggers"], c["triggers"]);
    assert_eq!(d.req("DELETE", "/jobs/cron-copy", None).0, 204);

    // DELETE by name: 204 with no body, then 404 by id and by name, 404 again.
    let (st, _, text) = d.raw(
        "DELETE",
        "/jobs/cron-job",
        None,
        &[("Authorization", &format!("Bearer {}", d.token))],
    );
    assert_eq!(st, 204);
    assert_eq!(text, "");
    for key in [cid.as_str(), "cron-job"] {
        let (st, v) = d.get(&format!("/jobs/{key}"));
        assert_eq!(st, 404, "{v}");
        assert!(v["error"].is_string(), "{v}");
    }
    let (st, v) = d.req("DELETE", "/jobs/cron-job", None);
    assert_eq!(st, 404, "{v}");
    assert!(v["error"].is_string());
    assert!(!d.dir.join("jobs").join(format!("{cid}.json")).exists());

    // DELETE by id.
    assert_eq!(d.req("DELETE", &format!("/jobs/{iid}"), None).0, 204);
    assert_eq!(d.get("/jobs/interval-job").0, 404);
    assert_eq!(d.req("DELETE", &format!("/jobs/{iid}"), None).0, 404);

    let (_, list) = d.get("/jobs");
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "hook-job");
    assert_eq!(d.get("/health").1["jobs"], 1);
    assert_eq!(
        job_files(&d),
        [format!("{}.json", h["id"].as_str().unwrap())]
    );
}

#[test]
fn validation_errors_name_the_field() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let base = || sh_job("valid", "true", json!([{"type": "interval", "seconds": 5}]));
    let with = |k: &str, v: Value| {
        let mut b = base();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = base();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let trig = |t: Value| with("triggers", json!([t]));
    let out = |o: Value| with("outputs", json!([o]));

    let cases: Vec<(&str, Value, &str)> = vec![
        ("missing name", without("name"), "name"),
        ("name with a space", with("name", json!("a b")), "name"),
        ("name with a slash", with("name", json!("a/b")), "name"),
        ("name ..", with("name", json!("..")), "name"),
        ("empty name", with("name", json!("")), "name"),
        ("65-char name", with("name", json!("n".repeat(65))), "name"),
        ("name not a string", with("name", json!(5)), "name"),
        ("missing prompt", without("prompt"), "prompt"),
        ("empty prompt", with("prompt", json!("")), "prompt"),
        ("blank prompt", with("prompt", json!("  \n ")), "prompt"),
        ("no triggers", without("triggers"), "triggers"),
        ("null triggers", with("triggers", Value::Null), "triggers"),
        ("empty triggers", with("triggers", json!([])), "triggers"),
        (
            "triggers an object",
            with("triggers", json!({})),
            "triggers",
        ),
        ("unknown top-level field", with("bogus", json!(1)), "bogus"),
        (
            "unknown trigger field",
            trig(json!({"type": "interval", "seconds": 5, "x": 1})),
            "triggers[0].x",
        ),
        (
            "seconds a string",
            trig(json!({"type": "interval", "seconds": "5"})),
            "triggers[0].seconds",
        ),
        (
            "seconds zero",
            trig(json!({"type": "interval", "seconds": 0})),
            "triggers[0].seconds",
        ),
        (
            "seconds fractional",
            trig(json!({"type": "interval", "seconds": 1.5})),
            "triggers[0].seconds",
        ),
        ("enabled a string", with("enabled", json!("yes")), "enabled"),
        (
            "unknown trigger type",
            trig(json!({"type": "sundial"})),
            "triggers[0].type",
        ),
        (
            "trigger without type",
            trig(json!({"seconds": 5})),
            "triggers[0].type",
        ),
        (
            "timezone",
            trig(json!({"type": "cron", "cron": "0 * * * *", "timezone": "Mars/Olympus"})),
            "triggers[0].timezone",
        ),
        (
            "unknown output type",
            out(json!({"type": "carrier-pigeon"})),
            "outputs[0].type",
        ),
        (
            "outputs an object",
            with("outputs", json!({"type": "log"})),
            "outputs",
        ),
        (
            "bad glob",
            trig(json!({"type": "file_change", "patterns": ["src/[a"], "root": "/tmp"})),
            "triggers[0].patterns[0]",
        ),
        (
            "webhook path not under /hooks/",
            trig(json!({"type": "webhook", "path": "/jobs/evil", "secret_env": "S"})),
            "triggers[0].path",
        ),
        (
            "negative timeout",
            with("limits", json!({"timeout_seconds": -1})),
            "limits.timeout_seconds",
        ),
        (
            "unknown limit",
            with("limits", json!({"memory": 5})),
            "limits.memory",
        ),
        (
            "empty agent.command",
            with("agent", json!({"command": []})),
            "agent.command",
        ),
        (
            "agent.command not strings",
            with("agent", json!({"command": ["sh", 1]})),
            "agent.command[1]",
        ),
        (
            "env value not a string",
            with("env", json!({"A": 1})),
            "env.A",
        ),
        (
            "slack token_env holding a secret",
            out(json!({"type": "slack", "channel": "#ops", "token_env": "xoxb-1234-5678-abcdef"})),
            "outputs[0].token_env",
        ),
        ("overlap", with("overlap", json!("sometimes")), "overlap"),
        (
            "relative working_dir",
            with("working_dir", json!("rel/dir")),
            "working_dir",
        ),
        // Unknown fields and wrong shapes at each nesting level.
        (
            "unknown agent field",
            with("agent", json!({"command": ["sh"], "cmd": "x"})),
            "agent.cmd",
        ),
        (
            "agent an array",
            with("agent", json!([["sh", "-c", "true"]])),
            "agent",
        ),
        (
            "unknown output field",
            out(json!({"type": "log", "level": "info"})),
            "outputs[0].level",
        ),
        (
            "on not a status",
            out(json!({"type": "log", "on": ["sometimes"]})),
            "outputs[0].on[0]",
        ),
        // URLs and addresses as delivery reads them (ureq's url::Url, lettre's Mailbox).
        (
            "webhook port out of range",
            out(json!({"type": "webhook", "url": "http://h:99999/x"})),
            "outputs[0].url",
        ),
        (
            "webhook not http",
            out(json!({"type": "webhook", "url": "ftp://h/x"})),
            "outputs[0].url",
        ),
        (
            "credentials in api_url",
            out(
                json!({"type": "github_comment", "repo": "o/r", "issue": 1, "token_env": "GH", "api_url": "https://u:p@h/api"}),
            ),
            "outputs[0].api_url",
        ),
        (
            "email address lettre refuses",
            out(json!({"type": "email", "to": ["ok@example.com", "a b@example.com"]})),
            "outputs[0].to[1]",
        ),
    ];
    for (what, body, field) in &cases {
        let (st, v) = d.post("/jobs", body);
        assert_400(st, &v, field, what);
    }
    // The error of a bad cron expression names the bad value.
    let (st, v) = d.post(
        "/jobs",
        &trig(json!({"type": "cron", "cron": "61 * * * *"})),
    );
    assert_400(st, &v, "triggers[0].cron", "cron minute 61");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("61 * * * *") && e.contains("minute"), "{e}");
    // The second trigger's index is named.
    let mut two = base();
    two["triggers"] =
        json!([{"type": "interval", "seconds": 5}, {"type": "cron", "cron": "* * * 13 *"}]);
    let (st, v) = d.post("/jobs", &two);
    assert_400(st, &v, "triggers[1].cron", "month 13 in the second trigger");

    // None of those created anything; a 64-character name is fine.
    assert_eq!(d.get("/jobs").1, json!([]));
    assert!(job_files(&d).is_empty());
    let long = "n".repeat(64);
    assert_eq!(d.create(&with("name", json!(long)))["name"], long.as_str());
}

#[test]
fn duplicate_names_conflict_with_409() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let a = d.create(&sh_job("alpha", "true", idle_trigger()));
    let b = d.create(&sh_job("beta", "true", idle_trigger()));
    let aid = a["id"].as_str().unwrap();

    let (st, v) = d.post("/jobs", &sh_job("alpha", "echo other", idle_trigger()));
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["field"], "name");
    assert!(v["error"].as_str().unwrap().contains("alpha"), "{v}");
    assert_eq!(d.get("/jobs").1.as_array().unwrap().len(), 2);
    assert_eq!(d.get("/jobs/alpha").1, a, "the first alpha is untouched");

    // A name that is another job's id would make /jobs/{id} ambiguous.
    let (st, v) = d.post("/jobs", &sh_job(aid, "true", idle_trigger()));
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["field"], "name");

    // Renaming onto an existing name is refused and leaves the job as it was.
    let (st, v) = patch(&d, "beta", &json!({"name": "alpha"}));
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["field"], "name");
    assert_eq!(d.get("/jobs/beta").1, b);
    assert_eq!(d.get("/jobs/alpha").1, a);

    // Keeping one's own name is no conflict; a rename frees the old name.
    let (st, v) = patch(
        &d,
        "alpha",
        &json!({"name": "alpha", "prompt": "new prompt"}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["prompt"], "new prompt");
    let (st, v) = patch(&d, "alpha", &json!({"name": "gamma"}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["id"], aid);
    assert_eq!(d.get("/jobs/alpha").0, 404);
    assert_eq!(d.get("/jobs/gamma").1["id"], aid);
    let again = d.create(&sh_job("alpha", "true", idle_trigger()));
    assert_ne!(again["id"], aid);
    assert_eq!(d.get("/jobs").1.as_array().unwrap().len(), 3);

    // Racing creates of one name: exactly one wins.
    let mut statuses: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let d = &d;
                s.spawn(move || {
                    d.post(
                        "/jobs",
                        &sh_job("race", &format!("echo {i}"), idle_trigger()),
                    )
                    .0
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    assert_eq!(d.get("/jobs").1.as_array().unwrap().len(), 4);
    assert_eq!(job_files(&d).len(), 4);
}

/// A job body of exactly `len` bytes (padding the prompt).
fn body_of_len(name: &str, len: usize) -> Vec<u8> {
    let mut job = sh_job(name, "true", idle_trigger());
    job["prompt"] = json!("");
    let overhead = job.to_string().len();
    job["prompt"] = json!("p".repeat(len - overhead));
    let s = job.to_string();
    assert_eq!(s.len(), len);
    s.into_bytes()
}

/// A raw connection to the daemon whose reads give up after `secs`.
fn connect(d: &Daemon, secs: u64) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    s
}

/// Reads one response head; returns its status code, or panics if none arrives (a dropped
/// connection or the read deadline).
fn read_status(s: &mut TcpStream, what: &str) -> u16 {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            Ok(_) => panic!(
                "{what}: connection closed after {:?}",
                String::from_utf8_lossy(&head)
            ),
            Err(e) => panic!(
                "{what}: no answer: {e} (after {:?})",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let text = String::from_utf8_lossy(&head);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no status line in {text:?}"))
}

/// Sends a chunked request of `body` over a raw socket; returns the status code.
fn chunked_post(d: &Daemon, path: &str, body: &[u8]) -> u16 {
    let mut s = connect(d, 30);
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        d.token
    )
    .unwrap();
    // The server may answer (and stop reading) before the whole body is sent.
    for chunk in body.chunks(64 * 1024) {
        if write!(s, "{:x}\r\n", chunk.len()).is_err()
            || s.write_all(chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    read_status(&mut s, "chunked POST")
}

#[test]
fn body_size_limit_is_413_and_the_daemon_carries_on() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);

    // 2 MiB, with a Content-Length.
    let big = vec![b' '; 2 * LIMIT];
    for (method, path) in [("POST", "/jobs"), ("PATCH", "/jobs/whatever")] {
        let (st, _, v) = call(&d, method, path, Some(&big));
        assert_eq!(st, 413, "{method} {path}: {v}");
        assert!(v["error"].as_str().unwrap().contains("limit"), "{v}");
    }
    // The limit is exact: one byte over is refused, the limit itself is accepted.
    let (st, _, v) = call(&d, "POST", "/jobs", Some(&body_of_len("over", LIMIT + 1)));
    assert_eq!(st, 413, "{v}");
    let (st, _, v) = call(&d, "POST", "/jobs", Some(&body_of_len("at-limit", LIMIT)));
    assert_eq!(st, 201, "{}", v["error"]);
    assert_eq!(v["name"], "at-limit");
    // A huge prompt just under the limit is stored whole and served back.
    let under = body_of_len("huge-prompt", LIMIT - 1000);
    let sent: Value = serde_json::from_slice(&under).unwrap();
    let (st, _, v) = call(&d, "POST", "/jobs", Some(&under));
    assert_eq!(st, 201);
    assert_eq!(v["prompt"], sent["prompt"]);
    assert_eq!(d.get("/jobs/huge-prompt").1["prompt"], sent["prompt"]);

    // 2 MiB chunked (no Content-Length): cut at the limit, also 413.
    let chunked = body_of_len("chunked", 2 * LIMIT);
    assert_eq!(chunked_post(&d, "/jobs", &chunked), 413);
    assert_eq!(d.get("/jobs/chunked").0, 404);

    // `Expect: 100-continue` (what curl sends for big bodies): an announced 2 MiB body is
    // refused before it is sent; a small one is invited, then created.
    let mut s = connect(&d, 30);
    write!(
        s,
        "POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        d.token,
        2 * LIMIT
    )
    .unwrap();
    assert_eq!(read_status(&mut s, "Expect with 2 MiB"), 413);
    let small = sh_job("expected", "true", idle_trigger()).to_string();
    let mut s = connect(&d, 30);
    write!(
        s,
        "POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        d.token,
        small.len()
    )
    .unwrap();
    assert_eq!(read_status(&mut s, "Expect with a small body"), 100);
    s.write_all(small.as_bytes()).unwrap();
    assert_eq!(read_status(&mut s, "small body after 100"), 201);
    assert_eq!(d.get("/jobs/expected").0, 200);

    let (st, h) = d.get("/health");
    assert_eq!(st, 200);
    assert_eq!(h["jobs"], 3, "{h}");
}

#[test]
fn malformed_json_is_400_with_an_error() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let id = d.create(&sh_job("target", "true", idle_trigger()))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = d.get("/jobs").1;
    let bodies: Vec<(&str, &[u8])> = vec![
        ("truncated", br#"{"name": "x", "prompt": "p", "trig"#),
        ("not JSON", b"name=x&prompt=p"),
        ("empty", b""),
        ("whitespace", b" \r\n\t "),
        ("trailing garbage", br#"{"name": "x"} {}"#),
        ("single quotes", b"{'name': 'x'}"),
        (
            "JSON array",
            br#"[{"name": "x", "prompt": "p", "triggers": [{"type": "interval", "seconds": 5}]}]"#,
        ),
        ("JSON string", br#""hello""#),
        ("JSON number", b"42"),
        ("JSON null", b"null"),
        ("invalid UTF-8", b"{\"name\": \"\xff\xfe\"}"),
    ];
    for (what, body) in &bodies {
        for (method, path) in [
            ("POST", "/jobs".to_string()),
            ("PATCH", format!("/jobs/{id}")),
        ] {
            let (st, hs, v) = call(&d, method, &path, Some(body));
            assert_eq!(st, 400, "{method} {what}: {v}");
            assert!(
                v["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{method} {what}: {v}"
            );
            assert!(header(&hs, "content-type").is_some_and(|c| c.starts_with("application/json")));
        }
    }
    assert_eq!(d.get("/jobs").1, before, "nothing created or changed");
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let id = d.create(&sh_job("j", "true", idle_trigger()))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let not_found: Vec<(&str, String)> = vec![
        ("GET", "/nope".into()),
        ("POST", "/nope".into()),
        ("GET", "/jobs/x/y/z".into()),
        ("GET", format!("/jobs/{id}/runs/run_ffff")),
        ("GET", format!("/jobs/{id}/runs/not-a-run")),
        ("GET", format!("/jobs/{id}/runs/run_xyz")),
        ("GET", "/jobs/no-such-job".into()),
        ("GET", "/jobs/job_000000000000".into()),
        ("PATCH", "/jobs/no-such-job".into()),
        ("DELETE", "/jobs/no-such-job".into()),
        ("GET", "/jobs/no-such-job/runs".into()),
        ("GET", "/jobs/no-such-job/runs/run_ffff".into()),
        ("POST", "/jobs/no-such-job/run".into()),
        ("POST", "/jobs//run".into()),
        ("GET", "/healthz".into()),
    ];
    for (method, path) in &not_found {
        let body = matches!(*method, "POST" | "PATCH").then_some(&b"{}"[..]);
        let (st, _, v) = call(&d, method, path, body);
        assert_eq!(st, 404, "{method} {path}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {path}: {v}"
        );
    }
    let wrong_method: Vec<(&str, String, &str)> = vec![
        ("PUT", "/jobs".into(), "GET, POST"),
        ("DELETE", "/jobs".into(), "GET, POST"),
        ("DELETE", "/health".into(), "GET"),
        ("POST", "/health".into(), "GET"),
        ("POST", "/metrics".into(), "GET"),
        ("PUT", format!("/jobs/{id}"), "GET, PATCH, DELETE"),
        ("POST", format!("/jobs/{id}"), "GET, PATCH, DELETE"),
        ("POST", format!("/jobs/{id}/runs"), "GET"),
        ("DELETE", format!("/jobs/{id}/runs"), "GET"),
        ("GET", format!("/jobs/{id}/run"), "POST"),
        ("GET", "/git/notify".into(), "POST"),
    ];
    for (method, path, allow) in &wrong_method {
        let (st, hs, v) = call(&d, method, path, None);
        assert_eq!(st, 405, "{method} {path}: {v}");
        assert_eq!(header(&hs, "allow"), Some(*allow), "{method} {path}");
        assert!(v["error"].is_string(), "{method} {path}: {v}");
    }
    // None of that touched the job or fired it.
    assert!(runs(&d, "j").is_empty());
    assert_eq!(d.get("/jobs").1.as_array().unwrap().len(), 1);
}

#[test]
fn patch_merges_validates_and_keeps_the_job_on_error() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let mut body = sh_job("p", "true", json!([{"type": "interval", "seconds": 3600}]));
    body["limits"] = json!({"timeout_seconds": 100, "cpu_seconds": 50, "max_output_kb": 64});
    body["env"] = json!({"A": "1", "B": "2"});
    let created = d.create(&body);
    let id = created["id"].as_str().unwrap().to_string();
    let file = d.dir.join("jobs").join(format!("{id}.json"));
    let on_disk =
        || -> Value { serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap() };

    // Disable: 200, enabled false, no next fire time; stored on disk.
    let (st, v) = patch(&d, "p", &json!({"enabled": false}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["enabled"], false);
    assert_eq!(v["next_fire_at"], Value::Null);
    assert_eq!(v["created_at"], created["created_at"]);
    assert_eq!(d.get(&format!("/jobs/{id}")).1, v);
    assert_eq!(on_disk()["enabled"], false);
    let (st, v) = patch(&d, &id, &json!({"enabled": true}));
    assert_eq!(st, 200, "{v}");
    assert!(is_rfc3339(&v["next_fire_at"]), "{v}");

    // Nested merge: one limit changes, the others stay.
    let (st, v) = patch(&d, "p", &json!({"limits": {"timeout_seconds": 10}}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["limits"],
        json!({"timeout_seconds": 10, "cpu_seconds": 50, "memory_mb": null, "max_output_kb": 64})
    );
    // null removes a key: one env entry goes, the other stays.
    let (st, v) = patch(&d, "p", &json!({"env": {"A": null, "C": "3"}}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["env"], json!({"B": "2", "C": "3"}));
    // {"agent": null} resets the agent to the default.
    assert!(v["agent"].is_object());
    let (st, v) = patch(&d, "p", &json!({"agent": null}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["agent"], Value::Null);
    assert_eq!(on_disk()["agent"], Value::Null);
    // Read-only fields in a patch are ignored; {} changes nothing.
    let (st, v) = patch(
        &d,
        "p",
        &json!({"id": "job_ffffffffffff", "created_at": "2000-01-01T00:00:00Z"}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["created_at"], created["created_at"]);
    let current = d.get("/jobs/p").1;
    let (st, v) = patch(&d, "p", &json!({}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v, current);

    // A patch that makes the job invalid: 400 with its field, job unchanged.
    let file_before = std::fs::read(&file).unwrap();
    let invalid: Vec<(Value, &str)> = vec![
        (
            json!({"triggers": [{"type": "cron", "cron": "61 * * * *"}]}),
            "triggers[0].cron",
        ),
        (json!({"triggers": []}), "triggers"),
        (json!({"triggers": null}), "triggers"),
        (json!({"name": "no spaces please"}), "name"),
        (json!({"name": null}), "name"),
        (json!({"prompt": ""}), "prompt"),
        (json!({"bogus": true}), "bogus"),
        (
            json!({"limits": {"timeout_seconds": -5}}),
            "limits.timeout_seconds",
        ),
        (json!({"enabled": "no"}), "enabled"),
        (
            json!({"outputs": [{"type": "log"}, {"type": "fax"}]}),
            "outputs[1].type",
        ),
    ];
    for (p, field) in &invalid {
        let (st, v) = patch(&d, "p", p);
        assert_400(st, &v, field, &p.to_string());
    }
    // A body that is JSON but not an object is no merge patch.
    for p in ["[]", "[{\"enabled\": false}]", "\"x\"", "5", "true", "null"] {
        let (st, v) = d.req("PATCH", "/jobs/p", Some(p));
        assert_eq!(st, 400, "{p}: {v}");
        assert!(v["error"].is_string(), "{p}: {v}");
    }
    assert_eq!(d.get("/jobs/p").1, current);
    assert_eq!(std::fs::read(&file).unwrap(), file_before);
}

#[test]
fn manual_runs_and_run_listing() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let id = d.create(&sh_job(
        "m",
        "echo \"hello-$BOG_TRIGGER-$BOG_RUN_ID\"",
        idle_trigger(),
    ))["id"]
        .as_str()
        .unwrap()
        .to_string();

    // 202 {"run_id", "status"}; with {} or with no body at all.
    let (st, v) = d.post("/jobs/m/run", &json!({}));
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["status"], "queued");
    let first = v["run_id"].as_str().unwrap().to_string();
    assert!(first.starts_with("run_"), "{first}");
    let r = d.wait_final("m", &first, 20);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["output"], format!("hello-manual-{first}\n"));
    assert_eq!(r["exit_code"], 0);
    assert!(r["duration_ms"].is_u64(), "{r}");
    assert_eq!(r["trigger"]["type"], "manual");
    assert_eq!(r["id"], first.as_str());
    assert_eq!(r["job_id"], id.as_str());
    assert_eq!(r["job_name"], "m");
    assert_eq!(r["attempts"], 1);
    assert!(
        is_rfc3339(&r["started_at"]) && is_rfc3339(&r["finished_at"]),
        "{r}"
    );
    // The run is served by job id and by name, and is in the list.
    assert_eq!(d.get(&format!("/jobs/{id}/runs/{first}")).1, r);
    assert_eq!(d.get(&format!("/jobs/m/runs/{first}")).1, r);
    assert_eq!(runs(&d, &id), std::slice::from_ref(&r));

    let (st, v) = d.req("POST", &format!("/jobs/{id}/run"), None);
    assert_eq!(st, 202, "{v}");
    let second = v["run_id"].as_str().unwrap().to_string();
    assert_eq!(d.wait_final("m", &second, 20)["status"], "succeeded");
    // A body other than {} is refused and fires nothing.
    let (st, v) = d.post("/jobs/m/run", &json!({"prompt": "other"}));
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].is_string());

    // A disabled job can still be run by hand.
    assert_eq!(patch(&d, "m", &json!({"enabled": false})).0, 200);
    let third = manual(&d, "m");
    let r3 = d.wait_final("m", &third, 20);
    assert_eq!(r3["status"], "succeeded", "{r3}");
    assert_eq!(r3["trigger"]["type"], "manual");

    // Newest first; ?limit=N cuts the list.
    let all = runs(&d, "m");
    let ids: Vec<&str> = all.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [third.as_str(), second.as_str(), first.as_str()]);
    let (st, one) = d.get("/jobs/m/runs?limit=1");
    assert_eq!(st, 200);
    assert_eq!(one, json!([all[0]]));
    let (st, two) = d.get(&format!("/jobs/{id}/runs?limit=2"));
    assert_eq!(st, 200);
    assert_eq!(two.as_array().unwrap()[..], all[..2]);
    assert_eq!(
        d.get("/jobs/m/runs?limit=100000")
            .1
            .as_array()
            .unwrap()
            .len(),
        3
    );
    for bad in [
        "0",
        "abc",
        "-1",
        "",
        "1.5",
        "100001",
        "99999999999999999999999",
    ] {
        let (st, v) = d.get(&format!("/jobs/m/runs?limit={bad}"));
        assert_400(st, &v, "limit", &format!("limit={bad}"));
    }

    // A run is only found under its own job.
    d.create(&sh_job("other", "true", idle_trigger()));
    assert_eq!(d.get(&format!("/jobs/other/runs/{first}")).0, 404);
    assert!(runs(&d, "other").is_empty());

    // Deleting the job deletes its runs.
    let run_dir = d.dir.join("runs").join(&id);
    assert!(run_dir.join(format!("{first}.json")).exists());
    assert_eq!(d.req("DELETE", "/jobs/m", None).0, 204);
    assert_eq!(d.get(&format!("/jobs/{id}/runs")).0, 404);
    assert_eq!(d.get(&format!("/jobs/{id}/runs/{first}")).0, 404);
    assert!(!run_dir.join(format!("{first}.json")).exists());
    d.create(&sh_job("m", "true", idle_trigger()));
    assert!(
        runs(&d, "m").is_empty(),
        "a new job of the same name starts with no runs"
    );
}

#[test]
fn health_and_metrics_in_json_and_prometheus_text() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let (st, h) = d.get("/health");
    assert_eq!(st, 200);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert!(h["uptime_seconds"].is_u64(), "{h}");
    assert_eq!(h["jobs"], 0);

    d.create(&sh_job("one", "echo one", idle_trigger()));
    d.create(&sh_job("two", "true", idle_trigger()));
    assert_eq!(d.get("/health").1["jobs"], 2);

    let (st, hs, m) = call(&d, "GET", "/metrics", None);
    assert_eq!(st, 200);
    assert!(header(&hs, "content-type").is_some_and(|c| c.starts_with("application/json")));
    assert_eq!(m["runs_succeeded_total"], 0, "{m}");
    assert_eq!(m["jobs"], 2, "{m}");
    assert!(m["uptime_seconds"].is_u64(), "{m}");

    let run = manual(&d, "one");
    assert_eq!(d.wait_final("one", &run, 20)["status"], "succeeded");
    let m = wait_for(10, "runs_succeeded_total 1", || {
        let m = d.get("/metrics").1;
        (m["runs_succeeded_total"] == 1).then_some(m)
    });
    assert_eq!(m["firings_total"], 1, "{m}");
    assert_eq!(m["runs_started_total"], 1, "{m}");
    assert_eq!(m["runs_failed_total"], 0, "{m}");

    let auth = format!("Bearer {}", d.token);
    let (st, hs, text) = d.raw(
        "GET",
        "/metrics",
        None,
        &[("Authorization", &auth), ("Accept", "text/plain")],
    );
    assert_eq!(st, 200, "{text}");
    let ct = header(&hs, "content-type").unwrap();
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert!(
        text.contains("# TYPE bog_runs_succeeded_total counter\n"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "bog_runs_succeeded_total 1"),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "bog_jobs 2"), "{text}");
    assert!(text.contains("# TYPE bog_jobs gauge\n"), "{text}");
    // Every sample line is `name value` with a numeric value.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = l.split(' ');
        let (name, value) = (parts.next().unwrap(), parts.next().unwrap_or(""));
        assert!(name.starts_with("bog_") && parts.next().is_none(), "{l}");
        assert!(value.parse::<f64>().is_ok(), "{l}");
    }
    // A browser-style Accept that lists text/plain among others also gets text.
    let (_, hs, _) = d.raw(
        "GET",
        "/metrics",
        None,
        &[
            ("Authorization", &auth),
            ("Accept", "text/plain;version=0.0.4;q=0.9,*/*;q=0.1"),
        ],
    );
    assert!(header(&hs, "content-type")
        .unwrap()
        .starts_with("text/plain"));
}

/// Every trigger and output type is accepted by this build; a job using all of them is
/// created with only the save warnings its agent and webhook secret call for. An output that cannot
/// deliver (a Slack bot token variable that is not set) never fails the run: the run
/// succeeds and records one `dispatch_errors` entry naming the target and the variable.
#[test]
fn every_trigger_and_output_type_is_accepted_and_a_failing_output_is_a_dispatch_error() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let root = t.path().join("watched");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.to_str().unwrap();
    let unset = "BOG_API_TEST_NEVER_SET_SLACK_TOKEN";

    let mut all = sh_job(
        "all-types",
        "true",
        json!([
            {"type": "cron", "cron": "0 0 1 1 *", "timezone": "UTC"},
            {"type": "interval", "seconds": 86400},
            {"type": "file_change", "patterns": ["**/*.rs"], "root": root},
            {"type": "webhook", "path": "/hooks/all-types", "secret_env": "BOG_API_TEST_HOOK"},
            {"type": "git_push", "repo": root, "branch": "main"},
        ]),
    );
    all["outputs"] = json!([
        {"type": "log"},
        {"type": "stdout", "on": ["failed"]},
        {"type": "file", "path": t.path().join("out.log").to_str().unwrap()},
        {"type": "slack", "channel": "#ops", "token_env": unset},
        {"type": "slack", "webhook_url_env": unset},
        {"type": "webhook", "url": "http://127.0.0.1:9/never"},
        {"type": "email", "to": "ops@example.com", "from": "bog@example.com"},
        {"type": "github_comment", "repo": "owner/name", "issue": 1, "token_env": unset},
    ]);
    let c = d.create(&all);
    // Every type is accepted; the warnings are about this job's agent (no {prompt}) and its
    // webhook secret, which this daemon's environment does not have.
    let w: Vec<&str> = c["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    assert_eq!(w.len(), 2, "{c}");
    assert!(w[0].starts_with("agent.command: has no {prompt}"), "{c}");
    assert!(
        w[1].starts_with("triggers[3].secret_env: BOG_API_TEST_HOOK is not set"),
        "{c}"
    );
    assert_eq!(c["triggers"].as_array().unwrap().len(), 5, "{c}");
    assert_eq!(c["outputs"].as_array().unwrap().len(), 8, "{c}");
    assert_eq!(d.get("/jobs/all-types").1["warnings"], c["warnings"]);
    // A webhook-only job has no clock trigger: no next fire time.
    let h = d.create(&sh_job(
        "hook-only",
        "true",
        json!([{"type": "webhook", "path": "/hooks/only", "secret_env": "BOG_API_TEST_HOOK"}]),
    ));
    assert_eq!(h["warnings"].as_array().map(Vec::len), Some(2), "{h}");
    assert_eq!(h["next_fire_at"], Value::Null, "{h}");

    // A manual run of a job whose Slack output cannot deliver.
    let mut job = sh_job("to-slack", "echo slack-body", idle_trigger());
    job["outputs"] = json!([
        {"type": "log"},
        {"type": "slack", "channel": "#ops", "token_env": unset},
    ]);
    assert_only_no_prompt_warning(&d.create(&job));
    let run = manual(&d, "to-slack");
    let r = d.wait_final("to-slack", &run, 20);
    assert_eq!(
        r["status"], "succeeded",
        "a failing output never fails the run: {r}"
    );
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(r["output"], "slack-body\n", "{r}");
    let errs = r["dispatch_errors"].as_array().expect("dispatch_errors");
    assert_eq!(errs.len(), 1, "only the Slack output failed: {r}");
    assert_eq!(errs[0]["target"], "slack", "{r}");
    let e = errs[0]["error"].as_str().unwrap();
    assert!(e.contains(unset) && e.contains("not set"), "{e}");
    let m = d.get("/metrics").1;
    assert_eq!(m["dispatch_errors_total"], 1, "{m}");
    assert_eq!(m["runs_succeeded_total"], 1, "{m}");
}

/// Reads one whole response (head, then a `Content-Length` body); returns the status and the
/// body. Panics if the connection closes or the read deadline passes first.
fn read_response(s: &mut TcpStream, what: &str) -> (u16, String) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            Ok(_) => panic!(
                "{what}: connection closed after {:?}",
                String::from_utf8_lossy(&head)
            ),
            Err(e) => panic!(
                "{what}: no answer: {e} (after {:?})",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no status line in {head:?}"));
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("{what}: no Content-Length in {head:?}"));
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)
        .unwrap_or_else(|e| panic!("{what}: body cut short: {e}"));
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A smuggled request and a pipelined GET /health, for the body-skipping tests.
struct Pipelined {
    smuggled: String,
    health: String,
}

impl Pipelined {
    fn new(token: &str) -> Pipelined {
        Pipelined {
            // A complete request, with the real token, that would delete the job `keep`.
            smuggled: format!(
                "DELETE /jobs/keep HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
            ),
            health: format!(
                "GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            ),
        }
    }

    /// POST /jobs with `auth` header lines and the smuggled request as a sized body.
    fn sized(&self, auth: &str) -> String {
        format!(
            "POST /jobs HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            self.smuggled.len(),
            self.smuggled
        )
    }

    /// POST /jobs/keep/run with `auth` header lines and the smuggled request as one chunk.
    fn chunked(&self, auth: &str) -> String {
        format!(
            "POST /jobs/keep/run HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            self.smuggled.len(),
            self.smuggled
        )
    }

    /// Sends `first` and GET /health in one write on one keep-alive connection; returns the
    /// first answer and the raw bytes of everything after it up to the close.
    fn send(&self, d: &Daemon, first: &str, what: &str) -> ((u16, String), String) {
        let mut s = connect(d, 10);
        s.write_all(format!("{first}{}", self.health).as_bytes())
            .unwrap();
        let answer = read_response(&mut s, what);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        (answer, String::from_utf8_lossy(&rest).into_owned())
    }
}

/// The status codes of the response heads in `raw`.
fn status_lines(raw: &str) -> Vec<u16> {
    raw.split("\r\n")
        .filter(|l| l.starts_with("HTTP/1."))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

/// The daemon answers a request without the token before reading its body. That unread body
/// must never be run as a request of its own: here each body is a complete request, with the
/// real token, that would delete a job. With a `Content-Length` body the connection stays in
/// step and the pipelined GET /health gets its answer.
#[test]
fn an_unread_unauthenticated_body_is_never_run_as_a_request() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    d.create(&sh_job("keep", "true", idle_trigger()));
    let p = Pipelined::new(&d.token);

    for (what, first) in [
        ("no token, Content-Length", p.sized("")),
        (
            "wrong token, Content-Length",
            p.sized("Authorization: Bearer wrong\r\n"),
        ),
    ] {
        let ((st, body), rest) = p.send(&d, &first, what);
        assert_eq!(st, 401, "{what}: {body}");
        // Exactly one more answer, /health's: the smuggled DELETE was skipped as body bytes.
        assert_eq!(status_lines(&rest), [200], "{what}: {rest}");
        let h: Value = serde_json::from_str(rest.rsplit("\r\n\r\n").next().unwrap()).unwrap();
        assert_eq!(h["status"], "ok", "{what}: {h}");
        assert_eq!(h["jobs"], 1, "{what}: {h}");
    }
    let basic = format!("Authorization: Basic {}\r\n", d.token);
    for (what, first) in [
        ("no token, chunked", p.chunked("")),
        ("Basic scheme, chunked", p.chunked(&basic)),
    ] {
        let ((st, body), rest) = p.send(&d, &first, what);
        assert_eq!(st, 401, "{what}: {body}");
        // Whatever follows (see the ignored test below), the smuggled DELETE is not run.
        assert!(
            !status_lines(&rest).contains(&204),
            "{what}: the smuggled DELETE ran: {rest}"
        );
    }
    assert_eq!(d.get("/jobs/keep").0, 200);
    assert!(runs(&d, "keep").is_empty());

    // A 2 MiB body with a missing or wrong token is refused with 401 (not 413, not a reset
    // connection), and creates nothing.
    let big = body_of_len("big-intruder", 2 * LIMIT);
    for auth in [vec![], vec![("Authorization", "Bearer wrong")]] {
        let (st, hs, text) = d.raw("POST", "/jobs", Some(&big), &auth);
        assert_eq!(st, 401, "{auth:?}: {text}");
        assert!(header(&hs, "www-authenticate").is_some_and(|w| w.starts_with("Bearer")));
    }
    assert_eq!(d.get("/jobs").1.as_array().unwrap().len(), 1);
    let m = d.get("/metrics").1;
    assert_eq!(m["http_unauthorized_total"], 6, "{m}");
}

#[test]

fn an_unread_chunked_body_does_not_spoil_the_next_request_on_the_connection() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    d.create(&sh_job("keep", "true", idle_trigger()));
    let p = Pipelined::new(&d.token);
    let ((st, body), rest) = p.send(&d, &p.chunked(""), "no token, chunked");
    assert_eq!(st, 401, "{body}");
    assert_eq!(status_lines(&rest), [200], "{rest}");
    let h: Value = serde_json::from_str(rest.rsplit("\r\n\r\n").next().unwrap()).unwrap();
    assert_eq!(h["status"], "ok", "{h}");
}

/// xorshift64*: deterministic bytes for the garbage loop.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn garbage_bodies() -> Vec<(String, Vec<u8>)> {
    let mut valid = sh_job("garbage-base", "echo {{job_name}}", idle_trigger());
    valid["env"] = json!({"K": "v"});
    valid["limits"] = json!({"timeout_seconds": 30});
    valid["outputs"] = json!([{"type": "log"}, {"type": "stdout", "on": ["failed"]}]);
    let valid = valid.to_string().into_bytes();
    let n = valid.len();
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();

    // Truncations at 40 points.
    for i in 0..40 {
        let at = i * n / 40;
        out.push((format!("truncated at {at}"), valid[..at].to_vec()));
    }
    // Single-byte mutations, insertions and deletions.
    for _ in 0..50 {
        let mut b = valid.clone();
        let at = rng.below(n);
        b[at] = rng.next() as u8;
        out.push((format!("byte {at} replaced"), b));
    }
    for _ in 0..15 {
        let mut b = valid.clone();
        let at = rng.below(n);
        let c = b"{}[]\",:\\0-eE.tfn\x00\xff"[rng.below(19)];
        b.insert(at, c);
        out.push((format!("byte {c:#x} inserted at {at}"), b));
    }
    for _ in 0..15 {
        let mut b = valid.clone();
        let at = rng.below(n);
        b.remove(at);
        out.push((format!("byte {at} removed"), b));
    }
    // Random bytes, and random JSON-ish token soup.
    for i in 0..25 {
        let len = 1 + rng.below(600);
        out.push((format!("random bytes #{i}"), rng.bytes(len)));
    }
    const TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"name\"",
        "\"prompt\"",
        "\"triggers\"",
        "\"type\"",
        "\"cron\"",
        "\"x\"",
        "1",
        "-1",
        "1e999",
        "-0",
        "null",
        "true",
        "\"\\ud800\"",
        "\"\\u0000\"",
        "0.5",
    ];
    for i in 0..20 {
        let k = 1 + rng.below(40);
        let s: String = (0..k).map(|_| TOKENS[rng.below(TOKENS.len())]).collect();
        out.push((format!("token soup #{i}: {s}"), s.into_bytes()));
    }
    // Deep nesting, alone and inside a job.
    let deep = |open: &str, close: &str, depth: usize| {
        format!("{}{}", open.repeat(depth), close.repeat(depth))
    };
    out.push((
        "arrays 10000 deep".into(),
        deep("[", "]", 10_000).into_bytes(),
    ));
    out.push((
        "arrays 10000 deep, unclosed".into(),
        "[".repeat(10_000).into_bytes(),
    ));
    out.push((
        "objects 10000 deep".into(),
        deep("{\"a\":", "}", 10_000)
            .replace(":}", ":1}")
            .into_bytes(),
    ));
    let job_with = |k: &str, v: &str| {
        format!(
            r#"{{"name": "g", "prompt": "p", "triggers": [{{"type": "interval", "seconds": 5}}], "{k}": {v}}}"#
        )
        .into_bytes()
    };
    out.push((
        "deep arrays in env".into(),
        job_with("env", &deep("[", "]", 10_000)),
    ));
    out.push((
        "deep objects in limits".into(),
        job_with(
            "limits",
            &format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)),
        ),
    ));
    out.push((
        "deep arrays in triggers".into(),
        job_with("triggers", &deep("[", "]", 10_000)),
    ));
    // Huge and odd numbers.
    for (k, v) in [
        ("max_retries", "1e400"),
        ("max_retries", "-1e400"),
        ("history", "18446744073709551616"),
        ("history", "99999999999999999999999999999999999999"),
        ("history", "4294967297"),
        ("max_retries", "18446744073709551615"),
        ("retry_backoff_seconds", "1e308"),
        ("retry_backoff_seconds", "-1e-400"),
        (
            "retry_backoff_seconds",
            "123456789012345678901234567890.5e3",
        ),
        ("limits", r#"{"timeout_seconds": 1e20}"#),
        ("limits", r#"{"memory_mb": 18446744073709551615}"#),
        ("limits", r#"{"max_output_kb": 9007199254740993}"#),
        ("triggers", r#"[{"type": "interval", "seconds": 1e400}]"#),
        (
            "triggers",
            r#"[{"type": "interval", "seconds": 18446744073709551615}]"#,
        ),
        ("triggers", r#"[{"type": "interval", "seconds": -0}]"#),
        (
            "triggers",
            r#"[{"type": "file_change", "patterns": ["*"], "root": "/tmp", "debounce_seconds": 1e999}]"#,
        ),
        (
            "triggers",
            r#"[{"type": "webhook", "path": "/hooks/x", "secret_env": "S", "max_age_seconds": 1e30}]"#,
        ),
    ] {
        out.push((format!("{k}: {v}"), job_with(k, v)));
    }
    // Odd strings and invalid UTF-8 in names, values and keys.
    for (what, b) in [
        ("invalid UTF-8 in name", &b"{\"name\": \"\xc3\x28\", \"prompt\": \"p\"}"[..]),
        ("invalid UTF-8 in a key", b"{\"na\xffme\": \"x\"}"),
        ("overlong UTF-8", b"{\"name\": \"\xc0\xaf\"}"),
        ("UTF-16 surrogate bytes", b"{\"name\": \"\xed\xa0\x80\"}"),
        ("lone surrogate escape", br#"{"name": "\ud800", "prompt": "p", "triggers": [{"type": "interval", "seconds": 5}]}"#),
        ("NUL in name", b"{\"name\": \"a\\u0000b\", \"prompt\": \"p\", \"triggers\": [{\"type\": \"interval\", \"seconds\": 5}]}"),
        ("raw NUL byte", b"{\"name\": \"a\x00b\"}"),
        ("UTF-8 BOM", b"\xef\xbb\xbf{\"name\": \"bom\", \"prompt\": \"p\", \"triggers\": [{\"type\": \"interval\", \"seconds\": 5}]}"),
        ("bare NUL bytes", b"\x00\x00\x00\x00"),
        ("duplicate keys", br#"{"name": "a", "name": 5}"#),
        ("non-ASCII name", "{\"name\": \"j\u{f6}b\", \"prompt\": \"p\", \"triggers\": [{\"type\": \"interval\", \"seconds\": 5}]}".as_bytes()),
        ("emoji cron", "{\"name\": \"e\", \"prompt\": \"p\", \"triggers\": [{\"type\": \"cron\", \"cron\": \"\u{1f600} * * * *\"}]}".as_bytes()),
        ("multibyte timezone", "{\"name\": \"e\", \"prompt\": \"p\", \"triggers\": [{\"type\": \"cron\", \"cron\": \"* * * * *\", \"timezone\": \"\u{e9}\u{e9}/\u{1f600}\"}]}".as_bytes()),
        ("multibyte glob", "{\"name\": \"e\", \"prompt\": \"p\", \"triggers\": [{\"type\": \"file_change\", \"root\": \"/tmp\", \"patterns\": [\"[\u{1f600}\"]}]}".as_bytes()),
        ("multibyte hook path", "{\"name\": \"e\", \"prompt\": \"p\", \"triggers\": [{\"type\": \"webhook\", \"secret_env\": \"S\", \"path\": \"/hooks/\u{e9}\"}]}".as_bytes()),
        ("long hook path", format!("{{\"name\": \"e\", \"prompt\": \"p\", \"triggers\": [{{\"type\": \"webhook\", \"secret_env\": \"S\", \"path\": \"/hooks/{}\"}}]}}", "\u{e9}".repeat(200)).as_bytes()),
        ("cron with 300 fields", format!("{{\"name\": \"e\", \"prompt\": \"p\", \"triggers\": [{{\"type\": \"cron\", \"cron\": \"{}\"}}]}}", "* ".repeat(300)).as_bytes()),
        ("cron huge step", br#"{"name": "e", "prompt": "p", "triggers": [{"type": "cron", "cron": "*/99999999999999999999 * * * *"}]}"#),
        ("cron huge range", br#"{"name": "e", "prompt": "p", "triggers": [{"type": "cron", "cron": "0-18446744073709551615 * * * *"}]}"#),
        ("cron step zero", br#"{"name": "e", "prompt": "p", "triggers": [{"type": "cron", "cron": "*/0 * * * *"}]}"#),
        ("cron reversed range", br#"{"name": "e", "prompt": "p", "triggers": [{"type": "cron", "cron": "59-0 * * * *"}]}"#),
        ("cron never (Feb 31)", br#"{"name": "e", "prompt": "p", "triggers": [{"type": "cron", "cron": "0 0 31 2 *"}]}"#),
    ] {
        out.push((what.to_string(), b.to_vec()));
    }
    // Over the body limit.
    out.push(("random bytes, limit + 1".into(), rng.bytes(LIMIT + 1)));
    out
}

#[test]
fn garbage_bodies_never_get_a_5xx_or_a_dropped_connection() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let base = d.create(&sh_job("garbage-base", "true", idle_trigger()));
    let id = base["id"].as_str().unwrap().to_string();
    let bodies = garbage_bodies();
    assert!(bodies.len() >= 200, "{} bodies", bodies.len());
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for (what, body) in &bodies {
        let parsed = serde_json::from_slice::<Value>(body);
        for (method, path) in [
            ("POST", "/jobs".to_string()),
            ("PATCH", format!("/jobs/{id}")),
        ] {
            let (st, _, v) = call(&d, method, &path, Some(body));
            *statuses.entry(st).or_default() += 1;
            let what = format!("{method} {what}");
            assert!(
                matches!(st, 200 | 201 | 400 | 409 | 413),
                "{what}: status {st}: {v}"
            );
            if st >= 400 {
                assert!(
                    v["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{what}: {v}"
                );
            }
            if body.len() > LIMIT {
                assert_eq!(st, 413, "{what}");
            } else if parsed.is_err() {
                assert_eq!(st, 400, "{what}: not JSON, yet {v}");
            }
            if st < 300 {
                assert!(
                    v["id"].as_str().is_some_and(|i| i.starts_with("job_")),
                    "{what}: {v}"
                );
            }
        }
    }
    // The patched job is still there (PATCH never changes the id), and the daemon is fine.
    assert_eq!(d.get(&format!("/jobs/{id}")).0, 200);
    let (st, h) = d.get("/health");
    assert_eq!(st, 200);
    assert_eq!(h["status"], "ok");
    assert!(statuses[&400] > 300, "mostly refused: {statuses:?}");
    let log = d.stderr();
    assert!(!log.to_lowercase().contains("panic"), "{log}");
}

#[test]

fn clients_that_stall_mid_body_do_not_freeze_the_api() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let auth = format!("Bearer {}", d.token);
    let mut stalled = Vec::new();
    for i in 0..8 {
        // No token, a body announced but never finished.
        let mut s = connect(&d, 10);
        s.write_all(b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"name\"")
            .unwrap();
        stalled.push(s);
        // The API keeps answering (each read gives up after 10 s).
        let mut h = connect(&d, 10);
        write!(
            h,
            "GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        assert_eq!(
            read_status(&mut h, &format!("/health with {} stalled clients", i + 1)),
            200
        );
    }
}

#[test]

fn a_non_ascii_header_value_gets_an_answer() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let mut s = connect(&d, 10);
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nX-Note: caf\u{e9}\r\nConnection: close\r\n\r\n",
        d.token
    )
    .unwrap();
    let st = read_status(&mut s, "header with UTF-8");
    assert!(matches!(st, 200 | 400), "{st}");
    assert_eq!(d.get("/health").0, 200);
}

#[test]

fn a_non_ascii_request_target_gets_a_400_not_a_dropped_connection() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    for target in [&b"/jobs/\xff"[..], b"/jobs/caf\xc3\xa9", b"/health?x=\xff"] {
        let mut s = connect(&d, 10);
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(
            format!(
                " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                d.token
            )
            .as_bytes(),
        );
        s.write_all(&req).unwrap();
        let what = format!("GET {}", String::from_utf8_lossy(target));
        let (st, body) = read_response(&mut s, &what);
        assert!(matches!(st, 400 | 404), "{what}: {st} {body}");
    }
    assert_eq!(d.get("/health").0, 200);
}

#[test]

fn an_absolute_form_request_target_is_routed_like_its_path() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let mut s = connect(&d, 10);
    write!(
        s,
        "GET http://127.0.0.1:{}/health HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        d.port, d.token
    )
    .unwrap();
    let (st, body) = read_response(&mut s, "absolute-form GET /health");
    assert_eq!(st, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "ok", "{h}");
}

#[test]
fn query_strings_and_path_segments_are_percent_decoded() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let mut job = sh_job("keep-me", "true", idle_trigger());
    job["overlap"] = json!("parallel");
    d.create(&job);
    for _ in 0..3 {
        let (st, _) = d.req("POST", "/jobs/keep-me/run", None);
        assert_eq!(st, 202);
    }
    d.wait_run("keep-me", 20, "3 runs recorded", |_| true);
    wait_for(20, "3 runs listed", || {
        (d.get("/jobs/keep-me/runs").1.as_array()?.len() == 3).then_some(())
    });
    // %31 is "1"; %6B%65%65%70%2D%6D%65 is "keep-me".
    let (st, runs) = d.get("/jobs/%6B%65%65%70%2D%6D%65/runs?limit=%31");
    assert_eq!(st, 200, "{runs}");
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    let (st, body) = d.get("/jobs/keep-me/runs?limit=%7A");
    assert_eq!(st, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("\"z\""), "{body}");
    // An encoded slash stays inside its segment: no such job, not another endpoint.
    assert_eq!(d.get("/jobs/keep-me%2Fruns").0, 404);
    // Every API answer says its Content-Type is to be believed.
    let (_, hs, _) = d.raw("GET", "/jobs/keep-me", None, &[]);
    assert_eq!(header(&hs, "x-content-type-options"), Some("nosniff"));
}

/// The job's only save warning is the one `sh_job`'s agents (`sh -c SCRIPT`, no `{prompt}`)
/// call for.
fn assert_only_no_prompt_warning(job: &Value) {
    let w = job["warnings"].as_array().expect("warnings");
    assert_eq!(w.len(), 1, "{job}");
    assert!(
        w[0].as_str()
            .is_some_and(|w| w.starts_with("agent.command: has no {prompt}")),
        "{job}"
    );
}
