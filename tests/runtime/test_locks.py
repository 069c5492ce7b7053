"""The one lock helper: every lock infra-apply takes goes through it, is private, and a busy one
is one error naming what is locked, the process holding it, the lock file and the remedy."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra_apply.errors import InfraApplyError
from infra_apply.registry.docstore import IO_LOCK, DocumentRoot
from infra_apply.runtime import locks
from infra_apply.runtime.terraform import Binary, Workdir
from tests.conftest import REPO

PACKAGE = REPO / "infra_apply"

# Another infra-apply process: takes the lock through the helper, says so, holds it until told.
_HOLD = """
import sys
from pathlib import Path
from infra_apply.runtime import locks
lock = locks.acquire(Path(sys.argv[1]), "the test thing")
print("held", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    path = tmp_path / "thing.lock"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        yield path, proc
    finally:
        proc.communicate("done\n", timeout=60)


def test_a_busy_lock_names_what_who_the_lock_file_and_a_remedy_that_works(
    holder: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, proc = holder
    with pytest.raises(locks.LockBusy) as err:
        locks.acquire(path, "the working copy of producer ct", timeout=0.1)
    message = err.value.message
    assert message.startswith(f"another infra-apply run (process {proc.pid}, since "), message
    assert message.endswith(
        f"; ps -p {proc.pid} shows it) holds the lock on the working copy of producer ct (waited 0.1s); "
        f"lock file {path}; wait for it to finish, then run again"
    ), message
    assert re.search(r"since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ;", message), message
    # the remedy works as printed: it shows the holder
    shown = subprocess.run(["ps", "-p", str(proc.pid)], capture_output=True, text=True, check=False)
    assert shown.returncode == 0 and str(proc.pid) in shown.stdout


def test_the_callers_error_class_carries_the_same_message(holder: tuple[Path, subprocess.Popen[str]]) -> None:
    path, _ = holder

    class Busy(InfraApplyError):
        pass

    busy = pytest.raises(Busy, match="holds the lock on the leases; lock file ")
    with busy, locks.held(path, "the leases", busy=Busy):
        pass


def test_a_holder_that_has_ended_is_not_named(tmp_path: Path) -> None:
    path = tmp_path / "thing.lock"
    ended = [sys.executable, "-c", "import os; print(os.getpid())"]
    done = subprocess.run(ended, capture_output=True, text=True, check=True)
    path.write_text(f"pid={done.stdout.strip()} since=2026-01-01T00:00:00Z\n")
    assert locks.holder_of(path) is None
    expected = f"another infra-apply run holds the lock on x; lock file {path}; {locks.WAIT}"
    assert locks.busy_message(path, "x", 0) == expected


def test_lock_files_are_private_and_the_holder_note_goes_with_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "thing.lock"
    with locks.held(path, "x"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().startswith("pid=")
    assert path.read_text() == ""


def test_a_document_root_busy_past_its_wait_is_an_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The docstore's I/O lock raised filelock's own Timeout (a traceback) when it stayed busy."""
    monkeypatch.setattr("infra_apply.registry.docstore.IO_LOCK_SECONDS", 0.1)
    root = DocumentRoot(Workdir(Binary("terraform", "1.9.0"), tmp_path, {}), "leases")
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path / IO_LOCK)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        busy = pytest.raises(InfraApplyError, match=f"holds the lock on the leases stored in {tmp_path}")
        with busy, root.io():
            pass
    finally:
        proc.communicate("done\n", timeout=60)


# A lock taken or its timeout caught; the BaseFileLock type in an annotation is neither.
_TAKES_LOCK = re.compile(
    r"\bFileLock\(|\bfilelock\.(FileLock|Timeout)\b|from filelock import .*\b(FileLock|Timeout)\b"
)


def test_no_file_lock_is_taken_outside_the_lock_helper() -> None:
    """One place per job: a FileLock elsewhere would turn a busy lock into an error its own way."""
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{n}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "locks.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _TAKES_LOCK.search(line) and not line.lstrip().startswith("#")
    ]
    assert offenders == []


def test_a_singleton_lock_is_taken_again_with_another_wait(tmp_path: Path) -> None:
    """gpu up holds a producer's leases (waiting) around steps that take them again at once."""
    path = tmp_path / "leases.lock"
    outer = locks.held(path, "the leases", timeout=30, singleton=True)
    with outer, locks.held(path, "the leases", singleton=True):
        assert path.read_text().startswith("pid=")
    assert path.read_text() == ""
