"""The sandbox "cloud": one JSON file standing in for a DigitalOcean account.

Both the stand-in Terraform provider and infra-apply itself (rename, adopt, tests) use it.
Terraform calls the provider concurrently and several terraform processes may run at once,
so every read-modify-write runs under a file lock and every write is atomic (temp file in the
same folder, fsync, ``os.replace``): a reader never sees a half-written file.

Layout (ids are strings throughout; allocation uses counters, so runs are repeatable)::

    {
      "version": 1,
      "counters": {"droplet": 1003, "firewall": 2, "user": 2},  # next number to hand out
      "droplets":  {"1001": {...}},                        # by droplet id
      "firewalls": {"<uuid>": {...}},                      # by firewall id
      "clusters":  {"<uuid>": {"name": "main-pg", ...}},   # database clusters, by id
      "databases": {"<cluster_id>/database/<name>": {...}},
      "users":     {"<cluster_id>/user/<name>": {...}},
      "ssh_keys":  {"<id>": {"id": 41001, "name": "ops-2026", "fingerprint": ..., "public_key": ...}}
    }

The account's clusters and SSH keys are seeded from ``[sandbox]`` of infra-apply.toml (``seed``);
regions, sizes and images come from ``catalogue`` (the same for every sandbox account). A create
the real API refuses (unknown region, size or image, a size the region does not offer, an SSH
key the account does not have) is refused here too, with DigitalOcean's 422 message.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra_apply.errors import InfraApplyError, json_document
from infra_apply.sandbox import catalogue

# locks (filelock), uuid and ipaddress are imported where used: the provider imports this module on
# every start (terraform show -json included), and filelock alone costs tens of milliseconds.

Cloud = dict[str, Any]
Record = dict[str, Any]
PathLike = str | os.PathLike[str]

ENV_VAR = "INFRA_APPLY_SANDBOX_CLOUD"
LAYOUT_VERSION = 1
FIRST_DROPLET_ID = 1001
FIRST_SSH_KEY_ID = 41001
LOCK_TIMEOUT_SECONDS = 60.0
DEFAULT_REGION = "nyc3"
# What DigitalOcean answers a resize to a size whose disk is smaller than the droplet's (as
# reported against the real API: "422 Size can not decrease size of Droplet's disk image").
RESIZE_SHRINK_MESSAGE = "Size can not decrease size of Droplet's disk image"

# A fixed namespace makes uuid5 ids stable across runs and machines.
_NAMESPACE = "5a4db0c8-3c1e-4f55-9d0c-1f0a6a5e7a11"

# Public addresses come from the documentation ranges (RFC 5737), then the benchmarking range
# (RFC 2544), so a sandbox address can never be mistaken for a reachable machine.
_PUBLIC_NETWORKS = ("203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24", "198.18.0.0/15")
_PRIVATE_NETWORK = "10.116.0.0/20"
_IPV6_PREFIX = "2001:db8::/64"


class CloudError(InfraApplyError):
    """The sandbox cloud refused an operation (missing object, conflict, bad file). Part of
    the error family: infra-apply reports it as one located line, the provider as a
    diagnostic."""

    default_rule = "sandbox"


def cloud_path_from_env() -> Path:
    """The cloud file named by ``INFRA_APPLY_SANDBOX_CLOUD``; a clear error when unset."""
    value = os.environ.get(ENV_VAR, "")
    if not value:
        raise CloudError(
            f"{ENV_VAR} is not set: the sandbox DigitalOcean provider needs the path of its "
            "cloud file (infra-apply sets it when run with --sandbox)"
        )
    return Path(value)


# ---------------------------------------------------------------- file handling


def empty() -> Cloud:
    return {
        "version": LAYOUT_VERSION,
        "counters": {},
        "droplets": {},
        "firewalls": {},
        "clusters": {},
        "databases": {},
        "users": {},
        "ssh_keys": {},
        "uptime_checks": {},
        "uptime_alerts": {},
        "monitor_alerts": {},
    }


# How to start the sandbox account afresh; its working copies must go too, or their state
# would name droplets the new, empty cloud does not have.
_RESET = (
    "it is the sandbox's stand-in DigitalOcean account: to start the sandbox afresh, delete it "
    "and the sandbox working copies (<state dir>/work/sandbox)"
)


def load(path: PathLike) -> Cloud:
    """The cloud as it is now; a missing file is an empty account."""
    from infra_apply.runtime.fs import STATE_LIMIT, read_bounded

    where = str(path)
    try:
        text = read_bounded(Path(path), STATE_LIMIT).decode("utf-8")
    except FileNotFoundError:
        return empty()
    except UnicodeDecodeError:
        raise CloudError(f"the sandbox cloud file is not UTF-8 text; {_RESET}", path=where) from None
    except OSError as exc:
        raise CloudError(f"cannot read the sandbox cloud file: {exc.strerror}", path=where) from None
    try:
        data = json_document(
            text, f"the sandbox cloud file is not valid JSON ({{reason}}); {_RESET}", CloudError, path=where
        )
    except (ValueError, RecursionError):  # a number beyond int()'s limit, absurd nesting
        raise CloudError(f"the sandbox cloud file is not a sandbox cloud; {_RESET}", path=where) from None
    if not isinstance(data, dict) or data.get("version") != LAYOUT_VERSION:
        raise CloudError(f"the sandbox cloud file has an unknown layout; {_RESET}", path=where)
    cloud = {**empty(), **data}
    if not all(isinstance(cloud[k], dict) for k in ("counters", *_TABLES)):
        raise CloudError(f"the sandbox cloud file has an unknown layout; {_RESET}", path=where)
    return cloud


_TABLES = (
    "droplets",
    "firewalls",
    "clusters",
    "databases",
    "users",
    "ssh_keys",
    "uptime_checks",
    "uptime_alerts",
    "monitor_alerts",
)


def _save(path: Path, cloud: Cloud) -> None:
    from infra_apply.runtime.fs import PRIVATE_FILE, atomic_write

    atomic_write(path, json.dumps(cloud, indent=2, sort_keys=True) + "\n", mode=PRIVATE_FILE)


@contextlib.contextmanager
def transaction(path: PathLike) -> Iterator[Cloud]:
    """Lock the cloud, yield it for changes, save it if the block ends without an exception."""
    from infra_apply.runtime import locks

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)

    def busy(message: str) -> CloudError:
        return CloudError(message, path=str(target))

    lock = Path(f"{target}.lock")
    with locks.held(lock, "the sandbox cloud file", timeout=LOCK_TIMEOUT_SECONDS, busy=busy):
        cloud = load(target)
        before = json.dumps(cloud, sort_keys=True)
        yield cloud
        # Skipping unchanged saves keeps reads from rewriting the file under other readers.
        if not target.exists() or json.dumps(cloud, sort_keys=True) != before:
            _save(target, cloud)


# ---------------------------------------------------------------- allocation


def _next(cloud: Cloud, counter: str, start: int = 1) -> int:
    counters: dict[str, int] = cloud.setdefault("counters", {})
    value = counters.get(counter, start)
    counters[counter] = value + 1
    return value


def stable_uuid(kind: str, key: str | int) -> str:
    import uuid

    return str(uuid.uuid5(uuid.UUID(_NAMESPACE), f"{kind}/{key}"))


def _public_ipv4(index: int) -> str:
    import ipaddress

    for cidr in _PUBLIC_NETWORKS:
        network = ipaddress.IPv4Network(cidr)
        hosts = network.num_addresses - 2
        if index < hosts:
            return str(network.network_address + 1 + index)
        index -= hosts
    raise CloudError("the sandbox cloud ran out of public IPv4 addresses")


def _private_ipv4(index: int) -> str:
    import ipaddress

    network = ipaddress.IPv4Network(_PRIVATE_NETWORK)
    # .1 is the VPC gateway, so hosts start at .2 like DigitalOcean's.
    if index + 2 >= network.num_addresses - 1:
        raise CloudError("the sandbox cloud ran out of private IPv4 addresses")
    return str(network.network_address + 2 + index)


def _ipv6(index: int) -> str:
    import ipaddress

    return str(ipaddress.IPv6Network(_IPV6_PREFIX).network_address + 0x1000 + index)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def vpc_uuid(region: str) -> str:
    return stable_uuid("vpc", region.lower())


def region_vpcs(cloud: Cloud, region: str) -> set[str]:
    """The VPCs a droplet in ``region`` may join: the region's default one and those of the
    account's clusters there (a VPC is regional; the sandbox keeps no other VPCs)."""
    clusters = cloud["clusters"].values()
    return {vpc_uuid(region)} | {
        str(c["private_network_uuid"]) for c in clusters if str(c.get("region", "")).lower() == region
    }


