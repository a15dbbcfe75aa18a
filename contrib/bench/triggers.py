#!/usr/bin/env python3
"""Trigger latency: event -> agent start, median and worst of N, for file_change
(debounce 0.1 s), webhook, and git push (with the post-receive hook, and by polling).

Usage: python3 contrib/bench/triggers.py [-n 50]   (build first: cargo build --release)
The agent appends its own start time (date +%s.%N). The event time is taken just before
the file write, the HTTP request, or the start of `git push` (so the git figures include the
push itself). Set BOG_BIN or CARGO_TARGET_DIR to use another build.
"""
import argparse, hashlib, hmac, json, os, shutil, signal, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("BOG_BIN") or os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release", "bog-agents-daemon")
SECRET = "bench-secret"


def start(data, extra):
    env = dict(os.environ, BENCH_SECRET=SECRET)
    p = subprocess.Popen([BIN, "run", "--data-dir", data, "--port", "0", *extra],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    for _ in range(1000):
        try:
            info = json.load(open(os.path.join(data, "daemon.lock")))
            if info["pid"] == p.pid:
                return p, info["port"], open(os.path.join(data, ".token")).read().strip()
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    sys.exit("daemon did not start")


def api(port, token, method, path, body=None, headers=None):
    h = {"Authorization": f"Bearer {token}", **(headers or {})}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode()),
                                 headers=h)
    with urllib.request.urlopen(req) as r:
        return r.status


def agent(out):
    return {"command": ["sh", "-c", f"date +%s.%N >> {out}"]}


def wait_lines(path, n, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            lines = open(path).read().split()
            if len(lines) >= n:
                return float(lines[n - 1])
        except OSError:
            pass
        time.sleep(0.002)
    sys.exit(f"timed out waiting for run {n} in {path}")


def git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "-c", "init.defaultBranch=main", *args],
                   cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def report(name, lat):
    lat = [x * 1000 for x in lat]
    print(f"{name:<34} n={len(lat):<3} median {statistics.median(lat):7.1f} ms   worst {max(lat):7.1f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50)
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    tmp = tempfile.mkdtemp(prefix="bogtrig")
    try:
        data = os.path.join(tmp, "data")
        p, port, token = start(data, ["--git-poll-ms", "100"])
        # file_change
        root = os.path.join(tmp, "w"); os.mkdir(root)
        out = os.path.join(tmp, "fc.out")
        api(port, token, "POST", "/jobs", {"name": "fc", "prompt": "p", "agent": agent(out),
            "triggers": [{"type": "file_change", "root": root, "patterns": ["*.txt"], "debounce_seconds": 0.1}]})
        time.sleep(0.5)
        lat = []
        for i in range(1, a.n + 1):
            t0 = time.time()
            with open(os.path.join(root, f"f{i}.txt"), "w") as f:
                f.write("x")
            lat.append(wait_lines(out, i) - t0)
            time.sleep(0.05)
        report("file write -> agent (debounce 0.1s)", lat)
        # webhook
        out = os.path.join(tmp, "wh.out")
        api(port, token, "POST", "/jobs", {"name": "wh", "prompt": "p", "agent": agent(out), "overlap": "parallel",
            "triggers": [{"type": "webhook", "path": "/hooks/bench", "secret_env": "BENCH_SECRET"}]})
        lat = []
        body = b'{"x": 1}'
        sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        for i in range(1, a.n + 1):
            t0 = time.time()
            api(port, token, "POST", "/hooks/bench", body, {"X-Hub-Signature-256": sig})
            lat.append(wait_lines(out, i) - t0)
        report("webhook -> agent", lat)
        # git push, polled (100 ms) and through the hook
        for mode in ["poll 100ms", "post-receive hook"]:
            bare = os.path.join(tmp, f"r{len(mode)}.git"); work = bare + ".work"
            os.mkdir(bare); git(bare, "init", "--bare", "-q")
            git(tmp, "clone", "-q", bare, work)
            open(os.path.join(work, "f"), "w").write("0"); git(work, "add", "f"); git(work, "commit", "-qm", "0"); git(work, "push", "-q", "origin", "HEAD:main")
            out = os.path.join(tmp, f"git{len(mode)}.out")
            if mode != "poll 100ms":
                p.send_signal(signal.SIGTERM); p.wait()
                p, port, token = start(data, ["--git-poll-ms", "3600000"])
                subprocess.run([BIN, "--data-dir", data, "install-git-hook", "--repo", bare], check=True, stdout=subprocess.DEVNULL)
            api(port, token, "POST", "/jobs", {"name": f"git{len(mode)}", "prompt": "p", "agent": agent(out),
                "triggers": [{"type": "git_push", "repo": bare, "branch": "main"}]})
            time.sleep(0.5)
            lat = []
            for i in range(1, a.n + 1):
                open(os.path.join(work, "f"), "w").write(str(i)); git(work, "commit", "-qam", str(i))
                t0 = time.time()
                git(work, "push", "-q", "origin", "HEAD:main")
                lat.append(wait_lines(out, i) - t0)
            report(f"git push -> agent ({mode})", lat)
        p.send_signal(signal.SIGTERM); p.wait(timeout=60)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
