"""Find producers and manifests under a root, pruning folders no manifest lives in."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

# Folders that are never a project's own source: dependency trees, caches, VCS and tool state.
PRUNED = frozenset(
    {".git", "node_modules", ".venv", "venv", "__pycache__", ".terraform", ".tox", "dist", "build"}
)
# \Z, not $: `$` also matches before a trailing newline, and a file may be named ".infra.yaml\n".
MANIFEST_RE = re.compile(r"\A\.infra(?:\.([^.]+))?\.yaml\Z")
RETIRED_MANIFEST = "app.manifest.yaml"


@dataclass(frozen=True)
class ManifestRef:
    """A discovered manifest. ``path`` is root-relative with ``/`` separators."""

    path: str
    producer: str | None
    variant: str | None  # "dev" for .infra.dev.yaml, None for .infra.yaml
    producer_root: bool  # directly in the producer folder (@quinn/.infra.yaml)


class Refused(NamedTuple):
    """Something named like a manifest that is never opened: ``reason`` says why."""

    path: str  # root-relative, ``/`` separators
    reason: str


@dataclass(frozen=True)
class Discovery:
    root: Path
    producers: tuple[str, ...]
    manifests: tuple[ManifestRef, ...]
    retired: tuple[str, ...]  # root-relative paths of app.manifest.yaml files
    unreadable: tuple[str, ...] = ()  # folders that could not be listed
    refused: tuple[Refused, ...] = ()  # manifest names that are not regular files in the tree


def discover(root: Path) -> Discovery:
    """Walk ``root`` once; never follows symlinked folders, never enters ``PRUNED`` folders, never
    opens anything (a FIFO named ``.infra.yaml`` would block whoever opens it)."""
    manifests: list[ManifestRef] = []
    retired: list[str] = []
    producers: list[str] = []
    unreadable: list[str] = []
    refused: list[Refused] = []
    real_root = root.resolve()
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
                match = MANIFEST_RE.fullmatch(name) if name.startswith(".infra") else None
                if match:
                    reason = _not_a_manifest_file(entry, real_root)
                    if reason is None:
                        manifests.append(_ref(f"{rel}{name}", match.group(1)))
                    else:
                        refused.append(Refused(f"{rel}{name}", reason))
                    continue
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
                elif name == RETIRED_MANIFEST:
                    retired.append(f"{rel}{name}")
    return Discovery(
        root=root,
        producers=tuple(sorted(producers)),
        manifests=tuple(sorted(manifests, key=lambda m: m.path)),
        retired=tuple(sorted(retired)),
        unreadable=tuple(sorted(unreadable)),
        refused=tuple(sorted(refused)),
    )


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _not_a_manifest_file(entry: os.DirEntry[str], real_root: Path) -> str | None:
    """Why ``entry`` cannot be read as a manifest, or None when it is a regular file in the tree.

    Only the type is looked at (lstat, stat): opening a FIFO blocks until a writer comes.
    """
    try:
        if entry.is_file(follow_symlinks=False):  # the common case, from the folder listing alone
            return None
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISLNK(mode):
            target = Path(entry.path).resolve(strict=True)
            if not target.is_relative_to(real_root):
                return f"is a symlink to {target}, outside the root; a manifest must live in the tree"
            mode = target.stat().st_mode
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop on older Pythons
        return f"cannot be read ({getattr(exc, 'strerror', None) or 'broken or looping symlink'})"
    if stat.S_ISREG(mode):
        return None
    kind = next((what for test, what in _KINDS if test(mode)), "a special file")
    return f"is {kind}, not a regular file; a manifest must be a file"


def _ref(path: str, variant: str | None) -> ManifestRef:
    parts = path.split("/")
    producer = parts[0][1:] if len(parts) > 1 and parts[0].startswith("@") else None
    return ManifestRef(
        path=path,
        producer=producer,
        variant=variant,
        producer_root=producer is not None and len(parts) == 2,
    )


# --- the --root hint ----------------------------------------------------------------------------


def root_hint(found: Discovery, cwd: Path | None = None) -> str | None:
    """One line saying which ``--root`` would make sense when manifests sit outside any
    ``@<producer>`` folder and the root has none (run from inside ``@quinn/``, or from a project
    folder): the nearest folder above the root holding ``@`` folders. None when the root holds
    producer folders (then the manifests are misplaced, not the root) or nothing is outside."""
    from infra_apply.untrusted import shell, visible

    if found.producers or not any(m.producer is None for m in found.manifests):
        return None
    here = Path.cwd() if cwd is None else cwd
    above = _nearest_producer_parent(found.root)
    if above is None:
        outside = next(m.path for m in found.manifests if m.producer is None)
        return (
            f"infra-apply: hint: no folder above {shell(str(found.root.resolve()))} holds "
            "@<producer> folders, so no other --root fits: move each project into a producer "
            f"folder of this root, e.g. {shell(f'@<producer>/{outside}')}"
        )
    folder, producers = above
    names = ", ".join(visible(f"@{p}") for p in producers[:5]) + (", …" if len(producers) > 5 else "")
    return (
        f"infra-apply: hint: manifests must sit in @<producer>/ folders of the root: "
        f"try --root {shell(_shown(folder, here))} (it holds {names})"
    )


def _nearest_producer_parent(root: Path) -> tuple[Path, tuple[str, ...]] | None:
    """The nearest folder above ``root`` with ``@`` folders among its children, and their names
    (so the parent of the ``@x`` folder ``root`` is in, when it is in one)."""
    for folder in root.resolve().parents:
        producers = _producer_folders(folder)
        if producers:
            return folder, producers
    return None


def _producer_folders(folder: Path) -> tuple[str, ...]:
    try:
        with os.scandir(folder) as entries:
            return tuple(sorted(e.name[1:] for e in entries if e.name.startswith("@") and _is_folder(e)))
    except OSError:  # an unreadable ancestor just is not the answer
        return ()


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _shown(folder: Path, cwd: Path) -> str:
    """``..`` (``../..``) from inside the folder: what one types there; else the absolute path."""
    cwd = cwd.resolve()
    return os.path.relpath(folder, cwd) if cwd.is_relative_to(folder) else str(folder)
