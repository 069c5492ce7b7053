"""The command line: a thin click group. Heavy modules are imported inside commands so
``--help`` stays fast."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from infra_apply.validate import Validation

EXIT_BUG = 70  # EX_SOFTWARE: a defect in infra-apply, not in the input
F = TypeVar("F", bound=Callable[..., Any])


class Group(click.Group):
    """Catches the one exception family once; Ctrl-C exits 130 (SIGTERM 143, SIGHUP 129, once
    Terraform has stopped cleanly); bugs keep their traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from infra_apply.errors import InfraApplyError, Stopped, ValidationFailed

        try:
            return super().invoke(ctx)
        except ValidationFailed as exc:
            for p in exc.problems:
                click.echo(p.format(), err=True)
            click.echo(f"infra-apply: {exc.message}; nothing was done", err=True)
            ctx.exit(exc.exit_code)
        except InfraApplyError as exc:
            click.echo(exc.format(), err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            _interrupted(ctx, exc)
        except click.Abort as exc:
            # click's prompts turn any KeyboardInterrupt into Abort; a SIGTERM or SIGHUP at the
            # confirmation prompt still exits 143 / 129 (nothing was applied).
            if isinstance(exc.__context__, Stopped):
                _interrupted(ctx, exc.__context__)
            raise
        except (click.exceptions.Exit, click.ClickException):
            raise
        except Exception:
            traceback.print_exc()
            click.echo(
                "infra-apply: internal error (a bug); please report it with the traceback above",
                err=True,
            )
            ctx.exit(EXIT_BUG)


def _interrupted(ctx: click.Context, exc: KeyboardInterrupt) -> NoReturn:
    from infra_apply.errors import Stopped

    how = f" by {signal_name(exc.signum)}" if isinstance(exc, Stopped) else ""
    # After a SIGHUP the terminal may be gone: failing to say so must not change the exit.
    with contextlib.suppress(OSError):
        click.echo(f"infra-apply: interrupted{how}", err=True)
    ctx.exit(exc.exit_code if isinstance(exc, Stopped) else 130)


class Settings:
    def __init__(self, root: Path, mesh_hosts: Path | None) -> None:
        self.root = root
        self.mesh_hosts = mesh_hosts


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="INFRA_APPLY_ROOT",
    default=".",
    show_default="$INFRA_APPLY_ROOT, else the current folder",
    help="Folder holding the producer trees (@ct/, @mc/, @quinn/).",
)
@click.option(
    "--mesh-hosts",
    "mesh_hosts",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="INFRA_APPLY_MESH_HOSTS",
    default=None,
    help="net-tools mesh-hosts.json for every command (each command also takes it).",
)
@click.version_option(package_name="infra-apply")
@click.pass_context
def cli(ctx: click.Context, root: Path, mesh_hosts: Path | None) -> None:
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
    ctx.obj = Settings(root, mesh_hosts)


def _group_mesh(ctx: click.Context, _: click.Parameter, value: Path | None) -> Path | None:
    if value is not None or ctx.parent is None:
        return value
    group_value: Path | None = ctx.parent.params.get("mesh_hosts")  # parsed before subcommands
    return group_value


def mesh_option(fn: F) -> F:
    return click.option(
        "--mesh-hosts",
        "mesh_hosts",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="INFRA_APPLY_MESH_HOSTS",
        default=None,
        callback=_group_mesh,
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
    from infra_apply.state import validation_cache
    from infra_apply.validate import require_valid

    return require_valid(
        _root(ctx), mesh_hosts, validation_cache(_root(ctx)), lambda line: click.echo(line, err=True)
    )


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
    from infra_apply.state import validation_cache
    from infra_apply.validate import validate_tree

    v = validate_tree(_root(ctx), mesh_hosts, validation_cache(_root(ctx)))
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
        "--out",
        "out",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="INFRA_APPLY_OUT",
        default=Path("generated"),
        show_default="$INFRA_APPLY_OUT, else generated",
        help="Folder of the committed Terraform (one sub-folder per producer, with its address ledger).",
    )(fn)


def _emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False))


@cli.command()
@out_option
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; list stale or missing files and exit 1 if OUT is out of date.",
)
@format_option("text", "json")
@mesh_option
@click.pass_context
def render(ctx: click.Context, out: Path, check: bool, fmt: str, mesh_hosts: Path | None) -> None:
    """Write OUT/<producer>/*.tf: one Terraform root module per producer, for review in a PR.

    Output is deterministic and `terraform fmt` clean. Droplet addresses come from
    OUT/<producer>/addresses.json and never change when a name does. Only files infra-apply
    wrote (with its do-not-edit header) are ever replaced or removed.
    """
    from infra_apply.build import build_model
    from infra_apply.render import compare, render_model, write

    v = _validated(ctx, mesh_hosts)
    rendered = render_model(build_model(v), out)
    drift = compare(rendered, out) if check else write(rendered, out)
    stale = bool(drift.stale or drift.extra)
    if fmt == "json":
        _emit_json(
            {
                "out": str(out),
                "check": check,
                "stale" if check else "written": list(drift.stale),
                "removed" if not check else "extra": list(drift.extra),
                "up_to_date": not stale,
            }
        )
    elif check:
        for rel in drift.stale:
            click.echo(f"{out / rel}: stale or missing")
        for rel in drift.extra:
            click.echo(f"{out / rel}: no longer rendered (would be removed)")
        if not stale:
            files = sum(len(r.files) for r in rendered)
            click.echo(f"{out} is up to date ({files} files, {len(rendered)} producers)")
    else:
        for rel in drift.stale:
            click.echo(f"wrote {out / rel}")
        for rel in drift.extra:
            click.echo(f"removed {out / rel}")
        if not stale:
            click.echo(f"{out} already up to date")
    if check and stale:
        click.echo(f"infra-apply: {out} is out of date; run infra-apply render", err=True)
        ctx.exit(1)


def sandbox_option(fn: F) -> F:
    return click.option(
        "--sandbox",
        is_flag=True,
        help="Run against the local sandbox cloud (a stand-in DigitalOcean provider under the "
        "state dir); needs no account or token, keeps its own state and mesh registry, and never "
        "touches generated/.",
    )(fn)


def _context(ctx: click.Context, out: Path, sandbox: bool, mesh_hosts: Path | None) -> Any:
    from infra_apply.deploy import Context

    def say(line: str) -> None:
        click.echo(line, err=True)

    return Context(
        root=_root(ctx), out=out, sandbox=sandbox, mesh_path=mesh_hosts, env=dict(os.environ), say=say
    )


def _load(c: Any, *, refuse_stale: bool = False) -> Any:
    """Validate, model and render; a live apply refuses HCL that differs from the reviewed
    generated/ (what is applied must be what the pull request showed)."""
    from infra_apply.deploy import load_project
    from infra_apply.errors import InfraApplyError

    project = load_project(c, lambda line: click.echo(line, err=True))
    if project.generated_stale and not c.sandbox:
        if refuse_stale:
            raise InfraApplyError(
                f"{c.out} is out of date with the manifests: run infra-apply render, review and commit "
                "the diff, then apply (a live apply only applies the Terraform under review)"
            )
        click.echo(
            f"infra-apply: note: {c.out} is out of date with the manifests; planning the fresh "
            "render (run infra-apply render and commit it)",
            err=True,
        )
    return project


def _one(
    ctx: click.Context,
    producer: str,
    out: Path,
    sandbox: bool,
    mesh_hosts: Path | None,
    *,
    refuse_stale: bool = False,
) -> tuple[Any, Any]:
    """The deploy context and the one prepared working copy a single-producer command needs."""
    from infra_apply import deploy

    c = _context(ctx, out, sandbox, mesh_hosts)
    project = _load(c, refuse_stale=refuse_stale)
    [name] = deploy.pick(project, [producer])
    [prep] = deploy.prepare(c, project, [name])
    return c, prep


