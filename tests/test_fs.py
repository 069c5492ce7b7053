"""atomic_write: the one way infra-apply writes a file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from infra_apply import fs
from infra_apply.errors import InfraApplyError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_text_and_bytes(tmp_path: Path) -> None:
    fs.atomic_write(tmp_path / "a.txt", "héllo\n")
    fs.atomic_write(tmp_path / "b.bin", b"\x00\xff")
    assert (tmp_path / "a.txt").read_bytes() == "héllo\n".encode()
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"


def test_a_new_file_gets_the_umask_default_and_an_explicit_mode_wins(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        fs.atomic_write(tmp_path / "default", "x")
        fs.atomic_write(tmp_path / "private", "x", mode=0o600)
    finally:
        os.umask(old)
    assert mode(tmp_path / "default") == 0o640
    assert mode(tmp_path / "private") == 0o600


def test_replacing_keeps_the_existing_permissions(tmp_path: Path) -> None:
    target = tmp_path / "mesh-hosts.json"
    target.write_text("old")
    target.chmod(0o640)
    fs.atomic_write(target, "new")
    assert target.read_text() == "new" and mode(target) == 0o640


def test_a_read_only_file_is_never_replaced(tmp_path: Path) -> None:
    target = tmp_path / "mesh-hosts.json"
    target.write_text("keep")
    target.chmod(0o444)
    with pytest.raises(fs.ReadOnlyTarget, match="read-only"):
        fs.atomic_write(target, "new")
    assert target.read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir()] == ["mesh-hosts.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(InfraApplyError, match="No space left"):
        fs.atomic_write(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InfraApplyError, match="cannot write"):
        fs.atomic_write(tmp_path / "nope" / "f", "x")


def test_private_dirs_creates_and_tightens_below_the_base(tmp_path: Path) -> None:
    fs.private_dirs(tmp_path / "state" / "a" / "b", tmp_path / "state")
    assert mode(tmp_path / "state" / "a" / "b") == 0o700 and mode(tmp_path / "state" / "a") == 0o700
    loose = tmp_path / "state" / "loose"
    loose.mkdir(mode=0o755)
    (loose / "f").write_text("x")
    (loose / "f").chmod(0o644)
    fs.tighten(tmp_path / "state")
    assert mode(loose) == 0o700 and mode(loose / "f") == 0o600


def test_write_private_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        fs.write_private(tmp_path / "s", "secret")
    finally:
        os.umask(old)
    assert mode(tmp_path / "s") == 0o600
