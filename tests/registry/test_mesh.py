"""mesh-hosts.json registration: allocation, preservation, conflicts, removal, safe writes."""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import filelock
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra_apply.errors import MeshError
from infra_apply.registry import mesh, meshfile
from infra_apply.registry.mesh import HostChange, LiveDroplet
from infra_apply.runtime import strictjson
from tests.conftest import TESTS

WORKER = TESTS / "mesh_crash_worker.py"
ARTIFACTS = "com.uvlava.quinn.artifacts"

# A registry as net-tools writes it (json.dumps indent=2), with keys infra-apply does not
# know about at every level: they must come back byte for byte.
BASE_TEXT = """\
{
  "version": 3,
  "network": "10.9.0.0/24",
  "hosts": {
    "wg": {
      "mesh_ip": "10.9.0.1",
      "public_ip": "198.51.100.7",
      "provider": "digitalocean",
      "listen_port": 51820
    },
    "mac": {
      "mesh_ip": "10.9.0.2",
      "note": "Zoë's laptop — hand registered",
      "ssh": {
        "user": "zoe",
        "forward_agent": true,
        "port": null
      }
    },
    "forge": {
      "mesh_ip": "10.9.0.6",
      "public_ip": "203.0.113.12",
      "private_ip": "10.116.0.4",
      "provider": "digitalocean",
      "droplet": "com.uvlava.quinn.artifacts",
      "droplet_id": "4123",
      "region": "nyc3",
      "producer": "quinn",
      "ssh_user": "deploy",
      "weight": 1.5
    }
  },
  "services": {
    "forgejo": {
      "host": "forge",
      "port": 3000,
      "tags": [
        "git",
        "web"
      ]
    }
  },
  "x-generated-by": "net-tools 2.1"
}
"""


def droplet(
    name: str = ARTIFACTS,
    hosts: tuple[str, ...] = ("forge",),
    *,
    droplet_id: str = "4123",
    public_ip: str = "203.0.113.12",
    private_ip: str = "10.116.0.4",
    region: str = "nyc3",
    producer: str = "quinn",
) -> LiveDroplet:
    return LiveDroplet(name, droplet_id, public_ip, private_ip, region, hosts, producer)


def base_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(BASE_TEXT)
    return doc


def registry(tmp_path: Path, text: str = BASE_TEXT) -> Path:
    path = tmp_path / "mesh-hosts.json"
    path.write_text(text, encoding="utf-8")
    return path


def doc_with(network: str, used: list[str]) -> dict[str, Any]:
    hosts = {f"h{i}": {"mesh_ip": ip} for i, ip in enumerate(used)}
    return {"network": network, "hosts": hosts}


# --------------------------------------------------------------------------- allocation


def test_new_droplet_gets_the_lowest_free_address() -> None:
    # .1 hub, .2 mac, .6 forge are taken: .3 is the lowest free.
    result = mesh.plan_registration(
        base_doc(), "quinn", [droplet("com.uvlava.quinn.web", ("web",), droplet_id="9")]
    )
    assert result.document["hosts"]["web"]["mesh_ip"] == "10.9.0.3"


def test_first_allocation_skips_network_and_hub_addresses() -> None:
    result = mesh.plan_registration(doc_with("10.9.0.0/24", []), "quinn", [droplet()])
    assert result.document["hosts"]["forge"]["mesh_ip"] == "10.9.0.2"


def test_addresses_used_by_hand_registered_machines_are_not_reused() -> None:
    doc = doc_with("10.9.0.0/24", ["10.9.0.2", "10.9.0.3", "10.9.0.5"])
    result = mesh.plan_registration(doc, "quinn", [droplet()])
    assert result.document["hosts"]["forge"]["mesh_ip"] == "10.9.0.4"


