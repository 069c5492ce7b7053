"""The account a run works on: DigitalOcean's live API, or the sandbox's stand-in cloud.

``choose`` picks one, once, where the command starts (the CLI builds ``workcopy.Context`` with
it); the verbs ask the ``Account`` and never branch on which one it is. An account answers:
its catalogue and lookups (``preflight.Source``; live ones shared per run through
``accounts.Accounts``), its prices, Terraform's provider setup for a working copy
(``Provider``), its state backend and the CI rule on local state, the mesh registry a run
reads and writes, the word and label its messages use and the flags a printed remedy keeps.

``LiveAccount`` reaches DigitalOcean through ``do_api`` with each producer's token;
``SandboxAccount`` reads and writes the stand-in cloud under the state dir (``sandbox/``), with
the provider ``sandbox.install`` sets up. A sandbox run never writes the operator's
mesh-hosts.json, never sees a real token and is never refused for local state in CI (its
state describes a cloud thrown away with the same state dir).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from infra_apply.cloud.preflight import JsonObject, LiveSource, Source
from infra_apply.errors import InfraApplyError

if TYPE_CHECKING:
    from infra_apply.cloud.accounts import Accounts
    from infra_apply.cloud.do_api import Retry
    from infra_apply.manifests.config import Config
    from infra_apply.plan.cost import Prices
    from infra_apply.runtime.state import Backend
    from infra_apply.runtime.workcopy import Context, Prepared
    from infra_apply.sandbox.install import SandboxSetup

Say = Callable[[str], None]
LIVE_LABEL = "the DigitalOcean account"
SANDBOX_LABEL = "the sandbox account"
# What the sandbox's stand-in must never receive, nor the operator's plugin cache its provider.
_NOT_FOR_THE_SANDBOX = ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN", "TF_PLUGIN_CACHE_DIR")


class Provider(Protocol):
    """Terraform's DigitalOcean provider for the working copies of one run."""

    @property
    def cloud(self) -> Path | None:
        """The stand-in cloud file Terraform's provider talks to (None: DigitalOcean's API)."""
        ...

    @property
    def shared(self) -> Path | None:
        """The launcher of a provider process shared by a run's plans (sandbox/reattach.py)."""
        ...

    def environment(self, env: Mapping[str, str], producer: str, say: Say) -> dict[str, str]:
        """Terraform's environment for ``producer``'s working copy, before the common settings."""
        ...

    def before_init(self, path: Path) -> None:
        """What ``terraform init`` in ``path`` needs done first."""

    def init_inputs(self, path: Path) -> list[bytes]:
        """What, besides the versions and backend blocks, a new ``init`` depends on."""
        ...

    def reviewed_lock(self, out: Path, producer: str) -> Path | None:
        """The reviewed ``.terraform.lock.hcl`` the working copy uses, if any."""
        ...

    def holder(self, env: Mapping[str, str]) -> str:
        """What names the account for the one-run-per-producer lock."""
        ...


