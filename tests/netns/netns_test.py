#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Multi-host tests: a balancer and three replicas, each in its own network
namespace with its own address on one bridge, all on port 33000 as in the
seed; the balancer reads a seed-format servers.txt (bare hosts). Replicas are
unequal: tbf bandwidth caps and different `capacity` settings.

  - a 302 names replicas by their own addresses; curl -L and cdn-get fetch
    through it;
  - SIGKILL of a replica while cdn-get clients run in a loop: every download
    succeeds, and the balancer stops naming the replica within 1 s;
  - SIGTERM of a replica (it drains: finishes in-flight downloads, closes its
    listener): no failed download, it exits 0, the balancer stops naming it;
  - no replica up: 503 with Retry-After.

Exit 77 (skipped) when not root or when `ip netns add` fails. Run by
`meson test --suite netns`, or by hand as root:
  CDN_BUILD_DIR=build-bal /usr/bin/python3 tests/netns/netns_test.py
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netnslib as nl  # noqa: E402

SKIP = 77
DETECT_LIMIT = 1.0  # seconds: a dead replica gets no client after this


class ClientLoop:
    """`threads` cdn-get clients downloading in a loop until stop()."""

    def __init__(self, topo, paths, threads=6, max_runs=5000):
        self.topo, self.paths, self.max_runs = topo, paths, max_runs
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.results = []  # (rc, seconds, replica or None, output)
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True)
                        for k in range(threads)]

    def _run(self, k):
        out = self.topo.dir / f"client{k}.out"
        n = 0
        while not self.stop_flag.is_set() and n < self.max_runs:
            path = self.paths[(k + n) % len(self.paths)]
            n += 1
            t = time.monotonic()
            try:
                r = subprocess.run([str(nl.CDN_GET), f"http://{nl.BALANCER_IP}:{nl.PORT}{path}",
                                    "-o", str(out), "--timeout", "5s"],
                                   capture_output=True, text=True, timeout=60)
                rc, text = r.returncode, r.stdout + r.stderr
            except subprocess.TimeoutExpired as e:
                rc, text = -1, f"cdn-get timed out: {e}"
            m = re.search(r"from (?:http://)?([0-9.]+)", text)
            with self.lock:
                self.results.append((rc, time.monotonic() - t, m.group(1) if m else None, text))

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=90)

    def count(self):
        with self.lock:
            return len(self.results)

    def served_by(self, ip):
        with self.lock:
            return sum(1 for r in self.results if r[2] == ip)

    def failures(self):
        with self.lock:
            return [r for r in self.results if r[0] != 0]


def locations(n=40, path="/small0.bin"):
    """Hosts named in Location by n redirects."""
    out = []
    for _ in range(n):
        status, headers, _ = nl.http_get(nl.BALANCER_IP, path)
        assert status == 302, f"balancer answered {status}"
        out.append(re.match(r"http://([0-9.]+):", headers["location"]).group(1))
    return out


def wait_gone(topo, ip, t0):
    """Seconds from t0 until the balancer no longer calls ip up."""
    nl.wait_for(lambda: topo.replica_health().get(ip) != "up", timeout=10, interval=0.005,
                what=f"{ip} out of rotation")
    return time.monotonic() - t0


def failover(topo, victim, sig, paths):
    ip = nl.replica_ip(victim)
    loop = ClientLoop(topo, paths).start()
    try:
        # Clients are really going to the victim before it goes.
        nl.wait_for(lambda: loop.served_by(ip) >= 2 and loop.count() >= 10, timeout=30,
                    what=f"downloads served by {ip}")
        daemon = topo.replicas[victim]
        t0 = time.monotonic()
        daemon.signal(sig)
        gone = wait_gone(topo, ip, t0)
        named = locations()
        assert ip not in named, f"{ip} still named after it went: {named}"
        # Let the loops run on a while with the replica gone.
        before = loop.count()
        nl.wait_for(lambda: loop.count() >= before + 12, timeout=30, what="more downloads")
    finally:
        loop.stop()
    fails = loop.failures()
    print(f"    {sig.name}: out of rotation after {gone * 1000:.0f} ms; {loop.count()} downloads, "
          f"{len(fails)} failed; served by the victim "
          f"{loop.served_by(ip)}")
    assert not fails, "failed downloads:\n" + "\n".join(f"rc={r[0]} {r[3]}" for r in fails[:5])
    assert gone < DETECT_LIMIT, f"{ip} still up {gone:.3f}s after {sig.name}"
    return daemon


