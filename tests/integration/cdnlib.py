# SPDX-License-Identifier: MIT
"""Harness for the integration tests: real daemons in a temp dir.

Modelled on knot-resolver's tests/pytests/kresd.py and Redis's
wait_for_condition: every daemon gets its own directory, a generated INI
file, ports picked by the test (bind :0, read, close), and is declared ready
by sd_notify READY=1 on a socket the harness owns.  Nothing here sleeps for a
fixed time: waits are select()/poll() with a deadline, and conditions are
polled with a short interval up to a deadline.

Only processes started here are ever signalled, by their pid.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import random
import select
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("CDN_SOURCE_DIR",
                                 Path(__file__).resolve().parents[2]))
BUILD_DIR = Path(os.environ.get("CDN_BUILD_DIR", SOURCE_DIR / "build"))

REPLICAD = BUILD_DIR / "daemons" / "replicad" / "cdn-replicad"
BALANCERD = BUILD_DIR / "daemons" / "balancerd" / "cdn-balancerd"
CDN_GET = BUILD_DIR / "client" / "cdn-get"

# Deadlines: generous, since CI machines are noisy; a passing test never
# waits for them.
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
CONDITION_TIMEOUT = 15.0
POLL_INTERVAL = 0.05
HTTP_TIMEOUT = 10.0


# --------------------------------------------------------------------------
# waiting


class ConditionTimeout(AssertionError):
    pass


def wait_for(condition, timeout=CONDITION_TIMEOUT, interval=POLL_INTERVAL, what=None):
    """Redis-style wait_for_condition: call condition() until it returns a
    truthy value (returned) or the deadline passes (AssertionError, with the
    last value or exception seen)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = condition()
            if last:
                return last
        except (OSError, http.client.HTTPException, ValueError) as e:
            last = e
        if time.monotonic() >= deadline:
            raise ConditionTimeout(
                f"timed out after {timeout}s waiting for {what or condition}; last: {last!r}")
        time.sleep(interval)


# --------------------------------------------------------------------------
# ports


# Its own generator: a test that seeds `random` must not make two suites
# running side by side pick the same ports.
_ports = random.SystemRandom()


