"""discover -> load -> JSON Schema -> convention rules, collecting every problem of every file."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from infra_apply.errors import InfraApplyError, Problem, ValidationFailed
from infra_apply.manifests.config import Config
from infra_apply.manifests.discover import Discovery, discover, root_hint
from infra_apply.manifests.manifest import Manifest, load
from infra_apply.manifests.rules import Tree, run_rules
from infra_apply.runtime.fs import TEXT_LIMIT, read_private


@dataclass(frozen=True)
class Validation:
    discovery: Discovery
    manifests: tuple[Manifest, ...]  # the ones that parsed and passed the schema
    problems: tuple[Problem, ...]
    mesh_hosts: Mapping[str, Mapping[str, Any]] | None
    config: Config = field(default_factory=Config)  # infra-apply.toml, checked

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.level == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.level == "warning")


def schema_text() -> str:
    # A plain read where the package is files on disk (every pip install): importlib.resources'
    # readers (zipfile and more) cost a plan more than the read itself.
    beside = Path(__file__).parent.parent / "data" / "infra-v1.schema.json"  # infra_apply/data
    try:
        return beside.read_text("utf-8")
    except OSError:
        from importlib import resources

        return resources.files("infra_apply").joinpath("data/infra-v1.schema.json").read_text("utf-8")


@lru_cache(maxsize=1)
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(schema_text()))


def require_valid(
    root: Path,
    mesh_path: Path | None,
    cache: Path | None,
    on_warning: Callable[[str], None],
    config: Config | None = None,
) -> Validation:
    """Validation for the stages that need a valid tree: errors raise ``ValidationFailed`` with
    every problem, warnings go to ``on_warning``."""
    v = validate_tree(root, mesh_path, cache, config)
    if v.errors:
        raise ValidationFailed(list(v.problems), root_hint(v.discovery))
    for p in v.warnings:
        on_warning(p.format())
    return v


# One file's outcome: the parsed manifest when it passed the schema, and its problems.
Checked = tuple[Manifest | None, list[Problem]]


def validate_tree(
    root: Path, mesh_path: Path | None = None, cache: Path | None = None, config: Config | None = None
) -> Validation:
    """Validate the tree under ``root``. ``cache`` (a file under the state dir) keeps each
    manifest's parse and schema outcome keyed by its stat, so unchanged files are not re-read.
    ``config`` defaults to the root's infra-apply.toml (a bad one raises its located error)."""
    if not root.is_dir():
        raise InfraApplyError(f"root {root} is not a folder (--root, INFRA_APPLY_ROOT)")
    if config is None:
        from infra_apply.manifests.config import load as load_config

        config = load_config(root)
    problems: list[Problem] = []
    mesh_hosts = None
    if mesh_path is not None:
        try:
            mesh_hosts = load_mesh_hosts(mesh_path)
        except InfraApplyError as exc:  # reported with the rest; hosts are then not checked
            problems.append(Problem(str(mesh_path), exc.line, exc.col, "error", "host_in_mesh", exc.message))
    found = discover(root)
    manifests: list[Manifest] = []
    old = _read_cache(cache)
    new: dict[str, tuple[tuple[int, ...], Checked]] = {}
    for ref in found.manifests:
        stamp = _stat(root / ref.path)
        hit = old.get(ref.path)
        checked = hit[1] if hit is not None and stamp and hit[0] == stamp else check_file(root, ref.path)
        new[ref.path] = (() if _racy(stamp) else stamp, checked)
        m, file_problems = checked
        problems.extend(file_problems)
        if m is not None:
            manifests.append(m)
    if cache is not None and new != old:
        _write_cache(cache, new)
    tree = Tree(
        found,
        tuple(manifests),
        {r.path: r for r in found.manifests},
        mesh_hosts,
        str(mesh_path) if mesh_path else None,
        config,
    )
    problems.extend(run_rules(tree))
    return Validation(
        found, tuple(manifests), tuple(sorted(set(problems), key=Problem.sort_key)), mesh_hosts, config
    )


def check_file(root: Path, rel: str) -> Checked:
    try:
        m = load(root / rel, rel)
    except InfraApplyError as exc:
        return None, [Problem(rel, exc.line, exc.col, "error", exc.rule or "yaml", exc.message)]
    schema_problems = check_schema(m)
    return (None if schema_problems else m), schema_problems


def _stat(path: Path) -> tuple[int, ...]:
    try:
        st = path.stat()
    except OSError:
        return ()
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


