//! The file watcher thread: fires `file_change` triggers.
//!
//! One `notify` watcher (inotify on Linux) watches every job's root recursively; events
//! come back over a channel to this thread, which matches each changed path (relative to the
//! root) against the trigger's globs (`*` stays within one directory, `**` crosses any
//! number) and fires once the changes have been quiet for `debounce_seconds` (a trailing
//! debounce). Rules:
//! - anything under a `.git/` directory is ignored;
//! - changes made while the job has a run queued or running do not fire it (an agent that
//!   edits the files it watches must not loop). A change noticed after the run ended counts
//!   as the run's own when the file's modification time falls inside the run; for a removed
//!   file, when it is noticed within [`SELF_TRIGGER_GRACE`] of the run's end;
//! - a directory created under a root, or moved into it, is scanned, so files written into
//!   it before its watch was in place, or brought in with it, are not missed;
//! - a root that is missing or removed is re-checked every [`MISSING_RECHECK`] and watched
//!   again when it appears; both are logged. A watch follows an inode, not a path, so an
//!   event on a root itself (deleted, moved, swapped) is checked against the (device, inode)
//!   recorded when the watch began: a root deleted and at once recreated, or exchanged with
//!   another directory (`renameat2` RENAME_EXCHANGE), is logged `files.root_gone` and the
//!   directory now at that path is watched at once. Where the OS's watcher says nothing
//!   when a root goes (Windows: `crate::sys::WATCHER_SEES_ROOT_REMOVAL`), every root's
//!   identity is also checked every [`MISSING_RECHECK`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, unbounded, Receiver};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use serde_json::Value;

use super::glob::{GlobError, GlobSet};
use crate::engine::Engine;
use crate::job::{Job, Trigger};
use crate::metrics::Metrics;

/// A removal noticed this soon after a job's run ended counts as the run's own.
pub const SELF_TRIGGER_GRACE: Duration = Duration::from_millis(500);
/// How often missing roots are looked for.
const MISSING_RECHECK: Duration = Duration::from_secs(2);
/// Most changed paths listed in a firing's context.
pub const MAX_LISTED: usize = 200;
/// Most omitted paths remembered for counting.
const MAX_COUNTED: usize = 100_000;
/// Most paths a scan of a directory created or moved in lists (itself included); a run
/// whose scan stopped there says `events_overflowed`.
const MAX_SCANNED: usize = 10_000;
/// Most queued events handled before due firings are looked at.
const MAX_DRAINED: usize = 4096;

struct Watch {
    root: PathBuf,
    globs: GlobSet,
    debounce: Duration,
}

#[derive(Default)]
struct Pending {
    paths: BTreeSet<String>,
    /// Distinct paths past [`MAX_LISTED`] (remembered up to [`MAX_COUNTED`]).
    omitted: HashSet<String>,
    /// Events past [`MAX_COUNTED`] distinct omitted paths.
    omitted_more: usize,
    overflowed: bool,
    deadline: Option<Instant>,
}

type Key = (String, usize);

struct FileWatcher {
    engine: Arc<Engine>,
    watcher: RecommendedWatcher,
    watches: HashMap<Key, Watch>,
    /// Root → number of triggers using it; roots in `missing` are not watched right now.
    roots: HashMap<PathBuf, usize>,
    missing: HashSet<PathBuf>,
    /// (device, inode) of each watched root when its watch began.
    inodes: HashMap<PathBuf, (u64, u64)>,
    pending: HashMap<Key, Pending>,
    next_recheck: Option<Instant>,
}

/// Builds the matcher of a file_change trigger's patterns.
pub fn build_globs(patterns: &[String]) -> Result<GlobSet, GlobError> {
    GlobSet::new(patterns, true)
}

/// Starts the watcher thread.
pub fn spawn(engine: Arc<Engine>) -> std::io::Result<JoinHandle<()>> {
    let (ev_tx, ev_rx) = unbounded();
    let watcher = notify::recommended_watcher(move |res| {
        let _ = ev_tx.send(res);
    })
    .map_err(|e| std::io::Error::other(format!("cannot start the file watcher: {e}")))?;
    let changes = engine.subscribe();
    thread::Builder::new().name("files".into()).spawn(move || {
        let mut w = FileWatcher {
            engine,
            watcher,
            watches: HashMap::new(),
            roots: HashMap::new(),
            missing: HashSet::new(),
            inodes: HashMap::new(),
            pending: HashMap::new(),
            next_recheck: None,
        };
        for j in w.engine.jobs() {
            w.plan(&j.id);
        }
        w.run(&changes, &ev_rx);
    })
}

