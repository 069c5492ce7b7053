"""Model -> one Terraform root module per producer, byte-identical for the same input.

Droplet addresses come from an address ledger (``addresses.json`` beside the HCL), never from
a value a person edits: a renamed droplet keeps its address, so a label change cannot plan a
destroy. The ledger is committed with ``generated/`` so pull requests show it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra_apply import kinds
from infra_apply.errors import InfraApplyError
from infra_apply.kinds import DROPLET, FIREWALL, KINDS
from infra_apply.plan.tags import MANAGED_TAG, producer_tag
from infra_apply.render import alerts, hcl
from infra_apply.render.output import (
    CACHE_FORMAT,
    LEDGER,
    USER_DATA_DIR,
    Rendered,
    _LazySettings,
    _ledger_bytes,
    load_cache,
    read_ledgers,
    store_cache,
)
from infra_apply.runtime import strictjson
from infra_apply.runtime.fs import TEXT_LIMIT, read_bounded

if TYPE_CHECKING:
    from infra_apply.manifests.config import Alerts, Config
    from infra_apply.manifests.model import Database, Droplet, Model, ProducerModel, TrustedSources

PUBLIC_SSH = (("tcp", "22"),)  # only while [firewall] ssh_from is unset (rule public_ssh)
PUBLIC_BASE = (("udp", "51820"),)
WORLD = ("0.0.0.0/0", "::/0")
PUBLIC_SUFFIX = "__public"  # "__" never occurs in a droplet address (hcl.slug)
PUBLIC_WEB = (("tcp", "80"), ("tcp", "443"))
PUBLIC_DNS = (("tcp", "53"), ("udp", "53"))


def droplet_slug(name: str) -> str:
    role = name.removeprefix("com.uvlava.")
    return "_".join(hcl.slug(part) for part in role.split("."))


# --- the address ledger --------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerEntry:
    address: str
    name: str
    source: str
    hosts: tuple[str, ...]
    services: tuple[str, ...]
    moved_from: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "hosts": list(self.hosts),
            "services": list(self.services),
            **({"moved_from": list(self.moved_from)} if self.moved_from else {}),
        }


@dataclass(frozen=True)
class Ledger:
    entries: tuple[LedgerEntry, ...] = ()

    def by_address(self) -> dict[str, LedgerEntry]:
        return {e.address: e for e in self.entries}


class LedgerError(InfraApplyError):
    default_rule = "ledger"


def parse_ledger(text: str, where: str) -> Ledger:
    """Read ``addresses.json``. It is committed and reviewed, but it still reaches HCL (``moved``
    blocks), so every value is checked before use."""

    def fail(message: str) -> InfraApplyError:
        return InfraApplyError(
            f"{message}; fix it or restore it from git", path=where, line=1, col=1, rule="ledger"
        )

    # Strict: an address written twice would otherwise lose one droplet's entry, and with it
    # its address (Terraform would replace the droplet).
    doc = strictjson.parse(text, where, "the address ledger", LedgerError)
    try:
        items = [(str(address), e) for address, e in doc["droplets"].items()]
    except (KeyError, TypeError, AttributeError) as exc:
        raise fail(f"address ledger is not valid ({exc})") from None
    entries = []
    for address, e in items:
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            raise fail(f'entry {address!r} needs a "name" string')
        lists = {k: e.get(k, []) for k in ("hosts", "services", "moved_from")}
        if not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in lists.values()):
            raise fail(f"entry {address!r}: hosts, services and moved_from must be lists of strings")
        for name in (address, *lists["moved_from"]):
            if not hcl.is_ident(name):
                raise fail(f"{name!r} is not a Terraform resource name")
        entries.append(
            LedgerEntry(
                address,
                str(e["name"]),
                str(e.get("source", "")),
                tuple(map(str, lists["hosts"])),
                tuple(map(str, lists["services"])),
                tuple(map(str, lists["moved_from"])),
            )
        )
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise fail(f"droplet {next(n for n in names if names.count(n) > 1)!r} has two addresses")
    moved = {m for e in entries for m in e.moved_from}
    if moved & {e.address for e in entries}:
        raise fail(f"moved_from names a current address: {sorted(moved & {e.address for e in entries})[0]!r}")
    if len(moved) != sum(len(e.moved_from) for e in entries):
        raise fail("an address is listed in moved_from twice")
    return Ledger(tuple(entries))


def dump_ledger(ledger: Ledger) -> str:
    doc = {
        "comment": "Stable Terraform addresses of this producer's droplets. Written by infra-apply "
        "render; an address never changes when a name does. To re-address a droplet, change its "
        "key and list the old address under moved_from.",
        "version": 1,
        "droplets": {e.address: e.as_json() for e in sorted(ledger.entries, key=lambda e: e.address)},
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def assign_addresses(droplets: Sequence[Droplet], old: Ledger) -> Ledger:
    """Keep every droplet's address; a droplet whose name changed is recognised by its identity.

    A new name that matches exactly one vanished ledger entry of the same manifest (same hosts,
    services or position) is a rename and keeps that entry's address.
    """
    by_name = {e.name: e for e in old.entries}
    claimed: dict[str, LedgerEntry] = {}
    pending = []
    for d in droplets:
        if d.name in by_name:
            claimed[d.name] = by_name[d.name]
        else:
            pending.append(d)
    orphans = [e for e in old.entries if e.name not in claimed]
    renamed = _match_renames(pending, orphans)
    taken = {e.address for e in old.entries}
    entries = []
    for d in droplets:
        entry = claimed.get(d.name) or renamed.get(d.name)
        if entry is None:
            address = _free_address(droplet_slug(d.name), taken)
            taken.add(address)
            entry = LedgerEntry(address, d.name, d.source, (), ())
        entries.append(
            LedgerEntry(
                entry.address, d.name, d.source, d.hosts, tuple(s.name for s in d.services), entry.moved_from
            )
        )
    return Ledger(tuple(entries))


def _match_renames(pending: Sequence[Droplet], orphans: Sequence[LedgerEntry]) -> dict[str, LedgerEntry]:
    def same(d: Droplet, e: LedgerEntry) -> bool:
        return d.source == e.source and (
            (bool(d.hosts) and d.hosts == e.hosts)
            or (bool(d.services) and tuple(s.name for s in d.services) == e.services)
        )

    out = {}
    for d in pending:
        candidates = [e for e in orphans if same(d, e)]
        if len(candidates) == 1 and sum(same(o, candidates[0]) for o in pending) == 1:
            out[d.name] = candidates[0]
    return out


def _free_address(base: str, taken: set[str]) -> str:
    address, n = base, 2
    while address in taken:
        address, n = f"{base}_{n}", n + 1
    return address


# --- rendering -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProducerContext:
    """Everything a producer's module templates render from: each module template gets every
    field as a variable of its own (``droplets``, ``databases``, ...) and ``sources_of``."""

    producer: str
    droplets: tuple[DropletEntry, ...] = ()  # every droplet, in manifest order
    standing: tuple[DropletEntry, ...] = ()  # those always on
    gpu: tuple[DropletEntry, ...] = ()  # the on-demand GPU droplets
    databases: tuple[DatabaseEntry, ...] = ()
    clusters: tuple[Named, ...] = ()  # the database clusters looked up
    trusted: tuple[TrustedEntry, ...] = ()  # the clusters' trusted sources the producer owns
    moves: tuple[Move, ...] = ()
    keys: tuple[Named, ...] = ()  # the SSH keys looked up
    credentials: tuple[ProjectCredentials, ...] = ()
    routes: Alerts | None = None  # [alerts]: where alerts go (None: nothing is watched)
    checks: tuple[alerts.UptimeEntry, ...] = ()
    monitors: tuple[alerts.MonitorEntry, ...] = ()

    def variables(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def sources_of(*groups: Iterable[Any], attribute: str = "sources") -> list[str]:
    """The manifests (and infra-apply.toml) the entries in ``groups`` come from, sorted: a
    module template names the entries it renders, its header lists their sources."""
    return sorted({s for group in groups for entry in group for s in getattr(entry, attribute)})


def names_of(ctx: ProducerContext) -> dict[str, str]:
    """Address -> what a person calls it, for every resource of a kind that names its own."""
    return {
        kind.address(local): name
        for kind in KINDS.values()
        if kind.names is not None
        for local, name in kind.names(ctx)
    }


def render_producer(p: ProducerModel, old: Ledger) -> Rendered:
    ledger = assign_addresses(p.droplets, old)
    address = {e.name: e.address for e in ledger.entries}
    user_data = _user_data_files(p.droplets)
    watched_tag = _watched_tag(p)
    entries = tuple(
        _droplet_entry(d, address[d.name], user_data, watched_tag if _watched(d) else None)
        for d in p.droplets
    )
    standing = tuple(e for e in entries if not e.droplet.gpu)
    dbs = tuple(db_entry(db) for db in p.databases)
    # Looked up for the databases, for the VPC of the droplets hosting their projects (those
    # projects may belong to another producer) and for the trusted sources the producer owns.
    used = {db.cluster for db in p.databases} | {c for d in p.droplets if (c := d.vpc_cluster)}
    used |= {t.cluster for t in p.trusted_sources}
    watched = _watch(p, standing)
    ctx = ProducerContext(
        producer=p.name,
        droplets=entries,
        standing=standing,
        gpu=tuple(e for e in entries if e.droplet.gpu),
        databases=dbs,
        clusters=tuple(Named(c, hcl.slug(c)) for c in sorted(used)),
        trusted=tuple(TrustedEntry(t, hcl.slug(t.cluster)) for t in p.trusted_sources),
        moves=tuple(
            Move(f"{kind}.{old_addr}", f"{kind}.{e.address}")
            for e in sorted(ledger.entries, key=lambda e: e.address)
            for old_addr in e.moved_from
            for kind in (DROPLET.type, FIREWALL.type)
        ),
        keys=tuple(Named(k, hcl.slug(k)) for k in sorted({k for d in p.droplets for k in d.ssh_keys})),
        credentials=_credentials_entries(dbs),
        routes=p.alerts,
        checks=watched.checks if watched is not None else (),
        monitors=watched.monitors if watched is not None else (),
    )
    files: dict[str, str] = {}
    for template in hcl.module_templates():
        text = hcl.render(template, **ctx.variables(), sources_of=sources_of)
        if text:  # a template with nothing to render for this producer writes no file
            files[template.removesuffix(".j2")] = text
    for source, name in sorted(user_data.items()):
        files[f"{USER_DATA_DIR}/{name}"] = next(
            d.user_data.text for d in p.droplets if d.user_data and d.user_data.source == source
        )
    if entries:
        files[LEDGER] = dump_ledger(ledger)
    return Rendered(
        producer=p.name,
        files=dict(sorted(files.items())),
        names=names_of(ctx),
        droplet_addresses={e.droplet.name: DROPLET.address(e.address) for e in entries},
        gpu_variables={e.droplet.name: e.variable for e in ctx.gpu},
        ssh_variables={e.droplet.name: e.ssh.variable for e in entries if e.ssh.variable},
        create_settings=_LazySettings(
            {
                DROPLET.address(e.address): (
                    e.droplet.ssh_keys,
                    e.droplet.monitoring,
                    e.droplet.user_data.sha1 if e.droplet.user_data else None,
                    e.droplet.vpc_cluster,
                )
                for e in entries
            }
        ),
    )


# Every sensitive variable a module template may declare, and where its value comes from (the
# environment named in infra-apply.toml, or the account's stand-in): never written to a file,
# handed to Terraform as ``TF_VAR_<name>`` for each one a producer's module declares.
SecretEnv = Callable[["Config", Mapping[str, str], "str | None"], Mapping[str, str]]
SENSITIVE: Mapping[str, SecretEnv] = {
    alerts.SLACK_VARIABLE: lambda config, env, stand_in: alerts.terraform_env(
        config.alerts, env, stand_in_url=stand_in
    ),
}
_DECLARED = re.compile(r'^variable "([A-Za-z_][A-Za-z0-9_-]*)" \{', re.MULTILINE)


def sensitive_env(
    r: Rendered, config: Config, env: Mapping[str, str], stand_in: str | None
) -> dict[str, str]:
    """``TF_VAR_<name>`` for every sensitive variable ``r``'s module declares."""
    declared = {v for name, text in r.files.items() if name.endswith(".tf") for v in _DECLARED.findall(text)}
    out: dict[str, str] = {}
    for name in sorted(declared & SENSITIVE.keys()):
        out.update(SENSITIVE[name](config, env, stand_in))
    return out


def _watched_tag(p: ProducerModel) -> str | None:
    """The tag the droplet alerts watch (``watched:P``), when ``[alerts.droplets]`` sets a
    threshold: on the producer's standing droplets with monitoring on only. The agent of a
    droplet without monitoring sends no metric, so an alert on it could never fire; a GPU
    droplet's busy CPU is its job, not a fault."""
    thresholds = p.alerts.droplets if p.alerts is not None else None
    if thresholds is None or all(getattr(thresholds, key) is None for key in alerts.METRICS):
        return None
    return f"watched:{p.name}"


def _watched(d: Droplet) -> bool:
    return d.monitoring and not d.gpu


def _watch(p: ProducerModel, standing: Sequence[DropletEntry]) -> alerts.Watch | None:
    """What [alerts] watches in the producer: its standing droplets' public domains (a GPU
    droplet is off most of the time) and, by tag, the metrics of those with monitoring on."""
    if p.alerts is None or not standing:
        return None
    public = [
        alerts.PublicService(s.domain, s.name, e.droplet.name)
        for e in standing
        if e.web
        for s in (*e.droplet.services, *e.droplet.hosted)
        if s.domain
    ]
    tag = _watched_tag(p) if any(_watched(e.droplet) for e in standing) else None
    return alerts.watch(public, p.name, tag, p.alerts.droplets)


def _user_data_files(droplets: Sequence[Droplet]) -> dict[str, str]:
    """User-data source (root-relative) -> its file name under user-data/: the source's own
    name, made safe; sources sharing a name get a hash of their path, so names never clash."""
    sources = sorted({d.user_data.source for d in droplets if d.user_data is not None})
    plain = {s: re.sub(r"[^A-Za-z0-9._-]", "_", s.rsplit("/", 1)[-1]).lstrip(".") for s in sources}
    plain = {s: name or "user-data" for s, name in plain.items()}
    out = {}
    for source, name in plain.items():
        if list(plain.values()).count(name) > 1:
            stem, dot, suffix = name.rpartition(".")
            digest = hashlib.sha1(source.encode("utf-8", "surrogatepass")).hexdigest()[:8]
            name = f"{stem}-{digest}.{suffix}" if dot and stem else f"{name}-{digest}"
        out[source] = name
    return out


def public_inbound(d: Droplet) -> tuple[tuple[str, str], ...]:
    """(protocol, port) of every inbound rule the droplet's firewalls open to the whole
    internet: SSH while ``ssh_from`` is unset, WireGuard, 80/443 for a reverse proxy, 53 for DNS."""
    return (*(PUBLIC_SSH if d.firewall.public else ()), *intended_public(d))


def intended_public(d: Droplet) -> tuple[tuple[str, str], ...]:
    """The openings the mesh model needs from the whole internet (the public firewall's)."""
    kinds = {s.kind for s in d.services}
    web, dns = "reverse-proxy" in kinds, "dns" in kinds
    return (*PUBLIC_BASE, *(PUBLIC_WEB if web else ()), *(PUBLIC_DNS if dns else ()))


@dataclass(frozen=True)
class InboundRule:
    """One public inbound rule of a droplet's firewall."""

    protocol: str
    port: str


@dataclass(frozen=True)
class ClusterVpc:
    """The cluster whose VPC a droplet is created in, and its data source's local name."""

    cluster: str
    address: str


@dataclass(frozen=True)
class DropletEntry:
    """What the droplet, firewall and output templates read of one droplet."""

    droplet: Droplet
    address: str  # its local name in the module (the ledger's)
    variable: str  # a GPU droplet's on/off variable
    firewall_name: str
    tags: tuple[str, ...]
    web: bool  # it runs a reverse proxy: HTTP(S) is open
    dns: bool  # it serves DNS: port 53 is open
    inbound: tuple[InboundRule, ...]
    ssh_keys: tuple[str, ...]  # the local names of its ssh_keys data sources
    user_data: str | None  # its user-data file, relative to the module
    vpc: ClusterVpc | None  # the cluster whose VPC it is created in
    # The second firewall, for what the mesh model opens to the whole internet by design:
    # its local name, live name, what it opens in words, and the checkov skip reason.
    public_address: str
    public_name: str
    public_text: str
    skip_reason: str
    ssh: SshEntry

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.droplet.source,)

    @property
    def declared_in(self) -> tuple[str, ...]:
        """Its manifest and every other one naming the same GPU droplet."""
        return (self.droplet.source, *self.droplet.also_declared_in)


@dataclass(frozen=True)
class DatabaseEntry:
    """A manifest database's database and user: the local names render gives them, which
    takeover, adopt and the exists check look them up by."""

    name: str
    user: str
    project: str
    environment: str
    cluster_address: str  # local name of the cluster's data source
    db_address: str  # local name of the digitalocean_database_db
    user_address: str  # local name of the digitalocean_database_user
    source: str = ""  # the manifest declaring it

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,)


@dataclass(frozen=True)
class ProjectCredentials:
    """A project's databases, one per environment: the keys ``db-credentials`` looks up."""

    project: str
    environments: tuple[DatabaseEntry, ...]


@dataclass(frozen=True)
class Move:
    """One ``moved`` block: a renamed address (``from`` is a Python keyword)."""

    from_: str
    to: str


@dataclass(frozen=True)
class Named:
    """A data source read by name (an SSH key, a database cluster) and its local name."""

    name: str
    address: str


@dataclass(frozen=True)
class TrustedEntry:
    """A cluster's trusted sources (its database firewall) and the cluster's local name."""

    ts: TrustedSources
    address: str

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.ts.at.path,)


@dataclass(frozen=True)
class SshEntry:
    """Who may reach a droplet's SSH through its own firewall, and how that is said."""

    sources: tuple[str, ...]  # the rule's sources (none and no variable: no SSH rule)
    variable: str | None  # ssh_from = "mesh" with bootstrap_from: the variable turning it on
    text: str  # the firewall's comment
    bootstrap: tuple[str, ...] = ()  # the variable's rule's sources


def public_address(address: str) -> str:
    """The address of a droplet's public firewall (its own firewall keeps ``address``)."""
    return address + PUBLIC_SUFFIX


def firewall_name(local: str) -> str:
    """The live name of the firewall at ``digitalocean_firewall.<local>`` (adopt finds it by it)."""
    return "fw-" + local.replace("_", "-")


def ssh_variable(address: str) -> str:
    return f"ssh_bootstrap_{address}"


def _ssh_entry(d: Droplet, address: str) -> SshEntry:
    """The SSH rule of the droplet's own firewall: its sources (none: no rule), or with
    ``ssh_from = "mesh"`` and ``bootstrap_from``, a rule a variable turns off once registered."""
    fw = d.firewall
    if fw.public:
        return SshEntry(WORLD, None, "from the whole internet (ssh_from unset)")
    if fw.mesh and fw.bootstrap_from:
        return SshEntry(
            (),
            ssh_variable(address),
            "over the mesh; from bootstrap_from until it is in mesh-hosts.json",
            bootstrap=tuple(fw.bootstrap_from),
        )
    if fw.mesh:
        return SshEntry((), None, "over the mesh only")
    sources = tuple(fw.ssh_from or ())
    return SshEntry(sources, None, "from ssh_from" if sources else "from nowhere")


_SKIP_UNSAFE = re.compile(r"[^A-Za-z0-9 ._,:;/()+-]")


def _public_text(d: Droplet) -> tuple[str, str]:
    """What the public firewall opens and why, in words: the comment above it and the checkov
    skip reason (one line, from the manifest's role and services; nothing else reaches it)."""
    by_kind: dict[str, list[str]] = {}
    for s in d.services:
        by_kind.setdefault(s.kind, []).append(s.name)
    parts = ["WireGuard 51820/udp for the mesh"]
    if "reverse-proxy" in by_kind:
        parts.append(f"HTTP(S) 80,443/tcp for {', '.join(by_kind['reverse-proxy'])} (reverse-proxy)")
    if "dns" in by_kind:
        parts.append(f"DNS 53/tcp+udp for {', '.join(by_kind['dns'])} (dns)")
    role = d.role if d.role is not None else droplet_slug(d.name)
    reason = f"{d.name} role {role}: " + "; ".join(parts)
    return "; ".join(parts), _SKIP_UNSAFE.sub("_", reason)


def _droplet_entry(
    d: Droplet, address: str, user_data: Mapping[str, str], watched_tag: str | None = None
) -> DropletEntry:
    kinds = {s.kind for s in d.services}
    web, dns = "reverse-proxy" in kinds, "dns" in kinds
    inbound = intended_public(d)
    public_text, skip_reason = _public_text(d)
    tags = sorted(
        {
            MANAGED_TAG,
            producer_tag(d.producer),
            f"role:{droplet_slug(d.name) if d.role is None else d.role}",
            *d.trusted_tags,
            *((watched_tag,) if watched_tag is not None else ()),
        }
    )
    return DropletEntry(
        droplet=d,
        address=address,
        variable=f"gpu_{address}",
        firewall_name=firewall_name(address),
        tags=tuple(tags),
        web=web,
        dns=dns,
        inbound=tuple(InboundRule(proto, port) for proto, port in inbound),
        ssh_keys=tuple(hcl.slug(k) for k in d.ssh_keys),
        user_data=f"{USER_DATA_DIR}/{user_data[d.user_data.source]}" if d.user_data else None,
        vpc=ClusterVpc(d.vpc_cluster, hcl.slug(d.vpc_cluster)) if d.vpc_cluster else None,
        public_address=public_address(address),
        public_name=firewall_name(public_address(address)),
        public_text=public_text,
        skip_reason=skip_reason,
        ssh=_ssh_entry(d, address),
    )


def db_entry(db: Database) -> DatabaseEntry:
    """The local names of ``db``'s database and user (one place: render, takeover, adopt)."""
    c = hcl.slug(db.cluster)
    return DatabaseEntry(
        name=db.name,
        user=db.user,
        project=db.project,
        environment=db.environment,
        cluster_address=c,
        db_address=f"{c}__{hcl.slug(db.name)}",
        user_address=f"{c}__{hcl.slug(db.user)}",
        source=db.source,
    )


def _credentials_entries(dbs: Sequence[DatabaseEntry]) -> tuple[ProjectCredentials, ...]:
    """Project -> its environments' databases, sorted: the keys ``db-credentials`` looks up."""
    projects: dict[str, list[DatabaseEntry]] = {}
    for db in dbs:
        projects.setdefault(db.project, []).append(db)
    return tuple(
        ProjectCredentials(name, tuple(sorted(envs, key=lambda d: str(d.environment))))
        for name, envs in sorted(projects.items())
    )


# --- the tree ---------------------------------------------------------------------------------


def read_ledger(out_dir: Path, producer: str) -> Ledger:
    return _ledger_from(_ledger_bytes(out_dir, producer), out_dir / producer / LEDGER)


def _ledger_from(text: bytes | None, path: Path) -> Ledger:
    return Ledger() if text is None else _parse_ledger_bytes(text, path)


def _parse_ledger_bytes(text: bytes, path: Path) -> Ledger:
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InfraApplyError(
            f"cannot read address ledger: not UTF-8 text (byte {exc.start})", path=str(path), rule="ledger"
        ) from None
    return parse_ledger(decoded, str(path))


