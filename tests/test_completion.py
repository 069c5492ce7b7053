"""completion: producer and droplet names for <Tab>, and the scripts for bash, zsh and fish."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.shell_completion import ShellComplete

from infra_apply.cli import cli
from tests.conftest import EXAMPLE_TREE, cli_env, run_cli, write_tree

CT = ["com.uvlava.ct.gpu", "com.uvlava.ct.redroid", "com.uvlava.ct.services"]
MC = ["com.uvlava.mc.services"]
QUINN = ["com.uvlava.dns", "com.uvlava.quinn.artifacts", "com.uvlava.quinn.mcp"]


def complete(*words: str, incomplete: str = "", root: Path = EXAMPLE_TREE) -> list[str]:
    """What click's completion protocol answers for ``infra-apply --root ROOT WORDS <Tab>``."""
    shell = ShellComplete(cli, {}, "infra-apply", "_INFRA_APPLY_COMPLETE")
    return [c.value for c in shell.get_completions(["--root", str(root), *words], incomplete)]


def test_producers_complete_from_the_roots_folders() -> None:
    assert complete("plan", "--producer") == ["ct", "mc", "quinn"]
    assert complete("apply", "--producer", incomplete="q") == ["quinn"]
    assert complete("register", "--producer", incomplete="@m") == ["mc"]
    for command in ("rename", "adopt"):
        assert complete(command, "--producer") == ["ct", "mc", "quinn"]


def test_droplet_names_complete_from_the_manifests() -> None:
    everything = complete("apply", "--producer", "ct", "--allow-destroy")
    assert everything == CT  # only ct's droplets once --producer ct is given
    assert complete("rename", "--producer", "quinn") == QUINN
    assert complete("apply", "--allow-replace", incomplete="com.uvlava.mc.") == MC
    assert complete("gpu", "up") == ["com.uvlava.ct.gpu"]  # GPU droplets only
    assert complete("gpu", "down") == ["com.uvlava.ct.gpu"]


def test_an_invalid_tree_still_completes(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "@ct/.infra.yaml": "droplets: [ {name: com.uvlava.ct.a, hosts: [a]}, ",  # broken YAML
            "@mc/.infra.yaml": {"droplets": [{"name": "com.uvlava.mc.b"}, {"oops": 1}, "x"]},
            "@quinn/app/.infra.yaml": {"service": {"gpu": {"mode": "on-demand"}}},
            "@quinn/node_modules/dep/.infra.yaml": {"droplets": [{"name": "com.uvlava.quinn.no"}]},
        },
    )
    (tmp_path / "@notes.txt").write_text("a file, not a producer")
    assert complete("plan", "--producer", root=tmp_path) == ["ct", "mc", "quinn"]
    assert complete("rename", "--producer", "mc", root=tmp_path) == ["com.uvlava.mc.b"]
    assert complete("gpu", "up", root=tmp_path) == ["com.uvlava.quinn.gpu"]


def test_the_protocol_through_the_real_entry_point(tmp_path: Path) -> None:
    env = cli_env(
        tmp_path,
        _INFRA_APPLY_COMPLETE="bash_complete",
        COMP_WORDS=f"infra-apply --root {EXAMPLE_TREE} rename --producer ct com.uvlava.ct.r",
        COMP_CWORD="6",
    )
    r = run_cli(env=env)
    assert (r.returncode, r.stdout.split()) == (0, ["plain,com.uvlava.ct.redroid"]), r.stderr


def bash_completions(tmp_path: Path, *words: str) -> list[str]:
    """Source ``infra-apply completion bash`` in a real bash and press <Tab> after WORDS."""
    script = run_cli("completion", "bash", env=cli_env(tmp_path)).stdout
    (tmp_path / "complete.bash").write_text(script)
    quoted = " ".join(f"'{w}'" for w in words)
    program = (
        f"source {tmp_path / 'complete.bash'}\n"
        f"COMP_WORDS=(infra-apply {quoted}); COMP_CWORD={len(words)}\n"
        "_infra_apply_completion infra-apply\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = cli_env(tmp_path, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completes_with_the_printed_script(tmp_path: Path) -> None:
    assert bash_completions(tmp_path, "--root", str(EXAMPLE_TREE), "plan", "--producer", "") == [
        "ct",
        "mc",
        "quinn",
    ]
    assert bash_completions(tmp_path, "--root", str(EXAMPLE_TREE), "com") == ["comment", "completion"]


@pytest.mark.parametrize(
    ("shell", "sign"),
    [
        ("bash", "complete -o nosort -F _infra_apply_completion infra-apply"),
        ("zsh", "#compdef infra-apply"),
        ("fish", "complete --no-files --command infra-apply"),
    ],
)
def test_scripts_are_for_the_right_shell(tmp_path: Path, shell: str, sign: str) -> None:
    r = run_cli("completion", shell, env=cli_env(tmp_path))
    assert r.returncode == 0 and sign in r.stdout
    assert f"_INFRA_APPLY_COMPLETE={shell}_complete" in r.stdout
    others = {"bash", "zsh", "fish"} - {shell}
    assert not any(f"{o}_complete" in r.stdout for o in others)
    if shell == "bash":
        check = subprocess.run(["bash", "-n"], input=r.stdout, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_unknown_shell_is_a_usage_error(tmp_path: Path) -> None:
    r = run_cli("completion", "tcsh", env=cli_env(tmp_path))
    assert r.returncode == 1 and "tcsh" in r.stderr and "Traceback" not in r.stderr
