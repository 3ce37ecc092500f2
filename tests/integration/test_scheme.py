# SPDX-License-Identifier: MIT
"""The balancer keeps the scheme: a client that came over TLS is sent to a
replica's https:// URL (its public host and TLS port from the balancer's
replica list), in Location and in CDN-Fallback, /.cdn/locate lists both
URLs, cdn-get follows them with --cacert; and a replica's [site NAME] may
bring its own certificate, chosen by SNI and swapped by a reload.  Each test
makes its own CA with the openssl command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cdnlib import Pki, describe_run, free_port, port_refuses, run_get, wait_for
from test_tls import handshake, https_get, tls_section

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("curl") is None,
                                reason="needs openssl and curl")

DATA = b"scheme kept " * 20_000


@pytest.fixture
def pki(cdn):
    return Pki(cdn.tempdir("cdn-pki-"))


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "10", *map(str, args)],
                          capture_output=True, timeout=30)


def tls_replica(cdn, pki, name, sans="DNS:localhost,IP:127.0.0.1"):
    cert, key = pki.leaf(name, sans=sans)
    tls_port = free_port()
    r = cdn.replica(files={"f.bin": DATA, "index.html": b"hello\n"}, name=name,
                    extra=tls_section(tls_port, cert, key))
    r.tls_port = tls_port
    return r


def fallbacks(headers):
    return [u.strip() for u in headers.get("cdn-fallback", "").split(",") if u.strip()]


@pytest.fixture
def fleet(cdn, pki):
    """Replica a (TLS, public host cdn-a.test), b (TLS, no public host),
    c (plain only), behind a balancer with its own TLS port."""
    a = tls_replica(cdn, pki, "a", sans="DNS:cdn-a.test")
    b = tls_replica(cdn, pki, "b")
    c = cdn.replica(files={"f.bin": DATA}, name="c")
    bcert, bkey = pki.leaf("balancer")
    btls = free_port()
    bal = cdn.balancer([f"{a.address} host=cdn-a.test tls_port={a.tls_port}",
                        f"{b.address} tls_port={b.tls_port}", c.address],
                       policy="round-robin",
                       extra={**tls_section(btls, bcert, bkey), "balance": {"fallbacks": 2}})
    bal.tls_port = btls
    cdn.wait_up(bal, 3)
    return a, b, c, bal


def test_a_tls_client_is_sent_to_https_urls_and_fallbacks(fleet, pki):
    a, b, c, bal = fleet
    https_urls = {f"https://cdn-a.test:{a.tls_port}/f.bin?x=1",
                  f"https://127.0.0.1:{b.tls_port}/f.bin?x=1"}
    seen = set()
    for _ in range(20):  # round-robin: both soon, never c
        status, headers, _ = https_get(bal.tls_port, "/f.bin?x=1", pki.context())
        assert status == 302
        location = headers["location"]
        assert location in https_urls, headers
        # The other TLS replica is the only fallback: c has no TLS port.
        assert fallbacks(headers) == sorted(https_urls - {location}), headers
        seen.add(location)
        if seen == https_urls:
            break
    assert seen == https_urls
    # A plain client of the same balancer gets http:// URLs, c's included.
    plain = set()
    for _ in range(30):
        status, headers, _ = bal.get("/f.bin")
        assert status == 302
        assert headers["Location"].startswith("http://127.0.0.1:"), headers
        listed = fallbacks({"cdn-fallback": headers.get("CDN-Fallback", "")})
        assert len(listed) == 2 and all(u.startswith("http://") for u in listed), headers
        plain.add(headers["Location"])
        if len(plain) == 3:
            break
    assert plain == {f"http://{r.address}/f.bin" for r in (a, b, c)}


def test_curl_follows_the_https_redirect_to_the_public_host(fleet, pki):
    a, b, _, bal = fleet
    # cdn-a.test is no name a resolver knows: curl connects it to loopback,
    # and checks the certificate against the name (a's names only it).
    res = curl("-L", "--cacert", pki.ca, "--connect-to", f"cdn-a.test:{a.tls_port}:127.0.0.1:"
               f"{a.tls_port}", "-w", "\n%{url_effective}", "--http1.1",
               *[f"https://localhost:{bal.tls_port}/f.bin"] * 4)
    assert res.returncode == 0, res.stderr
    effective = [line for line in res.stdout.split(b"\n") if line.startswith(b"https://")]
    assert {urlsplit(u.decode()).netloc for u in effective} == {
        f"cdn-a.test:{a.tls_port}", f"127.0.0.1:{b.tls_port}"}, res.stdout[-300:]
    assert res.stdout.count(DATA) == 4


def test_locate_lists_both_urls(fleet, pki):
    a, b, c, bal = fleet
    status, _, body = https_get(bal.tls_port, "/.cdn/locate?path=/f.bin", pki.context())
    assert status == 200
    doc = json.loads(body)
    assert doc["scheme"] == "https"
    by_address = {r["address"]: r for r in doc["replicas"]}
    assert set(by_address) == {a.address, b.address}  # only the replicas a TLS client may get
    ra, rb = by_address[a.address], by_address[b.address]
    assert ra["http_url"] == f"http://{a.address}/f.bin"
    assert ra["https_url"] == ra["url"] == f"https://cdn-a.test:{a.tls_port}/f.bin"
    assert rb["https_url"] == rb["url"] == f"https://127.0.0.1:{b.tls_port}/f.bin"
    # Plain: every replica, its http:// URL chosen; https_url only where there is one.
    status, _, body = bal.get("/.cdn/locate?path=/f.bin")
    assert status == 200
    doc = json.loads(body)
    assert doc["scheme"] == "http"
    by_address = {r["address"]: r for r in doc["replicas"]}
    assert set(by_address) == {a.address, b.address, c.address}
    for r in by_address.values():
        assert r["url"] == r["http_url"]
    assert "https_url" not in by_address[c.address]
    assert by_address[a.address]["https_url"] == f"https://cdn-a.test:{a.tls_port}/f.bin"


def test_no_tls_replica_up_is_503_for_tls_clients(cdn, pki):
    """When the fleet has HTTPS replicas and none is up, a TLS client gets
    503 (never an http:// URL); plain clients are still sent."""
    dead = free_port()
    a = cdn.replica(files={"f.bin": DATA}, name="plain")
    bcert, bkey = pki.leaf("balancer")
    btls = free_port()
    bal = cdn.balancer([a.address, f"127.0.0.1:{dead} tls_port={free_port()}"],
                       extra=tls_section(btls, bcert, bkey))
    cdn.wait_up(bal, 1, 2)
    status, headers, _ = https_get(btls, "/f.bin", pki.context())
    assert status == 503 and "retry-after" in headers, headers
    assert bal.get("/f.bin")[0] == 302


def test_cdn_get_follows_https_through_the_balancer_and_its_fallbacks(cdn, pki, workdir):
    # Where a path goes depends on the ring, and the ring on the replicas'
    # ports (free_port): for some pairs of ports a fixed handful of paths
    # all land on one replica. So paths are asked until each replica was
    # named first, out of many candidates, all links to one file in a root
    # both replicas serve.
    root = cdn.tempdir("cdn-root-")
    names = [f"f{i}.bin" for i in range(64)]
    (root / names[0]).write_bytes(DATA)
    for name in names[1:]:
        os.link(root / names[0], root / name)
    gcert, gkey = pki.leaf("good", sans="DNS:localhost")
    good_tls = free_port()
    good = cdn.replica(root=root, name="good", extra=tls_section(good_tls, gcert, gkey))
    other = cdn.replica(root=root, name="other")
    # other's TLS port (as the balancer knows it) refuses: a client sent
    # there first goes on to the https:// fallback.
    dead = free_port()
    assert port_refuses("127.0.0.1", dead)
    bcert, bkey = pki.leaf("balancer", sans="DNS:localhost")
    btls = free_port()
    # hash_load_factor 100: bounded loads never move a path off its ring
    # place, so the second asking of a path names the replica the first did.
    bal = cdn.balancer([f"{good.address} host=localhost tls_port={good_tls}",
                        f"{other.address} host=localhost tls_port={dead}"],
                       policy="consistent",
                       extra={**tls_section(btls, bcert, bkey),
                              "balance": {"hash_load_factor": 100}})
    cdn.wait_up(bal, 2)
    # consistent: each path has its replica; take one sent to the dead
    # port first and one sent to the good one.
    first = {}
    for name in names:
        status, headers, _ = https_get(btls, f"/{name}", pki.context())
        assert status == 302
        # Both replicas up and https in the answering worker's table: each
        # is named, the one not first as the fallback.
        assert fallbacks(headers) == [u for u in (f"https://localhost:{good_tls}/{name}",
                                                  f"https://localhost:{dead}/{name}")
                                      if u != headers["location"]], headers
        first.setdefault(urlsplit(headers["location"]).port, name)
        if len(first) == 2:
            break
    assert set(first) == {good_tls, dead}, first
    for port, name in first.items():
        res = run_get([f"https://localhost:{btls}/{name}", "-v", "--cacert", pki.ca, "-o", name,
                       "--timeout", "5s"], cwd=workdir)
        assert res.returncode == 0, describe_run(res)
        assert (Path(workdir) / name).read_bytes() == DATA
        assert "is not https://" not in res.stderr, describe_run(res)
        assert f"from localhost:{good_tls}" in res.stdout, describe_run(res)
        # Sent to the dead port first: tried, then the fallback.
        assert (f":{dead}: connection refused" in res.stderr) == (port == dead), describe_run(res)


def test_a_site_brings_its_own_certificate_and_a_reload_swaps_it(cdn, pki):
    main_cert, main_key = pki.leaf("main")
    site_cert, site_key = pki.leaf("site-a", sans="DNS:a.example,DNS:*.a.example")
    tls_port = free_port()
    workdir = cdn.tempdir("cdn-site-")
    (workdir / "a").mkdir()
    (workdir / "a" / "index.html").write_bytes(b"site a\n")
    r = cdn.replica(files={"index.html": b"default\n"}, extra={
        **tls_section(tls_port, main_cert, main_key),
        "site a": {"hosts": "a.example www.a.example", "root": workdir / "a",
                   "certificate": site_cert, "key": site_key}})
    assert handshake(tls_port, pki.context(), "a.example")[0] == "site-a"
    assert handshake(tls_port, pki.context(), "www.a.example")[0] == "site-a"
    assert handshake(tls_port, pki.context(), "localhost")[0] == "main"
    res = curl("--cacert", pki.ca, "--resolve", f"a.example:{tls_port}:127.0.0.1",
               f"https://a.example:{tls_port}/index.html")
    assert res.returncode == 0 and res.stdout == b"site a\n", res.stderr
    res = curl("--cacert", pki.ca, f"https://localhost:{tls_port}/index.html")
    assert res.returncode == 0 and res.stdout == b"default\n", res.stderr

    # Renewed in place (a deploy hook), then SIGHUP: new handshakes see it.
    new_cert, new_key = pki.leaf("site-a-renewed", sans="DNS:a.example,DNS:*.a.example")
    shutil.copy(new_cert, site_cert)
    shutil.copy(new_key, site_key)
    r.reload()
    wait_for(lambda: handshake(tls_port, pki.context(), "a.example")[0] == "site-a-renewed",
             what="the reload to take the site's new certificate")
    assert handshake(tls_port, pki.context(), "localhost")[0] == "main"

    # A broken one is refused, naming the site and the file; the old one stays.
    Path(site_key).write_text("not a key\n")
    r.reload()
    wait_for(lambda: "reload refused" in r.log_text(), what="the reload to be refused")
    line = [ln for ln in r.log_text().splitlines() if "reload refused" in ln][-1]
    assert "[site a]" in line and str(site_key) in line and "no usable PEM private key" in line, line
    assert handshake(tls_port, pki.context(), "a.example")[0] == "site-a-renewed"
    assert r.alive()


def test_a_site_certificate_that_does_not_load_stops_start_up(cdn, pki):
    main_cert, main_key = pki.leaf("main")
    site_cert, _ = pki.leaf("site-a", sans="DNS:a.example")
    root = cdn.tempdir("cdn-site-")
    r = cdn.replica(extra={
        **tls_section(free_port(), main_cert, main_key),
        "site a": {"hosts": "a.example", "root": root,
                   "certificate": site_cert, "key": main_key}}, start=False)
    r.expect_exit = True
    r.start(wait_ready=False)
    assert r.wait_exit() != 0
    assert f"[site a]: {main_key}: does not match the certificate {site_cert}" in r.log_text()
