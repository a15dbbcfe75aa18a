//! The intake journal: a firing's first record (`queued` or `skipped`) made durable by one
//! device flush shared with every record that arrived meanwhile, instead of two fsyncs of
//! its own (the file's and its directory's), so a webhook's 202 waits for a group commit.
//!
//! Two segment files, `journal/0` and `journal/1`, each [`SEGMENT_BYTES`] long, zero-filled
//! and fsynced when made: an append overwrites blocks the file already has, so `fdatasync`
//! commits no metadata (one flush of the device). One segment is *live* and takes appends;
//! the other is retired, or being checkpointed.
//!
//! - **Append** ([`Journal::append`]): an entry (magic, generation, length, checksum, the
//!   record file's bytes) joins the batch that the next flush covers. Whoever finds no
//!   flush running becomes the batch's leader: one `pwrite` of every entry that arrived,
//!   one `fdatasync`, and every member gets its result. A batch that fails leaves the
//!   head where it was, and what its write may have left is covered by zeros (by the next
//!   batch, or before a switch): no refused record is replayed. The record is then served from
//!   memory ([`Journal::read`]) until its file exists: intake creates no file, so a 202
//!   costs no inode, no directory lock and no fsync of its own. A record that does not
//!   fit (too big, or the live segment is full while the other is still being
//!   checkpointed) is refused with `Ok(false)` and the caller writes its file the ordinary
//!   way (`fsio::write_atomic`): intake never waits for a checkpoint.
//! - **Checkpoint** (its own thread, [`Journal::start`]): when the live segment holds
//!   [`CHECKPOINT_BYTES`] or its oldest entry is [`checkpoint_after`] old, the other segment
//!   becomes live under a new generation (its header written and flushed first); the old
//!   segment's records are written to their files (new names; a file a worker wrote
//!   meanwhile, with a newer status, is left as it is — [`Journal::superseded`]), flushed
//!   (`syncfs` where there is one, else each file and its directory), and only then is the
//!   old segment retired (its header says so, flushed) and its records dropped from memory.
//! - **Replay** ([`Journal::open`], at start, under the data dir's lock, before runs are
//!   recovered): the entries of each live segment whose generation is its header's, up to
//!   the first that is torn (bad magic, length or checksum). The store restores each
//!   record whose file is missing or does not parse, keeps a file that parses (a newer
//!   status, written durably, or this one), and flushes what it kept; then both segments
//!   start over under a new generation. Entries of older generations left in a segment's
//!   tail never match its header, so they are never replayed.
//!
//! Deletions: a job's removal takes its `runs/<job>/` directory, and replay restores no
//! record into a directory that is gone. Retention lets go of a record the live segment
//! holds, and no file has yet, through [`Journal::discard`]: it is no longer served, the
//! checkpoint writes no file for it, and a *tombstone* entry (its run id; not waited for: it
//! goes with the next batch) keeps a replay from restoring the entries of that id before
//! it. A flood of `skipped` firings pruned as they arrive thus costs no file at all. A
//! record in the segment being checkpointed, or superseded by a worker's file, is not
//! discarded: retention waits for its checkpoint ([`Journal::settle`]) or leaves it for a
//! later prune, so a replay cannot bring a pruned record back. (A crash before a
//! tombstone's batch is flushed brings its record back: retention removes it again at the
//! job's next prune.)

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Size of each segment file.
pub const SEGMENT_BYTES: u64 = 4 << 20;
/// The header block at the start of a segment.
const HEADER_BYTES: u64 = 512;
/// A live segment this full is checkpointed at once.
pub const CHECKPOINT_BYTES: u64 = 1 << 20;
/// Largest record the journal takes; a larger one is made durable on its own.
pub const MAX_RECORD: usize = 256 << 10;
const HEADER_MAGIC: &[u8; 8] = b"BOGJRNL1";
const ENTRY_MAGIC: u32 = 0xB06E_3E01;
/// How a tombstone entry's data starts (a record is JSON, never a NUL); the run id follows.
const TOMBSTONE: &[u8] = b"\0discarded\0";
/// magic (4), generation (8), length (4), checksum (8).
const ENTRY_HEAD: usize = 24;

