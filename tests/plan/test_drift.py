"""The drift core (infra_apply/plan/drift.py), the drift formats (infra_apply/report/drift.py) and the
live listing of tagged droplets, on synthetic refresh-only plans and a local API stand-in."""

from __future__ import annotations

import dataclasses
import json
from types import MappingProxyType
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from infra_apply import kinds
from infra_apply.manifests.model import ProducerModel
from infra_apply.plan.drift import (
    DriftReport,
    Duplicate,
    Orphan,
    ProducerDrift,
    StateDroplet,
    applied,
    duplicates,
    is_noise,
    name_drift,
    orphans,
    outside_changes,
    stale_registry_droplets,
    state_droplets,
)
from infra_apply.plan.parse import NameDrift
from infra_apply.registry.mesh import HostChange
from infra_apply.report.drift import MARKDOWN_LIMIT, MARKER, format_json, format_markdown, format_text

MANAGED = "managed-by:infra-apply"
NAMES = {
    "digitalocean_droplet.dns": "com.uvlava.dns",
    "digitalocean_firewall.dns": "com.uvlava.dns",
    "digitalocean_droplet.quinn_mcp": "com.uvlava.quinn.mcp",
}


def drift_entry(address: str, actions: list[str], before: Any, after: Any) -> dict[str, Any]:
    rtype, name = address.split(".")
    return {
        "address": address,
        "mode": "managed",
        "type": rtype,
        "name": name,
        "change": {"actions": actions, "before": before, "after": after, "after_unknown": {}},
    }


def droplet_state(address: str, droplet_id: str, name: str) -> dict[str, Any]:
    return {
        "address": address,
        "mode": "managed",
        "type": "digitalocean_droplet",
        "name": address.split(".")[1],
        "values": {"id": droplet_id, "name": name},
    }


def refresh_plan(*drift: dict[str, Any], prior: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "format_version": "1.2",
        "resource_drift": list(drift),
        "resource_changes": [],
        "prior_state": {"values": {"root_module": {"resources": prior or []}}},
    }


FIREWALL = {"name": "com.uvlava.dns", "droplet_ids": [1003], "inbound_rule": []}
NOISE = drift_entry(
    "digitalocean_firewall.dns", ["update"], {**FIREWALL, "tags": None}, {**FIREWALL, "tags": []}
)


def test_firewall_tags_noise_is_left_out_and_real_drift_kept() -> None:
    droplets_gone = drift_entry(
        "digitalocean_firewall.dns",
        ["update"],
        {**FIREWALL, "tags": None},
        {**FIREWALL, "droplet_ids": [], "tags": []},
    )
    retagged = drift_entry(
        "digitalocean_droplet.dns",
        ["update"],
        {"name": "com.uvlava.dns", "tags": ["a"]},
        {"name": "com.uvlava.dns", "tags": ["a", "b"]},
    )
    assert is_noise(NOISE) and not is_noise(droplets_gone) and not is_noise(retagged)
    found = outside_changes("quinn", refresh_plan(NOISE, retagged), NAMES)
    assert [(c.address, c.action, c.updated_attrs) for c in found] == [
        ("digitalocean_droplet.dns", "update", ("tags",))
    ]
    # a firewall whose droplet went away is drift, even with the noisy tags beside it
    found = outside_changes("quinn", refresh_plan(droplets_gone), NAMES)
    assert [c.updated_attrs for c in found] == [("droplet_ids",)]


def test_resize_and_deletion_outside_terraform() -> None:
    resized = drift_entry(
        "digitalocean_droplet.quinn_mcp",
        ["update"],
        {"name": "com.uvlava.quinn.mcp", "size": "s-1vcpu-1gb", "disk": 25},
        {"name": "com.uvlava.quinn.mcp", "size": "s-2vcpu-4gb", "disk": 80},
    )
    deleted = drift_entry("digitalocean_droplet.dns", ["delete"], {"name": "com.uvlava.dns"}, None)
    found = outside_changes("quinn", refresh_plan(resized, deleted), NAMES)
    text = format_text(DriftReport((ProducerDrift("quinn", outside=found),)))
    assert text == (
        "Producer quinn:\n"
        "  ! deleted outside Terraform: com.uvlava.dns (digitalocean_droplet.dns)\n"
        "  ! resized outside Terraform: com.uvlava.quinn.mcp (digitalocean_droplet.quinn_mcp): "
        'size "s-1vcpu-1gb" → "s-2vcpu-4gb"\n'
        "Drift found.\n"
    )


