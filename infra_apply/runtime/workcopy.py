"""Working copies: where Terraform runs for one producer, and what the verbs need from it.

Each producer gets a working copy under the state dir holding the freshly rendered module
(never ``generated/``), its ``.terraform/``, saved plans and local state. The verbs
(``infra_apply.commands``) reach Terraform only through the ``WorkingCopy`` protocol, so a
test drives a verb with a fake and checks the order of its effects.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from infra_apply import kinds
from infra_apply.cloud.account import Account, LiveAccount, LiveProvider, Provider
from infra_apply.cloud.bucket import check_locking
from infra_apply.errors import InfraApplyError, Problem, TerraformError
from infra_apply.manifests.config import Config
from infra_apply.manifests.config import load as load_config
from infra_apply.manifests.manifest import Manifest
from infra_apply.manifests.model import Model, ProducerModel
from infra_apply.plan.parse import JsonObject
from infra_apply.render.alerts import NOT_SET, plans_alerts
from infra_apply.render.module import cache_file, render_model, sensitive_env
from infra_apply.render.output import Rendered, compare
from infra_apply.runtime import locks
from infra_apply.runtime import terraform as tf
from infra_apply.runtime.fs import private_dirs, read_or_fail, sync_private, tighten, write_private
from infra_apply.runtime.identity import keyed, settle
from infra_apply.runtime.paths import child
from infra_apply.runtime.state import (
    Backend,
    check_outside,
    checked_state_dir,
    state_dir,
    validation_cache,
)
from infra_apply.timing import MONOTONIC, Clock, done_line

if TYPE_CHECKING:
    from filelock import BaseFileLock

    from infra_apply.cloud.accounts import Accounts

PLAN_FILE = "infra-apply.tfplan"
STAMP = ".infra-apply-init"
IMPORTS = "imports.tf"
Say = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


@dataclass(frozen=True)
class Context:
    """What every verb that touches Terraform runs with: the options and the environment."""

    root: Path
    out: Path  # generated/: address ledgers and (outside the sandbox) imports.tf
    account: Account  # live or sandbox, chosen where the command starts (account.choose)
    mesh_path: Path | None
    env: Mapping[str, str] = field(repr=False)  # may hold the DigitalOcean token
    say: Say = field(default=_stderr)  # progress lines and warnings (stderr)
    clock: Clock = field(default=MONOTONIC, compare=False)  # times the phases on progress lines


@dataclass(frozen=True)
class Project:
    model: Model
    rendered: Mapping[str, Rendered]
    generated_stale: bool
    config: Config = field(default_factory=Config)
    manifests: Mapping[str, Manifest] = field(default_factory=dict)  # by path (pre-flight)
    # droplet names in the mesh registry this run reads; None: no registry given
    registered: frozenset[str] | None = None


class WorkingCopy(Protocol):
    """Terraform in one producer's working copy: what the verbs need from it.

    ``TerraformCopy`` is the real one. Every call raises (``TerraformError``) on failure.
    """

    @property
    def path(self) -> Path: ...

    def init(self) -> None:
        """``terraform init``, only when what it depends on changed since the last one."""

    def plan(
        self,
        *,
        variables: Mapping[str, str] | None = None,
        refresh_only: bool = False,
        targets: Sequence[str] = (),
    ) -> bool:
        """Save a plan (``PLAN_FILE``); True when Terraform says it changes something.
        ``targets``: only these resources (``-target``), for the GPU verbs."""
        ...

    def show(self) -> JsonObject:
        """``terraform show -json`` of the saved plan."""
        ...

    def state(self) -> JsonObject:
        """``terraform show -json`` of the state."""
        ...

    def apply(self, *, echo: Say | None = None) -> None:
        """Apply exactly the saved plan, streaming Terraform's output lines to ``echo``."""

    def output(self, name: str) -> object:
        """An output's value; ``terraform.OutputMissing`` when nothing was applied yet."""

    def refresh(self) -> None:
        """Bring the state up to date with the world (a refresh-only plan, applied)."""

    def untaint(self, address: str) -> None:
        """``terraform untaint ADDRESS``: keep an object an interrupted create left tainted."""

    def with_env(self, extra: Mapping[str, str]) -> WorkingCopy:
        """The same copy with ``extra`` in Terraform's environment (sandbox/reattach.py)."""
        ...


