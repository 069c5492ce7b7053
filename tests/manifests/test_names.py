"""Names from manifests and folder names: each one is a located error, or reaches the HCL, the
tags, the address ledger and mesh-hosts.json exactly as written, and no write leaves its folder.

Issue 8, finding 3 (a trailing newline passed every name check) and the property over every
name-like field, including producer folder names.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from infra_apply.cloud.account import LiveAccount
from infra_apply.errors import InfraApplyError, MeshError, Problem, ValidationFailed
from infra_apply.manifests.build import build_model
from infra_apply.manifests.manifest import parse
from infra_apply.manifests.model import Database, ProducerModel
from infra_apply.manifests.validate import require_valid
from infra_apply.registry.mesh import live_droplets_from_output, plan_registration
from infra_apply.render.hcl import slug
from infra_apply.render.hcl import string as hcl_string
from infra_apply.render.module import Ledger, parse_ledger, render_model, render_producer
from infra_apply.render.output import write
from infra_apply.runtime import workcopy
from tests.conftest import CONFIG, cli_env, run_cli

# --- a tree with one droplet and one project, every name-like field settable ---------------------

VALID: dict[str, str] = {
    "producer": "ct",
    "droplet": "com.uvlava.box",  # global name: the droplet's producer is its folder's
    "host": "box",
    "service": "box-svc",
    "role": "box",
    "size": "s-1vcpu-1gb",
    "image": "ubuntu-24-04-x64",
    "region": "nyc3",
    "project": "app",
    "cluster": "uvlava-pg",
    "db_name": "app",
    "db_user": "app",
}
ROOT_FIELDS = {"producer", "droplet", "host", "service", "role", "size", "image", "region"}


def yaml_str(value: str) -> str:
    """A YAML double-quoted scalar that loads back as exactly ``value`` (PyYAML's own dumper
    folds some characters, e.g. U+0085, into line breaks)."""
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) <= 0xFF:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def yaml_doc(doc: dict[str, Any]) -> str:
    def flow(value: Any) -> str:
        if isinstance(value, str):
            return yaml_str(value)
        if isinstance(value, list):
            return "[" + ", ".join(flow(v) for v in value) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
        return json.dumps(value)

    return "".join(f"{k}: {flow(v)}\n" for k, v in doc.items())


def manifests(f: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Root-relative path -> manifest document, for the field values ``f``."""
    folder = f"@{f['producer']}"
    droplet = {
        "name": f["droplet"],
        "role": f["role"],
        "size": f["size"],
        "image": f["image"],
        "region": f["region"],
        "hosts": [f["host"]],
        "services": [{"name": f["service"], "kind": "api"}],
    }
    return {
        f"{folder}/.infra.yaml": {
            "apiVersion": "infra/v1",
            "project": "shared-infra",
            "provider": "digitalocean",
            "droplets": [droplet],
        },
        f"{folder}/app/.infra.yaml": {
            "apiVersion": "infra/v1",
            "project": f["project"],
            "provider": "digitalocean",
            "service": {"host": f["host"], "port": 8080, "systemd_unit": "app.service"},
            "database": {"cluster": f["cluster"], "name": f["db_name"], "user": f["db_user"]},
        },
    }


def write_manifests(root: Path, f: dict[str, str]) -> None:
    for rel, doc in manifests(f).items():
        text = yaml_doc(doc)
        assert parse(text.encode(), rel).data == doc  # the file says exactly what the test means
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")


def where(field: str, f: dict[str, str]) -> str:
    folder = f"@{f['producer']}"
    return f"{folder}/.infra.yaml" if field in ROOT_FIELDS else f"{folder}/app/.infra.yaml"


# --- reading the rendered module back -------------------------------------------------------------

_LITERAL = r'"(?:[^"\\]|\\.)*"'
_HCL_ESCAPE = re.compile(r'\\(["\\nrt]|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})|\$\$\{|%%\{')


def hcl_decode(literal: str) -> str:
    """What Terraform makes of one of our string literals (checked against terraform itself in
    test_hcl_decode_agrees_with_terraform)."""
    assert literal[0] == literal[-1] == '"', literal

    def one(m: re.Match[str]) -> str:
        if m.group(0) in ("$${", "%%{"):
            return m.group(0)[1:]
        e = m.group(1)
        simple = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
        return simple[e] if e in simple else chr(int(e[1:], 16))

    return _HCL_ESCAPE.sub(one, literal[1:-1])


