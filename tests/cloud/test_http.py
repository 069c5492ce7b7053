"""The one HTTP transport against hostile servers (http.server on 127.0.0.1), through both of
its clients: the DigitalOcean client (``do_api``) and a forge client (``comment``).

Each hostile answer must end in one ``InfraApplyError`` (one line, exit 1) within the small
deadline and size caps the test passes, never a traceback, a hang or memory without bound;
and nothing a server sends (an echoed token, escape sequences, a newline) reaches the message
unmasked or raw.
"""

from __future__ import annotations

import json
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from infra_apply.cloud import do_api
from infra_apply.cloud.http import Limits, error_fields, json_body
from infra_apply.errors import ExitCode, InfraApplyError
from infra_apply.forge import comment
from tests.conftest import EXAMPLE_TREE, cli_env, run_cli

TOKEN = "FAKE-do-token_hostile-server-test"
# Small caps so every case ends at once; the code paths are those of the default limits.
LIMITS = Limits(timeout=1.0, deadline=0.6, max_bytes=256 * 1024, max_depth=64, max_pages=5)
ESCAPES = "\x1b]8;;https://evil.example\x07click\x1b]8;;\x07\x1b[2J\nforged: line"


class Hostile(BaseHTTPRequestHandler):
    """Answers every request as ``server.mode`` says; ``GET .../user`` (the forge's "who am
    I") answers normally so a forge client reaches the listing."""

    server: HostileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests += 1
        self.server.seen.append((self.path, self.headers.get("Proxy-Authorization", "")))
        if self.path.endswith("/user"):
            return self._json(200, {"id": 1, "login": "bot"})
        return getattr(self, f"_{self.server.mode}")()

    do_POST = do_PATCH = do_GET

    def _json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _endless_pages(self) -> None:
        """Every page links to the next one, forever, with something new on each."""
        page = int(parse_qs(urlsplit(self.path).query).get("page", ["1"])[0])
        if self.path.startswith("/v2/"):
            nxt = f"https://api.digitalocean.com/v2/droplets?page={page + 1}"
            doc = {"droplets": [{"id": page, "name": f"d{page}"}], "links": {"pages": {"next": nxt}}}
            return self._json(200, doc)
        link = f'<{self.path.split("?")[0]}?per_page=100&page={page + 1}>; rel="next"'
        return self._json(200, [{"id": page, "body": "hello", "user": {"login": "x"}}], {"Link": link})

    def _huge_length(self) -> None:
        """A Content-Length of a terabyte; what follows never matters."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(10**12))
        self.end_headers()
        self._write(b"[" + b"0," * 1000)

    def _endless_chunks(self) -> None:
        """A chunked body without end (bounded here only so the server stops by itself)."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b" " * 65536
        for _ in range(2000):  # 128 MB at most, if nothing stopped reading
            if not self._write(b"%x\r\n%s\r\n" % (len(chunk), chunk)):
                return

    def _trickle(self) -> None:
        """One byte at a time, each well within the read timeout, for far longer than the deadline."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "100")
        self.end_headers()
        for _ in range(100):
            if not self._write(b" "):
                return
            time.sleep(0.1)

    def _echo(self) -> None:
        """A refusal that echoes the Authorization header, with escapes and a newline."""
        said = f"bad credentials {self.headers['Authorization']} {ESCAPES}"
        self._json(401, {"id": "unauthorized", "message": said})

    def _deep(self) -> None:
        data = b"[" * 100_000 + b"]" * 100_000
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self._write(data)

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client hung up: what it should do
            return False
        return True


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    mode = ""
    requests = 0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.seen: list[tuple[str, str]] = []  # request target, Proxy-Authorization

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    server = HostileServer(("127.0.0.1", 0), Hostile)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def do_client(server: HostileServer) -> None:
    c = do_api.Client(TOKEN, server.url, retry=do_api.Retry(retries=0), limits=LIMITS)
    do_api.list_droplets(c)


def forge_client(server: HostileServer) -> None:
    target = comment.Target("github", server.url, "o/r", "GITHUB_TOKEN", TOKEN)
    comment.publish(target, 7, "plan\n", limits=LIMITS)


CLIENTS: dict[str, Callable[[HostileServer], None]] = {"digitalocean": do_client, "forge": forge_client}


def fails(server: HostileServer, client: str, mode: str) -> str:
    """The one line the client ends with; the time it took is bounded by the deadline."""
    server.mode = mode
    started = time.monotonic()
    with pytest.raises(InfraApplyError) as caught:
        CLIENTS[client](server)
    assert time.monotonic() - started < 1.5
    error = caught.value
    line = error.format()
    assert error.exit_code == ExitCode.ERROR
    assert len(line.splitlines()) == 1 and line.isprintable(), line
    assert TOKEN not in line
    return line


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("endless_pages", "more than 5 pages"),  # a next-page link that never ends
        ("huge_length", "1,000,000,000,000 bytes long, over the 262,144-byte limit"),  # before reading
        ("trickle", "no complete answer within 0.6s"),  # each byte in time, the whole too slow
        ("deep", "nested more than 64 deep"),  # not a RecursionError (exit 70)
    ],
)
def test_a_hostile_answer_is_one_line(hostile: HostileServer, client: str, mode: str, says: str) -> None:
    assert says in fails(hostile, client, mode)
    assert hostile.requests <= LIMITS.max_pages + 1  # the forge asks GET /user first


@pytest.mark.parametrize("client", CLIENTS)
def test_a_chunked_body_without_end_stops_past_the_size_cap(hostile: HostileServer, client: str) -> None:
    tracemalloc.start()
    try:
        line = fails(hostile, client, "endless_chunks")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "over the 262,144-byte limit" in line
    assert peak < 4 * 1024 * 1024  # the cap, not the 128 MB the server would send


@pytest.mark.parametrize("client", CLIENTS)
def test_an_echoed_token_and_escapes_are_masked_and_made_visible(hostile: HostileServer, client: str) -> None:
    line = fails(hostile, client, "echo")
    assert "bad credentials" in line and "***" in line
    assert "\x1b" not in line and "\\x1b]8;;https://evil.example\\x07click" in line
    assert "forged: line" in line  # after the newline, on the same line


def test_json_depth_counts_brackets_outside_strings_only() -> None:
    limits = Limits(max_depth=2)
    assert json_body(b'[{"a": "[[[[{{{{\\"]]]"}]', limits) == [{"a": '[[[[{{{{"]]]'}]
    assert json_body(b"", limits) is None and json_body(b"<html>", limits) is None
    with pytest.raises(InfraApplyError, match="nested more than 2 deep"):
        json_body(b"[[[1]]]", limits)


def test_a_header_with_a_line_break_is_never_sent_nor_shown(hostile: HostileServer) -> None:
    c = do_api.Client(TOKEN + "\r\nX-Evil: 1", hostile.url, retry=do_api.Retry(retries=0), limits=LIMITS)
    with pytest.raises(InfraApplyError) as caught:
        do_api.list_droplets(c)
    assert "Authorization header holds a control or non-ASCII character" in caught.value.message
    assert TOKEN not in caught.value.format()
    assert hostile.requests == 0


@pytest.mark.parametrize("mode", ["huge_length", "deep", "echo"])
def test_the_cli_ends_in_one_line_and_exit_1_for_both_clients(
    hostile: HostileServer, tmp_path: Path, mode: str
) -> None:
    hostile.mode = mode
    (tmp_path / "plan.md").write_text("plan\n")
    env = cli_env(tmp_path, DIGITALOCEAN_TOKEN=TOKEN, DIGITALOCEAN_API_URL=hostile.url, GITHUB_TOKEN=TOKEN)
    runs = [
        run_cli("--root", str(EXAMPLE_TREE), "validate", "--live", env=env),
        run_cli(
            "comment",
            "--pr",
            "7",
            "--repo",
            "o/r",
            "--api-url",
            hostile.url,
            "plan.md",
            env=env,
            cwd=tmp_path,
        ),
    ]
    for r in runs:
        assert r.returncode == 1, r.stderr
        [line] = r.stderr.splitlines()
        assert line.startswith("infra-apply: error: ") and line.isprintable() and TOKEN not in line


def test_a_remote_forge_is_reached_through_the_environments_proxy(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain http to a remote forge goes to the proxy with the absolute URL (and the proxy's
    credentials); a loopback endpoint never does (test_do_api)."""
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("http_proxy", f"http://ops:s3cret@127.0.0.1:{hostile.server_address[1]}")
    hostile.mode = "echo"
    target = comment.Target("forgejo", "http://forge.invalid/api/v1", "o/r", "FORGEJO_TOKEN", TOKEN)
    with pytest.raises(InfraApplyError, match="401"):
        comment.publish(target, 7, "plan\n", limits=LIMITS)
    assert hostile.seen[0] == ("http://forge.invalid/api/v1/user", "Basic b3BzOnMzY3JldA==")


def test_one_reader_of_an_api_error_answer_for_digitalocean_and_the_forges() -> None:
    do = {"id": "not_found", "message": "The resource you were accessing could not be found."}
    errors = [{"code": "custom", "message": "body is too long"}, "x"]
    github = {"message": "Validation Failed", "errors": errors}
    assert error_fields(do) == ("not_found", "The resource you were accessing could not be found.")
    assert error_fields(github) == (None, "Validation Failed; body is too long; x")
    assert error_fields({"message": "two\n  lines", "id": 7}) == (None, "two lines")
    assert error_fields(["not", "an", "object"]) == (None, "")
