from __future__ import annotations

import pytest

from infra_apply.manifests.manifest import YamlError, parse


def test_positions_of_values_and_keys() -> None:
    m = parse(b"apiVersion: infra/v1\nservice:\n  host: lime\n  depends_on: [a, b]\n", "f")
    assert m.data == {"apiVersion": "infra/v1", "service": {"host": "lime", "depends_on": ["a", "b"]}}
    assert m.locate(("service", "host")) == (3, 9)
    assert m.locate(("service", "host"), at_key=True) == (3, 3)
    assert m.locate(("service", "depends_on", 1)) == (4, 19)
    assert m.locate(("service", "nope", 3)) == m.locate(("service",))


def test_aliases_expand_to_copies() -> None:
    m = parse(b"a: &x {k: [1]}\nb: *x\n", "f")
    assert m.data["a"] == m.data["b"] and m.data["a"] is not m.data["b"]


@pytest.mark.parametrize(
    ("raw", "where", "text"),
    [
        (b"a: 1\nb:\n  c: 1\n  c: 2\n", (4, 3), "duplicate key 'c' (first defined at line 3)"),
        (b"a: !!python/object/apply:os.system [ls]\n", (1, 4), "unsupported YAML tag"),
        (b"a: &a [*a]\n", (1, 8), "recursive alias"),
        (b"a: 1\n\x00", (2, 1), "binary file"),
        (b"ok: 1\nbad: \xc3\x28\n", (2, 6), "not valid UTF-8"),
        (b"[1]\n", (1, 1), "the document is a list"),
        (b"a: 1\n---\nb: 1\n", (2, 1), "more than one YAML document"),
    ],
)
def test_hostile_input_is_a_located_yaml_error(raw: bytes, where: tuple[int, int], text: str) -> None:
    with pytest.raises(YamlError) as exc:
        parse(raw, "f.yaml")
    assert (exc.value.line, exc.value.col) == where
    assert text in exc.value.message
    assert exc.value.rule == "yaml"


def test_deep_nesting_stops_early() -> None:
    with pytest.raises(YamlError, match="nested deeper than 64"):
        parse(b"a: " + b"[" * 200 + b"]" * 200 + b"\n", "f")


def test_an_alias_with_no_anchor_is_a_located_yaml_error() -> None:
    with pytest.raises(YamlError) as exc:
        parse(b"apiVersion: infra/v1\nx: *nope\n", "f.yaml")
    assert (exc.value.line, exc.value.col, exc.value.rule) == (2, 4, "yaml")
    assert "unknown alias *nope" in exc.value.message


def test_an_integer_beyond_pythons_digit_limit_is_a_located_yaml_error() -> None:
    with pytest.raises(YamlError) as exc:
        parse(b"apiVersion: infra/v1\nservice:\n  port: " + b"9" * 4301 + b"\n", "f.yaml")
    assert (exc.value.line, exc.value.col, exc.value.rule) == (3, 9, "yaml")
    assert "number too large" in exc.value.message and len(exc.value.message) < 200