def test_name_drift_and_state_ids_come_from_the_refreshed_prior_state() -> None:
    plan = refresh_plan(
        prior=[
            droplet_state("digitalocean_droplet.dns", "1003", "dns-renamed-by-hand"),
            droplet_state("digitalocean_droplet.quinn_mcp", "1002", "com.uvlava.quinn.mcp"),
        ]
    )
    [drift] = name_drift("quinn", plan, NAMES)
    assert (drift.address, drift.live_name, drift.manifest_name) == (
        "digitalocean_droplet.dns",
        "dns-renamed-by-hand",
        "com.uvlava.dns",
    )
    assert {d.id for d in state_droplets("quinn", plan)} == {"1002", "1003"}
    text = format_text(DriftReport((ProducerDrift("quinn", names=(drift,)),)))
    assert "infra-apply rename --producer quinn com.uvlava.dns" in text


def test_orphans_only_for_the_producers_checked() -> None:
    tagged = [
        Orphan("1", "known", (MANAGED, "producer:quinn")),
        Orphan("2", "stray-quinn", (MANAGED, "producer:quinn")),
        Orphan("3", "stray-ct", (MANAGED, "producer:ct")),
        Orphan("4", "stray-untagged-producer", (MANAGED,)),
        Orphan("5", "not-ours", ("producer:quinn",)),
    ]
    names = lambda found: [o.name for o in found]  # noqa: E731
    assert names(orphans(tagged, {"1"}, ["quinn"], every_producer=False)) == ["stray-quinn"]
    assert names(orphans(tagged, {"1"}, ["ct", "quinn"], every_producer=True)) == [
        "stray-ct",
        "stray-quinn",
        "stray-untagged-producer",
    ]


def test_registry_entries_for_droplets_state_no_longer_has() -> None:
    doc = {
        "hosts": {
            "forge": {"droplet": "com.uvlava.quinn.artifacts", "producer": "quinn"},
            "old": {"droplet": "com.uvlava.quinn.old", "producer": "quinn"},
            "lime": {"droplet": "com.uvlava.ct.old", "producer": "ct"},
            "wg": {"mesh_ip": "10.9.0.1"},
        }
    }
    assert stale_registry_droplets(doc, "quinn", ["com.uvlava.quinn.artifacts"]) == ["com.uvlava.quinn.old"]


HOSTILE = "evil<img src=x onerror=alert(1)>|`x`\n## injected"


def test_markdown_is_one_issue_body_with_inert_names() -> None:
    report = DriftReport(
        (
            ProducerDrift("quinn", mesh=(HostChange("added", "dns", "10.9.0.4", "com.uvlava.dns"),)),
            ProducerDrift("ct", mesh_checked=False),
        ),
        orphans=(Orphan("77", HOSTILE, (MANAGED, "producer:quinn")),),
    )
    md = format_markdown(report)
    assert md.startswith(MARKER + "\n## infra-apply drift\n")
    assert "| quinn | 0 | 0 | 1 |" in md and "| ct | 0 | 0 | not checked |" in md
    assert "<img" not in md and "\n## injected" not in md and "`x`" not in md
    assert "host dns (droplet com.uvlava.dns) is missing from mesh-hosts.json" in md
    clean = format_markdown(DriftReport((ProducerDrift("quinn"),), sandbox=True))
    assert clean.startswith(MARKER + "\n## infra-apply drift (sandbox)\n\nNo drift")


def test_markdown_is_cut_at_the_limit_with_a_note() -> None:
    many = tuple(Orphan(str(i), f"stray-{i:05d}-" + "x" * 150, (MANAGED,)) for i in range(2000))
    md = format_markdown(DriftReport((), orphans=many))
    assert len(md) <= MARKDOWN_LIMIT
    assert md.endswith("… truncated: run infra-apply drift locally for the full report\n")
    md = format_markdown(DriftReport((), orphans=many, sandbox=True))
    assert len(md) <= MARKDOWN_LIMIT
    assert md.endswith("… truncated: run infra-apply drift --sandbox locally for the full report\n")