@cli.command()
@click.option(
    "--producer",
    "producers",
    multiple=True,
    metavar="P",
    help="Producer to plan (repeatable); all producers when omitted.",
)
@format_option("text", "json", "markdown")
@sandbox_option
@click.option(
    "--with-gpu",
    "gpu",
    multiple=True,
    metavar="NAME",
    help="Also plan the on-demand GPU droplet NAME (off by default).",
)
@out_option
@mesh_option
@click.pass_context
def plan(
    ctx: click.Context,
    producers: tuple[str, ...],
    fmt: str,
    sandbox: bool,
    gpu: tuple[str, ...],
    out: Path,
    mesh_hosts: Path | None,
) -> None:
    """Render, then terraform plan each producer (in parallel) and summarise the changes.

    Text for a terminal, JSON for tools, markdown for a pull-request comment (with a Mermaid
    diagram). Name drift (a droplet whose live name differs from its manifest) is reported.
    Exit 0 when nothing changes, 2 when something does, 1 on error.
    """
    from infra_apply import deploy, summary

    c = _context(ctx, out, sandbox, mesh_hosts)
    project = _load(c)
    names = deploy.pick(project, producers)
    preps = deploy.prepare(c, project, names)
    planned = deploy.plan_all(preps, c.say, gpu=gpu)
    plans = [p.plan for p in planned]
    verdicts = deploy.verdicts(planned)
    if fmt == "json":
        click.echo(summary.format_json(plans, verdicts), nl=False)
    elif fmt == "markdown":
        models = {p.prep.producer.name: p.prep.producer for p in planned}
        click.echo(summary.format_markdown(plans, verdicts, models), nl=False)
    else:
        click.echo(summary.format_text(plans), nl=False)
    ctx.exit(2 if any(p.changed for p in planned) else 0)


@cli.command()
@click.option("--producer", required=True, metavar="P", help="The one producer to apply.")
@click.option("--auto-approve", is_flag=True, help="Apply without asking (needed without a terminal).")
@click.option(
    "--allow-destroy",
    multiple=True,
    metavar="NAME",
    help="Allow deleting this droplet, database or database user (name or address).",
)
@click.option(
    "--allow-replace",
    multiple=True,
    metavar="NAME",
    help="Allow replacing (destroy + create) this droplet, database or user.",
)
@sandbox_option
@click.option(
    "--with-gpu",
    "gpu",
    multiple=True,
    metavar="NAME",
    help="Also create the on-demand GPU droplet NAME for this apply.",
)
@out_option
@mesh_option
@click.pass_context
def apply(
    ctx: click.Context,
    producer: str,
    auto_approve: bool,
    allow_destroy: tuple[str, ...],
    allow_replace: tuple[str, ...],
    sandbox: bool,
    gpu: tuple[str, ...],
    out: Path,
    mesh_hosts: Path | None,
) -> None:
    """Plan one producer, guard, confirm, apply exactly that saved plan, register its hosts.

    The guard refuses (exit 3) a plan that deletes or replaces a droplet, database or database
    user not named with --allow-destroy / --allow-replace. A live apply refuses when generated/
    is stale. Terraform's progress streams while it runs; Ctrl-C stops it cleanly. With
    --mesh-hosts, the new hosts are then written to mesh-hosts.json (see `register`).
    """
    from infra_apply import deploy, mesh, summary
    from infra_apply.errors import InfraApplyError

    c, prep = _one(ctx, producer, out, sandbox, mesh_hosts, refuse_stale=True)

    def show(planned: Any, verdict: Any) -> None:
        click.echo(summary.format_text([planned.plan]), nl=False)
        for unused in summary.unused_allowances(planned.plan, allow_destroy, allow_replace):
            click.echo(f"infra-apply: warning: {unused.message}", err=True)

    def confirm(planned: Any) -> bool:
        if auto_approve:
            return True
        if not sys.stdin.isatty():
            raise InfraApplyError(
                "refusing to apply without a terminal to confirm on; review the plan and rerun "
                "with --auto-approve"
            )
        return click.confirm(f"Apply these changes to producer {prep.producer.name}?", default=False)

    outcome = deploy.apply_producer(
        c,
        prep,
        allow_destroy=allow_destroy,
        allow_replace=allow_replace,
        confirm=confirm,
        show=show,
        echo=click.echo,
        gpu=gpu,
    )
    click.echo(f"{prep.producer.name}: {'applied' if outcome.applied else 'nothing to apply'}")
    if outcome.registration is not None:
        for line in mesh.describe(outcome.registration):
            click.echo(line)
    elif deploy.mesh_target(c) is None:
        click.echo(
            "infra-apply: no --mesh-hosts given; hosts not registered (run infra-apply register)", err=True
        )