def attr(text: str, name: str) -> list[str]:
    """Every ``name = "..."`` string attribute of ``text``, decoded, in order."""
    return [hcl_decode(m) for m in re.findall(rf"^\s*{name}\s*=\s*({_LITERAL})\s*$", text, re.M)]


def attr_list(text: str, name: str) -> list[list[str]]:
    pattern = rf"^\s*{name}\s*=\s*\[((?:\s*{_LITERAL}\s*,?)*)\]\s*$"
    return [[hcl_decode(x) for x in re.findall(_LITERAL, m)] for m in re.findall(pattern, text, re.M)]


def comments(text: str) -> list[str]:
    return [hcl_decode(m) for m in re.findall(rf"^# ({_LITERAL}) \(prod\)", text, re.M)]


# --- finding 3: a trailing newline passes no name check --------------------------------------------

NEWLINE_CASES = [
    ("producer", "do_limits"),
    ("droplet", "droplet_naming"),
    ("host", "host_in_mesh"),
    ("role", "do_limits"),
    ("size", "do_limits"),
    ("image", "do_limits"),
    ("region", "cloud_provider"),
    ("cluster", "do_limits"),
    ("db_name", "do_limits"),
    ("db_user", "do_limits"),
]


@pytest.mark.parametrize(("field", "rule"), NEWLINE_CASES, ids=[c[0] for c in NEWLINE_CASES])
def test_a_trailing_newline_passes_no_name_check(tmp_path: Path, field: str, rule: str) -> None:
    f = {**VALID, field: VALID[field] + "\n"}
    write_manifests(tmp_path, f)
    with pytest.raises(ValidationFailed) as failed:
        require_valid(tmp_path, None, None, lambda _: None)
    errors = [p for p in failed.value.problems if p.level == "error"]
    assert any(p.path == where(field, f) and p.rule == rule and p.line >= 1 for p in errors), errors
    assert all("\n" not in p.format() for p in errors)


def test_a_host_with_a_trailing_newline_is_never_registered() -> None:
    """Defence in depth behind validation: a state rendered before the fix carries "dns\\n"."""
    output = {
        "com.uvlava.dns": {
            "id": "1",
            "ipv4_address": "192.0.2.1",
            "ipv4_address_private": "10.0.0.1",
            "region": "nyc3",
            "hosts": ["dns\n"],
            "producer": "quinn",
        }
    }
    with pytest.raises(MeshError, match="not a list of host names"):
        live_droplets_from_output(output)


def test_a_database_name_with_a_trailing_newline_never_reaches_a_resource_label() -> None:
    db = Database("abc\n", "abc\n", "abc\n", "app", "prod", "ct", "@ct/app/.infra.yaml")
    text = render_producer(ProducerModel("ct", databases=(db,)), Ledger()).files["databases.tf"]
    labels = re.findall(r'^(?:resource|data) "\w+" "([^"]*)"', text, re.M)
    assert len(labels) == 3 and all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", x) for x in labels), labels
    assert slug("abc\n") != "abc\n"
    assert attr(text, "name") == ["abc\n"] * 3


def test_a_ledger_address_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(InfraApplyError, match="not a Terraform resource name"):
        parse_ledger('{"droplets": {"ct_box\\n": {"name": "com.uvlava.ct.box"}}}', "addresses.json")


@pytest.mark.parametrize(
    ("folder", "path"),
    [("@ab\n", "@ab\\n/.infra.yaml"), ("@", "@/.infra.yaml"), ("@..", "@../.infra.yaml")],
    ids=["trailing-newline", "empty", "dot-dot"],
)
def test_cli_reports_a_bad_producer_folder_on_one_located_line(
    tmp_path: Path, folder: str, path: str
) -> None:
    f = {**VALID, "producer": folder[1:]}
    write_manifests(tmp_path / "tree", f)
    (tmp_path / "tree" / "infra-apply.toml").write_text(CONFIG)  # droplets get a key (ssh_access)
    env = cli_env(tmp_path)
    # validate first: were it to pass, render would write "@" into /droplets.tf (finding 2).
    checked = run_cli("--root", str(tmp_path / "tree"), "validate", env=env)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert checked.stdout.startswith(f"{path}:1:1: error do_limits: producer folder name ")
    assert len(checked.stdout.splitlines()) == 2  # the one problem, then the summary
    out = tmp_path / "gen"
    rendered = run_cli("--root", str(tmp_path / "tree"), "render", "--out", str(out), env=env)
    assert rendered.returncode == 1 and "Traceback" not in rendered.stderr
    assert rendered.stderr.splitlines()[0].startswith(f"{path}:1:1: error do_limits: ")
    assert not out.exists()


