# SPDX-License-Identifier: MIT
"""Sites: one replica serving several ([site NAME] of replicad.ini), each
chosen by the request's Host, each with its own origin and its own cache:
nothing of one site is ever served for another, not after a purge nor after
a restart. The balancer sends a Host only to the replicas of its site."""

from __future__ import annotations

import json
import time

import pytest

import cdnlib
from test_purge import CountingOrigin, purge, token_file  # noqa: F401 (a fixture)


@pytest.fixture
def origins():
    a, b = CountingOrigin(), CountingOrigin()
    a.version, b.version = "A", "B"
    yield a, b
    a.close()
    b.close()


def two_sites(cdn, a, b, token_file=None, default_origin=""):
    """Sites a (a.example, www.a.example) and b (b.example); [content] is
    the default site only when `default_origin` is given."""
    extra = {
        "content": {"origin": default_origin},
        "site a": {"hosts": "a.example www.a.example", "origin": a.url},
        "site b": {"hosts": "b.example", "origin": b.url, "max_age": "5m"},
    }
    if token_file is not None:
        extra["admin"] = {"token_file": token_file}
    return cdn.replica(origin=a.url, extra=extra)


def get(daemon, path, host):
    return daemon.get(path, {"Host": host})


def body(daemon, path, host):
    status, _, data = get(daemon, path, host)
    assert status == 200, (path, host, status, data)
    return data.decode()


def test_sites_by_host_each_with_its_own_cache(cdn, origins, token_file):
    a, b = origins
    r = two_sites(cdn, a, b, token_file)
    for _ in range(2):
        assert body(r, "/x/1", "a.example") == "A /x/1"
        assert body(r, "/x/1", "b.example") == "B /x/1"
    # Port, case and a trailing dot do not make another host.
    assert body(r, "/x/1", f"WWW.A.Example.:{r.port}") == "A /x/1"
    assert a.count("/x/1") == 1 and b.count("/x/1") == 1
    # No site has this host, and there is no default site.
    status, _, _ = get(r, "/x/1", "c.example")
    assert status == 421
    status, _, _ = get(r, "/x/1", "a.example/evil")
    assert status == 400 or status == 421

    st = r.status()
    assert st["sites"] == "a b"
    assert st["hosts"].split() == ["a.example", "www.a.example", "b.example"]
    metrics = r.get("/.cdn/metrics")[2].decode()
    assert 'cdn_replica_responses_total{code="200",site="a"} 3\n' in metrics
    assert 'cdn_replica_responses_total{code="200",site="b"} 2\n' in metrics
    assert 'cdn_replica_responses_total{code="421",site=""} ' in metrics
    assert 'cdn_replica_cache_objects{site="b"} 2\n' in metrics  # "/" and /x/1

    # A purge applies to its Host's site only.
    status, _, data = purge(r, "/x/1", Host="b.example")
    assert status == 200, data
    doc = json.loads(data)
    assert doc["site"] == "b" and doc["purged"] == 1
    assert body(r, "/x/1", "a.example") == "A /x/1"
    assert a.count("/x/1") == 1
    # The purge journal counts in whole seconds, and a restart drops what
    # was stored in the purge's second too: refetch b's object after it.
    purged_at = int(time.time())
    cdnlib.wait_for(lambda: int(time.time()) > purged_at, what="the next second")
    b.version = "B2"
    assert body(r, "/x/1", "b.example") == "B2 /x/1"
    assert b.count("/x/1") == 2
    status, _, _ = purge(r, "/x/1", Host="c.example")
    assert status == 421

    # After a restart each site finds its own objects on disk, and only those.
    a.version, b.version = "A3", "B3"
    r.stop()
    assert (r.cache_dir / "sites" / "a").is_dir() and (r.cache_dir / "sites" / "b").is_dir()
    r.start_again()
    assert body(r, "/x/1", "a.example") == "A /x/1"
    assert body(r, "/x/1", "b.example") == "B2 /x/1"
    assert a.count("/x/1") == 1 and b.count("/x/1") == 2
    # The purge was of b's object: a's copy was never touched.
    status, _, data = purge(r, "/x/1", Host="a.example")
    assert json.loads(data)["purged"] == 1 and json.loads(data)["site"] == "a"
    assert body(r, "/x/1", "a.example") == "A3 /x/1"
    assert body(r, "/x/1", "b.example") == "B2 /x/1"


