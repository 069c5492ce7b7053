"""Pre-flight: before Terraform starts, check the account has what the manifests and
infra-apply.toml name.

The token works (the account is active); every database cluster a manifest names exists; every
SSH key a droplet is given exists; every region, size and image slug exists and the size is
offered in the droplet's region. A problem is a located line at the manifest (or config) line
naming the missing thing, and nothing is planned.

One interface, two sources: ``LiveSource`` asks DigitalOcean through ``do_api`` (a handful of
list calls per account and run: account, databases, account/keys, sizes, regions, distribution
images, plus ``GET /v2/images/<slug>`` for the few other image slugs); ``SandboxSource`` reads
the sandbox cloud's catalogue, so what would fail at DigitalOcean fails in the sandbox too.

An on-demand GPU droplet the run does not create (no lease holds it) still has its slugs
checked, but a size its region does not offer is only a warning: it fails at ``gpu up``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from infra_apply.errors import InfraApplyError, Level, Problem, ValidationFailed
from infra_apply.untrusted import short, visible

if TYPE_CHECKING:
    # the manifests stage only where its types are used: a plan starts its catalogue through
    # this module (accounts.py) before it imports the manifests stage
    from infra_apply.cloud.account import Account
    from infra_apply.cloud.accounts import Accounts
    from infra_apply.manifests.config import Config, Where
    from infra_apply.manifests.manifest import Key, Manifest
    from infra_apply.manifests.model import Droplet, Model

RULE = "preflight"
Say = Callable[[str], None]
JsonObject = Mapping[str, Any]


class PreflightFailed(ValidationFailed):
    def __init__(self, problems: list[Problem], where: str) -> None:
        super().__init__(problems)
        errors = sum(p.level == "error" for p in problems)
        self.message = f"pre-flight: {errors} error(s) against {where}"


# --- what a run needs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """One thing the account must have, and where the manifest or config names it."""

    kind: str  # "cluster" | "ssh_key" | "droplet"
    name: str
    where: Where


@dataclass(frozen=True)
class DropletNeed:
    droplet: Droplet
    region: Where
    size: Where
    image: Where
    created: bool  # False: an on-demand GPU this run leaves off
    name: Where | None = None  # its name in the manifest (None: an on-demand GPU)


@dataclass(frozen=True)
class Needs:
    clusters: tuple[Need, ...] = ()
    ssh_keys: tuple[Need, ...] = ()
    droplets: tuple[DropletNeed, ...] = ()
    owners: Mapping[str, str] = field(default_factory=dict)  # cluster -> owner of its trusted sources


def needs(
    model: Model,
    manifests: Mapping[str, Manifest],
    config: Config,
    producers: Iterable[str],
    gpu: Iterable[str] = (),
) -> Needs:
    """What planning ``producers`` (with the GPU droplets ``gpu`` on) asks of the account."""
    from infra_apply.manifests.config import CONFIG_NAME, Where

    gpu = set(gpu)
    clusters, keys, droplets = [], [], []
    for name in sorted(set(producers)):
        p = model.producer(name)
        if p is None:
            continue
        for db in p.databases:
            clusters.append(Need("cluster", db.cluster, _at(manifests, db.source, ("database", "cluster"))))
        clusters += [Need("cluster", t.cluster, t.at) for t in p.trusted_sources]
        settings = config.for_producer(name)
        key_where = settings.ssh_keys_at or Where(config.path or CONFIG_NAME, 1, 1)
        # The data sources are read on every plan, whichever droplets it creates.
        for key in sorted({k for d in p.droplets for k in d.ssh_keys}):
            keys.append(Need("ssh_key", key, key_where))
        droplets += [_droplet_need(d, manifests, created=not d.gpu or d.name in gpu) for d in p.droplets]
    owners = {name: cs.owner for name, cs in config.clusters.items()}
    return Needs(tuple(clusters), tuple(keys), tuple(droplets), owners)


def _droplet_need(d: Droplet, manifests: Mapping[str, Manifest], *, created: bool) -> DropletNeed:
    m = manifests.get(d.source)
    if d.gpu or m is None:
        where = _at(manifests, d.source, ("service", "gpu"))
        return DropletNeed(d, where, where, where, created)
    index = next((i for i, entry in enumerate(m.data.get("droplets", [])) if entry.get("name") == d.name), 0)
    entry = m.data["droplets"][index] if m.data.get("droplets") else {}

    def at(field: str) -> Where:
        # A default (no such key in the manifest) is located at the droplet's name.
        return _at(manifests, d.source, ("droplets", index, field if field in entry else "name"))

    name = _at(manifests, d.source, ("droplets", index, "name"))
    return DropletNeed(d, at("region"), at("size"), at("image"), created, name)


def size_at(d: Droplet, manifests: Mapping[str, Manifest]) -> Where:
    """Where a droplet's size is declared (its name, when the size is the default)."""
    return _droplet_need(d, manifests, created=True).size


