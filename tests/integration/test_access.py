# SPDX-License-Identifier: MIT
"""Access logs, the admin surface and the metrics page of both daemons:
log lines checked field by field (combined and JSON), the file reopened on
SIGHUP, goaccess reading the combined log, /.cdn/ endpoints refused to a
peer outside [admin] allow, and the Prometheus families."""

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from cdnlib import HTTP_TIMEOUT, RawConnection, wait_for
from conftest import DEFAULT_PAGE

BIG = bytes(range(256)) * 1200  # 300 KiB: past the memory tier, sent with sendfile
FILES = {"index.html": DEFAULT_PAGE, "big.bin": BIG}

# nginx's combined format, then our key="value" pairs.
COMBINED = re.compile(
    r'^(?P<client>\S+) - - \[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] '
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) '
    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)" rt="(?P<rt>\d+\.\d{6})" '
    r'cache="(?P<cache>[^"]*)" site="(?P<site>[^"]*)"(?: upstream="(?P<upstream>[^"]*)")?$')


def request(host, port, method, path, headers=None, source=None):
    conn = http.client.HTTPConnection(host, port, timeout=HTTP_TIMEOUT,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def log_lines(path, n):
    """The first n lines of the access log, once it has them (the writer
    flushes within a second)."""
    def have():
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return None
        return lines if len(lines) >= n else None
    return wait_for(have, what=f"{n} lines in {path}")[:n]


def access_config(path, fmt="combined"):
    return {"log": {"access": path, "access_format": fmt}}


def test_replica_combined_log_field_by_field(cdn):
    r = cdn.replica(FILES)
    log = r.dir / "access.log"
    r.stop()
    r.write_config(cdn_config(r, access_config(log)))
    r.start_again()
    ua = 'probe/1.0 "quoted"'
    assert request(r.host, r.port, "GET", "/index.html?q=1",
                   {"Referer": "http://example.com/p", "User-Agent": ua})[0] == 200
    assert request(r.host, r.port, "HEAD", "/index.html", {"User-Agent": "h"})[0] == 200
    assert request(r.host, r.port, "GET", "/missing", {"User-Agent": "m"})[0] == 404
    assert request(r.host, r.port, "GET", "/big.bin", {"User-Agent": "b"})[0] == 200
    with RawConnection(r.host, r.port) as c:  # a request line that does not parse
        c.send(b"BROKEN\r\n\r\n")
        c.read_response()
    lines = log_lines(log, 5)
    m = [COMBINED.match(line) for line in lines]
    assert all(m), lines
    # Workers write their lines as each answer completes: order by agent,
    # not by position.
    by_agent = {x.groupdict()["agent"]: x.groupdict() for x in m}
    get, head, missing, big, broken = (by_agent[a] for a in (
        r"probe/1.0 \x22quoted\x22", "h", "m", "b", "-"))
    assert get["client"] == "127.0.0.1"
    assert get["request"] == "GET /index.html?q=1 HTTP/1.1"
    assert get["status"] == "200" and int(get["bytes"]) == len(DEFAULT_PAGE)
    assert get["referer"] == "http://example.com/p"
    assert get["agent"] == r"probe/1.0 \x22quoted\x22"
    assert get["cache"] == "local" and get["site"] == "default" and get["upstream"] is None
    assert 0 <= float(get["rt"]) < 5
    # The time is now, in the server's zone.
    stamp = time.strptime(get["time"], "%d/%b/%Y:%H:%M:%S %z")
    assert abs(time.mktime(stamp) - time.time()) < 3600 * 26
    assert head["request"] == "HEAD /index.html HTTP/1.1" and head["bytes"] == "0"
    assert missing["status"] == "404" and missing["agent"] == "m"
    assert missing["bytes"] == str(len(b"not found\n"))
    assert big["status"] == "200" and int(big["bytes"]) == len(BIG)
    assert broken["request"] == "-" and broken["status"] in ("400", "501")


def cdn_config(d, extra):
    """The daemon's own configuration with `extra` sections merged in."""
    import configparser
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read(d.config_path)
    out = {s: dict(cp[s]) for s in cp.sections()}
    for s, keys in extra.items():
        out.setdefault(s, {}).update(keys)
    return out


def test_balancer_json_log_names_the_replica(cdn):
    r = cdn.replica(FILES)
    log_dir = cdn.tempdir()
    log = log_dir / "balancer-access.json"
    b = cdn.balancer([r], extra=access_config(log, "json"))
    cdn.wait_up(b, 1)
    assert request(b.host, b.port, "GET", "/index.html", {"User-Agent": "j\u00e9".encode(
        "latin-1").decode("latin-1")})[0] == 302
    request(b.host, b.port, "GET", "/.cdn/status?mine")

    def docs():
        try:
            found = [json.loads(x) for x in log.read_text().splitlines()]
        except FileNotFoundError:
            return None
        return found if any(d["target"] == "/.cdn/status?mine" for d in found) else None
    found = wait_for(docs, what="the balancer's access lines")
    first = next(d for d in found if d["target"] == "/index.html")
    assert first["method"] == "GET"
    assert first["status"] == 302 and first["protocol"] == "HTTP/1.1"
    assert first["upstream"] == r.address
    assert first["client"] == "127.0.0.1" and first["site"] == "default"
    assert first["user_agent"] == "j\u00e9"  # a byte >= 0x80, escaped \u00E9
    assert first["bytes"] > 0 and first["duration"] >= 0 and first["referer"] == ""
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d$", first["time"])
    second = next(d for d in found if d["target"] == "/.cdn/status?mine")
    assert second["status"] == 200 and "upstream" not in second


def test_sighup_reopens_the_log_after_rotation(cdn):
    r = cdn.replica(FILES)
    log = r.dir / "access.log"
    r.stop()
    r.write_config(cdn_config(r, access_config(log)))
    r.start_again()
    request(r.host, r.port, "GET", "/index.html")
    log_lines(log, 1)
    rotated = r.dir / "access.log.1"
    os.rename(log, rotated)  # what logrotate does, then it sends SIGHUP
    r.reload()
    request(r.host, r.port, "GET", "/index.html?after")
    lines = log_lines(log, 1)
    assert "/index.html?after" in lines[0]
    assert "?after" not in rotated.read_text()


def test_access_log_off_and_bad_path_refused(cdn):
    r = cdn.replica(FILES)
    # A reload naming a log that cannot be opened is refused whole.
    cfg = cdn_config(r, access_config(r.dir / "no" / "such" / "dir" / "a.log"))
    cfg["content"]["max_age"] = "7s"
    r.write_config(cfg)
    r.reload()
    _, headers, _ = r.get("/index.html")
    assert headers["Cache-Control"] != "public, max-age=7"
    assert "reload refused" in r.log_text()


def test_goaccess_reads_the_combined_log(cdn):
    goaccess = shutil.which("goaccess")
    if goaccess is None:
        pytest.skip("goaccess not installed (apt-get install goaccess)")
    r = cdn.replica(FILES)
    log = r.dir / "access.log"
    r.stop()
    r.write_config(cdn_config(r, access_config(log)))
    r.start_again()
    for i in range(5):
        request(r.host, r.port, "GET", f"/index.html?n={i}", {"User-Agent": "Mozilla/5.0"})
    request(r.host, r.port, "GET", "/missing")
    log_lines(log, 6)
    out = subprocess.run([goaccess, str(log), "--log-format=COMBINED", "--no-global-config",
                          "-o", "json"], capture_output=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr.decode()
    report = json.loads(out.stdout)
    general = report["general"]
    assert general["total_requests"] == 6, general
    assert general["valid_requests"] == 6, general
    assert general["failed_requests"] == 0, general
    assert general["bandwidth"] == 5 * len(DEFAULT_PAGE) + len(b"not found\n"), general


# ------------------------------------------------------------------ admin

ADMIN_PATHS = ["/.cdn/status", "/.cdn/metrics", "/.cdn/nothing"]


def test_replica_admin_refused_outside_allow_list(cdn):
    r = cdn.replica(FILES, extra={"admin": {"allow": "127.0.0.1/32"}})
    for path in ADMIN_PATHS:
        status, body = request(r.host, r.port, "GET", path, source="127.0.0.2")
        assert status == 403, (path, status, body)
        assert body == b"forbidden\n"
    # Content is everyone's.
    assert request(r.host, r.port, "GET", "/index.html", source="127.0.0.2")[0] == 200
    assert request(r.host, r.port, "GET", "/.cdn/status", source="127.0.0.1")[0] == 200
    assert request(r.host, r.port, "GET", "/.cdn/nothing", source="127.0.0.1")[0] == 404


def test_balancer_admin_refused_but_locate_public(cdn):
    r = cdn.replica(FILES)
    b = cdn.balancer([r], extra={"admin": {"allow": "127.0.0.1/32, ::1"}})
    cdn.wait_up(b, 1)
    for path in ADMIN_PATHS:
        assert request(b.host, b.port, "GET", path, source="127.0.0.2")[0] == 403, path
    status, body = request(b.host, b.port, "GET", "/.cdn/locate?path=/index.html",
                           source="127.0.0.2")
    assert status == 200
    doc = json.loads(body)
    # Where to go, not what the probes saw.
    for x in doc["replicas"]:
        assert "last_error" not in x and "resolved" not in x, x
    assert request(b.host, b.port, "GET", "/index.html", source="127.0.0.2")[0] == 302
    assert request(b.host, b.port, "GET", "/.cdn/status", source="127.0.0.1")[0] == 200


def test_bad_allow_list_refused_at_start(cdn):
    r = cdn.replica(FILES, extra={"admin": {"allow": "127.0.0.1/40"}}, start=False)
    out = subprocess.run(r.argv() + ["--check-config"], capture_output=True, timeout=30,
                         check=False)
    assert out.returncode != 0
    assert b"allow" in out.stderr and b"127.0.0.1/40" in out.stderr, out.stderr


def test_origin_failure_answer_names_no_origin(cdn):
    """A 502 tells the client what kind of failure, not the origin's
    internal URL or the library's error text (those go to the log)."""
    origin = cdn.replica(FILES)
    e = cdn.replica(origin=origin.url("/"))
    origin.stop()
    status, body = request(e.host, e.port, "GET", "/not-cached-yet")
    assert status == 502, (status, body)
    assert body == b"Bad Gateway\n", body
    assert origin.address in e.log_text()  # the operator still learns which origin failed


# ---------------------------------------------------------------- metrics

NAME_RULES = [
    # one word order: the unit after what is measured, _total last
    (re.compile(r"_bytes_(sent|received)"), "unit before the verb"),
    (re.compile(r"_total_"), "_total not last"),
    (re.compile(r"_failures_total$"), "use NOUNs_failed_total"),
    (re.compile(r"_errors_total$"), "use NOUNs_failed_total"),
]


def families(body):
    out = {}
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            out[name] = kind
    return out


def check_names(fams):
    for name, kind in fams.items():
        assert name.startswith(("cdn_replica_", "cdn_balancer_", "process_")) or \
            name == "cdn_build_info", name
        if kind == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
        for rule, why in NAME_RULES:
            assert not rule.search(name), (name, why)


def test_replica_metrics_as_prometheus_users_expect(cdn):
    r = cdn.replica(FILES)
    r.get("/index.html")
    r.get("/index.html")
    r.get("/missing")
    r.request("GET", "/index.html", {"Range": "bytes=0-9"})
    # With workers, another worker may count an answer just after its client
    # had it: the page adds up every worker's counts as they stand (and each
    # look at it is a 200 of its own).
    def code(body, status):
        m = re.search(rf'^cdn_replica_responses_total{{code="{status}",site="default"}} (\d+)$',
                      body, re.M)
        return int(m.group(1)) if m else 0
    wait_for(lambda: (lambda b: code(b, 206) == 1 and code(b, 404) == 1 and code(b, 200) >= 2)(
        r.get("/.cdn/metrics")[2].decode()), what="every answer counted")
    body = r.check_metrics_page()
    fams = families(body)
    check_names(fams)
    assert fams["cdn_replica_responses_total"] == "counter"
    assert fams["cdn_replica_request_duration_seconds"] == "histogram"
    assert code(body, 200) >= 2 and code(body, 404) == 1 and code(body, 206) == 1
    count = re.search(r'^cdn_replica_request_duration_seconds_count\{site="default"\} (\d+)$',
                      body, re.M)
    assert count and int(count.group(1)) >= 4
    assert re.search(r'^cdn_replica_request_duration_seconds_bucket\{site="default",le="\+Inf"\} '
                     + count.group(1) + "$", body, re.M)
    assert re.search(r'^cdn_build_info\{version="[^"]+"\} 1$', body, re.M)
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds", "process_max_fds", "process_start_time_seconds"):
        v = re.search(rf"^{name} (\S+)$", body, re.M)
        assert v, name
        assert float(v.group(1)) >= (0 if name == "process_cpu_seconds_total" else 1), name
    start = float(re.search(r"^process_start_time_seconds (\S+)$", body, re.M).group(1))
    assert abs(start - time.time()) < 600
    rss = float(re.search(r"^process_resident_memory_bytes (\S+)$", body, re.M).group(1))
    assert rss / 1024 == pytest.approx(r.rss_kib(), rel=0.5)
    # No metric per status any more.
    for gone in ("cdn_replica_not_found_total", "cdn_replica_partial_total",
                 "cdn_replica_not_modified_total"):
        assert gone not in fams


def test_balancer_metrics_as_prometheus_users_expect(cdn):
    r = cdn.replica(FILES)
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    request(b.host, b.port, "GET", "/index.html")
    body = b.check_metrics_page()
    fams = families(body)
    check_names(fams)
    assert 'cdn_balancer_responses_total{code="302",site="default"} 1' in body
    assert fams["cdn_balancer_request_duration_seconds"] == "histogram"
    assert "cdn_balancer_sent_bytes_total" in fams
    assert "cdn_balancer_probes_failed_total" in fams
    assert re.search(r'^cdn_build_info\{version="[^"]+"\} 1$', body, re.M)
    assert "process_open_fds" in fams