@dataclass(frozen=True)
class TerraformCopy:
    """The real working copy: the ``terraform`` binary run in ``wd.path`` with ``wd.env``."""

    wd: tf.Workdir
    producer: str
    say: Say = field(default=_stderr, compare=False)
    provider: Provider = field(default_factory=LiveProvider)
    clock: Clock = field(default=MONOTONIC, compare=False)
    # [alerts] slack.url_env unset: a plan that could change an alert raises it (alerts.py)
    missing_url: InfraApplyError | None = field(default=None, compare=False)
    lock_wait: str = tf.STATE_LOCK_WAIT  # how long plan and apply wait for a held state lock

    @property
    def path(self) -> Path:
        return self.wd.path

    def init(self) -> None:
        stamp = self._init_stamp()
        stamp_file = self.path / STAMP
        done = stamp_file.is_file() and read_or_fail(stamp_file) == stamp.encode()
        if done and (self.path / ".terraform").is_dir():
            return
        self.provider.before_init(self.path)
        self.say(f"{self.producer}: terraform init")
        started = self.clock()
        try:
            # Never -reconfigure: switching backends without migrating would plan from an empty
            # state and create every server a second time.
            tf.init(self.wd)
        except TerraformError as exc:
            raise TerraformError(
                f"{exc.message}\nIf the state backend changed (infra-apply.toml), migrate the state "
                f"first: terraform -chdir={self.path} init -migrate-state"
            ) from None
        tighten(self.path)  # init writes .terraform.lock.hcl 0644 whatever its umask
        write_private(stamp_file, stamp)
        self.say(done_line(self.producer, "init", self.clock() - started))

    def _init_stamp(self) -> str:
        """A hash of everything ``init`` depends on: the versions and backend blocks, the
        provider's pin (the lock file, or the sandbox's package hash), the CLI config."""
        names = ("versions.tf", "backend.tf")
        parts = [read_or_fail(self.path / n) for n in names if (self.path / n).is_file()]
        parts += self.provider.init_inputs(self.path)
        config = self.wd.env.get("TF_CLI_CONFIG_FILE")
        if config and Path(config).is_file():
            parts.append(read_or_fail(Path(config)))
        return hashlib.sha256(b"\0".join(parts)).hexdigest()

    def plan(
        self,
        *,
        variables: Mapping[str, str] | None = None,
        refresh_only: bool = False,
        targets: Sequence[str] = (),
    ) -> bool:
        if self.missing_url is not None and plans_alerts(targets, refresh_only=refresh_only):
            raise self.missing_url
        return tf.plan(
            self.wd,
            PLAN_FILE,
            variables=variables,
            refresh_only=refresh_only,
            targets=targets,
            lock_timeout=self.lock_wait,
        )

    def show(self) -> JsonObject:
        return tf.show_json(self.wd, PLAN_FILE)

    def state(self) -> JsonObject:
        return tf.show_json(self.wd)

    def apply(self, *, echo: Say | None = None) -> None:
        tf.apply(self.wd, PLAN_FILE, echo=echo, echo_stderr=echo, lock_timeout=self.lock_wait)

    def output(self, name: str) -> object:
        return tf.output_json(self.wd, name)

    def refresh(self) -> None:
        self.plan(refresh_only=True)
        self.apply()

    def untaint(self, address: str) -> None:
        self.wd.must("untaint", address, what=f"untaint {address}", no_color=True, lock_timeout="0s")

    def with_env(self, extra: Mapping[str, str]) -> TerraformCopy:
        return replace(self, wd=replace(self.wd, env={**self.wd.env, **extra}))


