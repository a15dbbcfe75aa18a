//! Cluster mode (README "Running a cluster"): several daemons share one etcd v3 cluster and
//! act as one. This module is the daemon's only view of etcd; it knows nothing of the engine
//! (the engine holds a [`Cluster`] and asks it), so it stays a leaf apart from `job`/`store`
//! for the job format.
//!
//! - `etcd.rs` — the typed JSON/HTTP gateway client;
//! - here — the node: its lease (kept alive by the `cluster` thread), its key under
//!   `nodes/`, leader election on the `leader` key, the cluster's view for `/health`, the
//!   shared API token, and whether etcd is reachable at all;
//! - `jobs.rs` — jobs under `jobs/<id>` and the watch that feeds every node's table;
//! - `runs.rs` — run records under `runs/<job>/<run>`, and the leader's reaping of the runs
//!   of nodes whose lease expired;
//! - `queue.rs` — the cluster's run queue: firings queued by any node, claimed by any node's
//!   idle workers under its lease, the overlap policy kept with `busy/` and `pending/` keys;
//! - `claims.rs` — the transactions that make a firing happen once in the whole cluster:
//!   cron/interval slots (only by the leader) and webhook delivery ids.
//!
//! Keys (under the prefix, default `/bog-agents/`) are listed in ARCHITECTURE.md.

pub mod claims;
pub mod etcd;
pub mod jobs;
pub mod queue;
pub mod runs;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde_json::{json, Value};

pub use etcd::EtcdError;
use etcd::{Etcd, Kv};

/// Seconds a node's lease lives without a keep-alive: how long a dead node keeps its
/// leadership (and its key under `nodes/`).
pub const LEASE_TTL: i64 = 5;
/// How often the `cluster` thread reads the leader and the nodes (and the `cluster-lease`
/// thread renews the lease).
const TICK: Duration = Duration::from_millis(1000);
/// How often the `cluster-fence` thread checks the lease's local deadline.
const FENCE_CHECK: Duration = Duration::from_millis(200);
/// How long start-up waits for etcd (and for a previous node of the same name to be gone)
/// before giving up: more than the lease's TTL.
const CONNECT_WAIT: Duration = Duration::from_secs(15);

/// How the daemon joins a cluster (`run --etcd`, `--node`, `--etcd-prefix`).
#[derive(Clone, Debug)]
pub struct Options {
    pub endpoints: Vec<String>,
    pub node: String,
    pub prefix: String,
}

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/bog-agents/";

impl Options {
    /// Checks the flags or config keys: `--etcd` URLs, a node name (default: the host name)
    /// and a prefix.
    pub fn new(etcd: &str, node: Option<&str>, prefix: Option<&str>) -> Result<Options, String> {
        let endpoints = etcd::parse_endpoints(etcd)?;
        let node = match node {
            Some(n) => n.to_string(),
            None => host_name()
                .ok_or("--node is not given and the host name cannot be read; pass --node NAME")?,
        };
        if !crate::job::validate::valid_node_name(&node) {
            return Err(format!(
                "--node {node:?}: use 1 to 64 letters, digits, '.', '_' or '-'"
            ));
        }
        let mut prefix = prefix.unwrap_or(DEFAULT_PREFIX).to_string();
        if !prefix.starts_with('/') || prefix.len() > 200 || prefix.contains("//") {
            return Err(format!(
                "--etcd-prefix {prefix:?}: expected a path that starts with '/', like {DEFAULT_PREFIX}"
            ));
        }
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Options {
            endpoints,
            node,
            prefix,
        })
    }
}

/// The machine's host name (its first label), from the `hostname` crate: `gethostname` on
/// Unix, the computer's DNS host name on Windows.
fn host_name() -> Option<String> {
    let s = hostname::get().ok()?.to_string_lossy().into_owned();
    // A fully qualified name keeps its first label.
    let s = s.split('.').next().unwrap_or("").to_string();
    (!s.is_empty()).then_some(s)
}

