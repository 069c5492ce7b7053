"""End to end with real Terraform and the sandbox provider on (a copy of) the example tree."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra_apply.runtime import terraform as tf
from infra_apply.runtime.identity import identify
from infra_apply.sandbox import cloud
from tests import stopping
from tests.conftest import cli_env, run_cli

QUINN = {"com.uvlava.dns", "com.uvlava.quinn.artifacts", "com.uvlava.quinn.mcp"}


class Ops:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "tree"
        self.mesh = base / "mesh-hosts.json"
        self.out = base / "generated"
        self.env = cli_env(base)
        self.cloud = base / "state" / "sandbox" / "cloud.json"

    def run(self, *args: str, **env: str) -> tuple[int, str, str]:
        # The root as an operator in the tree has it (not --root, which every remedy repeats)
        r = run_cli(*args, env={**self.env, "INFRA_APPLY_ROOT": str(self.root), **env})
        assert "Traceback" not in r.stderr, r.stderr
        return r.returncode, r.stdout, r.stderr

    def sandbox(self, command: str, *args: str) -> tuple[int, str, str]:
        # The registry and --out from the environment too: given on the command line, every
        # remedy would repeat them (tests/e2e/test_e2e_remedies.py shows that).
        where = {"INFRA_APPLY_OUT": str(self.out), "INFRA_APPLY_MESH_HOSTS": str(self.mesh)}
        return self.run(command, *args, "--sandbox", **where)

    def apply(self, producer: str, *args: str) -> tuple[int, str, str]:
        return self.sandbox("apply", "--producer", producer, "--auto-approve", *args)

    def droplets(self) -> dict[str, dict[str, object]]:
        return {d["name"]: d for d in cloud.list_droplets(self.cloud)}

    @property
    def registry(self) -> Path:
        """Sandbox runs register into a copy under the state dir, never into --mesh-hosts."""
        key = identify(self.root, self.env).key
        return self.base / "state" / "sandbox" / "mesh" / key / "mesh-hosts.json"

    def hosts(self) -> dict[str, dict[str, str]]:
        hosts: dict[str, dict[str, str]] = json.loads(self.registry.read_text())["hosts"]
        return hosts

    def snapshot(self, folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    def edit(self, rel: str, old: str, new: str) -> None:
        path = self.root / rel
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))


@pytest.fixture
def ops(example: Path) -> Iterator[Ops]:
    ops = Ops(example)
    yield ops
    stopping.clean_up(ops)


def test_apply_one_producer_then_no_changes(ops: Ops) -> None:
    generated, mesh = ops.snapshot(ops.out), ops.mesh.read_bytes()
    code, out, err = ops.apply("quinn")
    assert code == 0, err
    assert "quinn: applied" in out
    assert set(ops.droplets()) == QUINN  # ct and mc untouched
    code, out, _ = ops.sandbox("plan", "--producer", "quinn")
    assert (code, "No changes." in out) == (0, True)
    code, out, _ = ops.sandbox("plan", "--producer", "ct", "--format", "json")
    doc = json.loads(out)
    assert code == 2 and doc["producers"]["ct"]["counts"]["create"] > 0
    # every quinn host is registered with the sandbox's addresses
    live = ops.droplets()
    for host, name in (
        ("dns", "com.uvlava.dns"),
        ("forge", "com.uvlava.quinn.artifacts"),
        ("registry", "com.uvlava.quinn.artifacts"),
        ("mcp", "com.uvlava.quinn.mcp"),
    ):
        entry = ops.hosts()[host]
        assert entry["droplet"] == name
        assert entry["public_ip"] == live[name]["ipv4_address"]
        assert entry["droplet_id"] == str(live[name]["id"])
    assert ops.hosts()["forge"]["mesh_ip"] == "10.9.0.6"  # existing entry keeps its address
    assert ops.hosts()["registry"]["mesh_ip"] == "10.9.0.6"  # shared by the droplet's hosts
    # the sandbox never writes generated/ (not even a lock file) nor the operator's mesh-hosts.json
    assert ops.snapshot(ops.out) == generated
    assert ops.mesh.read_bytes() == mesh


def test_removing_a_droplet_is_refused_until_allowed(ops: Ops) -> None:
    assert ops.apply("quinn")[0] == 0
    manifest = ops.root / "@quinn/.infra.yaml"
    text = manifest.read_text()
    start = text.index("  - name: com.uvlava.quinn.mcp")
    end = text.index("  - name: com.uvlava.dns")
    manifest.write_text(text[:start] + text[end:])
    code, _, err = ops.apply("quinn")
    assert code == 3
    assert "com.uvlava.quinn.mcp" in err and "--allow-destroy" in err
    assert "com.uvlava.quinn.mcp" in ops.droplets()
    assert "mcp" in ops.hosts()
    code, _, err = ops.apply("quinn", "--allow-destroy", "com.uvlava.quinn.mcp")
    assert code == 0, err
    assert "com.uvlava.quinn.mcp" not in ops.droplets()
    assert "mcp" not in ops.hosts()
    assert {"forge", "dns", "registry"} <= set(ops.hosts())


def test_region_change_is_refused_as_a_replacement(ops: Ops) -> None:
    assert ops.apply("mc")[0] == 0
    ops.edit("@mc/.infra.yaml", "region: fra1", "region: ams3")
    code, out, _ = ops.sandbox("plan", "--producer", "mc")
    assert code == 2 and re.search(r"replace\s+com\.uvlava\.mc\.services", out)
    code, _, err = ops.apply("mc")
    assert code == 3 and "--allow-replace com.uvlava.mc.services" in err
    assert ops.droplets()["com.uvlava.mc.services"]["region"] == "fra1"


def test_resize_is_refused_until_allowed_then_applied_in_place(ops: Ops) -> None:
    name = "com.uvlava.mc.services"
    assert ops.apply("mc")[0] == 0
    before, mesh = ops.droplets()[name], ops.hosts()
    ops.edit("@mc/.infra.yaml", "    region: fra1\n", "    region: fra1\n    size: s-4vcpu-8gb\n")
    code, out, _ = ops.sandbox("plan", "--producer", "mc")
    assert code == 2, out
    assert re.search(rf"resize\s+{re.escape(name)} .*downtime.*can never be shrunk back", out)
    # The wrong flag neither allows it nor goes unnoticed.
    code, _, err = ops.apply("mc", "--allow-replace", name)
    assert code == 3, err
    assert f"rerun with --allow-resize {name}" in err and "downtime" in err
    assert f"it is resized: use --allow-resize {name}" in err
    assert ops.droplets()[name]["size"] == before["size"]
    code, out, err = ops.apply("mc", "--allow-resize", name)
    assert code == 0, err
    after = ops.droplets()[name]
    assert (after["id"], after["size"]) == (before["id"], "s-4vcpu-8gb")
    assert int(str(after["disk"])) > int(str(before["disk"]))  # the one-way growth
    assert ops.hosts() == mesh  # same machine: its registry entries are untouched
    assert ops.sandbox("plan", "--producer", "mc")[0] == 0


def test_a_replaced_droplet_keeps_its_mesh_ip_and_the_run_says_replaced(ops: Ops) -> None:
    name = "com.uvlava.mc.services"
    assert ops.apply("mc")[0] == 0
    old = ops.hosts()["mint"]
    ops.edit("@mc/.infra.yaml", "region: fra1", "region: ams3")
    code, out, err = ops.apply("mc", "--allow-replace", name)
    assert code == 0, err
    new_id = str(ops.droplets()[name]["id"])
    assert new_id != old["droplet_id"]
    for host in ("mint", "mc-web"):
        entry = ops.hosts()[host]
        assert (entry["mesh_ip"], entry["droplet_id"]) == (old["mesh_ip"], new_id)
        assert entry["region"] == "ams3"
        assert f"~ {host} {old['mesh_ip']} ({name}) replaced, mesh IP kept: " in out


def test_register_json_says_replaced_for_a_host_whose_droplet_id_changed(ops: Ops) -> None:
    # The example registry records forge as droplet 4123; the sandbox's artifacts droplet is
    # another machine of the same name. Applied without --mesh-hosts: nothing registered yet.
    code, _, err = ops.run(
        "apply", "--producer", "quinn", "--auto-approve", "--sandbox", "--out", str(ops.out)
    )
    assert code == 0, err
    code, out, err = ops.sandbox("register", "--producer", "quinn", "--format", "json")
    assert code == 0, err
    changes = {c["host"]: c for c in json.loads(out)["changes"]}
    assert (changes["forge"]["change"], changes["forge"]["mesh_ip"]) == ("replaced", "10.9.0.6")
    assert "droplet_id" in changes["forge"]["fields"]
    assert changes["mcp"]["change"] == "added"
    assert ops.hosts()["forge"]["mesh_ip"] == "10.9.0.6"


def test_name_edit_plans_nothing_reports_drift_and_rename_fixes_it(ops: Ops) -> None:
    assert ops.apply("ct")[0] == 0
    old_id = ops.droplets()["com.uvlava.ct.services"]["id"]
    ops.edit("@ct/.infra.yaml", "com.uvlava.ct.services", "com.uvlava.ct.apps")
    assert run_cli("--root", str(ops.root), "render", "--out", str(ops.out), env=ops.env).returncode == 0
    assert 'resource "digitalocean_droplet" "ct_services"' in (ops.out / "ct/droplets.tf").read_text()
    code, out, _ = ops.sandbox("plan", "--producer", "ct")
    assert code == 0, out
    assert "name drift" in out and "com.uvlava.ct.apps" in out and "com.uvlava.ct.services" in out
    code, out, _ = ops.sandbox("plan", "--producer", "ct", "--format", "json")
    drift = json.loads(out)["producers"]["ct"]["drift"]
    assert [(d["live_name"], d["manifest_name"]) for d in drift] == [
        ("com.uvlava.ct.services", "com.uvlava.ct.apps")
    ]
    assert "name drift" in ops.sandbox("plan", "--producer", "ct", "--format", "markdown")[1].lower()
    code, out, err = ops.sandbox("rename", "--producer", "ct", "com.uvlava.ct.apps")
    assert code == 0, err
    live = ops.droplets()
    assert "com.uvlava.ct.apps" in live and live["com.uvlava.ct.apps"]["id"] == old_id
    assert ops.hosts()["lime"]["droplet"] == "com.uvlava.ct.apps"
    code, out, _ = ops.sandbox("plan", "--producer", "ct")
    assert code == 0 and "drift" not in out


def test_adopt_imports_an_existing_droplet_without_replacing_it(ops: Ops) -> None:
    ops.sandbox("plan", "--producer", "mc")  # installs the sandbox and its cloud
    made = cloud.create_droplet(ops.cloud, "com.uvlava.mc.services", region="fra1", size="s-2vcpu-4gb")
    code, out, err = ops.sandbox("adopt", "--producer", "mc")
    assert code == 0, err
    assert f"droplet {made['id']}" in out
    code, out, _ = ops.sandbox("plan", "--producer", "mc", "--format", "json")
    counts = json.loads(out)["producers"]["mc"]["counts"]
    assert counts["import"] == 1 and counts["replace"] == 0 and counts["delete"] == 0
    assert ops.apply("mc")[0] == 0
    assert [d["id"] for d in cloud.list_droplets(ops.cloud)] == [made["id"]]
    assert ops.sandbox("plan", "--producer", "mc")[0] == 0


def test_every_producer_applied_registers_every_host(ops: Ops) -> None:
    for producer in ("ct", "mc", "quinn"):
        code, _, err = ops.apply(producer)
        assert code == 0, err
    live = ops.droplets()
    hosts = ops.hosts()
    for host in ("lime", "redroid", "mint", "mc-web", "forge", "registry", "mcp", "dns"):
        assert hosts[host]["public_ip"] == live[hosts[host]["droplet"]]["ipv4_address"]
    mesh_ips = [h["mesh_ip"] for name, h in hosts.items()]
    per_droplet = {h.get("droplet") or name: h["mesh_ip"] for name, h in hosts.items()}
    assert len(set(mesh_ips)) == len(per_droplet)
    assert ops.sandbox("plan")[0] == 0


def test_apply_without_a_terminal_needs_auto_approve(ops: Ops) -> None:
    code, _, err = ops.sandbox("apply", "--producer", "quinn")
    assert code == 1 and "--auto-approve" in err
    assert ops.droplets() == {}


def test_register_on_demand_dry_run_then_idempotent(ops: Ops) -> None:
    code, _, err = ops.run(
        "apply", "--producer", "quinn", "--auto-approve", "--sandbox", "--out", str(ops.out)
    )
    assert code == 0 and "hosts not registered" in err
    before = ops.mesh.read_bytes()
    code, out, _ = ops.sandbox("register", "--producer", "quinn", "--dry-run")
    assert code == 0 and '+    "mcp": {' in out and out.startswith("---")
    assert ops.registry.read_bytes() == before
    code, out, _ = ops.sandbox("register", "--producer", "quinn")
    assert code == 0 and "+ mcp 10.9.0." in out
    after = ops.registry.read_bytes()
    assert after != before
    code, out, _ = ops.sandbox("register", "--producer", "quinn")
    assert code == 0 and "already up to date" in out
    assert ops.registry.read_bytes() == after


def test_register_before_any_apply_says_so(ops: Ops) -> None:
    code, _, err = ops.sandbox("register", "--producer", "quinn")
    assert code == 1 and "no applied state" in err and "apply it first" in err


def test_failed_apply_keeps_state_and_a_rerun_converges(ops: Ops) -> None:
    ops.sandbox("plan", "--producer", "quinn")  # creates the sandbox cloud
    cloud.inject_faults(ops.cloud, fail_create=["com.uvlava.quinn.mcp"], message="422 droplet limit reached")
    code, _, err = ops.apply("quinn")
    assert code == 1
    assert "422 droplet limit reached" in err and "rerun" in err and "Traceback" not in err
    assert set(ops.droplets()) == QUINN - {"com.uvlava.quinn.mcp"}
    cloud.inject_faults(ops.cloud)
    code, out, err = ops.apply("quinn")
    assert code == 0, err
    assert "create  com.uvlava.quinn.mcp (digitalocean_droplet.quinn_mcp)" in out
    assert "create  com.uvlava.dns" not in out  # what the failed run created stays as it is
    assert sorted(d["name"] for d in cloud.list_droplets(ops.cloud)) == sorted(QUINN)
    assert ops.sandbox("plan", "--producer", "quinn")[0] == 0


def test_ctrl_c_stops_terraform_cleanly_and_a_rerun_converges(ops: Ops) -> None:
    # The creates wait at a gate the test opens only once Terraform has the interrupt: the
    # signal cannot arrive after the apply is over, however slow the machine.
    ops.sandbox("plan", "--producer", "quinn")
    gate = ops.base / "gate"
    run = stopping.apply_stopped_at_gate(ops, signal.SIGINT, gate)
    cloud.release_gate(gate)
    code, _, err = run.finish()
    assert code == 130, err
    assert "infra-apply: interrupted" in err and "Traceback" not in err
    cloud.inject_faults(ops.cloud)
    code, _, err = ops.apply("quinn")
    assert code == 0, err
    stopping.assert_no_duplicate_and_state_matches_cloud(ops, QUINN)
    assert ops.sandbox("plan", "--producer", "quinn")[0] == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_terraform_like_ctrl_c_and_leave_no_duplicate(ops: Ops, signum: int) -> None:
    # The repro: quinn applied, one droplet added, the signal lands during the apply.
    assert ops.apply("quinn")[0] == 0
    ops.edit("@quinn/.infra.yaml", "droplets:\n", "droplets:\n" + SPARE)
    gate = ops.base / "gate"
    run = stopping.apply_stopped_at_gate(ops, signum, gate)
    cloud.release_gate(gate)  # Terraform, told to stop, still waits for the create in flight
    code, out, err = run.finish()
    assert code == 128 + signum, out + err
    assert f"infra-apply: interrupted by {signal.Signals(signum).name}" in err and "Traceback" not in err
    assert "digitalocean_droplet.quinn_spare: Creation complete" in out  # recorded, not abandoned
    stopping.assert_no_process_left(ops)
    cloud.inject_faults(ops.cloud)
    code, out, err = ops.apply("quinn")
    assert code == 0, err
    assert "(digitalocean_droplet.quinn_spare)" not in out  # no second droplet planned
    stopping.assert_no_duplicate_and_state_matches_cloud(ops, QUINN | {"com.uvlava.quinn.spare"})
    assert ops.sandbox("plan", "--producer", "quinn")[0] == 0


def test_after_sigkill_terraform_records_what_it_creates_and_the_rerun_waits_for_it(ops: Ops) -> None:
    assert ops.apply("quinn")[0] == 0
    ops.edit("@quinn/.infra.yaml", "droplets:\n", "droplets:\n" + SPARE)
    gate = ops.base / "gate"
    stopping.apply_stopped_at_gate(ops, signal.SIGKILL, gate)
    # infra-apply is gone; its Terraform is still applying (held at the gate). A rerun now
    # must wait for it rather than plan from the state it has not written yet.
    cloud.inject_faults(ops.cloud)
    rerun = stopping.start(ops, "apply", "--producer", "quinn", "--auto-approve", name="rerun")
    stopping.wait_for(lambda: "waiting up to" in rerun.stderr(), "the rerun to wait for terraform", rerun)
    cloud.release_gate(gate)
    code, out, err = rerun.finish()
    assert code == 0, out + err
    assert "the earlier terraform apply" in err and "has finished" in err
    assert "(digitalocean_droplet.quinn_spare)" not in out  # the orphaned Terraform recorded it
    stopping.assert_no_duplicate_and_state_matches_cloud(ops, QUINN | {"com.uvlava.quinn.spare"})
    stopping.assert_no_lock_left(ops)
    stopping.assert_no_process_left(ops)
    assert ops.sandbox("plan", "--producer", "quinn")[0] == 0


def test_sandbox_provider_exits_when_its_terraform_is_killed(ops: Ops) -> None:
    ops.sandbox("plan", "--producer", "quinn")
    gate = ops.base / "gate"
    cloud.inject_faults(ops.cloud, gate=gate)
    run = stopping.start(ops, "apply", "--producer", "quinn", "--auto-approve")
    stopping.wait_for(lambda: cloud.gate_started(gate), "a droplet create to reach the gate", run)
    earlier = tf.earlier_run(stopping.working_copy(ops))
    assert earlier is not None and earlier.command == "apply"
    os.kill(earlier.pid, signal.SIGKILL)  # Terraform dies without stopping its providers
    code, out, err = run.finish()
    assert code == 1 and "terraform apply failed" in err and "Traceback" not in err, out + err
    stopping.assert_no_process_left(ops)  # before the gate opens: nothing else would end them
    cloud.release_gate(gate)
    cloud.inject_faults(ops.cloud)
    code, out, err = ops.apply("quinn")
    assert code == 0, out + err
    stopping.assert_no_duplicate_and_state_matches_cloud(ops, QUINN)


SPARE = """  - name: com.uvlava.quinn.spare
    role: spare
    size: s-1vcpu-1gb
    hosts: [spare]
    services:
      - { name: spare-api, kind: api, port: 8900 }
