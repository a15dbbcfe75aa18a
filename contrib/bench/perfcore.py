#!/usr/bin/env python3
"""Issue 11's core figures, two builds side by side in one run (ratios: absolute figures on
the shared machines here vary by +-30 %):

  - reads from memory: GET /jobs (100 jobs), GET /jobs/{id}, GET /jobs/{id}/runs (50 records);
  - group commit: signed webhook deliveries answered 202 (each writes a durable run record),
    16 connections at once;
  - fire first, write after: where the time goes between a cron second and the agent's own
    clock (4 every-second jobs whose agent is `date +%s.%N`), from the run records and the
    daemon's debug line `agent.spawned` (builds that have it): due -> queued record made
    (the clock fires), -> a worker took the run (the queued record's fsyncs, the queue),
    -> prompt, environment and event file, -> containment set-up, -> waiting for the slot
    (builds that take the run ahead: `wait_us`), -> fork + exec (`Command::spawn` returns
    after the exec), -> the agent's own clock (its loading). Negative figures are before
    the second.

    python3 contrib/bench/perfcore.py --a /path/to/before --b /path/to/after [--quick]

Needs wrk. Not part of the test suite; uses run.py's daemon and wrk helpers.
"""
import argparse, hashlib, hmac, json, os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402


def start(bin_, jobs=0, extra=(), env=None, stderr=None):
    R.BIN = bin_
    d = R.Daemon(R.TMP, jobs, extra, env)
    return d


def http_figures(bins, secs, reps):
    rows = {}

    def measure(name, setup):
        vals = {k: [] for k in bins}
        for _ in range(reps):
            for k, b in bins.items():  # interleaved, so both see the same noise
                d, url, script, headers = setup(b)
                vals[k].append(R.wrk(url, secs, script, headers)[0])
                d.stop()
        rows[name] = {k: statistics.median(v) for k, v in vals.items()}
        print(f"  {name}: " + ", ".join(f"{k} {v:,.0f} req/s" for k, v in rows[name].items()), flush=True)

    def jobs_list(b):
        d = start(b, 100)
        return d, f"http://127.0.0.1:{d.port}/jobs", None, [f"Authorization: Bearer {d.token}"]

    def job_one(b):
        d = start(b, 100)
        return d, f"http://127.0.0.1:{d.port}/jobs/j42", None, [f"Authorization: Bearer {d.token}"]

    def runs(b):
        d = start(b, 0)
        # parallel: 50 runs, 50 records, whichever build is faster at running them
        d.api("POST", "/jobs", {"name": "r", "prompt": "p", "agent": {"command": ["true"]}, "overlap": "parallel",
                                "triggers": [{"type": "cron", "cron": "0 0 1 1 *"}]})
        ids = [d.api("POST", "/jobs/r/run")["run_id"] for _ in range(50)]
        for rid in ids:
            while d.api("GET", f"/jobs/r/runs/{rid}")["status"] in ("queued", "running"):
                time.sleep(0.01)
        assert len(d.api("GET", "/jobs/r/runs")) == 50
        return d, f"http://127.0.0.1:{d.port}/jobs/r/runs", None, [f"Authorization: Bearer {d.token}"]

    body = json.dumps({"pad": "x" * 1500}).encode()
    good = "sha256=" + hmac.new(R.SECRET.encode(), body, hashlib.sha256).hexdigest()
    valid = R.lua_post("/hooks/bench", body, {"X-Hub-Signature-256": good})

    def hook(b):
        d = start(b, 0)
        d.api("POST", "/jobs", {"name": "wh", "prompt": "p", "agent": {"command": ["sleep", "3600"]},
                                "overlap": "skip",
                                "triggers": [{"type": "webhook", "path": "/hooks/bench", "secret_env": "BENCH_SECRET"}]})
        return d, f"http://127.0.0.1:{d.port}/hooks/bench", valid, []

    measure("GET /jobs (100 jobs)", jobs_list)
    measure("GET /jobs/{id}", job_one)
    measure("GET /jobs/{id}/runs (50 records)", runs)
    measure("signed webhook -> 202 (record fsynced)", hook)
    return rows


