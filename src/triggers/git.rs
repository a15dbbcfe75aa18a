//! The git poller thread: fires `git_push` triggers when a matching branch ref moves.
//!
//! Refs are read straight from the repository (loose files under `refs/heads/` and
//! `packed-refs`; a loose ref wins), never by running git; for a linked worktree, from the
//! main repository's git dir that its `commondir` file points to. The thread polls every
//! `--git-poll-ms` while at least one job has a git_push trigger, and at once when the
//! `post-receive` hook written by `install-git-hook` calls `POST /git/notify`. The first
//! reading of a repository is the baseline; after that a new or moved branch fires (before is
//! the all-zero id for a new branch), a deleted one does not. All refs that moved for one job
//! in one reading make one firing, listed in the context. Branch globs match the whole
//! name after `refs/heads/`, and `*` also matches `/` (the default `*` is every branch).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{select, Receiver};
use serde_json::{json, Map, Value};

use super::glob::GlobSet;
use crate::engine::Engine;
use crate::job::Trigger;
use crate::metrics::Metrics;

/// The id git uses for "no commit" (a new branch's `before`).
pub const ZERO_ID: &str = "0000000000000000000000000000000000000000";

/// Branch name (after `refs/heads/`) → commit id.
pub type Refs = BTreeMap<String, String>;

struct GitWatch {
    repo: PathBuf,
    branch: GlobSet,
}

struct Poller {
    engine: Arc<Engine>,
    watches: HashMap<(String, usize), GitWatch>,
    /// Last reading per repository; `None` while it is missing.
    seen: HashMap<PathBuf, Option<Refs>>,
    poll: Duration,
}

/// Starts the poller thread. A message on `kick` makes it read every repository now.
pub fn spawn(
    engine: Arc<Engine>,
    kick: Receiver<()>,
    poll: Duration,
) -> std::io::Result<JoinHandle<()>> {
    let changes = engine.subscribe();
    thread::Builder::new().name("git".into()).spawn(move || {
        let mut p = Poller {
            engine,
            watches: HashMap::new(),
            seen: HashMap::new(),
            poll,
        };
        for j in p.engine.jobs() {
            p.plan(&j.id);
        }
        p.read_all(false);
        p.run(&changes, &kick);
    })
}

impl Poller {
    fn run(&mut self, changes: &Receiver<String>, kick: &Receiver<()>) {
        let shutdown = self.engine.shutdown_signal();
        loop {
            let wait = if self.watches.is_empty() {
                Duration::from_secs(3600)
            } else {
                self.poll
            };
            select! {
                recv(changes) -> id => match id {
                    Ok(id) => {
                        self.plan(&id);
                        // New repositories get their baseline now, not at the next poll.
                        self.read_all(false);
                        continue;
                    }
                    Err(_) => return,
                },
                recv(kick) -> k => if k.is_err() { return },
                recv(shutdown) -> _ => return,
                default(wait) => {}
            }
            if !self.watches.is_empty() {
                self.read_all(true);
            }
        }
    }

    fn plan(&mut self, job_id: &str) {
        self.watches.retain(|k, _| k.0 != job_id);
        if let Some(job) = self.engine.job(job_id).filter(|j| j.enabled) {
            for (i, t) in job.triggers.iter().enumerate() {
                let Trigger::GitPush { repo, branch, .. } = t else {
                    continue;
                };
                let Ok(g) = GlobSet::new(&[branch], false) else {
                    continue;
                };
                self.watches.insert(
                    (job.id.clone(), i),
                    GitWatch {
                        repo: PathBuf::from(repo),
                        branch: g,
                    },
                );
            }
        }
        let used: HashSet<PathBuf> = self.watches.values().map(|w| w.repo.clone()).collect();
        self.seen.retain(|r, _| used.contains(r));
    }

