# SPDX-License-Identifier: MIT
"""Signals and sd_notify: graceful drain, the second signal, SIGHUP reloads
(good and broken files), STATUS= kept current."""

import hashlib
import signal
import time

import pytest

from cdnlib import RawConnection, free_port, port_refuses, wait_for
from conftest import DEFAULT_PAGE, FAST_PROBE

BIG_SIZE = 64 << 20
CHUNK = b"".join(bytes([i]) * 4096 for i in range(256))  # 1 MiB, not compressible-looking


@pytest.fixture
def big_replica(cdn):
    r = cdn.replica(start=False)
    h = hashlib.sha256()
    with open(r.root / "big.bin", "wb") as f:
        for i in range(BIG_SIZE // len(CHUNK)):
            block = CHUNK[i:] + CHUNK[:i]
            f.write(block)
            h.update(block)
    r.big_sha256 = h.hexdigest()
    r.start()
    return r


def start_download(r, prefix=1 << 20):
    """GET /big.bin on a raw socket with a small receive buffer; read the
    head and `prefix` body bytes slowly, leaving the rest in flight."""
    c = RawConnection(r.host, r.port, timeout=20, rcvbuf=64 * 1024)
    c.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers = c.read_head()
    assert status == 200
    assert int(headers["Content-Length"]) == BIG_SIZE
    h = hashlib.sha256()
    got = 0
    while got < prefix:
        data = c.recv_some(min(16384, prefix - got))
        assert data, "connection closed early"
        h.update(data)
        got += len(data)
    return c, h, got


def finish_download(c, h, got):
    while got < BIG_SIZE:
        data = c.recv_some(1 << 20)
        if not data:
            break
        h.update(data[: BIG_SIZE - got])
        got += len(data)
    return got, h.hexdigest()


def test_sigterm_drains_in_flight_download(big_replica):
    r = big_replica
    c, h, got = start_download(r)
    try:
        mark = len(r.notify.messages)
        r.signal(signal.SIGTERM)
        r.expect_exit = True
        r.notify.wait("STOPPING=1", start=mark, proc=r.proc)
        # New connections are refused while the download is still going.
        wait_for(lambda: port_refuses(r.host, r.port), timeout=5,
                 what="new connections to be refused after STOPPING=1")
        assert r.alive(), "replica exited with a download in flight"
        got, digest = finish_download(c, h, got)
        assert got == BIG_SIZE, f"download cut at {got} of {BIG_SIZE} bytes"
        assert digest == r.big_sha256
    finally:
        c.close()
    assert r.wait_exit(timeout=15) == 0


def test_sigint_once_is_graceful_too(big_replica):
    r = big_replica
    c, h, got = start_download(r)
    try:
        r.signal(signal.SIGINT)
        r.expect_exit = True
        r.notify.wait("STOPPING=1", proc=r.proc)
        got, digest = finish_download(c, h, got)
        assert got == BIG_SIZE and digest == r.big_sha256
    finally:
        c.close()
    assert r.wait_exit(timeout=15) == 0


def test_second_signal_exits_at_once(big_replica):
    r = big_replica
    c, h, got = start_download(r)  # and never read the rest: drain would take drain_timeout
    try:
        r.signal(signal.SIGTERM)
        r.expect_exit = True
        r.notify.wait("STOPPING=1", proc=r.proc)
        assert r.alive()
        start = time.monotonic()
        r.signal(signal.SIGTERM)
        r.wait_exit(timeout=5)  # drain_timeout is 20s
        assert time.monotonic() - start < 5
    finally:
        c.close()


def test_idle_keepalive_does_not_hold_the_drain(cdn):
    r = cdn.replica()
    conn = r.connection()
    conn.request("GET", "/index.html")
    assert conn.getresponse().read() == DEFAULT_PAGE
    try:
        start = time.monotonic()
        r.signal(signal.SIGTERM)
        assert r.wait_exit(timeout=10) == 0
        assert time.monotonic() - start < 10
        assert r.notify.find("STOPPING=1") is not None
    finally:
        conn.close()


def test_balancer_sigterm(cdn):
    rep = cdn.replica()
    b = cdn.balancer([rep])
    cdn.wait_up(b, 1)
    b.signal(signal.SIGTERM)
    assert b.wait_exit() == 0
    assert b.notify.find("STOPPING=1") is not None
    assert port_refuses(b.host, b.port)


def reload(d):
    """SIGHUP; expect RELOADING=1 with MONOTONIC_USEC=, then READY=1."""
    mark = len(d.notify.messages)
    d.signal(signal.SIGHUP)
    i = d.notify.wait("RELOADING=1", start=mark, proc=d.proc)
    assert any(e.startswith("MONOTONIC_USEC=") for e in d.notify.messages[i]), \
        d.notify.messages[i]
    usec = int(next(e for e in d.notify.messages[i] if e.startswith("MONOTONIC_USEC="))
               .split("=", 1)[1])
    now = time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
    assert abs(now - usec) < 30e6, (usec, now)
    d.wait_ready(start=i + 1)


def log_mentions(d, *words, timeout=5):
    wait_for(lambda: all(w in d.log_text() for w in words), timeout=timeout,
             what=f"the log to mention {words}")


def test_balancer_sighup_reload(cdn):
    rs = [cdn.replica(name=f"h{i}") for i in range(2)]
    b = cdn.balancer([rs[0]], policy="best")
    cdn.wait_up(b, 1)
    assert b.status()["policy"] == "best"
    held = b.connection()
    held.request("GET", "/.cdn/status")
    assert held.getresponse().read()

    # A good file: new policy, one more replica.
    b.write_config({
        "server": {"address": b.host, "port": b.port, "name": f"balancer-{b.port}"},
        "log": {"level": "debug", "file": b.dir / "balancerd.log"},
        "replicas": {"replica": [rs[0].address, rs[1].address]},
        "probe": FAST_PROBE,
        "balance": {"policy": "round-robin", "retry_after": "1s"},
    })
    reload(b)
    cdn.wait_up(b, 2)
    assert b.status()["policy"] == "round-robin"
    assert {x["address"] for x in b.status()["replicas"]} == {r.address for r in rs}
    # The connection from before the reload still works.
    held.request("GET", "/.cdn/status")
    r = held.getresponse()
    assert r.status == 200 and r.read()
    held.close()

    # A broken file: the old configuration stays, the daemon keeps serving.
    b.write_config(b.config_path.read_text() + "\n[balance]\nno_such_key = 1\n")
    line = len(b.config_path.read_text().splitlines())
    reload(b)
    assert b.alive()
    s = b.status()
    assert s["policy"] == "round-robin" and s["total"] == 2
    status, h, _ = b.get("/index.html")
    assert status == 302
    log_mentions(b, "no_such_key", f"{b.config_path}:{line}")

    # The replica list can shrink again.
    b.write_config({
        "server": {"address": b.host, "port": b.port, "name": f"balancer-{b.port}"},
        "log": {"level": "debug", "file": b.dir / "balancerd.log"},
        "replicas": {"replica": [rs[0].address]},
        "probe": FAST_PROBE,
        "balance": {"policy": "least-loaded", "retry_after": "1s"},
    })
    reload(b)
    cdn.wait_up(b, 1)
    assert b.status()["policy"] == "least-loaded"


def test_replica_sighup_reload(cdn):
    r = cdn.replica(extra={"content": {"max_age": "60s"}})
    held = r.connection()
    held.request("GET", "/index.html")
    resp = held.getresponse()
    resp.read()
    assert "max-age=60" in resp.getheader("Cache-Control")

    r.write_config(r.config_path.read_text().replace("max_age = 60s", "max_age = 2m"))
    reload(r)
    held.request("GET", "/index.html")
    resp = held.getresponse()
    assert resp.read() == DEFAULT_PAGE, "keep-alive connection broken by the reload"
    assert "max-age=120" in resp.getheader("Cache-Control")
    held.close()

    r.write_config(r.config_path.read_text().replace("max_age = 2m", "max_age = forever"))
    line = next(i + 1 for i, l in enumerate(r.config_path.read_text().splitlines())
                if l.startswith("max_age"))
    reload(r)
    assert r.alive()
    status, h, body = r.get("/index.html")
    assert status == 200 and body == DEFAULT_PAGE
    assert "max-age=120" in h["Cache-Control"]
    log_mentions(r, "max_age", f"{r.config_path}:{line}")


def test_balancer_status_line_is_kept_current(cdn):
    port = free_port()
    b = cdn.balancer([f"127.0.0.1:{port}"])
    wait_for(lambda: b.status()["up"] == 0 and
             b.status()["replicas"][0]["health"] == "down", what="replica down")
    b.notify.poll()
    before = b.notify.values("STATUS")
    assert before, "no STATUS= at all"
    cdn.replica(port=port)
    cdn.wait_up(b, 1)
    wait_for(lambda: b.notify.values("STATUS")[-1] != before[-1], timeout=10,
             what="a new STATUS= line after a replica came up")


def test_replica_status_state_and_notify_sequence(cdn):
    r = cdn.replica()
    assert r.status()["state"] == "serving"
    r.signal(signal.SIGTERM)
    assert r.wait_exit() == 0
    r.notify.poll()
    ready = r.notify.find("READY=1")
    stopping = r.notify.find("STOPPING=1")
    assert ready is not None and stopping is not None and ready < stopping
