#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The units under a real systemd: install, readiness, status, drain, watchdog,
reload, socket activation, journald fields, hardening score, verify.

Boots systemd as PID 1 in throw-away namespaces with ../shared/systemd-sandbox/sdbox.sh,
installs the project into the sandbox exactly as an operator would (`meson install`
into a staging directory, bound read-only at /opt/cdn-stage and copied onto the
sandbox's copy-on-write root, so nothing reaches the host's /usr or /etc), then drives
the units with systemctl and checks each point from inside and from the sandbox's
network namespace. Prints PASS/FAIL per point; exit 0 all passed, 1 a failure,
77 skipped (not root, no sandbox script, or the sandbox cannot boot).

The watchdog point stalls the event loop with the SIGUSR2 debug hook, which only a
build configured with -Ddebug_hooks=true has. When the build under test has it, that
build is installed; otherwise (the default build, as in CI) the test configures and
builds the installable targets once more with -Ddebug_hooks=true in
<build>/tests/systemd/debug-hooks-build (kept: later runs are incremental) and
installs that one. Either way every point runs against one installation.

Stdlib only. Run by `meson test --suite systemd`; by hand:
  python3 tests/systemd/test_systemd.py --source-root . --build-root build --sdbox ../shared/systemd-sandbox/sdbox.sh
"""

import argparse
import atexit
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

SKIP = 77
PORT = 33000
REPLICA = "127.0.0.2"  # the replica listens here, the balancer on 127.0.0.1 (same port)
BALANCER = "127.0.0.1"
# Far larger than what the kernel's socket buffers hold, so that the daemon itself is
# still sending when asked to stop: at 6 MB/s about 8 s.
BIG_SIZE = 48 * 1024 * 1024
RATE = "6M"

failures = []


def log(msg):
    print(msg, flush=True)


def check(ok, what, detail=""):
    if ok:
        log(f"PASS {what}")
    else:
        log(f"FAIL {what}" + (f": {detail}" if detail else ""))
        failures.append(what)
    return ok


def skip(why):
    log(f"SKIP: {why}")
    sys.exit(SKIP)


def wait_for(pred, timeout, step=0.1):
    """Polls pred() until it answers truthy (returned) or timeout seconds pass (None)."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            return None
        time.sleep(step)


