//! The Windows build, run under Wine (issue 17): the real `bog-agents-daemon.exe` on a free
//! loopback port with a temp data dir, talking HTTP to these tests as on Linux. Proves the
//! Windows side of `src/sys` as far as Wine implements Windows: job objects (the agent
//! started suspended, assigned, resumed; TerminateJobObject ends a process tree), Ctrl-C
//! (Wine turns SIGINT into the console's Ctrl-C event) and the `stop` command's named event,
//! LockFileEx, renames over files being read, the data dir and token created private (Wine
//! turns their ACL into a Unix mode), kill-on-close when the daemon is killed, the agent's
//! command line quoted the Windows way (and `{prompt}` after `cmd /c` refused), notify's
//! Windows backend, the Task Scheduler XML naming this binary, the intake journal's
//! checkpoint (FlushFileBuffers on each record file, which needs a handle open for writing).
//! README "Platforms" says what Wine cannot prove.
//!
//! Runs only when `BOG_WINE_DAEMON_EXE` names the Windows build (`.ci/run` builds it and
//! sets it); otherwise each test says it was skipped. `BOG_WINE` and `BOG_WINESERVER` name
//! the wine binaries (default `wine`, `wineserver`). The helpers in `tests/wine/` are built here with
//! `x86_64-w64-mingw32-gcc`: two test agents, and `bcryptprimitives.dll`, a shim that
//! Debian's Wine 8 lacks and Rust's std needs (see its source) — test harness only.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::{json, Value};

use crate::common::*;

const EXE_VAR: &str = "BOG_WINE_DAEMON_EXE";

/// A Wine prefix and a directory holding the daemon and the test agents.
struct Wine {
    wine: String,
    /// Holds `prefix/`, `daemon.exe` (a link to the build), the DLL shim and the agents:
    /// `wine/` in cargo's temp dir for tests, made anew by each run (a static is never
    /// dropped, so a temp dir would be left behind).
    root: PathBuf,
}

impl Wine {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.wine);
        c.env("WINEPREFIX", self.root.join("prefix"))
            .env("WINEDEBUG", "-all")
            // No Mono or Gecko installer at the first start; no window anywhere.
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        c
    }

    fn exe(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// The path as the Windows program sees it (Wine maps `Z:` to `/`).
fn winpath(p: &Path) -> String {
    format!("Z:{}", p.display()).replace('/', "\\")
}

fn wine() -> Option<&'static Wine> {
    static WINE: OnceLock<Option<Wine>> = OnceLock::new();
    WINE.get_or_init(|| {
        let Some(exe) = std::env::var_os(EXE_VAR) else {
            eprintln!(
                "skipped: {EXE_VAR} is not set (.ci/run builds the Windows binary, sets it and runs these under Wine)"
            );
            return None;
        };
        let exe = std::fs::canonicalize(&exe)
            .unwrap_or_else(|e| panic!("{EXE_VAR}={exe:?}: {e}"));
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wine");
        if root.exists() {
            std::fs::remove_dir_all(&root).expect("remove the last run's wine dir");
        }
        std::fs::create_dir_all(&root).expect("wine dir");
        std::os::unix::fs::symlink(&exe, root.join("daemon.exe")).expect("link exe");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wine");
        for (out, source, extra) in [
            ("bcryptprimitives.dll", "bcryptprimitives.c", &["-shared", "-ladvapi32"][..]),
            ("argv.exe", "argv.c", &[][..]),
            ("tree.exe", "tree.c", &[][..]),
        ] {
            let st = Command::new("x86_64-w64-mingw32-gcc")
                .arg("-O2")
                .arg("-o")
                .arg(root.join(out))
                .arg(src.join(source))
                .args(extra)
                .status()
                .expect("x86_64-w64-mingw32-gcc (Debian: gcc-mingw-w64-x86-64)");
            assert!(st.success(), "building {out}: {st}");
        }
        let w = Wine {
            wine: std::env::var("BOG_WINE").unwrap_or_else(|_| "wine".into()),
            root,
        };
        // A new prefix: the first start creates it (the slow part, measured here).
        let t = Instant::now();
        let st = w
            .cmd()
            .args(["wineboot", "--init"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", w.wine));
        assert!(st.success(), "wineboot --init: {st}");
        // …and wait until it has finished setting up (services such as the Task Scheduler
        // are not there before).
        let server = std::env::var("BOG_WINESERVER").unwrap_or_else(|_| "wineserver".into());
        let st = Command::new(&server)
            .arg("-w")
            .env("WINEPREFIX", w.root.join("prefix"))
            .status()
            .unwrap_or_else(|e| panic!("cannot run {server}: {e}"));
        assert!(st.success(), "{server} -w: {st}");
        eprintln!("wine prefix created in {:.1} s", t.elapsed().as_secs_f64());
        Some(w)
    })
    .as_ref()
}

/// The daemon under Wine; a failing test prints its log.
struct WineDaemon(Daemon);

impl std::ops::Deref for WineDaemon {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.0
    }
}

impl std::ops::DerefMut for WineDaemon {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.0
    }
}

