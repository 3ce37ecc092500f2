# SPDX-License-Identifier: MIT
"""cdn-get: both command-line forms, its exit codes, waiting for a replica,
and never leaving a half-written file."""

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from cdnlib import CDN_GET, describe_run, free_port, run_get, wait_for
from conftest import DEFAULT_PAGE
from fake_replica import FakeReplica

BODY = b"0123456789abcdef" * 4096 + b"tail\n"  # 64 KiB + 5
# Several of cdn-get's 1 MiB write blocks and a tail that is neither a block
# nor a page; distinct bytes everywhere, so a block written twice or at the
# wrong offset shows.
BIG = os.urandom(3 * 1024 * 1024 + 4096 + 123)


@pytest.fixture
def fakes():
    started = []

    def make(mode, body=BODY, name=None, etag='"fake"'):
        f = FakeReplica(mode, body, name=name or f"fake-{mode}-{len(started)}", etag=etag)
        started.append(f)
        return f

    yield make
    for f in started:
        f.close()


def listing(d):
    return sorted(p.name for p in d.iterdir())


def wait_503(b):
    def check():
        return b.get("/index.html")[0] == 503
    wait_for(check, what="balancer to answer 503")


# ---------------------------------------------------------------- success


def test_modern_form_with_output(cdn, workdir):
    r = cdn.replica({"index.html": DEFAULT_PAGE, "dir/page.html": BODY})
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    res = run_get([b.url("/dir/page.html"), "-o", "out.html"], cwd=workdir)
    assert res.returncode == 0, describe_run(res)
    assert (workdir / "out.html").read_bytes() == BODY
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout
    assert "out.html" in lines[0]
    assert re.search(rf"\b{len(BODY)}\b", lines[0]), lines[0]
    assert r.address in lines[0]
    assert listing(workdir) == ["out.html"]


def test_modern_form_output_to_other_directory(cdn, workdir, tmp_path):
    r = cdn.replica({"index.html": DEFAULT_PAGE})
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    target = tmp_path / "deep" / "page.html"
    target.parent.mkdir()
    res = run_get([b.url("/"), "-o", target], cwd=workdir)
    assert res.returncode == 0, describe_run(res)
    assert target.read_bytes() == DEFAULT_PAGE
    assert listing(target.parent) == ["page.html"]


@pytest.mark.parametrize("path,expected", [("/x/y.txt", "y.txt"), ("/", "index.html"),
                                           ("/index.html", "index.html")])
def test_default_output_name(cdn, workdir, path, expected):
    r = cdn.replica({"index.html": DEFAULT_PAGE, "x/y.txt": BODY})
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    res = run_get([b.url(path)], cwd=workdir)
    assert res.returncode == 0, describe_run(res)
    want = BODY if expected == "y.txt" else DEFAULT_PAGE
    assert (workdir / expected).read_bytes() == want
    assert listing(workdir) == [expected]


def shm_dir():
    """A fresh directory on tmpfs (page cache only), when the machine has one."""
    if not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm")
    return Path(tempfile.mkdtemp(prefix="cdn-get-", dir="/dev/shm"))


@pytest.mark.parametrize("where", ["workdir", "tmpfs"])
def test_large_file_is_whole_and_replaces_the_old_one(cdn, workdir, where):
    """Bodies of several write blocks (written off the event loop) arrive whole,
    replace an existing file, and leave no temporary file, on a disk and on tmpfs."""
    r = cdn.replica({"big.bin": BIG, "small.bin": BIG[:5000]})
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    out = workdir if where == "workdir" else shm_dir()
    try:
        (out / "big.bin").write_bytes(b"old content\n")
        os.chmod(out / "big.bin", 0o600)
        res = run_get([b.url("/big.bin"), "-o", out / "big.bin"], cwd=workdir)
        assert res.returncode == 0, describe_run(res)
        assert (out / "big.bin").read_bytes() == BIG
        assert re.search(rf"\b{len(BIG)}\b", res.stdout), res.stdout
        # A new file, not the old one rewritten: the umask's mode, not 0600.
        mask = os.umask(0)
        os.umask(mask)
        assert (out / "big.bin").stat().st_mode & 0o777 == 0o666 & ~mask
        # A shorter body over a longer file leaves nothing of the longer one.
        res = run_get([b.url("/small.bin"), "-o", out / "big.bin"], cwd=workdir)
        assert res.returncode == 0, describe_run(res)
        assert (out / "big.bin").read_bytes() == BIG[:5000]
        assert listing(out) == ["big.bin"]
    finally:
        if where == "tmpfs":
            for p in out.iterdir():
                p.unlink()
            out.rmdir()


