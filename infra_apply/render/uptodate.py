"""Render's fast path: whether the last render still holds, decided from the raw bytes of its
inputs before any YAML, JSON Schema, model or template is loaded.

The record (``<state>/cache/render-inputs-<key of root and out>.json``, 0600) keeps a SHA-256
over every input of the last successful render, and what it produced: the summaries, the
warnings printed and each file's SHA-256 (a hit reads the texts back from ``--out``; a file
missing or changed there means a full render, which writes it again).

The inputs: this package's files (its modules as Python checks them, its schema and templates
by their bytes), the Python version and the installed distributions (their names and
versions), the root and out paths, the ``INFRA_APPLY_*`` variables, infra-apply.toml,
mesh-hosts.json, the tree as discovery sees it (producer folders, manifest paths, refused and
unreadable ones), every manifest's bytes, each user-data file infra-apply.toml named (where it
resolves, and its bytes) and each rendered producer's address ledger. A change to any of them
gives another key, so a full render.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import infra_apply
from infra_apply.manifests.config import config_path
from infra_apply.manifests.discover import discover
from infra_apply.render.hcl import template_dirs
from infra_apply.runtime.fs import TEXT_LIMIT, read_bounded, read_private

if TYPE_CHECKING:
    from infra_apply.manifests.config import Config
    from infra_apply.render.output import Rendered

FORMAT = 1
# Libraries whose upgrade may change a render's outcome (parsing, validation, templates): the
# folders they are installed in are listed, so any install, upgrade or removal there is seen.
LIBRARIES = ("yaml", "jsonschema", "jinja2", "markupsafe")
_SKIPPED_DIRS = frozenset({"__pycache__"})


@dataclass(frozen=True)
class Record:
    """What the last render read beyond the tree itself, and what it gave."""

    key: str
    producers: tuple[str, ...]  # whose ledgers it read
    user_data: tuple[tuple[str, str], ...]  # (value in infra-apply.toml, root-relative file)
    warnings: tuple[str, ...]
    rendered: tuple[Rendered, ...]


def record_file(state: Path, root: Path, out: Path) -> Path:
    """One record per root and out folder (no git or config lookup needed to find it)."""
    where = f"{root.resolve()}\0{out.resolve()}".encode("utf-8", "surrogatepass")
    return state / "cache" / f"render-inputs-{hashlib.sha256(where).hexdigest()[:20]}.json"


def tree_digest(
    root: Path, out: Path, mesh_path: Path | None, env: Mapping[str, str], code: bytes | None = None
) -> bytes | None:
    """SHA-256 over the inputs known before rendering; None when one cannot be read (a full
    render then says what is wrong). ``code``: ``code_digest()`` when the caller has it."""
    digest = _Digest()
    try:
        digest.add(code_digest() if code is None else code)
        digest.add(f"{root.resolve()}\0{out.resolve()}")
        # validate reads infra-apply.toml through os.environ; both environments are hashed.
        for variables in (env, os.environ):
            digest.add(
                "\0".join(f"{k}={v}" for k, v in sorted(variables.items()) if k.startswith("INFRA_APPLY_"))
            )
        digest.file(config_path(root, os.environ))
        digest.add("-" if mesh_path is None else str(mesh_path))
        if mesh_path is not None:
            digest.file(mesh_path)
        found = discover(root)
        digest.add(repr((found.producers, found.manifests, found.retired, found.unreadable, found.refused)))
        for ref in found.manifests:
            digest.add(ref.path)
            digest.add(read_bounded(root / ref.path, TEXT_LIMIT))
    except (OSError, ValueError):
        return None
    return digest.done()


def code_digest() -> bytes:
    """SHA-256 over the code a render runs: this package, the libraries it renders with, the
    Python running it (the render cache is keyed on it too: any module may reach the texts).
    Raises OSError when a file cannot be read."""
    digest = _Digest()
    digest.add(f"{FORMAT}\0{infra_apply.__version__}\0{sys.version}\0{sys.implementation.cache_tag}")
    _package(digest)
    _libraries(digest)
    return digest.done()


def code_digest_or_none() -> bytes | None:
    """``code_digest()``, or None when a file cannot be read (each digest then says so)."""
    try:
        return code_digest()
    except OSError:
        return None


def full_key(
    tree: bytes,
    ledgers: Mapping[str, bytes | None],
    user_data: Iterable[tuple[str, str, bytes]],
) -> str:
    """The key of a render: the tree's digest, the ledgers it read, the user data it used."""
    digest = _Digest()
    digest.add(tree)
    for producer, text in sorted(ledgers.items()):
        digest.add(producer)
        digest.add(b"-" if text is None else b"+" + text)
    for value, source, data in user_data:
        digest.add(f"{value}\0{source}")
        digest.add(data)
    return digest.done().hex()


def lookup(
    record: Path, root: Path, out: Path, mesh_path: Path | None, env: Mapping[str, str]
) -> Record | None:
    """The last render's record when every input is as it was then; None otherwise (or when the
    record is missing or damaged in any way)."""
    found = _load(record)
    if found is None:
        return None
    from infra_apply.errors import InfraApplyError
    from infra_apply.render.output import read_ledgers

    tree = tree_digest(root, out, mesh_path, env)
    if tree is None:
        return None
    try:
        user_data = [
            (value, source, _user_data_bytes(root, value, source)) for value, source in found.user_data
        ]
        ledgers = read_ledgers(out, found.producers)
    except (OSError, ValueError, InfraApplyError):
        return None  # a full render says what is wrong
    if full_key(tree, ledgers, user_data) != found.key:
        return None
    rendered = _with_texts(found.rendered, out)
    return None if rendered is None else replace(found, rendered=rendered)