def test_broadcast_is_never_allocated_and_a_full_network_is_an_error() -> None:
    # 10.9.0.0/29: .0 network, .1 hub, .7 broadcast; .2-.5 taken leaves only .6.
    doc = doc_with("10.9.0.0/29", ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5"])
    one = mesh.plan_registration(doc, "quinn", [droplet("a", ("a",))])
    assert one.document["hosts"]["a"]["mesh_ip"] == "10.9.0.6"
    with pytest.raises(MeshError, match=r"10\.9\.0\.0/29 has no free address"):
        mesh.plan_registration(one.document, "quinn", [droplet("a", ("a",)), droplet("b", ("b",))])


def test_the_hub_address_is_reserved_even_when_no_hub_entry_exists() -> None:
    doc = doc_with("10.9.0.0/30", [])  # .0 network, .1 hub, .2 only, .3 broadcast
    result = mesh.plan_registration(doc, "quinn", [droplet()])
    assert result.document["hosts"]["forge"]["mesh_ip"] == "10.9.0.2"
    with pytest.raises(MeshError, match="no free address"):
        mesh.plan_registration(result.document, "quinn", [droplet(), droplet("b", ("b",))])


def test_all_hosts_of_a_droplet_share_one_address_and_droplets_differ() -> None:
    live = [
        droplet("com.uvlava.quinn.web", ("web", "www", "api"), droplet_id="7"),
        droplet("com.uvlava.quinn.db", ("db",), droplet_id="8"),
    ]
    hosts = mesh.plan_registration(doc_with("10.9.0.0/24", []), "quinn", live).document["hosts"]
    assert {hosts[h]["mesh_ip"] for h in ("web", "www", "api")} == {"10.9.0.3"}
    assert hosts["db"]["mesh_ip"] == "10.9.0.2"  # allocation order is by droplet name


def test_allocation_does_not_depend_on_the_order_droplets_are_given() -> None:
    a = droplet("com.uvlava.quinn.a", ("a",), droplet_id="1")
    b = droplet("com.uvlava.quinn.b", ("b",), droplet_id="2")
    doc = doc_with("10.9.0.0/24", [])
    one = mesh.plan_registration(doc, "quinn", [a, b]).document
    two = mesh.plan_registration(doc, "quinn", [b, a]).document
    assert one == two


def test_existing_entry_keeps_its_address_and_new_hosts_of_that_droplet_share_it() -> None:
    live = [droplet(hosts=("forge", "artifacts"), public_ip="203.0.113.99")]
    result = mesh.plan_registration(base_doc(), "quinn", live)
    hosts = result.document["hosts"]
    assert hosts["forge"]["mesh_ip"] == "10.9.0.6"
    assert hosts["artifacts"]["mesh_ip"] == "10.9.0.6"  # not the lowest free .3
    assert hosts["forge"]["public_ip"] == "203.0.113.99"
    assert result.changes == (
        HostChange("updated", "forge", "10.9.0.6", ARTIFACTS, ("public_ip",)),
        HostChange("added", "artifacts", "10.9.0.6", ARTIFACTS),
    )


def test_a_replaced_droplet_keeps_its_mesh_address() -> None:
    # Same name, new machine: WireGuard peers keep reaching it at the same address.
    live = [droplet(droplet_id="9999", public_ip="203.0.113.50", private_ip="10.116.0.9")]
    forge = mesh.plan_registration(base_doc(), "quinn", live).document["hosts"]["forge"]
    assert forge["mesh_ip"] == "10.9.0.6"
    assert (forge["droplet_id"], forge["public_ip"]) == ("9999", "203.0.113.50")


def test_a_replaced_droplet_is_reported_as_replaced_not_silently_updated() -> None:
    live = [droplet(hosts=("forge", "artifacts"), droplet_id="9999", public_ip="203.0.113.50")]
    result = mesh.plan_registration(base_doc(), "quinn", live)
    assert result.changes == (
        HostChange("replaced", "forge", "10.9.0.6", ARTIFACTS, ("public_ip", "droplet_id")),
        HostChange("added", "artifacts", "10.9.0.6", ARTIFACTS),
    )
    assert mesh.describe(result) == [
        f"~ forge 10.9.0.6 ({ARTIFACTS}) replaced, mesh IP kept: public_ip, droplet_id",
        f"+ artifacts 10.9.0.6 ({ARTIFACTS})",
    ]


def test_only_a_different_recorded_id_means_replaced() -> None:
    # An entry written before ids were recorded gains one: an update, not a new machine.
    doc = base_doc()
    del doc["hosts"]["forge"]["droplet_id"]
    [change] = mesh.plan_registration(doc, "quinn", [droplet()]).changes
    assert (change.kind, change.fields) == ("updated", ("droplet_id",))
    # A hand-written numeric id equal to the live one is the same machine (rewritten as a string).
    numeric = strictjson.parse(BASE_TEXT.replace('"droplet_id": "4123"', '"droplet_id": 4123'), "m")
    [change] = mesh.plan_registration(numeric, "quinn", [droplet()]).changes
    assert (change.kind, change.fields) == ("updated", ("droplet_id",))
    numeric = strictjson.parse(BASE_TEXT.replace('"droplet_id": "4123"', '"droplet_id": 4124'), "m")
    assert mesh.plan_registration(numeric, "quinn", [droplet()]).changes[0].kind == "replaced"


def test_a_replaced_entry_with_a_broken_mesh_ip_does_not_claim_to_keep_it() -> None:
    doc = base_doc()
    doc["hosts"]["forge"]["mesh_ip"] = "not-an-ip"
    result = mesh.plan_registration(doc, "quinn", [droplet(droplet_id="9999")])
    assert mesh.describe(result) == [f"~ forge 10.9.0.3 ({ARTIFACTS}) replaced: mesh_ip, droplet_id"]


def test_new_entry_has_every_owned_field_in_order() -> None:
    result = mesh.plan_registration(
        base_doc(),
        "quinn",
        [droplet("com.uvlava.quinn.web", ("web",), droplet_id="77", region="fra1")],
    )
    assert result.document["hosts"]["web"] == {
        "mesh_ip": "10.9.0.3",
        "public_ip": "203.0.113.12",
        "private_ip": "10.116.0.4",
        "provider": "digitalocean",
        "droplet": "com.uvlava.quinn.web",
        "droplet_id": "77",
        "region": "fra1",
        "producer": "quinn",
    }
    assert list(result.document["hosts"]["web"]) == list(mesh.OWNED_FIELDS)


# --------------------------------------------------------------------------- preservation


def test_untouched_parts_of_the_file_come_back_byte_identical(tmp_path: Path) -> None:
    path = registry(tmp_path)
    live = [
        droplet(),  # forge: unchanged
        droplet("com.uvlava.quinn.web", ("web",), droplet_id="77", public_ip="203.0.113.77"),
    ]
    written = meshfile.write_registration(path, "quinn", live)

    new_entry = """,
    "web": {
      "mesh_ip": "10.9.0.3",
      "public_ip": "203.0.113.77",
      "private_ip": "10.116.0.4",
      "provider": "digitalocean",
      "droplet": "com.uvlava.quinn.web",
      "droplet_id": "77",
      "region": "nyc3",
      "producer": "quinn"
    }"""
    anchor = '      "weight": 1.5\n    }'
    expected = BASE_TEXT.replace(anchor, anchor + new_entry)
    assert written.wrote
    assert path.read_text(encoding="utf-8") == expected


def test_updating_an_entry_keeps_its_unknown_keys_and_key_order() -> None:
    live = [droplet(region="ams3", droplet_id="5000")]
    doc = mesh.plan_registration(base_doc(), "quinn", live).document
    forge = doc["hosts"]["forge"]
    assert list(forge) == list(base_doc()["hosts"]["forge"])
    assert (forge["ssh_user"], forge["weight"]) == ("deploy", 1.5)
    assert list(doc) == ["version", "network", "hosts", "services", "x-generated-by"]
    assert list(doc["hosts"]) == ["wg", "mac", "forge"]
    assert doc["services"] == base_doc()["services"]


def test_plan_registration_does_not_modify_its_input() -> None:
    doc = base_doc()
    mesh.plan_registration(
        doc,
        "quinn",
        [droplet("new-name", public_ip="203.0.113.1"), droplet("x", ("x",))],
        renamed={ARTIFACTS: "new-name"},
    )
    assert doc == base_doc()


def test_dump_document_reproduces_a_file_written_in_that_style() -> None:
    assert strictjson.dump(base_doc()) == BASE_TEXT


# --------------------------------------------------------------------------- conflicts


def test_host_of_a_hand_registered_machine_is_a_conflict(tmp_path: Path) -> None:
    path = registry(tmp_path)
    with pytest.raises(MeshError, match=r"'mac' .*outside infra-apply .*10\.9\.0\.2"):
        meshfile.write_registration(path, "quinn", [droplet("com.uvlava.quinn.web", ("web", "mac"))])
    assert path.read_text(encoding="utf-8") == BASE_TEXT


def test_host_registered_for_another_droplet_is_a_conflict(tmp_path: Path) -> None:
    path = registry(tmp_path)
    with pytest.raises(MeshError, match=f"'forge' .*already registered for droplet '{ARTIFACTS}'"):
        meshfile.write_registration(path, "quinn", [droplet("com.uvlava.quinn.other", ("forge",))])
    assert path.read_text(encoding="utf-8") == BASE_TEXT


def test_same_droplet_name_of_another_producer_is_a_conflict() -> None:
    with pytest.raises(MeshError, match="producer 'quinn'"):
        mesh.plan_registration(base_doc(), "mc", [droplet(producer="mc")])


def test_two_live_droplets_claiming_one_host_is_a_conflict() -> None:
    live = [droplet("a", ("shared",)), droplet("b", ("shared",))]
    with pytest.raises(MeshError, match="'shared' is claimed by two droplets: 'a' and 'b'"):
        mesh.plan_registration(base_doc(), "quinn", live)


def test_every_conflict_is_reported_at_once() -> None:
    with pytest.raises(MeshError) as excinfo:
        mesh.plan_registration(base_doc(), "quinn", [droplet("x", ("wg", "mac", "ok"))])
    assert "'wg'" in excinfo.value.message and "'mac'" in excinfo.value.message


def test_a_droplet_of_another_producer_in_the_output_is_refused() -> None:
    with pytest.raises(MeshError, match="belongs to producer 'mc', not 'quinn'"):
        mesh.plan_registration(base_doc(), "quinn", [droplet("x", ("x",), producer="mc")])


# --------------------------------------------------------------------------- idempotence


def test_second_registration_leaves_the_file_untouched(tmp_path: Path) -> None:
    path = registry(tmp_path)
    live = [droplet(hosts=("forge", "artifacts")), droplet("com.uvlava.quinn.web", ("web",))]
    first = meshfile.write_registration(path, "quinn", live)
    text, inode = path.read_bytes(), path.stat().st_ino

    second = meshfile.write_registration(path, "quinn", live)

    assert first.wrote and not second.wrote and not second.changed
    assert second.changes == () and second.diff == ""
    assert path.read_bytes() == text
    assert path.stat().st_ino == inode  # not even rewritten with the same bytes


def test_registering_an_unchanged_droplet_writes_nothing(tmp_path: Path) -> None:
    path = registry(tmp_path)
    before = path.stat()
    result = meshfile.write_registration(path, "quinn", [droplet()])
    assert not result.wrote
    assert path.stat().st_ino == before.st_ino and path.stat().st_mtime_ns == before.st_mtime_ns


# Registries net-tools may write in another style than dump_document's 2-space indent.
OTHER_STYLES = {
    "indent-4": json.dumps(base_doc(), indent=4, ensure_ascii=False) + "\n",
    "one-line": json.dumps(base_doc(), ensure_ascii=False),
    "compact": json.dumps(base_doc(), separators=(",", ":")),  # \u escapes, no newline
}


@pytest.mark.parametrize("style", sorted(OTHER_STYLES))
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_file_in_another_style_is_not_rewritten_when_nothing_changes(
    tmp_path: Path, style: str, dry_run: bool
) -> None:
    text = OTHER_STYLES[style]
    assert text != BASE_TEXT
    path = registry(tmp_path, text)
    before = path.stat()

    result = meshfile.write_registration(path, "quinn", [droplet()], dry_run=dry_run)

    assert (result.wrote, result.changed, result.diff, result.changes) == (False, False, "", ())
    assert path.read_bytes() == text.encode("utf-8")
    assert path.stat().st_ino == before.st_ino and path.stat().st_mtime_ns == before.st_mtime_ns


@pytest.mark.parametrize("style", sorted(OTHER_STYLES))
def test_a_file_in_another_style_is_written_in_two_space_style_on_a_change(
    tmp_path: Path, style: str
) -> None:
    path = registry(tmp_path, OTHER_STYLES[style])
    live = [droplet(), droplet("com.uvlava.quinn.web", ("web",), droplet_id="77")]

    result = meshfile.write_registration(path, "quinn", live)

    assert result.wrote and result.changed and result.diff
    assert result.changes == (HostChange("added", "web", "10.9.0.3", "com.uvlava.quinn.web"),)
    expected = strictjson.dump(mesh.plan_registration(base_doc(), "quinn", live).document)
    if style == "compact":  # values keep the file's own spelling (its \u escapes) on a rewrite
        expected = expected.replace("Zoë's laptop — hand", "Zo\\u00eb's laptop \\u2014 hand")
    assert path.read_text(encoding="utf-8") == expected


# --------------------------------------------------------------------------- removal


def test_destroyed_droplet_entries_are_removed_and_nothing_else() -> None:
    doc = base_doc()
    doc["hosts"]["artifacts"] = dict(doc["hosts"]["forge"])
    # Same host-name pattern, different machine: must stay.
    doc["hosts"]["artifacts-mirror"] = {"mesh_ip": "10.9.0.9", "droplet": "com.uvlava.mc.mirror"}
    result = mesh.plan_registration(doc, "quinn", [], removed=[ARTIFACTS])
    assert list(result.document["hosts"]) == ["wg", "mac", "artifacts-mirror"]
    assert result.changes == (
        HostChange("removed", "forge", "10.9.0.6", ARTIFACTS),
        HostChange("removed", "artifacts", "10.9.0.6", ARTIFACTS),
    )


def test_removal_through_the_file_rewrites_only_the_removed_entry(tmp_path: Path) -> None:
    path = registry(tmp_path)
    result = meshfile.write_registration(path, "quinn", [], removed=[ARTIFACTS])
    assert mesh.describe(result) == [f"- forge 10.9.0.6 ({ARTIFACTS})"]
    start = BASE_TEXT.index(',\n    "forge": {')
    end = BASE_TEXT.index('\n  },\n  "services"')
    assert path.read_text(encoding="utf-8") == BASE_TEXT[:start] + BASE_TEXT[end:]


def test_removal_never_touches_another_producers_droplet_of_that_name() -> None:
    result = mesh.plan_registration(base_doc(), "mc", [], removed=[ARTIFACTS])
    assert result.document == base_doc()


def test_a_removed_droplet_that_is_still_live_is_kept() -> None:
    result = mesh.plan_registration(base_doc(), "quinn", [droplet()], removed=[ARTIFACTS])
    assert result.document == base_doc() and result.changes == ()


def test_removing_then_registering_frees_and_reuses_the_lowest_address() -> None:
    removed = mesh.plan_registration(base_doc(), "quinn", [], removed=[ARTIFACTS]).document
    again = mesh.plan_registration(removed, "quinn", [droplet("n", ("n",))]).document
    assert again["hosts"]["n"]["mesh_ip"] == "10.9.0.3"


# --------------------------------------------------------------------------- rename


def test_renamed_droplet_entries_follow_the_new_name_and_keep_their_address() -> None:
    new = "com.uvlava.quinn.forge"
    result = mesh.plan_registration(base_doc(), "quinn", [droplet(new, ("forge",))], renamed={ARTIFACTS: new})
    forge = result.document["hosts"]["forge"]
    assert (forge["droplet"], forge["mesh_ip"]) == (new, "10.9.0.6")
    assert list(result.document["hosts"]) == ["wg", "mac", "forge"]
    assert mesh.describe(result) == [f"~ forge 10.9.0.6 ({new}): droplet"]


def test_a_rename_and_an_update_of_one_host_are_reported_as_one_change() -> None:
    new = "com.uvlava.quinn.forge"
    result = mesh.plan_registration(
        base_doc(), "quinn", [droplet(new, public_ip="203.0.113.99")], renamed={ARTIFACTS: new}
    )
    assert result.changes == (HostChange("updated", "forge", "10.9.0.6", new, ("droplet", "public_ip")),)


def test_a_renamed_and_replaced_droplet_is_one_replaced_change() -> None:
    new = "com.uvlava.quinn.forge"
    result = mesh.plan_registration(
        base_doc(), "quinn", [droplet(new, droplet_id="9999")], renamed={ARTIFACTS: new}
    )
    assert result.changes == (HostChange("replaced", "forge", "10.9.0.6", new, ("droplet", "droplet_id")),)


def test_without_the_rename_the_new_name_would_conflict() -> None:
    with pytest.raises(MeshError, match="already registered"):
        mesh.plan_registration(base_doc(), "quinn", [droplet("com.uvlava.quinn.forge")])


# --------------------------------------------------------------------------- describe


def test_describe_prints_one_line_per_change() -> None:
    doc = base_doc()
    doc["hosts"]["old"] = {"mesh_ip": "10.9.0.8", "droplet": "gone", "producer": "quinn"}
    result = mesh.plan_registration(
        doc,
        "quinn",
        [droplet(hosts=("forge", "artifacts"), public_ip="203.0.113.13")],
        removed=["gone"],
    )
    assert mesh.describe(result) == [
        "- old 10.9.0.8 (gone)",
        f"~ forge 10.9.0.6 ({ARTIFACTS}): public_ip",
        f"+ artifacts 10.9.0.6 ({ARTIFACTS})",
    ]


# --------------------------------------------------------------------------- output parsing


OUTPUT: dict[str, dict[str, Any]] = {
    ARTIFACTS: {
        "id": "4123",
        "ipv4_address": "203.0.113.12",
        "ipv4_address_private": "10.116.0.4",
        "region": "nyc3",
        "hosts": ["forge", "artifacts"],
        "producer": "quinn",
    }
}


def test_live_droplets_from_output() -> None:
    assert mesh.live_droplets_from_output(OUTPUT) == [droplet(hosts=("forge", "artifacts"))]


def test_numeric_droplet_id_in_the_output_becomes_a_string() -> None:
    value = copy.deepcopy(OUTPUT)
    value[ARTIFACTS]["id"] = 4123
    assert mesh.live_droplets_from_output(value)[0].droplet_id == "4123"


@pytest.mark.parametrize(
    ("key", "bad", "message"),
    [
        ("region", None, "'region' is missing"),
        ("ipv4_address", "not-an-ip", "'ipv4_address' is not an IPv4 address"),
        ("ipv4_address_private", "", "'ipv4_address_private' is missing"),
        ("hosts", "forge", "'hosts' is missing or not a list"),
        ("hosts", ["forge", 3], "'hosts' is missing or not a list"),
        ("id", None, "'id' is missing"),
        ("producer", 7, "'producer' is missing"),
    ],
)
def test_malformed_output_names_the_droplet_and_key(key: str, bad: object, message: str) -> None:
    value = copy.deepcopy(OUTPUT)
    if bad is None:
        del value[ARTIFACTS][key]
    else:
        value[ARTIFACTS][key] = bad
    with pytest.raises(MeshError, match=f"droplet '{ARTIFACTS}': {message}"):
        mesh.live_droplets_from_output(value)


def test_output_that_is_not_an_object_per_droplet_is_an_error() -> None:
    with pytest.raises(MeshError, match="not an object"):
        mesh.live_droplets_from_output({ARTIFACTS: ["forge"]})


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize(
    ("text", "message", "line", "col"),
    [
        ('{\n  "network": "10.9.0.0/24",\n  "hosts": {,}\n}\n', "not valid JSON", 3, 13),
        ("", "not valid JSON", 1, 1),
        ("[]\n", "must contain a JSON object", 0, 0),
        ('{"hosts": {}}\n', "no 'network'", 0, 0),
        ('{"network": "10.9.0.0/24"}\n', "no 'hosts'", 0, 0),
        ('{"network": "10.9.0.0/24", "hosts": []}\n', "'hosts' is not an object", 0, 0),
        ('{"network": "10.9.0.1/24", "hosts": {}}\n', "'network' is not a network", 0, 0),
    ],
)
def test_invalid_registry_is_a_located_error_and_never_overwritten(
    tmp_path: Path, text: str, message: str, line: int, col: int
) -> None:
    path = registry(tmp_path, text)
    with pytest.raises(MeshError, match=message) as excinfo:
        meshfile.write_registration(path, "quinn", [droplet()])
    assert (excinfo.value.path, excinfo.value.line, excinfo.value.col) == (str(path), line, col)
    assert path.read_text(encoding="utf-8") == text


@pytest.mark.parametrize(
    ("text", "message", "line", "col"),
    [
        # "forge" twice under hosts: inserted before "mac" (line 11), then at its usual place.
        (
            BASE_TEXT.replace('    "mac": {', '    "forge": {"mesh_ip": "10.9.0.7"},\n    "mac": {', 1),
            r"key 'forge' twice in the object at hosts \(first on line 11\)",
            21,
            5,
        ),
        # A repeated owned field inside one entry.
        (
            BASE_TEXT.replace('"region": "nyc3",', '"region": "nyc3",\n      "mesh_ip": "10.9.0.9",', 1),
            r"key 'mesh_ip' twice in the object at hosts\.forge \(first on line 21\)",
            28,
            7,
        ),
        # A repeated top-level "hosts": json.loads would keep only the last, empty one.
        (
            BASE_TEXT.replace('  "x-generated-by"', '  "hosts": {},\n  "x-generated-by"', 1),
            r"key 'hosts' twice in the object at top level \(first on line 4\)",
            43,
            3,
        ),
        (
            '{"network": "10.9.0.0/24", "hosts": {}, "l": [{"a": 1}, {"b": 1, "b": 2}]}',
            r"key 'b' twice in the object at l\[1\] \(first on line 1\)",
            1,
            66,
        ),
    ],
)
def test_a_duplicate_key_is_a_located_error_and_never_overwritten(
    tmp_path: Path, text: str, message: str, line: int, col: int
) -> None:
    path = registry(tmp_path, text)
    with pytest.raises(MeshError, match=message) as excinfo:
        meshfile.write_registration(path, "quinn", [droplet()])
    assert (excinfo.value.path, excinfo.value.line, excinfo.value.col) == (str(path), line, col)
    assert path.read_text(encoding="utf-8") == text
    with pytest.raises(MeshError, match=message):
        meshfile.write_registration(path, "quinn", [droplet()], dry_run=True)


def test_missing_registry_is_an_error_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "mesh-hosts.json"
    with pytest.raises(MeshError, match="not found"):
        meshfile.write_registration(path, "quinn", [droplet()])
    assert not path.exists()


def test_non_utf8_registry_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "mesh-hosts.json"
    path.write_bytes(b'{"network": "10.9.0.0/24", "hosts": {"\xff": {}}}')
    with pytest.raises(MeshError, match="not UTF-8"):
        meshfile.load_document(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_registry_is_an_error(tmp_path: Path) -> None:
    path = registry(tmp_path)
    path.chmod(0)
    with pytest.raises(MeshError, match=r"cannot read mesh-hosts\.json: Permission denied"):
        meshfile.load_document(path)


def test_a_folder_in_place_of_the_registry_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "mesh-hosts.json").mkdir()
    with pytest.raises(MeshError, match="cannot read"):
        meshfile.load_document(tmp_path / "mesh-hosts.json")


# --------------------------------------------------------------------------- strict JSON


def position_of(text: str, needle: str) -> tuple[int, int]:
    i = text.index(needle)
    return text.count("\n", 0, i) + 1, i - text.rfind("\n", 0, i)


@pytest.mark.parametrize(
    "value", ["NaN", "Infinity", "-Infinity", "1e999", "-1E400", "9" * 4301, "-" + "1" * 400]
)
def test_numbers_strict_readers_reject_are_refused_where_they_are_and_never_written(
    tmp_path: Path, value: str
) -> None:
    text = BASE_TEXT.replace('"weight": 1.5', f'"weight": {value}')
    path = registry(tmp_path, text)
    with pytest.raises(MeshError, match=r"jq and Go|Go reject") as excinfo:
        meshfile.write_registration(path, "quinn", [droplet("com.uvlava.quinn.web", ("web",))])
    assert (excinfo.value.path, excinfo.value.line, excinfo.value.col) == (
        str(path),
        *position_of(text, value + "\n"),
    )
    assert len(excinfo.value.format()) < 300  # a 4,301-digit number is not echoed whole
    assert path.read_text(encoding="utf-8") == text


# Values infra-apply does not own, spelled as a Go or hand-written registry may spell them.
SPELLED = {
    '"weight": 1.5': '"weight": 1E5',
    '"port": 3000': '"port": 3.000e3',
    '"x-generated-by": "net-tools 2.1"': (
        '"x-generated-by": "net-tools \\u003c2.1\\u003e \\/ caf\\u00e9",\n'
        '  "ids": [\n    12345678901234567890123,\n    -0,\n    1e-7,\n    0.10\n  ],\n'
        '  "k\\u0065y": true'
    ),
}


def spelled_text() -> str:
    text = BASE_TEXT
    for old, new in SPELLED.items():
        assert old in text
        text = text.replace(old, new)
    return text


def test_values_it_does_not_own_keep_their_exact_spelling_when_the_file_is_rewritten(
    tmp_path: Path,
) -> None:
    text = spelled_text()
    path = registry(tmp_path, text)
    live = [droplet(), droplet("com.uvlava.quinn.web", ("web",), droplet_id="77")]
    written = meshfile.write_registration(path, "quinn", live)
    assert written.wrote
    anchor = '      "weight": 1E5\n    }'
    new_entry = """,
    "web": {
      "mesh_ip": "10.9.0.3",
      "public_ip": "203.0.113.12",
      "private_ip": "10.116.0.4",
      "provider": "digitalocean",
      "droplet": "com.uvlava.quinn.web",
      "droplet_id": "77",
      "region": "nyc3",
      "producer": "quinn"
    }"""
    assert path.read_text(encoding="utf-8") == text.replace(anchor, anchor + new_entry)
    again = meshfile.write_registration(path, "quinn", live)
    assert not again.wrote


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    ),
    st.booleans(),
)
def test_a_registry_in_two_space_style_reads_and_writes_back_byte_for_byte(
    doc: Any, ascii_only: bool
) -> None:
    text = json.dumps(doc, indent=2, ensure_ascii=ascii_only) + "\n"
    parsed = strictjson.parse(text, "mesh-hosts.json")
    assert json.loads(strictjson.dump(parsed)) == json.loads(text)
    assert strictjson.dump(parsed) == text


