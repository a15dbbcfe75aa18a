//! The dashboard (README "Dashboard"): a small web app in HTML, CSS and plain JavaScript
//! (`src/web/`), compiled into the binary and served without the token, since its files
//! hold no data. The page asks for the token, keeps it in the tab's `sessionStorage` and
//! calls the REST API with `Authorization: Bearer`, like any other client. Every file is
//! sent with a strict Content-Security-Policy (its own origin only, no inline script or
//! style, no framing), `nosniff` and no referrer.

use super::{Req, Resp};

/// The page's policy: scripts, styles, images and API calls from the daemon itself only;
/// nothing inline, no plugins, no framing, no forms posted elsewhere.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's files: path, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../web/index.html"),
    ),
    (
        "/ui/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/app.js"),
    ),
    (
        "/ui/app.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/app.css"),
    ),
    (
        "/ui/icon.svg",
        "image/svg+xml",
        include_bytes!("../web/icon.svg"),
    ),
];

/// The dashboard file a `GET` (or `HEAD`) of `req` asks for, if it asks for one; anything
/// else (including every API path) is None and goes through the token check as before.
pub fn asset(req: &Req) -> Option<Resp> {
    let path = match req.path.as_str() {
        "/index.html" => "/",
        p => p,
    };
    let (_, content_type, body) = FILES.iter().find(|(p, _, _)| *p == path)?;
    if req.method != "GET" && req.method != "HEAD" {
        return Some(
            Resp::error(405, "method not allowed here; allowed: GET, HEAD")
                .with("Allow", "GET, HEAD"),
        );
    }
    Some(
        Resp {
            status: 200,
            content_type,
            headers: Vec::new(),
            body: body.to_vec(),
        }
        .with("Content-Security-Policy", CSP)
        .with("X-Content-Type-Options", "nosniff")
        .with("Referrer-Policy", "no-referrer")
        .with("X-Frame-Options", "DENY")
        .with("Cache-Control", "no-cache"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Option<Resp> {
        asset(&Req {
            method: "GET".into(),
            path: path.into(),
            ..Req::default()
        })
    }

    #[test]
    fn only_the_dashboards_files_are_served_without_a_token() {
        for p in [
            "/",
            "/index.html",
            "/ui/app.js",
            "/ui/app.css",
            "/ui/icon.svg",
        ] {
            let r = get(p).unwrap();
            assert_eq!(r.status, 200, "{p}");
            assert!(r
                .headers
                .iter()
                .any(|(k, v)| *k == "Content-Security-Policy" && v == CSP));
        }
        for p in [
            "/jobs",
            "/health",
            "/ui/",
            "/ui/../jobs",
            "/ui/app.js/x",
            "/hooks/x",
        ] {
            assert!(get(p).is_none(), "{p}");
        }
        let post = asset(&Req {
            method: "POST".into(),
            path: "/".into(),
            ..Req::default()
        });
        assert_eq!(post.unwrap().status, 405);
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = std::str::from_utf8(get("/").unwrap().body.as_slice())
            .unwrap()
            .to_string();
        assert!(!html.contains("<script>") && !html.contains("style="));
        assert!(!html.contains("<style"));
        for h in [
            "onclick",
            "onload",
            "onsubmit",
            "oninput",
            "onchange",
            "javascript:",
        ] {
            assert!(!html.contains(h), "no inline handler {h}");
        }
    }
}