def store(
    record: Path,
    tree: bytes,
    ledgers: Mapping[str, bytes | None],
    config: Config,
    warnings: Sequence[str],
    rendered: Sequence[Rendered],
) -> None:
    """Keep what this render read and gave. ``tree`` is the digest taken before it started, and
    the caller took another after it: stored only when both agree (nothing changed meanwhile)."""
    from infra_apply.errors import InfraApplyError
    from infra_apply.render.output import rendered_json
    from infra_apply.runtime.fs import private_dirs, write_private

    used = [(value, u.source, u.text.encode("utf-8", "surrogatepass")) for value, u in config.user_data_read]
    payload = {
        "producers": sorted(ledgers),
        "user_data": [[value, source] for value, source, _ in used],
        "warnings": list(warnings),
        # The files by SHA-256, not their texts: a hit reads them back from --out (see
        # _with_texts), which keeps this record small to write and to read.
        "rendered": [{**rendered_json(r), "files": _digests(r.files)} for r in rendered],
    }
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    header = {
        "format": FORMAT,
        "key": full_key(tree, ledgers, used),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    try:
        # Private like the rest of the state dir: the texts hold the manifests' contents.
        private_dirs(record.parent, record.parent.parent)
        write_private(record, json.dumps(header).encode() + b"\n" + data)
    except (OSError, ValueError, InfraApplyError):
        pass  # a read-only state dir (or file) only costs the next render its speed


def replay(found: Record, say: Callable[[str], None]) -> list[Rendered]:
    for line in found.warnings:
        say(line)
    return list(found.rendered)


# --- inside ---------------------------------------------------------------------------------


class _Digest:
    """Each part hashed on its own, so parts cannot run into each other."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def add(self, part: str | bytes) -> None:
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        self._sha.update(hashlib.sha256(data).digest())

    def file(self, path: Path) -> None:
        """The file's bytes, or that it is missing (any other problem raises OSError)."""
        try:
            self.add(b"+" + read_bounded(path, TEXT_LIMIT))
        except FileNotFoundError:
            self.add(b"-")

    def done(self) -> bytes:
        return self._sha.digest()


def _package(digest: _Digest) -> None:
    """Every file of this package and of the templates: Python modules by path, size and
    modification time in nanoseconds (what Python itself trusts to reuse a compiled module,
    to the second), every other file (templates, the schema) by its bytes."""
    package = Path(infra_apply.__file__).parent
    for base in dict.fromkeys((package, *template_dirs())):
        for folder, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
            for name in sorted(files):
                path = os.path.join(folder, name)
                if name.endswith(".py"):
                    st = os.stat(path)
                    digest.add(f"{path}\0{st.st_size}\0{st.st_mtime_ns}")
                else:
                    digest.add(path)
                    digest.add(read_bounded(Path(path), TEXT_LIMIT))


def _libraries(digest: _Digest) -> None:
    """The distributions installed beside the libraries render uses (a name holds its
    version), and each library's own entry file, by size and time."""
    from importlib.util import find_spec

    folders: dict[str, None] = {}
    for name in LIBRARIES:
        spec = find_spec(name)
        if spec is None or spec.origin is None:
            digest.add(f"{name}: missing")
            continue
        st = os.stat(spec.origin)
        digest.add(f"{name}\0{spec.origin}\0{st.st_size}\0{st.st_mtime_ns}")
        folders[str(Path(spec.origin).parent.parent)] = None
    for folder in folders:
        digest.add(
            "\0".join(sorted(n for n in os.listdir(folder) if n.endswith((".dist-info", ".egg-info"))))
        )


def _digests(files: Mapping[str, str]) -> dict[str, str]:
    return {n: hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest() for n, text in files.items()}


def _with_texts(rendered: Sequence[Rendered], out: Path) -> tuple[Rendered, ...] | None:
    """``rendered`` (files by digest) with each file's text read from ``out``; None when one is
    missing or differs: that render's texts are not here, so the full render makes them."""
    complete = []
    for r in rendered:
        texts = {}
        for name, digest in r.files.items():
            try:
                data = read_bounded(out / r.producer / name, TEXT_LIMIT)
            except OSError:
                return None
            if hashlib.sha256(data).hexdigest() != digest:
                return None
            try:
                texts[name] = data.decode("utf-8")
            except UnicodeDecodeError:
                return None
        complete.append(replace(r, files=texts))
    return tuple(complete)


def _user_data_bytes(root: Path, value: str, source: str) -> bytes:
    """The user-data file ``value`` names, if it still resolves to ``source``; else ValueError."""
    base = root.resolve()
    if (root / value).resolve() != base / source:
        raise ValueError(f"{value} no longer resolves to {source}")
    return read_bounded(base / source, TEXT_LIMIT)


def _load(record: Path) -> Record | None:
    """The record, checked; None when missing, damaged or not this user's private file (JSON,
    never pickle: reading the state dir must not run code; and what it says is replayed)."""
    from infra_apply.render.output import rendered_from

    try:
        header, _, payload = read_private(record, TEXT_LIMIT).partition(b"\n")
        head = json.loads(header)
        if head["format"] != FORMAT or head["sha256"] != hashlib.sha256(payload).hexdigest():
            return None
        doc = json.loads(payload)
        producers, user_data, warnings = doc["producers"], doc["user_data"], doc["warnings"]
        if not (
            isinstance(head["key"], str)
            and _strings(producers)
            and _strings(warnings)
            and isinstance(user_data, list)
            and all(isinstance(u, list) and len(u) == 2 and _strings(u) for u in user_data)
        ):
            return None
        return Record(
            head["key"],
            tuple(producers),
            tuple((value, source) for value, source in user_data),
            tuple(warnings),
            tuple(rendered_from(r) for r in doc["rendered"]),
        )
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
