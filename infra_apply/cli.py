"""The command line: a thin click group, one small function per verb calling
``infra_apply.commands.<verb>``. Shared options are declared once in ``infra_apply/options.py``;
heavy modules are imported inside commands so ``--help`` stays fast."""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from infra_apply import options
from infra_apply.errors import ExitCode
from infra_apply.options import root_of, use_color

if TYPE_CHECKING:
    from infra_apply.commands import Output
    from infra_apply.commands.apply import Terminal
    from infra_apply.errors import InfraApplyError
    from infra_apply.runtime.workcopy import Context


@contextlib.contextmanager
def _usage_errors_exit_1() -> Iterator[None]:
    """A usage error (unknown option, missing argument, bad choice) exits 1, not click's 2: for
    ``plan`` 2 means "changes" and for ``drift`` "drift", so a typo in CI must not read as a
    result. click still prints its own message."""
    try:
        yield
    except click.UsageError as exc:
        # click's classes declare exit_code at class level; this instance's is the one shown.
        exc.exit_code = int(ExitCode.ERROR)  # type: ignore[misc]
        raise


class Group(click.Group):
    """Catches the one exception family once; Ctrl-C exits 130 (SIGTERM 143, SIGHUP 129, once
    Terraform has stopped cleanly); bugs keep their traceback; usage errors exit 1.

    ``make_context`` parses the group's own options; ``invoke`` resolves and parses the verb
    (and a sub-group's verb), so between them every usage error passes through here."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _usage_errors_exit_1():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> object:
        with _usage_errors_exit_1():
            return self._invoke(ctx)

    def _invoke(self, ctx: click.Context) -> object:
        from infra_apply.errors import InfraApplyError, Stopped, ValidationFailed

        try:
            return super().invoke(ctx)
        except ValidationFailed as exc:
            for p in exc.problems:
                click.echo(p.format(), err=True)
            click.echo(f"infra-apply: {exc.message}; nothing was done", err=True)
            if exc.hint:
                click.echo(exc.hint, err=True)
            ctx.exit(int(exc.exit_code))
        except InfraApplyError as exc:
            _error(ctx, exc)
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
        except OSError as exc:
            if exc.errno not in _OUTPUT_LOST:
                _bug(ctx)
            _output_lost(ctx, exc)
        except Exception:
            _bug(ctx)


def _bug(ctx: click.Context) -> NoReturn:
    import traceback  # only a bug needs it

    traceback.print_exc()
    click.echo(
        "infra-apply: internal error (a bug); please report it with the traceback above",
        err=True,
    )
    ctx.exit(int(ExitCode.BUG))


# Files are written through fs.atomic_write, which turns these into InfraApplyError: one that
# reaches the CLI came from standard output (`> /dev/full`, a closed pipe, a full disk).
_OUTPUT_LOST = frozenset({errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})


def _output_lost(ctx: click.Context, exc: OSError) -> NoReturn:
    """One line, exit 1. What stdout still buffers goes to /dev/null: the interpreter's own
    flush at exit must not fail a second time ("Exception ignored", exit 120)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    with contextlib.suppress(OSError):
        click.echo(f"infra-apply: error: cannot write the output: {exc.strerror}", err=True)
    ctx.exit(int(ExitCode.ERROR))


def _error(ctx: click.Context, exc: InfraApplyError) -> NoReturn:
    """One located line (the guard's refusal: a line per blocked change, red on a terminal)."""
    from infra_apply.color import paint_lines
    from infra_apply.errors import GuardRefused

    color = use_color(ctx, err=True)
    text = paint_lines(exc.format(), "refusal", color) if isinstance(exc, GuardRefused) else exc.format()
    click.echo(text, err=True, color=color or None)
    ctx.exit(int(exc.exit_code))


def _interrupted(ctx: click.Context, exc: KeyboardInterrupt) -> NoReturn:
    from infra_apply.errors import Stopped

    how = f" by {signal_name(exc.signum)}" if isinstance(exc, Stopped) else ""
    # After a SIGHUP the terminal may be gone: failing to say so must not change the exit.
    with contextlib.suppress(OSError):
        click.echo(f"infra-apply: interrupted{how}", err=True)
    ctx.exit(int(exc.exit_code if isinstance(exc, Stopped) else ExitCode.INTERRUPTED))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@options.root_option