"""


def test_sigterm_at_the_confirmation_prompt_exits_143_and_applies_nothing(ops: Ops) -> None:
    import pty
    import select

    master, terminal = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infra_apply",
            "--root",
            str(ops.root),
            "apply",
            "--producer",
            "quinn",
            "--sandbox",
            "--out",
            str(ops.out),
            "--mesh-hosts",
            str(ops.mesh),
        ],
        env=ops.env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        preexec_fn=stopping.default_signals,
    )
    os.close(terminal)
    seen = b""

    def read(until: bytes | None) -> None:
        nonlocal seen
        while until is None or until not in seen:
            ready, _, _ = select.select([master], [], [], stopping.WAIT_SECONDS)
            assert ready, f"no output within {stopping.WAIT_SECONDS} s:\n{seen.decode()}"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal's other end has closed
                chunk = b""
            if not chunk:
                assert until is None, seen.decode()
                return
            seen += chunk

    read(b"Apply these changes to producer quinn?")
    # A signal that lands after input() printed its prompt but before it blocks in read() waits
    # for a keypress (CPython checks signals on EINTR only): signal it once it is reading.
    stopping.wait_for(lambda: stopping.blocked_reading_stdin(proc.pid), "infra-apply to read the answer")
    proc.send_signal(signal.SIGTERM)
    read(None)
    os.close(master)
    assert proc.wait(timeout=60) == 143, seen.decode()
    assert b"infra-apply: interrupted by SIGTERM" in seen and b"Traceback" not in seen
    assert ops.droplets() == {}