def test_nesting_deeper_than_any_registry_is_a_located_error(tmp_path: Path) -> None:
    head = '{"network": "10.9.0.0/24", "hosts": {}, "x": '
    text = head + "[" * 100_000 + "]" * 100_000 + "}\n"
    path = registry(tmp_path, text)
    with pytest.raises(MeshError, match="nested deeper than 100 levels") as excinfo:
        meshfile.write_registration(path, "quinn", [droplet()])
    # the top-level object is level 1, so the 100th "[" opens level 101
    assert (excinfo.value.line, excinfo.value.col) == (1, len(head) + 100)
    assert path.read_text(encoding="utf-8") == text


def test_a_read_only_registry_is_refused_and_never_replaced(tmp_path: Path) -> None:
    path = registry(tmp_path)
    path.chmod(0o444)
    before = path.stat()
    with pytest.raises(MeshError, match=r"read-only \(mode 0444\)") as excinfo:
        meshfile.write_registration(path, "quinn", [droplet("com.uvlava.quinn.web", ("web",))])
    assert excinfo.value.path == str(path)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns, stat.S_IMODE(after.st_mode)) == (
        before.st_ino,
        before.st_mtime_ns,
        0o444,
    )
    assert path.read_text(encoding="utf-8") == BASE_TEXT
    # a dry run only reads it
    web = [droplet("com.uvlava.quinn.web", ("web",))]
    assert meshfile.write_registration(path, "quinn", web, dry_run=True).diff


# --------------------------------------------------------------------------- writing


def test_dry_run_shows_the_diff_and_writes_nothing(tmp_path: Path) -> None:
    path = registry(tmp_path)
    result = meshfile.write_registration(
        path, "quinn", [droplet("com.uvlava.quinn.web", ("web",))], dry_run=True
    )
    assert result.changed and not result.wrote
    assert '+    "web": {\n' in result.diff
    assert '+      "mesh_ip": "10.9.0.3",\n' in result.diff
    assert result.diff.startswith(f"--- {path}\n")
    assert path.read_text(encoding="utf-8") == BASE_TEXT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh-hosts.json"]


def test_write_keeps_permission_bits_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = registry(tmp_path)
    path.chmod(0o640)
    meshfile.write_registration(path, "quinn", [droplet("com.uvlava.quinn.web", ("web",))])
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_symlinked_registry_stays_a_symlink(tmp_path: Path) -> None:
    real = registry(tmp_path)
    link = tmp_path / "link" / "mesh-hosts.json"
    link.parent.mkdir()
    link.symlink_to(real)
    meshfile.write_registration(link, "quinn", [droplet("com.uvlava.quinn.web", ("web",))])
    assert link.is_symlink()
    assert "web" in json.loads(real.read_text(encoding="utf-8"))["hosts"]


