# SPDX-License-Identifier: MIT
"""Configuration that silently means "never" (issue 13, item 9): durations out
of range and origins that cannot work are refused at start-up with one message
naming the key; a refused reload changes nothing, not even [log]; a long probe
interval does not delay the first probe."""

import signal
import subprocess
import time

import pytest

from cdnlib import STOP_TIMEOUT, free_port


def start_and_exit(d):
    """Start a daemon expected to refuse its configuration: (exit code, stderr)."""
    d.start(wait_ready=False)
    try:
        rc = d.wait_exit(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{d.kind} kept running with a bad config") from None
    return rc, d.stderr_path.read_text(errors="replace")


def line_of(d, prefix):
    return next(i + 1 for i, l in enumerate(d.config_path.read_text().splitlines())
                if l.startswith(prefix))


def test_balancer_refuses_a_never_interval(cdn):
    b = cdn.balancer([f"127.0.0.1:{free_port()}"], start=False,
                     probe={"interval": "100000000h", "timeout": "350ms"})
    rc, stderr = start_and_exit(b)
    assert rc > 0, f"exit code {rc}"
    # One message: where, which key, what value, what is allowed.
    assert len(stderr.splitlines()) == 1, stderr
    assert (f"{b.config_path}:{line_of(b, 'interval')}: [probe] interval: '100000000h' is out of "
            f"range (allowed: 100ms to 1h)") in stderr, stderr
    assert b.notify.find("READY=1") is None


def test_replica_refuses_a_never_timeout(cdn):
    r = cdn.replica(start=False, extra={"server": {"idle_timeout": "100000000h"}})
    rc, stderr = start_and_exit(r)
    assert rc > 0, f"exit code {rc}"
    assert len(stderr.splitlines()) == 1, stderr
    assert (f"{r.config_path}:{line_of(r, 'idle_timeout')}: [server] idle_timeout: "
            f"'100000000h' is out of range (allowed: 100ms to 1h)") in stderr, stderr


@pytest.mark.parametrize("origin,why", [
    ("http://127.0.0.1:9/a?x=1#f", "it has a query"),
    ("http://127.0.0.1:9/a#f", "it has a fragment"),
    ("http://user:secret@127.0.0.1:9/", "user@ credentials are not supported"),
])
def test_replica_refuses_an_origin_that_cannot_work(cdn, origin, why):
    # The harness gives it a cache_dir of its own: a daemon that took the
    # origin would not touch /var/cache.
    r = cdn.replica(start=False)
    r.write_config(r.config_path.read_text().replace(f"root = {r.root}", f"origin = {origin}"))
    rc, stderr = start_and_exit(r)
    assert rc > 0, f"exit code {rc}"
    assert len(stderr.splitlines()) == 1, stderr
    assert (f"{r.config_path}:{line_of(r, 'origin')}: [content] origin: '{origin}' is not an "
            f"origin: {why}") in stderr, stderr


def test_balancer_with_an_hour_interval_probes_at_start(cdn):
    r = cdn.replica()
    # rise = 1: the first good probe brings the replica up. Old code: the
    # first probe came at a random moment within a tenth of the interval
    # (here up to 6 minutes).
    b = cdn.balancer([r], probe={"interval": "1h", "timeout": "1s", "rise": 1, "fall": 1,
                                 "stream": 0})
    ready = time.monotonic()
    cdn.wait_up(b, 1, timeout=1.0)
    assert time.monotonic() - ready < 1.0


# ------------------------------------------------------------------ reloads


def reload(d):
    """SIGHUP; wait for RELOADING=1 and the READY=1 after it (the reload
    hook has run and logged by then)."""
    mark = len(d.notify.messages)
    d.signal(signal.SIGHUP)
    i = d.notify.wait("RELOADING=1", start=mark, proc=d.proc)
    d.wait_ready(start=i + 1)


def log_lines(d, needle):
    text = d.log_files[0].read_text(errors="replace")
    return [l for l in text.splitlines() if needle in l]


def check_refused_reload_keeps_level(d, new_text, reason):
    """d runs at [log] level = info. Reload with new_text (level = warn and
    something refused): one error with the reason, and info lines still
    appear (the next SIGHUP's own info line is the witness)."""
    assert "level = warn" in new_text
    d.write_config(new_text)
    reload(d)
    refused = log_lines(d, "reload refused")
    assert len(refused) == 1, refused
    assert reason in refused[0], refused[0]
    reload(d)
    assert len(log_lines(d, "SIGHUP: reloading configuration")) == 2, \
        "an info line is missing after the refused reload: [log] level changed"
    assert len(log_lines(d, "reload refused")) == 2
    assert d.alive()


def test_refused_replica_reload_with_an_out_of_range_key_keeps_log_level(cdn):
    r = cdn.replica(extra={"log": {"level": "info"}})
    text = r.config_path.read_text().replace("level = info", "level = warn")
    text += "\n[server]\nidle_timeout = 100000000h\n"
    check_refused_reload_keeps_level(
        r, text, "[server] idle_timeout: '100000000h' is out of range (allowed: 100ms to 1h)")
    status, _, _ = r.get("/index.html")
    assert status == 200


@pytest.mark.parametrize("content,reason", [
    # Checked after the file parses: switching to an origin, a root that is gone.
    # (the harness's config has a cache_dir in the replica's work dir already)
    ("origin = http://127.0.0.1:9/", "takes a restart"),
    ("root = {root}/missing", "missing"),
])
def test_refused_replica_reload_after_parsing_keeps_log_level(cdn, content, reason):
    r = cdn.replica(extra={"log": {"level": "info"}})
    text = r.config_path.read_text().replace("level = info", "level = warn")
    text = text.replace(f"root = {r.root}", content.format(root=r.root))
    check_refused_reload_keeps_level(r, text, reason)
    status, _, _ = r.get("/index.html")
    assert status == 200


def test_refused_balancer_reload_keeps_log_level(cdn):
    r = cdn.replica()
    b = cdn.balancer([r], extra={"log": {"level": "info"}})
    cdn.wait_up(b, 1)
    text = b.config_path.read_text().replace("level = info", "level = warn")
    text = text.replace("interval = 400ms", "interval = 100000000h")
    check_refused_reload_keeps_level(
        b, text, "[probe] interval: '100000000h' is out of range (allowed: 100ms to 1h)")
    assert b.status()["up"] == 1
