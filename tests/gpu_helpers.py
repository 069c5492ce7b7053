"""Shared by the test_gpu_*.py files: lease stores on the real ``terraform`` binary, locally
or in a bucket of moto's S3 server (standing in for DigitalOcean Spaces)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from infra_apply.gpu.config import GpuSettings
from infra_apply.gpu.lease import Lease, new_lease
from infra_apply.gpu.store import LeaseStore, open_store
from infra_apply.runtime import terraform as tf
from infra_apply.runtime.state import Backend
from tests.conftest import moto_server

CT_GPU = "com.uvlava.ct.gpu"
ROOT_KEY = "tree-0123456789"
# Distinctive dummy credentials (moto accepts any), so a leak into a file is found by grep.
ACCESS_KEY = "AKIAINFRAAPPLYGPU001"
SECRET_KEY = "moto-secret-gpu-leases-never-in-files"


def a_lease(at: datetime, name: str = CT_GPU, producer: str = "ct", **settings: Any) -> Lease:
    return new_lease(at, None, GpuSettings(name, **settings), producer=producer, who="ops@box")


def store_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DIGITALOCEAN_", "SPACES_"))}
    env.update(extra)
    return env


def make_store(state: Path, producer: str = "ct", backend: Backend | None = None, **env: str) -> LeaseStore:
    """The store a run with state dir ``state`` opens (one state dir = one machine)."""
    full = store_env(**env)
    work_root = state / "work" / "live" / ROOT_KEY
    return open_store(state, work_root, producer, backend or Backend("local"), tf.find_binary(full), full)


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    server = moto_server()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


class Bucket:
    """A fresh bucket; ``store`` opens a producer's lease store in it from one machine."""

    def __init__(self, endpoint: str) -> None:
        self.name = f"tfstate-{uuid.uuid4().hex[:12]}"
        self.s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        self.s3.create_bucket(Bucket=self.name)
        self.backend = Backend("s3", bucket=self.name, endpoint=endpoint, key_prefix="live")
        self.env = {"SPACES_ACCESS_KEY_ID": ACCESS_KEY, "SPACES_SECRET_ACCESS_KEY": SECRET_KEY}

    def store(self, state: Path, producer: str = "ct") -> LeaseStore:
        return make_store(state, producer, self.backend, **self.env)

    def get(self, key: str) -> bytes | None:
        try:
            body: bytes = self.s3.get_object(Bucket=self.name, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise
        return body
