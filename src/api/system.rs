//! `/health` and `/metrics`.

use serde_json::json;

use super::{Api, Req, Resp};

pub fn health(api: &Api) -> Resp {
    let e = &api.engine;
    let mut v = json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": e.started.elapsed().as_secs(),
            "jobs": e.job_count(),
            "running": e.running_count(),
            "workers": e.settings.workers,
            "pid": std::process::id(),
            "containment": crate::contain::current().health(),
    });
    if let Some(c) = e.cluster() {
        v["cluster"] = c.health();
    }
    Resp::json(200, &v)
}

pub fn metrics(api: &Api, req: &Req) -> Resp {
    let e = &api.engine;
    let h = &api.http;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let journal = e.store.journal().map(|j| j.stats());
    let jget = |f: fn(&crate::store::journal::Stats) -> &std::sync::atomic::AtomicU64| {
        journal.map(|s| get(f(s))).unwrap_or(0)
    };
    let extra = [
        ("uptime_seconds", e.started.elapsed().as_secs()),
        ("journal_records_total", jget(|s| &s.records)),
        ("journal_flushes_total", jget(|s| &s.flushes)),
        ("journal_bypassed_total", jget(|s| &s.bypassed)),
        ("journal_checkpoints_total", jget(|s| &s.checkpoints)),
        ("journal_discarded_total", jget(|s| &s.discarded)),
        ("max_concurrent_runs", e.settings.max_concurrent_runs as u64),
        ("jobs_over_budget", e.jobs_over_budget()),
        (
            "http_connections_open",
            h.connections_open
                .load(std::sync::atomic::Ordering::Relaxed) as u64,
        ),
        (
            "http_connections_accepted_total",
            get(&h.connections_accepted),
        ),
        (
            "http_connections_refused_total",
            get(&h.connections_refused),
        ),
        ("http_accept_errors_total", get(&h.accept_errors)),
        ("http_timeouts_total", get(&h.timeouts)),
        ("http_heads_too_large_total", get(&h.heads_too_large)),
    ];
    let wants_text = req
        .header("accept")
        .is_some_and(|a| a.contains("text/plain"));
    if wants_text {
        Resp {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            headers: Vec::new(),
            body: e.metrics.to_prometheus(&extra).into_bytes(),
        }
    } else {
        Resp::json(200, &e.metrics.to_json(&extra))
    }
}