def _secret(*parts: str) -> str:
    # Deterministic so repeated test runs agree; it guards nothing real.
    return "AVNS_" + hashlib.sha256("/".join(parts).encode()).hexdigest()[:22]


# ---------------------------------------------------------------- droplets


@dataclass(frozen=True)
class DropletSpec:
    """What a droplet create request carries (the API's fields, already normalised)."""

    name: str
    region: str = DEFAULT_REGION
    size: str = "s-1vcpu-1gb"
    image: str = "ubuntu-24-04-x64"
    tags: tuple[str, ...] = ()
    ipv6: bool = False
    backups: bool = False
    monitoring: bool = False
    public_networking: bool = True
    vpc_uuid: str | None = None
    volume_ids: tuple[str, ...] = ()
    ssh_keys: tuple[str, ...] = ()  # key ids (or fingerprints), as the create request sends them
    user_data: str | None = None


def add_droplet(cloud: Cloud, spec: DropletSpec) -> Record:
    """Create a droplet inside an open transaction; returns the stored record.

    Refused like DigitalOcean refuses it (422) when the catalogue or the account lacks what it
    names. The user data and SSH keys are kept in the record (what the droplet was created
    with) but, as at DigitalOcean, never read back into Terraform state.
    """
    region = spec.region.lower()
    check_offer(cloud, region, spec.size.lower(), spec.image)
    if spec.vpc_uuid is not None and spec.vpc_uuid not in region_vpcs(cloud, region):
        raise CloudError(f"422 unprocessable_entity: VPC {spec.vpc_uuid} is not a VPC in region {region}")
    keys = [_existing_key(cloud, key) for key in spec.ssh_keys]
    number = _next(cloud, "droplet", FIRST_DROPLET_ID)
    index = number - FIRST_DROPLET_ID
    droplet_id = str(number)
    record: Record = {
        "id": droplet_id,
        "name": spec.name,
        "region": region,
        "image": spec.image,
        "status": "active",
        "locked": False,
        "created_at": _now(),
        "tags": sorted(set(spec.tags)),
        "ipv4_address": _public_ipv4(index) if spec.public_networking else "",
        "ipv4_address_private": _private_ipv4(index),
        "ipv6": spec.ipv6,
        "ipv6_address": _ipv6(index) if spec.ipv6 else "",
        "backups": spec.backups,
        "monitoring": spec.monitoring,
        "private_networking": True,
        "public_networking": spec.public_networking,
        "vpc_uuid": spec.vpc_uuid or vpc_uuid(region),
        "volume_ids": sorted(spec.volume_ids),
        "urn": f"do:droplet:{droplet_id}",
        "ssh_keys": [key["id"] for key in keys],
        "user_data": spec.user_data,
    }
    record.update(_size_fields(cloud, spec.size))
    cloud["droplets"][droplet_id] = record
    return record


def check_offer(cloud: Cloud, region: str, size: str, image: str | None = None) -> None:
    """DigitalOcean's 422 for a droplet the account's catalogue cannot make. Image ids (digits:
    snapshots and custom images) are taken on trust: the sandbox keeps no snapshots."""
    offer = account_catalogue(cloud)
    regions = {r["slug"]: r for r in offer["regions"]}
    sizes = {s["slug"]: s for s in offer["sizes"]}
    invalid = "422 unprocessable_entity: You specified an invalid {} for Droplet creation."
    if region not in regions or not regions[region]["available"]:
        raise CloudError(invalid.format(f"region ({region})"))
    if size not in sizes or not sizes[size]["available"]:
        raise CloudError(invalid.format(f"size ({size})"))
    if region not in sizes[size]["regions"]:
        raise CloudError(
            f"422 unprocessable_entity: Size {size} is not available in region {region} "
            f"(offered in {', '.join(sizes[size]['regions']) or 'no region'})."
        )
    if image is not None and not image.isdigit() and image not in {i["slug"] for i in offer["images"]}:
        raise CloudError(invalid.format(f"image ({image})"))


def _size_fields(cloud: Cloud, slug: str) -> Record:
    size: Record = next((s for s in account_catalogue(cloud)["sizes"] if s["slug"] == slug.lower()), {})
    # What the shipped catalogue does not know is reported as 0 (see catalogue.py).
    return {
        "size": slug.lower(),
        "vcpus": size.get("vcpus") or 0,
        "memory": size.get("memory") or 0,
        "disk": size.get("disk") or 0,
        "price_monthly": size.get("price_monthly") or 0.0,
        "price_hourly": size.get("price_hourly") or 0.0,
    }


