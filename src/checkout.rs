//! Fresh checkouts (README "Fresh checkout per run"): a `git_push` trigger with
//! `checkout: true` runs its agent in a new detached `git worktree` of the repository at the
//! pushed commit (`after`), not in a working copy that people or other runs edit.
//!
//! - Where: `<data dir>/checkouts/<run-id>`, one per run, so concurrent runs never share
//!   one. The agent's working dir is the checkout (and with `limits.filesystem:
//!   "working_dir"` the only place it may write); `BOG_CHECKOUT` and `BOG_COMMIT` say where
//!   and what.
//! - Which commit: the trigger context's `after`; for a manual run (or `job test`) the
//!   current head of the trigger's branch: the branch the repository's `HEAD` names when the
//!   glob matches it, else the first matching branch by name.
//! - How: `git --git-dir <common dir> worktree add --detach` (works for bare repositories and
//!   for a linked worktree, whose refs live in the main repository), with hooks off. After the
//!   run: `git worktree remove --force` and `git worktree prune`, unless the run failed and
//!   the trigger says `keep_checkout_on_failure` (the run record's `checkout.kept` says so).
//! - A crash mid-run: at start the daemon removes every checkout that is not kept
//!   ([`remove_leftovers`]: an interrupted run's, a `job test --exec` agent's, a half-made
//!   one); kept ones (marked `checkouts/<run-id>.kept`) stay until removed by hand.
//! - git runs with a deadline ([`GIT_TIMEOUT`]) in its own process group, killed whole when
//!   the deadline passes or (making a checkout) when the daemon stops; it never prompts
//!   (`GIT_TERMINAL_PROMPT=0`, stdin closed).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use serde_json::{json, Value};

use crate::job::{Job, Trigger};
use crate::triggers::git;

/// A checkout a run will get.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The repository as the trigger names it.
    pub repo: PathBuf,
    /// The directory holding its objects and refs (`--git-dir`).
    pub git_dir: PathBuf,
    pub commit: String,
    /// `<data dir>/checkouts/<run-id>`.
    pub path: PathBuf,
    pub keep_on_failure: bool,
}

/// Why a checkout cannot be planned, made or removed.
#[derive(Debug)]
pub enum Error {
    NotARepo(PathBuf),
    NoCommit { repo: PathBuf, why: String },
    Git { what: String, detail: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotARepo(r) => write!(
                f,
                "checkout: {} is not a git repository (the git_push trigger's repo)",
                r.display()
            ),
            Error::NoCommit { repo, why } => {
                write!(
                    f,
                    "checkout: no commit to check out in {}: {why}",
                    repo.display()
                )
            }
            Error::Git { what, detail } => write!(f, "checkout: {what} failed: {detail}"),
        }
    }
}

impl std::error::Error for Error {}

/// The checkout a run of `job` fired with `trigger` gets: for a git_push firing, from the
/// trigger of that repository when it sets `checkout`; for a manual one, from the job's
/// first git_push trigger that does. None when the run gets no checkout.
pub fn plan(
    job: &Job,
    trigger: &Value,
    data_dir: &Path,
    run_id: &str,
) -> Option<Result<Plan, Error>> {
    let kind = trigger.get("type").and_then(Value::as_str).unwrap_or("");
    let wanted = |t: &&Trigger| matches!(t, Trigger::GitPush { checkout: true, .. });
    let (repo, branch, keep) = match kind {
        "git_push" => job.triggers.iter().filter(wanted).find_map(|t| match t {
            Trigger::GitPush {
                repo,
                branch,
                keep_checkout_on_failure,
                ..
            } if trigger["repo"] == repo.as_str() => {
                Some((repo, branch, *keep_checkout_on_failure))
            }
            _ => None,
        })?,
        "manual" => job.triggers.iter().filter(wanted).find_map(|t| match t {
            Trigger::GitPush {
                repo,
                branch,
                keep_checkout_on_failure,
                ..
            } => Some((repo, branch, *keep_checkout_on_failure)),
            _ => None,
        })?,
        _ => return None,
    };
    let repo = PathBuf::from(repo);
    Some((|| {
        let gd = git::git_dir(&repo).ok_or_else(|| Error::NotARepo(repo.clone()))?;
        let common = git::common_dir(&gd);
        let commit = match trigger["after"].as_str() {
            Some(a) if kind == "git_push" => a.to_string(),
            _ => {
                git::current_branch(&repo, branch)
                    .ok_or_else(|| Error::NoCommit {
                        repo: repo.clone(),
                        why: format!("no branch matches {branch:?}"),
                    })?
                    .1
            }
        };
        Ok(Plan {
            git_dir: common,
            commit,
            path: data_dir.join("checkouts").join(run_id),
            keep_on_failure: keep,
            repo: repo.clone(),
        })
    })())
}