def free_port(host="127.0.0.1", also_on=()):
    """A port that is free on host (and on every address of also_on), taken
    at random below the kernel's ephemeral range and tried with a bind.
    Not bind :0: that port comes from the range the kernel also gives every
    outgoing connection's local end, and one did take a balancer's TLS port
    between this check and the daemon's listen (EADDRINUSE under ASan, with
    two suites running). The small race with other tests picking the same
    port at once is accepted; fixed ports never are."""
    low = _ephemeral_low()
    for _ in range(200):
        port = _ports.randrange(max(1024, low - 12000), low)
        ok = True
        for address in (host, *also_on):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((address, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no free port found")


def _ephemeral_low():
    """The first port of the kernel's ephemeral range (32768 by default)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_refuses(host, port, timeout=2.0):
    """True when a TCP connect to host:port is refused."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return False
    except ConnectionRefusedError:
        return True


# --------------------------------------------------------------------------
# INI


def ini_text(sections):
    """{'server': {'port': 1, 'name': 'x'}, 'replicas': {'replica': [a, b]}}
    -> INI text; a list value repeats the key."""
    out = []
    for section, keys in sections.items():
        out.append(f"[{section}]")
        for key, value in keys.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                out.append(f"{key} = {v}")
        out.append("")
    return "\n".join(out)


def merge_sections(base, extra):
    out = {s: dict(k) for s, k in base.items()}
    for section, keys in (extra or {}).items():
        out.setdefault(section, {}).update(keys)
    return out


# --------------------------------------------------------------------------
# sd_notify


class NotifySocket:
    """The AF_UNIX SOCK_DGRAM socket a daemon finds in NOTIFY_SOCKET.  Every
    datagram is kept (a list of its lines) so that tests can look at
    READY=1, STATUS=, STOPPING=1, RELOADING=1 and their order.

    Datagrams are read only when a test looks, and the kernel queues at
    most net.unix.max_dgram_qlen (often 10) of them: the daemons send
    without blocking, so once a long test let STATUS= lines fill the queue,
    later ones are dropped.  Drain it (poll) before an action whose
    notification the test will wait for."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[list[str]] = []

    def close(self):
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def _receive(self, timeout):
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            self.messages.append(data.decode(errors="replace").splitlines())

    def poll(self):
        self._receive(0)

    def find(self, line, start=0):
        """Index of the first datagram at or after start holding `line`
        (exact, or a prefix when line ends with '=')."""
        self.poll()
        for i in range(start, len(self.messages)):
            for entry in self.messages[i]:
                if entry == line or (line.endswith("=") and entry.startswith(line)):
                    return i
        return None

    def wait(self, line, start=0, timeout=READY_TIMEOUT, proc=None):
        """Wait (select with a deadline, never a fixed sleep) for a datagram
        holding `line` at or after index start; returns its index.  Fails at
        once if proc exits meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            found = self.find(line, start)
            if found is not None:
                return found
            if proc is not None and proc.poll() is not None:
                self.poll()
                found = self.find(line, start)
                if found is not None:
                    return found
                raise AssertionError(
                    f"daemon exited with code {proc.returncode} before sending {line!r}; "
                    f"notifications so far: {self.messages}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {line!r} from the daemon within {timeout}s; "
                    f"notifications so far: {self.messages}")
            self._receive(min(remaining, 0.1))

    def values(self, key):
        """All values sent for KEY= (e.g. 'STATUS'), in order."""
        self.poll()
        prefix = key + "="
        return [e[len(prefix):] for m in self.messages for e in m if e.startswith(prefix)]


# --------------------------------------------------------------------------
# daemons


class Daemon:
    """One cdn-replicad or cdn-balancerd process in its own directory."""

    def __init__(self, kind, workdir, args, config=None, env=None):
        self.kind = kind
        self.binary = REPLICAD if kind == "replicad" else BALANCERD
        self.dir = Path(workdir)
        self.args = list(args)
        self.config_path = self.dir / f"{kind}.ini" if config is not None else None
        if config is not None:
            self.write_config(config)
        self.stderr_path = self.dir / "stderr.log"
        self.stdout_path = self.dir / "stdout.log"
        self.extra_env = env or {}
        self.pass_fds = ()  # descriptors the daemon inherits (see test_replica's passed socket)
        self.notify = NotifySocket(self.dir / "notify.sock")
        self.proc = None
        self.expect_exit = False  # set when a test kills or stops it itself
        self.log_files = []       # other logs (-l / [log] file) to dump on failure
        self.host = None
        self.port = None

    # configuration
    def write_config(self, config):
        text = config if isinstance(config, str) else ini_text(config)
        # Write-then-rename, so that a SIGHUP never sees half a file.
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    # life cycle
    def argv(self):
        argv = [str(self.binary)]
        if self.config_path is not None:
            argv += ["-c", str(self.config_path)]
        return argv + self.args

    def start(self, wait_ready=True, timeout=READY_TIMEOUT):
        env = dict(os.environ)
        for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC",
                  "WATCHDOG_PID", "JOURNAL_STREAM", "INVOCATION_ID"):
            env.pop(k, None)
        env["NOTIFY_SOCKET"] = self.notify.path
        env.update(self.extra_env)
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(self.argv(), cwd=self.dir, env=env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         pass_fds=self.pass_fds)
        if wait_ready:
            self.wait_ready(timeout=timeout)
        return self

    def wait_ready(self, start=0, timeout=READY_TIMEOUT):
        return self.notify.wait("READY=1", start=start, timeout=timeout, proc=self.proc)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        # Only ever our own child, by pid, and only while we have not reaped it.
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self):
        self.expect_exit = True
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT)

    def start_again(self, timeout=READY_TIMEOUT):
        """Start the same argv after the process exited (killed or stopped by
        the test) and wait for the new process's READY=1; the test expects
        it to be running again at teardown."""
        assert self.proc is not None and self.proc.poll() is not None, "still running"
        self.notify.poll()  # room in the queue for READY=1 (see NotifySocket)
        mark = len(self.notify.messages)
        self.expect_exit = False
        self.start(wait_ready=False)
        self.wait_ready(start=mark, timeout=timeout)

    def reload(self, timeout=READY_TIMEOUT):
        """SIGHUP; waits for RELOADING=1 and the READY=1 after it (sent
        whether the new file was taken or refused); returns the index of
        the RELOADING=1 datagram."""
        self.notify.poll()  # room in the queue for RELOADING=1 (see NotifySocket)
        mark = len(self.notify.messages)
        self.signal(signal.SIGHUP)
        i = self.notify.wait("RELOADING=1", start=mark, timeout=timeout, proc=self.proc)
        self.notify.wait("READY=1", start=i + 1, timeout=timeout, proc=self.proc)
        return i

    def rss_kib(self):
        """Resident set size of the running process (VmRSS), in KiB."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    def wait_exit(self, timeout=STOP_TIMEOUT):
        self.expect_exit = True
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM and wait; returns the exit code (SIGKILL after timeout)."""
        if self.proc is None:
            return None
        self.expect_exit = True
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(timeout=timeout)
                raise AssertionError(f"{self.kind} pid {self.pid} ignored SIGTERM for {timeout}s")
        return self.proc.returncode

    def cleanup(self):
        with contextlib.suppress(Exception):
            if self.proc is not None and self.proc.poll() is None:
                self.signal(signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT)
        self.notify.close()

    # logs
    def sanitizer_reports(self):
        """How many reports ThreadSanitizer wrote to this daemon's stderr."""
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return 0
        return text.count("WARNING: ThreadSanitizer:")

    def log_text(self, limit=20000):
        parts = []
        for p in [self.stderr_path, self.stdout_path] + [Path(f) for f in self.log_files]:
            try:
                text = Path(p).read_text(errors="replace")
            except OSError:
                continue
            if text:
                if len(text) > limit:
                    text = "...\n" + text[-limit:]
                parts.append(f"--- {p} ---\n{text}")
        return "\n".join(parts)

    def describe(self):
        rc = None if self.proc is None else self.proc.poll()
        return (f"{self.kind} {self.host}:{self.port} pid={self.pid if self.proc else None} "
                f"rc={rc} argv={self.argv()}\nnotify: {self.notify.messages}\n{self.log_text()}")

    # HTTP
    def url(self, path="/"):
        return f"http://{self.host}:{self.port}{path}"

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def connection(self, timeout=HTTP_TIMEOUT):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, headers=None, timeout=HTTP_TIMEOUT):
        """One request on a fresh connection: (status, headers, body)."""
        return http_request(self.host, self.port, method, path, headers, timeout)

    def get(self, path, headers=None):
        return self.request("GET", path, headers)

    def status(self):
        status, _, body = self.get("/.cdn/status")
        assert status == 200, f"/.cdn/status answered {status}: {body[:200]!r}"
        return json.loads(body)

    def metric(self, name, **labels):
        """The value of a sample on /.cdn/metrics: without labels, or with
        exactly these (in order), e.g. metric("cdn_replica_cache_objects",
        site="default")."""
        status, _, body = self.get("/.cdn/metrics")
        assert status == 200, f"/.cdn/metrics answered {status}: {body[:200]!r}"
        if labels:
            name += "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"no {name} in the metrics page")

    def check_metrics_page(self):
        """The metrics page, after Prometheus's own checker passed it.

        promtool (Debian package prometheus) is what a Prometheus server
        would accept, lint included; a test skips where it is not installed.
        """
        import pytest
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.skip("promtool not installed (apt-get install prometheus)")
        status, _, body = self.get("/.cdn/metrics")
        assert status == 200, f"/.cdn/metrics answered {status}: {body[:200]!r}"
        r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                           timeout=60, check=False)
        assert r.returncode == 0, (
            f"promtool check metrics: {r.stdout.decode()} {r.stderr.decode()}")
        return body.decode()


