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
//! - A crash mid-run: at start the daemon removes the checkouts of the runs it marks
//!   interrupted ([`remove_leftovers`]); kept ones stay until removed by hand.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

impl Plan {
    /// Makes the worktree (detached, at the commit; the repository's hooks do not run).
    pub fn create(&self) -> Result<(), Error> {
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
        )
    }

    /// Removes the worktree and its registration in the repository.
    pub fn remove(&self) -> Result<(), Error> {
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
    let r = git_cmd(git_dir, &["worktree", "remove", "--force", &p]);
    if r.is_err() && path.exists() {
        let _ = std::fs::remove_dir_all(path);
    }
    let pruned = git_cmd(git_dir, &["worktree", "prune"]);
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

/// Runs git on `git_dir` with hooks off and no repository discovery; its stderr is the
/// error.
fn git_cmd(git_dir: &Path, args: &[&str]) -> Result<(), Error> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["-c", "core.hooksPath=/dev/null"])
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Git {
            what: format!("git {}", args.join(" ")),
            detail: format!("cannot run git: {e}"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(Error::Git {
            what: format!("git {}", args.first().copied().unwrap_or("")),
            detail: err.trim().chars().take(2000).collect(),
        })
    }
}

/// At start: removes the checkouts of runs a crash cut short (`run_ids`, the runs marked
/// interrupted), found from each checkout's `.git` file.
pub fn remove_leftovers(data_dir: &Path, run_ids: &[&str]) {
    for id in run_ids {
        let path = data_dir.join("checkouts").join(id);
        if !path.exists() {
            continue;
        }
        let r = match git::git_dir(&path) {
            Some(gd) => remove_worktree(&git::common_dir(&gd), &path),
            None => std::fs::remove_dir_all(&path).map_err(|e| Error::Git {
                what: format!("removing {}", path.display()),
                detail: e.to_string(),
            }),
        };
        match r {
            Ok(()) => {
                log::info!(event = "checkout.removed", run = *id; "removed the checkout of an interrupted run: {}", path.display())
            }
            Err(e) => log::warn!(event = "checkout.error", run = *id; "{e}"),
        }
    }
}
