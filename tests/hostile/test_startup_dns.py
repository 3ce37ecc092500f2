# SPDX-License-Identifier: MIT
"""Start-up and name resolution under hostile conditions (issue 13, parts 6-9).

- A SIGHUP (or SIGTERM) that comes while a daemon is still starting (a
  replica whose origin accepts and never answers, a balancer whose resolver
  never answers) no longer kills it: the reload is applied once ready, a stop
  exits 0 at once.
- A balancer whose resolver never answers keeps answering /.cdn/status (the
  issue's 50 ms; checked against half a hanging lookup, see STATUS_BOUND); a
  name that starts resolving later comes up without a reload.
- One replica listed under several spellings (localhost, 127.0.0.1,
  127.000.000.001) is counted once.
- The open files limit is raised to the hard one, and a max_connections that
  cannot fit is warned about.

The resolver tests run the balancer in a private mount namespace (unshare -m,
as root) whose /etc/resolv.conf names a fake DNS server of this test on a
loopback address, with its own /etc/hosts and nsswitch.conf: no query leaves
the host's loopback.
"""

from __future__ import annotations

import http.client
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

import cdnlib
from cdnlib import wait_for

# The issue asks /.cdn/status to stay within 50 ms while names hang: a loop
# that resolved on itself would hold every answer for a whole lookup. Here a
# lookup hangs LOOKUP s (resolv.conf timeout, one try), so a blocked loop
# shows as answers near LOOKUP long; the bound is half of it, far above what
# scheduling adds on a loaded machine (answers of 100 ms seen at load 8)
# and still unmistakable. test_status_watch_sees_a_stalled_loop proves the
# watch sees a stall of one lookup's length.
LOOKUP = 1
STATUS_BOUND = LOOKUP / 2

# The suite runs with CDN_WORKERS=1 and 2 (see conftest.py): edges too.
WORKERS = os.environ.get("CDN_WORKERS", "1")


# ---------------------------------------------------------------- helpers

def _namespaces_usable():
    if os.geteuid() != 0:
        return "needs root (unshare -m and bind mounts over /etc/resolv.conf)"
    if shutil.which("unshare") is None:
        return "needs unshare(1) from util-linux"
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return f"unshare -m does not work here: {r.stderr.strip()}"
    return None


