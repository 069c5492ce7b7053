"""The command line: a thin click group. Heavy modules are imported inside commands so
``--help`` stays fast."""

from __future__ import annotations

import json
import os
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
            click.echo(exc.format(), err=True)
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
    _check_path("--root", root)
    ctx.obj = Settings(root, mesh_hosts)


def _check_path(option: str, path: Path) -> None:
    """A path the OS cannot even look up (too long, a loop) is bad input, not a bug; a missing
    one is left to the command, which says what it expected there."""
    from infra_apply.errors import InfraApplyError

    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        shown = str(path) if len(str(path)) <= 80 else f"{str(path)[:60]}... ({len(str(path))} characters)"
        raise InfraApplyError(f"{option} {shown}: {exc.strerror}") from None


def _state_dir(ctx: click.Context, out: Path | None, *, create: bool) -> None:
    """Check the state dir before anything is written into it: never inside --out or the root's
    generated/ (every command), and a writable folder (commands that keep state there)."""
    from infra_apply.state import checked_state_dir

    if out is None:
        out = Path(os.environ.get("INFRA_APPLY_OUT") or "generated")
    else:
        _check_path("--out", out)
    checked_state_dir([out, _root(ctx) / "generated"], create=create)


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


def _complete(kind: str) -> Callable[[click.Context, click.Parameter, str], list[Any]]:
    """A shell_complete callback importing infra_apply.completion only when <Tab> asks."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from infra_apply import completion

        found: list[Any] = getattr(completion, f"complete_{kind}")(ctx, param, incomplete)
        return found

    return complete


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
@click.option(
    "--live",
    is_flag=True,
    help="Also run the pre-flight checks against the DigitalOcean account: the token works, "
    "every cluster and SSH key exists, every region, size and image slug exists and the size is "
    "offered in its region (with --sandbox: against the sandbox account).",
)
@click.option("--sandbox", is_flag=True, help="With --live: check against the sandbox account.")
@mesh_option
@format_option("text", "json")
@click.pass_context
def validate(
    ctx: click.Context, strict: bool, live: bool, sandbox: bool, mesh_hosts: Path | None, fmt: str
) -> None:
    """Discover and validate every manifest: YAML, the infra/v1 schema, the convention rules.

    Prints every problem of every file as `path:line:col: error|warning RULE: message`, then
    a summary. Exit 0 when valid, 1 on errors (or on warnings with --strict).
    """
    from infra_apply.state import validation_cache
    from infra_apply.validate import validate_tree

    if sandbox and not live:
        raise click.UsageError("--sandbox goes with --live (the sandbox account is what it checks)")
    _state_dir(ctx, None, create=sandbox)  # the validation cache (and the sandbox) live there
    v = validate_tree(_root(ctx), mesh_hosts, validation_cache(_root(ctx)))
    if live:
        v = _with_preflight(v, sandbox)
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


def _with_preflight(v: Validation, sandbox: bool) -> Validation:
    """validate --live: the pre-flight problems of every producer, after a clean validation
    (a tree with errors is not checked against the account)."""
    import dataclasses

    from infra_apply import preflight
    from infra_apply.build import build_model

    if v.errors:
        click.echo("infra-apply: pre-flight skipped: fix the errors above first", err=True)
        return v
    model = build_model(v)
    found = preflight.problems(
        root=v.discovery.root,
        env=dict(os.environ),
        sandbox=sandbox,
        model=model,
        manifests={m.path: m for m in v.manifests},
        config=v.config,
        producers=[p.name for p in model.producers if p.droplets or p.databases],
        say=lambda line: click.echo(line, err=True),
    )
    from infra_apply.errors import Problem

    return dataclasses.replace(v, problems=tuple(sorted({*v.problems, *found}, key=Problem.sort_key)))


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

    _state_dir(ctx, out, create=False)  # the validation cache lives there
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

    if sandbox:
        # Before any work: a runtime-only install gets one line naming the extra.
        from infra_apply.sandbox import extra

        extra.require()
    def say(line: str) -> None:
        click.echo(line, err=True)

    _state_dir(ctx, out, create=True)
    return Context(
        root=_root(ctx), out=out, sandbox=sandbox, mesh_path=mesh_hosts, env=dict(os.environ), say=say
    )


def _check_registry(sandbox: bool, mesh_hosts: Path | None) -> None:
    """A registry the command would write but may not (read-only) stops it before it starts,
    not after Terraform changed the world. Sandbox runs only read it (they write a copy)."""
    if mesh_hosts is not None and not sandbox:
        from infra_apply.mesh import check_writable

        check_writable(mesh_hosts)


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
    preflight_gpu: tuple[str, ...] | None = None,
) -> tuple[Any, Any]:
    """The deploy context and the one prepared working copy a single-producer command needs;
    with ``preflight_gpu`` (apply), pre-flight runs first."""
    from infra_apply import deploy

    c = _context(ctx, out, sandbox, mesh_hosts)
    project = _load(c, refuse_stale=refuse_stale)
    [name] = deploy.pick(project, [producer])
    if preflight_gpu is not None:
        _preflight(c, project, [name], preflight_gpu)
    [prep] = deploy.prepare(c, project, [name])
    return c, prep


def _preflight(c: Any, project: Any, producers: list[str], gpu: tuple[str, ...]) -> None:
    """Pre-flight (token, clusters, SSH keys, slugs) before any Terraform process starts: a
    problem stops the run with its manifest line and nothing planned."""
    from infra_apply import preflight

    preflight.run(
        root=c.root,
        env=c.env,
        sandbox=c.sandbox,
        model=project.model,
        manifests=project.manifests,
        config=project.config,
        producers=producers,
        gpu=gpu,
        say=c.say,
    )


@cli.command()
@click.option(
    "--producer",
    "producers",
    multiple=True,
    metavar="P",
    shell_complete=_complete("producers"),
    help="Producer to plan (repeatable); all producers when omitted.",
)
@format_option("text", "json", "markdown")
@sandbox_option
@click.option(
    "--with-gpu",
    "gpu",
    multiple=True,
    metavar="NAME",
    shell_complete=_complete("gpu_droplets"),
    help="Also plan the on-demand GPU droplet NAME (off by default).",
)
@click.option(
    "--changed",
    is_flag=True,
    help="Plan only the producers whose manifests, generated module or configuration changed "
    "since --base (git: the branch's commits plus uncommitted and untracked files); a change to "
    "infra-apply.toml or the templates plans every producer.",
)
@click.option(
    "--base",
    metavar="REF",
    envvar="INFRA_APPLY_BASE",
    default="origin/main",
    show_default="$INFRA_APPLY_BASE, else origin/main",
    help="With --changed: compare with the merge base of REF and HEAD.",
)
@click.option(
    "--list",
    "list_only",
    is_flag=True,
    help="Print the producers that would be planned (one a line, or JSON with --format json) "
    "and plan nothing; with --changed, for a CI matrix.",
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
    changed: bool,
    base: str,
    list_only: bool,
    out: Path,
    mesh_hosts: Path | None,
) -> None:
    """Render, then terraform plan each producer (in parallel) and summarise the changes.

    Text for a terminal, JSON for tools, markdown for a pull-request comment (with a Mermaid
    diagram). Name drift (a droplet whose live name differs from its manifest) is reported.
    Exit 0 when nothing changes, 2 when something does, 1 on error.
    """
    from infra_apply import deploy
    from infra_apply.report import producer_reports
    from infra_apply.report.json import format_json
    from infra_apply.report.markdown import format_markdown
    from infra_apply.report.text import format_text

    c = _context(ctx, out, sandbox, mesh_hosts)
    found = _changes(ctx, producers, changed, base, out, fmt, list_only)
    project = _load(c)
    if found is None:
        names = deploy.pick(project, producers)
    else:
        names = [n for n in found.selection.producers if n in project.rendered]
    if list_only or (found is not None and not names):
        _plan_nothing(ctx, found, names, fmt, list_only)
    _preflight(c, project, names, gpu)
    preps = deploy.prepare(c, project, names)
    planned = deploy.plan_all(preps, c.say, gpu=gpu)
    plans = [p.plan for p in planned]
    verdicts = deploy.verdicts(planned)
    models = {p.prep.producer.name: p.prep.producer for p in planned}
    reports = producer_reports(plans, verdicts, models)
    if fmt == "json":
        click.echo(format_json(reports), nl=False)
    elif fmt == "markdown":
        click.echo(format_markdown(reports), nl=False)
    else:
        click.echo(format_text(reports), nl=False)
    ctx.exit(2 if any(p.changed for p in planned) else 0)


def _changes(
    ctx: click.Context,
    producers: tuple[str, ...],
    changed: bool,
    base: str,
    out: Path,
    fmt: str,
    list_only: bool,
) -> Any:
    """plan --changed: what git says changed (None without --changed); exits at once, without
    validating, when no producer changed."""
    if not changed:
        return None
    if producers:
        raise click.UsageError("--changed selects the producers itself; drop --producer")
    from infra_apply.changed import changed_producers, describe

    found = changed_producers(_root(ctx), out, base, os.environ)
    for line in describe(found):
        click.echo(line, err=True)
    if not found.selection.producers:
        _plan_nothing(ctx, found, [], fmt, list_only)
    return found


def _plan_nothing(ctx: click.Context, found: Any, names: list[str], fmt: str, list_only: bool) -> None:
    """--list: the producers plan would plan; --changed with none of them: "No changes"."""
    from infra_apply.changed import listing, nothing_to_plan

    if list_only:
        click.echo(listing(names, found, fmt), nl=False)
    else:
        click.echo(nothing_to_plan(fmt, found.base), nl=False)
    ctx.exit(0)


@cli.command()
@click.option(
    "--producer",
    required=True,
    metavar="P",
    shell_complete=_complete("producers"),
    help="The one producer to apply.",
)
@click.option("--auto-approve", is_flag=True, help="Apply without asking (needed without a terminal).")
@click.option(
    "--allow-destroy",
    multiple=True,
    metavar="NAME",
    shell_complete=_complete("droplets"),
    help="Allow deleting this droplet, database or database user (name or address).",
)
@click.option(
    "--allow-replace",
    multiple=True,
    metavar="NAME",
    shell_complete=_complete("droplets"),
    help="Allow replacing (destroy + create) this droplet, database or user.",
)
@sandbox_option
@click.option(
    "--with-gpu",
    "gpu",
    multiple=True,
    metavar="NAME",
    shell_complete=_complete("gpu_droplets"),
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
    from infra_apply import deploy, mesh
    from infra_apply.errors import InfraApplyError
    from infra_apply.guard import unused_allowances
    from infra_apply.report import ProducerReport
    from infra_apply.report.text import format_text

    _check_registry(sandbox, mesh_hosts)
    c, prep = _one(ctx, producer, out, sandbox, mesh_hosts, refuse_stale=True, preflight_gpu=gpu)

    def show(planned: Any, verdict: Any) -> None:
        click.echo(format_text([ProducerReport(planned.plan, verdict, prep.producer)]), nl=False)
        for unused in unused_allowances(planned.plan, allow_destroy, allow_replace):
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
@click.option("--producer", required=True, metavar="P", shell_complete=_complete("producers"))
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

    if not dry_run:
        _check_registry(sandbox, mesh_hosts)
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
@click.option("--producer", required=True, metavar="P", shell_complete=_complete("producers"))
@click.argument("name", shell_complete=_complete("droplets"))
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

    _check_registry(sandbox, mesh_hosts)
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
@click.option("--producer", required=True, metavar="P", shell_complete=_complete("producers"))
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


@cli.command()
@click.option("--pr", type=click.IntRange(min=1), required=True, metavar="N", help="The pull request number.")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--forge",
    type=click.Choice(["github", "forgejo"]),
    default=None,
    help="Default: forgejo when FORGEJO_* (or GITEA_ACTIONS) is set or GITHUB_API_URL ends in "
    "/api/v1, else github.",
)
@click.option(
    "--api-url",
    metavar="URL",
    default=None,
    help="API root. Default: $GITHUB_API_URL, else https://api.github.com (GitHub) or "
    "$FORGEJO_SERVER_URL/api/v1 (Forgejo).",
)
@click.option(
    "--repo",
    metavar="OWNER/NAME",
    default=None,
    help="Default: $FORGEJO_REPOSITORY (Forgejo), else $GITHUB_REPOSITORY.",
)
@click.option(
    "--token-env",
    metavar="VAR",
    default=None,
    help="The environment variable holding the token. Default: FORGEJO_TOKEN, then GITHUB_TOKEN "
    "(Forgejo); GITHUB_TOKEN (GitHub). A token is never taken on the command line.",
)
@click.option(
    "--key",
    default="plan",
    show_default=True,
    help="Which of infra-apply's comments to update: one comment per key on a pull request.",
)
@click.option(
    "--details-url",
    metavar="URL",
    default=None,
    help="Where the full plan is (the CI run); linked from the note when a plan is cut.",
)
@format_option("text", "json")
@mesh_option
@click.pass_context
def comment(
    ctx: click.Context,
    pr: int,
    file: Path,
    forge: str | None,
    api_url: str | None,
    repo: str | None,
    token_env: str | None,
    key: str,
    details_url: str | None,
    fmt: str,
    mesh_hosts: Path | None,
) -> None:
    """Post FILE (a markdown plan, - for stdin) to pull request N, updating infra-apply's
    comment there instead of adding another.

    The comment is found by a hidden marker on every page of the pull request's comments.
    Forge, API root, repository and token come from the CI variables of Forgejo Actions and
    GitHub Actions unless given. A body over the 65,536-character comment limit is cut at a line
    boundary with a note pointing at --details-url (or the CI log). The token is never printed,
    and secrets found in FILE are masked.
    """
    from infra_apply.comment import SECRET_ENV, publish, resolve_target
    from infra_apply.errors import InfraApplyError

    target = resolve_target(os.environ, forge=forge, api_url=api_url, repo=repo, token_env=token_env)
    try:
        raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
        text = raw.decode("utf-8")
    except OSError as exc:
        raise InfraApplyError(f"cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InfraApplyError(f"{file} is not UTF-8 text") from None
    secrets = [os.environ[v] for v in SECRET_ENV if os.environ.get(v)]
    done = publish(target, pr, text, key, secrets=secrets, details=details_url)
    if fmt == "json":
        _emit_json(
            {
                "action": done.action,
                "comment_id": done.comment_id,
                "url": done.url,
                "forge": target.forge,
                "repo": target.repo,
                "pr": pr,
                "cut": done.cut,
                "chars": done.chars,
            }
        )
    else:
        link = f": {done.url}" if done.url else ""
        click.echo(f"{done.action} comment {done.comment_id} on {target.repo}#{pr}{link}")
    if done.cut:
        click.echo(
            f"infra-apply: warning: {file} is over the comment limit; the comment shows its start "
            "and a note saying where the rest is",
            err=True,
        )


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@mesh_option
def completion(shell: str, mesh_hosts: Path | None) -> None:
    """Print the completion script for SHELL: commands, options, producers and droplet names.

    \b
      bash  ~/.bashrc:  eval "$(infra-apply completion bash)"
      zsh   ~/.zshrc:   eval "$(infra-apply completion zsh)"
      fish  infra-apply completion fish > ~/.config/fish/completions/infra-apply.fish

    Producers are the root's @ folders and droplet names come from the manifests under --root
    (or $INFRA_APPLY_ROOT), read without a validation run.
    """
    from infra_apply.completion import script

    click.echo(script(cli, shell), nl=False)


def main() -> None:
    # Windows consoles and pipes: keep our own messages printable whatever the locale.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    cli(prog_name="infra-apply")


if __name__ == "__main__":  # pragma: no cover
    main()
