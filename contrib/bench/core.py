#!/usr/bin/env python3
"""Core-daemon figures: idle RSS and CPU with N jobs, and cron lateness.

Usage: python3 contrib/bench/core.py [--jobs 1000] [--idle-seconds 30] [--lateness-seconds 30]
Builds nothing: run `cargo build --release` first. Prints a table; not part of the tests.

Lateness = the instant the agent process itself reads the clock minus the scheduled
second, for 6-field every-second cron jobs (`* * * * * *`).
"""
import argparse, json, os, shutil, signal, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("BOG_BIN") or os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release", "bog-agents-daemon")


def start(data):
    p = subprocess.Popen([BIN, "run", "--data-dir", data, "--port", "0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            info = json.load(open(os.path.join(data, "daemon.lock")))
            if info["pid"] == p.pid:
                token = open(os.path.join(data, ".token")).read().strip()
                return p, info["port"], token
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    sys.exit("daemon did not start")


def call(port, token, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req) as r:
        data = r.read()
        return json.loads(data) if data else None


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--idle-seconds", type=int, default=30)
    ap.add_argument("--lateness-seconds", type=int, default=30)
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    tmp = tempfile.mkdtemp(prefix="bogbench")
    rows = []
    try:
        data = os.path.join(tmp, "data")
        p, port, token = start(data)
        time.sleep(2)
        rows.append(("idle RSS, 0 jobs", f"{rss_kib(p.pid) / 1024:.1f} MiB"))
        for i in range(a.jobs):
            trig = ({"type": "cron", "cron": f"{i % 60} {i % 24} * * *"} if i % 2
                    else {"type": "interval", "seconds": 3600 + i})
            call(port, token, "POST", "/jobs", {"name": f"j{i}", "prompt": "p",
                 "agent": {"command": ["true"]}, "triggers": [trig]})
        time.sleep(10)
        rows.append((f"idle RSS, {a.jobs} jobs", f"{rss_kib(p.pid) / 1024:.1f} MiB"))
        hz = os.sysconf("SC_CLK_TCK")
        c0 = cpu_ticks(p.pid)
        time.sleep(a.idle_seconds)
        c1 = cpu_ticks(p.pid)
        rows.append((f"idle CPU, {a.jobs} jobs", f"{(c1 - c0) * 1000 / hz:.0f} ms over {a.idle_seconds} s"))

        out = os.path.join(tmp, "late")
        os.mkdir(out)
        for i in range(4):
            call(port, token, "POST", "/jobs", {"name": f"sec{i}", "prompt": "p",
                 "agent": {"command": ["sh", "-c", f"date +%s.%N >> {out}/{i}; echo $BOG_EVENT_FILE >/dev/null"]},
                 "triggers": [{"type": "cron", "cron": "* * * * * *", "timezone": "UTC"}],
                 "history": 5})
        time.sleep(a.lateness_seconds + 1)
        for i in range(4):
            call(port, token, "DELETE", f"/jobs/sec{i}")
        late = []
        for i in range(4):
            for line in open(f"{out}/{i}"):
                t = float(line)
                late.append((t - int(t)) * 1000)  # scheduled on the whole second
        late.sort()
        p99 = late[min(len(late) - 1, int(len(late) * 0.99))]
        rows.append(("cron lateness (scheduled second -> agent exec)",
                     f"n={len(late)} median {statistics.median(late):.1f} ms, p99 {p99:.1f} ms, max {late[-1]:.1f} ms"))
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    w = max(len(r[0]) for r in rows)
    print(f"{'figure'.ljust(w)}  value")
    for k, v in rows:
        print(f"{k.ljust(w)}  {v}")


if __name__ == "__main__":
    main()
