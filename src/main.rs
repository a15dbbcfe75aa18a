//! bog-agents-daemon: runs AI agents when something happens (cron, interval, file change,
//! webhook, git push) and delivers what they say. See ARCHITECTURE.md for the map.
// Unsafe code lives only in `sys` (the OS) and `contain` (Linux cgroups, Landlock).
#![deny(unsafe_code)]

mod agent;
mod api;
mod backoff;
mod checkout;
mod cli;
mod cluster;
mod config;
#[allow(unsafe_code)]
mod contain;
mod daemon;
mod engine;
mod fsio;
mod ids;
mod job;
mod jobtest;
mod live;
mod logging;
mod metrics;
mod outputs;
mod payload;
mod plan;
#[cfg(test)]
mod proptests;
mod run;
mod schedule;
mod service;
mod signals;
mod store;
#[allow(unsafe_code)]
mod sys;
mod template;
mod time;
mod triggers;
mod worker;

fn main() {
    std::process::exit(cli::main());
}
