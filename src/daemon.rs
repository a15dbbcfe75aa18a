//! `bog-agents-daemon run`: wires the store, engine, threads and channels together, waits
//! for a signal, then drains and exits.
//!
//! Start-up order: data dir and lock, token, crash recovery (runs left `queued`/`running`
//! become `interrupted`), jobs (bad files quarantined), listen, then threads. Shutdown:
//! stop intake, let running agents finish within the grace period, kill what is left,
//! record it, exit 0.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded};

use crate::api::{self, Api};
use crate::engine::{Engine, Settings};
use crate::logging::Format;
use crate::signals::{self, Signal};
use crate::store::lock::{DaemonLock, LockInfo};
use crate::store::{self, Store};
use crate::{config, triggers, worker};

/// Options of the `run` subcommand (flags override `config.json`).
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    pub data_dir: Option<PathBuf>,
    pub port: Option<u16>,
    pub bind: Option<String>,
    pub workers: Option<usize>,
    pub grace: Option<u64>,
    pub log_format: Option<Format>,
    pub git_poll_ms: Option<u64>,
    /// Cluster mode (`--etcd`, `--node`, `--etcd-prefix`).
    pub etcd: Option<String>,
    pub node: Option<String>,
    pub etcd_prefix: Option<String>,
}

/// Runs the daemon until SIGTERM/SIGINT. Returns the process exit code.
pub fn run(opts: RunOptions) -> i32 {
    if let Err(e) = signals::block() {
        return fail(&format!("cannot set up signal handling: {e}"));
    }
    crate::sys::tune_allocator();
    let dir = match store::resolve_data_dir(opts.data_dir.as_deref()) {
        Ok(d) => d,
        Err(e) => return fail(&e.to_string()),
    };
    let store = match Store::open(&dir) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let cfg = match config::load(&dir) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    let format = match (opts.log_format, cfg.log_format.as_deref()) {
        (Some(f), _) => f,
        (None, Some(s)) => match s.parse() {
            Ok(f) => f,
            Err(e) => return fail(&format!("config.json log_format: {e}")),
        },
        (None, None) => Format::Text,
    };
    crate::logging::init(format);
    install_panic_hook();
    match store::tighten_data_dir(&dir) {
        Ok(Some(was)) => {
            log::warn!(event = "data_dir.tightened", path = dir.display().to_string().as_str();
                "data dir {} was mode {was:04o}; set to 0700 (it holds the API token and run records)", dir.display())
        }
        Ok(None) => {}
        Err(e) => {
            log::warn!(event = "data_dir.mode", path = dir.display().to_string().as_str(); "{e}")
        }
    }
    // Before any thread: with a delegated cgroup v2 the daemon moves into a leaf of its own.
    let containment = crate::contain::init(match cfg.containment.as_deref() {
        Some("process_group") => crate::contain::Preference::ProcessGroup,
        _ => crate::contain::Preference::Auto,
    });
    log::info!(event = "containment", mode = containment.mode().as_str(), landlock = containment.landlock_available(); "{}", containment.summary());

    let mut lock = match DaemonLock::acquire(&dir) {
        Ok(l) => l,
        Err(e) => return fail(&e.to_string()),
    };
    // The intake journal: records a crash lost since the last checkpoint come back first
    // (before runs are recovered, and before a cluster node reconciles its records).
    let store = match store.with_journal() {
        Ok((s, 0)) => s,
        Ok((s, n)) => {
            log::warn!(event = "journal.replayed", restored = n; "{n} run record(s) restored from the intake journal");
            s
        }
        Err(e) => return fail(&format!("cannot open the intake journal: {e}")),
    };
    // Cluster mode: join before anything is loaded (the token and the jobs live in etcd).
    let cluster = match join_cluster(&opts, &cfg) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    // Cluster mode: run records are shared through etcd as well.
    let store = match &cluster {
        Some(c) => {
            // Runs that ended here while etcd was away, before a restart: their records.
            c.reconcile_own(|job, run| store.read_run(job, run));
            store.share_runs(c.clone())
        }
        None => store,
    };
    let token = match cluster.as_ref().map(|c| cluster_token(c, &store)) {
        Some(Ok(t)) => Ok((t, false)),
        Some(Err(e)) => return fail(&e),
        None => store.ensure_token(),
    };
    let token = match token {
        Ok((t, true)) => {
            log::info!(event = "token.created", path = store.token_path().display().to_string().as_str();
                "API token created (shown once; `bog-agents-daemon token` prints it again): {t}");
            t
        }
        Ok((t, false)) => t,
        Err(e) => return fail(&format!("cannot read or create the API token: {e}")),
    };

    let workers = opts.workers.or(cfg.workers).unwrap_or(4).clamp(1, 256);
    if cfg.max_concurrent_runs.is_some_and(|m| m > workers) {
        log::warn!(event = "config.warning"; "max_concurrent_runs ({}) is above workers ({workers}): at most {workers} runs execute at once", cfg.max_concurrent_runs.unwrap_or(0));
    }
    let settings = Settings {
        default_agent: cfg.default_agent.clone(),
        workers,
        max_concurrent_runs: cfg.max_concurrent_runs.unwrap_or(workers).clamp(1, workers),
        grace_seconds: opts.grace.or(cfg.grace_seconds).unwrap_or(30),
        max_body_bytes: cfg.max_body_bytes.unwrap_or(1 << 20),
        queue_capacity: cfg.queue_capacity.unwrap_or(1024).max(1),
        git_poll: Duration::from_millis(
            opts.git_poll_ms.or(cfg.git_poll_ms).unwrap_or(1000).max(10),
        ),
    };

    store.clean_temp_files();
    let (recovered, bad_runs) = store.recover_runs();
    for r in &recovered {
        // An agent of a daemon that was killed may still run: it goes too.
        let killed = containment.kill_leftovers(&r.id);
        log::warn!(event = "run.interrupted", job = r.job_name.as_str(), run = r.id.as_str(), killed_leftovers = killed;
            "run was left unfinished by a previous daemon; marked interrupted");
    }
    // Their fresh checkouts (`checkout: true`) go too.
    let ids: Vec<&str> = recovered.iter().map(|r| r.id.as_str()).collect();
    crate::checkout::remove_leftovers(store.dir(), &ids);
    let (jobs, bad_jobs, jobs_rev) = match &cluster {
        Some(c) => match c.load_jobs() {
            Ok((jobs, bad, rev)) => {
                for (key, why) in bad {
                    log::error!(event = "job.invalid", key = key.as_str(); "etcd key {key} is not a usable job: {why}");
                }
                (jobs, Vec::new(), rev)
            }
            Err(e) => return fail(&format!("cannot read the jobs from etcd: {e}")),
        },
        None => {
            let (jobs, bad) = store.load_jobs();
            (jobs, bad, 0)
        }
    };
    for q in bad_jobs.iter().chain(&bad_runs) {
        log::error!(event = "store.quarantined", path = q.path.display().to_string().as_str();
            "{}; moved aside to {}", q.reason,
            q.moved_to.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(could not move it)".into()));
    }
    for j in &jobs {
        crate::engine::log_job_warnings(j);
    }

    let bind = opts
        .bind
        .clone()
        .or(cfg.bind.clone())
        .unwrap_or_else(|| "127.0.0.1".into());
    let port = opts.port.or(cfg.port).unwrap_or(7878);
    let addr = if bind.contains(':') {
        format!("[{bind}]:{port}")
    } else {
        format!("{bind}:{port}")
    };
    let (limits, body_memory) = match http_limits(&cfg, &settings) {
        Ok(l) => l,
        Err(e) => return fail(&e.to_string()),
    };
    let listener = match listen(&addr) {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot listen on {addr}: {e}")),
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    crate::payload::clean(&store.dir().join("spool"));
    if let Err(e) = lock.write_info(&LockInfo {
        pid: std::process::id(),
        port,
        bind: bind.clone(),
        started_at: crate::time::now_rfc3339(),
    }) {
        return fail(&e.to_string());
    }

    let (work_tx, work_rx) = bounded(settings.queue_capacity);
    // The cap on concurrent runs is the number of workers that take runs: the rest wait in
    // the queue (README "Run budgets").
    let workers = settings.max_concurrent_runs;
    let grace = Duration::from_secs(settings.grace_seconds);
    let engine = Arc::new(Engine::new(store, settings, jobs, work_tx));
    if let Some(c) = &cluster {
        engine.set_cluster(c.clone());
    }

    let (exit_tx, exit_rx) = bounded::<()>(0);
    let started = (|| -> std::io::Result<_> {
        let journal = engine.store.journal().map(|j| j.start()).transpose()?;
        if let Some(c) = &cluster {
            start_cluster(&engine, c, jobs_rev)?;
        }
        worker::spawn_pool(engine.clone(), work_rx, workers, exit_tx)?;
        let clock = triggers::clock::spawn(engine.clone())?;
        triggers::files::spawn(engine.clone())?;
        let (git_kick, git_kick_rx) = bounded(1);
        triggers::git::spawn(engine.clone(), git_kick_rx, engine.settings.git_poll)?;
        let http = limits.stats.clone();
        let (max_conns, per_ip) = (limits.max_connections, limits.max_connections_per_ip);
        log::info!(event = "http.limits", max_connections = max_conns, max_connections_per_ip = per_ip;
            "API connections: at most {max_conns} open ({per_ip} per address; 0 = no per-address limit)");
        let server = api::serve(
            Arc::new(Api {
                engine: engine.clone(),
                token,
                hooks: Default::default(),
                git_kick,
                http,
                bodies: api::BodyBudget::new(body_memory),
            }),
            listener,
            limits,
        )?;
        let (sig_tx, sig_rx) = unbounded();
        signals::spawn(sig_tx)?;
        Ok((sig_rx, server, clock, journal))
    })();
    let (sig_rx, server, clock, journal) = match started {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot start threads: {e}")),
    };
    let _watcher = match triggers::jobs_dir::watch(engine.clone()) {
        // Cluster mode: jobs live in etcd, followed by the `cluster-jobs` watch.
        _ if cluster.is_some() => None,
        Ok(w) => Some(w),
        Err(e) => {
            log::error!(event = "jobs_dir.error"; "cannot watch {}: {e}; job files written while the daemon runs need SIGHUP to load", engine.store.jobs_dir().display());
            None
        }
    };
    log::info!(event = "daemon.started", port = port, bind = bind.as_str(), data_dir = dir.display().to_string().as_str(), jobs = engine.job_count(), workers = workers;
        "listening on http://{addr}", addr = if bind.contains(':') { format!("[{bind}]:{port}") } else { format!("{bind}:{port}") });
    // Up: what only start-up needed goes back to the OS (idle RSS, README "Benchmarks"); and
    // once more a little later, after the probes that follow a start (a service manager's,
    // the CLI waiting for /health), whose code pages would otherwise stay resident.
    crate::sys::release_startup_memory();
    let mut release_again = Some(Instant::now() + Duration::from_secs(2));

    let sig = loop {
        let got = match release_again {
            Some(at) => match sig_rx.recv_deadline(at) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    release_again = None;
                    crate::sys::release_startup_memory();
                    continue;
                }
                r => r.map_err(|_| ()),
            },
            None => sig_rx.recv().map_err(|_| ()),
        };
        match got {
            Ok(Signal::Reload) => {
                log::info!(event = "daemon.reload"; "SIGHUP: reloading jobs from disk");
                engine.reload_all();
            }
            Ok(Signal::Stop(s)) => break s,
            Err(_) => break "SIGTERM",
        }
    };

    // Stop intake.
    log::info!(event = "daemon.stopping", running = engine.running_count(), grace_seconds = grace.as_secs();
        "{sig}: no new runs; waiting up to {}s for running agents", grace.as_secs());
    // The API keeps answering while the daemon drains (/health, reads; firings get 503).
    engine.begin_shutdown();
    // The clock may be preparing a run ahead of its slot (its record being written): it
    // interrupts what it holds as it stops, so no run is left `queued`.
    let _ = clock.join();
    for w in engine.take_all_pending() {
        worker::interrupt_unstarted(&engine, w);
    }
    // Drain: workers exit once their current run is recorded. Nobody sends on `exit_rx`: it
    // disconnects when the last worker has exited. A second SIGTERM/SIGINT ends the grace.
    let deadline = Instant::now() + grace;
    let drained = loop {
        crossbeam_channel::select! {
            recv(exit_rx) -> _ => break true,
            recv(sig_rx) -> s => match s {
                Ok(Signal::Stop(_)) => {
                    log::warn!(event = "daemon.stopping"; "second stop signal: not waiting for the grace period");
                    break false;
                }
                Ok(Signal::Reload) => {}
                Err(_) => {}
            },
            default(deadline.saturating_duration_since(Instant::now())) => break false,
        }
    };
    if !drained {
        let n = engine.kill_all_running();
        log::warn!(event = "daemon.kill", killed = n; "killing {n} running agent process groups");
        let _ = exit_rx.recv_timeout(crate::agent::KILL_GRACE + Duration::from_secs(5));
    }
    // A `job test --exec` agent is no worker's: it is stopped now, and waited for (it ends
    // within the kill grace), so that nothing of it outlives the daemon.
    if engine.running_count() > 0 {
        let n = engine.kill_all_running();
        log::warn!(event = "daemon.kill", killed = n; "stopping {n} job test agent(s)");
        let until = Instant::now() + crate::agent::KILL_GRACE + Duration::from_secs(5);
        while engine.running_count() > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(server);
    // What the journal holds is flushed in place, so the next start replays nothing.
    if let (Some(j), Some(t)) = (engine.store.journal(), journal) {
        j.close();
        let _ = t.join();
    }
    if let Some(c) = &cluster {
        c.leave();
    }
    log::info!(event = "daemon.stopped"; "stopped");
    lock.clear();
    drop(lock);
    0
}

/// The API's connection limits from `config.json` `"http"`, and the body memory budget.
/// The connection cap is lowered to fit the process's limits: each connection takes a file
/// descriptor and a thread, and agents, job files and outputs need theirs too.
fn http_limits(
    cfg: &config::FileConfig,
    settings: &Settings,
) -> Result<(tiny_http::Limits, usize), config::ConfigError> {
    use config::HttpConfig as H;
    let h = &cfg.http;
    let reserve = 64 + 8 * settings.workers;
    let mut max = h.max_connections.unwrap_or(1024).max(1);
    for n in crate::sys::resource_caps() {
        max = max.min(n.saturating_sub(reserve).max(8));
    }
    let body_memory = h
        .max_body_memory_bytes
        .unwrap_or(64 << 20)
        .max(settings.max_body_bytes);
    let limits = tiny_http::Limits {
        max_connections: max,
        max_connections_per_ip: h.max_connections_per_ip.unwrap_or(256),
        head_timeout: H::seconds(h.head_timeout_seconds, "head_timeout_seconds", 10.0)?,
        body_timeout: H::seconds(h.body_timeout_seconds, "body_timeout_seconds", 10.0)?,
        body_min_rate: h.body_min_bytes_per_second.unwrap_or(64 * 1024).max(1),
        max_body_bytes: settings.max_body_bytes,
        keep_alive_timeout: H::seconds(h.keep_alive_seconds, "keep_alive_seconds", 30.0)?,
        write_timeout: H::seconds(h.write_timeout_seconds, "write_timeout_seconds", 30.0)?,
        max_head_bytes: h.max_head_bytes.unwrap_or(64 * 1024).max(256),
        max_headers: h.max_headers.unwrap_or(100).max(1),
        ..tiny_http::Limits::default()
    };
    Ok((limits, body_memory))
}

/// Binds the API socket. TCP_NODELAY is set on the listener (and again on each accepted
/// connection): without it Nagle's algorithm meets the client's delayed ACK and answers
/// written in more than one piece wait 40 ms.
fn listen(addr: &str) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    crate::sys::set_listener_nodelay(&listener);
    Ok(listener)
}

