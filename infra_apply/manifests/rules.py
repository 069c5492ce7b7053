"""The convention's rules, one small function each, in a registry keyed by rule id.

Rules see only manifests that passed the JSON Schema, so they may trust types.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from infra_apply.errors import Level, Problem
from infra_apply.manifests.config import CONFIG_NAME, Config
from infra_apply.manifests.discover import Discovery, ManifestRef
from infra_apply.manifests.manifest import Key, Manifest
from infra_apply.manifests.model import ALLOWED_REGIONS, DEFAULT_REGION

# Every name check is a fullmatch against \A...\Z: `$` also matches before a trailing newline, so
# "dns\n" would pass a `^...$` search and land in mesh-hosts.json, a tag or an HCL label.
DROPLET_NAME_RE = re.compile(r"\Acom\.uvlava\.(?:(ct|mc|quinn)\.)?[a-z0-9-]+\Z")
TAG_RE = re.compile(r"\A[a-zA-Z0-9:\-_]{1,255}\Z")
SLUG_RE = re.compile(r"\A[a-z0-9][a-z0-9._-]*\Z")
HOST_RE = re.compile(r"\A[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
# A producer name becomes a folder (generated/<p>/, its working copy), the tag producer:<p>
# (DigitalOcean tags are case-insensitive, hence lowercase only) and the PAT file do_pat_<p>.
PRODUCER_RE = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")


@dataclass(frozen=True)
class Tree:
    """Everything the rules look at: discovered refs, schema-valid manifests, mesh hosts."""

    discovery: Discovery
    manifests: tuple[Manifest, ...]
    refs: Mapping[str, ManifestRef]
    mesh_hosts: Mapping[str, Mapping[str, Any]] | None  # None when no mesh-hosts.json was given
    mesh_path: str | None = None
    config: Config = field(default_factory=Config)  # infra-apply.toml


@dataclass(frozen=True)
class Finding:
    """What a rule yields; the registry adds the rule id and (unless overridden) its level."""

    path: str
    pos: tuple[int, int]
    message: str
    level: Level | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    level: Level
    check: Callable[[Tree], Iterator[Finding]] = field(repr=False)


RULES: dict[str, Rule] = {}


def rule(rule_id: str, level: Level) -> Callable[[Callable[[Tree], Iterator[Finding]]], Any]:
    def register(fn: Callable[[Tree], Iterator[Finding]]) -> Callable[[Tree], Iterator[Finding]]:
        RULES[rule_id] = Rule(rule_id, level, fn)
        return fn

    return register


def run_rules(tree: Tree) -> list[Problem]:
    problems = []
    for spec in RULES.values():
        for f in spec.check(tree):
            problems.append(Problem(f.path, *f.pos, f.level or spec.level, spec.id, f.message))
    return problems


# --- helpers -------------------------------------------------------------------------------


def at(m: Manifest, key: Key, message: str, *, at_key: bool = False, level: Level | None = None) -> Finding:
    return Finding(m.path, m.locate(key, at_key=at_key), message, level)


def droplets(tree: Tree) -> Iterator[tuple[Manifest, int, dict[str, Any]]]:
    for m in tree.manifests:
        for i, d in enumerate(m.data.get("droplets", [])):
            yield m, i, d


def services(tree: Tree) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    for m in tree.manifests:
        if "service" in m.data:
            yield m, m.data["service"]


def producer_of(tree: Tree, m: Manifest) -> str | None:
    return tree.refs[m.path].producer


def name_producer(name: str) -> str | None:
    match = DROPLET_NAME_RE.fullmatch(name)
    return match.group(1) if match else None


def _where(m: Manifest, key: Key) -> str:
    line, _ = m.locate(key)
    return f"{m.path}:{line}"


# --- rules -----------------------------------------------------------------------------------


@rule("own_db", "error")
def own_db(tree: Tree) -> Iterator[Finding]:
    yield from _shared_database(tree, "user", "database user")


@rule("http_coupling", "error")
def http_coupling(tree: Tree) -> Iterator[Finding]:
    yield from _shared_database(tree, "name", "database")
    known = {m.data["project"] for m in tree.manifests}
    known |= {s["name"] for _, _, d in droplets(tree) for s in d["services"]}
    for m, svc in services(tree):
        for i, dep in enumerate(svc.get("depends_on", [])):
            if dep not in known:
                yield at(
                    m,
                    ("service", "depends_on", i),
                    f"depends_on {dep!r} names no project or service in this tree",
                    level="warning",
                )


def _shared_database(tree: Tree, field_name: str, what: str) -> Iterator[Finding]:
    """Two manifests naming one database (or user) on one cluster: two projects sharing it, or
    a project's dev and prod variants sharing it (credential separation holds there too)."""
    first: dict[tuple[str, str], Manifest] = {}
    for m in tree.manifests:
        db = m.data.get("database")
        if not db:
            continue
        key = (db["cluster"], db[field_name])
        owner = first.setdefault(key, m)
        if owner is m:
            continue
        whose = (
            f"project {owner.data['project']!r}"
            if owner.data["project"] != m.data["project"]
            else f"this project's {owner.data.get('environment', 'prod')} manifest"
        )
        yield at(
            m,
            ("database", field_name),
            f"{what} {key[1]!r} on cluster {key[0]!r} is already used by {whose} "
            f"({_where(owner, ('database', field_name))}); each needs its own",
        )


