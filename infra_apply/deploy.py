"""plan / apply / register / rename / adopt: the stages that touch Terraform and the world.

Each producer gets a working copy under the state dir holding the freshly rendered module
(never ``generated/``), its ``.terraform/``, saved plans and local state.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra_apply import terraform as tf
from infra_apply.config import Config
from infra_apply.config import load as load_config
from infra_apply.errors import GuardRefused, InfraApplyError, TerraformError
from infra_apply.fs import PRIVATE_FILE, atomic_write, private_dirs, tighten, write_private
from infra_apply.guard import GuardVerdict, guard
from infra_apply.manifest import Manifest
from infra_apply.model import Model, ProducerModel
from infra_apply.paths import child, inside
from infra_apply.plan_model import ProducerPlan, parse_plan
from infra_apply.render import Rendered, compare, render_model
from infra_apply.state import Backend, check_outside, load_backend, root_key, state_dir, validation_cache

PLAN_FILE = "infra-apply.tfplan"
STAMP = ".infra-apply-init"
IMPORTS = "imports.tf"
Say = Callable[[str], None]


@dataclass(frozen=True)
class Context:
    root: Path
    out: Path  # generated/: address ledgers and (outside the sandbox) imports.tf
    sandbox: bool
    mesh_path: Path | None
    env: Mapping[str, str]
    say: Say = field(default=lambda line: print(line, file=sys.stderr))


@dataclass(frozen=True)
class Project:
    model: Model
    rendered: Mapping[str, Rendered]
    generated_stale: bool
    config: Config = field(default_factory=Config)
    manifests: Mapping[str, Manifest] = field(default_factory=dict)  # by path (pre-flight)


@dataclass(frozen=True)
class Prepared:
    producer: ProducerModel
    rendered: Rendered
    wd: tf.Workdir
    cloud: Path | None  # the sandbox cloud file, in sandbox mode
    sandbox: Any = None  # the SandboxSetup, in sandbox mode
    lock: Any = None  # held until the process ends: one run per working copy


@dataclass(frozen=True)
class Planned:
    prep: Prepared
    plan: ProducerPlan
    changed: bool
    raw: Mapping[str, Any]


# --- loading ------------------------------------------------------------------------------


def load_project(ctx: Context, on_warning: Say) -> Project:
    from infra_apply.build import build_model
    from infra_apply.validate import require_valid

    # The sandbox world has its own registry: hosts it registered count as in the mesh there.
    mesh = mesh_target(ctx) if ctx.sandbox else ctx.mesh_path
    config = load_config(ctx.root, ctx.env)
    v = require_valid(ctx.root, mesh, validation_cache(ctx.root, ctx.env), on_warning, config)
    model = build_model(v)
    rendered = render_model(model, ctx.out)
    drift = compare(rendered, ctx.out)
    return Project(
        model,
        {r.producer: r for r in rendered},
        bool(drift.stale or drift.extra),
        config,
        {m.path: m for m in v.manifests},
    )


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


# --- working copies -------------------------------------------------------------------------


def workdir_root(ctx: Context) -> Path:
    state = state_dir(ctx.env)
    check_outside(state, ctx.out)
    mode = "sandbox" if ctx.sandbox else "live"
    return inside(state / "work" / mode / root_key(ctx.root), state)


def workdir(ctx: Context, producer: str) -> Path:
    """A producer's working copy: a folder of its own directly under ``workdir_root``."""
    base = workdir_root(ctx)
    return child(base, producer)


def sandbox_overlay(ctx: Context, producer: str) -> Path:
    state = state_dir(ctx.env)
    base = inside(state / "sandbox" / "imports" / root_key(ctx.root), state)
    return child(base, producer)


def imports_file(ctx: Context, producer: str) -> Path:
    folder = sandbox_overlay(ctx, producer) if ctx.sandbox else child(ctx.out, producer)
    return folder / IMPORTS


