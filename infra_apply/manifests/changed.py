"""``plan --changed``: the producers a change since a git ref touches.

What counts as "changed": every path that differs between the merge base of REF and HEAD and
the working tree — the commits of the branch (not what REF gained since the branch left it),
plus staged, unstaged and untracked files (``plan`` renders the working tree, so an uncommitted
edit is part of what it would plan). Renames count as a deletion and an addition, so moving a
project between producers selects both.

Which producers a changed path selects (``select``, a pure function):

- the configuration (``infra-apply.toml`` or ``$INFRA_APPLY_CONFIG``), a file it names
  (``user_data``), the templates, infra-apply's own source (a source checkout), or a manifest
  outside every producer folder: every producer;
- a manifest under ``@P/``: P (a droplet's producer is its name's segment, and validation's
  ``droplet_naming`` holds that to the folder declaring it, so such a manifest only feeds P's
  module);
- anything under ``OUT/P/`` (the committed module and its address ledger): P;
- anything else (application code next to the manifests, docs): nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import infra_apply
from infra_apply.errors import InfraApplyError
from infra_apply.manifests.discover import MANIFEST_RE, PRUNED
from infra_apply.manifests.names import producer_folders
from infra_apply.runtime.fs import CONFIG_LIMIT, read_bounded


@dataclass(frozen=True)
class Layout:
    """Where a plan's inputs live, as posix paths relative to the repository's top level
    ("" is the top level itself); None when outside the repository."""

    root: str | None
    out: str | None
    config: str | None
    # Paths whose change re-plans every producer: templates, infra-apply's source, user_data files.
    everything: tuple[str, ...] = ()


@dataclass(frozen=True)
class Selection:
    producers: tuple[str, ...]
    because: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # producer -> paths
    everything: str | None = None  # the changed path that selected every producer


@dataclass(frozen=True)
class Changes:
    base: str
    merge_base: str
    paths: tuple[str, ...]
    selection: Selection


def select(paths: Iterable[str], layout: Layout, producers: Sequence[str]) -> Selection:
    """The producers among ``producers`` that the changed ``paths`` touch; producers that no
    longer exist are not selected (there is nothing left to plan for them)."""
    known = frozenset(producers)
    because: dict[str, list[str]] = {}
    for path in sorted(set(paths)):
        hit = _classify(path, layout)
        if hit is None:
            return Selection(tuple(sorted(known)), {p: (path,) for p in sorted(known)}, everything=path)
        for producer in sorted(hit & known):
            because.setdefault(producer, []).append(path)
    return Selection(tuple(sorted(because)), {p: tuple(ps) for p, ps in sorted(because.items())})


def _classify(path: str, layout: Layout) -> frozenset[str] | None:
    """The producers one path selects by its place alone; None for every producer."""
    if path == layout.config or any(_under(path, top) is not None for top in layout.everything):
        return None
    in_out = _under(path, layout.out)
    if in_out is not None:
        return frozenset(in_out[:1]) if len(in_out) > 1 else frozenset()
    in_root = _under(path, layout.root)
    if in_root is None or not is_manifest(in_root):
        return frozenset()
    if len(in_root) > 1 and in_root[0].startswith("@"):
        return frozenset({in_root[0][1:]})
    return None  # a manifest outside the producer folders can declare droplets of any producer


def is_manifest(parts: Sequence[str]) -> bool:
    """A path (relative to the root, as parts) that discovery would read as a manifest."""
    return bool(parts) and bool(MANIFEST_RE.match(parts[-1])) and not PRUNED.intersection(parts[:-1])


def _under(path: str, top: str | None) -> tuple[str, ...] | None:
    """``path``'s parts below ``top``, or None when it is not below it."""
    if top is None:
        return None
    if top == "":
        return PurePosixPath(path).parts
    if path == top:
        return ()
    if not path.startswith(top + "/"):
        return None
    return PurePosixPath(path[len(top) + 1 :]).parts


# --- git -------------------------------------------------------------------------------------


def changed_producers(root: Path, out: Path, base: str, env: Mapping[str, str]) -> Changes:
    """Run git in the repository holding ``root`` and select the producers to plan."""
    if shutil.which("git") is None:
        raise InfraApplyError("plan --changed needs git, which is not on PATH")
    if not root.is_dir():
        raise InfraApplyError(f"{root} is not a folder")
    top = Path(_git(root, "rev-parse", "--show-toplevel").strip()).resolve()
    merge_base = _merge_base(top, base)
    paths = _changed_paths(top, merge_base)
    layout = layout_for(top, root, out, env)
    if layout.root is None:  # pragma: no cover - rev-parse ran inside the root
        raise InfraApplyError(f"{root} is not inside the git repository {top}")
    return Changes(base, merge_base, tuple(paths), select(paths, layout, producer_folders(root)))