def test_temp_files_left_by_a_killed_run_are_cleaned_up(tmp_path: Path) -> None:
    path = registry(tmp_path)
    orphan = tmp_path / ".mesh-hosts.json.abc123.infra-apply.tmp"
    orphan.write_text('{"half": ')
    unrelated = tmp_path / ".mesh-hosts.json.swp"
    unrelated.write_text("editor swap file")
    meshfile.write_registration(path, "quinn", [droplet()])
    assert not orphan.exists()
    assert unrelated.exists()


def test_registration_waits_for_the_lock_and_rereads_the_file_under_it(tmp_path: Path) -> None:
    path = registry(tmp_path)
    held = filelock.FileLock(f"{path}.lock")
    held.acquire()
    outcome: list[object] = []

    def register() -> None:
        try:
            outcome.append(meshfile.write_registration(path, "quinn", [droplet("a", ("a",))]))
        except Exception as e:  # surfaced by the assertion below
            outcome.append(e)

    worker = threading.Thread(target=register)
    worker.start()
    time.sleep(0.3)
    assert worker.is_alive() and path.read_text(encoding="utf-8") == BASE_TEXT
    # Another run's update lands while ours waits: ours must build on it, not on what it
    # would have read before taking the lock.
    other = mesh.plan_registration(base_doc(), "quinn", [droplet("b", ("b",))]).document
    path.write_text(strictjson.dump(other), encoding="utf-8")
    held.release()
    worker.join(10)

    assert isinstance(outcome[0], mesh.WriteResult)
    hosts = json.loads(path.read_text(encoding="utf-8"))["hosts"]
    assert (hosts["b"]["mesh_ip"], hosts["a"]["mesh_ip"]) == ("10.9.0.3", "10.9.0.4")


