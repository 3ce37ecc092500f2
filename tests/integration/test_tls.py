# SPDX-License-Identifier: MIT
"""HTTPS on both daemons ([tls]): curl and Python's ssl over the TLS port,
certificates swapped by SIGHUP while a download is in flight, a bad
certificate refused on reload, and cdn-get over https://.  Each test makes
its own CA and certificates with the openssl command line."""

from __future__ import annotations

import hashlib
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

import cdnlib
from cdnlib import Pki, describe_run, free_port, run_get, wait_for

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture
def pki(cdn):
    return Pki(cdn.tempdir("cdn-pki-"))


def tls_section(port, cert, key, **more):
    return {"tls": {"port": port, "certificate": cert, "key": key, **more}}


def handshake(port, ctx, host="localhost"):
    """(peer certificate's CN, version, ALPN) of one handshake."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            cert = s.getpeercert()
            cn = dict(x[0] for x in cert["subject"])["commonName"]
            return cn, s.version(), s.selected_alpn_protocol()


def https_get(port, path, ctx, host="localhost", timeout=10):
    """(status, headers dict lower-cased, body) of GET path over TLS."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                      .encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, body


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "10", *map(str, args)],
                          capture_output=True, timeout=30)


def test_replica_serves_https_beside_plain_http(cdn, pki):
    cert, key = pki.leaf("replica")
    tls_port = free_port()
    r = cdn.replica(files={"index.html": b"hello over tls\n", "a/b.txt": b"b" * 100_000},
                    extra=tls_section(tls_port, cert, key))
    res = curl("--http1.1", "--cacert", pki.ca, "-w", "\n%{http_version} %{ssl_verify_result}",
               f"https://localhost:{tls_port}/index.html")
    assert res.returncode == 0, res.stderr
    body, _, info = res.stdout.rpartition(b"\n")
    assert body == b"hello over tls\n"
    assert info == b"1.1 0"
    res = curl("--http1.1", "--cacert", pki.ca, f"https://127.0.0.1:{tls_port}/a/b.txt")
    assert res.returncode == 0 and res.stdout == b"b" * 100_000, res.stderr
    # The plain port still serves.
    assert r.get("/index.html")[2] == b"hello over tls\n"
    cn, version, alpn = handshake(tls_port, pki.context())
    assert (cn, version, alpn) == ("replica", "TLSv1.3", None)
    ctx = pki.context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    assert handshake(tls_port, ctx)[2] == "h2"  # ours, not the client's, preference
    ctx.set_alpn_protocols(["http/1.1"])
    assert handshake(tls_port, ctx)[2] == "http/1.1"
    # TLS 1.2 works too, with an AEAD suite.
    ctx12 = pki.context()
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
        with ctx12.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.version() == "TLSv1.2"
            assert "GCM" in s.cipher()[0] or "CHACHA20" in s.cipher()[0]
    assert "no kTLS" in r.log_text() or "kTLS" in r.log_text()


