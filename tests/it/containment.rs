//! Agent containment through the real daemon, with real processes on this machine's
//! cgroups and Landlock: a Node agent under `memory_mb`, processes that escape the run's
//! process group and environment marker, a fork bomb under `max_processes`, the agent's
//! environment without the daemon's secrets, redaction of what it prints, writes confined
//! to the working directory, and prompt hand-over. A test that needs what the machine
//! lacks (cgroups, Landlock, node) says so and skips; `.ci/run` machines have them all.

use std::path::Path;

use crate::common::*;
use crate::support::http::{reply, Server};
use serde_json::{json, Value};

fn manual(d: &Daemon, job: &str) -> String {
    let (st, v) = d.post(&format!("/jobs/{job}/run"), &json!({}));
    assert_eq!(st, 202, "{v}");
    v["run_id"].as_str().expect("run_id").to_string()
}

fn run_once(d: &Daemon, job: &Value) -> Value {
    d.create(job);
    let name = job["name"].as_str().expect("name");
    let id = manual(d, name);
    d.wait_final(name, &id, 120)
}

/// The daemon's containment, as `/health` reports it.
fn containment(d: &Daemon) -> Value {
    let (st, h) = d.get("/health");
    assert_eq!(st, 200, "{h}");
    h["containment"].clone()
}

/// Whether runs get cgroups here; prints why a test skips when they do not.
fn has_cgroups(d: &Daemon, test: &str) -> bool {
    let c = containment(d);
    let ok = c["mode"] == "cgroup_v1" || c["mode"] == "cgroup_v2";
    if !ok {
        eprintln!(
            "SKIP {test}: no per-run cgroup on this machine ({})",
            c["no_cgroup_reason"]
        );
    }
    ok
}

fn has_node(test: &str) -> bool {
    let ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP {test}: node is not installed (.ci/run installs Debian's nodejs)");
    }
    ok
}

fn error_of(r: &Value) -> &str {
    r["error"].as_str().unwrap_or("")
}

/// Pids of live processes whose environment holds `entry` (`NAME=value`).
fn pids_with_env(entry: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
    {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            if env.split(|b| *b == 0).any(|kv| kv == entry.as_bytes()) && alive(pid) {
                out.push(pid);
            }
        }
    }
    out
}

#[test]
fn health_and_log_name_the_containment_once() {
    let _g = heavy();
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let c = containment(&d);
    assert!(
        ["cgroup_v2", "cgroup_v1", "process_group"].contains(&c["mode"].as_str().unwrap_or("")),
        "{c}"
    );
    assert!(c["landlock"].is_boolean(), "{c}");
    let log = d.stderr();
    assert_eq!(log.matches(" containment mode=").count(), 1, "{log}");

    // config.json can ask for the process-group fallback even where cgroups work.
    let t2 = tempdir();
    let data = t2.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("config.json"),
        r#"{"containment": "process_group"}"#,
    )
    .unwrap();
    let d2 = Daemon::start(t2.path(), &[]);
    assert_eq!(containment(&d2)["mode"], "process_group");
}

