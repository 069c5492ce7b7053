"""A shared cluster's trusted sources: the model (owner, hosts' tag), the rendered firewall, the
plan's review (what a change removes and whom it cuts off) and the guard's verdict on it.
tests/e2e/test_e2e_trusted.py runs the same through real Terraform and the sandbox provider."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from infra_apply.cloud.do_api import AccountDroplet
from infra_apply.errors import InfraApplyError
from infra_apply.manifests.build import build_model
from infra_apply.manifests.model import Model, ProducerModel
from infra_apply.manifests.validate import validate_tree
from infra_apply.plan import trusted
from infra_apply.plan.exists import Account
from infra_apply.plan.guard import guard, refusal_message, unused_allowances
from infra_apply.plan.parse import Change, ProducerPlan
from infra_apply.render.module import Ledger, render_producer
from tests.conftest import EXAMPLE_TREE

FW = "digitalocean_database_firewall.uvlava-pg"
TAG = ("tag", "db-uvlava-pg")
OPERATOR = ("ip_addr", "203.0.113.4/32")


@pytest.fixture(scope="module")
def model() -> Model:
    return build_model(validate_tree(EXAMPLE_TREE))


def _producer(model: Model, name: str) -> ProducerModel:
    found = model.producer(name)
    assert found is not None
    return found


def test_the_owner_holds_the_trusted_sources_and_every_producers_hosts_carry_the_tag(model: Model) -> None:
    quinn = _producer(model, "quinn")
    [ts] = quinn.trusted_sources
    assert (ts.cluster, ts.tag, ts.allow) == ("uvlava-pg", "db-uvlava-pg", ("203.0.113.4/32",))
    # the droplets whose hosts run a project with a database on the cluster, in every producer
    assert ts.hosts == (
        ("com.uvlava.ct.services", "ct"),
        ("com.uvlava.mc.services", "mc"),
        ("com.uvlava.quinn.mcp", "quinn"),
    )
    assert _producer(model, "ct").trusted_sources == () == _producer(model, "mc").trusted_sources
    tagged = {d.name for p in model.producers for d in p.droplets if d.trusted_tags == ("db-uvlava-pg",)}
    assert tagged == {name for name, _ in ts.hosts}


def test_the_owner_renders_one_firewall_whose_rules_follow_no_droplet(model: Model) -> None:
    quinn = _producer(model, "quinn")
    text = render_producer(quinn, Ledger()).files["databases.tf"]
    assert text.count('resource "digitalocean_database_firewall"') == 1
    firewall = text.split('resource "digitalocean_database_firewall"')[1]
    assert 'value = "db-uvlava-pg"' in firewall and 'value = "203.0.113.4/32"' in firewall
    assert "droplet" not in firewall
    # droplets come and go: the rule list stays as it is (the file's source header may not:
    # a droplet in the cluster's VPC is one of its sources)
    [ts] = quinn.trusted_sources
    gone = replace(quinn, trusted_sources=(replace(ts, hosts=ts.hosts[:1]),), droplets=quinn.droplets[:1])
    after = render_producer(gone, Ledger()).files["databases.tf"]
    assert after.split('resource "digitalocean_database_firewall"')[1] == firewall
    for other in ("ct", "mc"):
        files = render_producer(_producer(model, other), Ledger()).files
        assert "digitalocean_database_firewall" not in files["databases.tf"]
        assert '"db-uvlava-pg"' in files["droplets.tf"]
    names = render_producer(quinn, Ledger()).names
    assert names[FW] == "uvlava-pg"  # what --allow-trusted-sources names


def test_an_owner_that_is_not_a_producer_is_a_located_error(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    shutil.copytree(EXAMPLE_TREE, root)
    toml = root / "infra-apply.toml"
    toml.write_text(toml.read_text().replace('owner = "quinn"', 'owner = "qiunn"'))
    # validate says it (a CI gate running validate alone must not pass it) ...
    [problem] = [p for p in validate_tree(root).problems if p.rule == "cluster_owner"]
    assert (problem.path, problem.line, problem.level) == ("infra-apply.toml", 19, "error")
    assert "owner 'qiunn' is not a producer of the tree" in problem.message
    # ... and the model refuses to be built from it
    with pytest.raises(InfraApplyError) as caught:
        build_model(validate_tree(root))
    line = caught.value.format()
    assert "owner 'qiunn' is not a producer" in line


# --- the review of a plan --------------------------------------------------------------------


def _raw(
    action: str, before: list[tuple[str, str]] | None, after: list[tuple[str, str]], **extra: Any
) -> Any:
    def rules(pairs: list[tuple[str, str]] | None) -> Any:
        return (
            None
            if pairs is None
            else {"cluster_id": "c1", "rule": [{"type": t, "value": v} for t, v in pairs]}
        )

    return {
        "resource_changes": [
            {
                "address": FW,
                "type": "digitalocean_database_firewall",
                "change": {"actions": [action], "before": rules(before), "after": rules(after)},
            },
            *extra.get("droplets", []),
        ],
        "resource_drift": extra.get("drift", []),
    }


def _droplet(name: str, *tags: str) -> AccountDroplet:
    return AccountDroplet(
        str(abs(hash(name)) % 10**6), name, "nyc3", "s-1vcpu-1gb", "x", None, None, tuple(tags)
    )


def _account(rules: list[tuple[str, str]], *droplets: AccountDroplet) -> Account:
    return Account("the sandbox account", tuple(droplets), rules={"uvlava-pg": tuple(sorted(rules))})


def _reviewed(model: Model, raw: Any, account: Account | None, action: str = "create") -> Change:
    plan = ProducerPlan("quinn", (Change(FW, "digitalocean_database_firewall", "uvlava-pg", action),))  # type: ignore[arg-type]
    [change] = trusted.review(plan, raw, _producer(model, "quinn"), account, keep=("--sandbox",)).changes
    return change


TAGGED = [_droplet(n, "db-uvlava-pg") for n in ("com.uvlava.ct.services", "com.uvlava.mc.services")]


def test_the_first_rules_cut_off_every_client_not_listed(model: Model) -> None:
    change = _reviewed(model, _raw("create", None, [TAG, OPERATOR]), _account([], *TAGGED))
    assert change.cuts_off == ("every client not listed (the cluster trusts any address now)",)
    diff = change.diff("rule")
    assert (
        diff is not None and diff.added == ("ip_addr 203.0.113.4/32", "tag db-uvlava-pg") and not diff.removed
    )
    verdict = guard(ProducerPlan("quinn", (change,)), (), ())
    assert refusal_message(verdict) == (
        f"create {FW} (uvlava-pg): cuts off every client not listed (the cluster trusts any address now) "
        "— rerun with --allow-trusted-sources uvlava-pg"
    )
    assert guard(ProducerPlan("quinn", (change,)), (), (), (), ("uvlava-pg",)).ok
    assert not guard(ProducerPlan("quinn", (change,)), ("uvlava-pg",), ("uvlava-pg",)).ok  # no other flag


def test_every_rule_a_change_removes_is_named_hand_made_ones_included(model: Model) -> None:
    hand_made = ("ip_addr", "198.51.100.7")
    # created over a cluster that already trusts a hand-made address: the PUT drops it
    created = _reviewed(model, _raw("create", None, [TAG, OPERATOR]), _account([hand_made, TAG], *TAGGED))
    assert created.cuts_off == ("ip_addr 198.51.100.7 (a rule made outside infra-apply)",)
    # an update after a hand edit (refresh read it into state; the drift says it was not there)
    drift = [{"address": FW, "change": {"before": {"rule": [{"type": "tag", "value": "db-uvlava-pg"}]}}}]
    raw = _raw("update", [TAG, hand_made], [TAG, OPERATOR], drift=drift)
    updated = _reviewed(model, raw, _account([TAG, hand_made], *TAGGED), "update")
    assert updated.cuts_off == ("ip_addr 198.51.100.7 (a rule made outside infra-apply)",)
    rules = updated.diff("rule")
    assert rules is not None and rules.render() == "rule -ip_addr 198.51.100.7, +ip_addr 203.0.113.4/32"
    assert not guard(ProducerPlan("quinn", (updated,)), (), ()).ok


def test_a_change_that_cuts_nobody_off_needs_no_flag(model: Model) -> None:
    # the cluster already trusts exactly these: creating the resource (or adding a rule) keeps all
    created = _reviewed(model, _raw("create", None, [TAG, OPERATOR]), _account([TAG, OPERATOR], *TAGGED))
    added = _reviewed(model, _raw("update", [TAG], [TAG, OPERATOR]), _account([TAG], *TAGGED), "update")
    for change in (created, added):
        assert change.cuts_off == ()
        plan = ProducerPlan("quinn", (change,))
        assert guard(plan, (), ()).ok
        # named anyway: the flag allows nothing here, and says so
        [unused] = unused_allowances(plan, (), (), (), ("uvlava-pg",))
        assert (
            unused.message
            == "--allow-trusted-sources uvlava-pg matches no trusted-sources change in the plan for quinn"
        )


def test_a_change_nobody_reviewed_is_refused() -> None:
    # no review, no account read: the guard cannot know whom it cuts off
    for action in ("create", "update", "replace", "delete"):
        change = Change(FW, "digitalocean_database_firewall", "uvlava-pg", action)  # type: ignore[arg-type]
        assert not guard(ProducerPlan("quinn", (change,)), (), ()).ok, action
        assert guard(ProducerPlan("quinn", (change,)), (), (), (), ("uvlava-pg",)).ok


def test_a_host_not_tagged_yet_would_lose_its_database(model: Model) -> None:
    untagged = _droplet("com.uvlava.mc.services", "producer:mc")
    change = _reviewed(
        model, _raw("create", None, [TAG, OPERATOR]), _account([TAG, OPERATOR], TAGGED[0], untagged)
    )
    assert change.cuts_off == (
        "droplet com.uvlava.mc.services (it hosts a project using uvlava-pg and does not carry tag "
        "db-uvlava-pg yet; to keep it, run infra-apply apply --producer mc --sandbox first)",
    )
    assert not guard(ProducerPlan("quinn", (change,)), (), ()).ok
    # this plan tags its own host: not cut off
    quinn_host = _droplet("com.uvlava.quinn.mcp")
    tags_it = {
        "address": "digitalocean_droplet.quinn_mcp",
        "type": "digitalocean_droplet",
        "change": {
            "actions": ["update"],
            "after": {"name": "com.uvlava.quinn.mcp", "tags": ["db-uvlava-pg"]},
        },
    }
    raw = _raw("create", None, [TAG, OPERATOR], droplets=[tags_it])
    assert _reviewed(model, raw, _account([TAG, OPERATOR], *TAGGED, quinn_host)).cuts_off == ()


def test_a_destroy_opens_the_cluster_and_is_refused(model: Model) -> None:
    change = _reviewed(
        model, _raw("delete", [TAG, OPERATOR], []), _account([TAG, OPERATOR], *TAGGED), "delete"
    )
    rules = change.diff("rule")
    assert rules is not None and rules.removed == ("ip_addr 203.0.113.4/32", "tag db-uvlava-pg")
    refused = guard(ProducerPlan("quinn", (change,)), ("uvlava-pg",), ())
    assert refusal_message(refused).endswith("rerun with --allow-trusted-sources uvlava-pg")
