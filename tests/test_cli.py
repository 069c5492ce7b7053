"""The command-line contract: messages, formats, exit codes, never a traceback for bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
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

    monkeypatch.setattr("infra_apply.manifests.validate.validate_tree", boom)
    result = CliRunner().invoke(cli_module.cli, ["--root", str(tmp_path), "validate"])
    assert result.exit_code == ExitCode.BUG
    assert "Traceback" in result.stderr and "internal error" in result.stderr


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("infra_apply.manifests.validate.validate_tree", interrupted)
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
    # the remedy, run as printed from another folder, renders that tree into that folder
    [again] = re.findall(r"run (infra-apply .*?render.*?), review", result.stderr)
    assert again == f"infra-apply --root {example / 'tree'} render --out {example / 'generated'}"
    elsewhere = example / "elsewhere"
    elsewhere.mkdir()
    assert run_cli(*again.split()[1:], env=env, cwd=elsewhere).returncode == 0
    check = run_cli(*again.split()[1:], "--check", env=env, cwd=elsewhere)
    assert check.returncode == 0, check.stdout + check.stderr
    assert not list(elsewhere.iterdir())


def test_render_checks_remedy_renders_the_same_tree_into_the_same_folder(example: Path) -> None:
    manifest = example / "tree" / "@quinn" / ".infra.yaml"
    manifest.write_text(manifest.read_text().replace("size: s-4vcpu-8gb", "size: s-8vcpu-16gb"))
    env = cli_env(example)
    given = ("--root", str(example / "tree"), "render", "--check", "--out", str(example / "generated"))
    result = run_cli(*given, env=env)
    assert result.returncode == 1
    [again] = re.findall(r"is out of date; run (infra-apply .*)$", result.stderr, re.MULTILINE)
    assert again == f"infra-apply --root {example / 'tree'} render --out {example / 'generated'}"
    assert run_cli(*again.split()[1:], env=env, cwd=example / "tree" / "@quinn").returncode == 0
    assert run_cli(*given, env=env).returncode == 0


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


# --- on a terminal: colour, timings, the --root hint ---------------------------------------------

ESC = "\x1b"
NO_COLOR_ENV: dict[str, str | None] = {"NO_COLOR": None, "FORCE_COLOR": None}


def _canned_plan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """plan's verb answers with a destroy/replace plan from the fixtures (a fake working copy):
    what is under test is how the CLI prints it."""
    from infra_apply.commands import plan as verb
    from tests.commands.fakes import World

    world = World(tmp_path, "quinn", mesh=False)
    planned = verb.plan_all([world.prepared(world.copy("replace_delete", changed=True))], world.said.append)
    monkeypatch.setattr(verb, "run", lambda *_, **__: verb.PlanResult(tuple(planned)))


@pytest.mark.parametrize(
    ("args", "env", "coloured"),
    [
        ((), {}, False),  # CliRunner's stdout is not a terminal, like a pipe
        (("--color",), {}, True),
        (("--color",), {"NO_COLOR": "1"}, True),  # the flag overrides the environment
        ((), {"FORCE_COLOR": "1"}, True),
        ((), {"FORCE_COLOR": "1", "NO_COLOR": "1"}, False),
        (("--no-color",), {"FORCE_COLOR": "1"}, False),
        (("--color", "--no-color"), {}, False),  # the last one given wins
    ],
)
def test_plan_colour_follows_the_flags_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: tuple[str, ...],
    env: dict[str, str],
    coloured: bool,
) -> None:
    _canned_plan(monkeypatch, tmp_path)
    result = CliRunner(env={**NO_COLOR_ENV, **env}).invoke(cli_module.cli, [*args, "plan"])
    assert result.exit_code == ExitCode.CHANGES, result.output
    assert (ESC in result.stdout) is coloured
    assert ("\x1b[31m  - destroy\x1b[0m" in result.stdout) is coloured
    assert "  - destroy com.uvlava.quinn.mcp" in result.stdout.replace("\x1b[31m", "").replace("\x1b[0m", "")


@pytest.mark.parametrize("fmt", ["json", "markdown"])
def test_forced_colour_never_reaches_json_or_markdown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fmt: str
) -> None:
    _canned_plan(monkeypatch, tmp_path)
    runner = CliRunner(env={**NO_COLOR_ENV, "FORCE_COLOR": "1"})
    result = runner.invoke(cli_module.cli, ["--color", "plan", "--format", fmt])
    assert result.exit_code == ExitCode.CHANGES, result.output
    assert ESC not in result.stdout and ESC not in result.stderr
    if fmt == "json":
        assert list(json.loads(result.stdout)["producers"]) == ["quinn"]
    else:
        assert result.stdout.startswith("## ") and "com.uvlava.quinn.mcp" in result.stdout


def test_the_guards_refusal_is_red_only_when_colour_is_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from infra_apply.errors import GuardRefused

    def refused(*_: object, **__: object) -> None:
        raise GuardRefused(
            "destroy a: gone — rerun with --allow-destroy a\nreplace b: region — rerun with --allow-replace b"
        )

    monkeypatch.setattr("infra_apply.commands.apply.run", refused)
    args = ["apply", "--producer", "quinn", "--auto-approve"]
    plain = CliRunner(env=NO_COLOR_ENV).invoke(cli_module.cli, args)
    red = CliRunner(env=NO_COLOR_ENV).invoke(cli_module.cli, ["--color", *args])
    assert plain.exit_code == red.exit_code == ExitCode.REFUSED
    assert plain.stderr == (
        "infra-apply: error: destroy a: gone — rerun with --allow-destroy a\n"
        "replace b: region — rerun with --allow-replace b\n"
    )
    assert red.stderr == (
        "\x1b[31m\x1b[1minfra-apply: error: destroy a: gone — rerun with --allow-destroy a\x1b[0m\n"
        "\x1b[31m\x1b[1mreplace b: region — rerun with --allow-replace b\x1b[0m\n"
    )


def _on_a_terminal(args: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, str, str]:
    """Run infra-apply with its stdout on a pseudo-terminal (stderr to a file): what an operator
    sees. Reads until the process has ended and the terminal has nothing more to give."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import tempfile
    import time

    master, slave = pty.openpty()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infra_apply", *args],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=err,
            env=env,
        )
        os.close(slave)
        out, deadline = b"", time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 0.2)
                if ready:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:  # EIO: every writer of the terminal has closed it
                        break
                    if not chunk:
                        break
                    out += chunk
                elif proc.poll() is not None:
                    break
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
        err.seek(0)
        return code, out.decode().replace("\r\n", "\n"), err.read().decode()


