//! Property tests over the input boundaries: job validation, cron parsing, webhook
//! signature checking and HTTP routing get arbitrary input and must never panic; valid
//! input must keep its meaning. Cases per property: `PROPTEST_CASES` (default 256); run
//! longer with e.g. `PROPTEST_CASES=100000 cargo test --release proptests`.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::api::{router, Api, Req};
use crate::engine::{Engine, Settings};
use crate::job::validate_job;
use crate::schedule::cron::CronSchedule;
use crate::schedule::zone::Zone;
use crate::triggers::scheme::verify;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[ -~]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("cron"),
            Just("interval"),
            Just("webhook"),
            Just("file_change"),
            Just("git_push"),
            Just("log"),
            Just("file"),
            Just("slack"),
            Just("* * * * *"),
            Just("/hooks/x"),
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("name".to_string()),
                        Just("prompt".to_string()),
                        Just("triggers".to_string()),
                        Just("outputs".to_string()),
                        Just("type".to_string()),
                        Just("cron".to_string()),
                        Just("seconds".to_string()),
                        Just("limits".to_string()),
                        Just("agent".to_string()),
                        Just("command".to_string()),
                        Just("path".to_string()),
                        Just("env".to_string()),
                        "[a-z_]{1,10}",
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn test_api() -> (Api, tempfile::TempDir) {
    let d = tempfile::tempdir().expect("tempdir");
    let store = crate::store::Store::open(d.path()).expect("store");
    let (work_tx, _work_rx) = crossbeam_channel::bounded(16);
    let (git_kick, _) = crossbeam_channel::bounded(1);
    let settings = Settings {
        default_agent: None,
        workers: 1,
        max_concurrent_runs: 1,
        grace_seconds: 1,
        max_body_bytes: 1 << 20,
        queue_capacity: 16,
        git_poll: std::time::Duration::from_secs(1),
    };
    let engine = Arc::new(Engine::new(store, settings, Vec::new(), work_tx));
    let api = Api {
        engine,
        token: "t0ken".into(),
        hooks: Default::default(),
        git_kick,
        http: Default::default(),
        bodies: crate::api::BodyBudget::new(64 << 20),
    };
    (api, d)
}

proptest! {
    #[test]
    fn validation_never_panics(v in json_value()) {
        let _ = validate_job(&v, "job_000000000000", "2026-01-01T00:00:00Z");
    }

    #[test]
    fn validation_of_mutated_jobs_never_panics(
        k in prop_oneof![Just("name"), Just("prompt"), Just("triggers"), Just("outputs"), Just("limits"), Just("agent"), Just("env"), Just("overlap")],
        v in json_value()
    ) {
        let mut j = json!({"name": "a", "prompt": "p", "triggers": [{"type": "interval", "seconds": 5}]});
        j[k] = v;
        if let Err(e) = validate_job(&j, "job_000000000000", "2026-01-01T00:00:00Z") {
            prop_assert!(!e.error.is_empty());
        }
    }

    #[test]
    fn cron_parse_never_panics_and_next_is_later(s in "[0-9*/,\\- a-zA-Z@]{0,30}", secs in 0i64..4_000_000_000) {
        if let Ok(c) = CronSchedule::parse(&s) {
            let after = chrono::DateTime::from_timestamp(secs, 0).expect("in range");
            let zone = Zone::parse(Some("Europe/Berlin")).expect("zone");
            if let Some(n) = c.next_after(after, &zone) {
                prop_assert!(n > after);
            }
        }
    }

    #[test]
    fn quartz_parse_never_panics_and_next_is_later(
        junk in "[0-9*/,?#LW\\- a-zA-Z@]{0,36}",
        fields in prop::collection::vec("[0-9]{1,4}(-[0-9]{1,4})?(/[0-9]{1,2})?|\\*(/[0-9])?|\\?|MON-FRI|JAN", 6..=7),
        pick in any::<bool>(),
        secs in 0i64..4_000_000_000,
    ) {
        use crate::schedule::{Dialect, Schedule};
        // Mostly well-formed field lists (most of them parse), or anything at all.
        let s = if pick { fields.join(" ") } else { junk };
        if let Ok(q) = Schedule::parse(&s, Dialect::Quartz) {
            let after = chrono::DateTime::from_timestamp(secs, 0).expect("in range");
            let zone = Zone::parse(Some("Europe/Berlin")).expect("zone");
            if let Some(n) = q.next_after(after, &zone) {
                prop_assert!(n > after);
            }
        }
    }

    #[test]
    fn signatures_verify_only_when_right(
        secret in prop::collection::vec(any::<u8>(), 1..40),
        body in prop::collection::vec(any::<u8>(), 0..200),
        flip in any::<usize>(),
        junk in "[ -~]{0,80}",
    ) {
        use hmac::{Hmac, Mac};
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(&secret).expect("any key length");
        m.update(&body);
        let sig = crate::ids::hex(&m.finalize().into_bytes());
        let verify = |secret: &[u8], (h, b): (String, Vec<u8>), max_age, now| {
            let headers = [("x-hub-signature-256".to_string(), h)];
            verify(None, secret, &headers, &b, max_age, now)
        };
        let req = |h: String, b: Vec<u8>| (h, b);
        let good = format!("sha256={sig}");
        prop_assert!(verify(&secret, req(good.clone(), body.clone()), None, 0).is_ok());
        let mut bad = body.clone();
        if bad.is_empty() {
            bad.push(0);
        } else {
            let i = flip % bad.len();
            bad[i] ^= 1;
        }
        prop_assert!(verify(&secret, req(good, bad), None, 0).is_err());
        let _ = verify(&secret, req(junk.clone(), body.clone()), Some(60), 0);
        prop_assert!(verify(&secret, req(junk, body), None, 0).is_err());
    }

    #[test]
    fn routing_never_panics_or_500s(
        method in prop_oneof![
            Just("GET".to_string()), Just("POST".to_string()), Just("PATCH".to_string()),
            Just("DELETE".to_string()), Just("PUT".to_string()), "[A-Z]{1,7}",
        ],
        path in prop_oneof![
            Just("/jobs".to_string()), Just("/health".to_string()), Just("/metrics".to_string()),
            "/jobs/[a-z_0-9.-]{0,12}(/runs|/run|/runs/run_[0-9a-f]{0,16}|/x)?", "/hooks/[a-z/]{0,12}", "/[ -~]{0,20}",
        ],
        auth in prop_oneof![Just(Some("Bearer t0ken".to_string())), Just(None), "[ -~]{0,20}".prop_map(Some)],
        body in prop_oneof![json_value().prop_map(|v| v.to_string().into_bytes()), prop::collection::vec(any::<u8>(), 0..64)],
        query in "[a-z=&0-9]{0,12}",
    ) {
        // One API (and data dir) for every case: a store per case made this property spend
        // its time creating and fsyncing directories. State left by earlier cases is fine:
        // the property is that nothing is a 500, whatever came before.
        thread_local! {
            static API: (Api, tempfile::TempDir) = test_api();
        }
        API.with(|(api, _d)| -> Result<(), TestCaseError> {
        let mut headers = Vec::new();
        if let Some(a) = auth {
            headers.push(("authorization".to_string(), a));
        }
        let req = Req { method, path, query, headers, body };
        let r = router::handle(api, &req);
        prop_assert!(r.status != 500, "{} {} -> 500: {}", req.method, req.path, String::from_utf8_lossy(&r.body));
        prop_assert!((200..500).contains(&r.status) || r.status == 503);
        Ok(())
        })?;
    }
}
