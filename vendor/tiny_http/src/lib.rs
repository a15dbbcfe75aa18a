//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]


use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::collections::HashMap;
use std::net::{IpAddr, Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use client::ClientConnection;
use connection::Connection;
use util::refined_tcp_stream::Deadlines;
use util::{MessagesQueue, RefinedTcpStream};

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use request::{ReadWrite, Request};
pub use response::{Response, ResponseBox};
pub use test::TestRequest;

mod client;
mod common;
mod connection;
mod request;
mod response;
mod test;
mod util;

/// The main class of this library.
///
/// Destroying this object will immediately close the listening socket and the reading
///  part of all the client's connections. Requests that have already been returned by
///  the `recv()` function will not close and the responses will be transferred to the client.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,

    // Patched: what the connection layer has seen.
    stats: Arc<Stats>,
}

enum Message {
    Error(IoError),
    NewRequest(Request),
}

impl From<IoError> for Message {
    fn from(e: IoError) -> Message {
        Message::Error(e)
    }
}

impl From<Request> for Message {
    fn from(rq: Request) -> Message {
        Message::NewRequest(rq)
    }
}

// this is to make sure that Server implements Share and Send
const _: fn() = || {
    fn must_be_share<T: Sync + Send>() {}
    must_be_share::<Server>();
};

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,
}

/// Patched (PATCHES.md): the limits and deadlines of the connection layer.
#[derive(Debug)]
pub struct Limits {
    /// Connections open at once; past it a new connection gets a fast 503 and is closed.
    pub max_connections: usize,
    /// Connections open at once from one IP address (0: no per-address limit).
    pub max_connections_per_ip: usize,
    /// A request head (request line and headers) must arrive within this time, counted
    /// from the connection's accept for its first request and from the first byte after.
    pub head_timeout: Duration,
    /// A request body must arrive within this time plus its length at `body_min_rate`.
    pub body_timeout: Duration,
    /// Bytes per second a body must at least arrive at (for its deadline).
    pub body_min_rate: u64,
    /// The largest body any route takes (the deadline of a chunked body assumes it).
    pub max_body_bytes: usize,
    /// An idle keep-alive connection is closed after this time.
    pub keep_alive_timeout: Duration,
    /// Writing one response must complete within this time.
    pub write_timeout: Duration,
    /// Bytes in a request head, in all.
    pub max_head_bytes: usize,
    /// Header lines in a request head.
    pub max_headers: usize,
    /// Stack size of connection threads.
    pub thread_stack_bytes: usize,
    /// Counters, shared with the server.
    pub stats: Arc<Stats>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_ip: 0,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            body_min_rate: 64 * 1024,
            max_body_bytes: 1 << 20,
            keep_alive_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_head_bytes: 64 * 1024,
            max_headers: 100,
            thread_stack_bytes: 512 * 1024,
            stats: Arc::new(Stats::default()),
        }
    }
}

impl Limits {
    /// The time a body with these headers may take to arrive.
    pub(crate) fn body_deadline(&self, headers: &[Header]) -> Duration {
        let chunked = headers
            .iter()
            .any(|h| h.field.equiv("Transfer-Encoding"));
        let declared = headers
            .iter()
            .find(|h| h.field.equiv("Content-Length"))
            .and_then(|h| h.value.as_str().trim().parse::<u64>().ok())
            .unwrap_or(0);
        let len = if chunked {
            self.max_body_bytes as u64
        } else {
            declared.min(self.max_body_bytes as u64)
        };
        self.body_timeout + Duration::from_secs(len / self.body_min_rate.max(1))
    }

    /// How long the rest of an unread body is waited for before the connection is closed.
    pub(crate) fn drain_timeout(&self) -> Duration {
        self.head_timeout.min(Duration::from_secs(2))
    }
}