# A file changed this recently may change again within the same timestamp granule (ext4's
# clock ticks every few ms, FAT's every 2 s) and keep its size: every field of its stat the
# same, other bytes. Such a file is parsed again next time (git's "racily clean" entries).
RACY_NS = 2_000_000_000


def _racy(stamp: tuple[int, ...]) -> bool:
    import time

    return bool(stamp) and time.time_ns() - max(stamp[0], stamp[3]) < RACY_NS


@lru_cache(maxsize=1)
def _cache_tag() -> str:
    """Changes whenever the schema or the code that parses and checks a file changes."""
    import hashlib

    from infra_apply import __version__
    from infra_apply.manifests import manifest

    digest = hashlib.sha256(schema_text().encode())
    # yamlfold.py by path: importing it would load PyYAML, which a cache hit never needs.
    for module in (manifest.__file__, Path(manifest.__file__).with_name("yamlfold.py"), __file__):
        digest.update(Path(module).read_bytes())
    return f"{__version__}-{digest.hexdigest()[:16]}"


def _read_cache(cache: Path | None) -> dict[str, tuple[tuple[int, ...], Checked]]:
    """JSON, not pickle: a state dir may be shared, and reading it must never run code; and
    only this user's private file (its entries become the model)."""
    if cache is None:
        return {}
    try:
        doc = json.loads(read_private(cache, TEXT_LIMIT))
        if doc.get("tag") != _cache_tag():
            return {}
        return {
            rel: (tuple(stamp), (_manifest_from(rel, m), [Problem(*p) for p in probs]))
            for rel, (stamp, m, probs) in doc["entries"].items()
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return {}  # a missing or damaged cache only costs a full validation


def _manifest_from(rel: str, m: Any) -> Manifest | None:
    if m is None:
        return None
    return Manifest(
        rel,
        m["data"],
        {tuple(k): tuple(v) for k, v in m["pos"]},
        {tuple(k): tuple(v) for k, v in m["keypos"]},
    )


def _manifest_json(m: Manifest | None) -> Any:
    if m is None:
        return None
    return {
        "data": m.data,
        "pos": [[list(k), list(v)] for k, v in m.pos.items()],
        "keypos": [[list(k), list(v)] for k, v in m.keypos.items()],
    }


def _write_cache(cache: Path, entries: dict[str, tuple[tuple[int, ...], Checked]]) -> None:
    doc = {
        "tag": _cache_tag(),
        "entries": {
            rel: [list(stamp), _manifest_json(m), [list(p) for p in probs]]
            for rel, (stamp, (m, probs)) in entries.items()
        },
    }
    from infra_apply.runtime.fs import private_dirs, write_private

    try:
        # Private like all of the state dir: the cache holds the manifests' contents.
        private_dirs(cache.parent, cache.parent.parent)
        write_private(cache, json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
    except (OSError, ValueError, InfraApplyError):
        pass  # read-only state dir or a value JSON cannot hold: validation still works, uncached


def check_schema(m: Manifest) -> list[Problem]:
    out = []
    for err in _validator().iter_errors(m.data):
        out.append(_schema_problem(m, err))
    return out


def _schema_problem(m: Manifest, err: Any) -> Problem:
    path = tuple(err.absolute_path)
    rule = "schema"
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = set(err.schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in allowed)
        key = (*path, extra[0]) if extra else path
        line, col = m.locate(key, at_key=True)
        where = ".".join(str(p) for p in path) or "top level"
        return Problem(
            m.path,
            line,
            col,
            "error",
            rule,
            f"unknown key {extra[0]!r} at {where} (allowed: {', '.join(sorted(allowed))})",
        )
    if err.validator == "required":
        line, col = m.locate(path, at_key=True) if path else (1, 1)
    else:
        line, col = m.locate(path)
    if err.validator == "pattern" and path[-1:] == ("name",) and path[:1] == ("droplets",):
        rule = "droplet_naming"
    where = ".".join(str(p) for p in path) or "top level"
    return Problem(m.path, line, col, "error", rule, f"{where}: {_short(err.message)}")


def _short(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= 200 else message[:197] + "..."


def load_mesh_hosts(path: Path) -> Mapping[str, Mapping[str, Any]]:
    """The ``hosts`` map of mesh-hosts.json, for validation only (registration reloads it)."""
    from infra_apply.registry.meshfile import load_document

    doc, _ = load_document(path)
    hosts = doc["hosts"]
    return {k: v for k, v in hosts.items() if isinstance(v, dict)}
