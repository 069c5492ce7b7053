"""[firewall] ssh_from / bootstrap_from: the config, the rules, the render and what a plan says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra_apply.errors import InfraApplyError
from infra_apply.manifests import config
from infra_apply.manifests.build import build_model
from infra_apply.manifests.config import FirewallSettings
from infra_apply.manifests.model import Droplet, Service
from infra_apply.manifests.validate import validate_tree
from infra_apply.plan.model import parse_plan
from infra_apply.render.module import render_model
from infra_apply.report import producer_reports
from infra_apply.report.json import format_json
from infra_apply.report.markdown import format_markdown
from infra_apply.report.text import format_text
from tests.conftest import base_tree, write_tree
from tests.plan_fixtures import rc, synthetic

WORLD = ["0.0.0.0/0", "::/0"]


def _config(tmp_path: Path, text: str) -> config.Config:
    (tmp_path / "infra-apply.toml").write_text(text)
    return config.load(tmp_path)


# --- config -----------------------------------------------------------------------------------


def test_ssh_from_cidrs_mesh_and_a_producer_override(tmp_path: Path) -> None:
    c = _config(
        tmp_path,
        '[firewall]\nssh_from = ["203.0.113.4/32", "2001:DB8::/48"]\n'
        '[producers.ct.firewall]\nssh_from = "mesh"\nbootstrap_from = ["198.51.100.0/28"]\n',
    )
    assert c.firewall_for("mc") == FirewallSettings(ssh_from=("203.0.113.4/32", "2001:db8::/48"))
    assert c.firewall_for("ct") == FirewallSettings(mesh=True, bootstrap_from=("198.51.100.0/28",))
    assert config.load(tmp_path / "nowhere").firewall.public  # unset: today's public SSH


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'ssh_from = ["203.0.113.4/28"]',
            r"4:\d+: error config: \[firewall\] ssh_from: '203.0.113.4/28' is not a CIDR \(.*host bits",
        ),
        ('ssh_from = ["nope"]', r"4:\d+: error config: \[firewall\] ssh_from: 'nope' is not a CIDR"),
        (
            'ssh_from = "all"',
            r'4:\d+: error config: \[firewall\] ssh_from must be a list of CIDRs, .* or "mesh"',
        ),
        ('ssh_from = ["10.0.0.1"]', r"4:\d+: error config: .* has no prefix length: write 10.0.0.1/32"),
        ('ssh_from = ["10.0.0.0/8", "10.0.0.0/8"]', r"listed twice"),
        ("bootstrap_from = 1", r"4:\d+: error config: \[firewall\] bootstrap_from must be a list of CIDRs"),
        (
            "ssh_fro = []",
            r"4:\d+: error config: \[firewall\] ssh_fro: unknown setting \(known: ssh_from, bootstrap_from\)",
        ),
    ],
)
def test_a_bad_firewall_setting_is_one_located_error(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(InfraApplyError) as err:
        _config(tmp_path, f"# ssh\n[droplets]\n[firewall]\n{line}\n")
    assert err.value.format().startswith("infra-apply.toml:")
    assert err.value.format().count("\n") == 0
    import re

    assert re.search(message, err.value.format()), err.value.format()


def test_a_bad_producer_override_is_located_in_its_table(tmp_path: Path) -> None:
    with pytest.raises(InfraApplyError) as err:
        _config(tmp_path, '[producers.ct.firewall]\n# x\nssh_from = ["x"]\n')
    assert err.value.format().startswith(
        "infra-apply.toml:3:1: error config: [producers.ct.firewall] ssh_from: 'x'"
    )


# --- rules ------------------------------------------------------------------------------------


def _tree(tmp_path: Path, toml: str) -> Path:
    return write_tree(tmp_path / "tree", {**base_tree(), "infra-apply.toml": toml})


def _problems(root: Path, mesh: Path | None = None) -> list[str]:
    return [p.format() for p in validate_tree(root, mesh).problems]


def test_unset_ssh_from_warns_public_ssh_at_the_droplet(tmp_path: Path) -> None:
    problems = _problems(_tree(tmp_path, '[droplets]\nssh_keys = ["ops"]\n'))
    assert problems == [
        "@ct/.infra.yaml:5:9: warning public_ssh: droplet 'com.uvlava.ct.services' opens SSH (22/tcp) "
        "to the whole internet: set ssh_from under [firewall] or [producers.ct.firewall] in "
        'infra-apply.toml (CIDRs, or "mesh")'
    ]


def _registry(tmp_path: Path, droplets: list[str]) -> Path:
    import json

    hosts = {
        f"h{i}": {"mesh_ip": f"10.8.0.{i + 2}", "droplet": d, "producer": "ct"}
        for i, d in enumerate(droplets)
    }
    path = tmp_path / "mesh-hosts.json"
    path.write_text(json.dumps({"network": "10.8.0.0/24", "hosts": hosts, "services": {}}))
    return path


def test_mesh_without_bootstrap_from_is_an_error_for_an_unregistered_droplet(tmp_path: Path) -> None:
    root = _tree(tmp_path, '[droplets]\nssh_keys = ["ops"]\n[firewall]\nssh_from = "mesh"\n')
    found = _problems(root, _registry(tmp_path, []))
    assert len(found) == 1 and found[0].startswith("@ct/.infra.yaml:5:9: error ssh_bootstrap: droplet ")
    assert "set bootstrap_from (CIDRs) under [firewall]" in found[0]
    assert _problems(root, _registry(tmp_path, ["com.uvlava.ct.services"])) == []  # registered


# --- render -----------------------------------------------------------------------------------


def _firewalls(tmp_path: Path, toml: str) -> str:
    from infra_apply.manifests.validate import require_valid

    model = build_model(require_valid(_tree(tmp_path, toml), None, None, lambda _: None))
    (rendered,) = render_model(model, tmp_path / "out")
    return rendered.files["firewalls.tf"]


def test_ssh_rule_follows_ssh_from_and_public_openings_get_their_own_firewall(tmp_path: Path) -> None:
    hcl = _firewalls(tmp_path, '[droplets]\nssh_keys = ["ops"]\n[firewall]\nssh_from = ["203.0.113.4/32"]\n')
    own, public = hcl.split('resource "digitalocean_firewall" "ct_services__public" {')
    assert 'source_addresses = ["203.0.113.4/32"]' in own
    assert '0.0.0.0/0", "::/0"]\n  }\n\n  inbound' not in own  # no inbound rule open to all
    assert "depends_on = [digitalocean_firewall.ct_services__public]" in own
    assert "#checkov:skip=CKV_DIO_4:com.uvlava.ct.services role ct_services: WireGuard 51820/udp" in public
    assert 'port_range       = "22"' not in public


def test_mesh_leaves_no_port_22_rule_and_bootstrap_is_a_variable(tmp_path: Path) -> None:
    mesh = _firewalls(tmp_path / "a", '[droplets]\nssh_keys = ["ops"]\n[firewall]\nssh_from = "mesh"\n')
    assert '"22"' not in mesh and "ssh_bootstrap" not in mesh
    boot = _firewalls(
        tmp_path / "b",
        '[droplets]\nssh_keys = ["ops"]\n[firewall]\nssh_from = "mesh"\n'
        'bootstrap_from = ["198.51.100.0/28"]\n',
    )
    assert 'variable "ssh_bootstrap_ct_services"' in boot
    assert 'for_each = var.ssh_bootstrap_ct_services ? ["22"] : []' in boot
    assert 'source_addresses = ["198.51.100.0/28"]' in boot


def test_public_inbound_has_ssh_only_while_unset() -> None:
    from infra_apply.render.module import public_inbound

    d = Droplet("com.uvlava.dns", "quinn", "x", services=(Service("dns", "dns"),))
    assert public_inbound(d)[0] == ("tcp", "22")
    narrowed = Droplet("com.uvlava.dns", "quinn", "x", firewall=FirewallSettings(ssh_from=()))
    assert ("tcp", "22") not in public_inbound(narrowed)


# --- plans ------------------------------------------------------------------------------------


def rule(protocol: str, port: str, sources: list[str] = WORLD) -> dict[str, Any]:
    return {"protocol": protocol, "port_range": port, "source_addresses": sources}


NAMES = {
    "digitalocean_droplet.dns": "com.uvlava.dns",
    "digitalocean_firewall.dns": "com.uvlava.dns",
    "digitalocean_firewall.dns__public": "com.uvlava.dns",
}


def _transition() -> dict[str, Any]:
    """Today's one firewall of a droplet, split: SSH narrowed, the rest moved to __public."""
    old = [rule("tcp", "22"), rule("udp", "51820"), rule("udp", "53")]
    return synthetic(
        rc(
            "digitalocean_firewall.dns",
            ["update"],
            before={"name": "fw-dns", "inbound_rule": old},
            after={"name": "fw-dns", "inbound_rule": [rule("tcp", "22", ["203.0.113.4/32"])]},
        ),
        rc(
            "digitalocean_firewall.dns__public",
            ["create"],
            after={"name": "fw-dns--public", "inbound_rule": [rule("udp", "51820"), rule("udp", "53")]},
        ),
    )


