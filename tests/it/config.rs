//! `config.json` errors against the real binary: `run` refuses a bad file at once, exits 1,
//! and says which file and which key, and what to do; nothing starts.

use crate::common::*;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `run` on a data dir holding `config` and waits (at most 30 s) for it to exit:
/// (exit code, stderr). A daemon still running then is killed and the test fails.
fn run_with_config(config: &str) -> (i32, String) {
    let t = tempdir();
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("config.json"), config).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--port", "0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("run accepted the config.json {config} and kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!data.join(".token").exists(), "nothing started: {config}");
    (status.code().unwrap_or(-1), err)
}

#[test]
fn run_refuses_a_bad_config_naming_the_key() {
    let cases = [
        ("{\"workers\": 2,", "config.json: EOF while parsing"),
        ("{\"wrokers\": 2}", "unknown field `wrokers`"),
        ("{\"default_agent\": [\"\"]}", "default_agent must be a non-empty argv array"),
        ("{\"max_concurrent_runs\": 0}", "max_concurrent_runs must be at least 1"),
        (
            "{\"default_agent\": [\"cmd\", \"/c\", \"agent {prompt}\"]}",
            "default_agent[2]: ",
        ),
        ("{\"containment\": \"jail\"}", "containment \"jail\": expected auto or process_group"),
        (
            "{\"http\": {\"head_timeout_seconds\": 0}}",
            "http.head_timeout_seconds must be a number of seconds above 0 and at most 86400, got 0",
        ),
    ];
    for (config, want) in cases {
        let (code, err) = run_with_config(config);
        assert_eq!(code, 1, "{config}: {err}");
        assert!(err.contains(want), "{config}: wanted {want:?} in {err}");
    }
}
