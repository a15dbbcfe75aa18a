#!/usr/bin/env python3
"""Cluster-mode figures (issue 14): runs/s with 3 nodes vs 1, cron lateness, failover time.

Usage: python3 contrib/bench/cluster.py [--runs 300] [--lateness-seconds 20] [--failovers 3]
Needs `etcd` (Debian's etcd-server) and a release build (`cargo build --release`); starts a
3-member etcd cluster and the daemons on loopback in a temp dir. Prints a table; not part of
the tests.

- runs/s: a job with `overlap: parallel` is fired `--runs` times with POST /jobs/{id}/run,
  round-robin over the nodes (16 client threads), and the clock runs until every run is final
  (read from the cluster's records). A run executes on the node that accepted it, so with
  3 nodes there are 3 worker pools (4 workers each). Compared with one node of a cluster and
  with a single daemon without etcd.
- cron lateness: every-second cron jobs; the agent reads the clock (`date +%s.%N`) as it
  starts: lateness = that instant minus the scheduled second.
- failover: kill -9 of the leader daemon; the time from the kill to the scheduled second of
  the first slot fired after it, by the new leader (lease TTL 5 s; the cluster thread ticks
  every second).
"""
import argparse, datetime, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("BOG_BIN") or os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release", "bog-agents-daemon")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait(what, secs, f):
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            v = f()
            if v:
                return v
        except Exception:
            pass
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def start_etcd(tmp, n=3):
    members = [(f"m{i}", free_port(), free_port()) for i in range(n)]
    initial = ",".join(f"{m}=http://127.0.0.1:{p}" for m, _, p in members)
    procs = []
    for m, c, p in members:
        procs.append(subprocess.Popen([
            "etcd", "--name", m, "--data-dir", os.path.join(tmp, m),
            "--listen-client-urls", f"http://127.0.0.1:{c}", "--advertise-client-urls", f"http://127.0.0.1:{c}",
            "--listen-peer-urls", f"http://127.0.0.1:{p}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}",
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--heartbeat-interval", "50", "--election-timeout", "500"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    urls = ",".join(f"http://127.0.0.1:{c}" for _, c, _ in members)
    for _, c, _ in members:
        wait("etcd", 30, lambda: json.load(urllib.request.urlopen(f"http://127.0.0.1:{c}/health", timeout=2))["health"] == "true")
    return procs, urls


class Node:
    def __init__(self, data, extra):
        os.makedirs(data, exist_ok=True)
        self.p = subprocess.Popen([BIN, "run", "--data-dir", data, "--port", "0", "--workers", "4"] + extra,
                                  stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "err.log"), "w"))
        def ready():
            info = json.load(open(os.path.join(data, "daemon.lock")))
            return info if info["pid"] == self.p.pid and "port" in info else None
        self.port = wait("daemon", 30, ready)["port"]
        self.token = open(os.path.join(data, ".token")).read().strip()

    def call(self, method, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            data = r.read()
            return json.loads(data) if data else None

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            self.p.wait(timeout=60)


def throughput(nodes, agent, runs):
    job = nodes[0].call("POST", "/jobs", {"name": f"tp{time.time_ns()}", "prompt": "p",
                         "agent": {"command": agent}, "overlap": "parallel", "history": runs + 10,
                         "triggers": [{"type": "webhook", "path": f"/hooks/tp{time.time_ns()}", "secret_env": "NONE"}]})
    jid = job["id"]
    wait("job on every node", 10, lambda: all(n.call("GET", f"/jobs/{jid}") for n in nodes))
    t0 = time.time()
    todo = list(range(runs))
    lock = threading.Lock()

    def client():
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            nodes[i % len(nodes)].call("POST", f"/jobs/{jid}/run", {})
    ts = [threading.Thread(target=client) for _ in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()

    def done():
        rs = nodes[0].call("GET", f"/jobs/{jid}/runs?limit={runs + 10}")
        return len(rs) >= runs and all(r["status"] not in ("queued", "running") for r in rs)
    wait("every run final", 600, done)
    dt = time.time() - t0
    nodes[0].call("DELETE", f"/jobs/{jid}")
    return runs / dt


def lateness(nodes, seconds, tmp):
    out = os.path.join(tmp, "late")
    os.makedirs(out, exist_ok=True)
    ids = []
    for i in range(2):
        ids.append(nodes[0].call("POST", "/jobs", {"name": f"late{i}", "prompt": "p",
                   "agent": {"command": ["sh", "-c", f"date +%s.%N >> {out}/{i}"]},
                   "triggers": [{"type": "cron", "cron": "* * * * * *", "timezone": "UTC"}], "history": 5})["id"])
    time.sleep(seconds + 1)
    for j in ids:
        nodes[0].call("DELETE", f"/jobs/{j}")
    late = []
    for i in range(2):
        for line in open(f"{out}/{i}"):
            t = float(line)
            late.append((t - int(t)) * 1000)
    late.sort()
    return late


def leader(nodes, alive):
    def agree():
        hs = [nodes[i].call("GET", "/health")["cluster"] for i in alive]
        l = hs[0]["leader"]
        return l if l and all(h["leader"] == l and len(h["nodes"]) == len(alive) for h in hs) else None
    return wait("a leader", 30, agree)


def failover(urls, tmp, k):
    base = os.path.join(tmp, f"fo{k}")
    nodes = [Node(os.path.join(base, n), ["--etcd", urls, "--node", n, "--etcd-prefix", f"/fo{k}/"]) for n in "abc"]
    try:
        name = leader(nodes, [0, 1, 2])
        li = "abc".index(name)
        jid = nodes[0].call("POST", "/jobs", {"name": "tick", "prompt": "p", "agent": {"command": ["true"]},
                            "triggers": [{"type": "cron", "cron": "* * * * * *"}]})["id"]
        time.sleep(3)
        killed = time.time()
        nodes[li].stop(signal.SIGKILL)
        alive = [i for i in range(3) if i != li]
        other = nodes[alive[0]]

        def first_new():
            # Runs execute on any node: the first slot after the kill is the new leader's.
            times = [datetime.datetime.fromisoformat(r["trigger"]["scheduled_at"].replace("Z", "+00:00")).timestamp()
                     for r in other.call("GET", f"/jobs/{jid}/runs?limit=50")]
            later = [t for t in times if t > killed]
            return min(later) if later else None
        return wait("the new leader fires", 30, first_new) - killed
    finally:
        for n in nodes:
            n.stop(signal.SIGKILL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--lateness-seconds", type=int, default=20)
    ap.add_argument("--failovers", type=int, default=3)
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    if shutil.which("etcd") is None:
        sys.exit("etcd is not installed (apt-get install etcd-server)")
    tmp = tempfile.mkdtemp(prefix="bogcluster")
    rows = []
    etcd = []
    try:
        etcd, urls = start_etcd(os.path.join(tmp, "etcd"))
        single = [Node(os.path.join(tmp, "single"), [])]
        one = [Node(os.path.join(tmp, "one"), ["--etcd", urls, "--node", "solo", "--etcd-prefix", "/one/"])]
        for agent, label in ((["true"], "true"), (["sleep", "0.2"], "sleep 0.2")):
            rows.append((f"runs/s, agent `{label}`, single daemon (no etcd)", f"{throughput(single, agent, a.runs):.1f}"))
            rows.append((f"runs/s, agent `{label}`, cluster of 1 node", f"{throughput(one, agent, a.runs):.1f}"))
        single[0].stop()
        one[0].stop()
        three = [Node(os.path.join(tmp, n), ["--etcd", urls, "--node", n, "--etcd-prefix", "/three/"]) for n in "abc"]
        leader(three, [0, 1, 2])
        for agent, label in ((["true"], "true"), (["sleep", "0.2"], "sleep 0.2")):
            rows.append((f"runs/s, agent `{label}`, cluster of 3 nodes", f"{throughput(three, agent, a.runs):.1f}"))
        late = lateness(three, a.lateness_seconds, tmp)
        p99 = late[min(len(late) - 1, int(len(late) * 0.99))]
        rows.append(("cron lateness, 3 nodes (scheduled second -> agent exec)",
                     f"n={len(late)} median {statistics.median(late):.1f} ms, p99 {p99:.1f} ms, max {late[-1]:.1f} ms"))
        for n in three:
            n.stop()
        fos = [failover(urls, tmp, k) for k in range(a.failovers)]
        rows.append(("failover (kill -9 of the leader -> first slot of the new one)",
                     f"n={len(fos)} " + ", ".join(f"{f:.1f} s" for f in fos)))
    finally:
        for p in etcd:
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    w = max(len(r[0]) for r in rows)
    print(f"{'figure'.ljust(w)}  value")
    for k, v in rows:
        print(f"{k.ljust(w)}  {v}")


if __name__ == "__main__":
    main()
