//! `daemon.lock`: held (flock; LockFileEx on Windows: [`crate::sys::try_lock_file`]) for the daemon's lifetime so a second daemon on the same data
//! dir refuses to start. Its content, `{"pid", "port", "bind", "started_at"}`, tells the CLI
//! where the running daemon listens.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long a lock held by something other than a live daemon is waited for.
pub const LEFTOVER_WAIT: Duration = Duration::from_secs(3);

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
    ///
    /// When it is held, the lock file says by whom: a daemon writes its pid there as soon as
    /// it has the lock. A live pid is a running daemon: refused at once. Otherwise the holder
    /// is a process a daemon that just died left between fork and exec (it inherited the
    /// descriptor and lets go when it execs): that is waited for, up to [`LEFTOVER_WAIT`].
    pub fn acquire(dir: &Path) -> io::Result<DaemonLock> {
        let path = lock_path(dir);
        let file = open(&path)?;
        if !crate::sys::try_lock_file(&file)? {
            let named = read_pid(&path);
            if let Some(pid) = named.filter(|p| crate::sys::pid_alive(*p)) {
                let info = read_info(&path)
                    .filter(|i| i.pid == pid)
                    .map(|i| format!(", listening on {}:{}", i.bind, i.port))
                    .unwrap_or_else(|| ", still starting".into());
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "another bog-agents-daemon is already running on data dir {} (pid {pid} is alive{info}); stop it first or use another --data-dir",
                        dir.display()
                    ),
                ));
            }
            let deadline = Instant::now() + LEFTOVER_WAIT;
            let mut locked = false;
            while !locked && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
                locked = crate::sys::try_lock_file(&file)?;
            }
            if !locked {
                let who = match named {
                    Some(pid) => format!("the lock file names pid {pid}, which is gone"),
                    None => "the lock file names no daemon".into(),
                };
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is locked by a process that is not a running daemon ({who}); waited {} s for it to let go. Find it with `fuser {}` (Unix)",
                        path.display(),
                        LEFTOVER_WAIT.as_secs(),
                        path.display()
                    ),
                ));
            }
        }
        let mut lock = DaemonLock { file, path };
        // Say who holds it at once, so a second daemon refuses without waiting; `write_info`
        // adds where it listens. (Until then this is not a LockInfo: clients see "starting".)
        lock.write_raw(format!("{{\"pid\":{}}}", std::process::id()).as_bytes())?;
        Ok(lock)
    }

    fn write_raw(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(data)?;
        self.file
            .sync_all()
            .map_err(|e| super::ctx(e, "cannot write", &self.path))
    }

    /// Records where this daemon listens (rewritten in place: the lock is on the inode).
    pub fn write_info(&mut self, info: &LockInfo) -> io::Result<()> {
        let data = serde_json::to_vec(info).map_err(io::Error::other)?;
        self.write_raw(&data)
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
    if crate::sys::try_lock_file(&file)? {
        // Nobody held it; ours is released when `file` drops.
        Ok(Holder::Free {
            stale: read_info(&path),
        })
    } else {
        Ok(Holder::Held(read_info(&path)))
    }
}

/// The `pid` the lock file names, whether or not the daemon has said where it listens yet.
fn read_pid(path: &Path) -> Option<u32> {
    let s = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&s).ok()?;
    v.get("pid")?.as_u64().and_then(|p| u32::try_from(p).ok())
}

fn read_info(path: &Path) -> Option<LockInfo> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    serde_json::from_str(&s).ok()
}

fn open(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    crate::sys::set_file_mode(&mut o, 0o600);
    o.open(path)
        .map_err(|e| super::ctx(e, "cannot open lock file", path))
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
