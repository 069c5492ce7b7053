"""Mesh IPs agree across runners with remote state: the allocation record in the state bucket
(infra_apply/registry/allocations.py). Pure cases first, then real runner processes on one moto bucket,
one of them SIGKILLed between reserving an address and writing its mesh-hosts.json."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from infra_apply.errors import MeshError
from infra_apply.registry.allocations import Record, Slot, decode, encode, reserve
from infra_apply.registry.mesh import LiveDroplet, plan_registration
from tests.conftest import EXAMPLE_MESH, TESTS, run_cli
from tests.runtime.test_remote_state import ACCESS_KEY, SECRET_KEY, Remote, s3_client, s3_endpoint

__all__ = ["s3_endpoint"]  # the module-scoped moto server fixture

WORKER = TESTS / "mesh_alloc_worker.py"


def example_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(EXAMPLE_MESH.read_text())
    return doc


def live(producer: str, name: str, *hosts: str) -> LiveDroplet:
    return LiveDroplet(
        f"com.uvlava.{producer}.{name}", "1", "203.0.113.9", "10.116.0.9", "nyc3", hosts or (name,), producer
    )


def register(record: Record, doc: dict[str, Any], d: LiveDroplet) -> tuple[Record, dict[str, Any]]:
    """One runner's registration: reserve in the record, then write its own file."""
    record, assigned = reserve(record, doc, d.producer, [d])
    return record, plan_registration(doc, d.producer, [d], assigned=assigned).document


def ip_owners(*docs: dict[str, Any]) -> dict[str, set[str]]:
    """mesh IP -> every machine (droplet, or host outside infra-apply) any file gives it to."""
    owners: dict[str, set[str]] = {}
    for doc in docs:
        for host, entry in doc["hosts"].items():
            owners.setdefault(entry["mesh_ip"], set()).add(entry.get("droplet", host))
    return owners


def test_two_runners_with_their_own_files_never_share_an_ip() -> None:
    a, b = example_doc(), example_doc()
    b["hosts"]["laptop"] = {"mesh_ip": "10.9.0.4", "provider": "mac"}  # net-tools, b's copy only
    record = Record()
    record, b = register(record, b, live("quinn", "dns"))
    record, a = register(record, a, live("ct", "redroid"))  # a's copy has no laptop: .4 taken all the same
    record, a = register(record, a, live("ct", "services"))
    record, b = register(record, b, live("quinn", "mcp"))
    owners = ip_owners(a, b)
    assert all(len(machines) == 1 for machines in owners.values()), owners
    assert record.others["10.9.0.4"] == "laptop"
    assert {n: s.mesh_ip for n, s in record.droplets.items()} == {
        "com.uvlava.quinn.artifacts": "10.9.0.6",  # from the files
        "com.uvlava.quinn.dns": "10.9.0.5",
        "com.uvlava.ct.redroid": "10.9.0.7",
        "com.uvlava.ct.services": "10.9.0.8",
        "com.uvlava.quinn.mcp": "10.9.0.9",
    }


def test_a_host_net_tools_gave_an_address_the_record_handed_out_is_refused_not_shared() -> None:
    a, b = example_doc(), example_doc()
    record, a = register(Record(), a, live("ct", "redroid"))  # .4: a's copy has no laptop
    b["hosts"]["laptop"] = {"mesh_ip": "10.9.0.4", "provider": "mac"}
    with pytest.raises(
        MeshError, match=r"here host 'laptop' .* has mesh IP 10\.9\.0\.4, the record gives droplet"
    ):
        register(record, b, live("quinn", "dns"))


def test_an_address_reserved_but_never_written_goes_to_that_droplet_only() -> None:
    a, b = example_doc(), example_doc()
    record, _ = reserve(Record(), a, "ct", [live("ct", "redroid")])  # killed before writing a
    ip = record.droplets["com.uvlava.ct.redroid"].mesh_ip
    record, b = register(record, b, live("quinn", "dns"))
    assert b["hosts"]["dns"]["mesh_ip"] != ip
    record, a = register(record, a, live("ct", "redroid"))  # the next run, any runner
    assert a["hosts"]["redroid"]["mesh_ip"] == ip
    assert decode(encode(record)) == record


