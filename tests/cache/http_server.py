"""A tiny threaded static-file HTTP server with Range support (206 partial content) for tests.

Python's SimpleHTTPRequestHandler ignores Range headers, which breaks partial reads of zarr shards.
Supports ``bytes=a-b``, ``bytes=a-`` and suffix ranges ``bytes=-n``, and HEAD.
"""

from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlparse

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def _handler(root: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in separate writes: with Nagle's algorithm on, each keep-alive response
        # then waits ~40 ms for the client's delayed ACK (measured: 10x slower test reads).
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _file(self) -> Path | None:
            rel = unquote(urlparse(self.path).path).lstrip("/")
            path = (root / rel).resolve()
            if root not in path.parents or not path.is_file():
                return None
            return path

        def _send(self, body: bool) -> None:
            path = self._file()
            if path is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            size = path.stat().st_size
            start, stop, status = 0, size, 200
            header = self.headers.get("Range")
            if header:
                m = _RANGE.match(header.strip())
                if not m or (not m.group(1) and not m.group(2)):
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                a, b = m.group(1), m.group(2)
                if a:
                    start, stop = int(a), min(size, int(b) + 1) if b else size
                else:
                    start, stop = max(0, size - int(b)), size
                if start >= size and size > 0:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(stop - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{max(start, stop - 1)}/{size}")
            self.end_headers()
            if body:
                with path.open("rb") as f:
                    f.seek(start)
                    self.wfile.write(f.read(stop - start))

        def do_GET(self) -> None:
            self._send(body=True)

        def do_HEAD(self) -> None:
            self._send(body=False)

    return Handler


@contextmanager
def serve_directory(root: str | os.PathLike[str]) -> Iterator[str]:
    """Serve root on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Path(root).resolve()))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