def test_redirect_and_download(topo, files):
    status, headers, _ = nl.http_get(nl.BALANCER_IP, "/big.bin")
    assert status == 302, status
    loc = headers["location"]
    assert re.fullmatch(rf"http://{re.escape(nl.NET)}\.1[1-3]:{nl.PORT}/big\.bin", loc), loc
    fallbacks = [u.strip() for u in headers.get("cdn-fallback", "").split(",") if u.strip()]
    assert len(fallbacks) == 2 and loc not in fallbacks, headers
    out = topo.dir / "curl.out"
    subprocess.run(["curl", "-sS", "-f", "-L", "-o", str(out),
                    f"http://{nl.BALANCER_IP}:{nl.PORT}/big.bin"], check=True, timeout=60)
    assert out.read_bytes() == files["big.bin"]
    out = topo.dir / "get.out"
    r = subprocess.run([str(nl.CDN_GET), f"http://{nl.BALANCER_IP}:{nl.PORT}/big.bin", "-o",
                        str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert out.read_bytes() == files["big.bin"]
    status, _, body = nl.http_get(nl.BALANCER_IP, "/.cdn/metrics")
    text = body.decode()
    for i in range(topo.n):
        assert f'cdn_balancer_replica_rtt_seconds{{replica="{nl.replica_ip(i)}:{nl.PORT}"}}' in text
        assert f'cdn_balancer_replica_state{{replica="{nl.replica_ip(i)}:{nl.PORT}",state="up"}} 1' \
            in text
    # p2c spreads clients (not every one to the best, as the seed did).
    named = set(locations(60, "/small1.bin"))
    assert len(named) >= 2, named


def test_sigkill(topo, files):
    victim = failover(topo, 0, signal.SIGKILL, ["/small0.bin", "/mid.bin", "/small1.bin"])
    victim.wait_exit(10)
    # Back again: rises after `rise` good probes.
    topo.replicas[0] = topo.start_replica(0, topo.root, capacity=topo.capacities[0])
    t0 = time.monotonic()
    topo.wait_all_up()
    print(f"    restarted replica back in rotation after {time.monotonic() - t0:.2f} s")


def test_sigterm(topo, files):
    # Large downloads, so some are in flight on the victim when it drains.
    victim = failover(topo, 1, signal.SIGTERM, ["/big.bin", "/mid.bin"])
    rc = victim.wait_exit(40)
    assert rc == 0, f"drained replica exited {rc}:\n{victim.log_text()}"
    topo.replicas[1] = topo.start_replica(1, topo.root, capacity=topo.capacities[1])
    topo.wait_all_up()


def test_none_up(topo, files):
    t0 = time.monotonic()
    for d in topo.replicas:
        d.signal(signal.SIGKILL)

    def unavailable():
        status, headers, _ = nl.http_get(nl.BALANCER_IP, "/small0.bin")
        return status == 503 and headers.get("retry-after")

    nl.wait_for(unavailable, timeout=5, interval=0.005, what="503 from the balancer")
    took = time.monotonic() - t0
    print(f"    every replica killed: 503 + Retry-After after {took * 1000:.0f} ms")
    assert took < DETECT_LIMIT


TESTS = [test_redirect_and_download, test_sigkill, test_sigterm, test_none_up]


def main():
    try:
        topo = nl.Topology(replicas=3)
    except nl.Skip as e:
        print(f"SKIP: netns tests: {e}")
        return SKIP

    def on_signal(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    failed = 0
    try:
        rnd = os.urandom
        files = {"big.bin": rnd(3 << 20), "mid.bin": rnd(512 << 10),
                 "small0.bin": rnd(32 << 10), "small1.bin": rnd(48 << 10)}
        topo.root = topo.site(files)
        # Unequal replicas: bandwidth 60/30/15 Mbit/s, capacity in proportion.
        topo.capacities = [40, 20, 10]
        for i, mbit in enumerate([60, 30, 15]):
            topo.cap(i, mbit)
        topo.replicas = [topo.start_replica(i, topo.root, capacity=topo.capacities[i])
                         for i in range(3)]
        topo.balancer = topo.start_balancer("p2c")
        topo.enter_client()
        topo.wait_all_up()
        for test in TESTS:
            t = time.monotonic()
            print(f"  {test.__name__} ...", flush=True)
            try:
                test(topo, files)
                print(f"  {test.__name__}: ok ({time.monotonic() - t:.1f} s)", flush=True)
            except Exception:  # noqa: BLE001 - report and go on
                failed += 1
                print(f"  {test.__name__}: FAILED\n{traceback.format_exc()}", flush=True)
                for d in topo.daemons:
                    print(f"--- {d.name} log (tail) ---\n{d.log_text(3000)}")
                if test is not TESTS[-1] and not all(d.alive() for d in topo.replicas):
                    print("  (a replica is down after a failure: the remaining tests are skipped)")
                    break
        if not topo.balancer.alive():
            failed += 1
            print(f"balancer died:\n{topo.balancer.log_text()}")
    finally:
        topo.close()
    print("netns: " + ("all passed" if not failed else f"{failed} FAILED"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
