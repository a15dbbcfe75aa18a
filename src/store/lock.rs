//! `daemon.lock`: held (flock) for the daemon's lifetime so a second daemon on the same data
//! dir refuses to start. Its content, `{"pid", "port", "bind", "started_at"}`, tells the CLI
//! where the running daemon listens.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the lock file says about the daemon holding it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LockInfo {
    pub pid: u32,
    pub port: u16,
    pub bind: String,
    pub started_at: String,
}

/// The held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DaemonLock {
    file: File,
    path: PathBuf,
}

/// Whether a daemon holds the lock of a data dir.
#[derive(Debug)]
pub enum Holder {
    /// No lock file, or one nobody holds (`stale` when it names a pid).
    Free { stale: Option<LockInfo> },
    /// A live daemon holds it.
    Held(Option<LockInfo>),
}

/// Path of the lock file in `dir`.
pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join("daemon.lock")
}

impl DaemonLock {
    /// Takes the lock or explains who has it.
    pub fn acquire(dir: &Path) -> io::Result<DaemonLock> {
        let path = lock_path(dir);
        let file = open(&path)?;
        // A daemon killed a moment ago may still have a child between fork and exec that
        // holds a copy of the locked descriptor; give that a moment to clear.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut locked = try_flock(&file)?;
        while !locked && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            locked = try_flock(&file)?;
        }
        if !locked {
            let who = read_info(&path)
                .map(|i| format!(" (pid {}, listening on {}:{})", i.pid, i.bind, i.port))
                .unwrap_or_default();
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "another bog-agents-daemon is already running on data dir {}{who}; stop it first or use another --data-dir",
                    dir.display()
                ),
            ));
        }
        Ok(DaemonLock { file, path })
    }

    /// Records where this daemon listens (rewritten in place: the lock is on the inode).
    pub fn write_info(&mut self, info: &LockInfo) -> io::Result<()> {
        let data = serde_json::to_vec(info).map_err(io::Error::other)?;
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&data)?;
        self.file
            .sync_all()
            .map_err(|e| super::ctx(e, "cannot write", &self.path))
    }
}

impl DaemonLock {
    /// Empties the lock file before a clean exit, so `status` tells a stopped daemon
    /// (empty file) from one that died (file still naming its pid).
    pub fn clear(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.sync_all();
    }
}

/// Reports whether a daemon holds `dir`'s lock, without taking it for long.
pub fn holder(dir: &Path) -> io::Result<Holder> {
    let path = lock_path(dir);
    if !path.exists() {
        return Ok(Holder::Free { stale: None });
    }
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Holder::Free { stale: None }),
        Err(e) => return Err(e),
    };
    if try_flock(&file)? {
        // Nobody held it; ours is released when `file` drops.
        Ok(Holder::Free {
            stale: read_info(&path),
        })
    } else {
        Ok(Holder::Held(read_info(&path)))
    }
}

fn read_info(path: &Path) -> Option<LockInfo> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    serde_json::from_str(&s).ok()
}

fn open(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
        .map_err(|e| super::ctx(e, "cannot open lock file", path))
}

#[cfg(unix)]
fn try_flock(f: &File) -> io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a valid, owned descriptor.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(not(unix))]
fn try_flock(_f: &File) -> io::Result<bool> {
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_info_is_readable() {
        let d = tempfile::tempdir().unwrap();
        let mut l = DaemonLock::acquire(d.path()).unwrap();
        let info = LockInfo {
            pid: 1,
            port: 2,
            bind: "127.0.0.1".into(),
            started_at: "x".into(),
        };
        l.write_info(&info).unwrap();
        let e = DaemonLock::acquire(d.path()).unwrap_err();
        assert!(e.to_string().contains("already running"), "{e}");
        assert!(matches!(holder(d.path()).unwrap(), Holder::Held(Some(i)) if i == info));
        drop(l);
        assert!(matches!(
            holder(d.path()).unwrap(),
            Holder::Free { stale: Some(_) }
        ));
    }
}
