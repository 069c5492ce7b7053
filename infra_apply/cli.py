"""The command line: a thin click group. Heavy modules are imported inside commands so
``--help`` stays fast."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from infra_apply.validate import Validation

EXIT_BUG = 70  # EX_SOFTWARE: a defect in infra-apply, not in the input
F = TypeVar("F", bound=Callable[..., Any])


class Group(click.Group):
    """Catches the one exception family once; Ctrl-C exits 130; bugs keep their traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from infra_apply.errors import InfraApplyError, ValidationFailed

        try:
            return super().invoke(ctx)
        except ValidationFailed as exc:
            for p in exc.problems:
                click.echo(p.format(), err=True)
            click.echo(f"infra-apply: {exc.message}; nothing was done", err=True)
            ctx.exit(exc.exit_code)
        except InfraApplyError as exc:
            click.echo(f"infra-apply: {exc.format()}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("infra-apply: interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception:
            traceback.print_exc()
            click.echo(
                "infra-apply: internal error (a bug); please report it with the traceback above",
                err=True,
            )
            ctx.exit(EXIT_BUG)


class Settings:
    def __init__(self, root: Path) -> None:
        self.root = root


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="INFRA_APPLY_ROOT",
    default=".",
    show_default="$INFRA_APPLY_ROOT, else the current folder",
    help="Folder holding the producer trees (@ct/, @mc/, @quinn/).",
)
@click.version_option(package_name="infra-apply")
@click.pass_context
def cli(ctx: click.Context, root: Path) -> None:
    """Turn a tree of .infra.yaml manifests into DigitalOcean Terraform, plan and apply it per
    producer, and register the new hosts in the WireGuard mesh registry (mesh-hosts.json).

    \b
    Typical flow:
      infra-apply validate                 check every manifest against the convention
      infra-apply render                   write generated/<producer>/*.tf for review
      infra-apply plan --sandbox           plan against the local sandbox cloud
      infra-apply apply --producer quinn   plan, guard, confirm, apply, register hosts

    Environment: INFRA_APPLY_ROOT, INFRA_APPLY_MESH_HOSTS, INFRA_APPLY_STATE_DIR,
    INFRA_APPLY_TERRAFORM, DIGITALOCEAN_TOKEN (read by Terraform only, never written).
    """
    ctx.obj = Settings(root)


def mesh_option(fn: F) -> F:
    return click.option(
        "--mesh-hosts",
        "mesh_hosts",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="INFRA_APPLY_MESH_HOSTS",
        default=None,
        help="net-tools mesh-hosts.json (default $INFRA_APPLY_MESH_HOSTS). Validation checks "
        "service.host against it; register writes into it.",
    )(fn)


def format_option(*choices: str) -> Callable[[F], F]:
    def deco(fn: F) -> F:
        return click.option(
            "--format",
            "fmt",
            type=click.Choice(choices),
            default="text",
            show_default=True,
            help="Output format.",
        )(fn)

    return deco


def _root(ctx: click.Context) -> Path:
    root: Path = ctx.find_object(Settings).root  # type: ignore[union-attr]
    return root


def _validated(ctx: click.Context, mesh_hosts: Path | None) -> Validation:
    """Validate and raise ValidationFailed on errors; print warnings to stderr."""
    from infra_apply.errors import ValidationFailed
    from infra_apply.validate import validate_tree

    v = validate_tree(_root(ctx), mesh_hosts)
    if v.errors:
        raise ValidationFailed(list(v.problems))
    for p in v.warnings:
        click.echo(p.format(), err=True)
    return v


@cli.command()
@click.option("--strict", is_flag=True, help="Treat warnings (should-rules) as errors.")
@mesh_option
@format_option("text", "json")
@click.pass_context
def validate(ctx: click.Context, strict: bool, mesh_hosts: Path | None, fmt: str) -> None:
    """Discover and validate every manifest: YAML, the infra/v1 schema, the convention rules.

    Prints every problem of every file as `path:line:col: error|warning RULE: message`, then
    a summary. Exit 0 when valid, 1 on errors (or on warnings with --strict).
    """
    from infra_apply.validate import validate_tree

    v = validate_tree(_root(ctx), mesh_hosts)
    failed = bool(v.errors) or (strict and bool(v.warnings))
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "valid": not failed,
                    "manifests": len(v.discovery.manifests),
                    "producers": list(v.discovery.producers),
                    "errors": len(v.errors),
                    "warnings": len(v.warnings),
                    "problems": [p._asdict() for p in v.problems],
                },
                indent=2,
            )
        )
    else:
        for p in v.problems:
            click.echo(p.format())
        click.echo(
            f"{len(v.errors)} error(s), {len(v.warnings)} warning(s) in "
            f"{len(v.discovery.manifests)} manifest(s) under {len(v.discovery.producers)} "
            f"producer(s){'' if not failed else ' — invalid'}"
        )
    ctx.exit(1 if failed else 0)


@cli.command()
@mesh_option
@click.pass_context
def schema(ctx: click.Context, mesh_hosts: Path | None) -> None:
    """Print the infra/v1 JSON Schema (for editors and CI).

    \b
    Save it and point your editor at it, e.g. with yaml-language-server:
      infra-apply schema > infra-v1.schema.json
      # yaml-language-server: $schema=./infra-v1.schema.json
    """
    from infra_apply.validate import schema_text

    click.echo(schema_text(), nl=False)


def out_option(fn: F) -> F:
    return click.option(
        "--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("generated"),
        show_default=True,
        help="Folder of the committed Terraform (one sub-folder per producer, with its address "
             "ledger).")(fn)


@cli.command()
@out_option
@click.option("--check", is_flag=True,
              help="Write nothing; list stale or missing files and exit 1 if OUT is out of date.")
@mesh_option
@click.pass_context
def render(ctx: click.Context, out: Path, check: bool, mesh_hosts: Path | None) -> None:
    """Write OUT/<producer>/*.tf: one Terraform root module per producer, for review in a PR.

    Output is deterministic and `terraform fmt` clean. Droplet addresses come from
    OUT/<producer>/addresses.json and never change when a name does.
    """
    from infra_apply.build import build_model
    from infra_apply.render import compare, render_model, write

    v = _validated(ctx, mesh_hosts)
    rendered = render_model(build_model(v), out)
    if check:
        drift = compare(rendered, out)
        for rel in drift.stale:
            click.echo(f"{out / rel}: stale or missing")
        for rel in drift.extra:
            click.echo(f"{out / rel}: no longer rendered (would be removed)")
        if drift.stale or drift.extra:
            click.echo(f"infra-apply: {out} is out of date; run infra-apply render", err=True)
            ctx.exit(1)
        click.echo(f"{out} is up to date ({sum(len(r.files) for r in rendered)} files, "
                   f"{len(rendered)} producers)")
        return
    drift = write(rendered, out)
    for rel in drift.stale:
        click.echo(f"wrote {out / rel}")
    for rel in drift.extra:
        click.echo(f"removed {out / rel}")
    if not drift.stale and not drift.extra:
        click.echo(f"{out} already up to date")


def main() -> None:
    # Windows consoles and pipes: keep our own messages printable whatever the locale.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    cli(prog_name="infra-apply")


if __name__ == "__main__":  # pragma: no cover
    main()
