//! `GET /jobs/{id}/runs/{run_id}/output`: a run's output as plain text (README "REST API").
//! While the run is queued or running the answer is streamed (chunked) line by line as the
//! agent writes it, redacted, and ends when the run ends; the client then reads the record
//! for its status. A finished run's output is answered whole. Each follower holds only its
//! own connection's thread and reads at its own pace from the run's bounded buffer.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use super::{Api, Resp};
use crate::engine::Engine;
use crate::live::Live;
use crate::run::RunStatus;

/// The path's job and run, when `path` is this endpoint's.
pub fn route(path: &str) -> Option<(String, String)> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segs.as_slice() {
        ["jobs", id, "runs", run_id, "output"] => Some((decode(id), decode(run_id))),
        _ => None,
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The run's output as it is now (no streaming): 404 for an unknown job or run.
pub fn snapshot(api: &Api, id: &str, run_id: &str) -> Resp {
    match record(&api.engine, id, run_id) {
        Some((_, rec)) => text(rec.output.into_bytes()),
        None => Resp::error(404, format!("job \"{id}\" has no run \"{run_id}\"")),
    }
}

fn text(body: Vec<u8>) -> Resp {
    Resp {
        status: 200,
        content_type: "text/plain; charset=utf-8",
        headers: Vec::new(),
        body,
    }
}

fn record(engine: &Engine, id: &str, run_id: &str) -> Option<(String, crate::run::RunRecord)> {
    let job = engine.job(id)?;
    let rec = engine.store.load_run(&job.id, run_id)?;
    Some((job.id.clone(), rec))
}

/// A follower of the run's output when the run is still queued or running (its answer is
/// streamed); None when it is over or unknown (the router answers).
pub fn follow(api: &Api, id: &str, run_id: &str) -> Option<Follow> {
    let (job_id, rec) = record(&api.engine, id, run_id)?;
    if rec.status.is_final() {
        return None;
    }
    Some(Follow {
        engine: api.engine.clone(),
        job_id,
        run_id: run_id.to_string(),
        live: None,
        next: 0,
        pending: Vec::new(),
        done: false,
    })
}

/// Streams what `reader` follows as the answer to `rq` (chunked, one chunk per line or so).
pub fn respond(rq: tiny_http::Request, reader: Follow) {
    let mut headers = Vec::new();
    for (k, v) in [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
    ] {
        if let Ok(h) = tiny_http::Header::from_bytes(k, v) {
            headers.push(h);
        }
    }
    let resp = tiny_http::Response::new(tiny_http::StatusCode(200), headers, reader, None, None);
    if let Err(e) = rq.respond(resp) {
        log::debug!(event = "http.error"; "streaming a run's output ended: {e}");
    }
}

/// How long one wait for new output lasts before the run's state is looked at again.
const POLL: Duration = Duration::from_millis(250);

/// Reads a run's output as it is written: waits for the run to start, follows its live
/// output, and ends when it is over (with its recorded output, if it ended unseen).
pub struct Follow {
    engine: Arc<Engine>,
    job_id: String,
    run_id: String,
    live: Option<Arc<Live>>,
    next: u64,
    pending: Vec<u8>,
    done: bool,
}

impl Read for Follow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if !self.pending.is_empty() {
                let n = buf.len().min(self.pending.len());
                buf[..n].copy_from_slice(&self.pending[..n]);
                self.pending.drain(..n);
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            if self.live.is_none() {
                self.live = self.engine.live.get(&self.run_id);
            }
            match &self.live {
                Some(live) => {
                    let c = live.read_from(self.next, buf.len().max(1), POLL);
                    if c.missed > 0 {
                        self.pending.extend_from_slice(
                            format!("[... {} bytes of output not kept ...]\n", c.missed).as_bytes(),
                        );
                    }
                    self.pending.extend_from_slice(&c.data);
                    self.next = c.next;
                    if c.done && self.not_over() {
                        // A run taken ahead of its slot whose job changed meanwhile is staged
                        // again (`worker::execute`): the first staging's output ended before
                        // any agent wrote to it, and the run goes on (its agent may be
                        // starting already). Follow the run's next one.
                        self.live = None;
                        self.next = 0;
                    } else {
                        self.done = c.done;
                    }
                }
                None => {
                    // Not started yet, or already over.
                    let rec = self.engine.store.load_run(&self.job_id, &self.run_id);
                    match rec {
                        Some(r) if r.status == RunStatus::Queued => std::thread::sleep(POLL),
                        Some(r) if r.status.is_final() => {
                            self.pending = r.output.into_bytes();
                            self.done = true;
                        }
                        // Running, but its output is not on the board yet (starting).
                        Some(_) => std::thread::sleep(Duration::from_millis(20)),
                        None => self.done = true,
                    }
                }
            }
        }
    }
}

impl Follow {
    /// Whether the run's record is not final yet (a run's output ends after its final
    /// record is written).
    fn not_over(&self) -> bool {
        self.engine
            .store
            .load_run(&self.job_id, &self.run_id)
            .is_some_and(|r| !r.status.is_final())
    }
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn routes_only_the_output_path() {
        assert_eq!(
            route("/jobs/a/runs/run_1/output"),
            Some(("a".into(), "run_1".into()))
        );
        assert_eq!(
            route("/jobs/a%2Db/runs/run_1/output/"),
            Some(("a-b".into(), "run_1".into()))
        );
        assert_eq!(route("/jobs/a/runs/run_1"), None);
        assert_eq!(route("/jobs/a/runs/run_1/output/x"), None);
    }
}
