"""The one reader of ``infra-apply.toml``: the root's (or the file ``$INFRA_APPLY_CONFIG`` names).

Every table it may hold, as frozen data::

    [state]                             # remote state (see ``Backend``)
    backend = "s3"
    bucket = "uvlava-tfstate"
    name = "uvlava"                     # the local state key (identity.py); default: git
    allow_local_in_ci = true            # plan/apply with local state under CI (throwaway trees)
    [droplets]                          # defaults for every droplet
    ssh_keys = ["ops-2026"]             # names of SSH keys in the DigitalOcean account
    monitoring = true
    user_data = "cloud-init/base.yaml"  # relative to the root; used when a droplet is created
    [producers.ct.droplets]             # per-producer overrides, same keys
    ssh_keys = ["ct-deploy"]
    [firewall]                          # who may reach a droplet's SSH (docs/security.md)
    ssh_from = ["203.0.113.4/32"]       # CIDRs, or "mesh": over WireGuard only
    bootstrap_from = ["203.0.113.4/32"] # with "mesh": SSH until the droplet is registered
    [producers.ct.firewall]             # per-producer override, same keys
    [producers.ct]                      # the guard's budget for ct's plans (budget.py)
    budget_monthly = "150.00"           # USD a month, a string (never a float)
    max_increase = "25%"                # or "40.00": the most one plan may add a month
    [gpu."com.uvlava.ct.gpu"]           # an on-demand GPU droplet's lifecycle (gpu/config.py)
    size = "gpu-h100x1-80gb"
    [notify]
    webhook_url_env = "INFRA_APPLY_WEBHOOK"  # the variable holding the webhook URL (notify.py)
    [sandbox]
    clusters = ["uvlava-pg"]            # the shared clusters the sandbox account has
    ssh_keys = ["ops-2026"]             # its SSH keys (default: every key named above)
    [alerts]                            # what is watched, where alerts go (docs/watching.md)
    email = ["ops@example.net"]
    slack = { channel = "#ops", url_env = "SLACK_ALERT_WEBHOOK" }   # the URL stays in the environment
    cert_expiry_days = 14
    [alerts.droplets]
    cpu_percent = 90
    [clusters."uvlava-pg"]              # a shared cluster's trusted sources (see ``ClusterSettings``)
    trusted_sources = "managed"
    owner = "quinn"
    allow = ["203.0.113.4/32"]

Anything else, or a value of the wrong type, is one located error
(``infra-apply.toml:LINE:COL: error config: ...``); secrets never go in this file.

A ``user_data`` file must lie inside the root, be ``#cloud-config`` YAML or a ``#!`` script and
hold at most 64 KiB (DigitalOcean's limit). Render copies it byte for byte into
``generated/<producer>/user-data/``, so a pull request shows it, and Terraform reads it with
``file()``, which never interpolates (``${`` in it stays ``${``).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from infra_apply.errors import InfraApplyError, printable
from infra_apply.render import hcl
from infra_apply.runtime.fs import CONFIG_LIMIT, FileTooLarge, read_bounded
from infra_apply.untrusted import visible

if TYPE_CHECKING:
    # Imported where a table needs them: every command reads this file, few need money or GPUs.
    from infra_apply.gpu.config import GpuSettings
    from infra_apply.plan.budget import Budget

CONFIG_NAME = "infra-apply.toml"
ENV_VAR = "INFRA_APPLY_CONFIG"
USER_DATA_LIMIT = 64 * 1024  # bytes: DigitalOcean refuses more user data
DEFAULT_SANDBOX_CLUSTERS: tuple[str, ...] = ("uvlava-pg",)

STATE_KEYS = (
    "backend",
    "bucket",
    "endpoint",
    "region",
    "key_prefix",
    "sandbox_key_prefix",
    "name",
    "allow_local_in_ci",
)
# [state] name: a folder name under the state dir (identity.py), lower case so that two names
# never meet in one folder on a case-insensitive file system.
STATE_NAME = re.compile(r"\A[a-z0-9][a-z0-9._-]{0,62}\Z")
DROPLET_KEYS = ("ssh_keys", "monitoring", "user_data")
PRODUCER_KEYS = ("droplets", "firewall", "budget_monthly", "max_increase")
SANDBOX_KEYS = ("clusters", "ssh_keys")
CLUSTER_KEYS = ("trusted_sources", "owner", "allow")
# A database firewall holds at most 100 rules (do-catalogue-facts.md); one is the hosts' tag.
ALLOW_LIMIT = 99
FIREWALL_KEYS = ("ssh_from", "bootstrap_from")
MESH = "mesh"  # ssh_from = "mesh": no public SSH once a droplet is on the WireGuard mesh
TABLES = ("state", "droplets", "producers", "gpu", "sandbox", "firewall", "notify", "alerts", "clusters")
NOTIFY_KEYS = ("webhook_url_env",)
ALERT_KEYS = ("email", "slack", "cert_expiry_days", "regions", "droplets")
SLACK_KEYS = ("channel", "url_env")
DROPLET_ALERT_KEYS = ("cpu_percent", "memory_percent", "disk_percent")
# Where DigitalOcean's uptime checks can probe from (its API's region enum).
UPTIME_REGIONS = ("us_east", "us_west", "eu_west", "se_asia")
DEFAULT_UPTIME_REGIONS = ("us_east", "eu_west")
_ENV_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
# Anything that looks like a credential is refused by name, and its value is never echoed.
CREDENTIAL_KEYS = frozenset(
    {
        "access_key",
        "secret_key",
        "token",
        "access_key_id",
        "secret_access_key",
        "session_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
    }
)
# The producer folder rule (rules.PRODUCER_RE): a [producers.X] table names a folder @X.
_PRODUCER = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")


class ConfigError(InfraApplyError):
    """A problem in infra-apply.toml: its keys and values may hold a newline or a terminal
    escape, so the message is made visible here, once for every message built from them."""

    default_rule = "config"

    def __init__(
        self, message: str, *, path: str | None = None, line: int = 0, col: int = 0, rule: str | None = None
    ) -> None:
        super().__init__(visible(message), path=path, line=line, col=col, rule=rule)


@dataclass(frozen=True)
class Where:
    """A place in a file (path as messages show it, 1-based line and column)."""

    path: str
    line: int = 0
    col: int = 0

    def error(self, message: str, rule: str = "config") -> ConfigError:
        return ConfigError(message, path=self.path, line=self.line, col=self.col, rule=rule)


# --- remote state -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    kind: str  # "local" | "s3"
    bucket: str = ""
    endpoint: str = ""
    region: str = "us-east-1"
    key_prefix: str = "infra-apply"

    def hcl(self, producer: str) -> str | None:
        """``backend.tf`` for a working copy (never for generated/), or None for local state."""
        if self.kind == "local":
            return None
        return hcl.render(
            "backend.tf.j2",
            config_name=CONFIG_NAME,
            bucket=self.bucket,
            key="/".join(filter(None, (self.key_prefix, producer, "terraform.tfstate"))),
            region=self.region,
            endpoint=self.endpoint,
        )


@dataclass(frozen=True)
class StateSettings:
    """``[state]``, checked; ``backend(sandbox=...)`` picks what a run uses."""

    kind: str = "local"
    bucket: str = ""
    endpoint: str = ""
    region: str = "us-east-1"
    key_prefix: str = "infra-apply"
    sandbox_key_prefix: str = ""
    name: str = ""  # this tree's local state key (identity.py); "" when not set
    allow_local_in_ci: bool = False  # plan/apply with local state under CI (a throwaway tree)
    at: Where | None = field(default=None, compare=False)  # the [state] table (the CI refusal)

    def backend(self, *, sandbox: bool) -> Backend:
        """Sandbox runs keep local state unless ``sandbox_key_prefix`` opts them into the bucket,
        under a prefix of their own: stand-in resources must never be written over real state."""
        if self.kind == "local" or (sandbox and not self.sandbox_key_prefix):
            return Backend("local")
        return Backend(
            "s3",
            bucket=self.bucket,
            endpoint=self.endpoint,
            region=self.region,
            key_prefix=self.sandbox_key_prefix if sandbox else self.key_prefix,
        )


# --- droplet settings -------------------------------------------------------------------------


@dataclass(frozen=True)
class UserData:
    """A cloud-init file: ``source`` (root-relative posix path) and its exact text."""

    source: str
    text: str
    where: Where  # the config line naming it

    @property
    def sha1(self) -> str:
        # What the provider keeps in state for user_data (its StateFunc).
        return hashlib.sha1(self.text.encode("utf-8")).hexdigest()

    @property
    def kind(self) -> str:
        return "script" if self.text.startswith("#!") else "cloud-config"


@dataclass(frozen=True)
class DropletSettings:
    """What a droplet is created with. All three are ForceNew at DigitalOcean, so they apply to
    new droplets only (render puts them in ``ignore_changes``)."""

    ssh_keys: tuple[str, ...] = ()
    monitoring: bool = False
    user_data: UserData | None = None
    ssh_keys_at: Where | None = None  # the config line that set ssh_keys (pre-flight errors)


@dataclass(frozen=True)
class FirewallSettings:
    """``[firewall]``: where a droplet's SSH (22/tcp) may be reached from. ``ssh_from`` None is
    unset (the whole internet, warned as ``public_ssh``); ``mesh`` closes public SSH once the
    droplet is in mesh-hosts.json, keeping it open from ``bootstrap_from`` until then."""

    ssh_from: tuple[str, ...] | None = None  # CIDRs; None: unset (or "mesh", see ``mesh``)
    mesh: bool = False
    bootstrap_from: tuple[str, ...] = ()
    at: Where | None = field(default=None, compare=False)  # the line that set ssh_from

    @property
    def public(self) -> bool:
        """SSH stays open to the whole internet (ssh_from unset)."""
        return self.ssh_from is None and not self.mesh


@dataclass(frozen=True)
class SandboxSettings:
    clusters: tuple[str, ...] = DEFAULT_SANDBOX_CLUSTERS
    ssh_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class SlackRoute:
    """A Slack channel and the environment variable holding its webhook URL (never the URL)."""

    channel: str
    url_env: str


@dataclass(frozen=True)
class DropletAlerts:
    """``[alerts.droplets]``: percent thresholds over 5 minutes; None: not watched."""

    cpu_percent: int | None = None
    memory_percent: int | None = None
    disk_percent: int | None = None


@dataclass(frozen=True)
class Alerts:
    """``[alerts]``: where uptime and droplet alerts go, and when a certificate is "expiring"."""

    email: tuple[str, ...] = ()
    slack: SlackRoute | None = None
    cert_expiry_days: int = 14
    regions: tuple[str, ...] = DEFAULT_UPTIME_REGIONS
    droplets: DropletAlerts = DropletAlerts()
    at: Where | None = field(default=None, compare=False)  # the [alerts] table


@dataclass(frozen=True)
class ClusterSettings:
    """``[clusters."NAME"]``: the cluster's trusted sources are managed (one
    ``digitalocean_database_firewall``, rendered by ``owner``): a rule for the tag every droplet
    hosting a project using the cluster carries, plus ``allow`` (IPv4 addresses or networks)."""

    name: str
    owner: str
    allow: tuple[str, ...] = ()
    at: Where = Where("")  # the [clusters."NAME"] line

    @property
    def tag(self) -> str:
        """The droplet tag the cluster trusts (a tag allows letters, digits, ``:-_``)."""
        return "db-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.name)


@dataclass(frozen=True)
class NotifySettings:
    """``[notify]``: the environment variable holding the webhook URL ("" : no notifications)."""

    webhook_url_env: str = ""


@dataclass(frozen=True)
class Config:
    path: str | None = None  # as messages show it; None when there is no file
    state: StateSettings = StateSettings()
    droplets: DropletSettings = DropletSettings()
    producers: Mapping[str, DropletSettings] = field(default_factory=dict)  # merged with droplets
    producer_at: Mapping[str, Where] = field(default_factory=dict)
    sandbox: SandboxSettings = SandboxSettings()
    # [gpu."NAME"]: checked by gpu.config; build.py refuses a NAME no manifest declares (gpu_at)
    gpu: Mapping[str, GpuSettings] = field(default_factory=dict)
    gpu_at: Mapping[str, Where] = field(default_factory=dict)
    firewall: FirewallSettings = FirewallSettings()
    producer_firewalls: Mapping[str, FirewallSettings] = field(default_factory=dict)  # merged
    notify: NotifySettings = field(default_factory=NotifySettings)
    alerts: Alerts | None = None  # no [alerts]: nothing is watched
    clusters: Mapping[str, ClusterSettings] = field(default_factory=dict)
    # Every user_data file read, as (value written, UserData): render's up-to-date check
    # (render/uptodate.py) reads them again to see whether any changed.
    user_data_read: tuple[tuple[str, UserData], ...] = field(default=(), compare=False)

    def firewall_for(self, producer: str) -> FirewallSettings:
        return self.producer_firewalls.get(producer, self.firewall)

    # [producers.P] budget_monthly / max_increase: what the guard holds its plans to (budget.py)
    budgets: Mapping[str, Budget] = field(default_factory=dict)

    def for_producer(self, producer: str) -> DropletSettings:
        return self.producers.get(producer, self.droplets)

    def backend(self, *, sandbox: bool) -> Backend:
        return self.state.backend(sandbox=sandbox)


def config_path(root: Path, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env[ENV_VAR]) if env.get(ENV_VAR) else root / CONFIG_NAME


def load(root: Path, env: Mapping[str, str] | None = None) -> Config:
    """The configuration; no file at the root is the empty configuration (a file named by
    ``$INFRA_APPLY_CONFIG`` must exist)."""
    env = os.environ if env is None else env
    path = config_path(root, env)
    shown = _shown(path, root)
    try:
        text = read_bounded(path, CONFIG_LIMIT).decode("utf-8")
    except FileNotFoundError:
        if env.get(ENV_VAR):
            raise InfraApplyError(f"{ENV_VAR} names {printable(str(path))}, which does not exist") from None
        return Config()
    except OSError as exc:
        raise ConfigError(f"cannot read {CONFIG_NAME}: {exc.strerror}", path=shown) from None
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text (byte {exc.start})"
        raise ConfigError(f"cannot read {CONFIG_NAME}: {problem}", path=shown) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message, line, col = _toml_error(str(exc), text)
        raise ConfigError(f"invalid TOML: {message}", path=shown, line=line, col=col) from None
    except RecursionError:  # tomllib recurses per nested array or inline table
        raise ConfigError("invalid TOML: nested too deeply", path=shown) from None
    return _Reader(root, shown, text, _checked_record(env)).config(doc)


class _Reader:
    """Checks one parsed document, locating every problem in its text."""

    def __init__(self, root: Path, shown: str, text: str, checked: Path | None = None) -> None:
        self.root = root
        self.checked = checked
        self.user_data_read: list[tuple[str, UserData]] = []
        self.shown = shown
        self.text = text

    def at(self, table: Sequence[str], key: str | None = None) -> Where:
        line, col = _locate(self.text, tuple(table), key)
        return Where(self.shown, line, col)

    def fail(self, message: str, table: Sequence[str], key: str | None = None) -> ConfigError:
        return self.at(table, key).error(message)

    def config(self, doc: Mapping[str, Any]) -> Config:
        for key, value in doc.items():
            if key.lower() in CREDENTIAL_KEYS:
                raise self._credential((), key)
            if key not in TABLES:
                what = "table" if isinstance(value, dict) else "setting"
                raise self.fail(f"unknown {what} {key!r} (known tables: {', '.join(TABLES)})", (), key)
        state = self.state(self.table(doc, ("state",)), present="state" in doc)
        droplets = self.droplets(self.table(doc, ("droplets",)), ("droplets",), DropletSettings())
        firewall = self.firewall(self.table(doc, ("firewall",)), ("firewall",), FirewallSettings())
        producers, producer_at = self.producers(self.table(doc, ("producers",)), droplets)
        producer_firewalls = {
            name: self.firewall(self.table(section, (*path, "firewall")), (*path, "firewall"), firewall)
            for name, section in self.table(doc, ("producers",)).items()
            if isinstance(section, dict) and "firewall" in section
            for path in [("producers", name)]
        }
        budgets = self.budgets(self.table(doc, ("producers",)))
        gpu, gpu_at = self.gpu(doc["gpu"]) if "gpu" in doc else ({}, {})
        sandbox_table = self.table(doc, ("sandbox",))
        self.known_keys(sandbox_table, ("sandbox",), SANDBOX_KEYS)
        used = {*droplets.ssh_keys, *(k for p in producers.values() for k in p.ssh_keys)}
        sandbox = SandboxSettings(
            clusters=self.names(sandbox_table, ("sandbox",), "clusters", DEFAULT_SANDBOX_CLUSTERS),
            ssh_keys=self.names(sandbox_table, ("sandbox",), "ssh_keys", tuple(sorted(used))),
        )
        clusters = self.clusters(self.table(doc, ("clusters",)))
        notify = self.notify(self.table(doc, ("notify",)))
        alerts = self.alerts(self.table(doc, ("alerts",))) if "alerts" in doc else None
        return Config(
            self.shown,
            state,
            droplets,
            producers,
            producer_at,
            sandbox,
            gpu,
            gpu_at,
            firewall=firewall,
            producer_firewalls=producer_firewalls,
            notify=notify,
            budgets=budgets,
            alerts=alerts,
            clusters=clusters,
            user_data_read=tuple(self.user_data_read),
        )

    def notify(self, table: Mapping[str, Any]) -> NotifySettings:
        """[notify]: the *name* of the variable holding the webhook URL (the URL is a secret)."""
        self.known_keys(table, ("notify",), NOTIFY_KEYS)
        if "webhook_url_env" not in table:
            return NotifySettings()
        name = table["webhook_url_env"]
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise self.fail(
                '[notify] webhook_url_env must name an environment variable, e.g. "INFRA_APPLY_WEBHOOK" '
                "(the URL itself never goes in this file)",
                ("notify",),
                "webhook_url_env",
            )
        return NotifySettings(name)

    def alerts(self, table: Mapping[str, Any]) -> Alerts:
        path = ("alerts",)
        self.known_keys(table, path, ALERT_KEYS)
        email = self.names(table, path, "email", ())
        for address in email:
            if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", address):
                raise self.fail(
                    f"[alerts] email: {printable(repr(address))} is not an email address", path, "email"
                )
        slack = self.slack(table["slack"]) if "slack" in table else None
        if not email and slack is None:
            raise self.fail(
                '[alerts] says nowhere to send alerts: add email = ["ops@example.net"] or '
                'slack = { channel = "#ops", url_env = "SLACK_ALERT_WEBHOOK" }',
                path,
            )
        days = table.get("cert_expiry_days", 14)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365:
            raise self.fail(
                "[alerts] cert_expiry_days must be a whole number of days, 1 to 365", path, "cert_expiry_days"
            )
        regions = self.names(table, path, "regions", DEFAULT_UPTIME_REGIONS)
        for region in regions:
            if region not in UPTIME_REGIONS:
                raise self.fail(
                    f"[alerts] regions: {printable(repr(region))} is not an uptime check region "
                    f"(one of {', '.join(UPTIME_REGIONS)})",
                    path,
                    "regions",
                )
        if not regions:
            raise self.fail("[alerts] regions must name at least one region", path, "regions")
        return Alerts(
            email,
            slack,
            days,
            regions,
            self.droplet_alerts(self.table(table, (*path, "droplets"))),
            self.at(path),
        )

    def slack(self, value: object) -> SlackRoute:
        path = ("alerts",)
        if not isinstance(value, dict):
            raise self.fail(
                '[alerts] slack must be { channel = "#ops", url_env = "SLACK_ALERT_WEBHOOK" }', path, "slack"
            )
        for key in value:
            if key not in SLACK_KEYS:
                raise self.fail(
                    f"[alerts] slack.{printable(key)}: unknown setting (known: {', '.join(SLACK_KEYS)}; "
                    "the webhook URL itself never goes in this file)",
                    path,
                    "slack",
                )
        channel, url_env = value.get("channel"), value.get("url_env")
        if not isinstance(channel, str) or not channel.strip() or not channel.isprintable():
            raise self.fail('[alerts] slack.channel must be a channel name, e.g. "#ops"', path, "slack")
        if not isinstance(url_env, str) or not _ENV_NAME.fullmatch(url_env):
            raise self.fail(
                "[alerts] slack.url_env must name the environment variable holding the webhook URL, "
                'e.g. "SLACK_ALERT_WEBHOOK"',
                path,
                "slack",
            )
        return SlackRoute(channel, url_env)

    def droplet_alerts(self, table: Mapping[str, Any]) -> DropletAlerts:
        path = ("alerts", "droplets")
        self.known_keys(table, path, DROPLET_ALERT_KEYS)
        for key, value in table.items():
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
                raise self.fail(f"[alerts.droplets] {key} must be a whole percent, 1 to 100", path, key)
        return DropletAlerts(**table)

    def table(self, doc: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any]:
        value = doc.get(path[-1], {})
        if not isinstance(value, dict):
            name = ".".join(path)
            raise self.fail(
                f"{name} must be a table: write [{name}] and its settings below it", path[:-1], path[-1]
            )
        return value

    def known_keys(self, table: Mapping[str, Any], path: tuple[str, ...], known: Sequence[str]) -> None:
        for key in table:
            if key.lower() in CREDENTIAL_KEYS:
                raise self._credential(path, key)
            if key not in known:
                raise self.fail(
                    f"[{'.'.join(path)}] {key}: unknown setting (known: {', '.join(known)})", path, key
                )

    def _credential(self, path: tuple[str, ...], key: str) -> ConfigError:
        where = f"[{'.'.join(path)}] {key}" if path else key
        fix = (
            "set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment"
            if path == ("state",)
            else "the DigitalOcean token comes from DIGITALOCEAN_TOKEN or ~/.vault/do_pat_<producer>"
        )
        return self.fail(f"{where}: credentials never go in {CONFIG_NAME}; {fix}", path, key)

    # [state] keeps the messages it had when state.py read it.
    def state(self, section: Mapping[str, Any], *, present: bool = True) -> StateSettings:
        table = ("state",)
        for key in section:
            if key.lower() in CREDENTIAL_KEYS:
                raise self._credential(table, key)
        for key, value in section.items():
            if key not in STATE_KEYS:
                known = ", ".join(STATE_KEYS)
                raise self.fail(f"[state] {key}: unknown setting (known: {known})", table, key)
            if key == "allow_local_in_ci":
                if not isinstance(value, bool):
                    raise self.fail("[state] allow_local_in_ci must be true or false", table, key)
            elif not isinstance(value, str):
                raise self.fail(f"[state] {key} must be a string", table, key)
        name = section.get("name", "")
        if "name" in section and not STATE_NAME.fullmatch(name):
            raise self.fail(
                f"[state] name {printable(repr(name))}: 1-63 of a-z 0-9 . _ -, starting with a letter "
                "or digit (it names this tree's folder under the state dir)",
                table,
                "name",
            )
        common = StateSettings(
            name=name,
            allow_local_in_ci=section.get("allow_local_in_ci", False),
            at=self.at(table) if present else None,
        )
        kind = section.get("backend", "local")
        if kind == "local":
            return common
        if kind != "s3":
            raise self.fail(f'[state] backend must be "local" or "s3", not {kind!r}', table, "backend")
        if not section.get("bucket"):
            raise self.fail("[state] bucket is required for the s3 backend", table, "bucket")
        key_prefix = section.get("key_prefix", "infra-apply").strip("/")
        sandbox_prefix = section.get("sandbox_key_prefix", "").strip("/")
        if sandbox_prefix and sandbox_prefix == key_prefix:
            raise self.fail(
                "[state] sandbox_key_prefix must differ from key_prefix (sandbox state must never "
                "replace real state)",
                table,
                "sandbox_key_prefix",
            )
        return replace(
            common,
            kind="s3",
            bucket=section["bucket"],
            endpoint=section.get("endpoint", ""),
            region=section.get("region") or "us-east-1",
            key_prefix=key_prefix,
            sandbox_key_prefix=sandbox_prefix,
        )

    def droplets(
        self, table: Mapping[str, Any], path: tuple[str, ...], base: DropletSettings
    ) -> DropletSettings:
        """``table``'s settings over ``base`` (the defaults, for a producer's overrides)."""
        self.known_keys(table, path, DROPLET_KEYS)
        settings = base
        if "ssh_keys" in table:
            keys = self.names(table, path, "ssh_keys", ())
            settings = replace(settings, ssh_keys=keys, ssh_keys_at=self.at(path, "ssh_keys"))
        if "monitoring" in table:
            if not isinstance(table["monitoring"], bool):
                raise self.fail(f"[{'.'.join(path)}] monitoring must be true or false", path, "monitoring")
            settings = replace(settings, monitoring=table["monitoring"])
        if "user_data" in table:
            settings = replace(settings, user_data=self.user_data(table["user_data"], path))
        return settings

    def firewall(
        self, table: Mapping[str, Any], path: tuple[str, ...], base: FirewallSettings
    ) -> FirewallSettings:
        """``table``'s settings over ``base`` (the defaults, for a producer's override)."""
        self.known_keys(table, path, FIREWALL_KEYS)
        settings = base
        if "ssh_from" in table:
            where = self.at(path, "ssh_from")
            if table["ssh_from"] == MESH:
                settings = replace(settings, ssh_from=None, mesh=True, at=where)
            else:
                cidrs = self.cidrs(table, path, "ssh_from", f' or "{MESH}"')
                settings = replace(settings, ssh_from=cidrs, mesh=False, at=where)
        if "bootstrap_from" in table:
            settings = replace(settings, bootstrap_from=self.cidrs(table, path, "bootstrap_from", ""))
        return settings

    def cidrs(
        self, table: Mapping[str, Any], path: tuple[str, ...], key: str, alternative: str
    ) -> tuple[str, ...]:
        """A list of IPv4/IPv6 networks in CIDR notation, each once, in the network's own
        spelling (``203.0.113.4/32``): DigitalOcean compares rules by that text."""
        value, where = table[key], f"[{'.'.join(path)}] {key}"
        example = f'e.g. {key} = ["203.0.113.4/32", "2001:db8::/48"]{alternative}'
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{where} must be a list of CIDRs, {example}", path, key)
        found: list[str] = []
        for text in value:
            try:
                network = ipaddress.ip_network(text, strict=True)
            except ValueError as exc:
                raise self.fail(
                    f"{where}: {printable(repr(text))} is not a CIDR ({exc}); {example}", path, key
                ) from None
            if "/" not in text:
                raise self.fail(f"{where}: {text!r} has no prefix length: write {network}", path, key)
            if str(network) in found:
                raise self.fail(f"{where}: {str(network)!r} is listed twice", path, key)
            found.append(str(network))
        return tuple(found)

    def producers(
        self, table: Mapping[str, Any], defaults: DropletSettings
    ) -> tuple[dict[str, DropletSettings], dict[str, Where]]:
        merged, where = {}, {}
        for name in table:
            path = ("producers", name)
            if not _PRODUCER.fullmatch(name):
                raise self.fail(
                    f"[producers.{printable(name)}]: not a producer name (its folder would be "
                    f"@{printable(name)}; 1-63 of a-z 0-9 - _, starting with a letter or digit)",
                    ("producers",),
                    name,
                )
            section = self.table(table, path)
            self.known_keys(section, path, PRODUCER_KEYS)
            table_path = (*path, "droplets")
            merged[name] = self.droplets(self.table(section, table_path), table_path, defaults)
            where[name] = self.at(path)
        return merged, where

    def budgets(self, table: Mapping[str, Any]) -> dict[str, Budget]:
        """``budget_monthly`` (and ``max_increase``, only beside it) of each producer that has one;
        the producer names were checked by ``producers``."""
        found = {}
        for name, section in table.items():
            path = ("producers", name)
            if "budget_monthly" not in section:
                if "max_increase" in section:
                    raise self.fail(
                        f"[producers.{name}] max_increase needs budget_monthly beside it",
                        path,
                        "max_increase",
                    )
                continue
            from infra_apply.plan.budget import Budget, parse_amount, parse_increase

            amount = parse_amount(section["budget_monthly"])
            if isinstance(amount, str):
                raise self.fail(f"[producers.{name}] budget_monthly {amount}", path, "budget_monthly")
            increase = None
            if "max_increase" in section:
                parsed = parse_increase(section["max_increase"])
                if isinstance(parsed, str):
                    raise self.fail(f"[producers.{name}] max_increase {parsed}", path, "max_increase")
                increase = parsed
            found[name] = Budget(amount, increase)
        return found

    def clusters(self, table: Mapping[str, Any]) -> dict[str, ClusterSettings]:
        out = {}
        for name in table:
            path = ("clusters", name)
            shown = f'[clusters."{printable(name)}"]'
            if not name or name != name.strip() or not name.isprintable():
                raise self.fail(f"{shown}: not a cluster name", ("clusters",), name)
            section = self.table(table, path)
            self.known_keys(section, path, CLUSTER_KEYS)
            if section.get("trusted_sources") != "managed":
                key = "trusted_sources" if "trusted_sources" in section else None
                raise self.fail(
                    f'{shown} trusted_sources must be "managed" (one digitalocean_database_firewall '
                    "owned by the owner producer)",
                    path,
                    key,
                )
            owner = section.get("owner")
            if not isinstance(owner, str) or not _PRODUCER.fullmatch(owner):
                key = "owner" if "owner" in section else None
                raise self.fail(
                    f"{shown} owner must name the producer that renders the cluster's trusted "
                    'sources, e.g. owner = "quinn"',
                    path,
                    key,
                )
            out[name] = ClusterSettings(name, owner, self.allow(section, path, shown), self.at(path))
        return out

    def allow(self, section: Mapping[str, Any], path: tuple[str, ...], shown: str) -> tuple[str, ...]:
        """IPv4 addresses or networks (a database firewall takes no IPv6), each once."""
        value = section.get("allow", [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(
                f'{shown} allow must be a list of addresses, e.g. allow = ["203.0.113.4/32"]', path, "allow"
            )
        if len(value) > ALLOW_LIMIT:
            raise self.fail(
                f"{shown} allow: at most {ALLOW_LIMIT} addresses (a cluster takes 100 rules)", path, "allow"
            )
        for item in value:
            try:
                network = ipaddress.ip_network(item, strict=True)
            except ValueError:
                raise self.fail(
                    f"{shown} allow: {printable(repr(item))} is not an IPv4 address or network "
                    "(203.0.113.4 or 203.0.113.0/24, no host bits set)",
                    path,
                    "allow",
                ) from None
            if network.version != 4:
                raise self.fail(
                    f"{shown} allow: {printable(repr(item))}: a database firewall takes no IPv6",
                    path,
                    "allow",
                )
        twice = sorted({v for v in value if value.count(v) > 1})
        if twice:
            raise self.fail(f"{shown} allow: {twice[0]!r} is listed twice", path, "allow")
        return tuple(value)

    def gpu(self, table: object) -> tuple[dict[str, GpuSettings], dict[str, Where]]:
        def locate(where: Sequence[str]) -> tuple[int, int]:
            return _locate(self.text, tuple(where[:-1]), where[-1])

        if isinstance(table, Mapping):
            for name, section in table.items():
                if isinstance(section, Mapping):
                    for key in section:
                        if key.lower() in CREDENTIAL_KEYS:
                            raise self._credential(("gpu", name), key)
        from infra_apply.gpu.config import parse_gpu_tables

        try:
            parsed = parse_gpu_tables(table, locate, path=self.shown)
        except InfraApplyError as exc:  # one family member for every problem of this file
            raise ConfigError(exc.message, path=exc.path, line=exc.line, col=exc.col) from None
        return parsed, {name: self.at(("gpu",), name) for name in parsed}

    def names(
        self, table: Mapping[str, Any], path: tuple[str, ...], key: str, default: tuple[str, ...]
    ) -> tuple[str, ...]:
        """A list of names (SSH keys, clusters): strings without surrounding space or control
        characters, each once."""
        if key not in table:
            return default
        value, where = table[key], f"[{'.'.join(path)}] {key}"
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f'{where} must be a list of names, e.g. {key} = ["a", "b"]', path, key)
        for name in value:
            if not name or name != name.strip() or not name.isprintable():
                raise self.fail(
                    f"{where}: {printable(repr(name))} is not a name (empty, surrounding spaces or a "
                    "control character)",
                    path,
                    key,
                )
        twice = sorted({n for n in value if value.count(n) > 1})
        if twice:
            raise self.fail(f"{where}: {twice[0]!r} is listed twice", path, key)
        return tuple(value)

    def user_data(self, value: Any, path: tuple[str, ...]) -> UserData | None:
        where = self.at(path, "user_data")
        label = f"[{'.'.join(path)}] user_data"
        if not isinstance(value, str):
            raise where.error(f"{label} must be a path relative to the root, as a string")
        if value == "":
            return None  # an override turning the default off
        read = read_user_data(self.root, value, where, label, self.checked)
        self.user_data_read.append((value, read))
        return read


def read_user_data(
    root: Path, value: str, where: Where, label: str = "user_data", checked: Path | None = None
) -> UserData:
    """The user-data file ``value`` (relative to ``root``), checked: inside the root, a regular
    file, at most 64 KiB of UTF-8, ``#cloud-config`` YAML or a ``#!`` script. ``checked``: the
    record of texts found valid before (``_checked_record``)."""
    rel = PurePosixPath(value)
    if rel.is_absolute() or "\\" in value or not value.isprintable():
        raise where.error(f"{label} {printable(repr(value))} must be a path relative to the root")
    base = root.resolve()
    target = (root / value).resolve()
    if base not in target.parents:
        raise where.error(f"{label} {value!r} resolves outside the root {base}")
    source = target.relative_to(base).as_posix()
    try:
        raw = read_bounded(target, USER_DATA_LIMIT)
    except FileNotFoundError:
        raise where.error(f"{label} {value!r}: no such file under the root") from None
    except FileTooLarge:
        raise where.error(
            f"{label} {value!r} is over 64 KiB ({USER_DATA_LIMIT} bytes); DigitalOcean refuses more user data"
        ) from None
    except OSError as exc:
        raise where.error(f"{label} {value!r}: cannot read it: {exc.strerror}") from None
    file_at = Where(source, 1, 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise file_at.error(f"not UTF-8 text (byte {exc.start})", "user_data") from None
    first = text.split("\n", 1)[0].rstrip("\r \t")
    if first == "#cloud-config":
        _check_cloud_config_once(text, source, checked)
    elif not first.startswith("#!"):
        raise file_at.error(
            "user data must start with a #cloud-config line (cloud-init YAML) or #! (a script); "
            "cloud-init would ignore anything else",
            "user_data",
        )
    return UserData(source, text, where)


CHECKED_FORMAT = 1  # bumped when the check below changes: texts passed before are checked again
CHECKED_KEPT = 32  # texts remembered


def _checked_record(env: Mapping[str, str]) -> Path | None:
    """Where the digests of the ``#cloud-config`` texts found valid are kept, so a run whose
    user data did not change does not load PyYAML (every command reads this file); None with
    INFRA_APPLY_NO_CACHE."""
    from infra_apply.runtime.state import side_cache

    return side_cache(env, "cloud-config-checked")


def _check_cloud_config_once(text: str, source: str, record: Path | None) -> None:
    """``_check_cloud_config``, skipped for a text the record holds (by its SHA-256 with the
    check that passed it: this module and PyYAML as installed); a text found valid joins the
    record. Only passes are kept: an invalid text is checked (and located) on every run."""
    data = f"{_checker()}\0{text}".encode("utf-8", "surrogatepass")
    key = hashlib.sha256(data).hexdigest()
    known = _read_checked(record)
    if key in known:
        return
    _check_cloud_config(text, source)
    if record is not None:
        _store_checked(record, (key, *known)[:CHECKED_KEPT])


@functools.cache
def _checker() -> str:
    """What the check is made of: this module and PyYAML's, each by path, size and time (what
    Python itself trusts to reuse a compiled module), and infra-apply's version."""
    from importlib.util import find_spec

    from infra_apply import __version__

    parts = [str(CHECKED_FORMAT), __version__]
    spec = find_spec("yaml")
    for origin in (__file__, spec.origin if spec is not None else None):
        try:
            st = os.stat(origin) if origin else None
        except OSError:
            st = None
        parts.append(f"{origin}:{st.st_size}:{st.st_mtime_ns}" if st is not None else f"{origin}:-")
    return "\0".join(parts)


