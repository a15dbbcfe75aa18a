#!/usr/bin/env python3
"""Micro-benchmark of durable record writes by 16 concurrent writers on this disk (the design
question of issue 11's valid-webhook goal, contrib/bench/RESULTS.md):
A: today's scheme (temp file, fsync, rename, grouped directory fsync);
B: one append-only journal, group commit (one write + fdatasync per batch), plus the per-run
   file written without fsync (temp + rename) so readers see it;
C: as B, but the journal preallocated and zero-filled (overwrite in place: fdatasync has no
   metadata to commit).

    python3 contrib/bench/commits.py [seconds]

Python threads (the GIL is released in write and fsync); a first look, not a substitute for
measuring the daemon. Writes into a temp dir in $BENCH_DIR (default: the system temp dir): put it on the
filesystem of the data dir."""
import os, sys, threading, time, tempfile
N, SECS = 16, float(sys.argv[1]) if len(sys.argv) > 1 else 5
REC = b'{"id":"run_x","status":"skipped"' + b' ' * 600 + b'}\n'

class Group:
    def __init__(self, sync):
        self.sync = sync; self.cv = threading.Condition(); self.syncing = False; self.gen = 0; self.done = 0
    def wait(self):
        with self.cv:
            my = self.gen  # batch number: the next fsync that starts
            while True:
                if self.done > my: return
                if not self.syncing and self.gen == my:
                    self.syncing = True; self.gen += 1
                    self.cv.release()
                    try: self.sync()
                    finally: self.cv.acquire()
                    self.syncing = False; self.done = my + 1; self.cv.notify_all(); return
                self.cv.wait()

def run(kind, d):
    count = [0] * N
    stop = time.time() + SECS
    dfd = os.open(d, os.O_RDONLY)
    dirg = Group(lambda: os.fsync(dfd))
    jfd = None
    if kind in "BC":
        jfd = os.open(os.path.join(d, "journal"), os.O_WRONLY | os.O_CREAT, 0o600)
        if kind == "C":
            os.write(jfd, b"\0" * (64 << 20)); os.fsync(jfd); os.fsync(dfd)
        pending = []; off = [0]
        lock = threading.Lock()
        def jsync():
            with lock:
                buf = b"".join(pending); pending.clear()
                o = off[0]; off[0] += len(buf)
            os.pwrite(jfd, buf, o)
            os.fdatasync(jfd)
        jg = Group(jsync)
    def worker(i):
        k = 0
        while time.time() < stop:
            name = os.path.join(d, f"r{i}-{k}.json"); k += 1
            if kind == "A":
                tmp = name + ".tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, REC); os.fsync(fd); os.close(fd)
                os.rename(tmp, name); dirg.wait()
            else:
                with lock: pending.append(REC)
                jg.wait()
                tmp = name + ".tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, REC); os.close(fd); os.rename(tmp, name)
            count[i] += 1
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(N)]
    for t in ts: t.start()
    for t in ts: t.join()
    return sum(count) / SECS

for rep in range(2):
    for kind in "ABC":
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
            print(kind, f"{run(kind, d):,.0f} records/s", flush=True)