def _at(manifests: Mapping[str, Manifest], source: str, key: Key) -> Where:
    from infra_apply.manifests.config import Where

    m = manifests.get(source)
    line, col = m.locate(key) if m is not None else (0, 0)
    return Where(source, line, col)


# --- what an account has ------------------------------------------------------------------------


class Source(Protocol):
    """An account, answering in the API's shapes (``GET /v2/...``'s lists of objects)."""

    label: str

    def account(self) -> JsonObject: ...
    def databases(self) -> list[JsonObject]: ...
    def ssh_keys(self) -> list[JsonObject]: ...
    def sizes(self) -> list[JsonObject]: ...
    def regions(self) -> list[JsonObject]: ...
    def distribution_images(self) -> list[JsonObject]: ...
    def image(self, slug: str) -> JsonObject | None: ...
    # what already exists (exists.py): never create a second one
    def droplets(self) -> list[JsonObject]: ...
    def firewalls(self) -> list[JsonObject]: ...
    def database_dbs(self, cluster_id: str) -> list[JsonObject]: ...
    def database_users(self, cluster_id: str) -> list[JsonObject]: ...
    # a cluster's trusted sources (GET /v2/databases/$ID/firewall): empty, anyone may connect
    def database_firewall(self, cluster_id: str) -> list[JsonObject]: ...