    /// Reads every watched repository; with `fire`, fires for refs that moved since the
    /// last reading (repositories read for the first time only set their baseline).
    fn read_all(&mut self, fire: bool) {
        let repos: HashSet<PathBuf> = self.watches.values().map(|w| w.repo.clone()).collect();
        for repo in repos {
            let now = read_refs(&repo);
            let before = self.seen.get(&repo).cloned();
            match (&before, &now) {
                (None, None) => {
                    log::warn!(event = "git.repo_missing", repo = repo.display().to_string().as_str();
                        "{} is not a git repository (yet); it is picked up when it appears", repo.display());
                }
                (Some(Some(_)), None) => {
                    log::warn!(event = "git.repo_missing", repo = repo.display().to_string().as_str(); "{} disappeared", repo.display());
                }
                (Some(None), Some(_)) => {
                    log::info!(event = "git.repo_back", repo = repo.display().to_string().as_str(); "{} is a git repository now; watching its branches", repo.display());
                }
                _ => {}
            }
            if let (None | Some(None), Some(refs)) = (&before, &now) {
                log::debug!(event = "git.baseline", repo = repo.display().to_string().as_str();
                    "watching {}: {} branches", repo.display(), refs.len());
            }
            // Cluster mode: every node keeps its baseline, only the leader fires.
            let fire = fire && self.engine.cluster().is_none_or(|c| c.is_leader());
            if let (true, Some(Some(old)), Some(new)) = (fire, &before, &now) {
                self.fire_moved(&repo, old, new);
            }
            self.seen.insert(repo, now);
        }
    }

    fn fire_moved(&self, repo: &Path, old: &Refs, new: &Refs) {
        let moved: Vec<(&String, &String)> = new
            .iter()
            .filter(|(b, id)| old.get(*b) != Some(*id))
            .collect();
        if moved.is_empty() {
            return;
        }
        let mut by_job: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for ((job_id, _), w) in &self.watches {
            if w.repo != repo {
                continue;
            }
            for (branch, after) in &moved {
                if !w.branch.is_match(branch.as_str()) {
                    continue;
                }
                let list = by_job.entry(job_id.as_str()).or_default();
                let r = format!("refs/heads/{branch}");
                if list.iter().any(|v| v["ref"] == r.as_str()) {
                    continue;
                }
                list.push(json!({
                    "ref": r,
                    "branch": branch,
                    "before": old.get(*branch).map(String::as_str).unwrap_or(ZERO_ID),
                    "after": after,
                }));
            }
        }
        for (job_id, refs) in by_job {
            let Some(ctx) = push_context(repo, refs) else {
                continue;
            };
            Metrics::inc(&self.engine.metrics.git_push_firings_total);
            self.engine.fire_from_trigger(job_id, ctx);
        }
    }
}

/// The run record's `trigger` object of a push: the repository, the first moved ref's
/// `ref`, `branch`, `before` and `after`, and every moved ref in `refs`. None without refs.
pub fn push_context(repo: &Path, refs: Vec<Value>) -> Option<Map<String, Value>> {
    let first = refs.first()?.clone();
    let mut ctx = super::context("git_push");
    ctx.insert("repo".into(), repo.display().to_string().into());
    for k in ["ref", "branch", "before", "after"] {
        ctx.insert(k.into(), first[k].clone());
    }
    ctx.insert("refs".into(), Value::Array(refs));
    Some(ctx)
}

/// The branch a manual run (or `job test`) of a git_push trigger with branch glob `glob`
/// means: the one the repository's `HEAD` names when the glob matches it, else the first
/// matching branch by name; with its current commit. None when no branch matches.
pub fn current_branch(repo: &Path, glob: &str) -> Option<(String, String)> {
    let refs = read_refs(repo)?;
    let g = GlobSet::new(&[glob], false).ok()?;
    let head = git_dir(repo)
        .and_then(|gd| fs::read_to_string(gd.join("HEAD")).ok())
        .unwrap_or_default();
    let head_branch = head
        .trim()
        .strip_prefix("ref: refs/heads/")
        .map(str::to_string);
    let pick = head_branch
        .filter(|b| g.is_match(b) && refs.contains_key(b))
        .or_else(|| refs.keys().find(|b| g.is_match(b)).cloned())?;
    let id = refs.get(&pick)?.clone();
    Some((pick, id))
}

/// The git directory of `repo`: `repo/.git` (a directory, or a `gitdir:` file), or `repo`
/// itself when it is bare. None when it is not a repository.
pub fn git_dir(repo: &Path) -> Option<PathBuf> {
    let dot = repo.join(".git");
    if dot.is_dir() {
        return Some(dot);
    }
    if dot.is_file() {
        let s = fs::read_to_string(&dot).ok()?;
        let target = s.trim().strip_prefix("gitdir:")?.trim();
        let p = Path::new(target);
        return Some(if p.is_absolute() {
            p.to_path_buf()
        } else {
            repo.join(p)
        });
    }
    (repo.join("HEAD").is_file() && repo.join("refs").is_dir()).then(|| repo.to_path_buf())
}

