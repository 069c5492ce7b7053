"""Every click option more than one verb takes, declared once (pip-tools' ``options.py`` style).

The contract's global options (docs/commands.md, /work/shared/DESIGN.md's command-line
contract): ``--root`` before the verb; ``--mesh-hosts`` and ``--color/--no-color`` before the verb
and after every verb (``verb_globals``). Only click and the standard library are imported here so
``--help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

F = TypeVar("F", bound=Callable[..., object])


class Settings:
    """The group's own options, for the verbs (``ctx.find_object(Settings)``)."""

    def __init__(self, root: Path, mesh_hosts: Path | None, color: bool | None = None) -> None:
        self.root = root
        self.mesh_hosts = mesh_hosts
        self.color = color  # --color / --no-color; None: NO_COLOR, FORCE_COLOR, a terminal


def root_of(ctx: click.Context) -> Path:
    root: Path = ctx.find_object(Settings).root  # type: ignore[union-attr]
    return root


def use_color(ctx: click.Context, *, err: bool) -> bool:
    """The one place that decides colour, per stream (stdout, or stderr with ``err``)."""
    from infra_apply.color import wanted

    settings = ctx.find_object(Settings)
    flag = ctx.meta.get(_VERB_COLOR, settings.color if settings else None)
    stream = sys.stderr if err else sys.stdout
    isatty = getattr(stream, "isatty", None)
    return wanted(flag, os.environ, bool(isatty and isatty()))


def complete(kind: str) -> Callable[[click.Context, click.Parameter, str], list[CompletionItem]]:
    """A shell_complete callback importing the completion module only when <Tab> asks."""

    def completer(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        from infra_apply import completion

        found: list[CompletionItem] = getattr(completion, f"complete_{kind}")(ctx, param, incomplete)
        return found

    return completer


# --- the global options -----------------------------------------------------------------------


def root_option(fn: F) -> F:
    return click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="INFRA_APPLY_ROOT",
        default=".",
        show_default="$INFRA_APPLY_ROOT, else the current folder",
        help="Folder holding the producer trees (@ct/, @mc/, @quinn/).",
    )(fn)


_MESH_DECLS = ("--mesh-hosts", "mesh_hosts")
_MESH_TYPE = click.Path(dir_okay=False, path_type=Path)


def group_mesh_option(fn: F) -> F:
    return click.option(
        *_MESH_DECLS,
        type=_MESH_TYPE,
        envvar="INFRA_APPLY_MESH_HOSTS",
        default=None,
        help="net-tools mesh-hosts.json for every command (each command also takes it).",
    )(fn)