impl Drop for WineDaemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- the daemon's log (under Wine) ---\n{}", self.0.stderr());
        }
    }
}

/// Starts the Windows daemon under Wine on `dir/data`, port 0, with `env`.
fn start(w: &Wine, dir: &Path, env: &[(&str, &str)]) -> WineDaemon {
    let data = dir.join("data");
    let (out, err) = (dir.join("daemon.out"), dir.join("daemon.err"));
    let mut cmd = w.cmd();
    cmd.arg(w.exe("daemon.exe"))
        .args(["--data-dir", &winpath(&data), "run", "--port", "0"])
        .env("RUST_LOG", "bog_agents_daemon=debug")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn wine");
    WineDaemon(Daemon::attach(child, data, out, err))
}

/// The CLI of the Windows build on `data`: (exit code, stdout, stderr).
fn cli_exe(w: &Wine, data: &Path, args: &[&str]) -> (i32, String, String) {
    output_of(
        w.cmd()
            .arg(w.exe("daemon.exe"))
            .args(["--data-dir", &winpath(data)])
            .args(args),
    )
}

fn job(name: &str, command: Vec<String>, prompt: &str) -> Value {
    json!({
        "name": name,
        "prompt": prompt,
        "agent": {"command": command},
        "triggers": idle_trigger(),
    })
}

/// Runs a job by hand and waits for its record.
fn run_now(d: &Daemon, name: &str) -> Value {
    let (st, v) = d.post(&format!("/jobs/{name}/run"), &json!({}));
    assert_eq!(st, 202, "{v}");
    d.wait_final(name, v["run_id"].as_str().unwrap(), 90)
}

/// Linux processes (Wine's included) whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
            .is_none()
        {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(marker) {
                found.push(c);
            }
        }
    }
    found
}

