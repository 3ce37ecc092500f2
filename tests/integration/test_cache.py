# SPDX-License-Identifier: MIT
"""cdn-replicad as an edge cache: [content] origin= pulls through from an
origin (a replica serving a directory, i.e. tiered caching, or a small
Python origin whose behaviour and request count the test controls).

Hit / miss / revalidation / stale paths, request collapsing, origin down or
slow, restart warm, corrupt cache files, Range across tiers, https with a
test CA, a full disk (tmpfs), and the cache figures in status and metrics.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import os
import socket
import ssl
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import cdnlib
from cdnlib import free_port, http_request, wait_for

FILES = {
    "index.html": b"<html><body>origin start page</body></html>\n",
    "a.txt": b"alpha\n" * 100,
    "data.bin": bytes(range(256)) * 4000,  # 1 MB: disk, not the memory tier
}

# The suite runs with CDN_WORKERS=1 and 2 (see conftest.py): edges too.
WORKERS = os.environ.get("CDN_WORKERS", "1")


def digest_of(body):
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


# ------------------------------------------------------------------ helpers


def edge(cdn, origin_url, content=None, start=True, wait_ready=True, cache_dir=None,
         server=None):
    """A replica pulling from origin_url, its cache in its own work dir."""
    d = cdn.replica(start=False)
    d.cache_dir = Path(cache_dir) if cache_dir else d.dir / "cache"
    sections = {
        "server": {"address": d.host, "port": d.port, "name": d.name, "drain_timeout": "20s",
                   "workers": WORKERS},
        "log": {"level": "debug", "file": d.dir / "replicad.log"},
        "content": {"origin": origin_url, "cache_dir": d.cache_dir, "origin_timeout": "2s"},
    }
    sections["content"].update(content or {})
    sections["server"].update(server or {})
    d.write_config(sections)
    if start:
        d.start(wait_ready=wait_ready)
    return d


def restart(d):
    """Stop (SIGTERM, exit 0) and start again; waits for the new READY=1."""
    assert d.stop() == 0
    mark = len(d.notify.messages)
    d.expect_exit = False
    d.start(wait_ready=False)
    d.wait_ready(start=mark)


def origin_requests(replica):
    """requests_total of a replica acting as origin. Each call is itself a
    request: between two calls, the count grows by what others asked + 1."""
    return replica.status()["requests_total"]


class PyOrigin:
    """An HTTP origin in this process: routes[path] = (status, headers, body,
    delay); every request is logged (path and headers)."""

    def __init__(self, tls_context=None):
        self.routes = {}
        self.log = []
        self.lock = threading.Lock()
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                with origin.lock:
                    origin.log.append((self.path, dict(self.headers)))
                    route = origin.routes.get(self.path.split("?")[0])
                if route is None:
                    status, headers, body, delay = 404, {}, b"no such thing\n", 0
                else:
                    status, headers, body, delay = route
                if callable(body):
                    status, headers, body = body(self)
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if status != 304:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if status != 304:
                    self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls_context is not None:
            self.server.socket = tls_context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.scheme = "https" if tls_context else "http"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/"):
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def count(self, path):
        with self.lock:
            return sum(1 for p, _ in self.log if p == path)

    def requests(self, path):
        with self.lock:
            return [h for p, h in self.log if p == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pyorigin():
    o = PyOrigin()
    o.routes["/"] = (200, {"Content-Type": "text/html", "Cache-Control": "max-age=60"},
                     FILES["index.html"], 0)
    yield o
    o.close()


# ------------------------------------------------------------- hit and miss


def test_tiered_miss_then_hit(cdn):
    origin = cdn.replica(FILES, name="origin")
    e = edge(cdn, origin.url("/"))
    before = origin_requests(origin)
    s1, h1, b1 = e.get("/a.txt")
    assert s1 == 200 and b1 == FILES["a.txt"]
    assert "fwd=uri-miss" in h1["Cache-Status"] and "stored" in h1["Cache-Status"]
    s2, h2, b2 = e.get("/a.txt")
    assert s2 == 200 and b2 == FILES["a.txt"]
    assert h2["Cache-Status"].endswith("; hit"), h2["Cache-Status"]
    assert h2["Repr-Digest"] == digest_of(FILES["a.txt"])
    assert origin_requests(origin) - before - 1 == 1
    # The origin's strong ETag is kept, so validators agree on every tier.
    _, oh, _ = origin.get("/a.txt")
    assert h2["ETag"] == oh["ETag"]
    assert "Age" in h2
    # Big object: from disk (sendfile path), digest intact.
    s3, h3, b3 = e.get("/data.bin")
    assert s3 == 200 and b3 == FILES["data.bin"]
    assert e.get("/data.bin")[2] == FILES["data.bin"]
    # HEAD, 404 passed through, conditional request answered by the edge.
    assert e.request("HEAD", "/a.txt")[0] == 200
    assert e.get("/missing.txt")[0] == 404
    assert e.get("/a.txt", {"If-None-Match": h2["ETag"]})[0] == 304


def test_status_and_metrics_report_cache(cdn):
    origin = cdn.replica(FILES, name="origin")
    e = edge(cdn, origin.url("/"))
    for _ in range(3):
        assert e.get("/a.txt")[0] == 200
    st = e.status()
    assert st["source"] == "origin:" + origin.url("/")
    assert st["cache_hits"] >= 2 and st["cache_misses"] >= 1
    assert 0 < st["cache_hit_ratio"] < 1
    assert st["cache_bytes"] >= len(FILES["a.txt"]) + len(FILES["index.html"])
    assert st["origin_errors_total"] == 0
    _, _, m = e.get("/.cdn/metrics")
    text = m.decode()
    for name in ("cdn_replica_cache_hit_ratio", "cdn_replica_cache_bytes",
                 "cdn_replica_origin_requests_failed_total", "cdn_replica_cache_hits_total"):
        assert f'\n{name}{{site="default"}} ' in text, name
    e.check_metrics_page()
    origin.check_metrics_page()  # a replica of local files: the other set of families


# ------------------------------------------------------------- collapsing


def test_collapsing_one_origin_fetch(cdn, pyorigin):
    body = os.urandom(300_000)
    pyorigin.routes["/slow.bin"] = (200, {"Cache-Control": "max-age=60"}, body, 1.0)
    e = edge(cdn, pyorigin.url("/"))

    def fetch(_):
        return http_request(e.host, e.port, "GET", "/slow.bin")

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(fetch, range(12)))
    assert all(s == 200 and b == body for s, _, b in results)
    assert pyorigin.count("/slow.bin") == 1


# ------------------------------------------------------------- revalidation


def test_revalidation_304_refreshes(cdn, pyorigin):
    etag = '"v1"'

    def answer(handler):
        if handler.headers.get("If-None-Match") == etag:
            return 304, {"ETag": etag, "Cache-Control": "max-age=1"}, b""
        return 200, {"ETag": etag, "Cache-Control": "max-age=1"}, b"version one\n"

    pyorigin.routes["/r.txt"] = (200, {}, answer, 0)
    e = edge(cdn, pyorigin.url("/"), {"stale_while_revalidate": "0"})
    assert e.get("/r.txt")[2] == b"version one\n"
    time.sleep(1.2)  # let max-age=1 run out (freshness is in whole seconds)
    wait_for(lambda: "fwd-status=304" in e.get("/r.txt")[1]["Cache-Status"],
             what="a revalidation answered 304")
    assert pyorigin.requests("/r.txt")[-1].get("If-None-Match") == etag
    s, h, b = e.get("/r.txt")
    assert s == 200 and b == b"version one\n" and h["ETag"] == etag


def test_stale_while_revalidate_serves_at_once(cdn, pyorigin):
    version = {"n": 1}

    def answer(handler):
        return 200, {"Cache-Control": "max-age=1, stale-while-revalidate=30"}, \
            f"version {version['n']}\n".encode()

    pyorigin.routes["/s.txt"] = (200, {}, answer, 0)
    e = edge(cdn, pyorigin.url("/"))
    assert e.get("/s.txt")[2] == b"version 1\n"
    version["n"] = 2
    time.sleep(1.2)
    s, h, b = e.get("/s.txt")
    assert s == 200 and b == b"version 1\n"  # stale, without waiting
    assert "stale-while-revalidate" in h["Cache-Status"]
    wait_for(lambda: e.get("/s.txt")[2] == b"version 2\n", what="the background refresh")
    # One refresh brought version 2; on a slow machine the 1 s copy may have
    # gone stale again while we polled, and been refreshed once more.
    assert pyorigin.count("/s.txt") >= 2


def test_no_store_is_not_cached(cdn, pyorigin):
    pyorigin.routes["/ns"] = (200, {"Cache-Control": "no-store"}, b"private stuff", 0)
    e = edge(cdn, pyorigin.url("/"))
    assert e.get("/ns")[2] == b"private stuff"
    assert e.get("/ns")[2] == b"private stuff"
    assert pyorigin.count("/ns") == 2


# ------------------------------------------------------------- origin failures


def test_origin_down_serves_stale_else_502(cdn):
    origin = cdn.replica(FILES, name="origin", extra={"content": {"max_age": "1s"}})
    # stale_if_error is an operator override, off unless set.
    e = edge(cdn, origin.url("/"), {"stale_if_error": "1h"})
    assert e.get("/a.txt")[2] == FILES["a.txt"]
    origin.stop()
    time.sleep(1.2)
    s, h, b = e.get("/a.txt")
    assert s == 200 and b == FILES["a.txt"]
    assert "stale-if-error" in h["Cache-Status"]
    assert e.get("/never-fetched.txt")[0] == 502
    assert e.status()["origin_errors_total"] >= 2


def test_origin_5xx_serves_stale(cdn, pyorigin):
    state = {"broken": False}

    def answer(handler):
        if state["broken"]:
            return 503, {}, b"down for maintenance"
        return 200, {"Cache-Control": "max-age=1"}, b"good copy"

    pyorigin.routes["/x"] = (200, {}, answer, 0)
    e = edge(cdn, pyorigin.url("/"), {"stale_if_error": "1h"})
    assert e.get("/x")[2] == b"good copy"
    state["broken"] = True
    time.sleep(1.2)
    s, h, b = e.get("/x")
    assert s == 200 and b == b"good copy" and "fwd-status=503" in h["Cache-Status"]


def test_origin_timeout_504(cdn, pyorigin):
    pyorigin.routes["/hang"] = (200, {}, b"late", 6)
    e = edge(cdn, pyorigin.url("/"), {"origin_timeout": "1s"})
    t0 = time.monotonic()
    assert e.get("/hang")[0] == 504
    assert time.monotonic() - t0 < 5


def test_start_fails_without_origin_and_cache(cdn):
    e = edge(cdn, f"http://127.0.0.1:{free_port()}/", start=False)
    e.start(wait_ready=False)
    assert e.wait_exit() != 0
    assert "cannot fetch the start page" in e.stderr_path.read_text()


def test_restart_warm_with_origin_down(cdn):
    origin = cdn.replica(FILES, name="origin")
    e = edge(cdn, origin.url("/"))
    assert e.get("/data.bin")[2] == FILES["data.bin"]
    origin.stop()
    restart(e)  # the start page is cached: READY without the origin
    s, h, b = e.get("/data.bin")
    assert s == 200 and b == FILES["data.bin"] and h["Cache-Status"].endswith("; hit")
    assert e.get("/")[2] == FILES["index.html"]
    assert e.status()["cache_objects"] >= 2


def test_corrupt_cache_file_is_refetched(cdn):
    origin = cdn.replica(FILES, name="origin")
    e = edge(cdn, origin.url("/"))
    assert e.get("/data.bin")[2] == FILES["data.bin"]
    assert e.stop() == 0
    bodies = [p for p in e.cache_dir.glob("*.body") if p.stat().st_size == len(FILES["data.bin"])]
    assert len(bodies) == 1
    with open(bodies[0], "r+b") as f:  # same size, other bytes
        f.seek(1000)
        f.write(b"CORRUPTED")
    before = origin_requests(origin)
    mark = len(e.notify.messages)
    e.expect_exit = False
    e.start(wait_ready=False)
    e.wait_ready(start=mark)
    s, h, b = e.get("/data.bin")
    assert s == 200 and b == FILES["data.bin"] and "fwd=uri-miss" in h["Cache-Status"]
    assert origin_requests(origin) - before - 1 == 1


# ------------------------------------------------------------- ranges


def test_range_and_if_range_across_tiers(cdn):
    origin = cdn.replica(FILES, name="origin")
    e = edge(cdn, origin.url("/"))
    data = FILES["data.bin"]
    # A Range on a miss still fetches (and caches) the whole object.
    s, h, b = e.get("/data.bin", {"Range": "bytes=100-199"})
    assert s == 206 and b == data[100:200]
    assert h["Content-Range"] == f"bytes 100-199/{len(data)}"
    etag = h["ETag"]
    s, _, b = e.get("/data.bin", {"Range": "bytes=500000-", "If-Range": etag})
    assert s == 206 and b == data[500000:]
    # Resuming elsewhere: the origin accepts the edge's validator.
    s, _, b = origin.get("/data.bin", {"Range": "bytes=900000-", "If-Range": etag})
    assert s == 206 and b == data[900000:]
    assert e.get("/data.bin", {"Range": f"bytes={len(data)}-"})[0] == 416


def test_cdn_get_through_edge(cdn, workdir):
    origin = cdn.replica(FILES, name="origin")
    e = edge(cdn, origin.url("/"))
    out = Path(workdir) / "data.bin"
    r = cdnlib.run_get([e.url("/data.bin"), "-o", out], cwd=workdir)
    assert r.returncode == 0, cdnlib.describe_run(r)
    assert out.read_bytes() == FILES["data.bin"]


# ------------------------------------------------------------- https


def make_cert(d):
    key, crt = d / "key.pem", d / "cert.pem"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", crt], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"openssl cannot make a certificate: {r.stderr}")
    return key, crt


def test_https_origin_with_ca_file(cdn):
    d = cdn.tempdir("cdn-tls-")
    key, crt = make_cert(d)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    o = PyOrigin(tls_context=ctx)
    try:
        o.routes["/"] = (200, {"Content-Type": "text/html"}, b"secure start", 0)
        o.routes["/s.txt"] = (200, {"Cache-Control": "max-age=60"}, b"over tls\n", 0)
        e = edge(cdn, o.url("/"), {"ca_file": crt})
        assert e.get("/s.txt")[2] == b"over tls\n"
        assert e.get("/")[2] == b"secure start"
        # Without the CA the certificate is not trusted: no start page, no start.
        bad = edge(cdn, o.url("/"), start=False)
        bad.start(wait_ready=False)
        assert bad.wait_exit() != 0
        assert "cannot fetch the start page" in bad.stderr_path.read_text()
    finally:
        o.close()


# ------------------------------------------------------------- disk full


@contextlib.contextmanager
def edge_on_small_disk(cdn):
    """(origin, edge, mount): an edge whose cache_dir is on a 512 KiB tmpfs
    under a 64 MiB cache_size; unmounted at the end."""
    mnt = cdn.tempdir("cdn-tmpfs-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    try:
        origin = cdn.replica(FILES, name="origin")
        e = edge(cdn, origin.url("/"), {"cache_size": "64M"}, cache_dir=mnt / "cache")
        yield origin, e, mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_from_the_start_passes_the_body_through(cdn):
    # The clients of a miss are answered (head and first bytes) before its
    # first write. When that write finds no room, the body reaches them from
    # memory and is stored nowhere: held once, not twice (a streamed copy
    # and a spilled one beside it, as it was when this first went in).
    with edge_on_small_disk(cdn) as (origin, e, mnt):
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)  # full before the miss
        try:
            while os.write(fd, b"\0" * 4096) > 0:
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        for _ in range(2):
            before = origin_requests(origin)
            s, h, b = e.get("/data.bin")
            assert s == 200 and b == FILES["data.bin"]
            # Not stored: the second request is a miss again.
            assert origin_requests(origin) - before - 1 == 1
        log = e.log_text()
        assert "not cached: not on disk" in log and "passed through" in log, log[-2000:]
        assert e.stop() == 0


def test_disk_full_still_serves_and_keeps_cache(cdn):
    with edge_on_small_disk(cdn) as (origin, e, mnt):
        assert e.get("/a.txt")[2] == FILES["a.txt"]
        # 1 MB does not fit in 512 KB: served anyway (held in memory), not stored.
        s, h, b = e.get("/data.bin")
        assert s == 200 and b == FILES["data.bin"]
        assert h["Repr-Digest"] == digest_of(FILES["data.bin"])
        # Streamed (read-while-writer): its head, Cache-Status "stored"
        # included, left before the disk filled up; that it was not stored
        # shows in writes_failed_total below, and the copy no hit later.
        # What was cached is still there and served.
        s, h, b = e.get("/a.txt")
        assert s == 200 and b == FILES["a.txt"] and h["Cache-Status"].endswith("; hit")
        # No half-written file left: at most the spare temp file the cache
        # keeps open for the next miss, empty.
        left = list((mnt / "cache" / "tmp").iterdir())
        assert len(left) <= 1 and all(p.stat().st_size == 0 for p in left), left
        _, _, m = e.get("/.cdn/metrics")
        assert '\ncdn_replica_cache_writes_failed_total{site="default"} 1\n' in m.decode()
        assert e.stop() == 0