def test_a_lock_held_too_long_is_a_clear_error(tmp_path: Path) -> None:
    path = registry(tmp_path)
    busy = r"another infra-apply run holds the lock on mesh-hosts.json \(waited 0.1s\); lock file "
    with filelock.FileLock(f"{path}.lock"), pytest.raises(MeshError, match=busy):
        meshfile.write_registration(path, "quinn", [droplet("a", ("a",))], lock_timeout=0.1)
    assert path.read_text(encoding="utf-8") == BASE_TEXT


# --------------------------------------------------------------------------- properties


host_names = st.text(alphabet="abcdefgh-", min_size=1, max_size=4)


@st.composite
def scenario(draw: st.DrawFn) -> tuple[dict[str, Any], list[LiveDroplet]]:
    """A /27 registry with foreign and owned entries, and a set of live droplets."""
    net = ipaddress.ip_network("10.9.0.0/27")
    pool = [str(ip) for ip in net.hosts()]
    hosts: dict[str, Any] = {}
    for name in draw(st.lists(host_names, max_size=8, unique=True)):
        entry: dict[str, Any] = {"mesh_ip": draw(st.sampled_from(pool))}
        owner = draw(st.sampled_from([None, "d0", "d1", "d2", "other"]))
        if owner is not None:
            entry["droplet"] = owner
            entry["producer"] = "mc" if owner == "other" else "quinn"
        entry[draw(st.sampled_from(["note", "zz", "ssh"]))] = draw(st.integers() | st.text())
        hosts[name] = entry
    live_hosts = draw(st.lists(host_names, max_size=9, unique=True))
    live = []
    for i, name in enumerate(["d0", "d1", "d2"]):
        mine = tuple(live_hosts[i::3])
        if draw(st.booleans()):
            live.append(droplet(name, mine, droplet_id=str(i + 1), public_ip=f"192.0.2.{i}"))
    return {"network": str(net), "hosts": hosts, "extra": [1, {"k": "v"}]}, live


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(scenario())
def test_registration_properties(case: tuple[dict[str, Any], list[LiveDroplet]]) -> None:
    doc, live = case
    original = copy.deepcopy(doc)
    try:
        result = mesh.plan_registration(doc, "quinn", live)
    except MeshError as e:
        # Only a real conflict may refuse: some live host is held by another machine.
        assert "already" in e.message or "no free address" in e.message
        return
    new = result.document
    assert doc == original
    assert new["extra"] == original["extra"]
    live_hosts = {h: d for d in live for h in d.hosts}
    for name, entry in original["hosts"].items():
        if name not in live_hosts:
            assert new["hosts"][name] == entry  # not ours: untouched
        else:
            assert new["hosts"][name]["mesh_ip"] == entry["mesh_ip"]  # ours: address kept
    for d in live:
        kept = [e["mesh_ip"] for e in original["hosts"].values() if e.get("droplet") == d.name]
        added = [h for h in d.hosts if h not in original["hosts"]]
        assert all(new["hosts"][h]["droplet"] == d.name for h in d.hosts)
        # New hosts join the droplet's existing address (its first entry's), else one fresh
        # address shared by all of them.
        assert len({new["hosts"][h]["mesh_ip"] for h in added}) <= 1
        if added and kept:
            assert new["hosts"][added[0]]["mesh_ip"] == kept[0]
        elif added:
            fresh = new["hosts"][added[0]]["mesh_ip"]
            others = {e["mesh_ip"] for n, e in new["hosts"].items() if live_hosts.get(n) is not d}
            assert fresh not in others
            assert fresh not in ("10.9.0.0", "10.9.0.1", "10.9.0.31")
    again = mesh.plan_registration(new, "quinn", live)
    assert again.document == new and again.changes == ()