#[test]
fn health_cmd_echo_one_argument_prompt_and_the_lock() {
    let Some(w) = wine() else { return };
    let t = tempdir();
    let d = start(w, t.path(), &[]);
    let (st, h) = d.get("/health");
    assert_eq!(st, 200, "{h}");
    assert_eq!(h["containment"]["mode"], "job_object", "{h}");
    // The data dir's ACL was built and set without an error (Wine does not keep file ACLs,
    // so what it grants is not checked here).
    assert!(!d.stderr().contains("data_dir.mode"), "{}", d.stderr());
    assert_eq!(d.get("/jobs").0, 200);
    let (st, _) = d.req_with("GET", "/jobs", None, &[("Authorization", "Bearer wrong")]);
    assert_eq!(st, 401);

    // cmd.exe gets the prompt as a file ({prompt} in its arguments is refused: it would
    // parse a payload's `&` as a command separator).
    d.create(&job(
        "echo",
        vec![
            "cmd".into(),
            "/c".into(),
            "type".into(),
            "{prompt_file}".into(),
        ],
        "from-cmd & echo injected",
    ));
    let r = run_now(&d, "echo");
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["output"], "from-cmd & echo injected", "{r}");
    let (st, v) = d.post(
        "/jobs",
        &job(
            "inject",
            vec!["cmd".into(), "/c".into(), "echo".into(), "{prompt}".into()],
            "x\" & echo evil & \"",
        ),
    );
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["field"], "agent.command[3]", "{v}");

    // {prompt} reaches a C program as one argument, spaces, quotes and backslashes intact.
    // With limits: the job's accounting is queried at the run's end (Wine reports zeros).
    let prompt = r#"two words "quoted" C:\dir\ and \\" end"#;
    let mut j = job(
        "argv",
        vec![
            winpath(&w.exe("argv.exe")),
            "{prompt}".into(),
            "last".into(),
        ],
        prompt,
    );
    j["limits"] = json!({"cpu_seconds": 60, "memory_mb": 256});
    d.create(&j);
    let r = run_now(&d, "argv");
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(
        r["output"].as_str().unwrap().replace("\r\n", "\n"),
        format!("[{prompt}]\n[last]\n"),
        "{r}"
    );

    // A second daemon on the same data dir is refused (LockFileEx, and the holder's pid).
    let (code, _, err) = cli_exe(w, &d.dir, &["run", "--port", "0"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already running"), "{err}");
    let (code, out, err) = cli_exe(w, &d.dir, &["status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("running: pid"), "{out}");
}

#[test]
fn install_windows_task_names_this_binary_and_registers() {
    let Some(w) = wine() else { return };
    let t = tempdir();
    let data = t.path().join("data");
    let (code, out, err) = cli_exe(w, &data, &["install-windows-task", "--port", "9999"]);
    assert_eq!(code, 0, "{out}{err}");
    // Wine's schtasks accepts the XML (it keeps less of it than Windows: not proof of the
    // registered task, which README says).
    assert!(out.contains("registered task bog-agents-daemon"), "{out}");
    let bytes = std::fs::read(data.join("bog-agents-daemon-task.xml")).unwrap();
    assert_eq!(&bytes[..2], &[0xFF, 0xFE], "UTF-16LE with a BOM");
    let units: Vec<u16> = bytes[2..]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let xml = String::from_utf16(&units).unwrap();
    let exe = winpath(&w.exe("daemon.exe"));
    assert!(xml.contains(&format!("<Command>{exe}</Command>")), "{xml}");
    assert!(
        xml.contains(&format!(
            "<Arguments>run --port 9999 --data-dir {}</Arguments>",
            winpath(&data)
        )),
        "{xml}"
    );
}

#[test]
fn file_change_fires_through_the_windows_watcher() {
    // notify's Windows backend (ReadDirectoryChangesW; Wine serves it from inotify).
    let Some(w) = wine() else { return };
    let t = tempdir();
    let root = t.path().join("watched");
    std::fs::create_dir(&root).unwrap();
    let d = start(w, t.path(), &[]);
    d.create(&json!({
        "name": "files",
        "prompt": "{{changed_files}}",
        "agent": {"command": [winpath(&w.exe("argv.exe")), "{prompt}"]},
        "triggers": [{"type": "file_change", "root": winpath(&root), "patterns": ["*.txt"], "debounce_seconds": 0.2}],
    }));
    let want = format!("watching {}", winpath(&root));
    wait_for(60, "the root to be watched", || {
        d.stderr().contains(&want).then_some(())
    });
    std::fs::write(root.join("skip.log"), "no").unwrap();
    std::fs::write(root.join("a.txt"), "yes").unwrap();
    let finished = |name: &'static str| {
        move |r: &Value| {
            !matches!(r["status"].as_str(), Some("queued" | "running"))
                && r["trigger"]["changed_files"] == json!([name])
        }
    };
    let r = d.wait_run("files", 60, "a file_change run", finished("a.txt"));
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["trigger"]["type"], "file_change", "{r}");
    // The root removed and made again (a new directory: sys::dir_identity tells them
    // apart) is watched again.
    std::fs::remove_dir_all(&root).unwrap();
    wait_for(60, "the root to be logged gone", || {
        d.stderr().contains("files.root_gone").then_some(())
    });
    std::fs::create_dir(&root).unwrap();
    wait_for(60, "the new root to be watched", || {
        (d.stderr().matches(&want).count() >= 2).then_some(())
    });
    std::fs::write(root.join("b.txt"), "yes").unwrap();
    let r = d.wait_run(
        "files",
        60,
        "a file_change run in the new root",
        finished("b.txt"),
    );
    assert_eq!(r["status"], "succeeded", "{r}");
}

#[test]
fn records_are_replaced_while_clients_read_them() {
    // Windows refuses to replace a file someone has open; a client listing runs opens each
    // record. Every record write must still land (sys::rename_durable waits for readers).
    let Some(w) = wine() else { return };
    let t = tempdir();
    let d = start(w, t.path(), &[]);
    d.create(&job(
        "busy",
        vec![winpath(&w.exe("argv.exe")), "{prompt}".into()],
        "x",
    ));
    let runs = 15;
    let reading = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|s| {
        s.spawn(|| {
            while reading.load(std::sync::atomic::Ordering::Relaxed) {
                assert_eq!(d.get("/jobs/busy/runs?limit=1000").0, 200);
            }
        });
        let ids: Vec<String> = (0..runs)
            .map(|_| {
                let (st, v) = d.post("/jobs/busy/run", &json!({}));
                assert_eq!(st, 202, "{v}");
                v["run_id"].as_str().unwrap().to_string()
            })
            .collect();
        for id in &ids {
            let r = d.wait_final("busy", id, 120);
            assert_eq!(r["status"], "succeeded", "{r}");
        }
        reading.store(false, std::sync::atomic::Ordering::Relaxed);
    });
    let log = d.stderr();
    assert!(!log.contains("store.error"), "{log}");
}

