//! The output of running agents as they write it, for `job logs -f` and
//! `GET /jobs/{id}/runs/{run_id}/output` (README "REST API").
//!
//! Each running run has a [`Live`]: the newest [`KEEP`] bytes of its stdout, redacted line by
//! line before anyone can read them (a secret split across two reads of the pipe is still
//! caught, because a line is only published once it is complete), with an absolute offset so
//! that every follower reads at its own pace from its own position. A follower that falls
//! more than [`KEEP`] behind is told how many bytes it missed. [`Board`] maps run ids to
//! their `Live` while the run lasts. A leaf: no other module of the crate is used.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Bytes of a run's newest output kept for followers.
pub const KEEP: usize = 1 << 20;
/// A line longer than this is published in pieces of this size.
const MAX_LINE: usize = 64 * 1024;

/// Replaces secrets in a complete line of output.
pub type Redact = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// One running run's output.
pub struct Live {
    state: Mutex<State>,
    more: Condvar,
    redact: Option<Redact>,
}

#[derive(Default)]
struct State {
    /// Published bytes, `start..end` as absolute offsets.
    buf: VecDeque<u8>,
    start: u64,
    /// A line not yet complete (not yet redacted, not yet published).
    partial: Vec<u8>,
    finished: bool,
}

/// What a follower gets: the bytes at and after its offset, where it goes next, and how many
/// bytes it missed because they were dropped before it read them.
#[derive(Debug, Default, PartialEq)]
pub struct Chunk {
    pub data: Vec<u8>,
    pub next: u64,
    pub missed: u64,
    /// The run is over and everything has been read.
    pub done: bool,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

impl Live {
    pub fn new(redact: Option<Redact>) -> Arc<Live> {
        Arc::new(Live {
            state: Mutex::new(State::default()),
            more: Condvar::new(),
            redact,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends what the agent wrote; complete lines are published.
    pub fn push(&self, data: &[u8]) {
        let mut s = self.lock();
        s.partial.extend_from_slice(data);
        let mut published = false;
        while let Some(i) = s.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = s.partial.drain(..=i).collect();
            self.publish(&mut s, &line);
            published = true;
        }
        while s.partial.len() >= MAX_LINE {
            let piece: Vec<u8> = s.partial.drain(..MAX_LINE).collect();
            self.publish(&mut s, &piece);
            published = true;
        }
        drop(s);
        if published {
            self.more.notify_all();
        }
    }

    /// The run is over: what is left of a line is published, and followers end.
    pub fn finish(&self) {
        let mut s = self.lock();
        let rest = std::mem::take(&mut s.partial);
        if !rest.is_empty() {
            self.publish(&mut s, &rest);
        }
        s.finished = true;
        drop(s);
        self.more.notify_all();
    }

    fn publish(&self, s: &mut State, piece: &[u8]) {
        match &self.redact {
            Some(r) => {
                let text = r(&String::from_utf8_lossy(piece));
                s.buf.extend(text.as_bytes());
            }
            None => s.buf.extend(piece),
        }
        let over = s.buf.len().saturating_sub(KEEP);
        if over > 0 {
            s.buf.drain(..over);
            s.start += over as u64;
        }
    }

    /// Up to `max` bytes from offset `from`, waiting up to `wait` for some to arrive.
    pub fn read_from(&self, from: u64, max: usize, wait: Duration) -> Chunk {
        let mut s = self.lock();
        let end = |s: &State| s.start + s.buf.len() as u64;
        if from >= end(&s) && !s.finished {
            s = self
                .more
                .wait_timeout_while(s, wait, |s| from >= end(s) && !s.finished)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let missed = s.start.saturating_sub(from);
        let from = from.max(s.start);
        let skip = (from - s.start) as usize;
        let data: Vec<u8> = s.buf.iter().skip(skip).take(max).copied().collect();
        let next = from + data.len() as u64;
        Chunk {
            done: s.finished && next >= end(&s),
            data,
            next,
            missed,
        }
    }
}

/// The `Live` output of every running run, by run id.
#[derive(Default)]
pub struct Board {
    runs: Mutex<HashMap<String, Arc<Live>>>,
}

impl Board {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Live>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, run_id: &str, live: Arc<Live>) {
        self.lock().insert(run_id.to_string(), live);
    }

    /// Forgets a run (its followers keep their `Arc` and end when it is finished).
    pub fn remove(&self, run_id: &str) {
        self.lock().remove(run_id);
    }

    pub fn get(&self, run_id: &str) -> Option<Arc<Live>> {
        self.lock().get(run_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::ZERO;

    #[test]
    fn lines_are_published_whole_and_redacted() {
        let l = Live::new(Some(Arc::new(|s: &str| s.replace("s3cret", "[redacted]"))));
        l.push(b"key=s3");
        assert_eq!(l.read_from(0, 100, NOW).data, b"");
        l.push(b"cret\nnext");
        let c = l.read_from(0, 100, NOW);
        assert_eq!(c.data, b"key=[redacted]\n");
        assert!(!c.done);
        l.finish();
        let c2 = l.read_from(c.next, 100, NOW);
        assert_eq!(c2.data, b"next");
        assert!(c2.done);
    }

    #[test]
    fn a_slow_follower_is_told_what_it_missed() {
        let l = Live::new(None);
        let line = vec![b'x'; 1023];
        for _ in 0..(KEEP / 1024 + 10) {
            l.push(&line);
            l.push(b"\n");
        }
        let c = l.read_from(0, 10, NOW);
        assert_eq!(c.missed, 10 * 1024);
        assert_eq!(c.next, 10 * 1024 + 10);
        // A long line with no newline is published in pieces.
        let l = Live::new(None);
        l.push(&vec![b'y'; MAX_LINE + 5]);
        assert_eq!(l.read_from(0, usize::MAX, NOW).data.len(), MAX_LINE);
    }

    #[test]
    fn a_waiting_follower_wakes_when_a_line_arrives() {
        let l = Live::new(None);
        let l2 = l.clone();
        let t = std::thread::spawn(move || l2.read_from(0, 100, Duration::from_secs(30)));
        // Whether the follower already waits or not, it gets the line.
        l.push(b"hello\n");
        let c = t.join().unwrap();
        assert_eq!(c.data, b"hello\n");
    }
}
