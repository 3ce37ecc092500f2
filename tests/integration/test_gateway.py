# SPDX-License-Identifier: MIT
"""cdn-replicad in origin mode as a gateway (RFC 9110 7.6, RFC 9111):
what it forwards to the origin, what it relays back, what it refuses from
the origin, and what it must never share between clients.

The origin here is scripted per path: an answer is either (status, header
list, body) or the raw bytes of a whole response, so that heads no
well-behaved server would send (obs-fold, two Content-Lengths) can be sent.
Every request the origin receives is logged with its method, headers and body.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import http.client
import json
import os
import http.server
import socket
import threading
import time

import pytest

from cdnlib import HTTP_TIMEOUT

# The suite runs with CDN_WORKERS=1 and 2 (see conftest.py): edges too.
WORKERS = os.environ.get("CDN_WORKERS", "1")


class Seen:
    def __init__(self, method, path, headers, body):
        self.method, self.path, self.headers, self.body = method, path, headers, body


class ScriptedOrigin:
    """routes[path] = callable(Seen) -> (status, [(name, value)], body) or bytes."""

    def __init__(self):
        self.routes = {}
        self.log: list[Seen] = []
        self.lock = threading.Lock()
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def __getattr__(self, name):
                if name.startswith("do_"):
                    return self.answer
                raise AttributeError(name)

            def read_body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return body
                        body += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length", "0")))

            def answer(self):
                seen = Seen(self.command, self.path, self.headers, self.read_body())
                with origin.lock:
                    origin.log.append(seen)
                    route = origin.routes.get(self.path.split("?")[0])
                if route is None:
                    out = (404, [("Content-Type", "text/plain")], b"no such thing\n")
                else:
                    out = route(seen)
                if isinstance(out, bytes):
                    self.wfile.write(out)
                    self.close_connection = True
                    return
                status, headers, body = out
                self.send_response_only(status)
                for k, v in headers:
                    self.send_header(k, v)
                if status not in (204, 304) and status >= 200:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD" and status not in (204, 304):
                    self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def seen(self, path):
        with self.lock:
            return [s for s in self.log if s.path == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origin():
    o = ScriptedOrigin()
    o.routes["/"] = lambda s: (200, [("Cache-Control", "max-age=600")], b"start page\n")
    yield o
    o.close()


def gateway(cdn, origin_url, content=None):
    d = cdn.replica(start=False)
    sections = {
        "server": {"address": d.host, "port": d.port, "name": d.name, "workers": WORKERS},
        "log": {"level": "debug", "file": d.dir / "replicad.log"},
        "content": {"origin": origin_url, "cache_dir": d.dir / "cache", "origin_timeout": "2s"},
    }
    sections["content"].update(content or {})
    d.write_config(sections)
    d.start()
    return d


def send(d, method, path, headers=None, body=None):
    """(status, headers as a list of pairs, body) of one request."""
    conn = http.client.HTTPConnection(d.host, d.port, timeout=HTTP_TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def field(headers, name):
    values = [v for k, v in headers if k.lower() == name.lower()]
    return ", ".join(values) if values else None


# ------------------------------------------------------- Authorization (§3.5)


def test_authorized_answer_is_never_shared(cdn, origin):
    def page(seen):
        who = seen.headers.get("Authorization", "nobody")
        return 200, [("Cache-Control", "max-age=600")], f"page for {who}\n".encode()

    origin.routes["/me"] = page
    g = gateway(cdn, origin.url("/"))
    s, _, b = send(g, "GET", "/me", {"Authorization": "Basic YWxpY2U6cHc="})
    assert s == 200 and b == b"page for Basic YWxpY2U6cHc=\n"
    # The origin saw the credentials, and the next client, without any, is
    # not given alice's page: it goes to the origin again.
    assert origin.seen("/me")[0].headers["Authorization"] == "Basic YWxpY2U6cHc="
    s, _, b = send(g, "GET", "/me")
    assert s == 200 and b == b"page for nobody\n"
    assert len(origin.seen("/me")) == 2
    # A shared copy exists now; a second user is still not served from it.
    s, _, b = send(g, "GET", "/me", {"Authorization": "Basic Ym9iOnB3"})
    assert b == b"page for Basic Ym9iOnB3\n" and len(origin.seen("/me")) == 3
    assert send(g, "GET", "/me")[2] == b"page for nobody\n"
    assert len(origin.seen("/me")) == 3


# ------------------------------------------------------- malformed origin heads


def test_obs_fold_is_joined_not_a_field(cdn, origin):
    # A folded line must stay part of X-Info: read as a field of its own it
    # would override the origin's no-store and keep the answer for a year.
    origin.routes["/fold"] = lambda s: (
        b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nX-Info: a\r\n"
        b" Cache-Control: max-age=31536000\r\nContent-Length: 3\r\n\r\nabc")
    g = gateway(cdn, origin.url("/"))
    for _ in range(2):
        s, _, b = send(g, "GET", "/fold")
        assert s == 200 and b == b"abc"
    assert len(origin.seen("/fold")) == 2


@pytest.mark.parametrize("head", [
    b"Content-Length: 3\r\nContent-Length: 5\r\n",
    b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
], ids=["two-content-lengths", "cl-and-te"])
def test_ambiguous_framing_is_502_and_not_stored(cdn, origin, head):
    origin.routes["/bad"] = lambda s: (
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\n" + head + b"\r\nabc\r\n\r\n")
    g = gateway(cdn, origin.url("/"))
    for _ in range(2):
        assert send(g, "GET", "/bad")[0] == 502
    assert len(origin.seen("/bad")) == 2
    assert g.alive()


# ------------------------------------------------------- every method (§4.4)


def cached_page(version):
    return lambda s: (200, [("Cache-Control", "max-age=600")], f"v{version['n']}\n".encode())


def test_methods_forwarded_with_body_and_invalidate(cdn, origin):
    version = {"n": 1}
    for p in ("/doc", "/moved", "/described", "/elsewhere"):
        origin.routes[p] = cached_page(version)

    def post(seen):
        return 201, [("Location", "/moved"), ("Content-Location", f"http://{g.host}:{g.port}/described"),
                     ("Content-Type", "text/plain")], b"created: " + seen.body

    origin.routes["/doc"] = lambda s: post(s) if s.method != "GET" else cached_page(version)(s)
    g = gateway(cdn, origin.url("/"))
    for p in ("/doc", "/moved", "/described", "/elsewhere"):
        assert send(g, "GET", p)[2] == b"v1\n"
    version["n"] = 2
    assert send(g, "GET", "/doc")[2] == b"v1\n"  # a hit

    s, h, b = send(g, "POST", "/doc", {"Content-Type": "application/json"}, b'{"a": 1}')
    assert s == 201 and b == b'created: {"a": 1}' and field(h, "Location") == "/moved"
    seen = [x for x in origin.seen("/doc") if x.method == "POST"][0]
    assert seen.body == b'{"a": 1}' and seen.headers["Content-Type"] == "application/json"
    # The target and the same-origin Location and Content-Location are stale
    # now; an unrelated URI is not.
    for p in ("/doc", "/moved", "/described"):
        assert send(g, "GET", p)[2] == b"v2\n", p
    assert send(g, "GET", "/elsewhere")[2] == b"v1\n"

    # Methods without a body, and a chunked body.
    assert send(g, "DELETE", "/doc")[0] == 201
    assert [x.method for x in origin.seen("/doc")][-1] == "DELETE"
    assert send(g, "PUT", "/doc", {"Transfer-Encoding": "chunked"}, 
                b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n")[0] == 201
    assert origin.seen("/doc")[-1].body == b"abcd"


def test_failed_unsafe_method_does_not_invalidate(cdn, origin):
    version = {"n": 1}
    page = cached_page(version)
    origin.routes["/keep"] = lambda s: (
        (403, [("Content-Type", "text/plain")], b"no\n") if s.method == "POST" else page(s))
    g = gateway(cdn, origin.url("/"))
    assert send(g, "GET", "/keep")[2] == b"v1\n"
    version["n"] = 2
    assert send(g, "POST", "/keep", body=b"x")[0] == 403
    assert send(g, "GET", "/keep")[2] == b"v1\n"


def test_other_origin_location_is_not_invalidated(cdn, origin):
    version = {"n": 1}
    origin.routes["/victim"] = cached_page(version)
    origin.routes["/form"] = lambda s: (303, [("Location", "http://other.example/victim")], b"")
    g = gateway(cdn, origin.url("/"))
    assert send(g, "GET", "/victim")[2] == b"v1\n"
    version["n"] = 2
    assert send(g, "POST", "/form", body=b"x")[0] == 303
    assert send(g, "GET", "/victim")[2] == b"v1\n"


def test_request_body_limit_413(cdn, origin):
    origin.routes["/up"] = lambda s: (200, [], b"got %d\n" % len(s.body))
    d = cdn.replica(start=False)
    d.write_config({
        "server": {"address": d.host, "port": d.port, "name": d.name, "max_body": "1K",
                   "workers": WORKERS},
        "log": {"level": "debug", "file": d.dir / "replicad.log"},
        "content": {"origin": origin.url("/"), "cache_dir": d.dir / "cache"},
    })
    d.start()
    assert send(d, "POST", "/up", body=b"x" * 1024)[2] == b"got 1024\n"
    assert send(d, "POST", "/up", body=b"x" * 1025)[0] == 413
    assert len(origin.seen("/up")) == 1


def test_local_content_and_cdn_endpoints_keep_405(cdn, origin):
    r = cdn.replica({"index.html": b"hi"})
    s, h, _ = send(r, "POST", "/index.html", body=b"x")
    assert s == 405 and field(h, "Allow") == "GET, HEAD"
    g = gateway(cdn, origin.url("/"))
    assert send(g, "POST", "/.cdn/status", body=b"x")[0] == 405
    assert send(g, "CONNECT", "example.com:443")[0] in (400, 405)


# ------------------------------------------------------- fields and statuses


def test_fields_forwarded_relayed_and_stored(cdn, origin):
    date = email.utils.formatdate(usegmt=True)
    origin.routes["/h"] = lambda s: (200, [
        ("Cache-Control", "max-age=600"), ("Date", date),
        ("Last-Modified", "Sat, 05 Dec 2026 10:00:00 GMT"), ("Set-Cookie", "a=1"),
        ("X-Origin", "yes"), ("Connection", "X-Hop"), ("X-Hop", "no")], b"body\n")
    g = gateway(cdn, origin.url("/"))
    for i in range(2):  # the miss, then the stored copy
        s, h, b = send(g, "GET", "/h", {"X-Client": "c", "Connection": "X-Gone", "X-Gone": "1"})
        assert s == 200 and b == b"body\n"
        assert field(h, "X-Origin") == "yes" and field(h, "Set-Cookie") == "a=1"
        assert field(h, "Date") == date
        assert field(h, "Last-Modified") == "Sat, 05 Dec 2026 10:00:00 GMT"
        assert field(h, "Cache-Control") == "max-age=600"
        assert field(h, "X-Hop") is None and field(h, "Via").endswith(g.name)
    seen = origin.seen("/h")
    assert len(seen) == 1
    assert seen[0].headers["X-Client"] == "c" and "X-Gone" not in seen[0].headers
    assert seen[0].headers["Via"] == f"1.1 {g.name}"


def test_origin_statuses_pass_through(cdn, origin):
    origin.routes["/err"] = lambda s: (503, [("Retry-After", "7")], b"busy\n")
    origin.routes["/gone"] = lambda s: (410, [("Cache-Control", "max-age=600")], b"gone\n")
    g = gateway(cdn, origin.url("/"))
    s, h, b = send(g, "GET", "/err")
    assert s == 503 and b == b"busy\n" and field(h, "Retry-After") == "7"
    assert send(g, "GET", "/gone")[0] == 410
    assert field(send(g, "GET", "/gone")[1], "Cache-Status").endswith("hit")
    assert len(origin.seen("/gone")) == 1  # a 410 is stored like a 200


def test_old_format_entry_dropped_at_warm_restart(cdn, origin):
    origin.routes["/o"] = lambda s: (200, [("Cache-Control", "max-age=600"), ("X-V", "2")],
                                     b"new\n")
    g = gateway(cdn, origin.url("/"))
    cache = g.dir / "cache"
    assert g.stop() == 0
    # An entry as format 1 wrote it: valid body and digest, no fields.
    stem = cache / hashlib.sha256(b"/o").hexdigest()
    body = b"old\n"
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
    stem.with_suffix(".body").write_bytes(body)
    stem.with_suffix(".meta").write_text(json.dumps({
        "version": 1, "key": "/o", "status": 200, "cache_control": "max-age=600", "date": -1,
        "expires": -1, "age": 0, "request_time": 1, "response_time": 1 << 40, "size": 4,
        "digest": digest, "etag": '"x"', "origin_etag": "", "last_modified": "",
        "content_type": "text/plain"}))
    mark = len(g.notify.messages)
    g.expect_exit = False
    g.start(wait_ready=False)
    g.wait_ready(start=mark)
    s, h, b = send(g, "GET", "/o")
    assert s == 200 and b == b"new\n" and field(h, "X-V") == "2"
    assert not stem.with_suffix(".body").exists() or stem.with_suffix(".body").read_bytes() == b"new\n"


# ------------------------------------------------------- interim responses


def raw_exchange(d, request: bytes, until: bytes) -> bytes:
    with socket.create_connection((d.host, d.port), timeout=HTTP_TIMEOUT) as s:
        s.sendall(request)
        got = b""
        while until not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_early_hints_relayed_and_not_stored(cdn, origin):
    # RFC 9110 15.2: a gateway forwards 1xx it did not ask for; RFC 9111 3:
    # only the final response is stored.
    origin.routes["/hinted"] = lambda s: (
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload; as=style\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 8\r\n\r\nhinted!\n")
    g = gateway(cdn, origin.url("/"))
    req = b"GET /hinted HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    first = raw_exchange(g, req, b"hinted!\n")
    assert first.startswith(b"HTTP/1.1 103 Early Hints\r\n")
    assert b"Link: </s.css>; rel=preload; as=style\r\n" in first.split(b"\r\n\r\n")[0] + b"\r\n"
    assert b"\r\n\r\nHTTP/1.1 200 " in first and first.endswith(b"hinted!\n")
    second = raw_exchange(g, req, b"hinted!\n")
    assert second.startswith(b"HTTP/1.1 200 ") and b"103" not in second.split(b"\r\n")[0]
    assert len(origin.seen("/hinted")) == 1
    # An HTTP/1.0 client knows no 1xx: it gets the final answer only.
    origin.routes["/hinted2"] = origin.routes["/hinted"]
    old = raw_exchange(g, b"GET /hinted2 HTTP/1.0\r\n\r\n", b"hinted!\n")
    assert old.startswith(b"HTTP/1.1 200 ")


# ------------------------------------------------------- disconnected (§4.2.4)


@pytest.mark.parametrize("cc,setting,stale_ok", [
    ("max-age=1", None, True),
    ("max-age=1", "0", False),  # the operator turned it off
    ("max-age=1, must-revalidate", None, False),
    ("max-age=1, no-cache", None, False),
    ("s-maxage=1", None, False),
])
def test_stale_served_only_when_allowed_while_origin_is_cut_off(cdn, origin, cc, setting, stale_ok):
    state = {"up": True}
    origin.routes["/s"] = lambda s: (
        (200, [("Cache-Control", cc)], b"stored\n") if state["up"] else b"")
    g = gateway(cdn, origin.url("/"),
                {"stale_if_disconnected": setting} if setting is not None else None)
    assert send(g, "GET", "/s")[2] == b"stored\n"
    state["up"] = False  # closes the connection without an answer
    time.sleep(2.2)  # max-age=1 must have run out: staleness is the point
    status, headers, body = send(g, "GET", "/s")
    if stale_ok:
        assert status == 200 and body == b"stored\n"
        assert "stale" in field(headers, "Cache-Status")
    else:
        assert status == 502
    assert g.alive()


# ------------------------------------------------------- variants (§4.1)


def test_collapsed_client_of_another_variant_gets_its_own(cdn, origin):
    def page(seen):
        time.sleep(0.5)  # slow enough for the second client to collapse onto the first
        lang = seen.headers.get("Accept-Language", "none")
        return 200, [("Cache-Control", "max-age=600"), ("Vary", "Accept-Language")], \
            f"page in {lang}\n".encode()

    origin.routes["/v"] = page
    g = gateway(cdn, origin.url("/"))
    results = {}

    def get(lang):
        results[lang] = send(g, "GET", "/v", {"Accept-Language": lang})

    threads = [threading.Thread(target=get, args=(lang,)) for lang in ("en", "fr")]
    threads[0].start()
    time.sleep(0.1)
    threads[1].start()
    for t in threads:
        t.join()
    assert results["en"][2] == b"page in en\n"
    assert results["fr"][2] == b"page in fr\n"
    # Both are stored (variants of one URL): each answers its own from the cache.
    assert send(g, "GET", "/v", {"Accept-Language": "fr"})[2] == b"page in fr\n"
    assert send(g, "GET", "/v", {"Accept-Language": "en"})[2] == b"page in en\n"
    assert len(origin.seen("/v")) == 2
