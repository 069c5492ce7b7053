"""The render cache: a render whose inputs did not change reuses the last texts, never anything
else; a damaged cache is ignored; ``render --check`` still reads every generated file."""

from __future__ import annotations

import shutil
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from infra_apply.errors import InfraApplyError
from infra_apply.manifests.build import build_model
from infra_apply.manifests.model import Model
from infra_apply.manifests.validate import validate_tree
from infra_apply.render import hcl, output
from infra_apply.render import module as render
from infra_apply.render.module import cache_file, render_model
from infra_apply.render.output import Rendered, write
from tests.conftest import EXAMPLE_MESH, EXAMPLE_TREE, base_tree, cli_env, run_cli, write_tree


def example_model() -> Model:
    v = validate_tree(EXAMPLE_TREE, EXAMPLE_MESH)
    assert not v.errors, v.errors
    return build_model(v)


def no_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any call that computes a producer's texts fails the test: the cache must answer."""

    def refuse(*_: object) -> Rendered:
        raise AssertionError("rendered again although nothing changed")

    monkeypatch.setattr(render, "render_producer", refuse)


def as_dict(rendered: list[Rendered]) -> list[dict[str, object]]:
    return [
        {
            "producer": r.producer,
            "files": dict(r.files),
            "names": dict(r.names),
            "droplet_addresses": dict(r.droplet_addresses),
            "gpu_variables": dict(r.gpu_variables),
            "create_settings": dict(r.create_settings),
        }
        for r in rendered
    ]


def test_unchanged_inputs_reuse_the_texts_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, cache, out = example_model(), tmp_path / "state" / "cache" / "render-x.json", tmp_path / "out"
    fresh = render_model(model, out)
    assert as_dict(render_model(model, out, cache)) == as_dict(fresh)  # a miss: rendered and stored
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    no_rendering(monkeypatch)
    assert as_dict(render_model(model, out, cache)) == as_dict(fresh)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: data.replace(b"digitalocean_droplet", b"digitalocean_dropleT", 1),  # edited payload
        lambda data: b"not json\n" + data,
        lambda data: b"",
    ],
    ids=["truncated", "edited", "garbage", "empty"],
)
def test_a_damaged_cache_is_ignored_and_replaced(tmp_path: Path, damage: object) -> None:
    model, cache, out = example_model(), tmp_path / "cache" / "render-x.json", tmp_path / "out"
    fresh = as_dict(render_model(model, out))
    render_model(model, out, cache)
    assert callable(damage)
    cache.write_bytes(damage(cache.read_bytes()))
    assert as_dict(render_model(model, out, cache)) == fresh
    assert output.load_cache(cache, next(iter(_keys(model, out)))) is not None  # stored again


def _keys(model: Model, out: Path) -> list[str]:
    producers = [p for p in model.producers if p.droplets or p.databases]
    key = render._cache_key(model, {p.name: output._ledger_bytes(out, p.name) for p in producers})
    assert key is not None
    return [key]


def test_a_changed_model_ledger_or_template_renders_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, cache, out = example_model(), tmp_path / "cache" / "render-x.json", tmp_path / "out"
    first = render_model(model, out, cache)
    # The ledger render itself writes is an input too: the next render reads it.
    write(first, out)
    render_model(model, out, cache)
    key = _keys(model, out)[0]
    # a droplet's size
    producer = model.producers[0]
    bigger = replace(producer.droplets[0], size="s-8vcpu-16gb")
    producers = (replace(producer, droplets=(bigger, *producer.droplets[1:])), *model.producers[1:])
    changed = replace(model, producers=producers)
    assert _keys(changed, out)[0] != key
    texts = {r.producer: r.files for r in render_model(changed, out, cache)}
    assert '"s-8vcpu-16gb"' in texts[producer.name]["droplets.tf"]
    # a ledger edited by hand
    ledger = out / producer.name / output.LEDGER
    original = ledger.read_text()
    ledger.write_text(original.replace('"version": 1', '"version": 1 '))
    assert _keys(model, out)[0] != key
    ledger.write_text(original)
    assert _keys(model, out)[0] == key
    # a template
    templates = tmp_path / "templates"
    shutil.copytree(hcl.templates_dir(), templates)
    (templates / "versions.tf.j2").write_text((templates / "versions.tf.j2").read_text() + "# more\n")
    monkeypatch.setattr(hcl, "templates_dir", lambda: templates)
    assert _keys(model, out)[0] != key