@cli.command()
@click.option("--producer", required=True, metavar="P")
@click.option("--dry-run", is_flag=True, help="Print the diff that would be written; write nothing.")
@format_option("text", "json")
@sandbox_option
@out_option
@mesh_option
@click.pass_context
def register(
    ctx: click.Context,
    producer: str,
    dry_run: bool,
    fmt: str,
    sandbox: bool,
    out: Path,
    mesh_hosts: Path | None,
) -> None:
    """Write the producer's droplets (from Terraform state) into mesh-hosts.json.

    One mesh IP per droplet, shared by its host names; existing entries keep theirs; every
    other key is preserved. The write is locked and atomic; nothing is written when nothing
    changes. In sandbox mode the registry is a copy under the state dir.
    """
    from infra_apply import deploy, mesh

    c, prep = _one(ctx, producer, out, sandbox, mesh_hosts)
    result = deploy.register(c, prep, dry_run=dry_run)
    if fmt == "json":
        _emit_json(
            {
                "path": str(result.path),
                "written": result.wrote,
                "dry_run": dry_run,
                "diff": result.diff,
                "changes": [
                    {
                        "change": h.kind,
                        "host": h.host,
                        "mesh_ip": h.mesh_ip,
                        "droplet": h.droplet,
                        "fields": list(h.fields),
                    }
                    for h in result.changes
                ],
            }
        )
    elif dry_run:
        click.echo(result.diff or "no changes", nl=not result.diff)
    else:
        for line in mesh.describe(result):
            click.echo(line)
        if not result.wrote:
            click.echo(f"{result.path} already up to date")


@cli.command()
@click.option("--producer", required=True, metavar="P")
@click.argument("name")
@format_option("text", "json")
@sandbox_option
@out_option
@mesh_option
@click.pass_context
def rename(
    ctx: click.Context, producer: str, name: str, fmt: str, sandbox: bool, out: Path, mesh_hosts: Path | None
) -> None:
    """Rename the live droplet to its manifest NAME (DigitalOcean's rename action).

    Terraform ignores name changes (a rename must never replace a box); this applies the one
    `plan` reports as name drift, waits for the action, refreshes state and moves the
    droplet's mesh-hosts.json entries to the new name.
    """
    from infra_apply import deploy

    c, prep = _one(ctx, producer, out, sandbox, mesh_hosts)
    done = deploy.rename(c, prep, name)
    if fmt == "json":
        _emit_json(
            {
                "renamed": done is not None,
                "name": name,
                **({"droplet_id": done.droplet_id, "old": done.old} if done else {}),
            }
        )
    elif done is None:
        click.echo(f"{name}: live name already matches")
    else:
        click.echo(f"renamed droplet {done.droplet_id}: {done.old} -> {done.new}")


@cli.command()
@click.option("--producer", required=True, metavar="P")
@format_option("text", "json")
@sandbox_option
@out_option
@mesh_option
@click.pass_context
def adopt(
    ctx: click.Context, producer: str, fmt: str, sandbox: bool, out: Path, mesh_hosts: Path | None
) -> None:
    """Write import blocks for manifest droplets that already exist in the account.

    For droplets not in state but present under their manifest name, writes
    OUT/<producer>/imports.tf (in sandbox mode, a file under the state dir) so the next
    apply takes them over without replacing them.
    """
    from infra_apply import deploy

    c, prep = _one(ctx, producer, out, sandbox, mesh_hosts)
    found, target = deploy.adopt(c, prep)
    if fmt == "json":
        _emit_json(
            {
                "imports": str(target) if found else None,
                "adopted": [
                    {"address": a.address, "name": a.name, "droplet_id": a.droplet_id, "warning": a.warning}
                    for a in found
                ],
            }
        )
        return
    for a in found:
        click.echo(f"import {a.address} <- droplet {a.droplet_id} ({a.name})")
        if a.warning:
            click.echo(f"infra-apply: warning: {a.name}: {a.warning}", err=True)
    if found:
        click.echo(
            f"wrote {target}; run infra-apply plan / apply --producer {prep.producer.name} to take them over"
        )
    else:
        click.echo("nothing to adopt: every manifest droplet is in state or absent from the account")


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP take Ctrl-C's path: every running Terraform is told to stop, waited
    for, and infra-apply exits 128 + signum. Without this their default action would end
    infra-apply at once, leaving Terraform behind mid-apply.

    A signal the caller already ignores (``nohup`` ignores SIGHUP) stays ignored.
    """
    from infra_apply.errors import Stopped

    def stop(signum: int, _frame: object) -> None:
        raise Stopped(signum)

    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)  # Windows has no SIGHUP
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, stop)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def main() -> None:
    # Windows consoles and pipes: keep our own messages printable whatever the locale.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    stop_on_signals()
    cli(prog_name="infra-apply")


if __name__ == "__main__":  # pragma: no cover
    main()