def test_json_document() -> None:
    report = DriftReport(
        (ProducerDrift("quinn", mesh=(HostChange("updated", "mcp", "10.9.0.5", "m", ("public_ip",)),)),),
        orphans=(Orphan("9", "stray", (MANAGED, "producer:quinn")),),
    )
    doc = json.loads(format_json(report))
    assert doc["format_version"] == 1 and doc["drift"] is True and doc["sandbox"] is False
    assert doc["producers"]["quinn"]["mesh"] == {
        "checked": True,
        "hosts": [
            {
                "change": "updated",
                "host": "mcp",
                "mesh_ip": "10.9.0.5",
                "droplet": "m",
                "fields": ["public_ip"],
            }
        ],
    }
    assert doc["orphans"] == [
        {"id": "9", "name": "stray", "producer": "quinn", "tags": [MANAGED, "producer:quinn"]}
    ]
    assert json.loads(format_json(DriftReport((ProducerDrift("quinn"),))))["drift"] is False


def test_live_listing_asks_for_the_tag_once_per_account_page_by_page(httpserver: HTTPServer) -> None:
    seen: list[tuple[str, str, str]] = []
    droplets = [{"id": 100 + i, "name": f"d{i}", "tags": [MANAGED]} for i in range(3)]

    def handler(request: Request) -> Response:
        page = int(request.args.get("page", "1"))
        seen.append((request.headers["Authorization"], request.args.get("tag_name", ""), str(page)))
        body: dict[str, Any] = {"droplets": droplets[(page - 1) * 2 : page * 2], "meta": {"total": 3}}
        if page == 1:
            body["links"] = {"pages": {"next": "https://api.digitalocean.com/v2/droplets?page=2"}}
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request("/v2/droplets").respond_with_handler(handler)
    from infra_apply.cloud.account import LiveAccount
    from infra_apply.render.output import Rendered
    from infra_apply.runtime.workcopy import Prepared

    preps = [
        Prepared(ProducerModel(p), Rendered(p, {}), None, api_token=t)  # type: ignore[arg-type]
        for p, t in (("a", "tok-a"), ("b", "tok-a"), ("c", "tok-b"))
    ]
    found = LiveAccount().tagged_droplets(preps, {"DIGITALOCEAN_API_URL": httpserver.url_for("/")}, MANAGED)
    assert sorted(str(d["id"]) for d in found) == ["100", "101", "102"]
    assert seen == [
        ("Bearer tok-a", MANAGED, "1"),
        ("Bearer tok-a", MANAGED, "2"),
        ("Bearer tok-b", MANAGED, "1"),
        ("Bearer tok-b", MANAGED, "2"),
    ]


def test_every_remedy_is_a_command_for_where_the_drift_was_found() -> None:
    """A sandbox report's commands carry --sandbox (without it they would act on the real
    account and mesh-hosts.json); a host for a droplet not in state is put right by an apply when
    a manifest declares the droplet (register never removes a host), by hand when none does."""
    quinn = ProducerDrift(
        "quinn",
        names=(NameDrift("digitalocean_droplet.dns", "com.uvlava.dns", "dns-by-hand"),),
        mesh=(
            HostChange("added", "dns", "10.9.0.4", "com.uvlava.dns"),
            HostChange("removed", "forge", "10.9.0.6", "com.uvlava.quinn.artifacts"),
            HostChange("removed", "old", "10.9.0.7", "com.uvlava.quinn.old"),
        ),
        declared=frozenset({"com.uvlava.dns", "com.uvlava.quinn.artifacts"}),
    )
    strays = (
        Orphan("7", "com.uvlava.quinn.artifacts", (MANAGED, "producer:quinn")),
        Orphan("8", "stray", (MANAGED, "producer:quinn")),
    )
    text = format_text(DriftReport((quinn,), strays, sandbox=True))
    assert text.splitlines() == [
        "Producer quinn:",
        '  ! name drift: digitalocean_droplet.dns is live as "dns-by-hand" but the manifest says '
        '"com.uvlava.dns" — run infra-apply rename --producer quinn com.uvlava.dns --sandbox',
        "  ! host dns (droplet com.uvlava.dns) is missing from mesh-hosts.json "
        "— run infra-apply register --producer quinn --sandbox",
        "  ! host forge (droplet com.uvlava.quinn.artifacts) is in mesh-hosts.json but the droplet is "
        "not in state — run infra-apply apply --producer quinn --sandbox",
        "  ! host old (droplet com.uvlava.quinn.old) is in mesh-hosts.json but the droplet is not in "
        "state — no manifest declares it: remove the host from mesh-hosts.json (net-tools owns it)",
        "Drift found.",
        "",
        "Droplets no state knows:",
        "  ! droplet com.uvlava.quinn.artifacts (id 7) is tagged managed-by:infra-apply but no state "
        "knows it (tags: managed-by:infra-apply, producer:quinn): a manifest of quinn declares it: run "
        "infra-apply adopt --producer quinn --sandbox (the next apply takes it over), or destroy it",
        "  ! droplet stray (id 8) is tagged managed-by:infra-apply but no state knows it (tags: "
        "managed-by:infra-apply, producer:quinn): no manifest checked declares it: destroy it, or "
        "declare it and adopt it into a producer",
    ]
    live = format_text(DriftReport((quinn,), strays))
    assert "--sandbox" not in live and "run infra-apply register --producer quinn\n" in live
    md = format_markdown(DriftReport((quinn,), strays, sandbox=True))
    assert "— run `infra-apply register --producer quinn --sandbox`" in md
    assert "run `infra-apply rename --producer quinn com.uvlava.dns --sandbox`" in md