/// Cluster mode from the flags or `config.json` (None: a single machine), joined.
fn join_cluster(
    opts: &RunOptions,
    cfg: &config::FileConfig,
) -> Result<Option<Arc<crate::cluster::Cluster>>, String> {
    let Some(urls) = opts
        .etcd
        .clone()
        .or_else(|| cfg.etcd.as_ref().map(|e| e.joined()))
    else {
        if opts.node.is_some() || opts.etcd_prefix.is_some() {
            return Err("--node and --etcd-prefix need --etcd (cluster mode)".into());
        }
        return Ok(None);
    };
    let o = crate::cluster::Options::new(
        &urls,
        opts.node.as_deref().or(cfg.node.as_deref()),
        opts.etcd_prefix.as_deref().or(cfg.etcd_prefix.as_deref()),
    )?;
    let c = crate::cluster::Cluster::connect(o)?;
    log::info!(event = "cluster.joined", node = c.node(), leader = c.is_leader(); "joined the cluster as node {}", c.node());
    Ok(Some(c))
}

/// The cluster's API token from etcd (made by the first node), copied to this node's
/// `.token` so the CLI finds it.
fn cluster_token(c: &crate::cluster::Cluster, store: &Store) -> Result<String, String> {
    let (t, made) = c
        .ensure_token()
        .map_err(|e| format!("cannot read or create the cluster's API token: {e}"))?;
    if made {
        log::info!(event = "token.created"; "the cluster's API token was created (shown once; `bog-agents-daemon token --etcd URLS` prints it again): {t}");
    }
    store
        .save_token(&t)
        .map_err(|e| format!("cannot keep the cluster's token in the data dir: {e}"))?;
    Ok(t)
}

