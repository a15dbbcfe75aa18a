//! Threads that turn the outside world into firings: the scheduler clock (cron and
//! interval) and the jobs-directory watcher that picks up job files written by the CLI.

pub mod clock;
pub mod jobs_dir;