def resize_droplet(cloud: Cloud, record: Record, slug: str, *, disk: bool = True) -> None:
    """DigitalOcean's resize action: with ``disk`` the disk grows to the new size's (one way),
    without it only CPU and memory change. Either way a size whose disk is smaller than the
    droplet's disk is refused (422), as DigitalOcean refuses it: a disk never shrinks."""
    check_offer(cloud, record["region"], slug.lower())
    fields = _size_fields(cloud, slug)
    if 0 < fields["disk"] < record["disk"]:
        raise CloudError(
            f"Error resizing droplet ({record['id']}): POST /v2/droplets/{record['id']}/actions: "
            f"422 unprocessable_entity: {RESIZE_SHRINK_MESSAGE}"
        )
    if not disk:
        fields.pop("disk")
    record.update(fields)


def default_catalogue() -> Record:
    return {
        "as_of": catalogue.AS_OF,
        "regions": catalogue.regions(),
        "sizes": catalogue.sizes(),
        "images": catalogue.images(),
    }


def account_catalogue(cloud: Cloud) -> Record:
    """The regions, sizes and images this sandbox account is offered (``seed`` writes them)."""
    found: Record | None = cloud.get("catalogue")
    return found if isinstance(found, dict) else default_catalogue()


def enable_ipv6(record: Record) -> None:
    if not record["ipv6"]:
        record["ipv6"] = True
        record["ipv6_address"] = _ipv6(int(record["id"]) - FIRST_DROPLET_ID)


def create_droplet(
    path: PathLike,
    name: str,
    region: str = DEFAULT_REGION,
    size: str = "s-1vcpu-1gb",
    image: str = "ubuntu-24-04-x64",
    tags: Sequence[str] = (),
) -> Record:
    """Create a droplet directly in the cloud, as if made by hand in the control panel."""
    with transaction(path) as cloud:
        record = add_droplet(
            cloud, DropletSpec(name=name, region=region, size=size, image=image, tags=tuple(tags))
        )
    return dict(record)


def list_droplets(path: PathLike) -> list[Record]:
    droplets: dict[str, Record] = load(path)["droplets"]
    return [droplets[key] for key in sorted(droplets, key=int)]


def get_droplet(path: PathLike, droplet_id: str | int) -> Record | None:
    found: Record | None = load(path)["droplets"].get(str(droplet_id))
    return found


def rename_droplet(path: PathLike, droplet_id: str | int, new_name: str) -> Record:
    """The droplet Rename action; raises CloudError when the droplet does not exist."""
    with transaction(path) as cloud:
        record = _existing_droplet(cloud, droplet_id)
        record["name"] = new_name
    return dict(record)


def delete_droplet(path: PathLike, droplet_id: str | int) -> bool:
    """Destroy a droplet out of band; False when it was already gone."""
    with transaction(path) as cloud:
        return remove_droplet(cloud, str(droplet_id))


def edit_droplet(
    path: PathLike,
    droplet_id: str | int,
    *,
    size: str | None = None,
    tags: Sequence[str] | None = None,
    disk: bool = True,
) -> Record:
    """Resize a droplet (``disk=False``: CPU and RAM only) or replace its tags out of band, as
    in the control panel (drift tests)."""
    with transaction(path) as cloud:
        record = _existing_droplet(cloud, droplet_id)
        if size is not None:
            resize_droplet(cloud, record, size, disk=disk)
        if tags is not None:
            record["tags"] = sorted(set(tags))
    return dict(record)


def remove_droplet(cloud: Cloud, droplet_id: str) -> bool:
    """Destroy a droplet inside an open transaction; like DigitalOcean, firewalls forget it.
    A ``fail_delete`` fault for its name raises instead (nothing is removed)."""
    record = cloud["droplets"].get(droplet_id)
    failure = delete_fault(cloud, str(record.get("name"))) if isinstance(record, dict) else None
    if failure:
        raise CloudError(failure)
    gone = cloud["droplets"].pop(droplet_id, None) is not None
    for firewall in cloud["firewalls"].values():
        firewall["droplet_ids"] = [d for d in firewall["droplet_ids"] if str(d) != droplet_id]
    return gone


