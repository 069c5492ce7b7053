"""The state bucket is probed for conditional writes before Terraform's lockfile is relied on:
a store that accepts a second create-if-absent (a proxy in front of moto dropping
``If-None-Match``) is refused before anything is planned or applied. Real Terraform, moto."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra_apply.cloud.bucket import BucketError, cache_file, check_locking
from infra_apply.manifests.config import Backend
from infra_apply.runtime import terraform as tf
from infra_apply.sandbox import cloud
from tests.runtime.test_remote_state import Remote, s3_client, s3_endpoint
from tests.s3_proxy import Proxy, s3_proxy

__all__ = ["s3_endpoint"]  # the module-scoped moto server fixture

ENV = {"AWS_ACCESS_KEY_ID": "AKIAINFRAAPPLYMOTO01", "AWS_SECRET_ACCESS_KEY": "moto-secret"}


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[tuple[str, Proxy]]:
    with s3_proxy(s3_endpoint) as pair:
        yield pair


def bucket(endpoint: str) -> Backend:
    name = f"probe-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return Backend("s3", bucket=name, endpoint=endpoint, region="us-east-1", key_prefix="live")


def check(state: Path, backend: Backend) -> None:
    import os

    check_locking(state, backend, tf.find_binary(), {**os.environ, **ENV})


def test_a_sound_bucket_passes_once_and_the_answer_is_cached_per_bucket(
    tmp_path: Path, proxy: tuple[str, Proxy]
) -> None:
    endpoint, control = proxy
    control.strip = False
    sound = bucket(endpoint)
    check(tmp_path, sound)
    assert control.conditional_puts == 2  # the holder's lock, then the refused second one
    assert cache_file(tmp_path, sound).is_file()
    assert oct(cache_file(tmp_path, sound).stat().st_mode & 0o777) == "0o600"
    assert not list((tmp_path / "bucket-probe").iterdir())  # the probe's root is gone
    assert s3_client(endpoint).list_objects_v2(Bucket=sound.bucket).get("KeyCount") == 0

    control.strip = True  # the same endpoint now drops If-None-Match
    check(tmp_path, sound)  # cached for this bucket: not probed again
    assert control.conditional_puts == 2
    other = bucket(endpoint)  # another bucket behind it is probed, and refused
    with pytest.raises(BucketError, match="does not honour conditional writes") as caught:
        check(tmp_path, other)
    assert control.conditional_puts == 4
    assert "locks nothing" in caught.value.message and other.bucket in caught.value.message
    assert not cache_file(tmp_path, other).exists()  # a refusal is never cached
    assert s3_client(endpoint).list_objects_v2(Bucket=other.bucket).get("KeyCount") == 0


def test_local_state_is_never_probed(tmp_path: Path) -> None:
    check(tmp_path, Backend("local"))
    assert not (tmp_path / "cache").exists()


def test_apply_against_a_bucket_ignoring_if_none_match_is_refused_before_anything(
    example: Path, proxy: tuple[str, Proxy]
) -> None:
    endpoint, control = proxy
    remote = Remote(example, endpoint)
    shared_cloud = example / "cloud.json"
    env = remote.env(INFRA_APPLY_SANDBOX_CLOUD=str(shared_cloud))
    code, out, err = remote.run(env, "apply", "--producer", "quinn", "--auto-approve")
    assert code == 1, out + err
    assert "infra-apply: error: the state bucket" in err and "does not honour conditional writes" in err
    assert "applied" not in out
    assert not shared_cloud.exists() or cloud.list_droplets(shared_cloud) == []
    assert remote.s3.list_objects_v2(Bucket=remote.bucket).get("KeyCount") == 0  # no state, no lock
    assert not (example / "state" / "work").exists()  # stopped before any working copy

    control.strip = False  # the same bucket behind a store that honours it: applied
    code, out, err = remote.run(env, "apply", "--producer", "quinn", "--auto-approve")
    assert code == 0, out + err
    assert "quinn: applied" in out