@rule("gpu_ondemand", "warning")
def gpu_ondemand(tree: Tree) -> Iterator[Finding]:
    for m, svc in services(tree):
        gpu = svc.get("gpu")
        if gpu is not None and gpu.get("mode") != "on-demand":
            yield at(
                m,
                ("service", "gpu"),
                "service.gpu should say mode: on-demand (never a standing GPU)",
            )
    for m, i, d in droplets(tree):
        if d.get("size", "").startswith("gpu-") or d.get("role") == "gpu":
            yield at(
                m,
                ("droplets", i, "name"),
                f"droplet {d['name']!r} is a standing GPU; declare it as service.gpu (on-demand)",
            )


@rule("cloud_provider", "error")
def cloud_provider(tree: Tree) -> Iterator[Finding]:
    for m, i, d in droplets(tree):
        region = d.get("region", DEFAULT_REGION)
        if region not in ALLOWED_REGIONS:
            yield at(
                m,
                ("droplets", i, "region"),
                f"region {region!r} is not allowed; use nyc3 (default), or fra1/ams3 for EU residency",
            )
        provider = d.get("provider", m.data["provider"])
        if provider != "digitalocean":
            key: Key = ("droplets", i, "provider") if "provider" in d else ("provider",)
            yield at(m, key, f"droplet {d['name']!r} must run on provider digitalocean, not {provider!r}")


@rule("droplet_naming", "error")
def droplet_naming(tree: Tree) -> Iterator[Finding]:
    seen: dict[str, tuple[Manifest, Key]] = {}
    for m, key, name in _all_droplet_names(tree):
        if not DROPLET_NAME_RE.fullmatch(name):
            # droplets[].name is also checked by the schema pattern, but Python's JSON Schema
            # search lets "com.uvlava.x\n" through (`$` before a trailing newline): check it here.
            yield at(m, key, f"{name!r} is not com.uvlava.<role> or com.uvlava.<ct|mc|quinn>.<role>")
            continue
        segment, tree_producer = name_producer(name), producer_of(tree, m)
        if segment is not None and tree_producer is not None and segment != tree_producer:
            yield at(
                m,
                key,
                f"droplet {name!r} names producer {segment!r} but is declared under @{tree_producer}",
            )
        if name in seen and key[0] == "droplets":
            other, other_key = seen[name]
            yield at(m, key, f"droplet {name!r} is already declared at {_where(other, other_key)}")
        elif name in seen and seen[name][1][0] == "droplets":
            yield at(
                m,
                key,
                f"GPU droplet {name!r} has the name of a standing droplet ({_where(*seen[name])})",
            )
        seen.setdefault(name, (m, key))


def _all_droplet_names(tree: Tree) -> Iterator[tuple[Manifest, Key, str]]:
    for m, i, d in droplets(tree):
        yield m, ("droplets", i, "name"), d["name"]
    for m, svc in services(tree):
        gpu = svc.get("gpu")
        if gpu is not None and "droplet" in gpu:
            yield m, ("service", "gpu", "droplet"), gpu["droplet"]