class Account(Protocol):
    """Everything a verb asks of the account it works on (see the module docstring)."""

    @property
    def word(self) -> str:
        """``live`` or ``sandbox``: messages, and the folders under the state dir."""
        ...

    @property
    def label(self) -> str:
        """How messages name the account (``the sandbox account``)."""
        ...

    @property
    def remedy_flags(self) -> tuple[str, ...]:
        """What every remedy printed in this mode carries (``--sandbox``)."""
        ...

    @property
    def note(self) -> str:
        """What a message about a run in this mode ends with (`` (sandbox)``; live: nothing)."""
        ...

    @property
    def webhook_stand_in(self) -> str | None:
        """A webhook URL standing in for one the environment does not set (the sandbox sends
        nothing); None: an unset webhook is an error."""
        ...

    @property
    def stand_in(self) -> bool:
        """Whether this is the sandbox's stand-in: what reports record (``"sandbox"`` in JSON,
        the comment's banner); verbs pass it on and never branch on it."""
        ...

    @property
    def cloud_in_state_dir(self) -> bool:
        """Whether the account's world lives under the state dir (made on first use)."""
        ...

    @property
    def runs_reviewed_render(self) -> bool:
        """Whether what runs must be the reviewed ``generated/`` (a stale one is said, or refused
        by apply)."""
        ...

    @property
    def owns_registry(self) -> bool:
        """Whether its mesh registry is its own, made on its first registration: none yet means
        nothing is registered (the operator's file not given means not knowing)."""
        ...

    def require(self) -> None:
        """Stop with one line when what this mode needs is not installed."""

    def backend(self, root: Path, env: Mapping[str, str]) -> Backend: ...

    def refuse_local_state_in_ci(self, config: Config, env: Mapping[str, str]) -> None: ...

    def registry(self, ctx: Context) -> Path | None:
        """The mesh registry a run validates against and registers into."""
        ...

    def written_registry(self, ctx: Context) -> Path | None:
        """The operator's file a run may write (checked writable before it starts)."""
        ...

    def registered_note(self, ctx: Context, target: Path) -> str | None:
        """A line to say after registering into ``target``."""
        ...

    def imports_folder(self, ctx: Context, producer: str) -> Path:
        """Where ``adopt`` writes ``producer``'s ``imports.tf``."""
        ...

    def imports_private_to(self, env: Mapping[str, str]) -> Path | None:
        """The folder under which the imports are private (None: written as any output)."""
        ...

    def provider(self, ctx: Context, config: Config) -> Provider: ...

    def sources(
        self,
        env: Mapping[str, str],
        config: Config,
        producers: Sequence[str],
        say: Say,
        accounts: Accounts | None = None,
    ) -> list[tuple[Source, list[str]]]:
        """The accounts the producers are planned in, and the producers each serves."""
        ...

    def prices(
        self, ctx: Context, producers: Sequence[str], *, retry: Retry | None, accounts: Accounts | None
    ) -> Prices: ...

    def start_catalogue(self, env: Mapping[str, str], producers: Sequence[str], accounts: Accounts) -> None:
        """Start the catalogue round of the accounts ``producers`` (named on the command line;
        none: every producer) are planned in as soon as their tokens are known, before the
        manifests are read: it runs while they validate and render. An error before pre-flight
        abandons it (``infra_apply.cloud.accounts``)."""

    def source(self, prep: Prepared, accounts: Accounts | None = None) -> Source | None:
        """The account one prepared producer talks to (None: no token, nothing to ask)."""
        ...

    def rename_droplet(self, prep: Prepared, droplet_id: str, name: str) -> None: ...

    def tagged_droplets(
        self, preps: Sequence[Prepared], env: Mapping[str, str], tag: str, accounts: Accounts | None = None
    ) -> list[JsonObject]:
        """Every droplet carrying ``tag`` in the accounts ``preps`` use (the API's shape); with
        the run's ``accounts``, from the droplet list pre-flight asked for."""
        ...

    def cloud_file(self, preps: Sequence[Prepared]) -> str | None:
        """The stand-in cloud file the run worked on, for reports (None live)."""
        ...


def choose(sandbox: bool) -> Account:
    """The one place a run's mode becomes its account: the CLI calls it with ``--sandbox``."""
    return SandboxAccount() if sandbox else LiveAccount()


# --- the live account ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveProvider:
    """DigitalOcean's provider, with each producer's token."""

    cloud: Path | None = None
    shared: Path | None = None

    def environment(self, env: Mapping[str, str], producer: str, say: Say) -> dict[str, str]:
        from infra_apply.cloud.pat import token_env

        return {**env, **token_env(env, producer, say)}

    def before_init(self, path: Path) -> None:
        pass

    def init_inputs(self, path: Path) -> list[bytes]:
        lock = path / ".terraform.lock.hcl"
        return [lock.read_bytes()] if lock.is_file() else []

    def reviewed_lock(self, out: Path, producer: str) -> Path | None:
        lock = out / producer / ".terraform.lock.hcl"
        return lock if lock.is_file() else None

    def holder(self, env: Mapping[str, str]) -> str:
        return env.get("DIGITALOCEAN_TOKEN", "")


