# SPDX-License-Identifier: MIT
"""Hostile clients against running daemons.

Each attack checks that the attacker gets a clear answer (a status, or a
close when nothing was asked), that another client is served throughout, and
that the daemon's RSS after the attack is not far above its RSS before (no
unbounded growth). The harness checks at teardown that every daemon is alive
and exits 0 on SIGTERM.
"""

from __future__ import annotations

import json
import os
import random
import socket
import socketserver
import threading
import time

import pytest

import cdnlib

HEADER_TIMEOUT = {"server": {"header_timeout": "1s", "idle_timeout": "2s", "send_timeout": "2s"}}
MiB = 1 << 20


# --------------------------------------------------------------- helpers
def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def assert_rss_bounded(d, before_kib, slack_mib=24):
    after = rss_kib(d.pid)
    assert after <= before_kib + slack_mib * 1024, (
        f"{d.kind} RSS grew from {before_kib} KiB to {after} KiB")


def served(d, path="/index.html", timeout=3.0):
    """Another, well-behaved client gets its page."""
    status, _, body = cdnlib.http_request(d.host, d.port, "GET", path, timeout=timeout)
    assert status == 200, f"{d.kind} answered {status} to an ordinary client"
    return body


def connect(d, timeout=5.0):
    s = socket.create_connection((d.host, d.port), timeout=timeout)
    return s


