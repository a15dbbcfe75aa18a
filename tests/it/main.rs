//! The integration tests: the real binary, spawned by each test on a free loopback port with
//! a temp data dir. One test crate (one module per area), so the harness in `common/` and
//! the loopback servers in `support/` compile once and every test shares one binary.
//! Tests that load the machine on purpose (hostile clients, the load and crash loops) take
//! `common::heavy()` so that they never overlap one another.

mod common;
mod support;

mod api;
mod cache;
mod cli;
mod cluster;
mod containment;
mod dashboard;
mod durability;
mod hostile;
mod load;
mod manpage;
mod outputs;
mod readme;
mod runs;
mod schedule;
mod service;
mod smoke;
mod torture;
mod triggers;