/// What this node knows of the cluster, for `/health`.
#[derive(Clone, Debug, Default)]
struct View {
    leader: Option<String>,
    nodes: Vec<String>,
}

/// A lease shared by many keys that must outlive any node (slot claims, delivery ids): one
/// grant serves many writes until less than `ttl - reuse` of it would be left.
struct SharedLease {
    ttl: i64,
    reuse: Duration,
    current: Mutex<Option<(i64, Instant)>>,
}

impl SharedLease {
    fn new(ttl: i64, reuse: Duration) -> SharedLease {
        SharedLease {
            ttl,
            reuse,
            current: Mutex::new(None),
        }
    }

    fn get(&self, etcd: &Etcd) -> Result<i64, EtcdError> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, at)) = *cur {
            if at.elapsed() < self.reuse {
                return Ok(id);
            }
        }
        let id = etcd.grant(self.ttl)?;
        *cur = Some((id, Instant::now()));
        Ok(id)
    }

    /// Forgets the lease (a write under it failed: it may be gone).
    fn drop_current(&self) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// What this node knows of its own lease: its id and when it lapses at the latest (the
/// send time of the last keep-alive etcd answered, plus the TTL it gave). Past the deadline
/// the lease may be gone in etcd, and another node may be retrying this node's runs: the
/// node fences itself ([`Cluster::fence`]).
#[derive(Clone, Copy, Debug, Default)]
struct LeaseState {
    id: i64,
    deadline: Option<Instant>,
}

/// A run this node claimed from the queue and has not finished.
pub(crate) struct Claim {
    /// Its payload (kept in etcd as `payload/<run>` once it starts, for a retry elsewhere).
    pub(crate) payload: Vec<u8>,
    /// The lease the claim was made under.
    pub(crate) lease: i64,
    /// Whether its `running` record (and `active/<run>`) was written under that lease.
    pub(crate) started: bool,
}

/// Called with the ids of the runs this node gave up when its lease lapsed (the engine
/// kills their agents).
type FenceHook = Box<dyn Fn(&[String]) + Send + Sync>;

/// This node's membership of the cluster; one `Arc<Cluster>` is shared by the engine, the
/// API and the `cluster` thread.
pub struct Cluster {
    pub(crate) etcd: Etcd,
    opts: Options,
    /// This node's lease (0: none yet, or it expired); a copy of `lease_state.id` for
    /// readers.
    lease: AtomicI64,
    /// The lease and its local deadline (written by the threads that grant, renew and fence).
    lease_state: Mutex<LeaseState>,
    /// Runs given up when the lease lapsed: nothing more of them is written to etcd, and
    /// their agents are killed (or never start).
    /// Each with what its later writes must still find in etcd (`runs::Guard`).
    fenced: Mutex<std::collections::HashMap<String, runs::Guard>>,
    /// Kills the agents of fenced runs (set by the daemon at start-up).
    on_fence: std::sync::OnceLock<FenceHook>,
    /// Whether the last exchange with etcd succeeded.
    ok: AtomicBool,
    /// Whether this node holds the `leader` key under its live lease.
    leading: AtomicBool,
    view: Mutex<View>,
    /// Told of every change of `leading` (the clock catches up when it starts leading).
    leadership: Mutex<Vec<Sender<bool>>>,
    slot_lease: SharedLease,
    dedupe_lease: SharedLease,
    /// Run records that could not be written to etcd, by run id, each with the condition
    /// its write must still meet (`runs.rs`).
    backlog: Mutex<std::collections::BTreeMap<String, (crate::run::RunRecord, runs::Guard)>>,
    /// Set at the end of shutdown: the `cluster` thread stops renewing the lease.
    left: AtomicBool,
    /// Set when the `cluster` thread starts: only then does a leader reap (start-up writes
    /// the node's own unfinished records first, [`Cluster::reconcile_own`]).
    started: AtomicBool,
    /// Rounds of the `cluster` thread.
    rounds: std::sync::atomic::AtomicU64,
    /// Runs this node claimed from the queue and has not finished.
    claimed: Mutex<std::collections::HashMap<String, Claim>>,
    /// Wakes the `cluster-queue` thread.
    kick_tx: Sender<()>,
    kick_rx: Receiver<()>,
}

