"""apply's order of effects, against a fake working copy and a scripted terminal:
plan -> show -> guard -> confirm -> apply -> register, and every way it stops before applying."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra_apply.commands import apply
from infra_apply.errors import ExitCode, GuardRefused, InfraApplyError, TerraformError
from infra_apply.runtime import terraform as tf
from tests.commands.fakes import FakeTerminal, Ticks, World, droplets_output
from tests.plan_fixtures import RESIZE_NAMES

# What every apply does before it may ask: init, a saved plan, its show -json, the plan shown.
PLANNED = ["init", "plan", "show", "report"]
MC_OUTPUT = {"droplets": droplets_output("mc", "com.uvlava.mc.services", ["mc-web"])}


def hosts(world: World) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = json.loads(world.mesh_path.read_text())["hosts"]
    return found


def test_a_plan_with_changes_is_shown_confirmed_applied_then_registered(tmp_path: Path) -> None:
    world = World(tmp_path)
    copy = world.copy("create_producer", changed=True, outputs=MC_OUTPUT)
    terminal = FakeTerminal(world.events, answer=True)
    done = apply.apply_producer(world.context(), world.prepared(copy), terminal.terminal())
    assert world.events == [*PLANNED, "confirm", "apply", "echo", "init", "output droplets"]
    assert done.applied and done.registration is not None
    assert "create  com.uvlava.mc.services" in terminal.shown[0]
    assert terminal.shown[1] == "Apply complete! Resources: 1 added, 0 changed, 0 destroyed.\n"
    assert hosts(world)["mc-web"]["droplet_id"] == "5001"
    out = apply.output(done)
    assert out.stdout.splitlines()[0] == "mc: applied" and "+ mc-web 10.9.0." in out.stdout
    assert (out.stderr, out.code) == ((), ExitCode.OK)
    assert "mc: terraform apply (the saved plan shown above)" in world.said


def test_apply_and_register_say_how_long_they_took(tmp_path: Path) -> None:
    world = World(tmp_path)
    copy = world.copy("create_producer", changed=True, outputs=MC_OUTPUT)
    clock = Ticks(0.0, 2.0, 2.0, 2.3, 5.0, 46.0, 46.0, 46.2)  # plan, show, apply, register
    terminal = FakeTerminal(world.events, answer=True)
    apply.apply_producer(world.context(clock=clock), world.prepared(copy), terminal.terminal())
    assert world.said == [
        "mc: terraform plan",
        "mc: plan done in 2.0s (changes)",
        "mc: show done in 0.3s (4 to create)",
        "mc: terraform apply (the saved plan shown above)",
        "mc: apply done in 41.0s",
        "mc: register done in 0.2s (1 host change)",
    ]


def test_a_guard_refusal_never_reaches_confirm_or_apply(tmp_path: Path) -> None:
    world = World(tmp_path, "quinn")
    before = world.mesh_path.read_bytes()
    copy = world.copy("replace_delete", changed=True)
    terminal = FakeTerminal(world.events, answer=True)
    with pytest.raises(GuardRefused) as refused:
        apply.apply_producer(world.context(), world.prepared(copy), terminal.terminal())
    assert world.events == PLANNED  # shown (so the operator sees why), then refused
    assert refused.value.exit_code == ExitCode.REFUSED
    assert "--allow-replace com.uvlava.quinn.artifacts" in refused.value.message
    assert "--allow-destroy com.uvlava.quinn.mcp" in refused.value.message
    assert world.mesh_path.read_bytes() == before


def test_what_the_guard_allows_is_confirmed_and_applied(tmp_path: Path) -> None:
    world = World(tmp_path, "quinn", mesh=False)
    copy = world.copy("replace_delete", changed=True)
    allow = apply.ApplyOptions(
        allow_destroy=("forge", "com.uvlava.quinn.mcp", "typo"), allow_replace=("com.uvlava.quinn.artifacts",)
    )
    terminal = FakeTerminal(world.events, answer=True)
    done = apply.apply_producer(world.context(), world.prepared(copy), terminal.terminal(), allow)
    assert world.events == [*PLANNED, "confirm", "apply", "echo"]
    assert done.applied and done.registration is None and done.registry is None
    unused = "infra-apply: warning: --allow-destroy typo matches no deletion in the plan for quinn"
    assert unused in world.said
    out = apply.output(done)
    assert out.stdout == "quinn: applied\n"
    assert out.stderr == (
        "infra-apply: no --mesh-hosts given; hosts not registered "
        "(run infra-apply register --producer quinn --mesh-hosts FILE)",
    )


def test_a_declined_confirmation_never_applies(tmp_path: Path) -> None:
    world = World(tmp_path)
    before = world.mesh_path.read_bytes()
    copy = world.copy("create_producer", changed=True, outputs=MC_OUTPUT)
    terminal = FakeTerminal(world.events, answer=False)
    with pytest.raises(InfraApplyError, match="apply cancelled; nothing was changed"):
        apply.apply_producer(world.context(), world.prepared(copy), terminal.terminal())
    assert world.events == [*PLANNED, "confirm"]
    assert world.mesh_path.read_bytes() == before


def test_without_a_terminal_only_auto_approve_applies(tmp_path: Path) -> None:
    world = World(tmp_path)
    copy = world.copy("create_producer", changed=True, outputs=MC_OUTPUT)
    no_terminal = FakeTerminal(world.events, answer=None).terminal()
    with pytest.raises(InfraApplyError, match=r"without a terminal to confirm on.*--auto-approve"):
        apply.apply_producer(world.context(), world.prepared(copy), no_terminal)
    assert world.events == PLANNED
    world.events.clear()
    approved = apply.ApplyOptions(auto_approve=True)
    apply.apply_producer(world.context(), world.prepared(copy), no_terminal, approved)
    assert world.events == [*PLANNED, "apply", "echo", "init", "output droplets"]


def test_nothing_to_change_never_asks_and_never_applies(tmp_path: Path) -> None:
    world = World(tmp_path, "quinn")
    live = droplets_output("quinn", "com.uvlava.quinn.artifacts", ["forge", "registry"], "4123")
    output = {"droplets": live}
    copy = world.copy("no_changes", changed=False, outputs=output)
    terminal = FakeTerminal(world.events, answer=True)
    done = apply.apply_producer(world.context(), world.prepared(copy), terminal.terminal())
    assert world.events == [*PLANNED, "init", "output droplets"]  # hosts still registered
    assert not done.applied
    assert apply.output(done).stdout.splitlines()[0] == "quinn: nothing to apply"


def test_a_failed_apply_raises_with_terraforms_message_and_registers_nothing(tmp_path: Path) -> None:
    world = World(tmp_path)
    before = world.mesh_path.read_bytes()
    failure = tf.CommandFailed("apply", tmp_path, "Error: 422 droplet limit reached")
    copy = world.copy("create_producer", changed=True, outputs=MC_OUTPUT, fail={"apply": failure})
    terminal = FakeTerminal(world.events, answer=True)
    with pytest.raises(TerraformError) as failed:
        apply.apply_producer(world.context(), world.prepared(copy), terminal.terminal())
    assert world.events == [*PLANNED, "confirm", "apply"]
    assert failed.value.message == (
        "terraform apply failed for producer mc:\nError: 422 droplet limit reached\n"
        "State holds what was created before the failure; fix the cause and rerun."
    )
    assert world.mesh_path.read_bytes() == before


def test_a_failed_registration_says_the_apply_went_through(tmp_path: Path) -> None:
    world = World(tmp_path)
    bad = {"droplets": {"com.uvlava.mc.services": {"id": "5001"}}}  # a hand-edited output
    copy = world.copy("create_producer", changed=True, outputs=bad)
    terminal = FakeTerminal(world.events, answer=True)
    with pytest.raises(InfraApplyError) as failed:
        apply.apply_producer(world.context(), world.prepared(copy), terminal.terminal())
    assert world.events[-3:] == ["echo", "init", "output droplets"]
    assert failed.value.message.startswith("mc: applied, but registering its hosts failed: ")
    retry = f"run infra-apply register --producer mc --mesh-hosts {world.mesh_path}"
    assert failed.value.message.endswith(retry)


def test_a_terraform_failure_before_the_apply_stops_everything(tmp_path: Path) -> None:
    world = World(tmp_path)
    failure = tf.CommandFailed("plan", tmp_path, "Error: Invalid provider configuration")
    copy = world.copy("create_producer", changed=True, fail={"plan": failure})
    terminal = FakeTerminal(world.events, answer=True)
    with pytest.raises(TerraformError, match="terraform plan failed"):
        apply.apply_producer(world.context(), world.prepared(copy), terminal.terminal())
    assert world.events == ["init", "plan"]


def test_an_in_place_resize_needs_its_own_allowance(tmp_path: Path) -> None:
    world = World(tmp_path, "quinn", mesh=False)
    copy = world.copy("resize_ports", changed=True)
    prep = world.prepared(copy, names=RESIZE_NAMES)
    terminal = FakeTerminal(world.events, answer=True)
    wrong_flag = apply.ApplyOptions(allow_replace=("com.uvlava.dns",))
    with pytest.raises(GuardRefused, match=r"--allow-resize com\.uvlava\.dns"):
        apply.apply_producer(world.context(), prep, terminal.terminal(), wrong_flag)
    assert world.events == PLANNED
    world.events.clear()
    allowed = apply.ApplyOptions(allow_resize=("com.uvlava.dns",))
    assert apply.apply_producer(world.context(), prep, terminal.terminal(), allowed).applied
    assert world.events == [*PLANNED, "confirm", "apply", "echo"]


def test_a_gpu_verb_plans_only_its_own_resources_and_applies_nothing_else(tmp_path: Path) -> None:
    # gpu up / down / reap may change the GPU's own droplet and firewall only: a timer's reap
    # must never apply a change nobody reviewed. The plan is targeted at them; whatever else a
    # targeted plan still holds (what they depend on) is refused.
    world = World(tmp_path)
    copy = world.copy("create_producer", changed=True, outputs=MC_OUTPUT)
    terminal = FakeTerminal(world.events, answer=True)
    gpu_only = apply.ApplyOptions(auto_approve=True, only=frozenset({"digitalocean_droplet.mc_gpu"}))
    with pytest.raises(GuardRefused) as refused:
        apply.apply_producer(world.context(), world.prepared(copy), terminal.terminal(), gpu_only)
    assert world.events == PLANNED
    assert copy.targets[-1] == ("digitalocean_droplet.mc_gpu",)
    assert refused.value.message.startswith("producer mc: the GPU's plan also changes ")
    assert "digitalocean_droplet.mc_services" in refused.value.message
    # the same plan with every one of its resources allowed is applied
    world.events.clear()
    everything = frozenset(
        c.base_address for c in apply.plan_one(world.prepared(copy), world.said.append).plan.changes
    )
    world.events.clear()
    done = apply.apply_producer(
        world.context(),
        world.prepared(copy),
        terminal.terminal(),
        apply.ApplyOptions(auto_approve=True, only=everything),
    )
    assert done.applied and "apply" in world.events
