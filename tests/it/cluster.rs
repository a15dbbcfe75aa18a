//! Cluster mode (README "Running a cluster"): a real 3-member etcd cluster on loopback and
//! three real daemons joined to it. Skipped, with a message, when `etcd` is not installed,
//! unless `CI` or `BOG_REQUIRE_ETCD` is set: then they fail (`.ci/run` installs Debian's
//! etcd-server and sets `BOG_REQUIRE_ETCD`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{heavy, tempdir, wait_for, Daemon};

/// A local etcd cluster of `n` members, each a real `etcd` process with its own data dir.
struct Etcd {
    dir: PathBuf,
    members: Vec<Member>,
    initial: String,
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn etcd_installed() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Etcd {
    fn start(dir: &Path, n: usize) -> Etcd {
        std::fs::create_dir_all(dir).unwrap();
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut e = Etcd {
            dir: dir.to_path_buf(),
            members,
            initial,
        };
        for i in 0..n {
            e.spawn(i);
        }
        for i in 0..n {
            e.wait_healthy(i);
        }
        e
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))
            .unwrap();
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.join(&m.name))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
            ])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
            ])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "bogtest"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.members[i].child = Some(child);
    }

    fn wait_healthy(&self, i: usize) {
        let url = format!("http://127.0.0.1:{}/health", self.members[i].client);
        wait_for(30, &format!("etcd member {i} healthy"), || {
            let r = ureq::get(&url)
                .timeout(Duration::from_secs(2))
                .call()
                .ok()?;
            let v: Value = serde_json::from_str(&r.into_string().ok()?).ok()?;
            (v["health"] == "true").then_some(())
        });
    }

    /// Stops member `i` (SIGKILL: as a crash or a lost machine).
    fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self, i: usize) {
        self.spawn(i);
    }

    fn urls(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
    }
}

/// A 3-member etcd cluster and three daemons `a`, `b`, `c` joined to it; None (with a
/// message) when etcd is not installed.
struct Setup {
    _dir: tempfile::TempDir,
    etcd: Etcd,
    nodes: Vec<Daemon>,
}

