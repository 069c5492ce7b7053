"""The producer's token file ~/.vault/do_pat_<producer>: one token line, never echoed, never
blocking, loose permissions warned about."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest

from infra_apply.cloud.pat import token_env
from infra_apply.errors import InfraApplyError
from tests.conftest import cli_env, run_cli

TOKEN = "FAKE-do-token_" + "5f" * 32
SECRET_PART = "5f5f5f5f"


def vault(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    pat = tmp_path / ".vault" / "do_pat_quinn"
    pat.parent.mkdir(parents=True, exist_ok=True)
    pat.write_bytes(content)
    pat.chmod(mode)
    return pat


def token(tmp_path: Path, warnings: list[str] | None = None) -> dict[str, str]:
    sink = warnings if warnings is not None else []
    return token_env({"HOME": str(tmp_path)}, "quinn", sink.append)


@pytest.mark.parametrize(
    "content",
    [
        TOKEN.encode(),
        f"{TOKEN}\n".encode(),
        f"\ufeff{TOKEN}\n".encode(),  # a byte order mark, as some Windows editors write
        f"\n  {TOKEN}\t\r\n\n".encode(),
    ],
)
def test_the_token_line_is_read_without_bom_or_surrounding_whitespace(tmp_path: Path, content: bytes) -> None:
    vault(tmp_path, content)
    assert token(tmp_path) == {"DIGITALOCEAN_TOKEN": TOKEN}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (f"{TOKEN}\n{TOKEN}\n".encode(), "2 non-empty lines"),
        (f"{TOKEN}\nnote: the ct token\n".encode(), "2 non-empty lines"),
        (b"export DIGITALOCEAN_TOKEN=FAKE-do-token_" + b"5f" * 32 + b"\n", "a space"),
        (f"{TOKEN}\x00\n".encode(), "control character"),
        (TOKEN.encode() + b"\xff\xfe\n", "not UTF-8"),
        (b"\xff\xfe" + TOKEN.encode("utf-16-le"), "not UTF-8"),
        (f"{TOKEN}é\n".encode(), "non-ASCII"),
        (TOKEN.encode() * 100, "larger than 4096 bytes"),
    ],
)
def test_anything_but_one_token_line_is_a_clear_error_that_never_shows_the_content(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    pat = vault(tmp_path, content)
    with pytest.raises(InfraApplyError) as exc:
        token(tmp_path)
    assert problem in exc.value.message
    assert exc.value.path == str(pat)
    assert SECRET_PART not in exc.value.format() and "note" not in exc.value.format()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_token_file_others_may_read_is_warned_about(tmp_path: Path, mode: int) -> None:
    pat = vault(tmp_path, f"{TOKEN}\n".encode(), mode)
    warnings: list[str] = []
    assert token(tmp_path, warnings) == {"DIGITALOCEAN_TOKEN": TOKEN}
    assert len(warnings) == 1
    assert str(pat) in warnings[0] and f"{mode:04o}" in warnings[0] and "chmod 600" in warnings[0]
    assert SECRET_PART not in warnings[0]


def test_a_private_token_file_is_not_warned_about(tmp_path: Path) -> None:
    vault(tmp_path, f"{TOKEN}\n".encode(), 0o600)
    warnings: list[str] = []
    token(tmp_path, warnings)
    assert warnings == []


def _release_reader(fifo: Path) -> None:
    """Give a reader blocked on ``fifo`` its end of file (a writer that opens and closes)."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_a_fifo_in_place_of_the_token_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / ".vault" / "do_pat_quinn"
    fifo.parent.mkdir()
    os.mkfifo(fifo, 0o600)
    outcome: list[BaseException | dict[str, str]] = []

    def read() -> None:
        try:
            outcome.append(token(tmp_path))
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # The bound only limits how long a regression takes to fail: the fixed code never waits.
    reader.join(timeout=30)
    blocked = reader.is_alive()
    while reader.is_alive():
        _release_reader(fifo)
        reader.join(timeout=0.1)
    assert not blocked, "reading the token blocked on a FIFO"
    [result] = outcome
    assert isinstance(result, InfraApplyError)
    assert "not a regular file (a FIFO)" in result.message


def test_a_folder_in_place_of_the_token_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / ".vault" / "do_pat_quinn").mkdir(parents=True)
    with pytest.raises(InfraApplyError, match=r"not a regular file \(a folder\)"):
        token(tmp_path)


def test_a_bad_token_file_stops_the_cli_with_one_line_and_no_secret(example: Path) -> None:
    home = example / "home"
    vault(home, f"{TOKEN}\n{TOKEN}\n".encode(), 0o644)
    env = cli_env(example, HOME=str(home))
    r = run_cli(
        "--root",
        str(example / "tree"),
        "plan",
        "--producer",
        "quinn",
        "--out",
        str(example / "generated"),
        env=env,
    )
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and SECRET_PART not in r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if " error " in line]
    assert errors == [
        f"{home}/.vault/do_pat_quinn: error token: unusable DigitalOcean token file: it holds 2 "
        "non-empty lines; it must hold the token alone on one line"
    ]
    assert "chmod 600" in r.stderr  # the loose mode is reported too
    assert not list((example / "state").rglob(".terraform"))
