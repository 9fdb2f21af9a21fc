"""Serve a WSGI fake on a free loopback port in a background thread (threaded werkzeug server)."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from werkzeug.serving import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:
        return None


class LiveServer:
    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self._server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
        self.host = host
        self.port = self._server.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"fake:{self.port}", daemon=True)

    def start(self) -> "LiveServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def serve(app) -> Iterator[LiveServer]:
    """`with serve(fake) as server:` -> server.url; the fake learns its own URL (for nextRecordsUrl etc.)."""
    server = LiveServer(app).start()
    if hasattr(app, "base_url"):
        app.base_url = server.url
    try:
        yield server
    finally:
        server.stop()
