# SPDX-License-Identifier: MIT
"""The balancer's redirect and cdn-get's reading of it (issue 13).

A ',' in a request's query once ended up raw in the 302's CDN-Fallback list,
where it started a URL of the client's choosing: `GET
/missing?x,http://attacker/p` gave a list naming the attacker, and cdn-get,
once the real replicas answered 404, downloaded the attacker's content and
exited 0 (the digest came from the attacker too). Here:
  - no byte of the request target adds a URL to CDN-Fallback, and none
    outside RFC 3986 (TAB, FF, bytes >= 0x80) reaches Location, CDN-Fallback
    or the locate document raw;
  - cdn-get takes only URLs in the form the balancer writes, so it contacts
    no host the balancer did not name, whatever the answer says.
"""

from __future__ import annotations

import json
import re
import socketserver
import threading
import urllib.parse

import pytest

import cdnlib

# A valid origin-form target: RFC 3986 path and query characters and
# %-escapes, nothing else (no whitespace, no control byte, no byte >= 0x80).
URI_TARGET = re.compile(rb"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class Responder:
    """An HTTP server on a free loopback port that answers every request with
    one fixed response and records each connection and request line. As the
    attacker's host it answers 200 with content, as cdn-get would save it."""

    def __init__(self, status=200, headers=(), body=b"the attacker's content\n"):
        self.requests: list[bytes] = []
        self.connections = 0
        lock = threading.Lock()
        head = f"HTTP/1.1 {status} X\r\n".encode()
        for k, v in headers:
            head += k.encode() + b": " + (v if isinstance(v, bytes) else v.encode()) + b"\r\n"
        response = head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                with lock:
                    outer.connections += 1
                s = self.request
                s.settimeout(10)
                data = b""
                try:
                    while b"\r\n\r\n" not in data and len(data) < 65536:
                        chunk = s.recv(4096)
                        if not chunk:
                            return
                        data += chunk
                    with lock:
                        outer.requests.append(data.split(b"\r\n", 1)[0])
                    s.sendall(response)
                except OSError:
                    return

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def responders():
    started = []

    def make(*args, **kwargs):
        r = Responder(*args, **kwargs)
        started.append(r)
        return r

    yield make
    for r in started:
        r.close()


def fleet(cdn, n=3):
    """n real replicas (index.html only) behind a balancer naming n-1 fallbacks."""
    rs = [cdn.replica() for _ in range(n)]
    b = cdn.balancer(rs, extra={"balance": {"fallbacks": n - 1}})
    cdn.wait_up(b, n)
    return b, rs


def redirect_head(b, target: bytes):
    """The raw head of the balancer's answer to GET target: (status, {name: raw value})."""
    with cdnlib.RawConnection(b.host, b.port) as c:
        c.send(b"GET " + target + b" HTTP/1.1\r\nHost: cdn\r\nConnection: close\r\n\r\n")
        head = c.read_until(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    fields = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            fields[name.strip().lower().decode()] = value.strip(b" ")
    return status, fields


def list_elements(value: bytes):
    """A header list as any reader splits it: on every ','."""
    return [e.strip(b" \t") for e in value.split(b",") if e.strip(b" \t")]


def assert_names_only(urls, replicas, target=None):
    """Every URL is http://<one of the replicas><a valid target> (and that
    target, when given)."""
    addresses = {r.address.encode() for r in replicas}
    for u in urls:
        m = re.fullmatch(rb"http://([^/]+)(/.*)", u)
        assert m, u
        assert m.group(1) in addresses, f"{u!r} names a host that is no replica"
        assert URI_TARGET.fullmatch(m.group(2)), f"{u!r} is not a valid URI"
        if target is not None:
            assert m.group(2) == target, u


def test_query_cannot_add_a_fallback_url(cdn, workdir, responders):
    b, rs = fleet(cdn)
    attacker = responders()
    target = f"/missing?x,http://{attacker.address}/p"
    status, h = redirect_head(b, target.encode())
    assert status == 302, h
    urls = [h["location"]] + list_elements(h["cdn-fallback"])
    # The same resource on three replicas, and nothing else.
    assert len(urls) == 3, h
    tail = re.fullmatch(rb"http://[^/]+(/.*)", h["location"]).group(1)
    assert tail == b"/missing?x%2Chttp://" + attacker.address.encode() + b"/p", tail
    assert_names_only(urls, rs, tail)

    # cdn-get, sent there: the replicas have no /missing, so it fails (a
    # definite 404: exit 7); it never asks the attacker's host.
    res = cdnlib.run_get([b.url(target), "-o", "out.bin", "--wait", "2s", "--timeout", "3s"],
                         cwd=workdir)
    assert res.returncode == 7, cdnlib.describe_run(res)
    assert attacker.connections == 0, (attacker.requests, cdnlib.describe_run(res))
    assert "saved" not in res.stdout + res.stderr, cdnlib.describe_run(res)
    assert not (workdir / "out.bin").exists()


def test_cdn_get_ignores_urls_not_in_the_balancers_form(cdn, workdir, responders):
    """A balancer that still copies the query raw (or any answer not in the
    balancer's form): cdn-get tries the Location, leaves out every URL the
    comma made, says so in one line, and never contacts the attacker."""
    r = cdn.replica()
    attacker = responders()
    injected = f"/missing?x,http://{attacker.address}/p"
    old_balancer = responders(302, [
        ("Location", f"http://{r.address}{injected}"),
        ("CDN-Fallback", f"http://{r.address}{injected}, http://{r.address}{injected}"),
    ], body=b"")
    res = cdnlib.run_get([f"http://{old_balancer.address}{injected}", "-o", "out.bin",
                          "--wait", "2s", "--timeout", "3s"], cwd=workdir)
    assert res.returncode == 7, cdnlib.describe_run(res)  # the replica's 404 ends it
    assert attacker.connections == 0, (attacker.requests, cdnlib.describe_run(res))
    warnings = [line for line in res.stderr.splitlines() if "ignoring" in line]
    # One line for the balancer's answer, counting the 4 URLs the two commas
    # made; the 404 that follows is final, so the balancer is not asked again.
    assert len(warnings) == 1, cdnlib.describe_run(res)
    assert warnings[0].startswith("cdn-get: "), warnings[0]
    assert "ignoring 4 redirect URLs" in warnings[0], warnings[0]
    assert not (workdir / "out.bin").exists()


def test_a_replica_cannot_send_cdn_get_to_another_host(workdir, responders):
    """Only the balancer names hosts: a replica's redirect (as for a
    directory's slash) may send the client to itself, nowhere else."""
    attacker = responders()
    replica = responders(301, [("Location", f"http://{attacker.address}/dir/"),
                               ("CDN-Fallback", f"http://{attacker.address}/dir/")], body=b"")
    balancer = responders(302, [("Location", f"http://{replica.address}/dir")], body=b"")
    res = cdnlib.run_get([f"http://{balancer.address}/dir", "-o", "out.bin", "--wait", "2s",
                          "--timeout", "3s"], cwd=workdir)
    assert res.returncode == 4, cdnlib.describe_run(res)
    assert attacker.connections == 0, (attacker.requests, cdnlib.describe_run(res))
    assert replica.connections == 3, cdnlib.describe_run(res)  # once per round


@pytest.mark.parametrize("raw", [b"\t", b"\x0c", b"\x80", b"\xff", b"\xc3\xa9",
                                 b"\t\x0c\x80\xff,x"])
def test_raw_bytes_never_reach_the_redirect_raw(cdn, raw):
    b, rs = fleet(cdn)
    target = b"/index.html?a" + raw + b"b"
    status, h = redirect_head(b, target)
    assert status in (302, 400), (status, h)
    if status == 302:
        urls = [h["location"]] + list_elements(h["cdn-fallback"])
        assert len(urls) == 3, h
        expected = b"/index.html?a" + b"".join(
            b"%2C" if c == ord(",") else (bytes([c]) if c == ord("x") else b"%%%02X" % c)
            for c in raw) + b"b"
        assert_names_only(urls, rs, expected)
    # Nothing broke: an ordinary client is still sent to a replica.
    assert cdnlib.http_request(b.host, b.port, "GET", "/index.html")[0] == 302


def test_locate_document_has_the_path_encoded(cdn):
    """A path that decodes to bytes that are not UTF-8 (legal in a path) is
    named %-encoded in the locate document, as in its URLs."""
    b, rs = fleet(cdn)
    path = "/caf%C3%A9/%FF%2C x"
    status, _, body = b.get("/.cdn/locate?path=" + urllib.parse.quote(path, safe=""))
    assert status == 200, body
    doc = json.loads(body)
    assert doc["path"] == "/caf%C3%A9/%FF%2C%20x", doc
    assert len(doc["replicas"]) == 3
    for x in doc["replicas"]:
        assert x["url"] == f"http://{x['address']}/caf%C3%A9/%FF%2C%20x", x
