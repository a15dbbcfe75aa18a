#!/usr/bin/env python3
"""One command for the figures of issue 6: prints a table (median and worst of several runs,
the target, whether it is met, and the ratio to a peer where one was measured).

    cargo build --release
    python3 contrib/bench/run.py            # full: ~10 minutes on 2 cores
    python3 contrib/bench/run.py --quick    # shorter windows, fewer repeats (~3 minutes)
    python3 contrib/bench/run.py --peers    # also Debian's `webhook` (adnanh) and the Python
                                            # bog-agents-daemon from PyPI, side by side
    python3 contrib/bench/run.py --http     # only the API and webhook intake figures
    BOG_BIN=/other/build/bog-agents-daemon python3 contrib/bench/run.py --http   # another build

Needs wrk (apt-get install wrk) for the HTTP figures; --peers installs the peers into a temp
dir / with apt. Not part of the test suite.
"""
import argparse, hashlib, hmac, json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("BOG_BIN") or os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release", "bog-agents-daemon")
SECRET = "bench-secret"
ROWS = []


def row(figure, values, unit, target="", met=None, peer=None, note=""):
    vals = sorted(values)
    med = statistics.median(vals) if vals else float("nan")
    worst = vals[-1] if unit not in ("req/s",) else vals[0]
    ratio = f"{med / peer:.2f}x" if peer else ""
    m = "" if met is None else ("yes" if met(med, worst) else "NO")
    ROWS.append((figure, f"{med:,.1f} {unit}", f"{worst:,.1f}", target, m, f"{peer:,.1f}" if peer else "", ratio, note))
    print(f"  {figure}: median {med:,.1f} {unit}, worst {worst:,.1f} {note}", flush=True)


def proc_kib(pid, field="VmRSS:"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def cpu_ms(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) * 1000 / os.sysconf("SC_CLK_TCK")


class Daemon:
    def __init__(self, tmp, jobs=0, extra=(), env=None):
        self.data = os.path.join(tmp, f"d{time.time_ns()}")
        os.makedirs(os.path.join(self.data, "jobs"))
        write_jobs(self.data, jobs)
        self.t0 = time.time()
        self.p = subprocess.Popen([BIN, "run", "--data-dir", self.data, "--port", "0", *extra],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=dict(os.environ, BENCH_SECRET=SECRET, **(env or {})))
        while True:
            try:
                info = json.load(open(os.path.join(self.data, "daemon.lock")))
                if info["pid"] == self.p.pid:
                    self.port = info["port"]
                    break
            except (OSError, ValueError, KeyError):
                pass
            if time.time() - self.t0 > 60:
                sys.exit("daemon did not start")
            time.sleep(0.002)
        self.token = open(os.path.join(self.data, ".token")).read().strip()
        while True:
            try:
                self.api("GET", "/health")
                break
            except OSError:
                time.sleep(0.002)
        self.startup = time.time() - self.t0

    def api(self, method, path, body=None, headers=None):
        h = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method, headers=h)) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(timeout=60)


def write_jobs(data, n):
    """Job files as `job add` writes them (the daemon validates them at start)."""
    for i in range(n):
        jid = f"job_{i:012x}"
        trig = ({"type": "cron", "cron": f"{i % 60} {i % 24} * * *"} if i % 2
                else {"type": "interval", "seconds": 3600 + i})
        job = {"id": jid, "name": f"j{i}", "prompt": "p", "agent": {"command": ["true"], "prompt_via": "arg"},
               "triggers": [trig], "created_at": "2026-01-01T00:00:00.000Z"}
        with open(os.path.join(data, "jobs", f"{jid}.json"), "w") as f:
            json.dump(job, f)


def wrk(url, seconds, script=None, headers=()):
    cmd = ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [url], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)] if m else float("nan")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p99, int(non2xx.group(1)) if non2xx else 0