class LiveSource:
    """A DigitalOcean account through the API client (token, endpoint, retries of 429)."""

    def __init__(self, client: Any, label: str = "the DigitalOcean account") -> None:
        self.client = client
        self.label = label

    def account(self) -> JsonObject:
        body = self.client.request("GET", "/v2/account", what="pre-flight: GET /v2/account")
        account = body.get("account")
        if not isinstance(account, Mapping):
            raise InfraApplyError("DigitalOcean API: pre-flight: GET /v2/account: response has no account")
        # Shown to the operator: made printable, and an echoed token masked.
        said = {
            k: self.client.shown(v)
            for k in ("status", "status_message")
            if isinstance(v := account.get(k), str)
        }
        return {**account, **said}

    def _list(self, path: str, key: str, query: Mapping[str, str] | None = None) -> list[JsonObject]:
        return list(self.client.paginate(path, key, query=query, what=f"pre-flight: GET {path}"))

    def databases(self) -> list[JsonObject]:
        return self._list("/v2/databases", "databases")

    def ssh_keys(self) -> list[JsonObject]:
        return self._list("/v2/account/keys", "ssh_keys")

    def sizes(self) -> list[JsonObject]:
        return self._list("/v2/sizes", "sizes")

    def regions(self) -> list[JsonObject]:
        return self._list("/v2/regions", "regions")

    def distribution_images(self) -> list[JsonObject]:
        return self._list("/v2/images", "images", {"type": "distribution"})

    def image(self, slug: str) -> JsonObject | None:
        from infra_apply.cloud.do_api import ApiError

        path = f"/v2/images/{quote(slug, safe='')}"
        try:
            body = self.client.request("GET", path, what=f"pre-flight: GET {path}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        image = body.get("image")
        return image if isinstance(image, Mapping) else None

    def droplets(self) -> list[JsonObject]:
        return self._list("/v2/droplets", "droplets")

    def firewalls(self) -> list[JsonObject]:
        return self._list("/v2/firewalls", "firewalls")

    def database_dbs(self, cluster_id: str) -> list[JsonObject]:
        return self._cluster_list(cluster_id, "dbs")

    def database_users(self, cluster_id: str) -> list[JsonObject]:
        return self._cluster_list(cluster_id, "users")

    def database_firewall(self, cluster_id: str) -> list[JsonObject]:
        return self._cluster_list(cluster_id, "firewall", "rules")

    def _cluster_list(self, cluster_id: str, key: str, field: str | None = None) -> list[JsonObject]:
        # Not paginated by the API: one answer holds them all (null when there are none).
        path = f"/v2/databases/{quote(cluster_id, safe='')}/{key}"
        found = self.client.request("GET", path, what=f"GET {path}").get(field or key)
        return [x for x in found or () if isinstance(x, Mapping)]


class SandboxSource:
    """The sandbox account: its cloud file's clusters, SSH keys and catalogue."""

    label = "the sandbox account"

    def __init__(self, path: Path) -> None:
        from infra_apply.sandbox import cloud

        self._cloud = cloud.load(path)
        self._catalogue = cloud.account_catalogue(self._cloud)

    def account(self) -> JsonObject:
        return {"status": "active", "email": "sandbox@example.invalid"}

    def databases(self) -> list[JsonObject]:
        return list(self._cloud["clusters"].values())

    def ssh_keys(self) -> list[JsonObject]:
        return list(self._cloud["ssh_keys"].values())

    def sizes(self) -> list[JsonObject]:
        return list(self._catalogue["sizes"])

    def regions(self) -> list[JsonObject]:
        return list(self._catalogue["regions"])

    def distribution_images(self) -> list[JsonObject]:
        return list(self._catalogue["images"])

    def image(self, slug: str) -> JsonObject | None:
        return next((i for i in self._catalogue["images"] if i.get("slug") == slug), None)

    def droplets(self) -> list[JsonObject]:
        # In the API's shape, as GET /v2/droplets answers
        return [
            {
                "id": int(d["id"]),
                "name": d["name"],
                "status": d.get("status", "active"),
                "created_at": d.get("created_at", ""),
                "tags": list(d.get("tags") or ()),
                "region": {"slug": d.get("region", "")},
                "size_slug": d.get("size", ""),
                "image": {"slug": d.get("image", "")},
                "vpc_uuid": d.get("vpc_uuid", ""),
            }
            for d in self._cloud["droplets"].values()
        ]

    def firewalls(self) -> list[JsonObject]:
        fields = ("id", "name", "droplet_ids", "tags")
        return [{k: f.get(k) for k in fields} for f in self._cloud["firewalls"].values()]

    def database_dbs(self, cluster_id: str) -> list[JsonObject]:
        dbs = self._cloud["databases"].values()
        return [{"name": d["name"]} for d in dbs if d["cluster_id"] == cluster_id]

    def database_users(self, cluster_id: str) -> list[JsonObject]:
        return [
            {"name": u["name"], "role": u.get("role", "normal")}
            for u in self._cloud["users"].values()
            if u["cluster_id"] == cluster_id
        ]

    def database_firewall(self, cluster_id: str) -> list[JsonObject]:
        from infra_apply.sandbox import cloud

        return list(cloud.cluster_rules(self._cloud, cluster_id))


@dataclass(frozen=True)
class Catalogue:
    """What one account offers, fetched once per run; only the lists a run needs are asked for."""

    label: str
    clusters: frozenset[str]
    ssh_keys: frozenset[str]
    regions: Mapping[str, bool]  # slug -> available
    sizes: Mapping[str, tuple[bool, tuple[str, ...]]]  # slug -> (available, regions offering it)
    images: frozenset[str]
    # Asked only when a droplet hosts a database project: cluster name -> (region,
    # private_network_uuid), and droplet name -> vpc_uuid of the droplets the account has.
    cluster_vpcs: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    droplet_vpcs: Mapping[str, str] = field(default_factory=dict)
    # clusters that trust every address (no trusted sources at all)
    open_clusters: frozenset[str] = frozenset()


def fetch(source: Source, wanted: Needs, say: Say) -> Catalogue:
    _check_account(source, say)
    vpcs = any(n.droplet.database_clusters for n in wanted.droplets)
    databases = source.databases() if wanted.clusters or vpcs else []
    clusters = {str(c.get("name")) for c in databases} if wanted.clusters else set()
    used = {n.name for n in wanted.clusters}
    open_clusters = {
        str(c.get("name"))
        for c in databases
        if str(c.get("name")) in used and not source.database_firewall(str(c.get("id")))
    }
    keys = {str(k.get("name")) for k in source.ssh_keys()} if wanted.ssh_keys else set()
    regions, sizes, images = {}, {}, set()
    if wanted.droplets:
        regions = {str(r.get("slug")): bool(r.get("available")) for r in source.regions()}
        sizes = {str(s.get("slug")): (bool(s.get("available")), _size_regions(s)) for s in source.sizes()}
        images = {str(i.get("slug")) for i in source.distribution_images() if i.get("slug")}
        # Images outside the distributions (GPU base images, applications): one call each.
        for slug in sorted({n.droplet.image for n in wanted.droplets} - images):
            if not slug.isdigit() and source.image(slug) is not None:
                images.add(slug)
    cluster_vpcs: dict[str, tuple[str, str]] = {}
    droplet_vpcs: dict[str, str] = {}
    if vpcs:
        for c in databases:
            if c.get("region") and c.get("private_network_uuid"):
                cluster_vpcs[str(c.get("name"))] = (str(c["region"]).lower(), str(c["private_network_uuid"]))
        droplet_vpcs = {
            str(d.get("name")): str(d["vpc_uuid"]) for d in source.droplets() if d.get("vpc_uuid")
        }
    return Catalogue(
        source.label,
        frozenset(clusters),
        frozenset(keys),
        regions,
        sizes,
        frozenset(images),
        cluster_vpcs,
        droplet_vpcs,
        frozenset(open_clusters),
    )


def _size_regions(size: JsonObject) -> tuple[str, ...]:
    """A size's ``regions``: a list of slugs (or null); any other shape is a broken answer."""
    regions = size.get("regions") or ()
    if not isinstance(regions, list | tuple) or not all(isinstance(r, str) for r in regions):
        slug = visible(short(str(size.get("slug")), 60))
        raise InfraApplyError(
            f"DigitalOcean API: pre-flight: GET /v2/sizes: size '{slug}' has regions that are not "
            "a list of region slugs"
        )
    return tuple(regions)


def _check_account(source: Source, say: Say) -> None:
    account = source.account()
    status = str(account.get("status", ""))
    detail = f" ({account['status_message']})" if account.get("status_message") else ""
    if status == "warning":
        say(f"infra-apply: warning: pre-flight: {source.label} has status warning{detail}")
    elif status != "active":
        raise InfraApplyError(
            f"pre-flight: {source.label} is not active (status {status or 'unknown'}{detail}); "
            "DigitalOcean would refuse to create anything"
        )


# --- the checks ---------------------------------------------------------------------------------


def check(cat: Catalogue, wanted: Needs) -> list[Problem]:
    problems: list[Problem] = []

    def add(where: Where, message: str, level: Level = "error") -> None:
        problems.append(Problem(where.path, where.line, where.col, level, RULE, message))

    for need in wanted.clusters:
        if need.name not in cat.clusters:
            known = _listing(cat.clusters)
            add(need.where, f"database cluster {need.name!r} is not in {cat.label} (clusters: {known})")
    for name in sorted(cat.open_clusters):
        first = min((n.where for n in wanted.clusters if n.name == name), key=_where_key)
        owner = wanted.owners.get(name)
        fix = (
            f"producer {owner}'s apply adds them"
            if owner is not None
            else f'infra-apply.toml [clusters."{name}"] trusted_sources = "managed" restricts it to its hosts'
        )
        add(
            first,
            f"database cluster {name!r} has no trusted sources in {cat.label}: any address with "
            f"its password may connect ({fix})",
            "warning",
        )
    for need in _unique(wanted.ssh_keys):
        if need.name not in cat.ssh_keys:
            known = _listing(cat.ssh_keys)
            add(need.where, f"SSH key {need.name!r} is not in {cat.label} (keys: {known})")
    for d in wanted.droplets:
        for where, message, level in (*_droplet_problems(cat, d), *_vpc_problems(cat, d)):
            add(where, message, level)
    return sorted(set(problems), key=Problem.sort_key)


def _vpc_problems(cat: Catalogue, need: DropletNeed) -> Iterable[tuple[Where, str, Level]]:
    """A running droplet outside the VPC of a cluster it hosts a project of: that cluster's
    private host is out of its reach, and the droplet is never moved (vpc_uuid is ForceNew), so
    this is said before anything is planned. A new droplet joins its first cluster's VPC when
    that cluster is in its region (render); ``db-credentials`` refuses an unreachable host."""
    d = need.droplet
    live = cat.droplet_vpcs.get(d.name)
    if need.name is None or live is None:
        return
    for cluster in d.database_clusters:
        region, vpc = cat.cluster_vpcs.get(cluster, (None, None))
        if region is None or vpc == live:
            continue
        regional = region == d.region
        where = "" if regional else f" (a VPC is regional: the cluster is in {_shown(region)})"
        yield (
            need.name if regional else need.region,
            f"droplet {d.name!r} runs in VPC {_shown(live)}, not in VPC {_shown(str(vpc))} of cluster "
            f"{cluster!r} it hosts a project of{where}: the cluster's private host is out of its "
            "reach (db-credentials refuses it); a running droplet is never moved into another VPC "
            '(vpc_uuid is ForceNew): see docs/safety.md, "The cluster\'s network"',
            "warning",
        )


def _shown(value: str) -> str:
    return visible(short(value, 60))


def _droplet_problems(cat: Catalogue, need: DropletNeed) -> Iterable[tuple[Where, str, Level]]:
    d = need.droplet
    who = f"droplet {d.name!r}"

    def missing(what: str, value: str, known: Iterable[str]) -> str:
        return f"{who}: {what} {value!r} does not exist in {cat.label}{_close(value, known)}"

    if d.region not in cat.regions:
        yield need.region, missing("region", d.region, cat.regions), "error"
    elif not cat.regions[d.region]:
        yield need.region, f"{who}: region {d.region!r} is not available for new droplets", "error"
    if d.size not in cat.sizes:
        yield need.size, missing("size", d.size, cat.sizes), "error"
    else:
        available, regions = cat.sizes[d.size]
        if not available or d.region not in regions:
            offered = ", ".join(regions) if available and regions else "no region"
            message = f"{who}: size {d.size!r} is not offered in region {d.region!r} (offered in: {offered})"
            if need.created:
                yield need.size, message, "error"
            else:
                yield need.size, f"{message}; gpu up {d.name} would fail", "warning"
    if not d.image.isdigit() and d.image not in cat.images:
        yield need.image, missing("image", d.image, cat.images), "error"


def _where_key(where: Where) -> tuple[str, int, int]:
    return (where.path, where.line, where.col)


def _unique(items: Iterable[Need]) -> list[Need]:
    seen: dict[tuple[str, Where], Need] = {}
    for n in items:
        seen.setdefault((n.name, n.where), n)
    return list(seen.values())


def _listing(names: Iterable[str]) -> str:
    ordered = sorted(names)
    if not ordered:
        return "none"
    return ", ".join(ordered[:10]) + (f", ... ({len(ordered)} in all)" if len(ordered) > 10 else "")


def _close(name: str, known: Iterable[str]) -> str:
    import difflib  # only when something is missing

    matches = difflib.get_close_matches(name, sorted(known), n=3)
    return f" (did you mean {', '.join(matches)}?)" if matches else ""


# --- running it ---------------------------------------------------------------------------------


def problems(
    *,
    root: Path,
    env: Mapping[str, str],
    account: Account,
    model: Model,
    manifests: Mapping[str, Manifest],
    config: Config,
    producers: Sequence[str],
    gpu: Sequence[str] | Callable[[], Sequence[str]] = (),
    say: Say,
    accounts: Accounts | None = None,
) -> list[Problem]:
    """Every pre-flight problem of planning ``producers``: each account asked once.

    With ``accounts`` (the run's, ``infra_apply.cloud.accounts``) each live account's whole catalogue
    is asked for at once, and prices and the exists lookups later read the same answers.

    ``gpu`` may be a callable (the GPU leases, which with remote state live in the state
    bucket): it is called only once every account answered and nothing else failed, so a
    wrong account or token stops the run before anything talks to the bucket. Which GPUs are
    on changes what is an error, never what the accounts are asked."""
    from infra_apply.cloud.accounts import Shared
    from infra_apply.cloud.do_api import ApiError

    catalogues: list[tuple[list[str], Catalogue]] = []
    sources = account.sources(env, config, producers, say, accounts) if producers else []
    for source, names in sources:
        if isinstance(source, Shared):
            wanted = needs(model, manifests, config, names)
            source.prefetch({n.name for n in wanted.clusters}, {n.droplet.image for n in wanted.droplets})
    for source, names in sources:
        try:
            catalogues.append((names, fetch(source, needs(model, manifests, config, names), say)))
        except ApiError as exc:
            if exc.status not in (401, 403):
                raise
            raise InfraApplyError(
                f"pre-flight: {source.label} refused the token for producer(s) {', '.join(names)} "
                f"({exc.message.removeprefix('DigitalOcean API: ')}); set DIGITALOCEAN_TOKEN or "
                "~/.vault/do_pat_<producer> to a valid read/write token"
            ) from None

    def checked(on: Sequence[str]) -> list[Problem]:
        found = [
            p for names, cat in catalogues for p in check(cat, needs(model, manifests, config, names, on))
        ]
        return sorted(set(found), key=Problem.sort_key)

    if not callable(gpu):
        return checked(gpu)
    found = checked(())
    if not catalogues or any(p.level == "error" for p in found):
        return found  # the GPUs on could only add errors: these stop the run already
    return checked(gpu())


def enforce(found: Sequence[Problem], where: str, *, say: Say) -> None:
    """Pre-flight for plan/apply: any error in ``found`` (from ``problems``) raises (against
    ``where``, the account's label), nothing is planned; warnings go to ``say``."""
    if any(p.level == "error" for p in found):
        raise PreflightFailed(list(found), where)
    for p in found:
        say(p.format())
