//! The one exponential backoff of the daemon: agent retries (`retry_backoff_seconds`, doubled
//! per failed attempt) and network-output retries (jittered) both use it.

use std::time::Duration;

/// `base * 2^n`, at most `max`.
pub fn exponential(base: Duration, n: u32, max: Duration) -> Duration {
    base.saturating_mul(2u32.saturating_pow(n.min(31))).min(max)
}

/// A uniform pick in `[d/2, d]`, so that many clients retrying one service spread out.
pub fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.5 + 0.5 * unit_random())
}

/// A uniform value in `[0, 1)` from the OS RNG (0.5 if it is unavailable).
fn unit_random() -> f64 {
    let mut b = [0u8; 4];
    match crate::ids::random_bytes(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        let s = Duration::from_secs;
        assert_eq!(exponential(s(2), 0, s(3600)), s(2));
        assert_eq!(exponential(s(2), 3, s(3600)), s(16));
        assert_eq!(exponential(s(2), 40, s(3600)), s(3600));
        assert_eq!(exponential(Duration::ZERO, 5, s(3600)), Duration::ZERO);
        for _ in 0..100 {
            let j = jittered(s(8));
            assert!(j >= s(4) && j <= s(8), "{j:?}");
        }
    }
}
