//! What turns the outside world into firings: the scheduler clock (cron and interval),
//! webhook intake (on the HTTP threads), the file watcher, the git poller, and the
//! jobs-directory watcher that picks up job files written by the CLI.

pub mod clock;
pub mod files;
pub mod git;
pub mod glob;
pub mod jobs_dir;
pub mod webhook;
