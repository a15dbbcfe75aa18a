#!/usr/bin/env python3
"""One command for the daemon's figures: prints a table (median and worst of several runs,
the target, whether it is met).

    cargo build --release
    python3 contrib/bench/run.py            # our own figures: ~10 minutes on 2 cores
    python3 contrib/bench/run.py --quick    # shorter windows, fewer repeats (~3 minutes)
    python3 contrib/bench/run.py --peers    # issue 11's table: each figure next to its peer,
                                            # measured in turns in one run, as a ratio (~8 min)
    python3 contrib/bench/run.py --peers --all   # both tables
    python3 contrib/bench/run.py --http     # only the API and webhook intake figures
    python3 contrib/bench/run.py --lateness # only cron lateness (p50, p99, max; 60 s, 20 with --quick)
    BOG_BIN=/other/build/bog-agents-daemon python3 contrib/bench/run.py --http   # another build

--peers compares with Debian's `webhook` (adnanh/webhook; apt-get install webhook) on signed
webhook intake and with the Python bog-agents-daemon from PyPI (installed into a temp venv;
BOG_PY_WHEEL=path/to/wheel to use another, BOG_PY_VENV=dir
to reuse a venv that has it) on GET /jobs and idle RSS. Ours and the peer are
measured in alternation (ours, peer, ours, peer, ...), so a noisy machine moves both alike;
absolute figures vary by +-30 % from run to run here, ratios much less. Every wrk window
starts on an idle machine (under 15 % busy): adnanh/webhook answers 200 before it runs its
command and runs the backlog for seconds after its window, which would otherwise land in
ours (the longest such wait is printed).

Needs wrk (apt-get install wrk) for the HTTP figures. Not part of the test suite.
"""
import argparse, hashlib, hmac, json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("BOG_BIN") or os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release", "bog-agents-daemon")
SECRET = "bench-secret"
ROWS = []
PEER_ROWS = []


def row(figure, values, unit, target="", met=None, peer=None, note=""):
    vals = sorted(values)
    med = statistics.median(vals) if vals else float("nan")
    worst = vals[-1] if unit not in ("req/s",) else vals[0]
    ratio = f"{med / peer:.2f}x" if peer else ""
    m = "" if met is None else ("yes" if met(med, worst) else "NO")
    ROWS.append((figure, f"{med:,.1f} {unit}", f"{worst:,.1f}", target, m, f"{peer:,.1f}" if peer else "", ratio, note))
    print(f"  {figure}: median {med:,.1f} {unit}, worst {worst:,.1f} {note}", flush=True)


def peer_row(figure, ours, peer, unit, goal, met, peer_name, note=""):
    """One line of the side-by-side table: medians, ours/peer, the goal and whether it holds."""
    o = statistics.median(ours) if ours else float("nan")
    p = statistics.median(peer) if peer else None
    ratio = o / p if p else None
    ok = "" if met is None else ("yes" if met(o, ratio) else "NO")
    spread = f"{min(ours):,.1f}-{max(ours):,.1f}" if len(ours) > 1 else ""
    PEER_ROWS.append((figure, f"{o:,.1f} {unit}", f"{p:,.1f} {unit}" if p is not None else "n/a",
                      f"{ratio:.3g}x" if ratio is not None else "", goal, ok,
                      f"peer: {peer_name}" + (f"; ours ranged {spread}" if spread else "") + (f"; {note}" if note else "")))
    print(f"  {figure}: ours {o:,.1f} {unit}, peer {PEER_ROWS[-1][2]}, ours/peer {PEER_ROWS[-1][3] or '-'}; {note}", flush=True)


def rss_parts(pid):
    """(RSS, anonymous, file-backed) in MiB, from /proc/PID/smaps_rollup."""
    f = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        p = line.split()
        if len(p) == 3 and p[2] == "kB":
            f[p[0].rstrip(":")] = int(p[1]) / 1024
    return f.get("Rss", 0), f.get("Anonymous", 0), f.get("Rss", 0) - f.get("Anonymous", 0)