# --------------------------------------------------------------------------- crash safety


def crash_registry(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A registry big enough (~100 KB) that a torn write has a wide window to show."""
    doc = base_doc()
    for i in range(600):
        doc["hosts"][f"filler-{i:03d}"] = {
            "mesh_ip": f"10.9.{1 + i // 250}.{i % 250 + 2}",
            "note": "machine outside infra-apply " * 2,
        }
    doc["network"] = "10.9.0.0/16"
    path = tmp_path / "mesh-hosts.json"
    path.write_text(strictjson.dump(doc), encoding="utf-8")
    return path, doc


def check_consistent(path: Path, base: dict[str, Any]) -> str:
    """The file is whole and is either the state before or after a registration."""
    text = path.read_text(encoding="utf-8")
    doc = json.loads(text)  # raises on a truncated or torn file
    crash = {k: v for k, v in doc["hosts"].items() if k.startswith("crash-")}
    rest = {k: v for k, v in doc["hosts"].items() if not k.startswith("crash-")}
    assert rest == base["hosts"]
    assert {k: v for k, v in doc.items() if k != "hosts"} == {k: v for k, v in base.items() if k != "hosts"}
    if not crash:
        return "without"
    assert sorted(crash) == ["crash-a", "crash-b", "crash-c", "crash-d"]
    assert len({(e["mesh_ip"], e["public_ip"], e["droplet_id"]) for e in crash.values()}) == 1
    return "with"


def run_crash_trials(tmp_path: Path, trials: int, *, seed: int = 20261126) -> tuple[list[str], int]:
    """SIGKILL a registering worker at random moments; return the states seen, writes done.

    Each trial lets the worker finish 0-2 writes (it reports each one), then kills it at a
    random moment within about one more write, so kills land in every phase of a write
    however fast or loaded the machine is.
    """
    path, base = crash_registry(tmp_path)
    rng = random.Random(seed)
    states: list[str] = []
    writes = 0
    for _ in range(trials):
        args = [sys.executable, str(WORKER), "loop", str(path)]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        completed = rng.randint(0, 2)
        assert len(proc.stdout.read(completed)) == completed
        time.sleep(rng.uniform(0, 0.012))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        writes += completed + len(proc.stdout.read())
        proc.stdout.close()
        try:
            states.append(check_consistent(path, base))
        except (ValueError, AssertionError) as e:
            tail = path.read_text(encoding="utf-8")[-300:]
            raise AssertionError(f"registry broken after a kill ({e!r}): ...{tail}") from e
    return states, writes


def test_registration_killed_at_random_points_never_leaves_a_broken_file(
    tmp_path: Path,
) -> None:
    # 100 trials in two lanes (own registry each): the time goes to interpreter start-up.
    lanes = [tmp_path / "lane0", tmp_path / "lane1"]
    for lane in lanes:
        lane.mkdir()
    with ThreadPoolExecutor(len(lanes)) as pool:
        runs = list(pool.map(lambda i: run_crash_trials(lanes[i], 50, seed=i), range(2)))
    states = [s for lane_states, _ in runs for s in lane_states]
    assert "broken" not in states
    # Kills landed after registrations and after removals alike.
    assert sum(writes for _, writes in runs) > 50 and {"with", "without"} <= set(states)
    for lane in lanes:
        meshfile.write_registration(lane / "mesh-hosts.json", "quinn", [])
        assert not [p for p in lane.iterdir() if p.name.endswith(".tmp")]


def test_the_crash_check_catches_an_in_place_writer(tmp_path: Path) -> None:
    """Control: a kill in the middle of a truncate-and-write is caught by the same check.

    The naive worker stops half way through a write and says so: the kill lands there every
    time instead of wherever a random delay happens to put it on a loaded machine."""
    path, base = crash_registry(tmp_path)
    args = [sys.executable, str(WORKER), "loop", str(path), "--naive"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    assert proc.stdout.read(1) == b"T"  # half of the first write is on disk
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    with pytest.raises((ValueError, AssertionError)):
        check_consistent(path, base)


def test_concurrent_registrations_lose_no_update(tmp_path: Path) -> None:
    path, base = crash_registry(tmp_path)
    go = tmp_path / "go"
    workers, per_worker = 6, 4
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "register", str(path), str(i), str(per_worker), str(go)],
            stdout=subprocess.PIPE,
        )
        for i in range(workers)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
    go.touch()  # all start at once
    for p in procs:
        assert p.wait(60) == 0
        assert p.stdout is not None
        p.stdout.close()

    hosts = json.loads(path.read_text(encoding="utf-8"))["hosts"]
    by_droplet: dict[str, set[str]] = {}
    for i in range(workers):
        for n in range(per_worker):
            app, db = hosts[f"w{i}-{n}-app"], hosts[f"w{i}-{n}-db"]
            assert app["mesh_ip"] == db["mesh_ip"]
            by_droplet[app["droplet"]] = {app["mesh_ip"]}
    ips = [ip for s in by_droplet.values() for ip in s]
    assert len(ips) == workers * per_worker == len(set(ips))
    assert not set(ips) & {e["mesh_ip"] for e in base["hosts"].values()}
    assert {k: v for k, v in hosts.items() if k in base["hosts"]} == base["hosts"]
