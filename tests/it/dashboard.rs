//! The dashboard in a real browser (headless Chromium through the DevTools protocol, see
//! `support/browser.rs`) against the real daemon: the token prompt, a wrong token, the jobs
//! view, "run now" with the run's output live on screen before the run ends, a failed run's
//! error, enable/disable, the filter, the schedule view and its cron preview, the health bar,
//! phone width and dark mode; and the headers that keep the page's security. Screenshots go to
//! the test's temp dir, or to `$BOG_SCREENSHOT_DIR` to keep them (their paths are printed);
//! `BOG_DASHBOARD_SCREENSHOT=1` also writes the jobs view to `docs/dashboard.png` for the README.

use std::path::Path;
use std::time::Instant;

use serde_json::json;

use crate::common::*;
use crate::support::browser::Browser;

/// The browser, or None (with the reason printed) where none can run here. Chromium is a
/// heavy process tree, so a browser test holds `common::heavy()` while it runs: the load and
/// soak tests and the browser never share the machine's cores.
fn browser(dir: &Path) -> Option<(Browser, std::sync::MutexGuard<'static, ()>)> {
    let g = heavy();
    match Browser::start(dir).map(|b| (b, g)) {
        Ok(b) => Some(b),
        Err(e) => {
            println!("SKIPPED: no browser on this machine: {e}");
            None
        }
    }
}

fn get_plain(d: &Daemon, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let r = match ureq::get(&format!("http://127.0.0.1:{}{path}", d.port)).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    let status = r.status();
    let headers = r
        .headers_names()
        .into_iter()
        .map(|n| (n.clone(), r.header(&n).unwrap_or_default().to_string()))
        .collect();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut r.into_reader(), &mut body).unwrap();
    (status, headers, body)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn the_dashboards_files_need_no_token_and_carry_a_strict_policy() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let mut weight = 0;
    for (path, ty) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let (st, h, body) = get_plain(&d, path);
        assert_eq!(st, 200, "{path}");
        assert!(
            header(&h, "content-type").unwrap().starts_with(ty),
            "{path}"
        );
        let csp = header(&h, "content-security-policy").expect("CSP");
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(header(&h, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&h, "referrer-policy"), Some("no-referrer"));
        weight += body.len();
    }
    println!("page weight (HTML + JS + CSS): {weight} bytes");
    let (_, _, html) = get_plain(&d, "/");
    let html = String::from_utf8(html).unwrap();
    assert!(!html.contains("<script>") && !html.contains("<style") && !html.contains("style="));
    // Everything else still needs the token; the page's files hold no data.
    for p in [
        "/jobs",
        "/health",
        "/schedule",
        "/schedule/preview?cron=*+*+*+*+*",
    ] {
        assert_eq!(get_plain(&d, p).0, 401, "{p}");
    }
    assert_eq!(get_plain(&d, "/ui/nope.js").0, 401);
    let (st, _, _) = d.raw("POST", "/", Some(b"x"), &[]);
    assert_eq!(st, 405);
}

