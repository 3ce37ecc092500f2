# SPDX-License-Identifier: MIT
"""cdn-balancerd: redirects, fallbacks, locate/status documents, 503, the
seed's servers.txt, following with curl, a replica dying."""

import json
import re
import signal
import subprocess
import time
import urllib.parse

import pytest

from cdnlib import free_port, wait_for
from conftest import DEFAULT_PAGE

POLICIES = ["best", "round-robin", "least-loaded", "p2c", "consistent"]


def redirect(b, path="/index.html"):
    status, h, body = b.get(path)
    assert status == 302, f"GET {path} via balancer answered {status}: {body[:200]!r}"
    return h


def three_replicas(cdn, files=None):
    return [cdn.replica(files or {"index.html": DEFAULT_PAGE, "x/y.txt": b"why\n"},
                        name=f"r{i}") for i in range(3)]


@pytest.mark.parametrize("policy", POLICIES)
def test_redirect_with_fallbacks(cdn, policy):
    rs = three_replicas(cdn)
    b = cdn.balancer(rs, policy=policy, extra={"balance": {"fallbacks": 2}})
    cdn.wait_up(b, 3)
    urls = {f"http://{r.address}/x/y.txt" for r in rs}
    for _ in range(6):
        h = redirect(b, "/x/y.txt")
        assert h["Location"] in urls, h["Location"]
        assert h["Cache-Control"] == "no-store" or "no-store" in h["Cache-Control"]
        fallbacks = [u.strip() for u in h["CDN-Fallback"].split(",") if u.strip()]
        assert len(fallbacks) == 2, h["CDN-Fallback"]
        assert set(fallbacks) <= urls
        assert h["Location"] not in fallbacks
        assert len(set(fallbacks)) == 2


def test_location_not_built_from_request_headers(cdn):
    r = cdn.replica()
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    redirect(b, "/index.html")
    status, h2, _ = b.get("/index.html", {"Host": "evil.example:666",
                                          "X-Forwarded-Host": "evil.example"})
    assert status == 302
    assert h2["Location"] == f"http://{r.address}/index.html"


def test_round_robin_spreads(cdn):
    rs = three_replicas(cdn)
    b = cdn.balancer(rs, policy="round-robin")
    cdn.wait_up(b, 3)
    seen = {redirect(b)["Location"] for _ in range(6)}
    assert seen == {f"http://{r.address}/index.html" for r in rs}


def locations(b, n):
    counts = {}
    for _ in range(n):
        loc = redirect(b)["Location"]
        counts[loc] = counts.get(loc, 0) + 1
    return counts


def test_round_robin_follows_configured_weights(cdn):
    """weight=N on [replicas] replica: 3:1 over 8 clients is exactly 6 and 2
    (smooth weighted round-robin), whatever the replicas report."""
    rs = [cdn.replica(name=f"w{i}", extra={"content": {"capacity": c}})
          for i, c in enumerate((10, 1000))]
    b = cdn.balancer([f"{rs[0].address} weight=3", rs[1].address], policy="round-robin")
    cdn.wait_up(b, 2)
    counts = locations(b, 8)
    assert counts == {rs[0].url("/index.html"): 6, rs[1].url("/index.html"): 2}, counts


def test_round_robin_weights_from_flags_and_servers_file(cdn, workdir):
    """The same "host:port weight=N" in the seed's servers file (-s) and in
    --replica."""
    rs = [cdn.replica(name=f"f{i}") for i in range(3)]
    servers = workdir / "servers.txt"
    servers.write_text(f"{rs[0].address} weight=2\n{rs[1].address}\n")
    b = cdn.balancer(use_config=False, start=False)
    b.args = ["-p", str(b.port), "-a", "127.0.0.1", "--policy", "round-robin", "-s",
              str(servers), "--replica", f"{rs[2].address} weight=5"]
    b.start()
    cdn.wait_up(b, 3)
    counts = locations(b, 16)
    assert counts == {rs[2].url("/index.html"): 10, rs[0].url("/index.html"): 4,
                      rs[1].url("/index.html"): 2}, counts


def test_consistent_policy_is_sticky_per_path(cdn):
    """The same path maps to the same first choice (locate does not count
    as a client, so it can be asked again and again); paths spread over the
    replicas.  Redirects themselves count towards the bounded load, so
    repeated redirects of one path may spill over: not checked here."""
    rs = three_replicas(cdn)
    b = cdn.balancer(rs, policy="consistent")
    cdn.wait_up(b, 3)
    firsts = {}
    for i in range(40):
        path = f"/p{i}"
        firsts[path] = locate(b, path)[0]["address"]
    for path, first in firsts.items():
        assert locate(b, path)[0]["address"] == first
    assert len(set(firsts.values())) >= 2, "40 paths all hashed to one replica"


