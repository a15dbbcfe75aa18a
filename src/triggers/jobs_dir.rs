//! Watches `jobs/` (inotify on Linux) so a job file written by `job add` or by hand is
//! picked up at once, without restarting the daemon. The daemon's own writes come back as
//! events too; reloading an unchanged file is a no-op.

use std::sync::Arc;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use crate::engine::Engine;

/// Starts watching; the watcher stops when the returned value is dropped.
pub fn watch(engine: Arc<Engine>) -> notify::Result<RecommendedWatcher> {
    let dir = engine.store.jobs_dir();
    let e = engine.clone();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) => {
            if matches!(ev.kind, EventKind::Access(_)) {
                return;
            }
            for p in ev.paths {
                if crate::store::is_job_file(&p) {
                    e.reload_job_file(&p);
                }
            }
        }
        Err(err) => {
            log::error!(event = "jobs_dir.error"; "watching the jobs directory failed: {err}; send SIGHUP to reload jobs")
        }
    })?;
    w.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(w)
}
