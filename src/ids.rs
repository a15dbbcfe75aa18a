//! Identifiers and secrets from the OS random number generator.
//!
//! Job ids look like `job_3f9a0c1b2d4e` and run ids like `run_0193a5b2c4d10007a3f2c1`: the
//! underscore can never appear in a job name, so an id and a name never collide. Run ids
//! start with the creation time in milliseconds, so sorting them sorts runs by age.

use std::sync::atomic::{AtomicU32, Ordering};

static RUN_SEQ: AtomicU32 = AtomicU32::new(0);

/// Fills `buf` from the OS RNG.
pub fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    getrandom::fill(buf).map_err(|e| std::io::Error::other(format!("OS random generator: {e}")))
}

/// A new job id: `job_` and 12 random hex digits.
pub fn new_job_id() -> std::io::Result<String> {
    let mut b = [0u8; 6];
    random_bytes(&mut b)?;
    Ok(format!("job_{}", hex(&b)))
}

/// A new run id: `run_`, 12 hex digits of Unix milliseconds, 4 hex digits of a per-process
/// sequence, 6 random hex digits. The random part keeps ids unique across daemons on one
/// machine: agents are found by their `BOG_RUN_ID` when they are swept, so two daemons must
/// never hand out the same id.
pub fn new_run_id() -> String {
    let ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let seq = RUN_SEQ.fetch_add(1, Ordering::Relaxed) & 0xffff;
    let mut r = [0u8; 3];
    if random_bytes(&mut r).is_err() {
        // No OS randomness: fall back to the pid, still distinct between live daemons.
        let pid = std::process::id().to_le_bytes();
        r.copy_from_slice(&pid[..3]);
    }
    format!("run_{:012x}{:04x}{}", ms & 0xffff_ffff_ffff, seq, hex(&r))
}

/// Whether `s` has the shape of a run id (`run_` and hex digits): safe in a file name.
pub fn is_run_id(s: &str) -> bool {
    s.strip_prefix("run_")
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A new API token: 32 random bytes, URL-safe base64 without padding (43 characters).
pub fn new_token() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    random_bytes(&mut b)?;
    Ok(base64_url(&b))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// URL-safe base64 (RFC 4648 §5) without padding.
pub fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Standard base64 (RFC 4648 §4) with padding.
pub fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64_url(b""), "");
        assert_eq!(base64_url(b"f"), "Zg");
        assert_eq!(base64_url(b"fo"), "Zm8");
        assert_eq!(base64_url(b"foo"), "Zm9v");
        assert_eq!(base64_url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn standard_base64() {
        assert_eq!(base64_std(b"f"), "Zg==");
        assert_eq!(base64_std(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn token_has_43_url_safe_chars() {
        let t = new_token().unwrap();
        assert_eq!(t.len(), 43);
        assert!(t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn run_ids_sort_by_creation() {
        let a = new_run_id();
        let b = new_run_id();
        assert!(a[..20] < b[..20], "{a} !< {b}");
        assert_eq!(a.len(), 26);
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