def _read_checked(record: Path | None) -> tuple[str, ...]:
    from infra_apply.runtime.state import read_side_cache

    data = read_side_cache(record, 80 * CHECKED_KEPT) if record is not None else None
    # missing, foreign or damaged: checked again
    return tuple(line for line in (data or b"").decode("ascii", "replace").split() if len(line) == 64)


def _store_checked(record: Path, keys: Sequence[str]) -> None:
    from infra_apply.runtime.state import keep_side_cache

    keep_side_cache(record, "".join(f"{key}\n" for key in keys).encode("ascii"))


# A run reads the config more than once (its key, the project, the backend): the same text is
# checked once. A pure function of its arguments; a failure is not cached, so it raises again.
@functools.lru_cache(maxsize=32)
def _check_cloud_config(text: str, source: str) -> None:
    """Parse with PyYAML's safe loader, composing nodes only: aliases are never expanded, so an
    alias bomb costs nothing; the document must be a mapping (or empty)."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join(str(exc.problem or exc.context or "invalid").split())
        raise Where(source, line, col).error(f"not valid YAML: {problem}", "user_data") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise Where(source, 1, 1).error(f"not valid YAML: {type(exc).__name__}", "user_data") from None
    if node is not None and not isinstance(node, yaml.MappingNode):
        mark = node.start_mark
        raise Where(source, mark.line + 1, mark.column + 1).error(
            "a #cloud-config document must be a mapping (modules such as users:, packages:, runcmd:)",
            "user_data",
        )


# --- locating a key in the text ------------------------------------------------------------------


def _shown(path: Path, root: Path) -> str:
    """The config path as messages show it: relative to the root when inside it."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _toml_error(message: str, text: str) -> tuple[str, int, int]:
    """tomllib's "... (at line L, column C)" as (message, L, C)."""
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if m:
        return message[: m.start()], int(m.group(1)), int(m.group(2))
    m = re.search(r"\s*\(at end of document\)$", message)
    if m:
        return message[: m.start()], max(1, len(text.splitlines())), 1
    return message, 1, 1


