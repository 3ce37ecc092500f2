# SPDX-License-Identifier: MIT
"""A misbehaving replica, to make transfers fail in controlled ways.

It answers the balancer's probes (GET /.cdn/status, kept alive) like a
healthy replica, so the balancer sends clients to it, and then spoils every
content response:

  truncate   - full headers (right Content-Length and digest), half the body, close
  bad-digest - the whole body, but a Repr-Digest of other bytes
"""

import base64
import hashlib
import json
import socket
import socketserver
import threading


def _digest(data):
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


class _Handler(socketserver.StreamRequestHandler):
    timeout = 30

    def handle(self):
        fake = self.server.fake
        while True:
            try:
                line = self.rfile.readline(65537)
            except OSError:
                return
            if not line:
                return
            parts = line.decode("latin-1").split()
            if len(parts) != 3:
                return
            method, target, _ = parts
            while True:
                h = self.rfile.readline(65537)
                if h in (b"\r\n", b"\n", b""):
                    break
            path = target.split("?", 1)[0]
            if path == "/.cdn/status":
                # Like a server that does not stream: one document, whatever
                # the query asks.
                fake.status_requests += 1
                body = json.dumps({
                    "name": fake.name, "source": "fake", "state": "serving",
                    "active_connections": 0, "capacity": 1000, "requests_total": 0,
                    "bytes_total": 0, "bytes_per_second": 0, "load": 0.0,
                    "uptime_seconds": 1.0, "version": "fake"}).encode()
                self._send(200, body, {"Content-Type": "application/json"}, method)
                continue
            fake.content_requests += 1
            body = fake.body
            digest = _digest(body if fake.mode == "truncate" else body + b"tampered")
            headers = {"Content-Type": "text/html", "ETag": fake.etag,
                       "Repr-Digest": digest, "Accept-Ranges": "bytes",
                       "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT",
                       "Cache-Control": "max-age=60", "CDN-Replica": fake.name}
            if fake.mode == "truncate" and method != "HEAD":
                head = self._head(200, len(body), headers)
                self.wfile.write(head + body[: len(body) // 2])
                self.wfile.flush()
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            self._send(200, body, headers, method)

    @staticmethod
    def _head(status, length, headers):
        lines = [f"HTTP/1.1 {status} OK", f"Content-Length: {length}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _send(self, status, body, headers, method):
        self.wfile.write(self._head(status, len(body), headers) +
                         (b"" if method == "HEAD" else body))
        self.wfile.flush()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeReplica:
    def __init__(self, mode, body, name="fake", etag='"fake"'):
        assert mode in ("truncate", "bad-digest")
        self.mode = mode
        self.etag = etag
        self.body = body
        self.name = name
        self.content_requests = 0
        self.status_requests = 0
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.fake = self
        self.host, self.port = self.server.server_address
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