# --- the property -------------------------------------------------------------------------------

PARTS = ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\ufeff", "\u202e", "${", "%{",
         "$${", '"', "'", "\\", "..", "/", " ", ":", "_", "A", "é", "😀", "}", "#"]  # fmt: skip
# Mostly names some check accepts, so the accepted path sees odd but valid values too.
PLAUSIBLE = st.text(alphabet="abz09-_.:", min_size=1, max_size=8)
ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


def hostile(valid: str) -> st.SearchStrategy[str]:
    """The valid value, the value with a hostile part spliced in, or anything at all."""
    spliced = st.tuples(st.integers(0, len(valid)), st.sampled_from(PARTS)).map(
        lambda t: valid[: t[0]] + t[1] + valid[t[0] :]
    )
    return st.one_of(
        st.sampled_from([valid, valid + "\n", "", "..", "/", "${x}", valid.upper()]),
        spliced,
        PLAUSIBLE,
        ANY_TEXT,
    )


def folder_name_ok(producer: str) -> bool:
    """What a folder name can hold at all (the property is about what infra-apply does with it)."""
    return "/" not in producer and "\0" not in producer and len(f"@{producer}".encode()) <= 255


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    """One field hostile, the others valid: most examples then reach the accepted path too."""
    field = draw(st.sampled_from(sorted(VALID)))
    value = draw(hostile(VALID[field]))
    assume(field != "producer" or folder_name_ok(value))
    return field, {**VALID, field: value}


def snapshot(base: Path) -> set[Path]:
    return {Path(d, n) for d, ds, fs in os.walk(base) for n in ds + fs}


def outside(paths: set[Path], allowed: tuple[Path, ...]) -> list[Path]:
    """The paths that are neither inside an allowed folder nor one of its parents."""
    return sorted(p for p in paths if not any(p == a or a in p.parents or p in a.parents for a in allowed))


RENDERED_NAMES = {"addresses.json", "droplets.tf", "databases.tf", "firewalls.tf", "outputs.tf",
                  "providers.tf", "versions.tf", "imports.tf"}  # fmt: skip


@settings(
    max_examples=120,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@example(("producer", {**VALID, "producer": ""}))
@example(("producer", {**VALID, "producer": ".."}))
@example(("producer", {**VALID, "producer": "ab\n"}))
@example(("project", {**VALID, "project": '${path.module}"\n%{ if true }'}))
@example(("service", {**VALID, "service": ""}))
@example(("host", {**VALID, "host": "dns\n"}))
@example(("db_name", {**VALID, "db_name": "abc\n"}))
@example(("cluster", {**VALID, "cluster": "${x}"}))
@given(cases())
def test_every_name_is_a_located_error_or_reaches_terraform_and_the_mesh_exactly(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[str, dict[str, str]]
) -> None:
    field, f = case
    base = tmp_path_factory.mktemp("names")
    root, out, state = base / "tree", base / "out", base / "state"
    write_manifests(root, f)
    before, top_before = snapshot(base), set(os.listdir("/"))
    try:
        v = require_valid(root, None, None, lambda _: None)
    except ValidationFailed as exc:
        event(f"{field}: located error")
        assert_located([p for p in exc.problems if p.level == "error"], where(field, f))
        assert snapshot(base) == before
        return
    event(f"{field}: accepted")
    working_copy = render_and_prepare(root, out, state, v)
    assert_exact(out / f["producer"], f)
    # The producer's folder under --out, its working copy (and lock), the state dir's cache, and the
    # lock of the producer in its account (one run per producer and account on a machine).
    lock = Path(f"{working_copy}.lock")
    allowed = (out / f["producer"], working_copy, lock, state / "cache", state / "locks")
    assert outside(snapshot(base) - before, allowed) == []
    assert not (set(os.listdir("/")) - top_before) & RENDERED_NAMES


def assert_located(errors: list[Problem], path: str) -> None:
    assert errors
    for p in errors:
        assert p.path and p.line >= 1 and p.col >= 1, p
        assert "\n" not in p.format() and "\r" not in p.format(), p
    assert any(p.path == path for p in errors), (path, errors)


def render_and_prepare(root: Path, out: Path, state: Path, v: Any) -> Path:
    """What `render` and `plan` write before Terraform runs: out/<p>/ and the working copy."""
    model = build_model(v)
    rendered = render_model(model, out)
    # Checked before writing: with an empty producer name the files would go to /<name>.
    assert all(r.producer for r in rendered), "an empty producer name passed validation"
    write(rendered, out)
    env = {
        "INFRA_APPLY_STATE_DIR": str(state),
        "DIGITALOCEAN_TOKEN": "FAKE-do-token_not-used",
        "PATH": os.environ["PATH"],
    }
    ctx = workcopy.Context(root=root, out=out, account=LiveAccount(), mesh_path=None, env=env)
    project = workcopy.Project(model, {r.producer: r for r in rendered}, False)
    [prep] = workcopy.prepare(ctx, project, [r.producer for r in rendered])
    assert prep.lock is not None
    prep.lock.release()
    return prep.copy.path


def assert_exact(folder: Path, f: dict[str, str]) -> None:
    assert folder.is_dir() and folder.name == f["producer"]
    for tf_file in folder.glob("*.tf"):  # every block label an identifier, never a manifest string
        labels = re.findall(
            r"^\s*(?:resource|data|variable|output) ([^{]*)\{", tf_file.read_text("utf-8"), re.M
        )
        for label in (x for line in labels for x in re.findall(r'"([^"]*)"', line)):
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", label), (tf_file.name, label)
    droplets = (folder / "droplets.tf").read_text("utf-8")
    assert attr(droplets, "name") == [f["droplet"]]
    assert (attr(droplets, "region"), attr(droplets, "size"), attr(droplets, "image")) == (
        [f["region"]], [f["size"]], [f["image"]],
    )  # fmt: skip
    [tags] = attr_list(droplets, "tags")
    assert sorted(tags) == sorted(
        ["managed-by:infra-apply", f"producer:{f['producer']}", f"role:{f['role']}"]
    )
    outputs = (folder / "outputs.tf").read_text("utf-8")
    [hosts] = attr_list(outputs, "hosts")
    assert hosts == [f["host"]] and attr(outputs, "producer") == [f["producer"]]
    databases = (folder / "databases.tf").read_text("utf-8")
    assert attr(databases, "name") == [f["cluster"], f["db_name"], f["db_user"]]
    assert comments(databases) == [f["project"]]
    ledger = json.loads((folder / "addresses.json").read_text("utf-8"))
    [entry] = ledger["droplets"].values()
    assert (entry["name"], entry["hosts"], entry["services"]) == (f["droplet"], [f["host"]], [f["service"]])
    # The output register reads, as Terraform would report it from these literals.
    output = {
        f["droplet"]: {
            "id": "1",
            "ipv4_address": "192.0.2.1",
            "ipv4_address_private": "10.0.0.1",
            "region": f["region"],
            "hosts": hosts,
            "producer": attr(outputs, "producer")[0],
        }
    }
    doc = {"network": "10.9.0.0/24", "hosts": {}}
    registered = plan_registration(doc, f["producer"], live_droplets_from_output(output)).document
    assert list(registered["hosts"]) == [f["host"]]
    entry = registered["hosts"][f["host"]]
    assert (entry["droplet"], entry["producer"]) == (f["droplet"], f["producer"])


# --- the decoding the property relies on is Terraform's own ------------------------------------

SAMPLES = [
    "plain", "a\nb\r\tc", "${path.module}", "$${x}", "$$", "%{ if true }x%{ endif }", "%%{x}",
    '"quoted" \\ back', "\x00\x1b\x7f\x85", "\u2028\u2029\ufeff\u202e", "é€😀", "", "a$", "$", "$$${x}",
]  # fmt: skip


def test_hcl_decode_agrees_with_terraform(tmp_path: Path) -> None:
    module = "".join(f'output "v{i}" {{\n  value = {hcl_string(s)}\n}}\n' for i, s in enumerate(SAMPLES))
    (tmp_path / "main.tf").write_text(module, "utf-8")
    env = {**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null", "CHECKPOINT_DISABLE": "1"}

    def terraform(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["terraform", f"-chdir={tmp_path}", *args], capture_output=True, text=True, env=env
        )

    assert terraform("init", "-input=false").returncode == 0
    applied = terraform("apply", "-input=false", "-auto-approve")
    assert applied.returncode == 0, applied.stderr
    values = json.loads(terraform("output", "-json").stdout)
    assert [values[f"v{i}"]["value"] for i in range(len(SAMPLES))] == SAMPLES
    assert [hcl_decode(hcl_string(s)) for s in SAMPLES] == SAMPLES
