"""The command-line contract: messages, formats, exit codes, never a traceback for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from infra_apply import cli as cli_module
from infra_apply.errors import ExitCode
from tests.conftest import EXAMPLE_MESH, EXAMPLE_TREE, base_tree, cli_env, project, run_cli, write_tree


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli_module.cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_example_tree_is_valid_and_strict_clean() -> None:
    mesh = ("--mesh-hosts", str(EXAMPLE_MESH))
    code, out, _ = invoke("--root", str(EXAMPLE_TREE), "validate", "--strict", *mesh)
    assert code == 0
    assert out.strip() == "0 error(s), 0 warning(s) in 10 manifest(s) under 3 producer(s)"


def test_every_problem_of_every_file_is_printed_then_a_summary(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            **base_tree(),
            "@ct/a/.infra.yaml": "apiVersion: infra/v2\nproject: a\nprovider: aws\n",
            "@ct/b/.infra.yaml": "project: [\n",
            "@ct/c/.infra.yaml": project("c", service={"host": "10.0.0.1"}),
        },
    )
    code, out, _ = invoke("--root", str(tmp_path), "validate")
    lines = out.strip().splitlines()
    assert code == 1
    assert "@ct/a/.infra.yaml:1:13: error schema: apiVersion: 'infra/v1' was expected" in lines
    assert any(line.startswith("@ct/a/.infra.yaml:3:11: error schema: provider:") for line in lines)
    assert any(line.startswith("@ct/b/.infra.yaml:2:1: error yaml:") for line in lines)
    assert any(
        line.startswith("@ct/c/.infra.yaml:") and "warning mesh_host_resolution" in line for line in lines
    )
    assert lines[-1].startswith("3 error(s), ")
    assert lines[-1].endswith("— invalid")


def test_strict_fails_on_warnings(tmp_path: Path) -> None:
    write_tree(tmp_path, {**base_tree(), "@ct/app/app.manifest.yaml": "x: 1\n"})
    assert invoke("--root", str(tmp_path), "validate")[0] == 0
    assert invoke("--root", str(tmp_path), "validate", "--strict")[0] == 1


def test_json_format(tmp_path: Path) -> None:
    write_tree(tmp_path, {**base_tree(), "@ct/app/.infra.yaml": project("app", environment="qa")})
    code, out, _ = invoke("--root", str(tmp_path), "validate", "--format", "json")
    doc = json.loads(out)
    assert code == 1 and doc["valid"] is False and doc["errors"] == 1
    [p] = doc["problems"]
    assert (p["path"], p["line"], p["rule"], p["level"]) == ("@ct/app/.infra.yaml", 8, "schema", "error")


def test_schema_command_prints_the_schema_editors_use() -> None:
    code, out, _ = invoke("schema")
    schema = json.loads(out)
    assert code == 0 and schema["$schema"].endswith("2020-12/schema")
    validator = jsonschema.Draft202012Validator(schema)
    for manifest in EXAMPLE_TREE.rglob(".infra*.yaml"):
        assert not list(validator.iter_errors(yaml.safe_load(manifest.read_text())))
    droplet = schema["properties"]["droplets"]["items"]["properties"]
    assert {"region", "size", "image"} <= set(droplet)


def test_help_explains_every_command() -> None:
    code, out, _ = invoke("--help")
    assert code == 0
    for command in ("validate", "render", "plan", "apply", "register", "rename", "adopt", "schema"):
        assert command in out
        assert invoke(command, "--help")[0] == 0


def test_missing_root_is_one_line_exit_1(tmp_path: Path) -> None:
    result = run_cli("--root", str(tmp_path / "nope"), "validate")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "is not a folder" in result.stderr


def test_broken_mesh_hosts_is_located_and_never_rewritten(tmp_path: Path) -> None:
    write_tree(tmp_path, base_tree())
    mesh = tmp_path / "m.json"
    mesh.write_text('{"network": "10.9.0.0/24",\n "hosts": {,}}\n')
    before = mesh.read_bytes()
    result = run_cli("--root", str(tmp_path), "--mesh-hosts", str(mesh), "validate")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert any(
        line.startswith(f"{mesh}:2:") and "error host_in_mesh" in line for line in result.stdout.splitlines()
    )
    assert result.stdout.splitlines()[-1].startswith("1 error(s)")
    assert mesh.read_bytes() == before


def test_a_bug_prints_a_traceback_and_its_own_exit_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("infra_apply.validate.validate_tree", boom)
    result = CliRunner().invoke(cli_module.cli, ["--root", str(tmp_path), "validate"])
    assert result.exit_code == ExitCode.BUG
    assert "Traceback" in result.stderr and "internal error" in result.stderr


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("infra_apply.validate.validate_tree", interrupted)
    assert CliRunner().invoke(cli_module.cli, ["--root", str(tmp_path), "validate"]).exit_code == 130


def test_render_refuses_an_invalid_tree_and_writes_nothing(tmp_path: Path) -> None:
    write_tree(tmp_path / "root", {**base_tree(), "@ct/app/.infra.yaml": "apiVersion: 1\n"})
    code, _, err = invoke("--root", str(tmp_path / "root"), "render", "--out", str(tmp_path / "out"))
    assert code == 1 and "nothing was done" in err
    assert not (tmp_path / "out").exists()


def test_unknown_producer_is_named(tmp_path: Path) -> None:
    write_tree(tmp_path, base_tree())
    code, _, err = invoke("--root", str(tmp_path), "plan", "--producer", "zz", "--sandbox")
    assert code == 1 and "unknown producer zz" in err and "ct" in err


def test_live_apply_refuses_a_stale_generated_folder(example: Path) -> None:
    manifest = example / "tree" / "@quinn" / ".infra.yaml"
    manifest.write_text(manifest.read_text().replace("size: s-4vcpu-8gb", "size: s-8vcpu-16gb"))
    env = {**cli_env(example), "DIGITALOCEAN_TOKEN": "FAKE-do-token_" + "0" * 20}
    result = run_cli(
        "--root",
        str(example / "tree"),
        "apply",
        "--producer",
        "quinn",
        "--auto-approve",
        "--out",
        str(example / "generated"),
        env=env,
    )
    assert result.returncode == 1
    assert "is out of date with the manifests" in result.stderr and "Traceback" not in result.stderr
    assert not (example / "state" / "work").exists()  # stopped before Terraform


def test_one_exit_code_enum_holds_the_contracts_numbers() -> None:
    import signal

    from infra_apply.errors import GuardRefused, InfraApplyError, Stopped

    assert [(c.name, int(c)) for c in ExitCode] == [
        ("OK", 0), ("ERROR", 1), ("CHANGES", 2), ("REFUSED", 3), ("BUG", 70),
        ("HANGUP", 129), ("INTERRUPTED", 130), ("TERMINATED", 143),
    ]  # fmt: skip
    assert InfraApplyError("x").exit_code is ExitCode.ERROR
    assert GuardRefused("x").exit_code is ExitCode.REFUSED
    assert Stopped(signal.SIGTERM).exit_code is ExitCode.TERMINATED
    assert Stopped(signal.SIGHUP).exit_code is ExitCode.HANGUP