def test_on_a_real_terminal_plan_is_coloured_unless_no_color_says_otherwise(example: Path) -> None:
    env = {k: v for k, v in cli_env(example).items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    plan = [
        "--root", str(example / "tree"), "plan", "--sandbox", "--producer", "quinn",
        "--out", str(example / "generated"), "--mesh-hosts", str(example / "mesh-hosts.json"),
    ]  # fmt: skip
    code, out, err = _on_a_terminal(plan, env)
    assert code == ExitCode.CHANGES, err
    assert "\x1b[32m  + create \x1b[0m com.uvlava.quinn.artifacts" in out
    assert ESC not in err  # stderr is a file here: its progress lines stay plain
    # Every phase of the producer says how long it took when it ended.
    for phase in ("init", "plan", "show"):
        assert re.search(rf"^quinn: {phase} done in \d+\.\ds", err, re.M), err
    code, out, _ = _on_a_terminal(plan, {**env, "NO_COLOR": "1"})
    assert code == ExitCode.CHANGES and "  + create  com.uvlava.quinn.artifacts" in out and ESC not in out
    code, out, _ = _on_a_terminal(["--no-color", *plan], env)
    assert code == ExitCode.CHANGES and "  + create  com.uvlava.quinn.artifacts" in out and ESC not in out


def test_from_inside_a_producer_folder_the_hint_names_the_root_above(tmp_path: Path) -> None:
    write_tree(tmp_path / "Code", base_tree())
    env = cli_env(tmp_path)
    hint = (
        "infra-apply: hint: manifests must sit in @<producer>/ folders of the root: "
        "try --root .. (it holds @ct)"
    )
    validated = run_cli("validate", env=env, cwd=tmp_path / "Code" / "@ct")
    assert validated.returncode == 1 and "error manage_apps_orchestrator" in validated.stdout
    assert validated.stderr.splitlines() == [hint]
    # A verb that needs a valid tree says it after its summary line, nothing done.
    rendered = run_cli("render", env=env, cwd=tmp_path / "Code" / "@ct" / "app")
    assert rendered.returncode == 1 and "Traceback" not in rendered.stderr
    assert rendered.stderr.splitlines()[-2:] == [
        "infra-apply: 1 error(s) in the manifest tree; nothing was done",
        hint.replace("--root ..", "--root ../.."),
    ]
    assert not (tmp_path / "Code" / "@ct" / "app" / "generated").exists()
    # Given as --root from elsewhere, the folder is named in full; JSON on stdout stays JSON.
    producer = str(tmp_path / "Code" / "@ct")
    found = run_cli("--root", producer, "validate", "--format", "json", env=env, cwd=tmp_path)
    assert json.loads(found.stdout)["valid"] is False
    assert found.stderr.splitlines() == [hint.replace("--root ..", f"--root {(tmp_path / 'Code').resolve()}")]


def test_a_tree_without_producer_folders_gets_a_hint_to_make_them(tmp_path: Path) -> None:
    write_tree(tmp_path / "flat", {"app/.infra.yaml": project("app")})
    result = run_cli("validate", env=cli_env(tmp_path), cwd=tmp_path / "flat")
    assert result.returncode == 1 and "manifest outside any producer folder" in result.stdout
    assert result.stderr.splitlines() == [
        f"infra-apply: hint: no folder above {(tmp_path / 'flat').resolve()} holds @<producer> folders, "
        "so no other --root fits: move each project into a producer folder of this root, "
        "e.g. '@<producer>/app/.infra.yaml'"
    ]


def test_a_root_holding_producer_folders_gets_no_root_hint(tmp_path: Path) -> None:
    write_tree(tmp_path, {**base_tree(), "stray/.infra.yaml": project("stray")})
    code, _, err = invoke("--root", str(tmp_path), "validate")
    assert code == 1 and "hint" not in err


# --- usage errors and --color/--no-color after the verb ------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("plan", "--no-such-option"), "No such option '--no-such-option'"),
        (("--no-such-option", "plan"), "No such option '--no-such-option'"),
        (("drift", "--format", "yaml"), "Invalid value for '--format'"),
        (("rename", "--producer", "quinn"), "Missing argument 'NAME'"),
        (("gpu", "up"), "Missing argument 'NAME'"),
        (("apply",), "Missing option '--producer'"),
        (("no-such-verb",), "No such command 'no-such-verb'"),
        (("plan", "--changed", "--producer", "ct"), "--changed selects the producers itself"),
    ],
)
def test_a_usage_error_exits_1_never_2_which_means_changes_or_drift(
    args: tuple[str, ...], message: str
) -> None:
    """For plan 2 means "changes" and for drift "drift": a typo in CI must not read as a result."""
    code, out, err = invoke(*args)
    assert code == ExitCode.ERROR and out == ""
    assert f"Error: {message}" in err and "Traceback" not in err


