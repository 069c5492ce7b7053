"""Subprocess side of the shared mesh allocation tests (tests/registry/test_mesh_allocations.py): one
runner registering droplets into its own copy of mesh-hosts.json, mesh IPs reserved in the
allocation record in a moto bucket through real Terraform.

mesh_alloc_worker.py ENDPOINT BUCKET STATE MESH GO_FILE PRODUCER NAME... [--die-after-reserve]
    Print "ready", wait until GO_FILE exists, then register each droplet NAME (one
    write_registration each), printing "done NAME IP" after each. With --die-after-reserve
    the last one stops once its address is reserved in the record, before mesh-hosts.json is
    written: it prints "reserved NAME IP" and waits to be killed.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra_apply.manifests.config import Backend
from infra_apply.registry import mesh, meshfile
from infra_apply.registry.allocations import open_record
from infra_apply.runtime import terraform as tf


def droplet(producer: str, name: str, n: int) -> mesh.LiveDroplet:
    return mesh.LiveDroplet(
        name=f"com.uvlava.{producer}.{name}",
        droplet_id=str(5000 + n),
        public_ip=f"198.51.100.{n + 10}",
        private_ip=f"10.116.2.{n + 10}",
        region="nyc3",
        hosts=(f"{producer}-{name}",),
        producer=producer,
    )


def main(argv: list[str]) -> None:
    die = "--die-after-reserve" in argv
    endpoint, bucket, state, path, go, producer, *names = [a for a in argv if a != "--die-after-reserve"]
    backend = Backend("s3", bucket=bucket, endpoint=endpoint, region="us-east-1", key_prefix="live")
    record = open_record(Path(state), Path(state) / "work", backend, tf.find_binary(), os.environ)
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.01)
    for n, name in enumerate(names):
        d = droplet(producer, name, n)
        last = die and n == len(names) - 1

        def allocate(doc: dict[str, Any], d: mesh.LiveDroplet = d, last: bool = last) -> Mapping[str, str]:
            got = record.allocate(doc, producer, [d])
            if last:
                print(f"reserved {d.name} {got[d.name]}", flush=True)
                time.sleep(600)  # killed here: reserved in the record, not written locally
            return got

        result = meshfile.write_registration(Path(path), producer, [d], allocate=allocate)
        print(f"done {d.name} {result.changes[0].mesh_ip}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
