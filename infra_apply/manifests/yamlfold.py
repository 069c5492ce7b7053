"""PyYAML's event stream (the C parser where present) folded into plain Python data without
recursion, with a line/column for every node: deep nesting, alias bombs and recursive aliases
are caught before they cost anything; no tag can construct an object. ``manifest.parse`` is the
way in."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from infra_apply.manifests.manifest import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_NODES,
    Key,
    Manifest,
    Pos,
    YamlError,
    _too_large,
)

try:  # the C parser is ~5x faster; fall back where libyaml is missing
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on the build of PyYAML
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

_SAFE_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_resolver = yaml.resolver.Resolver()
_constructor = yaml.constructor.SafeConstructor()


def parse(raw: bytes, rel: str) -> Manifest:
    if len(raw) > MAX_BYTES:
        raise _too_large(rel)
    text = _decode(raw, rel)
    if not text.strip():
        raise YamlError("empty file; expected a mapping with apiVersion, project, provider", rel, 1, 1)
    try:
        events = yaml.parse(text, Loader=_Loader)
        return _Builder(rel).build(events)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlError(f"invalid YAML: {problem}", rel, line, col) from None
    except yaml.YAMLError as exc:  # ReaderError and friends carry no mark
        raise YamlError(f"invalid YAML: {_one_line(str(exc))}", rel, 1, 1) from None


def _decode(raw: bytes, rel: str) -> str:
    if b"\x00" in raw:
        line, col = _line_col(raw, raw.index(b"\x00"))
        raise YamlError("binary file (NUL byte); expected UTF-8 YAML", rel, line, col)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, col = _line_col(raw, exc.start)
        raise YamlError("not valid UTF-8 text", rel, line, col) from None


def _line_col(raw: bytes, offset: int) -> Pos:
    before = raw[:offset]
    line = before.count(b"\n") + 1
    return line, offset - (before.rfind(b"\n") + 1) + 1


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Frame:
    """An open mapping or sequence while folding events."""

    __slots__ = ("anchor", "key", "pending_key", "pending_pos", "start", "value", "weight")

    def __init__(self, value: dict[Any, Any] | list[Any], key: Key, start: Pos, anchor: str | None):
        self.value = value
        self.key = key
        self.start = start
        self.anchor = anchor
        self.pending_key: Any = _NO_KEY
        self.pending_pos: Pos = start
        self.weight = 1


_NO_KEY = object()


class _Builder:
    def __init__(self, rel: str) -> None:
        self.rel = rel
        self.pos: dict[Key, Pos] = {}
        self.keypos: dict[Key, Pos] = {}
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.open_anchors: set[str] = set()
        self.stack: list[_Frame] = []
        self.nodes = 0
        self.documents = 0
        self.root: Any = _NO_KEY

    def fail(self, message: str, mark: Any) -> YamlError:
        return YamlError(message, self.rel, mark.line + 1, mark.column + 1)

    def build(self, events: Any) -> Manifest:
        first_mark = None
        for event in events:
            if first_mark is None:
                first_mark = event.start_mark
            self.feed(event)
        if self.documents == 0 or self.root is None or self.root is _NO_KEY:
            raise YamlError("the document is empty; expected a mapping", self.rel, 1, 1)
        if not isinstance(self.root, dict):
            raise YamlError(
                f"the document is a {_kind(self.root)}; expected a mapping with apiVersion, "
                "project, provider",
                self.rel,
                *self.pos.get((), (1, 1)),
            )
        return Manifest(self.rel, self.root, self.pos, self.keypos)

    def feed(self, event: Any) -> None:
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise self.fail("more than one YAML document; a manifest is one mapping", event.start_mark)
        elif isinstance(event, yaml.ScalarEvent):
            self.add(self.scalar(event), event, weight=1, anchor=event.anchor)
        elif isinstance(event, yaml.AliasEvent):
            self.alias(event)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            self.open(event)
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            self.close()

    def scalar(self, event: Any) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = _resolver.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
        if tag == "tag:yaml.org,2002:merge":
            raise self.fail("YAML merge keys (<<) are not supported in manifests", event.start_mark)
        if tag not in _SAFE_TAGS:
            raise self.fail(f"unsupported YAML tag {tag!r}", event.start_mark)
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            return _constructor.yaml_constructors[tag](_constructor, node)
        except ValueError:  # int() refuses more than 4,300 digits; no manifest value is that long
            message = f"number too large ({len(event.value)} characters; a manifest holds no such value)"
            raise self.fail(message, event.start_mark) from None

    def open(self, event: Any) -> None:
        tag = event.tag
        if tag not in (None, "!", _MAP_TAG, _SEQ_TAG):
            raise self.fail(f"unsupported YAML tag {tag!r}", event.start_mark)
        if len(self.stack) >= MAX_DEPTH:
            raise self.fail(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        self.count(1, event.start_mark)
        key = self.child_key(event.start_mark)
        value: dict[Any, Any] | list[Any] = {} if isinstance(event, yaml.MappingStartEvent) else []
        start = (event.start_mark.line + 1, event.start_mark.column + 1)
        self.pos[key] = start
        if event.anchor:
            self.open_anchors.add(event.anchor)
        self.stack.append(_Frame(value, key, start, event.anchor))

    def close(self) -> None:
        frame = self.stack.pop()
        if frame.anchor:
            self.open_anchors.discard(frame.anchor)
            self.anchors[frame.anchor] = (frame.value, frame.weight)
        self.attach(frame.value, frame.weight)

    def alias(self, event: Any) -> None:
        if event.anchor in self.open_anchors:
            raise self.fail(f"recursive alias *{event.anchor}", event.start_mark)
        if event.anchor not in self.anchors:  # the event parser does not check (the composer would)
            message = f"unknown alias *{event.anchor} (no anchor &{event.anchor} before it)"
            raise self.fail(message, event.start_mark)
        value, weight = self.anchors[event.anchor]
        self.count(weight, event.start_mark)
        self.add(copy.deepcopy(value), event, weight=weight, anchor=None)

    def count(self, weight: int, mark: Any) -> None:
        self.nodes += weight
        if self.nodes > MAX_NODES:
            raise self.fail(f"more than {MAX_NODES} nodes after expanding aliases (alias bomb?)", mark)

    def child_key(self, mark: Any) -> Key:
        if not self.stack:
            return ()
        frame = self.stack[-1]
        if isinstance(frame.value, list):
            return (*frame.key, len(frame.value))
        if frame.pending_key is _NO_KEY:
            raise self.fail("a mapping key must be a plain string, not a collection", mark)
        return (*frame.key, frame.pending_key)

    def add(self, value: Any, event: Any, *, weight: int, anchor: str | None) -> None:
        mark = event.start_mark
        if isinstance(event, yaml.ScalarEvent):
            self.count(1, mark)
        if anchor:
            self.anchors[anchor] = (value, weight)
        frame = self.stack[-1] if self.stack else None
        position = (mark.line + 1, mark.column + 1)
        if frame is not None and isinstance(frame.value, dict) and frame.pending_key is _NO_KEY:
            self.set_key(frame, value, mark)
            return
        self.pos[self.child_key(mark)] = position
        self.attach(value, weight)

    def set_key(self, frame: _Frame, key: Any, mark: Any) -> None:
        if not isinstance(key, str):
            raise self.fail(f"mapping keys must be strings, got {_kind(key)} {key!r}", mark)
        if key in frame.value:
            first = self.keypos.get((*frame.key, key), (0, 0))
            raise self.fail(f"duplicate key {key!r} (first defined at line {first[0]})", mark)
        frame.pending_key = key
        self.keypos[(*frame.key, key)] = (mark.line + 1, mark.column + 1)

    def attach(self, value: Any, weight: int) -> None:
        if not self.stack:
            self.root = value
            return
        frame = self.stack[-1]
        frame.weight += weight
        if isinstance(frame.value, list):
            frame.value.append(value)
        else:
            frame.value[frame.pending_key] = value
            frame.pending_key = _NO_KEY


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "mapping", list: "list", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )
