# SPDX-License-Identifier: MIT
"""HTTP/2 on both daemons: over TLS when ALPN chose h2, and h2c with prior
knowledge on the plain port (where HTTP/1.1 keeps working), through the
same handlers: curl --http2 / --http2-prior-knowledge, nghttp with many
streams, a small h2load run, the balancer's 302 and an edge replica over h2.
The integration-workers2 suite runs these with workers = 2."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from cdnlib import Pki, free_port, wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("nghttp") is None
    or shutil.which("h2load") is None, reason="needs openssl and nghttp2-client")

FILES = {
    "index.html": b"<p>hello over h2</p>\n",
    "big.bin": bytes(range(256)) * 4096 * 3,  # 3 MiB: many windows
    "dir/a.txt": b"a" * 1000,
}


@pytest.fixture
def pki(cdn):
    return Pki(cdn.tempdir("cdn-pki-"))


def tls_section(port, cert, key):
    return {"tls": {"port": port, "certificate": cert, "key": key}}


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "20", *map(str, args)],
                          capture_output=True, timeout=60)


def curl_head_body(*args):
    """(http version, status, headers dict, body) of one curl -i run."""
    res = curl("-i", "-w", "\n@@%{http_version}", *args)
    assert res.returncode == 0, res.stderr
    out, _, version = res.stdout.rpartition(b"\n@@")
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return version.decode(), int(lines[0].split()[1]), headers, body


@pytest.fixture
def replica(cdn, pki):
    cert, key = pki.leaf("replica")
    tls_port = free_port()
    r = cdn.replica(files=FILES, extra=tls_section(tls_port, cert, key))
    r.tls_port = tls_port
    return r


def comparable(headers):
    return {k: v for k, v in headers.items() if k not in ("date", "connection", "keep-alive")}


def test_curl_http2_over_tls_and_prior_knowledge_same_as_http11(replica, pki):
    h1 = curl_head_body("--http1.1", f"http://127.0.0.1:{replica.port}/index.html")
    tls = curl_head_body("--http2", "--cacert", pki.ca,
                         f"https://localhost:{replica.tls_port}/index.html")
    h2c = curl_head_body("--http2-prior-knowledge", f"http://127.0.0.1:{replica.port}/index.html")
    assert h1[0] == "1.1" and tls[0] == "2" and h2c[0] == "2"
    for got in (tls, h2c):
        assert got[1] == 200
        assert got[3] == FILES["index.html"]
        assert comparable(got[2]) == comparable(h1[2])
    # A big file, over many flow-control windows.
    for args in (("--http2", "--cacert", pki.ca, f"https://localhost:{replica.tls_port}/big.bin"),
                 ("--http2-prior-knowledge", f"http://127.0.0.1:{replica.port}/big.bin")):
        res = curl(*args)
        assert res.returncode == 0, res.stderr
        assert res.stdout == FILES["big.bin"]
    # HEAD, a 404 and a range, as HTTP/1.1 answers them.
    for extra, path in (((("-I",)), "/dir/a.txt"), ((), "/nothing"),
                        (("-r", "10-19"), "/dir/a.txt")):
        a = curl_head_body("--http1.1", *extra, f"http://127.0.0.1:{replica.port}{path}")
        b = curl_head_body("--http2-prior-knowledge", *extra,
                           f"http://127.0.0.1:{replica.port}{path}")
        assert (b[1], b[3]) == (a[1], a[3])
        assert comparable(b[2]) == comparable(a[2])
    # HTTP/1.1 still works on the plain port after all that.
    assert replica.get("/index.html")[2] == FILES["index.html"]


def test_nghttp_many_streams_and_h2load(replica, pki):
    urls = [f"http://127.0.0.1:{replica.port}/dir/a.txt?{i}" for i in range(60)]
    res = subprocess.run(["nghttp", "-n", "-s", "-m", "1", *urls],
                         capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    # One line per completed stream with its status.
    assert len(re.findall(rb"\n\s*\+?[0-9.]+(?:us|ms|s)\s+\+?[0-9.]+(?:us|ms|s)\s+", res.stdout)) \
        >= 60 or res.stdout.count(b"/dir/a.txt") >= 60, res.stdout[-2000:]
    res = subprocess.run(["h2load", "-n", "400", "-c", "4", "-m", "10",
                          f"http://127.0.0.1:{replica.port}/index.html"],
                         capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr
    m = re.search(rb"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed",
                  res.stdout)
    assert m, res.stdout
    assert m.group(3) == b"400" and m.group(4) == b"0", res.stdout
    res = subprocess.run(["h2load", "-n", "100", "-c", "2", "-m", "10",
                          f"https://localhost:{replica.tls_port}/dir/a.txt"],
                         capture_output=True, timeout=120)
    m = re.search(rb"(\d+) succeeded, (\d+) failed", res.stdout)
    assert m and m.group(1) == b"100", res.stdout + res.stderr
    # The metrics count HTTP/2 connections and streams.
    assert replica.metric("cdn_replica_http2_streams_total") >= 500
    assert replica.metric("cdn_replica_http2_connections_total") >= 6


def test_access_log_says_http2(cdn):
    log = cdn.tempdir("cdn-log-") / "access.log"
    r = cdn.replica(files=FILES, extra={"log": {"access": log}})
    res = curl("--http2-prior-knowledge", "-o", "/dev/null", f"http://127.0.0.1:{r.port}/index.html")
    assert res.returncode == 0, res.stderr

    def line():
        if not log.exists():
            return None
        return next((l for l in log.read_text().splitlines() if "HTTP/2.0" in l), None)

    found = wait_for(line, what="an HTTP/2.0 access line")
    assert '"GET /index.html HTTP/2.0" 200' in found


def test_balancer_302_over_h2(cdn, pki):
    r = cdn.replica()
    cert, key = pki.leaf("balancer")
    tls_port = free_port()
    b = cdn.balancer([r], extra=tls_section(tls_port, cert, key))
    cdn.wait_up(b, 1)
    for args in (("--http2", "--cacert", pki.ca, f"https://localhost:{tls_port}/index.html"),
                 ("--http2-prior-knowledge", f"http://127.0.0.1:{b.port}/index.html")):
        version, status, headers, _ = curl_head_body(*args)
        assert (version, status) == ("2", 302)
        assert headers["location"].endswith(f"{r.port}/index.html")


def test_edge_replica_over_h2(cdn, replica):
    edge = cdn.replica(origin=f"http://127.0.0.1:{replica.port}")
    for _ in range(2):  # a miss, then a hit
        version, status, headers, body = curl_head_body(
            "--http2-prior-knowledge", f"http://127.0.0.1:{edge.port}/big.bin")
        assert (version, status) == ("2", 200)
        assert body == FILES["big.bin"]
    assert "hit" in headers.get("cache-status", "")