/// Patched: counters of the connection layer (all since start).
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now.
    pub connections_open: AtomicUsize,
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections refused with 503 because a limit was reached.
    pub connections_refused: AtomicU64,
    /// `accept` errors survived (out of file descriptors, ...).
    pub accept_errors: AtomicU64,
    /// Requests or bodies that missed their deadline.
    pub timeouts: Arc<AtomicU64>,
    /// Request heads refused with 431.
    pub heads_too_large: AtomicU64,
}

/// Patched: what a connection thread does with each request in handler mode.
pub type Handler = Arc<dyn Fn(Request) + Send + Sync + 'static>;

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
        })
    }

    /// Shortcut for a UNIX socket server at a specific path
    #[cfg(unix)]
    #[inline]
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
        })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener(listener)
    }

    /// Builds a new server using the specified TCP listener; requests are taken with
    /// [`Server::recv`]. The default [`Limits`] apply.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::start(listener.into(), Limits::default(), None)
    }

    /// Patched: a server whose connection threads call `handler` for each request
    /// themselves (one thread per open connection, at most `limits.max_connections`), so a
    /// slow client holds its own thread only. [`Server::recv`] is not used in this mode.
    pub fn with_handler<L: Into<Listener>>(
        listener: L,
        limits: Limits,
        handler: Handler,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::start(listener.into(), limits, Some(handler))
    }

    fn start(
        listener: Listener,
        limits: Limits,
        handler: Option<Handler>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let close_trigger = Arc::new(AtomicBool::new(false));
        let local_addr = listener.local_addr()?;
        log::debug!("Server listening on {}", local_addr);

        let messages = MessagesQueue::with_capacity(8);
        let stats = limits.stats.clone();
        let limits = Arc::new(limits);
        let gate = Arc::new(Gate::new(limits.clone()));

        let inside_close_trigger = close_trigger.clone();
        let inside_messages = messages.clone();
        thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || {
                accept_loop(
                    &listener,
                    &inside_close_trigger,
                    &inside_messages,
                    &limits,
                    &gate,
                    handler,
                )
            })?;

        Ok(Server {
            messages,
            close: close_trigger,
            listening_addr: local_addr,
            stats,
        })
    }

    /// Returns an iterator for all the incoming requests.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Patched: the connection layer's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Returns the number of clients currently connected to the server.
    pub fn num_connections(&self) -> usize {
        self.stats.connections_open.load(Relaxed)
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(rq),
            None => Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.messages.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    pub fn unblock(&self) {
        self.messages.unblock();
    }
}

