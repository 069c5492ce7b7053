"""What a planned change means on DigitalOcean: replace reasons, resizes, public ports, firewalls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from infra_apply.plan.model import parse_plan
from infra_apply.plan.semantics import PublicPort, Resize, reason, verb
from tests.plan_fixtures import (
    RESIZE_NAMES,
    by_address,
    parsed,
    rc,
    synthetic,
)


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


def test_a_droplet_size_update_is_a_resize_with_one_way_disk_growth() -> None:
    changes = by_address(parsed("resize_ports", names=RESIZE_NAMES))
    dns = changes["digitalocean_droplet.dns"]
    assert dns.action == "update"
    assert dns.resize == Resize("s-1vcpu-1gb", "s-1vcpu-2gb", disk_grows=True, disk_before=25, disk_after=50)
    assert verb(dns) == "resize"
    assert reason(dns, with_values=False) == (
        'size "s-1vcpu-1gb" → "s-1vcpu-2gb": downtime (powered off, resized, powered on); '
        "the disk grows and can never be shrunk back"
    )
    assert [a for a, c in changes.items() if c.resize is not None] == ["digitalocean_droplet.dns"]


Values = Mapping[str, object]


def resized(action: list[str], before: Values, after: Values, **change: object) -> Resize | None:
    droplet = rc("digitalocean_droplet.dns", action, before=before, after=after, **change)
    return parse_plan("quinn", synthetic(droplet), {}).changes[0].resize


def test_what_counts_as_a_resize() -> None:
    small, big = {"size": "s-1vcpu-1gb"}, {"size": "s-2vcpu-4gb"}
    assert resized(["update"], small, big) == Resize("s-1vcpu-1gb", "s-2vcpu-4gb", True, 25, 80)
    # resize_disk = false keeps the disk: still downtime, but not one way.
    no_disk = resized(["update"], small, {**big, "resize_disk": False})
    assert isinstance(no_disk, Resize) and not no_disk.disk_grows
    assert "disk keeps its size" in no_disk.effect and "downtime" in no_disk.effect
    # A size known only at apply time is still a resize (the guard must not wave it through).
    unknown = resized(["update"], small, {}, after_unknown={"size": True})
    assert (
        unknown == Resize("s-1vcpu-1gb", None, disk_before=25) and "(known after apply)" in unknown.render()
    )
    # A replacement creates the new size; an update of another attribute is no resize.
    assert resized(["delete", "create"], small, big, replace_paths=[["region"]]) is None
    assert resized(["update"], {**small, "tags": []}, {**small, "tags": ["a"]}) is None
    firewall = rc("digitalocean_firewall.dns", ["update"], before=small, after=big)
    assert parse_plan("quinn", synthetic(firewall), {}).changes[0].resize is None


def test_a_resize_to_a_smaller_disk_than_the_droplet_has_is_refused_not_a_growth() -> None:
    """DigitalOcean refuses a size whose disk is below the droplet's current disk (422)."""
    shrink = resized(["update"], {"size": "s-4vcpu-8gb", "disk": 160}, {"size": "s-2vcpu-4gb"})
    assert shrink is not None and shrink.fails and not shrink.grows
    assert "refuses it (422)" in shrink.effect and "can never be shrunk back" not in shrink.effect
    assert "s-2vcpu-4gb's 80 GB disk is below the droplet's 160 GB" in shrink.effect
    assert "replace the droplet for that size, or keep s-4vcpu-8gb" in shrink.effect
    # state's disk is what counts: a console resize grew it beyond what the size says
    grown = resized(["update"], {"size": "s-8vcpu-16gb", "disk": 320}, {"size": "s-4vcpu-8gb"})
    assert grown is not None and grown.fails
    # no disk in state: the size table says what it has
    assert cast(Resize, resized(["update"], {"size": "s-4vcpu-8gb"}, {"size": "s-2vcpu-4gb"})).fails
    # resize_disk = false does not make a smaller disk possible either
    kept = resized(
        ["update"], {"size": "s-4vcpu-8gb", "disk": 160}, {"size": "s-2vcpu-4gb", "resize_disk": False}
    )
    assert kept is not None and kept.fails
    # a droplet resized without its disk can go back down to a size whose disk it still has
    back = resized(
        ["update"], {"size": "s-4vcpu-8gb", "disk": 80}, {"size": "s-2vcpu-4gb", "resize_disk": False}
    )
    assert back is not None and not back.fails and "disk keeps its size" in back.effect
    growth = resized(["update"], {"size": "s-2vcpu-4gb", "disk": 80}, {"size": "s-4vcpu-8gb"})
    assert growth is not None and growth.grows and not growth.fails