@options.group_mesh_option
@options.group_color_option
@click.version_option(package_name="infra-apply")
@click.pass_context
def cli(ctx: click.Context, root: Path, mesh_hosts: Path | None, color: bool | None) -> None:
    """Turn a tree of .infra.yaml manifests into DigitalOcean Terraform, plan and apply it per
    producer, and register the new hosts in the WireGuard mesh registry (mesh-hosts.json).

    \b
    Typical flow:
      infra-apply validate                 check every manifest against the convention
      infra-apply render                   write generated/<producer>/*.tf for review
      infra-apply plan --sandbox           plan against the local sandbox cloud
      infra-apply apply --producer quinn   plan, guard, confirm, apply, register hosts

    Environment: INFRA_APPLY_ROOT, INFRA_APPLY_MESH_HOSTS, INFRA_APPLY_STATE_DIR,
    INFRA_APPLY_TERRAFORM, DIGITALOCEAN_TOKEN (read by Terraform only, never written),
    NO_COLOR / FORCE_COLOR (colour off / on; --no-color / --color win).
    """
    from click.core import ParameterSource

    from infra_apply import remedy
    from infra_apply.runtime.paths import check_path

    try:
        os.getcwd()
    except FileNotFoundError:  # removed under the shell: every relative path would fail later
        from infra_apply.errors import InfraApplyError

        raise InfraApplyError(
            "the current folder no longer exists: cd to one that does and run again"
        ) from None
    ctx.obj = options.Settings(root, mesh_hosts, color)
    check_path("--root", root)
    # $INFRA_APPLY_ROOT and the current folder hold in the shell a remedy is pasted into;
    # --root on the command line does not, so remedies repeat it.
    # So are --mesh-hosts (also after the verb: options.py) and --out (for the verbs taking it).
    given = ctx.get_parameter_source("root") == ParameterSource.COMMANDLINE
    remedy.repeat_global(*(("--root", remedy.absolute(str(root))) if given else ()))
    if mesh_hosts is not None and ctx.get_parameter_source("mesh_hosts") == ParameterSource.COMMANDLINE:
        remedy.repeat_mesh(str(mesh_hosts))
    remedy.out_verbs(frozenset(_verbs_taking_out(ctx.command)))
    ctx.call_on_close(remedy.forget)


def _verbs_taking_out(group: click.Command, prefix: str = "") -> Iterator[str]:
    """``apply``, ``gpu up``, ...: every command under ``group`` with an ``--out`` option."""
    for name, command in getattr(group, "commands", {}).items():
        if isinstance(command, click.Group):
            yield from _verbs_taking_out(command, f"{prefix}{name} ")
        elif any(p.name == "out" for p in command.params):
            yield f"{prefix}{name}"


def _say(line: str) -> None:
    click.echo(line, err=True)


def _emit(ctx: click.Context, output: Output) -> NoReturn:
    """Write out what a verb returned and exit with its code."""
    # color=True keeps a forced colour (--color into a pipe) from being stripped by click;
    # otherwise click's own rule (strip escapes when not a terminal) stays as it was.
    click.echo(output.stdout, nl=False, color=use_color(ctx, err=False) or None)
    for line in output.stderr:
        click.echo(line, err=True)
    ctx.exit(int(output.code))


def _context(ctx: click.Context, out: Path, sandbox: bool, mesh_hosts: Path | None) -> Context:
    """What the verbs that run Terraform take: the options, this process's environment, and
    stderr for progress lines."""
    from infra_apply.cloud.account import choose
    from infra_apply.runtime.workcopy import Context

    return Context(root_of(ctx), out, choose(sandbox), mesh_hosts, dict(os.environ), _say)


def _terminal(ctx: click.Context) -> Terminal:
    from infra_apply.commands.apply import Terminal

    color = use_color(ctx, err=True)
    return Terminal(show=lambda text: click.echo(text, nl=False, err=True, color=color or None), color=color)


