//! The retry loop shared by the network outputs: exponential backoff with jitter, the
//! service's `Retry-After`, and one wall-clock budget per delivery, so that a dead endpoint
//! never holds a worker longer than [`BUDGET`] (plus the one request still in flight).
//!
//! Not here: deciding *whether* a failure deserves another attempt. Each target says so in
//! the [`Failure`] it returns (HTTP rules live in `http.rs`, SMTP rules in `email.rs`).

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::error::{DeliveryError, GiveUp};

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

/// One failed attempt: what went wrong (boxed: attempts return it by value, often) and
/// the retry verdict.
#[derive(Debug)]
pub struct Failure {
    pub error: Box<DeliveryError>,
    pub retry: Retry,
}

impl Failure {
    /// A failure that is not worth retrying.
    pub fn permanent(error: DeliveryError) -> Failure {
        Failure {
            error: Box::new(error),
            retry: Retry::No,
        }
    }

    /// A failure that is retried after the backoff.
    pub fn transient(error: DeliveryError) -> Failure {
        Failure {
            error: Box::new(error),
            retry: Retry::Backoff,
        }
    }
}

/// Calls `attempt` until it succeeds, fails permanently, `retries` retries are spent, the
/// [`BUDGET`] would be exceeded, or the daemon begins to stop (`stop` disconnects).
/// `attempt` gets the budget left, to cap its own timeouts. The error is the last failure,
/// wrapped in [`DeliveryError::GaveUp`] after more than one attempt or when the loop
/// stopped early for a reason worth saying.
pub fn run<T>(
    retries: u32,
    stop: &Receiver<()>,
    mut attempt: impl FnMut(Duration) -> Result<T, Failure>,
) -> Result<T, DeliveryError> {
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
        let gave_up = |error: DeliveryError, why: Option<GiveUp>| {
            if tries == 1 && why.is_none() {
                return error;
            }
            DeliveryError::GaveUp {
                last: Box::new(error),
                attempts: tries,
                elapsed: start.elapsed(),
                why,
            }
        };
        let wait = match f.retry {
            Retry::No => return Err(gave_up(*f.error, None)),
            Retry::Backoff => backoff(tries - 1),
            Retry::After(d) if d > MAX_RETRY_AFTER => {
                let why = GiveUp::RetryAfterTooLong {
                    asked: d,
                    max: MAX_RETRY_AFTER,
                };
                return Err(gave_up(*f.error, Some(why)));
            }
            Retry::After(d) => d,
        };
        if tries > retries {
            return Err(gave_up(*f.error, None));
        }
        if Instant::now() + wait + MIN_ATTEMPT > deadline {
            return Err(gave_up(*f.error, Some(GiveUp::Budget(BUDGET))));
        }
        if stopped(stop, wait) {
            return Err(gave_up(*f.error, Some(GiveUp::Stopping)));
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

    fn http(code: u16) -> DeliveryError {
        DeliveryError::Status {
            endpoint: "svc".into(),
            code,
            reason: String::new(),
            service: None,
            location: None,
            hint: None,
        }
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
        let r: Result<(), DeliveryError> = run(5, &stop, |_| {
            n += 1;
            Err(Failure::permanent(http(401)))
        });
        assert_eq!(n, 1);
        assert_eq!(r.unwrap_err().to_string(), "svc: HTTP 401");
    }

    #[test]
    fn retries_are_counted_and_reported() {
        let (_tx, stop) = never_stop();
        let mut n = 0;
        let r: Result<(), DeliveryError> = run(2, &stop, |_| {
            n += 1;
            Err(Failure {
                error: Box::new(http(503)),
                retry: Retry::After(Duration::ZERO),
            })
        });
        assert_eq!(n, 3);
        let e = r.unwrap_err().to_string();
        assert!(
            e.starts_with("svc: HTTP 503 (gave up after 3 attempts in"),
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
                    error: Box::new(http(500)),
                    retry: Retry::After(Duration::ZERO),
                })
            } else {
                Ok(n)
            }
        });
        assert_eq!(r.ok(), Some(2));
    }

    #[test]
    fn long_retry_after_and_stopping_end_the_loop() {
        let (_tx, stop) = never_stop();
        let r: Result<(), DeliveryError> = run(2, &stop, |_| {
            Err(Failure {
                error: Box::new(http(429)),
                retry: Retry::After(Duration::from_secs(3600)),
            })
        });
        assert!(r.unwrap_err().to_string().contains("asked to wait 3600 s"));

        let (tx, stop) = never_stop();
        drop(tx);
        let mut n = 0;
        let r: Result<(), DeliveryError> = run(2, &stop, |_| {
            n += 1;
            Err(Failure::transient(http(502)))
        });
        assert_eq!(n, 1);
        assert!(r
            .unwrap_err()
            .to_string()
            .contains("the daemon is stopping"));
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
