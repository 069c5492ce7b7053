"""render's fast path (render/uptodate.py): the last render is reused only while the raw bytes
of every input are unchanged; any change renders again, and what it writes is what a render
with no cache at all writes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from hashlib import sha256
from pathlib import Path

import pytest

import infra_apply
from infra_apply.commands import render as verb
from infra_apply.manifests import validate
from infra_apply.render import uptodate
from infra_apply.runtime.state import state_dir
from tests.conftest import EXAMPLE_MESH, base_tree, cli_env, droplet, producer_root, project, write_tree

USER_DATA = "#cloud-config\npackage_update: true\n"


def tree(tmp_path: Path) -> Path:
    files = base_tree()
    files["infra-apply.toml"] = '[droplets]\nssh_keys = ["ops"]\nuser_data = "cloud-init/base.yaml"\n'
    files["cloud-init/base.yaml"] = USER_DATA
    return write_tree(tmp_path / "root", files)


class Renders:
    """Runs ``render`` in this process, counting the full renders (the fast path's misses)."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, root: Path, out: Path, env: Mapping[str, str]
    ) -> None:
        self.root, self.out, self.env, self.full = root, out, dict(env), 0
        self.mesh: Path | None = None
        full = verb._render

        def counted(*args: object, **kwargs: object) -> list[object]:
            self.full += 1
            return full(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(verb, "_render", counted)

    def __call__(self, **env: str) -> tuple[verb.Rendering, list[str]]:
        said: list[str] = []
        result = verb.run(self.root, self.out, self.mesh, {**self.env, **env}, say=said.append)
        return result, said

    def settle(self) -> None:
        """Two renders: the first writes the ledgers, the second is keyed on them."""
        self()
        self()
        before = self.full
        self()
        assert self.full == before, "unchanged inputs were rendered again"


def files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def uncached(root: Path, tmp_path: Path, env: Mapping[str, str]) -> dict[str, bytes]:
    """What a render with no cache writes into a copy of ``out`` (the same ledgers)."""
    out = tmp_path / "uncached"
    shutil.rmtree(out, ignore_errors=True)
    if (tmp_path / "out").exists():
        shutil.copytree(tmp_path / "out", out)
    verb.run(root, out, None, {**env, "INFRA_APPLY_NO_CACHE": "1"}, say=lambda _: None)
    return files(out)


@pytest.fixture
def renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Renders:
    env = cli_env(tmp_path)
    monkeypatch.setenv("INFRA_APPLY_STATE_DIR", env["INFRA_APPLY_STATE_DIR"])
    return Renders(monkeypatch, tree(tmp_path), tmp_path / "out", env)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def _retarget_user_data(root: Path) -> None:
    # The same bytes behind another path: the file render copies is another source.
    (root / "other").mkdir()
    (root / "other" / "base.yaml").write_text(USER_DATA)
    shutil.move(root / "cloud-init", root / "kept")
    (root / "cloud-init").symlink_to("other")


CHANGES: dict[str, Callable[[Path], None]] = {
    "a manifest": lambda root: _edit(
        root / "@ct/.infra.yaml", "com.uvlava.ct.services", "com.uvlava.ct.edge"
    ),
    "infra-apply.toml": lambda root: _edit(root / "infra-apply.toml", '"ops"', '"ops-2027"'),
    "a user-data file": lambda root: _edit(root / "cloud-init/base.yaml", "true", "false"),
    "where a user-data path resolves": _retarget_user_data,
    "a new manifest": lambda root: write_tree(root, {"@ct/billing/.infra.yaml": project("billing")}),
    "a new producer folder": lambda root: write_tree(
        root, {"@mc/.infra.yaml": producer_root("mc", droplet("com.uvlava.mc.services", ["fig"]))}
    ),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_changed_input_is_rendered_again(renders: Renders, tmp_path: Path, change: str) -> None:
    renders.settle()
    CHANGES[change](renders.root)
    before = renders.full
    renders()
    assert renders.full == before + 1
    assert files(renders.out) == uncached(renders.root, tmp_path, renders.env)


def test_a_ledger_edited_by_hand_is_rendered_again(renders: Renders, tmp_path: Path) -> None:
    renders.settle()
    ledger = renders.out / "ct" / "addresses.json"
    doc = json.loads(ledger.read_text())
    (entry,) = doc["droplets"].values()
    doc["droplets"] = {"renamed_by_hand": entry}
    ledger.write_text(json.dumps(doc, indent=2) + "\n")
    before = renders.full
    renders()
    assert renders.full == before + 1
    assert "renamed_by_hand" in (renders.out / "ct" / "droplets.tf").read_text()


def test_mesh_hosts_and_variables_are_inputs(renders: Renders, tmp_path: Path) -> None:
    mesh = tmp_path / "mesh-hosts.json"
    shutil.copyfile(EXAMPLE_MESH, mesh)
    renders.mesh = mesh
    renders.settle()
    mesh.write_bytes(mesh.read_bytes().replace(b"}", b"} ", 1))
    before = renders.full
    renders()
    assert renders.full == before + 1
    renders(INFRA_APPLY_SOMETHING="x")
    assert renders.full == before + 2


def test_a_hit_replays_the_warnings(renders: Renders) -> None:
    _, warned = renders()
    renders.settle()
    before = renders.full
    result, said = renders()
    assert renders.full == before
    assert any("warning public_ssh" in line for line in warned)  # no ssh_from: SSH is public
    assert said == warned
    assert not result.stale and sum(len(r.files) for r in result.rendered) == len(files(renders.out))


def test_an_edited_or_removed_generated_file_is_written_again(renders: Renders, tmp_path: Path) -> None:
    renders.settle()
    expected = files(renders.out)
    droplets = renders.out / "ct" / "droplets.tf"
    droplets.write_text("# edited\n")
    (renders.out / "ct" / "outputs.tf").unlink()
    checked = verb.run(renders.root, renders.out, None, renders.env, check=True, say=lambda _: None)
    assert checked.drift.stale == ("ct/droplets.tf", "ct/outputs.tf")
    result, _ = renders()
    assert result.drift.stale == ("ct/droplets.tf", "ct/outputs.tf")
    assert files(renders.out) == expected


def test_a_damaged_record_is_ignored_and_replaced(renders: Renders, tmp_path: Path) -> None:
    renders.settle()
    (record,) = (state_dir(renders.env) / "cache").glob("render-inputs-*.json")
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    record.write_bytes(record.read_bytes()[:-40])
    before = renders.full
    renders()
    assert renders.full == before + 1
    renders()
    assert renders.full == before + 1  # stored again


def test_no_cache_means_no_record(renders: Renders) -> None:
    renders(INFRA_APPLY_NO_CACHE="1")
    renders(INFRA_APPLY_NO_CACHE="1")
    assert renders.full == 2
    assert not list((state_dir(renders.env) / "cache").glob("render-inputs-*"))


def test_a_template_or_code_change_changes_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from infra_apply.render import hcl

    root, env = tree(tmp_path), cli_env(tmp_path)
    templates = tmp_path / "templates"
    shutil.copytree(hcl.templates_dir(), templates)
    monkeypatch.setattr(uptodate, "template_dirs", lambda: (templates,))
    first = uptodate.tree_digest(root, tmp_path / "out", None, env)
    assert first is not None and first == uptodate.tree_digest(root, tmp_path / "out", None, env)
    _edit(templates / "droplets.tf.j2", "resource", "resource ")
    second = uptodate.tree_digest(root, tmp_path / "out", None, env)
    assert second != first
    package = tmp_path / "package"
    shutil.copytree(Path(infra_apply.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(infra_apply, "__file__", str(package / "__init__.py"))
    third = uptodate.tree_digest(root, tmp_path / "out", None, env)
    module = package / "render" / "module.py"
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 1))
    assert uptodate.tree_digest(root, tmp_path / "out", None, env) not in (second, third)


def test_a_warm_render_loads_no_parser_schema_model_or_template(tmp_path: Path) -> None:
    """The point of the fast path: none of this is imported when nothing changed."""
    root, out = tree(tmp_path), tmp_path / "out"
    env = {k: v for k, v in cli_env(tmp_path).items() if k != "PYTHONDONTWRITEBYTECODE"}
    heavy = (
        "yaml",
        "jsonschema",
        "jinja2",
        "infra_apply.manifests.validate",
        "infra_apply.manifests.build",
        "infra_apply.manifests.model",
        "infra_apply.render.module",
        "infra_apply.kinds",
        "infra_apply.plan.parse",
        "infra_apply.forge.notify",
        "infra_apply.cloud.http",
    )
    # Said at exit (main ends the process itself; its atexit handlers still run)
    code = (
        "import atexit, sys\nfrom infra_apply.cli import main\n"
        f"sys.argv = ['infra-apply', '--root', {str(root)!r}, 'render', '--out', {str(out)!r}]\n"
        f"atexit.register(lambda: print(sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr))\n"
        "main()\n"
    )

    def loaded() -> str:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, check=True
        )
        return done.stderr.strip().splitlines()[-1]

    # A manifest changed within the last RACY_NS is parsed again each run (validate.py): wait
    # that out once, so the validation cache can answer below.
    newest = max(p.stat().st_ctime_ns for p in root.rglob("*"))
    time.sleep(max(0.0, (newest + validate.RACY_NS - time.time_ns()) / 1e9) + 0.05)
    assert loaded() != "[]"  # the first render (no record) loads them all
    loaded()  # keyed on the ledgers the first one wrote
    assert loaded() == "[]"
    assert os.listdir(out / "ct")
    # No record, but the validation cache answers: no manifest is parsed or schema-checked
    # (PyYAML still checks the #cloud-config user data infra-apply.toml names).
    for record in (tmp_path / "state" / "cache").glob("render-*"):
        record.unlink()
    assert "jsonschema" not in loaded()


def _plant(record: Path, how: str, tmp_path: Path) -> None:
    """Put ``record`` where render looks, as someone else could in a shared state dir."""
    if how == "readable by others":
        record.chmod(0o644)
    elif how == "a symlink":
        elsewhere = tmp_path / "elsewhere.json"
        record.rename(elsewhere)
        record.symlink_to(elsewhere)
    else:
        if os.geteuid() != 0:
            pytest.skip("only root can give a file to another user")
        os.chown(record, 65534, 65534)


@pytest.mark.parametrize("how", ["readable by others", "a symlink", "another user's"])
def test_a_record_this_user_did_not_write_is_never_trusted(
    renders: Renders, tmp_path: Path, how: str
) -> None:
    """A shared state dir: a record claiming "nothing to render" under the right key would
    have render remove every generated module (and plan plan their destruction)."""
    renders.settle()
    expected = files(renders.out)
    (record,) = (state_dir(renders.env) / "cache").glob("render-inputs-*.json")
    tree = uptodate.tree_digest(renders.root, renders.out, None, renders.env)
    assert tree is not None
    payload = json.dumps({"producers": [], "user_data": [], "warnings": [], "rendered": []}).encode()
    head = {
        "format": uptodate.FORMAT,
        "key": uptodate.full_key(tree, {}, []),
        "sha256": sha256(payload).hexdigest(),
    }
    record.write_bytes(json.dumps(head).encode() + b"\n" + payload)
    _plant(record, how, tmp_path)
    before = renders.full
    result, _ = renders()
    assert renders.full == before + 1
    assert not result.drift.extra and files(renders.out) == expected


@pytest.mark.parametrize("blocker", ["a folder", "a read-only file"])
def test_a_record_that_cannot_be_written_only_costs_the_speed(
    renders: Renders, tmp_path: Path, blocker: str
) -> None:
    """Render still writes --out (and says nothing of the cache) when its record cannot be kept."""
    renders.settle()
    (record,) = (state_dir(renders.env) / "cache").glob("render-inputs-*.json")
    record.unlink()
    if blocker == "a folder":
        record.mkdir()
    else:
        record.write_text("x")
        record.chmod(0o400)
    shutil.rmtree(renders.out)
    before = renders.full
    _, said = renders()
    assert renders.full == before + 1
    assert files(renders.out) == uncached(renders.root, tmp_path, renders.env)
    assert not any("cannot write" in line for line in said)