def layout_for(top: Path, root: Path, out: Path, env: Mapping[str, str]) -> Layout:
    config = Path(env["INFRA_APPLY_CONFIG"]) if env.get("INFRA_APPLY_CONFIG") else root / "infra-apply.toml"
    from infra_apply.render.hcl import templates_dir

    package = Path(infra_apply.__file__).resolve().parent
    everything = [_relative(top, templates_dir()), _relative(top, package)]
    everything += [_relative(top, root / f) for f in _config_files(config)]
    return Layout(
        root=_relative(top, root),
        out=_relative(top, out),
        config=_relative(top, config),
        everything=tuple(sorted({e for e in everything if e is not None})),
    )


def _relative(top: Path, path: Path) -> str | None:
    try:
        rel = path.resolve().relative_to(top).as_posix()
    except ValueError:
        return None
    return "" if rel == "." else rel


def _config_files(config: Path) -> list[str]:
    """Files the configuration names (``user_data``): a change to one changes every droplet
    using it. An unreadable or invalid config names none (plan reports it properly)."""
    try:
        doc = tomllib.loads(read_bounded(config, CONFIG_LIMIT).decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return []
    return sorted(set(_values_of(doc, "user_data")))


def _values_of(doc: Any, key: str) -> Iterator[str]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == key and isinstance(v, str):
                yield v
            else:
                yield from _values_of(v, key)


def _merge_base(top: Path, base: str) -> str:
    try:
        _git(top, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
    except InfraApplyError:
        raise InfraApplyError(
            f"--base {base}: no such commit in {top} (fetch it first; in CI check out with the "
            "full history, e.g. actions/checkout's fetch-depth: 0)"
        ) from None
    try:
        return _git(top, "merge-base", base, "HEAD").strip()
    except InfraApplyError:
        raise InfraApplyError(
            f"--base {base} and HEAD have no common history in {top} (a shallow clone? fetch "
            "the full history, e.g. actions/checkout's fetch-depth: 0)"
        ) from None


def _changed_paths(top: Path, merge_base: str) -> list[str]:
    tracked = _git(top, "diff", "--name-only", "--no-renames", "-z", merge_base, "--")
    untracked = _git(top, "ls-files", "--others", "--exclude-standard", "-z")
    return sorted({p for p in (tracked + untracked).split("\0") if p})


def head_commit(cwd: Path) -> str | None:
    """``HEAD``'s full object name in the repository holding ``cwd``; ``None`` outside git, before
    the first commit, or when git does not answer (the caller goes on without it)."""
    try:
        return _git(cwd, "rev-parse", "--verify", "--quiet", "HEAD", timeout=30).strip() or None
    except InfraApplyError:
        return None


def _git(cwd: Path, *args: str, timeout: float | None = None) -> str:
    try:
        done = subprocess.run(
            ["git", "-c", "core.quotepath=off", *args], cwd=cwd, capture_output=True, timeout=timeout
        )
    except OSError as exc:
        raise InfraApplyError(f"cannot run git in {cwd}: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise InfraApplyError(f"git {args[0]} in {cwd} did not answer in {timeout:g}s") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        if "not a git repository" in " ".join(message):
            raise InfraApplyError(
                f"{cwd} is not inside a git repository (plan --changed compares git commits)"
            )
        raise InfraApplyError(f"git {args[0]} failed: {message[-1] if message else done.returncode}")
    return done.stdout.decode("utf-8", "surrogateescape")


# --- what plan prints -------------------------------------------------------------------------


def describe(changes: Changes, shown: int = 3) -> list[str]:
    """Lines for the log: what was compared and why each producer is planned."""
    sel = changes.selection
    head = (
        f"infra-apply: --changed since {changes.base} (merge base {changes.merge_base[:12]}): "
        f"{len(changes.paths)} changed file(s); "
    )
    if not sel.producers:
        return [head + "no producer to plan"]
    lines = [head + "selected " + ", ".join(sel.producers)]
    if sel.everything is not None:
        return [*lines, f"  every producer: {sel.everything} changed"]
    for producer, paths in sel.because.items():
        more = f" (+{len(paths) - shown} more)" if len(paths) > shown else ""
        lines.append(f"  {producer}: {', '.join(paths[:shown])}{more}")
    return lines
