"""The lease store: leases in the Terraform state of a root of their own, read and
compare-and-swapped with the real ``terraform`` binary, locally and in an S3 bucket (moto)."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from infra_apply.gpu.lease import Lease, mark_up
from infra_apply.gpu.store import (
    LeaseConflict,
    LeaseStore,
    LeaseStoreError,
    Snapshot,
    StoreBusy,
    encode,
    lease_copy,
)
from infra_apply.runtime import terraform as tf
from infra_apply.runtime.state import Backend
from tests.gpu_helpers import CT_GPU, SECRET_KEY, Bucket, make_store, moto_s3
from tests.gpu_helpers import a_lease as helpers_lease

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
TOKEN = "FAKE-do-token_gpu_store_token_never_in_files"


def a_lease(name: str = CT_GPU, producer: str = "ct", at: datetime = T0) -> Lease:
    return helpers_lease(at, name, producer)


@pytest.fixture
def local(tmp_path: Path) -> LeaseStore:
    return make_store(tmp_path / "state")


def test_an_empty_store_reads_as_no_leases(local: LeaseStore) -> None:
    assert local.read() == Snapshot(None, {})


def test_written_leases_read_back(local: LeaseStore) -> None:
    leases = {CT_GPU: mark_up(a_lease(), T0, droplet_id="1001", ip="203.0.113.5", hourly_price=3.39)}
    written = local.write(local.read(), leases)
    assert local.read() == written == Snapshot(encode("ct", leases), leases)
    # a fresh store object (another run) sees the same
    assert make_store(local.path.parent.parent.parent.parent).read().leases == leases


def test_the_root_is_private_beside_the_working_copies_and_holds_no_token(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = make_store(state, DIGITALOCEAN_TOKEN=TOKEN, DIGITALOCEAN_ACCESS_TOKEN=TOKEN)
    store.write(store.read(), {CT_GPU: a_lease()})
    assert store.path == state / "work" / "live" / "tree-0123456789" / "ct.gpu-leases"
    assert "DIGITALOCEAN_TOKEN" not in store.wd.env and "DIGITALOCEAN_ACCESS_TOKEN" not in store.wd.env
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o700
    tfstate = store.path / "terraform.tfstate"
    assert stat.S_IMODE(tfstate.stat().st_mode) == 0o600
    for path in store.path.rglob("*"):
        assert not stat.S_IMODE(path.stat().st_mode) & 0o077, path
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes()
    assert json.loads(json.loads(tfstate.read_text())["outputs"]["leases"]["value"])["leases"][CT_GPU][
        "who"
    ] == ("ops@box")


def test_a_lease_copy_is_never_a_producer_copy(tmp_path: Path) -> None:
    assert lease_copy(tmp_path, "ct").name == "ct.gpu-leases"
    with pytest.raises(Exception, match="refusing to write"):
        lease_copy(tmp_path, "../ct")


def test_it_needs_no_provider_and_no_registry(tmp_path: Path) -> None:
    """``terraform_data`` is built in: with every provider installation forbidden, the lease
    root still initialises and writes."""
    config = tmp_path / "no-providers.tfrc"
    config.write_text('provider_installation {\n  direct {\n    exclude = ["*/*/*"]\n  }\n}\n')
    store = make_store(tmp_path / "state", TF_CLI_CONFIG_FILE=str(config))
    store.write(store.read(), {CT_GPU: a_lease()})
    assert list(store.read().leases) == [CT_GPU]
    assert not (store.path / ".terraform.lock.hcl").exists()


def test_rewriting_the_same_leases_applies_nothing(local: LeaseStore) -> None:
    local.write(local.read(), {CT_GPU: a_lease()})
    serial = _serial(local)
    local.write(local.read(), {CT_GPU: a_lease()})
    assert _serial(local) == serial


def test_a_write_from_a_stale_read_is_refused_and_changes_nothing(local: LeaseStore) -> None:
    first = local.read()
    other = make_store(local.path.parents[3])  # another run, same machine
    other.write(other.read(), {CT_GPU: a_lease()})
    with pytest.raises(LeaseConflict, match="changed while this run decided on them"):
        local.write(first, {"com.uvlava.ct.gpu2": a_lease("com.uvlava.ct.gpu2")})
    assert list(local.read().leases) == [CT_GPU]


def test_a_write_between_plan_and_apply_makes_the_plan_stale(
    local: LeaseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compare happens on the plan; Terraform's own stale-plan check covers the instant
    between that compare and the apply."""
    seen = local.read()
    real_show = tf.show_json
    sneaked: list[bool] = []

    def show_then_sneak_a_write(wd: tf.Workdir, plan_file: str | None = None) -> dict[str, Any]:
        doc = real_show(wd, plan_file)
        if not sneaked:  # another writer (plain terraform: it must not touch our plan file)
            sneaked.append(True)
            theirs = encode("ct", {"com.uvlava.ct.gpu9": a_lease("com.uvlava.ct.gpu9")})
            result = wd.run("apply", auto_approve=True, input=False, var=[f"leases={theirs}"])
            assert result.code == 0, result.stderr
        return doc

    monkeypatch.setattr(tf, "show_json", show_then_sneak_a_write)  # the module store.py calls
    with pytest.raises(LeaseConflict):
        local.write(seen, {CT_GPU: a_lease()})
    monkeypatch.undo()
    assert list(local.read().leases) == ["com.uvlava.ct.gpu9"]


