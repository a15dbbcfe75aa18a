//! A webhook body, held once for every run it fires until those runs have started.
//!
//! A queued run must not hold its body twice (raw and parsed) in memory: a burst of large
//! signed deliveries would then grow the daemon by the queue's capacity times the parsed
//! size. Bodies up to [`INLINE_MAX`] stay in memory; larger ones are written once to a spool
//! file under the data dir (`spool/`, emptied at start) and read back when the run starts.
//! The file goes when the last run holding it lets go of it. The parsed `payload` exists
//! only while a run renders its prompt and writes its event file.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Bodies up to this size stay in memory.
pub const INLINE_MAX: usize = 64 * 1024;

/// A request body shared by the runs one delivery fires.
#[derive(Debug)]
pub struct Body {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Memory(Vec<u8>),
    File(PathBuf),
}

impl Body {
    /// Keeps `data`, spilling it to a new file in `spool_dir` when it is large. When the
    /// file cannot be written the body stays in memory (and the error is logged).
    pub fn new(data: Vec<u8>, spool_dir: &Path) -> Body {
        let len = data.len();
        if len <= INLINE_MAX {
            return Body {
                inner: Inner::Memory(data),
            };
        }
        match spill(&data, spool_dir) {
            Ok(p) => Body {
                inner: Inner::File(p),
            },
            Err(e) => {
                log::warn!(event = "spool.error", dir = spool_dir.display().to_string().as_str();
                    "cannot spool a {len}-byte webhook body, keeping it in memory: {e}");
                Body {
                    inner: Inner::Memory(data),
                }
            }
        }
    }

    /// The body's bytes (read back from the spool file when it was spilled).
    pub fn bytes(&self) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
        match &self.inner {
            Inner::Memory(v) => Ok(std::borrow::Cow::Borrowed(v)),
            Inner::File(p) => std::fs::read(p).map(std::borrow::Cow::Owned),
        }
    }

    /// The template and event-file variables of the body: `body` (or `body_base64` when it
    /// is not UTF-8) and `payload` when it parses as JSON.
    pub fn vars(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let data = match self.bytes() {
            Ok(d) => d,
            Err(e) => {
                log::error!(event = "spool.error"; "cannot read a spooled webhook body back: {e}");
                return m;
            }
        };
        match std::str::from_utf8(&data) {
            Ok(s) => {
                m.insert("body".into(), s.into());
            }
            Err(_) => {
                m.insert("body_base64".into(), crate::ids::base64_std(&data).into());
            }
        }
        if let Ok(v) = serde_json::from_slice::<Value>(&data) {
            m.insert("payload".into(), v);
        }
        m
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Inner::File(p) = &self.inner {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes `data` to a new file in `dir`, readable by the daemon's user only.
fn spill(data: &[u8], dir: &Path) -> std::io::Result<PathBuf> {
    crate::fsio::create_dir_all_mode(dir, 0o700)?;
    let p = dir.join(format!("{}.body", crate::ids::new_run_id()));
    crate::fsio::write_new(&p, data, 0o600)?;
    Ok(p)
}

/// Removes spool files left by a daemon that stopped or died with runs still queued.
pub fn clean(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_stay_in_memory_and_large_ones_are_spooled_until_dropped() {
        let t = tempfile::tempdir().unwrap();
        let spool = t.path().join("spool");
        let small = Body::new(b"{\"a\":1}".to_vec(), &spool);
        assert_eq!(small.vars()["payload"]["a"], 1);
        assert!(!spool.exists() || std::fs::read_dir(&spool).unwrap().count() == 0);

        let big = vec![b'x'; INLINE_MAX + 1];
        let b = std::sync::Arc::new(Body::new(big.clone(), &spool));
        assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 1);
        assert_eq!(b.bytes().unwrap().as_ref(), &big[..]);
        let v = b.vars();
        assert!(v.get("payload").is_none());
        assert_eq!(v["body"].as_str().map(str::len), Some(INLINE_MAX + 1));
        let b2 = b.clone();
        drop(b);
        assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 1);
        drop(b2);
        assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
    }

    #[test]
    fn bodies_that_are_not_utf8_are_base64() {
        let t = tempfile::tempdir().unwrap();
        let v = Body::new(vec![0xff, 0xfe], t.path()).vars();
        assert_eq!(v["body_base64"], "//4=");
        assert!(v.get("body").is_none());
    }
}
