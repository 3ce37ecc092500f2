# SPDX-License-Identifier: MIT
"""Headless Chromium driven over the DevTools protocol, standard library only.

    with Browser.launch(workdir) as b:
        b.navigate("http://127.0.0.1:8080/.cdn/dashboard")
        b.evaluate("document.title")
        b.screenshot(path)

One page target, one websocket (RFC 6455, client side: masked frames out,
fragmented and long frames in). Events are collected (console messages and
exceptions, for the test's report) while waiting for a command's answer.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 30.0


def chromium_path():
    for name in ("chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    return None


class WebSocket:
    def __init__(self, url, timeout=COMMAND_TIMEOUT):
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", url)
        if not m:
            raise ValueError(f"not a ws:// URL: {url}")
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        # No Origin header: DevTools then needs no --remote-allow-origins.
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("DevTools closed the websocket")
        self.buf += data

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, text):
        payload = text.encode()
        head = bytes([0x81])  # FIN, text
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def receive(self):
        """The next text message (fragments joined; pings answered)."""
        message = b""
        while True:
            b0, b1 = self._take(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._take(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._take(8))[0]
            payload = self._take(n)  # a server's frames are not masked
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the websocket")
            if opcode == 0x9:  # ping
                self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
                continue
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if b0 & 0x80:
                    return message.decode()

    def close(self):
        self.sock.close()


class Browser:
    def __init__(self, proc, ws, workdir):
        self.proc, self.ws, self.workdir = proc, ws, workdir
        self.next_id = 0
        self.events = []  # console lines and exceptions, for reports
        self.seen = set()  # events that came while waiting for an answer

    @classmethod
    def launch(cls, workdir: Path, size=(1280, 800)):
        exe = chromium_path()
        if exe is None:
            raise FileNotFoundError("chromium not installed (apt-get install chromium)")
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        log = open(workdir / "chromium.log", "wb")
        args = [exe, "--headless=new", "--remote-debugging-port=0",
                f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                "--no-first-run", "--no-default-browser-check", "--disable-gpu",
                "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--mute-audio",
                "--disable-dev-shm-usage", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with it
        proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        # Chromium writes its port there once it listens (port 0: its own choice).
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        port = None
        while port is None:
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited {proc.returncode}: "
                                   f"{(workdir / 'chromium.log').read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError("chromium did not open its DevTools port")
            try:
                port = int(active.read_text().split()[0])
            except (FileNotFoundError, IndexError, ValueError):
                time.sleep(0.05)
        ws_url = None
        while ws_url is None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages:
                ws_url = pages[0]["webSocketDebuggerUrl"]
            elif time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError("chromium opened no page")
            else:
                time.sleep(0.05)
        b = cls(proc, WebSocket(ws_url), workdir)
        b.call("Runtime.enable")
        b.call("Page.enable")
        return b

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()

    def call(self, method, **params):
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.receive())
            if msg.get("id") == mine:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._note(msg)
        raise TimeoutError(f"{method}: no answer")

    def _note(self, msg):
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Page.loadEventFired":
            self.seen.add(m)
        if m == "Runtime.consoleAPICalled":
            self.events.append("console." + p.get("type", "") + ": " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.events.append("exception: " + d.get("exception", {}).get(
                "description", d.get("text", "")))
        elif m == "Log.entryAdded":
            e = p.get("entry", {})
            self.events.append(f"log.{e.get('level')}: {e.get('text')}")

    def navigate(self, url):
        """Loads `url` and returns once its load event fired (the document
        parsed, its inline script run)."""
        self.seen.discard("Page.loadEventFired")  # one of an earlier page
        r = self.call("Page.navigate", url=url)
        if r.get("errorText"):
            raise RuntimeError(f"navigate {url}: {r['errorText']}")
        self.wait_event("Page.loadEventFired")

    def wait_event(self, method, timeout=COMMAND_TIMEOUT):
        if method in self.seen:
            self.seen.discard(method)
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.receive())
            if msg.get("method") == method:
                return
            self._note(msg)
        raise TimeoutError(f"no {method} event")

    def evaluate(self, expression):
        """The value of a JavaScript expression (JSON-serialisable)."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression, timeout=20.0, what=None):
        """Polls until `expression` is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.evaluate(expression)
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or expression}; "
                                     f"page events: {self.events[-20:]}")
            time.sleep(0.1)

    def screenshot(self, path: Path):
        r = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(r["data"]))
        return path