/// How old a live segment's oldest entry may get before it is checkpointed: one second, or
/// `BOG_JOURNAL_CHECKPOINT_MS` (for tests that need records to stay in the journal, and
/// for measuring; not a setting).
pub fn checkpoint_after() -> Duration {
    std::env::var("BOG_JOURNAL_CHECKPOINT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(1))
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records made durable through the journal.
    pub records: AtomicU64,
    /// Flushes of the journal (each covers one batch).
    pub flushes: AtomicU64,
    /// Records the journal could not take (too big, or full): made durable on their own.
    pub bypassed: AtomicU64,
    /// Checkpoints done.
    pub checkpoints: AtomicU64,
    /// Records retention removed while only the journal held them (no file ever written).
    pub discarded: AtomicU64,
}

/// A segment file and the records its entries hold.
#[derive(Debug)]
struct Segment {
    file: Arc<File>,
    path: PathBuf,
    /// Where each of its records goes, and its run id.
    records: Vec<(PathBuf, Box<str>)>,
    /// The run ids its entries hold.
    ids: HashSet<Box<str>>,
}

/// A record the journal holds and no file has yet.
#[derive(Debug)]
struct Held {
    job: Box<str>,
    data: Arc<[u8]>,
}

/// A record waiting for the next flush.
#[derive(Debug)]
struct Incoming {
    path: PathBuf,
    id: Box<str>,
    job: Box<str>,
    data: Arc<[u8]>,
}

/// The batch the next flush covers: its members wait on `result`.
#[derive(Debug, Default)]
struct Batch {
    result: Mutex<Option<Result<(), (io::ErrorKind, String)>>>,
}

#[derive(Debug)]
struct State {
    segs: [Segment; 2],
    /// The live segment.
    live: usize,
    /// Its generation (every entry written to it carries it).
    generation: u64,
    /// Where its next batch goes.
    head: u64,
    /// After a batch failed: the end of what it may have left past the head (its write can
    /// reach the page cache, and the disk, though its flush failed). Entries there carry the
    /// live generation, so the next batch is padded with zeros up to it, and a switch zeroes
    /// it first: a replay never brings back a record whose append was refused.
    stale_end: u64,
    /// When its first entry was written (None: it has none).
    first_at: Option<Instant>,
    /// The other segment still holds entries whose files may not be durable.
    other_pending: bool,
    /// A batch is being written and flushed.
    flushing: bool,
    /// Records waiting for the next flush.
    pending: Vec<Incoming>,
    /// Tombstones ([`Journal::discard`]) waiting for the next flush: nobody waits for them.
    tombstones: Vec<Box<str>>,
    /// What `pending` and `tombstones` take once framed.
    pending_framed: u64,
    next: Arc<Batch>,
    /// Callers of [`Journal::settle`] waiting: a checkpoint is due at once.
    wanted: usize,
    /// The last checkpoint (or segment switch) failed: [`Journal::settle`] does not wait.
    failing: bool,
    /// Flushed records not yet in their files (or superseded by a file), by run id.
    held: std::collections::HashMap<Box<str>, Held>,
    stop: bool,
}

#[derive(Debug)]
struct Inner {
    /// Flushes the data dir's filesystem (held open: see `sys::FsFlush`).
    fs: crate::sys::FsFlush,
    /// Held while the checkpoint writes record files, and while a job's directory is
    /// removed ([`Journal::files_guard`]): no record file is written into a directory being
    /// removed. Taken before `state`, never while holding it.
    files: Mutex<()>,
    state: Mutex<State>,
    changed: Condvar,
    stats: Stats,
    after: Duration,
}

/// The journal of one data dir (cheap to clone).
#[derive(Clone, Debug)]
pub struct Journal {
    inner: Arc<Inner>,
}

/// What replay found: the bytes of each entry, oldest first.
pub type Replayed = Vec<Vec<u8>>;

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn checksum(generation: u64, data: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(generation.to_le_bytes());
    h.update((data.len() as u32).to_le_bytes());
    h.update(data);
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    out
}

/// A segment's header: magic, generation, live flag, checksum of those.
fn header(generation: u64, live: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_BYTES as usize);
    b.extend_from_slice(HEADER_MAGIC);
    b.extend_from_slice(&generation.to_le_bytes());
    b.push(live as u8);
    let sum = checksum(generation, &b[..17]);
    b.extend_from_slice(&sum);
    b.resize(HEADER_BYTES as usize, 0);
    b
}

/// (generation, live) of a header; None when it is not one (a new or torn file).
fn read_header(b: &[u8]) -> Option<(u64, bool)> {
    if b.len() < 25 || &b[..8] != HEADER_MAGIC {
        return None;
    }
    let generation = u64::from_le_bytes(b[8..16].try_into().ok()?);
    if checksum(generation, &b[..17]) != b[17..25] {
        return None;
    }
    Some((generation, b[16] == 1))
}

fn entry(generation: u64, data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&ENTRY_MAGIC.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(generation, data));
    out.extend_from_slice(data);
}

/// The data of a tombstone entry for `run_id`.
fn tombstone(run_id: &str) -> Vec<u8> {
    [TOMBSTONE, run_id.as_bytes()].concat()
}

/// The run id a replayed entry discards, when it is a tombstone (see [`Journal::discard`]):
/// replay restores no entry of that id that comes before it (one after it was written
/// again since: a firing the work queue could not take records its id twice).
pub fn tombstone_id(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data.strip_prefix(TOMBSTONE)?).ok()
}

/// The entries of a segment that belong to its header's generation, up to the first torn
/// one (bad magic, generation, length or checksum); nothing when the segment is retired or
/// has no header. Returns the header's generation too. Read piece by piece: a segment is
/// never held in memory whole.
fn entries(seg: impl Read) -> io::Result<(u64, Replayed)> {
    let mut r = io::BufReader::with_capacity(64 << 10, seg.take(SEGMENT_BYTES));
    let mut head = [0u8; HEADER_BYTES as usize];
    if !read_full(&mut r, &mut head)? {
        return Ok((0, Vec::new()));
    }
    let Some((generation, live)) = read_header(&head) else {
        return Ok((0, Vec::new()));
    };
    let mut out = Vec::new();
    if !live {
        return Ok((generation, out));
    }
    let mut h = [0u8; ENTRY_HEAD];
    while read_full(&mut r, &mut h)? {
        let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let mut g = [0u8; 8];
        g.copy_from_slice(&h[4..12]);
        let g = u64::from_le_bytes(g);
        let len = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
        if magic != ENTRY_MAGIC || g != generation || len > MAX_RECORD {
            break;
        }
        let mut data = vec![0u8; len];
        if !read_full(&mut r, &mut data)? || checksum(g, &data) != h[16..24] {
            break;
        }
        out.push(data);
    }
    Ok((generation, out))
}

