"""Validated manifests -> the model render and plan work from (pure)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import replace
from typing import Any

from infra_apply.gpu.config import settings_for
from infra_apply.manifests.config import Config
from infra_apply.manifests.manifest import Manifest
from infra_apply.manifests.model import (
    DEFAULT_IMAGE,
    DEFAULT_REGION,
    DEFAULT_SIZE,
    Database,
    Droplet,
    Model,
    ProducerModel,
    Service,
    TrustedSources,
)
from infra_apply.manifests.rules import name_producer
from infra_apply.manifests.validate import Validation


def build_model(v: Validation) -> Model:
    by_producer: dict[str, list[Manifest]] = {p: [] for p in v.discovery.producers}
    refs = {r.path: r for r in v.discovery.manifests}
    for m in v.manifests:
        producer = refs[m.path].producer
        if producer is not None:
            by_producer.setdefault(producer, []).append(m)
    consumes = _depends_on(v.manifests)
    runs_on = _runs_on(v.manifests, refs)
    droplets = [d for m in v.manifests for d in _droplets(m, refs[m.path].producer, consumes, runs_on)]
    droplets += _gpu_droplets(v.manifests, refs, v.config)
    droplets = [_with_settings(d, v.config) for d in droplets]
    databases = [db for m in v.manifests if (db := _database(m, refs[m.path].producer))]
    droplets = [_with_clusters(d, databases) for d in droplets]
    trusted = _trusted_sources(v.config, droplets, by_producer)
    droplets = [_with_trusted_tags(d, trusted) for d in droplets]
    return Model(
        tuple(
            ProducerModel(
                name=p,
                droplets=tuple(sorted((d for d in droplets if d.producer == p), key=lambda d: d.name)),
                databases=tuple(
                    sorted(
                        (d for d in databases if d.producer == p),
                        key=lambda d: (d.cluster, d.name, d.user),
                    )
                ),
                sources=tuple(sorted(m.path for m in ms)),
                alerts=v.config.alerts,
                trusted_sources=tuple(t for t in trusted if v.config.clusters[t.cluster].owner == p),
            )
            for p, ms in sorted(by_producer.items())
        )
    )


# (project, service.host) -> the services that project consumes over HTTP (``depends_on``).
_Consumes = dict[tuple[str, str | None], tuple[str, ...]]


def _depends_on(manifests: Iterable[Manifest]) -> _Consumes:
    out: _Consumes = {}
    for m in manifests:
        svc = m.data.get("service") or {}
        key = (m.data["project"], svc.get("host"))
        # A project's prod and dev manifests may both run there: the union, first-seen order.
        out[key] = tuple(dict.fromkeys((*out.get(key, ()), *svc.get("depends_on", []))))
    return out


# mesh host -> the projects whose ``service.host`` it is, as services (kind: their runtime).
_RunsOn = dict[str, tuple[Service, ...]]


def _runs_on(manifests: Iterable[Manifest], refs: Any) -> _RunsOn:
    out: dict[str, list[Service]] = {}
    # Prod first: a project's dev variant on the same host is the same service, drawn once.
    for m in sorted(manifests, key=lambda m: (m.data.get("environment", "prod") != "prod", m.path)):
        svc = m.data.get("service") or {}
        if svc.get("host") is None:
            continue
        out.setdefault(svc["host"], []).append(
            Service(
                name=m.data["project"],
                kind=svc.get("runtime", "project"),
                producer=refs[m.path].producer,
                port=svc.get("port"),
            )
        )
    return {host: tuple(services) for host, services in out.items()}


def _hosted(
    hosts: tuple[str, ...], listed: Collection[str], runs_on: _RunsOn, consumes: _Consumes
) -> tuple[Service, ...]:
    """The projects running on a droplet with these hosts that its ``services`` do not list."""
    out: dict[str, Service] = {}
    for host in hosts:
        for s in runs_on.get(host, ()):
            if s.name not in listed and s.name not in out:
                out[s.name] = replace(s, depends_on=_consumed(s.name, hosts, consumes))
    return tuple(out.values())


def _droplets(
    m: Manifest, tree_producer: str | None, consumes: _Consumes, runs_on: _RunsOn
) -> Iterable[Droplet]:
    for d in m.data.get("droplets", []):
        if d.get("provider", m.data["provider"]) != "digitalocean":
            continue
        hosts = tuple(d.get("hosts", []))
        listed = {s["name"] for s in d["services"]}
        yield Droplet(
            name=d["name"],
            producer=name_producer(d["name"]) or tree_producer or "",
            source=m.path,
            region=d.get("region", DEFAULT_REGION),
            size=d.get("size", DEFAULT_SIZE),
            image=d.get("image", DEFAULT_IMAGE),
            role=d.get("role"),
            hosts=hosts,
            services=tuple(_service(s, _consumed(s["name"], hosts, consumes)) for s in d["services"]),
            hosted=_hosted(hosts, listed, runs_on, consumes),
        )


def _with_settings(d: Droplet, config: Config) -> Droplet:
    """The droplet with what infra-apply.toml sets for its producer."""
    s = config.for_producer(d.producer)
    return replace(
        d,
        ssh_keys=s.ssh_keys,
        monitoring=s.monitoring,
        user_data=s.user_data,
        firewall=config.firewall_for(d.producer),
    )


def _with_clusters(d: Droplet, databases: Iterable[Database]) -> Droplet:
    """The droplet with the clusters of the database projects it hosts, whatever their producer
    (an on-demand GPU droplet declares no mesh host a project names)."""
    if d.gpu:
        return d
    clusters = sorted({db.cluster for db in databases if db.host is not None and db.host in d.hosts})
    return replace(d, database_clusters=tuple(clusters))


def _trusted_sources(
    config: Config, droplets: Iterable[Droplet], producers: Collection[str]
) -> list[TrustedSources]:
    """Each ``[clusters."NAME"]``'s trusted sources, with the droplets hosting a project using
    the cluster (``Droplet.database_clusters``, in every producer)."""
    droplets = list(droplets)
    out = []
    for name, cs in sorted(config.clusters.items()):
        if cs.owner not in producers:
            raise cs.at.error(
                f'[clusters."{name}"] owner {cs.owner!r} is not a producer of the tree '
                f"(producers: {', '.join(sorted(producers)) or 'none'})"
            )
        hosting = sorted((d.name, d.producer) for d in droplets if name in d.database_clusters)
        out.append(TrustedSources(name, cs.tag, cs.allow, tuple(hosting), cs.at))
    return out


def _with_trusted_tags(d: Droplet, trusted: Iterable[TrustedSources]) -> Droplet:
    tags = tuple(sorted({t.tag for t in trusted if (d.name, d.producer) in t.hosts}))
    return replace(d, trusted_tags=tags) if tags else d


def _consumed(service: str, hosts: tuple[str, ...], consumes: _Consumes) -> tuple[str, ...]:
    """What the project named like ``service`` consumes, when it runs on one of ``hosts`` (or
    names no host): a project elsewhere is another deployment that merely shares the name."""
    deps = (dep for host in (*hosts, None) for dep in consumes.get((service, host), ()))
    return tuple(dict.fromkeys(deps))


def _service(s: dict[str, Any], depends_on: tuple[str, ...]) -> Service:
    return Service(
        name=s["name"],
        kind=s["kind"],
        producer=s.get("producer"),
        port=s.get("port"),
        domain=s.get("domain"),
        depends_on=depends_on,
    )


def _gpu_droplets(manifests: Iterable[Manifest], refs: Any, config: Config) -> list[Droplet]:
    """One off-by-default droplet per distinct ``service.gpu`` droplet, shared by its projects,
    with the size, image and region of its ``[gpu."NAME"]`` (the defaults are a GPU region:
    the standing hosts' nyc3 offers no GPU)."""
    users: dict[str, list[Manifest]] = {}
    for m in manifests:
        gpu = m.data.get("service", {}).get("gpu")
        producer = refs[m.path].producer
        if gpu is None or producer is None:
            continue
        name = gpu.get("droplet") or f"com.uvlava.{producer}.gpu"
        users.setdefault(name, []).append(m)
    for name, where in sorted(config.gpu_at.items()):
        if name not in users:
            declared = ", ".join(sorted(users)) or "none"
            raise where.error(
                f'[gpu."{name}"] names no on-demand GPU droplet of the manifests (a service\'s '
                f"gpu.droplet; declared: {declared})"
            )
    out = []
    for name, ms in users.items():
        first = min(ms, key=lambda m: m.path)
        gpu = settings_for(name, config.gpu)
        out.append(
            Droplet(
                name=name,
                producer=name_producer(name) or refs[first.path].producer,
                source=first.path,
                region=gpu.region,
                size=gpu.size,
                image=gpu.image,
                role="gpu",
                hosts=(gpu_host(name),),
                gpu=True,
                projects=tuple(sorted({m.data["project"] for m in ms})),
                also_declared_in=tuple(sorted({m.path for m in ms} - {first.path})),
            )
        )
    return out


def gpu_host(name: str) -> str:
    """The mesh host of a GPU droplet (manifests declare none): ``com.uvlava.ct.gpu`` -> ``ct-gpu``,
    so `gpu up` registers it in mesh-hosts.json like any droplet and `gpu down` removes it."""
    return name.removeprefix("com.uvlava.").replace(".", "-").lower()


def _database(m: Manifest, producer: str | None) -> Database | None:
    db = m.data.get("database")
    if db is None or producer is None:
        return None
    return Database(
        cluster=db["cluster"],
        name=db["name"],
        user=db["user"],
        project=m.data["project"],
        environment=m.data.get("environment", "prod"),
        producer=producer,
        source=m.path,
        host=m.data.get("service", {}).get("host"),
    )
