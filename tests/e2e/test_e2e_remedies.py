"""Remedies a sandbox run prints, run exactly as printed (real Terraform, the sandbox provider):
each acts on the sandbox, never on the real account (which, with no token, would stop them)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra_apply.sandbox import cloud
from tests import stopping
from tests.conftest import run_cli
from tests.e2e.test_e2e_sandbox import Ops


@pytest.fixture
def ops(example: Path) -> Iterator[Ops]:
    ops = Ops(example)
    yield ops
    stopping.clean_up(ops)


def printed(ops: Ops, command: str, *extra: str) -> tuple[int, str, str]:
    """Run ``command`` as printed: the root, the registry and --out come from the environment
    and the working folder, as for an operator in the tree (``extra``: what no terminal needs)."""
    argv = shlex.split(command)
    assert argv[0] == "infra-apply"
    env = {**ops.env, "INFRA_APPLY_ROOT": str(ops.root), "INFRA_APPLY_MESH_HOSTS": str(ops.mesh)}
    r = run_cli(*argv[1:], *extra, env=env, cwd=ops.out.parent)  # --out: ./generated
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout, r.stderr


def test_plans_rename_hint_renames_the_sandbox_droplet(ops: Ops) -> None:
    assert ops.apply("ct")[0] == 0
    old_id = ops.droplets()["com.uvlava.ct.services"]["id"]
    ops.edit("@ct/.infra.yaml", "com.uvlava.ct.services", "com.uvlava.ct.apps")
    assert run_cli("--root", str(ops.root), "render", "--out", str(ops.out), env=ops.env).returncode == 0
    code, out, _ = ops.sandbox("plan", "--producer", "ct")
    assert code == 0, out
    [hint] = re.findall(r"run (infra-apply rename .*)$", out, re.MULTILINE)
    code, _, err = printed(ops, hint)
    assert code == 0, err
    assert ops.droplets()["com.uvlava.ct.apps"]["id"] == old_id


def test_adopts_next_steps_take_the_sandbox_droplet_over(ops: Ops) -> None:
    ops.sandbox("plan", "--producer", "mc")  # installs the sandbox and its cloud
    made = cloud.create_droplet(ops.cloud, "com.uvlava.mc.services", region="fra1", size="s-2vcpu-4gb")
    code, out, err = ops.sandbox("adopt", "--producer", "mc")
    assert code == 0, err
    [(plan, apply)] = re.findall(r"run (infra-apply plan .*), then (infra-apply apply .*) to take", out)
    code, out, err = printed(ops, plan)
    assert code == 2, err
    assert "1 to import" in out
    code, _, err = printed(ops, apply, "--auto-approve")  # no terminal to confirm on
    assert code == 0, err
    assert [d["id"] for d in cloud.list_droplets(ops.cloud)] == [made["id"]]


def test_a_remedy_printed_under_root_carries_it(ops: Ops) -> None:
    """``--root`` on the command line is repeated in the remedy: pasted in the same folder it acts
    on that tree, not on whatever tree the folder holds (a guard's --allow-replace included)."""
    ops.sandbox("plan", "--producer", "mc")  # installs the sandbox and its cloud
    made = cloud.create_droplet(ops.cloud, "com.uvlava.mc.services", region="fra1", size="s-2vcpu-4gb")
    code, _, err = ops.run("--root", str(ops.root), "plan", "--producer", "mc", "--sandbox")
    assert code == 1, err
    [adopt] = set(re.findall(r"take it over with (infra-apply .*?--sandbox) \(", err))
    assert adopt == f"infra-apply --root {ops.root} adopt --producer mc --sandbox"
    r = run_cli(*shlex.split(adopt)[1:], env=ops.env, cwd=ops.base)  # the folder above the tree
    assert r.returncode == 0, r.stderr
    assert f"<- droplet {made['id']} (com.uvlava.mc.services)" in r.stdout
    assert f"infra-apply --root {ops.root} plan --producer mc --sandbox" in r.stdout


def test_a_remedy_carries_the_registry_and_out_given_on_the_command_line(ops: Ops) -> None:
    """``--mesh-hosts`` and ``--out`` given on the command line are repeated like ``--root``:
    pasted in a shell without INFRA_APPLY_MESH_HOSTS, the remedy registers into the same file
    and plans the same generated folder, not the default ones. Given relative, they are repeated
    from the folder the run was started in: pasted in another folder, they name the same files."""
    ops.sandbox("plan", "--producer", "mc")  # installs the sandbox and its cloud
    made = cloud.create_droplet(ops.cloud, "com.uvlava.mc.services", region="fra1", size="s-2vcpu-4gb")
    env = {k: v for k, v in ops.env.items() if k not in ("INFRA_APPLY_MESH_HOSTS", "INFRA_APPLY_OUT")}
    given = ("--root", "tree", "--mesh-hosts", "mesh-hosts.json")
    r = run_cli(*given, "plan", "--producer", "mc", "--sandbox", "--out", "generated", env=env, cwd=ops.base)
    assert r.returncode == 1, r.stderr
    [adopt] = set(re.findall(r"take it over with (infra-apply .*?--sandbox) \(", r.stderr))
    assert adopt == (
        f"infra-apply --root {ops.root} adopt --producer mc --mesh-hosts {ops.mesh} --out {ops.out} --sandbox"
    )
    elsewhere = ops.base / "elsewhere"
    elsewhere.mkdir()
    r = run_cli(*shlex.split(adopt)[1:], env=env, cwd=elsewhere)  # no generated/ here
    assert r.returncode == 0, r.stderr
    assert f"<- droplet {made['id']} (com.uvlava.mc.services)" in r.stdout
    [apply] = re.findall(r"then (infra-apply .*? apply .*?--sandbox) to take", r.stdout)
    assert f"--mesh-hosts {ops.mesh}" in apply and f"--out {ops.out}" in apply
    r = run_cli(*shlex.split(apply)[1:], "--auto-approve", env=env, cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert not (elsewhere / "generated").exists()
    assert [d["id"] for d in cloud.list_droplets(ops.cloud)] == [made["id"]]