@dataclass(frozen=True)
class LiveAccount:
    word: str = "live"
    label: str = LIVE_LABEL
    remedy_flags: tuple[str, ...] = ()
    note: str = ""
    webhook_stand_in: str | None = None
    stand_in: bool = False
    cloud_in_state_dir: bool = False
    runs_reviewed_render: bool = True
    owns_registry: bool = False

    def require(self) -> None:
        pass

    def backend(self, root: Path, env: Mapping[str, str]) -> Backend:
        from infra_apply.manifests.config import load

        return load(root, env).state.backend(sandbox=False)

    def refuse_local_state_in_ci(self, config: Config, env: Mapping[str, str]) -> None:
        from infra_apply.runtime.state import refuse_local_state_in_ci

        refuse_local_state_in_ci(config, env)

    def registry(self, ctx: Context) -> Path | None:
        return ctx.mesh_path

    def written_registry(self, ctx: Context) -> Path | None:
        return ctx.mesh_path

    def registered_note(self, ctx: Context, target: Path) -> str | None:
        return None

    def imports_folder(self, ctx: Context, producer: str) -> Path:
        from infra_apply.runtime.paths import child

        return child(ctx.out, producer)

    def imports_private_to(self, env: Mapping[str, str]) -> Path | None:
        return None

    def provider(self, ctx: Context, config: Config) -> Provider:
        return LiveProvider()

    def sources(
        self,
        env: Mapping[str, str],
        config: Config,
        producers: Sequence[str],
        say: Say,
        accounts: Accounts | None = None,
    ) -> list[tuple[Source, list[str]]]:
        """One account per token (a producer's token is DIGITALOCEAN_TOKEN or its own PAT file)."""
        from infra_apply.cloud import do_api
        from infra_apply.cloud.pat import do_token, token_env

        by_token: dict[str, list[str]] = {}
        for producer in producers:
            token = token_env(env, producer, say).get("DIGITALOCEAN_TOKEN") or do_token(env) or ""
            by_token.setdefault(token, []).append(producer)
        if accounts is not None:
            return [(accounts.live(t, _label(n, len(by_token))), n) for t, n in by_token.items()]
        endpoint = env.get(do_api.ENDPOINT_VAR) or do_api.DEFAULT_ENDPOINT
        return [
            (LiveSource(do_api.Client(t, endpoint), _label(n, len(by_token))), n) for t, n in by_token.items()
        ]

    def prices(
        self, ctx: Context, producers: Sequence[str], *, retry: Retry | None, accounts: Accounts | None
    ) -> Prices:
        from infra_apply.cloud.pricing import account_prices

        return account_prices(ctx, producers, retry=retry, accounts=accounts)

    def start_catalogue(self, env: Mapping[str, str], producers: Sequence[str], accounts: Accounts) -> None:
        """The environment's token, else each named producer's PAT file, read quietly: pre-flight
        reads them again and says their warnings and errors where it did without this start."""
        from infra_apply.cloud.pat import do_token, token_env

        tokens: set[str] = set()
        try:
            found = do_token(env)
            if found:
                tokens.add(found)
            else:
                for producer in producers:
                    token = token_env(env, producer, lambda _: None).get("DIGITALOCEAN_TOKEN")
                    if token:
                        tokens.add(token)
        except InfraApplyError:
            return  # said where pre-flight reads the token, as without the early start
        for token in sorted(tokens):
            accounts.live(token).start()

    def source(self, prep: Prepared, accounts: Accounts | None = None) -> Source | None:
        if prep.api_token and accounts is not None:
            return accounts.live(prep.api_token)
        if prep.api_token:
            from infra_apply.cloud import do_api

            return LiveSource(do_api.client(token=prep.api_token))
        return None

    def rename_droplet(self, prep: Prepared, droplet_id: str, name: str) -> None:
        from infra_apply.cloud import do_api

        do_api.rename_droplet(do_api.client(token=prep.api_token), droplet_id, name)

    def tagged_droplets(
        self, preps: Sequence[Prepared], env: Mapping[str, str], tag: str, accounts: Accounts | None = None
    ) -> list[JsonObject]:
        """One listing per distinct token: producers may share an account or each have their own."""
        from infra_apply.cloud import do_api

        found: dict[str, JsonObject] = {}
        for token in dict.fromkeys(p.api_token for p in preps if p.api_token):
            if accounts is not None:
                shared = accounts.live(token).droplets()
                found.update((str(d.get("id", "")), d) for d in shared if tag in (d.get("tags") or ()))
                continue
            api = do_api.client(token=token, endpoint=env.get(do_api.ENDPOINT_VAR))
            listed = api.paginate(
                "/v2/droplets", "droplets", query={"tag_name": tag}, what="list tagged droplets"
            )
            found.update((str(d.get("id", "")), d) for d in listed)
        return list(found.values())

    def cloud_file(self, preps: Sequence[Prepared]) -> str | None:
        return None