def test_moving_the_public_openings_is_a_move_and_narrowing_ssh_is_called_out() -> None:
    plan = parse_plan("quinn", _transition(), NAMES)
    changes = {c.address: c for c in plan.changes}
    own, public = changes["digitalocean_firewall.dns"], changes["digitalocean_firewall.dns__public"]
    assert [str(p) for p in own.ports_closed] == ["22/tcp"]  # only SSH leaves the whole internet
    assert public.ports_opened == () and [str(p) for p in public.ports_moved] == ["53/udp", "51820/udp"]
    assert (
        own.ssh is not None
        and own.ssh.removed == ("0.0.0.0/0", "::/0")
        and own.ssh.left == ("203.0.113.4/32",)
    )
    reports = producer_reports([plan])
    text = format_text(reports)
    assert (
        "! SSH (22/tcp) narrowed on firewall of com.uvlava.dns (digitalocean_firewall.dns): no longer "
        "from 0.0.0.0/0, ::/0; still from 203.0.113.4/32"
    ) in text
    assert "public ports moved to firewall of com.uvlava.dns (digitalocean_firewall.dns__public)" in text
    assert "public ports opened" not in text
    import json

    doc = json.loads(format_json(reports))
    producer = doc["producers"]["quinn"]
    assert producer["ssh"][0]["removed"] == WORLD and producer["ssh"][0]["left"] == ["203.0.113.4/32"]
    assert [p["ports"] for p in producer["public_ports"]["moved"]] == ["53", "51820"]
    assert (
        "🔒 SSH (22/tcp) narrowed on firewall of com.uvlava.dns (digitalocean\\_firewall.dns)"
        in format_markdown(reports)
    )