@cli.command()
@options.strict_option
@click.option(
    "--live",
    is_flag=True,
    help="Also run the pre-flight checks against the DigitalOcean account: the token works, "
    "every cluster and SSH key exists, every region, size and image slug exists and the size is "
    "offered in its region (with --sandbox: against the sandbox account).",
)
@click.option("--sandbox", is_flag=True, help="With --live: check against the sandbox account.")
@options.verb_globals
@options.format_option("text", "json")
@click.pass_context
def validate(
    ctx: click.Context, strict: bool, live: bool, sandbox: bool, mesh_hosts: Path | None, fmt: str
) -> None:
    """Discover and validate every manifest: YAML, the infra/v1 schema, the convention rules.

    Prints every problem of every file as `path:line:col: error|warning RULE: message`, then
    a summary. Exit 0 when valid, 1 on errors (or on warnings with --strict).
    """
    from infra_apply.commands import validate as verb

    if sandbox and not live:
        raise click.UsageError("--sandbox goes with --live (the sandbox account is what it checks)")
    from infra_apply.cloud.account import choose

    account = choose(sandbox) if live else None
    result = verb.run(root_of(ctx), mesh_hosts, os.environ, strict=strict, live=account, say=_say)
    _emit(ctx, verb.output(result, fmt))


@cli.command()
@options.verb_globals
@click.pass_context
def schema(ctx: click.Context, mesh_hosts: Path | None) -> None:
    """Print the infra/v1 JSON Schema (for editors and CI).

    \b
    Save it and point your editor at it, e.g. with yaml-language-server:
      infra-apply schema > infra-v1.schema.json
      # yaml-language-server: $schema=./infra-v1.schema.json
    """
    from infra_apply.commands import schema as verb

    _emit(ctx, verb.output(verb.run()))


@cli.command()
@options.out_option
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; list stale or missing files and exit 1 if OUT is out of date.",
)
@options.format_option("text", "json")
@options.verb_globals
@click.pass_context
def render(ctx: click.Context, out: Path, check: bool, fmt: str, mesh_hosts: Path | None) -> None:
    """Write OUT/<producer>/*.tf: one Terraform root module per producer, for review in a PR.

    Output is deterministic and `terraform fmt` clean. Droplet addresses come from
    OUT/<producer>/addresses.json and never change when a name does. Only files infra-apply
    wrote (with its do-not-edit header) are ever replaced or removed.
    """
    from infra_apply.commands import render as verb

    result = verb.run(root_of(ctx), out, mesh_hosts, os.environ, check=check, say=_say)
    _emit(ctx, verb.output(result, fmt))