@rule("host_in_mesh", "error")
def host_in_mesh(tree: Tree) -> Iterator[Finding]:
    declared: dict[str, tuple[Manifest, Key, str]] = {}
    names = {d["name"] for _, _, d in droplets(tree)}
    for m, i, d in droplets(tree):
        for j, host in enumerate(d.get("hosts", [])):
            key: Key = ("droplets", i, "hosts", j)
            if not _is_host_name(host):
                # Registered hosts become ssh aliases (net-tools writes ~/.ssh/config from them):
                # one that is not a host name must never reach mesh-hosts.json.
                yield at(
                    m,
                    key,
                    f"mesh host {host!r} cannot be registered in mesh-hosts.json: not a host name "
                    "(lowercase letters, digits, '-'; at most 63)",
                )
                continue
            if host in declared and declared[host][2] != d["name"]:
                other = declared[host]
                yield at(
                    m,
                    key,
                    f"mesh host {host!r} is already declared by droplet {other[2]!r} "
                    f"({_where(other[0], other[1])})",
                )
                continue
            declared.setdefault(host, (m, key, d["name"]))
            entry = (tree.mesh_hosts or {}).get(host)
            if entry is not None and not _same_machine(entry, d["name"], producer_of(tree, m), names):
                machine = entry.get("droplet") or "a machine not managed by infra-apply"
                yield at(
                    m,
                    key,
                    f"mesh host {host!r} is already registered in mesh-hosts.json for "
                    f'{machine}; pick another name (or set its "droplet" to {d["name"]!r})',
                )
    for m, svc in services(tree):
        host = svc.get("host")
        if host is None or host in declared:
            continue
        if tree.mesh_hosts is None and tree.mesh_path is not None:
            continue  # the registry itself is broken; that problem is reported on its own
        if tree.mesh_hosts is None:
            yield at(
                m,
                ("service", "host"),
                f"host {host!r} is not a droplet host here and no mesh-hosts.json was given "
                "(--mesh-hosts) to check it",
                level="warning",
            )
        elif host not in tree.mesh_hosts:
            yield at(
                m,
                ("service", "host"),
                f"host {host!r} is neither in {tree.mesh_path or 'mesh-hosts.json'} nor a droplet host",
            )


def _same_machine(entry: Mapping[str, Any], name: str, producer: str | None, declared: set[str]) -> bool:
    """A registered host belongs to this droplet, or to a droplet of this producer that no
    manifest names any more: the live name of a droplet renamed in its manifest."""
    owner = entry.get("droplet")
    return owner == name or (bool(owner) and entry.get("producer") == producer and owner not in declared)


@rule("shared_infra_topology", "warning")
def shared_infra_topology(tree: Tree) -> Iterator[Finding]:
    producers = set(tree.discovery.producers)
    for m, i, d in droplets(tree):
        if i == 0 and not tree.refs[m.path].producer_root:
            yield at(
                m,
                ("droplets",),
                "droplets belong in the producer root manifest (@<producer>/.infra.yaml)",
                at_key=True,
            )
        shared = len(d["services"]) > 1
        for j, s in enumerate(d["services"]):
            if shared and "producer" not in s:
                yield at(
                    m,
                    ("droplets", i, "services", j),
                    f"service {s['name']!r} on shared droplet {d['name']!r} should name its producer",
                )
            elif "producer" in s and s["producer"] not in producers:
                yield at(
                    m,
                    ("droplets", i, "services", j, "producer"),
                    f"producer {s['producer']!r} is not one of this root's producers",
                )


@rule("env_variants", "warning")
def env_variants(tree: Tree) -> Iterator[Finding]:
    for m in tree.manifests:
        variant = tree.refs[m.path].variant
        env = m.data.get("environment", "prod")
        if variant is None and env != "prod":
            yield at(
                m,
                ("environment",),
                f".infra.yaml is the prod manifest; move environment {env!r} to .infra.{env}.yaml",
            )
        elif variant is not None and variant != "dev":
            yield at(m, (), f".infra.{variant}.yaml is not a known variant; only .infra.dev.yaml is used")
        elif variant == "dev" and env != "dev":
            yield at(
                m,
                ("environment",) if "environment" in m.data else (),
                ".infra.dev.yaml must say environment: dev",
            )


@rule("manage_apps_orchestrator", "error")
def manage_apps_orchestrator(tree: Tree) -> Iterator[Finding]:
    for path in tree.discovery.retired:
        yield Finding(
            path,
            (1, 1),
            "app.manifest.yaml is retired; declare the service in .infra.yaml",
            "warning",
        )
    for folder in tree.discovery.unreadable:
        yield Finding(
            folder,
            (1, 1),
            "cannot read this folder; manifests below it would be missed "
            "(and their resources planned for destruction)",
        )
    for refused in tree.discovery.refused:
        yield Finding(refused.path, (1, 1), f"manifest {refused.reason}")
    for ref in tree.discovery.manifests:
        if ref.producer is None:
            yield Finding(
                ref.path,
                (1, 1),
                "manifest outside any producer folder (@<name>/); "
                "manage-apps and infra-apply only walk producer trees",
            )


