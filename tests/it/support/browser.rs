//! Headless Chromium driven through the DevTools protocol, for the dashboard tests: a small
//! Node script (`cdp_bridge.js`, no npm packages) starts Chromium with
//! `--remote-debugging-pipe` and relays protocol messages as JSON lines; this side sends
//! commands, waits for their answers with deadlines, and keeps the events (console errors,
//! exceptions, CSP reports) for the test to check.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// A page in a headless Chromium.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Value>,
    next_id: u64,
    session: String,
    /// Every event received so far (method, params).
    pub events: Vec<(String, Value)>,
}

/// The Chromium binary: `$CHROMIUM`, else `chromium` or `chromium-browser` on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
        .find(|p| p.is_file())
}

impl Browser {
    /// Starts Chromium with a fresh profile under `dir` and opens a blank page; `Err` says
    /// why a browser cannot run on this machine (no Chromium, no Node).
    pub fn start(dir: &Path) -> Result<Browser, String> {
        let chromium = chromium().ok_or("no chromium on PATH (apt-get install chromium)")?;
        if Command::new("node").arg("--version").output().is_err() {
            return Err("no node on PATH (apt-get install nodejs)".into());
        }
        let bridge = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/cdp_bridge.js");
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).map_err(|e| e.to_string())?;
        let mut child = Command::new("node")
            .arg(bridge)
            .arg(&chromium)
            .arg(&profile)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start node: {e}"))?;
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            stdin,
            rx,
            next_id: 0,
            session: String::new(),
            events: Vec::new(),
        };
        let target = b.send("Target.createTarget", json!({"url": "about:blank"}), false)?;
        let target_id = target["targetId"].as_str().unwrap_or_default().to_string();
        let att = b.send(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
            false,
        )?;
        b.session = att["sessionId"].as_str().unwrap_or_default().to_string();
        for m in ["Page.enable", "Runtime.enable", "Log.enable"] {
            b.send(m, json!({}), true)?;
        }
        Ok(b)
    }

    /// Sends a command (to the page's session when `page`) and waits up to 30 s for its
    /// answer; events that arrive meanwhile are kept in `events`.
    fn send(&mut self, method: &str, params: Value, page: bool) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if page {
            msg["sessionId"] = json!(self.session);
        }
        writeln!(self.stdin, "{msg}").map_err(|e| format!("bridge gone: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = match self.rx.recv_timeout(left) {
                Ok(v) => v,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("no answer to {method} within 30s"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("the browser went away during {method}"))
                }
            };
            if v.get("bridge").is_some() {
                return Err(format!("chromium exited: {v}"));
            }
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error") {
                    return Err(format!("{method}: {e}"));
                }
                return Ok(v["result"].clone());
            }
            if let Some(m) = v["method"].as_str() {
                self.events.push((m.to_string(), v["params"].clone()));
            }
        }
    }

    /// A page command that must succeed.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, true)
            .unwrap_or_else(|e| panic!("browser: {e}"))
    }

    /// Loads `url` and waits until the document has loaded.
    pub fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait(30, "the page to load", "document.readyState === 'complete'");
    }

    /// Evaluates a JavaScript expression in the page (awaiting a promise) and returns its
    /// value; an exception fails the test.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("browser: {expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits up to `secs` for `expr` to be truthy in the page; returns its value.
    pub fn wait(&mut self, secs: u64, what: &str, expr: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.eval(&format!(
                "(() => {{ try {{ return ({expr}); }} catch (_) {{ return null; }} }})()"
            ));
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let text = self.eval("document.body ? document.body.innerText.slice(0, 2000) : ''");
                panic!(
                    "timed out after {secs}s waiting for {what} ({expr}); the page says:\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Clicks the element `selector` at its centre with the mouse, as a user would.
    pub fn click(&mut self, selector: &str) {
        let sel = serde_json::to_string(selector).unwrap();
        let at = self.wait(
            10,
            &format!("{selector} to be on screen"),
            &format!("(() => {{ const e = document.querySelector({sel}); if (!e || e.disabled) return null; e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); return r.width ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()"),
        );
        let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
        for t in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": t, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Focuses `selector`, replaces its value by typing `text`, as a keyboard would.
    pub fn type_into(&mut self, selector: &str, text: &str) {
        let sel = serde_json::to_string(selector).unwrap();
        self.wait(
            10,
            &format!("{selector} to take focus"),
            &format!("(() => {{ const e = document.querySelector({sel}); if (!e) return false; e.focus(); e.select && e.select(); return document.activeElement === e; }})()"),
        );
        self.call("Input.insertText", json!({"text": text}));
    }

    /// Presses a key (e.g. "Enter") in the focused element.
    pub fn press(&mut self, key: &str, code: u32) {
        let text = if key == "Enter" { "\r" } else { "" };
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyDown", "key": key, "code": key, "windowsVirtualKeyCode": code, "text": text}),
        );
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyUp", "key": key, "code": key, "windowsVirtualKeyCode": code}),
        );
    }

    /// Sets the window size (and phone emulation when `mobile`).
    pub fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }

    /// Light or dark `prefers-color-scheme`.
    pub fn color_scheme(&mut self, scheme: &str) {
        self.call(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        );
    }

    /// Saves a PNG of the whole page to `path` and prints the path.
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap_or_default())
            .expect("screenshot is base64");
        std::fs::write(path, png).expect("write screenshot");
        println!("screenshot: {}", path.display());
    }

    /// Messages the page logged as errors (console errors, exceptions, CSP violations).
    pub fn errors(&mut self) -> Vec<String> {
        // Drain what arrived since the last command.
        while let Ok(v) = self.rx.try_recv() {
            if let Some(m) = v["method"].as_str() {
                self.events.push((m.to_string(), v["params"].clone()));
            }
        }
        self.events
            .iter()
            .filter_map(|(m, p)| match m.as_str() {
                "Runtime.exceptionThrown" => Some(p["exceptionDetails"].to_string()),
                // (a 401 or 500 answer is logged as a network error: that is the page's
                // business, not a fault of the page)
                "Log.entryAdded"
                    if p["entry"]["level"] == "error" && p["entry"]["source"] != "network" =>
                {
                    Some(p["entry"]["text"].as_str().unwrap_or_default().to_string())
                }
                "Runtime.consoleAPICalled" if p["type"] == "error" => Some(p["args"].to_string()),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.send("Browser.close", json!({}), false);
        // The bridge exits when Chromium has; only if it hangs, end it (Chromium then gets
        // SIGTERM from the bridge's closed stdin handler, or dies with the pipe).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