def _existing_droplet(cloud: Cloud, droplet_id: str | int) -> Record:
    record: Record | None = cloud["droplets"].get(str(droplet_id))
    if record is None:
        raise CloudError(f"droplet {droplet_id} not found (404)")
    return record


# ---------------------------------------------------------------- firewalls


def add_firewall(cloud: Cloud, fields: Record) -> Record:
    firewall_id = stable_uuid("firewall", _next(cloud, "firewall"))
    record: Record = {**fields, "id": firewall_id, "status": "succeeded", "created_at": _now()}
    cloud["firewalls"][firewall_id] = record
    return record


# ---------------------------------------------------------------- uptime checks and alerts


def _check_uptime_regions(fields: Record) -> None:
    """The provider sends regions unchecked; the API refuses one it does not probe from."""
    unknown = sorted(set(fields.get("regions") or ()) - set(catalogue.UPTIME_REGIONS))
    if unknown:
        raise CloudError(f"422 invalid region {unknown[0]!r}: one of {', '.join(catalogue.UPTIME_REGIONS)}")


def add_uptime_check(cloud: Cloud, fields: Record) -> Record:
    _check_uptime_regions(fields)
    check_id = stable_uuid("uptime_check", _next(cloud, "uptime_check"))
    record: Record = {**fields, "id": check_id}
    cloud["uptime_checks"][check_id] = record
    return record


def change_uptime_check(cloud: Cloud, record: Record, fields: Record) -> None:
    _check_uptime_regions(fields)
    record.update(fields)


def remove_uptime_check(cloud: Cloud, check_id: str) -> None:
    """Like DigitalOcean, deleting a check deletes its alerts."""
    cloud["uptime_checks"].pop(check_id, None)
    for alert_id in [k for k, a in cloud["uptime_alerts"].items() if a["check_id"] == check_id]:
        del cloud["uptime_alerts"][alert_id]


def add_uptime_alert(cloud: Cloud, fields: Record) -> Record:
    if fields["check_id"] not in cloud["uptime_checks"]:
        raise CloudError(f"uptime check {fields['check_id']} not found (404)")
    alert_id = stable_uuid("uptime_alert", _next(cloud, "uptime_alert"))
    record: Record = {**fields, "id": alert_id}
    cloud["uptime_alerts"][alert_id] = record
    return record


def add_monitor_alert(cloud: Cloud, fields: Record) -> Record:
    alert_id = stable_uuid("monitor_alert", _next(cloud, "monitor_alert"))
    record: Record = {**fields, "id": alert_id}
    cloud["monitor_alerts"][alert_id] = record
    return record


# ---------------------------------------------------------------- database clusters


def cluster_record(name: str, region: str = DEFAULT_REGION) -> Record:
    cluster_id = stable_uuid("cluster", name)
    host = f"{name}-do-user-0-0.b.db.sandbox.invalid"
    password = _secret("cluster", cluster_id)
    uri = f"postgresql://doadmin:{password}@{host}:25060/defaultdb?sslmode=require"
    private_host = f"private-{host}"
    return {
        "id": cluster_id,
        "name": name,
        "engine": "pg",
        "version": "16",
        "size": "db-s-1vcpu-1gb",
        "region": region,
        "node_count": 1,
        "host": host,
        "private_host": private_host,
        "port": 25060,
        "database": "defaultdb",
        "user": "doadmin",
        "password": password,
        "uri": uri,
        "private_uri": uri.replace(host, private_host),
        "urn": f"do:dbaas:{cluster_id}",
        "private_network_uuid": vpc_uuid(region),
        "project_id": stable_uuid("project", "default"),
        "storage_size_mib": "10240",
        "tags": [],
        "created_at": _now(),
    }


def seed(path: PathLike, clusters: Sequence[str], ssh_keys: Sequence[str] = ()) -> None:
    """Make sure the cloud file exists and holds a database cluster and an SSH key for every
    name given (``[sandbox]`` of infra-apply.toml). Nothing is ever removed: a cluster may hold
    databases Terraform state knows about."""
    with transaction(path) as cloud:
        # A catalogue from another catalogue date is replaced; one edited in place (tests that
        # take a region away) is kept.
        if account_catalogue(cloud).get("as_of") != catalogue.AS_OF or "catalogue" not in cloud:
            cloud["catalogue"] = default_catalogue()
        known = {record["name"] for record in cloud["clusters"].values()}
        for name in clusters:
            if name not in known:
                record = cluster_record(name)
                cloud["clusters"][record["id"]] = record
                known.add(name)
        known = {record["name"] for record in cloud["ssh_keys"].values()}
        for name in ssh_keys:
            if name not in known:
                record = ssh_key_record(_next(cloud, "ssh_key", FIRST_SSH_KEY_ID), name)
                cloud["ssh_keys"][str(record["id"])] = record
                known.add(name)