def _group_mesh(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None and _on_command_line(ctx, param):
        from infra_apply import remedy

        remedy.repeat_mesh(str(value))
    if value is not None or ctx.parent is None:
        return value
    group_value: Path | None = ctx.find_root().params.get("mesh_hosts")  # parsed before the verb
    return group_value


def mesh_option(fn: F) -> F:
    return click.option(
        *_MESH_DECLS,
        type=_MESH_TYPE,
        envvar="INFRA_APPLY_MESH_HOSTS",
        default=None,
        callback=_group_mesh,
        help="net-tools mesh-hosts.json (default $INFRA_APPLY_MESH_HOSTS). Validation checks "
        "service.host against it; register writes into it.",
    )(fn)


# ctx.meta is one dict shared by the group's and the verb's contexts, so the verb's choice also
# reaches the group's error handler (the guard's refusal is coloured there).
_VERB_COLOR = "infra_apply.color"
_COLOR_HELP = (
    "Colour the plan summary and the guard's refusal (default: on a terminal, unless "
    "NO_COLOR is set; FORCE_COLOR forces it, e.g. for CI logs that show ANSI). Never in "
    "--format json or markdown."
)


def group_color_option(fn: F) -> F:
    return click.option("--color/--no-color", "color", default=None, help=_COLOR_HELP)(fn)


def _verb_color(ctx: click.Context, _: click.Parameter, value: bool | None) -> None:
    if value is not None:  # given after the verb: it wins over the one before it
        ctx.meta[_VERB_COLOR] = value


def color_option(fn: F) -> F:
    return click.option(
        "--color/--no-color",
        default=None,
        expose_value=False,
        callback=_verb_color,
        help=_COLOR_HELP + " Also accepted before the command.",
    )(fn)


def verb_globals(fn: F) -> F:
    """What every verb takes after it: ``--color/--no-color`` (as CI scripts write ``plan
    --no-color``) and ``--mesh-hosts`` (its value reaches the verb as ``mesh_hosts``)."""
    return color_option(mesh_option(fn))


# --- options several verbs share ----------------------------------------------------------------


def _on_command_line(ctx: click.Context, param: click.Parameter) -> bool:
    from click.core import ParameterSource

    return param.name is not None and ctx.get_parameter_source(param.name) == ParameterSource.COMMANDLINE


def _remembered_out(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    if _on_command_line(ctx, param):  # the environment and the folder come with a paste
        from infra_apply import remedy

        remedy.repeat_out(str(value))
    return value


def out_option(fn: F) -> F:
    return click.option(
        "--out",
        "out",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="INFRA_APPLY_OUT",
        callback=_remembered_out,
        default=Path("generated"),
        show_default="$INFRA_APPLY_OUT, else generated",
        help="Folder of the committed Terraform (one sub-folder per producer, with its address ledger).",
    )(fn)


def sandbox_option(fn: F) -> F:
    return click.option(
        "--sandbox",
        is_flag=True,
        help="Run against the local sandbox cloud (a stand-in DigitalOcean provider under the "
        "state dir); needs no account or token, keeps its own state and mesh registry, and never "
        "touches generated/.",
    )(fn)


def workspace_options(fn: F) -> F:
    """The verbs that run Terraform in a producer's working copy: ``--sandbox``, ``--out`` and
    the global options (their values build the Context)."""
    return sandbox_option(out_option(verb_globals(fn)))


def format_option(*choices: str) -> Callable[[F], F]:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(choices),
        default="text",
        show_default=True,
        help="Output format.",
    )


def strict_option(fn: F) -> F:
    return click.option("--strict", is_flag=True, help="Treat warnings (should-rules) as errors.")(fn)


def producer_option(help: str | None = None) -> Callable[[F], F]:
    """The one ``--producer P`` a verb works on (completed from the root's @ folders)."""
    return click.option(
        "--producer", required=True, metavar="P", shell_complete=complete("producers"), help=help
    )


def producers_option(help: str) -> Callable[[F], F]:
    """A repeatable --producer (completed from the root's @ folders)."""
    return _producer_names("--producer", "producers", help=help)


def _producer_names(flag: str, dest: str, *, help: str) -> Callable[[F], F]:
    return click.option(
        flag, dest, multiple=True, metavar="P", shell_complete=complete("producers"), help=help
    )


def names_option(*decls: str, help: str, kind: str = "droplets") -> Callable[[F], F]:
    """A repeatable option naming droplets (completed from the manifests)."""
    return click.option(*decls, multiple=True, metavar="NAME", shell_complete=complete(kind), help=help)


def allow_over_budget_option(fn: F) -> F:
    """``--allow-over-budget P`` (repeatable): apply a plan over producer P's budget."""
    return _producer_names(
        "--allow-over-budget",
        "allow_over_budget",
        help="Apply even though the plan goes over producer P's budget_monthly or max_increase, or "
        "holds a resource whose price is not known (infra-apply.toml [producers.P]).",
    )(fn)


def trusted_sources_option(fn: F) -> F:
    """``--allow-trusted-sources CLUSTER``: names a cluster, not a droplet (nothing to complete)."""
    return click.option(
        "--allow-trusted-sources",
        multiple=True,
        metavar="CLUSTER",
        help="Allow changing this cluster's trusted sources where it cuts a client off: its first "
        "rules, a rule removed, a host not tagged yet, or their deletion (cluster name).",
    )(fn)


def _with_gpu_removed(ctx: click.Context, _: click.Parameter, value: tuple[str, ...]) -> None:
    from infra_apply.errors import InfraApplyError

    if value:
        # exit 1, not click's usage exit 2: for plan, 2 means "changes"
        raise InfraApplyError(
            f"--with-gpu was removed: a GPU is kept on by its lease; run infra-apply gpu up {value[0]} "
            "(and gpu down / gpu reap to release it)",
            rule="gpu_ondemand",
        )


def gpu_option(fn: F) -> F:
    """``--with-gpu``, removed (issue 12): hidden, and it says what replaces it."""
    return click.option(
        "--with-gpu", "with_gpu", multiple=True, hidden=True, expose_value=False, callback=_with_gpu_removed
    )(fn)


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> timedelta | None:
    from infra_apply.gpu.config import DurationError, parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise click.BadParameter(str(exc)) from None


def lease_option(fn: F) -> F:
    return click.option(
        "--for",
        "for_",
        metavar="DURATION",
        callback=_duration,
        help='Lease length, e.g. "2h" or "90m" (default: default_lease of [gpu."NAME"]); never past '
        "max_lifetime from the first gpu up.",
    )(fn)
