"""A small HTTP front for Orthanc's DICOMweb plugin that real servers put in the way: it checks
a bearer token, and can answer 429 or 503 with Retry-After before letting requests through."""

from __future__ import annotations

import http.server
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class ProxyState:
    target: str  # Orthanc's HTTP base, e.g. http://127.0.0.1:8042
    token: str = ""  # the bearer token it wants ("" = none)
    busy: int = 0  # answer this many requests busy_status first
    busy_status: int = 429  # or 503
    retry_after: str = "1"
    cut: int = 0  # cut this many multipart (WADO-RS) answers short: half their body, then close
    delay: float = 0.0  # seconds to hold each multipart (WADO-RS) answer back: a slow archive
    trickle: float = 0.0  # send each multipart answer in 16 pieces, this many seconds apart
    seen: list[tuple[float, int, str]] = field(default_factory=list)  # (time, status sent, path); cut: -status
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(http.server.BaseHTTPRequestHandler):
    state: ProxyState
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        return

    def _answer(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        with self.state.lock:
            self.state.seen.append((time.monotonic(), status, self.path))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        state = self.state
        if state.token and self.headers.get("Authorization") != f"Bearer {state.token}":
            self._answer(401, {"WWW-Authenticate": "Bearer"})
            return
        with state.lock:
            busy = state.busy > 0
            state.busy -= 1 if busy else 0
        if busy:
            self._answer(state.busy_status, {"Retry-After": state.retry_after})
            return
        request = urllib.request.Request(
            state.target + self.path, headers={"Accept": self.headers.get("Accept", "*/*")}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
                status = response.status
                kind = response.headers.get("Content-Type", "application/octet-stream")
        except urllib.error.HTTPError as exc:
            body, status, kind = exc.read(), exc.code, exc.headers.get("Content-Type", "text/plain")
        if state.delay and kind.startswith("multipart/"):
            time.sleep(state.delay)  # a slow archive, in the proxy's own thread
        with state.lock:
            cut = state.cut > 0 and kind.startswith("multipart/") and status == 200
            state.cut -= 1 if cut else 0
        if state.trickle and kind.startswith("multipart/") and status == 200:
            with self.state.lock:
                self.state.seen.append((time.monotonic(), status, self.path))
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            piece = len(body) // 16 + 1
            for start in range(0, len(body), piece):
                self.wfile.write(body[start : start + piece])
                self.wfile.flush()
                time.sleep(state.trickle)  # a slow link: each piece comes well within the timeout
            return
        if cut:  # announce the whole body, send half of it, hang up
            with self.state.lock:
                self.state.seen.append((time.monotonic(), -status, self.path))
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._answer(status, {"Content-Type": kind}, body)


@contextmanager
def proxy(state: ProxyState) -> Iterator[str]:
    """The proxy's base URL (its DICOMweb root) while it runs."""
    handler = type("Handler", (_Handler,), {"state": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    finally:
        server.shutdown()
        server.server_close()
