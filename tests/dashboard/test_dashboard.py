# SPDX-License-Identifier: MIT
"""The live dashboards (/.cdn/dashboard) of both daemons, loaded in headless
Chromium: the page follows the status stream, and what it shows is what
/.cdn/status says. Screenshots are kept in the suite's build directory."""

import http.client
import json
import re

import pytest

from cdnlib import HTTP_TIMEOUT, wait_for

ROWS_JS = """[...document.querySelectorAll('#replicas tr')].map(tr => ({
  address: tr.dataset.address,
  health: tr.querySelector('td.health').textContent,
  name: tr.querySelector('td.name').textContent,
  redirects: Number(tr.querySelector('td.redirects').textContent),
  probes_failed: Number(tr.querySelector('td.probes_failed').textContent),
  share: tr.querySelector('td.share').textContent,
  bars: tr.querySelectorAll('svg.chart rect.bar').length,
}))"""


def updates(browser):
    return int(browser.evaluate("document.getElementById('updates').textContent"))


def text_of(browser, element_id):
    return browser.evaluate(f"document.getElementById({json.dumps(element_id)}).textContent")


def request(host, port, path, source=None):
    conn = http.client.HTTPConnection(host, port, timeout=HTTP_TIMEOUT,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def check_page_answer(daemon):
    """The page is served whole, with a policy that admits nothing from
    elsewhere, and never stored."""
    status, headers, body = request(daemon.host, daemon.port, "/.cdn/dashboard")
    assert status == 200, body[:200]
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp, csp
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+'", csp), csp
    assert "unsafe" not in csp and "http" not in csp and "*" not in csp, csp
    html = body.decode()
    # Every asset inline: nothing to fetch but the page's own status stream.
    refs = re.findall(r"\b(?:src|href)\s*=\s*\"([^\"]*)\"", html)
    assert refs == ["data:,"], refs  # only the empty icon (no /favicon.ico request)
    assert not re.search(r"url\(|@import", html), "the style fetches something"
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", html))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls  # a namespace, never fetched
    return html


def keep_screenshot(browser, artefacts, name, capsys):
    path = browser.screenshot(artefacts / name)
    assert path.stat().st_size > 5000, "a blank screenshot"
    with capsys.disabled():
        print(f"\nscreenshot: {path}")


def no_page_errors(browser):
    bad = [e for e in browser.events if e.startswith(("exception", "console.error", "log.error"))]
    assert not bad, bad


def test_balancer_dashboard_follows_the_status_stream(cdn, browser, artefacts, capsys):
    r1 = cdn.replica(name="alpha")
    r2 = cdn.replica(name="beta")
    b = cdn.balancer([r1, r2], policy="round-robin")
    cdn.wait_up(b, 2)
    check_page_answer(b)

    browser.navigate(b.url("/.cdn/dashboard"))
    browser.wait_for("Number(document.getElementById('updates').textContent) >= 1",
                     what="a first status document")
    status = b.status()
    rows = {r["address"]: r for r in browser.evaluate(ROWS_JS)}
    assert set(rows) == {x["address"] for x in status["replicas"]}
    for x in status["replicas"]:
        row = rows[x["address"]]
        assert (row["health"], row["name"]) == (x["health"], x["name"]) == ("up", row["name"])
        assert row["bars"] == len(x["recent_redirects"]) == 30
    assert text_of(browser, "name") == status["name"]
    assert text_of(browser, "state") == "serving"

    # Clients sent through the balancer: the counters move on the page by
    # themselves, and end equal to the status document.
    before = updates(browser)
    for _ in range(6):
        assert request(b.host, b.port, "/index.html")[0] == 302
    status = b.status()
    assert status["redirects_total"] == 6

    def page_matches():
        rows = {r["address"]: r for r in browser.evaluate(ROWS_JS)}
        return all(rows[x["address"]]["redirects"] == x["redirects"]
                   for x in status["replicas"]) and text_of(browser, "redirects_total") == "6"
    wait_for(page_matches, what="the page to show the redirects")
    assert updates(browser) > before
    rows = {r["address"]: r for r in browser.evaluate(ROWS_JS)}
    # Round robin: three each, so half the traffic of the window each.
    assert [rows[x["address"]]["share"] for x in status["replicas"]] == ["50.0 %", "50.0 %"]
    assert browser.evaluate("document.querySelectorAll('svg.chart rect.bar[height]:not([height=\"0\"])').length") >= 2

    # A replica going away: its row turns down on the page, as in the status.
    assert r2.stop() == 0
    browser.wait_for(f"""[...document.querySelectorAll('#replicas tr')].some(tr =>
        tr.dataset.address === {json.dumps(r2.address)} &&
        tr.querySelector('td.health').textContent === 'down')""", what="beta down on the page")
    down = {x["address"]: x for x in b.status()["replicas"]}[r2.address]
    assert down["health"] == "down" and down["probes_failed"] >= 1
    assert text_of(browser, "up") == "1"
    keep_screenshot(browser, artefacts, "balancer-dashboard.png", capsys)
    no_page_errors(browser)


def test_replica_dashboard_shows_its_cache(cdn, browser, artefacts, capsys):
    origin = cdn.replica(name="origin")
    edge = cdn.replica(origin=origin.url(""), name="edge")
    check_page_answer(edge)
    browser.navigate(edge.url("/.cdn/dashboard"))
    browser.wait_for("Number(document.getElementById('updates').textContent) >= 1",
                     what="a first status document")
    assert text_of(browser, "state") == edge.status()["state"] == "serving"
    assert text_of(browser, "name") == "edge"

    before = updates(browser)
    for _ in range(3):
        assert request(edge.host, edge.port, "/index.html")[0] == 200
    assert request(edge.host, edge.port, "/missing.html")[0] == 404
    status = edge.status()
    assert status["cache_hits"] >= 2

    def page_matches():
        shown = {k: text_of(browser, k) for k in
                 ("cache_hits", "cache_misses", "origin_requests_total", "origin_errors_total")}
        return shown == {k: f"{status[k]:,}" for k in shown}
    wait_for(page_matches, what="the page to show the cache counters")
    assert updates(browser) > before
    # The origin gone: a miss is an origin error, on the page as in the status.
    assert origin.stop() == 0
    assert request(edge.host, edge.port, "/other.html")[0] == 502
    status = edge.status()
    assert status["origin_errors_total"] >= 1
    wait_for(page_matches, what="the page to show the origin error")
    asked = status["cache_hits"] + status["cache_misses"]
    assert text_of(browser, "cache_hit_ratio") == f"{100 * status['cache_hits'] / asked:.1f} %"
    shown_requests = int(text_of(browser, "requests_total").replace(",", ""))
    assert 4 <= shown_requests <= edge.status()["requests_total"]
    keep_screenshot(browser, artefacts, "replica-dashboard.png", capsys)
    no_page_errors(browser)


@pytest.mark.parametrize("kind", ["balancer", "replica"])
def test_dashboard_refused_outside_allow_list(cdn, kind):
    r = cdn.replica(extra={"admin": {"allow": "127.0.0.1/32"}} if kind == "replica" else None)
    d = r if kind == "replica" else cdn.balancer([r], extra={"admin": {"allow": "127.0.0.1/32"}})
    for path in ("/.cdn/dashboard", "/.cdn/status?watch=1000"):
        status, headers, body = request(d.host, d.port, path, source="127.0.0.2")
        assert (status, body) == (403, b"forbidden\n"), path
        assert "content-security-policy" not in headers
    assert request(d.host, d.port, "/.cdn/dashboard", source="127.0.0.1")[0] == 200


def test_balancer_status_stream(cdn):
    r = cdn.replica()
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    conn = http.client.HTTPConnection(b.host, b.port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("GET", "/.cdn/status?watch=100&count=3")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Type") == "application/x-ndjson"
        lines = resp.read().decode().splitlines()
    finally:
        conn.close()
    docs = [json.loads(x) for x in lines]
    assert len(docs) == 3
    assert all(d["replicas"][0]["address"] == r.address for d in docs)
    assert docs[0]["traffic_interval_s"] == 10
    assert request(b.host, b.port, "/.cdn/status?watch=5")[0] == 400