def test_a_firewall_is_told_by_its_droplet_in_state_else_by_its_name() -> None:
    droplet = {"id": "7", "name": "old-box"}
    gone_fw = {"id": "fw1", "name": "fw-old-box", "droplet_ids": [7]}
    orphan_fw = {"id": "fw2", "name": "fw-lonely", "droplet_ids": []}
    state = [
        {"address": a, "mode": "managed", "type": a.split(".")[0], "values": v}
        for a, v in (
            ("digitalocean_droplet.old", droplet),
            ("digitalocean_firewall.old", gone_fw),
            ("digitalocean_firewall.lonely", orphan_fw),
        )
    ]
    plan = synthetic(
        rc("digitalocean_droplet.old", ["delete"], before=droplet),
        rc("digitalocean_firewall.old", ["delete"], before=gone_fw),
        rc("digitalocean_firewall.lonely", ["delete"], before=orphan_fw),
        prior=state,
    )
    found = {c.address: (c.name, c.name_source) for c in parse_plan("quinn", plan, {}).changes}
    assert found["digitalocean_firewall.old"] == ("old-box", "manifest")  # "firewall of old-box"
    assert found["digitalocean_firewall.lonely"] == ("fw-lonely", "state")  # "firewall fw-lonely"
    # the manifest name of the droplet wins over its live name
    named = parse_plan("quinn", plan, {"digitalocean_droplet.old": "com.uvlava.quinn.old"})
    assert {c.address: c.name for c in named.changes}["digitalocean_firewall.old"] == "com.uvlava.quinn.old"


def test_firewall_changes_list_the_public_ports_they_open_and_close() -> None:
    changes = by_address(parsed("resize_ports", names=RESIZE_NAMES))
    mcp = changes["digitalocean_firewall.quinn_mcp"]
    assert (mcp.ports_opened, mcp.ports_closed) == ((PublicPort("tcp", "80"), PublicPort("tcp", "443")), ())
    artifacts = changes["digitalocean_firewall.quinn_artifacts"]
    assert artifacts.ports_opened == ()
    assert [str(p) for p in artifacts.ports_closed] == ["80/tcp", "443/tcp"]
    assert not changes["digitalocean_droplet.dns"].ports_opened


def test_a_new_firewall_opens_each_of_its_public_ports() -> None:
    firewall = by_address(parsed("create_producer", "mc"))["digitalocean_firewall.mc_services"]
    assert [str(p) for p in firewall.ports_opened] == ["22/tcp", "51820/udp"]


WORLD = ["0.0.0.0/0", "::/0"]


def rule(protocol: str, port: str | None, sources: list[str] = WORLD) -> Values:
    return {"protocol": protocol, "port_range": port, "source_addresses": sources}


def ports(
    action: list[str], before: list[Values] | None, after: list[Values] | None, **change: object
) -> tuple[list[str], list[str]]:
    fw = rc(
        "digitalocean_firewall.f",
        action,
        before=None if before is None else {"inbound_rule": before},
        after=None if after is None else {"inbound_rule": after},
        **change,
    )
    c = parse_plan("quinn", synthetic(fw), {}).changes[0]
    return [str(p) for p in c.ports_opened], [str(p) for p in c.ports_closed]


def test_public_ports_are_those_open_to_a_whole_internet_source() -> None:
    ssh = rule("tcp", "22")
    # A mesh-only or single-address source opens nothing to the internet.
    assert ports(["update"], [ssh], [ssh, rule("tcp", "8080", ["10.9.0.0/24"])]) == ([], [])
    assert ports(["update"], [ssh], [ssh, rule("tcp", "8080", ["198.51.100.7/32"])]) == ([], [])
    # ::/0 alone is the whole internet too; so is any /0 however it is written.
    assert ports(["update"], [ssh], [ssh, rule("udp", "53", ["::/0"])]) == (["53/udp"], [])
    assert ports(["update"], [ssh], [ssh, rule("udp", "53", ["1.2.3.4/0"])]) == (["53/udp"], [])
    # Making a mesh-only rule public opens it; the reverse closes it.
    mesh_only, public = rule("tcp", "8080", ["10.9.0.0/24"]), rule("tcp", "8080")
    assert ports(["update"], [mesh_only], [public]) == (["8080/tcp"], [])
    assert ports(["update"], [public], [mesh_only]) == ([], ["8080/tcp"])


