"""A Range-capable HTTP test server (tests/cache/http_server.py) that can be told to fail.

``server.fail_after(n)`` lets n more GET requests through, then drops every connection without an answer
(what a client sees when the server dies mid-read); ``server.heal()`` serves again; ``server.stop()``
closes the port for good.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

from tests.cache.http_server import _handler


class FlakyServer:
    def __init__(self, root: Path) -> None:
        base = _handler(Path(root).resolve())
        control = self
        self._lock = threading.Lock()
        self._budget: int | None = None
        self.gets = 0

        class Handler(base):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:
                if control._take():
                    super().do_GET()
                else:  # die: no status line, connection closed
                    self.close_connection = True
                    self.connection.close()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _take(self) -> bool:
        with self._lock:
            self.gets += 1
            if self._budget is None:
                return True
            if self._budget > 0:
                self._budget -= 1
                return True
            return False

    def fail_after(self, n: int) -> None:
        with self._lock:
            self._budget = n

    def heal(self) -> None:
        with self._lock:
            self._budget = None

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def flaky_server(root: Path) -> Iterator[FlakyServer]:
    server = FlakyServer(root)
    try:
        yield server
    finally:
        server.stop()