impl FileWatcher {
    fn run(
        &mut self,
        changes: &Receiver<String>,
        events: &Receiver<notify::Result<notify::Event>>,
    ) {
        let shutdown = self.engine.shutdown_signal();
        loop {
            let now = Instant::now();
            let next = self
                .pending
                .values()
                .filter_map(|p| p.deadline)
                .chain(self.next_recheck)
                .min();
            let wait = next.map_or(Duration::from_secs(3600), |t| {
                t.saturating_duration_since(now)
            });
            select! {
                recv(changes) -> id => match id {
                    Ok(id) => self.plan(&id),
                    Err(_) => return,
                },
                recv(events) -> ev => match ev {
                    Ok(Ok(ev)) => self.on_event(ev),
                    Ok(Err(e)) => self.on_error(e),
                    Err(_) => return,
                },
                recv(shutdown) -> _ => return,
                default(wait) => {}
            }
            // Changes that already happened count before anything is judged quiet: if this
            // thread was held up, events waiting in the channel must push their deadlines
            // on rather than let a burst fire half-seen (bounded, so a flood cannot keep
            // due firings waiting for ever).
            for ev in events.try_iter().take(MAX_DRAINED) {
                match ev {
                    Ok(ev) => self.on_event(ev),
                    Err(e) => self.on_error(e),
                }
            }
            self.fire_due();
            if self.next_recheck.is_some_and(|t| t <= Instant::now()) {
                self.recheck_missing();
            }
        }
    }

    /// (Re)installs the watches of one job from its current version.
    fn plan(&mut self, job_id: &str) {
        let keys: Vec<Key> = self
            .watches
            .keys()
            .filter(|k| k.0 == job_id)
            .cloned()
            .collect();
        for k in keys {
            if let Some(w) = self.watches.remove(&k) {
                self.release_root(&w.root);
            }
            self.pending.remove(&k);
        }
        let Some(job) = self.engine.job(job_id).filter(|j| j.enabled) else {
            return;
        };
        for (i, t) in job.triggers.iter().enumerate() {
            // Cluster mode: only the node the trigger names watches its files.
            if !self.engine.watches_files_here(t) {
                continue;
            }
            let Some(w) = watch_of(&job, t) else { continue };
            self.acquire_root(&w.root, &job.name);
            self.watches.insert((job.id.clone(), i), w);
        }
    }

