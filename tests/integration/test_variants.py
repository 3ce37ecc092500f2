# SPDX-License-Identifier: MIT
"""Variants in the edge cache (RFC 9111 4.1): one URL holds several stored
responses, each selected by the request fields its Vary names, up to
[content] max_variants; Vary: * is never served from the cache; purging or
invalidating the URL removes all of them; a warm restart finds them again.

The origin is test_gateway's scripted one: it sees the client's
Accept-Encoding (forwarded as sent) and answers each coding with bytes of
its own."""

from __future__ import annotations

import gzip

import pytest

from test_gateway import WORKERS, ScriptedOrigin, field, send

TOKEN = "variants-purge-token-0123456789"


@pytest.fixture
def origin():
    o = ScriptedOrigin()
    o.routes["/"] = lambda s: (200, [("Cache-Control", "max-age=600")], b"start page\n")
    yield o
    o.close()


def edge(cdn, origin, content=None, admin=None):
    d = cdn.replica(start=False)
    sections = {
        "server": {"address": d.host, "port": d.port, "name": d.name, "workers": WORKERS},
        "log": {"level": "debug", "file": d.dir / "replicad.log"},
        "content": {"origin": origin.url("/"), "cache_dir": d.dir / "cache",
                    "origin_timeout": "2s"},
    }
    sections["content"].update(content or {})
    if admin:
        sections["admin"] = admin
    d.write_config(sections)
    d.start()
    return d


PLAIN = b"the same text, " * 20 + b"\n"


def encoded(seen):
    """Vary: Accept-Encoding; gzip when the client asked for it, else identity."""
    codings = [c.split(";")[0].strip().lower()
               for c in seen.headers.get("Accept-Encoding", "").split(",")]
    fields = [("Cache-Control", "max-age=600"), ("Vary", "Accept-Encoding"),
              ("Content-Type", "text/plain")]
    if "gzip" in codings:
        return 200, fields + [("Content-Encoding", "gzip")], gzip.compress(PLAIN, mtime=0)
    return 200, fields, PLAIN


def by_language(seen):
    lang = seen.headers.get("Accept-Language", "none")
    return 200, [("Cache-Control", "max-age=600"), ("Vary", "Accept-Language")], \
        f"page in {lang}\n".encode()


def hit(headers):
    return field(headers, "Cache-Status").endswith("; hit")


def test_two_encodings_both_cached_each_to_its_own_client(cdn, origin):
    origin.routes["/enc"] = encoded
    g = edge(cdn, origin)
    zipped = gzip.compress(PLAIN, mtime=0)
    for _ in range(3):
        s, h, b = send(g, "GET", "/enc", {"Accept-Encoding": "gzip"})
        assert s == 200 and b == zipped and field(h, "Content-Encoding") == "gzip"
        s, h, b = send(g, "GET", "/enc", {"Accept-Encoding": "identity"})
        assert s == 200 and b == PLAIN and field(h, "Content-Encoding") is None
    # Once from the origin each: the second and third rounds were hits.
    assert len(origin.seen("/enc")) == 2
    assert origin.seen("/enc")[0].headers["Accept-Encoding"] == "gzip"
    # The same preference written otherwise selects the same variant.
    s, h, b = send(g, "GET", "/enc", {"Accept-Encoding": " GZIP "})
    assert b == zipped and hit(h)
    # Another set of codings is another variant, fetched once.
    for _ in range(2):
        s, h, b = send(g, "GET", "/enc", {"Accept-Encoding": "br, gzip"})
        assert b == zipped
    s, h, b = send(g, "GET", "/enc", {"Accept-Encoding": "gzip,br"})
    assert b == zipped and hit(h)
    assert len(origin.seen("/enc")) == 3
    assert g.metric("cdn_replica_cache_objects", site="default") == 4  # "/" and three
    assert g.alive()


def test_vary_star_is_never_served_from_the_cache(cdn, origin):
    origin.routes["/star"] = lambda s: (200, [("Cache-Control", "max-age=600"), ("Vary", "*")],
                                        f"answer {len(origin.seen('/star'))}\n".encode())
    g = edge(cdn, origin)
    for i in range(1, 4):
        s, h, b = send(g, "GET", "/star")
        assert s == 200 and b == f"answer {i}\n".encode()
        assert not hit(h)
    assert len(origin.seen("/star")) == 3


def test_max_variants_drops_the_urls_least_recently_used(cdn, origin):
    origin.routes["/lang"] = by_language
    g = edge(cdn, origin, {"max_variants": "2"})

    def get(lang):
        s, h, b = send(g, "GET", "/lang", {"Accept-Language": lang})
        assert s == 200 and b == f"page in {lang}\n".encode()
        return hit(h)

    assert not get("en")
    assert not get("fr")
    assert get("en")  # en is now the more recently used of the two
    assert not get("de")  # a third: fr, the least recently used, goes
    assert get("en") and get("de")
    assert len(origin.seen("/lang")) == 3
    assert not get("fr")
    assert len(origin.seen("/lang")) == 4
    assert g.metric("cdn_replica_cache_objects", site="default") == 3  # "/" and two


def test_purge_and_invalidation_remove_every_variant(cdn, origin):
    origin.routes["/lang"] = by_language
    version = {"n": 1}
    origin.routes["/lang"] = lambda s: (
        (204, [], b"") if s.method == "POST" else
        (200, [("Cache-Control", "max-age=600"), ("Vary", "Accept-Language")],
         f"v{version['n']} in {s.headers.get('Accept-Language')}\n".encode()))
    token = cdn.tempdir("cdn-tok-") / "purge.token"
    token.write_text(TOKEN + "\n")
    g = edge(cdn, origin, admin={"token_file": token})
    langs = ("en", "fr", "de")

    def all_served(n, cached):
        for lang in langs:
            s, h, b = send(g, "GET", "/lang", {"Accept-Language": lang})
            assert b == f"v{n} in {lang}\n".encode() and hit(h) == cached, (lang, n)

    all_served(1, False)
    all_served(1, True)
    version["n"] = 2
    s, _, b = g.request("PURGE", "/lang", {"Authorization": f"Bearer {TOKEN}"})
    assert s == 200 and b'"purged":3' in b.replace(b" ", b""), b
    all_served(2, False)
    all_served(2, True)
    # A successful unsafe method invalidates every variant of its target.
    version["n"] = 3
    assert send(g, "POST", "/lang", body=b"x")[0] == 204
    all_served(3, False)
    all_served(3, True)
    assert len(origin.seen("/lang")) == 3 * 3 + 1


def test_warm_restart_finds_every_variant(cdn, origin):
    origin.routes["/enc"] = encoded
    origin.routes["/lang"] = by_language
    g = edge(cdn, origin)
    asks = [("/enc", {"Accept-Encoding": "gzip"}), ("/enc", {"Accept-Encoding": "identity"}),
            ("/lang", {"Accept-Language": "en"}), ("/lang", {"Accept-Language": "fr"})]
    first = [send(g, "GET", p, h)[2] for p, h in asks]
    assert g.stop() == 0
    g.start_again()
    for (p, h), want in zip(asks, first):
        s, headers, b = send(g, "GET", p, h)
        assert s == 200 and b == want and hit(headers), (p, h)
    assert len(origin.seen("/enc")) == 2 and len(origin.seen("/lang")) == 2
