#!/usr/bin/env python3
"""Network-output figures: how long a run's dispatch takes with slack, webhook, email and
github_comment all up, and with each one down in two ways.

Usage: python3 contrib/bench/outputs.py [--bin PATH] [--repeat 5] [--skip-silent]
Needs aiosmtpd (python3 -m pip install aiosmtpd). Uses target/release, else target/debug.
Prints a table; not part of the tests.

Dispatch time = the daemon's `run.finished` log line (written after dispatch) minus the
run's `finished_at` (the agent's end). "refused": the output points at a closed port.
"silent": at a port that accepts connections and never says a word (a hung server).
"""
import argparse, asyncio, json, os, socket, subprocess, sys, tempfile, threading, time
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.endswith("/chat.postMessage"):
            code, body = 200, b'{"ok": true}'
        elif self.path.endswith("/comments"):
            code, body = 201, b'{"id": 1}'
        else:
            code, body = 204, b""
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def http_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def smtp_server():
    from aiosmtpd.smtp import SMTP

    class Sink:
        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    ready = threading.Event()
    port = []

    def run():
        async def main():
            loop = asyncio.get_running_loop()
            srv = await loop.create_server(lambda: SMTP(Sink()), host="127.0.0.1", port=0)
            port.append(srv.sockets[0].getsockname()[1])
            ready.set()
            await srv.serve_forever()
        asyncio.run(main())

    threading.Thread(target=run, daemon=True).start()
    ready.wait(10)
    return port[0]


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def silent_port(keep):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)  # the kernel completes handshakes; nobody ever reads or writes
    keep.append(s)
    return s.getsockname()[1]


def start(binary, data, env):
    err = open(os.path.join(data + ".log"), "w")
    p = subprocess.Popen([binary, "run", "--data-dir", data, "--port", "0", "--log-format", "json"],
                         stdout=subprocess.DEVNULL, stderr=err, env=env)
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


def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def outputs(http, smtp_env_prefix, down):
    def url(kind, path):
        return f"http://127.0.0.1:{down.get(kind, http)}{path}"
    return [
        {"type": "slack", "channel": "#b", "token_env": "B_SLACK", "api_url": url("slack", "/api")},
        {"type": "webhook", "url": url("webhook", "/hook"), "hmac_secret_env": "B_WH"},
        {"type": "email", "to": "b@example.com", "smtp_env_prefix": smtp_env_prefix},
        {"type": "github_comment", "repo": "o/r", "issue": 1, "token_env": "B_GH",
         "api_url": url("github_comment", "")},
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-silent", action="store_true")
    a = ap.parse_args()
    binary = a.bin or next((p for p in (os.path.join(ROOT, "target", t, "bog-agents-daemon")
                                        for t in ("release", "debug")) if os.path.exists(p)), None)
    if not binary:
        sys.exit("build first: cargo build --release")
    http, smtp = http_server(), smtp_server()
    keep = []
    refused, silent_http, silent_smtp = closed_port(), silent_port(keep), silent_port(keep)
    env = dict(os.environ, B_SLACK="xoxb-bench-token", B_WH="bench-hmac-secret", B_GH="ghp_bench_token",
               UP_HOST="127.0.0.1", UP_PORT=str(smtp), UP_TLS="none",
               REF_HOST="127.0.0.1", REF_PORT=str(refused), REF_TLS="none",
               SIL_HOST="127.0.0.1", SIL_PORT=str(silent_smtp), SIL_TLS="none")
    tmp = tempfile.mkdtemp(prefix="bogbench")
    data = os.path.join(tmp, "data")
    p, port, token = start(binary, data, env)
    http_kinds = ("slack", "webhook", "github_comment")
    scenarios = [("all up", "UP_", {}, a.repeat)]
    for how, prefix, bad in [("refused", "REF_", refused), ("silent", "SIL_", silent_http)]:
        if how == "silent" and a.skip_silent:
            continue
        for kind in ("slack", "webhook", "email", "github_comment"):
            scenarios.append((f"{kind} {how}", prefix if kind == "email" else "UP_",
                              {} if kind == "email" else {kind: bad}, 1))
        scenarios.append((f"all four {how}", prefix, {k: bad for k in http_kinds}, 1))
    print(f"binary: {binary}")
    print(f"{'scenario':<24} {'dispatch s':>10}  dispatch_errors")
    try:
        for i, (name, prefix, down, n) in enumerate(scenarios):
            job = f"bench{i}"
            call(port, token, "POST", "/jobs", {
                "name": job, "prompt": "p", "agent": {"command": ["echo", "bench output"]},
                "triggers": [{"type": "cron", "cron": "0 0 1 1 *"}],
                "outputs": outputs(http, prefix, down)})
            times = []
            for _ in range(n):
                rid = call(port, token, "POST", f"/jobs/{job}/run", {})["run_id"]
                while True:
                    r = call(port, token, "GET", f"/jobs/{job}/runs/{rid}")
                    if r["status"] not in ("queued", "running"):
                        break
                    time.sleep(0.05)
                done = None
                for line in open(data + ".log"):
                    try:
                        e = json.loads(line)
                    except ValueError:
                        continue
                    if e.get("event") == "run.finished" and e.get("run") == rid:
                        done = ts(e["ts"])
                times.append(done - ts(r["finished_at"]))
            errs = "; ".join(f"{e['target']}: {e['error']}" for e in r["dispatch_errors"]) or "-"
            t = sorted(times)[len(times) // 2]
            label = f"median of {n}" if n > 1 else ""
            print(f"{name:<24} {t:>10.3f}  {errs[:150]} {label}", flush=True)
    finally:
        p.terminate()
        p.wait()


if __name__ == "__main__":
    main()
