//! Durable file writes: temp file, fsync, rename, fsync the directory.
//!
//! Every file the daemon owns is written through [`write_atomic`], so a reader (or a
//! restart after `kill -9` or power loss) sees either the old content or the new, never a
//! torn file. Nothing here knows about jobs or runs.
//!
//! The platform parts are [`crate::sys`]'s: creating a file or directory with its mode (on
//! Windows, 0600/0700 become a user-only ACL), the rename, the directory flush.
//!
//! Group commit: the directory fsync that makes a rename durable is shared by every writer
//! of that directory that renamed while another writer's directory fsync was running
//! ([`sync_dir_grouped`]). Each writer still fsyncs its own file before its rename (writers
//! on different threads do so at once, and the filesystem's journal commits them together).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// An I/O error and the file it concerned: "cannot {what} {path}: {source}".
#[derive(Debug)]
pub struct PathError {
    /// What was being done: `create`, `write`, `remove`, …
    pub what: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl PathError {
    /// Makes the error of doing `what` to `path` (for `map_err`).
    pub fn at(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PathError {
        let path = path.to_path_buf();
        move |source| PathError { what, path, source }
    }
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.what,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Writes `data` to `path` durably: a temp file in the same directory is written and
/// fsynced, renamed over `path`, and the directory is fsynced so the rename survives a crash.
/// `mode` is applied to the new file before any data is written (e.g. `0o600` for secrets).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    replace(path, data, mode, true)
}

/// Writes `data` to `path` atomically (temp file, rename) but not durably: for files that do
/// not outlive a run (the worker's event and prompt files, removed when the run ends and at
/// start-up). No fsync stands between a due run and its agent.
pub fn write_volatile(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    replace(path, data, mode, false)
}

/// A temp file in `path`'s directory, written (and with `durable`, fsynced), renamed over
/// `path` (and with `durable`, the directory fsynced, in a group with concurrent writers).
fn replace(path: &Path, data: &[u8], mode: u32, durable: bool) -> io::Result<()> {
    let dir = parent_dir(path);
    let tmp = temp_name(path)?;
    let result = (|| {
        let mut f = open_new(&tmp, mode)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        drop(f);
        crate::sys::rename_durable(&tmp, path)?;
        if durable {
            sync_dir_grouped(&dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A hidden temp file's name beside `path` (`.NAME.PID.SEQ.tmp`: removed at start-up if a
/// crash leaves it).
fn temp_name(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    Ok(parent_dir(path).join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    )))
}

/// Removes `path` and fsyncs its directory so the removal is durable. A missing file is not
/// an error.
pub fn remove_durable(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(&parent_dir(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Fsyncs a file that was written without fsync (its data and metadata). Opened for
/// writing: Windows' FlushFileBuffers refuses a handle without write access (a read-only
/// one is "access denied" there, on every file).
pub fn sync_file(path: &Path) -> io::Result<()> {
    fs::OpenOptions::new().write(true).open(path)?.sync_all()
}

/// Fsyncs a directory so that renames, creations and removals in it are durable (Windows:
/// FlushFileBuffers on the directory, [`crate::sys::sync_dir`]).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    crate::sys::sync_dir(dir)
}

/// The writers of one directory that wait for the same directory fsync.
#[derive(Default)]
struct Batch {
    /// Set by the batch's leader when its fsync returned.
    result: Mutex<Option<Result<(), (io::ErrorKind, String)>>>,
}

#[derive(Default)]
struct GroupState {
    /// A directory fsync is running (for an earlier batch).
    syncing: bool,
    /// The batch that new callers join: its fsync starts after theirs, so it covers them.
    next: Arc<Batch>,
}

#[derive(Default)]
struct Group {
    state: Mutex<GroupState>,
    done: Condvar,
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn group(dir: &Path) -> Arc<Group> {
    static GROUPS: OnceLock<Mutex<HashMap<PathBuf, Arc<Group>>>> = OnceLock::new();
    let mut m = relock(GROUPS.get_or_init(Mutex::default));
    if m.len() > 256 {
        // Directories of deleted jobs: drop groups nobody is in.
        m.retain(|_, g| Arc::strong_count(g) > 1);
    }
    m.entry(dir.to_path_buf()).or_default().clone()
}

/// [`sync_dir`] shared with concurrent callers (group commit): returns once a directory fsync
/// that *started after this call* has returned, so whatever the caller did in `dir` before
/// the call (a rename) is durable. Callers that arrive while an fsync runs form the next
/// batch; when it returns, one of them (the leader) fsyncs once for all, and each gets the
/// leader's result. An error is every batch member's error, never swallowed.
pub fn sync_dir_grouped(dir: &Path) -> io::Result<()> {
    let g = group(dir);
    let mut s = relock(&g.state);
    let mine = s.next.clone();
    loop {
        if let Some(r) = relock(&mine.result).as_ref() {
            return r.clone().map_err(|(kind, msg)| io::Error::new(kind, msg));
        }
        if !s.syncing && Arc::ptr_eq(&s.next, &mine) {
            s.syncing = true;
            s.next = Arc::default();
            drop(s);
            let r = sync_dir(dir);
            *relock(&mine.result) = Some(
                r.as_ref()
                    .map(|_| ())
                    .map_err(|e| (e.kind(), e.to_string())),
            );
            relock(&g.state).syncing = false;
            g.done.notify_all();
            return r;
        }
        s = g.done.wait(s).unwrap_or_else(|p| p.into_inner());
    }
}

/// Creates `dir` and its parents with mode `mode` (only the directories it creates), and
/// fsyncs the parent of each created directory.
pub fn create_dir_all_mode(dir: &Path, mode: u32) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            create_dir_all_mode(parent, mode)?;
        }
    }
    match crate::sys::create_dir(dir, mode) {
        Ok(()) => sync_dir(&parent_dir(dir)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Appends `data` to `path` (created with `mode` if missing) and fsyncs it.
pub fn append_durable(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut f = crate::sys::create_file(path, mode, crate::sys::Create::Append)?;
    f.write_all(data)?;
    f.sync_data()
}

fn open_new(path: &Path, mode: u32) -> io::Result<File> {
    crate::sys::create_file(path, mode, crate::sys::Create::New)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates `path` with `data` (and `mode`) only if nothing is there, without fsync: the
/// bytes go to a hidden temp file, which is then hard-linked to `path` (a link never
/// replaces a file) and removed. So `path` is never seen torn, and a failure removes only
/// the temp file, never a file someone else put at `path` meanwhile (a run's newer record).
/// An existing `path` is `AlreadyExists`.
pub fn create_whole(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_name(path)?;
    let r = write_new(&tmp, data, mode).and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    r
}

/// Writes `data` to a new file (it must not exist) with `mode`, without fsync, and removes
/// it if the write fails: for scratch files that need not survive a crash, such as a
/// spooled webhook body (its queued run is marked interrupted at the next start anyway), and
/// for run records the intake journal keeps durable until they are flushed.
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let r = open_new(path, mode)?.write_all(data);
    if r.is_err() {
        // Never a torn file under that name.
        let _ = fs::remove_file(path);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temp files left behind");
    }

    #[test]
    fn create_whole_never_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run.json");
        create_whole(&p, b"queued", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"queued");
        // A newer file put there by someone else stays as it is.
        write_atomic(&p, b"running", 0o600).unwrap();
        let e = create_whole(&p, b"queued", 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"running");
        // A directory that is gone: NotFound, and nothing made.
        let gone = d.path().join("gone").join("run.json");
        assert_eq!(
            create_whole(&gone, b"x", 0o600).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let names: Vec<_> = fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temp files left behind");
    }

    #[test]
    fn grouped_dir_syncs_answer_every_caller() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    for k in 0..20 {
                        write_atomic(&dir.join(format!("{i}-{k}")), b"x", 0o600).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 16 * 20);
        // A directory that cannot be opened is an error for the caller, not a hang.
        assert!(sync_dir_grouped(&dir.join("missing")).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn modes_are_applied() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("x/y");
        create_dir_all_mode(&sub, 0o700).unwrap();
        let m = fs::metadata(&sub).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o700);
        let p = sub.join("t");
        write_atomic(&p, b"s", 0o600).unwrap();
        let m = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
    }
}