# ---------------------------------------------------------------- SSH keys


def ssh_key_record(key_id: int, name: str) -> Record:
    """A key as ``GET /v2/account/keys`` lists it; its public key is made up, never usable."""
    import base64

    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + hashlib.sha256(name.encode()).digest()
    public_key = f"ssh-ed25519 {base64.b64encode(blob).decode()} sandbox-{name}"
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    fingerprint = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    return {"id": key_id, "name": name, "fingerprint": fingerprint, "public_key": public_key}


def list_ssh_keys(path: PathLike) -> list[Record]:
    keys: dict[str, Record] = load(path)["ssh_keys"]
    return sorted(keys.values(), key=lambda record: int(record["id"]))


def _existing_key(cloud: Cloud, key: str) -> Record:
    """A create request's key: its id or its fingerprint, as DigitalOcean takes either."""
    for record in cloud["ssh_keys"].values():
        if str(record["id"]) == str(key) or record["fingerprint"] == key:
            return dict(record)
    raise CloudError(f"422 unprocessable_entity: You specified an invalid ssh key: {key}")


def find_cluster(cloud: Cloud, name: str) -> Record | None:
    return next((c for c in cloud["clusters"].values() if c["name"] == name), None)


def list_clusters(path: PathLike) -> list[Record]:
    clusters: dict[str, Record] = load(path)["clusters"]
    return sorted(clusters.values(), key=lambda record: str(record["name"]))


# A cluster's trusted sources: ``firewall_rules`` on its record, as GET /v2/databases/$ID/firewall
# lists them ({uuid, cluster_uuid, type, value, created_at}); none means anyone may connect.


def cluster_rules(cloud: Cloud, cluster_id: str) -> list[Record]:
    _require_cluster(cloud, cluster_id)
    rules: list[Record] = cloud["clusters"][cluster_id].get("firewall_rules", [])
    return rules


def put_cluster_rules(cloud: Cloud, cluster_id: str, wanted: Sequence[tuple[str, str]]) -> list[Record]:
    """PUT /v2/databases/$ID/firewall: the whole list replaced; a rule kept keeps its uuid."""
    old = {(r["type"], r["value"]): r for r in cluster_rules(cloud, cluster_id)}
    rules = []
    for rule_type, value in sorted(set(wanted)):
        kept = old.get((rule_type, value))
        rules.append(
            kept
            or {
                "uuid": stable_uuid("db-firewall-rule", f"{cluster_id}/{_next(cloud, 'db_firewall_rule')}"),
                "cluster_uuid": cluster_id,
                "type": rule_type,
                "value": value,
                "created_at": _now(),
            }
        )
    cloud["clusters"][cluster_id]["firewall_rules"] = rules
    return rules


def database_id(cluster_id: str, name: str) -> str:
    return f"{cluster_id}/database/{name}"


def user_id(cluster_id: str, name: str) -> str:
    return f"{cluster_id}/user/{name}"


def _require_cluster(cloud: Cloud, cluster_id: str) -> None:
    if cluster_id not in cloud["clusters"]:
        raise CloudError(f"database cluster {cluster_id} not found (404)")


def add_database(cloud: Cloud, cluster_id: str, name: str) -> Record:
    _require_cluster(cloud, cluster_id)
    key = database_id(cluster_id, name)
    if key in cloud["databases"]:
        raise CloudError(f"database {name!r} already exists in cluster {cluster_id} (422)")
    record: Record = {"id": key, "cluster_id": cluster_id, "name": name}
    cloud["databases"][key] = record
    return record


def add_user(cloud: Cloud, cluster_id: str, name: str, mysql_auth_plugin: str | None = None) -> Record:
    _require_cluster(cloud, cluster_id)
    key = user_id(cluster_id, name)
    if key in cloud["users"]:
        raise CloudError(f"database user {name!r} already exists in cluster {cluster_id} (422)")
    serial = _next(cloud, "user")
    record: Record = {
        "id": key,
        "cluster_id": cluster_id,
        "name": name,
        "role": "normal",
        "password": _secret("user", key, str(serial)),
        "mysql_auth_plugin": mysql_auth_plugin,
        "access_cert": None,
        "access_key": None,
    }
    cloud["users"][key] = record
    return record


