//! Landlock (Linux 5.13+): the kernel's unprivileged filesystem sandbox, used for
//! `limits.filesystem: "working_dir"`. The agent may read and execute anywhere, but it may
//! create, write, remove or rename only beneath its working directory and its private
//! `$TMPDIR`, and write only a few device files (`/dev/null`, `/dev/tty`, …).
//!
//! The ruleset is built in the daemon, before the fork (building it allocates); the child
//! only makes the two system calls that apply it, which are safe between fork and exec.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{
    path_beneath_rules, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, ABI,
};

use super::LandlockUnavailable as Unavailable;

/// Device files every program may write, when they exist.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
];

/// The Landlock ABI version of the running kernel, or why there is none.
pub fn probe() -> Result<i32, Unavailable> {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only returns
    // a number; no memory is passed.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    if v > 0 {
        return Ok(v as i32);
    }
    let e = std::io::Error::last_os_error();
    Err(match e.raw_os_error() {
        Some(libc::ENOSYS) => Unavailable::NotInKernel,
        Some(libc::EOPNOTSUPP) => Unavailable::NotEnabled,
        Some(libc::EPERM) => Unavailable::Forbidden,
        code => Unavailable::ProbeFailed(code.unwrap_or(0)),
    })
}

/// Why the Landlock ruleset could not be built.
#[derive(Debug)]
pub enum RulesetError {
    /// The landlock crate refused a step (for `path`, when it was about one).
    Build {
        path: Option<PathBuf>,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The kernel made no ruleset.
    NotCreated(Unavailable),
}

impl std::fmt::Display for RulesetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RulesetError::Build {
                path: Some(p),
                source,
            } => write!(
                f,
                "cannot build the Landlock ruleset: {}: {source}",
                p.display()
            ),
            RulesetError::Build { path: None, source } => {
                write!(f, "cannot build the Landlock ruleset: {source}")
            }
            RulesetError::NotCreated(why) => write!(f, "Landlock is not available: {why}"),
        }
    }
}

impl std::error::Error for RulesetError {}

/// Builds the ruleset that confines writes to `writable` (directories that must exist)
/// and the device files. The returned descriptor is applied in the child by
/// [`restrict_self`].
pub fn write_ruleset(writable: &[&Path]) -> Result<OwnedFd, RulesetError> {
    let handled: BitFlags<AccessFs> = AccessFs::from_write(ABI::V3);
    fn fail<E: std::error::Error + Send + Sync + 'static>(e: E) -> RulesetError {
        RulesetError::Build {
            path: None,
            source: Box::new(e),
        }
    }
    let mut rs = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(handled)
        .map_err(fail)?
        .create()
        .map_err(fail)?;
    for dir in writable {
        let fd = PathFd::new(dir).map_err(|e| RulesetError::Build {
            path: Some(dir.to_path_buf()),
            source: Box::new(e),
        })?;
        rs = rs.add_rule(PathBeneath::new(fd, handled)).map_err(fail)?;
    }
    rs = rs
        .add_rules(path_beneath_rules(DEVICES, handled))
        .map_err(fail)?;
    let fd: Option<OwnedFd> = rs.into();
    fd.ok_or_else(|| RulesetError::NotCreated(probe().err().unwrap_or(Unavailable::NotCreated)))
}

/// Applies the ruleset to the calling process. Only system calls: safe after fork.
///
/// # Safety
/// Call it in the child between fork and exec, with a descriptor from [`write_ruleset`].
pub unsafe fn restrict_self(fd: i32) -> std::io::Result<()> {
    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The raw descriptor to hand to the child.
pub fn raw(fd: &OwnedFd) -> i32 {
    fd.as_raw_fd()
}
