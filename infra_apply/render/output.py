"""Rendered modules as files: what a render gives (``Rendered``), its cached form (JSON, never
pickle), and bringing ``--out`` in line with it (``compare``, ``write``).

Apart from rendering itself (module.py), so a render that finds its inputs unchanged
(uptodate.py) loads no model, template or rendering code to check and write its output.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra_apply.errors import InfraApplyError
from infra_apply.runtime.fs import TEXT_LIMIT, atomic_write, read_bounded, read_private
from infra_apply.runtime.paths import child

if TYPE_CHECKING:
    from infra_apply.plan.parse import CreateSettings

LEDGER = "addresses.json"
OWNED_SUFFIXES = (".tf",)
# Render owns this folder of a producer's module: the user-data files its droplets read with
# file() (never templatefile(): their text must reach the droplet exactly, ${ included).
USER_DATA_DIR = "user-data"
HAND_OWNED = frozenset({"imports.tf"})  # written by `infra-apply adopt`, kept by render
WRITERS = 8  # files written at once (each mostly waits on its fsync)


@dataclass(frozen=True)
class Rendered:
    """One producer's root module: file name -> text, plus what summaries need."""

    producer: str
    files: Mapping[str, str]
    names: Mapping[str, str] = field(default_factory=dict)  # address -> human name
    droplet_addresses: Mapping[str, str] = field(default_factory=dict)  # manifest name -> address
    gpu_variables: Mapping[str, str] = field(default_factory=dict)  # droplet name -> variable
    # ssh_from = "mesh" with bootstrap_from: droplet name -> the variable keeping its SSH open
    ssh_variables: Mapping[str, str] = field(default_factory=dict)
    # droplet address -> what infra-apply.toml asks it to be created with (plan notes)
    create_settings: Mapping[str, CreateSettings] = field(default_factory=dict)

    def module_files(self) -> dict[str, str]:
        """What Terraform reads: the .tf files and the user-data files (not the ledger)."""
        return {n: t for n, t in self.files.items() if n.endswith(".tf") or n.startswith(f"{USER_DATA_DIR}/")}


# ssh_keys, monitoring, user data SHA-1, VPC cluster: CreateSettings' fields, in order.
_RawSettings = tuple[tuple[str, ...], bool, str | None, str | None]


class _LazySettings(Mapping[str, "CreateSettings"]):
    """Droplet address -> CreateSettings, made when first looked up: only plan reads them, and
    ``plan_parse`` costs a render more to import than the lookups themselves."""

    def __init__(self, raw: Mapping[str, _RawSettings]) -> None:
        self.raw = dict(raw)

    def __getitem__(self, address: str) -> CreateSettings:
        from infra_apply.plan.parse import CreateSettings

        return CreateSettings(*self.raw[address])

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)


def _ledger_bytes(out_dir: Path, producer: str) -> bytes | None:
    path = out_dir / producer / LEDGER
    try:
        return read_bounded(path, TEXT_LIMIT)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InfraApplyError(
            f"cannot read address ledger: {exc.strerror}", path=str(path), rule="ledger"
        ) from None


def read_ledgers(ledger_dir: Path, producers: Iterable[str]) -> dict[str, bytes | None]:
    """Each producer's ``addresses.json`` bytes (None: it has none yet)."""
    return {p: _ledger_bytes(ledger_dir, p) for p in producers}


# --- the cached form --------------------------------------------------------------------------

CACHE_FORMAT = 1


def rendered_json(r: Rendered) -> dict[str, Any]:
    return {
        "producer": r.producer,
        "files": dict(r.files),
        "names": dict(r.names),
        "droplet_addresses": dict(r.droplet_addresses),
        "gpu_variables": dict(r.gpu_variables),
        "ssh_variables": dict(r.ssh_variables),
        "create_settings": {
            a: [list(keys), monitoring, sha1, vpc]
            for a, (keys, monitoring, sha1, vpc) in _raw_settings(r).items()
        },
    }


def _raw_settings(r: Rendered) -> Mapping[str, _RawSettings]:
    if isinstance(r.create_settings, _LazySettings):
        return r.create_settings.raw
    return {
        a: (s.ssh_keys, s.monitoring, s.user_data_sha1, s.vpc_cluster) for a, s in r.create_settings.items()
    }