def test_the_cache_lives_beside_the_validation_cache_and_is_off_without_it(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    assert cache_file(folder / "validate-tree-1.json") == folder / "render-tree-1.json"
    assert cache_file(None) is None


def test_check_finds_a_hand_edit_even_when_the_cache_answers(tmp_path: Path) -> None:
    """The cache skips computing the texts, never reading the files on disk: an edited generated
    file is stale for --check and rewritten by render, with the cache warm all along."""
    root = write_tree(tmp_path / "root", base_tree())
    out, env = tmp_path / "out", cli_env(tmp_path)
    for _ in range(2):  # the second render reads the ledger the first wrote: the cache is warm
        assert run_cli("--root", str(root), "render", "--out", str(out), env=env).returncode == 0
    assert list((tmp_path / "state" / "cache").glob("render-*"))
    droplets = out / "ct" / "droplets.tf"
    good = droplets.read_text()
    droplets.write_text(good.replace('"nyc3"', '"sfo3"'))
    check = run_cli("--root", str(root), "render", "--check", "--out", str(out), env=env)
    assert check.returncode == 1 and f"{droplets}: stale or missing" in check.stdout
    assert run_cli("--root", str(root), "render", "--out", str(out), env=env).returncode == 0
    assert droplets.read_text() == good
    no_cache = cli_env(tmp_path, INFRA_APPLY_NO_CACHE="1")
    assert run_cli("--root", str(root), "render", "--check", "--out", str(out), env=no_cache).returncode == 0


def test_files_written_at_once_are_whole_and_a_failed_one_is_one_error(tmp_path: Path) -> None:
    """write() runs its atomic writes several at a time: every file ends up complete, and a file
    that cannot be written is one located error (never a traceback from a worker thread)."""
    rendered = render_model(example_model(), tmp_path / "none")
    out = tmp_path / "out"
    drift = write(rendered, out)
    assert len(drift.stale) > output.WRITERS  # more files than writers
    assert not output.compare(rendered, out).stale
    assert not list(out.rglob("*.infra-apply.tmp"))  # no temporary file left behind
    blocked = out / rendered[0].producer / "droplets.tf"
    blocked.unlink()
    blocked.mkdir()  # a folder where the file goes: its rename fails
    (blocked / "keep").write_text("x")
    with pytest.raises(InfraApplyError, match="cannot write"):
        write(rendered, out)


def test_plan_reuses_renders_cache_and_still_sees_a_stale_generated_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plan and apply load the project through the same cache as ``render``: after a render,
    unchanged inputs are not rendered again; a generated file edited since is still noted."""
    from infra_apply.cloud.account import choose
    from infra_apply.runtime.workcopy import Context, check_ready, load_project

    root = write_tree(tmp_path / "root", base_tree())
    out, env = tmp_path / "out", cli_env(tmp_path)
    assert run_cli("--root", str(root), "render", "--out", str(out), env=env).returncode == 0
    said: list[str] = []
    ctx = Context(root, out, choose(False), None, env, say=said.append)
    check_ready(ctx)
    fresh = render_model(load_project(ctx).model, out)
    no_rendering(monkeypatch)
    project = load_project(ctx)
    assert as_dict(list(project.rendered.values())) == as_dict(fresh)
    assert not project.generated_stale and not said
    (out / "ct" / "droplets.tf").write_text("# edited\n")
    assert load_project(ctx).generated_stale
    assert any("is out of date with the manifests" in line for line in said)


@pytest.mark.parametrize("how", ["readable by others", "a symlink", "another user's"])
def test_a_cache_this_user_did_not_write_is_never_trusted(tmp_path: Path, how: str) -> None:
    """A shared state dir: a cache file under the right key holding other Terraform (someone
    else's SSH key on the droplets, say) must never reach --out or a plan."""
    import hashlib
    import json
    import os

    model, cache, out = example_model(), tmp_path / "state" / "render-x.json", tmp_path / "out"
    fresh = render_model(model, out, cache)
    ledgers = output.read_ledgers(out, [r.producer for r in fresh])
    key = render._cache_key(model, ledgers)
    assert key is not None
    injected = [replace(r, files={**r.files, "droplets.tf": "# injected\n"}) for r in fresh]
    payload = json.dumps([output.rendered_json(r) for r in injected]).encode()
    head = json.dumps(
        {"format": output.CACHE_FORMAT, "key": key, "sha256": hashlib.sha256(payload).hexdigest()}
    )
    cache.write_bytes(head.encode() + b"\n" + payload)
    assert as_dict(render_model(model, out, cache)) == as_dict(injected)  # the right key
    if how == "readable by others":
        cache.chmod(0o644)
    elif how == "a symlink":
        cache.rename(tmp_path / "elsewhere.json")
        cache.symlink_to(tmp_path / "elsewhere.json")
    elif os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    else:
        os.chown(cache, 65534, 65534)
    assert as_dict(render_model(model, out, cache)) == as_dict(fresh)


@pytest.mark.parametrize("changed", ["plan/managed.py", "runtime/strictjson.py", "manifests/config.py"])
def test_any_change_to_the_code_render_runs_changes_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changed: str
) -> None:
    """The managed tag (plan/managed.py), the JSON in the templates (strictjson.py), the alert
    settings (config.py) reach the rendered text: an upgrade in place that changes one of them,
    the version unchanged, must not reuse the texts plan would otherwise compare and apply."""
    import os

    import infra_apply

    model = example_model()
    ledgers = output.read_ledgers(tmp_path / "out", [p.name for p in render.rendered_producers(model)])
    package = tmp_path / "package"
    shutil.copytree(Path(infra_apply.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    if not (package / "templates").is_dir():  # a source checkout: the templates beside it
        shutil.copytree(hcl.templates_dir(), tmp_path / "templates")
    monkeypatch.setattr(infra_apply, "__file__", str(package / "__init__.py"))
    first = render._cache_key(model, ledgers)
    assert first is not None and first == render._cache_key(model, ledgers)
    module = package / changed
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 1))
    assert render._cache_key(model, ledgers) != first


def test_a_cache_that_cannot_be_written_only_costs_the_speed(tmp_path: Path) -> None:
    model, cache = example_model(), tmp_path / "state" / "render-x.json"
    cache.parent.mkdir()
    cache.write_text("x")
    cache.chmod(0o400)  # respected, even by root
    assert as_dict(render_model(model, tmp_path / "out", cache)) == as_dict(
        render_model(model, tmp_path / "out")
    )