/// Longest a git command of a checkout may take before its process group is killed.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a waiting git command is checked on.
const GIT_POLL: Duration = Duration::from_millis(20);
/// Most of git's stderr kept for an error.
const GIT_STDERR_MAX: usize = 16 * 1024;

impl Plan {
    /// Makes the worktree (detached, at the commit; the repository's hooks do not run).
    /// `stop` (the daemon's shutdown signal) cuts git short when it disconnects.
    pub fn create(&self, stop: Option<&Receiver<()>>) -> Result<(), Error> {
        if let Some(parent) = self.path.parent() {
            crate::fsio::create_dir_all_mode(parent, 0o700).map_err(|e| Error::Git {
                what: format!("creating {}", parent.display()),
                detail: e.to_string(),
            })?;
        }
        let path = self.path.display().to_string();
        git_cmd(
            &self.git_dir,
            &[
                "worktree",
                "add",
                "--detach",
                "--quiet",
                &path,
                &self.commit,
            ],
            stop,
        )
    }

    /// Removes the worktree and its registration in the repository; with `keep`, leaves it
    /// and marks it kept instead (`checkouts/<run-id>.kept`), so the sweep at the next start
    /// leaves it too.
    pub fn remove(&self, keep: bool) -> Result<(), Error> {
        let marker = self.path.with_extension("kept");
        if keep {
            return crate::fsio::write_volatile(&marker, b"", 0o600).map_err(|e| Error::Git {
                what: format!("marking {} kept", self.path.display()),
                detail: e.to_string(),
            });
        }
        remove_worktree(&self.git_dir, &self.path)
    }

    /// What the run record says of it.
    pub fn record(&self, kept: bool) -> Value {
        json!({
            "repo": self.repo.display().to_string(),
            "commit": self.commit,
            "path": self.path.display().to_string(),
            "kept": kept,
        })
    }
}

fn remove_worktree(git_dir: &Path, path: &Path) -> Result<(), Error> {
    let p = path.display().to_string();
    let r = git_cmd(git_dir, &["worktree", "remove", "--force", &p], None);
    if r.is_err() && path.exists() {
        let _ = std::fs::remove_dir_all(path);
    }
    let pruned = git_cmd(git_dir, &["worktree", "prune"], None);
    match (r, path.exists()) {
        (_, true) => Err(Error::Git {
            what: format!("removing {p}"),
            detail: "the directory is still there".into(),
        }),
        (Ok(()), false) => pruned,
        // Removed by hand and pruned: what was asked is done.
        (Err(_), false) => pruned,
    }
}

