# SPDX-License-Identifier: MIT
"""Multi-host topologies in network namespaces, for tests/netns and bench/balance.

One namespace per host (balancer, each replica, the clients) plus one
holding the bridge ("switch"); each host has one veth into the bridge and an
address in 10.77.0.0/24. Nothing is created in the caller's own namespace:
the veth pairs are made inside the switch namespace and their far ends moved
straight into the host namespaces, so the test traffic never leaves them.
Names carry a per-run id, so runs do not collide, and close() deletes every
namespace (which takes the veths and the bridge with it).

Replicas can be made unequal with a tbf bandwidth cap on their egress
(netem is not available on the kernels this runs on) and with the
`capacity` of their INI.

After setup the calling process joins the client namespace (setns), so its
sockets and the cdn-get/curl it starts speak to 10.77.0.x directly; daemons
are started with `ip netns exec NS ...`, which execs them in place: the pid
Popen returns is the daemon's, and only those pids are ever signalled.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("CDN_SOURCE_DIR", Path(__file__).resolve().parents[2]))
BUILD_DIR = Path(os.environ.get("CDN_BUILD_DIR", SOURCE_DIR / "build"))
REPLICAD = BUILD_DIR / "daemons" / "replicad" / "cdn-replicad"
BALANCERD = BUILD_DIR / "daemons" / "balancerd" / "cdn-balancerd"
CDN_GET = BUILD_DIR / "client" / "cdn-get"

PORT = 33000  # the seed's port, on every host
NET = "10.77.0"
BALANCER_IP = f"{NET}.1"
CLIENT_IP = f"{NET}.100"
CLONE_NEWNET = 0x40000000


class Skip(Exception):
    """The environment cannot run these tests (not root, no netns)."""


def run(*args, check=True, capture=True):
    r = subprocess.run(list(args), capture_output=capture, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def replica_ip(i):
    return f"{NET}.{11 + i}"


def wait_for(cond, timeout=15.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = cond()
            if last:
                return last
        except (OSError, http.client.HTTPException, ValueError) as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def http_get(host, path, port=PORT, timeout=5.0):
    """(status, headers dict lower-cased, body bytes); no redirects followed."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


