"""Subprocess side of the mesh crash and concurrency tests (run by tests/registry/test_mesh.py).

mesh_crash_worker.py loop PATH [--naive]
    Print "ready", then register and unregister droplet "crash" forever, writing one
    byte to stdout after each completed write. The parent SIGKILLs it at a random
    moment. --naive swaps the atomic replace for an in-place json.dump, to prove the
    parent's check does catch a torn write.

mesh_crash_worker.py register PATH INDEX COUNT GO_FILE
    Print "ready", wait until GO_FILE exists, then register droplets
    worker<INDEX>-<n> (n < COUNT) one write_registration call each.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra_apply.registry import mesh, meshfile

PRODUCER = "quinn"
CRASH_HOSTS = ("crash-a", "crash-b", "crash-c", "crash-d")


def crash_droplet(i: int) -> mesh.LiveDroplet:
    return mesh.LiveDroplet(
        name="com.uvlava.quinn.crash",
        droplet_id=str(1000 + i),
        public_ip=f"203.0.113.{i % 250 + 1}",
        private_ip=f"10.116.0.{i % 250 + 1}",
        region="nyc3",
        hosts=CRASH_HOSTS,
        producer=PRODUCER,
    )


def naive_replace(out: BinaryIO) -> Callable[[Path, str], None]:
    """What a careless writer does: truncate in place, then write. It stops half way and says
    so ("T"), so the parent's kill lands mid-write every time, however loaded the machine."""

    def replace(target: Path, text: str) -> None:
        with open(target, "w", encoding="utf-8") as f:
            f.write(text[: len(text) // 2])
            f.flush()
            out.write(b"T")
            time.sleep(600)  # killed here
            f.write(text[len(text) // 2 :])

    return replace


def loop(path: Path, naive: bool) -> None:
    out = os.fdopen(sys.stdout.fileno(), "wb", buffering=0)
    if naive:
        meshfile._replace_atomically = naive_replace(out)
    out.write(b"ready\n")
    i = 0
    while True:
        if i % 2 == 0:
            meshfile.write_registration(path, PRODUCER, [crash_droplet(i)])
        else:
            meshfile.write_registration(path, PRODUCER, [], removed=["com.uvlava.quinn.crash"])
        out.write(b".")
        i += 1


def register(path: Path, index: int, count: int, go: Path) -> None:
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    for n in range(count):
        droplet = mesh.LiveDroplet(
            name=f"com.uvlava.quinn.worker{index}-{n}",
            droplet_id=str(index * 100 + n + 1),
            public_ip=f"198.51.100.{index * 10 + n + 1}",
            private_ip=f"10.116.1.{index * 10 + n + 1}",
            region="nyc3",
            hosts=(f"w{index}-{n}-app", f"w{index}-{n}-db"),
            producer=PRODUCER,
        )
        meshfile.write_registration(path, PRODUCER, [droplet])


def main(argv: list[str]) -> None:
    if argv[0] == "loop":
        loop(Path(argv[1]), naive="--naive" in argv[2:])
    elif argv[0] == "register":
        register(Path(argv[1]), int(argv[2]), int(argv[3]), Path(argv[4]))
    else:
        raise SystemExit(f"unknown mode {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
