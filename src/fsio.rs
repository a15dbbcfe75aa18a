//! Durable file writes: temp file, fsync, rename, fsync the directory.
//!
//! Every file the daemon owns is written through [`write_atomic`], so a reader (or a
//! restart after `kill -9` or power loss) sees either the old content or the new, never a
//! torn file. Nothing here knows about jobs or runs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `data` to `path` durably: a temp file in the same directory is written and
/// fsynced, renamed over `path`, and the directory is fsynced so the rename survives a crash.
/// `mode` is applied to the new file before any data is written (e.g. `0o600` for secrets).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = open_new(&tmp, mode)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
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

/// Fsyncs a directory so that renames, creations and removals in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
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
    let mut b = fs::DirBuilder::new();
    set_dir_mode(&mut b, mode);
    match b.create(dir) {
        Ok(()) => sync_dir(&parent_dir(dir)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Appends `data` to `path` (created with `mode` if missing) and fsyncs it.
pub fn append_durable(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut o = OpenOptions::new();
    o.append(true).create(true);
    set_file_mode(&mut o, mode);
    let mut f = o.open(path)?;
    f.write_all(data)?;
    f.sync_data()
}

fn open_new(path: &Path, mode: u32) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    set_file_mode(&mut o, mode);
    o.open(path)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `data` to a new file (it must not exist) with `mode`, without fsync: for scratch
/// files that need not survive a crash, such as a spooled webhook body (its queued run is
/// marked interrupted at the next start anyway).
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    set_file_mode(&mut o, mode);
    o.open(path)?.write_all(data)
}

#[cfg(unix)]
fn set_file_mode(o: &mut OpenOptions, mode: u32) {
    use std::os::unix::fs::OpenOptionsExt;
    o.mode(mode);
}
#[cfg(not(unix))]
fn set_file_mode(_o: &mut OpenOptions, _mode: u32) {}

#[cfg(unix)]
fn set_dir_mode(b: &mut fs::DirBuilder, mode: u32) {
    use std::os::unix::fs::DirBuilderExt;
    b.mode(mode);
}
#[cfg(not(unix))]
fn set_dir_mode(_b: &mut fs::DirBuilder, _mode: u32) {}

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
