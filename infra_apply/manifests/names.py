"""Producer and droplet names read cheaply, without a validation run.

Shell completion and ``plan --changed`` need names fast and must not fail on a tree that does not
validate yet (the operator is usually in the middle of editing it): they read raw YAML, skip what
does not parse, and never raise for bad input. Validation stays the judge of what is correct.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from infra_apply.manifests.discover import discover
from infra_apply.manifests.manifest import MAX_BYTES
from infra_apply.manifests.rules import name_producer
from infra_apply.runtime.fs import read_bounded


class DropletName(NamedTuple):
    name: str
    producer: str | None  # the name's producer segment, else the tree declaring it
    gpu: bool


def producer_folders(root: Path) -> list[str]:
    """The root's ``@<name>`` folders, as discovery names them (symlinked folders excluded)."""
    try:
        with os.scandir(root) as entries:
            return sorted(
                e.name[1:]
                for e in entries
                if e.name.startswith("@") and len(e.name) > 1 and e.is_dir(follow_symlinks=False)
            )
    except OSError:
        return []


def droplets_in(text: str, tree_producer: str | None) -> list[DropletName]:
    """The droplets a manifest's text declares (``droplets[].name``) or asks for on demand
    (``service.gpu``); empty when the text is not a YAML mapping."""
    # Here, not at the top: ``plan --changed`` needs only the folder names.
    import yaml

    # libyaml's safe loader when present: completion runs on every <Tab>.
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        doc = yaml.load(text, Loader=loader)
    except yaml.YAMLError:
        return []
    if not isinstance(doc, dict):
        return []
    found = [
        DropletName(d["name"], name_producer(d["name"]) or tree_producer, False)
        for d in _list(doc.get("droplets"))
        if isinstance(d, dict) and isinstance(d.get("name"), str)
    ]
    service = doc.get("service")
    gpu = service.get("gpu") if isinstance(service, dict) else None
    if isinstance(gpu, dict) and tree_producer is not None:
        # The default name mirrors build._gpu_droplets: com.uvlava.<tree producer>.gpu.
        name = gpu.get("droplet") or f"com.uvlava.{tree_producer}.gpu"
        if isinstance(name, str):
            found.append(DropletName(name, name_producer(name) or tree_producer, True))
    return found


def tree_droplets(root: Path) -> list[DropletName]:
    """Every droplet name the manifests under ``root`` mention, sorted and deduplicated."""
    seen: dict[str, DropletName] = {}
    for ref in discover(root).manifests:
        text = _read(root / ref.path)
        # Most manifests declare no droplet: skip the YAML parse for them.
        if text is None or ("droplets" not in text and "gpu" not in text):
            continue
        for d in droplets_in(text, ref.producer):
            seen.setdefault(d.name, d)
    return [seen[n] for n in sorted(seen)]


def _read(path: Path) -> str | None:
    try:
        return read_bounded(path, MAX_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _list(value: Any) -> Iterable[Any]:
    return value if isinstance(value, list) else ()