impl Cluster {
    /// A node of the cluster at `opts`, not joined yet.
    fn new(opts: Options) -> Cluster {
        let (kick_tx, kick_rx) = crossbeam_channel::bounded(1);
        Cluster {
            etcd: Etcd::new(opts.endpoints.clone()),
            opts,
            lease: AtomicI64::new(0),
            lease_state: Mutex::default(),
            fenced: Mutex::default(),
            on_fence: std::sync::OnceLock::new(),
            ok: AtomicBool::new(false),
            leading: AtomicBool::new(false),
            view: Mutex::new(View::default()),
            leadership: Mutex::new(Vec::new()),
            slot_lease: SharedLease::new(2 * 3600, Duration::from_secs(3600)),
            dedupe_lease: SharedLease::new(25 * 3600, Duration::from_secs(3600)),
            backlog: Mutex::default(),
            rounds: Default::default(),
            left: AtomicBool::new(false),
            started: AtomicBool::new(false),
            claimed: Mutex::default(),
            kick_tx,
            kick_rx,
        }
    }

    /// Joins the cluster: a lease, this node's key, an attempt at leadership. Waits up to
    /// 15 s for etcd to answer.
    pub fn connect(opts: Options) -> Result<Arc<Cluster>, String> {
        let c = Arc::new(Cluster::new(opts));
        let deadline = Instant::now() + CONNECT_WAIT;
        let me = c.key(&format!("nodes/{}", c.node()));
        loop {
            // A live node of the same name (or this node's previous life, whose lease has
            // not expired yet): wait for it to go, or refuse.
            match c.etcd.get(&me) {
                Ok(Some(_)) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(500));
                    continue;
                }
                Ok(Some(_)) => {
                    return Err(format!(
                        "a node named {:?} is already in the cluster (its key {me} is alive); give each node its own --node",
                        c.node()
                    ))
                }
                _ => {}
            }
            match c.tick() {
                Ok(()) => {
                    c.ok.store(true, Ordering::SeqCst);
                    return Ok(c);
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!(
                        "cannot join the cluster at {}: {e}",
                        c.opts.endpoints.join(",")
                    ))
                }
                Err(_) => thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.opts.node
    }

    /// The full etcd key of `rel` under the prefix.
    pub(crate) fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.opts.prefix)
    }

    /// Whether etcd answered the last exchange: writes and firings need it.
    pub fn available(&self) -> bool {
        self.ok.load(Ordering::SeqCst)
    }

    /// Whether this node leads now (fires cron, interval and git_push triggers).
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// A channel told `true`/`false` each time this node starts or stops leading.
    pub fn subscribe_leadership(&self) -> Receiver<bool> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.leadership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        rx
    }

    /// `/health`'s `cluster` object.
    pub fn health(&self) -> Value {
        let v = self.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        json!({
            "node": self.node(),
            "leader": v.leader,
            "nodes": v.nodes,
            "etcd": if self.available() { "ok" } else { "unavailable" },
        })
    }

    /// The error a write gets while etcd cannot be reached.
    pub fn unavailable_text(&self) -> String {
        format!(
            "the cluster's store (etcd at {}) is unavailable; nothing was changed, try again when it is back (GET /health shows cluster.etcd)",
            self.opts.endpoints.join(",")
        )
    }

    /// Starts the `cluster` thread (competes for leadership, reads the view, writes the
    /// backlog, and, leading, reaps), the `cluster-lease` thread (renews the lease every
    /// second, with no other work, so a slow round never lets a healthy lease lapse) and the
    /// `cluster-fence` thread (fences this node when the lease's local deadline passes).
    /// On shutdown the lease is kept while the runs drain; [`Cluster::leave`] revokes it.
    pub fn spawn(self: &Arc<Self>, stop: Receiver<()>) -> std::io::Result<JoinHandle<()>> {
        self.started.store(true, Ordering::SeqCst);
        let c = self.clone();
        thread::Builder::new()
            .name("cluster-lease".into())
            .spawn(move || {
                while !c.left.load(Ordering::SeqCst) {
                    thread::sleep(TICK);
                    c.renew();
                }
            })?;
        let c = self.clone();
        thread::Builder::new()
            .name("cluster-fence".into())
            .spawn(move || {
                while !c.left.load(Ordering::SeqCst) {
                    thread::sleep(FENCE_CHECK);
                    let st = *c.lease_state.lock().unwrap_or_else(|p| p.into_inner());
                    if st.id != 0 && st.deadline.is_some_and(|d| Instant::now() >= d) {
                        c.fence(st.id, "no keep-alive reached etcd within the lease's TTL");
                    }
                }
            })?;
        let c = self.clone();
        thread::Builder::new()
            .name("cluster".into())
            .spawn(move || {
                loop {
                    let stopped = crossbeam_channel::select! {
                        recv(stop) -> _ => true,
                        default(TICK) => false,
                    };
                    if stopped {
                        break;
                    }
                    let r = c.tick();
                    c.note(r);
                }
                // Stopping: another node leads at once, but this node stays a member (its
                // lease, and so its claims and its node key, kept alive) while its running
                // agents drain; `leave` ends it.
                c.resign();
                while !c.left.load(Ordering::SeqCst) {
                    thread::sleep(TICK);
                    let _ = c.flush_backlog();
                }
            })
    }

    /// Gives up leadership (shutdown).
    fn resign(&self) {
        self.set_leading(false);
        let lease = self.lease.load(Ordering::SeqCst);
        let key = self.key("leader");
        let me = self.node().as_bytes();
        // Only when the key is this node's, under this node's lease.
        if let Ok(Some(kv)) = self.etcd.get(&key) {
            if kv.value == me && kv.lease == lease {
                let _ = self.etcd.txn(
                    &[etcd::Compare::ValueIs(&key, me)],
                    &[etcd::Op::Delete(&key)],
                );
            }
        }
    }

    /// Records the outcome of an exchange with etcd, logging when it changes.
    fn note(&self, r: Result<(), EtcdError>) {
        match r {
            Ok(()) => {
                if !self.ok.swap(true, Ordering::SeqCst) {
                    log::info!(event = "cluster.etcd_ok", node = self.node(); "etcd is reachable again; writes, firing and claims resume");
                }
            }
            Err(e) => {
                self.set_leading(false);
                if self.ok.swap(false, Ordering::SeqCst) {
                    log::error!(event = "cluster.etcd_unavailable", node = self.node();
                        "{e}; this node serves reads from its cache, refuses writes (503) and fires nothing until etcd is back");
                }
            }
        }
    }

    /// Marks an exchange made elsewhere (a write) as failed.
    pub(crate) fn failed(&self, e: &EtcdError) {
        let down = match e {
            EtcdError::Unreachable(_) | EtcdError::Unknown(_) => true,
            EtcdError::Server { status, .. } => *status >= 500,
            EtcdError::BadAnswer(_) | EtcdError::Lost(_) => false,
        };
        if down {
            self.set_leading(false);
            if self.ok.swap(false, Ordering::SeqCst) {
                log::error!(event = "cluster.etcd_unavailable", node = self.node(); "{e}");
            }
        }
    }

    fn set_leading(&self, leading: bool) {
        if self.leading.swap(leading, Ordering::SeqCst) != leading {
            if leading {
                log::info!(event = "cluster.leader", node = self.node(); "this node now leads the cluster: it fires cron, interval and git_push triggers");
            } else {
                log::warn!(event = "cluster.follower", node = self.node(); "this node no longer leads the cluster");
            }
            self.leadership
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|tx| tx.send(leading).is_ok());
        }
    }

    /// The `cluster-lease` thread's round: one keep-alive. The deadline moves to the send
    /// time plus the TTL etcd gives; a TTL of 0 (the lease is gone) fences at once.
    fn renew(&self) {
        let lease = self.lease.load(Ordering::SeqCst);
        if lease == 0 {
            return;
        }
        let sent = Instant::now();
        match self.etcd.keepalive(lease) {
            Ok(ttl) if ttl > 0 => {
                let mut st = self.lease_state.lock().unwrap_or_else(|p| p.into_inner());
                if st.id == lease {
                    st.deadline = Some(sent + Duration::from_secs(ttl.unsigned_abs()));
                }
            }
            Ok(_) => self.fence(lease, "etcd says the lease expired"),
            // The `cluster-fence` thread acts at the deadline.
            Err(_) => {}
        }
    }

    /// Gives up lease `lease` (when it is still this node's): this node stops leading, its
    /// claims are dropped, the agents of its claimed runs are killed, and nothing more of
    /// those runs is written to etcd (another node may be running them again). The
    /// `cluster` thread takes a new lease at its next round.
    pub(crate) fn fence(&self, lease: i64, why: &str) {
        {
            let mut st = self.lease_state.lock().unwrap_or_else(|p| p.into_inner());
            if lease == 0 || st.id != lease {
                return;
            }
            *st = LeaseState::default();
            self.lease.store(0, Ordering::SeqCst);
        }
        self.set_leading(false);
        // A started run's final record is still written if its `active/` key names this
        // node and the old lease (nobody retried or closed it meanwhile).
        let runs: Vec<(String, runs::Guard)> = self
            .claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(id, c)| {
                let g = if c.started {
                    runs::Guard::Active(c.lease)
                } else {
                    runs::Guard::Gone
                };
                (id, g)
            })
            .collect();
        let ids: Vec<String> = runs.iter().map(|(id, _)| id.clone()).collect();
        self.fenced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(runs);
        log::warn!(event = "cluster.lease_expired", node = self.node(), runs = ids.len();
            "this node's lease lapsed ({why}); its {} claimed run(s) are killed and left to the cluster (the leader retries or interrupts them); taking a new lease", ids.len());
        if let Some(hook) = self.on_fence.get() {
            hook(&ids);
        }
    }

    /// Sets what kills the agents of fenced runs (once, at start-up).
    pub fn on_fence(&self, hook: impl Fn(&[String]) + Send + Sync + 'static) {
        let _ = self.on_fence.set(Box::new(hook));
    }

    /// Whether `run_id` was given up when the lease lapsed: it must not start, and its
    /// agent, if running, is killed.
    pub fn is_fenced(&self, run_id: &str) -> bool {
        self.fenced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(run_id)
    }

    /// What the writes of a fenced run must find in etcd (None: not fenced).
    pub(crate) fn fenced_guard(&self, run_id: &str) -> Option<runs::Guard> {
        self.fenced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
            .copied()
    }

    /// Marks one run as given up (its write found it no longer this node's) and kills it.
    pub(crate) fn fence_run(&self, run_id: &str) {
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
        self.fenced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id.to_string(), runs::Guard::Gone);
        if let Some(hook) = self.on_fence.get() {
            hook(&[run_id.to_string()]);
        }
    }

    /// Forgets a fenced run (it ended on this node).
    pub fn unfence(&self, run_id: &str) {
        self.fenced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
    }

    /// One round: get a lease if there is none, register, try to lead, read the view.
    fn tick(&self) -> Result<(), EtcdError> {
        let node = self.node().to_string();
        let mut lease = self.lease.load(Ordering::SeqCst);
        let me = self.key(&format!("nodes/{node}"));
        let info = json!({"node": node, "pid": std::process::id()}).to_string();
        if lease == 0 {
            let sent = Instant::now();
            lease = self.etcd.grant(LEASE_TTL)?;
            let mut st = self.lease_state.lock().unwrap_or_else(|p| p.into_inner());
            *st = LeaseState {
                id: lease,
                deadline: Some(sent + Duration::from_secs(LEASE_TTL.unsigned_abs())),
            };
            self.lease.store(lease, Ordering::SeqCst);
        }
        if self.etcd.get(&me)?.is_none_or(|kv| kv.lease != lease) {
            self.etcd.put(&me, info.as_bytes(), lease)?;
        }
        let leader_key = self.key("leader");
        self.etcd.create(&leader_key, node.as_bytes(), lease)?;
        let leader: Option<Kv> = self.etcd.get(&leader_key)?;
        let leading = leader
            .as_ref()
            .is_some_and(|kv| kv.value == node.as_bytes() && kv.lease == lease);
        let (nodes, _) = self.etcd.range_prefix(&self.key("nodes/"))?;
        let prefix = self.key("nodes/");
        let mut names: Vec<String> = nodes
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(&prefix).map(str::to_string))
            .collect();
        names.sort();
        self.flush_backlog()?;
        if leading && self.started.load(Ordering::SeqCst) {
            self.reap(&names)?;
            // The busy keys are a slower check: every 10th round.
            if self.rounds.fetch_add(1, Ordering::Relaxed) % 10 == 0 {
                self.heal_busy()?;
            }
        }
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = View {
            leader: leader.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
            nodes: names,
        };
        self.set_leading(leading);
        Ok(())
    }

    /// Leaves the cluster at the end of shutdown, once the runs have drained: revoking the
    /// lease drops this node's keys and claims.
    pub fn leave(&self) {
        self.left.store(true, Ordering::SeqCst);
        self.set_leading(false);
        let lease = self.lease.swap(0, Ordering::SeqCst);
        *self.lease_state.lock().unwrap_or_else(|p| p.into_inner()) = LeaseState::default();
        if lease != 0 {
            if let Err(e) = self.etcd.revoke(lease) {
                log::warn!(event = "cluster.leave", node = self.node(); "could not release this node's lease ({e}); another node leads within {LEASE_TTL}s");
            }
        }
    }

    /// The cluster's API token, made by the first node that needs one. Returns it and
    /// whether this call made it.
    pub fn ensure_token(&self) -> Result<(String, bool), EtcdError> {
        let key = self.key("token");
        let fresh = crate::ids::new_token()
            .map_err(|e| EtcdError::BadAnswer(format!("cannot make a token: {e}")))?;
        let made = self.etcd.create(&key, fresh.as_bytes(), 0)?;
        if made {
            return Ok((fresh, true));
        }
        match self.etcd.get(&key)? {
            Some(kv) if !kv.value.is_empty() => {
                Ok((String::from_utf8_lossy(&kv.value).trim().to_string(), false))
            }
            _ => Err(EtcdError::BadAnswer(format!(
                "the token key {key} is empty; delete it (etcdctl del {key}) and restart a node"
            ))),
        }
    }
}

/// `token --etcd …`: the cluster's token, made if missing.
pub fn token(opts: Options) -> Result<String, EtcdError> {
    let c = Cluster::new(opts);
    c.ensure_token().map(|(t, _)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        let o = Options::new("http://127.0.0.1:2379", Some("a"), Some("/x")).unwrap();
        assert_eq!(o.prefix, "/x/");
        assert!(Options::new("http://127.0.0.1:2379", Some("a/b"), None).is_err());
        assert!(Options::new("http://127.0.0.1:2379", Some("a"), Some("x/")).is_err());
        assert!(Options::new("", Some("a"), None).is_err());
    }
}