def lua_post(path, body, headers, unique=False):
    p = os.path.join(TMP, f"w{time.time_ns()}.lua")
    with open(p, "w") as f:
        f.write('wrk.method = "POST"\n')
        for k, v in headers.items():
            f.write(f'wrk.headers["{k}"] = "{v}"\n')
        if unique:
            f.write('local n = 0\nrequest = function()\n  n = n + 1\n'
                    '  local b = string.format(\'{"name":"p%d-%d","prompt":"p","agent":{"command":["true"]},"triggers":[{"type":"cron","cron":"0 0 1 1 *"}]}\', math.random(1,1000000000), n)\n'
                    '  return wrk.format(nil, nil, nil, b)\nend\n')
        else:
            with open(p + ".body", "wb") as b:
                b.write(body)
            f.write(f'local fh = io.open("{p}.body", "rb"); wrk.body = fh:read("*a"); fh:close()\n')
    return p


def bench_ours(a):
    reps = 2 if a.quick else 3
    if not a.http:
        bench_idle(a, reps)
    return bench_http(a, reps)


def bench_idle(a, reps):
    settle = 3 if a.quick else 10
    print("idle RSS", flush=True)
    for n, target in [(0, 4096), (1000, 8192), (10000, None)]:
        vals = []
        for _ in range(reps):
            d = Daemon(TMP, n)
            time.sleep(settle)
            vals.append(proc_kib(d.p.pid) / 1024)
            d.stop()
        row(f"idle RSS, {n:,} jobs", vals, "MiB", f"<= {target / 1024:.0f} MiB" if target else "",
            (lambda med, w, t=target: w <= t / 1024) if target else None)
    window = 20 if a.quick else 60
    print(f"idle CPU and wakeups over {window} s with 1,000 jobs", flush=True)
    cpu, wake, replan = [], [], []
    for _ in range(reps):
        d = Daemon(TMP, 1000)
        time.sleep(2)
        m0, c0 = d.api("GET", "/metrics"), cpu_ms(d.p.pid)
        time.sleep(window)
        m1, c1 = d.api("GET", "/metrics"), cpu_ms(d.p.pid)
        cpu.append((c1 - c0) * 60 / window)
        wake.append(m1["scheduler_wakeups_total"] - m0["scheduler_wakeups_total"])
        replan.append(m1["scheduler_replans_total"] - m0["scheduler_replans_total"] - 0)
        d.stop()
    row("idle CPU, 1,000 jobs", cpu, "ms/min", "<= 10 ms/min", lambda med, w: w <= 10)
    row(f"scheduler wakeups in {window} s idle (no deadline due)", wake, "", "0 (only at deadlines)", lambda med, w: w == 0,
        note=f"+ wall-clock re-checks: {statistics.median(replan):.0f} (one a minute by design)")
    print("cron lateness", flush=True)
    lat_window = 20 if a.quick else 60
    d = Daemon(TMP, 0)
    out = os.path.join(TMP, "late")
    os.makedirs(out, exist_ok=True)
    for i in range(4):
        d.api("POST", "/jobs", {"name": f"sec{i}", "prompt": "p", "history": 5,
                                "agent": {"command": ["sh", "-c", f"date +%s.%N >> {out}/{i}"]},
                                "triggers": [{"type": "cron", "cron": "* * * * * *", "timezone": "UTC"}]})
    time.sleep(lat_window + 1)
    for i in range(4):
        d.api("DELETE", f"/jobs/sec{i}")
    d.stop()
    late = sorted((float(x) - int(float(x))) * 1000 for i in range(4) for x in open(f"{out}/{i}").read().split())
    p99 = late[min(len(late) - 1, int(len(late) * 0.99))]
    row(f"cron lateness p50 (n={len(late)})", [statistics.median(late)], "ms", "", None)
    row("cron lateness p99", [p99], "ms", "<= 20 ms", lambda med, w: med <= 20)
    row("cron lateness max", [late[-1]], "ms", "<= 100 ms", lambda med, w: med <= 100)


