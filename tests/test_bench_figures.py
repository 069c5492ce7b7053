"""The install-size and import-time figures of bench/run.py read what they claim to read."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import run

        yield run
    finally:
        sys.path.remove(str(REPO / "bench"))


def test_import_times_keep_top_level_entries_only(bench: ModuleType) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import json"],
        capture_output=True,
        text=True,
        check=True,
    )
    modules = bench.top_level_imports(done.stderr)
    assert modules["json"] > 0
    # json.decoder is imported by json: its time is inside json's cumulative figure.
    assert "json.decoder" not in modules
    assert "json.decoder" in done.stderr


def pyproject(tmp_path: Path, extras: str = "") -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "1"\n'
        'dependencies = ["click==8.5.1", "tf==1.2.0", "cryptography==50.0.2  ", "filelock>=4"]\n' + extras,
        "utf-8",
    )
    return tmp_path


def test_without_a_sandbox_extra_the_runtime_leaves_out_the_sandbox_packages(
    bench: ModuleType, tmp_path: Path
) -> None:
    repo = pyproject(tmp_path)
    steps = bench.install_steps(repo)
    assert steps.runtime == (("click==8.5.1", "filelock>=4"), ("--no-deps", str(repo)))
    assert steps.sandbox == ((str(repo),),)
    assert not steps.extra


def test_with_a_sandbox_extra_the_runtime_is_a_plain_install(bench: ModuleType, tmp_path: Path) -> None:
    repo = pyproject(tmp_path, '[project.optional-dependencies]\nsandbox = ["tf==1.2.0"]\n')
    steps = bench.install_steps(repo)
    assert steps.runtime == ((str(repo),),)
    assert steps.sandbox == ((f"{repo}[sandbox]",),)
    assert steps.extra


@pytest.fixture(scope="module")
def gen_tree(bench: ModuleType) -> ModuleType:
    import gen_tree

    return gen_tree


def test_the_synthetic_tree_seeds_every_cluster_its_manifests_name(
    gen_tree: ModuleType, tmp_path: Path
) -> None:
    """Otherwise every sandbox plan of it fails pre-flight and `make bench` exits 1."""
    from infra_apply.manifests import config

    params = gen_tree.Params(manifests=30, other_files=20, node_modules_files=10)
    layout = gen_tree.ensure_tree(tmp_path, params)
    named = {
        line.split(":", 1)[1].strip()
        for manifest in layout.tree.rglob(".infra*.yaml")
        for line in manifest.read_text("utf-8").splitlines()
        if line.strip().startswith("cluster:")
    }
    assert named
    assert named <= set(config.load(layout.tree, env={}).sandbox.clusters)


def test_quick_mode_is_small_and_leaves_out_the_install_sizes(bench: ModuleType) -> None:
    assert bench.QUICK_PARAMS.manifests <= 200
    assert bench.QUICK_PARAMS.other_files <= 5_000
    assert "install" in bench.QUICK_SKIPS
    assert bench.parse_args(["--quick"]).quick


def test_the_cdktf_app_is_given_the_droplets_render_writes(bench: ModuleType, tmp_path: Path) -> None:
    """The render-vs-cdktf figure compares like with like: the same 300 droplets, addresses,
    SSH keys and firewall rules on both sides."""
    from infra_apply.manifests.build import build_model
    from infra_apply.manifests.validate import validate_tree
    from infra_apply.render.module import render_model

    tree = tmp_path / "tree"
    bench.render_tree(tree)
    v = validate_tree(tree)
    assert not v.errors and not v.warnings
    rendered = {r.producer: r for r in render_model(build_model(v), tmp_path / "out")}
    spec = bench.cdktf_spec(tree)
    assert [p["name"] for p in spec["producers"]] == sorted(rendered)
    for p in spec["producers"]:
        droplets = rendered[p["name"]].files["droplets.tf"]
        assert len(p["droplets"]) == bench.RENDER_DROPLETS
        for d in p["droplets"]:
            assert f'resource "digitalocean_droplet" "{d["address"]}"' in droplets
            assert d["ssh_keys"] == ["ops-2026"] and d["monitoring"]
            assert d["inbound"] == [["udp", "51820"]]  # SSH is not public (ssh_from)
