//! Test harness: spawns the real daemon binary on a free loopback port with a temp data
//! dir, talks to it over HTTP, and waits on conditions with deadlines (never fixed sleeps).
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Taken by the tests that load the machine on purpose (hostile clients, the load and crash
/// loops, resource hogs), so that they never run at the same time as one another.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_bog-agents-daemon");

/// Waits until `f` returns Some, or panics after `secs` with `what`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut delay = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for {what}");
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// A running daemon under test.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub port: u16,
    pub token: String,
    pub stderr_path: PathBuf,
    pub stdout_path: PathBuf,
    agent: ureq::Agent,
}

/// A temp directory that lives as long as the test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bogtest")
        .tempdir()
        .expect("temp dir")
}

/// Writes `config.json` (`json`) into the data dir a daemon started on `root` uses.
pub fn write_config(root: &Path, json: &str) {
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("config.json"), json).unwrap();
}

/// Waits (at most 20 s) until the agent has written its pid to `pidfile`; `what` names it
/// in the panic.
pub fn wait_pid_file(pidfile: &Path, what: &str) -> i32 {
    wait_for(20, what, || {
        std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
    })
}

/// A shell script that waits until `flag` exists: a run held as long as a test wants.
pub fn hold_until(flag: &Path) -> String {
    format!("while [ ! -e {} ]; do sleep 0.05; done", flag.display())
}

impl Daemon {
    /// Starts a daemon on `dir` with extra args; waits until /health answers.
    pub fn start(dir: &Path, extra: &[&str]) -> Daemon {
        Self::start_env(dir, extra, &[])
    }