@rule("systemd_supervision", "error")
def systemd_supervision(tree: Tree) -> Iterator[Finding]:
    for m, svc in services(tree):
        if m.data["provider"] == "digitalocean" and "systemd_unit" not in svc:
            yield at(
                m,
                ("service",),
                "a service running on digitalocean must declare service.systemd_unit",
                at_key=True,
            )


@rule("mesh_host_resolution", "warning")
def mesh_host_resolution(tree: Tree) -> Iterator[Finding]:
    for m, svc in services(tree):
        host = svc.get("host")
        if host is not None and not _is_host_name(host):
            yield at(
                m,
                ("service", "host"),
                f"service.host {host!r} must be a mesh host name (an ssh alias), not an address",
            )
    # droplets[].hosts: an invalid one is an error of host_in_mesh (it would be registered).


def _is_host_name(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(HOST_RE.fullmatch(host))
    return False


@rule("do_limits", "error")
def do_limits(tree: Tree) -> Iterator[Finding]:
    """DigitalOcean facts: what becomes a tag must be a valid tag (docs/safety.md, Names)."""
    for m, i, d in droplets(tree):
        role = d.get("role")
        if role is not None and not (role and TAG_RE.fullmatch(f"role:{role}")):
            yield at(
                m,
                ("droplets", i, "role"),
                f"role {role!r} becomes the tag role:{role}; use letters, digits, ':', '-', '_' (not empty)",
            )
        for key in ("size", "image"):
            if key in d and not SLUG_RE.fullmatch(d[key]):
                yield at(
                    m,
                    ("droplets", i, key),
                    f"{key} {d[key]!r} is not a DigitalOcean slug (lowercase letters, digits, '-', '.')",
                )
    for m in tree.manifests:
        for key, value in m.data.get("database", {}).items():
            if not value.strip():
                yield at(m, ("database", key), f"database.{key} must not be empty")
            elif value != value.strip() or not value.isprintable():
                # Typically a YAML block scalar's trailing newline; the name would reach
                # DigitalOcean as written, and renaming a database later replaces it.
                yield at(
                    m,
                    ("database", key),
                    f"database.{key} {value!r} has leading or trailing spaces or control characters",
                )
    yield from _producer_names(tree)


def _producer_names(tree: Tree) -> Iterator[Finding]:
    """A producer folder's name becomes a folder under --out and the state dir, and a tag: an
    empty or unsafe one (``@``, ``@..``, a newline) would write outside them."""
    found = tree.discovery
    for producer in found.producers:
        if PRODUCER_RE.fullmatch(producer):
            continue
        inside = [r.path for r in found.manifests if r.producer == producer]
        inside += [r.path for r in found.refused if r.path.startswith(f"@{producer}/")]
        use = (
            "it names the folder <out>/<producer>/, its working copy and the tag producer:<producer>"
            if inside
            else "it holds no manifest and is ignored"
        )
        yield Finding(
            min(inside, default=f"@{producer}"),
            (1, 1),
            f"producer folder name {producer!r} is not a producer name (lowercase letters, digits, "
            f"'-', '_'; 1 to 63, starting with a letter or digit): {use}",
            None if inside else "warning",
        )


@rule("ssh_access", "warning")
def ssh_access(tree: Tree) -> Iterator[Finding]:
    """A droplet created without an SSH key is a root-password droplet: manage-apps drives hosts
    with ``ssh <host> systemctl ...`` and could not reach it."""
    hint = "set ssh_keys (names of SSH keys in the DigitalOcean account) under [droplets]"

    def message(name: str, producer: str) -> str:
        return (
            f"droplet {name!r} gets no SSH key: {hint} or [producers.{producer}.droplets] in "
            f"{CONFIG_NAME}; without one DigitalOcean makes a root-password droplet that "
            "manage-apps cannot reach over ssh"
        )

    for m, i, d in droplets(tree):
        if d.get("provider", m.data["provider"]) != "digitalocean":
            continue
        producer = name_producer(d["name"]) or producer_of(tree, m)
        if producer is not None and not tree.config.for_producer(producer).ssh_keys:
            yield at(m, ("droplets", i, "name"), message(d["name"], producer))
    # An on-demand GPU droplet is reported once, at the first manifest declaring it (as built).
    gpus: dict[str, tuple[Manifest, str]] = {}
    for m, svc in sorted(services(tree), key=lambda pair: pair[0].path):
        tree_producer = producer_of(tree, m)
        if svc.get("gpu") is None or tree_producer is None:
            continue
        name = svc["gpu"].get("droplet") or f"com.uvlava.{tree_producer}.gpu"
        gpus.setdefault(name, (m, name_producer(name) or tree_producer))
    for name, (m, producer) in sorted(gpus.items()):
        if not tree.config.for_producer(producer).ssh_keys:
            yield at(m, ("service", "gpu"), message(name, producer))


@rule("config", "warning")
def config_producers(tree: Tree) -> Iterator[Finding]:
    """A [producers.X] table for a producer the root does not have is most likely a typo: its
    settings would silently apply to nothing."""
    for producer, where in sorted(tree.config.producer_at.items()):
        if producer not in tree.discovery.producers:
            known = ", ".join(tree.discovery.producers) or "none"
            yield Finding(
                where.path,
                (where.line, where.col),
                f"[producers.{producer}] names no producer folder @{producer} under the root "
                f"(producers: {known}); its settings apply to nothing",
            )


@rule("public_ssh", "warning")
def public_ssh(tree: Tree) -> Iterator[Finding]:
    """SSH open to the whole internet because ``[firewall] ssh_from`` is unset: the mesh model
    needs it from the operators' and CI's addresses at most (docs/security.md)."""
    for m, i, d in _digitalocean_droplets(tree):
        producer = name_producer(d["name"]) or producer_of(tree, m)
        if producer is not None and tree.config.firewall_for(producer).public:
            yield at(
                m,
                ("droplets", i, "name"),
                f"droplet {d['name']!r} opens SSH (22/tcp) to the whole internet: set ssh_from under "
                f'[firewall] or [producers.{producer}.firewall] in {CONFIG_NAME} (CIDRs, or "mesh")',
            )


@rule("ssh_bootstrap", "error")
def ssh_bootstrap(tree: Tree) -> Iterator[Finding]:
    """With ``ssh_from = "mesh"`` a droplet not yet in mesh-hosts.json is reached over SSH to
    bring it onto the mesh: without ``bootstrap_from`` nothing could reach it."""
    if tree.mesh_hosts is None:
        return  # which droplets are registered is known only with the registry
    registered = {str(e.get("droplet")) for e in tree.mesh_hosts.values() if e.get("droplet")}
    for m, i, d in _digitalocean_droplets(tree):
        producer = name_producer(d["name"]) or producer_of(tree, m)
        fw = tree.config.firewall_for(producer) if producer is not None else None
        if fw is not None and fw.mesh and not fw.bootstrap_from and d["name"] not in registered:
            own = producer in tree.config.producer_firewalls
            table = f"[producers.{producer}.firewall]" if own else "[firewall]"
            yield at(
                m,
                ("droplets", i, "name"),
                f"droplet {d['name']!r} is not in {tree.mesh_path or 'mesh-hosts.json'} yet and ssh_from = "
                f'"mesh" leaves it no SSH to bring it onto the mesh: set bootstrap_from (CIDRs) under '
                f"{table} in {CONFIG_NAME}",
            )


@rule("cluster_owner", "error")
def cluster_owner(tree: Tree) -> Iterator[Finding]:
    """``[clusters."NAME"] owner`` names a producer of the tree: validate says so, not only the
    first plan (a CI gate running validate alone must not pass what every plan refuses)."""
    producers = set(tree.discovery.producers)
    for name, cs in sorted(tree.config.clusters.items()):
        if cs.owner not in producers:
            yield Finding(
                cs.at.path,
                (cs.at.line, cs.at.col),
                f'[clusters."{name}"] owner {cs.owner!r} is not a producer of the tree '
                f"(producers: {', '.join(sorted(producers)) or 'none'})",
            )


def _digitalocean_droplets(tree: Tree) -> Iterator[tuple[Manifest, int, dict[str, Any]]]:
    for m, i, d in droplets(tree):
        if d.get("provider", m.data["provider"]) == "digitalocean":
            yield m, i, d
