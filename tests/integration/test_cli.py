# SPDX-License-Identifier: MIT
"""The command lines of the three programs for people: errors that name the
program, ranges that say so, --print-config, and cdn-get's 404 exit code,
-o DIR and Ctrl-C leaving no temporary file."""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from cdnlib import BALANCERD, CDN_GET, REPLICAD, SOURCE_DIR, describe_run, run_get, wait_for
from conftest import DEFAULT_PAGE

PROGRAMS = {"cdn-replicad": REPLICAD, "cdn-balancerd": BALANCERD, "cdn-get": CDN_GET}


def run(binary, *args, cwd=None):
    return subprocess.run([str(binary)] + [str(a) for a in args], cwd=cwd,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
@pytest.mark.parametrize("args,says", [
    (["-p", "70000"], "--port: 70000 is out of range (0 to 65535)"),
    (["-p", "x"], "'x' is not a whole number (0 to 65535)"),
    (["--no-such-flag"], "--no-such-flag"),
])
def test_errors_start_with_the_program_name(name, args, says):
    r = run(PROGRAMS[name], *args)
    assert r.returncode == 2, describe_run(r)
    assert r.stderr.startswith(f"{name}: "), describe_run(r)
    assert says in r.stderr, describe_run(r)
    assert "Could not convert" not in r.stderr


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_version_and_help(name):
    r = run(PROGRAMS[name], "--version")
    assert r.returncode == 0 and r.stdout.startswith(f"{name} 0."), describe_run(r)
    assert "features:" in r.stdout
    h = run(PROGRAMS[name], "--help")
    assert h.returncode == 0, describe_run(h)
    assert "Exit codes:" in h.stdout and "=33000" in h.stdout, h.stdout


def test_print_config_merges_flags_over_ini_over_defaults(tmp_path):
    (tmp_path / "site").mkdir()
    ini = tmp_path / "r.ini"
    ini.write_text("[server]\nport = 4000 # inline comment\nidle_timeout = 90s\n"
                   "[log]\nlevel = debug ; the other comment character\n"
                   "[content]\nroot = site\nstale_if_error = 2d\n")
    r = run(REPLICAD, "-c", ini, "-p", "4001", "--print-config", cwd="/")
    assert r.returncode == 0, describe_run(r)
    assert "port = 4001\n" in r.stdout                    # flag over INI
    assert "idle_timeout = 90s\n" in r.stdout             # INI over default
    assert "stale_if_error = 48h\n" in r.stdout           # the 'd' unit
    assert "level = debug\n" in r.stdout
    assert f"root = {tmp_path / 'site'}\n" in r.stdout    # relative to the INI file
    assert "max_headers = 100\n" in r.stdout              # default
    # What it prints is a configuration that reads back the same.
    back = tmp_path / "back.ini"
    back.write_text(r.stdout)
    again = run(REPLICAD, "-c", back, "--print-config")
    assert again.returncode == 0 and again.stdout == r.stdout, describe_run(again)


def test_shipped_configuration_pair_agrees():
    etc = SOURCE_DIR / "etc" / "cdn"
    r = run(REPLICAD, "-c", etc / "replicad.ini", "-r", "/", "--print-config")
    b = run(BALANCERD, "-c", etc / "balancerd.ini", "--print-config")
    assert r.returncode == 0, describe_run(r)
    assert b.returncode == 0, describe_run(b)
    port = next(line.split(" = ")[1] for line in r.stdout.splitlines()
                if line.startswith("port = "))
    assert f"replica = 127.0.0.1:{port}\n" in b.stdout, b.stdout
    assert f"port = {port}\n" not in b.stdout  # the two do not share a port
    # The socket units listen where the INI files do (a socket-activated
    # daemon ignores its [server] port), so servers.txt names the replica's
    # socket too, and both units can be enabled on one host.
    b_port = next(line.split(" = ")[1] for line in b.stdout.splitlines()
                  if line.startswith("port = "))
    units = SOURCE_DIR / "packaging" / "systemd"
    for unit, want in (("cdn-replicad.socket", port), ("cdn-balancerd.socket", b_port)):
        listen = re.findall(r"^ListenStream=(.*)$", (units / unit).read_text(), flags=re.M)
        assert listen == [want], f"{unit}: ListenStream={listen}, the INI file's port is {want}"


def test_404_ends_at_once_with_its_own_code(cdn, workdir):
    r = cdn.replica({"index.html": DEFAULT_PAGE})
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    start = time.monotonic()
    res = run_get([b.url("/missing.html")], cwd=workdir)
    assert res.returncode == 7, describe_run(res)
    assert time.monotonic() - start < 5
    assert res.stderr.startswith("cdn-get: "), describe_run(res)
    assert "404" in res.stderr
    assert list(workdir.iterdir()) == []


def test_output_directory(cdn, workdir):
    r = cdn.replica({"index.html": DEFAULT_PAGE, "a/page.html": b"page\n"})
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    (workdir / "into").mkdir()
    res = run_get([b.url("/a/page.html"), "-o", "into"], cwd=workdir)
    assert res.returncode == 0, describe_run(res)
    assert (workdir / "into" / "page.html").read_bytes() == b"page\n"
    res = run_get(["-s", "127.0.0.1", "-p", b.port, "-o", "into/"], cwd=workdir)
    assert res.returncode == 0, describe_run(res)
    assert (workdir / "into" / "website.html").read_bytes() == DEFAULT_PAGE
    assert sorted(p.name for p in (workdir / "into").iterdir()) == ["page.html", "website.html"]


class StallingServer:
    """Answers every GET with a long body, sends a part of it and stalls:
    a transfer that is mid-way for as long as the test wants."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._answer, args=(c,), daemon=True).start()

    def _answer(self, c):
        try:
            c.recv(65536)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 300000)
        except OSError:
            pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_no_temporary_file(workdir, sig):
    server = StallingServer()
    try:
        p = subprocess.Popen([str(CDN_GET), f"http://127.0.0.1:{server.port}/big.bin"],
                             cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        # Mid-transfer: the head came and the temporary file exists.
        wait_for(lambda: list(workdir.iterdir()),
                 what="a partial temporary file")
        p.send_signal(sig)
        out, err = p.communicate(timeout=15)
        assert p.returncode == 130, f"rc={p.returncode} stderr={err}"
        assert err.startswith("cdn-get: "), err
        assert list(workdir.iterdir()) == []
    finally:
        server.close()


class ThrottledServer(StallingServer):
    """Sends a whole body, 64 KiB every 100 ms: a transfer slow enough to
    watch."""

    SIZE = 2 * 1024 * 1024

    def _answer(self, c):
        try:
            c.recv(65536)
            c.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {self.SIZE}\r\n\r\n".encode())
            for _ in range(self.SIZE // 65536):
                c.sendall(b"y" * 65536)
                time.sleep(0.1)
        except OSError:
            pass


def test_progress_line_in_a_terminal(workdir):
    """cdn-get in a tmux pane: the progress line shows bytes, total, rate,
    ETA and the replica while the transfer runs; the file is whole after."""
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux not installed")
    server = ThrottledServer()
    session = f"cdn-get-{os.getpid()}"
    sock = ["-L", session]
    try:
        subprocess.run([tmux, *sock, "new-session", "-d", "-s", session, "-x", "120", "-y", "10",
                        f"cd {workdir} && {CDN_GET} http://127.0.0.1:{server.port}/slow.bin; "
                        "echo rc=$?; sleep 60"], check=True)

        def pane():
            return subprocess.run([tmux, *sock, "capture-pane", "-p", "-t", session],
                                  capture_output=True, text=True).stdout

        text = wait_for(lambda: (lambda t: t if re.search(
            r"KiB|MiB", t) and "/s" in t and "ETA" in t else None)(pane()),
            what="a progress line in the pane")
        assert f"from 127.0.0.1:{server.port}" in text, text
        assert "/ 2.00 MiB" in text, text
        done = wait_for(lambda: (lambda t: t if "rc=" in t else None)(pane()),
                        what="cdn-get to finish")
        assert "rc=0" in done, done
        assert "ETA" not in done, done  # the line gave way to the outcome
        assert (workdir / "slow.bin").stat().st_size == ThrottledServer.SIZE
    finally:
        subprocess.run([tmux, *sock, "kill-server"], capture_output=True)
        server.close()


def test_no_progress_line_when_not_a_terminal(workdir):
    server = ThrottledServer()
    try:
        res = run_get([f"http://127.0.0.1:{server.port}/slow.bin"], cwd=workdir)
        assert res.returncode == 0, describe_run(res)
        assert "\r" not in res.stderr and "ETA" not in res.stderr, describe_run(res)
    finally:
        server.close()


@pytest.mark.parametrize("partial,resumed", [
    (lambda body: body[:1_000_001], True),                    # a clean prefix: the rest only
    (lambda body: b"X" * 1_000_001, False),                   # a wrong prefix: digest, then whole
    (lambda body: body + b"extra", False),                    # longer than the content: 416, whole
])
def test_continue_completes_a_partial_file(cdn, workdir, partial, resumed):
    body = os.urandom(3 * 1024 * 1024 + 77)
    r = cdn.replica({"index.html": DEFAULT_PAGE, "big.bin": body})
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    (workdir / "big.bin").write_bytes(partial(body))
    res = run_get([b.url("/big.bin"), "--continue"], cwd=workdir)
    assert res.returncode == 0, describe_run(res)
    assert (workdir / "big.bin").read_bytes() == body
    assert ("resumed at byte 1000001" in res.stdout) == resumed, describe_run(res)
    assert sorted(p.name for p in workdir.iterdir()) == ["big.bin"]