_KEY_PART = r'(?:"(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_-]+)'
_DOTTED = re.compile(rf"\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*")
_HEADER = re.compile(rf"(\s*)\[\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*\]")


def _parts(dotted: str) -> tuple[str, ...]:
    parts = re.findall(_KEY_PART, dotted)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


def _definitions(text: str) -> Iterator[tuple[tuple[str, ...], bool, int, int]]:
    """Every table header and key line: (full key path, is a header, line, column)."""
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("[["):
            continue
        header = _HEADER.match(line)
        if header:
            table = _parts(header.group(2))
            yield table, True, number, len(header.group(1)) + 1
            continue
        key = _DOTTED.match(line)
        if key and line[key.end() : key.end() + 1] == "=":
            yield (*table, *_parts(key.group(1))), False, number, len(line) - len(line.lstrip()) + 1


def _locate(text: str, table: tuple[str, ...], key: str | None) -> tuple[int, int]:
    """Line and column of ``key`` in ``table`` (``key`` None: the table itself), else of the
    nearest enclosing table or key that is written out (dotted keys, inline tables); 1, 1 when
    nothing is."""
    wanted = (*table, key) if key is not None else table
    found = list(_definitions(text))
    while wanted:
        exact = [(line, col) for path, _, line, col in found if path == wanted]
        if exact:
            return exact[0]
        # a dotted key or an inline table holding it: the first line that defines inside it
        within = [(line, col) for path, _, line, col in found if path[: len(wanted)] == wanted]
        if within:
            return within[0]
        wanted = wanted[:-1]
    return 1, 1
