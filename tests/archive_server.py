"""A loopback stand-in for the image sources' download sites (images.cocodataset.org and the like).

Plain HTTP/1.1 file serving with HEAD, Content-Length and `Range: bytes=N-` (206), which is all the
kit's archive downloader uses. `cuts[path] = [n, ...]` makes each of the next GETs of `path` send only
that many bytes of its answer and hang up, like a dropped connection. Every request is kept in `requests`.
Hand-written: http.server's SimpleHTTPRequestHandler ignores Range.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

from fake_hub import LoopbackServer


class ArchiveServer(LoopbackServer):
    def __init__(self, files: dict[str, bytes] | None = None):
        self.files: dict[str, bytes] = dict(files or {})
        self.cuts: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        super().__init__(_handler(self))

    def gets(self, path: str) -> list[str | None]:
        """The Range header of every GET of `path` (None for a full GET)."""
        return [rng for method, got, rng in self.requests if method == "GET" and got == path]


def _handler(server: ArchiveServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            server.requests.append((self.command, path, self.headers.get("Range")))
            data = server.files.get(path)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = 0
            wanted = self.headers.get("Range")
            if wanted and wanted.startswith("bytes=") and body:
                start = int(wanted[len("bytes="):].split("-", 1)[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if not body:
                return
            cut = server.cuts[path].pop(0) if server.cuts.get(path) else None
            if cut is not None:
                self.wfile.write(data[start:start + cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(data[start:])

    return Handler
