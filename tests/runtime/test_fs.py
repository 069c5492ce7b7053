"""atomic_write: the one way infra-apply writes a file; read_bounded: the one way it reads one."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from infra_apply.cloud import pat
from infra_apply.commands import comment as comment_verb
from infra_apply.errors import InfraApplyError
from infra_apply.manifests import config, manifest
from infra_apply.plan import takeover
from infra_apply.registry import meshfile
from infra_apply.render import module as render
from infra_apply.runtime import fs, terraform


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


# --- read_bounded: the one way infra-apply reads a file ------------------------------------------


def _regular(path: Path) -> None:
    path.write_text("x")


def _zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _sparse(size: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with open(path, "wb") as fh:
            fh.truncate(size)

    return make


def _finishes(call: Callable[[], object]) -> BaseException | None:
    """What ``call`` raised (None: it returned), asserting it neither blocked nor read forever."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # the caller inspects it
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=30)  # each refusal is at once: this never waits the timeout when fixed
    assert not worker.is_alive(), "the read blocked"
    return outcome[0]


def _read_config(p: Path) -> object:
    return config.load(p.parent, {})


def _read_user_data(p: Path) -> object:
    return config.read_user_data(p.parent, p.name, config.Where("infra-apply.toml", 2, 1))


def _read_manifest(p: Path) -> object:
    return manifest.load(p, p.name)


def _read_mesh(p: Path) -> object:
    return meshfile.load_document(p)


def _read_pat(p: Path) -> object:
    return pat.read_pat(p, lambda _line: None)


def _read_state(p: Path) -> object:
    return takeover.read_state(p)


def _read_plan_for_comment(p: Path) -> object:
    return comment_verb._read_text(p, lambda: b"")


def _read_ledger(p: Path) -> object:
    return render.read_ledger(p.parent.parent, p.parent.name)


# kind: (file name, reader, size past the reader's cap)
READERS: dict[str, tuple[str, Callable[[Path], object], int]] = {
    "infra-apply.toml": ("infra-apply.toml", _read_config, fs.CONFIG_LIMIT + 1),
    "user data": ("cloud-init.yaml", _read_user_data, config.USER_DATA_LIMIT + 1),
    "manifest": ("web.infra.yaml", _read_manifest, manifest.MAX_BYTES + 1),
    "mesh-hosts.json": ("mesh-hosts.json", _read_mesh, meshfile.MAX_BYTES + 1),
    "PAT file": ("do_pat_web", _read_pat, pat.MAX_BYTES + 1),
    "--from-state": ("old.tfstate", _read_state, fs.STATE_LIMIT + 1),
    "comment's plan file": ("plan.md", _read_plan_for_comment, fs.TEXT_LIMIT + 1),
    "address ledger": ("addresses.json", _read_ledger, fs.TEXT_LIMIT + 1),
}
HOSTILE: dict[str, Callable[[Path], None]] = {"symlink to /dev/zero": _zero, "FIFO": _fifo}


@pytest.mark.parametrize("kind", sorted(READERS))
@pytest.mark.parametrize("hostile", sorted(HOSTILE))
def test_every_reader_refuses_a_device_or_fifo_at_once_in_one_line(
    tmp_path: Path, kind: str, hostile: str
) -> None:
    name, read, _ = READERS[kind]
    make = HOSTILE[hostile]
    folder = tmp_path / "web"
    folder.mkdir()
    make(folder / name)
    error = _finishes(lambda: read(folder / name))
    assert isinstance(error, InfraApplyError), error
    line = error.format()
    # user data resolves links first: /dev/zero is outside the root before it is a device
    assert "\n" not in line and ("not a regular file" in line or "outside the root" in line), line


@pytest.mark.parametrize("kind", sorted(READERS))
def test_every_reader_refuses_a_file_past_its_cap_in_one_line(tmp_path: Path, kind: str) -> None:
    name, read, size = READERS[kind]
    folder = tmp_path / "web"
    folder.mkdir()
    _sparse(size)(folder / name)
    error = _finishes(lambda: read(folder / name))
    assert isinstance(error, InfraApplyError), error
    line = error.format()
    assert "\n" not in line and ("larger than" in line or "over 64 KiB" in line), line


def test_a_local_state_that_is_a_device_or_fifo_counts_as_holding_resources(tmp_path: Path) -> None:
    for make in (_zero, _fifo, _sparse(fs.STATE_LIMIT + 1)):
        folder = tmp_path / make.__name__
        folder.mkdir()
        make(folder / "terraform.tfstate")
        outcome: list[bool] = []
        holds = terraform.local_state_has_resources
        assert _finishes(lambda f=folder, o=outcome, h=holds: o.append(h(f))) is None
        assert outcome == [True]  # never switch backends over a state nobody could read


def test_an_apply_journal_that_is_a_device_or_fifo_is_no_journal(tmp_path: Path) -> None:
    """The journal under the state dir is read like every other file: never blocking on it."""
    from infra_apply.plan import exists

    for make in (_zero, _fifo):
        folder = tmp_path / make.__name__
        folder.mkdir()
        make(folder / exists.JOURNAL)
        outcome: list[object] = []
        assert _finishes(lambda f=folder, o=outcome: o.append(exists.read_journal(f))) is None
        assert outcome == [None]


def test_read_bounded_reads_a_regular_file_and_follows_a_link_to_one(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"12345")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert fs.read_bounded(tmp_path / "link", 5) == b"12345"
    with pytest.raises(fs.FileTooLarge, match="larger than 4 bytes"):
        fs.read_bounded(tmp_path / "a", 4)
    with pytest.raises(fs.NotRegularFile, match=r"\(a folder\)"):
        fs.read_bounded(tmp_path, 4)
    with pytest.raises(FileNotFoundError):
        fs.read_bounded(tmp_path / "missing", 4)


def test_a_file_a_run_needs_that_is_a_fifo_is_one_located_error_not_a_hang(tmp_path: Path) -> None:
    """The working copy reads the imports file, the reviewed lock file and the CLI config a user
    may point anywhere: a FIFO there must not hang the run (read_bounded opens non-blocking)."""
    from infra_apply.errors import InfraApplyError
    from infra_apply.runtime.fs import read_or_fail

    fifo = tmp_path / "imports.tf"
    os.mkfifo(fifo)
    with pytest.raises(InfraApplyError) as err:
        read_or_fail(fifo)
    assert err.value.path == str(fifo) and "not a regular file" in err.value.message