def _str_map(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError("not a map of strings")
    return value


def rendered_from(doc: object) -> Rendered:
    if not isinstance(doc, dict) or not isinstance(doc["producer"], str):
        raise TypeError("not a rendered producer")
    settings = {}
    for address, (keys, monitoring, sha1, vpc) in doc["create_settings"].items():
        if not (
            isinstance(address, str)
            and isinstance(keys, list)
            and all(isinstance(k, str) for k in keys)
            and isinstance(monitoring, bool)
            and (sha1 is None or isinstance(sha1, str))
            and (vpc is None or isinstance(vpc, str))
        ):
            raise TypeError("not create settings")
        settings[address] = (tuple(keys), monitoring, sha1, vpc)
    return Rendered(
        producer=doc["producer"],
        files=_str_map(doc["files"]),
        names=_str_map(doc["names"]),
        droplet_addresses=_str_map(doc["droplet_addresses"]),
        gpu_variables=_str_map(doc["gpu_variables"]),
        ssh_variables=_str_map(doc["ssh_variables"]),
        create_settings=_LazySettings(settings),
    )


def load_cache(cache: Path, key: str) -> list[Rendered] | None:
    """The cached render for ``key``; None when there is none, it is damaged in any way (the
    header's SHA-256 of the payload catches a truncated or edited file) or it is not this
    user's private file (its texts are written to --out as they are). JSON, never pickle:
    reading the state dir must not run code."""
    try:
        header, _, payload = read_private(cache, TEXT_LIMIT).partition(b"\n")
        head = json.loads(header)
        if head["key"] != key or head["sha256"] != hashlib.sha256(payload).hexdigest():
            return None
        return [rendered_from(r) for r in json.loads(payload)]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def store_cache(cache: Path, key: str, rendered: Sequence[Rendered]) -> None:
    from infra_apply.runtime.fs import private_dirs, write_private

    payload = json.dumps([rendered_json(r) for r in rendered], ensure_ascii=False, separators=(",", ":"))
    data = payload.encode("utf-8", "surrogatepass")
    header = json.dumps({"format": CACHE_FORMAT, "key": key, "sha256": hashlib.sha256(data).hexdigest()})
    try:
        # Private like the rest of the state dir: the texts hold the manifests' contents.
        private_dirs(cache.parent, cache.parent.parent)
        write_private(cache, header.encode() + b"\n" + data)
    except (OSError, ValueError, InfraApplyError):
        pass  # a read-only state dir (or file) only costs the next render its speed


@dataclass(frozen=True)
class Drift:
    stale: tuple[str, ...]  # out-relative paths that differ or are missing
    extra: tuple[str, ...]  # owned files that would be removed


def compare(rendered: Sequence[Rendered], out_dir: Path) -> Drift:
    stale, extra = [], []
    wanted = {r.producer: r for r in rendered}
    for r in rendered:
        for name, text in sorted(r.files.items()):
            path = out_dir / r.producer / name
            try:
                if read_bounded(path, TEXT_LIMIT) == text.encode("utf-8"):
                    continue
            except OSError:
                pass
            stale.append(f"{r.producer}/{name}")
    if out_dir.is_dir():
        for folder in sorted(p for p in out_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            keep = wanted[folder.name].files if folder.name in wanted else {}
            for f in sorted(folder.iterdir()):
                if f.name not in keep and _owned(f):
                    extra.append(f"{folder.name}/{f.name}")
            user_data = folder / USER_DATA_DIR
            if user_data.is_dir() and not user_data.is_symlink():
                for f in sorted(user_data.iterdir()):
                    if f"{USER_DATA_DIR}/{f.name}" not in keep:
                        extra.append(f"{folder.name}/{USER_DATA_DIR}/{f.name}")
    return Drift(tuple(stale), tuple(extra))


HEADER = "# Generated by infra-apply"


def _owned(path: Path) -> bool:
    """Only files render wrote: its .tf files carry the do-not-edit header, its ledger its comment;
    hand-written Terraform next to them is never touched."""
    if path.name in HAND_OWNED or not (path.name.endswith(OWNED_SUFFIXES) or path.name == LEDGER):
        return False
    try:
        head = read_bounded(path, TEXT_LIMIT)[:200]  # a FIFO or device here is not ours: never waited on
    except OSError:
        return False
    return head.startswith(HEADER.encode()) or (path.name == LEDGER and b"Stable Terraform addresses" in head)


def write(rendered: Sequence[Rendered], out_dir: Path) -> Drift:
    """Bring ``out_dir`` in line with ``rendered``; only files that differ are touched."""
    drift = compare(rendered, out_dir)
    by_producer = {r.producer: r for r in rendered}
    # Every target is checked before the first write: a refused one leaves out_dir untouched.
    targets = {rel: _target(out_dir, rel) for rel in (*drift.stale, *drift.extra)}
    try:
        jobs = []
        for rel in drift.stale:
            producer, name = rel.split("/", 1)
            path = targets[rel]
            path.parent.mkdir(parents=True, exist_ok=True)
            jobs.append((path, by_producer[producer].files[name]))
        _write_all(jobs)
        for rel in drift.extra:
            targets[rel].unlink()
        # Deepest first: an emptied user-data/ goes before the producer folder holding it.
        for folder in sorted({targets[rel].parent for rel in drift.extra}, key=lambda f: -len(f.parts)):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    except OSError as exc:
        raise InfraApplyError(f"cannot write {exc.filename or out_dir}: {exc.strerror}") from None
    return drift


def _write_all(jobs: Sequence[tuple[Path, str]]) -> None:
    """Each file through ``atomic_write``, several at a time: each write waits on its own fsync,
    so a fresh render of many files costs about the wait of a few, not of all in a row. The first
    error is raised once the writes under way have finished; the ones not started never are."""
    if len(jobs) < 2:
        for path, text in jobs:
            atomic_write(path, text)
        return
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=min(WRITERS, len(jobs)))
    try:
        for done in [pool.submit(atomic_write, path, text) for path, text in jobs]:
            done.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _target(out_dir: Path, rel: str) -> Path:
    """``out_dir/<producer>/<file>`` (or ``.../user-data/<file>``), refused unless every level
    stays where it belongs."""
    *folders, name = rel.split("/")
    folder = out_dir
    for part in folders:
        folder = child(folder, part)
    child(folder, name)
    # Unresolved: replacing or removing a symlink here acts on the link, never on its target.
    return folder / name