class Headers:
    """Case-insensitive multi-map of response headers."""

    def __init__(self, items):
        self.items = [(k, v) for k, v in items]

    def get(self, name, default=None):
        name = name.lower()
        for k, v in self.items:
            if k.lower() == name:
                return v
        return default

    def get_all(self, name):
        name = name.lower()
        return [v for k, v in self.items if k.lower() == name]

    def __contains__(self, name):
        return self.get(name) is not None

    def __getitem__(self, name):
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v

    def __repr__(self):
        return repr(self.items)


def http_request(host, port, method, path, headers=None, timeout=HTTP_TIMEOUT):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, Headers(resp.getheaders()), body
    finally:
        conn.close()


# --------------------------------------------------------------------------
# raw HTTP over a socket: for pipelining, malformed requests, slow reads


class RawConnection:
    """A TCP connection on which the test writes bytes verbatim and parses the
    responses itself (Content-Length, chunked, or until close)."""

    def __init__(self, host, port, timeout=HTTP_TIMEOUT, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = b""
        self.eof = False

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, size=65536):
        if self.eof:
            return False
        try:
            data = self.sock.recv(size)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, marker, limit=1 << 20):
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise AssertionError(f"no {marker!r} within {limit} bytes")
            if not self._fill():
                raise EOFError(f"connection closed before {marker!r}; got {self.buf[:300]!r}")
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill(max(65536, n - len(self.buf))):
                raise EOFError(f"connection closed after {len(self.buf)} of {n} bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self):
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out

    def read_head(self):
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        assert parts[0].startswith("HTTP/1."), f"bad status line {lines[0]!r}"
        status = int(parts[1])
        items = []
        for line in lines[1:]:
            if not line:
                continue
            k, _, v = line.partition(":")
            items.append((k.strip(), v.strip()))
        return status, Headers(items)

    def read_response(self, head_request=False):
        """(status, headers, body) of the next response."""
        status, headers = self.read_head()
        if head_request or status in (204, 304) or 100 <= status < 200:
            return status, headers, b""
        te = (headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            body = b""
            while True:
                size = int(self.read_until(b"\r\n").split(b";")[0].strip(), 16)
                if size == 0:
                    self.read_until(b"\r\n")  # no trailers expected
                    return status, headers, body
                body += self.read_exact(size)
                self.read_until(b"\r\n")
        cl = headers.get("Content-Length")
        if cl is not None:
            return status, headers, self.read_exact(int(cl))
        return status, headers, self.read_to_eof()

    def recv_some(self, size):
        """Up to size bytes of whatever arrives next (buffered bytes first)."""
        if self.buf:
            out, self.buf = self.buf[:size], self.buf[size:]
            return out
        if self.eof:
            return b""
        data = self.sock.recv(size)
        if not data:
            self.eof = True
        return data


def raw_exchange(host, port, data, head_request=False, timeout=HTTP_TIMEOUT):
    """Send bytes on a fresh connection, read one response."""
    with RawConnection(host, port, timeout=timeout) as c:
        c.send(data)
        return c.read_response(head_request=head_request)


# --------------------------------------------------------------------------
# the cdn-get client


def run_get(args, cwd, timeout=60, extra_env=None):
    env = dict(os.environ)
    env.update(extra_env or {})
    return subprocess.run([str(CDN_GET)] + [str(a) for a in args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def describe_run(r):
    return f"argv={r.args} rc={r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"


# --------------------------------------------------------------------------
# other suites


def integration_conftest():
    """tests/integration/conftest.py as a module, for another suite's
    conftest to re-export its fixtures and hooks (pytest imports every
    rootdir's conftest.py as `conftest`, so it cannot be imported by name)."""
    spec = importlib.util.spec_from_file_location("cdn_integration_conftest",
                                                  Path(__file__).resolve().parent / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------
# temp dirs short enough for AF_UNIX socket paths (108 bytes)


def short_tempdir(prefix="cdn-it-"):
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------
# TLS: a CA and certificates made at test time


def _openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class Pki:
    """A CA, and leaf certificates for localhost / 127.0.0.1 signed by it."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        _openssl(self.dir, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=cdn-test-ca",
                 "-keyout", "ca.key", "-out", "ca.pem")
        self.ca = self.dir / "ca.pem"

    def leaf(self, name, cn=None, key="ec", sans="DNS:localhost,IP:127.0.0.1"):
        """name.pem (leaf + CA) and name.key; returns (cert, key) paths."""
        keyopt = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key == "ec"
                  else ["-newkey", "rsa:2048"])
        _openssl(self.dir, "req", *keyopt, "-nodes", "-subj", f"/CN={cn or name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (self.dir / f"{name}.ext").write_text(f"subjectAltName={sans}\n")
        _openssl(self.dir, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey",
                 "ca.key", "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                 "-out", f"{name}.leaf")
        pem = self.dir / f"{name}.pem"
        pem.write_bytes((self.dir / f"{name}.leaf").read_bytes() + self.ca.read_bytes())
        return pem, self.dir / f"{name}.key"

    def context(self):
        ctx = ssl.create_default_context(cafile=str(self.ca))
        return ctx
