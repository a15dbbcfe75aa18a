//! `file`: the header line and the result appended to (or replacing) a file, durably.

use std::path::Path;

use super::error::DeliveryError;
use crate::job::validate::expand_tilde;
use crate::job::Job;
use crate::run::RunRecord;

pub fn deliver(path: &str, append: bool, job: &Job, run: &RunRecord) -> Result<(), DeliveryError> {
    let p = expand_tilde(path);
    let text = format!("{}{}", super::header(job, run), super::body(run));
    let r = if append {
        crate::fsio::append_durable(Path::new(&p), text.as_bytes(), 0o644)
    } else {
        crate::fsio::write_atomic(Path::new(&p), text.as_bytes(), 0o644)
    };
    r.map_err(|source| DeliveryError::File { path: p, source })
}