def test_help_and_version_still_exit_0() -> None:
    for args in (("--help",), ("plan", "--help"), ("gpu", "--help"), ("gpu", "up", "-h"), ("--version",)):
        assert invoke(*args)[0] == ExitCode.OK, args


VERBS_WITH_OUTPUT = [
    ("validate",), ("render",), ("plan",), ("apply",), ("register",), ("rename",), ("adopt",),
    ("db-credentials",), ("drift",), ("gpu", "up"), ("gpu", "down"), ("gpu", "status"),
    ("gpu", "reap"), ("comment",), ("schema",), ("completion",),
]  # fmt: skip


@pytest.mark.parametrize("verb", VERBS_WITH_OUTPUT, ids=" ".join)
def test_every_verb_takes_color_and_no_color_after_it(verb: tuple[str, ...]) -> None:
    code, out, _ = invoke(*verb, "--help")
    assert code == 0 and "--color / --no-color" in out


@pytest.mark.parametrize(
    ("args", "coloured"),
    [
        (("plan", "--color"), True),
        (("plan", "--no-color"), False),
        (("--no-color", "plan", "--color"), True),  # the verb's choice wins over the group's
        (("--color", "plan", "--no-color"), False),
    ],
)
def test_color_after_the_verb_colours_the_plan(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: tuple[str, ...], coloured: bool
) -> None:
    _canned_plan(monkeypatch, tmp_path)
    result = CliRunner(env={**NO_COLOR_ENV, "FORCE_COLOR": "1"}).invoke(cli_module.cli, list(args))
    # (before the fix, `plan --no-color` exited 2 with a usage error: the code of "changes")
    assert result.exit_code == ExitCode.CHANGES, result.output
    assert "  - destroy com.uvlava.quinn.mcp" in result.stdout.replace("\x1b[31m", "").replace("\x1b[0m", "")
    assert ("\x1b[31m  - destroy\x1b[0m" in result.stdout) is coloured
    assert (ESC in result.stdout) is coloured