@dataclass(frozen=True)
class Prepared:
    """One producer ready for Terraform: its model, its fresh render and its working copy."""

    producer: ProducerModel
    rendered: Rendered
    copy: WorkingCopy
    cloud: Path | None = None  # the stand-in cloud file Terraform's provider talks to (sandbox)
    api_token: str | None = field(default=None, repr=False)  # for rename/adopt's API calls
    lock: BaseFileLock | None = None  # held until the process ends: one run per working copy
    # The sandbox provider's launcher and Terraform's environment, for a provider shared by
    # every plan and show of a run (sandbox/reattach.py); None outside the sandbox.
    shared_provider: tuple[Path, Mapping[str, str]] | None = field(default=None, repr=False)
    # by path: where an existing resource's declaration is (exists.py's located errors)
    manifests: Mapping[str, Manifest] = field(default_factory=dict, repr=False, compare=False)
    # held with ``lock``: one run per producer and account on this machine, whatever the tree
    producer_lock: BaseFileLock | None = field(default=None, repr=False, compare=False)
    account: Account = field(default_factory=LiveAccount)  # the run's (Context.account)
    registered: frozenset[str] | None = None  # Project.registered: ssh_from = "mesh" reads it


# --- before any work ------------------------------------------------------------------------


def check_ready(ctx: Context) -> None:
    """Before anything is written: the sandbox extra is installed (one line naming it when not),
    and the state dir is a writable folder outside ``--out`` and the root's ``generated/``."""
    ctx.account.require()
    state = checked_state_dir([ctx.out, ctx.root / "generated"], ctx.env, create=True)
    settle(ctx.root, state, ctx.env, ctx.say)


def tree_key(ctx: Context) -> str:
    """The key of this tree's folders under the state dir (``infra_apply.runtime.identity``); state
    still under the root's old path key is moved there first, once."""
    return settle(ctx.root, state_dir(ctx.env), ctx.env, ctx.say).key


def check_registry(ctx: Context) -> None:
    """A registry the verb would write but may not (read-only) stops it before it starts, not
    after Terraform changed the world. Sandbox runs only read it (they write a copy)."""
    written = ctx.account.written_registry(ctx)
    if written is not None:
        from infra_apply.registry.meshfile import check_writable

        check_writable(written)


# --- loading ------------------------------------------------------------------------------


def load_project(
    ctx: Context, *, refuse_stale: bool = False, warn_for: Sequence[str] | None = None
) -> Project:
    """Validate, model and render. A live run notes HCL that differs from the reviewed
    ``generated/``; with ``refuse_stale`` (apply) it refuses it: what is applied must be what
    the pull request showed. Any error of any file stops the run; with ``warn_for`` (the
    producers a verb works on) only their manifests' warnings are said."""
    from infra_apply.manifests.build import build_model
    from infra_apply.manifests.validate import require_valid

    # The sandbox world has its own registry: hosts it registered count as in the mesh there.
    mesh = mesh_target(ctx)
    config = load_config(ctx.root, ctx.env)
    cache = validation_cache(ctx.root, ctx.env)
    v = require_valid(ctx.root, mesh, cache, _quiet, config)
    model = build_model(v)
    for p in warnings_for(v.warnings, model, warn_for):
        ctx.say(p.format())
    # render's cache: unchanged manifests, ledgers and templates are not rendered again
    rendered = render_model(model, ctx.out, cache_file(cache))
    drift = compare(rendered, ctx.out)
    project = Project(
        model,
        {r.producer: r for r in rendered},
        bool(drift.stale or drift.extra),
        config,
        {m.path: m for m in v.manifests},
        _registered(v.mesh_hosts, ctx.account.owns_registry),
    )
    if project.generated_stale and ctx.account.runs_reviewed_render:
        from infra_apply import remedy

        again = remedy.command("render", keep=())  # the run's --root and --out, when given
        if refuse_stale:
            raise InfraApplyError(
                f"{ctx.out} is out of date with the manifests: run {again}, review and "
                "commit the diff, then apply (a live apply only applies the Terraform under review)"
            )
        ctx.say(
            f"infra-apply: note: {ctx.out} is out of date with the manifests; planning the fresh "
            f"render (run {again} and commit it)"
        )
    return project


