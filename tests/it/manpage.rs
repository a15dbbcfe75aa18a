//! The man page documents every subcommand and every long flag that `--help` lists, and
//! groff renders it without warnings.

use crate::common::*;
use std::collections::BTreeSet;
use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?} --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Subcommand names listed under "Commands:" in a help text.
fn subcommands(h: &str) -> Vec<String> {
    let mut in_cmds = false;
    let mut v = Vec::new();
    for line in h.lines() {
        if line.starts_with("Commands:") {
            in_cmds = true;
            continue;
        }
        if in_cmds {
            if !line.starts_with("  ") {
                break;
            }
            if let Some(name) = line.split_whitespace().next() {
                if name != "help" {
                    v.push(name.to_string());
                }
            }
        }
    }
    v
}

fn long_flags(h: &str) -> BTreeSet<String> {
    h.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(String::from)
        .filter(|f| f != "--help" && f != "--version")
        .collect()
}

#[test]
fn every_subcommand_and_flag_is_in_the_man_page() {
    let man = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/man/bog-agents-daemon.1"
    ))
    .unwrap();
    let plain = man
        .replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fR", "")
        .replace("\\fI", "");
    let mut missing = Vec::new();
    let mut stack: Vec<Vec<String>> = vec![vec![]];
    let mut seen = 0;
    while let Some(path) = stack.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let h = help(&args);
        seen += 1;
        if let Some(last) = path.last() {
            let full = path.join(" ");
            if !plain.contains(&full) && !plain.contains(last.as_str()) {
                missing.push(format!("subcommand `{full}`"));
            }
        }
        for f in long_flags(&h) {
            if !plain.contains(&f) {
                missing.push(format!("flag {f} (of `{}`)", path.join(" ")));
            }
        }
        for s in subcommands(&h) {
            let mut p = path.clone();
            p.push(s);
            stack.push(p);
        }
    }
    assert!(seen > 20, "only {seen} help texts found");
    assert!(
        missing.is_empty(),
        "not in man/bog-agents-daemon.1: {missing:#?}"
    );
}

#[test]
fn groff_renders_without_warnings() {
    let out = Command::new("groff")
        .args(["-man", "-ww", "-z"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/man/bog-agents-daemon.1"
        ))
        .output()
        .expect("groff (package groff-base; .ci/run installs it)");
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
