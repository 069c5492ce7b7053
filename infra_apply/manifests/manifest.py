"""Load one manifest: safe YAML with a line/column for every node, hostile input as located errors.

The parsing itself (PyYAML's event stream folded into plain data, see yamlfold.py) loads on
first use, so a run whose validation cache answers never imports PyYAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra_apply.errors import InfraApplyError
from infra_apply.runtime.fs import FileTooLarge, NotRegularFile, read_bounded

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 20_000  # after alias expansion; a real manifest has a few hundred

Key = tuple[str | int, ...]
Pos = tuple[int, int]


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: ``data`` plus the position of every value (``pos``) and key (``keypos``)."""

    path: str
    data: dict[str, Any]
    pos: dict[Key, Pos]
    keypos: dict[Key, Pos]

    def locate(self, key: Key, *, at_key: bool = False) -> Pos:
        """Position of ``key`` (its value, or its key with ``at_key``), else its nearest ancestor."""
        if at_key and key in self.keypos:
            return self.keypos[key]
        while key not in self.pos and key:
            key = key[:-1]
        return self.pos.get(key, (1, 1))


class YamlError(InfraApplyError):
    def __init__(self, message: str, path: str, line: int, col: int) -> None:
        super().__init__(message, path=path, line=max(line, 1), col=max(col, 1), rule="yaml")


def load(file: Path, rel: str) -> Manifest:
    """Read and parse ``file``; ``rel`` is how messages name it. Raises ``YamlError``."""
    try:
        # Discovery only hands over regular files, but one swapped for a FIFO since must not block.
        raw = read_bounded(file, MAX_BYTES)
    except NotRegularFile:
        raise YamlError("not a regular file; a manifest must be a file", rel, 1, 1) from None
    except FileTooLarge:
        raise _too_large(rel) from None
    except OSError as exc:
        raise YamlError(f"cannot read file: {exc.strerror}", rel, 1, 1) from None
    return parse(raw, rel)


def _too_large(rel: str) -> YamlError:
    return YamlError(f"file is larger than {MAX_BYTES // 1024} KiB; not a manifest", rel, 1, 1)


def parse(raw: bytes, rel: str) -> Manifest:
    """Parse a manifest's bytes; raises ``YamlError``. PyYAML loads only here: a validation
    cache hit parses nothing."""
    from infra_apply.manifests.yamlfold import parse as parse_yaml

    return parse_yaml(raw, rel)