def _registered(hosts: Mapping[str, Mapping[str, Any]] | None, own: bool) -> frozenset[str] | None:
    """The droplets in the registry. An account without a registry of its own yet has
    registered nothing; a live run without one does not know."""
    if hosts is None:
        return frozenset() if own else None
    return frozenset(str(e["droplet"]) for e in hosts.values() if isinstance(e, Mapping) and e.get("droplet"))


def _quiet(_line: str) -> None:
    pass  # the warnings are said by ``warnings_for``'s choice


def warnings_for(warnings: Iterable[Problem], model: Model, producers: Sequence[str] | None) -> list[Problem]:
    """The warnings worth saying when working on ``producers`` (None: all): a warning in a
    manifest that feeds only other producers is theirs; one anywhere else (the config, the
    mesh registry, a manifest feeding no producer) is everyone's."""
    if producers is None:
        return list(warnings)
    wanted = {n.lstrip("@") for n in producers}
    feeds: dict[str, set[str]] = {}
    for pm in model.producers:
        for source in pm.sources:
            feeds.setdefault(source, set()).add(pm.name)
    return [p for p in warnings if p.path not in feeds or feeds[p.path] & wanted]


def pick(project: Project, names: Sequence[str]) -> list[str]:
    available = sorted(project.rendered)
    if not names:
        return available
    unknown = [n.lstrip("@") for n in names if n.lstrip("@") not in project.rendered]
    if unknown:
        raise InfraApplyError(
            f"unknown producer {', '.join(unknown)}; producers with something to "
            f"provision: {', '.join(available) or 'none'}"
        )
    return sorted({n.lstrip("@") for n in names})


def prepare_one(
    ctx: Context, producer: str, *, refuse_stale: bool = False, preflight_gpu: Sequence[str] | None = None
) -> Prepared:
    """Checks, load, and the one prepared working copy a single-producer verb needs; with
    ``preflight_gpu`` (apply) the pre-flight checks run first."""
    check_ready(ctx)
    project = load_project(ctx, refuse_stale=refuse_stale, warn_for=[producer])
    [name] = pick(project, [producer])
    if preflight_gpu is not None:
        preflight(ctx, project, [name], preflight_gpu)
    [prep] = prepare(ctx, project, [name])
    return prep


def preflight(
    ctx: Context,
    project: Project,
    producers: Sequence[str],
    gpu: Sequence[str] | Callable[[], Sequence[str]] = (),
    accounts: Accounts | None = None,
) -> None:
    """Pre-flight (token, clusters, SSH keys, slugs) before any Terraform process starts: a
    problem stops the run with its manifest line and nothing planned. ``gpu`` as a callable
    (reading the GPU leases) is called only after the account answered (``preflight.problems``).
    ``accounts``: the run's live accounts, whose catalogue prices and lookups read again."""
    from infra_apply.cloud import preflight as checks

    found = checks.problems(
        root=ctx.root,
        env=ctx.env,
        account=ctx.account,
        model=project.model,
        manifests=project.manifests,
        config=project.config,
        producers=producers,
        gpu=gpu,
        say=ctx.say,
        accounts=accounts,
    )
    checks.enforce(found, ctx.account.label, say=ctx.say)


# --- working copies -------------------------------------------------------------------------


def workdir_root(ctx: Context) -> Path:
    state = state_dir(ctx.env)
    check_outside(state, ctx.out)
    return keyed(state, f"work/{ctx.account.word}", tree_key(ctx))


def workdir(ctx: Context, producer: str) -> Path:
    """A producer's working copy: a folder of its own directly under ``workdir_root``."""
    base = workdir_root(ctx)
    return child(base, producer)


def sandbox_overlay(ctx: Context, producer: str) -> Path:
    state = state_dir(ctx.env)
    base = keyed(state, "sandbox/imports", tree_key(ctx))
    return child(base, producer)


def imports_file(ctx: Context, producer: str) -> Path:
    return ctx.account.imports_folder(ctx, producer) / IMPORTS


def terraform_env(ctx: Context, producer: str, provider: Provider) -> dict[str, str]:
    env = provider.environment(ctx.env, producer, ctx.say)
    for ours, theirs in (
        ("SPACES_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("SPACES_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ):
        if ctx.env.get(ours) and not ctx.env.get(theirs):
            env[theirs] = ctx.env[ours]
    env.setdefault("CHECKPOINT_DISABLE", "1")
    env["TF_IN_AUTOMATION"] = "1"
    return env


def sensitive_or_missing(
    r: Rendered, config: Config, env: Mapping[str, str], stand_in: str | None
) -> tuple[dict[str, str], InfraApplyError | None]:
    """``sensitive_env``, or, when one is unset (or refused), ``NOT_SET`` for each and the error
    a plan that could change an alert raises (``TerraformCopy.plan``): the GPU verbs' targeted
    plans, drift's refresh and db-credentials change no alert and must not stop for want of a
    Slack URL (a reaper that stops releasing GPUs bills them)."""
    try:
        return sensitive_env(r, config, env, stand_in), None
    except InfraApplyError as exc:
        return sensitive_env(r, config, {}, NOT_SET), exc


def prepare(ctx: Context, project: Project, producers: Sequence[str]) -> list[Prepared]:
    """Working copies for ``producers``, synced to the fresh render (``init`` is the verb's)."""
    binary = tf.state_binary(ctx.env, state_dir(ctx.env))
    backend = ctx.account.backend(ctx.root, ctx.env)
    # Before any Terraform run relies on the bucket's lockfile.
    check_locking(state_dir(ctx.env), backend, binary, ctx.env)
    provider = ctx.account.provider(ctx, project.config)
    base = workdir_root(ctx)
    try:
        private_dirs(base, state_dir(ctx.env))
        # Local state holds database passwords: working copies (and their locks) an older
        # version left readable by others are made private before Terraform runs again.
        tighten(base)
    except OSError as exc:
        raise InfraApplyError(f"cannot write the working copies {base}: {exc.strerror}") from None
    out = []
    for name in producers:
        path = workdir(ctx, name)
        env = terraform_env(ctx, name, provider)
        # The sensitive variables its module declares (the Slack webhook URL), from the environment.
        secrets, missing = sensitive_or_missing(
            project.rendered[name], project.config, ctx.env, ctx.account.webhook_stand_in
        )
        env |= secrets
        copy = TerraformCopy(
            tf.Workdir(binary, path, env),
            name,
            ctx.say,
            provider,
            ctx.clock,
            missing,
            tf.state_lock_wait(ctx.env),
        )
        lock = lock_working_copy(path, name)
        held = lock_producer(state_dir(ctx.env), provider.holder(env), name)
        if path.is_dir():
            tf.wait_for_earlier(path, _prefixed(ctx.say, name))
        try:
            sync(ctx, project.rendered[name], path, backend, provider)
        except OSError as exc:
            raise InfraApplyError(f"cannot write the working copy {path}: {exc.strerror}") from None
        model = project.model.producer(name) or ProducerModel(name)
        token = env.get("DIGITALOCEAN_TOKEN")
        shared = (provider.shared, env) if provider.shared is not None else None
        rendered = project.rendered[name]
        cloud = provider.cloud
        out.append(
            Prepared(
                model,
                rendered,
                copy,
                cloud,
                token,
                lock,
                shared,
                project.manifests,
                held,
                ctx.account,
                project.registered,
            )
        )
    return out


def _prefixed(say: Say, producer: str) -> Say:
    return lambda line: say(f"{producer}: {line}")


def sync(ctx: Context, rendered: Rendered, path: Path, backend: Backend, provider: Provider) -> None:
    private_dirs(path, path.parent)
    files = {n: t.encode("utf-8") for n, t in rendered.module_files().items()}
    _sync_user_data(path, files)
    extra = imports_file(ctx, rendered.producer)
    if extra.is_file():
        files[IMPORTS] = read_or_fail(extra)
    backend_hcl = backend.hcl(rendered.producer)
    if backend_hcl:
        files["backend.tf"] = backend_hcl.encode("utf-8")
    sync_private(path, files)
    lock = provider.reviewed_lock(ctx.out, rendered.producer)
    if lock is not None:
        write_private(path / ".terraform.lock.hcl", read_or_fail(lock))
    if backend.kind != "local" and _has_local_state(path):
        raise InfraApplyError(
            f"{path} holds local state but {backend.kind} remote state is configured; migrate it "
            f"first (terraform -chdir={path} init -migrate-state)"
        )


def _sync_user_data(path: Path, files: Mapping[str, bytes]) -> None:
    """The working copy's user-data/ holds exactly the rendered user-data files."""
    from infra_apply.render.output import USER_DATA_DIR

    folder = path / USER_DATA_DIR
    wanted = {n for n in files if n.startswith(f"{USER_DATA_DIR}/")}
    if wanted:
        private_dirs(folder, path)
    if folder.is_dir():
        for f in folder.iterdir():
            if f"{USER_DATA_DIR}/{f.name}" not in wanted:
                f.unlink()


def _has_local_state(path: Path) -> bool:
    return tf.local_state_has_resources(path)


def lock_working_copy(path: Path, producer: str) -> BaseFileLock:
    """One infra-apply run per working copy; the lock lives as long as the process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    what = f"the working copy of producer {producer} ({path})"
    return locks.acquire(Path(f"{path}.lock"), what, singleton=True)


def lock_producer(state: Path, account: str, producer: str) -> BaseFileLock:
    """One run per producer and account on this machine, from whichever tree: two trees whose
    local state is kept apart (copies outside git) would each find nothing of the producer in
    the account, and both create it. Held as long as the process, like the working copy's."""
    digest = hashlib.sha256(f"{account}\0{producer}".encode()).hexdigest()[:20]
    folder = state / "locks"
    private_dirs(folder, state)
    return locks.acquire(
        folder / f"producer-{digest}.lock",
        f"producer {producer} in the same account (from a tree whose state is kept apart from this one's)",
        singleton=True,
        remedy="wait for it to finish, then run again (the account check then sees what it made)",
    )


# --- state --------------------------------------------------------------------------------


def state_droplets(prep: Prepared) -> dict[str, JsonObject]:
    """Address (without index) -> attributes of each managed droplet in state."""
    prep.copy.init()
    out: dict[str, JsonObject] = {}
    stack = [_object(_object(prep.copy.state().get("values")).get("root_module"))]
    while stack:
        module = stack.pop()
        for r in map(_object, _array(module.get("resources"))):
            if r.get("type") == kinds.DROPLET.type and r.get("mode") == "managed":
                out[kinds.DROPLET.address(str(r.get("name")))] = _object(r.get("values"))
        stack.extend(map(_object, _array(module.get("child_modules"))))
    return out


def _object(value: object) -> JsonObject:
    return value if isinstance(value, Mapping) else {}


def _array(value: object) -> list[object]:
    return value if isinstance(value, list) else []


# --- the mesh registry ----------------------------------------------------------------------


def mesh_target(ctx: Context) -> Path | None:
    """The registry registration writes to (the account's: a sandbox run never writes the
    operator's mesh-hosts.json)."""
    return ctx.account.registry(ctx)