def test_python_ssl_keeps_alive_and_resumes(cdn, pki):
    cert, key = pki.leaf("replica")
    tls_port = free_port()
    cdn.replica(files={"f.txt": b"x" * 5000}, extra=tls_section(tls_port, cert, key))
    ctx = pki.context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # Python exposes 1.2 sessions most simply
    with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            for _ in range(3):
                s.sendall(b"GET /f.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
                data = b""
                while not data.endswith(b"x" * 5000):
                    data += s.recv(65536)
                assert data.startswith(b"HTTP/1.1 200")
            session = s.session
    assert session is not None
    with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            assert s.session_reused


def test_balancer_answers_302_over_https(cdn, pki):
    cert, key = pki.leaf("balancer")
    r = cdn.replica()
    tls_port = free_port()
    b = cdn.balancer([r], extra=tls_section(tls_port, cert, key))
    cdn.wait_up(b, 1)
    status, headers, _ = https_get(tls_port, "/index.html", pki.context())
    assert status == 302
    assert headers["location"].endswith(f"{r.port}/index.html")
    res = curl("--http1.1", "--cacert", pki.ca, "-o", "/dev/null", "-w", "%{http_code}",
               f"https://localhost:{tls_port}/index.html")
    assert res.stdout == b"302", res.stderr


def test_reload_swaps_the_certificate_while_a_download_goes_on(cdn, pki):
    cert, key = pki.leaf("first")
    big = bytes(range(256)) * (64 * 1024 * 4)  # 64 MiB
    tls_port = free_port()
    r = cdn.replica(files={"big.bin": big}, extra=tls_section(tls_port, cert, key))
    ctx = pki.context()
    raw = socket.create_connection(("127.0.0.1", tls_port), timeout=10)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    try:
        assert dict(x[0] for x in s.getpeercert()["subject"])["commonName"] == "first"
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = s.recv(65536)
        # The download is under way (the server is blocked on our window).
        # Swap the files in place, as certbot's deploy hook would, and reload.
        new_cert, new_key = pki.leaf("second")
        shutil.copy(new_cert, cert)
        shutil.copy(new_key, key)
        r.reload()
        wait_for(lambda: "certificates" in r.log_text() and "second" in r.log_text(),
                 what="the reload to take the new certificate")
        assert handshake(tls_port, ctx)[0] == "second"
        h = hashlib.sha256()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        got = len(body)
        h.update(body)
        while got < len(big):
            chunk = s.recv(1 << 20)
            assert chunk, f"connection closed after {got} bytes"
            got += len(chunk)
            h.update(chunk)
        assert got == len(big)
        assert h.hexdigest() == hashlib.sha256(big).hexdigest()
    finally:
        s.close()


@pytest.mark.parametrize("breakage", ["missing", "junk", "mismatched key"])
def test_a_bad_certificate_on_reload_is_refused_and_the_old_one_kept(cdn, pki, breakage):
    cert, key = pki.leaf("good")
    tls_port = free_port()
    r = cdn.replica(extra=tls_section(tls_port, cert, key))
    other_cert, other_key = pki.leaf("other")
    if breakage == "missing":
        cert.unlink()
        culprit, why = cert, "cannot be read"
    elif breakage == "junk":
        cert.write_text("not a certificate\n")
        culprit, why = cert, "no PEM certificate"
    else:
        shutil.copy(other_key, key)
        culprit, why = key, "does not match"
    r.reload()
    wait_for(lambda: "reload refused" in r.log_text(), what="the reload to be refused")
    line = [ln for ln in r.log_text().splitlines() if "reload refused" in ln][-1]
    assert str(culprit) in line and why in line, line
    assert handshake(tls_port, pki.context())[0] == "good"
    assert r.alive()


def test_cdn_get_over_https(cdn, pki, workdir):
    cert, key = pki.leaf("replica", sans="DNS:localhost")
    data = b"payload " * 50_000
    tls_port = free_port()
    cdn.replica(files={"file.bin": data}, extra=tls_section(tls_port, cert, key))
    url = f"https://localhost:{tls_port}/file.bin"
    res = run_get([url, "--cacert", pki.ca, "-o", "out.bin"], cwd=workdir)
    assert res.returncode == 0, describe_run(res)
    assert (Path(workdir) / "out.bin").read_bytes() == data
    # The system's store does not know our CA: refused, nothing written.
    res = run_get([url, "-o", "refused.bin", "--wait", "0"], cwd=workdir)
    assert res.returncode != 0
    assert "certificate" in res.stderr, describe_run(res)
    assert not (Path(workdir) / "refused.bin").exists()
    # An address the certificate does not name: refused too.
    res = run_get([f"https://127.0.0.1:{tls_port}/file.bin", "--cacert", pki.ca, "-o", "x.bin",
                   "--wait", "0"], cwd=workdir)
    assert res.returncode != 0, describe_run(res)
    assert "IP address mismatch" in res.stderr, describe_run(res)
    # --insecure: taken, with a warning.
    res = run_get([url, "--insecure", "-o", "insecure.bin"], cwd=workdir)
    assert res.returncode == 0, describe_run(res)
    assert "--insecure" in res.stderr and "warning" in res.stderr
    # --continue over https: the rest is asked with Range.
    (Path(workdir) / "part.bin").write_bytes(data[:12345])
    res = run_get([url, "--cacert", pki.ca, "-c", "-o", "part.bin"], cwd=workdir)
    assert res.returncode == 0, describe_run(res)
    assert (Path(workdir) / "part.bin").read_bytes() == data


def test_cdn_get_https_balancer_never_follows_plain_http(cdn, pki, workdir):
    """The balancer names the replicas' http:// URLs (it does not know their
    https:// ones): a download that started over TLS refuses them."""
    cert, key = pki.leaf("balancer")
    r = cdn.replica(files={"f.bin": b"data"})
    tls_port = free_port()
    b = cdn.balancer([r], extra=tls_section(tls_port, cert, key))
    cdn.wait_up(b, 1)
    res = run_get([f"https://localhost:{tls_port}/f.bin", "--cacert", pki.ca, "-o", "f.bin",
                   "--wait", "0"], cwd=workdir)
    assert res.returncode != 0
    assert "is not https://" in res.stderr, describe_run(res)
    assert not (Path(workdir) / "f.bin").exists()


def test_tls_start_fails_with_the_file_and_the_reason(cdn, pki):
    cert, key = pki.leaf("x")
    missing = Path(cert).with_name("nope.pem")
    r = cdn.replica(extra=tls_section(free_port(), missing, key), start=False)
    r.expect_exit = True
    r.start(wait_ready=False)
    assert r.wait_exit() != 0
    assert f"{missing}: cannot be read" in r.log_text()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="needs systemd-socket-activate")
@pytest.mark.parametrize("names", ["http:https", ""])
def test_socket_activation_passes_the_https_socket(cdn, pki, names):
    """Sockets from systemd: the one named "https" (FileDescriptorName=), or
    without names the one bound to [tls] port, is the TLS listener."""
    cert, key = pki.leaf("replica")
    plain, tls_port = free_port(), free_port()
    r = cdn.replica(files={"index.html": b"activated\n"},
                    extra=tls_section(tls_port, cert, key), start=False)
    argv = ["systemd-socket-activate", "-E", "NOTIFY_SOCKET", "-l", f"127.0.0.1:{plain}",
            "-l", f"127.0.0.1:{tls_port}"]
    if names:
        argv.append(f"--fdname={names}")
    r.binary = Path(shutil.which("systemd-socket-activate"))
    r.args = argv[1:] + [str(cdnlib.REPLICAD), "-c", str(r.config_path)]
    r.config_path = None  # given in r.args, after the activator's own
    r.start(wait_ready=False)
    # The first connection starts the daemon (systemd-socket-activate execs it).
    wait_for(lambda: not cdnlib.port_refuses("127.0.0.1", plain), what="the sockets to listen")
    status, _, body = cdnlib.http_request("127.0.0.1", plain, "GET", "/index.html", timeout=15)
    assert (status, body) == (200, b"activated\n")
    r.wait_ready()
    r.port = plain
    assert https_get(tls_port, "/index.html", pki.context())[2] == b"activated\n"
