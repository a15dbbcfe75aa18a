//! One half (read or write) of an accepted connection.
//!
//! Patched (PATCHES.md, "Deadlines"): every read and write is bounded by the connection's
//! deadline, a point in time shared by both halves through [`Deadlines`]. Before each read
//! the socket's own timeout is set to the time left, so a client that trickles one byte at
//! a time cannot stretch a request past its deadline. An expired deadline is an
//! `ErrorKind::TimedOut` error, which the connection answers with 408 where it can.
//! Both halves share one file descriptor (no `dup`), and TLS support is removed.

use std::io::Result as IoResult;
use std::io::{Error, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connection::Connection;

/// No deadline.
const NONE: u64 = u64::MAX;
/// A socket timeout within this much of the wanted one is left as it is (saves a syscall
/// per read; a deadline is overshot by at most this much).
const SLACK: Duration = Duration::from_millis(50);

/// The deadlines of one connection, shared by its two halves and its requests.
pub struct Deadlines {
    epoch: Instant,
    /// Milliseconds since `epoch`, or `NONE`.
    read: AtomicU64,
    write: AtomicU64,
    /// Set when the connection must close after the current request (its body was not
    /// read to the end, so the next request's first byte is unknown).
    close: AtomicBool,
    /// Counts expired deadlines (shared with the server's statistics).
    timeouts: Arc<AtomicU64>,
}

impl Deadlines {
    pub(crate) fn new(timeouts: Arc<AtomicU64>) -> Arc<Deadlines> {
        Arc::new(Deadlines {
            epoch: Instant::now(),
            read: AtomicU64::new(NONE),
            write: AtomicU64::new(NONE),
            close: AtomicBool::new(false),
            timeouts,
        })
    }

    fn encode(&self, within: Option<Duration>) -> u64 {
        match within {
            None => NONE,
            Some(d) => {
                let at = self.epoch.elapsed().saturating_add(d);
                std::convert::TryFrom::try_from(at.as_millis()).unwrap_or(NONE - 1)
            }
        }
    }

    /// Reads must complete within `within` from now (`None`: no deadline).
    pub(crate) fn read_within(&self, within: Option<Duration>) {
        self.read.store(self.encode(within), Ordering::Relaxed);
    }

    /// Writes must complete within `within` from now (`None`: no deadline).
    pub(crate) fn write_within(&self, within: Option<Duration>) {
        self.write.store(self.encode(within), Ordering::Relaxed);
    }

    /// The connection closes after the current request.
    pub(crate) fn close_after_this(&self) {
        self.close.store(true, Ordering::Relaxed);
    }

    pub(crate) fn must_close(&self) -> bool {
        self.close.load(Ordering::Relaxed)
    }

    /// Time left until the deadline in `slot`; `Err` once it has passed.
    fn left(&self, slot: &AtomicU64) -> IoResult<Option<Duration>> {
        let at = slot.load(Ordering::Relaxed);
        if at == NONE {
            return Ok(None);
        }
        let now = self.epoch.elapsed();
        let at = Duration::from_millis(at);
        if now >= at {
            return Err(self.expired());
        }
        Ok(Some(at - now))
    }

    fn expired(&self) -> Error {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        Error::new(
            ErrorKind::TimedOut,
            "the client did not send the request in time",
        )
    }
}

pub struct RefinedTcpStream {
    stream: Arc<Connection>,
    close_read: bool,
    close_write: bool,
    deadlines: Arc<Deadlines>,
    /// The timeout last set on the socket for this half's direction.
    set_to: Option<Duration>,
    /// The timeout used when no deadline is set.
    fallback: Option<Duration>,
}

impl RefinedTcpStream {
    /// Splits `stream` into its read half and its write half. `default_write` bounds each
    /// write when no write deadline is set.
    pub(crate) fn new(
        stream: Connection,
        deadlines: Arc<Deadlines>,
        default_write: Duration,
    ) -> (RefinedTcpStream, RefinedTcpStream) {
        let _ = stream.set_write_timeout(Some(default_write));
        let stream = Arc::new(stream);
        let read = RefinedTcpStream {
            stream: stream.clone(),
            close_read: true,
            close_write: false,
            deadlines: deadlines.clone(),
            set_to: None,
            fallback: None,
        };
        let write = RefinedTcpStream {
            stream,
            close_read: false,
            close_write: true,
            deadlines,
            set_to: Some(default_write),
            fallback: Some(default_write),
        };
        (read, write)
    }

    #[inline]
    pub(crate) fn secure(&self) -> bool {
        false
    }

    pub(crate) fn peer_addr(&self) -> IoResult<Option<SocketAddr>> {
        self.stream.peer_addr()
    }

    pub(crate) fn deadlines(&self) -> &Arc<Deadlines> {
        &self.deadlines
    }

    /// Sets the socket timeout for this half to `want` unless it is already close to it.
    fn arm(&mut self, want: Option<Duration>, write: bool) -> IoResult<()> {
        let close_enough = match (self.set_to, want) {
            (None, None) => true,
            (Some(have), Some(want)) => have >= want && have - want <= SLACK,
            _ => false,
        };
        if close_enough {
            return Ok(());
        }
        // A zero timeout means "block forever" to the OS: never ask for one.
        let want = want.map(|d| d.max(Duration::from_millis(1)));
        if write {
            self.stream.set_write_timeout(want)?;
        } else {
            self.stream.set_read_timeout(want)?;
        }
        self.set_to = want;
        Ok(())
    }

    fn timed_out(&self, e: Error) -> Error {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => self.deadlines.expired(),
            _ => e,
        }
    }
}

impl Drop for RefinedTcpStream {
    fn drop(&mut self) {
        if self.close_read {
            self.stream.shutdown(Shutdown::Read).ok();
        }

        if self.close_write {
            self.stream.shutdown(Shutdown::Write).ok();
        }
    }
}

impl Read for RefinedTcpStream {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        let left = self.deadlines.left(&self.deadlines.read)?.or(self.fallback);
        self.arm(left, false)?;
        (&*self.stream).read(buf).map_err(|e| self.timed_out(e))
    }
}

impl Write for RefinedTcpStream {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        let left = self.deadlines.left(&self.deadlines.write)?.or(self.fallback);
        self.arm(left, true)?;
        (&*self.stream).write(buf).map_err(|e| self.timed_out(e))
    }

    fn flush(&mut self) -> IoResult<()> {
        (&*self.stream).flush()
    }
}
