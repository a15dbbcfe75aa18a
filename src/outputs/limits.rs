//! The bounds every HTTP output request gets (README "Outputs"), in one place: `http.rs`
//! applies them and `error.rs` names them when a request timed out.

use std::time::Duration;

/// Longest wait for the TCP (and TLS) connection of one request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time for one whole request: connect, send, and read the reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
