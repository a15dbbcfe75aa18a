//! `install-git-hook --repo PATH`: writes a `post-receive` hook that asks the running daemon
//! to read the repository's refs now (`POST /git/notify`), so a push fires without waiting
//! for the next poll.
//!
//! The hook is plain `/bin/sh`, holds no secret (it reads the token from the data dir at run
//! time, and hands it to curl on stdin so it never shows in `ps`), runs curl in the
//! background with a 2 s limit, and always exits 0: a stopped daemon never blocks or fails a
//! push. Without curl, or without read access to the token, it does nothing and the poller
//! still sees the push.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::store;
use crate::triggers::git::{common_dir, git_dir};

/// Marks hooks this command wrote, so it may replace them.
const MARKER: &str = "# bog-agents-daemon post-receive hook";

/// Flags of `install-git-hook`.
#[derive(Args, Debug)]
pub struct HookArgs {
    /// The repository (bare or with a work tree)
    #[arg(long, value_name = "PATH")]
    pub repo: PathBuf,
    /// Replace an existing post-receive hook that this command did not write
    #[arg(long)]
    pub force: bool,
}

/// The hook script for a daemon on `data_dir`.
pub fn script(data_dir: &Path) -> String {
    let dir = data_dir.display().to_string().replace('\'', "'\\''");
    format!(
        r#"#!/bin/sh
{MARKER} (written by `bog-agents-daemon install-git-hook`).
# Asks the daemon to read this repository's branches now. Never blocks or fails a push.
DATA_DIR='{dir}'
cat >/dev/null
(
  lock="$DATA_DIR/daemon.lock"
  tokfile="$DATA_DIR/.token"
  [ -r "$lock" ] && [ -r "$tokfile" ] || exit 0
  command -v curl >/dev/null 2>&1 || exit 0
  port=$(sed -n 's/.*"port":\([0-9][0-9]*\).*/\1/p' "$lock")
  [ -n "$port" ] || exit 0
  token=$(cat "$tokfile")
  printf 'header = "Authorization: Bearer %s"\n' "$token" |
    curl -s -m 2 -o /dev/null -X POST -K - "http://127.0.0.1:$port/git/notify"
) </dev/null >/dev/null 2>&1 &
exit 0
"#
    )
}

/// Runs the subcommand; returns the exit code.
pub fn run(data_dir: Option<&Path>, a: &HookArgs) -> i32 {
    match install(data_dir, a) {
        Ok(path) => {
            println!("installed {}", path.display());
            0
        }
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            code
        }
    }
}

fn install(data_dir: Option<&Path>, a: &HookArgs) -> Result<PathBuf, (i32, String)> {
    let data = store::resolve_data_dir(data_dir).map_err(|e| (1, e.to_string()))?;
    let gd = git_dir(&a.repo)
        .ok_or_else(|| (2, format!("{} is not a git repository", a.repo.display())))?;
    // Hooks, like refs, live in the common dir (the main repository's, for a linked worktree).
    let hooks = common_dir(&gd).join("hooks");
    crate::fsio::create_dir_all_mode(&hooks, 0o755)
        .map_err(|e| (1, format!("cannot create {}: {e}", hooks.display())))?;
    let path = hooks.join("post-receive");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if !existing.contains(MARKER) && !a.force {
            return Err((
                1,
                format!(
                    "{} exists and was not written by bog-agents-daemon; call the daemon from it yourself, or pass --force to replace it",
                    path.display()
                ),
            ));
        }
    }
    crate::fsio::write_atomic(&path, script(&data).as_bytes(), 0o755)
        .map_err(|e| (1, format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}