/// Whether a missing etcd fails the cluster tests instead of skipping them: in CI (`CI` is
/// set, as `.ci/run` does) or with `BOG_REQUIRE_ETCD`.
fn etcd_required() -> bool {
    ["CI", "BOG_REQUIRE_ETCD"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

fn setup(env: &[(&str, &str)]) -> Option<Setup> {
    if !etcd_installed() {
        assert!(
            !etcd_required(),
            "etcd is not installed, and CI or BOG_REQUIRE_ETCD is set: the cluster tests must run (apt-get install etcd-server)"
        );
        eprintln!("SKIPPED: etcd is not installed (apt-get install etcd-server); the cluster tests need a real etcd");
        return None;
    }
    let dir = tempdir();
    let etcd = Etcd::start(&dir.path().join("etcd"), 3);
    let urls = etcd.urls();
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        nodes.push(Daemon::start_env(
            &d,
            &["--etcd", &urls, "--node", name, "--workers", "2"],
            env,
        ));
    }
    Some(Setup {
        _dir: dir,
        etcd,
        nodes,
    })
}

fn cluster_health(d: &Daemon) -> Value {
    let (st, h) = d.get("/health");
    assert_eq!(st, 200, "{h}");
    h["cluster"].clone()
}

/// Waits until every live node agrees on one leader among `alive` nodes; returns its index.
fn leader(s: &Setup, alive: &[usize]) -> usize {
    wait_for(20, "the nodes to agree on a leader", || {
        let views: Vec<Value> = alive.iter().map(|&i| cluster_health(&s.nodes[i])).collect();
        let l = views[0]["leader"].as_str()?.to_string();
        let all = views.iter().all(|v| {
            v["leader"] == l.as_str()
                && v["etcd"] == "ok"
                && v["nodes"].as_array().map(Vec::len) == Some(alive.len())
        });
        let i = ["a", "b", "c"].iter().position(|n| *n == l)?;
        (all && alive.contains(&i)).then_some(i)
    })
}

/// Waits (up to `secs`) until job `id` is live on the nodes `on`.
fn wait_job(s: &Setup, id: &str, on: &[usize], secs: u64) {
    for &i in on {
        wait_for(secs, &format!("job {id} on node {i}"), || {
            (s.nodes[i].get(&format!("/jobs/{id}")).0 == 200).then_some(())
        });
    }
}

/// Creates a job through `d`; its id.
fn create_id(d: &Daemon, body: &Value) -> String {
    d.create(body)["id"].as_str().unwrap().to_string()
}

/// The cluster's run records of `job` (from etcd, through the API of a live node).
fn all_runs(s: &Setup, job: &str) -> Vec<Value> {
    let d = s.nodes.iter().find(|d| d.child.is_some()).unwrap();
    let (st, runs) = d.get(&format!("/jobs/{job}/runs?limit=100000"));
    assert_eq!(st, 200, "{runs}");
    runs.as_array().unwrap().clone()
}

/// The runs per `scheduled_at` second.
fn by_slot(runs: &[Value]) -> BTreeMap<i64, Vec<Value>> {
    let mut m: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for r in runs {
        let at = r["trigger"]["scheduled_at"].as_str().unwrap();
        let t = chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .timestamp();
        m.entry(t).or_default().push(r.clone());
    }
    m
}

/// Whether every run is final.
fn all_final(runs: &[Value]) -> bool {
    runs.iter()
        .all(|r| r["status"] != "queued" && r["status"] != "running")
}

#[test]
fn a_job_is_live_everywhere_one_leader_fires_each_second_and_a_new_leader_takes_over() {
    let _h = heavy();
    let Some(mut s) = setup(&[]) else { return };
    let l = leader(&s, &[0, 1, 2]);
    // The same token everywhere (it lives in etcd), and `token --etcd` prints it.
    assert!(s.nodes.iter().all(|d| d.token == s.nodes[0].token));
    let (code, out, _) = crate::common::cli(&s.nodes[0].dir, &["token", "--etcd", &s.etcd.urls()]);
    assert_eq!((code, out.trim()), (0, s.nodes[0].token.as_str()));

    // Created on a follower: live on every node within a second or two.
    let f = (l + 1) % 3;
    let job = s.nodes[f].create(&json!({
        "name": "tick", "prompt": "p", "agent": {"command": ["true"]},
        "triggers": [{"type": "cron", "cron": "* * * * * *"}],
    }));
    let id = job["id"].as_str().unwrap().to_string();
    // The same with catch_up: a new leader fires the first slot it finds missed, once.
    let caught = create_id(
        &s.nodes[f],
        &json!({
            "name": "tick-catch-up", "prompt": "p", "agent": {"command": ["true"]}, "catch_up": true,
            "triggers": [{"type": "cron", "cron": "* * * * * *"}],
        }),
    );
    wait_job(&s, &id, &[0, 1, 2], 5);

    // Concurrent changes of one job on two nodes: an acknowledged change is never lost
    // (a change made on a stale version is answered 409 instead of overwriting another).
    let ed = create_id(
        &s.nodes[0],
        &json!({"name": "edited", "prompt": "p", "agent": {"command": ["true"]},
            "triggers": [{"type": "interval", "seconds": 3600}]}),
    );
    wait_job(&s, &ed, &[0, 1], 5);
    let patch = |d: &Daemon, body: Value| {
        d.req("PATCH", &format!("/jobs/{ed}"), Some(&body.to_string()))
            .0
    };
    let (acked_prompt, acked_history) = std::thread::scope(|sc| {
        let a = sc.spawn(|| {
            let mut last = None;
            for i in 0..15 {
                match patch(&s.nodes[0], json!({"prompt": format!("p{i}")})) {
                    200 => last = Some(format!("p{i}")),
                    409 => {}
                    st => panic!("PATCH answered {st}"),
                }
            }
            last
        });
        let b = sc.spawn(|| {
            let mut last = None;
            for i in 0..15 {
                match patch(&s.nodes[1], json!({"history": 100 + i})) {
                    200 => last = Some(100 + i),
                    409 => {}
                    st => panic!("PATCH answered {st}"),
                }
            }
            last
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    let (acked_prompt, acked_history) = (acked_prompt.unwrap(), acked_history.unwrap());
    wait_for(10, "both changes everywhere", || {
        [0, 1, 2]
            .iter()
            .all(|&i| {
                let j = s.nodes[i].get(&format!("/jobs/{ed}")).1;
                j["prompt"] == acked_prompt.as_str() && j["history"] == acked_history
            })
            .then_some(())
    });

    // ~20 s of an every-second cron: exactly one run per second in the whole cluster (the
    // leader fires; any node's workers run them).
    wait_for(40, "20 slots fired", || {
        (by_slot(&all_runs(&s, &id)).len() >= 20).then_some(())
    });
    let slots = by_slot(&all_runs(&s, &id));
    let first = *slots.keys().next().unwrap();
    let last = *slots.keys().last().unwrap();
    for t in first..=last {
        let n = slots.get(&t).map_or(0, Vec::len);
        assert_eq!(n, 1, "slot {t} fired {n} times");
    }
    let names = ["a", "b", "c"];
    for r in slots.values().flatten() {
        if r["status"] != "queued" {
            assert!(names.contains(&r["node"].as_str().unwrap()), "{r}");
        }
    }

    // kill -9 of the leader: another node leads and fires within 10 s (lease TTL 5 s).
    let killed_at = chrono::Utc::now().timestamp();
    s.nodes[l].kill9();
    let alive: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let new = leader(&s, &alive);
    assert_ne!(new, l);
    let fired = wait_for(15, "a slot fired after the kill", || {
        by_slot(&all_runs(&s, &id))
            .into_keys()
            .find(|t| *t > killed_at)
    });
    assert!(
        fired - killed_at <= 10,
        "failover took {}s",
        fired - killed_at
    );
    // A few more seconds on the new leader; no slot ever fired twice, none missed since.
    wait_for(20, "5 slots after the failover", || {
        (by_slot(&all_runs(&s, &id)).range(fired..).count() >= 5).then_some(())
    });
    let slots = by_slot(&all_runs(&s, &id));
    for (t, runs) in &slots {
        assert_eq!(runs.len(), 1, "slot {t} fired {} times", runs.len());
    }
    let to = *slots.keys().last().unwrap();
    for t in fired..=to {
        assert!(slots.contains_key(&t), "slot {t} missed after the failover");
    }
    // The catch_up job: one catch-up firing, for the first slot after the old leader's
    // last, and no slot twice.
    let runs = all_runs(&s, &caught);
    let catch: Vec<&Value> = runs
        .iter()
        .filter(|r| r["trigger"]["catch_up"] == true)
        .collect();
    assert_eq!(catch.len(), 1, "{catch:?}");
    let slots = by_slot(&runs);
    for (t, runs) in &slots {
        assert_eq!(
            runs.len(),
            1,
            "catch_up job: slot {t} fired {} times",
            runs.len()
        );
    }
    let at =
        chrono::DateTime::parse_from_rfc3339(catch[0]["trigger"]["scheduled_at"].as_str().unwrap())
            .unwrap()
            .timestamp();
    assert!(
        slots.contains_key(&(at - 1)),
        "the catch-up slot {at} follows the last one fired"
    );
    assert!(
        at < fired + 1,
        "the catch-up slot {at} was missed during the failover (first new slot {fired})"
    );
    // Runs go to the workers of every live node, not only the leader's.
    wait_for(20, "runs on both live nodes", || {
        let on: std::collections::HashSet<String> = all_runs(&s, &id)
            .iter()
            .filter_map(|r| r["node"].as_str().map(str::to_string))
            .collect();
        alive.iter().all(|&i| on.contains(names[i])).then_some(())
    });
}

#[test]
fn a_webhook_delivery_runs_once_overlap_holds_and_file_triggers_stay_on_their_node() {
    let _h = heavy();
    let Some(s) = setup(&[("HOOK_SECRET", "s3cret")]) else {
        return;
    };
    leader(&s, &[0, 1, 2]);
    let job = s.nodes[0].create(&json!({
        "name": "hooked", "prompt": "p", "agent": {"command": ["true"]},
        "triggers": [{"type": "webhook", "path": "/hooks/push", "secret_env": "HOOK_SECRET"}],
    }));
    let id = job["id"].as_str().unwrap().to_string();
    wait_job(&s, &id, &[0, 1, 2], 5);
    let body = br#"{"ref":"refs/heads/main"}"#;
    let sig = crate::common::github_signature("s3cret", body);
    let send = |d: &Daemon, delivery: &str| {
        d.raw(
            "POST",
            "/hooks/push",
            Some(body),
            &[
                ("X-Hub-Signature-256", sig.as_str()),
                ("X-GitHub-Delivery", delivery),
                ("Content-Type", "application/json"),
            ],
        )
        .0
    };
    assert_eq!(send(&s.nodes[1], "d-1"), 202);
    assert_eq!(
        send(&s.nodes[2], "d-1"),
        200,
        "the same delivery to another node"
    );
    assert_eq!(send(&s.nodes[0], "d-1"), 200, "and to a third");
    assert_eq!(send(&s.nodes[0], "d-2"), 202, "another delivery runs");
    wait_for(10, "both runs final", || {
        let r = all_runs(&s, &id);
        (r.len() == 2 && all_final(&r)).then_some(())
    });
    let runs = all_runs(&s, &id);
    let mut per: HashMap<String, usize> = HashMap::new();
    for r in &runs {
        *per.entry(r["trigger"]["delivery"].as_str().unwrap().into())
            .or_default() += 1;
        assert_eq!(r["status"], "succeeded", "{r}");
    }
    assert_eq!(per, HashMap::from([("d-1".into(), 1), ("d-2".into(), 1)]));

    // The overlap policy holds across the cluster: manual runs asked of three nodes while
    // the first run is running (a long agent, so that it outlasts the requests).
    let serial = |name: &str, overlap: &str| {
        let id = create_id(
            &s.nodes[0],
            &json!({
                "name": name, "prompt": "p", "agent": {"command": ["sleep", "3"]}, "overlap": overlap,
                "triggers": [{"type": "interval", "seconds": 3600}],
            }),
        );
        wait_job(&s, &id, &[0, 1, 2], 5);
        id
    };
    let run_on = |d: &Daemon, id: &str| {
        let (st, r) = d.post(&format!("/jobs/{id}/run"), &json!({}));
        assert_eq!(st, 202, "{r}");
        (
            r["run_id"].as_str().unwrap().to_string(),
            r["status"].as_str().unwrap().to_string(),
        )
    };
    let running = |id: &str, run: &str| {
        wait_for(10, "the first run running", || {
            let (st, r) = s.nodes[2].get(&format!("/jobs/{id}/runs/{run}"));
            (st == 200 && r["status"] == "running").then_some(())
        })
    };
    let q = serial("queued-one", "queue");
    let (r1, st1) = run_on(&s.nodes[0], &q);
    running(&q, &r1);
    let (r2, st2) = run_on(&s.nodes[1], &q);
    let (r3, st3) = run_on(&s.nodes[2], &q);
    assert_eq!(
        (st1.as_str(), st2.as_str(), st3.as_str()),
        ("queued", "queued", "coalesced")
    );
    assert_eq!(r3, r2, "a third firing merges into the pending run");
    wait_for(30, "both queued runs final", || {
        let r = all_runs(&s, &q);
        (r.len() == 2 && all_final(&r)).then_some(())
    });
    let (a, b) = (
        s.nodes[2].get(&format!("/jobs/{q}/runs/{r1}")).1,
        s.nodes[2].get(&format!("/jobs/{q}/runs/{r2}")).1,
    );
    assert_eq!(
        (&a["status"], &b["status"]),
        (&json!("succeeded"), &json!("succeeded"))
    );
    assert!(
        b["started_at"].as_str().unwrap() >= a["finished_at"].as_str().unwrap(),
        "the pending run started before the first ended: {a} {b}"
    );
    let k = serial("skipping-one", "skip");
    let (k1, st1) = run_on(&s.nodes[1], &k);
    running(&k, &k1);
    let (_, st2) = run_on(&s.nodes[2], &k);
    assert_eq!((st1.as_str(), st2.as_str()), ("queued", "skipped"));

    // file_change triggers watch one machine's files: they name the node, which alone fires.
    let root = s.nodes[1].dir.join("watched");
    std::fs::create_dir_all(&root).unwrap();
    let fc = |node: Option<&str>| {
        let mut t = json!({"type": "file_change", "patterns": ["*.txt"],
            "root": root.to_str().unwrap(), "debounce_seconds": 0.1});
        if let Some(n) = node {
            t["node"] = n.into();
        }
        json!({"name": "files", "prompt": "p", "agent": {"command": ["true"]}, "triggers": [t]})
    };
    let (st, body) = s.nodes[0].post("/jobs", &fc(None));
    assert_eq!(
        (st, body["field"].as_str()),
        (400, Some("triggers[0].node")),
        "{body}"
    );
    // What is kept per node is refused in a cluster rather than counted wrongly.
    for (extra, field) in [
        (json!({"expect": {"within_seconds": 60}}), "expect"),
        (
            json!({"limits": {"max_runs_per_hour": 5}}),
            "limits.max_runs_per_hour",
        ),
        (
            json!({"limits": {"max_runs_per_day": 5}}),
            "limits.max_runs_per_day",
        ),
    ] {
        let mut j = json!({"name": "per-node", "prompt": "p", "agent": {"command": ["true"]},
            "triggers": [{"type": "interval", "seconds": 3600}]});
        for (k, v) in extra.as_object().unwrap() {
            j[k] = v.clone();
        }
        let (st, body) = s.nodes[2].post("/jobs", &j);
        assert_eq!((st, body["field"].as_str()), (400, Some(field)), "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("cluster mode"),
            "{body}"
        );
    }
    let fid = create_id(&s.nodes[0], &fc(Some("b")));
    wait_job(&s, &fid, &[1], 5);
    // The watcher is set up asynchronously; write until the run appears.
    let mut n = 0;
    let runs = wait_for(15, "a file_change run on node b", || {
        n += 1;
        std::fs::write(root.join(format!("f{n}.txt")), "x").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let r = all_runs(&s, &fid);
        (!r.is_empty()).then_some(r)
    });
    assert!(runs.iter().all(|r| r["node"] == "b"), "{runs:?}");

    // Fencing: a node frozen past its lease (SIGSTOP) while its agent runs. The leader
    // retries the run on another node; the frozen node, once it wakes, finds its lease
    // lapsed, kills its agent and writes nothing more of the run: one agent finishes, and
    // the record is the retry's.
    let marks = s.nodes[0].dir.parent().unwrap().join("fence-marks");
    let script = format!(
        "echo start >> {m}; sleep 15; echo end >> {m}",
        m = marks.display()
    );
    let fj = create_id(
        &s.nodes[0],
        &json!({
            "name": "fenced", "prompt": "p", "max_retries": 1,
            "agent": {"command": ["sh", "-c", script]},
            "triggers": [{"type": "interval", "seconds": 3600}],
        }),
    );
    wait_job(&s, &fj, &[0, 1, 2], 5);
    let (fr, _) = run_on(&s.nodes[0], &fj);
    let names = ["a", "b", "c"];
    let rec = wait_for(10, "the run running", || {
        let (st, r) = s.nodes[0].get(&format!("/jobs/{fj}/runs/{fr}"));
        (st == 200 && r["status"] == "running").then_some(r)
    });
    let v = names.iter().position(|n| *n == rec["node"]).unwrap();
    let w = (v + 1) % 3;
    s.nodes[v].signal(libc::SIGSTOP);
    let retried = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(20, "the run retried on another node", || {
            let (st, r) = s.nodes[w].get(&format!("/jobs/{fj}/runs/{fr}"));
            (st == 200 && r["status"] == "running" && r["attempts"] == 2).then_some(r)
        })
    }));
    s.nodes[v].signal(libc::SIGCONT);
    let retried = retried.unwrap();
    assert_ne!(retried["node"], names[v], "{retried}");
    let done = wait_for(30, "the retried run finished", || {
        let (st, r) = s.nodes[w].get(&format!("/jobs/{fj}/runs/{fr}"));
        (st == 200 && all_final(std::slice::from_ref(&r))).then_some(r)
    });
    assert_eq!(
        (&done["status"], &done["node"], &done["attempts"]),
        (&json!("succeeded"), &retried["node"], &json!(2)),
        "{done}"
    );
    let m = std::fs::read_to_string(&marks).unwrap();
    assert_eq!(
        (m.matches("start").count(), m.matches("end").count()),
        (2, 1),
        "the frozen node's agent was not killed when it woke: {m}\n{}",
        s.nodes[v].stderr()
    );
    assert!(
        s.nodes[v].stderr().contains("cluster.lease_expired"),
        "{}",
        s.nodes[v].stderr()
    );

    // A node stopped with SIGTERM leaves the cluster: the others see it go, and one leads.
    let mut s = s;
    let l = leader(&s, &[0, 1, 2]);
    s.nodes[l].signal(libc::SIGTERM);
    assert!(s.nodes[l].wait_exit(30).success());
    let alive: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    assert_ne!(leader(&s, &alive), l);
}

#[test]
fn etcd_outages_one_member_is_harmless_all_members_refuse_writes_until_they_are_back() {
    let _h = heavy();
    let Some(mut s) = setup(&[]) else { return };
    leader(&s, &[0, 1, 2]);
    let job = |name: &str| {
        json!({
            "name": name, "prompt": "p", "agent": {"command": ["true"]},
            "triggers": [{"type": "cron", "cron": "* * * * * *"}],
        })
    };
    // One member down: writes, the watch and firing go on.
    s.etcd.stop(0);
    let id = create_id(&s.nodes[0], &job("one-down"));
    wait_job(&s, &id, &[2], 10);
    wait_for(15, "a run with one member down", || {
        (!all_runs(&s, &id).is_empty()).then_some(())
    });

    // A run that ends during the outage (its record waits in memory on its node).
    let dj = create_id(
        &s.nodes[0],
        &json!({
            "name": "during", "prompt": "p", "agent": {"command": ["sleep", "2"]},
            "overlap": "skip", "triggers": [{"type": "interval", "seconds": 3600}],
        }),
    );
    wait_job(&s, &dj, &[0, 1, 2], 10);
    let (st, r) = s.nodes[0].post(&format!("/jobs/{dj}/run"), &json!({}));
    assert_eq!(st, 202, "{r}");
    let dr = r["run_id"].as_str().unwrap().to_string();
    let rec = wait_for(10, "the run running", || {
        let (st, r) = s.nodes[0].get(&format!("/jobs/{dj}/runs/{dr}"));
        (st == 200 && r["status"] == "running").then_some(r)
    });
    let n = ["a", "b", "c"]
        .iter()
        .position(|x| *x == rec["node"])
        .unwrap();

    // Every member down: reads answer, writes get 503, /health says so, nothing fires.
    s.etcd.stop(1);
    s.etcd.stop(2);
    let down = chrono::Utc::now().timestamp();
    for d in &s.nodes {
        wait_for(15, "etcd unavailable in /health", || {
            (cluster_health(d)["etcd"] == "unavailable").then_some(())
        });
    }
    let (st, body) = s.nodes[1].post("/jobs", &job("refused"));
    assert_eq!(st, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("unavailable"),
        "{body}"
    );
    let (st, body) = s.nodes[1].post(&format!("/jobs/{id}/run"), &json!({}));
    assert_eq!(st, 503, "{body}");
    assert_eq!(s.nodes[2].get(&format!("/jobs/{id}")).0, 200);
    assert_eq!(s.nodes[0].get("/jobs").0, 200);
    // The run ends meanwhile; its node's own record says so.
    wait_for(15, "the run final on its node", || {
        let (st, r) = s.nodes[n].get(&format!("/jobs/{dj}/runs/{dr}"));
        (st == 200 && r["status"] == "succeeded").then_some(())
    });
    let up = chrono::Utc::now().timestamp();

    // Back: without a restart of any daemon, writes and firing resume.
    for i in 0..3 {
        s.etcd.restart(i);
    }
    for i in 0..3 {
        s.etcd.wait_healthy(i);
    }
    for d in &s.nodes {
        wait_for(20, "etcd ok in /health again", || {
            (cluster_health(d)["etcd"] == "ok").then_some(())
        });
    }
    let back = chrono::Utc::now().timestamp();
    let id2 = create_id(&s.nodes[1], &job("after"));
    wait_job(&s, &id2, &[0], 10);
    wait_for(20, "the first job fires again", || {
        by_slot(&all_runs(&s, &id))
            .keys()
            .any(|t| *t > back)
            .then_some(())
    });
    // No slot fired twice through it all, and none while etcd was down.
    for (t, runs) in by_slot(&all_runs(&s, &id)) {
        assert_eq!(runs.len(), 1, "slot {t} fired {} times", runs.len());
        assert!(
            t <= down || t >= up,
            "slot {t} fired during the outage ({down}..{up})"
        );
    }
    // The run that ended during the outage reached etcd, and released its job.
    wait_for(15, "the outage's run succeeded in etcd", || {
        let (st, r) = s.nodes[(n + 1) % 3].get(&format!("/jobs/{dj}/runs/{dr}"));
        (st == 200 && r["status"] == "succeeded").then_some(())
    });
    let (st, r) = s.nodes[1].post(&format!("/jobs/{dj}/run"), &json!({}));
    assert_eq!((st, &r["status"]), (202, &json!("queued")), "{r}");
}

#[test]
fn a_run_on_a_node_killed_mid_run_is_interrupted_and_every_node_lists_the_clusters_runs() {
    let _h = heavy();
    let Some(mut s) = setup(&[]) else { return };
    leader(&s, &[0, 1, 2]);
    let id = create_id(
        &s.nodes[0],
        &json!({
            "name": "long", "prompt": "p", "agent": {"command": ["sleep", "20"]},
            "triggers": [{"type": "webhook", "path": "/hooks/long", "secret_env": "UNSET_SECRET"}],
        }),
    );
    wait_job(&s, &id, &[2], 5);
    let (st, r) = s.nodes[2].post(&format!("/jobs/{id}/run"), &json!({}));
    assert_eq!(st, 202, "{r}");
    let run = r["run_id"].as_str().unwrap().to_string();
    // Some node's worker claims it; every node sees it running there.
    let rec = wait_for(10, "the run running", || {
        let (st, r) = s.nodes[2].get(&format!("/jobs/{id}/runs/{run}"));
        (st == 200 && r["status"] == "running").then_some(r)
    });
    let names = ["a", "b", "c"];
    let victim = rec["node"].as_str().unwrap().to_string();
    let v = names.iter().position(|n| *n == victim).unwrap();
    let w = (v + 1) % 3;
    let (st, seen) = s.nodes[w].get(&format!("/jobs/{id}/runs/{run}"));
    assert_eq!((st, &seen["node"]), (200, &rec["node"]));
    s.nodes[v].kill9();
    // Lease TTL (5 s) + 5 s: the leader (a new one, if the victim led) closes it.
    let rec = wait_for(10, "the run interrupted", || {
        let (st, r) = s.nodes[w].get(&format!("/jobs/{id}/runs/{run}"));
        (st == 200 && r["status"] == "interrupted").then_some(r)
    });
    assert_eq!(rec["node"], victim.as_str(), "{rec}");
    let err = rec["error"].as_str().unwrap();
    assert!(err.contains(&format!("node {victim}")), "{err}");
    // Listed the same from every live node.
    for i in (0..3).filter(|&i| i != v) {
        let (st, runs) = s.nodes[i].get(&format!("/jobs/{id}/runs"));
        assert_eq!(st, 200);
        assert_eq!(runs[0]["id"], run.as_str(), "{runs}");
        assert_eq!(runs[0]["status"], "interrupted");
    }

    // With retries left, a run whose node dies is queued again and runs on another node.
    let alive: Vec<usize> = (0..3).filter(|&i| i != v).collect();
    let rid = create_id(
        &s.nodes[w],
        &json!({
            "name": "retried", "prompt": "p", "agent": {"command": ["sleep", "4"]},
            "max_retries": 1,
            "triggers": [{"type": "interval", "seconds": 3600}],
        }),
    );
    wait_job(&s, &rid, &alive, 5);
    let (st, r) = s.nodes[w].post(&format!("/jobs/{rid}/run"), &json!({}));
    assert_eq!(st, 202, "{r}");
    let run = r["run_id"].as_str().unwrap().to_string();
    let rec = wait_for(10, "the retried job's run running", || {
        let (st, r) = s.nodes[w].get(&format!("/jobs/{rid}/runs/{run}"));
        (st == 200 && r["status"] == "running").then_some(r)
    });
    let first = rec["node"].as_str().unwrap().to_string();
    let f = names.iter().position(|n| *n == first).unwrap();
    let other = alive.iter().copied().find(|&i| i != f).unwrap();
    s.nodes[f].kill9();
    let last = std::cell::RefCell::new(Value::Null);
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(25, "the run retried elsewhere and finished", || {
            let (st, r) = s.nodes[other].get(&format!("/jobs/{rid}/runs/{run}"));
            *last.borrow_mut() = r.clone();
            (st == 200 && r["status"] == "succeeded").then_some(r)
        })
    }));
    let rec = done.unwrap_or_else(|_| {
        panic!(
            "not retried: {}\n{}",
            last.borrow(),
            s.nodes[other].stderr()
        )
    });
    assert_eq!(rec["node"], names[other], "{rec}");
    assert_eq!(rec["attempts"], 2, "{rec}");
    let w = other;

    // A second daemon that claims the name of a live node is refused.
    let live = names[w];
    let dir = s.nodes[w].dir.parent().unwrap().join("twin");
    let out = Command::new(crate::common::BIN)
        .arg("run")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--port", "0", "--etcd", &s.etcd.urls(), "--node", live])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("already in the cluster"), "{err}");
}