def test_a_file_disagreeing_with_the_record_is_refused() -> None:
    record = Record("10.9.0.0/24", {"com.uvlava.quinn.artifacts": Slot("10.9.0.9", "quinn")})
    with pytest.raises(MeshError, match=r"disagree: here droplet 'com\.uvlava\.quinn\.artifacts'"):
        reserve(record, example_doc(), "ct", [live("ct", "redroid")])
    with pytest.raises(MeshError, match="every runner must use one mesh network"):
        reserve(Record("10.8.0.0/24"), example_doc(), "ct", [live("ct", "redroid")])


def test_an_entry_naming_no_producer_is_taken_over_by_the_producer_registering_it() -> None:
    doc = example_doc()
    del doc["hosts"]["forge"]["producer"]
    record, doc = register(Record(), doc, live("quinn", "artifacts", "forge"))
    assert record.droplets["com.uvlava.quinn.artifacts"] == Slot("10.9.0.6", "quinn")
    assert doc["hosts"]["forge"]["mesh_ip"] == "10.9.0.6"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("{", "not JSON"),
        ('{"format": 2}', "format 2"),
        ('{"format": 1, "network": null, "droplets": {"x": {"mesh_ip": "nope"}}, "others": {}}', "'x'"),
    ],
    ids=["deep", "broken", "newer", "bad-ip"],
)
def test_an_unreadable_record_is_a_plain_error(raw: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        decode(raw)


def test_a_destroyed_droplet_releases_its_address_and_a_rename_keeps_it() -> None:
    doc = example_doc()
    record, doc = register(Record(), doc, live("ct", "redroid"))
    ip = doc["hosts"]["redroid"]["mesh_ip"]
    moved, _ = reserve(
        record,
        doc,
        "ct",
        [live("ct", "android", "redroid")],
        renamed={"com.uvlava.ct.redroid": "com.uvlava.ct.android"},
    )
    assert moved.droplets["com.uvlava.ct.android"].mesh_ip == ip
    assert "com.uvlava.ct.redroid" not in moved.droplets
    freed, _ = reserve(record, doc, "ct", [], removed=["com.uvlava.ct.redroid"])
    assert "com.uvlava.ct.redroid" not in freed.droplets


# --- real runners, one bucket ---------------------------------------------------------------


def start(
    endpoint: str,
    bucket: str,
    base: Path,
    runner: str,
    go: Path,
    producer: str,
    *names: str,
    die: bool = False,
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "INFRA_APPLY_STATE_DIR": str(base / runner / "state"),
    }
    argv = [
        sys.executable,
        str(WORKER),
        endpoint,
        bucket,
        str(base / runner / "state"),
        str(base / runner / "mesh-hosts.json"),
        str(go),
        producer,
        *names,
    ]
    proc = subprocess.Popen(
        [*argv, *(["--die-after-reserve"] if die else [])],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", line + proc.stderr.read() if proc.stderr else line
    return proc


def test_two_runners_one_killed_mid_registration_never_give_one_ip_twice(
    s3_endpoint: str, tmp_path: Path
) -> None:
    bucket = f"mesh-{uuid.uuid4().hex[:12]}"
    s3_client(s3_endpoint).create_bucket(Bucket=bucket)
    for runner in ("a", "b"):
        (tmp_path / runner).mkdir()
        shutil.copy(EXAMPLE_MESH, tmp_path / runner / "mesh-hosts.json")
    go = tmp_path / "go"
    a = start(s3_endpoint, bucket, tmp_path, "a", go, "ct", "redroid", "services", "gpu", die=True)
    b = start(s3_endpoint, bucket, tmp_path, "b", go, "quinn", "dns", "mcp", "cache")
    go.touch()
    assert a.stdout is not None
    done_a = [a.stdout.readline() for _ in range(2)]
    reserved = a.stdout.readline().split()
    assert reserved[:2] == ["reserved", "com.uvlava.ct.gpu"], (done_a, reserved, a.stderr and a.stderr.read())
    os.killpg(a.pid, signal.SIGKILL)  # the runner dies: the address is in the record, not in a's file
    a.wait()
    _, err_b = b.communicate(timeout=300)
    assert b.returncode == 0, err_b
    files = [json.loads((tmp_path / r / "mesh-hosts.json").read_text()) for r in ("a", "b")]
    assert "ct-gpu" not in files[0]["hosts"]
    owners = ip_owners(*files)
    assert reserved[2] not in owners  # nobody else was given the reserved address
    assert all(len(machines) == 1 for machines in owners.values()), owners

    # the next run of runner a registers the droplet whose registration was killed
    go2 = tmp_path / "go2"
    again = start(s3_endpoint, bucket, tmp_path, "a", go2, "ct", "gpu")
    go2.touch()
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert out.split() == ["done", "com.uvlava.ct.gpu", reserved[2]]
    files = [json.loads((tmp_path / r / "mesh-hosts.json").read_text()) for r in ("a", "b")]
    owners = ip_owners(*files)
    assert all(len(machines) == 1 for machines in owners.values()), owners
    assert len(owners) == 4 + 6  # wg, fennel, pixel, forge and the six droplets, one address each


# --- the whole flow: two checkouts, two runners, one bucket ----------------------------------


def sandbox_registry_of(state: Path) -> dict[str, Any]:
    [path] = state.glob("sandbox/mesh/*/mesh-hosts.json")
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def test_concurrent_applies_from_two_checkouts_give_no_ip_twice_and_copies_agree(
    example: Path, s3_endpoint: str
) -> None:
    remote = Remote(example, s3_endpoint)
    shutil.copytree(example / "tree", example / "tree-b")
    shared_cloud = example / "cloud.json"
    runners = {"a": ("tree", "quinn"), "b": ("tree-b", "ct")}
    envs, procs = {}, {}
    for runner, (tree, producer) in runners.items():
        shutil.copy(EXAMPLE_MESH, example / f"mesh-{runner}.json")
        envs[runner] = remote.env(f"state-{runner}", INFRA_APPLY_SANDBOX_CLOUD=str(shared_cloud))
        argv = ["--root", str(example / tree), "--mesh-hosts", str(example / f"mesh-{runner}.json")]
        argv += ["apply", "--producer", producer, "--auto-approve", "--sandbox", "--out", str(remote.out)]
        procs[runner] = subprocess.Popen(
            [sys.executable, "-m", "infra_apply", *argv],
            env=envs[runner],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for runner, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{runner}:\n{out}\n{err}"
    docs = [sandbox_registry_of(example / f"state-{r}") for r in runners]
    owners = ip_owners(*docs)
    assert all(len(machines) == 1 for machines in owners.values()), owners

    # Each runner registers the other's producer from the shared state: both copies agree.
    for runner, (tree, _) in runners.items():
        other = "ct" if runner == "a" else "quinn"
        r = run_cli(
            "--root", str(example / tree), "--mesh-hosts", str(example / f"mesh-{runner}.json"),
            "register", "--producer", other, "--sandbox", "--out", str(remote.out), env=envs[runner],
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
    a, b = (sandbox_registry_of(example / f"state-{r}") for r in runners)
    assert a["hosts"] == b["hosts"]
    assert all(len(machines) == 1 for machines in ip_owners(a).values()), ip_owners(a)
    assert any(e.get("producer") == "ct" for e in a["hosts"].values())
    assert any(
        e.get("producer") == "quinn" and e["droplet"] != "com.uvlava.quinn.artifacts"
        for e in a["hosts"].values()
    )