# ---------------------------------------------------------------- fault injection
# The sandbox "cloud" can misbehave on purpose, so tests can show that a failed or interrupted
# apply leaves consistent state and that a rerun converges. Faults live in the cloud file (the
# cloud misbehaves, not the provider), keyed by droplet name.


GATE_TIMEOUT_SECONDS = 120.0
GATE_RELEASE = "release"
GATE_STARTED_PREFIX = "started-"


def inject_faults(
    path: PathLike,
    *,
    fail_create: Sequence[str] = (),
    fail_delete: Sequence[str] = (),
    create_delay: float = 0.0,
    message: str = "",
    gate: PathLike | None = None,
    lose_create: Sequence[str] = (),
    taint_create: Sequence[str] = (),
) -> None:
    """Make creating (``fail_create``: droplets or firewalls) or destroying (``fail_delete``)
    the named droplets fail,
    and/or every droplet create take ``create_delay`` s,
    and/or every droplet create wait at ``gate`` (see ``wait_at_gate``).

    Two faults follow the real provider stopped mid-create (``context canceled``): with
    ``lose_create`` the droplet is made but the provider's answer never reaches Terraform
    (nothing recorded: the create was in flight), with ``taint_create`` Terraform hears of it
    but not that it came up (recorded tainted: "Error waiting for droplet ... to become ready").

    Called with no arguments it clears every fault.
    """
    with transaction(path) as c:
        c["faults"] = {
            "fail_create": {name: message or f"droplet {name!r}: 422 sandbox fault" for name in fail_create},
            "fail_delete": {name: message or f"droplet {name!r}: 500 sandbox fault" for name in fail_delete},
            "create_delay": create_delay,
            "gate": str(Path(gate).resolve()) if gate is not None else None,
            "lose_create": sorted(lose_create),
            "taint_create": sorted(taint_create),
        }


def create_fault(c: Cloud, name: str) -> str | None:
    failure: str | None = c.get("faults", {}).get("fail_create", {}).get(name)
    return failure


def interrupted_create(path: PathLike, name: str) -> str | None:
    """``"lose"`` or ``"taint"`` when a create of ``name`` is to be interrupted so."""
    faults = load(path).get("faults", {})
    for kind in ("lose", "taint"):
        if name in (faults.get(f"{kind}_create") or ()):
            return kind
    return None


def delete_fault(c: Cloud, name: str) -> str | None:
    failure: str | None = c.get("faults", {}).get("fail_delete", {}).get(name)
    return failure


def create_delay(path: PathLike) -> float:
    return float(load(path).get("faults", {}).get("create_delay", 0.0))


def create_gate(path: PathLike) -> Path | None:
    gate = load(path).get("faults", {}).get("gate")
    return Path(gate) if gate else None


# A gate lets a test stop a droplet create at a point it controls instead of guessing a delay:
# the create announces itself with a marker file, then waits until the test releases the gate.


def wait_at_gate(gate: Path, name: str, timeout: float = GATE_TIMEOUT_SECONDS) -> None:
    """Write ``gate/started-<name>``, then block until ``gate/release`` exists.

    Bounded: a gate nobody releases fails the create (CloudError) instead of hanging Terraform.
    """
    import time

    gate.mkdir(parents=True, exist_ok=True)
    marker = gate / (GATE_STARTED_PREFIX + _file_safe(name))
    marker.write_text(f"{os.getpid()}\n", encoding="utf-8")
    release = gate / GATE_RELEASE
    deadline = time.monotonic() + timeout
    while not release.exists():
        if time.monotonic() > deadline:
            raise CloudError(f"droplet {name!r}: sandbox gate {gate} not released within {timeout:g} s")
        time.sleep(0.02)


def gate_started(gate: PathLike) -> list[str]:
    """Names (file-safe) of the droplet creates that reached the gate, sorted."""
    folder = Path(gate)
    if not folder.is_dir():
        return []
    return sorted(p.name[len(GATE_STARTED_PREFIX) :] for p in folder.glob(GATE_STARTED_PREFIX + "*"))


def release_gate(gate: PathLike) -> None:
    folder = Path(gate)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / GATE_RELEASE).touch()


def _file_safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9.-]", "_", name)[:200] or "_"
