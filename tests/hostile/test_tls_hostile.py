# SPDX-License-Identifier: MIT
"""Hostile TLS clients against the [tls] port: junk and truncated
ClientHellos, and thousands of connections stalled in the handshake. Each
costs one connection until the handshake timeout; a well-behaved HTTPS
client is served within a second throughout, and the RSS stays bounded."""

from __future__ import annotations

import os
import socket
import ssl
import time

import pytest

from cdnlib import Pki, free_port
from test_hostile import Canary, assert_rss_bounded, rss_kib
from test_pipeline_flood import sanitized


def https_ok(port, ctx, timeout=1.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    return data.startswith(b"HTTP/1.1 200")


@pytest.fixture
def tls_replica(cdn):
    pki = Pki(cdn.tempdir("cdn-pki-"))
    cert, key = pki.leaf("replica")
    port = free_port()
    r = cdn.replica(files={"index.html": b"<p>hello</p>\n" * 100},
                    extra={"server": {"max_connections": 5000},
                           "tls": {"port": port, "certificate": cert, "key": key,
                                   "handshake_timeout": "2s"}})
    r.tls_port = port
    r.ctx = pki.context()
    assert https_ok(port, r.ctx)
    return r


def read_all(s, timeout=5.0):
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return data


# A ClientHello's first bytes: a handshake record header and the start of its body.
HELLO_START = bytes.fromhex("160301020001000200 0303".replace(" ", ""))


@pytest.mark.parametrize("junk", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",          # plain HTTP to the TLS port
    b"\x16\x03\x01\xff\xff" + os.urandom(300),     # a record longer than TLS allows
    b"\x16\x03\x01\x00\x30\x01\x00\x00\x2c" + b"\xff" * 0x2c,  # a junk ClientHello
    os.urandom(2000),
    b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10",  # an SSLv2 hello
])
def test_junk_client_hellos_are_closed_with_an_alert(tls_replica, junk):
    r = tls_replica
    with socket.create_connection(("127.0.0.1", r.tls_port), timeout=5) as s:
        try:
            s.sendall(junk)
        except OSError:
            pass
        answer = read_all(s)
    # An alert record, or a close: never an HTTP answer, never a hang.
    assert answer == b"" or answer[0] == 0x15, answer[:20]
    assert https_ok(r.tls_port, r.ctx)


def test_truncated_client_hello_waits_for_the_handshake_timeout(tls_replica):
    r = tls_replica
    with socket.create_connection(("127.0.0.1", r.tls_port), timeout=10) as s:
        s.sendall(HELLO_START)
        start = time.monotonic()
        answer = read_all(s, timeout=10)
        took = time.monotonic() - start
    assert answer == b"" or answer[0] == 0x15
    assert 1.5 <= took <= 6, f"closed after {took:.1f} s (handshake_timeout = 2s)"


def test_two_thousand_connections_stalled_in_the_handshake(tls_replica):
    r = tls_replica
    before = rss_kib(r.pid)
    socks = []
    # Another HTTPS client is served within a second all along.
    with Canary(r, ask=lambda: https_ok(r.tls_port, r.ctx, timeout=1.0)):
        try:
            for i in range(2000):
                s = socket.create_connection(("127.0.0.1", r.tls_port), timeout=10)
                # Half send the start of a ClientHello, half nothing at all.
                if i % 2 == 0:
                    s.sendall(HELLO_START)
                socks.append(s)
            peak = rss_kib(r.pid)
            deadline = time.monotonic() + 20
            closed = 0
            for s in socks:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    data = s.recv(4096)
                    closed += data == b"" or data[0] == 0x15
                except ConnectionResetError:
                    closed += 1
                except socket.timeout:
                    pass
        finally:
            for s in socks:
                s.close()
    assert closed == 2000, f"only {closed} of 2000 stalled handshakes were closed"
    # ASan's quarantine keeps freed memory resident: no memory bound there.
    if not sanitized():
        assert peak - before < 96 * 1024, f"2000 stalled handshakes cost {peak - before} KiB"
        assert_rss_bounded(r, before)
    assert https_ok(r.tls_port, r.ctx)