@cli.command()
@options.producers_option("Producer to plan (repeatable); all producers when omitted.")
@options.format_option("text", "json", "markdown")
@options.sandbox_option
@options.gpu_option
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
@options.out_option
@options.verb_globals
@click.pass_context
def plan(
    ctx: click.Context,
    producers: tuple[str, ...],
    fmt: str,
    sandbox: bool,
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
    if changed and producers:
        raise click.UsageError("--changed selects the producers itself; drop --producer")
    from infra_apply.cloud.account import choose
    from infra_apply.cloud.accounts import started
    from infra_apply.runtime.identity import ask_git_ahead

    # the account's and git's answers arrive while the rest of the program is imported
    early = (
        None if changed or list_only else started(choose(sandbox), dict(os.environ), producers, root_of(ctx))
    )
    ask_git_ahead(root_of(ctx))
    from infra_apply.commands import plan as verb

    result = verb.run(
        _context(ctx, out, sandbox, mesh_hosts),
        producers,
        changed_since=base if changed else None,
        list_only=list_only,
        started=early,
    )
    _emit(ctx, verb.output(result, fmt, color=use_color(ctx, err=False)))


@cli.command()
@options.producer_option("The one producer to apply.")
@click.option("--auto-approve", is_flag=True, help="Apply without asking (needed without a terminal).")
@options.names_option(
    "--allow-destroy",
    help="Allow deleting this droplet (and its firewall), database or database user (name or address).",
)
@options.names_option(
    "--allow-replace", help="Allow replacing (destroy + create) this droplet, database or user."
)
@options.names_option(
    "--allow-resize",
    help="Allow resizing this droplet in place: downtime (powered off, resized, powered on) and a "
    "disk that grows and can never be shrunk back.",
)
@options.allow_over_budget_option
@options.trusted_sources_option
@options.sandbox_option
@options.gpu_option
@options.out_option
@options.verb_globals
@click.pass_context
def apply(
    ctx: click.Context,
    producer: str,
    auto_approve: bool,
    allow_destroy: tuple[str, ...],
    allow_replace: tuple[str, ...],
    allow_resize: tuple[str, ...],
    allow_over_budget: tuple[str, ...],
    allow_trusted_sources: tuple[str, ...],
    sandbox: bool,
    out: Path,
    mesh_hosts: Path | None,
) -> None:
    """Plan one producer, guard, confirm, apply exactly that saved plan, register its hosts.

    The guard refuses (exit 3) a plan that deletes or replaces a droplet (or its firewall),
    database or database user not named with --allow-destroy / --allow-replace (a firewall is
    named by its droplet), or resizes a droplet in place (a
    size change: downtime, and its disk can never shrink back) not named with --allow-resize,
    or changes a cluster's trusted sources so that a client is cut off, not named with
    --allow-trusted-sources.
    A plan over the producer's budget (infra-apply.toml [producers.P] budget_monthly /
    max_increase) is refused (exit 3) unless --allow-over-budget P.
    A live apply refuses when generated/ is stale. Terraform's progress streams while it runs;
    Ctrl-C stops it cleanly. With --mesh-hosts, the new hosts are then written to
    mesh-hosts.json (see `register`).
    """
    from infra_apply.commands import apply as verb

    def confirm(question: str) -> bool:
        return click.confirm(question, default=False)

    color = use_color(ctx, err=False)
    terminal = verb.Terminal(
        show=lambda text: click.echo(text, nl=False, color=color or None),
        confirm=confirm if sys.stdin.isatty() else None,
        color=color,
    )
    options_ = verb.ApplyOptions(
        allow_destroy=allow_destroy,
        allow_replace=allow_replace,
        allow_resize=allow_resize,
        allow_over_budget=allow_over_budget,
        allow_trusted_sources=allow_trusted_sources,
        auto_approve=auto_approve,
    )
    from infra_apply.forge.notify import notify_apply

    run_ctx = _context(ctx, out, sandbox, mesh_hosts)
    done = notify_apply(run_ctx, producer, lambda: verb.run(run_ctx, producer, terminal, options_))
    _emit(ctx, verb.output(done))


@cli.group()
def gpu() -> None:
    """On-demand GPU droplets (rule gpu_ondemand): lease one with `gpu up`, release it with
    `gpu down`; `gpu reap` (from a systemd timer, examples/systemd/) releases idle ones.

    Ordinary plan and apply keep every GPU as its lease says: on while a lease holds it, off
    without one.
    """


@gpu.command("up")
@click.argument("name", shell_complete=options.complete("gpu_droplets"))
@options.lease_option
@options.allow_over_budget_option
@options.workspace_options
@click.pass_context
def gpu_up(
    ctx: click.Context,
    name: str,
    for_: timedelta | None,
    allow_over_budget: tuple[str, ...],
    sandbox: bool,
    out: Path,
    mesh_hosts: Path | None,
) -> None:
    """Lease the on-demand GPU droplet NAME and create it (plan, guard, apply its producer with
    the GPU on), then register its hosts. Run again to renew the lease. The plan may change the
    GPU's own droplet and firewall only: anything else pending in the producer is refused, and
    so is a lease that takes the producer over its budget, unless --allow-over-budget P."""
    from infra_apply.commands import gpu as verb

    run = _context(ctx, out, sandbox, mesh_hosts)
    _emit(ctx, verb.up_output(verb.up(run, name, _terminal(ctx), for_, allow_over_budget)))


@gpu.command("down")
@click.argument("name", shell_complete=options.complete("gpu_droplets"))
@options.workspace_options
@click.pass_context
def gpu_down(ctx: click.Context, name: str, sandbox: bool, out: Path, mesh_hosts: Path | None) -> None:
    """Release the GPU droplet NAME: destroy it and its firewall (this command is the allowance;
    the guard refuses anything else), remove its hosts from mesh-hosts.json, end its lease."""
    from infra_apply.commands import gpu as verb

    _emit(ctx, verb.down_output(verb.down(_context(ctx, out, sandbox, mesh_hosts), name, _terminal(ctx))))


@gpu.command("status")
@options.format_option("text", "json")
@options.workspace_options
@click.pass_context
def gpu_status(ctx: click.Context, fmt: str, sandbox: bool, out: Path, mesh_hosts: Path | None) -> None:
    """Every GPU droplet, up or down: uptime, lease end, last busy time, hourly price and cost
    so far (hours started x price: an upper estimate)."""
    from infra_apply.commands import gpu as verb

    _emit(ctx, verb.status_output(verb.status(_context(ctx, out, sandbox, mesh_hosts)), fmt))


@gpu.command("reap")
@options.workspace_options
@click.pass_context
def gpu_reap(ctx: click.Context, sandbox: bool, out: Path, mesh_hosts: Path | None) -> None:
    """Probe each GPU that is up (its queue_depth command): a queue keeps it and extends its
    lease within max_lifetime; one idle for idle_after, past its lease or past max_lifetime is
    released. A failed release keeps the lease and exits 1; the next reap retries. Meant for a
    timer (examples/systemd/); a reap already running makes this one do nothing."""
    from infra_apply.commands import gpu as verb

    _emit(ctx, verb.reap_output(verb.reap(_context(ctx, out, sandbox, mesh_hosts), _terminal(ctx))))


@cli.command()
@options.producer_option()
@click.option("--dry-run", is_flag=True, help="Print the diff that would be written; write nothing.")
@options.format_option("text", "json")
@options.workspace_options
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
    from infra_apply.commands import register as verb

    done = verb.run(_context(ctx, out, sandbox, mesh_hosts), producer, dry_run=dry_run)
    _emit(ctx, verb.output(done, fmt))


@cli.command()
@options.producer_option()
@click.argument("name", shell_complete=options.complete("droplets"))
@options.format_option("text", "json")
@options.workspace_options
@click.pass_context
def rename(
    ctx: click.Context, producer: str, name: str, fmt: str, sandbox: bool, out: Path, mesh_hosts: Path | None
) -> None:
    """Rename the live droplet to its manifest NAME (DigitalOcean's rename action).

    Terraform ignores name changes (a rename must never replace a box); this applies the one
    `plan` reports as name drift, waits for the action, refreshes state and moves the
    droplet's mesh-hosts.json entries to the new name.
    """
    from infra_apply.commands import rename as verb

    result = verb.run(_context(ctx, out, sandbox, mesh_hosts), producer, name)
    _emit(ctx, verb.output(result, fmt))


@cli.command()
@options.producer_option()
@click.option(
    "--from-state",
    "from_state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Take over from an existing Terraform root: FILE is its terraform.tfstate, or the output "
    "of `terraform state pull` or `terraform show -json`.",
)
@click.option(
    "--removed-file",
    "removed_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="With --from-state: write the old root's `removed` blocks to PATH (default: a file "
    "under the state dir, printed).",
)
@options.format_option("text", "json")
@options.workspace_options
@click.pass_context
def adopt(
    ctx: click.Context,
    producer: str,
    from_state: Path | None,
    removed_file: Path | None,
    fmt: str,
    sandbox: bool,
    out: Path,
    mesh_hosts: Path | None,
) -> None:
    """Write import blocks for manifest droplets that already exist in the account.

    For droplets not in state but present under their manifest name, writes
    OUT/<producer>/imports.tf (in sandbox mode, a file under the state dir) so the next
    apply takes them over without replacing them.

    With --from-state FILE, takes over the droplets, firewalls, databases and database users
    an existing Terraform root manages and the manifests declare: import blocks for this
    producer, and a file of `removed` blocks for the old root, which forgets them without
    destroying anything. A difference that would replace something is named, and then nothing
    is written (exit 1). infra-apply never runs anything in the old root.
    """
    from infra_apply.commands import adopt as verb

    context = _context(ctx, out, sandbox, mesh_hosts)
    if from_state is None:
        if removed_file is not None:
            raise click.UsageError("--removed-file goes with --from-state")
        _emit(ctx, verb.output(verb.run(context, producer), fmt))
    taken = verb.run_from_state(context, producer, from_state, removed_file)
    _emit(ctx, verb.output_takeover(taken, fmt))


@cli.command("db-credentials")
@options.producer_option()
@click.argument("project")
@click.option(
    "--environment",
    type=click.Choice(["prod", "dev"]),
    default="prod",
    show_default=True,
    help="Which of the project's databases.",
)
@click.option(
    "--write",
    "write",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Write the dotenv to FILE (0600, atomically; never over a file others can read).",
)
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the dotenv (not onto a terminal).")
@click.option("--reveal", is_flag=True, help="With --stdout: print it even onto a terminal.")
@click.option(
    "--connect",
    type=click.Choice(["private", "public"]),
    default=None,
    help="The cluster's host to write, instead of the one the project's droplet can reach "
    "(private: in the cluster's VPC; public: an address the cluster trusts).",
)
@options.workspace_options
@click.pass_context
def db_credentials(
    ctx: click.Context,
    producer: str,
    project: str,
    environment: str,
    write: Path | None,
    to_stdout: bool,
    reveal: bool,
    connect: str | None,
    sandbox: bool,
    out: Path,
    mesh_hosts: Path | None,
) -> None:
    """PROJECT's own database credentials, from state, as a dotenv file.

    DATABASE_URL (sslmode=require), PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PGSSLMODE.
    The host is the cluster's private one when the droplet hosting PROJECT is in the cluster's
    VPC; otherwise nothing is written unless --connect says which. Exactly one of --write FILE
    or --stdout.
    """
    from infra_apply.commands import db_credentials as verb

    if (write is None) == (not to_stdout):
        raise click.UsageError("give exactly one of --write FILE or --stdout")
    if reveal and not to_stdout:
        raise click.UsageError("--reveal goes with --stdout")
    target = verb.Target(write, tty=write is None and sys.stdout.isatty(), reveal=reveal)
    done = verb.run(_context(ctx, out, sandbox, mesh_hosts), producer, project, environment, target, connect)
    _emit(ctx, verb.output(done))


@cli.command()
@options.producers_option("Producer to check (repeatable); all producers when omitted.")
@options.format_option("text", "json", "markdown")
@options.workspace_options
@click.pass_context
def drift(
    ctx: click.Context,
    producers: tuple[str, ...],
    fmt: str,
    sandbox: bool,
    out: Path,
    mesh_hosts: Path | None,
) -> None:
    """Report what changed outside Terraform: a refresh-only plan per producer (never applied).

    Reports changes made behind Terraform's back (a console resize, edited tags, a deleted
    droplet), name drift, mesh-hosts.json entries that disagree with state (a missing host, a
    stale public IP) and droplets tagged managed-by:infra-apply that no state knows. A producer
    never applied here is "not applied yet", not drift. Every remedy printed is a command that
    works where the drift was found. Markdown is the body of the one issue a scheduled workflow
    keeps (examples/ci/). Exit 0 when there is no drift, 2 when there is, 1 on error.
    """
    from infra_apply.commands import drift as verb
    from infra_apply.forge.notify import notify_drift

    run_ctx = _context(ctx, out, sandbox, mesh_hosts)
    report = verb.run(run_ctx, producers)
    notify_drift(run_ctx, report)
    _emit(ctx, verb.output(report, fmt))


@cli.command()
@click.option("--pr", type=click.IntRange(min=1), default=None, metavar="N", help="The pull request number.")
@click.option(
    "--issue",
    metavar="TITLE",
    default=None,
    help="Instead of a pull request: keep FILES in the one open issue carrying the marker "
    "(opened with TITLE when there is none).",
)
@click.option("--close", is_flag=True, help="With --issue: update and close that issue (open none).")
@click.argument(
    "files",
    nargs=-1,
    required=True,
    metavar="FILE...",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
)
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
@options.format_option("text", "json")
@options.verb_globals
@click.pass_context
def comment(
    ctx: click.Context,
    pr: int | None,
    issue: str | None,
    close: bool,
    files: tuple[Path, ...],
    forge: str | None,
    api_url: str | None,
    repo: str | None,
    token_env: str | None,
    key: str,
    details_url: str | None,
    fmt: str,
    mesh_hosts: Path | None,
) -> None:
    """Post FILES (markdown plans, - for stdin) to pull request N, updating infra-apply's
    comment there instead of adding another (or, with --issue, keep them in one open issue).

    Several files (one plan per producer from a CI matrix) are combined into one plan: one
    header, one table, then every producer's section in producer order; a file that is not an
    infra-apply plan (a failed job's note) is kept as it is, after the plans.

    The comment is found by a hidden marker on every page of the pull request's comments, and
    only one written by the token's own user (GET /user; GitHub Actions' token is
    github-actions[bot]) is edited: another user's is named and left alone, and when the forge
    does not say whose the token is a new comment is posted.
    Forge, API root, repository and token come from the CI variables of Forgejo Actions and
    GitHub Actions unless given. A body over the 65,536-character comment limit is cut at a line
    boundary with a note pointing at --details-url (or the CI log). The token is never printed,
    and secrets found in FILES are masked.
    """
    from infra_apply.commands import comment as verb

    done = verb.run(
        os.environ,
        pr,
        files,
        read_stdin=sys.stdin.buffer.read,
        forge=forge,
        api_url=api_url,
        repo=repo,
        token_env=token_env,
        key=key,
        details=details_url,
        issue=issue,
        close=close,
    )
    _emit(ctx, verb.output(done, fmt))


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@options.verb_globals
@click.pass_context
def completion(ctx: click.Context, shell: str, mesh_hosts: Path | None) -> None:
    """Print the completion script for SHELL: commands, options, producers and droplet names.

    \b
      bash  ~/.bashrc:  eval "$(infra-apply completion bash)"
      zsh   ~/.zshrc:   eval "$(infra-apply completion zsh)"
      fish  infra-apply completion fish > ~/.config/fish/completions/infra-apply.fish

    Producers are the root's @ folders and droplet names come from the manifests under --root
    (or $INFRA_APPLY_ROOT), read without a validation run.
    """
    from infra_apply.commands import completion as verb

    _emit(ctx, verb.output(verb.run(cli, shell)))


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP take Ctrl-C's path: every running Terraform is told to stop, waited
    for, and infra-apply exits 128 + signum. Without this their default action would end
    infra-apply at once, leaving Terraform behind mid-apply.

    A signal the caller already ignores (``nohup`` ignores SIGHUP) stays ignored. Ctrl-C keeps
    raising KeyboardInterrupt; none of them is lost in a finalizer (``signals.stopping``).
    """
    from infra_apply.errors import Stopped
    from infra_apply.runtime.signals import stopping

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, stopping(lambda _: KeyboardInterrupt()))
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)  # Windows has no SIGHUP
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, stopping(Stopped))


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def main() -> None:
    from infra_apply.runtime import codecache

    # Before any command imports its modules: their dataclasses are defined as they load.
    codecache.install(os.environ)
    # Windows consoles and pipes: keep our own messages printable whatever the locale.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    stop_on_signals()
    try:
        cli(prog_name="infra-apply")
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            exit_at_once(done.code or 0)
        raise


def exit_at_once(code: int) -> None:
    """End the process now, skipping the interpreter's teardown (freeing every module and object:
    about 25 ms once a plan's modules are loaded), when teardown has nothing left to do for us:
    no thread but daemons, every Terraform waited for, the output flushed. The atexit handlers
    (filelock's release of held locks, tempfile's cleanups, logging's flush) still run, once.
    Returns, for the normal exit, whenever any of that does not hold."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return  # a profiler or coverage writes its data at the normal exit
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon for t in threading.enumerate()):
        return  # a worker the normal exit would join
    terraform = sys.modules.get("infra_apply.runtime.terraform")
    if terraform is not None and terraform.any_running():
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return  # a closed pipe: the normal exit reports it as it always did
    # A signal from here on would find no handler left to stop anything: the process is ending.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        code = code or 1
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