class Sandbox:
    def __init__(self, sdbox, name):
        self.sdbox = sdbox
        self.name = name
        self.is_up = False

    def run(self, *argv, check=False, timeout=120, input=None):
        r = subprocess.run([self.sdbox, "-n", self.name, *argv], capture_output=True, text=True,
                           timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
        return r

    def up(self, binds):
        args = ["up"]
        for src, dst in binds:
            args += ["--bind-ro", f"{src}:{dst}"]
        r = self.run(*args, timeout=120)
        self.is_up = r.returncode == 0
        return r

    def down(self):
        if self.is_up:
            self.run("down", timeout=60)
            self.is_up = False

    def sh(self, code, timeout=120):
        return self.run("sh", code, timeout=timeout)

    def out(self, code, timeout=120):
        return self.sh(code, timeout).stdout.strip()

    def netexec(self, *argv, timeout=120):
        return self.run("netexec", *argv, timeout=timeout)

    def netexec_bg(self, *argv, **kw):
        return subprocess.Popen([self.sdbox, "-n", self.name, "netexec", *argv], text=True, **kw)

    def prop(self, unit, name):
        return self.out(f"systemctl show -p {name} --value {unit}")

    def active(self, unit):
        return self.out(f"systemctl is-active {unit}")

    def journal(self, unit, *matches):
        return self.out(f"journalctl --no-pager -o cat -u {unit} " + " ".join(matches))

    def curl(self, url, *args, timeout=30):
        return self.netexec("curl", "-sS", "--max-time", str(timeout), *args, url, timeout=timeout + 10)


# ---------------------------------------------------------------- build and stage

def configured_with_debug_hooks(build_root):
    try:
        with open(os.path.join(build_root, "cdn_config.h")) as f:
            return re.search(r"#define CDN_DEBUG_HOOKS 1\b", f.read()) is not None
    except OSError:
        return False


def build_to_install(source_root, build_root):
    if configured_with_debug_hooks(build_root):
        log(f"using the build under test ({build_root}): it has -Ddebug_hooks=true")
        return build_root
    sub = os.path.join(build_root, "tests", "systemd", "debug-hooks-build")
    log(f"the build under test has no debug hooks: building {sub} with -Ddebug_hooks=true")
    if not os.path.exists(os.path.join(sub, "build.ninja")):
        # plain: no optimisation flags, the quickest compile; tests are not needed here.
        subprocess.run(["meson", "setup", sub, source_root, "-Ddebug_hooks=true", "-Dtests=disabled",
                        "-Dbuildtype=plain", "--prefix=/usr"], check=True, stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    subprocess.run(["ninja", "-C", sub], check=True, stdout=subprocess.DEVNULL)
    log(f"debug-hooks build ready in {time.monotonic() - t0:.0f} s")
    return sub


def stage(build, stage_dir):
    shutil.rmtree(stage_dir, ignore_errors=True)
    subprocess.run(["meson", "install", "-C", build, "--no-rebuild", "--quiet", "--destdir", stage_dir],
                   check=True, stdout=subprocess.DEVNULL)


def find_under(root, name):
    for d, _, files in os.walk(root):
        if name in files:
            return os.path.join(d, name)
    return None


# ---------------------------------------------------------------- the points

def point_install(sb, stage_dir, source_root):
    r = sb.sh("cp -a /opt/cdn-stage/. / && systemctl daemon-reload")
    if not check(r.returncode == 0, "install: staged `meson install` copied onto the sandbox root",
                 r.stderr):
        return False
    units = {}
    for u in ("cdn-replicad.service", "cdn-balancerd.service", "cdn-replicad.socket",
              "cdn-balancerd.socket"):
        units[u] = sb.prop(u, "FragmentPath")
    loaded = all(p and sb.prop(u, "LoadState") == "loaded" for u, p in units.items())
    check(loaded, "install: the four units are loaded from the installed unit directory",
          str(units))
    same = True
    for ini in ("replicad.ini", "balancerd.ini", "servers.txt"):
        with open(os.path.join(source_root, "etc", "cdn", ini)) as f:
            want = f.read()
        got = sb.run("exec", "cat", f"/etc/cdn/{ini}").stdout
        same = same and got == want
    check(same, "install: /etc/cdn/replicad.ini, balancerd.ini, servers.txt installed as config files")
    return loaded


def point_verify_and_score(sb):
    paths = {u: sb.prop(u, "FragmentPath") for u in (
        "cdn-replicad.service", "cdn-balancerd.service", "cdn-replicad.socket", "cdn-balancerd.socket")}
    r = sb.sh("systemd-analyze verify " + " ".join(paths.values()) + " 2>&1")
    check(r.returncode == 0 and r.stdout.strip() == "", "systemd-analyze verify: clean for every unit",
          r.stdout.strip())
    for u in ("cdn-replicad.service", "cdn-balancerd.service"):
        r = sb.sh(f"systemd-analyze security --offline=yes --no-pager {paths[u]} 2>&1")
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
        score = float(m.group(1)) if m else 99.0
        check(score <= 1.5, f"hardening: systemd-analyze security --offline=yes {u} = {score} (<= 1.5)",
              r.stdout[-2000:])


def write_file(sb, path, text):
    r = sb.run("exec", "sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", path, input=text)
    if r.returncode != 0:
        raise RuntimeError(f"writing {path}: {r.stderr}")


REPLICA_INI = """# written by tests/systemd
[server]
address = {address}
drain_timeout = 30s
[content]
root = /var/lib/cdn/site
max_age = {max_age}
"""

BALANCER_INI = """# written by tests/systemd
[server]
address = {address}
[replicas]
replica = {replica}:{port}
[probe]
interval = 500ms
timeout = 300ms
[balance]
policy = {policy}
"""


def point_replica_ready(sb):
    # The example file names /var/lib/cdn/site: the site goes there (StateDirectory=cdn).
    r = sb.sh(f"mkdir -p /var/lib/cdn/site && echo 'hello from cdn under systemd' > /var/lib/cdn/site/index.html"
              f" && head -c {BIG_SIZE} /dev/urandom > /var/lib/cdn/site/big.bin"
              " && sha256sum /var/lib/cdn/site/big.bin")
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    big_sha = r.stdout.split()[0]
    r = sb.sh("/usr/sbin/cdn-replicad --check-config -c /etc/cdn/replicad.ini 2>&1 || "
              "/usr/local/sbin/cdn-replicad --check-config -c /etc/cdn/replicad.ini 2>&1")
    check(r.returncode == 0, "install: the installed example replicad.ini is valid as shipped", r.stdout)
    write_file(sb, "/etc/cdn/replicad.ini", REPLICA_INI.format(address=REPLICA, max_age="1m"))

    r = sb.sh("timeout 60 systemctl start cdn-replicad.service")
    # Type=notify: `systemctl start` returns once READY=1 arrived, and READY=1 comes after
    # the listening socket and the store are up: the page must be served at that moment.
    state = sb.active("cdn-replicad.service")
    c = sb.curl(f"http://{REPLICA}:{PORT}/", timeout=5)
    check(r.returncode == 0 and state == "active" and c.returncode == 0 and "hello from cdn" in c.stdout,
          "notify: cdn-replicad active only after READY=1, start page served as soon as it is active",
          f"start rc={r.returncode} {r.stderr.strip()} state={state} curl={c.returncode} {c.stdout!r} {c.stderr}")
    pid = sb.prop("cdn-replicad.service", "MainPID")
    uid = sb.out(f"awk '/^Uid:/ {{print $2}}' /proc/{pid}/status")
    check(uid not in ("", "0"), f"hardening: cdn-replicad runs as a dynamic user (uid {uid}), not root")
    return big_sha


def point_status(sb):
    text = wait_for(lambda: (t := sb.prop("cdn-replicad.service", "StatusText")) and "serving" in t and t,
                    5)
    status = sb.out("systemctl status --no-pager cdn-replicad.service")
    check(bool(text) and f'Status: "{text}' in status.replace("\u2026", ""),
          f"STATUS=: systemctl show -p StatusText and systemctl status show \"{text}\"", status)
    # kept current: a request later, the line counts it
    sb.curl(f"http://{REPLICA}:{PORT}/index.html", "-o", "/dev/null")
    later = wait_for(lambda: (t := sb.prop("cdn-replicad.service", "StatusText")) != text and t, 5)
    check(bool(later), f"STATUS=: kept current (now \"{later}\")")


def point_balancer_and_fields(sb):
    write_file(sb, "/etc/cdn/balancerd.ini",
               BALANCER_INI.format(address=BALANCER, replica=REPLICA, port=PORT, policy="p2c"))
    r = sb.sh("timeout 60 systemctl start cdn-balancerd.service")
    check(r.returncode == 0 and sb.active("cdn-balancerd.service") == "active",
          "notify: cdn-balancerd started and active", r.stderr)
    up = wait_for(lambda: "1/1 replicas up" in sb.prop("cdn-balancerd.service", "StatusText"), 15)
    check(bool(up), "STATUS=: cdn-balancerd reports \"1/1 replicas up\"",
          sb.prop("cdn-balancerd.service", "StatusText"))
    match = f"CDN_REPLICA={REPLICA}:{PORT}"
    lines = wait_for(lambda: (j := sb.journal("cdn-balancerd.service", match)) and "is up" in j and j, 10)
    check(bool(lines), f"journald: journalctl -u cdn-balancerd {match} finds the up line", str(lines))
    info = sb.journal("cdn-balancerd.service", match, "PRIORITY=6")
    check("is up" in info, "journald: the up line has PRIORITY=6 (info)", info)
    r = sb.curl(f"http://{BALANCER}:{PORT}/index.html", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}")
    check(r.stdout.strip() == f"302 http://{REPLICA}:{PORT}/index.html",
          "balancer: 302 to the replica", r.stdout + r.stderr)
    r = sb.sh(f"cd /tmp && cdn-get http://{BALANCER}:{PORT}/index.html -o /tmp/got.html && cat /tmp/got.html")
    check(r.returncode == 0 and "hello from cdn" in r.stdout, "cdn-get: through the balancer to the replica",
          r.stdout + r.stderr)


KEEPALIVE_CLIENT = r"""
import json, socket, sys
s = socket.create_connection(("%s", %d), timeout=10)
f = s.makefile("rb")
def ask():
    s.sendall(b"GET /.cdn/status HTTP/1.1\r\nHost: b\r\n\r\n")
    status = f.readline()
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        if k.strip().lower() == "content-length":
            length = int(v)
    body = json.loads(f.read(length))
    print(status.split()[1].decode(), body["policy"], flush=True)
ask()
sys.stdin.readline()
ask()
"""


def point_reload(sb):
    unit = "cdn-balancerd.service"
    pid = sb.prop(unit, "MainPID")
    client = sb.netexec_bg(sys.executable, "-c", KEEPALIVE_CLIENT % (BALANCER, PORT), stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = client.stdout.readline().strip()
    write_file(sb, "/etc/cdn/balancerd.ini",
               BALANCER_INI.format(address=BALANCER, replica=REPLICA, port=PORT, policy="round-robin"))
    r = sb.sh(f"systemctl reload {unit}")
    applied = wait_for(lambda: "policy round-robin" in sb.prop(unit, "StatusText"), 10)
    client.stdin.write("\n")
    client.stdin.flush()
    second = client.stdout.readline().strip()
    try:
        client.wait(timeout=10)
    except subprocess.TimeoutExpired:
        client.kill()
    journal = sb.journal(unit)
    check(r.returncode == 0 and bool(applied) and first == "200 p2c" and second == "200 round-robin"
          and sb.prop(unit, "MainPID") == pid and "configuration reloaded" in journal,
          "reload: systemctl reload applies the new policy; a kept-alive connection opened before "
          "gets its next answer from the new configuration; same MainPID",
          f"rc={r.returncode} applied={applied} first={first!r} second={second!r} "
          f"stderr={client.stderr.read() if client.stderr else ''}")

    # A broken file: the old configuration stays, the unit stays active, the journal says where.
    broken = BALANCER_INI.format(address=BALANCER, replica=REPLICA, port=PORT, policy="sideways")
    lineno = broken.splitlines().index("policy = sideways") + 1
    write_file(sb, "/etc/cdn/balancerd.ini", broken)
    r = sb.sh(f"systemctl reload {unit}")
    want = f"/etc/cdn/balancerd.ini:{lineno}"
    refused = wait_for(lambda: [line for line in sb.journal(unit).splitlines()
                                if "reload refused" in line and want in line and "policy" in line], 10)
    time.sleep(0.5)
    check(r.returncode == 0 and bool(refused) and sb.active(unit) == "active"
          and "policy round-robin" in sb.prop(unit, "StatusText") and sb.prop(unit, "MainPID") == pid,
          f"reload: a broken file keeps the old configuration, unit active, journal names {want} and the key",
          f"refused={refused} status={sb.prop(unit, 'StatusText')}")
    if refused:
        log(f"    journal: {refused[0]}")
    write_file(sb, "/etc/cdn/balancerd.ini",
               BALANCER_INI.format(address=BALANCER, replica=REPLICA, port=PORT, policy="round-robin"))


def point_drain(sb, work, big_sha):
    unit = "cdn-replicad.service"
    out = os.path.join(work, "big.bin")
    if os.path.exists(out):
        os.unlink(out)
    url = f"http://{REPLICA}:{PORT}/big.bin"
    dl = sb.netexec_bg("curl", "-sS", "--limit-rate", RATE, "--max-time", "60", "-o", out, "-w", "%{http_code}",
                       url, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = wait_for(lambda: os.path.exists(out) and os.path.getsize(out) > 0, 10)

    # reload while the transfer runs: a new max-age reaches new answers, the transfer goes on
    write_file(sb, "/etc/cdn/replicad.ini", REPLICA_INI.format(address=REPLICA, max_age="7m"))
    sb.sh(f"systemctl reload {unit}")
    cc = wait_for(lambda: "max-age=420" in sb.curl(f"http://{REPLICA}:{PORT}/index.html", "-I").stdout, 10)
    check(bool(cc) and dl.poll() is None, "reload: cdn-replicad applies a new max_age while a download runs")

    before = os.path.getsize(out) if os.path.exists(out) else 0
    t0 = time.monotonic()
    r = sb.sh(f"systemctl stop --no-block {unit}")
    # While it drains: STOPPING=1 made the unit "deactivating", STATUS= says "draining".
    during = wait_for(lambda: (a := sb.active(unit)) == "deactivating" and
                      (t := sb.prop(unit, "StatusText")) and f"{a}, status \"{t}\"", 5)
    wait_for(lambda: sb.active(unit) in ("inactive", "failed"), 50, 0.2)
    took = time.monotonic() - t0
    try:
        code, err = dl.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        dl.kill()
        code, err = dl.communicate()
    size = os.path.getsize(out) if os.path.exists(out) else 0
    with open(out, "rb") if size else open(os.devnull, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    journal = sb.journal(unit)
    # Still far from the end when asked (the kernel buffers hold a few MB at most), and the
    # stop returned only once the daemon had sent the rest: it drained, it did not just exit.
    check(bool(started) and before < BIG_SIZE - 16 * 1024 * 1024 and took >= 1.0
          and r.returncode == 0 and dl.returncode == 0
          and code.strip() == "200" and size == BIG_SIZE and sha == big_sha
          and "drained" in journal and sb.active(unit) == "inactive",
          f"drain: systemctl stop took {took:.1f} s, waiting for the in-flight download "
          f"({before} of {BIG_SIZE} bytes when asked), which completed intact",
          f"stop rc={r.returncode} curl rc={dl.returncode} code={code!r} err={err!r} size={size}")
    check(bool(during) and "draining" in during,
          f"drain: STOPPING=1 and STATUS= seen while draining ({during})", journal[-1500:])
    # the balancer saw the replica go
    match = f"CDN_REPLICA={REPLICA}:{PORT}"
    down = wait_for(lambda: "is down" in sb.journal("cdn-balancerd.service", match, "PRIORITY=4"), 15)
    check(bool(down), f"journald: journalctl -u cdn-balancerd {match} PRIORITY=4 finds the down line",
          sb.journal("cdn-balancerd.service", match))


def wait_restarted(sb, unit, pid):
    """The unit's new MainPID once systemd restarted it (None after 30 s),
    and the seconds that took."""
    t0 = time.monotonic()

    def restarted():
        p = sb.prop(unit, "MainPID")
        return p not in ("0", pid) and sb.active(unit) == "active" and p

    newpid = wait_for(restarted, 30, 0.2)
    return newpid, time.monotonic() - t0


def point_watchdog(sb):
    unit = "cdn-replicad.service"
    write_file(sb, f"/etc/systemd/system/{unit}.d/50-watchdog-test.conf",
               "[Service]\nWatchdogSec=2s\nRestartSec=200ms\n")
    sb.sh("systemctl daemon-reload")
    r = sb.sh(f"timeout 60 systemctl start {unit}")
    pid = sb.prop(unit, "MainPID")
    restarts = int(sb.prop(unit, "NRestarts") or 0)
    pinging = "watchdog: pinging every 1000 ms" in sb.journal(unit, f"_PID={pid}")
    sb.sh(f"kill -USR2 {pid}")
    newpid, took = wait_restarted(sb, unit, pid)
    now = int(sb.prop(unit, "NRestarts") or 0)
    journal = sb.out(f"journalctl --no-pager -o cat -u {unit} | grep -i -E 'watchdog|stalling'")
    c = sb.curl(f"http://{REPLICA}:{PORT}/", timeout=5)
    check(r.returncode == 0 and pinging and bool(newpid) and now == restarts + 1
          and "Watchdog timeout" in journal and c.returncode == 0,
          f"watchdog: loop stalled (SIGUSR2 debug hook), systemd killed and restarted cdn-replicad "
          f"in {took:.1f} s: MainPID {pid} -> {newpid}, NRestarts {restarts} -> {now}, serving again",
          f"pinging={pinging} journal={journal!r} curl={c.returncode}")
    for line in journal.splitlines():
        log(f"    journal: {line}")
    sb.sh(f"rm -r /etc/systemd/system/{unit}.d && systemctl daemon-reload")


def point_watchdog_worker(sb):
    """One stalled worker loop (SIGUSR1 debug hook) with the main loop well:
    the main loop stops the pings, and systemd restarts the daemon."""
    unit = "cdn-replicad.service"
    exe = sb.out(f"systemctl show -P ExecStart {unit}")
    m = re.search(r"path=(\S+) ; argv\[\]=(.*?) ;", exe)
    argv = m.group(2) if m else "/usr/sbin/cdn-replicad -c /etc/cdn/replicad.ini"
    write_file(sb, f"/etc/systemd/system/{unit}.d/50-watchdog-test.conf",
               "[Service]\nWatchdogSec=2s\nRestartSec=200ms\n"
               f"ExecStart=\nExecStart={argv} --workers 2\n")
    sb.sh("systemctl daemon-reload")
    r = sb.sh(f"timeout 60 systemctl restart {unit}")
    pid = sb.prop(unit, "MainPID")
    restarts = int(sb.prop(unit, "NRestarts") or 0)
    sb.sh(f"kill -USR1 {pid}")
    newpid, took = wait_restarted(sb, unit, pid)
    now = int(sb.prop(unit, "NRestarts") or 0)
    journal = sb.out(f"journalctl --no-pager -o cat -u {unit} | grep -i -E 'watchdog|stall'")
    check(r.returncode == 0 and bool(newpid) and now == restarts + 1
          and "worker loop is stalled" in journal and "Watchdog timeout" in journal,
          f"watchdog: one worker loop stalled (SIGUSR1 debug hook, --workers 2), the main loop "
          f"stopped pinging, systemd restarted cdn-replicad in {took:.1f} s",
          f"argv={argv!r} journal={journal!r}")
    sb.sh(f"rm -r /etc/systemd/system/{unit}.d && systemctl daemon-reload && "
          f"systemctl restart {unit}")


def point_socket_activation(sb):
    sb.sh("systemctl stop cdn-replicad.service cdn-balancerd.service")
    # The replica's socket takes 33001 (the shipped replicad.ini's port), so that
    # both sockets can be enabled on one host.
    for daemon, host, port, path, want in (
            ("cdn-balancerd", BALANCER, PORT, "/.cdn/status", '"policy"'),
            ("cdn-replicad", BALANCER, PORT + 1, "/", "hello from cdn")):
        sock, svc = f"{daemon}.socket", f"{daemon}.service"
        r = sb.sh(f"systemctl start {sock}")
        before = sb.active(svc)
        listening = sb.netexec("ss", "-Hltn", f"sport = :{port}").stdout.strip()
        c = sb.curl(f"http://{host}:{port}{path}", timeout=20)
        after = sb.active(svc)
        journal = sb.journal(svc, f"_PID={sb.prop(svc, 'MainPID')}")
        check(r.returncode == 0 and before == "inactive" and bool(listening) and c.returncode == 0
              and want in c.stdout and after == "active" and "socket(s) from systemd" in journal,
              f"socket activation: {sock} listens on :{port}, {svc} {before} -> {after} on the first "
              f"connection and serves on the passed socket",
              f"rc={r.returncode} before={before} after={after} curl={c.returncode} {c.stdout[:200]!r} "
              f"{c.stderr} journal={journal!r}")
        sb.sh(f"systemctl stop {svc} {sock}")


def dump(sb):
    for unit in ("cdn-replicad.service", "cdn-balancerd.service"):
        log(f"---- journalctl -u {unit}")
        log(sb.out(f"journalctl --no-pager -u {unit} | tail -n 60"))


def arguments():
    """--source-root, --build-root, --sdbox (made absolute) and --keep: the
    command line of this test and of tests/package, which drives the same sandbox."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--source-root", required=True)
    ap.add_argument("--build-root", required=True)
    ap.add_argument("--sdbox", required=True)
    ap.add_argument("--keep", action="store_true", help="leave the sandbox up (debugging)")
    a = ap.parse_args()
    for name in ("source_root", "build_root", "sdbox"):
        setattr(a, name, os.path.abspath(getattr(a, name)))
    return a


def main():
    a = arguments()
    source_root, build_root, sdbox = a.source_root, a.build_root, a.sdbox

    if os.geteuid() != 0:
        skip("needs root (the systemd sandbox boots systemd in new namespaces)")
    if not os.access(sdbox, os.X_OK):
        skip(f"no systemd sandbox at {sdbox} (../shared/systemd-sandbox beside the source tree)")
    for tool in ("curl", "meson", "ninja", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            skip(f"{tool} is not installed")

    build = build_to_install(source_root, build_root)
    work = os.path.join(build_root, "tests", "systemd", f"work-{os.getpid()}")
    stage_dir = os.path.join(work, "stage")
    os.makedirs(work, exist_ok=True)
    stage(build, stage_dir)

    sb = Sandbox(sdbox, f"cdn-sd-{os.getpid()}")

    def teardown():
        if not a.keep:
            sb.down()
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"sandbox {sb.name} left up: {sdbox} -n {sb.name} down")

    atexit.register(teardown)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda *_: sys.exit(1))

    t0 = time.monotonic()
    r = sb.up([(stage_dir, "/opt/cdn-stage")])
    if r.returncode != 0:
        log(r.stderr)
        sb.run("down", timeout=60)
        skip(f"the systemd sandbox cannot boot here (sdbox.sh up: exit {r.returncode})")
    log(f"sandbox {sb.name} up in {time.monotonic() - t0:.1f} s")
    # The sandbox is an overlay of this host's /: what the units keep there
    # (a package installed here, a test run that used the default cache_dir)
    # would make the first start a migration, which DynamicUser= refuses
    # across the overlay. Removed in the overlay only: the host keeps them.
    sb.run("exec", "rm", "-rf", "/var/cache/cdn", "/var/lib/cdn", "/var/cache/cdn-balancerd",
           "/var/lib/cdn-balancerd", "/var/cache/private/cdn", "/var/lib/private/cdn",
           "/var/cache/private/cdn-balancerd", "/var/lib/private/cdn-balancerd", timeout=60)

    try:
        if point_install(sb, stage_dir, source_root):
            point_verify_and_score(sb)
            big_sha = point_replica_ready(sb)
            point_status(sb)
            point_balancer_and_fields(sb)
            point_reload(sb)
            point_drain(sb, work, big_sha)
            point_watchdog(sb)
            point_watchdog_worker(sb)
            point_socket_activation(sb)
    except Exception as e:  # noqa: BLE001 - report, dump, fail
        check(False, "test ran to the end", repr(e))
    if failures:
        dump(sb)
        log(f"{len(failures)} point(s) failed: {failures}")
        return 1
    log("all points passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
