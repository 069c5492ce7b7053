"""Files and folders private to the user: 0700 folders, 0600 files (0700 executables).

The state dir holds local Terraform state (database passwords), saved plans, the sandbox's
TLS key and registry: nothing under it may be readable by anyone but its owner. Terraform
writes most of it itself (it runs with umask 077, see terraform.run); these helpers cover what
infra-apply writes, and :func:`tighten` fixes what an older version left group/world readable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


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
    """Replace ``path`` atomically with ``data`` in a 0600 file."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
