"""Every file infra-apply writes goes through ``atomic_write``; every file it reads through
``read_bounded``.

A reader (another infra-apply, net-tools, Terraform, git) never sees a half-written file, a
crash at any moment leaves either the old file or the new one, and a failed write leaves no
temporary file behind. A file read is a regular file of bounded size: a symbolic link to
``/dev/zero`` or a FIFO (committed, or swapped in since discovery) is refused without blocking.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from infra_apply.errors import InfraApplyError

# A killed writer's leftover is recognisable: remove_orphans() clears them under the caller's lock.
TMP_SUFFIX = ".infra-apply.tmp"
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
DIR_MODE = PRIVATE_DIR  # 0700 folders under the state dir


# Read caps: each well over what a real file of that kind holds, far under what hurts a runner.
CONFIG_LIMIT = 1024 * 1024  # infra-apply.toml
STATE_LIMIT = 256 * 1024 * 1024  # a Terraform state (--from-state, a local terraform.tfstate)
TEXT_LIMIT = 16 * 1024 * 1024  # a plan given to `comment`, a generated file, a cache


class NotRegularFile(OSError):
    """The path names a FIFO, a device, a socket or a folder (read_bounded refuses it)."""


class FileTooLarge(OSError):
    """The file holds more than the reader's cap."""


class NotPrivateFile(OSError):
    """A cache file not this user's own: a symlink, another user's, or open to others."""


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Opened non-blocking (a FIFO would otherwise wait forever for a writer) and checked on the
    open descriptor, so a file swapped after a check is still caught. Raises ``OSError``:
    ``FileNotFoundError``, ``NotRegularFile``, ``FileTooLarge`` (also when the file grows past
    ``limit`` while read) or the open's own error; ``strerror`` is one line fit for a message.
    """
    return read_regular(path, limit)[0]


def read_private(path: Path, limit: int) -> bytes:
    """``read_bounded`` of a file this user wrote privately (0600, as ``write_private`` does):
    never through a symlink, never another user's, never one others may read or write, so a
    cache in a state dir someone else can write to is never trusted (``NotPrivateFile``)."""
    return read_regular(path, limit, private=True)[0]


def read_regular(path: Path, limit: int, *, private: bool = False) -> tuple[bytes, int]:
    """``read_bounded`` plus the file's permission bits (a secret's reader warns on 0644)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | os.O_CLOEXEC
    fd = os.open(path, flags | (os.O_NOFOLLOW if private else 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(errno.EINVAL, f"it is not a regular file ({file_kind(st.st_mode)})")
        if private and (st.st_uid != os.geteuid() or st.st_mode & 0o077):
            raise NotPrivateFile(errno.EPERM, "it is not a private file of this user's")
        if st.st_size > limit:
            raise FileTooLarge(errno.EFBIG, f"it is larger than {_size(limit)}")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileTooLarge(errno.EFBIG, f"it is larger than {_size(limit)}")
        return b"".join(chunks), stat.S_IMODE(st.st_mode)
    finally:
        os.close(fd)


def read_or_fail(path: Path, limit: int = 16 * 1024 * 1024) -> bytes:
    """``read_bounded`` for a file a run needs: a FIFO, a device, a huge or unreadable file is
    one located error, never a hang or a traceback."""
    from infra_apply.errors import InfraApplyError

    try:
        return read_bounded(path, limit)
    except OSError as exc:
        raise InfraApplyError(f"cannot read it: {exc.strerror or exc}", path=str(path)) from None


def file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"


def _size(limit: int) -> str:
    for unit, name in ((1024 * 1024, "MiB"), (1024, "KiB")):
        if limit >= unit and limit % unit == 0:
            return f"{limit // unit} {name}"
    return f"{limit} bytes"


class ReadOnlyTarget(InfraApplyError):
    """The file to replace is marked read-only: somebody does not want it changed."""


def atomic_write(path: Path, data: str | bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically.

    The data goes to a temporary file in the same folder (so the final ``os.replace`` is a
    rename on one filesystem), which is fsynced, given its permissions, renamed over ``path``,
    and then the folder is fsynced so the rename itself survives a power cut.

    ``mode``: the new file's permissions. ``None`` keeps an existing file's permissions and
    gives a new file the usual ``0o666 & ~umask``. A file whose owner-write bit is off is
    never replaced (``ReadOnlyTarget``): root could, but the mark is the owner's word.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    folder = path.parent
    current = _existing_mode(path)
    if current is not None and not current & stat.S_IWUSR:
        raise ReadOnlyTarget(f"{path} is read-only (mode {current:o}); not replacing it", path=str(path))
    if mode is None:
        mode = current if current is not None else 0o666 & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as exc:
        raise InfraApplyError(f"cannot write {path}: {exc.strerror}", path=str(path)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InfraApplyError(f"cannot write {path}: {exc.strerror}", path=str(path)) from None
        raise
    fsync_dir(folder)


def remove_orphans(path: Path) -> None:
    """Delete the temporary files a killed ``atomic_write`` of ``path`` left behind. Only safe
    while holding the lock every writer of ``path`` takes."""
    for leftover in path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a filesystem that cannot fsync a folder is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _existing_mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InfraApplyError(f"cannot write {path}: {exc.strerror}", path=str(path)) from None


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (another thread could
    create a file in the instant a set-and-restore leaves it at another value)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# --- private to the user: the state dir (local state holds database passwords) ---------------


def private_dirs(path: Path, base: Path) -> None:
    """Create ``path`` and its missing parents up to ``base`` as 0700 folders, and tighten the
    existing ones between them (``base`` itself only when created here)."""
    path, base = Path(path), Path(base)
    try:
        chain = path.relative_to(base).parts
    except ValueError:
        chain = ()
        base = path
    if not base.is_dir():
        base.parent.mkdir(parents=True, exist_ok=True)
        _mkdir(base)
    current = base
    for part in chain:
        current = current / part
        _mkdir(current)


def _mkdir(folder: Path) -> None:
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=DIR_MODE)
    st = folder.lstat()
    if stat.S_ISLNK(st.st_mode):
        return  # a link the operator made (e.g. to another disk): its target is theirs
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(folder))
    if stat.S_IMODE(st.st_mode) != DIR_MODE:
        os.chmod(folder, DIR_MODE)


def write_private(path: Path, data: str | bytes) -> None:
    """``atomic_write`` into a 0600 file."""
    atomic_write(path, data, mode=PRIVATE_FILE)


def sync_private(folder: Path, files: Mapping[str, bytes], stale: str = "*.tf") -> None:
    """Make ``folder`` hold exactly ``files`` among the names matching ``stale``: others are
    removed, changed ones rewritten privately, unchanged ones left alone (their mtime too)."""
    for old in folder.glob(stale):
        if old.name not in files:
            old.unlink()
    for name, data in files.items():
        target = folder / name
        if not target.is_file() or target.read_bytes() != data:
            write_private(target, data)


def tighten(top: Path) -> None:
    """Take every group/other permission off ``top`` and everything below it: folders become
    0700, files keep only their owner bits (0644 -> 0600, 0755 -> 0700). Symlinks are left
    alone; a file another process removes meanwhile is skipped."""
    for folder, dirs, files in os.walk(top):
        _private(Path(folder), DIR_MODE)
        for name in files:
            _private(Path(folder) / name, None)
        dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink()]


def _private(path: Path, wanted: int | None) -> None:
    with contextlib.suppress(FileNotFoundError):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            return
        mode = stat.S_IMODE(st.st_mode)
        new = mode & 0o700 if wanted is None else wanted
        if mode != new:
            os.chmod(path, new)