def bench_http(a, reps):
    secs = 3 if a.quick else 10
    print("API throughput (wrk, 16 connections)", flush=True)
    d = Daemon(TMP, 100)
    auth = f"Authorization: Bearer {d.token}"
    for name, path in [("GET /health", "/health"), ("GET /jobs (100 jobs)", "/jobs")]:
        rs = [wrk(f"http://127.0.0.1:{d.port}{path}", secs, headers=[auth]) for _ in range(reps)]
        row(f"{name} req/s", [r[0] for r in rs], "req/s", "thousands/s", lambda med, w: med >= 1000,
            note=f"p99 {statistics.median([r[1] for r in rs]):.2f} ms")
    script = lua_post("/jobs", None, {"Authorization": f"Bearer {d.token}", "Content-Type": "application/json"}, unique=True)
    rs = [wrk(f"http://127.0.0.1:{d.port}/jobs", secs, script) for _ in range(reps)]
    row("POST /jobs (fsynced) req/s", [r[0] for r in rs], "req/s", "", None, note=f"p99 {statistics.median([r[1] for r in rs]):.2f} ms")
    d.stop()
    print("webhook intake", flush=True)
    d = Daemon(TMP, 0)
    d.api("POST", "/jobs", {"name": "wh", "prompt": "p", "agent": {"command": ["sleep", "3600"]}, "overlap": "skip",
                            "triggers": [{"type": "webhook", "path": "/hooks/bench", "secret_env": "BENCH_SECRET"}]})
    body = json.dumps({"pad": "x" * 1500}).encode()
    good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    valid = lua_post("/hooks/bench", body, {"X-Hub-Signature-256": good})
    bad = lua_post("/hooks/bench", body, {"X-Hub-Signature-256": "sha256=" + "0" * 64})
    rv = [wrk(f"http://127.0.0.1:{d.port}/hooks/bench", secs, valid) for _ in range(reps)]
    rss_burst = proc_kib(d.p.pid) / 1024
    rb = [wrk(f"http://127.0.0.1:{d.port}/hooks/bench", secs, bad) for _ in range(reps)]
    d.stop()
    ours = {"valid": statistics.median([r[0] for r in rv]), "bad": statistics.median([r[0] for r in rb])}
    if not a.http:
        print("startup with 10,000 job files", flush=True)
        st = []
        for _ in range(reps):
            d = Daemon(TMP, 10000)
            st.append(d.startup * 1000)
            d.stop()
        row("startup, 10,000 job files (exec -> /health 200)", st, "ms", "<= 500 ms", lambda med, w: w <= 500)
    return rv, rb, rss_burst, ours


