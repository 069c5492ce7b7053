"""Every convention rule: a tree that violates it and one that passes, with id, level, location."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from infra_apply.errors import Problem
from infra_apply.manifests.rules import RULES
from infra_apply.manifests.validate import validate_tree
from tests.conftest import CONFIG, base_tree, droplet, producer_root, project, write_tree

MESH = {
    "network": "10.9.0.0/24",
    "hosts": {
        "fennel": {"mesh_ip": "10.9.0.2", "provider": "mac"},
        "forge": {"mesh_ip": "10.9.0.6", "droplet": "com.uvlava.quinn.artifacts"},
    },
    "services": {},
}


CLUSTER = '[clusters."pg"]\ntrusted_sources = "managed"\nowner = "{owner}"\n'
MESH_ONLY = '[droplets]\nssh_keys = ["ops"]\n[firewall]\nssh_from = "mesh"\n'


def problems(tmp_path: Path, files: dict[str, Any], *, mesh: bool = True) -> list[Problem]:
    write_tree(tmp_path / "root", files)
    mesh_path = None
    if mesh:
        mesh_path = tmp_path / "mesh-hosts.json"
        mesh_path.write_text(json.dumps(MESH))
    return list(validate_tree(tmp_path / "root", mesh_path).problems)


def with_(tree: dict[str, Any], **files: Any) -> dict[str, Any]:
    out = copy.deepcopy(tree)
    out.update({k.replace("__", "/").replace("DOT", "."): v for k, v in files.items()})
    return out


def test_base_tree_is_clean(tmp_path: Path) -> None:
    assert problems(tmp_path, base_tree()) == []


def db(cluster: str, name: str, user: str) -> dict[str, str]:
    return {"cluster": cluster, "name": name, "user": user}


# (rule, level, path of the expected problem, line, violating tree, passing tree)
CASES: list[tuple[str, str, str, dict[str, Any], dict[str, Any]]] = [
    (
        "own_db",
        "error",
        "@ct/b/.infra.yaml",
        {
            **base_tree(),
            "@ct/a/.infra.yaml": project("a", database=db("pg", "a", "shared")),
            "@ct/b/.infra.yaml": project("b", database=db("pg", "b", "shared")),
        },
        {
            **base_tree(),
            "@ct/a/.infra.yaml": project("a", database=db("pg", "a", "a_app")),
            "@ct/b/.infra.yaml": project("b", database=db("pg", "b", "b_app")),
        },
    ),
    (
        "http_coupling",
        "error",
        "@ct/b/.infra.yaml",
        {
            **base_tree(),
            "@ct/a/.infra.yaml": project("a", database=db("pg", "same", "a_app")),
            "@ct/b/.infra.yaml": project("b", database=db("pg", "same", "b_app")),
        },
        {
            **base_tree(),
            "@ct/a/.infra.yaml": project("a", database=db("pg", "a", "a_app")),
            "@ct/b/.infra.yaml": project("b", database=db("other-pg", "a", "a_app2")),
        },
    ),
    (
        "gpu_ondemand",
        "warning",
        "@ct/app/.infra.yaml",
        {
            **base_tree(),
            "@ct/app/.infra.yaml": project("app", service={"gpu": {"droplet": "com.uvlava.ct.gpu"}}),
        },
        {**base_tree(), "@ct/app/.infra.yaml": project("app", service={"gpu": {"mode": "on-demand"}})},
    ),
    (
        "cloud_provider",
        "error",
        "@ct/.infra.yaml",
        {
            **base_tree(),
            "@ct/.infra.yaml": producer_root(
                "ct", droplet("com.uvlava.ct.services", ["lime"], region="sfo3")
            ),
        },
        {
            **base_tree(),
            "@ct/.infra.yaml": producer_root(
                "ct", droplet("com.uvlava.ct.services", ["lime"], region="fra1")
            ),
        },
    ),
    (
        "droplet_naming",
        "error",
        "@ct/.infra.yaml",
        {**base_tree(), "@ct/.infra.yaml": producer_root("ct", droplet("com.uvlava.mc.services", ["lime"]))},
        {**base_tree(), "@ct/.infra.yaml": producer_root("ct", droplet("com.uvlava.ct.services", ["lime"]))},
    ),
    (
        "host_in_mesh",
        "error",
        "@ct/app/.infra.yaml",
        {**base_tree(), "@ct/app/.infra.yaml": project("app", service={"host": "nowhere"})},
        {**base_tree(), "@ct/app/.infra.yaml": project("app", service={"host": "fennel"})},
    ),
    (
        "shared_infra_topology",
        "warning",
        "@ct/.infra.yaml",
        {
            **base_tree(),
            "@ct/.infra.yaml": producer_root(
                "ct",
                droplet(
                    "com.uvlava.ct.services",
                    ["lime"],
                    {"name": "a", "kind": "api"},
                    {"name": "b", "kind": "api"},
                ),
            ),
        },
        {
            **base_tree(),
            "@ct/.infra.yaml": producer_root(
                "ct",
                droplet(
                    "com.uvlava.ct.services",
                    ["lime"],
                    {"name": "a", "kind": "api", "producer": "ct"},
                    {"name": "b", "kind": "api", "producer": "ct"},
                ),
            ),
        },
    ),
    (
        "env_variants",
        "warning",
        "@ct/app/.infra.dev.yaml",
        {
            **base_tree(),
            "@ct/app/.infra.dev.yaml": {"apiVersion": "infra/v1", "project": "app", "provider": "mac"},
        },
        {
            **base_tree(),
            "@ct/app/.infra.dev.yaml": {
                "apiVersion": "infra/v1",
                "project": "app",
                "provider": "mac",
                "environment": "dev",
            },
        },
    ),
    (
        "manage_apps_orchestrator",
        "warning",
        "@ct/app/app.manifest.yaml",
        {**base_tree(), "@ct/app/app.manifest.yaml": "name: app\n"},
        base_tree(),
    ),
    (
        "systemd_supervision",
        "error",
        "@ct/app/.infra.yaml",
        {
            **base_tree(),
            "@ct/app/.infra.yaml": {
                "apiVersion": "infra/v1",
                "project": "app",
                "provider": "digitalocean",
                "service": {"host": "lime", "port": 1},
            },
        },
        {
            **base_tree(),
            "@ct/app/.infra.yaml": {
                "apiVersion": "infra/v1",
                "project": "app",
                "provider": "mac",
                "service": {"host": "fennel", "port": 1},
            },
        },
    ),
    (
        "mesh_host_resolution",
        "warning",
        "@ct/app/.infra.yaml",
        {**base_tree(), "@ct/app/.infra.yaml": project("app", service={"host": "10.9.0.5"})},
        {**base_tree(), "@ct/app/.infra.yaml": project("app", service={"host": "lime"})},
    ),
    (
        "ssh_access",
        "warning",
        "@ct/.infra.yaml",
        {**base_tree(), "infra-apply.toml": "[droplets]\nmonitoring = true\n"},
        base_tree(),
    ),
    (
        "ssh_access",  # the producer's override takes the default's keys away
        "warning",
        "@ct/.infra.yaml",
        {**base_tree(), "infra-apply.toml": CONFIG + "[producers.ct.droplets]\nssh_keys = []\n"},
        {**base_tree(), "infra-apply.toml": CONFIG + '[producers.ct.droplets]\nssh_keys = ["ct"]\n'},
    ),
    (
        "ssh_access",  # an on-demand GPU droplet is created with keys too
        "warning",
        "@ct/app/.infra.yaml",
        {
            **base_tree(),
            "infra-apply.toml": '[producers.mc.droplets]\nssh_keys = ["mc"]\n',
            "@ct/.infra.yaml": producer_root("ct"),
            "@ct/app/.infra.yaml": project("app", service={"host": "lime", "gpu": {"mode": "on-demand"}}),
            "@mc/.infra.yaml": producer_root("mc", droplet("com.uvlava.mc.services", ["lime"])),
        },
        {
            **base_tree(),
            "@ct/.infra.yaml": producer_root("ct"),
            "@ct/app/.infra.yaml": project("app", service={"host": "lime", "gpu": {"mode": "on-demand"}}),
            "@mc/.infra.yaml": producer_root("mc", droplet("com.uvlava.mc.services", ["lime"])),
        },
    ),
    (
        "config",
        "warning",
        "infra-apply.toml",
        {**base_tree(), "infra-apply.toml": CONFIG + '[producers.cta.droplets]\nssh_keys = ["ct"]\n'},
        {**base_tree(), "infra-apply.toml": CONFIG + '[producers.ct.droplets]\nssh_keys = ["ct"]\n'},
    ),
    (
        "do_limits",
        "error",
        "@ct/.infra.yaml",
        {
            **base_tree(),
            "@ct/.infra.yaml": producer_root(
                "ct", droplet("com.uvlava.ct.services", ["lime"], role="app server")
            ),
        },
        {
            **base_tree(),
            "@ct/.infra.yaml": producer_root(
                "ct", droplet("com.uvlava.ct.services", ["lime"], role="app-server")
            ),
        },
    ),
    (
        "public_ssh",
        "warning",
        "@ct/.infra.yaml",
        {**base_tree(), "infra-apply.toml": '[droplets]\nssh_keys = ["ops"]\n'},
        base_tree(),
    ),
    (
        "ssh_bootstrap",
        "error",
        "@ct/.infra.yaml",
        {**base_tree(), "infra-apply.toml": MESH_ONLY},
        {**base_tree(), "infra-apply.toml": MESH_ONLY + 'bootstrap_from = ["203.0.113.4/32"]\n'},
    ),
    (
        "cluster_owner",
        "error",
        "infra-apply.toml",
        {**base_tree(), "infra-apply.toml": CONFIG + CLUSTER.format(owner="qinn")},
        {**base_tree(), "infra-apply.toml": CONFIG + CLUSTER.format(owner="ct")},
    ),
]


def test_every_registered_rule_has_a_case() -> None:
    assert {c[0] for c in CASES} == set(RULES)


@pytest.mark.parametrize(("rule", "level", "path", "bad", "good"), CASES, ids=[c[0] for c in CASES])
def test_rule_violating_and_passing(
    tmp_path: Path, rule: str, level: str, path: str, bad: dict[str, Any], good: dict[str, Any]
) -> None:
    found = [p for p in problems(tmp_path / "bad", bad) if p.rule == rule]
    assert found, f"{rule} not reported"
    assert all(p.line >= 1 and p.col >= 1 for p in found)
    assert any(p.path == path and p.level == level for p in found), found
    assert [p for p in problems(tmp_path / "good", good) if p.rule == rule] == []


def test_problem_is_located_at_the_offending_node(tmp_path: Path) -> None:
    tree = with_(
        base_tree(),
        **{
            "@ct__.infraDOTyaml": (
                "apiVersion: infra/v1\nproject: ct-infra\nprovider: digitalocean\ndroplets:\n"
                "  - name: com.uvlava.ct.services\n    region: sfo3\n    hosts: [lime]\n"
                "    services: [{name: a, kind: api}]\n"
            )
        },
    )
    [p] = [p for p in problems(tmp_path, tree) if p.rule == "cloud_provider"]
    assert (p.line, p.col) == (6, 13)
    assert p.format().startswith("@ct/.infra.yaml:6:13: error cloud_provider: region 'sfo3'")


def test_droplet_declared_twice(tmp_path: Path) -> None:
    tree = {
        **base_tree(),
        "@ct/extra/.infra.yaml": producer_root("ct", droplet("com.uvlava.ct.services", ["lime2"])),
    }
    msgs = [p.message for p in problems(tmp_path, tree) if p.rule == "droplet_naming"]
    assert any("already declared at @ct/.infra.yaml:" in m for m in msgs)


def test_mesh_host_declared_twice(tmp_path: Path) -> None:
    tree = {
        **base_tree(),
        "@ct/.infra.yaml": producer_root(
            "ct", droplet("com.uvlava.ct.services", ["lime"]), droplet("com.uvlava.ct.other", ["lime"])
        ),
    }
    msgs = [p.message for p in problems(tmp_path, tree) if p.rule == "host_in_mesh"]
    assert any("already declared by droplet 'com.uvlava.ct.services'" in m for m in msgs)


def test_droplet_host_registered_for_another_machine(tmp_path: Path) -> None:
    tree = {
        **base_tree(),
        "@ct/.infra.yaml": producer_root("ct", droplet("com.uvlava.ct.services", ["lime", "forge"])),
    }
    [p] = [p for p in problems(tmp_path, tree) if p.rule == "host_in_mesh"]
    assert "already registered in mesh-hosts.json for com.uvlava.quinn.artifacts" in p.message
    # the same host on the machine it is registered for is fine
    ok = {
        "infra-apply.toml": CONFIG,
        "@quinn/.infra.yaml": producer_root("quinn", droplet("com.uvlava.quinn.artifacts", ["forge"])),
        "@quinn/app/.infra.yaml": project("app", service={"host": "forge"}),
    }
    assert problems(tmp_path / "ok", ok) == []


def test_depends_on_unknown_is_a_warning(tmp_path: Path) -> None:
    tree = {
        **base_tree(),
        "@ct/app/.infra.yaml": project("app", service={"depends_on": ["ghost", "lime-svc"]}),
    }
    found = [p for p in problems(tmp_path, tree) if p.rule == "http_coupling"]
    assert [(p.level, "ghost" in p.message) for p in found] == [("warning", True)]


def test_manifest_outside_a_producer_is_an_error(tmp_path: Path) -> None:
    tree = {**base_tree(), "misc/.infra.yaml": project("stray")}
    found = [p for p in problems(tmp_path, tree) if p.path == "misc/.infra.yaml"]
    assert [(p.level, p.rule) for p in found] == [("error", "manage_apps_orchestrator")]


def test_droplets_outside_the_producer_root_warn(tmp_path: Path) -> None:
    tree = {**base_tree(), "@ct/x/.infra.yaml": producer_root("ct", droplet("com.uvlava.ct.x", ["x"]))}
    found = [p for p in problems(tmp_path, tree) if p.rule == "shared_infra_topology"]
    assert found and found[0].path == "@ct/x/.infra.yaml"


def test_prod_manifest_saying_dev_warns(tmp_path: Path) -> None:
    tree = {**base_tree(), "@ct/app/.infra.yaml": project("app", environment="dev")}
    assert [p.rule for p in problems(tmp_path, tree)] == ["env_variants"]


def test_without_mesh_hosts_unknown_hosts_only_warn(tmp_path: Path) -> None:
    tree = {**base_tree(), "@ct/app/.infra.yaml": project("app", service={"host": "fennel"})}
    [p] = problems(tmp_path, tree, mesh=False)
    assert (p.rule, p.level) == ("host_in_mesh", "warning")


def test_gpu_droplet_name_checked(tmp_path: Path) -> None:
    tree = {
        **base_tree(),
        "@ct/app/.infra.yaml": project(
            "app", service={"gpu": {"mode": "on-demand", "droplet": "com.uvlava.mc.gpu"}}
        ),
    }
    found = [p for p in problems(tmp_path, tree) if p.rule == "droplet_naming"]
    assert found and "names producer 'mc'" in found[0].message


def test_host_registered_under_a_droplets_old_name_is_not_a_conflict(tmp_path: Path) -> None:
    """After a manifest rename the mesh still names the live droplet until `rename` runs."""
    mesh = tmp_path / "m.json"
    mesh.write_text(
        json.dumps(
            {
                "network": "10.9.0.0/24",
                "hosts": {
                    "lime": {"mesh_ip": "10.9.0.5", "droplet": "com.uvlava.ct.services", "producer": "ct"}
                },
            }
        )
    )
    tree = {**base_tree(), "@ct/.infra.yaml": producer_root("ct", droplet("com.uvlava.ct.apps", ["lime"]))}
    write_tree(tmp_path / "root", tree)
    assert list(validate_tree(tmp_path / "root", mesh).problems) == []
    other = {**base_tree(), "@mc/.infra.yaml": producer_root("mc", droplet("com.uvlava.mc.x", ["lime"]))}
    write_tree(tmp_path / "other", {k: v for k, v in other.items() if not k.startswith("@ct/.")})
    assert any(
        p.rule == "host_in_mesh" and p.level == "error"
        for p in validate_tree(tmp_path / "other", mesh).problems
    )


def test_dev_and_prod_sharing_a_database_is_an_error(tmp_path: Path) -> None:
    dev = {
        "apiVersion": "infra/v1",
        "project": "app",
        "provider": "mac",
        "environment": "dev",
        "database": db("pg", "app", "app_user"),
    }
    tree = {
        **base_tree(),
        "@ct/app/.infra.yaml": project("app", database=db("pg", "app", "app_user")),
        "@ct/app/.infra.dev.yaml": dev,
    }
    found = {(p.rule, p.path) for p in problems(tmp_path, tree) if p.level == "error"}
    assert found == {("own_db", "@ct/app/.infra.yaml"), ("http_coupling", "@ct/app/.infra.yaml")}


def test_moving_a_host_to_another_current_droplet_is_a_conflict(tmp_path: Path) -> None:
    mesh = tmp_path / "m.json"
    mesh.write_text(
        json.dumps(
            {
                "network": "10.9.0.0/24",
                "hosts": {
                    "lime": {"mesh_ip": "10.9.0.5", "droplet": "com.uvlava.ct.services", "producer": "ct"}
                },
            }
        )
    )
    tree = {
        **base_tree(),
        "@ct/.infra.yaml": producer_root(
            "ct", droplet("com.uvlava.ct.services", ["other"]), droplet("com.uvlava.ct.apps", ["lime"])
        ),
    }
    write_tree(tmp_path / "root", tree)
    found = [p for p in validate_tree(tmp_path / "root", mesh).problems if p.rule == "host_in_mesh"]
    assert found and "com.uvlava.ct.services" in found[0].message


def test_an_unreadable_folder_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    write_tree(tmp_path / "root", {**base_tree(), "@ct/secret/.infra.yaml": project("s")})
    real = os.scandir

    def scandir(path: str) -> object:
        if str(path).endswith("secret"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr("infra_apply.manifests.discover.os.scandir", scandir)
    [p] = validate_tree(tmp_path / "root").problems
    assert (p.path, p.level, p.rule) == ("@ct/secret", "error", "manage_apps_orchestrator")