def test_query_string_is_kept(cdn):
    r = cdn.replica()
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    assert redirect(b, "/index.html?v=2")["Location"] == f"http://{r.address}/index.html?v=2"


def test_curl_follows_redirect(cdn, workdir):
    r = cdn.replica()
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    out = workdir / "curl.out"
    p = subprocess.run(["curl", "-sS", "-L", "--max-time", "20", "-o", str(out),
                        "-w", "%{http_code} %{num_redirects} %{url_effective}",
                        b.url("/index.html")], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    code, redirects, effective = p.stdout.split()
    assert code == "200" and redirects == "1"
    assert effective == r.url("/index.html")
    assert out.read_bytes() == DEFAULT_PAGE


def test_locate_document(cdn):
    rs = three_replicas(cdn)
    b = cdn.balancer(rs, policy="least-loaded")
    cdn.wait_up(b, 3)
    status, h, body = b.get("/.cdn/locate?path=" + urllib.parse.quote("/x/y.txt", safe=""))
    assert status == 200, body
    assert h["Content-Type"].startswith("application/json")
    doc = json.loads(body)
    assert doc["path"] == "/x/y.txt"
    assert doc["policy"] == "least-loaded"
    reps = doc["replicas"]
    assert {x["address"] for x in reps} == {r.address for r in rs}
    for x in reps:
        assert x["url"] == f"http://{x['address']}/x/y.txt"
        assert x["health"] == "up"
        for k in ("score", "rtt_ms", "load"):
            assert isinstance(x[k], (int, float)), (k, x)
    # Best first: the redirect goes where locate puts first (least-loaded is
    # deterministic while nothing changes).
    assert redirect(b, "/x/y.txt")["Location"] == reps[0]["url"]


def test_status_document(cdn):
    rs = three_replicas(cdn)
    b = cdn.balancer(rs, policy="p2c")
    s = cdn.wait_up(b, 3)
    assert s["policy"] == "p2c"
    assert s["state"] in ("serving", "ready", "running")
    assert isinstance(s["name"], str) and s["name"]
    assert {x["address"] for x in s["replicas"]} == {r.address for r in rs}
    for x in s["replicas"]:
        assert x["health"] == "up"
        for k in ("rtt_ms", "loss", "load", "score", "redirects"):
            assert isinstance(x[k], (int, float)), (k, x)
        assert "last_error" in x
    before = sum(x["redirects"] for x in s["replicas"])
    for _ in range(4):
        redirect(b)
    after = sum(x["redirects"] for x in b.status()["replicas"])
    assert after == before + 4


def test_metrics_page_is_valid_prometheus_text(cdn):
    rs = three_replicas(cdn)
    b = cdn.balancer(rs, policy="p2c")
    cdn.wait_up(b, 3)
    redirect(b)
    status, _, body = b.get("/.cdn/metrics")
    assert status == 200
    helps, types, families_seen, last = [], [], [], None
    for line in body.decode().splitlines():
        if line.startswith("# HELP "):
            helps.append(line.split()[2])
        elif line.startswith("# TYPE "):
            types.append(line.split()[2])
        elif line:
            family = line.split("{")[0].split(" ")[0]
            # A histogram's samples carry suffixes of its family's name.
            family = re.sub(r"_(bucket|sum|count)$", "", family) \
                if re.sub(r"_(bucket|sum|count)$", "", family) in helps else family
            if family != last:
                families_seen.append(family)
                last = family
            float(line.rsplit(" ", 1)[1])
    # Each family once, announced once, its samples together (a repeated
    # family makes Prometheus refuse the whole scrape).
    assert len(helps) == len(set(helps)), helps
    assert helps == types
    assert len(families_seen) == len(set(families_seen)), families_seen
    assert set(families_seen) <= set(helps)
    for r in rs:
        assert f'cdn_balancer_replica_weight{{replica="{r.address}"}} 1' in body.decode()
        assert f'cdn_balancer_replica_base_rtt_seconds{{replica="{r.address}"}}' in body.decode()
    b.check_metrics_page()


def test_no_replica_up_is_503_with_retry_after(cdn):
    dead = f"127.0.0.1:{free_port()}"
    b = cdn.balancer([dead])

    def is_503():
        status, h, _ = b.get("/index.html")
        return (status, h) if status == 503 else None

    status, h = wait_for(is_503, what="503 from the balancer")
    assert int(h["Retry-After"]) >= 1
    s = b.status()
    assert s["up"] == 0 and s["total"] == 1
    assert s["replicas"][0]["health"] == "down"
    # Once a probe has failed, the status says why.
    wait_for(lambda: b.status()["replicas"][0]["last_error"], what="last_error to be set")


def test_draining_replica_gets_no_new_clients(cdn):
    """A replica that reports draining gets no new clients at once."""
    import signal
    from cdnlib import RawConnection
    big = b"z" * (8 << 20)
    rs = [cdn.replica({"index.html": DEFAULT_PAGE, "big.bin": big}, name=f"d{i}") for i in range(2)]
    b = cdn.balancer(rs, policy="round-robin")
    cdn.wait_up(b, 2)
    # Hold an in-flight download so that rs[0] keeps draining for a while.
    c = RawConnection(rs[0].host, rs[0].port, rcvbuf=4096)
    try:
        c.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        c.read_head()
        rs[0].signal(signal.SIGTERM)
        rs[0].expect_exit = True
        rs[0].notify.wait("STOPPING=1", proc=rs[0].proc)

        def marked():
            st = {x["address"]: x["health"] for x in b.status()["replicas"]}
            return st[rs[0].address] in ("draining", "down")

        wait_for(marked, what="balancer to stop sending clients to the draining replica")
        for _ in range(4):
            assert redirect(b)["Location"] == rs[1].url("/index.html")
    finally:
        c.close()
    assert rs[0].wait_exit() == 0


def test_seed_servers_file(cdn, workdir):
    """servers.txt in the seed's format: bare hosts, which take the
    balancer's own port.  Replicas on 127.0.0.2-4, balancer on 127.0.0.1,
    all on the same port; the balancer is started the seed's way."""
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    port = free_port("127.0.0.1", also_on=hosts)
    rs = [cdn.replica(host=h, port=port, name=f"seed-{h}") for h in hosts]
    servers = workdir / "servers.txt"
    servers.write_text("# replicas\n127.0.0.2\n\n127.0.0.3\n127.0.0.4\n")
    b = cdn.balancer(use_config=False, port=port, start=False)
    logfile = b.dir / "seed-balancer.log"
    b.log_files.append(logfile)
    b.args = ["-s", str(servers), "-p", str(port), "-l", str(logfile), "-a", "127.0.0.1"]
    b.start()
    s = cdn.wait_up(b, 3)
    assert {x["address"] for x in s["replicas"]} == {f"{h}:{port}" for h in hosts}
    locations = {redirect(b)["Location"] for _ in range(3)}
    assert locations <= {f"http://{h}:{port}/index.html" for h in hosts}
    # The seed's client against the seed's balancer.
    from cdnlib import describe_run, run_get
    r = run_get(["-s", "127.0.0.1", "-p", port, "-l", workdir / "client.log"], cwd=workdir)
    assert r.returncode == 0, describe_run(r)
    assert (workdir / "website.html").read_bytes() == DEFAULT_PAGE


def test_servers_file_with_ports_and_replica_keys(cdn, workdir):
    """[replicas] servers_file (host:port lines) and replica= keys add up."""
    rs = three_replicas(cdn)
    servers = workdir / "servers.txt"
    servers.write_text(f"{rs[0].address}\n{rs[1].address}\n")
    b = cdn.balancer([rs[2]], extra={"replicas": {"servers_file": servers}})
    s = cdn.wait_up(b, 3)
    assert {x["address"] for x in s["replicas"]} == {r.address for r in rs}


def locate(b, path):
    status, _, body = b.get("/.cdn/locate?path=" + urllib.parse.quote(path, safe=""))
    assert status == 200, body
    return json.loads(body)["replicas"]


def test_killed_replica_falls_back_then_marked_down(cdn, workdir):
    from cdnlib import describe_run, run_get
    # least-loaded, and the live replica made busy (capacity 4, two held
    # connections): the balancer's first choice is the victim for as long as
    # it believes the victim is up.  Slow probing keeps that belief for a few
    # seconds after the kill, so cdn-get must fall back by itself.
    victim = cdn.replica(name="victim")
    live = cdn.replica(name="live", extra={"content": {"capacity": 4}})
    held = [live.connection() for _ in range(2)]
    for c in held:
        c.request("GET", "/index.html")
        c.getresponse().read()
    b = cdn.balancer([victim, live], policy="least-loaded",
                     probe={"interval": "2s", "timeout": "1s", "rise": 1, "fall": 3})
    cdn.wait_up(b, 2)
    wait_for(lambda: locate(b, "/index.html")[0]["address"] == victim.address,
             what="the victim to be the least loaded")
    before = {x["address"]: x["redirects"] for x in b.status()["replicas"]}
    victim.kill()
    try:
        out = workdir / "got.html"
        r = run_get([b.url("/index.html"), "-o", out, "--timeout", "5s"], cwd=workdir)
        assert r.returncode == 0, describe_run(r)
        assert out.read_bytes() == DEFAULT_PAGE
        assert live.address in r.stdout and victim.address not in r.stdout, r.stdout
        s = {x["address"]: x for x in b.status()["replicas"]}
        # The balancer notices a kill within milliseconds (the kernel closes the
        # idle probe connection), so it may have routed around the victim before
        # cdn-get asked. If not, cdn-get was sent there and fell back by itself.
        # (test_hung_replica_falls_back exercises the fallback deterministically.)
        if s[victim.address]["health"] == "up":
            assert s[victim.address]["redirects"] > before[victim.address], (before, s)

        def victim_down():
            st = {x["address"]: x for x in b.status()["replicas"]}
            return st[victim.address]["health"] == "down" and b.status()["up"] == 1

        wait_for(victim_down, what="balancer to mark the killed replica down")
        for _ in range(4):
            h = redirect(b)
            assert h["Location"] == live.url("/index.html")
            assert victim.address not in h.get("CDN-Fallback", "")
        out = workdir / "after.html"
        r = run_get([b.url("/index.html"), "-o", out], cwd=workdir)
        assert r.returncode == 0, describe_run(r)
        assert out.read_bytes() == DEFAULT_PAGE
    finally:
        for c in held:
            c.close()


def test_hung_replica_falls_back(cdn, workdir):
    """A replica that hangs (SIGSTOP: connections accepted, nothing answered)
    still passes as up until its probes time out; cdn-get, sent there, gives
    up after --timeout and takes the fallback from the 302."""
    from cdnlib import describe_run, run_get
    victim = cdn.replica(name="victim")
    live = cdn.replica(name="live", extra={"content": {"capacity": 4}})
    held = [live.connection() for _ in range(2)]
    for c in held:
        c.request("GET", "/index.html")
        c.getresponse().read()
    b = cdn.balancer([victim, live], policy="least-loaded",
                     probe={"interval": "5s", "timeout": "4s", "rise": 1, "fall": 3})
    cdn.wait_up(b, 2)
    wait_for(lambda: locate(b, "/index.html")[0]["address"] == victim.address,
             what="the victim to be the least loaded")
    before = {x["address"]: x["redirects"] for x in b.status()["replicas"]}
    victim.signal(signal.SIGSTOP)
    try:
        out = workdir / "got.html"
        r = run_get([b.url("/index.html"), "-o", out, "--timeout", "1s"], cwd=workdir)
        assert r.returncode == 0, describe_run(r)
        assert out.read_bytes() == DEFAULT_PAGE
        assert live.address in r.stdout and victim.address not in r.stdout, r.stdout
        s = {x["address"]: x for x in b.status()["replicas"]}
        assert s[victim.address]["redirects"] > before[victim.address], (before, s)
    finally:
        victim.signal(signal.SIGCONT)
        for c in held:
            c.close()


def test_replica_comes_back(cdn):
    r = cdn.replica()
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    port = r.port
    r.kill()
    cdn.wait_up(b, 0, total=1)
    r2 = cdn.replica(port=port)
    cdn.wait_up(b, 1)
    assert redirect(b)["Location"] == r2.url("/index.html")


def test_balancer_reserved_paths_are_not_redirected(cdn):
    r = cdn.replica()
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    status, _, _ = b.get("/.cdn/no-such-thing")
    assert 400 <= status < 500


def test_balancer_bad_requests(cdn):
    from cdnlib import raw_exchange
    r = cdn.replica()
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    for data, expected in [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-F: " + b"v" * 20000 + b"\r\n\r\n", 431),
        (b"GET / HTXP/1.1\r\n\r\n", 400),
    ]:
        status, _, _ = raw_exchange(b.host, b.port, data)
        assert status == expected, (data[:40], status)
        assert redirect(b)["Location"] == r.url("/index.html")


def test_balancer_flags_without_ini(cdn):
    """--replica (repeatable), --policy, -p, -a: no INI file at all."""
    rs = three_replicas(cdn)
    b = cdn.balancer(use_config=False, start=False)
    b.args = ["-p", str(b.port), "-a", "127.0.0.1", "--policy", "round-robin"]
    for r in rs:
        b.args += ["--replica", r.address]
    b.start()
    s = cdn.wait_up(b, 3)
    assert s["policy"] == "round-robin"
    assert {redirect(b)["Location"] for _ in range(3)} == {r.url("/index.html") for r in rs}


def test_policy_flag_overrides_ini(cdn):
    r = cdn.replica()
    b = cdn.balancer([r], policy="best", start=False)
    b.args = ["--policy", "consistent"]
    b.start()
    assert cdn.wait_up(b, 1)["policy"] == "consistent"


def test_steady_replica_streams_its_status(cdn):
    """Once a replica is up, its status comes as a stream: a request per
    `stream` documents instead of one per probe, each document still a probe."""
    r = cdn.replica()
    b = cdn.balancer([r], probe={"interval": "200ms", "timeout": "100ms", "stream": 5})
    cdn.wait_up(b, 1)
    wait_for(lambda: b.metric("cdn_balancer_probes_streamed_total") >= 5,
             what="status documents streamed")
    docs0, reqs0 = b.metric("cdn_balancer_probes_streamed_total"), r.status()["requests_total"]
    time.sleep(2.0)
    docs = b.metric("cdn_balancer_probes_streamed_total") - docs0
    requests = r.status()["requests_total"] - reqs0 - 1  # less our own status request
    assert 6 <= docs <= 14, docs  # about one per 200 ms
    assert requests <= docs / 3, (requests, docs)
    assert b.metric("cdn_balancer_probes_failed_total") == 0
    rep = b.status()["replicas"][0]
    assert rep["health"] == "up" and rep["rtt_ms"] is not None


def test_replica_that_does_not_stream_is_polled(cdn):
    """A server that answers the stream request with one plain document is
    polled from then on, and stays up."""
    from fake_replica import FakeReplica
    f = FakeReplica("bad-digest", b"x")
    try:
        b = cdn.balancer([f.address], probe={"interval": "200ms", "timeout": "100ms"})
        cdn.wait_up(b, 1)
        n0 = f.status_requests
        time.sleep(1.5)
        assert f.status_requests - n0 >= 5, f.status_requests - n0  # one per probe
        assert b.metric("cdn_balancer_probes_streamed_total") == 0
        assert b.metric("cdn_balancer_probes_failed_total") == 0
        assert b.status()["replicas"][0]["health"] == "up"
    finally:
        f.close()


def test_a_held_up_balancer_reads_before_it_times_out(cdn):
    """A balancer stopped for longer than its timeouts (SIGSTOP, as a loop
    held up by a huge page would be) reads the status documents that came
    meanwhile before it judges any probe: no replica fails for its stall."""
    rs = three_replicas(cdn)
    b = cdn.balancer(rs, probe={"interval": "200ms", "timeout": "100ms", "stream": 50})
    cdn.wait_up(b, 3)
    wait_for(lambda: b.metric("cdn_balancer_probes_streamed_total") >= 6,
             what="status streams")
    failures = b.metric("cdn_balancer_probes_failed_total")
    for _ in range(3):
        b.signal(signal.SIGSTOP)
        time.sleep(1.0)  # 3x interval + timeout
        b.signal(signal.SIGCONT)
        time.sleep(0.5)
    assert b.metric("cdn_balancer_probes_failed_total") == failures
    assert b.status()["up"] == 3


def test_two_workers_share_connections_and_add_up(cdn):
    """[server] workers = 2: SO_REUSEPORT spreads new connections over both
    workers (each served some), and the status and metrics pages, served by
    either, add up both: the redirects of every worker, per replica too."""
    rs = [cdn.replica(name=f"w{i}") for i in range(2)]
    b = cdn.balancer(rs, policy="round-robin", extra={"server": {"workers": 2}})
    cdn.wait_up(b, 2)
    clients = 200
    for _ in range(clients):
        redirect(b)  # a new connection each
    s = b.status()
    workers = s["workers"]
    assert len(workers) == 2, workers
    served = [w["connections_total"] for w in workers]
    assert all(n > 0 for n in served), served
    assert sum(served) >= clients, served
    assert s["redirects_total"] == clients
    # Round-robin's place is shared: the two replicas took half each.
    wait_for(lambda: sorted(r["redirects"] for r in b.status()["replicas"]) == [clients // 2] * 2,
             what="per-replica redirects folded from both workers")
    page = b.get("/.cdn/metrics")[2].decode()
    samples = dict(re.findall(r'^cdn_balancer_worker_connections_total\{worker="(\d)"\} (\d+)$',
                              page, re.M))
    assert set(samples) == {"0", "1"} and all(int(v) > 0 for v in samples.values()), samples
    assert b.metric("cdn_balancer_redirects_total") == clients
