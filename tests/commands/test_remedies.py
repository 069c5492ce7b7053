"""Every remedy a sandbox run prints carries --sandbox (without it the paste acts on the real
account, or finds no state at all); the same remedies of a live run do not."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra_apply.cloud.account import choose
from infra_apply.commands import adopt, apply, db_credentials, register
from infra_apply.errors import GuardRefused, InfraApplyError
from infra_apply.manifests.model import Database
from infra_apply.plan.takeover import parse_state
from infra_apply.report import GpuUp, PlanContext, gpu_sentence, producer_reports, verbs
from infra_apply.report.markdown import format_markdown
from infra_apply.report.text import format_text
from infra_apply.runtime import terraform as tf
from infra_apply.sandbox import cloud
from tests.commands.fakes import MC_MODEL, FakeTerminal, World
from tests.plan_fixtures import RESIZE_NAMES, parsed

MODES = pytest.mark.parametrize("sandbox", [True, False], ids=["sandbox", "live"])


def _commands(text: str) -> list[list[str]]:
    """Every ``infra-apply ...`` command in ``text`` up to a closing delimiter, as argv."""
    found = []
    for start in [i for i in range(len(text)) if text.startswith("infra-apply ", i)]:
        rest = text[start:]
        end = min(
            (
                rest.find(c)
                for c in ("`", ")", "\n", ", then", " to ", " leases", " releases")
                if rest.find(c) > 0
            ),
            default=len(rest),
        )
        found.append(shlex.split(rest[:end]))
    # commands only: not the comment's title or hidden marker ("infra-apply plan: commit=...")
    return [c for c in found if "--producer" in c or c[1:2] == ["gpu"]]


def _all_carry(text: str, sandbox: bool, verbs: set[str]) -> None:
    commands = _commands(text)
    assert {c[1] for c in commands} >= verbs, text
    for argv in commands:
        assert ("--sandbox" in argv) == sandbox, argv


@MODES
def test_plan_rename_hint_in_every_format(sandbox: bool) -> None:
    reports = producer_reports([parsed("name_drift")], stand_in=sandbox)
    context = PlanContext(sandbox, None, datetime(2026, 11, 29, tzinfo=UTC))
    _all_carry(format_text(reports), sandbox, {"rename"})
    _all_carry(format_markdown(reports, context), sandbox, {"rename"})


@MODES
def test_plan_guard_commands_in_the_comment(sandbox: bool) -> None:
    reports = producer_reports(
        [parsed("replace_delete"), parsed("resize_ports", names=RESIZE_NAMES)], stand_in=sandbox
    )
    context = PlanContext(sandbox, None, datetime(2026, 11, 29, tzinfo=UTC))
    body = format_markdown(reports, context)
    assert "--allow-replace" in body and "--allow-resize" in body
    _all_carry(body, sandbox, {"apply"})


@MODES
def test_a_gpu_up_without_a_lease_names_gpu_verbs_that_work(sandbox: bool) -> None:
    gpu = GpuUp("com.uvlava.ct.gpu", None, 3.39)
    text = gpu_sentence(gpu, sandbox)
    assert _commands(text) == [
        ["infra-apply", "gpu", verb, "com.uvlava.ct.gpu", *(["--sandbox"] if sandbox else [])]
        for verb in ("up", "down")
    ]


@MODES
def test_adopts_next_step(tmp_path: Path, sandbox: bool) -> None:
    world = World(tmp_path)
    path = tmp_path / "cloud.json"
    cloud.create_droplet(path, "com.uvlava.mc.services", region="fra1")
    done = adopt.adopt(world.context(sandbox=True), world.prepared(world.copy(), cloud=path))
    done = replace(done, keep=choose(sandbox).remedy_flags)
    text = verbs.adopt_text(done)
    assert _commands(text) == [
        ["infra-apply", verb, "--producer", "mc", *(["--sandbox"] if sandbox else [])]
        for verb in ("plan", "apply")
    ]


def test_adopt_from_states_next_step(tmp_path: Path) -> None:
    world = World(tmp_path)
    path = tmp_path / "cloud.json"
    cloud.seed(path, [])
    attrs = {
        "id": "4242",
        "name": "com.uvlava.mc.services",
        "region": "fra1",
        "image": "ubuntu-24-04-x64",
        "size": "s-2vcpu-4gb",
        "monitoring": False,
        "ipv6": False,
    }
    instance = {"schema_version": 1, "attributes": attrs}
    resource = {"mode": "managed", "type": "digitalocean_droplet", "name": "box", "instances": [instance]}
    old = parse_state(json.dumps({"version": 4, "resources": [resource]}), "old/terraform.tfstate")
    done = adopt.take_over(world.context(sandbox=True), world.prepared(world.copy(), cloud=path), old)
    text = adopt.output_takeover(done, "text").stdout
    assert _commands(text) == [["infra-apply", "apply", "--producer", "mc", "--sandbox"]]


@MODES
def test_applys_register_retry_keeps_sandbox_and_the_registry(tmp_path: Path, sandbox: bool) -> None:
    world = World(tmp_path)
    bad = {"droplets": {"com.uvlava.mc.services": {"id": "5001"}}}  # a hand-edited output
    copy = world.copy("create_producer", changed=True, outputs=bad)
    terminal = FakeTerminal(world.events, answer=True)
    with pytest.raises(InfraApplyError) as failed:
        apply.apply_producer(world.context(sandbox=sandbox), world.prepared(copy), terminal.terminal())
    [argv] = _commands(failed.value.message)
    mode = ["--sandbox"] if sandbox else []
    assert argv == [
        "infra-apply",
        "register",
        "--producer",
        "mc",
        "--mesh-hosts",
        str(world.mesh_path),
        *mode,
    ]


@MODES
def test_applys_unregistered_note_names_a_register_that_can_work(tmp_path: Path, sandbox: bool) -> None:
    world = World(tmp_path, "quinn", mesh=False)
    copy = world.copy("no_changes", changed=False)
    done = apply.apply_producer(
        world.context(sandbox=sandbox),
        world.prepared(copy),
        FakeTerminal(world.events, answer=True).terminal(),
    )
    [note] = apply.output(done).stderr
    mode = ["--sandbox"] if sandbox else []
    # register without a registry stops at once ("no mesh-hosts.json given"): the note names one
    assert _commands(note) == [
        ["infra-apply", "register", "--producer", "quinn", "--mesh-hosts", "FILE", *mode]
    ]


@MODES
def test_applys_refusal_of_a_gpu_without_a_lease(tmp_path: Path, sandbox: bool) -> None:
    world = World(tmp_path, "quinn")
    copy = world.copy("replace_delete", changed=True)
    gpu = GpuUp("com.uvlava.quinn.gpu", None, 3.39)
    options = apply.ApplyOptions(gpus_up=(gpu,))
    with pytest.raises(GuardRefused) as refused:
        apply.apply_producer(
            world.context(sandbox=sandbox),
            world.prepared(copy),
            FakeTerminal(world.events).terminal(),
            options,
        )
    mode = ["--sandbox"] if sandbox else []
    assert _commands(refused.value.message) == [
        ["infra-apply", "gpu", verb, "com.uvlava.quinn.gpu", *mode] for verb in ("up", "down")
    ]


@MODES
def test_register_before_any_apply_names_the_apply(tmp_path: Path, sandbox: bool) -> None:
    world = World(tmp_path)
    missing = tf.OutputMissing("output droplets", tmp_path, 'Error: Output "droplets" not found')
    prep = world.prepared(world.copy(fail={"output droplets": missing}))
    with pytest.raises(InfraApplyError) as failed:
        register.register(world.context(sandbox=sandbox), prep)
    assert _commands(failed.value.message) == [
        ["infra-apply", "apply", "--producer", "mc", *(["--sandbox"] if sandbox else [])]
    ]


@MODES
def test_db_credentials_before_any_apply_names_the_apply(tmp_path: Path, sandbox: bool) -> None:
    world = World(tmp_path)
    missing = tf.OutputMissing("output database_credentials", tmp_path, "No outputs found")
    cloud_file = tmp_path / "cloud.json" if sandbox else None
    prep = world.prepared(world.copy(fail={"output database_credentials": missing}), cloud=cloud_file)
    db = Database("uvlava-pg", "catalog", "catalog_app", "catalog", "prod", "mc", "@mc/catalog/.infra.yaml")
    prep = replace(prep, producer=replace(MC_MODEL, databases=(db,)))
    with pytest.raises(InfraApplyError) as failed:
        db_credentials.credentials(prep, "catalog", "prod", db_credentials.Target(tmp_path / "x"))
    assert _commands(failed.value.message) == [
        ["infra-apply", "apply", "--producer", "mc", *(["--sandbox"] if sandbox else [])]
    ]


@MODES
def test_a_gpu_cost_line_without_a_lease_names_gpu_verbs_that_work(sandbox: bool) -> None:
    from infra_apply.plan.cost import GpuCost
    from infra_apply.report.cost import gpu_cost_sentence

    gpu = GpuCost("digitalocean_droplet.g[0]", "com.uvlava.ct.gpu", "gpu-h100x1-80gb", None, None, None)
    assert _commands(gpu_cost_sentence(gpu, str, sandbox)) == [
        ["infra-apply", "gpu", verb, "com.uvlava.ct.gpu", *(["--sandbox"] if sandbox else [])]
        for verb in ("up", "down")
    ]