/// Patched (PATCHES.md, "Connection limits"): counts open connections, in all and per IP
/// address; a [`Ticket`] is one admitted connection and gives its place back when dropped.
struct Gate {
    limits: Arc<Limits>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

struct Ticket {
    gate: Arc<Gate>,
    ip: Option<IpAddr>,
}

impl Gate {
    fn new(limits: Arc<Limits>) -> Gate {
        Gate {
            limits,
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Option<Ticket> {
        let open = &self.limits.stats.connections_open;
        if open.fetch_add(1, Relaxed) >= self.limits.max_connections {
            open.fetch_sub(1, Relaxed);
            return None;
        }
        let per_ip = self.limits.max_connections_per_ip;
        if let (Some(ip), true) = (ip, per_ip > 0) {
            let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(ip).or_insert(0);
            if *n >= per_ip {
                drop(map);
                open.fetch_sub(1, Relaxed);
                return None;
            }
            *n += 1;
        }
        Some(Ticket {
            gate: self.clone(),
            ip: if per_ip > 0 { ip } else { None },
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut map = self.gate.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
        self.gate.limits.stats.connections_open.fetch_sub(1, Relaxed);
    }
}

/// The answer to a connection refused at accept: written without blocking, then closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 51\r\n\r\n{\"error\":\"too many connections; retry in a moment\"}";

fn refuse(conn: Connection) {
    use std::io::Write;
    let _ = conn.set_nonblocking(true);
    let _ = (&conn).write(REFUSAL);
    let _ = conn.shutdown(Shutdown::Write);
}

/// Logs a refusal the first time and then at most once a minute, with a count.
struct Throttle {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl Throttle {
    fn hit(&mut self, what: &str) {
        let now = std::time::Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(60) => self.suppressed += 1,
            _ => {
                if self.suppressed > 0 {
                    log::warn!("{what} ({} more in the last minute)", self.suppressed);
                } else {
                    log::warn!("{what}");
                }
                self.last = Some(now);
                self.suppressed = 0;
            }
        }
    }
}

fn accept_loop(
    listener: &Listener,
    close: &AtomicBool,
    messages: &Arc<MessagesQueue<Message>>,
    limits: &Arc<Limits>,
    gate: &Arc<Gate>,
    handler: Option<Handler>,
) {
    // Threads are reused for later connections; each is fallible to start.
    let tasks_pool = util::TaskPool::new(limits.thread_stack_bytes);
    let stats = &limits.stats;
    // Patched (PATCHES.md, "Accept errors"): one descriptor kept in reserve, so that when
    // the process runs out the pending connection can still be taken and refused.
    let mut spare = std::fs::File::open("/dev/null").ok();
    let mut backoff = Duration::ZERO;
    let mut refusals = Throttle { last: None, suppressed: 0 };
    let mut errors = Throttle { last: None, suppressed: 0 };

    log::debug!("Running accept thread");
    while !close.load(Relaxed) {
        let (sock, addr) = match listener.accept() {
            Ok(x) => {
                backoff = Duration::ZERO;
                x
            }
            Err(e) => {
                if close.load(Relaxed) {
                    break;
                }
                stats.accept_errors.fetch_add(1, Relaxed);
                errors.hit(&format!("accepting a connection failed: {e}; backing off"));
                let out_of_fds = matches!(e.raw_os_error(), Some(23) | Some(24)); // ENFILE, EMFILE
                if out_of_fds && spare.take().is_some() {
                    if let Ok((sock, _)) = listener.accept() {
                        stats.connections_refused.fetch_add(1, Relaxed);
                        refuse(sock);
                    }
                    spare = std::fs::File::open("/dev/null").ok();
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                thread::sleep(backoff);
                continue;
            }
        };
        if close.load(Relaxed) {
            break;
        }
        if spare.is_none() {
            spare = std::fs::File::open("/dev/null").ok();
        }
        stats.connections_accepted.fetch_add(1, Relaxed);
        let Some(ticket) = gate.admit(addr.map(|a| a.ip())) else {
            stats.connections_refused.fetch_add(1, Relaxed);
            refusals.hit("connection refused with 503: the connection limit is reached");
            refuse(sock);
            continue;
        };
        // (Irrefutable where there are no Unix sockets: Windows.)
        #[allow(irrefutable_let_patterns)]
        if let Connection::Tcp(ref s) = sock {
            let _ = s.set_nodelay(true);
        }
        let deadlines = Deadlines::new(stats.timeouts.clone());
        let (read, write) = RefinedTcpStream::new(sock, deadlines, limits.write_timeout);
        let client = ClientConnection::new(write, read, limits.clone());
        let messages = messages.clone();
        let handler = handler.clone();
        let mut job = Some((client, ticket));
        let spawned = tasks_pool.spawn(Box::new(move || {
            let Some((client, _ticket)) = job.take() else {
                return;
            };
            match &handler {
                Some(h) => {
                    for rq in client {
                        h(rq);
                    }
                }
                None => {
                    for rq in client {
                        messages.push(rq.into());
                    }
                }
            }
        }));
        if let Err(e) = spawned {
            // The task (and with it the connection) is dropped: the client sees it close.
            stats.connections_refused.fetch_add(1, Relaxed);
            errors.hit(&format!("cannot start a connection thread: {e}; connection closed"));
            thread::sleep(Duration::from_millis(5));
        }
    }
    log::debug!("Terminating accept thread");
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close.store(true, Relaxed);
        // Connect briefly to ourselves to unblock the accept thread
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => {
                // TODO: use connect_addr when its stabilized.
                let path = addr.as_pathname().unwrap();
                std::os::unix::net::UnixStream::connect(path).map(Connection::from)
            }
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
