//! Routing: authentication, then method and path to a handler. 404 for unknown paths, 405
//! (with `Allow`) for a known path and the wrong method.

use super::{jobs, schedule, system, web, Api, Req, Resp};
use crate::ids::constant_time_eq;
use crate::metrics::Metrics;

/// Answers one request. Never panics on any input.
pub fn handle(api: &Api, req: &Req) -> Resp {
    if req.path.starts_with("/hooks/") {
        return match super::hooks::jobs_for(api, req) {
            Ok(jobs) => super::hooks::answer(api, jobs, &mut req.clone()),
            Err(r) => r,
        };
    }
    // The dashboard's files hold no data: they are served without the token.
    if let Some(r) = web::asset(req) {
        return r;
    }
    if !authorized(api, req) {
        Metrics::inc(&api.engine.metrics.http_unauthorized_total);
        return Resp::error(
            401,
            "missing or wrong API token: send Authorization: Bearer <token> (see `bog-agents-daemon token`)",
        )
        .with("WWW-Authenticate", "Bearer realm=\"bog-agents-daemon\"");
    }
    let path = req.path.trim_end_matches('/');
    // Each segment is percent-decoded on its own, so `%2F` never makes a new segment.
    let decoded: Vec<String> = path
        .split('/')
        .skip(1)
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let m = req.method.as_str();
    match segs.as_slice() {
        ["health"] => only(m, &["GET"], || system::health(api)),
        ["metrics"] => only(m, &["GET"], || system::metrics(api, req)),
        ["jobs"] => match m {
            "GET" => jobs::list(api),
            "POST" => jobs::create(api, req),
            _ => not_allowed(&["GET", "POST"]),
        },
        ["jobs", id] => match m {
            "GET" => jobs::get(api, id),
            "PATCH" => jobs::patch(api, id, req),
            "DELETE" => jobs::delete(api, id),
            _ => not_allowed(&["GET", "PATCH", "DELETE"]),
        },
        ["jobs", id, "runs"] => only(m, &["GET"], || jobs::runs(api, id, req)),
        ["jobs", id, "runs", run_id] => only(m, &["GET"], || jobs::run(api, id, run_id)),
        ["jobs", id, "runs", run_id, "output"] => {
            only(m, &["GET"], || super::output::snapshot(api, id, run_id))
        }
        ["jobs", id, "run"] => only(m, &["POST"], || jobs::trigger(api, id, req)),
        ["jobs", id, "test"] => only(m, &["POST"], || super::test::test(api, id, req)),
        ["schedule"] => only(m, &["GET"], || schedule::upcoming(api, req)),
        ["schedule", "preview"] => only(m, &["GET"], || schedule::preview(req)),
        ["git", "notify"] => only(m, &["POST"], || {
            // Several pushes in a row need one poll: a full channel already has one queued.
            let _ = api.git_kick.try_send(());
            Resp::json(202, &serde_json::json!({"status": "polling"}))
        }),
        _ => Resp::error(404, format!("no such endpoint: {}", req.path)),
    }
}

/// Whether the request carries the API token.
pub fn authorized(api: &Api, req: &Req) -> bool {
    let Some(h) = req.header("authorization") else {
        return false;
    };
    let Some((scheme, token)) = h.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("Bearer")
        && constant_time_eq(token.trim().as_bytes(), api.token.as_bytes())
}

fn only(method: &str, allowed: &[&str], f: impl FnOnce() -> Resp) -> Resp {
    if allowed.contains(&method) {
        f()
    } else {
        not_allowed(allowed)
    }
}

fn not_allowed(allowed: &[&str]) -> Resp {
    Resp::error(
        405,
        format!("method not allowed here; allowed: {}", allowed.join(", ")),
    )
    .with("Allow", allowed.join(", "))
}
