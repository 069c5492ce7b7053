"""Every file lock infra-apply takes: private lock files, the holder noted in each, one error.

A lock that stays busy past its wait is one ``InfraApplyError`` shape, whatever is locked:
what is locked, who holds it (the process the lock file names, while it runs), the lock file,
and what to do. The holder is written into the lock file under the lock (``flock`` never
truncates it), so a waiting run can name the process it waits for.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, Unpack

from infra_apply.errors import InfraApplyError
from infra_apply.runtime.fs import PRIVATE_FILE, read_bounded

if TYPE_CHECKING:
    from filelock import BaseFileLock

WAIT = "wait for it to finish, then run again"
_HOLDER_LIMIT = 4096  # "pid=<n> since=<time>": a few dozen bytes


class LockBusy(InfraApplyError):
    """Another run holds the lock longer than this one may wait."""


Busy = Callable[[str], InfraApplyError]


class Options(TypedDict, total=False):
    """How a lock is taken. ``timeout``: seconds to wait (0, the default: not at all; negative:
    for ever). ``singleton``: one lock object per file in this process, so it may be taken again
    by its holder. ``remedy``: what the busy error tells to do. ``busy``: builds that error, so
    a caller keeps its own error class."""

    timeout: float
    singleton: bool
    remedy: str
    busy: Busy


def acquire(path: Path, what: str, **options: Unpack[Options]) -> BaseFileLock:
    """Take the lock file ``path`` (created 0600). ``what`` names the locked thing in the error
    (``the working copy of producer ct``)."""
    from filelock import FileLock, Timeout  # tens of milliseconds: only where a lock is taken

    timeout = options.get("timeout", 0)
    singleton = options.get("singleton", False)
    # The wait goes to acquire(): a singleton refuses a second construction with other arguments.
    lock = FileLock(str(path), is_singleton=singleton, mode=PRIVATE_FILE)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        busy = options.get("busy", LockBusy)
        raise busy(busy_message(path, what, timeout, options.get("remedy", WAIT))) from None
    except OSError as exc:
        raise InfraApplyError(f"cannot lock {what}: {exc.strerror} (lock file {path})") from None
    _note_holder(path)
    return lock


@contextlib.contextmanager
def held(path: Path, what: str, **options: Unpack[Options]) -> Iterator[None]:
    """:func:`acquire` for the length of a ``with`` block."""
    lock = acquire(path, what, **options)
    try:
        yield
    finally:
        lock.release()
        if not lock.is_locked:  # a re-entered singleton still holds it: its holder stays noted
            _note_holder(path, clear=True)


def busy_message(path: Path, what: str, timeout: float, remedy: str = WAIT) -> str:
    waited = f" (waited {timeout:g}s)" if timeout > 0 else ""
    holder = holder_of(path)
    by = f" (process {holder[0]}, since {holder[1]}; ps -p {holder[0]} shows it)" if holder else ""
    return f"another infra-apply run{by} holds the lock on {what}{waited}; lock file {path}; {remedy}"


def holder_of(path: Path) -> tuple[int, str] | None:
    """The running process the lock file names, and since when; None when it names none, or a
    process that has ended (its lock went with it: the holder now is one that has not noted
    itself yet, or another program)."""
    try:
        fields = dict(
            item.split("=", 1) for item in read_bounded(path, _HOLDER_LIMIT).decode().split() if "=" in item
        )
        pid = int(fields["pid"])
    except (OSError, UnicodeDecodeError, KeyError, ValueError):
        return None
    if pid <= 0 or pid == os.getpid() or not _running(pid):
        return None
    return pid, fields.get("since", "?")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _note_holder(path: Path, clear: bool = False) -> None:
    """Write (or clear) this process as the holder, through a second descriptor: the lock is
    ``flock``'s on the open file, which a write by the holder leaves alone. Best effort: the
    note only makes a busy message better."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = "" if clear else f"pid={os.getpid()} since={since}\n"
    flags = os.O_WRONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    with contextlib.suppress(OSError):
        fd = os.open(path, flags)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, text.encode())
        finally:
            os.close(fd)
