"""The command-line contract's shared options: declared once (infra_apply/options.py), taken by
every verb in the same positions; every --format a verb offers has its renderer in report/;
commands/ holds verbs only."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from infra_apply.cli import cli
from infra_apply.report import formats

PACKAGE = Path(__file__).resolve().parent.parent / "infra_apply"


def _verbs(
    group: click.Group = cli, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += _verbs(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


VERBS = _verbs()
# Verbs that run Terraform in a producer's working copy: they also take --sandbox and --out.
WORKSPACE = {"plan", "apply", "register", "rename", "adopt", "db-credentials", "drift"} | {
    f"gpu {v}" for v in ("up", "down", "status", "reap")
}
# What each verb needs to parse (its required arguments and options), nothing more.
REQUIRED = {
    "adopt": ["--producer", "quinn"],
    "apply": ["--producer", "quinn"],
    "comment": ["plan.md"],
    "completion": ["bash"],
    "db-credentials": ["--producer", "mc", "catalog"],
    "gpu down": ["gpu-1"],
    "gpu up": ["gpu-1"],
    "register": ["--producer", "quinn"],
    "rename": ["--producer", "quinn", "quinn-web"],
}


def _opts(command: click.Command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *getattr(p, "secondary_opts", ()))}


def test_the_verb_list_is_complete() -> None:
    names = {" ".join(path) for path, _ in VERBS}
    assert names == {
        *("validate", "schema", "render", "plan", "apply", "register", "rename", "adopt"),
        *("db-credentials", "drift", "comment", "completion"),
        *("gpu up", "gpu down", "gpu status", "gpu reap"),
    }


@pytest.mark.parametrize(("path", "command"), VERBS, ids=[" ".join(p) for p, _ in VERBS])
def test_help_of_every_verb_lists_the_shared_options(path: tuple[str, ...], command: click.Command) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    shared = ["--mesh-hosts", "--color / --no-color", "-h, --help"]
    if " ".join(path) in WORKSPACE:
        shared += ["--sandbox", "--out DIRECTORY"]
    for option in shared:
        assert option in result.output, f"{' '.join(path)} --help lacks {option}"


@pytest.mark.parametrize(("path", "command"), VERBS, ids=[" ".join(p) for p, _ in VERBS])
def test_every_verb_accepts_the_global_options_before_and_after_it(
    tmp_path: Path, path: tuple[str, ...], command: click.Command
) -> None:
    """``infra-apply --root R --mesh-hosts M --no-color VERB ...`` and ``VERB ... --mesh-hosts M
    --color``: parsed, and the group's --mesh-hosts reaches the verb (a gpu sub-verb too)."""
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    args = REQUIRED.get(" ".join(path), [])
    for group_args, verb_args, mesh in (
        (["--root", str(tmp_path), "--mesh-hosts", str(before), "--no-color"], args, before),
        (["--root", str(tmp_path)], [*args, "--mesh-hosts", str(after), "--color"], after),
        (["--mesh-hosts", str(before)], [*args, "--mesh-hosts", str(after), "--no-color"], after),
    ):
        ctx = _parse(group_args, path, verb_args)
        assert ctx.params["mesh_hosts"] == mesh, (group_args, verb_args)
        assert ctx.find_root().params["root"] == Path(group_args[1] if group_args[0] == "--root" else ".")


def _parse(group_args: list[str], path: tuple[str, ...], verb_args: list[str]) -> click.Context:
    """Parse as click does before invoking: the group, any sub-group, then the verb (each
    option's callback runs; no verb runs)."""
    env = {"INFRA_APPLY_MESH_HOSTS": None, "INFRA_APPLY_ROOT": None}
    with CliRunner(env=env).isolation():
        ctx = cli.make_context("infra-apply", [*group_args, *path, *verb_args])
        command: click.Command = cli
        while isinstance(command, click.Group):
            name, found, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
            assert name is not None and found is not None
            command, ctx = found, found.make_context(name, rest, parent=ctx)
        return ctx


def test_a_verb_given_an_unknown_option_is_a_usage_error_not_a_parse_that_passes(tmp_path: Path) -> None:
    # the parse above must be able to fail
    with pytest.raises(click.UsageError):
        _parse(["--root", str(tmp_path)], ("validate",), ["--no-such-option"])


def _format_choices(command: click.Command) -> tuple[str, ...] | None:
    for p in command.params:
        if "--format" in p.opts:
            assert isinstance(p.type, click.Choice)
            return tuple(str(c) for c in p.type.choices)
    return None


def test_every_format_a_verb_offers_has_its_renderer_in_report() -> None:
    offered = {" ".join(path): _format_choices(c) for path, c in VERBS if _format_choices(c) is not None}
    assert set(offered) == set(formats.BY_COMMAND)
    for name, choices in offered.items():
        for entry in formats.BY_COMMAND[name]:
            assert set(entry().formats) == set(choices or ()), (name, entry.__name__)


def test_renderers_refuse_a_format_they_do_not_have() -> None:
    from infra_apply.errors import InfraApplyError

    with pytest.raises(InfraApplyError, match="no markdown output here"):
        formats.validate().render(object(), "markdown")  # type: ignore[arg-type]


def test_no_format_dispatch_outside_report() -> None:
    """One place maps a verb and a --format to its renderer: report/formats.py."""
    dispatch = re.compile(r"\b(fmt|format)\s*(==|!=|in)\s*[\"'(]|\.get\(fmt\b")
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{n}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.parent.name != "report"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if dispatch.search(line)
    ]
    assert not found


def test_commands_holds_verbs_only() -> None:
    verbs = {path[0].replace("-", "_") for path, _ in VERBS}
    modules = {p.stem for p in (PACKAGE / "commands").glob("*.py")} - {"__init__"}
    assert modules <= verbs, f"not a verb: {sorted(modules - verbs)}"