#[test]
fn timeout_ends_the_agents_whole_process_tree() {
    let Some(w) = wine() else { return };
    let t = tempdir();
    let d = start(w, t.path(), &[]);
    let marker = format!("bogtree{}x{}", std::process::id(), ids());
    let mut j = job(
        "tree",
        vec![winpath(&w.exe("tree.exe")), "spawn".into(), marker.clone()],
        "p",
    );
    j["limits"] = json!({"timeout_seconds": 3});
    d.create(&j);
    let r = run_now(&d, "tree");
    assert_eq!(r["status"], "timed_out", "{r}");
    // The agent had started its child (which sleeps for minutes) before the timeout.
    assert!(
        r["output"].as_str().unwrap().contains("started child"),
        "{r}"
    );
    // Neither the agent nor its child outlives the run: the job object ended both.
    wait_for(30, "no process of the run left", || {
        processes_with(&marker).is_empty().then_some(())
    });
}

#[test]
fn webhook_with_a_valid_signature_fires() {
    let Some(w) = wine() else { return };
    let t = tempdir();
    let secret = "wine-hook-secret";
    let d = start(w, t.path(), &[("WIN_HOOK_SECRET", secret)]);
    d.create(&json!({
        "name": "hook",
        "prompt": "pr={{payload.pull_request.number}}",
        "agent": {"command": [winpath(&w.exe("argv.exe")), "{prompt}"]},
        "triggers": [{"type": "webhook", "path": "/hooks/win", "secret_env": "WIN_HOOK_SECRET"}],
    }));
    let body = br#"{"pull_request": {"number": 7}}"#;
    let bad = github_signature("not-the-secret", body);
    let (st, _, _) = d.raw(
        "POST",
        "/hooks/win",
        Some(body),
        &[
            ("X-Hub-Signature-256", &bad),
            ("X-GitHub-Event", "pull_request"),
        ],
    );
    assert!((400..500).contains(&st), "a bad signature got {st}");
    let good = github_signature(secret, body);
    let (st, _, text) = d.raw(
        "POST",
        "/hooks/win",
        Some(body),
        &[
            ("X-Hub-Signature-256", &good),
            ("X-GitHub-Event", "pull_request"),
            ("X-GitHub-Delivery", "wine-1"),
            ("Content-Type", "application/json"),
        ],
    );
    assert_eq!(st, 202, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let r = d.wait_final("hook", v["run_ids"][0].as_str().unwrap(), 90);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["output"], "[pr=7]\r\n", "{r}");
    let runs = d.get("/jobs/hook/runs").1;
    assert_eq!(
        runs.as_array().unwrap().len(),
        1,
        "only the signed delivery ran: {runs}"
    );
}

/// Starts a run that takes a few seconds, waits until it runs, and returns its id.
fn start_slow_run(w: &Wine, d: &WineDaemon) -> String {
    d.create(&job(
        "slow",
        vec![winpath(&w.exe("tree.exe")), "sleep".into(), "3000".into()],
        "p",
    ));
    let (st, v) = d.post("/jobs/slow/run", &json!({}));
    assert_eq!(st, 202, "{v}");
    let id = v["run_id"].as_str().unwrap().to_string();
    d.wait_run("slow", 60, "the slow run to start", |r| {
        r["id"] == id.as_str() && r["status"] == "running"
    });
    id
}

