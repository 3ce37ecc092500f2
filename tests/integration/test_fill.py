# SPDX-License-Identifier: MIT
"""Streaming fill (read-while-writer): an edge cache's clients get a cold
object's bytes as they come from the origin, while the same bytes go to
the disk cache; an origin that breaks off mid-body never yields a short
body presented as whole, and nothing of it is stored.

The origin here is a raw socket server, so that the test decides when each
piece of the body leaves and where the answer breaks off.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time

import pytest

from cdnlib import wait_for
from test_cache import edge

BODY = os.urandom(256 * 1024)
PIECES = 8
PIECE_GAP = 0.25  # the whole body takes about 2 s


class RawOrigin:
    """routes[path] = mode: "slow" (Content-Length, the body over ~2 s),
    "slow-chunked" (the same, chunked), "broken" (Content-Length, half the
    body, then a close), "broken-chunked" (chunks, then a close)."""

    def __init__(self):
        self.routes = {}
        self.count = {}
        self.finished = {}  # path -> time the last byte left
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def url(self):
        return f"http://127.0.0.1:{self.port}/"

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        with c:
            data = b""
            while b"\r\n\r\n" not in data:
                got = c.recv(4096)
                if not got:
                    return
                data += got
            path = data.split(b" ")[1].decode()
            with self.lock:
                self.count[path] = self.count.get(path, 0) + 1
                mode = self.routes.get(path)
            if mode is None:  # the start page, and anything else
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nhi\n")
                return
            chunked = mode.endswith("chunked")
            head = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nConnection: close\r\n"
            head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {len(BODY)}\r\n"
            c.sendall((head + "\r\n").encode())
            step = len(BODY) // PIECES
            pieces = PIECES // 2 if mode.startswith("broken") else PIECES
            for i in range(pieces):
                time.sleep(PIECE_GAP)
                piece = BODY[i * step:(i + 1) * step]
                c.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if mode.startswith("broken"):
                c.shutdown(socket.SHUT_RDWR)
                return
            if chunked:
                c.sendall(b"0\r\n\r\n")
            with self.lock:
                self.finished[path] = time.monotonic()

    def close(self):
        self.sock.close()


@pytest.fixture
def raw_origin():
    o = RawOrigin()
    yield o
    o.close()


def get(host, port, path, out, extra=b""):
    """A raw GET: records when the first body byte came, the head and the
    body as received, and whether the connection ended before the body did."""
    s = socket.create_connection((host, port), timeout=15)
    with s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path.encode(), extra))
        data = b""
        first = None
        while True:
            try:
                got = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not got:
                break
            data += got
            if first is None and b"\r\n\r\n" in data and len(data) > data.index(b"\r\n\r\n") + 4:
                first = time.monotonic()
            head, _, body = data.partition(b"\r\n\r\n")
            if b"content-length" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
            elif body.endswith(b"0\r\n\r\n"):
                break
        head, _, body = data.partition(b"\r\n\r\n")
        out.update(first=first, head=head.decode("latin-1"), raw=body)


def dechunk(raw):
    """The body of a chunked answer, and whether its last chunk came."""
    body = b""
    while raw:
        line, _, rest = raw.partition(b"\r\n")
        n = int(line.split(b";")[0], 16)
        if n == 0:
            return body, True
        if len(rest) < n + 2:
            return body + rest[:n], False
        body += rest[:n]
        raw = rest[n + 2:]
    return body, False


def three_clients(e, path):
    results = [{} for _ in range(3)]
    threads = [threading.Thread(target=get, args=(e.host, e.port, path, r)) for r in results]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(30)
    return results


@pytest.mark.parametrize("mode", ["slow", "slow-chunked"])
def test_first_byte_before_origin_finishes(cdn, raw_origin, mode):
    raw_origin.routes["/big.bin"] = mode
    e = edge(cdn, raw_origin.url(), content={"origin_timeout": "5s"})
    results = three_clients(e, "/big.bin")
    wait_for(lambda: "/big.bin" in raw_origin.finished, what="origin done")
    done = raw_origin.finished["/big.bin"]
    for r in results:
        assert r["head"].startswith("HTTP/1.1 200"), r["head"]
        # The first byte came while the origin was still sending.
        assert r["first"] is not None and r["first"] < done - 0.5, (r["first"], done)
        body = r["raw"]
        if mode == "slow-chunked":
            body, whole = dechunk(body)
            assert whole
        assert body == BODY
    assert raw_origin.count["/big.bin"] == 1
    # Stored: the next client is a hit, byte-identical.
    again = {}
    get(e.host, e.port, "/big.bin", again)
    assert "hit" in again["head"].lower()
    assert again["raw"] == BODY
    assert raw_origin.count["/big.bin"] == 1


def test_range_of_object_being_filled(cdn, raw_origin):
    raw_origin.routes["/big.bin"] = "slow"
    e = edge(cdn, raw_origin.url(), content={"origin_timeout": "5s"})
    first, ranged = {}, {}
    t = threading.Thread(target=get, args=(e.host, e.port, "/big.bin", first))
    t.start()
    time.sleep(0.1)
    get(e.host, e.port, "/big.bin", ranged, b"Range: bytes=100-199\r\n")
    # Its bytes are among the first to come: answered long before the end.
    assert ranged["head"].startswith("HTTP/1.1 206"), ranged["head"]
    assert ranged["raw"] == BODY[100:200]
    assert "/big.bin" not in raw_origin.finished
    t.join(30)
    assert first["raw"] == BODY


@pytest.mark.parametrize("mode", ["broken", "broken-chunked"])
def test_broken_origin_never_a_short_body_as_whole(cdn, raw_origin, mode):
    raw_origin.routes["/big.bin"] = mode
    e = edge(cdn, raw_origin.url(), content={"origin_timeout": "5s"})
    results = three_clients(e, "/big.bin")
    for r in results:
        head, raw = r["head"], r["raw"]
        if not head.startswith("HTTP/1.1 200"):
            assert head.startswith("HTTP/1.1 502"), head  # answered before any byte: an error
            continue
        if mode == "broken":
            length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
            assert length == len(BODY) and len(raw) < length
        else:
            body, whole = dechunk(raw)
            assert not whole and len(body) < len(BODY)
    # Nothing stored: the next request goes to the origin again.
    assert raw_origin.count["/big.bin"] == 1
    raw_origin.routes["/big.bin"] = "slow"
    again = {}
    get(e.host, e.port, "/big.bin", again)
    assert raw_origin.count["/big.bin"] == 2
    assert again["raw"] == BODY
    wait_for(lambda: e.alive(), what="replica alive")


def test_clients_on_two_workers_share_one_fill(cdn, raw_origin):
    """[server] workers = 2 with an origin: clients on both workers (new
    connections spread by the kernel) stream one fill; one origin fetch.
    SO_REUSEPORT picks a worker by a hash of the connection's addresses, so
    24 clients: all of them land on one worker once in 2**23 runs (with 8,
    once in 128, which CI met)."""
    raw_origin.routes["/big.bin"] = "slow"
    e = edge(cdn, raw_origin.url(), content={"origin_timeout": "5s"}, server={"workers": 2})
    results = [{} for _ in range(24)]
    threads = [threading.Thread(target=get, args=(e.host, e.port, "/big.bin", r)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(r["raw"] == BODY for r in results)
    assert raw_origin.count["/big.bin"] == 1
    page = e.get("/.cdn/metrics")[2].decode()
    served = dict(re.findall(r'^cdn_replica_worker_connections_total\{worker="(\d)"\} (\d+)$',
                             page, re.M))
    assert set(served) == {"0", "1"} and all(int(n) > 0 for n in served.values()), served


def test_a_client_that_does_not_read_holds_nobody_back(cdn, raw_origin):
    """One client stops reading (its socket fills); another gets the whole
    body as the origin finishes, and the first still gets every byte later."""
    raw_origin.routes["/big.bin"] = "slow"
    e = edge(cdn, raw_origin.url(), content={"origin_timeout": "5s"})
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect((e.host, e.port))
    stuck.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.1)
    reader = {}
    get(e.host, e.port, "/big.bin", reader)
    ended = time.monotonic()
    assert reader["raw"] == BODY
    wait_for(lambda: "/big.bin" in raw_origin.finished, what="origin done")
    assert ended - raw_origin.finished["/big.bin"] < 1.0
    data = b""
    stuck.settimeout(10)
    with stuck:
        while len(data) < len(BODY) + 200:
            got = stuck.recv(65536)
            if not got:
                break
            data += got
            if data.partition(b"\r\n\r\n")[2] == BODY:
                break
    assert data.partition(b"\r\n\r\n")[2] == BODY
    assert raw_origin.count["/big.bin"] == 1
