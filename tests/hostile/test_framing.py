# SPDX-License-Identifier: MIT
"""Request framing and request-targets that a front proxy and the daemons
could read differently (issue 13, parts 3, 4 and 10).

Chunked bodies must be read strictly: each leniency the old parser had
(a bare LF in a chunk extension, any two bytes taken as the CRLF after chunk
data, junk after the chunk size, bare LF or obs-fold in trailers) is answered
400, the connection closes, and nothing pipelined behind it is answered.
Targets with bytes no browser sends raw are 400; absolute-form targets are
served by their path.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

import cdnlib

NEXT = b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"


def chunked_get(body: bytes) -> bytes:
    return b"GET /index.html HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body


def split_responses(raw: bytes):
    """The complete responses at the start of `raw` as (status, head) pairs
    (bodies skipped by Content-Length), and the bytes left after them."""
    out = []
    while True:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            return out, raw
        assert head.startswith(b"HTTP/1.1 "), raw[:200]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(rest) < length:
            return out, raw
        out.append((int(head.split(b" ")[1]), head))
        raw = rest[length:]


def read_responses(raw: bytes) -> list[tuple[int, bytes]]:
    out, left = split_responses(raw)
    assert not left, f"a partial response: {left[:200]!r}"
    return out


def talk(d, data: bytes, timeout=10.0):
    """Send `data` at once; read until the daemon closes. Returns the responses;
    fails if the connection is still open after `timeout` (it must close)."""
    with socket.create_connection((d.host, d.port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # closed before it took everything: read what it said
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                pytest.fail(f"{d.kind}: connection still open after {timeout}s: "
                            f"{b''.join(chunks)[:300]!r}")
            if not b:
                break
            chunks.append(b)
    return read_responses(b"".join(chunks))


@pytest.fixture
def daemons(cdn):
    r = cdn.replica(files={"index.html": b"<p>hello</p>\n"})
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    return [r, b]


# Each was accepted by the old parser, then NEXT was answered as a second request.
LENIENT_BODIES = [
    pytest.param(b"2;\nxx\r\n12\r\n0\r\n\r\n", id="bare-lf-in-extension"),
    pytest.param(b"5\r\nabcdeXY0\r\n\r\n", id="two-bytes-as-crlf-after-data"),
    pytest.param(b"5 x\r\nabcde\r\n0\r\n\r\n", id="junk-after-size"),
    pytest.param(b"5\r\nabcde\r\n0\r\nX: a\nY: b\r\n\r\n", id="bare-lf-in-trailer"),
    pytest.param(b"5\r\nabcde\r\n0\r\nX: a\r\n folded\r\n\r\n", id="obs-fold-in-trailer"),
    pytest.param(b"0000000000000000005\r\nabcde\r\n0\r\n\r\n", id="nineteen-digit-size"),
]


@pytest.mark.parametrize("body", LENIENT_BODIES)
def test_lenient_chunked_framing_is_400_and_close(daemons, body):
    for d in daemons:
        answers = talk(d, chunked_get(body) + NEXT)
        assert [s for s, _ in answers] == [400], f"{d.kind}: {answers}"
        assert b"connection: close" in answers[0][1].lower(), answers[0][1]


def test_strict_chunked_framing_breaks_nothing_valid(daemons):
    # Extensions, quoted values, BWS and trailers as RFC 9112 7.1 has them.
    good = chunked_get(b"5 ;a=b; c = \"d e\"\r\nabcde\r\n000\r\nT: x\r\n\r\n") + NEXT
    for d, want in zip(daemons, (200, 302)):
        with socket.create_connection((d.host, d.port), timeout=10) as s:
            s.sendall(good)
            got = b""
            while len(split_responses(got)[0]) < 2:
                b = s.recv(65536)
                assert b, f"{d.kind} closed: {got[:300]!r}"
                got += b
        assert [st for st, _ in split_responses(got)[0]] == [want, want], got[:300]


def lf_tolerant_reading(msg: bytes) -> int:
    """Where a reader that ends lines at LF (RFC 9112 2.2 allows it) and
    ignores chunk extensions ends a chunked message: returns its length."""
    pos = msg.index(b"\r\n\r\n") + 4
    while True:
        eol = msg.index(b"\n", pos)
        size = int(msg[pos:eol].split(b";")[0].strip(), 16)
        pos = eol + 1
        if size == 0:
            assert msg[pos:pos + 2] == b"\r\n"
            return pos + 2
        pos += size
        assert msg[pos:pos + 2] == b"\r\n"
        pos += 2


def test_smuggling_payload_is_answered_once(daemons):
    # 144 bytes. A front end that ends the size line at the LF reads ONE
    # request: chunks of 2 ("xx") and 0x45 bytes (the second holds the
    # "smuggled" head) and the last chunk. The old parser read "2;\nxx" as a
    # size with an extension, took "45" as data and "\r\n" as its CRLF, ended
    # the body at the inner "0\r\n\r\n" and answered GET /smuggled as a second
    # request (then 400 for the rest): three answers on one connection.
    inner = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 20 + b"\r\n\r\n"
    assert len(inner) == 0x45
    payload = (b"GET / HTTP/1.1\r\nHost: xyz\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"2;\nxx\r\n45\r\n" + inner + b"\r\n0\r\n\r\n")
    assert len(payload) == 144
    assert lf_tolerant_reading(payload) == len(payload)
    for d in daemons:
        answers = talk(d, payload + NEXT)
        assert [s for s, _ in answers] == [400], f"{d.kind}: {answers}"
        cdnlib_log = "".join(p.read_text(errors="replace") for p in d.log_files if p.exists())
        assert "/smuggled" not in cdnlib_log, f"{d.kind} handled the smuggled request"


@pytest.mark.parametrize("target", [
    b"/index.html?q=a\tb", b"/index.html?q=\x0c", b"/index.html?q=caf\xc3\xa9",
    b"/caf\xc3\xa9", b"/index.html?q=\x7f", b"/index.html?q=\"<script>\"", b"/index.html?\x01",
])
def test_target_bytes_no_client_sends_raw_are_400(daemons, target):
    for d in daemons:
        answers = talk(d, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n" + NEXT)
        assert [s for s, _ in answers] == [400], f"{d.kind}: {answers}"


def test_targets_browsers_and_curl_send_still_work(daemons):
    r, b = daemons
    # Raw in queries from browsers ('|' and '^' in paths too), raw from curl -g.
    for target in ["/index.html?x={y}|z^`\\[]", "/index.html?q=%C3%A9&r=a+b", "/index.html#frag"]:
        status, _, _ = cdnlib.http_request(r.host, r.port, "GET", target)
        assert status == 200, (target, status)
        status, headers, _ = cdnlib.http_request(b.host, b.port, "GET", target)
        assert status == 302, (target, status)


def test_absolute_form_is_served_by_its_path(daemons):
    r, b = daemons
    # Host disagrees with the target's authority: the target's wins (RFC 9112 3.2.2).
    req = (b"GET http://cdn.example:33000/index.html?q=1 HTTP/1.1\r\nHost: other\r\n"
           b"Connection: close\r\n\r\n")
    (status, _), = talk(r, req)
    assert status == 200
    (status, head), = talk(b, req)
    assert status == 302
    location = [l for l in head.split(b"\r\n") if l.lower().startswith(b"location:")][0]
    assert location.endswith(f"{r.host}:{r.port}/index.html?q=1".encode()), location
    for d in daemons:
        (status, _), = talk(d, b"GET ftp://h/index.html HTTP/1.1\r\nHost: h\r\n\r\n")
        assert status == 400
        (status, _), = talk(d, b"GET * HTTP/1.1\r\nHost: h\r\n\r\n")
        assert status == 400


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_through_the_replica_as_a_proxy(daemons, tmp_path):
    # curl -x sends absolute-form targets: GET http://site.example/index.html.
    r, _ = daemons
    out = tmp_path / "page"
    proc = subprocess.run(
        ["curl", "-sS", "-o", str(out), "-w", "%{http_code}", "--max-time", "10",
         "-x", f"http://{r.host}:{r.port}", "http://site.example/index.html"],
        capture_output=True, text=True, timeout=20)
    assert proc.stdout == "200", proc.stderr
    assert out.read_bytes() == b"<p>hello</p>\n"