    fn acquire_root(&mut self, root: &Path, job: &str) {
        let n = self.roots.entry(root.to_path_buf()).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.start_watch(root, Some(job));
        }
    }

    fn release_root(&mut self, root: &Path) {
        if let Some(n) = self.roots.get_mut(root) {
            *n -= 1;
            if *n == 0 {
                self.roots.remove(root);
                self.inodes.remove(root);
                if !self.missing.remove(root) {
                    let _ = self.watcher.unwatch(root);
                }
            }
        }
    }

    fn start_watch(&mut self, root: &Path, job: Option<&str>) {
        let job = job.unwrap_or("");
        // The identity is taken before the watch: if the directory is swapped in between,
        // the next event on the root shows a mismatch and the watch is redone.
        let Some(id) = dir_id(root) else {
            log::warn!(event = "files.root_missing", job = job, root = root.display().to_string().as_str();
                "watched directory {} does not exist; it is watched as soon as it appears", root.display());
            self.mark_missing(root);
            return;
        };
        match self.watcher.watch(root, RecursiveMode::Recursive) {
            Ok(()) => {
                self.inodes.insert(root.to_path_buf(), id);
                if !crate::sys::WATCHER_SEES_ROOT_REMOVAL && self.next_recheck.is_none() {
                    self.next_recheck = Some(Instant::now() + MISSING_RECHECK);
                }
                log::debug!(event = "files.watching", root = root.display().to_string().as_str(); "watching {}", root.display());
            }
            Err(e) => {
                if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                    log::error!(event = "files.watch_limit", root = root.display().to_string().as_str();
                        "cannot watch {}: the inotify watch limit is reached; raise it with `sysctl fs.inotify.max_user_watches=524288` (and max_user_instances)", root.display());
                } else {
                    log::error!(event = "files.watch_error", root = root.display().to_string().as_str(); "cannot watch {}: {e}; retrying", root.display());
                }
                let _ = self.watcher.unwatch(root);
                self.mark_missing(root);
            }
        }
    }

    fn mark_missing(&mut self, root: &Path) {
        self.missing.insert(root.to_path_buf());
        if self.next_recheck.is_none() {
            self.next_recheck = Some(Instant::now() + MISSING_RECHECK);
        }
    }

    fn recheck_missing(&mut self) {
        self.next_recheck = None;
        if !crate::sys::WATCHER_SEES_ROOT_REMOVAL {
            let watched: Vec<PathBuf> = self.inodes.keys().cloned().collect();
            for r in watched {
                if !self.same_root(&r) {
                    self.root_gone(&r);
                }
            }
        }
        let roots: Vec<PathBuf> = self.missing.iter().cloned().collect();
        for r in roots {
            if r.is_dir() {
                self.missing.remove(&r);
                log::info!(event = "files.root_back", root = r.display().to_string().as_str(); "{} exists again; watching it", r.display());
                self.start_watch(&r, None);
            }
        }
        let poll = !crate::sys::WATCHER_SEES_ROOT_REMOVAL && !self.inodes.is_empty();
        if (poll || !self.missing.is_empty()) && self.next_recheck.is_none() {
            self.next_recheck = Some(Instant::now() + MISSING_RECHECK);
        }
    }

    fn on_error(&mut self, e: notify::Error) {
        log::warn!(event = "files.error"; "file watcher: {e}");
        for p in e.paths {
            if self.roots.contains_key(&p) && !self.missing.contains(&p) && !self.same_root(&p) {
                self.root_gone(&p);
            }
        }
    }

    /// Whether the directory at `root` is still the one its watch was set on.
    fn same_root(&self, root: &Path) -> bool {
        dir_id(root).is_some_and(|id| self.inodes.get(root) == Some(&id))
    }

    /// A watched root was removed, moved or replaced: drop its watch, then watch the
    /// directory that has its path now, or wait for one to appear.
    fn root_gone(&mut self, root: &Path) {
        let _ = self.watcher.unwatch(root);
        self.inodes.remove(root);
        let r = root.display().to_string();
        if root.is_dir() {
            log::warn!(event = "files.root_gone", root = r.as_str(); "{r} was removed, moved or replaced; watching the directory now at that path");
            self.start_watch(root, None);
        } else {
            log::warn!(event = "files.root_gone", root = r.as_str(); "{r} was removed or moved; watching for it to reappear");
            self.mark_missing(root);
        }
    }

    fn on_event(&mut self, ev: notify::Event) {
        if matches!(ev.kind, EventKind::Access(_)) {
            return;
        }
        if ev.need_rescan() {
            // The kernel queue overflowed: every watch may have missed changes.
            let now = Instant::now();
            let keys: Vec<Key> = self.watches.keys().cloned().collect();
            for k in keys {
                self.touch(&k, None, now);
            }
            return;
        }
        let now = Instant::now();
        for path in &ev.paths {
            // An event on a root itself. Removed (its inode is gone, even if a new directory
            // already has its name), or no longer the directory being watched (moved away,
            // swapped): watch whatever is at the path now, or wait for it to reappear.
            if self.roots.contains_key(path) && !self.missing.contains(path) {
                let removed = matches!(ev.kind, EventKind::Remove(_));
                if removed || !self.same_root(path) {
                    self.root_gone(path);
                    continue;
                }
            }
            let mut paths = vec![path.clone()];
            let mut cut = false;
            if arrives(&ev.kind) && path.is_dir() {
                // A directory created (its files may land before its watch exists) or moved
                // in whole (its files make no events of their own): its files changed.
                cut = !list_files(path, &mut paths, MAX_SCANNED);
            }
            for p in paths {
                self.match_path(&p, now);
            }
            if cut {
                // Files past the bound made no event: the watches over it may miss changes.
                let over: Vec<Key> = self
                    .watches
                    .iter()
                    .filter(|(_, w)| path.starts_with(&w.root))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in over {
                    self.touch(&k, None, now);
                }
            }
        }
    }

    fn match_path(&mut self, path: &Path, now: Instant) {
        let mut hits = Vec::new();
        for (k, w) in &self.watches {
            let Ok(rel) = path.strip_prefix(&w.root) else {
                continue;
            };
            if rel.as_os_str().is_empty() || under_git(rel) {
                continue;
            }
            if w.globs.is_match(&rel.to_string_lossy()) {
                hits.push((k.clone(), rel.to_string_lossy().into_owned()));
            }
        }
        if hits.is_empty() {
            return;
        }
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        for (k, rel) in hits {
            if self.engine.is_own_change(&k.0, mtime, SELF_TRIGGER_GRACE) {
                log::debug!(event = "files.self_change", job = k.0.as_str(), path = rel.as_str(); "changed by the job's own run; ignored");
                continue;
            }
            self.touch(&k, Some(rel), now);
        }
    }

    fn touch(&mut self, k: &Key, rel: Option<String>, now: Instant) {
        if rel.is_none() && self.engine.is_own_change(&k.0, None, SELF_TRIGGER_GRACE) {
            return;
        }
        let Some(w) = self.watches.get(k) else { return };
        let p = self.pending.entry(k.clone()).or_default();
        match rel {
            Some(r) if p.paths.len() < MAX_LISTED || p.paths.contains(&r) => {
                p.paths.insert(r);
            }
            Some(r) if p.omitted.len() < MAX_COUNTED => {
                p.omitted.insert(r);
            }
            Some(_) => p.omitted_more += 1,
            None => p.overflowed = true,
        }
        p.deadline = Some(now + w.debounce);
    }

    fn fire_due(&mut self) {
        let now = Instant::now();
        let due: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            let Some(p) = self.pending.remove(&k) else {
                continue;
            };
            let Some(w) = self.watches.get(&k) else {
                continue;
            };
            let mut ctx = super::context("file_change");
            ctx.insert("root".into(), w.root.display().to_string().into());
            ctx.insert(
                "changed_files".into(),
                Value::Array(p.paths.into_iter().map(Value::String).collect()),
            );
            let omitted = p.omitted.len() + p.omitted_more;
            if omitted > 0 {
                ctx.insert("changed_files_omitted".into(), omitted.into());
            }
            if p.overflowed {
                ctx.insert("events_overflowed".into(), true.into());
            }
            Metrics::inc(&self.engine.metrics.file_change_firings_total);
            self.engine.fire_from_trigger(&k.0, ctx);
        }
    }
}