def exchange(d, data, timeout=5.0):
    """Send raw bytes, return (status, head, everything read until close)."""
    with connect(d, timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may close before taking it all: read what it said
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except (ConnectionResetError, socket.timeout):
            pass
    raw = b"".join(chunks)
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status = int(head.split(" ", 2)[1]) if head.startswith("HTTP/1.1 ") else None
    return status, head, raw


def drain_socket(s, limit=64 * MiB):
    """Read until EOF/reset/timeout; returns bytes read."""
    n = 0
    try:
        while n < limit:
            b = s.recv(1 << 16)
            if not b:
                break
            n += len(b)
    except (ConnectionResetError, socket.timeout, OSError):
        pass
    return n


class Canary:
    """A well-behaved client asking every 100 ms on a thread, counting failures."""

    def __init__(self, d, path="/index.html", expect=200, ask=None):
        """`ask`: another client's request (a callable, true when served),
        in place of a plain GET of `path` expecting `expect`."""
        self.d, self.path, self.expect, self.ask = d, path, expect, ask
        self.ok = 0
        self.failures = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                if self.ask is not None:
                    status = self.expect if self.ask() else "not served"
                else:
                    status, _, _ = cdnlib.http_request(self.d.host, self.d.port, "GET", self.path,
                                                       timeout=3.0)
                if status == self.expect:
                    self.ok += 1
                else:
                    self.failures.append(status)
            except Exception as e:  # noqa: BLE001 - recorded and asserted on
                self.failures.append(repr(e))
            self._stop.wait(0.1)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(timeout=10)
        if exc[0] is None:
            assert not self.failures, f"ordinary client failed during the attack: {self.failures[:5]}"
            assert self.ok > 0, "ordinary client never got through"


@pytest.fixture
def replica(cdn):
    files = {"index.html": b"<p>hello</p>\n" * 100, "big.bin": os.urandom(4 * MiB),
             "dir/page.html": b"inside\n"}
    return cdn.replica(files=files, extra=HEADER_TIMEOUT)


# -------------------------------------------------------- slow and idle
def test_two_thousand_idle_connections_are_closed_by_header_timeout(cdn):
    r = cdn.replica(extra={"server": {"header_timeout": "1s", "idle_timeout": "1s",
                                      "max_connections": 5000}})
    served(r)
    before = rss_kib(r.pid)
    socks = []
    with Canary(r):
        try:
            for i in range(2000):
                s = socket.create_connection((r.host, r.port), timeout=10)
                # Half are slowloris (a request head begun, never finished),
                # half send nothing at all.
                if i % 2 == 0:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                socks.append(s)
            peak = rss_kib(r.pid)
            deadline = time.monotonic() + 20
            answers = {}
            for i, s in enumerate(socks):
                s.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    data = s.recv(4096)
                except (ConnectionResetError, socket.timeout) as e:
                    data = repr(e).encode()
                kind = "slow" if i % 2 == 0 else "idle"
                key = (kind, data[:12])
                answers[key] = answers.get(key, 0) + 1
        finally:
            for s in socks:
                s.close()
    # Slowloris: 408 then close. Idle (nothing asked): closed without a word.
    assert answers.get(("slow", b"HTTP/1.1 408"), 0) == 1000, answers
    assert answers.get(("idle", b""), 0) == 1000, answers
    served(r)
    assert peak - before < 64 * 1024, f"2000 idle connections cost {peak - before} KiB"
    assert_rss_bounded(r, before)


# ---------------------------------------------------------- limits
def test_request_line_and_headers_beyond_limits(replica):
    r = replica
    before = rss_kib(r.pid)
    with Canary(r):
        status, head, _ = exchange(r, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 414, head
        status, head, _ = exchange(
            r, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40000 + b"\r\n\r\n")
        assert status == 431, head
        many = b"".join(b"X-%d: v\r\n" % i for i in range(5000))
        status, head, _ = exchange(r, b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        assert status == 431, head
        # Many small headers just under the count limit are fine.
        few = b"".join(b"X-%d: v\r\n" % i for i in range(50))
        status, head, _ = exchange(
            r, b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + few + b"\r\n")
        assert status == 200, head
        # An endless header line that never ends also gets its 431.
        status, head, _ = exchange(r, b"GET / HTTP/1.1\r\nX: " + b"z" * (1 * MiB))
        assert status == 431, head
    assert_rss_bounded(r, before)


@pytest.mark.parametrize("request_bytes, expected", [
    (b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n", {400, 405, 501}),
    (b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", {505, 400}),
    # RFC 9112 2.3: a higher 1.x minor version is answered as 1.1.
    (b"GET /index.html HTTP/1.9\r\nHost: x\r\nConnection: close\r\n\r\n", {200}),
    (b"GET / HTTQ/1.1\r\nHost: x\r\n\r\n", {400}),
    (b"GET / FTP/1.1\r\nHost: x\r\n\r\n", {400}),
    (b"GET /\r\n\r\n", {400}),
    (b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", {400, 505}),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), {400}),  # a TLS hello
    (b"GET / HTTP/1.1\nHost: x\n\n", {400}),                                # bare LF
    (b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", {400}),                     # one bare LF
    (b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", {400}),                     # bare CR
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", {400}),           # obs-fold
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n", {400}),          # obs-fold, tab
    (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", {400}),                          # space before colon
    (b"GET / HTTP/1.1\r\n\r\n", {400}),                                      # no Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", {400}),                # two Hosts
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", {400}),              # NUL
])
def test_invalid_requests_get_a_clear_answer(replica, request_bytes, expected):
    status, head, _ = exchange(replica, request_bytes)
    assert status in expected, head
    assert "Connection: close" in head
    served(replica)


@pytest.mark.parametrize("request_bytes", [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\nabcde",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
])
def test_request_smuggling_is_refused(replica, request_bytes):
    status, head, raw = exchange(replica, request_bytes)
    assert status in (400, 413, 501), head
    # Exactly one response: nothing smuggled behind it was answered.
    assert raw.count(b"HTTP/1.1 ") == 1, raw[:500]
    served(replica)


# ---------------------------------------------------------- floods
def test_pipelined_flood_is_answered_in_order(replica):
    r = replica
    before = rss_kib(r.pid)
    n = 5000
    req = b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"
    with Canary(r), connect(r, timeout=20) as s:
        got = bytearray()

        def reader():
            try:
                while got.count(b"HTTP/1.1 200 OK") < n:
                    b = s.recv(1 << 16)
                    if not b:
                        break
                    got.extend(b)
            except OSError:
                pass

        t = threading.Thread(target=reader)
        t.start()
        s.sendall(req * n)
        t.join(timeout=60)
        assert got.count(b"HTTP/1.1 200 OK") == n
    assert_rss_bounded(r, before)


def test_clients_that_never_read_cost_bounded_memory(replica):
    r = replica
    before = rss_kib(r.pid)
    socks = []
    with Canary(r):
        for _ in range(40):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(10)
            s.connect((r.host, r.port))
            # 4 MiB files and small pages, pipelined, never read.
            try:
                s.sendall((b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                           b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n") * 200)
            except OSError:
                pass
            socks.append(s)
        time.sleep(1.0)
        peak = rss_kib(r.pid)
        # send_timeout (2s) cuts them off.
        assert cdnlib.wait_for(lambda: r.status().get("active_connections", 99) <= 2,
                               timeout=20, what="stalled readers to be dropped")
    for s in socks:
        s.close()
    assert peak - before < 48 * 1024, f"40 stalled readers cost {peak - before} KiB"
    assert_rss_bounded(r, before)


def test_half_closed_client_still_gets_its_answers(replica):
    with connect(replica) as s:
        s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /dir/page.html HTTP/1.1\r\nHost: x\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        raw = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            raw += b
    assert raw.count(b"HTTP/1.1 200 OK") == 2
    assert raw.endswith(b"inside\n")
    # Half-closed before the head was complete: closed, no crash.
    with connect(replica) as s:
        s.sendall(b"GET /index.html HTTP/1.1\r\nHo")
        s.shutdown(socket.SHUT_WR)
        assert drain_socket(s) >= 0
    served(replica)


def test_connection_flood_beyond_max_connections_gets_503(cdn):
    r = cdn.replica(extra={"server": {"max_connections": 50, "header_timeout": "5s"}})
    before = rss_kib(r.pid)
    held = []
    try:
        for _ in range(50):
            # Each holds a slot with a request begun (a silent connection is
            # held by the kernel, TCP_DEFER_ACCEPT, until it speaks).
            held.append(socket.create_connection((r.host, r.port), timeout=5))
            held[-1].sendall(b"GET / HTTP/1.1\r\n")
        time.sleep(0.3)
        statuses = []
        for _ in range(100):
            status, head, _ = exchange(r, b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
            statuses.append(status)
            if status == 503:
                assert "Retry-After:" in head
        assert statuses.count(503) == 100, statuses
    finally:
        for s in held:
            s.close()
    cdnlib.wait_for(lambda: cdnlib.http_request(r.host, r.port, "GET", "/index.html")[0] == 200,
                    timeout=10, what="service after the flood")
    assert_rss_bounded(r, before)


# -------------------------------------------------------- traversal
TRAVERSALS = [
    "/../secret.txt", "/../../etc/passwd", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt",
    "/..%2fsecret.txt", "/..%2Fsecret.txt", "/%2e%2e%2fsecret.txt", "/..%5csecret.txt",
    "/..\\secret.txt", "/%252e%252e/secret.txt", "/%252e%252e%252fsecret.txt",
    "/dir/../../secret.txt", "/dir/%2e%2e/%2e%2e/secret.txt", "/./../secret.txt",
    "/.%2e/secret.txt", "/%2e./secret.txt", "/..;/secret.txt", "/%c0%ae%c0%ae/secret.txt",
    "/%c0%af../secret.txt", "/%e0%80%ae%e0%80%ae/secret.txt", "/..%00/secret.txt",
    "/%00/../secret.txt", "//../secret.txt", "/dir/..//../secret.txt", "/escape/secret.txt",
    "/escape", "/escape/", "/etc-link/passwd", "http://x/../secret.txt",
    "/" + "../" * 50 + "etc/passwd", "/%2e%2e%5c%2e%2e%5csecret.txt", "/..%252fsecret.txt",
]


def test_path_traversal_in_every_encoding(cdn):
    work = cdn.tempdir("cdn-h-")
    marker = b"TOP-SECRET-" + os.urandom(8).hex().encode()
    (work / "secret.txt").write_bytes(marker + b"\n")
    root = work / "root"
    (root / "dir").mkdir(parents=True)
    (root / "index.html").write_bytes(b"<p>hello</p>\n")
    (root / "dir" / "page.html").write_bytes(b"inside\n")
    os.symlink(work, root / "escape")            # a symlink out of the root
    os.symlink("/etc", root / "etc-link")
    r = cdn.replica(root=root, extra=HEADER_TIMEOUT)
    for path in TRAVERSALS:
        status, head, raw = exchange(
            r, b"GET " + path.encode("latin-1") + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status in (400, 403, 404), f"{path}: {head}"
        assert marker not in raw, f"{path} leaked the secret"
        assert b"root:x:0:0" not in raw, f"{path} leaked /etc/passwd"
    served(r)


# ---------------------------------------------------- hostile replicas
class _Fake(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def start_fake(handler):
    """A threaded TCP server on a free loopback port, serving in the background."""
    srv = _Fake(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return srv


def fake_replica(mode):
    """A replica that misbehaves: 'garbage' answers random bytes, 'hang'
    reads and never answers, 'reset' resets every connection, 'slow-status'
    dribbles a status answer one byte a second, 'huge' sends an endless head."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            s = self.request
            s.settimeout(30)
            try:
                if mode == "reset":
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    return
                while True:
                    data = s.recv(65536)
                    if not data:
                        return
                    if mode == "garbage":
                        s.sendall(random.randbytes(random.randint(1, 3000)))
                    elif mode == "hang":
                        continue
                    elif mode == "slow-status":
                        for ch in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}":
                            s.sendall(bytes([ch]))
                            time.sleep(1)
                    elif mode == "huge":
                        s.sendall(b"HTTP/1.1 200 OK\r\n")
                        for _ in range(2000):
                            s.sendall(b"X-Junk: " + b"j" * 1000 + b"\r\n")
            except OSError:
                return

    return start_fake(Handler)


def test_balancer_survives_replicas_that_answer_garbage_hang_or_reset(cdn):
    fakes = [fake_replica(m) for m in ("garbage", "hang", "reset", "slow-status", "huge")]
    try:
        good = cdn.replica()
        addrs = [f"127.0.0.1:{f.server_address[1]}" for f in fakes] + [good]
        b = cdn.balancer(addrs, policy="least-loaded")
        cdn.wait_up(b, 1, total=len(addrs))
        before = rss_kib(b.pid)
        # Several probe rounds against the bad ones.
        end = time.monotonic() + 4
        while time.monotonic() < end:
            status, headers, _ = cdnlib.http_request(b.host, b.port, "GET", "/index.html")
            assert status == 302
            assert headers["Location"].startswith(f"http://{good.address}/"), headers["Location"]
            time.sleep(0.2)
        s = b.status()
        assert s.get("up") == 1, s
        assert_rss_bounded(b, before, slack_mib=8)
    finally:
        for f in fakes:
            f.shutdown()
            f.server_close()


def streaming_fake(mode):
    """A replica whose polls are fine but whose status stream is not:
    'stream-garbage' sends one good document, then junk lines;
    'stream-stall' sends one good document, then nothing."""
    doc = json.dumps({"name": mode, "source": "fake", "state": "serving",
                      "active_connections": 0, "capacity": 1000, "requests_total": 0,
                      "bytes_total": 0, "bytes_per_second": 0, "load": 0.0,
                      "uptime_seconds": 1.0, "version": "fake"}).encode()

    def chunk(data):
        return b"%x\r\n%s\r\n" % (len(data), data)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            s = self.request
            s.settimeout(30)
            buf = b""
            try:
                while True:
                    while b"\r\n\r\n" not in buf:
                        data = s.recv(65536)
                        if not data:
                            return
                        buf += data
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    if b"watch=" not in head.split(b"\r\n")[0]:
                        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: %d\r\n\r\n%s" % (len(doc), doc))
                        continue
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n" + chunk(doc + b"\n"))
                    if mode == "stream-garbage":
                        time.sleep(0.3)
                        s.sendall(chunk(b"{not a status document}\n"))
                    # Both: nothing more on this stream.
                    while s.recv(65536):
                        pass
                    return
            except OSError:
                return

    return start_fake(Handler)


def test_balancer_polls_replicas_whose_status_stream_misbehaves(cdn):
    """A stream that stalls or carries junk is one failed probe; when a plain
    poll then works, the replica is polled from then on and stays up."""
    fakes = [streaming_fake(m) for m in ("stream-garbage", "stream-stall")]
    try:
        addrs = [f"127.0.0.1:{f.server_address[1]}" for f in fakes]
        b = cdn.balancer(addrs, probe={"interval": "300ms", "timeout": "200ms", "rise": 1})
        cdn.wait_up(b, 2)
        # Long enough for both streams to fail and several polls after.
        time.sleep(3)
        s = b.status()
        assert s.get("up") == 2, s
        # One failure each (the stream), not one per stream asked again.
        failures = b.metric("cdn_balancer_probes_failed_total")
        assert failures <= 2, failures
        log = b.log_text()
        for f in fakes:
            assert f"127.0.0.1:{f.server_address[1]}: its status stream failed" in log, log
    finally:
        for f in fakes:
            f.shutdown()
            f.server_close()


def test_balancer_with_only_bad_replicas_answers_503(cdn):
    fakes = [fake_replica(m) for m in ("garbage", "hang", "reset")]
    try:
        addrs = [f"127.0.0.1:{f.server_address[1]}" for f in fakes]
        b = cdn.balancer(addrs)
        time.sleep(2)
        status, headers, _ = cdnlib.http_request(b.host, b.port, "GET", "/index.html")
        assert status == 503
        assert headers.get("Retry-After")
    finally:
        for f in fakes:
            f.shutdown()
            f.server_close()


def test_balancer_under_hostile_clients(cdn):
    r = cdn.replica()
    b = cdn.balancer([r], extra=HEADER_TIMEOUT)
    cdn.wait_up(b, 1)
    before = rss_kib(b.pid)
    with Canary(b, "/x", expect=302):
        for data in (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                     b"GET / HTTP/1.1\nHost: x\n\n"):
            status, head, _ = exchange(b, data)
            assert status in (400, 414, 431), head
        with connect(b, timeout=20) as s:
            s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n" * 2000)
            got = b""
            while got.count(b"HTTP/1.1 302") < 2000:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                got += chunk
            assert got.count(b"HTTP/1.1 302") == 2000
    assert_rss_bounded(b, before, slack_mib=8)