#[test]
fn the_schedule_endpoints_answer_like_the_next_command() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let (st, v) = d.get(
        "/schedule/preview?cron=0+9+*+*+1-5&timezone=Europe%2FParis&count=3&from=2026-11-27T12:00:00Z",
    );
    assert_eq!(st, 200, "{v}");
    let (code, out, _) = cli(
        &d.dir,
        &[
            "next",
            "0 9 * * 1-5",
            "--timezone",
            "Europe/Paris",
            "--count",
            "3",
            "--from",
            "2026-11-27T12:00:00Z",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let from_cli: Vec<&str> = out.lines().collect();
    assert_eq!(v["fires"], json!(from_cli), "{v}");
    assert_eq!(v["fires"][0], "2026-11-30T09:00:00+01:00");
    assert_eq!(v["timezone"], "Europe/Paris");
    for (q, field) in [
        ("cron=nope", "cron"),
        ("", "cron"),
        ("cron=*+*+*+*+*&timezone=Mars%2FOlympus", "timezone"),
        ("cron=*+*+*+*+*&count=0", "count"),
        ("cron=*+*+*+*+*&count=101", "count"),
        ("cron=*+*+*+*+*&from=yesterday", "from"),
    ] {
        let (st, v) = d.get(&format!("/schedule/preview?{q}"));
        assert_eq!((st, v["field"].as_str()), (400, Some(field)), "{q}: {v}");
    }
    d.create(&sh_job(
        "hourly",
        "true",
        json!([{"type": "cron", "cron": "0 * * * *"}]),
    ));
    d.create(&sh_job(
        "fast",
        "true",
        json!([{"type": "interval", "seconds": 1}]),
    ));
    d.create(&sh_job(
        "hook",
        "true",
        json!([{"type": "webhook", "path": "/hooks/h", "secret_env": "S"}]),
    ));
    let (st, v) = d.get("/schedule");
    assert_eq!(st, 200, "{v}");
    let jobs = v["jobs"].as_array().unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{v}");
    let hourly = jobs.iter().find(|j| j["name"] == "hourly").unwrap();
    let n = hourly["fires"].as_array().unwrap().len();
    assert!((24..=25).contains(&n), "{hourly}");
    assert_eq!(hourly["truncated"], false);
    let fast = jobs.iter().find(|j| j["name"] == "fast").unwrap();
    assert_eq!(
        fast["truncated"], true,
        "a firing a second is cut, not listed"
    );
    assert_eq!(d.get("/schedule?hours=0").0, 400);
    assert_eq!(d.get("/schedule?hours=169").0, 400);
}

#[test]
fn a_wrong_token_is_refused_with_a_clear_message() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let Some((mut b, _heavy)) = browser(t.path()) else {
        return;
    };
    b.viewport(1100, 700, false);
    b.goto(&format!("http://127.0.0.1:{}/", d.port));
    b.wait(
        10,
        "the token prompt",
        "!document.querySelector('#login').hidden",
    );
    b.type_into("#token", "not-the-token");
    b.press("Enter", 13);
    let msg = b.wait(
        10,
        "the refusal",
        "!document.querySelector('#notice').hidden && document.querySelector('#notice').textContent",
    );
    assert!(
        msg.as_str().unwrap().contains("refused this token"),
        "{msg}"
    );
    assert_eq!(
        b.eval("sessionStorage.length"),
        json!(0),
        "a wrong token is not kept"
    );
    assert_eq!(b.eval("document.querySelector('#nav').hidden"), json!(true));
    b.screenshot(&t.path().join("dashboard-wrong-token.png"));
    let errors = b.errors();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn the_dashboard_shows_jobs_runs_live_output_and_the_schedule() {
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    let flag = t.path().join("go-on");
    let talker = format!(
        "echo 'first line from the agent'; while [ ! -e {f} ]; do sleep 0.05; done; echo 'last line'",
        f = flag.display()
    );
    let mut job = sh_job("talker", &talker, idle_trigger());
    job["limits"] = json!({"timeout_seconds": 120});
    let talker_id = d.create(&job)["id"].as_str().unwrap().to_string();
    let mut broken = sh_job(
        "broken",
        "echo 'about to fail'; echo 'disk on fire' >&2; exit 3",
        json!([
            {"type": "interval", "seconds": 3600},
            {"type": "webhook", "path": "/hooks/pr", "secret_env": "BOG_WEBHOOK_SECRET",
             "scheme": "github", "events": ["pull_request.opened"],
             "match": {"all": [{"path": "pull_request.base.ref", "equals": "main"},
                               {"path": "label.name", "in": ["agent", "bot"]}]}},
        ]),
    );
    broken["limits"] = json!({"max_runs_per_day": 50});
    broken["expect"] = json!({"within_seconds": 86400});
    let broken_id = d.create(&broken)["id"].as_str().unwrap().to_string();
    let nightly = sh_job(
        "nightly-report",
        "true",
        json!([{"type": "cron", "cron": "30 2 * * *", "timezone": "Europe/Paris"}]),
    );
    let nightly_id = d.create(&nightly)["id"].as_str().unwrap().to_string();
    d.create(&sh_job(
        "watch-docs",
        "true",
        json!([{"type": "file_change", "patterns": ["docs/**/*.md"], "root": t.path().display().to_string()}]),
    ));
    let Some((mut b, _heavy)) = browser(t.path()) else {
        return;
    };
    // BOG_SCREENSHOT_DIR keeps them after the test (the temp dir goes with it).
    let kept = std::env::var_os("BOG_SCREENSHOT_DIR").map(std::path::PathBuf::from);
    let shots = kept.as_deref().unwrap_or(t.path());
    b.viewport(1200, 820, false);
    b.color_scheme("light");
    let base = format!("http://127.0.0.1:{}/", d.port);
    b.goto(&base);

    // The token, typed once, kept in this tab only and never in the URL.
    b.wait(
        10,
        "the token prompt",
        "!document.querySelector('#login').hidden",
    );
    b.type_into("#token", &d.token);
    b.press("Enter", 13);
    b.wait(
        15,
        "the jobs view",
        "document.querySelectorAll('#jobs li.job').length === 4",
    );
    let stored = b.eval("[sessionStorage.getItem('bog-agents-daemon.token'), localStorage.length, document.cookie, location.href]");
    assert_eq!(stored[0], json!(d.token));
    assert_eq!(stored[1], json!(0));
    assert_eq!(stored[2], json!(""));
    assert!(!stored[3].as_str().unwrap().contains(&d.token), "{stored}");

    // Health bar.
    b.wait(
        10,
        "the health bar",
        "document.querySelector('[data-metric=version] dd')",
    );
    let version = b.eval("document.querySelector('[data-metric=version] dd').textContent");
    assert_eq!(version, json!(env!("CARGO_PKG_VERSION")));
    assert_eq!(
        b.eval("document.querySelector('[data-metric=workers] dd').textContent"),
        json!("4")
    );

    // Triggers in words and the next fire.
    let nightly_text = b.eval(&format!(
        "document.querySelector('li.job[data-id=\"{nightly_id}\"]').innerText"
    ));
    let nightly_text = nightly_text.as_str().unwrap();
    assert!(nightly_text.contains("daily at 02:30"), "{nightly_text}");
    assert!(nightly_text.contains("Europe/Paris"), "{nightly_text}");
    assert!(
        nightly_text.contains("Next fire:") && nightly_text.contains("in "),
        "{nightly_text}"
    );
    assert!(nightly_text.contains("enabled"), "{nightly_text}");

    // A job created through the API appears without a reload.
    d.create(&sh_job("late-comer", "true", idle_trigger()));
    b.wait(15, "the new job", "[...document.querySelectorAll('#jobs li.job')].some(li => li.dataset.name === 'late-comer')");

    // A failed run: its error and its output.
    b.click(&format!("button[data-key=\"run:{broken_id}\"]"));
    b.wait(30, "the failed run", "document.querySelector('#run-status') && document.querySelector('#run-status').textContent === 'failed'");
    let err = b.wait(
        10,
        "the run's error",
        "document.querySelector('#error') && document.querySelector('#error').textContent",
    );
    assert!(err.as_str().unwrap().contains('3'), "{err}");
    b.wait(10, "the failed run's output and stderr", "document.querySelector('#output').textContent.includes('about to fail') && document.querySelector('#stderr').textContent.includes('disk on fire')");
    b.screenshot(&shots.join("dashboard-run-failed.png"));

    // Run now: the output shows on screen while the run is still running.
    b.goto(&format!("{base}#/jobs"));
    b.wait(
        15,
        "the jobs view",
        "document.querySelectorAll('#jobs li.job').length === 5",
    );
    let clicked = Instant::now();
    b.click(&format!("button[data-key=\"run:{talker_id}\"]"));
    b.wait(30, "the first line on screen", "document.querySelector('#output') && document.querySelector('#output').textContent.includes('first line from the agent')");
    let first_line = clicked.elapsed();
    println!(
        "run now -> first output line on screen: {} ms",
        first_line.as_millis()
    );
    let (_, runs) = d.get("/jobs/talker/runs");
    assert_eq!(
        runs[0]["status"], "running",
        "the line was shown before the run ended: {runs}"
    );
    b.wait(
        10,
        "the live marker",
        "document.querySelector('#live').textContent.startsWith('Live')",
    );
    b.screenshot(&shots.join("dashboard-run-live.png"));
    std::fs::write(&flag, "").unwrap();
    b.wait(
        30,
        "the end of the run",
        "document.querySelector('#run-status').textContent === 'succeeded'",
    );
    let out = b.eval("document.querySelector('#output').textContent");
    assert_eq!(out, json!("first line from the agent\nlast line\n"));

    // The runs view of the job.
    b.goto(&format!("{base}#/jobs/{broken_id}"));
    b.wait(
        15,
        "the runs table",
        "document.querySelectorAll('tbody tr').length === 1",
    );
    let row = b.eval("document.querySelector('tbody tr').innerText");
    let row = row.as_str().unwrap();
    assert!(
        row.contains("failed") && row.contains("manual") && row.contains('3'),
        "{row}"
    );
    // The job's facts: the webhook's scheme and filter, the dead-man's switch, the budget.
    let facts = b.eval("document.querySelector('#job-triggers').textContent");
    assert_eq!(
        facts,
        json!("every 1h 0m; on POST /hooks/pr signed the github way for pull_request.opened when (pull_request.base.ref=main & label.name in [agent,bot])")
    );
    assert_eq!(
        b.eval("document.querySelector('#job-expect').textContent"),
        json!("a successful run at least every 1d")
    );
    let budget = b.eval("document.querySelector('#job-budget').textContent");
    assert!(
        budget.as_str().unwrap().ends_with(" of 50 runs this day"),
        "{budget}"
    );
    b.screenshot(&shots.join("dashboard-runs.png"));
    let shown = |b: &mut Browser, status: &str| {
        b.eval(&format!("(() => {{ const s = document.querySelector('#run-filter'); s.value = '{status}'; s.dispatchEvent(new Event('change')); return [...document.querySelectorAll('tbody tr')].filter(r => !r.hidden).length; }})()"))
    };
    assert_eq!(shown(&mut b, "succeeded"), json!(0));
    assert_eq!(shown(&mut b, "failed"), json!(1));
    assert_eq!(shown(&mut b, ""), json!(1));

    // Filter, disable, and the run strip with status words beside the colours.
    b.goto(&format!("{base}#/jobs"));
    b.wait(
        15,
        "the strips",
        "document.querySelectorAll('#jobs .strip .cell').length === 2",
    );
    let labels = b.eval("[...document.querySelectorAll('#jobs .strip .cell')].map(c => c.getAttribute('aria-label').split(',')[0]).sort()");
    assert_eq!(labels, json!(["failed", "succeeded"]));
    // With the keyboard: focus the button, press Enter; focus stays on it after the refresh.
    let toggle = format!("button[data-key=\"toggle:{nightly_id}\"]");
    b.eval(&format!(
        "document.querySelector({}).focus()",
        serde_json::to_string(&toggle).unwrap()
    ));
    b.press("Enter", 13);
    b.wait(15, "the job disabled", &format!("document.querySelector('li.job[data-id=\"{nightly_id}\"] .state').textContent === 'disabled'"));
    assert_eq!(d.get(&format!("/jobs/{nightly_id}")).1["enabled"], false);
    b.wait(5, "focus kept on the toggle", &format!("document.activeElement && document.activeElement.dataset.key === 'toggle:{nightly_id}' && document.activeElement.textContent === 'Enable'"));
    b.screenshot(&shots.join("dashboard-jobs.png"));
    if std::env::var_os("BOG_DASHBOARD_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
        std::fs::copy(shots.join("dashboard-jobs.png"), &docs).unwrap();
        println!("README screenshot: {}", docs.display());
    }
    b.type_into("#filter", "talk");
    b.wait(
        5,
        "the filter",
        "[...document.querySelectorAll('#jobs li.job')].filter(li => !li.hidden).length === 1",
    );
    assert_eq!(
        b.eval("document.querySelector('#jobs-count').textContent"),
        json!("1 of 5 jobs match")
    );
    b.type_into("#filter", "");
    b.call("Input.dispatchKeyEvent", json!({"type": "keyDown", "key": "Backspace", "code": "Backspace", "windowsVirtualKeyCode": 8}));
    b.call("Input.dispatchKeyEvent", json!({"type": "keyUp", "key": "Backspace", "code": "Backspace", "windowsVirtualKeyCode": 8}));
    b.wait(
        5,
        "the filter cleared",
        "[...document.querySelectorAll('#jobs li.job')].filter(li => !li.hidden).length === 5",
    );

    // Schedule: the next 24 h and the cron preview.
    b.click("a[data-view=schedule]");
    b.wait(
        15,
        "the time line",
        "document.querySelector('.tl-row[data-job=broken] .tl-mark')",
    );
    let rows =
        b.eval("[...document.querySelectorAll('.tl-row[data-job]')].map(r => r.dataset.job)");
    assert_eq!(
        rows,
        json!(["broken", "late-comer", "talker"]),
        "enabled clock jobs only"
    );
    let quiet = b.eval("document.querySelector('.tl-row[data-job=talker] .fires').textContent");
    assert_eq!(quiet, json!("no firings in the next 24 h"));
    b.type_into("#cron", "0 9 * * 1-5");
    b.type_into("#tz", "Europe/Paris");
    b.type_into("#count", "4");
    b.press("Enter", 13);
    b.wait(
        10,
        "the preview",
        "document.querySelectorAll('#preview-result li').length === 4",
    );
    let first = b.eval("document.querySelector('#preview-result li time').textContent");
    let first = first.as_str().unwrap().to_string();
    assert!(
        first.ends_with("T09:00:00+01:00") || first.ends_with("T09:00:00+02:00"),
        "{first}"
    );
    b.type_into("#tz", "Mars/Olympus");
    b.press("Enter", 13);
    b.wait(
        10,
        "the zone error",
        "document.querySelector('#preview-result [role=alert]')",
    );
    b.type_into("#tz", "Europe/Paris");
    b.press("Enter", 13);
    b.wait(
        10,
        "the preview again",
        "document.querySelectorAll('#preview-result li').length === 4",
    );
    b.screenshot(&shots.join("dashboard-schedule.png"));

    // A phone, in the dark.
    b.viewport(390, 844, true);
    b.color_scheme("dark");
    b.goto(&format!("{base}#/jobs"));
    b.wait(
        15,
        "the jobs view",
        "document.querySelectorAll('#jobs li.job').length === 5",
    );
    let fits = b.eval("document.documentElement.scrollWidth <= window.innerWidth + 1");
    assert_eq!(fits, json!(true), "no sideways scrolling at phone width");
    let bg = b.eval("getComputedStyle(document.body).backgroundColor");
    assert_eq!(bg, json!("rgb(18, 20, 22)"), "dark colours");
    b.screenshot(&shots.join("dashboard-jobs-phone-dark.png"));

    // Forgetting the token.
    b.click("#signout");
    b.wait(
        5,
        "the token prompt",
        "!document.querySelector('#login').hidden && sessionStorage.length === 0",
    );

    let errors = b.errors();
    assert!(
        errors.is_empty(),
        "no script errors, no CSP violations: {errors:?}"
    );
}