/// Cluster mode's threads: `cluster` (lease, leadership, view) and `cluster-jobs` (the
/// watch of `jobs/` from the revision the jobs were read at, applied to the engine).
fn start_cluster(
    engine: &Arc<Engine>,
    c: &Arc<crate::cluster::Cluster>,
    jobs_rev: i64,
) -> std::io::Result<()> {
    // Fencing: when this node's lease lapses, the agents of its claimed runs are killed.
    let weak = Arc::downgrade(engine);
    c.on_fence(move |ids| {
        if let Some(e) = weak.upgrade() {
            e.kill_fenced(ids);
        }
    });
    c.spawn(engine.shutdown_signal())?;
    let e = engine.clone();
    c.follow_jobs(
        jobs_rev,
        move |ev| e.apply_cluster_jobs(ev),
        engine.shutdown_signal(),
    )?;
    let e = engine.clone();
    c.spawn_queue(move || e.take_cluster_runs(), engine.shutdown_signal())?;
    Ok(())
}

fn fail(msg: &str) -> i32 {
    eprintln!("bog-agents-daemon: {msg}");
    1
}

/// Logs panics (with thread name and location) through the logger; the thread's own
/// recovery (catch_unwind) keeps the daemon up.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let loc = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        log::error!(event = "panic", thread = name, location = loc.as_str(); "{msg}");
    }));
}
