//! The README's tour, run as written against the real binary: every command block runs in
//! one shell (with the daemon the tour assumes running on a temp data dir), and the sample
//! output after each block must match what the binary printed, up to ids, times and
//! durations.

use crate::common::*;

use std::process::{Command, Stdio};

/// A fenced block: its info string and text.
struct Block {
    info: String,
    text: String,
}

fn tour_blocks() -> Vec<Block> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("\n## 30-second tour")
        .expect("README has a \"30-second tour\" section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    let mut blocks = Vec::new();
    let mut lines = rest[..end].lines();
    while let Some(l) = lines.next() {
        if let Some(info) = l.strip_prefix("```") {
            let mut text = String::new();
            for l in lines.by_ref() {
                if l.starts_with("```") {
                    break;
                }
                text.push_str(l);
                text.push('\n');
            }
            blocks.push(Block {
                info: info.trim().to_string(),
                text,
            });
        }
    }
    blocks
}

fn take_while_pred(s: &str, f: impl Fn(char) -> bool) -> usize {
    s.char_indices()
        .find(|(_, c)| !f(*c))
        .map_or(s.len(), |(i, _)| i)
}

/// Length of a timestamp at the start of `s` (`2026-11-24T08:42:32.923Z`,
/// `2026-11-24 08:42:32`, `2026-11-24T09:00:00+01:00`), or 0.
fn timestamp_len(s: &str) -> usize {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    if !(digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10))
    {
        return 0;
    }
    if !(matches!(b.get(10), Some(b'T' | b' '))
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && b.get(16) == Some(&b':')
        && digits(17..19))
    {
        return 0;
    }
    let mut n = 19;
    if b.get(n) == Some(&b'.') {
        n += 1 + take_while_pred(&s[n + 1..], |c| c.is_ascii_digit());
    }
    if b.get(n) == Some(&b'Z') {
        n += 1;
    } else if matches!(b.get(n), Some(b'+' | b'-'))
        && digits(n + 1..n + 3)
        && b.get(n + 3) == Some(&b':')
    {
        n += 6;
    }
    n
}

