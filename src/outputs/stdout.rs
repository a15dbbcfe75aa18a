//! `stdout`: the header line and the result on the daemon's stdout.

use std::io::Write;

use super::error::DeliveryError;
use crate::job::Job;
use crate::run::RunRecord;

pub fn deliver(job: &Job, run: &RunRecord) -> Result<(), DeliveryError> {
    let text = format!("{}{}", super::header(job, run), super::body(run));
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(DeliveryError::Stdout)
}