def terraform_env(ctx: Context, producer: str, sandbox_env: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(ctx.env)
    if sandbox_env is not None:
        # Never let a real token reach the stand-in, and never let its fake DigitalOcean
        # provider into the operator's plugin cache.
        for key in ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN", "TF_PLUGIN_CACHE_DIR"):
            env.pop(key, None)
        env.update(sandbox_env)
        if ctx.env.get("INFRA_APPLY_SANDBOX_CLOUD"):
            env["INFRA_APPLY_SANDBOX_CLOUD"] = ctx.env["INFRA_APPLY_SANDBOX_CLOUD"]
    else:
        env.update(token_env(ctx.env, producer, ctx.say))
    for ours, theirs in (
        ("SPACES_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("SPACES_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ):
        if ctx.env.get(ours) and not ctx.env.get(theirs):
            env[theirs] = ctx.env[ours]
    env.setdefault("CHECKPOINT_DISABLE", "1")
    env["TF_IN_AUTOMATION"] = "1"
    return env


def token_env(env: Mapping[str, str], producer: str, warn: Say | None = None) -> dict[str, str]:
    """The token for Terraform's environment only: env first, then ~/.vault/do_pat_<producer>."""
    from infra_apply.pat import read_pat

    if env.get("DIGITALOCEAN_TOKEN") or env.get("DIGITALOCEAN_ACCESS_TOKEN"):
        return {}
    home = Path(env.get("HOME") or Path.home())
    pat = home / ".vault" / f"do_pat_{producer}"
    token = read_pat(pat, warn or (lambda line: print(line, file=sys.stderr)))
    if token is None:
        raise InfraApplyError(
            f"no DigitalOcean token for producer {producer}: set DIGITALOCEAN_TOKEN or put the "
            f"producer's token in {pat} (or use --sandbox)"
        )
    return {"DIGITALOCEAN_TOKEN": token}


def prepare(ctx: Context, project: Project, producers: Sequence[str]) -> list[Prepared]:
    """Working copies for ``producers``, synced to the fresh render and initialised if needed."""
    binary = tf.find_binary(ctx.env)
    backend = load_backend(ctx.root, ctx.env, sandbox=ctx.sandbox)
    sandbox_env: dict[str, str] | None = None
    cloud: Path | None = None
    setup = None
    if ctx.sandbox:
        from infra_apply.sandbox.install import install

        # The sandbox account holds what [sandbox] says, never what the manifests ask for: a
        # cluster or SSH key missing there fails as it would at DigitalOcean.
        account = project.config.sandbox
        setup = install(state_dir(ctx.env), account.clusters, account.ssh_keys)
        sandbox_env = setup.env
        cloud = Path(ctx.env.get("INFRA_APPLY_SANDBOX_CLOUD") or setup.cloud)
        if cloud != setup.cloud:
            from infra_apply.sandbox import cloud as sandbox_cloud

            sandbox_cloud.seed(cloud, account.clusters, account.ssh_keys)
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
        env = terraform_env(ctx, name, sandbox_env)
        wd = tf.Workdir(binary, path, env)
        lock = lock_working_copy(path, name)
        try:
            sync(ctx, project.rendered[name], path, backend, sandbox_env)
        except OSError as exc:
            raise InfraApplyError(f"cannot write the working copy {path}: {exc.strerror}") from None
        model = project.model.producer(name) or ProducerModel(name)
        out.append(Prepared(model, project.rendered[name], wd, cloud, setup, lock))
    return out


def sync(
    ctx: Context, rendered: Rendered, path: Path, backend: Backend, sandbox_env: Mapping[str, str] | None
) -> None:
    private_dirs(path, path.parent)
    files = {n: t.encode("utf-8") for n, t in rendered.module_files().items()}
    _sync_user_data(path, files)
    extra = imports_file(ctx, rendered.producer)
    if extra.is_file():
        files[IMPORTS] = extra.read_bytes()
    backend_hcl = backend.hcl(rendered.producer)
    if backend_hcl:
        files["backend.tf"] = backend_hcl.encode("utf-8")
    for f in path.glob("*.tf"):
        if f.name not in files:
            f.unlink()
    for n, data in files.items():
        target = path / n
        if not target.is_file() or target.read_bytes() != data:
            write_private(target, data)
    lock = ctx.out / rendered.producer / ".terraform.lock.hcl"
    if sandbox_env is None and lock.is_file():
        write_private(path / ".terraform.lock.hcl", lock.read_bytes())
    if backend.kind != "local" and _has_local_state(path):
        raise InfraApplyError(
            f"{path} holds local state but {backend.kind} remote state is configured; migrate it "
            f"first (terraform -chdir={path} init -migrate-state)"
        )


def _sync_user_data(path: Path, files: Mapping[str, bytes]) -> None:
    """The working copy's user-data/ holds exactly the rendered user-data files."""
    from infra_apply.render import USER_DATA_DIR

    folder = path / USER_DATA_DIR
    wanted = {n for n in files if n.startswith(f"{USER_DATA_DIR}/")}
    if wanted:
        private_dirs(folder, path)
    if folder.is_dir():
        for f in folder.iterdir():
            if f"{USER_DATA_DIR}/{f.name}" not in wanted:
                f.unlink()


def _has_local_state(path: Path) -> bool:
    """Whether the working copy's local state holds resources; a state file that cannot be
    read as Terraform state counts as holding some (never switch backends over it)."""
    state = path / "terraform.tfstate"
    if not state.is_file() or state.stat().st_size == 0:
        return False
    try:
        doc = json.loads(state.read_bytes())
        return not isinstance(doc, dict) or doc.get("resources") != []
    except ValueError:  # not JSON, not UTF-8, or numbers beyond int()'s limit
        return True


def ensure_init(prep: Prepared, say: Say) -> None:
    """``terraform init`` only when what it depends on changed since the last one."""
    wd = prep.wd
    names = (
        ("versions.tf", "backend.tf")
        if prep.sandbox
        else ("versions.tf", "backend.tf", ".terraform.lock.hcl")
    )
    parts = [(wd.path / n).read_bytes() for n in names if (wd.path / n).is_file()]
    if "TF_CLI_CONFIG_FILE" in wd.env and Path(wd.env["TF_CLI_CONFIG_FILE"]).is_file():
        parts.append(Path(wd.env["TF_CLI_CONFIG_FILE"]).read_bytes())
    if prep.sandbox is not None:
        parts.append(prep.sandbox.package_hash.encode())
    stamp = hashlib.sha256(b"\0".join(parts)).hexdigest()
    stamp_file = wd.path / STAMP
    done = stamp_file.is_file() and stamp_file.read_bytes() == stamp.encode()
    if done and (wd.path / ".terraform").is_dir():
        return
    if prep.sandbox is not None:
        from infra_apply.sandbox.install import forget_stale_provider

        forget_stale_provider(wd.path, prep.sandbox)
    say(f"{prep.producer.name}: terraform init")
    try:
        # Never -reconfigure: switching backends without migrating would plan from an empty
        # state and create every server a second time.
        tf.init(wd)
    except TerraformError as exc:
        raise TerraformError(
            f"{exc.message}\nIf the state backend changed (infra-apply.toml), migrate the state first: "
            f"terraform -chdir={wd.path} init -migrate-state"
        ) from None
    tighten(wd.path)  # init writes .terraform.lock.hcl 0644 whatever its umask
    write_private(stamp_file, stamp)


def lock_working_copy(path: Path, producer: str) -> Any:
    """One infra-apply run per working copy; the lock lives as long as the process."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{path}.lock", timeout=0, is_singleton=True, mode=0o600)
    try:
        lock.acquire()
    except Timeout:
        raise InfraApplyError(
            f"another infra-apply run is using the working copy of producer {producer} ({path}); "
            "wait for it to finish"
        ) from None
    return lock


# --- plan -----------------------------------------------------------------------------------


def plan_one(prep: Prepared, say: Say, *, gpu: Iterable[str] = ()) -> Planned:
    ensure_init(prep, say)
    say(f"{prep.producer.name}: terraform plan")
    variables = gpu_variables(prep, gpu)
    changed = tf.plan(prep.wd, PLAN_FILE, variables=variables)
    raw = tf.show_json(prep.wd, PLAN_FILE)
    plan = parse_plan(prep.producer.name, raw, prep.rendered.names, prep.rendered.create_settings)
    return Planned(prep, plan, changed or plan.has_changes, raw)


def gpu_variables(prep: Prepared, gpu: Iterable[str]) -> dict[str, str]:
    out = {}
    for name in gpu:
        var = prep.rendered.gpu_variables.get(name)
        if var is None:
            known = ", ".join(sorted(prep.rendered.gpu_variables)) or "none"
            raise InfraApplyError(
                f"{name!r} is not an on-demand GPU droplet of producer "
                f"{prep.producer.name} (GPU droplets: {known})"
            )
        out[var] = "true"
    return out


def plan_all(preps: Sequence[Prepared], say: Say, *, gpu: Iterable[str] = ()) -> list[Planned]:
    """Plan producers in parallel (bounded by the CPU count); results in producer order."""
    gpu = tuple(gpu)
    unknown = sorted(set(gpu) - {g for p in preps for g in p.rendered.gpu_variables})
    if unknown:
        raise InfraApplyError(
            f"--with-gpu {', '.join(unknown)}: not an on-demand GPU droplet of the producers planned"
        )
    workers = max(1, min(len(preps), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(plan_one, p, say, gpu=[g for g in gpu if g in p.rendered.gpu_variables])
            for p in preps
        ]
        try:
            return [f.result() for f in futures]
        except KeyboardInterrupt:
            _interrupt(futures)
            raise


def _interrupt(futures: Sequence[Future[Planned]]) -> None:
    """Ctrl-C reaches only the main thread: pass it to the Terraforms the workers run, and keep
    waiting for them to stop cleanly (a second Ctrl-C is Terraform's hard stop)."""
    for f in futures:
        f.cancel()
    tf.interrupt_running()
    while not all(f.done() for f in futures):
        try:
            wait(futures)
        except KeyboardInterrupt:
            tf.interrupt_running()


def verdicts(
    planned: Sequence[Planned], allow_destroy: Sequence[str] = (), allow_replace: Sequence[str] = ()
) -> dict[str, GuardVerdict]:
    return {p.plan.producer: guard(p.plan, allow_destroy, allow_replace) for p in planned}


# --- apply ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplyOutcome:
    planned: Planned
    applied: bool
    registration: Any | None


def apply_producer(
    ctx: Context,
    prep: Prepared,
    *,
    allow_destroy: Sequence[str],
    allow_replace: Sequence[str],
    confirm: Callable[[Planned], bool],
    show: Callable[[Planned, GuardVerdict], None],
    echo: Say,
    gpu: Iterable[str] = (),
) -> ApplyOutcome:
    """Plan, show, guard, confirm, apply exactly that saved plan, then register the hosts."""
    planned = plan_one(prep, ctx.say, gpu=gpu)
    verdict = guard(planned.plan, allow_destroy, allow_replace)
    show(planned, verdict)
    if not verdict.ok:
        from infra_apply.guard import refusal_message

        raise GuardRefused(refusal_message(verdict))
    applied = False
    if planned.changed:
        if not confirm(planned):
            raise InfraApplyError("apply cancelled; nothing was changed")
        ctx.say(f"{prep.producer.name}: terraform apply (the saved plan shown above)")
        result = tf.apply(prep.wd, PLAN_FILE, echo=echo, echo_stderr=echo)
        if result.code != 0:
            raise TerraformError(
                f"terraform apply failed for producer {prep.producer.name}:\n{tf.error_text(result)}\n"
                "State holds what was created before the failure; fix the cause and rerun."
            )
        applied = True
    removed = [
        c.name for c in planned.plan.changes if c.type == "digitalocean_droplet" and c.action == "delete"
    ]
    registration = None
    if mesh_target(ctx) is not None and (prep.producer.droplets or removed):
        try:
            registration = register(ctx, prep, removed=removed)
        except InfraApplyError as exc:
            done = "applied" if applied else "nothing to apply"
            raise InfraApplyError(
                f"{prep.producer.name}: {done}, but registering its hosts failed: {exc.message}; fix that "
                f"and run infra-apply register --producer {prep.producer.name}",
                path=exc.path,
                line=exc.line,
                col=exc.col,
                rule=exc.rule,
            ) from None
    return ApplyOutcome(planned, applied, registration)


# --- register / rename / adopt ---------------------------------------------------------------


def mesh_target(ctx: Context) -> Path | None:
    """The registry registration writes to. A sandbox run never writes the operator's
    mesh-hosts.json (stand-in addresses would reach ~/.ssh/config): it registers into a copy under
    the state dir, made from the given file on first use."""
    if not ctx.sandbox:
        return ctx.mesh_path
    copy = sandbox_registry(ctx)
    if ctx.mesh_path is not None:
        from infra_apply.mesh import seed_copy

        private_dirs(copy.parent, state_dir(ctx.env))
        seed_copy(ctx.mesh_path, copy)
    return copy if copy.exists() else None


def sandbox_registry(ctx: Context) -> Path:
    """The sandbox's own mesh-hosts.json for this root (seeded from --mesh-hosts on first use)."""
    state = state_dir(ctx.env)
    return inside(state / "sandbox" / "mesh" / root_key(ctx.root) / "mesh-hosts.json", state)


def live_droplets(prep: Prepared) -> list[Any]:
    """The producer's droplets from its applied state (the ``droplets`` output)."""
    from infra_apply.mesh import live_droplets_from_output

    if not prep.rendered.droplet_addresses:
        return []
    try:
        value = tf.output_json(prep.wd, "droplets")
    except tf.OutputMissing:
        raise InfraApplyError(
            f"producer {prep.producer.name} has no applied state here ({prep.wd.path}): apply it first "
            f"(infra-apply apply --producer {prep.producer.name})"
        ) from None
    return live_droplets_from_output(value or {})


def register(
    ctx: Context,
    prep: Prepared,
    *,
    removed: Sequence[str] = (),
    renamed: Mapping[str, str] | None = None,
    dry_run: bool = False,
) -> Any:
    from infra_apply.mesh import write_registration

    target = mesh_target(ctx)
    if target is None:
        raise InfraApplyError(
            "no mesh-hosts.json given: pass --mesh-hosts FILE or set INFRA_APPLY_MESH_HOSTS"
        )
    ensure_init(prep, ctx.say)
    result = write_registration(
        target,
        prep.producer.name,
        live_droplets(prep),
        removed=removed,
        renamed=renamed or {},
        dry_run=dry_run,
    )
    if ctx.sandbox and target != ctx.mesh_path:
        ctx.say(f"sandbox: hosts registered in {target} (your mesh-hosts.json is never written)")
    return result


def state_droplets(prep: Prepared) -> dict[str, Mapping[str, Any]]:
    """Address (without index) -> attributes of each droplet in state."""
    ensure_init(prep, ctx_silent)
    doc = tf.show_json(prep.wd)
    out: dict[str, Mapping[str, Any]] = {}
    stack = [doc.get("values", {}).get("root_module", {})]
    while stack:
        module = stack.pop()
        for r in module.get("resources", []):
            if r.get("type") == "digitalocean_droplet" and r.get("mode") == "managed":
                out[f"digitalocean_droplet.{r['name']}"] = r.get("values", {})
        stack.extend(module.get("child_modules", []))
    return out


def ctx_silent(_: str) -> None:
    return None


@dataclass(frozen=True)
class Renamed:
    droplet_id: str
    old: str
    new: str


def rename(ctx: Context, prep: Prepared, name: str) -> Renamed | None:
    """Rename the live droplet whose manifest name is ``name``; None when already so named."""
    address = prep.rendered.droplet_addresses.get(name)
    if address is None:
        known = ", ".join(sorted(prep.rendered.droplet_addresses)) or "none"
        raise InfraApplyError(
            f"no droplet named {name!r} in producer {prep.producer.name}'s manifests (droplets: {known})"
        )
    live = state_droplets(prep).get(address)
    if live is None:
        raise InfraApplyError(f"{name} ({address}) is not in state yet; apply it first")
    if live.get("name") == name:
        return None
    droplet_id, old = str(live["id"]), str(live.get("name"))
    ctx.say(f"{prep.producer.name}: renaming droplet {droplet_id} {old!r} -> {name!r}")
    if prep.cloud is not None:
        from infra_apply.sandbox import cloud

        cloud.rename_droplet(prep.cloud, droplet_id, name)
    else:
        from infra_apply import do_api

        do_api.rename_droplet(do_api.client(token=prep.wd.env.get("DIGITALOCEAN_TOKEN")), droplet_id, name)
    ctx.say(f"{prep.producer.name}: refreshing state")
    tf.plan(prep.wd, PLAN_FILE, refresh_only=True)
    result = tf.apply(prep.wd, PLAN_FILE)
    if result.code != 0:
        raise TerraformError(
            f"the droplet was renamed, but refreshing state failed:\n{tf.error_text(result)}"
        )
    if mesh_target(ctx) is not None:
        register(ctx, prep, renamed={old: name})
    return Renamed(droplet_id, old, name)


@dataclass(frozen=True)
class Adoption:
    address: str
    name: str
    droplet_id: str
    warning: str | None = None


def adopt(ctx: Context, prep: Prepared) -> tuple[list[Adoption], Path]:
    """Write import blocks for manifest droplets that exist in the account but not in state."""
    in_state = state_droplets(prep)
    account = _account_droplets(prep)
    found: list[Adoption] = []
    for d in prep.producer.droplets:
        address = prep.rendered.droplet_addresses[d.name]
        if address in in_state:
            continue
        matches = [a for a in account if a["name"] == d.name]
        if len(matches) > 1:
            ctx.say(f"{d.name}: {len(matches)} droplets have this name in the account; adopt one by hand")
        if d.gpu or len(matches) != 1:
            continue
        found.append(Adoption(address, d.name, str(matches[0]["id"]), _adoption_warning(d, matches[0])))
    target = imports_file(ctx, prep.producer.name)
    write_imports(target, found, private_to=state_dir(ctx.env) if ctx.sandbox else None)
    return found, target


def _adoption_warning(d: Any, live: Mapping[str, Any]) -> str | None:
    if live.get("image") and live["image"] != d.image:
        return (
            f"live image {live['image']!r} differs from the manifest's {d.image!r}: the plan will "
            "replace it (and the guard will refuse) unless the manifest matches"
        )
    if live.get("region") and live["region"] != d.region:
        region = live["region"]
        return f"live region {region!r} differs from the manifest's {d.region!r}: it would be replaced"
    return None


def _account_droplets(prep: Prepared) -> list[dict[str, Any]]:
    if prep.cloud is not None:
        from infra_apply.sandbox import cloud

        return [
            {"id": r["id"], "name": r["name"], "image": r.get("image"), "region": r.get("region")}
            for r in cloud.list_droplets(prep.cloud)
        ]
    from infra_apply import do_api

    client = do_api.client(token=prep.wd.env.get("DIGITALOCEAN_TOKEN"))
    return [
        {"id": d.id, "name": d.name, "image": d.image, "region": d.region}
        for d in do_api.list_droplets(client)
    ]


def write_imports(target: Path, adoptions: Sequence[Adoption], private_to: Path | None = None) -> None:
    """Write the import blocks; under the state dir (``private_to``, sandbox runs) privately."""
    from infra_apply import hcl

    if not adoptions:
        return
    imports = [{"name": a.name, "address": a.address, "id": a.droplet_id} for a in adoptions]
    text = hcl.render("imports.tf.j2", imports=sorted(imports, key=lambda i: i["address"]))
    try:
        if private_to is not None:
            private_dirs(target.parent, private_to)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InfraApplyError(f"cannot write {target}: {exc.strerror}") from None
    atomic_write(target, text, mode=PRIVATE_FILE if private_to is not None else None)