def fire_figures(bins, seconds, config=None):
    out = {}
    for k, b in bins.items():
        log = os.path.join(R.TMP, f"log-{k}")
        R.BIN = b
        with open(log, "w") as errf:
            data = os.path.join(R.TMP, f"f{k}{time.time_ns()}")
            os.makedirs(os.path.join(data, "jobs"))
            if config:
                with open(os.path.join(data, "config.json"), "w") as f:
                    f.write(config)
            p = subprocess.Popen([b, "run", "--data-dir", data, "--port", "0", "--log-format", "json"],
                                 stdout=subprocess.DEVNULL, stderr=errf,
                                 env=dict(os.environ, RUST_LOG="bog_agents_daemon=debug"))
            while not os.path.exists(os.path.join(data, ".token")) or not os.path.exists(os.path.join(data, "daemon.lock")):
                time.sleep(0.01)
            time.sleep(0.3)
            info = json.load(open(os.path.join(data, "daemon.lock")))
            tok = open(os.path.join(data, ".token")).read().strip()
            d = R.Daemon.__new__(R.Daemon)
            d.port, d.token, d.p = info["port"], tok, p
            for i in range(4):
                d.api("POST", "/jobs", {"name": f"sec{i}", "prompt": "p", "history": 1000,
                                        "agent": {"command": ["date", "+%s.%N"]},
                                        "triggers": [{"type": "cron", "cron": "* * * * * *", "timezone": "UTC"}]})
            time.sleep(seconds + 1)
            recs = []
            for i in range(4):
                recs += d.api("GET", f"/jobs/sec{i}/runs?limit=1000")
            d.stop()
        spawned = {}
        for line in open(log):
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event") == "agent.spawned":
                spawned[e.get("run")] = e
        rows = {"due -> queued record made (fire)": [], "due -> worker took the run": [],
                "  worker: prompt, env, event file": [], "  containment set-up (agent::ready)": [],
                "  waiting for the slot": [], "  fork + exec": [], "due -> fork + exec began": [],
                "due -> process exec'd": [], "due -> agent's clock": []}
        for r in recs:
            try:
                agent = float(r["output"].strip())
            except (ValueError, KeyError):
                continue
            due = int(agent)
            q = r["queued_at"]
            qt = time.mktime(time.strptime(q[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone + float("0" + q[19:-1])
            rows["due -> queued record made (fire)"].append((qt - due) * 1000)
            rows["due -> agent's clock"].append((agent - due) * 1000)
            s = spawned.get(r["id"])
            if s:
                at = s["at_us"] / 1e3 - due * 1000
                rows["due -> process exec'd"].append(at)
                rows["  worker: prompt, env, event file"].append(s["prepare_us"] / 1e3)
                rows["  containment set-up (agent::ready)"].append(s["contain_us"] / 1e3)
                rows["  waiting for the slot"].append(s.get("wait_us", 0) / 1e3)
                rows["  fork + exec"].append(s["fork_exec_us"] / 1e3)
                rows["due -> fork + exec began"].append(at - s["fork_exec_us"] / 1e3)
                rows["due -> worker took the run"].append(
                    at - (s["prepare_us"] + s["contain_us"] + s.get("wait_us", 0) + s["fork_exec_us"]) / 1e3)
        out[k] = rows
    print("  fire -> fork -> exec (ms; p50 / p99 / max over the runs)", flush=True)
    names = list(next(iter(out.values())).keys())
    for n in names:
        cells = []
        for k in bins:
            v = sorted(out[k][n])
            if not v:
                cells.append(f"{k}: -")
                continue
            p99 = v[min(len(v) - 1, int(len(v) * 0.99))]
            cells.append(f"{k}: {statistics.median(v):.2f} / {p99:.2f} / {v[-1]:.2f} (n={len(v)})")
        print(f"    {n:42} " + "   ".join(cells), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True, help="the build before")
    ap.add_argument("--b", required=True, help="the build after")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--no-fire", action="store_true")
    ap.add_argument("--config", help="config.json for the firing figures' daemons, e.g. "
                    "'{\"containment\": \"process_group\"}' to leave the cgroups out")
    a = ap.parse_args()
    R.TMP = tempfile.mkdtemp(prefix="bogperf")
    bins = {"before": a.a, "after": a.b}
    if not a.no_http:
        rows = http_figures(bins, 3 if a.quick else 5, 2 if a.quick else 3)
        print("\n| figure | before | after | after/before |\n| --- | --- | --- | --- |")
        for n, v in rows.items():
            print(f"| {n} | {v['before']:,.0f} req/s | {v['after']:,.0f} req/s | {v['after'] / v['before']:.2f}x |")
    if not a.no_fire:
        fire_figures(bins, 10 if a.quick else 30, a.config)


if __name__ == "__main__":
    main()