def test_a_producer_not_applied_yet_is_no_drift_and_says_how_to_apply_it() -> None:
    waiting = ProducerDrift("quinn", mesh_checked=False, applied=False)
    report = DriftReport((waiting, ProducerDrift("ct")))
    assert not report.drifted
    assert format_text(report) == (
        "Producer quinn:\n  not applied yet: run infra-apply apply --producer quinn\nNothing to compare.\n\n"
        "Producer ct:\nNo drift.\n"
    )
    md = format_markdown(report)
    assert "| quinn | not applied yet | - | - |" in md and "| ct | 0 | 0 | 0 |" in md
    assert "- quinn: not applied yet: run `infra-apply apply --producer quinn`\n" in md
    doc = json.loads(format_json(report))
    assert (doc["drift"], doc["producers"]["quinn"]["applied"], doc["producers"]["ct"]["applied"]) == (
        False,
        False,
        True,
    )


def test_a_producer_without_state_whose_droplets_exist_is_told_to_adopt_never_to_apply() -> None:
    """A lost or moved state: an apply would create every droplet a second time."""
    declared = frozenset({"com.uvlava.dns"})
    waiting = ProducerDrift("quinn", mesh_checked=False, applied=False, declared=declared)
    for stray in (Orphan("5", "com.uvlava.dns", (MANAGED,)), Orphan("6", "x", (MANAGED, "producer:quinn"))):
        text = format_text(DriftReport((waiting,), (stray,)))
        assert text.splitlines()[1:3] == [
            "  no state here, yet droplets of it exist (below): do not apply, it would create them "
            "again; take them over first with infra-apply adopt --producer quinn --from-state FILE "
            "(FILE: the old state) or infra-apply adopt --producer quinn (by name)",
            "Nothing to compare.",
        ]
        assert "infra-apply apply" not in text


def test_applied_means_managed_state_or_something_deleted_outside_terraform() -> None:
    data_source = {"address": "data.x.y", "mode": "data", "type": "x", "name": "y", "values": {}}
    assert not applied(refresh_plan(prior=[data_source]))
    assert applied(refresh_plan(prior=[droplet_state("digitalocean_droplet.dns", "1003", "com.uvlava.dns")]))
    gone = drift_entry("digitalocean_droplet.dns", ["delete"], {"name": "com.uvlava.dns"}, None)
    assert applied(refresh_plan(gone))  # every resource deleted by hand: still applied, and drift


