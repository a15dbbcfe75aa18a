use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read};

use std::net::SocketAddr;
use std::str::FromStr;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::common::{HTTPVersion, Method};
use crate::util::refined_tcp_stream::Deadlines;
use crate::util::RefinedTcpStream;
use crate::Limits;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // Patched (PATCHES.md): the limits and deadlines every request on this connection obeys.
    limits: Arc<Limits>,
    deadlines: Arc<Deadlines>,
    // Requests read so far (the first one's head deadline starts at accept).
    served: u64,
    // Bytes of the current request head still allowed.
    head_budget: usize,
}

#[derive(Debug)]
enum ReadError {
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    ExpectationFailed(HTTPVersion),
    // Patched: the request head is over `Limits::max_head_bytes` or `max_headers`.
    HeadTooLarge,
    ReadIoError(IoError),
}

impl ClientConnection {
    pub fn new(
        write_socket: RefinedTcpStream,
        read_socket: RefinedTcpStream,
        limits: Arc<Limits>,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();
        let deadlines = read_socket.deadlines().clone();

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            head_budget: limits.max_head_bytes,
            limits,
            deadlines,
            served: 0,
        }
    }

    /// Reads one CRLF-terminated line of the head, within what is left of the head budget.
    /// Patched: returns bytes (header values may hold obs-text) and never grows past the
    /// budget. With `first_byte_starts_head`, the head deadline starts when the first byte
    /// arrives (the wait before it is the keep-alive idle time).
    fn read_next_line(&mut self, first_byte_starts_head: bool) -> Result<Vec<u8>, ReadError> {
        let mut buf = Vec::new();
        let mut prev_byte_was_cr = false;
        let mut started = !first_byte_starts_head;

        loop {
            let byte = self.next_header_source.by_ref().bytes().next();

            let byte = match byte {
                Some(b) => b.map_err(ReadError::ReadIoError)?,
                None => {
                    return Err(ReadError::ReadIoError(IoError::new(
                        ErrorKind::ConnectionAborted,
                        "Unexpected EOF",
                    )))
                }
            };
            if !started {
                started = true;
                self.deadlines.read_within(Some(self.limits.head_timeout));
            }
            if self.head_budget == 0 {
                return Err(ReadError::HeadTooLarge);
            }
            self.head_budget -= 1;

            if byte == b'\n' && prev_byte_was_cr {
                buf.pop(); // removing the '\r'
                return Ok(buf);
            }

            prev_byte_was_cr = byte == b'\r';

            buf.push(byte);
        }
    }

    fn read(&mut self) -> Result<Request, ReadError> {
        // Patched: the first request's head must arrive within the head timeout from accept;
        // later ones may wait the keep-alive time for their first byte, then the head timeout.
        let first = self.served == 0;
        self.served += 1;
        self.head_budget = self.limits.max_head_bytes;
        self.deadlines.read_within(Some(if first {
            self.limits.head_timeout
        } else {
            self.limits.keep_alive_timeout
        }));
        let (method, path, version, headers) = {
            // reading the request line
            let (method, path, version) = {
                let line = self.read_next_line(!first)?;
                // Patched: a request line that is not ASCII is answered 400 (it used to
                // drop the connection without an answer).
                let line = AsciiString::from_ascii(line).map_err(|_| ReadError::WrongRequestLine)?;

                parse_request_line(
                    line.as_str().trim(), // TODO: remove this conversion
                )?
            };

            // getting all headers
            let headers = {
                let mut headers = Vec::new();
                loop {
                    let line = self.read_next_line(false)?;

                    if line.is_empty() {
                        break;
                    };
                    if headers.len() >= self.limits.max_headers {
                        return Err(ReadError::HeadTooLarge);
                    }
                    // Patched: bytes >= 0x80 (obs-text, RFC 9110 section 5.5) become '?'
                    // instead of dropping the connection; control bytes stay an error.
                    let line: String = line
                        .iter()
                        .map(|&b| if b < 0x80 { b as char } else { '?' })
                        .collect();
                    headers.push(match FromStr::from_str(line.trim()) {
                        // TODO: remove this conversion
                        Ok(h) => h,
                        _ => return Err(ReadError::WrongHeader(version)),
                    });
                }

                headers
            };

            (method, path, version, headers)
        };

        // Patched: the body must arrive within the body timeout plus the time its declared
        // length takes at the minimum rate (a chunked body is allowed the largest size).
        self.deadlines
            .read_within(Some(self.limits.body_deadline(&headers)));

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            *self.remote_addr.as_ref().unwrap_or(&None),
            data_source,
            writer,
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version)
                }
            }
        })?;

        // return the request
        Ok(request.with_deadlines(self.deadlines.clone(), self.limits.clone()))
    }

    /// Patched: writes a final answer for a request that could not be read, within the
    /// write timeout; the connection closes after it.
    fn refuse(&mut self, status: u16, version: HTTPVersion, body: &str) {
        use crate::{Header, Response, StatusCode};
        self.deadlines
            .write_within(Some(self.limits.write_timeout));
        let writer = self.sink.next().unwrap();
        let mut response = Response::from_string(body.to_owned()).with_status_code(StatusCode(status));
        if let Ok(h) = Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]) {
            response.add_header(h);
        }
        if let Ok(h) = Header::from_bytes(&b"Connection"[..], &b"close"[..]) {
            response.add_header(h);
        }
        response.raw_print(writer, version, &[], false, None).ok();
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    fn next(&mut self) -> Option<Request> {
        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        // Patched: or the previous request's body was not read to its end.
        if self.no_more_requests || self.deadlines.must_close() {
            return None;
        }

        {
            let rq = match self.read() {
                Err(ReadError::WrongRequestLine) => {
                    self.refuse(400, HTTPVersion(1, 1), r#"{"error":"malformed request line"}"#);
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                Err(ReadError::WrongHeader(ver)) => {
                    self.refuse(400, ver, r#"{"error":"malformed header line"}"#);
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                Err(ReadError::HeadTooLarge) => {
                    self.limits.stats.heads_too_large.fetch_add(1, Ordering::Relaxed);
                    let msg = format!(
                        r#"{{"error":"request head too large: at most {} bytes and {} header lines"}}"#,
                        self.limits.max_head_bytes, self.limits.max_headers
                    );
                    self.refuse(431, HTTPVersion(1, 1), &msg);
                    return None;
                }

                Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::TimedOut => {
                    // request timeout; an idle keep-alive connection is closed silently
                    if self.head_budget < self.limits.max_head_bytes || self.served == 1 {
                        self.refuse(
                            408,
                            HTTPVersion(1, 1),
                            r#"{"error":"the request did not arrive in time"}"#,
                        );
                    }
                    return None; // closing the connection
                }

                Err(ReadError::ExpectationFailed(ver)) => {
                    self.refuse(417, ver, r#"{"error":"unsupported Expect header"}"#);
                    return None; // TODO: should be recoverable, but needs handling in case of body
                }

                Err(ReadError::ReadIoError(_)) => return None,

                Ok(rq) => rq,
            };

            // checking HTTP version
            if *rq.http_version() > (1, 1) {
                drop(rq);
                self.refuse(
                    505,
                    HTTPVersion(1, 1),
                    r#"{"error":"this server only supports HTTP/1.0 and HTTP/1.1"}"#,
                );
                return None;
            }

            // updating the status of the connection
            let connection_header = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Connection"))
                .map(|h| h.value.as_str());

            let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

            match lowercase {
                Some(ref val) if val.contains("close") => self.no_more_requests = true,
                Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
                Some(ref val)
                    if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
                {
                    self.no_more_requests = true
                }
                None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
    }
}

fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(ReadError::WrongRequestLine),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
