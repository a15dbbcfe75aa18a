//! Stop and reload requests without async: the OS side is [`crate::sys`] (Unix: SIGTERM,
//! SIGINT and SIGHUP blocked in every thread, the mask set before any thread starts, and
//! taken with `sigwait`; Windows: Ctrl-C, Ctrl-Break, console close and the `stop` command's
//! event). One thread turns them into [`Signal`] messages for the main thread. Agents get a
//! clean mask in the child before exec.

use std::thread;

use crossbeam_channel::Sender;

pub use crate::sys::Signal;

/// Readies the process for the signal thread. Call first thing in `main` for the daemon,
/// before any thread exists.
pub fn block() -> std::io::Result<()> {
    crate::sys::prepare_signals()
}

/// Starts the thread that turns signals into [`Signal`] messages.
pub fn spawn(tx: Sender<Signal>) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            if tx.send(crate::sys::wait_signal()).is_err() {
                return;
            }
        })
}