/// Replaces what differs from run to run: ids, times, relative times, pids, durations.
fn normalize(text: &str) -> Vec<String> {
    let mut out = String::new();
    let mut s = text;
    while let Some(c) = s.chars().next() {
        let t = timestamp_len(s);
        if t > 0 {
            out.push_str("TIME");
            s = &s[t..];
            // A duration in milliseconds right after a time (the MS column).
            let ws = take_while_pred(s, |c| c == ' ');
            let d = take_while_pred(&s[ws..], |c| c.is_ascii_digit());
            if ws > 0 && d > 0 && s[ws + d..].starts_with(' ') {
                out.push_str(" MS");
                s = &s[ws + d..];
            }
            continue;
        }
        let mut replaced = false;
        for (prefix, with) in [("job_", "job_ID"), ("run_", "run_ID")] {
            if let Some(r) = s.strip_prefix(prefix) {
                let h = take_while_pred(r, |c| c.is_ascii_hexdigit());
                if h >= 8 {
                    out.push_str(with);
                    s = &r[h..];
                    replaced = true;
                    break;
                }
            }
        }
        for key in ["\"pid\":", "\"uptime_seconds\":"] {
            if !replaced {
                if let Some(r) = s.strip_prefix(key) {
                    let d = take_while_pred(r, |c| c.is_ascii_digit());
                    out.push_str(key);
                    out.push('N');
                    s = &r[d..];
                    replaced = true;
                }
            }
        }
        // How this machine contains agents (cgroup v1 or v2, Landlock or not) is its own.
        if !replaced {
            if let Some(r) = s.strip_prefix("\"containment\":{") {
                if let Some(e) = r.find('}') {
                    out.push_str("\"containment\":{C}");
                    s = &r[e + 1..];
                    continue;
                }
            }
        }
        if !replaced {
            if let Some(r) = s.strip_prefix("(in ") {
                if let Some(e) = r.find(')') {
                    out.push_str("(in REL)");
                    s = &r[e + 1..];
                    continue;
                }
            }
        }
        // A duration: `2 ms`, `1.5 s`.
        if !replaced && c.is_ascii_digit() && !out.ends_with(|p: char| p.is_ascii_alphanumeric()) {
            let d = take_while_pred(s, |c| c.is_ascii_digit() || c == '.');
            for unit in [" ms", " s"] {
                if s[d..].starts_with(unit)
                    && !s[d + unit.len()..].starts_with(|c: char| c.is_ascii_alphanumeric())
                {
                    out.push('D');
                    out.push_str(unit);
                    s = &s[d + unit.len()..];
                    replaced = true;
                    break;
                }
            }
        }
        if !replaced {
            out.push(c);
            s = &s[c.len_utf8()..];
        }
    }
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

/// Every expected line appears in `got`, in order; every line of `got` is one of the
/// expected lines (a line may repeat: an interval job's runs keep coming).
fn assert_matches(what: &str, expected: &str, got: &str) {
    let want = normalize(expected);
    let have = normalize(got);
    let mut i = 0;
    for h in &have {
        if i < want.len() && *h == want[i] {
            i += 1;
        } else if !want[..i].contains(h) {
            panic!(
                "{what}: the binary printed a line the README does not show:\n  {h}\nREADME (normalized):\n  {}\nbinary (normalized):\n  {}",
                want.join("\n  "),
                have.join("\n  ")
            );
        }
    }
    assert!(
        i == want.len(),
        "{what}: the README shows lines the binary did not print, from:\n  {}\nbinary (normalized):\n  {}",
        want[i..].join("\n  "),
        have.join("\n  ")
    );
}

#[test]
fn normalize_replaces_what_changes_between_runs() {
    assert_eq!(
        normalize("run_01a20cb8984700010b27e4  succeeded    manual    2026-11-24 08:42:33           2 0\n"),
        ["run_ID succeeded manual TIME MS 0"]
    );
    assert_eq!(
        normalize("added job hello (job_402d0092a5a8)\nnext run: 2026-11-24 08:42:37 (in 5s)"),
        ["added job hello (job_ID)", "next run: TIME (in REL)"]
    );
    assert_eq!(
        normalize(r#"{"jobs":0,"pid":11233,"uptime_seconds":12,"at":"2026-11-24T08:42:32.923Z"}"#),
        [r#"{"jobs":0,"pid":N,"uptime_seconds":N,"at":"TIME"}"#]
    );
    assert_eq!(
        normalize(r#"{"containment":{"landlock":false,"mode":"process_group"},"jobs":0}"#),
        [r#"{"containment":{C},"jobs":0}"#]
    );
    assert_eq!(
        normalize("run x: succeeded, exit code 0, 12 ms, 1.5 s, 5s"),
        ["run x: succeeded, exit code 0, D ms, D s, 5s"]
    );
}

#[test]
fn the_tour_prints_what_the_readme_shows() {
    let blocks = tour_blocks();
    assert!(blocks.len() >= 8, "the tour has {} blocks", blocks.len());
    let t = tempdir();
    let home = t.path().join("home");
    let data = home.join("daemon");
    std::fs::create_dir_all(&data).unwrap();
    let bin_dir = std::path::Path::new(BIN).parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let report = t.path().join("disk-report.log");
    // The daemon of the tour's first terminal, on a free port.
    let out_path = t.path().join("daemon.out");
    let mut daemon = Command::new(BIN)
        .args(["run", "--port", "0"])
        .env("BOG_AGENTS_HOME", &home)
        .env("HOME", &home)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(t.path().join("daemon.err")).unwrap())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = daemon.id();
    let port = wait_for(20, "the tour's daemon to listen", || {
        if let Ok(Some(st)) = daemon.try_wait() {
            panic!("daemon exited: {st}");
        }
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(data.join("daemon.lock")).ok()?).ok()?;
        (v["pid"].as_u64()? == pid as u64).then(|| v["port"].as_u64())?
    });
    let _daemon = Kill(daemon);

    let mut script_blocks = 0;
    let mut i = 0;
    while i < blocks.len() {
        let b = &blocks[i];
        if b.info != "sh" {
            i += 1;
            continue;
        }
        script_blocks += 1;
        let script = b
            .text
            .replace("127.0.0.1:7878", &format!("127.0.0.1:{port}"))
            .replace("/tmp/disk-report.log", report.to_str().unwrap())
            // The tour gives the run a second; the test waits for the file instead.
            .replace(
                "sleep 1; ",
                &format!(
                    "for i in $(seq 200); do [ -s {r} ] && break; sleep 0.05; done; ",
                    r = report.display()
                ),
            );
        // Blocks share the shell's variables (TOKEN): each runs after the ones before.
        let prelude: String = blocks[..i]
            .iter()
            .filter(|b| b.info == "sh" && b.text.contains("TOKEN="))
            .map(|b| {
                b.text
                    .lines()
                    .filter(|l| l.starts_with("export ") || l.starts_with("TOKEN="))
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
            })
            .collect();
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("set -e\n{prelude}exec 2>&1\n{script}"))
            .current_dir(t.path())
            .env("BOG_AGENTS_HOME", &home)
            .env("HOME", &home)
            .env("PATH", &path)
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "block {script_blocks} failed:\n{}\n{got}",
            b.text
        );
        // The sample outputs after the block, up to the next command block. A block that
        // shows the daemon's own stdout (its first terminal) is matched against that.
        let mut j = i + 1;
        let mut expected = String::new();
        while j < blocks.len() && blocks[j].info != "sh" {
            let e = &blocks[j];
            if e.text.starts_with("=== hello run") {
                let shown = wait_for(30, "an interval run on the daemon's stdout", || {
                    let s = std::fs::read_to_string(&out_path).ok()?;
                    let n = e.text.lines().count();
                    (s.lines().count() >= n)
                        .then(|| s.lines().take(n).collect::<Vec<_>>().join("\n"))
                });
                assert_matches("the daemon's stdout", &e.text, &shown);
            } else if e.text.starts_with("=== disk-report run") {
                let file = std::fs::read_to_string(&report).unwrap();
                // df's numbers are this machine's: compare the header lines only.
                let keep = |s: &str| {
                    s.lines()
                        .filter(|l| !l.starts_with('/'))
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                assert_matches("the report file", &keep(&e.text), &keep(&file));
            } else {
                expected.push_str(&e.text);
            }
            j += 1;
        }
        if !expected.is_empty() {
            assert_matches(&format!("tour block {script_blocks}"), &expected, &got);
        }
        i = j;
    }
    assert!(script_blocks >= 4, "only {script_blocks} command blocks");
}