/// Fills `buf`; false when the input ends first.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Opens a segment and reads what it holds, making it (zero-filled, [`SEGMENT_BYTES`] long,
/// flushed) when it is missing or not that long.
fn open_segment(path: &Path) -> io::Result<(File, (u64, Replayed))> {
    let found = match File::open(path) {
        Ok(f) if f.metadata()?.len() == SEGMENT_BYTES => Some(entries(f)?),
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let found = match found {
        Some(found) => found,
        None => {
            // A new segment: zeros written (not a sparse file), so appends allocate nothing.
            let zeros = vec![0u8; 64 << 10];
            let tmp = path.with_extension("new");
            let _ = fs::remove_file(&tmp);
            let made = crate::sys::create_file(&tmp, 0o600, crate::sys::Create::New)
                .and_then(|f| {
                    let mut at = 0;
                    while at < SEGMENT_BYTES {
                        crate::sys::write_at(&f, &zeros, at)?;
                        at += zeros.len() as u64;
                    }
                    f.sync_all()
                })
                .and_then(|()| crate::sys::rename_durable(&tmp, path));
            if let Err(e) = made {
                // Never a partial segment left on a disk that may be full.
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            if let Some(d) = path.parent() {
                crate::fsio::sync_dir(d)?;
            }
            (0, Vec::new())
        }
    };
    let f = fs::OpenOptions::new().read(true).write(true).open(path)?;
    Ok((f, found))
}

fn write_header(f: &File, generation: u64, live: bool) -> io::Result<()> {
    crate::sys::write_at(f, &header(generation, live), 0)?;
    f.sync_data()
}

/// Writes each record the journal still holds to its file, whole (`fsio::create_whole`: a
/// temp file hard-linked to the name, which never replaces a file). A file that exists
/// already (a worker's newer status, or an earlier try) and a directory that is gone (the
/// job was deleted) are left as they are.
fn write_files(todo: &[(&Path, Option<Arc<[u8]>>)]) -> io::Result<()> {
    for (p, data) in todo {
        let Some(data) = data else { continue };
        match crate::fsio::create_whole(p, data, 0o600) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AlreadyExists | io::ErrorKind::NotFound
                ) => {}
            Err(e) => return Err(crate::store::ctx(e, "cannot write run record", p)),
        }
    }
    Ok(())
}

/// Fsyncs `files` and their directories (where there is no filesystem-wide flush); a file
/// or directory removed meanwhile (a job deleted, a record pruned) needs nothing.
fn flush_files(fs: &crate::sys::FsFlush, files: &[&Path]) -> io::Result<()> {
    if fs.flush()? {
        return Ok(());
    }
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let mut dirs = BTreeSet::new();
    for p in files {
        match crate::fsio::sync_file(p) {
            Ok(()) => {}
            Err(e) if gone(&e) => {}
            Err(e) => return Err(crate::store::ctx(e, "cannot flush", p)),
        }
        if let Some(d) = p.parent() {
            dirs.insert(d.to_path_buf());
        }
    }
    for d in dirs {
        match crate::fsio::sync_dir(&d) {
            Ok(()) => {}
            Err(e) if gone(&e) => {}
            Err(e) => return Err(crate::store::ctx(e, "cannot flush", &d)),
        }
    }
    Ok(())
}

impl Journal {
    /// Opens the journal under `data_dir/journal/` (making its segments the first time) and
    /// returns what the last daemon left in it, for the store to restore (see the module's
    /// "Replay"). Nothing is appended until [`Journal::restart`] is called with the replay done.
    pub fn open(data_dir: &Path) -> io::Result<(Journal, Replayed)> {
        let dir = data_dir.join("journal");
        crate::fsio::create_dir_all_mode(&dir, 0o700)
            .map_err(|e| crate::store::ctx(e, "cannot create", &dir))?;
        let mut replayed = Vec::new();
        let mut generation = 0;
        let mut segs = Vec::new();
        for i in 0..2 {
            let path = dir.join(i.to_string());
            let (file, (g, found)) =
                open_segment(&path).map_err(|e| crate::store::ctx(e, "cannot open", &path))?;
            generation = generation.max(g);
            replayed.push((g, found));
            segs.push(Segment {
                file: Arc::new(file),
                path,
                records: Vec::new(),
                ids: HashSet::new(),
            });
        }
        // Oldest generation first, so a run's entries come in the order they were written.
        replayed.sort_by_key(|(g, _)| *g);
        let replayed = replayed.into_iter().flat_map(|(_, e)| e).collect();
        let (Some(s1), Some(s0)) = (segs.pop(), segs.pop()) else {
            return Err(io::Error::other("journal segments missing"));
        };
        let state = State {
            segs: [s0, s1],
            live: 0,
            generation,
            head: HEADER_BYTES,
            stale_end: 0,
            first_at: None,
            other_pending: false,
            flushing: false,
            pending: Vec::new(),
            tombstones: Vec::new(),
            pending_framed: 0,
            next: Arc::default(),
            wanted: 0,
            failing: false,
            held: Default::default(),
            stop: false,
        };
        let fs = crate::sys::FsFlush::open(data_dir)
            .map_err(|e| crate::store::ctx(e, "cannot open", data_dir))?;
        let j = Journal {
            inner: Arc::new(Inner {
                fs,
                files: Mutex::new(()),
                state: Mutex::new(state),
                changed: Condvar::new(),
                stats: Stats::default(),
                after: checkpoint_after(),
            }),
        };
        Ok((j, replayed))
    }