#[test]
fn a_run_that_ended_while_etcd_was_down_reaches_it_after_its_node_restarts() {
    let _h = heavy();
    if !etcd_installed() {
        assert!(
            !etcd_required(),
            "etcd is required here (CI or BOG_REQUIRE_ETCD is set)"
        );
        eprintln!("SKIPPED: etcd is not installed");
        return;
    }
    // One member, one node: the run's record can only reach etcd through the node itself.
    let dir = tempdir();
    let mut etcd = Etcd::start(&dir.path().join("etcd"), 1);
    let data = dir.path().join("a");
    std::fs::create_dir_all(&data).unwrap();
    let args = ["--etcd", &etcd.urls(), "--node", "a"].map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut d = Daemon::start_env(&data, &args, &[]);
    let id = create_id(
        &d,
        &json!({
            "name": "w", "prompt": "p", "agent": {"command": ["sleep", "2"]},
            "overlap": "skip", "triggers": [{"type": "interval", "seconds": 3600}],
        }),
    );
    let (st, r) = d.post(&format!("/jobs/{id}/run"), &json!({}));
    assert_eq!(st, 202, "{r}");
    let run = r["run_id"].as_str().unwrap().to_string();
    wait_for(10, "the run running", || {
        let (st, r) = d.get(&format!("/jobs/{id}/runs/{run}"));
        (st == 200 && r["status"] == "running").then_some(())
    });
    etcd.stop(0);
    wait_for(15, "the run final on the node", || {
        let (st, r) = d.get(&format!("/jobs/{id}/runs/{run}"));
        (st == 200 && r["status"] == "succeeded").then_some(())
    });
    // Stopped before etcd is back: the record it kept in memory is gone with it.
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(30).success());
    etcd.restart(0);
    etcd.wait_healthy(0);
    let d = Daemon::start_env(&data, &args, &[]);
    let rec = wait_for(20, "the run's final record in etcd", || {
        let (st, r) = d.get(&format!("/jobs/{id}/runs/{run}"));
        (st == 200 && cluster_health(&d)["etcd"] == "ok" && all_final(std::slice::from_ref(&r)))
            .then_some(r)
    });
    assert_eq!(rec["status"], "succeeded", "{rec}\n{}", d.stderr());
    // And the job is free again (overlap: skip).
    let (st, r) = d.post(&format!("/jobs/{id}/run"), &json!({}));
    assert_eq!((st, &r["status"]), (202, &json!("queued")), "{r}");
}
