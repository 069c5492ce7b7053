"""Plan summaries: what the operator sees, what the guard refuses, and what never leaks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from infra_apply.errors import InfraApplyError, TerraformError
from infra_apply.model import Droplet, ProducerModel, Service
from infra_apply.summary import (
    MARKDOWN_LIMIT,
    Change,
    GuardVerdict,
    NameDrift,
    ProducerPlan,
    classify,
    format_json,
    format_markdown,
    format_text,
    guard,
    mermaid_diagram,
    parse_plan,
    refusal_message,
    strip_index,
    unused_allowances,
)
from tests.plan_fixtures import FORMATS, SCENARIOS, read_golden, render_golden

FIXTURES = Path(__file__).parent / "fixtures" / "plans"

# Literal secrets planted in the fixtures: a kept user's password (no-op), a removed user's
# password (delete), and the data-sourced cluster's admin password / URIs (prior_state).
SECRETS = ("AVNS_noopRegistryPw_7Hq2Lz", "AVNS_forgeDeletedPw_Xk93mQ", "AVNS_clusterAdminPw_Ue5tB1")

# What rendering hands over: index-less address → manifest name. Resources removed from the
# manifests (quinn_mcp, quinn_forge_prod) are deliberately absent, as they would be.
NAMES = {
    "digitalocean_droplet.quinn_artifacts": "com.uvlava.quinn.artifacts",
    "digitalocean_firewall.quinn_artifacts": "com.uvlava.quinn.artifacts",
    "digitalocean_database_db.quinn_registry_prod": "registry",
    "digitalocean_database_user.quinn_registry_prod": "registry",
    "digitalocean_droplet.mc_services": "com.uvlava.mc.services",
    "digitalocean_firewall.mc_services": "com.uvlava.mc.services",
    "digitalocean_database_db.mc_billing_prod": "billing",
    "digitalocean_database_user.mc_billing_prod": "billing",
    "digitalocean_droplet.ct_services": "com.uvlava.ct.services",
    "digitalocean_firewall.ct_services": "com.uvlava.ct.services",
    "digitalocean_droplet.ct_gpu": "com.uvlava.ct.gpu",
}
IMPORT_NAMES = {**NAMES, "digitalocean_droplet.quinn_mcp": "com.uvlava.quinn.mcp"}

QUINN_MODEL = ProducerModel(
    name="quinn",
    droplets=(
        Droplet(
            name="com.uvlava.quinn.artifacts",
            producer="quinn",
            source="@quinn/.infra.yaml",
            region="fra1",
            hosts=("forge", "registry"),
            services=(Service("forgejo", "forge"), Service("verdaccio", "npm-registry")),
        ),
    ),
)


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def parsed(name: str, producer: str = "quinn", names: dict[str, str] = NAMES) -> ProducerPlan:
    return parse_plan(producer, load(name), names)


def by_address(plan: ProducerPlan) -> dict[str, Change]:
    return {c.address: c for c in plan.changes}


def all_formats(plans: list[ProducerPlan], models: dict[str, ProducerModel]) -> list[str]:
    verdicts = {p.producer: guard(p, (), ()) for p in plans}
    return [
        format_text(plans),
        format_json(plans, verdicts),
        format_markdown(plans, verdicts, models),
    ]


# ---------------------------------------------------------------------------------------------
# Synthetic plans for cases the fixtures do not need to carry.


def rc(address: str, actions: list[str], **change: Any) -> dict[str, Any]:
    rtype = address.split(".")[-2] if address.startswith("data.") else address.split(".")[0]
    name = strip_index(address).split(".")[-1]
    return {
        "address": address,
        "mode": "data" if address.startswith("data.") else "managed",
        "type": rtype,
        "name": name,
        "provider_name": "registry.terraform.io/digitalocean/digitalocean",
        "change": {
            "actions": actions,
            "before": change.pop("before", None),
            "after": change.pop("after", None),
            "after_unknown": change.pop("after_unknown", {}),
            "before_sensitive": change.pop("before_sensitive", False),
            "after_sensitive": change.pop("after_sensitive", False),
            **change,
        },
    }


def synthetic(
    *changes: dict[str, Any], prior: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    plan: dict[str, Any] = {
        "format_version": "1.2",
        "terraform_version": "1.11.4",
        "resource_changes": list(changes),
        "errored": False,
    }
    if prior is not None:
        plan["prior_state"] = {
            "format_version": "1.0",
            "values": {"root_module": {"resources": prior}},
        }
    return plan


# ---------------------------------------------------------------------------------------------
# Parsing the fixtures


def test_steady_state_plan_has_no_changes() -> None:
    plan = parsed("no_changes")
    assert plan.changes == ()
    assert plan.drift == ()
    assert not plan.has_changes
    assert plan.counts == {"create": 0, "update": 0, "replace": 0, "delete": 0, "import": 0}
    assert format_text([plan]) == "Producer quinn:\nNo changes.\n"


def test_new_producer_is_all_creates_named_from_the_manifest() -> None:
    plan = parsed("create_producer", "mc")
    assert [(c.action, c.address, c.name) for c in plan.changes] == [
        ("create", "digitalocean_database_db.mc_billing_prod", "billing"),
        ("create", "digitalocean_database_user.mc_billing_prod", "billing"),
        ("create", "digitalocean_droplet.mc_services", "com.uvlava.mc.services"),
        ("create", "digitalocean_firewall.mc_services", "com.uvlava.mc.services"),
    ]
    assert plan.counts["create"] == 4
    assert plan.has_changes


def test_region_change_is_a_replace_with_its_reason() -> None:
    changes = by_address(parsed("replace_delete"))
    art = changes["digitalocean_droplet.quinn_artifacts"]
    assert art.action == "replace"
    assert art.replace_paths == ("region",)
    assert "region" in art.updated_attrs
    region = art.diff("region")
    assert region is not None and region.render() == 'region "nyc3" → "fra1"'
    # The firewall follows its droplet: its droplet_ids become unknown, an in-place update.
    fw = changes["digitalocean_firewall.quinn_artifacts"]
    assert (fw.action, fw.updated_attrs) == ("update", ("droplet_ids",))


def test_removed_resources_fall_back_to_their_state_names() -> None:
    changes = by_address(parsed("replace_delete"))
    deleted = {a: c.name for a, c in changes.items() if c.action == "delete"}
    assert deleted == {
        "digitalocean_database_db.quinn_forge_prod": "forge",
        "digitalocean_database_user.quinn_forge_prod": "forge",
        "digitalocean_droplet.quinn_mcp": "com.uvlava.quinn.mcp",
        "digitalocean_firewall.quinn_mcp": "quinn_mcp",
    }
    assert {c.reason for c in changes.values() if c.action == "delete"} == {
        "delete_because_no_resource_config"
    }
    # Unchanged resources (the registry database and user) are not listed at all.
    assert not any("registry" in a for a in changes)


def test_size_update_names_the_attribute_and_gpu_index_is_resolved() -> None:
    changes = by_address(parsed("update_size", "ct"))
    services = changes["digitalocean_droplet.ct_services"]
    assert (services.action, services.updated_attrs) == ("update", ("size",))
    gpu = changes["digitalocean_droplet.ct_gpu[0]"]
    assert (gpu.action, gpu.name, gpu.base_address) == (
        "create",
        "com.uvlava.ct.gpu",
        "digitalocean_droplet.ct_gpu",
    )
    assert changes["digitalocean_firewall.ct_services"].updated_attrs == ("inbound_rule",)


def test_imports_count_once_and_an_import_with_update_counts_under_both() -> None:
    plan = parsed("import", names=IMPORT_NAMES)
    changes = by_address(plan)
    art = changes["digitalocean_droplet.quinn_artifacts"]
    assert (art.action, art.importing, art.import_id) == ("import", True, "412345678")
    mcp = changes["digitalocean_droplet.quinn_mcp"]
    assert (mcp.action, mcp.importing, mcp.updated_attrs) == ("update", True, ("tags",))
    assert plan.counts == {"create": 1, "update": 1, "replace": 0, "delete": 0, "import": 2}


def test_name_drift_is_reported_even_though_the_plan_is_a_no_op() -> None:
    plan = parsed("name_drift")
    assert not plan.has_changes
    assert plan.drift == (
        NameDrift(
            address="digitalocean_droplet.quinn_artifacts",
            manifest_name="com.uvlava.quinn.artifacts",
            live_name="quinn-artifacts-01",
        ),
    )
    text = format_text([plan])
    assert (
        '  ! name drift: digitalocean_droplet.quinn_artifacts is live as "quinn-artifacts-01" but '
        'the manifest says "com.uvlava.quinn.artifacts" — run infra-apply rename --producer quinn '
        "com.uvlava.quinn.artifacts\n"
    ) in text


def test_drift_uses_the_index_less_name_for_counted_droplets() -> None:
    prior = [
        {
            "address": "digitalocean_droplet.ct_gpu[0]",
            "mode": "managed",
            "type": "digitalocean_droplet",
            "name": "ct_gpu",
            "index": 0,
            "values": {"name": "gpu-box"},
            "sensitive_values": {},
        }
    ]
    plan = parse_plan("ct", synthetic(prior=prior), NAMES)
    assert [(d.address, d.live_name) for d in plan.drift] == [
        ("digitalocean_droplet.ct_gpu[0]", "gpu-box")
    ]


@pytest.mark.parametrize(
    ("actions", "importing", "expected"),
    [
        (["create"], False, "create"),
        (["update"], False, "update"),
        (["update"], True, "update"),
        (["delete", "create"], False, "replace"),
        (["create", "delete"], False, "replace"),
        (["delete"], False, "delete"),
        (["no-op"], True, "import"),
        (["no-op"], False, "no-op"),
        (["read"], False, "read"),
    ],
)
def test_terraform_action_lists_map_to_one_action(
    actions: list[str], importing: bool, expected: str
) -> None:
    assert classify(actions, importing) == expected


def test_unknown_actions_fail_closed() -> None:
    with pytest.raises(InfraApplyError, match="forget"):
        parse_plan("quinn", synthetic(rc("digitalocean_droplet.x", ["forget"])), {})


def test_reads_and_no_ops_are_not_changes() -> None:
    plan = parse_plan(
        "quinn",
        synthetic(
            rc("data.digitalocean_database_cluster.pg", ["read"]),
            rc("digitalocean_droplet.a", ["no-op"], before={"name": "a"}, after={"name": "a"}),
        ),
        {},
    )
    assert plan.changes == ()
    assert not plan.has_changes


def test_errored_or_foreign_plans_are_refused() -> None:
    with pytest.raises(TerraformError):
        parse_plan("quinn", {**synthetic(), "errored": True}, {})
    with pytest.raises(InfraApplyError, match="format_version"):
        parse_plan("quinn", {**synthetic(), "format_version": "2.0"}, {})


# ---------------------------------------------------------------------------------------------
# Guard


def test_guard_refuses_destroying_or_replacing_droplets_databases_and_users() -> None:
    verdict = guard(parsed("replace_delete"), (), ())
    assert not verdict.ok
    assert sorted((c.action, c.address) for c in verdict.blocked) == [
        ("delete", "digitalocean_database_db.quinn_forge_prod"),
        ("delete", "digitalocean_database_user.quinn_forge_prod"),
        ("delete", "digitalocean_droplet.quinn_mcp"),
        ("replace", "digitalocean_droplet.quinn_artifacts"),
    ]  # the firewall going away is not guarded


def test_refusal_message_names_each_item_and_the_flag_that_allows_it() -> None:
    message = refusal_message(guard(parsed("replace_delete"), (), ()))
    lines = message.splitlines()
    assert (
        "replace digitalocean_droplet.quinn_artifacts (com.uvlava.quinn.artifacts): region forces "
        "replacement — rerun with --allow-replace com.uvlava.quinn.artifacts"
    ) in lines
    assert (
        "destroy digitalocean_droplet.quinn_mcp (com.uvlava.quinn.mcp): no longer in the "
        "manifests — rerun with --allow-destroy com.uvlava.quinn.mcp"
    ) in lines
    assert len(lines) == 4


def test_guard_allows_by_name_or_by_address() -> None:
    plan = parsed("replace_delete")
    verdict = guard(
        plan,
        allow_destroy=["com.uvlava.quinn.mcp", "digitalocean_database_db.quinn_forge_prod"],
        allow_replace=["com.uvlava.quinn.artifacts"],
    )
    assert [c.address for c in verdict.blocked] == ["digitalocean_database_user.quinn_forge_prod"]
    # "forge" is both the database's and the user's name: naming it allows both.
    assert guard(plan, ["forge", "com.uvlava.quinn.mcp"], ["com.uvlava.quinn.artifacts"]).ok


def test_allow_destroy_does_not_allow_a_replace() -> None:
    verdict = guard(parsed("replace_delete"), ["com.uvlava.quinn.artifacts"], ())
    assert "digitalocean_droplet.quinn_artifacts" in [c.address for c in verdict.blocked]
    verdict = guard(parsed("replace_delete"), (), ["com.uvlava.quinn.mcp"])
    assert "digitalocean_droplet.quinn_mcp" in [c.address for c in verdict.blocked]


def test_counted_droplet_is_allowed_by_address_with_or_without_index() -> None:
    plan = parse_plan(
        "ct",
        synthetic(
            rc(
                "digitalocean_droplet.ct_gpu[0]",
                ["delete"],
                before={"name": "com.uvlava.ct.gpu"},
                action_reason="delete_because_count_index",
            )
        ),
        NAMES,
    )
    assert not guard(plan, (), ()).ok
    for token in (
        "digitalocean_droplet.ct_gpu[0]",
        "digitalocean_droplet.ct_gpu",
        "com.uvlava.ct.gpu",
    ):
        assert guard(plan, [token], ()).ok, token


def test_imported_droplet_that_would_be_replaced_is_refused() -> None:
    plan = parse_plan(
        "quinn",
        synthetic(
            rc(
                "digitalocean_droplet.quinn_artifacts",
                ["delete", "create"],
                before={"name": "com.uvlava.quinn.artifacts", "ssh_keys": []},
                after={"name": "com.uvlava.quinn.artifacts", "ssh_keys": ["1"]},
                replace_paths=[["ssh_keys"]],
                importing={"id": "412345678"},
            )
        ),
        NAMES,
    )
    assert plan.counts["replace"] == 1 and plan.counts["import"] == 1
    assert [c.address for c in guard(plan, (), ()).blocked] == [
        "digitalocean_droplet.quinn_artifacts"
    ]


def test_unused_allowances_catch_typos_and_the_wrong_flag() -> None:
    plan = parsed("replace_delete")
    unused = unused_allowances(
        plan,
        allow_destroy=[
            "com.uvlava.quinn.mcp",
            "com.uvlava.quinn.mcpp",
            "com.uvlava.quinn.artifacts",
        ],
        allow_replace=["com.uvlava.quinn.artifacts"],
    )
    assert [(u.flag, u.value) for u in unused] == [
        ("--allow-destroy", "com.uvlava.quinn.mcpp"),
        ("--allow-destroy", "com.uvlava.quinn.artifacts"),
    ]
    assert unused[0].message == (
        "--allow-destroy com.uvlava.quinn.mcpp matches no deletion in the plan for quinn"
    )
    assert "use --allow-replace com.uvlava.quinn.artifacts" in unused[1].message
    assert unused_allowances(plan, ["forge"], ["com.uvlava.quinn.artifacts"]) == ()


# ---------------------------------------------------------------------------------------------
# Text


def test_text_lists_destructive_changes_first_with_counts() -> None:
    text = format_text([parsed("replace_delete")])
    lines = text.splitlines()
    assert lines[0] == "Producer quinn:"
    actions = [line[:11] for line in lines[1:-1]]
    assert actions == ["  - destroy"] * 4 + ["-/+ replace", "  ~ update "]
    assert lines[5] == (
        "-/+ replace com.uvlava.quinn.artifacts (digitalocean_droplet.quinn_artifacts): "
        'region "nyc3" → "fra1" forces replacement'
    )
    assert lines[-1] == "Plan: 0 to create, 1 to update, 1 to replace, 4 to destroy, 0 to import."


def test_text_shows_update_values_creates_and_imports() -> None:
    text = format_text([parsed("update_size", "ct"), parsed("import", names=IMPORT_NAMES)])
    assert (
        "  ~ update  com.uvlava.ct.services (digitalocean_droplet.ct_services): "
        'size "s-1vcpu-1gb" → "s-2vcpu-4gb"'
    ) in text
    assert "  + create  com.uvlava.ct.gpu (digitalocean_droplet.ct_gpu[0])\n" in text
    assert (
        " <= import  com.uvlava.quinn.artifacts (digitalocean_droplet.quinn_artifacts): "
        "import id 412345678"
    ) in text
    assert "Plan: 1 to create, 1 to update, 0 to replace, 0 to destroy, 2 to import." in text


# ---------------------------------------------------------------------------------------------
# JSON


def test_json_is_one_stable_document_with_guard_and_counts() -> None:
    plans = [parsed("replace_delete"), parsed("no_changes", "mc")]
    verdicts = {"quinn": guard(plans[0], ["forge"], ())}
    text = format_json(plans, verdicts)
    assert text.endswith("}\n") and '\n  "format_version": 1,' in text
    doc = json.loads(text)
    assert doc["changed"] is True and doc["format_version"] == 1
    quinn = doc["producers"]["quinn"]
    assert quinn["counts"] == {"create": 0, "update": 1, "replace": 1, "delete": 4, "import": 0}
    assert quinn["guard"]["ok"] is False
    assert [b["address"] for b in quinn["guard"]["blocked"]] == [
        "digitalocean_droplet.quinn_mcp",
        "digitalocean_droplet.quinn_artifacts",
    ]
    assert quinn["guard"]["blocked"][1]["allow_flag"] == "--allow-replace"
    replace = next(c for c in quinn["changes"] if c["action"] == "replace")
    assert replace["replace_paths"] == ["region"]
    # A producer without a verdict gets the no-allowance one: what `apply` would refuse.
    assert doc["producers"]["mc"] == {
        "changes": [],
        "counts": {"create": 0, "update": 0, "replace": 0, "delete": 0, "import": 0},
        "drift": [],
        "guard": {"ok": True, "blocked": []},
    }


def test_json_reports_unchanged_when_nothing_changes() -> None:
    doc = json.loads(format_json([parsed("no_changes"), parsed("name_drift")], {}))
    assert doc["changed"] is False
    assert doc["producers"]["quinn"]["drift"][0]["live_name"] == "quinn-artifacts-01"


# ---------------------------------------------------------------------------------------------
# Secrets


@pytest.mark.parametrize(
    "fixture",
    ["no_changes", "create_producer", "replace_delete", "update_size", "import", "name_drift"],
)
def test_no_secret_from_a_fixture_reaches_any_format(fixture: str) -> None:
    raw = (FIXTURES / f"{fixture}.json").read_text()
    plans = [parse_plan("quinn", json.loads(raw), {})]  # no names: fall back to state names
    for output in all_formats(plans, {"quinn": QUINN_MODEL}):
        for secret in SECRETS:
            assert secret not in output


def test_fixtures_really_carry_the_secrets() -> None:
    # Guards the test above against fixtures silently losing what it checks for.
    assert SECRETS[1] in (FIXTURES / "replace_delete.json").read_text()
    assert SECRETS[0] in (FIXTURES / "no_changes.json").read_text()
    assert SECRETS[2] in (FIXTURES / "create_producer.json").read_text()


def test_sensitive_and_secret_looking_values_are_named_never_shown() -> None:
    plan = parse_plan(
        "quinn",
        synthetic(
            rc(
                "digitalocean_database_user.quinn_forge_prod",
                ["update"],
                before={"name": "forge", "password": "old-Pw-1111", "role": "normal"},
                after={"name": "forge", "password": "new-Pw-2222", "role": "admin"},
                before_sensitive={"password": True},
                after_sensitive={"password": True},
            ),
            rc(
                "digitalocean_droplet.x",
                ["update"],
                before={"name": "x", "api_token": "tok-3333", "size": "a"},
                after={"name": "x", "api_token": "tok-4444", "size": "b"},
            ),
            rc(
                "digitalocean_database_db.hidden",
                ["delete"],
                before={"name": "name-is-sensitive-5555"},
                before_sensitive=True,
            ),
        ),
        {},
    )
    changes = by_address(plan)
    assert changes["digitalocean_database_user.quinn_forge_prod"].updated_attrs == (
        "password",
        "role",
    )
    assert changes["digitalocean_database_db.hidden"].name == "digitalocean_database_db.hidden"
    for output in all_formats([plan], {}):
        for secret in ("Pw-1111", "Pw-2222", "tok-3333", "tok-4444", "sensitive-5555"):
            assert secret not in output
    assert 'role "normal" → "admin"' in format_text([plan])
    assert "password" in format_text([plan])


# ---------------------------------------------------------------------------------------------
# Markdown


def test_markdown_calls_out_refused_changes_and_draws_the_droplets() -> None:
    plans = [parsed("replace_delete"), parsed("no_changes", "mc")]
    md = format_markdown(plans, {}, {"quinn": QUINN_MODEL})
    assert md.startswith("## infra-apply plan\n")
    assert "| quinn | 0 | 1 | 1 | 4 | 0 | 0 | ⛔ refused without `--allow-destroy` / " in md
    assert "| mc | 0 | 0 | 0 | 0 | 0 | 0 | ✅ |" in md
    assert "<details open>" in md  # destructive producers are expanded
    warnings = [line for line in md.splitlines() if line.startswith("- ⚠️")]
    assert len(warnings) == 5
    assert any(
        'region "nyc3" → "fra1" forces replacement — needs `infra-apply apply --producer '
        "quinn --allow-replace com.uvlava.quinn.artifacts`" in w
        for w in warnings
    )
    first_warning = md.index("- ⚠️")
    assert first_warning < md.index("**Other changes**") < md.index("```mermaid")
    assert "class drop0 replaced" in md
    assert 'gone0["com.uvlava.quinn.mcp (destroyed)"]' in md
    assert 'drop0_svc1["verdaccio (npm-registry)"]' in md
    assert "drop0 -. mesh .- drop0_host0" in md


def test_markdown_shows_verdicts_given_by_the_caller() -> None:
    plan = parsed("replace_delete")
    allowed = guard(plan, ["forge", "com.uvlava.quinn.mcp"], ["com.uvlava.quinn.artifacts"])
    md = format_markdown([plan], {"quinn": allowed}, {})
    assert "| quinn | 0 | 1 | 1 | 4 | 0 | 0 | ✅ |" in md
    assert "needs `" not in md


def test_markdown_for_quiet_producers_is_just_the_table() -> None:
    md = format_markdown([parsed("no_changes")], {}, {"quinn": QUINN_MODEL})
    assert "<details" not in md
    assert md.endswith("No changes.\n")


HOSTILE = (
    'evil"quote',
    "tick`` ```break",
    "</details><script>alert(1)</script>",
    "pipe|cell|break",
    "new\nline\n```\n## injected heading",
    "%%{init: {'theme':'forest'}}%%",
    "[click](https://example.invalid)",
    "bidi\u202eevil",
)


def hostile_plans() -> tuple[list[ProducerPlan], dict[str, ProducerModel]]:
    changes = [
        rc(f"digitalocean_droplet.d{i}", ["delete"], before={"name": name})
        for i, name in enumerate(HOSTILE)
    ]
    changes += [
        rc(f"digitalocean_droplet.k{i}", ["create"], after={"name": "x"})
        for i in range(len(HOSTILE))
    ]
    names = {f"digitalocean_droplet.k{i}": name for i, name in enumerate(HOSTILE)}
    prior = [
        {
            "address": f"digitalocean_droplet.k{i}",
            "mode": "managed",
            "type": "digitalocean_droplet",
            "name": f"k{i}",
            "values": {"name": "live|`name`\n</details>"},
        }
        for i in range(len(HOSTILE))
    ]
    droplets = tuple(
        Droplet(
            name=name,
            producer="quinn",
            source="@quinn/.infra.yaml",
            hosts=(name,),
            services=(Service(name, name),),
        )
        for name in HOSTILE
    )
    producer = "quinn|</details>`\n"
    plan = parse_plan(producer, synthetic(*changes, prior=prior), names)
    return [plan], {producer: ProducerModel(name=producer, droplets=droplets)}


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


MERMAID_LINE = re.compile(
    r"flowchart LR"
    r"|  classDef (created|updated|replaced|deleted|imported) [a-z0-9:#,\- ]+"
    r'|  (drop\d+(_svc\d+)?|gone\d+)\["[^"`%<>{}|\n]*"\]'
    r'|  drop\d+_host\d+\(\["[^"`%<>{}|\n]*"\]\)'
    r"|  drop\d+ --> drop\d+_svc\d+"
    r"|  drop\d+ -\. mesh \.- drop\d+_host\d+"
    r"|  class (drop|gone)\d+ (created|updated|replaced|deleted|imported)"
)


def test_hostile_names_cannot_break_the_markdown() -> None:
    plans, models = hostile_plans()
    md = format_markdown(plans, {}, models)
    lines = md.splitlines()
    # Table: header, separator and one row, each with the same number of cell borders.
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 3
    assert {unescaped_pipes(line) for line in table} == {9}
    # HTML: only our own details/summary tags survive; no script, no injected closing tag.
    assert md.count("<details") == md.count("</details>") == 1
    assert "<script" not in md and "<summary><strong>" in md
    # Headings and fences: only ours.
    assert [line for line in lines if line.startswith("#")] == ["## infra-apply plan"]
    fences = [line for line in lines if line.startswith("```") or line.startswith("~~~")]
    assert fences == ["```mermaid", "```"]
    body = md.split("```mermaid\n", 1)[1].split("\n```\n", 1)[0]
    for line in body.splitlines():
        assert MERMAID_LINE.fullmatch(line), line
    assert "%%" not in body and "`" not in body
    assert "#quot;" in body and "#96;" in body and "#37;#37;#123;init" in body
    # Every change is still listed on its own line.
    assert len([line for line in lines if line.startswith("- ⚠️ **destroy**")]) == len(HOSTILE)
    assert len([line for line in lines if line.startswith("- 🆕 create")]) == len(HOSTILE)


def test_hostile_names_stay_on_one_line_in_text() -> None:
    plans, _ = hostile_plans()
    text = format_text(plans)
    lines = text.splitlines()
    assert len(lines) == 1 + 2 * len(HOSTILE) + len(HOSTILE) + 1  # head, changes, drift, counts
    assert "\u202e" not in text and "\\u202e" in text
    assert "new\\nline\\n```" in text


def test_mermaid_ids_never_come_from_names() -> None:
    model = ProducerModel(
        name="quinn",
        droplets=(Droplet(name="end", producer="quinn", source="x", hosts=("graph",)),),
    )
    diagram = mermaid_diagram(model, ())
    assert '  drop0["end"]' in diagram and '  drop0_host0(["graph"])' in diagram


def test_markdown_of_a_huge_plan_is_truncated_under_the_limit() -> None:
    big = [
        rc(
            f"digitalocean_droplet.gone_{i}",
            ["delete"],
            before={"name": f"com.uvlava.quinn.box{i}"},
        )
        for i in range(2000)
    ]
    big += [
        rc(f"digitalocean_firewall.new_{i}", ["create"], after={"name": f"fw-{i}"})
        for i in range(3000)
    ]
    quinn = parse_plan("quinn", synthetic(*big), {})
    ct = parse_plan("ct", synthetic(*big[:100]), {})
    assert len(quinn.changes) == 5000
    md = format_markdown([quinn, ct], {}, {"quinn": QUINN_MODEL})
    assert len(md) <= MARKDOWN_LIMIT
    shown = len([line for line in md.splitlines() if line.startswith(("- ⚠️", "- 🆕"))])
    assert 0 < shown < 5000
    assert md.endswith(
        f"… truncated: {5100 - shown} more changes; "
        "run infra-apply plan locally for the full list\n"
    )
    # Truncation never leaves a section or a fence open, and the table is intact.
    assert md.count("<details") == md.count("</details>")
    assert "| quinn | 3000 | 0 | 0 | 2000 | 0 | 0 |" in md
    assert "| ct | 0 | 0 | 0 | 100 | 0 | 0 |" in md


def test_markdown_with_huge_names_still_fits() -> None:
    changes = [
        rc(f"digitalocean_droplet.d{i}", ["delete"], before={"name": "n" * 100_000})
        for i in range(3)
    ]
    plan = parse_plan("p" * 100_000, synthetic(*changes), {})
    assert len(format_markdown([plan], {}, {})) <= MARKDOWN_LIMIT


# ---------------------------------------------------------------------------------------------
# Determinism


def test_same_plan_in_any_order_renders_byte_identically() -> None:
    raw = load("replace_delete")
    shuffled = {**raw, "resource_changes": list(reversed(raw["resource_changes"]))}
    a = [parse_plan("quinn", raw, NAMES)]
    b = [parse_plan("quinn", shuffled, NAMES)]
    assert a == b
    assert all_formats(a, {"quinn": QUINN_MODEL}) == all_formats(b, {"quinn": QUINN_MODEL})


def test_verdict_ok_means_nothing_blocked() -> None:
    assert GuardVerdict().ok
    change = Change(
        address="digitalocean_droplet.a", type="digitalocean_droplet", name="a", action="delete"
    )
    assert not GuardVerdict(blocked=(change,)).ok


# ---------------------------------------------------------------------------------------------
# Goldens


@pytest.mark.parametrize("ext", list(FORMATS))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_format_prints_its_golden_byte_for_byte(scenario: str, ext: str) -> None:
    assert render_golden(scenario, ext) == read_golden(scenario, ext)
