"""Compiled templates under the state dir (render/templatecache.py): private, and used only when
whole, this user's and made from the same template source; anything else compiles again."""

from __future__ import annotations

import marshal
import os
import stat
from pathlib import Path

import jinja2
import pytest

from infra_apply.render import templatecache
from infra_apply.render.templatecache import PrivateBytecodeCache

TEMPLATE = "{% for x in items %}item {{ x }}\n{% endfor %}"


def environment(templates: Path, cache: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        bytecode_cache=PrivateBytecodeCache(cache),
        auto_reload=False,
    )


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "t.j2").write_text(TEMPLATE)
    return templates, tmp_path / "state" / "cache" / "templates"


def compiled_from_cache(templates: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Render t.j2 in a fresh environment; True when its code came from the cache."""
    used: list[bool] = []

    class Spy:
        dumps = staticmethod(marshal.dumps)

        @staticmethod
        def loads(data: bytes) -> object:
            used.append(True)
            return marshal.loads(data)

    monkeypatch.setattr(templatecache, "marshal", Spy)
    text = environment(templates, cache).get_template("t.j2").render(items=[1, 2])
    monkeypatch.setattr(templatecache, "marshal", marshal)
    assert text == "item 1\nitem 2\n"
    return bool(used)


def test_compiled_templates_are_private_and_reused(
    folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    templates, cache = folders
    assert not compiled_from_cache(templates, cache, monkeypatch)
    (stored,) = cache.iterdir()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert compiled_from_cache(templates, cache, monkeypatch)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),  # one bit of the code
        lambda data: b"",
        lambda data: os.urandom(len(data)),
    ],
)
def test_a_damaged_file_is_compiled_again(
    folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, damage: object
) -> None:
    templates, cache = folders
    compiled_from_cache(templates, cache, monkeypatch)
    (stored,) = cache.iterdir()
    assert callable(damage)
    stored.write_bytes(damage(stored.read_bytes()))
    assert not compiled_from_cache(templates, cache, monkeypatch)
    assert compiled_from_cache(templates, cache, monkeypatch)  # written again, whole


def test_a_changed_template_is_compiled_again(
    folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    templates, cache = folders
    compiled_from_cache(templates, cache, monkeypatch)
    (templates / "t.j2").write_text(TEMPLATE + "{# changed #}")
    assert not compiled_from_cache(templates, cache, monkeypatch)


def test_a_file_others_may_read_or_write_or_a_symlink_is_never_loaded(
    folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    templates, cache = folders
    compiled_from_cache(templates, cache, monkeypatch)
    (stored,) = cache.iterdir()
    stored.chmod(0o644)
    assert not compiled_from_cache(templates, cache, monkeypatch)
    (stored,) = cache.iterdir()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600  # replaced by a private one
    elsewhere = tmp_path / "elsewhere.bin"
    stored.rename(elsewhere)
    stored.symlink_to(elsewhere)
    assert not compiled_from_cache(templates, cache, monkeypatch)


def test_a_read_only_state_dir_only_costs_the_compile(
    folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    templates, cache = folders
    cache.parent.mkdir(parents=True)
    cache.parent.chmod(0o500)
    try:
        assert not compiled_from_cache(templates, cache, monkeypatch)
    finally:
        cache.parent.chmod(0o700)


def test_render_uses_no_template_cache_when_caching_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infra_apply.render import hcl

    monkeypatch.setenv("INFRA_APPLY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("INFRA_APPLY_NO_CACHE", "1")
    assert hcl._bytecode_cache() is None
    monkeypatch.delenv("INFRA_APPLY_NO_CACHE")
    found = hcl._bytecode_cache()
    assert isinstance(found, PrivateBytecodeCache)
    assert found.folder == tmp_path / "state" / "cache" / "templates"


@pytest.mark.parametrize(
    "setting",
    [
        {"trim_blocks": True},
        {"lstrip_blocks": True},
        {"keep_trailing_newline": True},
        {"variable_start_string": "<<", "variable_end_string": ">>"},
    ],
)
def test_compiled_code_is_never_shared_by_environments_that_compile_differently(
    folders: tuple[Path, Path], setting: dict[str, object]
) -> None:
    """Whitespace and syntax settings are compiled into the code: a cache written by one
    environment (an older infra-apply, say) must not answer for another."""
    templates, cache = folders
    (templates / "t.j2").write_text("  {% for x in items %}\n  item {{ x }}\n  {% endfor %}\n<< x >>\n")

    def text(cached: bool, **settings: object) -> str:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(templates)),
            bytecode_cache=PrivateBytecodeCache(cache) if cached else None,
            auto_reload=False,
            **settings,  # type: ignore[arg-type]
        )
        return env.get_template("t.j2").render(items=[1], x=0)

    assert text(True) == text(False)
    assert text(False, **setting) != text(False)  # the setting matters to this template
    assert text(True, **setting) == text(False, **setting)
    assert text(True) == text(False)  # both kept, neither mistaken for the other