/// Node reserves far more address space than it uses: it must start under `memory_mb: 512`
/// (which `RLIMIT_AS` did not allow), and a 1 GiB allocation must end the run with the
/// limit named, with a cgroup (OOM kill) and without one (`RLIMIT_DATA`).
#[test]
fn node_starts_under_memory_mb_512_and_dies_at_1_gib_with_the_limit_named() {
    let _g = heavy();
    if !has_node("node_memory") {
        return;
    }
    for mode in ["auto", "process_group"] {
        let t = tempdir();
        write_config(t.path(), &format!(r#"{{"containment": "{mode}"}}"#));
        let d = Daemon::start(t.path(), &[]);
        let m = containment(&d)["mode"].clone();
        let start = run_once(
            &d,
            &json!({
                "name": "node-start", "prompt": "p",
                "agent": {"command": ["node", "-e", "console.log('node up', process.version)"]},
                "limits": {"memory_mb": 512}, "triggers": idle_trigger()
            }),
        );
        assert_eq!(start["status"], "succeeded", "{mode} ({m}): {start}");
        assert!(
            start["output"].as_str().unwrap().starts_with("node up v"),
            "{start}"
        );
        eprintln!("[{m}] node under memory_mb 512: {}", start["output"]);

        let big = run_once(
            &d,
            &json!({
                "name": "node-1g", "prompt": "p",
                "agent": {"command": ["node", "-e",
                    "const b = Buffer.alloc(1024 * 1024 * 1024, 1); console.log('allocated', b.length)"]},
                "limits": {"memory_mb": 512}, "triggers": idle_trigger()
            }),
        );
        assert_eq!(big["status"], "failed", "{m}: {big}");
        assert!(
            !big["output"].as_str().unwrap().contains("allocated"),
            "{big}"
        );
        assert!(
            error_of(&big).contains("memory_mb limit is 512 MiB"),
            "{m}: {big}"
        );
        if m != "process_group" {
            assert!(error_of(&big).contains("out of memory"), "{big}");
            assert_eq!(big["signal"], "SIGKILL", "{big}");
        }
        eprintln!("[{m}] node allocating 1 GiB: {}", error_of(&big));

        // A failure that has nothing to do with memory does not blame the limit.
        let other = run_once(
            &d,
            &json!({
                "name": "node-exit3", "prompt": "p",
                "agent": {"command": ["node", "-e", "process.exit(3)"]},
                "limits": {"memory_mb": 512}, "triggers": idle_trigger()
            }),
        );
        assert_eq!(other["status"], "failed", "{other}");
        assert!(!error_of(&other).contains("memory_mb"), "{m}: {other}");
    }
}

/// A process that leaves the process group (setsid) and drops the `BOG_RUN_ID` marker
/// cannot be found by a /proc sweep; the run's cgroup still holds it. It is gone when the
/// agent exits, when the run times out, and when the daemon stops.
#[test]
fn escapee_without_marker_is_gone_at_end_timeout_and_stop() {
    let _g = heavy();
    let t = tempdir();
    let mut d = Daemon::start(t.path(), &["--grace", "1"]);
    if !has_cgroups(&d, "escapee") {
        return;
    }
    let script = |pidfile: &Path, tail: &str| {
        format!(
            "env -u BOG_RUN_ID setsid sh -c 'trap \"\" TERM; echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 312' </dev/null >/dev/null 2>&1 & \
             while [ ! -s {p} ]; do sleep 0.01; done; {tail}",
            p = pidfile.display()
        )
    };
    for (name, tail, status) in [
        ("exits", "echo done", "succeeded"),
        ("hangs", "trap '' TERM; sleep 300", "timed_out"),
    ] {
        let pidfile = t.path().join(format!("{name}.pid"));
        let mut job = sh_job(name, &script(&pidfile, tail), idle_trigger());
        job["limits"] = json!({"timeout_seconds": 5});
        d.create(&job);
        let id = manual(&d, name);
        let pid: i32 = wait_pid_file(&pidfile, "escaped pid");
        let r = d.wait_final(name, &id, 60);
        assert_eq!(r["status"], status, "{r}");
        // A run that exits leaves the escapee behind, and the record counts it. At a
        // timeout every process of the run is killed together, so whether the escapee is
        // still there to be counted separately depends on who the kill reached first.
        if name == "exits" {
            assert!(error_of(&r).contains("had left its process group"), "{r}");
        }
        // The record is written after the kill: the escapee is already gone.
        assert!(!alive(pid), "escapee {pid} survived the run ({name})");
        eprintln!("[{name}] escapee {pid} gone; record: {}", error_of(&r));
    }
    let pidfile = t.path().join("stop.pid");
    d.create(&sh_job(
        "stop",
        &script(&pidfile, "sleep 300"),
        idle_trigger(),
    ));
    manual(&d, "stop");
    let pid: i32 = wait_pid_file(&pidfile, "escaped pid");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(30).code(), Some(0));
    assert!(!alive(pid), "escapee {pid} survived the daemon's stop");
}

/// A daemon killed with SIGKILL leaves its run's cgroup behind; the next start kills it.
#[test]
fn escapee_of_a_crashed_daemon_is_killed_at_the_next_start() {
    let _g = heavy();
    let t = tempdir();
    let mut d = Daemon::start(t.path(), &[]);
    if !has_cgroups(&d, "crash_escapee") {
        return;
    }
    let pidfile = t.path().join("crash.pid");
    d.create(&sh_job(
        "crash",
        &format!(
            "env -u BOG_RUN_ID setsid sh -c 'echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 313' </dev/null >/dev/null 2>&1 & sleep 300",
            p = pidfile.display()
        ),
        idle_trigger(),
    ));
    let id = manual(&d, "crash");
    let pid: i32 = wait_pid_file(&pidfile, "escaped pid");
    d.kill9();
    assert!(alive(pid));
    let d = Daemon::start(t.path(), &[]);
    let r = d.wait_final("crash", &id, 20);
    assert_eq!(r["status"], "interrupted", "{r}");
    wait_for(10, "the crashed run's escapee to be killed", || {
        (!alive(pid)).then_some(())
    });
    // The agent itself (sleep 300 in the run's cgroup) went too.
    assert!(pids_with_env(&format!("BOG_RUN_ID={id}")).is_empty());
}

#[test]
fn fork_bomb_under_max_processes_is_contained_and_the_run_says_so() {
    let _g = heavy();
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    if !has_cgroups(&d, "fork_bomb") {
        return;
    }
    let mut job = sh_job(
        "bomb",
        "bomb() { bomb | bomb & }; bomb; sleep 2; echo survived",
        idle_trigger(),
    );
    job["limits"] = json!({"max_processes": 50, "timeout_seconds": 60});
    let r = run_once(&d, &job);
    let e = error_of(&r);
    assert!(
        e.contains("max_processes limit of 50 reached"),
        "the run must say the bomb hit the limit: {r}"
    );
    let id = r["id"].as_str().unwrap();
    assert!(
        pids_with_env(&format!("BOG_RUN_ID={id}")).is_empty(),
        "bomb processes survived the run"
    );
    eprintln!("fork bomb: status {}, {e}", r["status"]);
    // The limit is the run's alone: the daemon itself still starts agents.
    let ok = run_once(&d, &sh_job("after", "echo fine", idle_trigger()));
    assert_eq!(ok["status"], "succeeded", "{ok}");
}

const HOOK_SECRET: &str = "hook-secret-value-7f3a91";
const SLACK_TOKEN: &str = "xoxb-slack-token-55c2e0";
const SMTP_PASSWORD: &str = "smtp-password-a81d44";
const OPENAI_KEY: &str = "sk-openai-test-key-0b9d2c";

fn daemon_with_secrets(dir: &Path) -> Daemon {
    Daemon::start_env(
        dir,
        &[],
        &[
            ("OTHER_HOOK_SECRET", HOOK_SECRET),
            ("BOT_SLACK", SLACK_TOKEN),
            ("MAILER_PASSWORD", SMTP_PASSWORD),
            ("OPENAI_API_KEY", OPENAI_KEY),
            ("PLAIN_SETTING", "plain-value"),
        ],
    )
}

/// Jobs that name the secrets: a webhook trigger, a Slack output, an email output.
fn secret_holders(d: &Daemon) {
    d.create(&json!({
        "name": "holder", "prompt": "p", "agent": {"command": ["true"]},
        "triggers": [{"type": "webhook", "path": "/hooks/other", "secret_env": "OTHER_HOOK_SECRET"}],
        "outputs": [
            {"type": "slack", "channel": "#x", "token_env": "BOT_SLACK", "api_url": "http://127.0.0.1:9/", "on": ["failed"]},
            {"type": "email", "to": "a@example.com", "smtp_env_prefix": "MAILER_", "on": ["failed"]}
        ]
    }));
}

#[test]
fn agent_env_has_no_secret_of_any_job_but_keeps_its_own_keys() {
    let _g = heavy();
    let t = tempdir();
    let d = daemon_with_secrets(t.path());
    secret_holders(&d);
    let r = run_once(&d, &sh_job("envdump", "env | sort", idle_trigger()));
    assert_eq!(r["status"], "succeeded", "{r}");
    let out = r["output"].as_str().unwrap();
    for name in ["OTHER_HOOK_SECRET=", "BOT_SLACK=", "MAILER_PASSWORD="] {
        assert!(!out.contains(name), "{name} reached the agent: {out}");
    }
    for v in [HOOK_SECRET, SLACK_TOKEN, SMTP_PASSWORD, OPENAI_KEY] {
        assert!(!out.contains(v), "a secret value is in the record: {out}");
    }
    assert!(out.contains("OPENAI_API_KEY=[redacted]"), "{out}");
    assert!(out.contains("PLAIN_SETTING=plain-value"), "{out}");
    assert!(out.contains("BOG_RUN_ID=run_"), "{out}");
    eprintln!("env of an agent (inherit_env true):\n{out}");

    // A clean environment: the basics, env_allow, the job's env, BOG_*.
    let mut clean = sh_job("clean", "env | sort", idle_trigger());
    clean["agent"]["inherit_env"] = json!(false);
    clean["agent"]["env_allow"] = json!(["OPENAI_API_KEY"]);
    clean["env"] = json!({"JOB_VAR": "from-job"});
    let r = run_once(&d, &clean);
    assert_eq!(r["status"], "succeeded", "{r}");
    let out = r["output"].as_str().unwrap();
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for n in &names {
        assert!(
            [
                "PATH",
                "HOME",
                "LANG",
                "USER",
                "TERM",
                "OPENAI_API_KEY",
                "JOB_VAR",
                "PWD",
                "SHLVL",
                "_"
            ]
            .contains(n)
                || n.starts_with("BOG_"),
            "{n} leaked into a clean environment: {out}"
        );
    }
    assert!(
        names.contains(&"OPENAI_API_KEY") && names.contains(&"JOB_VAR"),
        "{out}"
    );
    assert!(!names.contains(&"PLAIN_SETTING"), "{out}");
    eprintln!("env of an agent (inherit_env false):\n{out}");
}

#[test]
fn an_echoed_key_is_redacted_in_the_record_the_file_and_the_webhook() {
    let _g = heavy();
    let t = tempdir();
    let recv = Server::start(reply(204, ""));
    let d = daemon_with_secrets(t.path());
    secret_holders(&d);
    let file = t.path().join("result.txt");
    let mut job = sh_job(
        "leaky",
        "echo \"my key is $OPENAI_API_KEY\"; echo \"stderr: $OPENAI_API_KEY\" >&2; exit 7",
        idle_trigger(),
    );
    job["outputs"] = json!([
        {"type": "file", "path": file.to_str().unwrap()},
        {"type": "webhook", "url": recv.url("/leak")}
    ]);
    let r = run_once(&d, &job);
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["output"], "my key is [redacted]\n", "{r}");
    assert_eq!(r["stderr_tail"], "stderr: [redacted]\n", "{r}");
    let id = r["id"].as_str().unwrap();
    let on_disk = std::fs::read_to_string(
        d.dir
            .join("runs")
            .join(r["job_id"].as_str().unwrap())
            .join(format!("{id}.json")),
    )
    .unwrap();
    let delivered = wait_for(20, "webhook delivery", || {
        recv.requests_to("/leak").first().map(|q| q.json())
    });
    let text = std::fs::read_to_string(&file).unwrap();
    for (what, s) in [
        ("record", on_disk.as_str()),
        ("file output", text.as_str()),
        ("webhook", &delivered.to_string()),
        ("log", &d.stderr()),
    ] {
        assert!(!s.contains(OPENAI_KEY), "the key reached the {what}: {s}");
    }
    assert!(text.contains("my key is [redacted]"), "{text}");
    assert!(delivered.to_string().contains("[redacted]"), "{delivered}");
    eprintln!("redacted record on disk: {on_disk}");

    // Cut in half by max_output_kb: the half that was kept goes too.
    let mut job = sh_job(
        "halfkey",
        "head -c 1020 /dev/zero | tr '\\0' a; echo \"$OPENAI_API_KEY\"",
        idle_trigger(),
    );
    job["limits"] = json!({"max_output_kb": 1});
    let r = run_once(&d, &job);
    let out = r["output"].as_str().unwrap();
    assert!(out.starts_with(&"a".repeat(1020)), "{out}");
    assert!(
        out[1020..].starts_with("[redacted]\n[output cut"),
        "{}",
        &out[1020..]
    );
}

#[test]
fn working_dir_filesystem_confines_writes_with_landlock() {
    let _g = heavy();
    let t = tempdir();
    let home = t.path().join("home");
    let work = t.path().join("work");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let d = Daemon::start_env(t.path(), &[], &[("HOME", home.to_str().unwrap())]);
    let c = containment(&d);
    let mut job = sh_job(
        "confined",
        "echo in-wd > ok.txt && echo wd-write-ok; \
         (echo x > \"$HOME/escape.txt\") 2>&1 || echo home-write-refused; \
         echo t > \"$TMPDIR/t\" && echo tmp-write-ok; echo \"tmpdir=$TMPDIR\"; \
         cat /etc/hostname >/dev/null && echo read-ok; \
         echo via-dev-stdout > /dev/stdout; echo x > /dev/null && echo dev-null-ok; \
         c=$(find /sys/fs/cgroup -maxdepth 2 -name cgroup.procs | head -n 1); \
         [ -z \"$c\" ] || (echo $$ > \"$c\") 2>/dev/null || echo cgroup-move-refused",
        idle_trigger(),
    );
    job["working_dir"] = json!(work.to_str().unwrap());
    job["limits"] = json!({"filesystem": "working_dir"});
    let (st, created) = d.post("/jobs", &job);
    assert_eq!(st, 201, "{created}");
    if c["landlock"] != true {
        // Fail closed: a warning at creation, and runs that do not start.
        assert!(
            created["warnings"]
                .to_string()
                .contains("cannot be enforced"),
            "{created}"
        );
        let r = d.wait_final("confined", &manual(&d, "confined"), 30);
        assert_eq!(r["status"], "failed", "{r}");
        assert!(error_of(&r).contains("cannot enforce"), "{r}");
        eprintln!("SKIP landlock writes: {}", c["landlock_reason"]);
        return;
    }
    // With Landlock the only save warning is the one for sh_job's agent (no {prompt}).
    assert!(
        !created["warnings"]
            .to_string()
            .contains("cannot be enforced")
            && created["warnings"].as_array().map(Vec::len) == Some(1),
        "{created}"
    );
    let r = d.wait_final("confined", &manual(&d, "confined"), 30);
    assert_eq!(r["status"], "succeeded", "{r}");
    let out = r["output"].as_str().unwrap();
    for want in [
        "wd-write-ok",
        "Permission denied",
        "home-write-refused",
        "tmp-write-ok",
        "read-ok",
        "via-dev-stdout",
        "dev-null-ok",
        // Leaving the run's cgroup takes a write to cgroupfs: refused too.
        "cgroup-move-refused",
    ] {
        assert!(out.contains(want), "{want} missing: {out}");
    }
    assert!(work.join("ok.txt").exists());
    assert!(!home.join("escape.txt").exists());
    let tmp = out
        .lines()
        .find_map(|l| l.strip_prefix("tmpdir="))
        .unwrap()
        .to_string();
    assert!(tmp.contains(r["id"].as_str().unwrap()), "{tmp}");
    assert!(
        !Path::new(&tmp).exists(),
        "the run's TMPDIR {tmp} was not removed"
    );
    eprintln!("landlock run output:\n{out}");
}