def test_large_file_to_standard_output(cdn, workdir):
    """-o - streams the bytes as they come; the 'saved' line goes to stderr so
    that it never mixes with the content."""
    r = cdn.replica({"big.bin": BIG})
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    res = subprocess.run([str(CDN_GET), b.url("/big.bin"), "-o", "-"], cwd=workdir,
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout == BIG
    assert b"saved -" in res.stderr
    assert listing(workdir) == []


def test_saved_means_durable(cdn, workdir):
    """The order that makes "saved" survive a crash: the temp file is fsynced,
    then renamed, then its directory is fsynced (watched with strace)."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("no strace")
    r = cdn.replica({"big.bin": BIG})
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    out = workdir / "sub"
    out.mkdir()
    trace = workdir / "trace"
    res = subprocess.run([strace, "-f", "-qq", "-o", str(trace), "-e",
                          "trace=openat,fsync,rename,renameat,renameat2",
                          str(CDN_GET), b.url("/big.bin"), "-o", "sub/big.bin"],
                         cwd=workdir, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=60)
    if res.returncode != 0 and "ptrace" in res.stderr:
        pytest.skip("strace cannot trace here: " + res.stderr.strip())
    assert res.returncode == 0, describe_run(res)
    assert (out / "big.bin").read_bytes() == BIG
    calls = [line.split(None, 1)[1] for line in trace.read_text().splitlines()]
    opened = {}  # descriptor -> what it was last opened for (numbers are reused)
    steps = []
    for c in calls:
        m = re.search(r"= (\d+)$", c)
        if c.startswith("openat(") and m:
            opened[m.group(1)] = ("file" if ".big.bin.cdn-get." in c else
                                  "dir" if '"sub"' in c and "O_DIRECTORY" in c else "other")
        elif c.startswith("fsync("):
            fd = re.match(r"fsync\((\d+)\)", c).group(1)
            steps.append("fsync " + opened.get(fd, "?"))
        elif c.startswith("rename") and "sub/big.bin" in c:
            steps.append("rename")
    assert steps == ["fsync file", "rename", "fsync dir"], calls


def test_quiet_prints_nothing(cdn, workdir):
    r = cdn.replica()
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    res = run_get([b.url("/index.html"), "-o", "q.html", "-q"], cwd=workdir)
    assert res.returncode == 0, describe_run(res)
    assert res.stdout == ""
    assert (workdir / "q.html").read_bytes() == DEFAULT_PAGE


def test_seed_form_writes_website_html(cdn, workdir):
    """The seed's three programs, the seed's way: replica -w FILE, balancer
    -s servers.txt, client -s HOST -p PORT -l LOG -> ./website.html."""
    source = cdn.tempdir("cdn-src-") / "page.html"
    source.write_bytes(DEFAULT_PAGE + b"<!-- seed -->\n")
    r = cdn.replica({}, use_config=False, start=False)
    r.args = ["-p", str(r.port), "-a", "127.0.0.1", "-l", str(r.dir / "r.log"),
              "-w", str(source)]
    r.log_files.append(r.dir / "r.log")
    r.start()
    b = cdn.balancer([r], policy="best")
    cdn.wait_up(b, 1)
    log = workdir / "client.log"
    res = run_get(["-s", "127.0.0.1", "-p", b.port, "-l", log], cwd=workdir)
    assert res.returncode == 0, describe_run(res)
    assert (workdir / "website.html").read_bytes() == source.read_bytes()
    assert "website.html" in res.stdout
    assert log.exists() and log.stat().st_size > 0, "cdn-get -l LOGFILE was not written"
    assert sorted(listing(workdir)) == ["client.log", "website.html"]


# ------------------------------------------------------------ exit codes


@pytest.mark.parametrize("args", [["--no-such-flag"], ["http://127.0.0.1:1/", "--wait", "soon"],
                                  ["http://127.0.0.1:1/", "--timeout", "-3s"],
                                  ["not a url at all"]])
def test_usage_error_is_2(workdir, args):
    res = run_get(args, cwd=workdir, timeout=20)
    assert res.returncode == 2, describe_run(res)
    assert res.stderr.strip(), "usage error without a message"
    assert listing(workdir) == []


def test_unreachable_balancer_is_3(workdir):
    port = free_port()
    start = time.monotonic()
    res = run_get([f"http://127.0.0.1:{port}/index.html", "-o", "x.html", "--wait", "1s"],
                  cwd=workdir, timeout=30)
    assert res.returncode == 3, describe_run(res)
    assert time.monotonic() - start < 15
    assert listing(workdir) == []


def test_503_longer_than_wait_is_3(cdn, workdir):
    b = cdn.balancer([f"127.0.0.1:{free_port()}"])
    wait_503(b)
    start = time.monotonic()
    res = run_get([b.url("/index.html"), "-o", "x.html", "--wait", "1s"], cwd=workdir, timeout=30)
    elapsed = time.monotonic() - start
    assert res.returncode == 3, describe_run(res)
    assert 0.9 <= elapsed < 15, f"--wait 1s took {elapsed:.2f}s"
    assert res.stderr.strip()
    assert listing(workdir) == []


def test_waits_for_a_replica_to_come_up(cdn, workdir):
    """The balancer has no live replica; cdn-get --wait 30s must keep
    waiting, and succeed once a replica comes up while it waits."""
    port = free_port()
    b = cdn.balancer([f"127.0.0.1:{port}"])
    wait_503(b)
    client = subprocess.Popen([str(CDN_GET), b.url("/index.html"), "-o", "late.html",
                               "--wait", "30s"], cwd=workdir, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    replica_up = threading.Event()
    started = {}
    failure = []

    def start_replica_while_client_waits():
        try:
            # The client must still be waiting (not given up) after a second
            # of 503s; then the replica appears.
            try:
                client.wait(timeout=1.0)
                failure.append(f"cdn-get exited {client.returncode} instead of waiting")
                return
            except subprocess.TimeoutExpired:
                pass
            started["replica"] = cdn.replica(port=port)
            replica_up.set()
        except Exception as e:  # reported by the main thread
            failure.append(repr(e))
            replica_up.set()

    t = threading.Thread(target=start_replica_while_client_waits, daemon=True)
    t.start()
    out, err = "", ""
    try:
        assert replica_up.wait(timeout=30) or client.poll() is not None
        t.join(timeout=30)
        out, err = client.communicate(timeout=40)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert not failure, (failure, client.returncode, out, err)
    assert client.returncode == 0, f"rc={client.returncode}\nstdout: {out}\nstderr: {err}"
    assert (workdir / "late.html").read_bytes() == DEFAULT_PAGE
    assert started["replica"].address in out


@pytest.mark.parametrize("body", [BODY, BIG], ids=["64KiB", "3MiB"])
def test_every_replica_fails_is_4_and_no_partial_file(cdn, workdir, fakes, body):
    fs = [fakes("truncate", body=body), fakes("truncate", body=body)]
    b = cdn.balancer([f.address for f in fs], extra={"balance": {"fallbacks": 1}})
    cdn.wait_up(b, 2)
    (workdir / "keep.html").write_bytes(b"old content\n")
    res = run_get([b.url("/page.html"), "-o", "new.html", "--timeout", "5s"], cwd=workdir)
    assert res.returncode == 4, describe_run(res)
    assert listing(workdir) == ["keep.html"], "partial or temporary file left behind"
    assert all(f.content_requests >= 1 for f in fs), "cdn-get did not try every replica"
    # An existing file is not clobbered by a failed download either.
    res = run_get([b.url("/page.html"), "-o", "keep.html", "--timeout", "5s"], cwd=workdir)
    assert res.returncode == 4, describe_run(res)
    assert (workdir / "keep.html").read_bytes() == b"old content\n"
    assert listing(workdir) == ["keep.html"]


@pytest.mark.parametrize("body", [BODY, BIG], ids=["64KiB", "3MiB"])
def test_interrupted_download_resumes_on_the_next_replica(cdn, workdir, fakes, body):
    """A replica breaks off halfway: cdn-get asks the next one for the rest only
    (Range + If-Range with the same strong ETag) and the file comes out whole.
    With BIG the break falls inside a write block, at an unaligned offset."""
    import json
    import urllib.parse
    live = cdn.replica({"big.bin": body}, name="live", extra={"content": {"capacity": 4}})
    status, h, _ = live.get("/big.bin")
    assert status == 200
    f = fakes("truncate", body=body, etag=h["ETag"])
    held = [live.connection() for _ in range(2)]  # live looks busy: the fake goes first
    for c in held:
        c.request("GET", "/big.bin")
        c.getresponse().read()
    try:
        b = cdn.balancer([f.address, live], policy="least-loaded")
        cdn.wait_up(b, 2)

        def fake_first():
            _, _, body = b.get("/.cdn/locate?path=" + urllib.parse.quote("/big.bin", safe=""))
            return json.loads(body)["replicas"][0]["address"] == f.address
        wait_for(fake_first, what="the truncating replica to be the first choice")
        res = run_get([b.url("/big.bin"), "-o", "big.bin", "--timeout", "5s", "-v"],
                      cwd=workdir)
        assert res.returncode == 0, describe_run(res)
        assert (workdir / "big.bin").read_bytes() == body
        assert f"resuming at byte {len(body) // 2}" in res.stderr, describe_run(res)
        assert f.content_requests == 1
        assert listing(workdir) == ["big.bin"]
    finally:
        for c in held:
            c.close()


@pytest.mark.parametrize("body", [BODY, BIG], ids=["64KiB", "3MiB"])
def test_digest_mismatch_is_5(cdn, workdir, fakes, body):
    f = fakes("bad-digest", body=body)
    b = cdn.balancer([f.address])
    cdn.wait_up(b, 1)
    res = run_get([b.url("/page.html"), "-o", "bad.html", "--timeout", "5s"], cwd=workdir)
    assert res.returncode == 5, describe_run(res)
    assert listing(workdir) == []


def test_unwritable_output_is_6(cdn, workdir):
    r = cdn.replica()
    b = cdn.balancer([r])
    cdn.wait_up(b, 1)
    res = run_get([b.url("/index.html"), "-o", workdir / "no-such-dir" / "x.html"], cwd=workdir)
    assert res.returncode == 6, describe_run(res)
    assert res.stderr.strip()
    assert listing(workdir) == []
