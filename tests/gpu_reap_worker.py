"""One ``reap`` pass in a process of its own, for the concurrency tests of test_gpu_lifecycle.py.

Usage: ``python gpu_reap_worker.py CONFIG_JSON``. It talks over stdout, one line per event,
and when gated waits for a line on stdin, so the test decides when each step may go on (the
test waits on these lines, never on a clock):

- ``probing GPU``: its queue probe runs (gated by ``gate_probe``);
- ``acting GPU``: it releases GPU (gated by ``gate_act``), then appends ``WHO GPU`` to the
  act log: the one record of who released what;
- ``busy``: another run on this machine holds the leases (exit 3);
- ``outcomes JSON``: what the pass did.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from infra_apply.gpu.config import GpuSettings, parse_duration
from infra_apply.gpu.lease import Lease
from infra_apply.gpu.lifecycle import reap
from infra_apply.gpu.probe import ProbeResult
from infra_apply.gpu.store import StoreBusy, open_store
from infra_apply.runtime import terraform as tf
from infra_apply.runtime.state import Backend


def main(config: dict[str, Any]) -> int:
    env = {**os.environ, **config.get("env", {})}
    state = Path(config["state"])
    backend = Backend(**config["backend"]) if config.get("backend") else Backend("local")
    store = open_store(
        state, state / "work" / "live" / "tree-0123456789", "ct", backend, tf.find_binary(env), env
    )
    settings = {
        name: GpuSettings(name, queue_depth="echo 0", idle_after=parse_duration(config["idle_after"]))
        for name in config["gpus"]
    }

    def gate(flag: str) -> None:
        if config.get(flag):
            sys.stdin.readline()

    def probe(s: GpuSettings) -> ProbeResult:
        print(f"probing {s.name}", flush=True)
        gate("gate_probe")
        return ProbeResult(depth=int(config["depth"]))

    def release(lease: Lease) -> None:
        print(f"acting {lease.gpu}", flush=True)
        gate("gate_act")
        with open(config["act_log"], "a") as log:
            log.write(f"{config['who']} {lease.gpu}\n")

    try:
        outcomes = reap(store, settings, who=config["who"], probe=probe, release=release, wait=config["wait"])
    except StoreBusy:
        print("busy", flush=True)
        return 3
    done = [{"gpu": o.gpu, "released": o.released, "skipped": o.skipped, "error": o.error} for o in outcomes]
    print("outcomes " + json.dumps(done), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
