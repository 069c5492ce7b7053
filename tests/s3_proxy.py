"""A small HTTP proxy in front of moto's S3 server that can drop ``If-None-Match`` from every
request, as some S3-compatible stores ignore it: the create-if-absent Terraform's lockfile
relies on then always succeeds."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class Proxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.strip = True
        self.conditional_puts = 0  # PUTs that asked for If-None-Match, stripped or not


@contextmanager
def s3_proxy(upstream: str) -> Iterator[tuple[str, Proxy]]:
    """(endpoint URL, control) of a proxy forwarding to ``upstream``; ``control.strip`` says
    whether ``If-None-Match`` is dropped."""
    proxy = Proxy(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            if self.command == "PUT" and "If-None-Match" in self.headers:
                proxy.conditional_puts += 1
                if proxy.strip:
                    headers = {k: v for k, v in headers.items() if k.lower() != "if-none-match"}
            conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=60)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
            self.send_response(resp.status, resp.reason)
            for key, value in resp.getheaders():
                if key.lower() not in HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", proxy
    finally:
        server.shutdown()
        server.server_close()
