# SPDX-License-Identifier: MIT
"""Hosts a client controls against a replica of two sites (local roots, so
that every answer's body says which site answered): whatever the Host
holds, the answer is that site's, a 421, or a 400, never the other site's;
and the replica lives on."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def two_sites(cdn, tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "index.html").write_bytes(f"content-of-{name}".encode())
    return cdn.replica(extra={"content": {"root": ""},
                              "site a": {"hosts": "a.example", "root": tmp_path / "a"},
                              "site b": {"hosts": "b.example", "root": tmp_path / "b"}})


def exchange(r, head: bytes):
    """One request on its own connection (closed after): (status, body)."""
    with socket.create_connection((r.host, r.port), timeout=10) as s:
        s.sendall(head)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head_part, _, body = data.partition(b"\r\n\r\n")
    return int(head_part.split(b" ")[1]), body


def get(host: bytes, target=b"/index.html"):
    return b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("host", [
    b"c.example", b"a.example.b.example", b"b.example@a.example", b"a.example:x",
    b"[a.example]", b"a.example:80:80", b"x" * 4000, b"a.example%2f", b"", b"..",
])
def test_no_host_of_a_site_is_421_or_400(two_sites, host):
    status, body = exchange(two_sites, get(host))
    assert status in (400, 421), (host, status, body[:100])
    assert b"content-of-" not in body


def test_spellings_of_a_host_reach_its_site(two_sites):
    for host, site in ((b"A.EXAMPLE", b"a"), (b"b.example.:1", b"b"), (b" b.example ", b"b")):
        status, body = exchange(two_sites, get(host))
        assert (status, body) == (200, b"content-of-" + site), host


def test_two_hosts_and_absolute_form(two_sites):
    r = two_sites
    status, body = exchange(r, b"GET /index.html HTTP/1.1\r\nHost: a.example\r\n"
                               b"Host: b.example\r\nConnection: close\r\n\r\n")
    assert status == 400 and b"content-of-" not in body
    # The target's authority replaces Host (RFC 9112 3.2.2): b's answer.
    status, body = exchange(r, get(b"a.example", b"http://b.example/index.html"))
    assert (status, body) == (200, b"content-of-b")
    assert exchange(r, get(b"a.example"))[1] == b"content-of-a"  # still alive