/// Installs a seccomp filter in the calling process that makes the three Landlock system
/// calls fail with ENOSYS, as on a kernel without Landlock. Only system calls: for pre_exec.
fn deny_landlock() -> std::io::Result<()> {
    // Classic BPF opcodes (linux/bpf_common.h) and seccomp return values (linux/seccomp.h).
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    // landlock_create_ruleset, _add_rule, _restrict_self are 444-446 on every architecture.
    let filter = [
        ins(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        ins(JEQ_K, 3, 0, 444),
        ins(JEQ_K, 2, 0, 445),
        ins(JEQ_K, 1, 0, 446),
        ins(RET_K, 0, 0, RET_ALLOW),
        ins(RET_K, 0, 0, RET_ERRNO | libc::ENOSYS as u32),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with a pointer to a filter that lives until the call returns.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// On a machine without Landlock, `filesystem: "working_dir"` fails closed: the job gets a
/// warning, every run fails saying why, and the agent never starts.
#[test]
fn without_landlock_working_dir_jobs_warn_and_their_runs_fail_closed() {
    let _g = heavy();
    let t = tempdir();
    let work = t.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let d = Daemon::start_cmd(t.path(), &[], &[], |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: deny_landlock only makes system calls.
        unsafe {
            cmd.pre_exec(deny_landlock);
        }
    });
    let c = containment(&d);
    assert_eq!(c["landlock"], false, "{c}");
    assert!(
        c["landlock_reason"].as_str().unwrap().contains("ENOSYS"),
        "{c}"
    );
    let marker = work.join("agent-ran");
    let mut job = sh_job(
        "closed",
        &format!("touch {}", marker.display()),
        idle_trigger(),
    );
    job["working_dir"] = json!(work.to_str().unwrap());
    job["limits"] = json!({"filesystem": "working_dir"});
    let (st, created) = d.post("/jobs", &job);
    assert_eq!(st, 201, "{created}");
    let w = created["warnings"].to_string();
    assert!(
        w.contains("limits.filesystem") && w.contains("cannot be enforced"),
        "{w}"
    );
    let r = d.wait_final("closed", &manual(&d, "closed"), 30);
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        error_of(&r).contains("cannot enforce it") && error_of(&r).contains("not started"),
        "{r}"
    );
    assert!(!marker.exists(), "the agent ran without its confinement");
    // A job without the field runs as usual.
    let ok = run_once(&d, &sh_job("free", "echo ran", idle_trigger()));
    assert_eq!(ok["status"], "succeeded", "{ok}");
    eprintln!("job warnings: {w}\nrun error: {}", error_of(&r));
}

#[test]
fn job_add_sets_the_filesystem_limit() {
    let _g = heavy();
    let t = tempdir();
    let data = t.path().join("data");
    let work = t.path().to_str().unwrap();
    let args = |mode: &'static str| {
        vec![
            "job",
            "add",
            "--name",
            "fs",
            "--interval",
            "60",
            "--prompt",
            "p",
            "--working-dir",
            work,
            "--filesystem",
            mode,
        ]
    };
    let (code, _, err) = cli(&data, &args("sometimes"));
    assert_eq!(code, 2, "{err}");
    // The error names the flag the value came from.
    assert!(
        err.contains("--filesystem") && err.contains("sometimes"),
        "{err}"
    );
    let (code, out, err) = cli(&data, &args("working_dir"));
    assert_eq!(code, 0, "{out}{err}");
    let (_, shown, _) = cli(&data, &["job", "show", "fs"]);
    assert!(shown.contains("\"filesystem\": \"working_dir\""), "{shown}");
}