class Daemon:
    def __init__(self, topo, ns, kind, argv, name):
        # A restarted daemon gets its own log and notify socket.
        same = sum(1 for d in topo.daemons if d.name.split("#")[0] == name)
        name = f"{name}#{same}" if same else name
        self.topo, self.ns, self.kind, self.name = topo, ns, kind, name
        self.log = topo.dir / f"{name}.log"
        self.notify_path = topo.dir / f"{name}.notify"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify_path))
        env.pop("LISTEN_FDS", None)
        env.pop("LISTEN_PID", None)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], env=env,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        topo.daemons.append(self)

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log_text()}")
            if left <= 0:
                raise AssertionError(f"{self.name}: no READY=1 within {timeout}s:\n{self.log_text()}")
            ready, _, _ = select.select([self.notify], [], [], min(left, 0.1))
            if ready and b"READY=1" in self.notify.recv(65536).split(b"\n"):
                # Nobody reads STATUS= updates from here on: close the socket,
                # or its queue fills and the daemon's next sd_notify blocks
                # (a datagram socket's sender waits for a full receiver).
                self.notify.close()
                self.notify_path.unlink(missing_ok=True)
                return self

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout=40.0):
        return self.proc.wait(timeout=timeout)

    def alive(self):
        return self.proc.poll() is None

    def log_text(self, limit=8000):
        try:
            return self.log.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def close(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.notify.close()


class Topology:
    """A switch, a balancer host, n replica hosts and a client host."""

    def __init__(self, replicas=3):
        if os.geteuid() != 0:
            raise Skip("needs root (ip netns, veth, tc): run as root, as CI does")
        for tool in ("ip", "tc"):
            if shutil.which(tool) is None:
                raise Skip(f"{tool} not found (apt-get install iproute2)")
        for path in (REPLICAD, BALANCERD, CDN_GET):
            if not path.exists():
                raise Skip(f"{path} not built (set CDN_BUILD_DIR)")
        self.id = secrets.token_hex(3)
        self.dir = Path(tempfile.mkdtemp(prefix=f"cdn-netns-{self.id}-"))
        self.namespaces = []
        self.daemons = []
        self.home_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
        self.n = replicas
        self.sw = f"cdn{self.id}sw"
        self.bal = f"cdn{self.id}bal"
        self.cli = f"cdn{self.id}cli"
        self.rep = [f"cdn{self.id}r{i}" for i in range(replicas)]
        try:
            self._add_ns(self.sw)
        except RuntimeError as e:
            self.close()
            raise Skip(f"ip netns add failed ({e}): network namespaces are not available here")
        try:
            self._build()
        except Exception:
            self.close()
            raise

    def _add_ns(self, name):
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def _build(self):
        run("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.sw, "link", "set", "br0", "up")
        hosts = [(self.bal, BALANCER_IP), (self.cli, CLIENT_IP)]
        hosts += [(ns, replica_ip(i)) for i, ns in enumerate(self.rep)]
        for k, (ns, ip) in enumerate(hosts):
            self._add_ns(ns)
            port = f"p{k}"
            run("ip", "-n", self.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            run("ip", "-n", self.sw, "link", "set", port, "master", "br0")
            run("ip", "-n", self.sw, "link", "set", port, "up")
            run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")

    def cap(self, i, mbit):
        """Cap replica i's egress (what its clients download) at mbit Mbit/s."""
        # burst: enough for a few packets at once; latency bounds the queue.
        run("ip", "netns", "exec", self.rep[i], "tc", "qdisc", "replace", "dev", "eth0", "root",
            "tbf", "rate", f"{mbit}mbit", "burst", "64kb", "latency", "100ms")

    def enter_client(self):
        """Move this process into the client namespace (until leave())."""
        fd = os.open(f"/var/run/netns/{self.cli}", os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)

    def leave(self):
        ctypes.CDLL(None, use_errno=True).setns(self.home_ns, CLONE_NEWNET)

    # ------------------------------------------------------------ daemons

    def site(self, files):
        """Write {name: bytes} under a content directory shared by the replicas."""
        root = self.dir / "site"
        root.mkdir(exist_ok=True)
        for name, data in files.items():
            (root / name).write_bytes(data)
        return root

    def start_replica(self, i, root, capacity=1000, extra=""):
        ini = self.dir / f"replica{i}.ini"
        ini.write_text(f"[server]\naddress = {replica_ip(i)}\nport = {PORT}\nname = r{i}\n"
                       f"drain_timeout = 30s\n[admin]\nallow = 127.0.0.0/8, 10.77.0.0/24\n"
                       f"[content]\nroot = {root}\ncapacity = {capacity}\n"
                       f"{extra}")
        d = Daemon(self, self.rep[i], "replica", [str(REPLICAD), "-c", str(ini)], f"replica{i}")
        return d.wait_ready()

    def start_balancer(self, policy="p2c", extra_ini="", weights=None):
        """weights: a round-robin weight per replica (weight=N in servers.txt);
        None leaves every replica at the default weight."""
        servers = self.dir / "servers.txt"
        # The seed's format: one bare host a line, the balancer's port implied.
        servers.write_text("".join(
            f"{replica_ip(i)}{f' weight={weights[i]}' if weights else ''}\n"
            for i in range(self.n)))
        ini = self.dir / f"balancer-{policy}.ini"
        ini.write_text(f"[server]\naddress = {BALANCER_IP}\nport = {PORT}\n"
                       f"[admin]\nallow = 127.0.0.0/8, 10.77.0.0/24\n"
                       f"[balance]\npolicy = {policy}\n{extra_ini}")
        d = Daemon(self, self.bal, "balancer",
                   [str(BALANCERD), "-c", str(ini), "-s", str(servers), "-p", str(PORT)],
                   f"balancer-{policy}")
        return d.wait_ready()

    def balancer_status(self):
        status, _, body = http_get(BALANCER_IP, "/.cdn/status")
        if status != 200:
            raise ValueError(f"status answered {status}")
        return json.loads(body)

    def replica_health(self):
        """{replica ip: health} as the balancer sees it."""
        return {r["address"].split(":")[0]: r["health"] for r in self.balancer_status()["replicas"]}

    def wait_all_up(self, ips=None, timeout=20.0):
        ips = ips or [replica_ip(i) for i in range(self.n)]
        wait_for(lambda: all(self.replica_health().get(ip) == "up" for ip in ips), timeout=timeout,
                 what=f"{ips} up in the balancer")

    def close(self):
        for d in self.daemons:
            try:
                d.close()
            except Exception:  # noqa: BLE001 - cleanup goes on
                pass
        self.daemons = []
        try:
            self.leave()
        except Exception:  # noqa: BLE001
            pass
        for ns in reversed(self.namespaces):
            run("ip", "netns", "del", ns, check=False)
        self.namespaces = []
        if os.environ.get("CDN_NETNS_KEEP") is None:
            shutil.rmtree(self.dir, ignore_errors=True)
