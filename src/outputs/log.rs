//! `log`: one log line per run, with a short excerpt of the output.

use super::error::DeliveryError;
use crate::job::Job;
use crate::run::RunRecord;

const EXCERPT_CHARS: usize = 200;

pub fn deliver(job: &Job, run: &RunRecord) -> Result<(), DeliveryError> {
    let mut excerpt: String = run.output.trim().chars().take(EXCERPT_CHARS).collect();
    if run.output.trim().chars().count() > EXCERPT_CHARS {
        excerpt.push('…');
    }
    ::log::info!(
        event = "output.log", job = job.name.as_str(), run = run.id.as_str(),
        status = run.status.as_str(), output_bytes = run.output_bytes;
        "{}", excerpt.replace('\n', "\\n")
    );
    Ok(())
}
