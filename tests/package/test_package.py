#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The Debian packages: build, lint, install, operate, upgrade.

Copies the source tree to <build>/tests/package/work/cdn, runs
`dpkg-buildpackage -us -uc -b` there (ccache keeps later runs short), checks
that the four packages hold what they should (conffiles under /etc/cdn, units
under /lib/systemd/system with their maintainer scripts, man pages, bash
completion) and that lintian reports no error. Then, as root with
../shared/systemd-sandbox/sdbox.sh, in a throw-away systemd: installs the
packages with dpkg (units installed disabled and stopped), writes a replica
and a balancer configuration, enables and starts both units, fetches a page
through the balancer with curl and cdn-get, then reinstalls the same packages
and upgrades to a repacked higher version: each time the edited conffiles are
kept byte for byte, and on the upgrade the running services are restarted
and serve again.

PASS/FAIL per point; exit 0 all passed, 1 a failure, 77 skipped (no
dpkg-buildpackage). Without root or the sandbox only the build, contents and
lintian points run. Stdlib only; by hand:
  python3 tests/package/test_package.py --source-root . --build-root build --sdbox ../shared/systemd-sandbox/sdbox.sh
"""

import atexit
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "systemd"))
import test_systemd as sd  # noqa: E402  (Sandbox, check, wait_for, the unit configurations)

PACKAGES = ("cdn-common", "cdn-replicad", "cdn-balancerd", "cdn-get")
PORT = sd.PORT
REPLICA = sd.REPLICA
BALANCER = sd.BALANCER
log = sd.log
check = sd.check

# Build products and caches that are not sources (and would make the copy slow).
IGNORED = re.compile(r"^(build.*|obj-.*|\.git|\.pytest_cache|__pycache__|node_modules)$")
DEBIAN_OUTPUT = re.compile(r"^(tmp|\.debhelper|files|debhelper-build-stamp|.*\.substvars|"
                           r".*\.debhelper\.log|cdn-(common|replicad|balancerd|get))$")


def copy_sources(source_root, dest):
    def ignore(d, names):
        rel = os.path.relpath(d, source_root)
        out = {n for n in names if IGNORED.match(n)}
        if rel == "debian":
            out |= {n for n in names if DEBIAN_OUTPUT.match(n)}
        return out

    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(source_root, dest, ignore=ignore, symlinks=True)


def build_packages(source_root, work):
    src = os.path.join(work, "cdn")
    for old in glob.glob(os.path.join(work, "*.deb")) + glob.glob(os.path.join(work, "*.changes")) \
            + glob.glob(os.path.join(work, "*.buildinfo")):
        os.remove(old)
    copy_sources(source_root, src)
    env = dict(os.environ, DEB_BUILD_OPTIONS="parallel=2 nocheck", LC_ALL="C.UTF-8")
    t0 = time.monotonic()
    r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env,
                       capture_output=True, text=True)
    took = time.monotonic() - t0
    debs = {p: (glob.glob(os.path.join(work, f"{p}_*.deb")) or [None])[0] for p in PACKAGES}
    ok = r.returncode == 0 and all(debs.values())
    check(ok, f"dpkg-buildpackage -us -uc -b builds {', '.join(PACKAGES)} ({took:.0f} s)",
          f"exit {r.returncode}\n{r.stdout[-6000:]}\n{r.stderr[-4000:]}")
    changes = (glob.glob(os.path.join(work, "cdn_*.changes")) or [None])[0]
    return (debs, changes) if ok else (None, None)


def deb_files(deb):
    r = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True)
    return {line.split()[-1].lstrip(".") for line in r.stdout.splitlines()
            if not line.startswith("d")}


def deb_control(deb, name):
    r = subprocess.run(["dpkg-deb", "--ctrl-tarfile", deb], capture_output=True, check=True)
    t = subprocess.run(["tar", "-xOf", "-", f"./{name}"], input=r.stdout, capture_output=True)
    return t.stdout.decode() if t.returncode == 0 else ""


def point_contents(debs):
    want = {
        "cdn-common": {"/usr/share/man/man5/cdn.ini.5.gz", "/etc/logrotate.d/cdn"},
        "cdn-replicad": {"/usr/sbin/cdn-replicad", "/etc/cdn/replicad.ini",
                         "/lib/systemd/system/cdn-replicad.service",
                         "/lib/systemd/system/cdn-replicad.socket",
                         "/usr/share/man/man8/cdn-replicad.8.gz",
                         "/usr/share/bash-completion/completions/cdn-replicad",
                         "/usr/share/doc/cdn-replicad/copyright"},
        "cdn-balancerd": {"/usr/sbin/cdn-balancerd", "/etc/cdn/balancerd.ini", "/etc/cdn/servers.txt",
                          "/lib/systemd/system/cdn-balancerd.service",
                          "/lib/systemd/system/cdn-balancerd.socket",
                          "/usr/share/man/man8/cdn-balancerd.8.gz",
                          "/usr/share/bash-completion/completions/cdn-balancerd"},
        "cdn-get": {"/usr/bin/cdn-get", "/usr/share/man/man1/cdn-get.1.gz",
                    "/usr/share/bash-completion/completions/cdn-get",
                    "/usr/bin/cdn-purge", "/usr/share/man/man1/cdn-purge.1.gz",
                    "/usr/share/bash-completion/completions/cdn-purge"},
    }
    for p, files in want.items():
        have = deb_files(debs[p])
        check(files <= have, f"contents: {p} holds {len(files)} expected files",
              f"missing {sorted(files - have)}; has {sorted(have)}")
    conffiles = {
        "cdn-common": ["/etc/logrotate.d/cdn"],
        "cdn-replicad": ["/etc/cdn/replicad.ini"],
        "cdn-balancerd": ["/etc/cdn/balancerd.ini", "/etc/cdn/servers.txt"],
    }
    for p, files in conffiles.items():
        got = deb_control(debs[p], "conffiles").split()
        check(sorted(got) == sorted(files), f"conffiles: {p} marks {' '.join(files)}", str(got))
    for p, unit in (("cdn-replicad", "cdn-replicad.service"), ("cdn-balancerd", "cdn-balancerd.service")):
        postinst = deb_control(debs[p], "postinst")
        check("deb-systemd-helper" in postinst and unit in postinst and "deb-systemd-invoke" in postinst,
              f"dh_installsystemd: {p}'s postinst registers and (re)starts {unit}", postinst[-1500:])


def point_lintian(changes):
    r = subprocess.run(["lintian", "--fail-on", "error", "--no-tag-display-limit", changes],
                       capture_output=True, text=True, timeout=900)
    tags = [line for line in r.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    errors = [t for t in tags if t.startswith("E: ")]
    warnings = [t for t in tags if t.startswith("W: ")]
    log("lintian:\n  " + "\n  ".join(tags) if tags else "lintian: no tags")
    check(r.returncode == 0 and not errors,
          f"lintian: no error ({len(warnings)} warnings, {len(tags)} tags in all)",
          f"exit {r.returncode}\n{r.stdout[-4000:]}{r.stderr[-2000:]}")


# ---------------------------------------------------------------- in the sandbox

def sha(sb, path):
    return sb.out(f"sha256sum {path} 2>/dev/null | cut -d' ' -f1")


def dpkg_install(sb, debs, what):
    r = sb.sh("DEBIAN_FRONTEND=noninteractive dpkg -i " + " ".join(debs) + " 2>&1", timeout=300)
    check(r.returncode == 0, f"{what}: dpkg -i succeeds", r.stdout[-3000:])
    return r


def serves(sb, what):
    r = sb.curl(f"http://{BALANCER}:{PORT}/index.html", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}")
    redirect = r.stdout.strip() == f"302 http://{REPLICA}:{PORT}/index.html"
    g = sb.sh(f"cd /tmp && rm -f got.html && cdn-get -q http://{BALANCER}:{PORT}/index.html -o got.html"
              " && cat got.html")
    check(redirect and g.returncode == 0 and "hello from the package" in g.stdout,
          f"{what}: the balancer redirects to the replica, cdn-get fetches the page",
          f"curl: {r.stdout}{r.stderr} cdn-get: {g.returncode} {g.stdout}{g.stderr}")


def balancer_up(sb):
    return bool(sd.wait_for(lambda: "1/1 replicas up" in sb.prop("cdn-balancerd.service", "StatusText"), 20))


def repack(deb, version, out_dir):
    """The same package as a higher version (nothing recompiled): what an
    upgrade looks like to dpkg, with the conffiles unchanged upstream."""
    tree = os.path.join(out_dir, "tree")
    shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-R", deb, tree], check=True)
    control = os.path.join(tree, "DEBIAN", "control")
    with open(control) as f:
        text = f.read()
    with open(control, "w") as f:
        text = re.sub(r"^Version: .*$", f"Version: {version}", text, flags=re.M)
        # cdn-common (= ${source:Version}): the repacked packages go together.
        f.write(text.replace("(= 0.1.0)", f"(= {version})"))
    out = os.path.join(out_dir, os.path.basename(deb).replace("_0.1.0_", f"_{version}_"))
    subprocess.run(["dpkg-deb", "-Zgzip", "-b", tree, out], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(tree)
    return out


def sandbox_points(sb, debs, source_root, upgrade_debs):
    inside = {p: "/opt/cdn-debs/" + os.path.basename(d) for p, d in debs.items()}
    # The sandbox's root is the host's, copy-on-write: a container host's
    # policy-rc.d (Docker's "exit 101") would forbid every start and restart
    # from maintainer scripts, which a real machine does not.
    sb.sh("rm -rf /etc/cdn /usr/sbin/policy-rc.d")
    dpkg_install(sb, inside.values(), "install")
    for u in ("cdn-replicad.service", "cdn-balancerd.service", "cdn-replicad.socket", "cdn-balancerd.socket"):
        enabled = sb.out(f"systemctl is-enabled {u}")
        active = sb.active(u)
        check(enabled == "disabled" and active == "inactive",
              f"install: {u} is installed disabled and not started", f"{enabled} {active}")
    same = all(sb.run("exec", "cat", f"/etc/cdn/{f}").stdout ==
               open(os.path.join(source_root, "etc", "cdn", f)).read()
               for f in ("replicad.ini", "balancerd.ini", "servers.txt"))
    check(same, "install: /etc/cdn holds the shipped replicad.ini, balancerd.ini, servers.txt")
    doc = sb.prop("cdn-replicad.service", "Documentation")
    check("man:cdn-replicad(8)" in doc, f"units: Documentation={doc}")
    r = sb.sh("man -w cdn-replicad cdn-balancerd cdn-get cdn-purge cdn.ini 2>&1")
    check(r.returncode == 0, "man pages: man -w finds the four installed pages", r.stdout)

    # The operator's configuration: a replica on 127.0.0.2, a balancer on 127.0.0.1.
    sb.sh("mkdir -p /var/lib/cdn/site && echo 'hello from the package' > /var/lib/cdn/site/index.html")
    sd.write_file(sb, "/etc/cdn/replicad.ini", sd.REPLICA_INI.format(address=REPLICA, max_age="1m"))
    sd.write_file(sb, "/etc/cdn/balancerd.ini",
                  sd.BALANCER_INI.format(address=BALANCER, replica=REPLICA, port=PORT, policy="p2c"))
    edited = {f: sha(sb, f"/etc/cdn/{f}") for f in ("replicad.ini", "balancerd.ini")}
    r = sb.sh("timeout 60 systemctl enable --now cdn-replicad.service cdn-balancerd.service 2>&1")
    check(r.returncode == 0 and sb.active("cdn-replicad.service") == "active"
          and sb.active("cdn-balancerd.service") == "active",
          "operate: systemctl enable --now starts both units", r.stdout)
    check(balancer_up(sb), "operate: the balancer sees the replica up",
          sb.prop("cdn-balancerd.service", "StatusText"))
    serves(sb, "operate")

    def kept(what):
        now = {f: sha(sb, f"/etc/cdn/{f}") for f in edited}
        dist = sb.out("ls /etc/cdn")
        check(now == edited, f"{what}: the edited replicad.ini and balancerd.ini are kept", f"{now} != {edited}; /etc/cdn: {dist}")

    dpkg_install(sb, inside.values(), "reinstall")
    kept("reinstall")
    pid_before = sb.prop("cdn-replicad.service", "MainPID")
    up = {p: "/opt/cdn-debs/upgrade/" + os.path.basename(d) for p, d in upgrade_debs.items()}
    r = dpkg_install(sb, up.values(), "upgrade to 0.1.0+upgrade1")
    version = sb.out("dpkg-query -W -f='${Version}' cdn-replicad")
    check(version == "0.1.0+upgrade1", f"upgrade: cdn-replicad is now {version}")
    kept("upgrade")
    pid_after = sb.prop("cdn-replicad.service", "MainPID")
    check(pid_after not in ("", "0", pid_before) and sb.active("cdn-replicad.service") == "active",
          f"upgrade: the running cdn-replicad was restarted (MainPID {pid_before} -> {pid_after})")
    check(balancer_up(sb), "upgrade: the balancer sees the replica up again",
          sb.prop("cdn-balancerd.service", "StatusText"))
    serves(sb, "upgrade")


def main():
    a = sd.arguments()
    source_root, build_root, sdbox = a.source_root, a.build_root, a.sdbox
    for tool in ("dpkg-buildpackage", "dh", "lintian"):
        if shutil.which(tool) is None:
            sd.skip(f"{tool} is not installed (apt-get install dpkg-dev debhelper lintian)")

    work = os.path.join(build_root, "tests", "package", "work")
    os.makedirs(work, exist_ok=True)
    debs, changes = build_packages(source_root, work)
    if debs:
        point_contents(debs)
        point_lintian(changes)
        if os.geteuid() != 0 or not os.access(sdbox, os.X_OK):
            log("SKIP install points: they need root and the systemd sandbox")
        else:
            run_sandbox(debs, work, sdbox, source_root, a.keep)
    if sd.failures:
        log(f"{len(sd.failures)} point(s) failed: {sd.failures}")
        return 1
    log("all points passed")
    return 0


def run_sandbox(debs, work, sdbox, source_root, keep):
    stage = os.path.join(work, "debs")
    shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(os.path.join(stage, "upgrade"))
    for d in debs.values():
        shutil.copy(d, stage)
    upgrade = {p: repack(d, "0.1.0+upgrade1", os.path.join(stage, "upgrade")) for p, d in debs.items()}
    sb = sd.Sandbox(sdbox, f"cdn-pkg-{os.getpid()}")

    def teardown():
        if keep:
            log(f"sandbox {sb.name} left up: {sdbox} -n {sb.name} down")
        else:
            sb.down()

    atexit.register(teardown)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda *_: sys.exit(1))
    r = sb.up([(stage, "/opt/cdn-debs")])
    if r.returncode != 0:
        log(r.stderr)
        sb.run("down", timeout=60)
        log(f"SKIP install points: the systemd sandbox cannot boot here (exit {r.returncode})")
        return
    try:
        sandbox_points(sb, debs, source_root, upgrade)
    except Exception as e:  # noqa: BLE001 - report, dump, fail
        check(False, "the sandbox points ran to the end", repr(e))
    if sd.failures:
        sd.dump(sb)


if __name__ == "__main__":
    sys.exit(main())