class FakeDNS:
    """A UDP DNS server on a loopback address: records every query's name;
    answers A queries for names in `answers` (AAAA: no data), and never
    answers the others (a resolver that does not answer)."""

    def __init__(self):
        self.ip = f"127.53.{random.randint(1, 254)}.{random.randint(1, 254)}"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.ip, 53))
        self.sock.settimeout(0.1)
        self.answers: dict[str, str] = {}
        self.queries: list[str] = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        self.running = False
        self.thread.join(timeout=5)
        self.sock.close()

    def asked(self, name):
        with self.lock:
            return name in self.queries

    def _serve(self):
        while self.running:
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            parsed = self._parse(data)
            if parsed is None:
                continue
            name, qtype, question_end = parsed
            with self.lock:
                self.queries.append(name)
                ip = self.answers.get(name)
            if ip is None:
                continue  # never answered
            header = data[:2] + struct.pack(">HHHHH", 0x8180, 1, 1 if qtype == 1 else 0, 0, 0)
            reply = header + data[12:question_end]
            if qtype == 1:
                reply += struct.pack(">HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton(ip)
            self.sock.sendto(reply, peer)

    @staticmethod
    def _parse(data):
        if len(data) < 12:
            return None
        pos, labels = 12, []
        while pos < len(data) and data[pos] != 0:
            n = data[pos]
            labels.append(data[pos + 1:pos + 1 + n].decode(errors="replace"))
            pos += 1 + n
        if pos + 5 > len(data):
            return None
        qtype = struct.unpack(">H", data[pos + 1:pos + 3])[0]
        return ".".join(labels).lower(), qtype, pos + 5


def in_private_resolver(d, dns_ip, hosts="127.0.0.1 localhost\n",
                        options=f"options timeout:{LOOKUP} attempts:1\n"):
    """Run daemon `d` in its own mount namespace with a resolv.conf naming
    dns_ip (by default one LOOKUP s try per query, so a lookup fails within
    about LOOKUP s), this /etc/hosts and nsswitch "files dns"."""
    resolv = d.dir / "resolv.conf"
    resolv.write_text(f"nameserver {dns_ip}\n{options}")
    hosts_file = d.dir / "hosts"
    hosts_file.write_text(hosts)
    nss = d.dir / "nsswitch.conf"
    nss.write_text("hosts: files dns\n")
    inner = d.argv
    script = ('mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/hosts && '
              'mount --bind "$3" /etc/nsswitch.conf && shift 3 && exec "$@"')
    # unshare and sh exec in turn: the pid is the daemon's.
    d.argv = lambda: (["unshare", "-m", "--propagation", "private", "/bin/sh", "-c", script,
                       "sh", str(resolv), str(hosts_file), str(nss)] + inner())


class StatusWatch:
    """Polls GET /.cdn/status on a fresh connection every 10 ms from a thread
    and keeps the slowest answer (from the first one on: before it the
    balancer is not listening yet)."""

    def __init__(self, d):
        self.d = d
        self.max = 0.0
        self.times = []
        self.count = 0
        self.errors = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            t0 = time.monotonic()
            try:
                c = http.client.HTTPConnection(self.d.host, self.d.port, timeout=30)
                c.request("GET", "/.cdn/status")
                r = c.getresponse()
                r.read()
                c.close()
                took = time.monotonic() - t0
                if r.status == 200:
                    self.count += 1
                    self.times.append(took)
                    self.max = max(self.max, took)
                else:
                    self.errors.append(f"status {r.status}")
            except OSError as e:
                if self.count > 0:
                    self.errors.append(repr(e))
            time.sleep(0.01)

    def stop(self):
        self.running = False
        self.thread.join(timeout=40)


def origin_that_waits():
    """A TCP origin on loopback that accepts, reads the request and answers
    only once `release` is set. Returns (url, accepted event, release event,
    closer)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    accepted, release, done = threading.Event(), threading.Event(), threading.Event()
    body = b"<html>start page</html>\n"

    def serve():
        srv.settimeout(0.2)
        conns = []
        while not done.is_set():
            try:
                c, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            conns.append(c)
            c.settimeout(5)
            try:
                c.recv(65536)
            except OSError:
                pass
            accepted.set()
            while not (release.is_set() or done.is_set()):
                release.wait(0.1)
            if release.is_set():
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
                        f"{len(body)}\r\nCache-Control: max-age=600\r\n\r\n").encode()
                try:
                    c.sendall(head + body)
                except OSError:
                    pass
        for c in conns:
            c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    def close():
        done.set()
        t.join(timeout=5)
        srv.close()

    return f"http://127.0.0.1:{srv.getsockname()[1]}", accepted, release, close


def slow_edge(cdn, origin_url, name):
    d = cdn.replica(start=False)
    sections = {
        "server": {"address": d.host, "port": d.port, "name": name, "drain_timeout": "5s",
                   "workers": WORKERS},
        "log": {"level": "debug", "file": d.dir / "replicad.log"},
        "content": {"origin": origin_url, "cache_dir": d.dir / "cache", "origin_timeout": "60s"},
    }
    d.write_config(sections)
    return d, sections


def log_of(d):
    return (d.dir / f"{d.kind}.log").read_text(errors="replace")


# ------------------------------------------------------------------ tests

def test_sighup_while_the_replica_fetches_its_start_page(cdn):
    """The start page's origin accepts and does not answer: a SIGHUP then
    (the old daemon died of it) is applied once the page came and the
    replica is ready."""
    url, accepted, release, close = origin_that_waits()
    try:
        d, sections = slow_edge(cdn, url, "before-reload")
        d.start(wait_ready=False)
        assert accepted.wait(15), "the replica never asked its origin for the start page"
        sections["server"]["name"] = "after-reload"
        d.write_config(sections)
        d.signal(signal.SIGHUP)
        # Still starting, still alive (the SIGHUP's default action killed it).
        wait_for(lambda: "SIGHUP during start-up" in log_of(d) or not d.alive(),
                 what="the replica to note the SIGHUP")
        assert d.alive(), f"the replica died of a SIGHUP during start-up: rc {d.proc.poll()}"
        assert d.notify.find("READY=1") is None
        release.set()
        d.wait_ready()
        wait_for(lambda: d.status().get("name") == "after-reload",
                 what="the reload that came during start-up to be applied")
        # The new name is served (by a worker) before the main loop logs the
        # reload: wait for its line, then it must be the only one.
        wait_for(lambda: "configuration reloaded" in log_of(d), what="the reload's log line")
        assert log_of(d).count("configuration reloaded") == 1
    finally:
        close()


def test_sigterm_while_the_replica_fetches_its_start_page(cdn):
    """SIGTERM during the same slow start: exit 0 at once, without waiting
    for the origin (60 s timeout)."""
    url, accepted, _release, close = origin_that_waits()
    try:
        d, _ = slow_edge(cdn, url, "stopped-early")
        d.start(wait_ready=False)
        assert accepted.wait(15), "the replica never asked its origin for the start page"
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        rc = d.wait_exit(timeout=10)
        took = time.monotonic() - t0
        print(f"SIGTERM during start-up: exit {rc} after {took * 1000:.0f} ms")
        assert rc == 0, f"exit code {rc} on SIGTERM during start-up"
        assert took < 5
        assert d.notify.find("READY=1") is None
    finally:
        close()


def test_balancer_with_a_resolver_that_never_answers(cdn):
    why = _namespaces_usable()
    if why:
        pytest.skip(why)
    dns = FakeDNS()
    try:
        r1 = cdn.replica(name="literal")
        r2 = cdn.replica(name="late")
        replicas = [r1.address, f"late.cdn.test:{r2.port}", f"dead1.cdn.test:{r2.port}",
                    f"dead2.cdn.test:{r2.port}"]
        b = cdn.balancer(replicas, start=False)
        in_private_resolver(b, dns.ip)
        b.start(wait_ready=False)
        watch = StatusWatch(b)
        try:
            wait_for(lambda: dns.asked("late.cdn.test") or not b.alive(), timeout=15,
                     what="the balancer to ask the fake resolver")
            # A SIGHUP while the names hang (the old balancer resolved them
            # on its loop during start-up, and died of it), with a new name.
            text = b.config_path.read_text().replace(f"balancer-{b.port}", "renamed")
            b.write_config(text)
            b.signal(signal.SIGHUP)
            b.wait_ready(timeout=5)
            wait_for(lambda: b.status().get("name") == "renamed",
                     what="the reload to be applied")
            wait_for(lambda: b.status()["up"] == 1, what="the literal replica to come up")
            st = b.status()
            late = [r for r in st["replicas"] if r["address"].startswith("late.")][0]
            assert late["health"] == "down", late
            # The resolver wakes up: the name comes up without a reload.
            dns.answers["late.cdn.test"] = "127.0.0.1"
            wait_for(lambda: b.status()["up"] == 2, timeout=20,
                     what="late.cdn.test to resolve and come up without a reload")
            st = b.status()
            late = [r for r in st["replicas"] if r["address"].startswith("late.")][0]
            assert late["resolved"] == f"127.0.0.1:{r2.port}", late
            wait_for(lambda: dns.queries.count("dead1.cdn.test") >= 3, timeout=20,
                     what="a failed name to be tried again")
            # The name moves to another replica (same port, another loopback
            # address): followed at its next lookup (every 30 s), no reload.
            r3 = cdn.replica(name="moved", host="127.0.0.2", port=r2.port)
            dns.answers["late.cdn.test"] = "127.0.0.2"

            def moved():
                rs = [r for r in b.status()["replicas"] if r["address"].startswith("late.")]
                return rs[0]["resolved"] == r3.address and rs[0]["name"] == "moved" and \
                    rs[0]["health"] == "up"
            wait_for(moved, timeout=45, what="late.cdn.test's new address to be followed")
        finally:
            watch.stop()
        median = sorted(watch.times)[len(watch.times) // 2]
        print(f"/.cdn/status: {watch.count} answers, median {median * 1000:.1f} ms, "
              f"slowest {watch.max * 1000:.1f} ms")
        assert watch.count > 50
        assert not watch.errors, watch.errors[:5]
        assert watch.max < STATUS_BOUND, \
            f"/.cdn/status took {watch.max * 1000:.0f} ms while names hung"
        log = log_of(b)
        assert "cannot resolve dead1.cdn.test" in log
        assert "late.cdn.test resolves to 127.0.0.1" in log
        assert "late.cdn.test now resolves to 127.0.0.2" in log
        assert log.count("configuration reloaded") == 1
        # IP literals never reach a resolver.
        assert all(q.endswith("cdn.test") for q in dns.queries), set(dns.queries)
        # A stop with lookups hanging is prompt.
        t0 = time.monotonic()
        assert b.stop() == 0
        assert time.monotonic() - t0 < 3
    finally:
        dns.close()


def test_status_watch_sees_a_stalled_loop(cdn):
    """The other side of STATUS_BOUND: a balancer whose loop stops for one
    lookup's length (SIGSTOP) makes the watch see an answer over the bound,
    so the bound would catch a loop blocked by a lookup."""
    r = cdn.replica()
    b = cdn.balancer([r])
    watch = StatusWatch(b)
    try:
        wait_for(lambda: watch.count >= 5, what="status answers before the stall")
        b.signal(signal.SIGSTOP)
        try:
            time.sleep(LOOKUP)  # the stall itself, as long as one hanging lookup
        finally:
            b.signal(signal.SIGCONT)
        seen = watch.count
        wait_for(lambda: watch.count >= seen + 5, what="status answers after the stall")
    finally:
        watch.stop()
    print(f"/.cdn/status around a {LOOKUP} s stall: slowest {watch.max * 1000:.0f} ms")
    assert not watch.errors, watch.errors[:5]
    assert watch.max > STATUS_BOUND, watch.max


def test_sigterm_while_a_lookup_hangs(cdn):
    """resolv.conf's defaults (5 s x 2 tries: a lookup hangs 10 s): a
    SIGTERM while one hangs exits 0 at once, without waiting for it (the old
    balancer looked up on its loop during start-up and died of the signal)."""
    why = _namespaces_usable()
    if why:
        pytest.skip(why)
    dns = FakeDNS()
    try:
        b = cdn.balancer(["hangs.cdn.test:33000"], start=False)
        in_private_resolver(b, dns.ip, options="")
        b.start(wait_ready=False)
        wait_for(lambda: dns.asked("hangs.cdn.test") or not b.alive(),
                 what="the balancer to ask the fake resolver")
        t0 = time.monotonic()
        b.signal(signal.SIGTERM)
        rc = b.wait_exit(timeout=15)
        took = time.monotonic() - t0
        print(f"SIGTERM with a lookup hanging: exit {rc} after {took * 1000:.0f} ms")
        assert rc == 0
        assert took < 2, f"the stop waited {took:.1f} s for a lookup"
    finally:
        dns.close()


def test_one_replica_under_three_spellings_counts_once(cdn):
    why = _namespaces_usable()
    if why:
        pytest.skip(why)
    dns = FakeDNS()
    try:
        r = cdn.replica()
        spellings = [f"localhost:{r.port}", f"127.0.0.1:{r.port}", f"127.000.000.001:{r.port}"]
        b = cdn.balancer(spellings, start=False)
        in_private_resolver(b, dns.ip)
        b.start()
        st = wait_for(lambda: (lambda s: s if s["up"] == 1 and s["total"] == 1 else None)(
            b.status()), what="one replica, up, under three spellings")
        assert len(st["replicas"]) == 1, st["replicas"]
        assert st["replicas"][0]["resolved"] == f"127.0.0.1:{r.port}"
        # Once per second spelling, and only once (re-resolving keeps quiet).
        wait_for(lambda: log_of(b).count("listed twice, counted once") == 2,
                 what="a warning for each second spelling")
        # Every client goes to the one replica; no share is doubled.
        for _ in range(5):
            status, headers, _ = b.get("/index.html")
            assert status == 302
            assert "CDN-Fallback" not in headers
        assert log_of(b).count("listed twice, counted once") == 2
        assert dns.queries == [], dns.queries  # localhost from hosts, the others literals
    finally:
        dns.close()


def _soft_hard(pid):
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no 'Max open files' line")


def test_open_files_limit_is_raised_and_checked(cdn):
    hard = _soft_hard(os.getpid())[1]
    if hard < 2024:
        pytest.skip(f"hard open files limit {hard}: below what a replica of 1000 connections needs")
    r = cdn.replica(start=False, extra={"server": {"max_connections": 1000}})
    inner = r.argv
    r.argv = lambda: ["prlimit", f"--nofile=256:{hard}", "--"] + inner()
    r.start()
    assert _soft_hard(r.pid) == (hard, hard)
    assert re.search(rf"open files limit raised from 256 to {hard}", log_of(r)), log_of(r)
    assert "is below the" not in log_of(r)

    # A hard limit that max_connections cannot fit: a warning, and it runs.
    b = cdn.balancer([r], start=False, extra={"server": {"max_connections": 5000}})
    inner_b = b.argv
    b.argv = lambda: ["prlimit", "--nofile=200:1000", "--"] + inner_b()
    b.start()
    assert _soft_hard(b.pid) == (1000, 1000)
    log = log_of(b)
    assert re.search(r"open files limit 1000 is below the 5065 descriptors", log), log
    cdn.wait_up(b, 1)