def test_port_ranges_are_compared_port_by_port() -> None:
    narrow, wide = rule("tcp", "8000-8010"), rule("tcp", "8000-8020")
    assert ports(["update"], [narrow], [wide]) == (["8011-8020/tcp"], [])
    assert ports(["update"], [wide], [narrow]) == ([], ["8011-8020/tcp"])
    # A port moving inside a range the plan keeps open opens nothing.
    assert ports(["update"], [wide, rule("tcp", "22")], [wide, rule("tcp", "8005")]) == ([], ["22/tcp"])
    for every in ("1-65535", "all", "0", None):
        opened = ["1-21/tcp", "23-65535/tcp"]
        assert ports(["update"], [rule("tcp", "22")], [rule("tcp", every)]) == (opened, [])
    assert ports(["update"], [], [rule("icmp", None)]) == (["icmp"], [])
    assert ports(["update"], [rule("TCP", "22")], [rule("tcp", "22")]) == ([], [])
    # An unreadable range is taken as every port: over-reporting beats missing an opening.
    assert ports(["update"], [], [rule("tcp", "http")]) == (["1-65535/tcp"], [])


def test_which_firewall_changes_are_judged() -> None:
    web = [rule("tcp", "22"), rule("tcp", "443")]
    assert ports(["create"], None, web) == (["22/tcp", "443/tcp"], [])
    assert ports(["delete", "create"], [rule("tcp", "22")], web) == (["443/tcp"], [])
    # A deleted firewall goes with its droplet: nothing to call out.
    assert ports(["delete"], web, None) == ([], [])
    # Rules known only at apply time may open anything: said, not guessed.
    assert ports(["update"], web, web, after_unknown={"inbound_rule": [{"port_range": True}]}) == (
        ["(known after apply)"],
        [],
    )


def test_the_drift_noise_filter_applies_to_ordinary_plans_too() -> None:
    firewall = {"name": "fw-dns", "droplet_ids": [1003], "inbound_rule": []}
    noise = rc(
        "digitalocean_firewall.dns",
        ["update"],
        before={**firewall, "tags": None},
        after={**firewall, "tags": []},
    )
    gone = rc(
        "digitalocean_firewall.dns",
        ["update"],
        before={**firewall, "tags": None},
        after={**firewall, "droplet_ids": [], "tags": []},
    )
    for entry, expected in ((noise, []), (gone, [("droplet_ids",)])):
        plan = {**synthetic(), "resource_drift": [entry]}
        assert [c.updated_attrs for c in parse_plan("quinn", plan, {}).outside] == expected


def test_a_real_resize_lists_only_the_size_not_what_it_recomputes() -> None:
    dns = by_address(parsed("resize_ports", names=RESIZE_NAMES))["digitalocean_droplet.dns"]
    assert dns.updated_attrs == ("size",)
    assert [d.attr for d in dns.diffs] == ["size"]


def test_a_firewall_destroyed_while_its_droplet_stays_opens_every_port() -> None:
    """No firewall, no filter: DigitalOcean lets every port through to a droplet without one.
    A firewall that goes with its droplet closes nothing anyone could reach: no call-out."""
    ssh = {"protocol": "tcp", "port_range": "22", "source_addresses": ["0.0.0.0/0"]}
    droplet = {"id": "7", "name": "box"}
    fw = {"id": "fw1", "name": "fw-box", "droplet_ids": [7], "inbound_rule": [ssh]}
    state = [
        {
            "address": "digitalocean_droplet.box",
            "mode": "managed",
            "type": "digitalocean_droplet",
            "values": droplet,
        },
        {
            "address": "digitalocean_firewall.box",
            "mode": "managed",
            "type": "digitalocean_firewall",
            "values": fw,
        },
    ]
    fw_gone = rc("digitalocean_firewall.box", ["delete"], before=fw)
    stays = parse_plan("q", synthetic(fw_gone, prior=state), {}).changes[0]
    assert [str(p) for p in stays.ports_opened] == ["1-21/tcp", "23-65535/tcp", "1-65535/udp", "icmp"]
    both = parse_plan(
        "q", synthetic(fw_gone, rc("digitalocean_droplet.box", ["delete"], before=droplet), prior=state), {}
    )
    assert all(c.ports_opened == () == c.ports_closed for c in both.changes)