/// Runs git on `git_dir` with hooks off, no repository discovery and no prompt, in its own
/// process group, within [`GIT_TIMEOUT`] (and until `stop` disconnects): past either, the
/// whole group is killed. Its stderr is the error.
fn git_cmd(git_dir: &Path, args: &[&str], stop: Option<&Receiver<()>>) -> Result<(), Error> {
    let what = || format!("git {}", args.first().copied().unwrap_or(""));
    let mut cmd = Command::new("git");
    cmd.arg("--git-dir")
        .arg(git_dir)
        .args(["-c", "core.hooksPath=/dev/null"])
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env("GIT_TERMINAL_PROMPT", "0")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // A process tree of its own (a process group; a job object on Windows), so a timeout or
    // a stop ends git and whatever it started (hooks are off, but filters and helpers run).
    let (mut child, tree) = crate::sys::Tree::spawn(
        &mut cmd,
        crate::sys::Limits::default(),
        crate::sys::PreExec::default(),
    )
    .map_err(|e| Error::Git {
        what: format!("git {}", args.join(" ")),
        detail: format!("cannot run git: {e}"),
    })?;
    // Read on its own thread so a chatty git never blocks on a full pipe; bounded.
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = GIT_STDERR_MAX.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            kept
        })
    });
    let deadline = Instant::now() + GIT_TIMEOUT;
    let ended = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(format!("cannot wait for git: {e}")),
        }
        if Instant::now() >= deadline {
            break Err(format!(
                "git took longer than {} s and was killed",
                GIT_TIMEOUT.as_secs()
            ));
        }
        let stopping = match stop {
            Some(s) => matches!(
                s.recv_timeout(GIT_POLL),
                Err(RecvTimeoutError::Disconnected)
            ),
            None => {
                std::thread::sleep(GIT_POLL);
                false
            }
        };
        if stopping {
            break Err("the daemon is stopping: git was killed".into());
        }
    };
    if ended.is_err() {
        tree.stop(crate::sys::Stop::Kill);
        let _ = child.kill();
        let _ = child.wait();
    }
    let err = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    match ended {
        Ok(status) if status.success() => Ok(()),
        Ok(_) => Err(Error::Git {
            what: what(),
            detail: String::from_utf8_lossy(&err)
                .trim()
                .chars()
                .take(2000)
                .collect(),
        }),
        Err(detail) => Err(Error::Git {
            what: what(),
            detail,
        }),
    }
}

/// At start, before any run: removes every checkout in `checkouts/` that is not kept
/// (no `<run-id>.kept` beside it) — those of runs a crash cut short (`run_ids`, the runs
/// marked interrupted, are among them), of a `job test --exec` agent, or half-made — each
/// with its registration in its repository (found from its `.git` file). A kept marker
/// whose checkout is gone is removed too.
pub fn remove_leftovers(data_dir: &Path, run_ids: &[&str]) {
    let dir = data_dir.join("checkouts");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for name in &names {
        if let Some(id) = name.strip_suffix(".kept") {
            if !names.iter().any(|n| n == id) {
                let _ = std::fs::remove_file(dir.join(name));
            }
        }
    }
    let leftovers = names.iter().filter(|n| {
        !n.ends_with(".kept")
            && !names
                .iter()
                .any(|k| k.strip_suffix(".kept") == Some(n.as_str()))
    });
    for id in leftovers {
        let id = id.as_str();
        let path = dir.join(id);
        let interrupted = run_ids.contains(&id);
        let r = match git::git_dir(&path) {
            Some(gd) => remove_worktree(&git::common_dir(&gd), &path),
            None => std::fs::remove_dir_all(&path).map_err(|e| Error::Git {
                what: format!("removing {}", path.display()),
                detail: e.to_string(),
            }),
        };
        match r {
            Ok(()) => {
                let whose = if interrupted {
                    "an interrupted run"
                } else {
                    "a run or test agent that did not end cleanly"
                };
                log::info!(event = "checkout.removed", run = id; "removed the checkout of {whose}: {}", path.display())
            }
            Err(e) => log::warn!(event = "checkout.error", run = id; "{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether process `pid` is gone (or a zombie nobody reaped).
    fn gone(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(s) => s.split_whitespace().nth(2) == Some("Z"),
            Err(_) => true,
        }
    }

    #[test]
    fn a_git_command_is_cut_short_at_shutdown_with_everything_it_started() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("repo.git");
        let ok = Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&repo)
            .status()
            .unwrap();
        assert!(ok.success());
        // A git that would hang: an alias running a shell that sleeps (its pid noted).
        let pidfile = t.path().join("pid");
        let alias = format!("alias.hang=!echo $$ > {}; exec sleep 60", pidfile.display());
        let (tx, stop) = crossbeam_channel::bounded::<()>(0);
        let waiter = std::thread::spawn({
            let repo = repo.clone();
            move || git_cmd(&repo, &["-c", &alias, "hang"], Some(&stop))
        });
        let pid: i32 = loop {
            if let Some(p) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break p;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(!gone(pid));
        drop(tx); // the daemon stops
        let e = waiter.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("the daemon is stopping"), "{e}");
        // The whole process group went, the shell git started included.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gone(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(gone(pid), "the git alias's shell {pid} still runs");
        // And a git that ends answers as before.
        assert!(git_cmd(&repo, &["worktree", "prune"], None).is_ok());
    }
}
