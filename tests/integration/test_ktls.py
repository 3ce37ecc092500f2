# SPDX-License-Identifier: MIT
"""kTLS ([tls] ktls): the start-up log says whether TLS sessions are handed
to the kernel, and file bodies over TLS arrive whole whichever way they go
(a large file, ranges, HEAD; TLS 1.2 and 1.3).  The kernel path needs the
`tls` ULP, which the test machines lack: here these tests hold the
fallback (bounded chunks encrypted in user space); the kernel path's own
decisions are unit tests (tests/unit/ktls_test.cc)."""

from __future__ import annotations

import hashlib
import random
import shutil
import socket
import ssl
import subprocess

import pytest

from cdnlib import Pki, free_port, wait_for

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

UNAVAILABLE = ("kTLS unavailable: no tls ULP in the kernel; "
               "file bodies encrypted in 64 KiB chunks")
SIZE = 5 * 1024 * 1024 + 123


@pytest.fixture
def pki(cdn):
    return Pki(cdn.tempdir("cdn-pki-"))


def kernel_takes_the_tls_ulp():
    """The daemon's probe, asked the same way: setsockopt(TCP_ULP, "tls")
    on a connected loopback TCP socket."""
    tcp_ulp = getattr(socket, "TCP_ULP", 31)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname()) as c:
            listener.accept()[0].close()
            try:
                c.setsockopt(socket.IPPROTO_TCP, tcp_ulp, b"tls")
            except OSError:
                return False
            return True


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "30", *map(str, args)],
                          capture_output=True, timeout=60)


def tls_get(port, ctx, path, headers=""):
    """(status line, head, body) of one GET over TLS, read to the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}"
                      "Connection: close\r\n\r\n".encode())
            data = bytearray()
            while chunk := s.recv(1 << 16):
                data += chunk
            version = s.version()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), head.decode("latin-1").lower(), body, version


def log_line(r, text):
    wait_for(lambda: text in r.log_text(), timeout=10, what=f"{text!r} in the log")


def test_the_log_says_which_and_file_bodies_over_tls_arrive_whole(cdn, pki):
    content = random.Random(16).randbytes(SIZE)
    cert, key = pki.leaf("replica")
    tls_port = free_port()
    r = cdn.replica(files={"big.bin": content},
                    extra={"tls": {"port": tls_port, "certificate": cert, "key": key}})
    on = kernel_takes_the_tls_ulp()
    log_line(r, "kTLS: on" if on else UNAVAILABLE)
    url = f"https://localhost:{tls_port}/big.bin"

    # The whole file, with curl (TLS 1.3) ...
    res = curl("--http1.1", "--cacert", pki.ca, url)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout) == SIZE
    assert hashlib.sha256(res.stdout).digest() == hashlib.sha256(content).digest()
    # ... ranges: one from the middle across chunk boundaries, a suffix ...
    res = curl("--http1.1", "--cacert", pki.ca, "-r", "65000-2200000", url)
    assert res.returncode == 0 and res.stdout == content[65000:2200001], res.stderr
    res = curl("--http1.1", "--cacert", pki.ca, "-r", "-70000", url)
    assert res.returncode == 0 and res.stdout == content[-70000:], res.stderr
    # ... and HEAD: the length, no body.
    res = curl("--http1.1", "--cacert", pki.ca, "-I", url)
    assert res.returncode == 0, res.stderr
    assert f"content-length: {SIZE}" in res.stdout.decode().lower()
    assert res.stdout.endswith(b"\r\n\r\n")

    # TLS 1.2 too, whole and a range, with Python's ssl.
    ctx12 = pki.context()
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    status, _, body, version = tls_get(tls_port, ctx12, "/big.bin")
    assert (status, version) == ("HTTP/1.1 200 OK", "TLSv1.2")
    assert body == content
    status, head, body, _ = tls_get(tls_port, ctx12, "/big.bin", "Range: bytes=1-131072\r\n")
    assert status == "HTTP/1.1 206 Partial Content"
    assert f"content-range: bytes 1-131072/{SIZE}" in head
    assert body == content[1:131073]

    # Six handshakes, each counted on the path it took.
    kernel = r.metric("cdn_replica_ktls_connections_total")
    user = r.metric("cdn_replica_tls_userspace_connections_total")
    assert kernel + user == 6, (kernel, user)
    if not on:
        assert kernel == 0
    assert r.metric("cdn_replica_ktls_connections") == 0  # all closed


def test_ktls_off_says_off_and_still_serves(cdn, pki):
    cert, key = pki.leaf("replica")
    tls_port = free_port()
    r = cdn.replica(files={"f.bin": b"z" * 200_000},
                    extra={"tls": {"port": tls_port, "certificate": cert, "key": key,
                                   "ktls": "off"}})
    log_line(r, "kTLS: off ([tls] ktls = off); file bodies encrypted in 64 KiB chunks")
    assert "kTLS unavailable" not in r.log_text()
    status, _, body, _ = tls_get(tls_port, pki.context(), "/f.bin")
    assert status == "HTTP/1.1 200 OK" and body == b"z" * 200_000
    assert r.metric("cdn_replica_ktls_connections_total") == 0
    assert r.metric("cdn_replica_tls_userspace_connections_total") == 1