def test_no_color_after_apply_reaches_the_guards_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal is printed by the group's error handler: the verb's --no-color reaches it."""
    from infra_apply.errors import GuardRefused

    def refused(*_: object, **__: object) -> None:
        raise GuardRefused("destroy a: gone — rerun with --allow-destroy a")

    monkeypatch.setattr("infra_apply.commands.apply.run", refused)
    args = ["--color", "apply", "--producer", "quinn", "--auto-approve"]
    plain = CliRunner(env=NO_COLOR_ENV).invoke(cli_module.cli, [*args, "--no-color"])
    red = CliRunner(env=NO_COLOR_ENV).invoke(cli_module.cli, args)
    assert plain.exit_code == red.exit_code == ExitCode.REFUSED
    assert plain.stderr == "infra-apply: error: destroy a: gone — rerun with --allow-destroy a\n"
    assert ESC in red.stderr


# db-credentials --stdout with the verb's state read stood in for: the write is the real one.
_DB_CREDENTIALS_ONTO = """
import sys
from infra_apply import cli
from infra_apply.commands import Output, db_credentials
db_credentials.run = lambda *a, **k: None
db_credentials.output = lambda done: Output("PGPASSWORD='x'\\n" * 20000)
sys.argv = ["infra-apply", "--root", sys.argv[1], "db-credentials", "--producer", "mc", "catalog", "--stdout"]
cli.main()
"""


@pytest.mark.parametrize("verb", ["schema", "validate", "db-credentials"])
def test_a_write_error_on_stdout_is_one_line_and_exit_1(verb: str) -> None:
    """`> /dev/full` (ENOSPC) and a closed pipe (EPIPE): one line on stderr, never a traceback
    or exit 70, and nothing from the interpreter's own flush at exit."""
    import subprocess
    import sys

    if verb == "db-credentials":
        argv = [sys.executable, "-c", _DB_CREDENTIALS_ONTO, str(EXAMPLE_TREE)]
    else:
        argv = [sys.executable, "-m", "infra_apply", "--root", str(EXAMPLE_TREE), verb]
    with open("/dev/full", "w") as full:
        done = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr == "infra-apply: error: cannot write the output: No space left on device\n"
    closed = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert closed.stdout is not None and closed.stderr is not None
    closed.stdout.close()
    assert closed.wait(timeout=120) == 1
    assert closed.stderr.read() == "infra-apply: error: cannot write the output: Broken pipe\n"


def test_a_current_folder_removed_under_the_shell_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    code = (
        "import os, sys\n"
        f"os.chdir({str(gone)!r}); os.rmdir({str(gone)!r})\n"
        "sys.argv = ['infra-apply', '--root', 'tree', 'validate']\n"
        "from infra_apply.cli import main\nmain()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(tmp_path))
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip() == (
        "infra-apply: error: the current folder no longer exists: cd to one that does and run again"
    )


# main() ends the process itself once everything is said (no interpreter teardown); what the
# normal exit would still do for a user happens all the same.
_ENDING = """
import atexit, sys, threading, time
from infra_apply.cli import main

class Teardown:
    def __del__(self):
        sys.stderr.write("teardown\\n")

kept = Teardown()
atexit.register(lambda: sys.stderr.write("atexit\\n"))
if sys.argv.pop(1) == "worker":
    def late():
        time.sleep(0.3)
        sys.stderr.write("worker done\\n")
    threading.Thread(target=late).start()
main()
"""


@pytest.mark.parametrize("worker", ["worker", "alone"])
def test_main_flushes_runs_atexit_and_keeps_the_exit_code(worker: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    argv = [sys.executable, "-c", _ENDING, worker, "--root", str(tmp_path / "missing"), "schema"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["$schema"]  # the whole document, flushed
    said = done.stderr.splitlines()
    assert said.count("atexit") == 1
    if worker == "worker":  # a thread still running: the normal exit, which waits for it
        assert said == ["worker done", "atexit", "teardown"]
    else:  # nothing left to wait for: no teardown
        assert said == ["atexit"]
    failed = subprocess.run(
        [sys.executable, "-c", _ENDING, worker, "--root", str(tmp_path / "missing"), "validate"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert failed.returncode == 1
    assert "atexit" in failed.stderr.splitlines()