def _label(producers: Sequence[str], accounts: int) -> str:
    if accounts == 1:
        return LIVE_LABEL
    return f"{LIVE_LABEL} of {', '.join(producers)}"


# --- the sandbox account ------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxProvider:
    """The stand-in provider ``sandbox.install`` set up, talking to the cloud file ``cloud``."""

    setup: SandboxSetup
    cloud: Path

    @property
    def shared(self) -> Path | None:
        return self.setup.launcher

    def environment(self, env: Mapping[str, str], producer: str, say: Say) -> dict[str, str]:
        out = {k: v for k, v in env.items() if k not in _NOT_FOR_THE_SANDBOX}
        out.update(self.setup.env)
        out["INFRA_APPLY_SANDBOX_CLOUD"] = str(self.cloud)
        return out

    def before_init(self, path: Path) -> None:
        from infra_apply.sandbox.install import forget_stale_provider

        forget_stale_provider(path, self.setup)

    def init_inputs(self, path: Path) -> list[bytes]:
        # Pinned by its package hash: the lock file init writes follows from it.
        return [self.setup.package_hash.encode()]

    def reviewed_lock(self, out: Path, producer: str) -> Path | None:
        return None  # generated/'s lock pins the real provider, not the stand-in

    def holder(self, env: Mapping[str, str]) -> str:
        return str(self.cloud)


