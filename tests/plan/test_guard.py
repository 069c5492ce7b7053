"""The guard: what `apply` refuses, and the exact flag that would allow it."""

from __future__ import annotations

from infra_apply.plan.guard import GuardVerdict, allow_flag, guard, refusal_message, unused_allowances
from infra_apply.plan.model import parse_plan
from infra_apply.plan.parse import Change, ProducerPlan
from tests.plan_fixtures import NAMES, RESIZE_NAMES, parsed, rc, synthetic


def test_guard_refuses_destroying_or_replacing_droplets_databases_and_users() -> None:
    verdict = guard(parsed("replace_delete"), (), ())
    assert not verdict.ok
    assert sorted((c.action, c.address) for c in verdict.blocked) == [
        ("delete", "digitalocean_database_db.quinn_forge_prod"),
        ("delete", "digitalocean_database_user.quinn_forge_prod"),
        ("delete", "digitalocean_droplet.quinn_mcp"),
        ("replace", "digitalocean_droplet.quinn_artifacts"),
    ]  # its firewall goes with the droplet: refused with it, on the droplet's line


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
    assert [c.address for c in guard(plan, (), ()).blocked] == ["digitalocean_droplet.quinn_artifacts"]


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


def test_verdict_ok_means_nothing_blocked() -> None:
    assert GuardVerdict().ok
    change = Change(address="digitalocean_droplet.a", type="digitalocean_droplet", name="a", action="delete")
    assert not GuardVerdict(blocked=(change,)).ok


# ---------------------------------------------------------------------------------------------
# In-place resizes: downtime and a disk that never shrinks back, consented to by --allow-resize


def resize_plan() -> ProducerPlan:
    return parsed("resize_ports", names=RESIZE_NAMES)


def test_guard_refuses_an_in_place_resize_until_allowed_by_name_or_address() -> None:
    plan = resize_plan()
    verdict = guard(plan, (), ())
    assert [c.address for c in verdict.blocked] == ["digitalocean_droplet.dns"]
    assert allow_flag(verdict.blocked[0]) == "--allow-resize"
    for token in ("com.uvlava.dns", "digitalocean_droplet.dns"):
        assert guard(plan, (), (), [token]).ok, token
    # The firewall updates (ports opened and closed) are called out, never refused.
    assert guard(plan, (), (), ["com.uvlava.dns"]).blocked == ()


def test_allowing_a_destroy_or_replace_does_not_allow_a_resize() -> None:
    plan = resize_plan()
    assert not guard(plan, ["com.uvlava.dns"], ["com.uvlava.dns"]).ok
    # ...and --allow-resize allows neither a destroy nor a replacement.
    replace_delete = parsed("replace_delete")
    verdict = guard(replace_delete, (), (), ["com.uvlava.quinn.artifacts", "com.uvlava.quinn.mcp"])
    assert {"digitalocean_droplet.quinn_artifacts", "digitalocean_droplet.quinn_mcp"} <= {
        c.address for c in verdict.blocked
    }


def test_refusal_of_a_resize_says_downtime_one_way_disk_and_the_flag() -> None:
    assert refusal_message(guard(resize_plan(), (), ())) == (
        'resize digitalocean_droplet.dns (com.uvlava.dns): size "s-1vcpu-1gb" → "s-1vcpu-2gb": '
        "downtime (powered off, resized, powered on); the disk grows and can never be shrunk "
        "back — rerun with --allow-resize com.uvlava.dns"
    )


def test_a_counted_or_importing_droplet_resize_is_guarded_too() -> None:
    plan = parse_plan(
        "ct",
        synthetic(
            rc(
                "digitalocean_droplet.ct_gpu[0]",
                ["update"],
                before={"size": "gpu-h100x1-80gb"},
                after={"size": "gpu-h100x8-640gb"},
                importing={"id": "41"},
            )
        ),
        NAMES,
    )
    assert [c.address for c in guard(plan, (), ()).blocked] == ["digitalocean_droplet.ct_gpu[0]"]
    for token in ("digitalocean_droplet.ct_gpu[0]", "digitalocean_droplet.ct_gpu", "com.uvlava.ct.gpu"):
        assert guard(plan, (), (), [token]).ok, token


def test_unused_allow_resize_warns_and_points_at_the_right_flag() -> None:
    unused = unused_allowances(resize_plan(), (), ["com.uvlava.dns"], ["com.uvlava.dnss"])
    assert [(u.flag, u.value) for u in unused] == [
        ("--allow-replace", "com.uvlava.dns"),
        ("--allow-resize", "com.uvlava.dnss"),
    ]
    assert unused[0].message == (
        "--allow-replace com.uvlava.dns matches no replacement in the plan for quinn; "
        "it is resized: use --allow-resize com.uvlava.dns"
    )
    assert unused[1].message == "--allow-resize com.uvlava.dnss matches no resize in the plan for quinn"
    # --allow-resize naming a box that is replaced: the hint names --allow-replace.
    wrong = unused_allowances(parsed("replace_delete"), (), (), ["com.uvlava.quinn.artifacts"])
    assert [u.message for u in wrong] == [
        "--allow-resize com.uvlava.quinn.artifacts matches no resize in the plan for quinn; "
        "it is replaced: use --allow-replace com.uvlava.quinn.artifacts"
    ]
    assert unused_allowances(resize_plan(), (), (), ["com.uvlava.dns"]) == ()
