//! Hostile clients against the real binary, over loopback: lies about body sizes, stalled
//! and trickled requests, connection floods, huge heads, replayed large webhooks, floods
//! of refused requests. Throughout, `/health` must be answered on a fresh connection within
//! a second, the daemon must stay under 64 MiB and be alive afterwards (README "Security
//! model"). These tests take `common::heavy()`: each loads the daemon on purpose.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// Writes `config.json` into the data dir the daemon will use.
fn config(dir: &std::path::Path, cfg: Value) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("config.json"), cfg.to_string()).unwrap();
}

fn connect(d: &Daemon) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Reads until the server closes the connection (or `secs` pass); returns what arrived
/// and whether the server closed it.
fn read_to_close(s: &mut TcpStream, secs: u64) -> (String, bool) {
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&out).into_owned(), true)
            }
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

/// The status code of the first response in `text`.
fn status_of(text: &str) -> Option<u16> {
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// GET /health on a new connection must be answered 200 within one second; returns how
/// long it took.
fn health_within_a_second(d: &Daemon, what: &str) -> Duration {
    try_health(d).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn try_health(d: &Daemon) -> Result<Duration, String> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{}", d.port).parse().unwrap(),
        Duration::from_secs(1),
    )
    .map_err(|e| format!("cannot connect for /health: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        d.token
    )
    .map_err(|e| format!("cannot send /health: {e}"))?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)
        .map_err(|e| format!("/health not answered within 1 s: {e}"))?;
    if &head[..] != b"HTTP/1.1 200" {
        return Err(format!(
            "/health answered {:?}",
            String::from_utf8_lossy(&head)
        ));
    }
    Ok(t.elapsed())
}