@dataclass(frozen=True)
class SandboxAccount:
    word: str = "sandbox"
    label: str = SANDBOX_LABEL
    remedy_flags: tuple[str, ...] = ("--sandbox",)
    note: str = " (sandbox)"
    webhook_stand_in: str | None = "https://hooks.slack.invalid/sandbox"  # sends nothing
    stand_in: bool = True
    cloud_in_state_dir: bool = True
    runs_reviewed_render: bool = False
    owns_registry: bool = True

    def require(self) -> None:
        from infra_apply.sandbox import extra

        extra.require()

    def backend(self, root: Path, env: Mapping[str, str]) -> Backend:
        from infra_apply.manifests.config import load

        return load(root, env).state.backend(sandbox=True)

    def refuse_local_state_in_ci(self, config: Config, env: Mapping[str, str]) -> None:
        pass  # its state describes the stand-in cloud under the same state dir, throwaway with it

    def registry(self, ctx: Context) -> Path | None:
        """Never the operator's mesh-hosts.json (stand-in addresses would reach ~/.ssh/config):
        a copy under the state dir, made from the given file on first use."""
        from infra_apply.runtime.fs import private_dirs
        from infra_apply.runtime.state import state_dir

        copy = sandbox_registry(ctx)
        if ctx.mesh_path is not None:
            from infra_apply.registry.meshfile import seed_copy

            private_dirs(copy.parent, state_dir(ctx.env))
            seed_copy(ctx.mesh_path, copy)
        return copy if copy.exists() else None

    def written_registry(self, ctx: Context) -> Path | None:
        return None  # it only reads the operator's file, to seed its own copy

    def registered_note(self, ctx: Context, target: Path) -> str | None:
        if target == ctx.mesh_path:
            return None
        return f"sandbox: hosts registered in {target} (your mesh-hosts.json is never written)"

    def imports_folder(self, ctx: Context, producer: str) -> Path:
        from infra_apply.runtime.workcopy import sandbox_overlay

        return sandbox_overlay(ctx, producer)

    def imports_private_to(self, env: Mapping[str, str]) -> Path | None:
        from infra_apply.runtime.state import state_dir

        return state_dir(env)

    def provider(self, ctx: Context, config: Config) -> Provider:
        """The sandbox account holds what [sandbox] says, never what the manifests ask for: a
        cluster or SSH key missing there fails as it would at DigitalOcean."""
        from infra_apply.runtime.state import state_dir
        from infra_apply.sandbox import cloud as sandbox_cloud
        from infra_apply.sandbox.install import install

        account = config.sandbox
        setup = install(state_dir(ctx.env), account.clusters, account.ssh_keys)
        cloud = Path(ctx.env.get(sandbox_cloud.ENV_VAR) or setup.cloud)
        if cloud != setup.cloud:
            sandbox_cloud.seed(cloud, account.clusters, account.ssh_keys)
        return SandboxProvider(setup, cloud)

    def sources(
        self,
        env: Mapping[str, str],
        config: Config,
        producers: Sequence[str],
        say: Say,
        accounts: Accounts | None = None,
    ) -> list[tuple[Source, list[str]]]:
        from infra_apply.cloud.preflight import SandboxSource

        return [(SandboxSource(_cloud_file(env, config)), list(producers))]

    def prices(
        self, ctx: Context, producers: Sequence[str], *, retry: Retry | None, accounts: Accounts | None
    ) -> Prices:
        from infra_apply.plan.cost import fallback_prices

        return fallback_prices()  # its catalogue is the shipped table

    def start_catalogue(self, env: Mapping[str, str], producers: Sequence[str], accounts: Accounts) -> None:
        pass  # its catalogue is a local file, read when pre-flight asks

    def source(self, prep: Prepared, accounts: Accounts | None = None) -> Source | None:
        from infra_apply.cloud.preflight import SandboxSource

        return SandboxSource(_prepared_cloud(prep))

    def rename_droplet(self, prep: Prepared, droplet_id: str, name: str) -> None:
        from infra_apply.sandbox import cloud

        cloud.rename_droplet(_prepared_cloud(prep), droplet_id, name)

    def tagged_droplets(
        self, preps: Sequence[Prepared], env: Mapping[str, str], tag: str, accounts: Accounts | None = None
    ) -> list[JsonObject]:
        from infra_apply.sandbox import cloud

        clouds = dict.fromkeys(_prepared_cloud(p) for p in preps)
        return [d for path in clouds for d in cloud.list_droplets(path) if tag in (d.get("tags") or ())]

    def cloud_file(self, preps: Sequence[Prepared]) -> str | None:
        return next((str(_prepared_cloud(p)) for p in preps), None)


def _prepared_cloud(prep: Prepared) -> Path:
    if prep.cloud is None:  # a sandbox run's working copies all have the stand-in's provider
        raise AssertionError(f"producer {prep.producer.name} was prepared without the sandbox cloud")
    return prep.cloud


def _cloud_file(env: Mapping[str, str], config: Config) -> Path:
    from infra_apply.runtime.state import state_dir
    from infra_apply.sandbox import cloud
    from infra_apply.sandbox.install import sandbox_cloud

    account = config.sandbox
    if env.get(cloud.ENV_VAR):
        path = Path(env[cloud.ENV_VAR])
        cloud.seed(path, account.clusters, account.ssh_keys)
        return path
    return sandbox_cloud(state_dir(env), account.clusters, account.ssh_keys)


def sandbox_registry(ctx: Context) -> Path:
    """The sandbox's own mesh-hosts.json for this root (seeded from --mesh-hosts on first use)."""
    from infra_apply.runtime.identity import keyed
    from infra_apply.runtime.state import state_dir
    from infra_apply.runtime.workcopy import tree_key

    return keyed(state_dir(ctx.env), "sandbox/mesh", tree_key(ctx)) / "mesh-hosts.json"
