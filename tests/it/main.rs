//! The integration tests: the real binary, spawned by each test on a free loopback port with
//! a temp data dir. One test crate (one module per area), so the harness in `common/` and
//! the loopback servers in `support/` compile once and every test shares one binary.
//! Tests that load the machine on purpose (hostile clients, the load and crash loops) take
//! `common::heavy()` so that they never overlap one another.

mod common;
mod support;

mod ahead;
mod api;
mod budgets;
mod cache;
mod checkout;
mod cli;
mod cluster;
mod config;
mod containment;
mod dashboard;
mod deadman;
mod durability;
mod filters;
mod hostile;
mod jobflags;
mod jobtest;
mod journal;
mod load;
mod manpage;
mod outputs;
mod platform;
mod quartz;
mod readme;
mod runs;
mod schedule;
mod schemes;
mod service;
mod smoke;
mod torture;
mod triggers;
mod windows;
