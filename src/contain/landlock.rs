//! Landlock (Linux 5.13+): the kernel's unprivileged filesystem sandbox, used for
//! `limits.filesystem: "working_dir"`. The agent may read and execute anywhere, but it may
//! create, write, remove or rename only beneath its working directory and its private
//! `$TMPDIR`, and write only a few device files (`/dev/null`, `/dev/tty`, …).
//!
//! The ruleset is built in the daemon, before the fork (building it allocates); the child
//! only makes the two system calls that apply it, which are safe between fork and exec.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use landlock::{
    path_beneath_rules, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, ABI,
};

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
pub fn probe() -> Result<i32, String> {
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
        Some(libc::ENOSYS) => "the kernel has no Landlock support (ENOSYS; Linux 5.13+ built with CONFIG_SECURITY_LANDLOCK)".into(),
        Some(libc::EOPNOTSUPP) => "Landlock is built into the kernel but not enabled (add landlock to the lsm= boot parameter)".into(),
        Some(libc::EPERM) => "a seccomp filter (container runtime?) forbids the Landlock system calls".into(),
        _ => format!("the Landlock probe failed: {e}"),
    })
}

/// Builds the ruleset that confines writes to `writable` (directories that must exist)
/// and the device files. The returned descriptor is applied in the child by
/// [`restrict_self`].
pub fn write_ruleset(writable: &[&Path]) -> Result<OwnedFd, String> {
    let handled: BitFlags<AccessFs> = AccessFs::from_write(ABI::V3);
    let fail = |e: &dyn std::fmt::Display| format!("cannot build the Landlock ruleset: {e}");
    let mut rs = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(handled)
        .map_err(|e| fail(&e))?
        .create()
        .map_err(|e| fail(&e))?;
    for dir in writable {
        let fd = PathFd::new(dir).map_err(|e| fail(&format!("{}: {e}", dir.display())))?;
        rs = rs
            .add_rule(PathBeneath::new(fd, handled))
            .map_err(|e| fail(&e))?;
    }
    rs = rs
        .add_rules(path_beneath_rules(DEVICES, handled))
        .map_err(|e| fail(&e))?;
    let fd: Option<OwnedFd> = rs.into();
    fd.ok_or_else(|| {
        format!(
            "Landlock is not available: {}",
            probe()
                .err()
                .unwrap_or_else(|| "the ruleset was not created".into())
        )
    })
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
