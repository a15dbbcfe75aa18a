//! The retry loop shared by the network outputs: exponential backoff with jitter, the
//! service's `Retry-After`, and one wall-clock budget per delivery, so that a dead endpoint
//! never holds a worker longer than [`BUDGET`] (plus the one request still in flight).
//!
//! Not here: deciding *whether* a failure deserves another attempt. Each target says so in
//! the [`Failure`] it returns (HTTP rules live in `http.rs`, SMTP rules in `email.rs`).

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

/// Wall-clock budget of one delivery to one output, all attempts and waits included.
pub const BUDGET: Duration = Duration::from_secs(60);
/// First backoff; each retry doubles it, and jitter picks a wait in `[d/2, d]`.
const BASE_BACKOFF: Duration = Duration::from_secs(1);
/// Longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// Longest `Retry-After` the daemon honours; a service asking for more is not retried.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// An attempt is not started with less budget left than this.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);

/// Whether (and when) a failed attempt should be tried again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Retry {
    /// Permanent: a 4xx, a bad setting, a rejected message.
    No,
    /// Transient: connect error, timeout, 5xx. Wait the jittered backoff.
    Backoff,
    /// The service said when (`Retry-After`).
    After(Duration),
}

/// One failed attempt: the user-facing error text and the retry verdict.
#[derive(Debug)]
pub struct Failure {
    pub error: String,
    pub retry: Retry,
}

impl Failure {
    /// A failure that is not worth retrying.
    pub fn permanent(error: impl Into<String>) -> Failure {
        Failure {
            error: error.into(),
            retry: Retry::No,
        }
    }

    /// A failure that is retried after the backoff.
    pub fn transient(error: impl Into<String>) -> Failure {
        Failure {
            error: error.into(),
            retry: Retry::Backoff,
        }
    }
}

/// Calls `attempt` until it succeeds, fails permanently, `retries` retries are spent, the
/// [`BUDGET`] would be exceeded, or the daemon begins to stop (`stop` disconnects).
/// `attempt` gets the budget left, to cap its own timeouts. The error names the last
/// failure and, after more than one attempt, how many were made.
pub fn run<T>(
    retries: u32,
    stop: &Receiver<()>,
    mut attempt: impl FnMut(Duration) -> Result<T, Failure>,
) -> Result<T, String> {
    let start = Instant::now();
    let deadline = start + BUDGET;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let f = match attempt(left) {
            Ok(v) => return Ok(v),
            Err(f) => f,
        };
        let gave_up = |why: &str| {
            let mut e = f.error.clone();
            if tries > 1 {
                e.push_str(&format!(
                    " (gave up after {tries} attempts in {:.1} s",
                    start.elapsed().as_secs_f64()
                ));
                if !why.is_empty() {
                    e.push_str(&format!("; {why}"));
                }
                e.push(')');
            } else if !why.is_empty() {
                e.push_str(&format!(" ({why})"));
            }
            e
        };
        let wait = match f.retry {
            Retry::No => return Err(gave_up("")),
            Retry::Backoff => backoff(tries - 1),
            Retry::After(d) if d > MAX_RETRY_AFTER => {
                return Err(gave_up(&format!(
                    "not retried: the service asked to wait {} s, longer than the {} s the daemon waits",
                    d.as_secs(),
                    MAX_RETRY_AFTER.as_secs()
                )))
            }
            Retry::After(d) => d,
        };
        if tries > retries {
            return Err(gave_up(""));
        }
        if Instant::now() + wait + MIN_ATTEMPT > deadline {
            return Err(gave_up(&format!(
                "the next retry would pass the {} s delivery budget",
                BUDGET.as_secs()
            )));
        }
        if stopped(stop, wait) {
            return Err(gave_up("not retried: the daemon is stopping"));
        }
    }
}

/// Waits `d`, or less if the daemon begins to stop; returns true in that case.
fn stopped(stop: &Receiver<()>, d: Duration) -> bool {
    !matches!(stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
}

/// The wait before retry number `n + 1`: `BASE * 2^n`, capped, then a uniform pick in
/// `[d/2, d]` so that many daemons hitting one service spread out.
pub fn backoff(n: u32) -> Duration {
    crate::backoff::jittered(crate::backoff::exponential(BASE_BACKOFF, n, MAX_BACKOFF))
}

/// Parses a `Retry-After` value: delay-seconds, or an HTTP date (RFC 9110 section 10.2.3),
/// in any of the three forms HTTP allows.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never_stop() -> (crossbeam_channel::Sender<()>, Receiver<()>) {
        crossbeam_channel::bounded(0)
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        for _ in 0..50 {
            let d0 = backoff(0);
            assert!(d0 >= Duration::from_millis(500) && d0 <= Duration::from_secs(1));
            let d2 = backoff(2);
            assert!(d2 >= Duration::from_secs(2) && d2 <= Duration::from_secs(4));
            assert!(backoff(30) <= MAX_BACKOFF);
        }
    }

    #[test]
    fn permanent_failures_are_tried_once() {
        let (_tx, stop) = never_stop();
        let mut n = 0;
        let r: Result<(), String> = run(5, &stop, |_| {
            n += 1;
            Err(Failure::permanent("HTTP 401"))
        });
        assert_eq!(n, 1);
        assert_eq!(r.unwrap_err(), "HTTP 401");
    }

    #[test]
    fn retries_are_counted_and_reported() {
        let (_tx, stop) = never_stop();
        let mut n = 0;
        let r: Result<(), String> = run(2, &stop, |_| {
            n += 1;
            Err(Failure {
                error: "HTTP 503".into(),
                retry: Retry::After(Duration::ZERO),
            })
        });
        assert_eq!(n, 3);
        let e = r.unwrap_err();
        assert!(
            e.starts_with("HTTP 503 (gave up after 3 attempts in"),
            "{e}"
        );
    }

    #[test]
    fn success_after_a_transient_failure() {
        let (_tx, stop) = never_stop();
        let mut n = 0;
        let r = run(2, &stop, |_| {
            n += 1;
            if n == 1 {
                Err(Failure {
                    error: "x".into(),
                    retry: Retry::After(Duration::ZERO),
                })
            } else {
                Ok(n)
            }
        });
        assert_eq!(r, Ok(2));
    }

    #[test]
    fn long_retry_after_and_stopping_end_the_loop() {
        let (_tx, stop) = never_stop();
        let r: Result<(), String> = run(2, &stop, |_| {
            Err(Failure {
                error: "HTTP 429".into(),
                retry: Retry::After(Duration::from_secs(3600)),
            })
        });
        assert!(r.unwrap_err().contains("asked to wait 3600 s"));

        let (tx, stop) = never_stop();
        drop(tx);
        let mut n = 0;
        let r: Result<(), String> = run(2, &stop, |_| {
            n += 1;
            Err(Failure::transient("connection refused"))
        });
        assert_eq!(n, 1);
        assert!(r.unwrap_err().contains("the daemon is stopping"));
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