def adnanh_webhook(secs, reps):
    if not shutil.which("webhook"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "webhook"], capture_output=True)
    if not shutil.which("webhook"):
        return None
    hooks = os.path.join(TMP, "hooks.json")
    json.dump([{"id": "bench", "execute-command": "/bin/true", "trigger-rule": {"match": {
        "type": "payload-hmac-sha256", "secret": SECRET, "parameter": {"source": "header", "name": "X-Hub-Signature-256"}}}}],
        open(hooks, "w"))
    port = 19000 + os.getpid() % 1000
    p = subprocess.Popen(["webhook", "-hooks", hooks, "-port", str(port), "-ip", "127.0.0.1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    body = json.dumps({"pad": "x" * 1500}).encode()
    good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    valid = lua_post("/hooks/bench", body, {"X-Hub-Signature-256": good, "Content-Type": "application/json"})
    bad = lua_post("/hooks/bench", body, {"X-Hub-Signature-256": "sha256=" + "0" * 64, "Content-Type": "application/json"})
    rv = [wrk(f"http://127.0.0.1:{port}/hooks/bench", secs, valid) for _ in range(reps)]
    rb = [wrk(f"http://127.0.0.1:{port}/hooks/bench", secs, bad) for _ in range(reps)]
    p.terminate()
    p.wait()
    return statistics.median([r[0] for r in rv]), statistics.median([r[0] for r in rb])


def python_daemon(a):
    venv = os.path.join(TMP, "pyvenv")
    wheel = os.environ.get("BOG_PY_WHEEL", "bog-agents-daemon")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    r = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", wheel], capture_output=True, text=True)
    exe = os.path.join(venv, "bin", "bog-agents-daemon")
    if r.returncode != 0 or not os.path.exists(exe):
        return None
    home = os.path.join(TMP, "pyhome")
    os.makedirs(home)
    port = 17391
    p = subprocess.Popen([exe, "run", "--port", str(port)], env=dict(os.environ, HOME=home),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tokfile = os.path.join(home, ".bog-agents", "daemon", "token")
    t0 = time.time()
    while time.time() - t0 < 60:
        try:
            tok = open(tokfile).read().strip()
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/health", headers={"X-Daemon-Token": tok}))
            break
        except OSError:
            time.sleep(0.1)
    else:
        p.terminate()
        return None

    def api(method, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, headers={"X-Daemon-Token": tok, "Content-Type": "application/json"},
                                     data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(req) as r:
            return r.status
    res = {}
    time.sleep(3 if a.quick else 10)
    res["rss0"] = proc_kib(p.pid) / 1024
    for i in range(1000):
        trig = {"type": "cron", "cron": f"{i % 60} {i % 24} * * *"} if i % 2 else {"type": "interval", "interval_seconds": 3600 + i}
        try:
            api("POST", "/jobs", {"name": f"j{i}", "prompt": "p", "triggers": [trig]})
        except OSError:
            pass
    time.sleep(3 if a.quick else 10)
    res["rss1000"] = proc_kib(p.pid) / 1024
    window = 20 if a.quick else 60
    c0 = cpu_ms(p.pid)
    time.sleep(window)
    res["cpu"] = (cpu_ms(p.pid) - c0) * 60 / window
    res["jobs_rps"] = wrk(f"http://127.0.0.1:{port}/jobs", 3 if a.quick else 10, headers=[f"X-Daemon-Token: {tok}"])[0]
    p.terminate()
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        res["note"] = "did not exit within 30 s of SIGTERM; killed"
        p.kill()
        p.wait()
    return res


def main():
    global TMP
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--peers", action="store_true")
    ap.add_argument("--http", action="store_true", help="only the HTTP figures (API and webhook intake)")
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"build first: cargo build --release ({BIN} missing)")
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    TMP = tempfile.mkdtemp(prefix="bogbench")
    try:
        reps = 2 if a.quick else 3
        secs = 3 if a.quick else 10
        rv, rb, rss_burst, ours = bench_ours(a)
        peer = adnanh_webhook(secs, reps) if a.peers else None
        if peer:
            print(f"  adnanh/webhook: valid {peer[0]:,.0f} req/s, bad signature {peer[1]:,.0f} req/s", flush=True)
        row("webhook intake, valid signature (1.5 KiB) -> 202", [r[0] for r in rv], "req/s", ">= 5,000/s",
            lambda med, w: med >= 5000, peer[0] if peer else None, f"p99 {statistics.median([r[1] for r in rv]):.2f} ms; RSS after burst {rss_burst:.1f} MiB (<= 32)")
        row("webhook intake, bad signature -> 401", [r[0] for r in rb], "req/s", ">= adnanh/webhook",
            (lambda med, w: med >= peer[1]) if peer else None, peer[1] if peer else None,
            "" if peer else "(peer not run: pass --peers)")
        if a.peers:
            py = python_daemon(a)
            if py:
                print(f"  python daemon: {py}", flush=True)
                ROWS.append(("Python daemon idle RSS 0 / 1,000 jobs", f"{py['rss0']:.1f} / {py['rss1000']:.1f} MiB", "", "", "", "", "", "peer, for the ratio"))
                ROWS.append(("Python daemon idle CPU, 1,000 jobs", f"{py['cpu']:.0f} ms/min", "", "", "", "", "", ""))
                ROWS.append(("Python daemon GET /jobs (1,000 jobs)", f"{py['jobs_rps']:,.0f} req/s", "", "", "", "", "", "cron lateness: its scheduler ticks every 30 s"))
            else:
                ROWS.append(("Python daemon", "not measured", "", "", "", "", "", "could not install or start it"))
        if not a.http:
            print("trigger latency", flush=True)
            tr = subprocess.run([sys.executable, os.path.join(ROOT, "contrib/bench/triggers.py"), "-n", "20" if a.quick else "50"],
                                capture_output=True, text=True, env=dict(os.environ, BOG_BIN=BIN))
            for line in tr.stdout.splitlines():
                m = re.match(r"(.+?)\s+n=(\d+)\s+median\s+([\d.]+) ms\s+worst\s+([\d.]+) ms", line)
                if m:
                    ROWS.append((m.group(1).strip(), f"{float(m.group(3)):.1f} ms", f"{float(m.group(4)):.1f}", "report", "", "", "", f"n={m.group(2)}"))
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    heads = ("figure", "median", "worst", "target", "met", "peer", "ours/peer", "note")
    widths = [max(len(str(r[i])) for r in ROWS + [heads]) for i in range(len(heads))]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(heads, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in ROWS:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")


if __name__ == "__main__":
    main()
