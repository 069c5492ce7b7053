"""The mesh allocation record: with remote state, one truth about which mesh IP each droplet has.

Several runners (CI jobs, teammates) register into their own copies of mesh-hosts.json; each
picking "the lowest free address" of its own copy would give one IP to two droplets. With
``[state] backend = "s3"`` the choice is made in a record in the state bucket instead, beside the
GPU leases (``<key_prefix>/mesh-allocations.tfstate``, a ``docstore.DocumentRoot`` written by
compare-and-swap)::

    {"format": 1, "network": "10.9.0.0/24",
     "droplets": {"com.uvlava.quinn.artifacts": {"mesh_ip": "10.9.0.6", "producer": "quinn"}},
     "others": {"10.9.0.5": "mac"}}

Under the registry's file lock, a registration reads the record, adds what the local file already
holds (infra-apply's droplets under ``droplets``, every other address, net-tools' own, under
``others``: taken, never handed out), reserves an address for each new droplet (the lowest free in
neither the record nor the file), swaps the record, and only then writes the file. A run killed
between the two has reserved the address for that droplet: the next registration of the droplet,
on any runner, finds and uses it, and no other droplet is given it. A destroyed droplet's address
is released with its registry entries. The file and the record disagreeing about a droplet (or an
address) is an error naming both; nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra_apply.errors import MeshError, TerraformError
from infra_apply.manifests.config import CONFIG_NAME, Backend
from infra_apply.registry.docstore import DocumentRoot, Stale, parse, store_env
from infra_apply.registry.mesh import LiveDroplet, check_network, lowest_free, parse_ip, plan_registration
from infra_apply.render import hcl
from infra_apply.runtime import terraform as tf
from infra_apply.runtime.fs import private_dirs, sync_private
from infra_apply.runtime.paths import child

FORMAT = 1
NAME = "allocations"
STATE_NAME = "mesh-allocations.tfstate"
ROOT = "mesh.allocations"  # beside the producers' working copies; a '.' is never in a producer name
ATTEMPTS = 20  # compare-and-swap rounds lost to other runners before giving up


@dataclass(frozen=True)
class Slot:
    mesh_ip: str
    producer: str


@dataclass(frozen=True)
class Record:
    network: str | None = None
    droplets: Mapping[str, Slot] = field(default_factory=dict)
    others: Mapping[str, str] = field(default_factory=dict)  # mesh IP -> host outside infra-apply


def encode(record: Record) -> str:
    doc = {
        "format": FORMAT,
        "network": record.network,
        "droplets": {
            name: {"mesh_ip": slot.mesh_ip, "producer": slot.producer}
            for name, slot in sorted(record.droplets.items())
        },
        "others": dict(sorted(record.others.items())),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def decode(raw: str) -> Record:
    doc = parse(raw, "an allocation record")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else None
        raise ValueError(f"format {got!r}; this infra-apply reads format {FORMAT}")
    droplets, others, network = doc.get("droplets"), doc.get("others"), doc.get("network")
    if not isinstance(droplets, dict) or not isinstance(others, dict) or not isinstance(network, str | None):
        raise ValueError("droplets, others or network is not what format 1 holds")
    slots = {}
    for name, slot in droplets.items():
        if (
            not isinstance(slot, dict)
            or not parse_ip(slot.get("mesh_ip"))
            or not isinstance(slot.get("producer"), str)
        ):
            raise ValueError(f"droplet {name!r} has no valid mesh_ip and producer")
        slots[name] = Slot(slot["mesh_ip"], slot["producer"])
    if not all(parse_ip(ip) and isinstance(host, str) for ip, host in others.items()):
        raise ValueError("others is not a map of mesh IP to host name")
    return Record(network, slots, dict(others))


# --- the pure core ---------------------------------------------------------------------------


def reserve(
    record: Record,
    doc: dict[str, Any],
    producer: str,
    live: Sequence[LiveDroplet],
    *,
    removed: Sequence[str] = (),
    renamed: Mapping[str, str] = {},  # read-only default, never mutated
    where: str = "the allocation record",
) -> tuple[Record, dict[str, str]]:
    """The record after registering ``live`` from a runner whose mesh-hosts.json is ``doc``,
    and the mesh IP of every live droplet with hosts. Pure; raises MeshError on a disagreement."""
    network = check_network(doc)
    if record.network is not None and record.network != str(network):
        raise MeshError(
            f"mesh-hosts.json's network is {network}, the allocation record's ({where}) "
            f"{record.network}: every runner must use one mesh network"
        )
    droplets = dict(record.droplets)
    others = dict(record.others)
    for old, new in renamed.items():
        if old != new and old in droplets and _mine(droplets[old], producer) and new not in droplets:
            droplets[new] = droplets.pop(old)
    live_names = {d.name for d in live}
    gone = [n for n in removed if n not in live_names]
    for name in gone:
        if name in droplets and _mine(droplets[name], producer):
            del droplets[name]
    # The file after this registration's renames and removals: what it holds is taken.
    view = plan_registration(doc, producer, [], removed=gone, renamed=renamed).document
    for host, entry in view["hosts"].items():
        ip = parse_ip(entry.get("mesh_ip")) if isinstance(entry, dict) else None
        if ip is None:
            continue
        _seed(droplets, others, host, entry, str(ip), where)
    assigned = {}
    for d in sorted(live, key=lambda d: d.name):
        if not d.hosts:
            continue
        slot = droplets.get(d.name)
        if slot is not None and not _mine(slot, producer):
            raise MeshError(
                f"droplet {d.name!r} of producer {producer!r} is recorded for producer "
                f"{slot.producer!r} in the allocation record ({where})"
            )
        if slot is None:
            used = {ip for s in droplets.values() if (ip := parse_ip(s.mesh_ip))}
            used |= {ip for o in others if (ip := parse_ip(o))}
            slot = Slot(lowest_free(used, network), producer)
        droplets[d.name] = Slot(slot.mesh_ip, producer)
        assigned[d.name] = slot.mesh_ip
    return Record(str(network), droplets, others), assigned


def _mine(slot: Slot, producer: str) -> bool:
    """A slot seeded from an entry that named no producer belongs to whoever registers it, as
    such an entry does in mesh-hosts.json."""
    return slot.producer in ("", producer)


def _seed(
    droplets: dict[str, Slot],
    others: dict[str, str],
    host: str,
    entry: Mapping[str, Any],
    ip: str,
    where: str,
) -> None:
    holder = next((name for name, s in droplets.items() if s.mesh_ip == ip), None)
    name = entry.get("droplet")
    if not isinstance(name, str):  # net-tools' own host: its address is taken
        if holder is not None:
            raise _disagree(
                f"host {host!r} (outside infra-apply) has mesh IP {ip}", f"droplet {holder!r}", where
            )
        others.setdefault(ip, host)
        return
    slot = droplets.get(name)
    if slot is not None and slot.mesh_ip != ip:
        raise _disagree(f"droplet {name!r} (host {host!r}) has mesh IP {ip}", f"it {slot.mesh_ip}", where)
    if slot is None:
        if holder is not None:
            raise _disagree(
                f"droplet {name!r} (host {host!r}) has mesh IP {ip}", f"droplet {holder!r}", where
            )
        if ip in others:
            raise _disagree(
                f"droplet {name!r} (host {host!r}) has mesh IP {ip}", f"host {others[ip]!r}", where
            )
        producer = entry.get("producer")
        droplets[name] = Slot(ip, producer if isinstance(producer, str) else "")


def _disagree(local: str, recorded: str, where: str) -> MeshError:
    return MeshError(
        f"mesh-hosts.json and the mesh allocation record ({where}) disagree: here {local}, the "
        f"record gives {recorded}. Bring this copy of mesh-hosts.json up to date with the one "
        "committed, or give the host outside infra-apply another address (net-tools), then "
        "register again (mesh-hosts.json left unchanged)"
    )


# --- the record in the bucket ---------------------------------------------------------------


@dataclass(frozen=True)
class SharedRecord:
    root: DocumentRoot
    where: str

    def allocate(
        self,
        doc: dict[str, Any],
        producer: str,
        live: Sequence[LiveDroplet],
        *,
        removed: Sequence[str] = (),
        renamed: Mapping[str, str] = {},  # read-only default, never mutated
        write: bool = True,
    ) -> dict[str, str]:
        """Reserve the addresses of ``live`` in the record (read, decide, swap; again when
        another runner swapped first) and return them; ``write=False``: the addresses a
        registration would get, the record left as it is (a dry run)."""
        for _ in range(ATTEMPTS):
            seen = self.root.read()
            if seen is not None and not isinstance(seen, str):
                raise self._unreadable("its output is not a string")
            try:
                record = decode(seen) if seen is not None else Record()
            except ValueError as exc:
                raise self._unreadable(str(exc)) from None
            new, assigned = reserve(
                record, doc, producer, live, removed=removed, renamed=renamed, where=self.where
            )
            raw = encode(new)
            if raw == seen or not write:
                return assigned
            try:
                self.root.swap(seen, raw)
            except Stale:
                continue
            except tf.CommandFailed as exc:
                raise MeshError(
                    f"could not write the mesh allocation record ({self.where}):\n{exc.detail}"
                ) from None
            return assigned
        raise MeshError(
            f"the mesh allocation record ({self.where}) changed {ATTEMPTS} times while this run "
            "allocated; register again (mesh-hosts.json left unchanged)"
        )

    def _unreadable(self, why: str) -> MeshError:
        return MeshError(
            f"the mesh allocation record ({self.where}) is unreadable: {why}; mesh-hosts.json left unchanged"
        )


def record_key(backend: Backend) -> str:
    return "/".join(filter(None, (backend.key_prefix, STATE_NAME)))


def open_record(
    state: Path, work_root: Path, backend: Backend, binary: tf.Binary, env: Mapping[str, str]
) -> SharedRecord:
    """The record's root under ``work_root`` (beside the producers' working copies), written and
    initialised when its files changed. Remote state only: local state keeps each file's own
    lowest free address."""
    path = child(work_root, ROOT)
    files = {
        "allocations.tf": hcl.render("mesh-allocations.tf.j2").encode(),
        "backend.tf": hcl.render(
            "backend.tf.j2",
            config_name=CONFIG_NAME,
            bucket=backend.bucket,
            key=record_key(backend),
            region=backend.region,
            endpoint=backend.endpoint,
        ).encode(),
    }
    try:
        private_dirs(path, state)
        sync_private(path, files)
    except OSError as exc:
        raise MeshError(f"cannot write the mesh allocation record's root {path}: {exc.strerror}") from None
    root = DocumentRoot(tf.Workdir(binary, path, store_env(env)), NAME)
    try:
        root.ensure_init(files)
    except TerraformError as exc:
        raise MeshError(exc.message) from None
    return SharedRecord(root, f"s3://{backend.bucket}/{record_key(backend)}")