def test_update_reads_again_after_a_conflict(local: LeaseStore) -> None:
    calls: list[list[str]] = []
    other = make_store(local.path.parents[3])

    def add_mine(current: Mapping[str, Lease]) -> dict[str, Lease]:
        calls.append(sorted(current))
        if len(calls) == 1:  # somebody else writes while this one decides
            other.write(other.read(), {"com.uvlava.ct.theirs": a_lease("com.uvlava.ct.theirs")})
        return {**current, CT_GPU: a_lease()}

    local.update(add_mine)
    assert calls == [[], ["com.uvlava.ct.theirs"]]
    assert sorted(local.read().leases) == [CT_GPU, "com.uvlava.ct.theirs"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "is unreadable: not JSON"),
        ('{"format": 2, "producer": "ct", "leases": {}}', "format 2; this infra-apply reads format 1"),
        ('{"format": 1, "producer": "mc", "leases": {}}', "holds the leases of producer 'mc'"),
        ('{"format": 1, "producer": "ct", "leases": {"x": {"gpu": "x"}}}', "producer is missing"),
    ],
)
def test_a_damaged_store_is_an_error_and_is_left_alone(
    local: LeaseStore, document: str, message: str
) -> None:
    result = local.wd.run("apply", auto_approve=True, input=False, no_color=True, var=[f"leases={document}"])
    assert result.code == 0, result.stderr
    with pytest.raises(LeaseStoreError, match=message) as info:
        local.read()
    assert info.value.message.endswith("nothing was changed")
    assert local.wd.run("output", "leases", json=True).stdout.strip() == json.dumps(document)


def test_leases_of_another_producer_are_never_filed_here() -> None:
    with pytest.raises(ValueError, match="filed under ct"):
        encode("ct", {"com.uvlava.mc.gpu": a_lease("com.uvlava.mc.gpu", producer="mc")})


def test_exclusive_is_one_holder_per_machine(local: LeaseStore, tmp_path: Path) -> None:
    """Another process holding the lock: this one gives way at once (the timer's reap)."""
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, f"{local.path}.lock"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        busy = pytest.raises(StoreBusy, match="run holds the lock on the GPU leases of producer ct;")
        with busy, local.exclusive(0):
            pass
    finally:
        holder.communicate("done\n", timeout=60)
    with local.exclusive(0):  # free again once the holder has gone
        pass


_HOLD = """
import sys
from filelock import FileLock
with FileLock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_switching_to_remote_state_with_local_leases_is_refused(local: LeaseStore, tmp_path: Path) -> None:
    local.write(local.read(), {CT_GPU: a_lease()})
    remote = Backend("s3", bucket="b", endpoint="http://127.0.0.1:9", key_prefix="live")
    with pytest.raises(LeaseStoreError, match=r"holds GPU leases in local state .* init -migrate-state"):
        make_store(local.path.parents[3], backend=remote)
    assert list(local.read().leases) == [CT_GPU]


def _serial(store: LeaseStore) -> int:
    return int(json.loads((store.path / "terraform.tfstate").read_text())["serial"])


# --- remote state: the producer's bucket, moto's S3 server standing in for Spaces ------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture
def bucket(s3_endpoint: str) -> Bucket:
    return Bucket(s3_endpoint)


def test_remote_leases_live_in_the_producers_bucket(bucket: Bucket, tmp_path: Path) -> None:
    mine = bucket.store(tmp_path / "machine-a")
    mine.write(mine.read(), {CT_GPU: a_lease()})
    raw = bucket.get("live/ct/gpu-leases.tfstate")
    assert raw is not None and CT_GPU.encode() in raw
    assert bucket.get("live/ct/gpu-leases.tfstate.tflock") is None  # Terraform released its lock
    assert not (mine.path / "terraform.tfstate").exists()
    assert re.search(r'key\s+= "live/ct/gpu-leases.tfstate"', (mine.path / "backend.tf").read_text())
    # a teammate's machine (another state dir) sees one truth
    theirs = bucket.store(tmp_path / "machine-b")
    assert theirs.read().leases == {CT_GPU: a_lease()}
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET_KEY.encode() not in path.read_bytes(), path


def test_remote_compare_and_swap_across_machines(bucket: Bucket, tmp_path: Path) -> None:
    a, b = bucket.store(tmp_path / "machine-a"), bucket.store(tmp_path / "machine-b")
    seen_a, seen_b = a.read(), b.read()
    a.write(seen_a, {CT_GPU: a_lease()})
    with pytest.raises(LeaseConflict):
        b.write(seen_b, {CT_GPU: replace(a_lease(), who="other@laptop", until=T0 + timedelta(hours=1))})
    assert b.read().leases[CT_GPU].who == "ops@box"


def test_each_producer_has_its_own_remote_store(bucket: Bucket, tmp_path: Path) -> None:
    ct, mc = bucket.store(tmp_path / "s"), bucket.store(tmp_path / "s", "mc")
    ct.write(ct.read(), {CT_GPU: a_lease()})
    assert mc.read().leases == {}
    assert bucket.get("live/mc/gpu-leases.tfstate") is None


def test_a_deeply_nested_leases_document_is_unreadable_not_a_crash() -> None:
    from infra_apply.gpu.store import decode

    with pytest.raises(ValueError, match="nested too deeply"):
        decode("ct", "[" * 100_000 + "]" * 100_000)
