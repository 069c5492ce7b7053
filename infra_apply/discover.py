"""Find producers and manifests under a root, pruning folders no manifest lives in."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# Folders that are never a project's own source: dependency trees, caches, VCS and tool state.
PRUNED = frozenset(
    {".git", "node_modules", ".venv", "venv", "__pycache__", ".terraform", ".tox", "dist", "build"}
)
MANIFEST_RE = re.compile(r"^\.infra(?:\.([^.]+))?\.yaml$")
RETIRED_MANIFEST = "app.manifest.yaml"


@dataclass(frozen=True)
class ManifestRef:
    """A discovered manifest. ``path`` is root-relative with ``/`` separators."""

    path: str
    producer: str | None
    variant: str | None  # "dev" for .infra.dev.yaml, None for .infra.yaml
    producer_root: bool  # directly in the producer folder (@quinn/.infra.yaml)


@dataclass(frozen=True)
class Discovery:
    root: Path
    producers: tuple[str, ...]
    manifests: tuple[ManifestRef, ...]
    retired: tuple[str, ...]  # root-relative paths of app.manifest.yaml files
    unreadable: tuple[str, ...] = ()  # folders that could not be listed


def discover(root: Path) -> Discovery:
    """Walk ``root`` once; never follows symlinked folders, never enters ``PRUNED`` folders."""
    manifests: list[ManifestRef] = []
    retired: list[str] = []
    producers: list[str] = []
    unreadable: list[str] = []
    stack: list[tuple[str, str]] = [(os.fspath(root), "")]
    while stack:
        folder, rel = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError:
            unreadable.append(rel.rstrip("/") or ".")
            continue
        with entries:
            for entry in entries:
                name = entry.name
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir:
                    if name in PRUNED:
                        continue
                    if not rel and name.startswith("@"):
                        producers.append(name[1:])
                    stack.append((entry.path, f"{rel}{name}/"))
                elif name.startswith(".infra"):
                    match = MANIFEST_RE.match(name)
                    if match:
                        manifests.append(_ref(f"{rel}{name}", match.group(1)))
                elif name == RETIRED_MANIFEST:
                    retired.append(f"{rel}{name}")
    return Discovery(
        root=root,
        producers=tuple(sorted(producers)),
        manifests=tuple(sorted(manifests, key=lambda m: m.path)),
        retired=tuple(sorted(retired)),
        unreadable=tuple(sorted(unreadable)),
    )


def _ref(path: str, variant: str | None) -> ManifestRef:
    parts = path.split("/")
    producer = parts[0][1:] if len(parts) > 1 and parts[0].startswith("@") else None
    return ManifestRef(
        path=path,
        producer=producer,
        variant=variant,
        producer_root=producer is not None and len(parts) == 2,
    )
