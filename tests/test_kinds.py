"""The kinds table: every resource type the templates render and the sandbox provides has an
entry, the guard consults it, and no other module spells a type string."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from infra_apply import kinds
from infra_apply.plan.guard import guard, refusal_message, unused_allowances
from infra_apply.plan.parse import Change, ProducerPlan
from infra_apply.sandbox.resources import DATA_SOURCES, RESOURCES
from infra_apply.sandbox.server import TYPE_PREFIX

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "infra_apply"
TEMPLATES = ROOT / "templates"
SCHEMA = Path("/work/shared/do-provider-schema.json")

_BLOCK = re.compile(r'^\s*(resource|data)\s+"([a-z0-9_]+)"', re.MULTILINE)


def template_types(directory: Path) -> set[tuple[str, str]]:
    """(mode, type) of every resource and data block the templates can render."""
    found = set()
    for template in sorted(directory.glob("*.j2")):
        for block, rtype in _BLOCK.findall(template.read_text(encoding="utf-8")):
            found.add(("managed" if block == "resource" else "data", rtype))
    return found


def missing(types: set[tuple[str, str]]) -> list[str]:
    return sorted(
        f"{mode} {rtype}"
        for mode, rtype in types
        if (kind := kinds.kind_of(rtype)) is None or kind.mode != mode
    )


def test_every_template_type_has_a_kind() -> None:
    types = template_types(TEMPLATES)
    assert ("managed", "digitalocean_firewall") in types  # the scan reads what it should
    assert missing(types) == []


def test_a_template_type_without_a_kind_fails_the_check(tmp_path: Path) -> None:
    for template in TEMPLATES.glob("*.j2"):
        (tmp_path / template.name).write_text(template.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "vpc.tf.j2").write_text('resource "digitalocean_vpc" "mesh" {\n}\n', encoding="utf-8")
    assert missing(template_types(tmp_path)) == ["managed digitalocean_vpc"]


def test_every_sandbox_type_has_a_kind() -> None:
    types = {("managed", TYPE_PREFIX + r.get_name()) for r in RESOURCES}
    types |= {("data", TYPE_PREFIX + d.get_name()) for d in DATA_SOURCES}
    assert len(types) == len(RESOURCES) + len(DATA_SOURCES)
    assert missing(types) == []
    assert missing({*types, ("managed", "digitalocean_vpc")}) == ["managed digitalocean_vpc"]


@pytest.mark.skipif(not SCHEMA.is_file(), reason="the provider facts are not on this machine")
def test_import_id_formats_are_the_providers() -> None:
    schemas = json.loads(SCHEMA.read_text(encoding="utf-8"))["resource_schemas"]
    for kind in kinds.KINDS.values():
        if kind.import_id is not None:
            assert kind.import_id == schemas[kind.type]["x_behavior"]["import"]["id_format"], kind.type


def test_every_managed_kind_but_the_safe_ones_guards_its_loss() -> None:
    for kind in kinds.KINDS.values():
        if kind.mode == "managed":
            assert not kind.safe_to_lose, kind.type
            # a cluster's trusted sources are consented to, every way, by naming the cluster
            own = "--allow-trusted-sources" if kind is kinds.DATABASE_FIREWALL else None
            assert kind.guard.destroy == (own or "--allow-destroy")
            assert kind.guard.replace == (own or "--allow-replace")
    assert kinds.guard_flag("digitalocean_vpc", "destroy") == "--allow-destroy"  # unknown: refused
    assert kinds.guard_flag("digitalocean_vpc", "replace") == "--allow-replace"


def _change(rtype: str, local: str, name: str, action: str = "delete") -> Change:
    return Change(address=f"{rtype}.{local}", type=rtype, name=name, action=action)  # type: ignore[arg-type]


def test_a_firewall_destroy_is_refused_without_allow_destroy() -> None:
    # the droplet stays: losing its firewall lets every port through
    plan = ProducerPlan("quinn", (_change("digitalocean_firewall", "quinn_mcp", "mcp"),))
    verdict = guard(plan, (), ())
    assert [c.address for c in verdict.blocked] == ["digitalocean_firewall.quinn_mcp"]
    assert refusal_message(verdict).endswith("rerun with --allow-destroy mcp")
    assert guard(plan, (), ("mcp",)).blocked == verdict.blocked  # --allow-replace is not it
    assert guard(plan, ("mcp",), ()).ok
    assert guard(plan, ("digitalocean_firewall.quinn_mcp",), ()).ok


def test_a_droplet_destroyed_with_allow_destroy_takes_its_firewall() -> None:
    plan = ProducerPlan(
        "quinn",
        (
            _change("digitalocean_droplet", "quinn_mcp", "mcp"),
            _change("digitalocean_firewall", "quinn_mcp", "mcp"),
        ),
    )
    refused = guard(plan, (), ())
    # one line for the pair: the droplet's, whose flag and name allow both
    assert [c.address for c in refused.blocked] == ["digitalocean_droplet.quinn_mcp"]
    assert guard(plan, ("mcp",), ()).ok
    assert unused_allowances(plan, ("mcp",), ()) == ()
    # the droplet allowed by its address alone leaves its firewall refused
    by_address = guard(plan, ("digitalocean_droplet.quinn_mcp",), ())
    assert [c.address for c in by_address.blocked] == ["digitalocean_firewall.quinn_mcp"]


def test_an_unknown_type_is_refused_never_waved_through() -> None:
    plan = ProducerPlan("quinn", (_change("digitalocean_vpc", "mesh", "mesh", "replace"),))
    assert [c.address for c in guard(plan, (), ()).blocked] == ["digitalocean_vpc.mesh"]
    assert guard(plan, (), ("mesh",)).ok


# Modules that still spell a resource type outside the table (to move onto it; see issue 19).
_STILL_SPELLED: frozenset[str] = frozenset()
# A line of Terraform source held in a module (bucket.py's probe root) is a template's line.
_HCL_BLOCK = re.compile(r'\s*(?:resource|data)\s+"')
_TYPE_STRING = re.compile(r"""["'](?:digitalocean_[a-z_]+|terraform_data)(?:\.|["'])""")


def test_no_resource_type_string_outside_the_kinds_table() -> None:
    offenders = set()
    for module in sorted(PACKAGE.rglob("*.py")):
        relative = module.relative_to(PACKAGE).as_posix()
        if relative == "kinds.py" or relative.startswith("sandbox/"):
            continue  # the table, and the sandbox, which models the provider
        for number, line in enumerate(module.read_text(encoding="utf-8").splitlines(), 1):
            if _TYPE_STRING.search(line) and not _HCL_BLOCK.match(line):
                offenders.add(relative)
                assert relative in _STILL_SPELLED, f"infra_apply/{relative}:{number}: {line.strip()}"
    assert offenders == _STILL_SPELLED  # a module moved onto the table leaves the list


def test_a_kind_whose_creation_is_disruptive_is_guarded_like_a_destroy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a database firewall: its creation cuts off every client it does not list
    trusted = kinds.Kind(
        type="digitalocean_database_firewall",
        mode="managed",
        noun="database firewall",
        guard=kinds.GuardPolicy(create="--allow-destroy"),
        import_id="<cluster_id>",
    )
    monkeypatch.setattr(kinds, "KINDS", {**kinds.KINDS, trusted.type: trusted})
    plan = ProducerPlan("quinn", (_change(trusted.type, "forge", "forge", "create"),))
    verdict = guard(plan, (), ())
    assert refusal_message(verdict).endswith("rerun with --allow-destroy forge")
    assert guard(plan, ("forge",), ()).ok


def test_import_ids_are_filled_in_from_the_format() -> None:
    assert kinds.DATABASE.import_id_of(cluster_id="c-1", name="forge") == "c-1,forge"
    assert kinds.DROPLET.import_id_of(droplet_id="42") == "42"
    with pytest.raises(ValueError, match="leave"):
        kinds.USER.import_id_of(name="forge")
    with pytest.raises(ValueError, match="not imported"):
        kinds.SSH_KEY.import_id_of(name="deploy")


def test_drift_lists_in_the_account_every_kind_the_table_says_it_looks_for() -> None:
    # commands/drift.list_tagged lists tagged droplets (GET /v2/droplets?tag_name=): a kind
    # marked "tagged" needs its own listing there before drift can find its orphans.
    from infra_apply.plan.drift import looked_for

    assert looked_for() == {kinds.DROPLET.type}