    /// After replay, once every replayed record's file is durable: both segments start over
    /// (segment 0 live under a new generation, segment 1 retired).
    pub fn restart(&self) -> io::Result<()> {
        let mut s = relock(&self.inner.state);
        // Never an older generation than any entry a segment's tail may still hold, even
        // when both headers were lost: the clock's nanoseconds are a floor.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        s.generation = (s.generation + 1).max(now);
        let g = s.generation;
        write_header(&s.segs[1].file, g, false)
            .map_err(|e| crate::store::ctx(e, "cannot write", &s.segs[1].path))?;
        write_header(&s.segs[0].file, g, true)
            .map_err(|e| crate::store::ctx(e, "cannot write", &s.segs[0].path))?;
        s.live = 0;
        s.head = HEADER_BYTES;
        Ok(())
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Whether an unretired entry holds this run (retention must keep its file).
    pub fn holds(&self, run_id: &str) -> bool {
        let s = relock(&self.inner.state);
        s.segs.iter().any(|seg| seg.ids.contains(run_id))
            || s.pending.iter().any(|i| &*i.id == run_id)
    }

    /// Waits (at most `patience`) until no unretired entry holds any of `run_ids`, asking
    /// for a checkpoint at once: retention calls it before removing records, so that a
    /// replay never brings a removed record back. Returns false when some are still held,
    /// at once while checkpoints are failing (retention keeps them for a later prune).
    pub fn settle(&self, run_ids: &[&str], patience: Duration) -> bool {
        let inner = &self.inner;
        let until = Instant::now() + patience;
        let held = |s: &State| {
            run_ids.iter().any(|id| {
                s.segs.iter().any(|seg| seg.ids.contains(*id))
                    || s.pending.iter().any(|i| &*i.id == *id)
            })
        };
        let mut s = relock(&inner.state);
        if !held(&s) {
            return true;
        }
        s.wanted += 1;
        inner.changed.notify_all();
        let settled = loop {
            if !held(&s) {
                break true;
            }
            let now = Instant::now();
            // A checkpoint that keeps failing lets go of nothing: no use waiting for it.
            if now >= until || s.stop || s.failing {
                break false;
            }
            s = inner
                .changed
                .wait_timeout(s, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        s.wanted -= 1;
        settled
    }

    /// The bytes of a record the journal holds and no file has yet (None: read the file).
    pub fn read(&self, job_id: &str, run_id: &str) -> Option<Arc<[u8]>> {
        let s = relock(&self.inner.state);
        s.held
            .get(run_id)
            .filter(|h| &*h.job == job_id)
            .map(|h| h.data.clone())
    }

    /// The run ids of a job's records that have no file yet.
    pub fn held_ids(&self, job_id: &str) -> Vec<Box<str>> {
        let s = relock(&self.inner.state);
        s.held
            .iter()
            .filter(|(_, h)| &*h.job == job_id)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// A record's file was written durably (a newer status): the journal's copy is not
    /// served any more, and the checkpoint leaves that file alone.
    pub fn superseded(&self, run_id: &str) {
        relock(&self.inner.state).held.remove(run_id);
    }

    /// Whether a segment switch left the other segment to be checkpointed (tests hold the
    /// checkpoint there with [`Journal::files_guard`]).
    #[cfg(test)]
    pub fn switched(&self) -> bool {
        relock(&self.inner.state).other_pending
    }

    /// Keeps the checkpoint from writing record files while held (a job's directory is
    /// being removed).
    pub fn files_guard(&self) -> MutexGuard<'_, ()> {
        relock(&self.inner.files)
    }

    /// A job was deleted: its records are not served, and no file of theirs is written.
    pub fn forget_job(&self, job_id: &str) {
        relock(&self.inner.state)
            .held
            .retain(|_, h| &*h.job != job_id);
    }

    /// Retention removes these records: each one that only the live segment holds (flushed,
    /// not in the segment being checkpointed) and that has no file (not superseded by a
    /// worker's newer status) is let go of — not served any more, no file written for it by
    /// the checkpoint — and a tombstone for it goes with the next batch, so a replay does
    /// not restore it. Returns which ones (by index in `run_ids`); the caller removes their
    /// index entries. The others (not held, superseded, pending, being checkpointed, or no
    /// room left for a tombstone) are left as they were: a superseded one's file must stay
    /// until its entry is retired, or a crash before the tombstone's batch would bring the
    /// run back with its first status (`queued`, then `interrupted`).
    pub fn discard(&self, run_ids: &[&str]) -> Vec<bool> {
        let mut s = relock(&self.inner.state);
        let live = s.live;
        let mut out = Vec::with_capacity(run_ids.len());
        for id in run_ids {
            let need = (ENTRY_HEAD + TOMBSTONE.len() + id.len()) as u64;
            // The other segment may hold the id too (a firing recorded `queued`, then
            // `skipped` when the work queue was full, across a switch): its checkpoint
            // writes the copy it took, so the record is not the live segment's alone.
            let ok = s.segs[live].ids.contains(*id)
                && !s.segs[1 - live].ids.contains(*id)
                && s.held.contains_key(*id)
                && !s.pending.iter().any(|i| &*i.id == *id)
                && s.head + s.pending_framed + need <= SEGMENT_BYTES;
            if ok {
                s.segs[live].ids.remove(*id);
                s.held.remove(*id);
                s.tombstones.push((*id).into());
                s.pending_framed += need;
                self.inner.stats.discarded.fetch_add(1, Ordering::Relaxed);
            }
            out.push(ok);
        }
        out
    }

    /// Makes a firing's record, whose file would be `file`, durable through the journal:
    /// returns once a flush that covers it returned; the record is then served by
    /// [`Journal::read`] until the checkpoint writes its file. `Ok(false)`: the journal
    /// cannot take it now (too big, or full while a checkpoint runs); nothing was done and
    /// the caller must write the file durably itself.
    pub fn append(&self, file: &Path, job_id: &str, run_id: &str, data: &[u8]) -> io::Result<bool> {
        let inner = &self.inner;
        let mut s = relock(&inner.state);
        let need = (ENTRY_HEAD + data.len()) as u64;
        if data.len() > MAX_RECORD || s.stop || s.head + s.pending_framed + need > SEGMENT_BYTES {
            inner.stats.bypassed.fetch_add(1, Ordering::Relaxed);
            inner.changed.notify_all();
            return Ok(false);
        }
        // Entries are framed by the leader, under the generation of the segment they go
        // to: a segment switch meanwhile changes nothing here.
        s.pending_framed += need;
        s.pending.push(Incoming {
            path: file.to_path_buf(),
            id: run_id.into(),
            job: job_id.into(),
            data: data.into(),
        });
        let mine = s.next.clone();
        loop {
            if let Some(r) = relock(&mine.result).as_ref() {
                return r
                    .clone()
                    .map(|()| true)
                    .map_err(|(kind, msg)| io::Error::new(kind, msg));
            }
            if !s.flushing && Arc::ptr_eq(&s.next, &mine) {
                s = self.flush_batch(s, &mine);
                continue;
            }
            s = inner.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The leader's part: frames the pending records under the live generation, writes them
    /// at the head, flushes, and gives every member the result.
    fn flush_batch<'a>(
        &'a self,
        mut s: MutexGuard<'a, State>,
        mine: &Arc<Batch>,
    ) -> MutexGuard<'a, State> {
        let inner = &self.inner;
        let batch = std::mem::take(&mut s.pending);
        let tombstones = std::mem::take(&mut s.tombstones);
        let framed = std::mem::take(&mut s.pending_framed);
        s.next = Arc::default();
        let generation = s.generation;
        let mut buf = Vec::with_capacity(framed as usize);
        // A failed batch loses its tombstones: their records may come back at a replay
        // (retention removes them again), never the other way round. They go before the
        // records: a record of the same id in this batch was appended after its discard
        // (`discard` lets go of none that is pending), and a tombstone takes only the
        // entries before it.
        for id in &tombstones {
            entry(generation, &tombstone(id), &mut buf);
        }
        for r in &batch {
            entry(generation, &r.data, &mut buf);
        }
        let live = s.live;
        let offset = s.head;
        s.head += buf.len() as u64;
        // Zeros over what a failed batch left after this one's end.
        let end = offset + buf.len() as u64;
        if s.stale_end > end {
            buf.resize(buf.len() + (s.stale_end - end) as usize, 0);
        }
        s.flushing = true;
        let file = s.segs[live].file.clone();
        drop(s);
        let r = crate::sys::write_at(&file, &buf, offset).and_then(|()| file.sync_data());
        let written_end = offset + buf.len() as u64;
        drop(buf);
        let mut s = relock(&inner.state);
        s.flushing = false;
        match &r {
            Ok(()) => {
                s.stale_end = 0;
                inner
                    .stats
                    .records
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                inner.stats.flushes.fetch_add(1, Ordering::Relaxed);
                if s.first_at.is_none() {
                    s.first_at = Some(Instant::now());
                }
                for r in batch {
                    s.segs[live].ids.insert(r.id.clone());
                    s.segs[live].records.push((r.path, r.id.clone()));
                    s.held.insert(
                        r.id,
                        Held {
                            job: r.job,
                            data: r.data,
                        },
                    );
                }
            }
            // The next batch goes where this one went, and covers what this one may have
            // left (its members were told it failed).
            Err(_) => {
                s.head = offset;
                s.stale_end = s.stale_end.max(written_end);
            }
        }
        *relock(&mine.result) = Some(r.map_err(|e| (e.kind(), e.to_string())));
        inner.changed.notify_all();
        s
    }

    /// Starts the checkpoint thread; [`Journal::close`] ends it.
    pub fn start(&self) -> io::Result<std::thread::JoinHandle<()>> {
        let j = self.clone();
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || j.checkpoints())
    }

    /// Stops taking records, checkpoints what the journal holds and ends the thread. A
    /// checkpoint that fails then is not tried again: its records stay in the journal, and
    /// the next start restores them.
    pub fn close(&self) {
        relock(&self.inner.state).stop = true;
        self.inner.changed.notify_all();
    }

    /// A checkpoint step failed (its `failures`-th time in a row): at stop, gives up
    /// (returns false: never a stop held by a disk that fails; what the journal holds is
    /// durable there, and the next start restores it); otherwise marks the journal failing
    /// (appenders and `settle` stop waiting for it), logs, and backs off before the retry.
    fn failed(
        &self,
        mut s: MutexGuard<'_, State>,
        what: &str,
        e: &io::Error,
        failures: u32,
    ) -> bool {
        let inner = &self.inner;
        if s.stop {
            log::error!(event = "journal.error"; "{what} at stop: {e}; its records stay in the journal, restored at the next start");
            return false;
        }
        s.failing = true;
        inner.changed.notify_all();
        drop(s);
        log::error!(event = "journal.error"; "{what}: {e}; records are made durable one by one meanwhile; trying again");
        std::thread::sleep(Duration::from_secs(1).min(inner.after) * failures.min(5));
        true
    }

    fn checkpoints(&self) {
        let inner = &self.inner;
        let mut failures = 0u32;
        loop {
            let mut s = relock(&inner.state);
            // Wait until the live segment is due (or the other still needs its flush).
            loop {
                if s.other_pending {
                    break;
                }
                let due = match s.first_at {
                    None => None,
                    Some(_) if s.stop || s.wanted > 0 || s.head >= CHECKPOINT_BYTES => break,
                    Some(t) => Some(t + inner.after),
                };
                if s.stop && !s.flushing && s.pending.is_empty() {
                    return;
                }
                s = match due {
                    None => inner.changed.wait(s).unwrap_or_else(|p| p.into_inner()),
                    Some(t) => {
                        let now = Instant::now();
                        if now >= t {
                            break;
                        }
                        inner
                            .changed
                            .wait_timeout(s, t - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                };
            }
            if !s.other_pending {
                // Switch: no batch may be in flight while the live segment changes.
                while s.flushing {
                    s = inner.changed.wait(s).unwrap_or_else(|p| p.into_inner());
                }
                let next = 1 - s.live;
                let g = s.generation + 1;
                // What a failed batch left in the live segment is zeroed before it stops
                // taking appends (it is replayed until it is retired).
                let cleared = if s.stale_end > s.head {
                    let zeros = vec![0u8; (s.stale_end - s.head) as usize];
                    let f = &s.segs[s.live].file;
                    crate::sys::write_at(f, &zeros, s.head).and_then(|()| f.sync_data())
                } else {
                    Ok(())
                };
                if let Err(e) = cleared.and_then(|()| write_header(&s.segs[next].file, g, true)) {
                    failures += 1;
                    if !self.failed(s, "cannot start a journal segment", &e, failures) {
                        return;
                    }
                    continue;
                }
                s.generation = g;
                s.live = next;
                s.head = HEADER_BYTES;
                s.stale_end = 0;
                s.first_at = None;
                s.other_pending = true;
            }
            let old = 1 - s.live;
            let records = std::mem::take(&mut s.segs[old].records);
            let todo: Vec<(&Path, Option<Arc<[u8]>>)> = records
                .iter()
                .map(|(p, id)| (p.as_path(), s.held.get(id).map(|h| h.data.clone())))
                .collect();
            let file = s.segs[old].file.clone();
            let path = s.segs[old].path.clone();
            let generation = s.generation;
            drop(s);
            let began = Instant::now();
            let written = {
                let _files = relock(&inner.files);
                // Records of a job deleted since the snapshot: its directory is gone.
                write_files(&todo)
            };
            let r = written
                .and_then(|()| {
                    let paths: Vec<&Path> = records.iter().map(|(p, _)| p.as_path()).collect();
                    flush_files(&inner.fs, &paths)
                })
                .and_then(|()| {
                    write_header(&file, generation, false)
                        .map_err(|e| crate::store::ctx(e, "cannot write", &path))
                });
            log::debug!(event = "journal.checkpoint", records = records.len(), ms = began.elapsed().as_millis() as u64;
                "{} record(s) written and flushed in {:?}", records.len(), began.elapsed());
            let mut s = relock(&inner.state);
            match r {
                Ok(()) => {
                    failures = 0;
                    s.failing = false;
                    s.other_pending = false;
                    s.segs[old].ids = HashSet::new();
                    // Their files are durable: served from there now (unless superseded
                    // already, then by the newer file).
                    for ((_, id), (_, data)) in records.iter().zip(&todo) {
                        let same = match (s.held.get(id), data) {
                            (Some(h), Some(d)) => Arc::ptr_eq(&h.data, d),
                            _ => false,
                        };
                        if same {
                            s.held.remove(id);
                        }
                    }
                    if s.held.is_empty() {
                        s.held = Default::default();
                    }
                    inner.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                    inner.changed.notify_all();
                }
                Err(e) => {
                    drop(todo);
                    s.segs[old].records = records;
                    failures += 1;
                    if !self.failed(s, "journal checkpoint failed", &e, failures) {
                        return;
                    }
                }
            }
        }
    }
}

/// Makes a file that was written without fsync durable (its data, then the rename in its
/// directory): for a record the journal did not take, and for files replay keeps.
pub fn make_durable(path: &Path) -> io::Result<()> {
    crate::fsio::sync_file(path)?;
    match path.parent() {
        Some(d) => crate::fsio::sync_dir_grouped(d),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_bytes(dir: &Path, i: usize) -> Vec<u8> {
        fs::read(dir.join("journal").join(i.to_string())).unwrap()
    }

    fn opened(d: &Path) -> Journal {
        let (j, replayed) = Journal::open(d).unwrap();
        assert!(replayed.is_empty());
        j.restart().unwrap();
        j
    }

    #[test]
    fn appended_records_are_served_and_replayed_after_a_crash_not_after_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let j = opened(d.path());
        // Concurrent appenders share flushes; every one gets its answer.
        std::thread::scope(|sc| {
            for t in 0..8 {
                let j = &j;
                let dir = d.path();
                sc.spawn(move || {
                    for i in 0..25 {
                        let rec = format!("{{\"t\":{t},\"i\":{i}}}");
                        let id = format!("run_{t}_{i}");
                        let f = dir.join(format!("{id}.json"));
                        assert!(j.append(&f, "job_x", &id, rec.as_bytes()).unwrap());
                    }
                });
            }
        });
        assert_eq!(j.stats().records.load(Ordering::Relaxed), 200);
        assert!(j.stats().flushes.load(Ordering::Relaxed) <= 200);
        assert!(j.holds("run_3_7"));
        assert!(!j.holds("run_9_0"));
        assert_eq!(
            j.read("job_x", "run_3_7").as_deref(),
            Some(&b"{\"t\":3,\"i\":7}"[..])
        );
        assert!(j.read("job_y", "run_3_7").is_none(), "another job's id");
        assert_eq!(j.held_ids("job_x").len(), 200);
        // No file is written before a checkpoint.
        assert!(!d.path().join("run_3_7.json").exists());
        drop(j);
        // "Crash": open again without a checkpoint.
        let (j, replayed) = Journal::open(d.path()).unwrap();
        let all: Vec<String> = replayed
            .iter()
            .map(|r| String::from_utf8(r.clone()).unwrap())
            .collect();
        assert_eq!(all.len(), 200);
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 200);
        // Per writer, in the order written.
        let t0: Vec<&String> = all.iter().filter(|s| s.starts_with("{\"t\":0,")).collect();
        let want: Vec<String> = (0..25).map(|i| format!("{{\"t\":0,\"i\":{i}}}")).collect();
        assert_eq!(t0, want.iter().collect::<Vec<_>>());
        j.restart().unwrap();
        drop(j);
        let (_j, replayed) = Journal::open(d.path()).unwrap();
        assert!(replayed.is_empty(), "a restart retires what was replayed");
    }

    #[test]
    fn a_torn_tail_and_older_generations_are_not_replayed() {
        let d = tempfile::tempdir().unwrap();
        let j = opened(d.path());
        let f = d.path().join("r.json");
        for i in 0..10 {
            j.append(
                &f,
                "job_x",
                &format!("run_{i}"),
                format!("record {i}").as_bytes(),
            )
            .unwrap();
        }
        drop(j);
        // Tear the 8th entry: replay stops before it.
        let path = d.path().join("journal").join("0");
        let mut seg = segment_bytes(d.path(), 0);
        let mut at = HEADER_BYTES as usize;
        for _ in 0..7 {
            let len = u32::from_le_bytes(seg[at + 12..at + 16].try_into().unwrap()) as usize;
            at += ENTRY_HEAD + len;
        }
        seg[at + ENTRY_HEAD] ^= 0xff;
        fs::write(&path, &seg).unwrap();
        let (j, replayed) = Journal::open(d.path()).unwrap();
        assert_eq!(replayed.len(), 7);
        assert_eq!(replayed[6], b"record 6");
        // A new generation over the old bytes: only its own entries count.
        j.restart().unwrap();
        j.append(&f, "job_x", "run_new", b"new").unwrap();
        drop(j);
        let (_j, replayed) = Journal::open(d.path()).unwrap();
        assert_eq!(replayed, vec![b"new".to_vec()]);
    }

    #[test]
    fn a_checkpoint_writes_the_files_leaves_newer_ones_and_retires_the_entries() {
        let d = tempfile::tempdir().unwrap();
        let j = opened(d.path());
        let t = j.start().unwrap();
        let a = d.path().join("run_a.json");
        let b = d.path().join("run_b.json");
        assert!(j.append(&a, "job_x", "run_a", b"queued a").unwrap());
        assert!(j.append(&b, "job_x", "run_b", b"queued b").unwrap());
        // A worker wrote b's next status before the checkpoint: that file stays.
        fs::write(&b, b"running b").unwrap();
        j.superseded("run_b");
        assert!(j.read("job_x", "run_b").is_none());
        let deadline = Instant::now() + Duration::from_secs(30);
        while j.stats().checkpoints.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "no checkpoint within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(fs::read(&a).unwrap(), b"queued a");
        assert_eq!(fs::read(&b).unwrap(), b"running b");
        assert!(!j.holds("run_a"));
        assert!(j.read("job_x", "run_a").is_none(), "read from its file now");
        // A deleted job's records get no file.
        let gone = d.path().join("gone");
        fs::create_dir(&gone).unwrap();
        let c = gone.join("run_c.json");
        assert!(j.append(&c, "job_gone", "run_c", b"c").unwrap());
        {
            let _g = j.files_guard();
            j.forget_job("job_gone");
            fs::remove_dir(&gone).unwrap();
        }
        j.close();
        t.join().unwrap();
        // close() checkpointed what was left; no more appends are taken.
        assert!(!j.holds("run_c"));
        assert!(!gone.exists());
        assert!(!j.append(&a, "job_x", "run_d", b"d").unwrap());
        drop(j);
        let (_j, replayed) = Journal::open(d.path()).unwrap();
        assert!(replayed.is_empty());
    }

    /// Polls `done` every 10 ms; fails when it does not hold within 30 s.
    fn within_30s(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "no {what} within 30 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Retention lets go of a record only the live segment holds: it is not served, its
    /// tombstone (flushed with the next batch) keeps a replay from restoring it, and the
    /// checkpoint writes no file for it. One in the segment being checkpointed is kept.
    #[test]
    fn discarded_records_get_no_file_and_are_not_replayed() {
        let d = tempfile::tempdir().unwrap();
        let j = opened(d.path());
        let p = |id: &str| d.path().join(format!("{id}.json"));
        for id in ["run_a", "run_b", "run_c"] {
            assert!(j.append(&p(id), "job_x", id, id.as_bytes()).unwrap());
        }
        assert_eq!(j.discard(&["run_a", "run_zz"]), vec![true, false]);
        assert!(!j.holds("run_a"));
        assert!(j.read("job_x", "run_a").is_none());
        assert_eq!(j.held_ids("job_x").len(), 2);
        assert_eq!(j.discard(&["run_a"]), vec![false], "discarded twice");
        // The next record's batch carries the tombstone.
        assert!(j.append(&p("run_d"), "job_x", "run_d", b"run_d").unwrap());
        {
            // "Crash": what a replay finds.
            let (_j2, replayed) = Journal::open(d.path()).unwrap();
            let gone: Vec<&str> = replayed.iter().filter_map(|e| tombstone_id(e)).collect();
            assert_eq!(gone, ["run_a"]);
            let records: Vec<&[u8]> = replayed
                .iter()
                .filter(|e| tombstone_id(e).is_none())
                .map(|e| e.as_slice())
                .collect();
            assert_eq!(records, [&b"run_a"[..], b"run_b", b"run_c", b"run_d"]);
        }
        // The checkpoint writes the others' files, not the discarded one's; while it holds
        // a segment, that segment's records are not discarded.
        let files = j.files_guard();
        let t = j.start().unwrap();
        within_30s("a switch", || j.switched());
        assert_eq!(j.discard(&["run_b"]), vec![false]);
        assert!(j.holds("run_b"));
        drop(files);
        within_30s("a checkpoint", || {
            j.stats().checkpoints.load(Ordering::Relaxed) > 0
        });
        assert!(!p("run_a").exists(), "a discarded record got a file");
        for id in ["run_b", "run_c", "run_d"] {
            assert_eq!(fs::read(p(id)).unwrap(), id.as_bytes());
        }
        assert_eq!(j.stats().discarded.load(Ordering::Relaxed), 1);
        j.close();
        t.join().unwrap();
    }

    /// A firing whose work queue was full is recorded twice under one run id (`queued`,
    /// then `skipped`): when a segment switch falls between the two, the segment being
    /// checkpointed holds the id too, and its checkpoint writes the `queued` copy it took.
    /// Such a record is not discarded: it would get a file after all, and no index entry.
    #[test]
    fn a_record_the_checkpointed_segment_holds_too_is_not_discarded() {
        let d = tempfile::tempdir().unwrap();
        let j = opened(d.path());
        let p = d.path().join("run_q.json");
        assert!(j.append(&p, "job_x", "run_q", b"queued").unwrap());
        let files = j.files_guard();
        let t = j.start().unwrap();
        within_30s("a switch", || j.switched());
        // The checkpoint took the `queued` copy; the `skipped` one goes to the live segment.
        assert!(j.append(&p, "job_x", "run_q", b"skipped").unwrap());
        assert_eq!(j.discard(&["run_q"]), vec![false]);
        drop(files);
        within_30s("a checkpoint", || {
            j.stats().checkpoints.load(Ordering::Relaxed) > 0
        });
        assert_eq!(j.stats().discarded.load(Ordering::Relaxed), 0);
        j.close();
        t.join().unwrap();
    }

    /// Appends "record a", then a batch of two records that fails (each member gets the
    /// error), and leaves past the head what such a batch can leave: its entries, whole.
    fn fail_a_batch(j: &Journal, d: &Path) {
        let f = d.join("r.json");
        assert!(j.append(&f, "job_x", "run_a", b"record a").unwrap());
        let path = d.join("journal").join("0");
        let real = {
            let mut s = relock(&j.inner.state);
            assert_eq!(s.live, 0);
            // A flush in progress: the next two appends wait, and form one batch.
            s.flushing = true;
            s.segs[0].file.clone()
        };
        let (offset, generation) = std::thread::scope(|sc| {
            let failed: Vec<_> = ["run_x1", "run_x2"]
                .into_iter()
                .map(|id| {
                    let f = &f;
                    sc.spawn(move || j.append(f, "job_x", id, b"record xx"))
                })
                .collect();
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut s = relock(&j.inner.state);
            while s.pending.len() < 2 {
                assert!(Instant::now() < deadline, "the appends did not queue");
                s = j
                    .inner
                    .changed
                    .wait_timeout(s, Duration::from_millis(50))
                    .unwrap()
                    .0;
            }
            // The device refuses the batch (here: a handle that cannot write).
            s.segs[0].file = Arc::new(File::open(&path).unwrap());
            s.flushing = false;
            let at = (s.head, s.generation);
            j.inner.changed.notify_all();
            drop(s);
            for t in failed {
                assert!(t.join().unwrap().is_err(), "a failed flush answers Ok");
            }
            at
        });
        // What a write that failed at its flush leaves: the batch's entries, whole.
        let mut stale = Vec::new();
        entry(generation, b"record xx", &mut stale);
        entry(generation, b"record xx", &mut stale);
        crate::sys::write_at(&real, &stale, offset).unwrap();
        relock(&j.inner.state).segs[0].file = real;
        assert!(!j.holds("run_x1") && !j.holds("run_x2"));
    }

    /// A batch whose write or flush failed may have left its entries past the head (in the
    /// page cache, which a later flush writes, or on disk): every member was told it failed,
    /// and none of them may come back at a replay. The next batch goes where the failed one
    /// went; when it is shorter, what the failed one left after it was once still there,
    /// whole entries of the live generation, and a replay brought them back.
    #[test]
    fn entries_of_a_failed_batch_are_not_replayed() {
        let d = tempfile::tempdir().unwrap();
        let j = opened(d.path());
        fail_a_batch(&j, d.path());
        // The next record, as long as one of them, goes where the failed batch went.
        let f = d.path().join("r.json");
        assert!(j.append(&f, "job_x", "run_c", b"record cc").unwrap());
        drop(j);
        let (_j, replayed) = Journal::open(d.path()).unwrap();
        assert_eq!(
            replayed,
            vec![b"record a".to_vec(), b"record cc".to_vec()],
            "a record whose append failed was replayed"
        );
    }

    /// The same when no batch follows: the segment switches, and a crash before its
    /// checkpoint retires it replays it (here the checkpoint is held at its files).
    #[test]
    fn entries_of_a_failed_batch_are_not_replayed_from_a_segment_being_checkpointed() {
        let d = tempfile::tempdir().unwrap();
        let j = opened(d.path());
        fail_a_batch(&j, d.path());
        let files = j.files_guard();
        let t = j.start().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !relock(&j.inner.state).other_pending {
            assert!(Instant::now() < deadline, "no switch within 30 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        // "Crash" while the old segment is being checkpointed.
        let (_j2, replayed) = Journal::open(d.path()).unwrap();
        assert_eq!(
            replayed,
            vec![b"record a".to_vec()],
            "a record whose append failed was replayed"
        );
        drop(files);
        j.close();
        t.join().unwrap();
    }

    /// Retention asks the journal to let go of records before removing them; while the
    /// checkpoint keeps failing (a full disk, a directory that cannot be written), it is told
    /// at once that they are still held. It once waited its whole patience (10 s) every
    /// time, and a worker prunes after each run, holding its job's deletion guard.
    #[test]
    fn settle_does_not_wait_on_a_failing_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let j = opened(d.path());
        // Its record's directory is a file: the checkpoint cannot write it.
        fs::write(d.path().join("notadir"), b"").unwrap();
        let f = d.path().join("notadir").join("run_a.json");
        assert!(j.append(&f, "job_x", "run_a", b"record a").unwrap());
        let t = j.start().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while j.stats().checkpoints.load(Ordering::Relaxed) == 0
            && !relock(&j.inner.state).other_pending
        {
            assert!(Instant::now() < deadline, "no checkpoint within 60 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let j2 = j.clone();
        let waiter = std::thread::spawn(move || {
            let _ = tx.send(j2.settle(&["run_a"], Duration::from_secs(3600)));
        });
        let settled = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("settle waited on a checkpoint that keeps failing");
        assert!(!settled);
        assert!(j.holds("run_a"));
        assert_eq!(j.read("job_x", "run_a").as_deref(), Some(&b"record a"[..]));
        waiter.join().unwrap();
        j.close();
        t.join().unwrap();
    }

    /// A segment that cannot be made (a full disk at start; here a directory in its place)
    /// is a clear error naming it, and leaves no partial segment behind: one once stayed,
    /// up to 4 MiB of a disk that was already full.
    #[test]
    fn a_segment_that_cannot_be_made_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("journal");
        fs::create_dir_all(dir.join("1").join("x")).unwrap();
        let e = Journal::open(d.path()).unwrap_err().to_string();
        assert!(e.contains(&dir.join("1").display().to_string()), "{e}");
        assert!(!dir.join("1.new").exists(), "a partial segment was left");
    }

    #[test]
    fn records_too_big_are_refused_for_the_caller_to_write() {
        let d = tempfile::tempdir().unwrap();
        let j = opened(d.path());
        let big = vec![b'x'; MAX_RECORD + 1];
        assert!(!j
            .append(&d.path().join("r"), "job_x", "run_big", &big)
            .unwrap());
        assert_eq!(j.stats().bypassed.load(Ordering::Relaxed), 1);
        assert!(!j.holds("run_big"));
    }
}
