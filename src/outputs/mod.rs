//! The output dispatcher: after every finished run, each of the job's outputs whose `on`
//! matches the run's status gets the result. One small file per target; a new target is one
//! file plus one arm in [`deliver`]. A failing output never fails the run: its error lands
//! in the record's `dispatch_errors`.

mod file;
mod log;
mod stdout;

use crate::job::{Job, OnStatus, Output, Target};
use crate::run::{RunRecord, RunStatus};

/// Delivers `run` to every matching output of `job`, recording failures in the run.
pub fn dispatch(job: &Job, run: &mut RunRecord) {
    for o in &job.outputs {
        if !wants(o, run.status) {
            continue;
        }
        if let Err(e) = deliver(&o.target, job, run) {
            run.add_dispatch_error(o.target.kind(), e);
        }
    }
}

/// Whether output `o` is for runs that ended with `status` (`timed_out` counts as failed).
pub fn wants(o: &Output, status: RunStatus) -> bool {
    match status {
        RunStatus::Succeeded => o.on.contains(&OnStatus::Succeeded),
        RunStatus::Failed | RunStatus::TimedOut => o.on.contains(&OnStatus::Failed),
        _ => false,
    }
}

fn deliver(target: &Target, job: &Job, run: &RunRecord) -> Result<(), String> {
    match target {
        Target::Log => log::deliver(job, run),
        Target::Stdout => stdout::deliver(job, run),
        Target::File { path, append } => file::deliver(path, *append, job, run),
        other => Err(format!(
            "output type {} is not active yet in this version: nothing was delivered",
            other.kind()
        )),
    }
}

/// The header line written before a result: job, run id, time and status.
pub fn header(job: &Job, run: &RunRecord) -> String {
    let mut h = format!(
        "=== {} run {} {} {}",
        job.name,
        run.id,
        run.finished_at.as_deref().unwrap_or("-"),
        run.status.as_str()
    );
    if let Some(c) = run.exit_code {
        h.push_str(&format!(" exit={c}"));
    }
    if let Some(e) = &run.error {
        h.push_str(&format!(" error={e:?}"));
    }
    h.push_str(" ===\n");
    h
}

/// The result text with a trailing newline.
pub fn body(run: &RunRecord) -> String {
    let mut b = run.output.clone();
    if !b.is_empty() && !b.ends_with('\n') {
        b.push('\n');
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(outputs: serde_json::Value) -> Job {
        crate::job::validate_job(
            &json!({"name": "j", "prompt": "p", "triggers": [{"type": "interval", "seconds": 9}], "outputs": outputs}),
            "job_1",
            "2026-01-01T00:00:00Z",
        )
        .unwrap()
    }

    #[test]
    fn file_output_appends_with_header_and_on_filters() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.txt");
        let j = job(json!([
            {"type": "file", "path": p.to_str().unwrap()},
            {"type": "file", "path": "/nonexistent-dir/x", "on": ["failed"]}
        ]));
        let mut r = RunRecord::queued("run_1".into(), "job_1", "j", json!({"type": "manual"}));
        r.status = RunStatus::Succeeded;
        r.output = "hello".into();
        dispatch(&j, &mut r);
        dispatch(&j, &mut r);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.matches("=== j run run_1").count(), 2);
        assert!(text.contains("hello\n"));
        assert!(r.dispatch_errors.is_empty(), "{:?}", r.dispatch_errors);
        r.status = RunStatus::Failed;
        dispatch(&j, &mut r);
        assert_eq!(r.dispatch_errors.len(), 1);
        assert!(r.dispatch_errors[0].error.contains("/nonexistent-dir/x"));
    }

    #[test]
    fn inactive_targets_say_so() {
        let j = job(json!([{"type": "slack", "channel": "#c", "token_env": "T"}]));
        let mut r = RunRecord::queued("run_1".into(), "job_1", "j", json!({}));
        r.status = RunStatus::Failed;
        dispatch(&j, &mut r);
        assert_eq!(r.dispatch_errors[0].target, "slack");
        assert!(r.dispatch_errors[0].error.contains("not active yet"));
    }
}
