//! Servers the output tests deliver to: a scripted HTTP server and an SMTP sink.
#![allow(dead_code)]

pub mod browser;
pub mod http;
pub mod smtp;
