//! Platform rules that hold on every platform, checked on Linux: a job whose `{prompt}` would
//! go through cmd.exe's second parse (`cmd /c …`, a `.bat`/`.cmd` agent) is refused, here as
//! on Windows, because job files move between machines.

use serde_json::json;

use crate::common::*;

#[test]
fn prompt_in_cmd_arguments_is_refused_with_the_way_out() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    for (command, field) in [
        (
            json!(["cmd", "/c", "claude", "-p", "{prompt}"]),
            "agent.command[4]",
        ),
        (
            json!(["C:\\Windows\\System32\\cmd.exe", "/C", "agent {prompt}"]),
            "agent.command[2]",
        ),
        (json!(["review.bat", "{prompt}"]), "agent.command[1]"),
    ] {
        let (st, v) = d.post(
            "/jobs",
            &json!({"name": "inj", "prompt": "{{payload.title}}", "agent": {"command": command},
                    "triggers": idle_trigger()}),
        );
        assert_eq!(st, 400, "{command}: {v}");
        assert_eq!(v["field"], field, "{v}");
        let e = v["error"].as_str().unwrap();
        assert!(
            e.contains("\"prompt_via\": \"stdin\"") && e.contains("{prompt_file}"),
            "{e}"
        );
    }
    // The ways it points to are accepted.
    for agent in [
        json!({"command": ["cmd", "/c", "claude", "-p", "--prompt-file", "{prompt_file}"]}),
        json!({"command": ["cmd", "/c", "claude", "-p"], "prompt_via": "stdin"}),
    ] {
        let (st, v) = d.post(
            "/jobs",
            &json!({"name": "ok", "prompt": "p", "agent": agent, "triggers": idle_trigger()}),
        );
        assert_eq!(st, 201, "{agent}: {v}");
        assert_eq!(d.req("DELETE", "/jobs/ok", None).0, 204, "{v}");
    }
}

#[test]
fn a_default_agent_through_cmd_with_prompt_is_refused_at_start() {
    let t = tempdir();
    write_config(
        t.path(),
        r#"{"default_agent": ["cmd.exe", "/c", "claude", "-p", "{prompt}"]}"#,
    );
    let (code, out, err) = cli(&t.path().join("data"), &["run", "--port", "0"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("default_agent[4]") && err.contains("{prompt_file}"),
        "{err}"
    );
}