def test_closing_bootstrap_ssh_and_the_bootstrap_note_are_in_every_format() -> None:
    plan_json = synthetic(
        rc(
            "digitalocean_firewall.dns",
            ["update"],
            before={"name": "fw-dns", "inbound_rule": [rule("tcp", "22", ["198.51.100.0/28"])]},
            after={"name": "fw-dns", "inbound_rule": []},
        )
    )
    # as `terraform show -json` has the -var values infra-apply passes: strings
    plan_json["variables"] = {"ssh_bootstrap_dns": {"value": "false"}, "ssh_bootstrap_new": {"value": "true"}}
    names = {**NAMES, "digitalocean_droplet.new": "com.uvlava.new"}
    plan = parse_plan("quinn", plan_json, names)
    assert plan.ssh_bootstrap == ("com.uvlava.new",)
    reports = producer_reports([plan])
    closed = (
        "SSH (22/tcp) closed on firewall of com.uvlava.dns (digitalocean_firewall.dns): no longer "
        "from 198.51.100.0/28"
    )
    note = "SSH to com.uvlava.new stays open from bootstrap_from until it is in mesh-hosts.json"
    for out in (format_text(reports), format_json(reports), format_markdown(reports).replace("\\_", "_")):
        assert closed in out and note in out


def test_validate_strict_refuses_public_ssh(tmp_path: Path) -> None:
    from tests.conftest import cli_env, run_cli

    root = _tree(tmp_path, '[droplets]\nssh_keys = ["ops"]\n')
    r = run_cli("--root", str(root), "validate", "--strict", env=cli_env(tmp_path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "warning public_ssh: droplet 'com.uvlava.ct.services' opens SSH (22/tcp)" in r.stdout + r.stderr
    (root / "infra-apply.toml").write_text('[droplets]\nssh_keys = ["ops"]\n[firewall]\nssh_from = []\n')
    assert run_cli("--root", str(root), "validate", "--strict", env=cli_env(tmp_path)).returncode == 0


def test_plan_sets_bootstrap_from_the_registry_and_refuses_to_guess_without_one() -> None:
    from dataclasses import replace
    from typing import cast

    from infra_apply.commands.plan import ssh_variables
    from infra_apply.manifests.model import ProducerModel
    from infra_apply.render.output import Rendered
    from infra_apply.runtime.workcopy import Prepared, WorkingCopy

    rendered = Rendered(
        "ct", {}, ssh_variables={"com.uvlava.ct.a": "ssh_bootstrap_a", "com.uvlava.ct.b": "ssh_bootstrap_b"}
    )
    prep = Prepared(ProducerModel("ct"), rendered, cast(WorkingCopy, None))
    with pytest.raises(
        InfraApplyError, match=r'ssh_from = "mesh" needs mesh-hosts.json .* pass --mesh-hosts FILE'
    ):
        ssh_variables(prep)
    registered = replace(prep, registered=frozenset({"com.uvlava.ct.a"}))
    assert ssh_variables(registered) == {"ssh_bootstrap_a": "false", "ssh_bootstrap_b": "true"}


def test_destroying_either_firewall_needs_its_droplets_allow_destroy() -> None:
    from infra_apply.plan.guard import guard

    plan = parse_plan(
        "quinn",
        synthetic(
            rc("digitalocean_firewall.dns", ["delete"], before={"name": "fw-dns"}),
            rc("digitalocean_firewall.dns__public", ["delete"], before={"name": "fw-dns--public"}),
        ),
        NAMES,
    )
    refused = guard(plan, (), ())
    assert {c.address for c in refused.blocked} == {
        "digitalocean_firewall.dns",
        "digitalocean_firewall.dns__public",
    }
    assert guard(plan, ["com.uvlava.dns"], ()).ok


def test_mesh_without_bootstrap_from_never_creates_a_droplet_no_ssh_reaches() -> None:
    """ssh_from = "mesh" and no bootstrap_from: without a registry a run cannot tell which
    droplets are on the mesh, and a droplet not on it yet would get no SSH at all (the rule
    ssh_bootstrap sees this only when the registry is given): refused, never applied."""
    from dataclasses import replace
    from typing import cast

    from infra_apply.commands.plan import ssh_variables
    from infra_apply.manifests.model import ProducerModel
    from infra_apply.render.output import Rendered
    from infra_apply.runtime.workcopy import Prepared, WorkingCopy

    mesh_only = FirewallSettings(mesh=True)
    droplets = tuple(Droplet(f"com.uvlava.ct.{n}", "ct", "x", firewall=mesh_only) for n in "ab")
    prep = Prepared(ProducerModel("ct", droplets), Rendered("ct", {}), cast(WorkingCopy, None))
    with pytest.raises(InfraApplyError, match=r"needs mesh-hosts.json .* would get no SSH"):
        ssh_variables(prep)  # a live run given no registry
    with pytest.raises(InfraApplyError, match=r"'com.uvlava.ct.b' is not in mesh-hosts.json yet"):
        ssh_variables(replace(prep, registered=frozenset({"com.uvlava.ct.a"})))
    assert ssh_variables(replace(prep, registered=frozenset({"com.uvlava.ct.a", "com.uvlava.ct.b"}))) == {}


def test_opening_ssh_to_the_whole_internet_is_never_called_narrowed() -> None:
    """From ssh_from CIDRs back to unset: SSH is widened ("public ports opened: 22/tcp"), not
    narrowed, although the CIDR's own rule goes away."""
    from infra_apply.plan.semantics import ssh_change

    def rules(*sources: str) -> dict[str, object]:
        return {"inbound_rule": [{"protocol": "tcp", "port_range": "22", "source_addresses": list(sources)}]}

    fw = "digitalocean_firewall"
    assert ssh_change(fw, "update", rules("203.0.113.4/32"), rules("0.0.0.0/0", "::/0")) is None
    narrowed = ssh_change(fw, "update", rules("0.0.0.0/0", "::/0"), rules("203.0.113.4/32"))
    assert narrowed is not None and narrowed.removed == ("0.0.0.0/0", "::/0")


def test_the_bootstrap_note_is_in_the_markdown_of_a_plan_with_no_other_change() -> None:
    """A plan whose only news is that a droplet's SSH stays open from bootstrap_from: the pull
    request's comment says it too, not only text and JSON (it said "No changes.")."""
    plan_json = synthetic()
    plan_json["variables"] = {"ssh_bootstrap_new": {"value": "true"}}
    names = {**NAMES, "digitalocean_droplet.new": "com.uvlava.new"}
    reports = producer_reports([parse_plan("quinn", plan_json, names)])
    note = "SSH to com.uvlava.new stays open from bootstrap_from until it is in mesh-hosts.json"
    assert note in format_markdown(reports).replace("\\_", "_")
