"""End to end (real Terraform, the sandbox provider): local state follows the tree, not its
folder. A copied or re-cloned checkout with the same state dir finds the state its original
applied: it plans nothing and applies nothing new. Run with ``CI=true`` as the project's own CI
does: sandbox runs keep local state under CI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import stopping
from tests.e2e.test_e2e_sandbox import Ops
from tests.runtime.test_identity import GIT_ENV

MC = {"com.uvlava.mc.services"}


def git(cwd: Path, env: dict[str, str], *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)


@pytest.fixture
def ops(example: Path) -> Iterator[Ops]:
    ops = Ops(example)
    ops.env.update(GIT_ENV, CI="true", GIT_CONFIG_GLOBAL=str(example / "gitconfig"))
    git(ops.root, ops.env, "init", "-q", "-b", "main")
    git(ops.root, ops.env, "add", "-A")
    git(ops.root, ops.env, "commit", "-q", "-m", "the example tree")
    yield ops
    stopping.clean_up(ops)


def elsewhere(ops: Ops, root: Path) -> Ops:
    """The same state dir, cloud, --out and --mesh-hosts, another checkout of the tree."""
    other = Ops(ops.base)
    other.env = ops.env
    other.root = root
    return other


def test_a_copied_and_a_recloned_checkout_plan_and_apply_nothing_new(ops: Ops) -> None:
    code, _, err = ops.apply("mc")
    assert code == 0, err
    before = {name: d["id"] for name, d in ops.droplets().items()}
    assert set(before) == MC
    registry = ops.registry.read_bytes()

    moved = elsewhere(ops, ops.base / "moved" / "tree")
    shutil.copytree(ops.root, moved.root, symlinks=True)
    code, out, err = moved.sandbox("plan", "--producer", "mc")
    assert (code, "No changes." in out) == (0, True), out + err
    code, out, err = moved.apply("mc")
    assert code == 0, err
    assert {name: d["id"] for name, d in ops.droplets().items()} == before  # nothing created

    clone = elsewhere(ops, ops.base / "clone")
    git(ops.base, ops.env, "clone", "-q", str(ops.root), str(clone.root))
    code, out, err = clone.sandbox("plan", "--producer", "mc")
    assert (code, "No changes." in out) == (0, True), out + err
    # every checkout registers into the one sandbox registry of this tree
    assert clone.registry.read_bytes() == registry


def test_two_trees_kept_apart_never_work_on_one_producer_at_once(ops: Ops) -> None:
    """Copies outside git keep their state apart: each would find nothing of mc in the account
    and create it. While one run holds mc in this account, the other is refused before it plans."""
    apart = elsewhere(ops, ops.base / "apart")
    shutil.copytree(ops.root, apart.root, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from infra_apply.runtime.workcopy import lock_producer; "
            "lock = lock_producer(Path(sys.argv[1]), sys.argv[2], 'mc'); print('held', flush=True); "
            "sys.stdin.read()",
            str(ops.base / "state"),
            str(ops.cloud),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        code, _, err = apart.apply("mc")
        assert code == 1, err
        held_by = f"another infra-apply run (process {holder.pid}, since "
        what = "holds the lock on producer mc in the same account"
        assert held_by in err and f"; ps -p {holder.pid} shows it) {what}" in err
        assert ops.droplets() == {}  # nothing created
        code, _, err = apart.sandbox("plan", "--producer", "quinn")  # another producer: not held
        assert code == 2, err
    finally:
        holder.communicate("")
    code, _, err = apart.apply("mc")
    assert code == 0, err
    assert set(ops.droplets()) == MC
