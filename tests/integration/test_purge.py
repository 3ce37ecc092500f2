# SPDX-License-Identifier: MIT
"""Purges: PURGE on a replica (URL, prefix, tag; hard and soft) and through
the balancer to every replica, including one that is down during the purge
and must not be sent a client before it has applied it.

The origin counts its fetches per path and tags every object with a
Surrogate-Key (its directory and "all") and a Cache-Tag ("n<number>")."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

import cdnlib

TOKEN = "s3cr3t-purge-token-0123456789"


class CountingOrigin:
    """GET /DIR/NAME -> "<version> /DIR/NAME"; fetches counted per path;
    `delay` seconds before each answer (a slow origin, for stampedes)."""

    def __init__(self):
        self.version = "v1"
        self.delay = 0.0
        self.fetches: dict[str, int] = {}
        self.lock = threading.Lock()
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                with origin.lock:
                    origin.fetches[self.path] = origin.fetches.get(self.path, 0) + 1
                    version, delay = origin.version, origin.delay
                if delay:
                    time.sleep(delay)
                body = f"{version} {self.path}".encode()
                parts = self.path.strip("/").split("/")
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Cache-Control", "max-age=3600")
                self.send_header("Surrogate-Key", f"{parts[0]} all")
                self.send_header("Cache-Tag", f"n{parts[-1]}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def count(self, path):
        with self.lock:
            return self.fetches.get(path, 0)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origin():
    o = CountingOrigin()
    yield o
    o.close()


@pytest.fixture
def token_file(cdn):
    p = cdn.tempdir("cdn-tok-") / "purge.token"
    p.write_text(TOKEN + "\n")
    return p


def edge(cdn, origin, token_file=None, admin=None):
    extra = {"admin": dict(admin or {})}
    if token_file is not None:
        extra["admin"]["token_file"] = token_file
    return cdn.replica(origin=origin.url, extra=extra)


def purge(daemon, target, token=TOKEN, **headers):
    h = {k.replace("_", "-"): v for k, v in headers.items()}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    return daemon.request("PURGE", target, h)


def body_of(daemon, path):
    status, _, body = daemon.get(path)
    assert status == 200, (path, status, body)
    return body.decode()


def test_purge_refused_without_token_file(cdn, origin):
    r = edge(cdn, origin)
    status, _, body = purge(r, "/a/1")
    assert status == 403
    assert b"token_file" in body


def test_purge_refused_without_the_token(cdn, origin, token_file):
    r = edge(cdn, origin, token_file)
    body_of(r, "/a/1")
    for token in (None, "wrong", TOKEN + "x", ""):
        status, headers, _ = purge(r, "/a/1", token=token)
        assert status == 401, token
        assert headers.get("WWW-Authenticate") == "Bearer"
    body_of(r, "/a/1")
    assert origin.count("/a/1") == 1  # nothing was purged


def test_purge_refused_outside_the_allow_list(cdn, origin, token_file):
    r = edge(cdn, origin, token_file, admin={"allow": "192.0.2.0/24"})
    status, _, _ = purge(r, "/a/1")
    assert status == 403
    b = cdn.balancer([r], extra={"admin": {"token_file": token_file, "allow": "192.0.2.0/24"}})
    status, _, _ = purge(b, "/a/1")
    assert status == 403


def test_purge_url_prefix_and_tag(cdn, origin, token_file):
    r = edge(cdn, origin, token_file)
    paths = ["/a/1", "/a/2", "/b/1", "/b/2", "/c/3"]
    for p in paths:
        body_of(r, p)
        body_of(r, p)
    assert all(origin.count(p) == 1 for p in paths)

    status, _, body = purge(r, "/a/1")
    assert status == 200, body
    doc = json.loads(body)
    assert doc["purged"] == 1 and doc["scope"] == "url" and not doc["soft"]
    status, _, body = purge(r, "/a/1")  # idempotent
    assert status == 200 and json.loads(body)["purged"] == 0
    body_of(r, "/a/2")
    assert origin.count("/a/1") == 1 and origin.count("/a/2") == 1
    body_of(r, "/a/1")
    assert origin.count("/a/1") == 2

    status, _, body = purge(r, "/b/*")
    assert status == 200 and json.loads(body)["purged"] == 2
    # By tag: Surrogate-Key "c", Cache-Tag "n2" (/a/2 and /b/2, the latter gone).
    status, _, body = purge(r, "/", CDN_Purge_Tag="c n2")
    assert status == 200 and json.loads(body)["purged"] == 2
    for p in paths:
        body_of(r, p)
    assert {p: origin.count(p) for p in paths} == {"/a/1": 2, "/a/2": 2, "/b/1": 2,
                                                   "/b/2": 2, "/c/3": 2}
    # The five, and "/" the replica fetched at start (tagged "" and "all").
    status, _, body = purge(r, "/", CDN_Purge_Tag="all")
    assert status == 200 and json.loads(body)["purged"] == 6
    status, _, body = purge(r, "/", CDN_Purge_Tag=" , ")
    assert status == 400


def test_soft_purge_one_origin_fetch_under_200_clients(cdn, origin, token_file):
    r = edge(cdn, origin, token_file)
    assert body_of(r, "/s/1") == "v1 /s/1"
    origin.version, origin.delay = "v2", 1.0
    status, _, body = purge(r, "/s/1", CDN_Purge_Soft="1")
    assert status == 200 and json.loads(body)["soft"] is True

    def one(_):
        return cdnlib.http_request(r.host, r.port, "GET", "/s/1", timeout=20)

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=200) as pool:
        answers = list(pool.map(one, range(200)))
    took = time.monotonic() - start
    assert all(a[0] == 200 for a in answers)
    # Served stale meanwhile (the origin takes 1 s to answer).
    stale = sum(a[2] == b"v1 /s/1" for a in answers)
    assert stale >= 1
    cdnlib.wait_for(lambda: body_of(r, "/s/1") == "v2 /s/1", what="the revalidated copy")
    assert origin.count("/s/1") == 2, f"{origin.count('/s/1')} origin fetches; {took:.2f}s"


def replica_of(location):
    u = urlsplit(location)
    return f"{u.hostname}:{u.port}"


def comes_back_under_clients(b, down, want):
    """Starts replica `down` again while clients of /p/1 go through balancer
    `b` all along, until it has been sent 3; returns the answers that were
    not `want`, as (replica, status, body)."""
    seen, errors = {}, []
    stop = threading.Event()

    def clients():
        while not stop.is_set():
            status, headers, _ = b.get("/p/1")
            if status != 302:
                continue
            loc = headers.get("Location")
            u = urlsplit(loc)
            st, _, got = cdnlib.http_request(u.hostname, u.port, "GET", u.path)
            who = replica_of(loc)
            seen[who] = seen.get(who, 0) + 1
            if got != want:
                errors.append((who, st, got))

    t = threading.Thread(target=clients)
    t.start()
    try:
        time.sleep(0.3)  # clients under way before it returns
        down.start_again()
        cdnlib.wait_for(lambda: seen.get(down.address, 0) >= 3, timeout=20,
                        what="the returned replica to be sent clients")
    finally:
        stop.set()
        t.join()
    return errors


def test_purge_through_the_balancer_reaches_a_replica_that_was_down(cdn, origin, token_file):
    admin = {"admin": {"token_file": token_file}}
    reps = [edge(cdn, origin, token_file) for _ in range(3)]
    b = cdn.balancer(reps, policy="round-robin", extra=admin)
    cdn.wait_up(b, 3)
    for r in reps:
        assert body_of(r, "/p/1") == "v1 /p/1"
    assert origin.count("/p/1") == 3

    down = reps[2]
    down.stop()
    origin.version = "v2"
    status, _, body = purge(b, "/p/1")
    assert status == 202, body  # accepted, one replica still owes it
    doc = json.loads(body)
    by = {x["replica"]: x for x in doc["replicas"]}
    assert doc["acknowledged"] == 2 and doc["owed"] == 1
    assert by[down.address]["acknowledged"] is False and by[down.address]["owed"] is True
    for r in reps[:2]:
        assert by[r.address]["acknowledged"] is True and by[r.address]["purged"] == 1
    assert b.status()["purges_owed"] == 1

    # The stopped replica still holds v1 on disk. Clients go through the
    # balancer all along while it comes back: not one may get v1.
    assert comes_back_under_clients(b, down, b"v2 /p/1") == []
    assert b.status()["purges_owed"] == 0
    assert body_of(down, "/p/1") == "v2 /p/1"
    assert b.metric("cdn_balancer_purges_owed") == 0

    # All up: 200, every replica acknowledged; a tag purge.
    status, _, body = purge(b, "/", CDN_Purge_Tag="p")
    assert status == 200, body
    doc = json.loads(body)
    assert doc["acknowledged"] == 3 and all(x["purged"] == 1 for x in doc["replicas"])
    status, _, _ = purge(b, "/p/1", token="nope")
    assert status == 401


CDN_PURGE = cdnlib.BUILD_DIR / "client" / "cdn-purge"


def cdn_purge(*args):
    import subprocess
    p = subprocess.run([str(CDN_PURGE), *map(str, args)], capture_output=True, text=True,
                       timeout=30)
    return p.returncode, p.stdout + p.stderr


def test_cdn_purge_command_and_its_exit_codes(cdn, origin, token_file):
    reps = [edge(cdn, origin, token_file) for _ in range(2)]
    b = cdn.balancer(reps, extra={"admin": {"token_file": token_file}})
    cdn.wait_up(b, 2)
    for r in reps:
        body_of(r, "/q/1")
        body_of(r, "/q/2")
    r0 = reps[0]
    rc, out = cdn_purge("--replica", r0.address, "--token-file", token_file, "/q/1")
    assert rc == 0 and "/q/1: 1 objects" in out, out
    rc, out = cdn_purge(f"http://{r0.address}/q/1")  # no token
    assert rc == 4 and "401" in out, out
    rc, out = cdn_purge("-s", b.address, "--token-file", token_file, "--tag", "n2")
    assert rc == 0 and "2 of 2 replicas acknowledged" in out, out
    rc, out = cdn_purge("-s", b.address, "--token-file", token_file, "--prefix", "--soft", "/q/")
    assert rc == 0, out
    rc, out = cdn_purge("--replica", f"127.0.0.1:{cdnlib.free_port()}", "/x")
    assert rc == 3, out
    rc, out = cdn_purge("--tag", "x")
    assert rc == 2, out
    reps[1].stop()
    rc, out = cdn_purge("-s", b.address, "--token-file", token_file, "/q/2")
    assert rc == 5 and f"{reps[1].address}: owes it" in out, out
    rc, out = cdn_purge("-s", b.address, "--token-file", token_file, "--tag", "n1", "q")
    assert rc == 5, out
    assert b.status()["purges_owed"] == 2
    held = [x for x in b.status()["replicas"] if x["address"] == reps[1].address]
    assert held[0]["health"] in ("down", "held")
    reps[1].start_again()
    cdn.wait_up(b, 2)  # both owed purges applied, in order, before it is up
    assert b.status()["purges_owed"] == 0
    assert b.metric("cdn_balancer_purges_total") == 4


def worker_connections(b):
    page = b.get("/.cdn/metrics")[2].decode()
    return {w: int(n) for w, n in re.findall(
        r'^cdn_balancer_worker_connections_total\{worker="(\d)"\} (\d+)$', page, re.M)}


def test_purges_taken_by_either_worker_are_answered(cdn, origin, token_file):
    """[server] workers = 2: a PURGE may come to either worker, while the
    purger (and the table whose replicas it holds) is on the main loop; the
    answer comes back to the worker that took it."""
    reps = [edge(cdn, origin, token_file) for _ in range(2)]
    b = cdn.balancer(reps, extra={"admin": {"token_file": token_file},
                                  "server": {"workers": 2}})
    cdn.wait_up(b, 2)
    before = worker_connections(b)
    purges = 40
    for i in range(purges):  # a new connection each: the kernel spreads them
        status, _, body = purge(b, f"/w/{i}")
        assert status == 200, (status, body)
        doc = json.loads(body)
        assert doc["acknowledged"] == 2 and doc["owed"] == 0, doc
    after = worker_connections(b)
    assert set(after) == {"0", "1"}, after
    assert all(after[w] > before.get(w, 0) for w in after), (before, after)
    assert b.metric("cdn_balancer_purges_total") == purges
    assert b.status()["purges_owed"] == 0


def test_purges_owed_survive_a_balancer_restart(cdn, origin, token_file):
    state = cdn.tempdir("cdn-state-")
    extra = {"admin": {"token_file": token_file, "state_dir": state}}
    reps = [edge(cdn, origin, token_file) for _ in range(2)]
    b = cdn.balancer(reps, policy="round-robin", extra=extra)
    cdn.wait_up(b, 2)
    for r in reps:
        assert body_of(r, "/p/1") == "v1 /p/1"
    down = reps[1]
    down.stop()
    origin.version = "v2"
    status, _, body = purge(b, "/p/1")
    assert status == 202, body
    # The balancer forgets nothing it owes across a restart.
    b.stop()
    assert "owes" in (state / "purge-ledger").read_text()
    b.start_again()
    assert b.status()["purges_owed"] == 1
    assert "purge ledger" in b.log_text()

    assert comes_back_under_clients(b, down, b"v2 /p/1") == []
    assert b.status()["purges_owed"] == 0
    cdnlib.wait_for(lambda: "\nowes " not in (state / "purge-ledger").read_text(),
                    what="the acknowledgement saved")

    # A ledger that cannot be read is logged and ignored: the balancer
    # starts with nothing owed and writes a good one at the next purge.
    b.stop()
    (state / "purge-ledger").write_bytes(b"cdn-purge-ledger 1\nnext 2\nowes r 1\n\x00\xff")
    b.start_again()
    assert b.status()["purges_owed"] == 0
    assert "purge ledger" in b.log_text() and "ignored" in b.log_text()
    status, _, body = purge(b, "/p/1")
    assert status == 200, body
    assert (state / "purge-ledger").read_text().endswith("end\n")


def test_state_dir_that_cannot_be_used_is_refused(cdn, token_file):
    state = cdn.tempdir("cdn-state-")
    b = cdn.balancer(["127.0.0.1:9"], extra={"admin": {"token_file": token_file,
                                                       "state_dir": state / "missing"}},
                     start=False)
    b.start(wait_ready=False)
    assert b.wait_exit() == 1
    assert "state_dir" in b.log_text()
    # On a reload: refused whole, the balancer keeps its directory.
    b.write_config(b.config_path.read_text().replace(str(state / "missing"), str(state)))
    b.start_again()
    b.write_config(b.config_path.read_text().replace(str(state), str(state / "missing")))
    b.reload()
    assert b.alive()
    assert "reload refused" in b.log_text() and "missing" in b.log_text()
