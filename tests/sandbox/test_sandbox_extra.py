"""The sandbox as an extra (infra_apply/sandbox/extra.py): without ``infra-apply[sandbox]``,
``--sandbox`` is one line naming the extra, and everything else still works.

"Not installed" is simulated in a real CLI process: a ``None`` entry in ``sys.modules`` is what
Python itself uses to refuse an import, and ``find_spec`` reports such a module as absent.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

import pytest

from infra_apply.errors import InfraApplyError
from infra_apply.sandbox import extra
from tests.conftest import cli_env

WITHOUT = """
import sys
for name in sys.argv.pop(1).split(","):
    sys.modules[name] = None
from infra_apply.cli import main
main()
"""

SANDBOX_COMMANDS = [
    ("plan",),
    ("apply", "--producer", "quinn", "--auto-approve"),
    ("register", "--producer", "quinn"),
    ("rename", "--producer", "ct", "com.uvlava.ct.apps"),
    ("adopt", "--producer", "mc"),
]


def run_without(modules: tuple[str, ...], example: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, ",".join(modules), "--root", str(example / "tree"), *args],
        capture_output=True,
        text=True,
        env=cli_env(example),
        cwd=example,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize("command", SANDBOX_COMMANDS, ids=[c[0] for c in SANDBOX_COMMANDS])
def test_sandbox_without_its_extra_is_one_line_naming_it(command: tuple[str, ...], example: Path) -> None:
    shutil.rmtree(example / "state")  # no sandbox account yet (the example fixture seeds one)
    mesh = str(example / "mesh-hosts.json")
    result = run_without(("tf",), example, *command, "--sandbox", "--mesh-hosts", mesh)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "infra-apply: error: --sandbox needs the sandbox extra (tf not installed): "
        "pip install 'infra-apply[sandbox]'\n"
    )
    # Refused before any work: no sandbox, working copy or registry copy was made.
    assert not (example / "state").exists()


def test_the_message_names_every_missing_module(example: Path) -> None:
    result = run_without(extra.MODULES, example, "plan", "--sandbox")
    assert result.returncode == 1
    assert "(tf, grpc, cryptography not installed)" in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "command",
    [("validate",), ("render", "--check", "--out", "generated"), ("schema",), ("--help",)],
    ids=lambda c: c[0],
)
def test_the_runtime_needs_no_sandbox_extra(command: tuple[str, ...], example: Path) -> None:
    result = run_without(extra.MODULES, example, *command)
    assert result.returncode == 0, result.stderr


class _Refusing(MetaPathFinder):
    """A finder that refuses a name outright (as some import hooks do) instead of passing."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name == "cryptography":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def test_missing_finds_without_importing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert extra.missing() == []
    monkeypatch.setitem(sys.modules, "grpc", None)
    monkeypatch.delitem(sys.modules, "cryptography", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_Refusing(), *sys.meta_path])
    assert extra.missing() == ["grpc", "cryptography"]
    with pytest.raises(InfraApplyError, match=r"^--sandbox needs the sandbox extra \(grpc, cryptography"):
        extra.require()