def test_a_tagged_second_droplet_under_a_name_in_state_is_a_duplicate_not_an_orphan() -> None:
    """adopt finds nothing to take over for it (the name is in state), so it must never be told
    to: the report names both ids and how to destroy the copy by hand, in every format."""
    in_state = [StateDroplet("1003", "com.uvlava.dns", "quinn")]
    tagged = [
        Orphan("1003", "com.uvlava.dns", (MANAGED, "producer:quinn")),  # the one in state
        Orphan("2001", "com.uvlava.dns", (MANAGED, "producer:quinn")),  # its copy
        Orphan("2002", "stray", (MANAGED, "producer:quinn")),
    ]
    found = orphans(tagged, {"1003"}, ["quinn"], False, in_state)
    assert [o.id for o in found] == ["2002"]
    [dup] = duplicates(tagged, in_state, ["quinn"], False)
    assert (dup.id, dup.name, dup.state_id, dup.owner) == ("2001", "com.uvlava.dns", "1003", "quinn")
    report = DriftReport((ProducerDrift("quinn"),), found, duplicates=(dup,))
    assert report.drifted
    text = format_text(report)
    assert text.splitlines()[3:5] == [
        "Duplicates of droplets in state:",
        "  ! droplet com.uvlava.dns (id 2001) is a duplicate: the state of quinn holds droplet 1003 "
        "under that name (tags: managed-by:infra-apply, producer:quinn). infra-apply neither adopts "
        "nor destroys it, and it is billed: check it is not in use (doctl compute droplet get 2001), "
        "then destroy it by hand with doctl compute droplet delete 2001",
    ]
    assert "adopt" not in text.split("Droplets no state knows:")[0].replace("neither adopts", "")
    doc = json.loads(format_json(report))
    assert [(d["id"], d["name"], d["state_id"], d["producer"]) for d in doc["duplicates"]] == [
        ("2001", "com.uvlava.dns", "1003", "quinn")
    ]
    assert "doctl compute droplet delete 2001" in doc["duplicates"][0]["message"]
    assert [o["id"] for o in doc["orphans"]] == ["2002"]
    md = format_markdown(report)
    assert "### Duplicates of droplets in state" in md
    assert "`doctl compute droplet delete 2001`" in md


def test_a_sandbox_duplicate_is_deleted_from_the_sandbox_cloud_never_through_doctl() -> None:
    dup = Duplicate(Orphan("2001", "com.uvlava.dns", (MANAGED,)), "1003", "quinn")
    report = DriftReport(sandbox=True, duplicates=(dup,), cloud="/s/cloud.json")
    text = format_text(report)
    assert "doctl" not in text
    assert 'cloud.delete_droplet("/s/cloud.json", "2001")' in text


def _rule(ports: str, *sources: str, protocol: str = "tcp") -> dict[str, Any]:
    return {
        "protocol": protocol,
        "port_range": ports,
        "source_addresses": list(sources),
        "source_droplet_ids": None,
        "source_kubernetes_ids": None,
        "source_load_balancer_uids": None,
        "source_tags": None,
    }


def test_a_firewall_rule_changed_outside_terraform_is_told_rule_by_rule_in_every_format() -> None:
    """Not a bare ``inbound_rule``: which rule went, which came, with protocol, ports and sources."""
    ssh = _rule("22", "10.9.0.0/24")
    before = {**FIREWALL, "inbound_rule": [ssh, _rule("443", "0.0.0.0/0", "::/0")]}
    after = {**FIREWALL, "inbound_rule": [ssh, _rule("443", "203.0.113.7"), _rule("", protocol="icmp")]}
    edited = drift_entry("digitalocean_firewall.dns", ["update"], before, after)
    found = outside_changes("quinn", refresh_plan(edited), NAMES)
    report = DriftReport((ProducerDrift("quinn", outside=found),))
    rules = "inbound_rule -tcp 443 from 0.0.0.0/0, ::/0; +tcp 443 from 203.0.113.7; +icmp from nowhere"
    assert rules in format_text(report)
    assert rules.replace("_", "\\_") in format_markdown(report)
    [diff] = json.loads(format_json(report))["producers"]["quinn"]["outside"][0]["diffs"]
    assert diff["removed_rules"] == [{"protocol": "tcp", "ports": "443", "sources": ["0.0.0.0/0", "::/0"]}]
    assert diff["added_rules"] == [
        {"protocol": "tcp", "ports": "443", "sources": ["203.0.113.7"]},
        {"protocol": "icmp", "ports": "", "sources": []},
    ]
    assert diff["removed"] == ["tcp 443 from 0.0.0.0/0, ::/0"]


def test_drift_looks_for_the_orphans_of_the_kinds_the_table_marks_and_no_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prior = [
        droplet_state("digitalocean_droplet.dns", "1003", "com.uvlava.dns"),
        {**droplet_state("digitalocean_firewall.dns", "fw-1", "fw-dns"), "type": "digitalocean_firewall"},
    ]
    plan = refresh_plan(prior=prior)
    # a firewall carries no managed-by tag to be found by: its entry says it is not looked for
    assert [d.id for d in state_droplets("quinn", plan)] == ["1003"]
    table = {**kinds.KINDS, kinds.DROPLET.type: dataclasses.replace(kinds.DROPLET, orphans="not-looked-for")}
    monkeypatch.setattr(kinds, "KINDS", MappingProxyType(table))
    assert state_droplets("quinn", plan) == []
