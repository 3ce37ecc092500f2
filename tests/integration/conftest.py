# SPDX-License-Identifier: MIT
"""Fixtures: `cdn`, a factory of daemons for one test.

    def test_x(cdn):
        r = cdn.replica(files={"index.html": b"hi"})
        b = cdn.balancer([r])
        cdn.wait_up(b, 1)

Each daemon lives in its own short temp dir (AF_UNIX paths are limited to
108 bytes) with a generated INI file, its ports picked by free_port(), and is
started only when it said READY=1 on its NOTIFY_SOCKET.  On failure every
daemon's notifications and logs are attached to the report.  At teardown a
daemon the test did not stop itself must still be running; it then gets
SIGTERM and must exit 0.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import cdnlib
from cdnlib import Daemon, free_port, merge_sections

DEFAULT_PAGE = (b"<!doctype html>\n<html><head><title>cdn test page</title></head>\n"
                b"<body><h1>Hello from the CDN</h1>\n" + b"<p>lorem ipsum</p>\n" * 200 +
                b"</body></html>\n")

# Probe fast so that tests see up/down changes within a second or two, but
# not so tight that a loaded CI machine makes replicas flap.
# [server] workers for every daemon the tests start: the suite runs once with
# 1 and once with 2 (meson.build), so each test covers both.
WORKERS = os.environ.get("CDN_WORKERS", "1")
FAST_PROBE = {"interval": "400ms", "timeout": "350ms", "rise": 1, "fall": 2}


def pytest_configure(config):
    missing = [str(p) for p in (cdnlib.REPLICAD, cdnlib.BALANCERD, cdnlib.CDN_GET)
               if not os.access(p, os.X_OK)]
    if missing:
        raise pytest.UsageError(
            f"binaries not built (CDN_BUILD_DIR={cdnlib.BUILD_DIR}): {', '.join(missing)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    cluster = getattr(item, "_cdn_cluster", None)
    if cluster is not None and rep.failed:
        cluster.failed = True
        for d in cluster.daemons:
            rep.sections.append((f"{d.kind} {d.address} ({rep.when})", d.describe()))
        rep.sections.append(("cdn work dirs", "\n".join(str(p) for p in cluster.dirs)))


class Cluster:
    def __init__(self):
        self.daemons: list[Daemon] = []
        self.dirs: list[Path] = []
        self.failed = False

    def tempdir(self, prefix="cdn-it-"):
        d = cdnlib.short_tempdir(prefix)
        self.dirs.append(d)
        return d

    # ---------------------------------------------------------------- replica
    def replica(self, files=None, *, root=None, origin=None, name=None, host="127.0.0.1",
                port=None, extra=None, args=(), use_config=True, start=True, wait_ready=True):
        """A cdn-replicad serving `root` (or a fresh root filled with `files`:
        {relative path: bytes}; default: index.html = DEFAULT_PAGE), or with
        `origin` (a URL) an edge cache pulling from it, its cache_dir in its
        own work dir (for a root too: a named origin site's cache goes there)."""
        workdir = self.tempdir("cdn-r-")
        if origin is not None:
            content = {"origin": origin, "cache_dir": workdir / "cache"}
        else:
            if root is None:
                root = workdir / "root"
                root.mkdir()
                for rel, data in (files if files is not None
                                  else {"index.html": DEFAULT_PAGE}).items():
                    p = root / rel
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_bytes(data)
            # cache_dir too: a named origin site ([site NAME] origin=) of a
            # replica whose [content] is a root caches in cache_dir/sites/NAME,
            # which must be this work dir, never the default /var/cache/cdn
            # (a test left one there, and the systemd suite's sandbox, an
            # overlay of /, then refused to start the replica's unit).
            content = {"root": root, "cache_dir": workdir / "cache"}
        port = port or free_port(host)
        name = name or f"replica-{port}-{host}"
        config = None
        if use_config:
            config = merge_sections({
                "server": {"address": host, "port": port, "name": name,
                           "drain_timeout": "20s", "workers": WORKERS},
                "log": {"level": "debug", "file": workdir / "replicad.log"},
                "content": content,
            }, extra)
        d = Daemon("replicad", workdir, args, config)
        d.host, d.port, d.name = host, port, name
        d.root = None if root is None else Path(root)
        d.cache_dir = content.get("cache_dir")
        d.log_files.append(workdir / "replicad.log")
        self.daemons.append(d)
        if start:
            d.start(wait_ready=wait_ready)
        return d

    # --------------------------------------------------------------- balancer
    def balancer(self, replicas=(), *, policy="best", host="127.0.0.1", port=None, extra=None,
                 args=(), use_config=True, start=True, wait_ready=True, probe=None):
        """A cdn-balancerd over `replicas` (Daemon objects or "host:port")."""
        workdir = self.tempdir("cdn-b-")
        port = port or free_port(host)
        addresses = [r.address if isinstance(r, Daemon) else r for r in replicas]
        config = None
        if use_config:
            sections = {
                "server": {"address": host, "port": port, "name": f"balancer-{port}",
                           "workers": WORKERS},
                "log": {"level": "debug", "file": workdir / "balancerd.log"},
                "replicas": {"replica": addresses} if addresses else {},
                "probe": dict(probe or FAST_PROBE),
                "balance": {"policy": policy, "retry_after": "1s"},
            }
            if not addresses:
                del sections["replicas"]
            config = merge_sections(sections, extra)
        d = Daemon("balancerd", workdir, args, config)
        d.host, d.port = host, port
        d.log_files.append(workdir / "balancerd.log")
        self.daemons.append(d)
        if start:
            d.start(wait_ready=wait_ready)
        return d

    def wait_up(self, balancer, up, total=None, timeout=cdnlib.CONDITION_TIMEOUT):
        """Poll the balancer's /.cdn/status until `up` replicas are up (and
        `total` are configured)."""
        total = up if total is None else total

        def check():
            s = balancer.status()
            return s if s.get("up") == up and s.get("total") == total else None

        return cdnlib.wait_for(check, timeout=timeout,
                               what=f"balancer to report up={up} total={total}")

    # -------------------------------------------------------------- teardown
    def teardown(self):
        problems = []
        for d in self.daemons:
            if d.proc is None or d.expect_exit:
                continue
            rc = d.proc.poll()
            if rc is not None:
                problems.append(f"{d.kind} {d.address} (pid {d.pid}) died during the test "
                                f"with exit code {rc} ({_signame(rc)})")
        for d in self.daemons:
            if d.proc is None or d.expect_exit or d.proc.poll() is not None:
                continue
            try:
                rc = d.stop()
                if rc != 0:
                    problems.append(f"{d.kind} {d.address} exited {rc} ({_signame(rc)}) on SIGTERM")
            except AssertionError as e:
                problems.append(str(e))
        for d in self.daemons:
            d.cleanup()
        # A ThreadSanitizer build (scripts/run-tests) reports a race on the
        # daemon's stderr; with halt_on_error the daemon also exits 66, but a
        # daemon the test killed itself is checked here alone.
        for d in self.daemons:
            if d.proc is not None and d.sanitizer_reports():
                problems.append(f"{d.kind} {d.address} (pid {d.pid}): ThreadSanitizer reported "
                                f"{d.sanitizer_reports()} problem(s) (see its stderr.log)")
        if not problems and not self.failed:
            for p in self.dirs:
                cdnlib.remove_tree(p)
        return problems


def _signame(rc):
    if rc is not None and rc < 0:
        try:
            return signal.Signals(-rc).name
        except ValueError:
            pass
    return "exit"


@pytest.fixture
def cdn(request):
    cluster = Cluster()
    request.node._cdn_cluster = cluster
    yield cluster
    problems = cluster.teardown()
    if problems:
        pytest.fail("teardown: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def workdir(cdn):
    """A scratch directory (the cwd of cdn-get runs)."""
    return cdn.tempdir("cdn-w-")