/// Starts a slow run, asks the daemon to stop with `stop`, then checks the drain: the
/// daemon exited 0, said why (`said`), and the run finished and was recorded.
fn drains_and_exits(said: &str, stop: impl FnOnce(&Wine, &WineDaemon)) {
    let Some(w) = wine() else { return };
    let t = tempdir();
    let mut d = start(w, t.path(), &[]);
    let id = start_slow_run(w, &d);
    stop(w, &d);
    let st = d.wait_exit(60);
    assert!(st.success(), "daemon exit: {st}: {}", d.stderr());
    let log = d.stderr();
    assert!(log.contains(&format!("{said}: no new runs")), "{log}");
    assert!(log.contains("stopped"), "{log}");
    let job_dir = std::fs::read_dir(d.dir.join("runs"))
        .unwrap()
        .flatten()
        .next()
        .expect("the job's runs dir")
        .path();
    let r: Value =
        serde_json::from_slice(&std::fs::read(job_dir.join(format!("{id}.json"))).unwrap())
            .unwrap();
    assert_eq!(r["status"], "succeeded", "the run was let finish: {r}");
    assert_eq!(r["output"], "slept\r\n", "{r}");
}

#[test]
fn stop_command_drains_and_exits() {
    drains_and_exits("stop request", |w, d| {
        let (code, out, err) = cli_exe(w, &d.dir, &["stop"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("stopped"), "{out}");
    });
}

#[test]
fn ctrl_c_drains_and_exits() {
    // Wine delivers SIGINT to a console program as the console's Ctrl-C event.
    drains_and_exits("Ctrl-C", |_, d| d.signal(libc::SIGINT));
}

/// A number that differs between calls.
fn ids() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn the_token_and_data_dir_are_private_from_creation() {
    // `token` makes the data dir and `.token` (as `install-windows-task` and `run` do).
    // Wine keeps no Windows ACL on this file system: it turns the ACL a file is created with
    // into its Unix mode. Before the daemon gave them its own ACL at creation they took the
    // parent's (under Wine: mode 0644, readable by everyone).
    use std::os::unix::fs::PermissionsExt;
    let Some(w) = wine() else { return };
    let t = tempdir();
    let data = t.path().join("nested").join("data");
    let (code, out, err) = cli_exe(w, &data, &["token"]);
    assert_eq!(code, 0, "{out}{err}");
    for p in [data.clone(), data.join(".token")] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "{}: mode {mode:o}", p.display());
    }
    // A file the daemon creates with no such mode (the task XML, 0644) is not made private.
    let (code, out, err) = cli_exe(w, &data, &["install-windows-task", "--port", "9998"]);
    assert_eq!(code, 0, "{out}{err}");
    let mode = std::fs::metadata(data.join("bog-agents-daemon-task.xml"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o004, 0, "mode {mode:o}");
}

#[test]
fn killing_the_daemon_ends_its_runs_processes() {
    // Kill-on-close: the daemon dies without a word (SIGKILL of its Wine process), its
    // handles close, and the job object takes the agent and the child it started with it.
    let Some(w) = wine() else { return };
    let t = tempdir();
    let mut d = start(w, t.path(), &[]);
    let marker = format!("bogkoc{}x{}", std::process::id(), ids());
    d.create(&job(
        "orphans",
        vec![winpath(&w.exe("tree.exe")), "spawn".into(), marker.clone()],
        "p",
    ));
    let (st, v) = d.post("/jobs/orphans/run", &json!({}));
    assert_eq!(st, 202, "{v}");
    wait_for(60, "the agent and its child to run", || {
        (processes_with(&marker).len() >= 2).then_some(())
    });
    d.kill9();
    wait_for(30, "no process of the run left", || {
        processes_with(&marker).is_empty().then_some(())
    });
}

/// The intake journal's checkpoint flushes the record files it wrote file by file (Windows
/// has no `syncfs`). It once opened them read-only, which FlushFileBuffers refuses ("access
/// denied"): no checkpoint ever completed, so the journal filled up and every firing after
/// that was written the slow way, and a replay after a crash could not flush the files it
/// kept, so the daemon did not start.
#[test]
fn the_intake_journal_checkpoints() {
    let Some(w) = wine() else { return };
    let t = tempdir();
    let d = start(w, t.path(), &[]);
    d.create(&job(
        "journaled",
        vec![winpath(&w.exe("argv.exe")), "{prompt}".into()],
        "x",
    ));
    let r = run_now(&d, "journaled");
    assert_eq!(r["status"], "succeeded", "{r}");
    wait_for(60, "a journal checkpoint", || {
        let (st, m) = d.get("/metrics");
        (st == 200 && m["journal_checkpoints_total"].as_u64()? >= 1).then_some(())
    });
    let log = d.stderr();
    assert!(!log.contains("journal checkpoint failed"), "{log}");
}