/// The connection cap the daemon logged at start (`http.limits`).
fn logged_cap(d: &Daemon) -> usize {
    wait_for(10, "the http.limits log line", || {
        d.stderr()
            .lines()
            .find(|l| l.contains("http.limits"))
            .and_then(|l| l.split("at most ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    })
}

fn rss_kib(d: &Daemon) -> u64 {
    proc_status(d.pid(), "VmRSS:")
}

fn hook_job(name: &str, path: &str, overlap: &str, script: &str) -> Value {
    let mut j = sh_job(
        name,
        script,
        json!([{"type": "webhook", "path": path, "secret_env": "HOSTILE_SECRET"}]),
    );
    j["overlap"] = json!(overlap);
    j
}

#[test]
fn a_lying_content_length_is_answered_and_nothing_is_allocated_from_it() {
    let _g = heavy();
    let t = tempdir();
    let d = Daemon::start_env(t.path(), &[], &[("HOSTILE_SECRET", "s3cret")]);
    d.create(&hook_job("hook", "/hooks/deploy", "queue", "true"));
    let auth = format!("Authorization: Bearer {}\r\n", d.token);
    for (what, path, headers, want) in [
        ("no token", "/jobs", String::new(), 401),
        ("token, over the limit", "/jobs", auth.clone(), 413),
        ("unknown hook", "/hooks/none", String::new(), 404),
        (
            "known hook, over the limit",
            "/hooks/deploy",
            String::new(),
            413,
        ),
        ("unknown path", "/nope", auth.clone(), 413),
    ] {
        let mut s = connect(&d);
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: 68719476736\r\n\r\n"
        )
        .unwrap();
        let (text, _) = read_to_close(&mut s, 10);
        assert_eq!(status_of(&text), Some(want), "{what}: {text}");
        assert!(alive(d.pid()), "{what}: the daemon died");
        health_within_a_second(&d, what);
    }
    let rss = rss_kib(&d);
    assert!(rss < RSS_LIMIT_KIB, "RSS {rss} KiB");
    eprintln!("lying Content-Length: daemon alive, RSS {rss} KiB");
}

#[test]
fn stalled_and_trickled_requests_hold_only_their_own_connection_and_are_cut_at_the_deadline() {
    let _g = heavy();
    let t = tempdir();
    config(
        t.path(),
        json!({"http": {"head_timeout_seconds": 2, "body_timeout_seconds": 2}}),
    );
    let d = Daemon::start_env(t.path(), &[], &[("HOSTILE_SECRET", "s3cret")]);
    d.create(&hook_job("hook", "/hooks/deploy", "queue", "true"));
    let threads_before = proc_status(d.pid(), "Threads:");
    let started = Instant::now();
    let mut stalled = Vec::new();
    for i in 0..200 {
        let mut s = connect(&d);
        let head = match i % 4 {
            // A body announced, 2 bytes sent: to the API with the token, to a hook,
            // without the token.
            0 => format!(
                "POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\n\r\n{{\"",
                d.token
            ),
            1 => "POST /hooks/deploy HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"".to_string(),
            2 => "POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"".to_string(),
            // Half a head.
            _ => "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_string(),
        };
        s.write_all(head.as_bytes()).unwrap();
        stalled.push(s);
        if i % 50 == 49 {
            let took = health_within_a_second(&d, &format!("{} stalled clients", i + 1));
            eprintln!("/health with {} stalled clients: {took:?}", i + 1);
        }
    }
    let threads_held = proc_status(d.pid(), "Threads:");
    let rss = rss_kib(&d);
    assert!(
        rss < RSS_LIMIT_KIB,
        "RSS {rss} KiB with 200 stalled clients"
    );
    // Every stalled connection is closed by the daemon at its deadline (2 s for the head,
    // 2 s + 100 kB at 64 kB/s for the body), with a 408 where one can still be sent.
    let mut got_408 = 0;
    for (i, s) in stalled.iter_mut().enumerate() {
        let (text, closed) = read_to_close(s, 30);
        assert!(
            closed,
            "stalled connection {i} was not closed by the daemon: {text:?}"
        );
        if status_of(&text) == Some(408) {
            got_408 += 1;
        }
    }
    let closed_after = started.elapsed();
    assert!(got_408 >= 150, "only {got_408} of 200 got a 408");
    // A client that trickles a byte at a time does not get around the deadline: the
    // connection is cut while it is still sending.
    let mut s = connect(&d);
    let trickle_start = Instant::now();
    let mut cut = false;
    for b in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Trickle: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if s.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut probe = [0u8; 64];
        s.set_nonblocking(true).unwrap();
        let r = s.read(&mut probe);
        s.set_nonblocking(false).unwrap();
        match r {
            Ok(0) => {
                cut = true;
                break;
            }
            Ok(n) => {
                assert_eq!(
                    status_of(&String::from_utf8_lossy(&probe[..n])),
                    Some(408),
                    "trickle"
                );
                cut = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        cut,
        "a trickling client kept its connection past the head deadline"
    );
    eprintln!(
        "stalled: 200 held, threads {threads_before} -> {threads_held}, RSS {rss} KiB, all closed within {closed_after:?} ({got_408} with 408); trickler cut after {:?}",
        trickle_start.elapsed()
    );
    health_within_a_second(&d, "after the stalled clients");
    let threads_after = wait_for(20, "connection threads to end", || {
        let n = proc_status(d.pid(), "Threads:");
        (n < threads_held).then_some(n)
    });
    eprintln!("threads after: {threads_after}");
}

#[test]
fn connection_floods_get_fast_503s_and_the_cap_follows_the_file_limit() {
    let _g = heavy();
    let t = tempdir();
    config(t.path(), json!({"http": {"max_connections_per_ip": 0}}));
    // 160 descriptors: the daemon keeps room for its own files and agents and caps
    // connections well below that.
    let d = Daemon::start_cmd(t.path(), &[], &[], |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let r = libc::rlimit {
                    rlim_cur: 160,
                    rlim_max: 160,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let cap = logged_cap(&d);
    assert!(cap < 160, "cap {cap} not sized from RLIMIT_NOFILE 160");
    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..600 {
        idle.push(connect(&d));
    }
    // The ones past the cap were answered 503 and closed at once.
    for s in idle.iter_mut() {
        s.set_nonblocking(true).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answered = vec![false; idle.len()];
    while Instant::now() < deadline && refused < 600 - cap {
        for (i, s) in idle.iter_mut().enumerate() {
            if answered[i] {
                continue;
            }
            let mut buf = [0u8; 256];
            match s.read(&mut buf) {
                Ok(n) if n > 0 => {
                    assert_eq!(
                        status_of(&String::from_utf8_lossy(&buf[..n])),
                        Some(503),
                        "conn {i}"
                    );
                    answered[i] = true;
                    refused += 1;
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // (The harness's own keep-alive connection may hold one more place.)
    assert!(
        (600 - cap..=600 - cap + 1).contains(&refused),
        "{refused} refused: connections past the cap of {cap} get 503"
    );
    assert!(alive(d.pid()));
    drop(idle);
    let took = wait_for(10, "/health once the flood is gone", || try_health(&d).ok());
    let m = d.get("/metrics").1;
    assert!(
        m["http_connections_refused_total"].as_u64().unwrap() >= (600 - cap) as u64,
        "{m}"
    );
    eprintln!("flood: cap {cap} at RLIMIT_NOFILE 160, {refused} refused with 503, /health after: {took:?}");
}

#[test]
fn running_out_of_descriptors_is_survived() {
    let _g = heavy();
    let t = tempdir();
    // So few descriptors that accept() itself fails before the connection cap is reached.
    let d = Daemon::start_cmd(t.path(), &[], &[], |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let r = libc::rlimit {
                    rlim_cur: 24,
                    rlim_max: 24,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let mut idle: Vec<TcpStream> = (0..100).map(|_| connect(&d)).collect();
    wait_for(10, "accept errors or refusals counted", || {
        let s = std::fs::read_to_string(d.stderr_path.clone()).ok()?;
        (s.contains("accepting a connection failed") || s.contains("connection limit"))
            .then_some(())
    });
    for s in idle.iter_mut() {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    drop(idle);
    assert!(alive(d.pid()), "the daemon died");
    wait_for(15, "/health once descriptors are free again", || {
        try_health(&d).ok()
    });
}

#[test]
fn per_address_limits_refuse_the_excess_with_503() {
    let _g = heavy();
    let t = tempdir();
    config(t.path(), json!({"http": {"max_connections_per_ip": 5}}));
    let d = Daemon::start(t.path(), &[]);
    let held: Vec<TcpStream> = (0..5).map(|_| connect(&d)).collect();
    wait_for(10, "5 connections open", || {
        let m: Value = d.get("/metrics").1;
        // The /metrics request's own connection may count too.
        (m["http_connections_open"].as_u64()? >= 5).then_some(())
    });
    let mut sixth = connect(&d);
    let (text, closed) = read_to_close(&mut sixth, 10);
    assert_eq!(status_of(&text), Some(503), "{text}");
    assert!(closed);
    assert!(text.contains("Retry-After"), "{text}");
    drop(held);
    wait_for(10, "/health after the held connections close", || {
        (d.get("/health").0 == 200).then_some(())
    });
}

#[test]
fn huge_heads_get_431_and_memory_stays_bounded() {
    let _g = heavy();
    let t = tempdir();
    let d = Daemon::start(t.path(), &[]);
    // One header line that never ends: the daemon answers 431 and closes after 64 KiB.
    let mut s = connect(&d);
    s.write_all(b"GET /health HTTP/1.1\r\nX-Big: ").unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0usize;
    for _ in 0..1024 {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
        if sent > 64 << 20 {
            break;
        }
    }
    let (text, _) = read_to_close(&mut s, 10);
    assert_eq!(status_of(&text), Some(431), "after {sent} bytes: {text:?}");
    // Too many header lines.
    let mut s = connect(&d);
    let mut req = String::from("GET /health HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let (text, _) = read_to_close(&mut s, 10);
    assert_eq!(status_of(&text), Some(431), "{text}");
    let rss = rss_kib(&d);
    assert!(rss < RSS_LIMIT_KIB, "RSS {rss} KiB");
    health_within_a_second(&d, "after huge heads");
    eprintln!("huge head: 431 after {sent} bytes sent; RSS {rss} KiB");
}

#[test]
fn replayed_large_webhooks_are_held_once_and_memory_stays_bounded() {
    let _g = heavy();
    let t = tempdir();
    let d = Daemon::start_env(
        t.path(),
        &["--workers", "1"],
        &[("HOSTILE_SECRET", "s3cret")],
    );
    // One worker, an agent that waits: the deliveries stay queued.
    d.create(&hook_job("big", "/hooks/big", "parallel", "sleep 60"));
    let item = json!({"k": "v".repeat(60), "n": [1, 2, 3, 4, 5, 6, 7, 8]});
    let body = serde_json::to_vec(&json!({"items": vec![item; 9000]})).unwrap();
    assert!(body.len() > 700_000, "{}", body.len());
    let sig = github_signature("s3cret", &body);
    let deliver = |i: usize| {
        let (st, _, text) = d.raw(
            "POST",
            "/hooks/big",
            Some(&body),
            &[
                ("X-Hub-Signature-256", &sig),
                ("X-GitHub-Delivery", &format!("delivery-{i}")),
            ],
        );
        assert_eq!(st, 202, "{i}: {text}");
    };
    // The first delivery's run starts (and parses its payload); the others queue behind it.
    deliver(0);
    d.wait_run("big", 20, "the first run running", |r| {
        r["status"] == "running"
    });
    let before = rss_kib(&d);
    for i in 1..100 {
        deliver(i);
    }
    let after = rss_kib(&d);
    assert!(
        after < RSS_LIMIT_KIB,
        "RSS {before} -> {after} KiB with 100 queued deliveries"
    );
    // The bodies wait on disk, not in memory.
    let spooled = std::fs::read_dir(d.dir.join("spool")).unwrap().count();
    assert!(spooled >= 98, "{spooled} spooled bodies");
    eprintln!(
        "1 running + 99 queued x {} B signed deliveries: RSS {before} -> {after} KiB, {spooled} bodies spooled",
        body.len()
    );
}

#[test]
fn refused_requests_are_logged_once_a_minute_and_401s_tell_no_internals() {
    let _g = heavy();
    let t = tempdir();
    let d = Daemon::start_env(t.path(), &[], &[("HOSTILE_SECRET", "s3cret")]);
    d.create(&hook_job("hook", "/hooks/deploy", "queue", "true"));
    let mut unset = hook_job("unset", "/hooks/unset", "queue", "true");
    unset["triggers"][0]["secret_env"] = json!("DEPLOY_HOOK_SECRET_NOT_SET");
    d.create(&unset);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let url = format!("http://127.0.0.1:{}/hooks/deploy", d.port);
    for i in 0..2000 {
        let r = agent
            .post(&url)
            .set("X-Hub-Signature-256", &github_signature("wrong", b"{}"))
            .send_string("{}");
        match r {
            Err(ureq::Error::Status(401, _)) => {}
            other => panic!("{i}: {other:?}"),
        }
    }
    let (st, _, text) = d.raw(
        "POST",
        "/hooks/unset",
        Some(b"{}"),
        &[("X-Hub-Signature-256", &github_signature("x", b"{}"))],
    );
    assert_eq!(st, 401, "{text}");
    assert!(!text.contains("DEPLOY_HOOK_SECRET_NOT_SET"), "{text}");
    let log = d.stderr();
    let lines = log
        .lines()
        .filter(|l| l.contains("webhook.rejected"))
        .count();
    assert!(
        lines <= 2,
        "{lines} webhook.rejected lines for 2001 refusals"
    );
    assert!(
        log.contains("DEPLOY_HOOK_SECRET_NOT_SET"),
        "the log names the unset variable"
    );
    assert_eq!(d.get("/metrics").1["webhooks_rejected_total"], 2001);
}

#[test]
fn a_low_process_limit_caps_connections_instead_of_killing_the_accept_thread() {
    let _g = heavy();
    // RLIMIT_NPROC does not bind root: the daemon runs as `nobody` here.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to start the daemon as another user with RLIMIT_NPROC");
        return;
    }
    let t = tempdir();
    let nobody: u32 = 65534;
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("config.json"),
        json!({"http": {"max_connections_per_ip": 0}}).to_string(),
    )
    .unwrap();
    for p in [t.path(), data.as_path(), &data.join("config.json")] {
        std::os::unix::fs::chown(p, Some(nobody), Some(nobody)).unwrap();
    }
    std::fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let d = Daemon::start_cmd(t.path(), &[], &[("HOME", "/tmp")], |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit, setgid and setuid only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let r = libc::rlimit {
                    rlim_cur: 200,
                    rlim_max: 200,
                };
                if libc::setrlimit(libc::RLIMIT_NPROC, &r) != 0
                    || libc::setgid(nobody) != 0
                    || libc::setuid(nobody) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let cap = logged_cap(&d);
    assert!(cap < 200, "cap {cap} not sized from RLIMIT_NPROC 200");
    let mut idle: Vec<TcpStream> = (0..190).map(|_| connect(&d)).collect();
    // Every connection is either served by a thread or refused with 503; none hangs.
    let m = wait_for(10, "190 connections admitted or refused", || {
        let (st, m) = d.get("/metrics");
        (st == 200 && m["http_connections_accepted_total"].as_u64()? >= 190).then_some(m)
    });
    assert!(alive(d.pid()), "the daemon died");
    let threads = proc_status(d.pid(), "Threads:");
    assert!(threads < 200, "{threads} threads under RLIMIT_NPROC 200");
    for s in idle.iter_mut() {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    drop(idle);
    let took = wait_for(10, "/health after the connections close", || {
        try_health(&d).ok()
    });
    eprintln!(
        "RLIMIT_NPROC 200 as nobody: cap {cap}, {} refused, {threads} threads, /health after {took:?}",
        m["http_connections_refused_total"]
    );
}
