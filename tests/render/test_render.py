"""Rendering: golden files of the example tree, one test per template, the address ledger.

The golden files are the committed ``generated/`` folder itself (CI also runs
``render --check`` on it); after an intended template change refresh them with ``make golden``
(``infra-apply --root examples/producer-tree render``) and review the diff.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra_apply.errors import InfraApplyError
from infra_apply.manifests.build import build_model
from infra_apply.manifests.model import Droplet, ProducerModel, Service
from infra_apply.manifests.validate import validate_tree
from infra_apply.render.module import Ledger, assign_addresses, parse_ledger, render_model, render_producer
from infra_apply.render.output import compare, write
from tests.conftest import (
    CONFIG,
    EXAMPLE_MESH,
    EXAMPLE_TREE,
    REPO,
    base_tree,
    droplet,
    producer_root,
    project,
    run_cli,
    write_tree,
)

GOLDEN = REPO / "generated"


def render_tree(root: Path, ledger_dir: Path, mesh: Path | None = None) -> dict[str, dict[str, str]]:
    v = validate_tree(root, mesh)
    assert not v.errors, v.errors
    return {r.producer: dict(r.files) for r in render_model(build_model(v), ledger_dir)}


def test_example_tree_matches_golden_files(tmp_path: Path) -> None:
    """A fresh render (no ledger yet) of the example tree is byte for byte the golden files."""
    rendered = render_tree(EXAMPLE_TREE, tmp_path, EXAMPLE_MESH)
    expected = {
        p.name: {f.relative_to(p).as_posix(): f.read_text("utf-8") for f in p.rglob("*") if f.is_file()}
        for p in GOLDEN.iterdir()
        if p.is_dir()
    }
    assert rendered == expected


def test_render_is_byte_identical_across_runs(tmp_path: Path) -> None:
    assert render_tree(EXAMPLE_TREE, tmp_path) == render_tree(EXAMPLE_TREE, tmp_path)


def test_generated_matches_the_example_tree() -> None:
    result = run_cli("--root", str(EXAMPLE_TREE), "render", "--check", "--out", str(REPO / "generated"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_hcl_is_terraform_fmt_clean(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write([r for r in render_model(build_model(validate_tree(EXAMPLE_TREE)), out)], out)
    check = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null"},
    )
    assert check.returncode == 0, check.stdout


# --- per template ----------------------------------------------------------------------------


def producer(*droplets: Droplet, **kw: Any) -> ProducerModel:
    return ProducerModel("ct", droplets=droplets, **kw)


def web() -> Droplet:
    return Droplet(
        "com.uvlava.ct.edge",
        "ct",
        "@ct/.infra.yaml",
        hosts=("edge",),
        role="edge",
        services=(Service("proxy", "reverse-proxy", port=443), Service("api", "api", port=8080)),
    )


def test_droplet_template_has_lifecycle_tags_and_no_secrets() -> None:
    files = render_producer(producer(web()), Ledger()).files
    tf = files["droplets.tf"]
    assert 'resource "digitalocean_droplet" "ct_edge"' in tf
    assert 'tags   = ["managed-by:infra-apply", "producer:ct", "role:edge"]' in tf
    assert "ignore_changes = [name, ssh_keys, user_data, monitoring, vpc_uuid]" in tf
    assert "token" not in "".join(files.values()).replace("DIGITALOCEAN_TOKEN", "")
    assert files["versions.tf"].count('source  = "digitalocean/digitalocean"') == 1
    assert 'version = "~> 2.99"' in files["versions.tf"]


def test_firewall_opens_only_ssh_wireguard_and_web_for_a_reverse_proxy() -> None:
    fw = render_producer(producer(web()), Ledger()).files["firewalls.tf"]
    inbound = [block for block in fw.split("inbound_rule")[1:]]
    ports = sorted(b.split('port_range       = "')[1].split('"')[0] for b in inbound)
    assert ports == ["22", "443", "51820", "80"]
    assert "8080" not in fw


def test_firewall_for_dns_and_plain_droplets() -> None:
    dns = Droplet("com.uvlava.dns", "quinn", "s", services=(Service("ns", "dns", port=53),))
    plain = Droplet("com.uvlava.quinn.mcp", "quinn", "s", services=(Service("mcp", "mcp", port=8800),))
    fw = render_producer(ProducerModel("quinn", droplets=(dns, plain)), Ledger()).files["firewalls.tf"]
    dns_part, plain_part = fw.split('resource "digitalocean_firewall" "quinn_mcp"')
    assert dns_part.count('port_range       = "53"') == 2
    assert '"53"' not in plain_part and '"80"' not in plain_part and '"8800"' not in fw


def test_gpu_droplets_are_off_by_default() -> None:
    gpu = Droplet(
        "com.uvlava.ct.gpu",
        "ct",
        "@ct/a/.infra.yaml",
        gpu=True,
        role="gpu",
        also_declared_in=("@ct/b/.infra.yaml",),
    )
    files = render_producer(producer(gpu), Ledger()).files
    assert "droplets.tf" not in files
    assert "count = var.gpu_ct_gpu ? 1 : 0" in files["gpu.tf"]
    assert "default     = false" in files["gpu.tf"]
    assert '# source: "@ct/b/.infra.yaml"' in files["gpu.tf"]
    assert "digitalocean_droplet.ct_gpu[*].id" in files["firewalls.tf"]


def test_databases_are_data_sourced_clusters_with_own_db_and_user() -> None:
    from infra_apply.manifests.model import Database

    dbs = (Database("uvlava-pg", "ledger", "ledger_app", "ledger-api", "prod", "ct", "@ct/l/.infra.yaml"),)
    tf = render_producer(producer(databases=dbs), Ledger()).files["databases.tf"]
    assert 'data "digitalocean_database_cluster" "uvlava-pg"' in tf
    assert 'resource "digitalocean_database_db" "uvlava-pg__ledger"' in tf
    assert 'resource "digitalocean_database_user" "uvlava-pg__ledger_app"' in tf
    assert "cluster_id = data.digitalocean_database_cluster.uvlava-pg.id" in tf


def test_only_needed_files_and_headers_name_sources() -> None:
    files = render_producer(producer(web()), Ledger()).files
    assert sorted(files) == [
        "addresses.json",
        "droplets.tf",
        "firewalls.tf",
        "outputs.tf",
        "providers.tf",
        "versions.tf",
    ]
    for name, text in files.items():
        if name.endswith(".tf"):
            assert text.startswith("# Generated by infra-apply")
            assert '# source: "@ct/.infra.yaml"' in text


def test_outputs_are_keyed_by_live_name() -> None:
    out = render_producer(producer(web()), Ledger()).files["outputs.tf"]
    assert "{ (digitalocean_droplet.ct_edge.name) = {" in out
    assert 'hosts                = ["edge"]' in out


@pytest.mark.parametrize(
    ("ledger", "problem"),
    [
        ('{"droplets": {"a": {"name": "x", "moved_from": ["a b\\"}"]}}}', "is not a Terraform resource name"),
        ('{"droplets": {"a b": {"name": "x"}}}', "is not a Terraform resource name"),
        ('{"droplets": {"a": {"name": "x"}, "b": {"name": "x"}}}', "has two addresses"),
        ('{"droplets": {"a": {"name": "x", "hosts": "forge"}}}', "must be lists of strings"),
        ('{"droplets": {"a": {"name": "x"}, "b": {"name": "y", "moved_from": ["a"]}}}', "a current address"),
        ('{"droplets": []}', "not valid"),
        ("not json", "not valid"),
    ],
)
def test_a_damaged_ledger_is_a_located_error(ledger: str, problem: str) -> None:
    from infra_apply.errors import InfraApplyError

    with pytest.raises(InfraApplyError) as exc:
        parse_ledger(ledger, "generated/ct/addresses.json")
    assert problem in exc.value.message
    assert exc.value.format().startswith("generated/ct/addresses.json:1:1: error ledger: ")


def test_an_address_written_twice_in_the_ledger_is_refused_where_it_is() -> None:
    """json.loads kept the last of two entries: the other droplet lost its address (a replace)."""
    from infra_apply.errors import InfraApplyError

    text = '{"droplets": {\n  "a": {"name": "x"},\n  "a": {"name": "y"}\n}}'
    with pytest.raises(InfraApplyError) as exc:
        parse_ledger(text, "generated/ct/addresses.json")
    assert exc.value.format() == (
        "generated/ct/addresses.json:3:3: error ledger: the address ledger has the key 'a' twice in the "
        "object at droplets (first on line 2); remove one of them"
    )


def test_moved_blocks_from_the_ledger() -> None:
    ledger = parse_ledger(
        '{"droplets": {"ct_front": {"name": "com.uvlava.ct.edge", "moved_from": ["ct_edge"]}}}', "x"
    )
    files = render_producer(producer(web()), ledger).files
    assert "from = digitalocean_droplet.ct_edge\n  to   = digitalocean_droplet.ct_front" in files["moved.tf"]
    assert "from = digitalocean_firewall.ct_edge" in files["moved.tf"]
    assert 'resource "digitalocean_droplet" "ct_front"' in files["droplets.tf"]


# --- addresses -------------------------------------------------------------------------------


def droplet_model(name: str, hosts: tuple[str, ...] = ("h",), source: str = "@ct/.infra.yaml") -> Droplet:
    return Droplet(name, "ct", source, hosts=hosts, services=(Service("s-" + hosts[0], "api"),))


def test_a_renamed_droplet_keeps_its_address() -> None:
    first = assign_addresses([droplet_model("com.uvlava.ct.box", ("box",))], Ledger())
    renamed = assign_addresses([droplet_model("com.uvlava.ct.crate", ("box",))], first)
    assert [e.address for e in renamed.entries] == ["ct_box"]
    assert renamed.entries[0].name == "com.uvlava.ct.crate"


def test_rename_with_new_hosts_still_matches_on_services() -> None:
    first = assign_addresses([droplet_model("com.uvlava.ct.box", ("box",))], Ledger())
    d = Droplet(
        "com.uvlava.ct.crate", "ct", "@ct/.infra.yaml", hosts=("crate",), services=(Service("s-box", "api"),)
    )
    assert [e.address for e in assign_addresses([d], first).entries] == ["ct_box"]


def test_a_new_droplet_never_reuses_a_vanished_address() -> None:
    first = assign_addresses([droplet_model("com.uvlava.ct.box", ("box",))], Ledger())
    other = assign_addresses(
        [droplet_model("com.uvlava.ct-box", ("other",), source="@ct/x/.infra.yaml")], first
    )
    assert [e.address for e in other.entries] == ["ct-box"]
    clash = Droplet("com.uvlava.ct-box", "ct", "@ct/z.yaml", hosts=("zz",))
    again = assign_addresses(
        [droplet_model("com.uvlava.ct.box", ("box",)), clash],
        assign_addresses([droplet_model("com.uvlava.ct.box", ("box",))], Ledger()),
    )
    assert {e.name: e.address for e in again.entries}["com.uvlava.ct.box"] == "ct_box"


def test_ambiguous_rename_is_not_guessed() -> None:
    a, b = droplet_model("com.uvlava.ct.a", ("h",)), droplet_model("com.uvlava.ct.b", ("h",))
    first = assign_addresses([a], Ledger())
    both = assign_addresses(
        [droplet_model("com.uvlava.ct.c", ("h",)), droplet_model("com.uvlava.ct.d", ("h",))], first
    )
    assert "ct_a" not in {e.address for e in both.entries}
    assert b.name not in {e.name for e in both.entries}


def test_name_edit_in_manifest_keeps_every_address(tmp_path: Path) -> None:
    tree = {
        **base_tree(),
        "@ct/.infra.yaml": producer_root("ct", droplet("com.uvlava.ct.services", ["lime"])),
    }
    root = write_tree(tmp_path / "root", tree)
    out = tmp_path / "out"
    write(render_model(build_model(validate_tree(root)), out), out)
    before = (out / "ct" / "droplets.tf").read_text()
    (root / "@ct/.infra.yaml").write_text(
        (root / "@ct/.infra.yaml").read_text().replace("ct.services", "ct.apps")
    )
    rendered = render_model(build_model(validate_tree(root)), out)
    after = rendered[0].files["droplets.tf"]
    assert 'resource "digitalocean_droplet" "ct_services"' in before
    assert 'resource "digitalocean_droplet" "ct_services"' in after
    assert re.search(r'\n  name +\= "com\.uvlava\.ct\.apps"\n', after)


def test_check_reports_stale_missing_and_extra_files(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", {**base_tree(), "@ct/app/.infra.yaml": project("app")})
    out = tmp_path / "out"
    rendered = render_model(build_model(validate_tree(root)), out)
    assert compare(rendered, out).stale  # nothing written yet
    write(rendered, out)
    assert compare(rendered, out) == compare(rendered, out)
    assert not compare(rendered, out).stale and not compare(rendered, out).extra
    (out / "ct" / "droplets.tf").write_text("# hand edit\n")
    (out / "ct" / "old.tf").write_text("# Generated by infra-apply from ...\n")
    (out / "ct" / "imports.tf").write_text("# Generated by infra-apply\n")
    (out / "ct" / "hand.tf").write_text('resource "x" "y" {}\n')
    (out / "legacy").mkdir()
    (out / "legacy" / "main.tf").write_text('resource "x" "y" {}\n')
    drift = compare(rendered, out)
    assert drift.stale == ("ct/droplets.tf",) and drift.extra == ("ct/old.tf",)
    write(rendered, out)
    assert (out / "ct" / "hand.tf").is_file() and (out / "legacy" / "main.tf").is_file()
    assert (out / "ct" / "imports.tf").is_file() and not (out / "ct" / "old.tf").exists()


def test_render_check_cli_writes_nothing_and_exits_1(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", base_tree())
    out = tmp_path / "out"
    result = run_cli("--root", str(root), "render", "--check", "--out", str(out))
    assert result.returncode == 1
    assert f"{out}/ct/droplets.tf: stale or missing" in result.stdout
    assert not out.exists()
    assert run_cli("--root", str(root), "render", "--out", str(out)).returncode == 0
    assert run_cli("--root", str(root), "render", "--check", "--out", str(out)).returncode == 0


# --- infra-apply.toml: SSH keys, monitoring, user data -----------------------------------------


def _rendered(tmp_path: Path, toml: str, **files: Any) -> dict[str, dict[str, str]]:
    tree = {
        **base_tree(),
        "infra-apply.toml": toml,
        "@mc/.infra.yaml": producer_root("mc", droplet("com.uvlava.mc.services", ["mint"])),
        **files,
    }
    return render_tree(write_tree(tmp_path / "root", tree), tmp_path / "out")


def test_a_droplet_hosting_a_database_project_of_any_producer_is_created_in_its_clusters_vpc(
    tmp_path: Path,
) -> None:
    # mc's shop runs on ct's droplet (host lime); ct declares no database of its own
    shop = project("shop", database={"cluster": "main-pg", "name": "shop", "user": "shop_app"})
    out = _rendered(tmp_path, CONFIG, **{"@mc/shop/.infra.yaml": shop})
    ct, mc = out["ct"], out["mc"]
    pg = "data.digitalocean_database_cluster.main-pg"
    assert f'  vpc_uuid = {pg}.region == "nyc3" ? {pg}.private_network_uuid : null\n' in ct["droplets.tf"]
    # the cluster is looked up where the droplet is, not only where the database is declared
    assert 'data "digitalocean_database_cluster" "main-pg" {' in ct["databases.tf"]
    assert "digitalocean_database_db" not in ct["databases.tf"]
    assert '# source: "@ct/.infra.yaml"' in ct["databases.tf"]
    assert "vpc_uuid =" not in mc["droplets.tf"]  # mint hosts no database project
    assert "ignore_changes = [name, ssh_keys, user_data, monitoring, vpc_uuid]" in mc["droplets.tf"]


def test_keys_monitoring_and_user_data_reach_every_droplet_of_their_producer(tmp_path: Path) -> None:
    script = '#!/bin/sh\necho "${HOME}" %{ if x } \\\n'
    toml = (
        '[droplets]\nssh_keys = ["ops key", "${path.module}"]\nmonitoring = true\n'
        'user_data = "boot/base.sh"\n[producers.mc.droplets]\nssh_keys = ["mc"]\nuser_data = ""\n'
    )
    out = _rendered(tmp_path, toml, **{"boot/base.sh": script})
    ct, mc = out["ct"], out["mc"]
    # keys are looked up by name; names are literals, addresses their slugs
    assert 'data "digitalocean_ssh_key" "ops_key_' in ct["ssh_keys.tf"]
    assert '  name = "ops key"\n' in ct["ssh_keys.tf"] and '  name = "$${path.module}"\n' in ct["ssh_keys.tf"]
    body = ct["droplets.tf"]
    keys = r"\[data\.digitalocean_ssh_key\.ops_key_\w+\.id, data\.digitalocean_ssh_key\.path_module_\w+\.id\]"
    assert re.search(rf"\n  ssh_keys   = {keys}\n", body)
    assert "  monitoring = true\n" in body
    assert '  user_data = file("${path.module}/user-data/base.sh")\n' in body
    assert "ignore_changes = [name, ssh_keys, user_data, monitoring, vpc_uuid]" in body
    # the user data ships byte for byte beside the module, never inside the HCL
    assert ct["user-data/base.sh"] == script
    assert "HOME" not in "".join(text for name, text in ct.items() if name.endswith(".tf"))
    # mc overrides the keys and turns user data off, keeping monitoring
    assert 'name = "mc"' in mc["ssh_keys.tf"] and "ops key" not in mc["ssh_keys.tf"]
    assert "user_data =" not in mc["droplets.tf"] and "  monitoring = true\n" in mc["droplets.tf"]
    assert not any(name.startswith("user-data/") for name in mc)


def test_user_data_files_sharing_a_name_get_distinct_ones(tmp_path: Path) -> None:
    toml = '[droplets]\nuser_data = "a/base.yaml"\n[producers.ct.droplets]\nuser_data = "b/base.yaml"\n'
    files = {"a/base.yaml": "#cloud-config\na: 1\n", "b/base.yaml": "#cloud-config\nb: 2\n"}
    out = _rendered(tmp_path, toml, **files)
    assert out["ct"]["user-data/base.yaml"] == files["b/base.yaml"]  # one per producer: its own name
    tree = {
        **base_tree(),
        "infra-apply.toml": '[droplets]\nssh_keys = ["k"]\nuser_data = "a/base.yaml"\n',
        "@ct/.infra.yaml": producer_root("ct", droplet("com.uvlava.ct.services", ["lime"])),
        **files,
    }
    root = write_tree(tmp_path / "two", tree)
    v = validate_tree(root)
    model = build_model(v)
    from dataclasses import replace

    from infra_apply.manifests.config import Where, read_user_data

    other = read_user_data(root, "b/base.yaml", Where("infra-apply.toml", 1, 1))
    ct = model.producers[0]
    second = replace(ct.droplets[0], name="com.uvlava.ct.b", user_data=other)
    both = replace(ct, droplets=(ct.droplets[0], second))
    files_out = render_producer(both, Ledger()).files
    named = sorted(n for n in files_out if n.startswith("user-data/"))
    assert len(named) == 2 and all(n.startswith("user-data/base-") and n.endswith(".yaml") for n in named)
    assert {files_out[n] for n in named} == set(files.values())


def test_without_a_configuration_droplets_render_as_before(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", {k: v for k, v in base_tree().items() if k != "infra-apply.toml"})
    [ct] = render_model(build_model(validate_tree(root)), tmp_path / "out")
    assert "ssh_keys.tf" not in ct.files
    body = ct.files["droplets.tf"].split("lifecycle")[0]
    assert "ssh_keys" not in body and "monitoring" not in body and "user_data" not in body


def test_render_removes_user_data_no_longer_used_and_leaves_no_empty_folder(tmp_path: Path) -> None:
    toml = '[droplets]\nssh_keys = ["k"]\nuser_data = "u.yaml"\n'
    tree = {**base_tree(), "infra-apply.toml": toml, "u.yaml": "#cloud-config\n"}
    root = write_tree(tmp_path / "root", tree)
    out = tmp_path / "out"
    write(render_model(build_model(validate_tree(root)), out), out)
    assert (out / "ct" / "user-data" / "u.yaml").read_text() == "#cloud-config\n"
    (out / "ct" / "user-data" / "stray.yaml").write_text("x")  # the folder is render's own
    (root / "infra-apply.toml").write_text('[droplets]\nssh_keys = ["k"]\n')
    rendered = render_model(build_model(validate_tree(root)), out)
    assert compare(rendered, out).extra == ("ct/user-data/stray.yaml", "ct/user-data/u.yaml")
    write(rendered, out)
    assert not (out / "ct" / "user-data").exists() and (out / "ct" / "droplets.tf").is_file()


def test_a_user_data_folder_that_is_a_symlink_is_never_written_through(tmp_path: Path) -> None:
    toml = '[droplets]\nssh_keys = ["k"]\nuser_data = "u.yaml"\n'
    tree = {**base_tree(), "infra-apply.toml": toml, "u.yaml": "#cloud-config\n"}
    root = write_tree(tmp_path / "root", tree)
    out = tmp_path / "out"
    (out / "ct").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (out / "ct" / "user-data").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InfraApplyError, match="refusing to write"):
        write(render_model(build_model(validate_tree(root)), out), out)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_check_never_waits_on_a_fifo_or_reads_a_device_in_the_generated_tree(tmp_path: Path) -> None:
    """A committed FIFO or symlink to /dev/zero in generated/ (render --check in CI) is stale or
    foreign at once: never a hang, never gigabytes read."""
    import threading

    root = write_tree(tmp_path / "root", {**base_tree(), "@ct/app/.infra.yaml": project("app")})
    out = tmp_path / "out"
    rendered = render_model(build_model(validate_tree(root)), out)
    write(rendered, out)
    (out / "ct" / "droplets.tf").unlink()
    os.mkfifo(out / "ct" / "droplets.tf")
    os.mkfifo(out / "ct" / "pipe.tf")
    (out / "ct" / "zero.tf").symlink_to("/dev/zero")
    got: list[Any] = []
    worker = threading.Thread(target=lambda: got.append(compare(rendered, out)), daemon=True)
    worker.start()
    worker.join(timeout=30)  # returns at once when fixed; the bound is for the failure only
    assert not worker.is_alive(), "render --check blocked on a FIFO"
    assert got[0].stale == ("ct/droplets.tf",) and got[0].extra == ()


def test_templates_read_frozen_typed_entries_and_takeover_finds_databases_by_the_same_names() -> None:
    from infra_apply.kinds import DATABASE, USER
    from infra_apply.manifests.model import Database
    from infra_apply.render.module import DatabaseEntry, db_entry

    db = Database("uvlava-pg", "ledger", "ledger_app", "ledger-api", "prod", "ct", "@ct/l/.infra.yaml")
    entry = db_entry(db)
    assert isinstance(entry, DatabaseEntry)
    assert (entry.cluster_address, entry.db_address, entry.user_address) == (
        "uvlava-pg",
        "uvlava-pg__ledger",
        "uvlava-pg__ledger_app",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.db_address = "elsewhere"  # type: ignore[misc]
    # takeover, adopt and the exists check name what render renders
    names = render_producer(producer(databases=(db,)), Ledger()).names
    assert names[DATABASE.address(entry.db_address)] == "ledger"
    assert names[USER.address(entry.user_address)] == "ledger_app"