def rendered_producers(model: Model) -> list[ProducerModel]:
    """The producers render writes a module for: those with something to provision."""
    return [p for p in model.producers if p.droplets or p.databases]


def render_model(
    model: Model,
    ledger_dir: Path,
    cache: Path | None = None,
    ledgers: Mapping[str, bytes | None] | None = None,
    code: bytes | None = None,
    keep: Callable[[Callable[[], None]], None] | None = None,
) -> list[Rendered]:
    """Render every producer that has something to provision; ledgers come from ``ledger_dir``
    (or ``ledgers``, as ``read_ledgers`` read them there, when the caller hashes them too);
    ``code`` is ``uptodate.code_digest()`` when the caller has it; ``keep`` runs the storing of
    the cache (at once without it; ``render`` stores while it writes the files).

    With ``cache`` (a file under the state dir), the texts of the last render are reused when
    every input is the same (the model, the ledgers, the templates, this code): only computing
    them is skipped, never comparing them with or writing them to ``ledger_dir``.
    """
    producers = rendered_producers(model)
    # Read once: the bytes hashed into the key are the bytes rendered from.
    if ledgers is None:
        ledgers = read_ledgers(ledger_dir, (p.name for p in producers))
    key = _cache_key(model, ledgers, code) if cache is not None else None
    if cache is not None and key is not None:
        cached = load_cache(cache, key)
        if cached is not None:
            return cached
    rendered = [
        render_producer(p, _ledger_from(ledgers[p.name], ledger_dir / p.name / LEDGER)) for p in producers
    ]
    if cache is not None and key is not None:
        store = functools.partial(store_cache, cache, key, rendered)
        if keep is None:
            store()
        else:
            keep(store)
    return rendered


# --- the render cache -------------------------------------------------------------------------


def cache_file(validation_cache: Path | None) -> Path | None:
    """The render cache beside the tree's validation cache (both keyed by the tree's identity);
    None when caching is off (INFRA_APPLY_NO_CACHE)."""
    if validation_cache is None:
        return None
    return validation_cache.with_name("render-" + validation_cache.name.removeprefix("validate-"))


def _cache_key(model: Model, ledgers: Mapping[str, bytes | None], code: bytes | None = None) -> str | None:
    """SHA-256 over every input of a render, each part hashed on its own (fixed-length parts
    cannot run into each other); None when one cannot be read (that render is not cached)."""
    import pickle
    from importlib.util import find_spec

    from infra_apply import __version__
    from infra_apply.render.uptodate import code_digest

    parts: list[bytes] = [f"{CACHE_FORMAT}\0{__version__}".encode()]
    try:
        # Only dumped, never loaded: a serialisation that round-trips, so two models that differ
        # in any field give different bytes (equal models built differently may not: a miss).
        parts.append(pickle.dumps(model, protocol=5))
        # This code (alerts.py computes what alerts.tf watches, the kinds table names what is
        # rendered), the kinds in the table, Jinja (an upgrade rewrites its files) and the
        # templates.
        for module in (__file__, hcl.__file__, alerts.__file__, kinds.__file__):
            parts.append(read_bounded(Path(module), TEXT_LIMIT))
        # And every other module of the package by its stat (the managed tag, the ledger's
        # parser, ... reach the texts too), the libraries and the Python.
        parts.append(code_digest() if code is None else code)
        parts.append("\0".join(KINDS).encode())
        jinja = find_spec("jinja2")
        if jinja is None or jinja.origin is None:
            return None
        st = Path(jinja.origin).stat()
        parts.append(f"{jinja.origin}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        for directory in hcl.template_dirs():
            for template in sorted(directory.iterdir()):
                parts += [template.name.encode(), read_bounded(template, TEXT_LIMIT)]
    except (TypeError, ValueError, OSError, pickle.PicklingError, RecursionError):
        return None
    for producer, text in sorted(ledgers.items()):
        parts += [producer.encode(), b"-" if text is None else b"+" + text]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()