/// The directory that holds a repository's shared refs and hooks: the git dir itself, or,
/// for a linked worktree (whose git dir is `<main>/.git/worktrees/<name>`, with no refs of
/// its own), the directory its `commondir` file names (relative to the git dir, or absolute).
pub fn common_dir(git_dir: &Path) -> PathBuf {
    match fs::read_to_string(git_dir.join("commondir")) {
        Ok(s) if !s.trim().is_empty() => {
            let p = Path::new(s.trim_end_matches(['\n', '\r']));
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                git_dir.join(p)
            }
        }
        _ => git_dir.to_path_buf(),
    }
}

/// Reads the branch refs of `repo` without running git. None if it is not a repository.
pub fn read_refs(repo: &Path) -> Option<Refs> {
    let gd = common_dir(&git_dir(repo)?);
    let mut refs = Refs::new();
    if let Ok(packed) = fs::read_to_string(gd.join("packed-refs")) {
        for line in packed.lines() {
            if line.starts_with('#') || line.starts_with('^') {
                continue;
            }
            if let Some((id, name)) = line.split_once(' ') {
                if let Some(b) = name.trim().strip_prefix("refs/heads/") {
                    if is_id(id) {
                        refs.insert(b.to_string(), id.to_string());
                    }
                }
            }
        }
    }
    walk_loose(&gd.join("refs").join("heads"), "", &mut refs);
    Some(refs)
}

fn walk_loose(dir: &Path, prefix: &str, refs: &mut Refs) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let full = format!("{prefix}{name}");
        if path.is_dir() {
            walk_loose(&path, &format!("{full}/"), refs);
        } else if !name.ends_with(".lock") {
            if let Ok(s) = fs::read_to_string(&path) {
                let id = s.trim();
                if is_id(id) {
                    refs.insert(full, id.to_string());
                }
            }
        }
    }
}

fn is_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_loose_and_packed_refs_loose_wins() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path();
        fs::create_dir_all(g.join("refs/heads/feature")).unwrap();
        fs::write(g.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let c = "c".repeat(40);
        fs::write(
            g.join("packed-refs"),
            format!("# pack-refs with: peeled fully-peeled sorted\n{a} refs/heads/main\n{a} refs/heads/old\n^{b}\n{a} refs/tags/v1\n"),
        )
        .unwrap();
        fs::write(g.join("refs/heads/main"), format!("{b}\n")).unwrap();
        fs::write(g.join("refs/heads/feature/login"), format!("{c}\n")).unwrap();
        fs::write(g.join("refs/heads/feature/x.lock"), format!("{c}\n")).unwrap();
        let r = read_refs(g).unwrap();
        assert_eq!(r.get("main"), Some(&b));
        assert_eq!(r.get("old"), Some(&a));
        assert_eq!(r.get("feature/login"), Some(&c));
        assert_eq!(r.len(), 3);
        assert!(read_refs(&g.join("nope")).is_none());
    }

    #[test]
    fn linked_worktree_refs_come_from_the_common_dir() {
        let d = tempfile::tempdir().unwrap();
        let main = d.path().join("main/.git");
        let wt = main.join("worktrees/side");
        fs::create_dir_all(main.join("refs/heads")).unwrap();
        fs::create_dir_all(&wt).unwrap();
        let a = "a".repeat(40);
        fs::write(main.join("refs/heads/side"), format!("{a}\n")).unwrap();
        fs::write(wt.join("commondir"), "../..\n").unwrap();
        let linked = d.path().join("linked");
        fs::create_dir_all(&linked).unwrap();
        fs::write(linked.join(".git"), format!("gitdir: {}\n", wt.display())).unwrap();
        assert_eq!(read_refs(&linked).unwrap().get("side"), Some(&a));
        assert_eq!(common_dir(&main), main);
    }

    #[test]
    fn branch_globs() {
        let m = |g: &str, b: &str| GlobSet::new(&[g], false).unwrap().is_match(b);
        assert!(m("feature/*", "feature/login"));
        assert!(!m("feature/*", "main"));
        assert!(m("*", "feature/a/b"));
        assert!(m("main", "main"));
        assert!(!m("main", "main2"));
        assert!(m("*", "main"));
    }
}