def proc_kib(pid, field="VmRSS:"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def cpu_ms(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) * 1000 / os.sysconf("SC_CLK_TCK")


class Daemon:
    def __init__(self, tmp, jobs=0, extra=(), env=None, cron_only=False, wrap=()):
        self.data = os.path.join(tmp, f"d{time.time_ns()}")
        os.makedirs(os.path.join(self.data, "jobs"))
        write_jobs(self.data, jobs, cron_only)
        self.t0 = time.time()
        self.p = subprocess.Popen([*wrap, BIN, "run", "--data-dir", self.data, "--port", "0", *extra],
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


def write_jobs(data, n, cron_only=False):
    """Job files as `job add` writes them (the daemon validates them at start)."""
    for i in range(n):
        jid = f"job_{i:012x}"
        trig = ({"type": "cron", "cron": f"{i % 60} {i % 24} * * *"} if i % 2 or cron_only
                else {"type": "interval", "seconds": 3600 + i})
        job = {"id": jid, "name": f"j{i}", "prompt": "p", "agent": {"command": ["true"], "prompt_via": "arg"},
               "triggers": [trig], "created_at": "2026-01-01T00:00:00.000Z"}
        with open(os.path.join(data, "jobs", f"{jid}.json"), "w") as f:
            json.dump(job, f)


def busy_fraction(interval=0.25):
    """Share of all CPUs' time spent busy over `interval` (None where /proc/stat is missing)."""
    def sample():
        with open("/proc/stat") as f:
            v = list(map(int, f.readline().split()[1:]))
        return sum(v), v[3] + v[4]
    try:
        a = sample()
        time.sleep(interval)
        b = sample()
    except OSError:
        return None
    return 1 - (b[1] - a[1]) / max(1, b[0] - a[0])


IDLE_WAITS = []


def wait_idle(limit=60):
    """Waits until the machine is idle (under 15 % busy twice in a row), at most `limit` s.
    adnanh/webhook answers a delivery before it runs its command, and goes on running the
    commands it accepted for seconds after the load stops: without this wait, that work
    lands in the next window, whoever's it is."""
    t0 = time.time()
    quiet = 0
    while time.time() - t0 < limit and quiet < 2:
        b = busy_fraction()
        if b is None:
            return
        quiet = quiet + 1 if b < 0.15 else 0
    IDLE_WAITS.append(time.time() - t0)


def wrk(url, seconds, script=None, headers=()):
    wait_idle()
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
    late, how = cron_lateness(20 if a.quick else 60)
    p99 = late[min(len(late) - 1, int(len(late) * 0.99))]
    row(f"cron lateness p50 (n={len(late)}, {how})", [statistics.median(late)], "ms", "", None)
    row("cron lateness p99", [p99], "ms", "<= 20 ms", lambda med, w: med <= 20)
    row("cron lateness max", [late[-1]], "ms", "<= 100 ms", lambda med, w: med <= 100)


STAMP_C = r"""#include <stdio.h>
#include <time.h>
int main(int argc, char **argv) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    FILE *f = argc > 1 ? fopen(argv[1], "a") : NULL;
    if (!f) return 1;
    fprintf(f, "%ld.%09ld\n", (long)t.tv_sec, t.tv_nsec);
    return fclose(f) != 0;
}
"""


def stamper():
    """An agent that reads the clock as its first instruction: a static C program when a C
    compiler is at hand (cc is, wherever Rust links), else `sh -c date` (adds ~2 ms: two
    execs). Returns (argv prefix, label)."""
    src = os.path.join(TMP, "stamp.c")
    exe = os.path.join(TMP, "stamp")
    with open(src, "w") as f:
        f.write(STAMP_C)
    for flags in (["-static"], []):
        if shutil.which("cc") and subprocess.run(["cc", "-O2", *flags, "-o", exe, src], capture_output=True).returncode == 0:
            return [exe], "static C stamper" if flags else "C stamper"
    return None, "sh -c date"


def cron_lateness(window):
    """Lateness in ms (sorted) of 4 every-second cron jobs over `window` seconds: the instant
    the agent process reads its own clock minus the scheduled second; and how the agent
    read it."""
    d = Daemon(TMP, 0)
    out = os.path.join(TMP, f"late{time.time_ns()}")
    os.makedirs(out)
    stamp, label = stamper()
    for i in range(4):
        cmd = stamp + [f"{out}/{i}"] if stamp else ["sh", "-c", f"date +%s.%N >> {out}/{i}"]
        d.api("POST", "/jobs", {"name": f"sec{i}", "prompt": "p", "history": 5, "agent": {"command": cmd},
                                "triggers": [{"type": "cron", "cron": "* * * * * *", "timezone": "UTC"}]})
    time.sleep(window + 1)
    for i in range(4):
        d.api("DELETE", f"/jobs/sec{i}")
    d.stop()
    late = []
    for i in range(4):
        if os.path.exists(f"{out}/{i}"):
            late += [(float(x) - int(float(x))) * 1000 for x in open(f"{out}/{i}").read().split()]
    return sorted(late), label


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


def adnanh_start():
    """Starts Debian's `webhook` (adnanh) with one payload-hmac-sha256 hook; (process, port)
    or None."""
    if not shutil.which("webhook"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "webhook"], capture_output=True)
    if not shutil.which("webhook"):
        return None
    hooks = os.path.join(TMP, "hooks.json")
    json.dump([{"id": "bench", "execute-command": "/bin/true", "trigger-rule": {"match": {
        "type": "payload-hmac-sha256", "secret": SECRET, "parameter": {"source": "header", "name": "X-Hub-Signature-256"}}}}],
        open(hooks, "w"))
    port = free_port()
    p = subprocess.Popen(["webhook", "-hooks", hooks, "-port", str(port), "-ip", "127.0.0.1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    return p, port


def webhook_scripts(content_type=False):
    """wrk scripts posting the same 1.5 KiB body with a valid and with a bad signature."""
    body = json.dumps({"pad": "x" * 1500}).encode()
    good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    extra = {"Content-Type": "application/json"} if content_type else {}
    return (lua_post("/hooks/bench", body, {"X-Hub-Signature-256": good, **extra}),
            lua_post("/hooks/bench", body, {"X-Hub-Signature-256": "sha256=" + "0" * 64, **extra}))


def free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PyDaemon:
    """The Python bog-agents-daemon from PyPI, in a temp venv and its own HOME."""
    venv = None

    def __init__(self):
        if PyDaemon.venv is None and os.path.exists(os.path.join(os.environ.get("BOG_PY_VENV", "/nonexistent"), "bin", "bog-agents-daemon")):
            PyDaemon.venv = os.environ["BOG_PY_VENV"]
        if PyDaemon.venv is None:
            venv = os.path.join(TMP, "pyvenv")
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
            r = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q",
                                os.environ.get("BOG_PY_WHEEL", "bog-agents-daemon")], capture_output=True, text=True)
            if r.returncode != 0:
                raise OSError(f"pip install failed: {r.stderr.strip()[-300:]}")
            PyDaemon.venv = venv
        exe = os.path.join(PyDaemon.venv, "bin", "bog-agents-daemon")
        home = os.path.join(TMP, f"pyhome{time.time_ns()}")
        os.makedirs(home)
        self.port = free_port()
        self.p = subprocess.Popen([exe, "run", "--port", str(self.port)], env=dict(os.environ, HOME=home),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tokfile = os.path.join(home, ".bog-agents", "daemon", "token")
        t0 = time.time()
        while time.time() - t0 < 60:
            try:
                self.token = open(tokfile).read().strip()
                self.api("GET", "/health")
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise OSError("the Python daemon did not answer /health within 60 s")

    def api(self, method, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     headers={"X-Daemon-Token": self.token, "Content-Type": "application/json"},
                                     data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(req) as r:
            return r.status

    def add_jobs(self, start, end, cron_only=False):
        for i in range(start, end):
            trig = ({"type": "cron", "cron": f"{i % 60} {i % 24} * * *"} if i % 2 or cron_only
                    else {"type": "interval", "interval_seconds": 3600 + i})
            self.api("POST", "/jobs", {"name": f"j{i}", "prompt": "p", "triggers": [trig]})

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def bench_peers(a):
    """Issue 11's table: each figure next to its peer, measured in turns, as ours/peer."""
    reps = 2 if a.quick else 3
    secs = 3 if a.quick else 10
    settle = 3 if a.quick else 10
    py = None
    try:
        py = PyDaemon()
    except OSError as e:
        print(f"  Python daemon not measured: {e}", flush=True)

    print("GET /jobs with 100 cron jobs: ours vs the Python daemon", flush=True)
    d = Daemon(TMP, 100, cron_only=True)
    if py:
        py.add_jobs(0, 100, cron_only=True)
        time.sleep(2)
    ours, peer = [], []
    for _ in range(reps):
        ours.append(wrk(f"http://127.0.0.1:{d.port}/jobs", secs, headers=[f"Authorization: Bearer {d.token}"])[0])
        if py:
            peer.append(wrk(f"http://127.0.0.1:{py.port}/jobs", secs, headers=[f"X-Daemon-Token: {py.token}"])[0])
    size = len(urllib.request.urlopen(urllib.request.Request(
        f"http://127.0.0.1:{d.port}/jobs", headers={"Authorization": f"Bearer {d.token}"})).read())
    d.stop()
    peer_row("GET /jobs, 100 cron jobs", ours, peer, "req/s", ">= 100x", lambda o, r: r is not None and r >= 100,
             "Python bog-agents-daemon", f"our body {size / 1000:.0f} kB")

    print("signed webhook intake: ours vs adnanh/webhook", flush=True)
    d = Daemon(TMP, 0)
    d.api("POST", "/jobs", {"name": "wh", "prompt": "p", "agent": {"command": ["sleep", "3600"]}, "overlap": "skip",
                            "triggers": [{"type": "webhook", "path": "/hooks/bench", "secret_env": "BENCH_SECRET"}]})
    valid, bad = webhook_scripts()
    adn = adnanh_start()
    avalid, abad = webhook_scripts(content_type=True)
    for label, ours_script, peer_script, goal in [
            ("signed webhook, valid -> 202", valid, avalid, 1.5),
            ("signed webhook, bad signature -> 401", bad, abad, 1.5)]:
        ours, peer, p99 = [], [], []
        for _ in range(reps):
            r = wrk(f"http://127.0.0.1:{d.port}/hooks/bench", secs, ours_script)
            ours.append(r[0])
            p99.append(r[1])
            if adn:
                peer.append(wrk(f"http://127.0.0.1:{adn[1]}/hooks/bench", secs, peer_script)[0])
        peer_row(label, ours, peer, "req/s", f">= {goal}x", lambda o, r, g=goal: r is not None and r >= g,
                 "adnanh/webhook (Debian), runs /bin/true per valid request", f"our p99 {statistics.median(p99):.2f} ms")
    d.stop()
    if adn:
        adn[0].terminate()
        adn[0].wait()

    print("idle RSS: ours vs the Python daemon", flush=True)
    rss0, rss1000, parts = [], [], []
    for _ in range(reps):
        d = Daemon(TMP, 0)
        time.sleep(settle)
        rss0.append(proc_kib(d.p.pid) / 1024)
        d.stop()
        d = Daemon(TMP, 1000)
        time.sleep(settle)
        rss1000.append(proc_kib(d.p.pid) / 1024)
        parts.append(rss_parts(d.p.pid))
        d.stop()
    peer_rss0, peer_rss1000 = [], []
    if py:
        # The Python daemon at 0 jobs: a fresh one; at 1,000: the one above, 900 jobs more.
        fresh = PyDaemon()
        time.sleep(settle)
        peer_rss0.append(proc_kib(fresh.p.pid) / 1024)
        fresh.stop()
        py.add_jobs(100, 1000)
        time.sleep(settle)
        peer_rss1000.append(proc_kib(py.p.pid) / 1024)
    peer_row("idle RSS, 0 jobs", rss0, peer_rss0, "MiB", "<= 5 MiB", lambda o, r: o <= 5, "Python bog-agents-daemon")
    anon = statistics.median([p[1] for p in parts])
    filed = statistics.median([p[2] for p in parts])
    peer_row("idle RSS, 1,000 jobs", rss1000, peer_rss1000, "MiB", "<= 8 MiB", lambda o, r: o <= 8,
             "Python bog-agents-daemon", f"ours: {anon:.1f} MiB anonymous + {filed:.1f} MiB file-backed (binary, libc)")
    if py:
        py.stop()

    print("cron lateness", flush=True)
    late, how = cron_lateness(20 if a.quick else 60)
    p99 = late[min(len(late) - 1, int(len(late) * 0.99))]
    peer_row("cron lateness p99 (scheduled second -> agent's clock)", [p99], [], "ms", "<= 5 ms", lambda o, r: o <= 5,
             "Python daemon: ticks every 30 s by design, not measured",
             f"n={len(late)}, p50 {statistics.median(late):.1f} ms, max {late[-1]:.1f} ms; agent: {how}")


def bench_own(a):
    """Our own figures against their targets (no peers)."""
    rv, rb, rss_burst, ours = bench_ours(a)
    row("webhook intake, valid signature (1.5 KiB) -> 202", [r[0] for r in rv], "req/s", ">= 5,000/s",
        lambda med, w: med >= 5000, None, f"p99 {statistics.median([r[1] for r in rv]):.2f} ms; RSS after burst {rss_burst:.1f} MiB (<= 32)")
    row("webhook intake, bad signature -> 401", [r[0] for r in rb], "req/s", "", None, None,
        "adnanh/webhook side by side: --peers")
    if not a.http:
        print("trigger latency", flush=True)
        tr = subprocess.run([sys.executable, os.path.join(ROOT, "contrib/bench/triggers.py"), "-n", "20" if a.quick else "50"],
                            capture_output=True, text=True, env=dict(os.environ, BOG_BIN=BIN))
        for line in tr.stdout.splitlines():
            m = re.match(r"(.+?)\s+n=(\d+)\s+median\s+([\d.]+) ms\s+worst\s+([\d.]+) ms", line)
            if m:
                ROWS.append((m.group(1).strip(), f"{float(m.group(3)):.1f} ms", f"{float(m.group(4)):.1f}", "report", "", "", "", f"n={m.group(2)}"))


def print_table(heads, rows):
    widths = [max(len(str(r[i])) for r in rows + [heads]) for i in range(len(heads))]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(heads, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")


def main():
    global TMP
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--peers", action="store_true")
    ap.add_argument("--http", action="store_true", help="only the HTTP figures (API and webhook intake)")
    ap.add_argument("--all", action="store_true", help="with --peers: our own figures too")
    ap.add_argument("--lateness", action="store_true", help="only cron lateness (4 every-second jobs)")
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"build first: cargo build --release ({BIN} missing)")
    if not shutil.which("wrk") and not a.lateness:
        sys.exit("wrk is needed: apt-get install wrk")
    # Data dirs under $BENCH_DIR, by default ~/.cache/bog-agents-bench: a place like a
    # daemon's own data dir (~/.bog-agents/daemon), not /tmp. On ext4 without a journal (as
    # on this project's machines) a new file in a directory whose block group lost many
    # files in the last minutes costs far more (the inode allocator skips inodes deleted
    # less than 1-5 minutes ago): 6,200 against 116,000 creates/s measured here, /tmp
    # against a quiet directory. Leave 5 minutes between two runs for the same reason.
    base = os.environ.get("BENCH_DIR") or os.path.expanduser("~/.cache/bog-agents-bench")
    os.makedirs(base, exist_ok=True)
    TMP = tempfile.mkdtemp(prefix="bogbench", dir=base)
    if a.lateness:
        try:
            late, how = cron_lateness(20 if a.quick else 60)
        finally:
            shutil.rmtree(TMP, ignore_errors=True)
        p99 = late[min(len(late) - 1, int(len(late) * 0.99))]
        print(f"cron lateness (scheduled second -> agent's clock; agent: {how}): n={len(late)}, "
              f"p50 {statistics.median(late):.2f} ms, p99 {p99:.2f} ms, max {late[-1]:.2f} ms; "
              f"load average {os.getloadavg()[0]:.2f}")
        return
    try:
        if a.peers:
            bench_peers(a)
        if not a.peers or a.all or a.http:
            bench_own(a)
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    if ROWS:
        print_table(("figure", "median", "worst", "target", "met", "peer", "ours/peer", "note"), ROWS)
    if PEER_ROWS:
        print_table(("figure", "ours", "peer", "ours/peer", "goal", "met", "note"), PEER_ROWS)
    if IDLE_WAITS:
        print(f"waited for an idle machine before each of {len(IDLE_WAITS)} wrk windows: "
              f"longest {max(IDLE_WAITS):.1f} s, median {statistics.median(IDLE_WAITS):.1f} s")


if __name__ == "__main__":
    main()