    /// Like `start`, with extra environment variables.
    pub fn start_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        Self::start_cmd(dir, extra, env, |_| {})
    }

    /// Like `start_env`, with a last change to the command (resource limits, say).
    pub fn start_cmd(
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        tweak: impl FnOnce(&mut Command),
    ) -> Daemon {
        let data = dir.join("data");
        let n = std::fs::read_dir(dir).map(|r| r.count()).unwrap_or(0);
        let stderr_path = dir.join(format!("daemon-{n}.err"));
        let stdout_path = dir.join(format!("daemon-{n}.out"));
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("--data-dir")
            .arg(&data)
            .args(["--port", "0"])
            .args(extra)
            .env("RUST_LOG", "bog_agents_daemon=debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        tweak(&mut cmd);
        let child = cmd.spawn().expect("spawn daemon");
        let pid = child.id();
        Self::attach_to(child, data, stdout_path, stderr_path, Some(pid), 20)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// A daemon started some other way (under Wine: `tests/it/windows.rs`): waits until
    /// `data/daemon.lock` names a port (whatever pid: Wine's are not Linux's) and /health
    /// answers. The daemon's stdout and stderr are in the given files.
    pub fn attach(
        child: Child,
        data: PathBuf,
        stdout_path: PathBuf,
        stderr_path: PathBuf,
    ) -> Daemon {
        Self::attach_to(child, data, stdout_path, stderr_path, None, 60)
    }

    /// Waits until `data/daemon.lock` names `pid` (any, when None) and a port, and /health
    /// answers, each for at most `secs`.
    fn attach_to(
        mut child: Child,
        data: PathBuf,
        stdout_path: PathBuf,
        stderr_path: PathBuf,
        pid: Option<u32>,
        secs: u64,
    ) -> Daemon {
        let port = wait_for(secs, "daemon.lock with this pid and a port", || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "daemon exited early with {st}: {}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
            let s = std::fs::read_to_string(data.join("daemon.lock")).ok()?;
            let v: Value = serde_json::from_str(&s).ok()?;
            if pid.is_some_and(|p| v["pid"].as_u64() != Some(p as u64)) {
                return None;
            }
            v["port"].as_u64().map(|p| p as u16)
        });
        let token = std::fs::read_to_string(data.join(".token"))
            .expect("token file")
            .trim()
            .to_string();
        let d = Daemon {
            child: Some(child),
            dir: data,
            port,
            token,
            stderr_path,
            stdout_path,
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
        };
        wait_for(secs, "GET /health 200", || {
            (d.get("/health").0 == 200).then_some(())
        });
        d
    }

    /// A request with the daemon's token; returns status and JSON body (Null if empty).
    pub fn req(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let auth = format!("Bearer {}", self.token);
        self.req_with(method, path, body, &[("Authorization", auth.as_str())])
    }

    /// A request with exactly the given headers.
    pub fn req_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let (st, _, text) = self.raw(method, path, body.map(str::as_bytes), headers);
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (st, v)
    }

    /// A raw request: status, headers (lower-case names), body text.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<(String, String)>, String) {
        let mut r = self
            .agent
            .request(method, &format!("http://127.0.0.1:{}{path}", self.port));
        for (k, v) in headers {
            r = r.set(k, v);
        }
        let res = match body {
            Some(b) => r.send_bytes(b),
            None => r.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let st = resp.status();
        let hs = resp
            .headers_names()
            .into_iter()
            .map(|n| {
                let v = resp.header(&n).unwrap_or("").to_string();
                (n.to_ascii_lowercase(), v)
            })
            .collect();
        let mut text = String::new();
        let _ = resp.into_reader().read_to_string(&mut text);
        (st, hs, text)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.req("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.req("POST", path, Some(&body.to_string()))
    }

    /// Creates a job, asserting 201; returns it.
    pub fn create(&self, body: &Value) -> Value {
        let (st, v) = self.post("/jobs", body);
        assert_eq!(st, 201, "create failed: {v}");
        v
    }

    /// Waits until the job has a run matching `pred`; returns it.
    pub fn wait_run(
        &self,
        job: &str,
        secs: u64,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(secs, what, || {
            let (st, runs) = self.get(&format!("/jobs/{job}/runs?limit=1000"));
            if st != 200 {
                return None;
            }
            runs.as_array()?.iter().find(|r| pred(r)).cloned()
        })
    }

    /// Waits for a run id to reach a final status; returns the record.
    pub fn wait_final(&self, job: &str, run_id: &str, secs: u64) -> Value {
        wait_for(secs, &format!("run {run_id} to finish"), || {
            let (st, r) = self.get(&format!("/jobs/{job}/runs/{run_id}"));
            (st == 200 && !matches!(r["status"].as_str(), Some("queued") | Some("running")))
                .then_some(r)
        })
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// SIGKILLs the daemon and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the daemon to exit (after a signal); returns its status.
    pub fn wait_exit(&mut self, secs: u64) -> ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        wait_for(secs, "daemon to exit", || c.try_wait().ok().flatten())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the CLI with `--data-dir`; returns (exit code, stdout, stderr).
pub fn cli(data: &Path, args: &[&str]) -> (i32, String, String) {
    output_of(Command::new(BIN).arg("--data-dir").arg(data).args(args))
}

/// Runs a command to its end: (exit code, stdout, stderr).
pub fn output_of(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run command");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A numeric field of `/proc/<pid>/status`, e.g. `VmRSS:` (KiB) or `Threads:`.
pub fn proc_status(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// GitHub's `X-Hub-Signature-256` value for `body` signed with `secret`.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(body);
    let hex: String = m
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// A job body whose agent is `sh -c script`.
pub fn sh_job(name: &str, script: &str, triggers: Value) -> Value {
    serde_json::json!({
        "name": name,
        "prompt": "test prompt for {{job_name}}",
        "agent": {"command": ["sh", "-c", script]},
        "triggers": triggers,
    })
}

/// A trigger that effectively never fires during a test (manual runs only).
pub fn idle_trigger() -> Value {
    serde_json::json!([{"type": "cron", "cron": "0 0 1 1 *"}])
}