#[test]
fn nul_bytes_and_bad_env_names_are_refused_at_creation() {
    let _g = heavy();
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let cases = [
        (json!({"prompt": "a\u{0}b"}), "prompt"),
        (
            json!({"agent": {"command": ["sh", "-c", "echo \u{0}"]}}),
            "agent.command[2]",
        ),
        (json!({"env": {"A": "x\u{0}"}}), "env.A"),
        (
            json!({"agent": {"command": ["sh"], "env_allow": ["bad name"]}}),
            "agent.env_allow[0]",
        ),
        (
            json!({"limits": {"filesystem": "working_dir"}}),
            "limits.filesystem",
        ),
    ];
    for (patch, field) in cases {
        let mut job = sh_job("nul", "true", idle_trigger());
        for (k, v) in patch.as_object().unwrap() {
            job[k] = v.clone();
        }
        let (st, v) = d.post("/jobs", &job);
        assert_eq!(st, 400, "{v}");
        assert_eq!(v["field"], field, "{v}");
    }
}

#[test]
fn a_prompt_too_big_for_argv_fails_clearly_and_prompt_file_hands_it_over() {
    let _g = heavy();
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let big = "x".repeat(200 * 1024);
    let mut job = sh_job("bigarg", "echo started", idle_trigger());
    job["agent"]["command"] = json!(["sh", "-c", "echo started", "sh", "{prompt}"]);
    job["prompt"] = json!(big);
    let r = run_once(&d, &job);
    assert_eq!(r["status"], "failed", "{r}");
    assert!(error_of(&r).contains("prompt_via"), "{r}");
    assert_eq!(r["attempts"], 1);
    assert_eq!(r["output"], "");

    let mut job = sh_job("bigfile", "", idle_trigger());
    job["agent"]["command"] = json!([
        "sh",
        "-c",
        "wc -c < \"$1\"; echo \"$1\"",
        "sh",
        "{prompt_file}"
    ]);
    job["prompt"] = json!(big);
    let r = run_once(&d, &job);
    assert_eq!(r["status"], "succeeded", "{r}");
    let out = r["output"].as_str().unwrap();
    let mut lines = out.lines();
    assert_eq!(lines.next().map(str::trim), Some("204800"), "{out}");
    let path = lines.next().unwrap();
    assert!(
        !Path::new(path).exists(),
        "{path} was not removed after the run"
    );
}

/// A failure that has nothing to do with memory does not blame `memory_mb` (without node:
/// a plain shell that exits 3 under the limit, in every containment mode).
#[test]
fn a_plain_exit_under_memory_mb_does_not_blame_the_limit() {
    for mode in ["auto", "process_group"] {
        let t = tempdir();
        write_config(t.path(), &format!(r#"{{"containment": "{mode}"}}"#));
        let d = Daemon::start(t.path(), &[]);
        let r = run_once(
            &d,
            &json!({
                "name": "exit3", "prompt": "p",
                "agent": {"command": ["sh", "-c", "echo before; exit 3"]},
                "limits": {"memory_mb": 500}, "triggers": idle_trigger()
            }),
        );
        assert_eq!(r["status"], "failed", "{mode}: {r}");
        assert_eq!(r["exit_code"], 3, "{mode}: {r}");
        assert!(error_of(&r).contains("exited with code 3"), "{mode}: {r}");
        assert!(!error_of(&r).contains("memory_mb"), "{mode}: {r}");
    }
}