def test_default_site_takes_other_hosts(cdn, origins):
    a, b = origins
    c = CountingOrigin()
    c.version = "C"
    try:
        r = two_sites(cdn, a, b, default_origin=c.url)
        assert body(r, "/y", "c.example") == "C /y"
        assert body(r, "/y", "127.0.0.1") == "C /y"
        assert body(r, "/y", "b.example") == "B /y"
        assert c.count("/y") == 1 and b.count("/y") == 1
        assert r.status()["sites"] == "default a b"
    finally:
        c.close()


def test_local_sites_and_reload(cdn, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    (one / "index.html").write_bytes(b"one")
    (two / "index.html").write_bytes(b"two")
    r = cdn.replica(extra={"content": {"root": ""},
                           "site one": {"hosts": "one.example", "root": one},
                           "site two": {"hosts": "two.example", "page": two / "index.html"}})
    assert body(r, "/", "one.example") == "one"
    assert body(r, "/", "two.example") == "two"
    assert get(r, "/", "three.example")[0] == 421
    # A reload that moves a host to the other site.
    text = r.config_path.read_text()
    r.write_config(text.replace("hosts = one.example", "hosts = one.example three.example"))
    r.reload()
    assert body(r, "/", "three.example") == "one"
    assert body(r, "/", "two.example") == "two"


def test_balancer_routes_by_host_to_the_sites_replicas(cdn, origins):
    a, b = origins
    only_a = cdn.replica(origin=a.url, extra={
        "content": {"origin": ""}, "site a": {"hosts": "a.example", "origin": a.url}})
    only_b = cdn.replica(origin=b.url, extra={
        "content": {"origin": ""}, "site b": {"hosts": "b.example", "origin": b.url}})
    log = cdn.tempdir() / "balancer-access.json"
    bal = cdn.balancer([only_a, only_b], policy="round-robin",
                       extra={"log": {"access": log, "access_format": "json"}})
    cdn.wait_up(bal, 2)
    listed = {r["address"]: (r["sites"], r["hosts"]) for r in bal.status()["replicas"]}
    assert listed == {only_a.address: ("a", "a.example"), only_b.address: ("b", "b.example")}
    for host, replica in (("a.example", only_a), ("b.example", only_b)):
        for k in range(6):
            status, headers, _ = bal.get(f"/x/{k}", {"Host": host})
            assert status == 302, (host, status)
            assert headers["Location"].startswith(f"http://{replica.address}/"), headers
            assert replica.address in headers["Location"]
            assert "CDN-Fallback" not in headers  # the other replica is another site's
    # No replica serves this host, and none has a default site.
    status, _, _ = bal.get("/x/1", {"Host": "c.example"})
    assert status == 421
    # Counted under each Host's site, as the replicas count theirs.
    metrics = bal.get("/.cdn/metrics")[2].decode()
    for site in ("a", "b"):
        assert f'cdn_balancer_responses_total{{code="302",site="{site}"}} 6\n' in metrics
        assert f'cdn_balancer_request_duration_seconds_count{{site="{site}"}} 6\n' in metrics
    assert 'cdn_balancer_responses_total{code="421",site=""} 1\n' in metrics
    # And so are the access lines, with the replica each was sent to.
    def lines():
        try:
            docs = [json.loads(x) for x in log.read_text().splitlines()]
        except FileNotFoundError:
            return None
        return docs if sum(d["status"] == 302 for d in docs) == 12 else None
    sent = [d for d in cdnlib.wait_for(lines, what="12 access lines") if d["status"] == 302]
    assert {(d["site"], d["upstream"]) for d in sent} == {("a", only_a.address),
                                                          ("b", only_b.address)}
    # Locate answers for the Host, or for ?host=.
    status, _, data = bal.get("/.cdn/locate?path=/x/1", {"Host": "b.example"})
    doc = json.loads(data)
    assert status == 200 and doc["host"] == "b.example"
    assert [r["url"] for r in doc["replicas"]] == [f"http://{only_b.address}/x/1"]
    status, _, data = bal.get("/.cdn/locate?path=/x/1&host=A.example")
    assert [r["url"] for r in json.loads(data)["replicas"]] == [f"http://{only_a.address}/x/1"]
    status, _, _ = bal.get("/.cdn/locate?path=/x/1&host=c.example")
    assert status == 421
    # Site b's only replica gone: its clients get 503, site a's still go.
    only_b.stop()
    cdn.wait_up(bal, 1, total=2)
    status, _, _ = bal.get("/x/1", {"Host": "b.example"})
    assert status == 503
    status, headers, _ = bal.get("/x/1", {"Host": "a.example"})
    assert status == 302 and only_a.address in headers["Location"]
    only_b.start_again()


def test_balancer_purge_goes_to_the_sites_replicas(cdn, origins, token_file):
    a, b = origins
    admin = {"token_file": token_file}
    only_a = cdn.replica(origin=a.url, extra={
        "admin": admin, "content": {"origin": ""},
        "site a": {"hosts": "a.example", "origin": a.url}})
    both = cdn.replica(origin=a.url, extra={
        "admin": admin, "content": {"origin": ""},
        "site a": {"hosts": "a.example", "origin": a.url},
        "site b": {"hosts": "b.example", "origin": b.url}})
    bal = cdn.balancer([only_a, both], extra={"admin": admin})
    cdn.wait_up(bal, 2)
    for r in (only_a, both):
        assert body(r, "/x/1", "a.example") == "A /x/1"
    assert body(both, "/x/1", "b.example") == "B /x/1"
    status, _, data = purge(bal, "/x/1", Host="b.example")
    assert status == 200, data
    doc = json.loads(data)
    assert [p["replica"] for p in doc["replicas"]] == [both.address]
    assert doc["replicas"][0]["purged"] == 1 and doc["owed"] == 0
    assert body(both, "/x/1", "a.example") == "A /x/1"
    assert a.count("/x/1") == 2  # one fetch per replica, none after the purge of b
    assert body(both, "/x/1", "b.example") == "B /x/1"
    assert b.count("/x/1") == 2
    # A site on both: both purged; and both stay up (none is held).
    status, _, data = purge(bal, "/x/1", Host="a.example")
    doc = json.loads(data)
    assert status == 200 and sorted(p["replica"] for p in doc["replicas"]) == sorted(
        [only_a.address, both.address])
    assert bal.status()["up"] == 2


def test_reload_with_a_bad_site_is_refused_whole(cdn, tmp_path, origins):
    a, _ = origins
    one = tmp_path / "one"
    one.mkdir()
    (one / "index.html").write_bytes(b"one")
    r = cdn.replica(extra={"content": {"root": ""},
                           "site one": {"hosts": "one.example", "root": one},
                           "site a": {"hosts": "a.example", "origin": a.url}})
    assert body(r, "/x", "a.example") == "A /x"
    good = r.config_path.read_text()
    # A host moved, a site's origin changed and a new site whose root is
    # not there: nothing of it may apply, not even the changes before it.
    r.write_config(good.replace("hosts = one.example", "hosts = one.example three.example")
                   .replace(a.url, "http://127.0.0.1:9/") +
                   "\n[site b]\nhosts = b.example\nroot = /does/not/exist\n")
    before = r.log_text(limit=10**7)
    r.reload()
    after = r.log_text(limit=10**7)[len(before):]
    refused = [line for line in after.splitlines() if "reload refused" in line]
    assert len(refused) == 1, after
    assert "site b" in refused[0] and "/does/not/exist" in refused[0], refused
    assert "configuration reloaded" not in after, after
    assert r.alive()
    assert r.status()["sites"] == "one a"
    assert body(r, "/", "one.example") == "one"
    assert get(r, "/", "three.example")[0] == 421
    assert get(r, "/", "b.example")[0] == 421
    assert body(r, "/y", "a.example") == "A /y"  # still the old origin
    # The same file fixed is taken.
    r.write_config(good.replace("hosts = one.example", "hosts = one.example three.example"))
    r.reload()
    assert body(r, "/", "three.example") == "one"