fn watch_of(job: &Job, t: &Trigger) -> Option<Watch> {
    let Trigger::FileChange {
        patterns,
        root,
        debounce_seconds,
        ..
    } = t
    else {
        return None;
    };
    let root = root.clone().or_else(|| job.working_dir.clone())?;
    let globs = build_globs(patterns).ok()?;
    Some(Watch {
        root: PathBuf::from(root),
        globs,
        debounce: Duration::from_secs_f64(*debounce_seconds),
    })
}

/// Appends the files under `dir` (recursively, until `out` holds `max`) to `out`, but none
/// under a `.git/` (ignored anyway: a clone's objects would use up `max` before its files).
/// False when it stopped at `max` with files left.
fn list_files(dir: &Path, out: &mut Vec<PathBuf>, max: usize) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return true;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if e.file_name() == ".git" {
                continue;
            }
            if !list_files(&p, out, max) {
                return false;
            }
        } else if out.len() >= max {
            return false;
        } else {
            out.push(p);
        }
    }
    true
}

/// Whether an event can bring a path into the tree: created, or renamed/moved to it
/// (inotify says `To` or `Both`, FSEvents `Any`).
fn arrives(kind: &EventKind) -> bool {
    use notify::event::{ModifyKind, RenameMode};
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Name(
                RenameMode::To | RenameMode::Both | RenameMode::Any
            ))
    )
}

/// (device, inode) of a directory; None if `p` is not one.
fn dir_id(p: &Path) -> Option<(u64, u64)> {
    crate::sys::dir_identity(p)
}

fn under_git(rel: &Path) -> bool {
    rel.components()
        .any(|c| matches!(c, Component::Normal(n) if n == ".git"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pats: &[&str], path: &str) -> bool {
        let v: Vec<String> = pats.iter().map(|s| s.to_string()).collect();
        build_globs(&v).unwrap().is_match(path)
    }

    #[test]
    fn glob_semantics() {
        assert!(m(&["src/**/*.py"], "src/a/b/c.py"));
        assert!(m(&["src/**/*.py"], "src/c.py"));
        assert!(!m(&["src/**/*.py"], "lib/c.py"));
        assert!(m(&["*.md"], "README.md"));
        assert!(!m(&["*.md"], "docs/README.md"));
        assert!(m(&["**/*.md"], "docs/a/README.md"));
        assert!(m(&["**/*.md"], "README.md"));
        assert!(m(&["src/*.rs", "Cargo.toml"], "Cargo.toml"));
        assert!(!m(&["src/*.rs"], "src/a/b.rs"));
    }

    #[test]
    fn git_dirs_are_ignored() {
        assert!(under_git(Path::new(".git/index")));
        assert!(under_git(Path::new("sub/.git/HEAD")));
        assert!(!under_git(Path::new("a.gitignore")));
    }

    /// A directory moved in whole (a clone, say) is scanned without its `.git/`: nothing
    /// there can match, and its objects would fill the scan's bound before the files that
    /// can (they once did).
    #[test]
    fn a_scan_leaves_git_dirs_out() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("clone");
        for f in [
            ".git/HEAD",
            ".git/objects/ab/cdef",
            "sub/.git/index",
            "a.py",
            "sub/b.py",
        ] {
            let p = repo.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "x").unwrap();
        }
        let mut out = Vec::new();
        assert!(list_files(&repo, &mut out, 10_000));
        out.sort();
        assert_eq!(out, [repo.join("a.py"), repo.join("sub/b.py")]);
        // Stopped at the bound: said so only when files were left.
        assert!(list_files(&repo, &mut Vec::new(), 2));
        assert!(!list_files(&repo, &mut Vec::new(), 1));
    }
}
