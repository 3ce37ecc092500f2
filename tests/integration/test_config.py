# SPDX-License-Identifier: MIT
"""Bad configuration at start-up: a non-zero exit and a message naming
file:line and the key, before READY=1."""

import subprocess

import pytest

from cdnlib import STOP_TIMEOUT, free_port


def replica_ini(port, root, extra_lines=""):
    return (f"[server]\naddress = 127.0.0.1\nport = {port}\n"
            f"[content]\nroot = {root}\n" + extra_lines)


def balancer_ini(port, extra_lines=""):
    return (f"[server]\naddress = 127.0.0.1\nport = {port}\n"
            f"[replicas]\nreplica = 127.0.0.1:{free_port()}\n" + extra_lines)


# (daemon, extra lines appended, key named in the message).  The appended
# lines start at line 6 of the file.
CASES = [
    ("replicad", "[server]\nbogus_key = 3\n", 7, "bogus_key"),
    ("replicad", "[server]\nidle_timeout = forever\n", 7, "idle_timeout"),
    ("replicad", "[server]\nmax_header_bytes = lots\n", 7, "max_header_bytes"),
    ("replicad", "[content]\nmax_age = -5s\n", 7, "max_age"),
    ("replicad", "[log]\nlevel = chatty\n", 7, "level"),
    # An unknown section is reported where the section starts.
    ("replicad", "[nonsense]\nkey = 1\n", 6, "nonsense"),
    ("balancerd", "[balance]\npolicy = random\n", 7, "policy"),
    ("balancerd", "[probe]\ninterval = 2 parsecs\n", 7, "interval"),
    ("balancerd", "[probe]\nrise = many\n", 7, "rise"),
    ("balancerd", "[replicas]\nreplica = not:a:port\n", 7, "replica"),
    ("balancerd", "[replicas]\nreplica = 127.0.0.1:1 weight=0\n", 7, "weight '0'"),
    ("balancerd", "[replicas]\nreplica = 127.0.0.1:1 wieght=2\n", 7, "'wieght=2' is not an option"),
    ("balancerd", "[server]\nport_number = 1\n", 7, "port_number"),
    ("balancerd", "[balance]\nhash_load_factor = heavy\n", 7, "hash_load_factor"),
]


def start_with(cdn, kind, text):
    if kind == "replicad":
        d = cdn.replica(start=False)
    else:
        d = cdn.balancer(start=False)
    d.write_config(text)
    d.start(wait_ready=False)
    try:
        rc = d.wait_exit(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{kind} kept running with a bad config")
    return d, rc


@pytest.mark.parametrize("kind,extra,line,key", CASES,
                         ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_bad_config_fails_startup(cdn, kind, extra, line, key):
    port = free_port()
    if kind == "replicad":
        root = cdn.tempdir("cdn-root-")
        (root / "index.html").write_text("x")
        text = replica_ini(port, root, extra)
    else:
        text = balancer_ini(port, extra)
    assert text.splitlines()[line - 1] in extra.splitlines()
    d, rc = start_with(cdn, kind, text)
    stderr = d.stderr_path.read_text(errors="replace")
    assert rc != 0 and rc > 0, f"exit code {rc}"
    assert f"{d.config_path}:{line}" in stderr, stderr
    assert key in stderr, stderr
    assert d.notify.find("READY=1") is None


def test_replica_two_content_sources_is_an_error(cdn):
    root = cdn.tempdir("cdn-root-")
    (root / "index.html").write_text("x")
    text = replica_ini(free_port(), root, f"page = {root / 'index.html'}\n")
    d, rc = start_with(cdn, "replicad", text)
    stderr = d.stderr_path.read_text(errors="replace")
    assert rc > 0
    assert str(d.config_path) in stderr, stderr


def test_replica_missing_root_is_an_error(cdn):
    root = cdn.tempdir("cdn-root-") / "does-not-exist"
    d, rc = start_with(cdn, "replicad", replica_ini(free_port(), root))
    assert rc > 0
    assert str(root) in d.stderr_path.read_text(errors="replace")


@pytest.mark.parametrize("kind", ["replicad", "balancerd"])
def test_missing_config_file_is_an_error(cdn, kind):
    d = cdn.replica(start=False) if kind == "replicad" else cdn.balancer(start=False)
    missing = d.dir / "nope.ini"
    d.config_path = missing
    d.start(wait_ready=False)
    rc = d.wait_exit()
    assert rc > 0
    assert str(missing) in d.stderr_path.read_text(errors="replace")


@pytest.mark.parametrize("kind", ["replicad", "balancerd"])
def test_unknown_flag_is_an_error(cdn, kind):
    d = cdn.replica(start=False) if kind == "replicad" else cdn.balancer(start=False)
    d.args = ["--no-such-flag"]
    d.start(wait_ready=False)
    assert d.wait_exit() > 0
    assert d.stderr_path.read_text(errors="replace").strip()


def test_port_in_use_is_an_error(cdn):
    r = cdn.replica()
    d = cdn.replica(port=r.port, start=False)
    d.start(wait_ready=False)
    assert d.wait_exit() > 0
    assert d.notify.find("READY=1") is None
    assert r.alive()


def test_balancer_weight_errors_name_their_source(cdn):
    """A bad weight in the seed's servers file names that file and line; one
    given with --replica names the flag."""
    d = cdn.balancer(use_config=False, start=False)
    servers = d.dir / "servers.txt"
    servers.write_text(f"127.0.0.1:{free_port()}\n127.0.0.1:{free_port()} weight=1001\n")
    d.args = ["-p", str(free_port()), "-s", str(servers)]
    d.start(wait_ready=False)
    assert d.wait_exit(timeout=STOP_TIMEOUT) > 0
    stderr = d.stderr_path.read_text(errors="replace")
    assert f"{servers}:2: " in stderr and "weight '1001' is not a whole number from 1 to 1000" \
        in stderr, stderr

    d = cdn.balancer(use_config=False, start=False)
    d.args = ["-p", str(free_port()), "--replica", f"127.0.0.1:{free_port()} weight=x"]
    d.start(wait_ready=False)
    assert d.wait_exit(timeout=STOP_TIMEOUT) > 0
    stderr = d.stderr_path.read_text(errors="replace")
    assert "--replica: " in stderr and "weight 'x'" in stderr, stderr
