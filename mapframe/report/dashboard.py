"""``mapframe dashboard``: the report served on localhost, refreshed while a study runs.

A stdlib :class:`~http.server.ThreadingHTTPServer` answers three paths: ``/`` (the report
page, polling for changes), ``/version`` (a signature of the store and results files:
``{"version": ...}``) and ``/data.json`` (the page's data, rebuilt when the version has
changed). The page polls ``/version`` and, when it changes, fetches ``/data.json`` and
redraws in place, keeping the preference the user set.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

from mapframe.errors import ConfigError
from mapframe.report.sources import ReportSource

__all__ = ["Dashboard", "serve"]


#: The longest refresh interval a page can use (a browser's timer holds at most 2^31 ms).
MAX_INTERVAL_S = 86400.0


class _IPv6Server(ThreadingHTTPServer):
    """The server for an IPv6 host (``::1``): the standard one binds IPv4 only."""

    address_family = socket.AF_INET6


class Dashboard:
    """The report of ``source`` as a small web server on ``host:port`` (``port=0``: a free
    one). :meth:`start` serves in a background thread, :meth:`serve_forever` in this one
    (Ctrl-C returns); :attr:`url` is where to point a browser."""

    def __init__(self, source: ReportSource, host: str = "127.0.0.1", port: int = 0,
                 interval: float = 2.0) -> None:
        self.source = source
        if not (isinstance(interval, (int, float)) and 0 < interval <= MAX_INTERVAL_S):
            raise ConfigError(f"the refresh interval must be a number of seconds in (0, "
                              f"{MAX_INTERVAL_S:g}], got {interval!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"the port must be an integer in 0-65535 (0 picks a free one), "
                              f"got {port!r}")
        self.interval_ms = max(100, int(interval * 1000))
        self._lock = threading.Lock()
        self._cache: tuple[str, dict[str, Any]] | None = None
        handler = _handler(self)
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        try:
            self.server = server_class((host, port), handler)
        except OSError as exc:
            raise ConfigError(f"cannot serve on {host}:{port} ({exc.strerror or exc}); give "
                              "another --port (0 picks a free one) or --host") from None
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def bundle(self) -> dict[str, Any]:
        """The page's data for the current version of the files (cached per version)."""
        from mapframe.report.data import assemble
        from mapframe.report.page import bundle

        with self._lock:
            version = self.source.version()
            if self._cache is None or self._cache[0] != version:
                self._cache = (version, bundle(assemble(self.source),
                                               live={"interval_ms": self.interval_ms}))
            return self._cache[1]

    def page(self) -> str:
        from mapframe.report.data import assemble
        from mapframe.report.page import render_page

        return render_page(assemble(self.source), live={"interval_ms": self.interval_ms})

    def start(self) -> Dashboard:
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        name="mapframe-dashboard", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=5)
        self.server.server_close()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler(dash: Dashboard) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                if path in ("/", "/index.html", "/report.html"):
                    self._send(dash.page().encode("utf-8"), "text/html; charset=utf-8")
                elif path == "/version":
                    body = json.dumps({"version": dash.source.version()})
                    self._send(body.encode(), "application/json")
                elif path == "/favicon.ico":
                    self.send_response(204)
                    self.end_headers()
                elif path == "/data.json":
                    from mapframe.report.page import bundle_json

                    self._send(bundle_json(dash.bundle()).encode("utf-8"), "application/json")
                else:
                    self.send_error(404, "not found")
            except Exception as exc:  # a half-written file: say so, the next poll retries
                self.send_error(503, f"cannot read the results yet: {exc}"[:200])

        def _send(self, body: bytes, kind: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the terminal shows the URL and how to stop

    return Handler


def serve(source: ReportSource, host: str = "127.0.0.1", port: int = 0,
          interval: float = 2.0, out: TextIO | None = None) -> int:
    """Serve the dashboard until Ctrl-C; returns the exit status (0)."""
    out = out or sys.stdout
    dash = Dashboard(source, host, port, interval)
    what = source.directory or source.store
    out.write(f"dashboard of {what} (study {source.study!r}) at {dash.url}\n"
              "refreshes as the study stores evaluations; press Ctrl-C to stop\n")
    out.flush()
    try:
        dash.serve_forever()
    except KeyboardInterrupt:
        out.write("\ndashboard stopped\n")
    finally:
        dash.server.server_close()
    return 0
