"""The typed model of a manifest tree: what render, plan and register work from.

Built by ``infra_apply.manifests.build.build_model`` from validated manifests; plain frozen data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infra_apply.manifests.config import Alerts, FirewallSettings, UserData, Where

DEFAULT_REGION = "nyc3"
ALLOWED_REGIONS = ("nyc3", "fra1", "ams3")
DEFAULT_SIZE = "s-2vcpu-4gb"
DEFAULT_IMAGE = "ubuntu-24-04-x64"


@dataclass(frozen=True)
class Service:
    """A service co-located on a shared droplet (producer-root ``droplets[].services[]``), or a
    project that runs there (see ``Droplet.hosted``; its ``kind`` is then its runtime)."""

    name: str
    kind: str
    producer: str | None = None
    port: int | None = None
    domain: str | None = None
    # Services it consumes over HTTP on the mesh (rule http_coupling): the ``depends_on`` of the
    # project manifest of the same name whose ``service.host`` is one of this droplet's hosts.
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class Droplet:
    """A DigitalOcean droplet infra-apply renders.

    ``gpu`` droplets come from ``service.gpu`` and are rendered off (count from a variable).
    ``source`` is the root-relative posix path of the manifest declaring it. ``ssh_keys``
    (key names), ``monitoring`` and ``user_data`` come from infra-apply.toml and apply when the
    droplet is created.
    """

    name: str
    producer: str
    source: str
    region: str = DEFAULT_REGION
    size: str = DEFAULT_SIZE
    image: str = DEFAULT_IMAGE
    role: str | None = None
    hosts: tuple[str, ...] = ()
    services: tuple[Service, ...] = ()
    # Projects whose ``service.host`` is one of ``hosts`` and that ``services`` does not list:
    # they run on this droplet all the same (drawn there; they change no firewall rule).
    hosted: tuple[Service, ...] = ()
    gpu: bool = False
    projects: tuple[str, ...] = ()
    also_declared_in: tuple[str, ...] = ()  # other manifests naming the same GPU droplet
    ssh_keys: tuple[str, ...] = ()
    monitoring: bool = False
    user_data: UserData | None = None
    firewall: FirewallSettings = field(default_factory=FirewallSettings)  # who may reach its SSH
    # The one place the model says "this droplet hosts a project using cluster X": the shared
    # clusters of every database project (any producer) whose ``service.host`` is one of
    # ``hosts``, sorted. Render places the droplet in the first one's VPC.
    database_clusters: tuple[str, ...] = ()
    # Tags of the clusters' trusted sources (``TrustedSources.tag``), from ``database_clusters``.
    trusted_tags: tuple[str, ...] = ()

    @property
    def vpc_cluster(self) -> str | None:
        """The cluster whose VPC the droplet is created in (its private host is reachable only
        from there); None: the region's default VPC."""
        return self.database_clusters[0] if self.database_clusters else None


@dataclass(frozen=True)
class TrustedSources:
    """A shared cluster's trusted sources, rendered by its owner producer (infra-apply.toml
    ``[clusters."NAME"]``): the tag rule and the ``allow`` addresses. ``hosts`` names the
    droplets (of every producer) hosting a project that uses the cluster: each carries ``tag``."""

    cluster: str
    tag: str
    allow: tuple[str, ...]
    hosts: tuple[tuple[str, str], ...]  # (droplet name, its producer)
    at: Where  # its [clusters."NAME"] line in the configuration


@dataclass(frozen=True)
class Database:
    """A project's own logical database and user on a shared, data-sourced cluster."""

    cluster: str
    name: str
    user: str
    project: str
    environment: str
    producer: str
    source: str
    host: str | None = None  # the project's ``service.host``: where the database's user runs


@dataclass(frozen=True)
class ProducerModel:
    name: str
    droplets: tuple[Droplet, ...] = ()
    databases: tuple[Database, ...] = ()
    sources: tuple[str, ...] = field(default=())
    alerts: Alerts | None = None  # [alerts] (the same for every producer); None: nothing watched
    trusted_sources: tuple[TrustedSources, ...] = ()  # the clusters' whose firewall it owns

    def droplet(self, name: str) -> Droplet | None:
        return next((d for d in self.droplets if d.name == name), None)


@dataclass(frozen=True)
class Model:
    producers: tuple[ProducerModel, ...]

    def producer(self, name: str) -> ProducerModel | None:
        return next((p for p in self.producers if p.name == name), None)
