# SPDX-License-Identifier: MIT
"""Hostile HTTP/2 clients (h2c with prior knowledge on the plain port):
rapid reset (CVE-2023-44487), a CONTINUATION flood (CVE-2024-27316),
streams whose window never opens, and SETTINGS/PING floods from a client that
never reads. Each attacker is cut off or bounded; an ordinary client is
served within a second throughout, and the daemon's RSS stays bounded."""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

import cdnlib
from test_hostile import Canary, assert_rss_bounded, rss_kib
from test_store_bounds import sanitized

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ENHANCE_YOUR_CALM = 0xB


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream) + payload


def settings(**values):
    ids = {"window": 4, "frame": 5}
    return frame(4, 0, 0, b"".join(struct.pack(">HI", ids[k], v) for k, v in values.items()))


def headers(stream, path=b"/index.html", end_stream=True, end_headers=True):
    block = b"\x82\x86\x04" + bytes([len(path)]) + path + b"\x01\x09localhost"
    return frame(1, (1 if end_stream else 0) | (4 if end_headers else 0), stream, block)


def rst(stream):
    return frame(3, 0, stream, struct.pack(">I", 8))


def read_frames(s, until, timeout=10.0):
    """Frames (type, flags, stream, payload) read until `until(frame)` or EOF."""
    s.settimeout(timeout)
    buf = b""
    frames = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            f = (buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9:9 + n])
            buf = buf[9 + n:]
            frames.append(f)
            if until(f):
                return frames
    return frames


def goaway_code(frames):
    for kind, _, _, payload in frames:
        if kind == 7:
            return int.from_bytes(payload[4:8], "big")
    return None


def fast_canary(d):
    """An ordinary HTTP/1.1 client that must be served within 1 s."""
    def ask():
        status, _, _ = cdnlib.http_request(d.host, d.port, "GET", "/index.html", timeout=1.0)
        return status == 200
    return Canary(d, ask=ask)


@pytest.fixture
def h2_replica(cdn):
    r = cdn.replica(files={"index.html": b"<p>hello</p>\n" * 100,
                           "big.bin": b"x" * (4 << 20)},
                    extra={"server": {"send_timeout": "2s", "max_connections": 5000}},
                    start=False)
    if sanitized():  # freed buffers must leave, not wait in ASan's quarantine
        options = os.environ.get("ASAN_OPTIONS", "")
        r.extra_env["ASAN_OPTIONS"] = (options + ":" if options else "") + "quarantine_size_mb=0"
    r.start()
    return r


def test_rapid_reset_is_cut_off_with_enhance_your_calm(h2_replica):
    r = h2_replica
    before = rss_kib(r.pid)
    with fast_canary(r):
        for _ in range(10):
            with socket.create_connection((r.host, r.port), timeout=10) as s:
                burst = PREFACE + settings() + b"".join(
                    headers(i) + rst(i) for i in range(1, 2 * 5000, 2))
                try:
                    s.sendall(burst)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                frames = read_frames(s, lambda f: f[0] == 7)
                assert goaway_code(frames) == ENHANCE_YOUR_CALM
    assert r.metric("cdn_replica_http2_connections_total") >= 10
    assert_rss_bounded(r, before)


def test_continuation_flood_is_cut_off(h2_replica):
    r = h2_replica
    before = rss_kib(r.pid)
    with fast_canary(r):
        for _ in range(10):
            with socket.create_connection((r.host, r.port), timeout=10) as s:
                s.sendall(PREFACE + settings() + headers(1, end_headers=False))
                literal = b"\x40\x01x\x01y"
                sent = 0
                try:
                    for _ in range(200):
                        s.sendall(frame(9, 0, 1, literal) * 500)
                        sent += 500
                except (BrokenPipeError, ConnectionResetError):
                    pass
                frames = read_frames(s, lambda f: f[0] == 7)
                assert goaway_code(frames) is not None or sent < 100_000
    assert_rss_bounded(r, before)


def test_windows_that_never_open_cost_bounded_memory_and_are_reset(h2_replica):
    r = h2_replica
    before = rss_kib(r.pid)
    socks = []
    with fast_canary(r):
        for _ in range(20):
            s = socket.create_connection((r.host, r.port), timeout=10)
            socks.append(s)
            s.sendall(PREFACE + settings(window=0) +
                      b"".join(headers(i, b"/big.bin") for i in range(1, 200, 2)))
        time.sleep(0.5)  # the daemon has all of it now (and reads nothing more)
        assert_rss_bounded(r, before)
        # After send_timeout (2 s) every stream is reset.
        for s in socks:
            frames = read_frames(s, lambda f, seen=set(): f[0] == 3 and
                                 (seen.add(f[2]) or len(seen) >= 100), timeout=15)
            resets = {f[2] for f in frames if f[0] == 3}
            assert len(resets) == 100, f"{len(resets)} of 100 streams reset"
            s.close()
    assert_rss_bounded(r, before)


def test_settings_and_ping_floods_from_a_client_that_never_reads(h2_replica):
    r = h2_replica
    before = rss_kib(r.pid)
    with fast_canary(r):
        for flood in (frame(6, 0, 0, b"12345678"), frame(4, 0, 0, b"")):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(10)
            s.connect((r.host, r.port))
            closed = False
            try:
                s.sendall(PREFACE + settings())
                for _ in range(400):
                    s.sendall(flood * 1000)
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                closed = True
            # The daemon gave up on it (max_outbound_ack), or holds it bounded.
            s.close()
            assert closed or rss_kib(r.pid) <= before + 24 * 1024
    assert_rss_bounded(r, before)
