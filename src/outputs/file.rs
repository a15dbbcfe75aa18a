//! `file`: the header line and the result appended to (or replacing) a file, durably.

use std::path::Path;

use crate::job::validate::expand_tilde;
use crate::job::Job;
use crate::run::RunRecord;

pub fn deliver(path: &str, append: bool, job: &Job, run: &RunRecord) -> Result<(), String> {
    let p = expand_tilde(path);
    let text = format!("{}{}", super::header(job, run), super::body(run));
    let r = if append {
        crate::fsio::append_durable(Path::new(&p), text.as_bytes(), 0o644)
    } else {
        crate::fsio::write_atomic(Path::new(&p), text.as_bytes(), 0o644)
    };
    r.map_err(|e| format!("cannot write {p}: {e}"))
}
