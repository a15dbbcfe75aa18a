//! Signals without async: SIGTERM, SIGINT and SIGHUP are blocked in every thread (the mask
//! is set before any thread starts) and one thread takes them with `sigwait`. Agents get a
//! clean mask in the child before exec.

use std::thread;

use crossbeam_channel::Sender;

/// What the signal thread reports to the main thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: drain and exit.
    Stop(i32),
    /// SIGHUP: reload jobs from disk.
    Reload,
}

fn set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut s, sig);
        }
        s
    }
}

/// Blocks the handled signals in the calling thread and every thread it starts afterwards.
/// Call first thing in `main` for the daemon.
pub fn block() {
    let s = set();
    // SAFETY: pthread_sigmask with a valid set.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &s, std::ptr::null_mut());
    }
}

/// Starts the thread that turns signals into [`Signal`] messages.
pub fn spawn(tx: Sender<Signal>) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let s = set();
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: sigwait with a valid set and out-pointer.
                let r = unsafe { libc::sigwait(&s, &mut sig) };
                if r != 0 {
                    continue;
                }
                let msg = if sig == libc::SIGHUP {
                    Signal::Reload
                } else {
                    Signal::Stop(sig)
                };
                if tx.send(msg).is_err() {
                    return;
                }
            }
        })
}
