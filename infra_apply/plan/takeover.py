"""Take over resources from an existing (hand-written) Terraform root: the pure core.

Input: the old root's state (a raw ``terraform.tfstate``, ``terraform state pull`` output, or
``terraform show -json`` output), one producer's model and rendered addresses, and the
account's database clusters (id -> name: the old state only holds ``cluster_id``).

Output: a ``Takeover``: what infra-apply imports (old address -> new address, import id), what
stays in the old root, what the manifests declare that the old state does not hold, and the
problems found *before anything is written*: a difference that would make the import apply
replace a droplet, a resource the old root cannot forget alone (``removed`` takes a whole
counted resource), an ambiguous match. ``import_file`` / ``removed_file`` turn an accepted
takeover into HCL and refuse a takeover with errors.

Nothing here runs Terraform or touches the account; infra-apply never runs anything in the old
root. The old state's secrets (a database user's password) are dropped while parsing: only the
attributes matching needs are kept, so no report, log or repr can carry them.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from infra_apply import kinds
from infra_apply.errors import InfraApplyError, json_document
from infra_apply.manifests.model import (
    ALLOWED_REGIONS,
    DEFAULT_IMAGE,
    DEFAULT_REGION,
    Database,
    Droplet,
    ProducerModel,
)
from infra_apply.manifests.rules import SLUG_RE
from infra_apply.render import hcl
from infra_apply.render.module import db_entry, firewall_name, public_address
from infra_apply.runtime.fs import STATE_LIMIT, read_bounded
from infra_apply.untrusted import visible

RULE = "from_state"

# Types as the old state spells them; import ids and the attributes kept are the kinds table's.
DROPLET = kinds.DROPLET.type
FIREWALL = kinds.FIREWALL.type
DATABASE = kinds.DATABASE.type
USER = kinds.USER.type
TAKEOVER_TYPES = tuple(k.type for k in kinds.TAKEOVER)

_OPTIONAL = frozenset({"monitoring", "ipv6", "droplet_ids", "tags"})

_MODULE_STEP = re.compile(r'module\.([A-Za-z_][A-Za-z0-9_-]*)(?:\[(?:(\d+)|("(?:[^"\\]|\\.)*"))\])?')

# --- the old state --------------------------------------------------------------------------


Key = int | str | None


class ModuleStep(NamedTuple):
    name: str
    key: Key = None


def _key_text(key: Key) -> str:
    if key is None:
        return ""
    return f"[{key}]" if isinstance(key, int) else f"[{json.dumps(key)}]"


@dataclass(frozen=True)
class OldResource:
    """One managed resource instance of the old root.

    ``attributes`` holds only what matching needs (never a secret); it is empty for types
    infra-apply does not take over.
    """

    module: tuple[ModuleStep, ...]
    type: str
    name: str
    index: Key
    attributes: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    dependencies: tuple[str, ...] = field(default=(), compare=False)  # resource addresses
    tainted: bool = field(default=False, compare=False)

    @property
    def address(self) -> str:
        """The instance address, as Terraform prints it: ``module.a["k"].TYPE.NAME[0]``."""
        return "".join(f"module.{s.name}{_key_text(s.key)}." for s in self.module) + (
            f"{self.type}.{self.name}{_key_text(self.index)}"
        )

    @property
    def resource_address(self) -> str:
        """The resource address without any instance key: what ``removed { from }`` takes."""
        return "".join(f"module.{s.name}." for s in self.module) + f"{self.type}.{self.name}"

    @property
    def label(self) -> str:
        """The live name (droplet, firewall, database, user), for people."""
        return str(self.attributes.get("name", ""))


@dataclass(frozen=True)
class OldState:
    where: str  # the file it came from, as the operator named it
    resources: tuple[OldResource, ...]  # every managed resource instance, any type
    deposed: tuple[str, ...] = ()  # addresses holding a deposed object (left alone)


def read_state(path: Path, where: str | None = None) -> OldState:
    """Parse the state file at ``path``; errors name ``where`` (default: ``path``)."""
    where = where or str(path)
    try:
        data = read_bounded(path, STATE_LIMIT)
    except OSError as exc:
        raise InfraApplyError(f"cannot read the old state: {exc.strerror}", path=where, rule=RULE) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InfraApplyError(
            f"not a Terraform state: not UTF-8 text (byte {exc.start})", path=where, rule=RULE
        ) from None
    return parse_state(text, where)


def parse_state(text: str, where: str) -> OldState:
    """Any of the three formats -> ``OldState``; bad input -> ``InfraApplyError`` at ``where``."""
    try:
        return _parse_state(text, where)
    except RecursionError:  # json.loads and the module walk recurse per level
        raise InfraApplyError("not a Terraform state: nested too deeply", path=where, rule=RULE) from None


def _parse_state(text: str, where: str) -> OldState:
    doc = json_document(text, "not a Terraform state: invalid JSON ({reason})", path=where, rule=RULE)
    fail = _failer(where)
    if not isinstance(doc, dict):
        raise fail("", "not a Terraform state: the document is not a JSON object")
    if "planned_values" in doc:
        raise fail(
            "",
            "this is a saved plan's JSON, not a state: give `terraform show -json` without a plan "
            "file, `terraform state pull`, or the terraform.tfstate file",
        )
    if "format_version" in doc:
        return _parse_show_json(doc, where, fail)
    if "version" in doc:
        if doc["version"] != 4:
            raise fail(
                "version",
                f"state format version {doc['version']!r} is not supported: only version 4 "
                "(Terraform >= 0.12; run `terraform state pull` with a current Terraform)",
            )
        return _parse_v4(doc, where, fail)
    raise fail(
        "",
        'not a Terraform state: neither a state file ("version": 4) nor `terraform show -json` '
        'output ("format_version")',
    )


Fail = Callable[[str, str], InfraApplyError]


def _failer(where: str) -> Fail:
    def fail(pointer: str, message: str) -> InfraApplyError:
        at = f"at {pointer}: " if pointer else ""
        return InfraApplyError(at + message, path=where, rule=RULE)

    return fail


def _get(obj: Mapping[str, Any], key: str, types: tuple[type, ...], pointer: str, fail: Fail) -> Any:
    if key not in obj:
        raise fail(pointer, f"{key!r} is missing")
    value = obj[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        names = " or ".join("null" if k is type(None) else _JSON_NAMES.get(k, k.__name__) for k in types)
        raise fail(f"{pointer}.{key}" if pointer else key, f"expected {names}, found {_json_type(value)}")
    return value


_JSON_NAMES = {str: "a string", int: "a number", list: "a list", dict: "an object", bool: "true/false"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "true/false", str: "a string", int: "a number", float: "a number"}.get(
        type(value), "a list" if isinstance(value, list) else "an object"
    )


def _parse_v4(doc: Mapping[str, Any], where: str, fail: Fail) -> OldState:
    resources: list[OldResource] = []
    deposed: list[str] = []
    for i, res in enumerate(_get(doc, "resources", (list,), "", fail)):
        at = f"resources[{i}]"
        if not isinstance(res, dict):
            raise fail(at, "expected an object")
        if _get(res, "mode", (str,), at, fail) != "managed":
            continue  # data sources: read, never owned
        rtype = _ident(_get(res, "type", (str,), at, fail), f"{at}.type", fail)
        name = _ident(_get(res, "name", (str,), at, fail), f"{at}.name", fail)
        module = _parse_module(res.get("module", ""), f"{at}.module", fail)
        for j, inst in enumerate(_get(res, "instances", (list,), at, fail)):
            iat = f"{at}.instances[{j}]"
            if not isinstance(inst, dict):
                raise fail(iat, "expected an object")
            index = _index(inst.get("index_key"), f"{iat}.index_key", fail)
            attrs = _get(inst, "attributes", (dict,), iat, fail)
            record = OldResource(
                module,
                rtype,
                name,
                index,
                _keep(rtype, attrs, f"{iat}.attributes", fail),
                _dependencies(inst.get("dependencies"), f"{iat}.dependencies", fail),
                inst.get("status") == "tainted",
            )
            if inst.get("deposed"):
                deposed.append(record.address)
            else:
                resources.append(record)
    return _state(where, resources, deposed, fail)


def _parse_show_json(doc: Mapping[str, Any], where: str, fail: Fail) -> OldState:
    values = doc.get("values")
    if values is None:
        return OldState(where, ())  # `terraform show -json` of an empty state
    if not isinstance(values, dict):
        raise fail("values", "expected an object")
    root = _get(values, "root_module", (dict,), "values", fail)
    resources: list[OldResource] = []
    deposed: list[str] = []
    for module, res, at in _walk_modules(root, "values.root_module", (), fail):
        if _get(res, "mode", (str,), at, fail) != "managed":
            continue
        rtype = _ident(_get(res, "type", (str,), at, fail), f"{at}.type", fail)
        name = _ident(_get(res, "name", (str,), at, fail), f"{at}.name", fail)
        record = OldResource(
            module,
            rtype,
            name,
            _index(res.get("index"), f"{at}.index", fail),
            _keep(rtype, _get(res, "values", (dict,), at, fail), f"{at}.values", fail),
            _dependencies(res.get("depends_on"), f"{at}.depends_on", fail),
            res.get("tainted") is True,
        )
        if res.get("deposed_key"):
            deposed.append(record.address)
        else:
            resources.append(record)
    return _state(where, resources, deposed, fail)


def _walk_modules(
    module: Mapping[str, Any], at: str, path: tuple[ModuleStep, ...], fail: Fail
) -> Iterator[tuple[tuple[ModuleStep, ...], Mapping[str, Any], str]]:
    resources = module.get("resources", [])
    if not isinstance(resources, list):
        raise fail(f"{at}.resources", "expected a list")
    for i, res in enumerate(resources):
        if not isinstance(res, dict):
            raise fail(f"{at}.resources[{i}]", "expected an object")
        yield path, res, f"{at}.resources[{i}]"
    children = module.get("child_modules", [])
    if not isinstance(children, list):
        raise fail(f"{at}.child_modules", "expected a list")
    for i, child in enumerate(children):
        cat = f"{at}.child_modules[{i}]"
        if not isinstance(child, dict):
            raise fail(cat, "expected an object")
        child_path = _parse_module(_get(child, "address", (str,), cat, fail), f"{cat}.address", fail)
        yield from _walk_modules(child, cat, child_path, fail)


def _state(where: str, resources: list[OldResource], deposed: list[str], fail: Fail) -> OldState:
    seen = Counter(r.address for r in resources)
    twice = sorted(a for a, n in seen.items() if n > 1)
    if twice:
        raise fail("", f"{twice[0]} appears twice: not a consistent state")
    return OldState(where, tuple(sorted(resources, key=lambda r: r.address)), tuple(sorted(deposed)))


def _ident(value: str, pointer: str, fail: Fail) -> str:
    if not hcl.is_ident(value):
        raise fail(pointer, f"{value!r} is not a Terraform name")
    return value


def _index(value: Any, pointer: str, fail: Fail) -> Key:
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise fail(pointer, f"expected a number or a string, found {_json_type(value)}")


def _parse_module(text: Any, pointer: str, fail: Fail) -> tuple[ModuleStep, ...]:
    """``module.a["k"].module.b[0]`` -> steps; ``""`` is the root module."""
    if not isinstance(text, str):
        raise fail(pointer, f"expected a string, found {_json_type(text)}")
    steps: list[ModuleStep] = []
    pos = 0
    while pos < len(text):
        m = _MODULE_STEP.match(text, pos)
        if m is None or (m.end() < len(text) and text[m.end()] != "."):
            raise fail(pointer, f"{text!r} is not a module address")
        key: Key = None
        if m.group(2) is not None:
            key = int(m.group(2))
        elif m.group(3) is not None:
            try:
                key = json.loads(m.group(3))
            except json.JSONDecodeError:
                raise fail(pointer, f"{text!r} is not a module address") from None
        steps.append(ModuleStep(m.group(1), key))
        pos = m.end() + 1
        if pos == len(text):  # a trailing dot
            raise fail(pointer, f"{text!r} is not a module address")
    return tuple(steps)


def _dependencies(value: Any, pointer: str, fail: Fail) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(pointer, "expected a list of resource addresses")
    return tuple(value)


def _keep(rtype: str, attrs: Mapping[str, Any], pointer: str, fail: Fail) -> Mapping[str, Any]:
    """The attributes matching needs, type-checked; everything else (secrets included) dropped."""
    kind = kinds.kind_of(rtype)
    if kind is None or not kind.keeps:
        return {}
    kept: dict[str, Any] = {}
    for key, types in kind.keeps.items():
        if key in _OPTIONAL and key not in attrs:
            kept[key] = None
            continue
        kept[key] = _get(attrs, key, types, pointer, fail)
    if rtype == DROPLET and not kept["id"].isdigit():
        raise fail(f"{pointer}.id", f"droplet id {kept['id']!r} is not a number")
    ids = kept.get("droplet_ids") or []
    if rtype == FIREWALL and not all(_droplet_id(v) is not None for v in ids):
        raise fail(f"{pointer}.droplet_ids", "expected a list of droplet ids (numbers)")
    tags = kept.get("tags") or []
    if not all(isinstance(t, str) for t in tags):
        raise fail(f"{pointer}.tags", "expected a list of strings")
    return kept


def _droplet_id(value: Any) -> str | None:
    """A droplet id as the string Terraform's droplet ``id`` holds; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    if isinstance(value, str) and value.isdigit():
        return str(int(value))
    return None


# --- the takeover -----------------------------------------------------------------------------


Level = Literal["error", "warning"]


class Finding(NamedTuple):
    """A problem found before anything is written; an ``error`` blocks the takeover."""

    level: Level
    rule: str  # forced_replace, partial_resource, ambiguous, unknown_cluster, gpu_droplet, ...
    address: str  # the old root's address it is about
    message: str
    fix: str = ""

    def format(self) -> str:
        """One line (and its fix on the next): values from the old state (a size, an image) may
        hold a newline or a terminal escape, shown escaped."""
        text = visible(f"{self.level} {self.rule}: {self.address}: {self.message}")
        return f"{text}\n    fix: {visible(self.fix)}" if self.fix else text


@dataclass(frozen=True)
class TakenOver:
    old: OldResource
    address: str  # in infra-apply's root
    import_id: str
    name: str  # the manifest's name: droplet, database or user (a firewall: its droplet's)


@dataclass(frozen=True)
class Absent:
    """Declared by the manifests, not in the old state: the next apply creates it."""

    address: str
    type: str
    name: str
    source: str


@dataclass(frozen=True)
class Takeover:
    producer: str
    where: str  # the old state's file
    taken_over: tuple[TakenOver, ...]
    left: tuple[OldResource, ...]  # droplets, firewalls, databases, users the old root keeps
    absent: tuple[Absent, ...]
    findings: tuple[Finding, ...]
    ignored: tuple[str, ...] = ()  # the old root's other managed resources: never touched

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level == "error")

    @property
    def ok(self) -> bool:
        return not self.errors

    def removed_from(self) -> tuple[str, ...]:
        """The resource addresses the old root forgets: one ``removed`` block each."""
        return tuple(sorted({t.old.resource_address for t in self.taken_over}))

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready document (no attribute values, so no secret)."""
        return {
            "producer": self.producer,
            "state": self.where,
            "ok": self.ok,
            "taken_over": [
                {
                    "kind": kinds.noun(t.old.type),
                    "name": t.name,
                    "from": t.old.address,
                    "to": t.address,
                    "import_id": t.import_id,
                }
                for t in self.taken_over
            ],
            "removed_from": list(self.removed_from()),
            "left_in_old_root": [
                {"kind": kinds.noun(r.type), "name": r.label, "address": r.address} for r in self.left
            ],
            "absent": [
                {"kind": kinds.noun(a.type), "name": a.name, "address": a.address, "source": a.source}
                for a in self.absent
            ],
            "problems": [f._asdict() for f in self.findings],
            "ignored": list(self.ignored),
        }

    def to_text(self) -> str:
        return format_text(self)


def plan_takeover(
    state: OldState,
    producer: ProducerModel,
    droplet_addresses: Mapping[str, str],
    clusters: Mapping[str, str],
    live_images: Mapping[str, str] | None = None,
) -> Takeover:
    """Match the old root's resources to what ``producer`` declares.

    ``droplet_addresses``: manifest droplet name -> address in infra-apply's root
    (``Rendered.droplet_addresses``). ``clusters``: database cluster id -> name, from the
    account. ``live_images``: droplet id -> image as DigitalOcean reports it now (its slug, else
    its numeric id), when the caller can ask the account: an import records *that* value, and a
    slug retired after the old root created the droplet shows up only there.
    """
    found = _Collector()
    droplets = _take_droplets(state, producer, droplet_addresses, live_images or {}, found)
    _take_firewalls(state, droplets, found)
    _take_databases(state, producer, clusters, found)
    _check_whole_resources(state, found)
    _check_old_root(state, found)
    taken_addresses = {t.old.address for t in found.taken}
    relevant = [r for r in state.resources if r.type in TAKEOVER_TYPES]
    return Takeover(
        producer=producer.name,
        where=state.where,
        taken_over=tuple(sorted(found.taken, key=lambda t: t.address)),
        left=tuple(r for r in relevant if r.address not in taken_addresses),
        absent=tuple(sorted(found.absent, key=lambda a: a.address)),
        findings=tuple(sorted(found.findings, key=lambda f: (f.level != "error", f.address, f.rule))),
        ignored=tuple(r.address for r in state.resources if r.type not in TAKEOVER_TYPES),
    )


class _Collector:
    def __init__(self) -> None:
        self.taken: list[TakenOver] = []
        self.absent: list[Absent] = []
        self.findings: list[Finding] = []

    def error(self, rule: str, address: str, message: str, fix: str = "") -> None:
        self.findings.append(Finding("error", rule, address, message, fix))

    def warn(self, rule: str, address: str, message: str, fix: str = "") -> None:
        self.findings.append(Finding("warning", rule, address, message, fix))


def _what(rtype: str, name: str) -> str:
    """``droplet "x"``; a firewall is named by its droplet, as infra-apply renders one each."""
    return f"firewall of droplet {_q(name)}" if rtype == FIREWALL else f"{kinds.noun(rtype)} {_q(name)}"


def _q(text: str) -> str:
    """A name quoted for a report line: control characters escaped, nothing can break the line."""
    return json.dumps(text)


def _by(
    resources: Sequence[OldResource], rtype: str, key: Callable[[OldResource], Any]
) -> dict[Any, list[OldResource]]:
    out: dict[Any, list[OldResource]] = defaultdict(list)
    for r in resources:
        if r.type == rtype:
            out[key(r)].append(r)
    return out


def _take_droplets(
    state: OldState,
    producer: ProducerModel,
    addresses: Mapping[str, str],
    live_images: Mapping[str, str],
    found: _Collector,
) -> dict[str, tuple[str, Droplet]]:
    """Droplets by live name. Returns droplet id -> (new address, manifest droplet) of those
    taken over."""
    by_name = _by(state.resources, DROPLET, lambda r: r.label)
    taken: dict[str, tuple[str, Droplet]] = {}
    for d in producer.droplets:
        matches = by_name.get(d.name, [])
        address = addresses[d.name]
        if len(matches) > 1:
            found.error(
                "ambiguous",
                matches[0].address,
                f"{len(matches)} droplets of the old root are named {_q(d.name)} "
                f"({', '.join(m.address for m in matches)}); infra-apply takes over exactly one",
                "rename or remove the extra droplet(s) in the old root, then run adopt again",
            )
            continue
        if not matches:
            if not d.gpu:  # an on-demand GPU droplet is created by `gpu up`, never by an apply
                found.absent.append(Absent(address, DROPLET, d.name, d.source))
                found.absent.append(Absent(_firewall_of(address), FIREWALL, d.name, d.source))
            continue
        old = matches[0]
        if d.gpu:
            found.error(
                "gpu_droplet",
                old.address,
                f"{_q(d.name)} is an on-demand GPU droplet in the manifests: infra-apply creates it "
                "only for a `gpu up` lease and a plain apply would destroy it",
                "leave it in the old root, or destroy it there and use `infra-apply gpu up`",
            )
            continue
        droplet_id = str(old.attributes["id"])
        found.taken.append(TakenOver(old, address, droplet_id, d.name))
        taken[droplet_id] = (address, d)
        _check_droplet(old, d, live_images.get(droplet_id), found)
    return taken


def _firewall_of(droplet_address: str) -> str:
    # render: a droplet's firewall has the droplet's address under digitalocean_firewall.
    return FIREWALL + droplet_address.removeprefix(DROPLET)


def _check_droplet(old: OldResource, d: Droplet, live_image: str | None, found: _Collector) -> None:
    """What would make the import apply replace (or resize) the droplet.

    ForceNew attributes of digitalocean_droplet (do-provider-schema.json): image, region,
    ssh_keys, user_data, vpc_uuid, monitoring, droplet_agent, public_networking,
    gpu_partition_mode, and ipv6 true -> false (CustomizeDiff). infra-apply's template sets
    image and region (and vpc_uuid on a droplet hosting a database project); ssh_keys,
    user_data, monitoring and vpc_uuid are in ignore_changes; public_networking is
    optional+computed (unset: no diff); droplet_agent and
    gpu_partition_mode are not read back on import. ipv6 (default false) is read back and NOT
    set by the template: a droplet with it on would be replaced.
    """
    a = old.attributes
    where = f"droplet {_q(d.name)} in {d.source}"
    image = live_image or str(a["image"])
    if image != d.image:
        _image_differs(old, d, image, where, found)
    region = str(a["region"]).lower()
    if region != d.region.lower():
        said = f"the manifest says {d.region}" + (" (the default)" if d.region == DEFAULT_REGION else "")
        if region in ALLOWED_REGIONS:
            fix = f"set `region: {region}` on {where}"
        else:
            fix = (
                f"infra/v1 allows only {', '.join(ALLOWED_REGIONS)}, so the manifest cannot say "
                f"{region}: leave this droplet in the old root (remove it from {d.source}), or "
                "move its workload to a new droplet in an allowed region"
            )
        found.error(
            "forced_replace", old.address, f"region is {region}, {said}: a region change replaces it", fix
        )
    for attr in ("ipv6",):
        if a.get(attr) is True:
            found.error(
                "forced_replace",
                old.address,
                f"{attr} is on; infra-apply renders no {attr} setting (the provider default, off), "
                f"so the import apply would replace the droplet ({attr} cannot be turned off in place)",
                f"infra/v1 cannot express {attr}: leave this droplet in the old root "
                f"(remove it from {d.source}) until infra-apply renders {attr}",
            )
    size = str(a["size"]).lower()
    if size != d.size.lower():
        found.warn(
            "resize",
            old.address,
            f"size is {size}, the manifest says {d.size}: the import apply would resize it in place "
            "(power off, disk grows one-way) and apply refuses without --allow-resize",
            f"to keep it as it is, set `size: {size}` on {where}",
        )


def _image_differs(old: OldResource, d: Droplet, image: str, where: str, found: _Collector) -> None:
    said = f"the manifest says {d.image}" + (" (the default)" if d.image == DEFAULT_IMAGE else "")
    if image.isdigit():
        what = (
            f"the droplet's image is the numeric image id {image} (its slug is retired, or it was "
            f"built from a snapshot or custom image), {said}"
        )
    else:
        what = f"image is {image}, {said}"
    if SLUG_RE.match(image):
        # Quoted: YAML would read a bare 12345 as a number, which the schema refuses.
        fix = (
            f"set `image: {json.dumps(image)}` on {where} (the image only matters when a droplet is created)"
        )
    else:
        fix = (
            f"the manifest cannot say {_q(image)} (not a DigitalOcean slug or image id): leave this "
            f"droplet in the old root (remove it from {d.source})"
        )
    found.error("forced_replace", old.address, f"{what}: an image change replaces the droplet", fix)


def _take_firewalls(state: OldState, droplets: Mapping[str, tuple[str, Droplet]], found: _Collector) -> None:
    """A firewall by the droplet it covers: one that covers exactly one taken-over droplet."""
    candidates: dict[str, list[OldResource]] = defaultdict(list)
    for fw in (r for r in state.resources if r.type == FIREWALL):
        ids = {i for i in (_droplet_id(v) for v in fw.attributes["droplet_ids"] or ()) if i}
        covered = sorted(ids & droplets.keys())
        if not covered:
            continue
        if len(ids) == 1:
            candidates[covered[0]].append(fw)
            continue
        others = sorted(ids - droplets.keys())
        found.warn(
            "shared_firewall",
            fw.address,
            f"firewall {_q(fw.label)} covers {len(ids)} droplets ({', '.join(sorted(ids))}); "
            "infra-apply keeps one firewall per droplet, so it stays in the old root, and its "
            f"rules keep applying to the taken-over droplet(s) {', '.join(covered)} (DigitalOcean "
            "applies every firewall covering a droplet)"
            + (f"; it also covers droplet(s) {', '.join(others)} not taken over" if others else ""),
            f"remove droplet(s) {', '.join(covered)} from its droplet_ids in the old root",
        )
    for droplet_id, both in sorted(candidates.items()):
        droplet_address, droplet = droplets[droplet_id]
        # infra-apply's own root holds two per droplet: its public openings' one goes by its name
        public = public_address(_firewall_of(droplet_address))
        public_name = firewall_name(kinds.FIREWALL.local(public))
        named_public = [f for f in both if f.attributes.get("name") == public_name]
        if len(named_public) == 1:
            fw = named_public[0]
            found.taken.append(TakenOver(fw, public, str(fw.attributes["id"]), droplet.name))
        fws = [f for f in both if f not in named_public or len(named_public) > 1]
        if not fws:
            continue
        if len(fws) > 1:
            found.warn(
                "ambiguous",
                fws[0].address,
                f"{len(fws)} firewalls cover only droplet {droplet_id} "
                f"({', '.join(f.address for f in fws)}): none is taken over, they stay in the old "
                "root and their rules keep applying to it",
                "merge them into one in the old root, then run adopt again",
            )
            continue
        fw = fws[0]
        found.taken.append(
            TakenOver(fw, _firewall_of(droplet_address), str(fw.attributes["id"]), droplet.name)
        )
        if fw.attributes.get("tags"):
            found.warn(
                "firewall_tags",
                fw.address,
                f"firewall {_q(fw.label)} also applies to droplets tagged "
                f"{', '.join(_q(t) for t in fw.attributes['tags'])}; infra-apply's firewall covers "
                "only its droplet, so the import apply drops those tags (in place)",
                "give those droplets their own firewall first if they need one",
            )
    taken = {t.address for t in found.taken}
    for droplet_address, droplet in droplets.values():
        if _firewall_of(droplet_address) not in taken:
            found.absent.append(Absent(_firewall_of(droplet_address), FIREWALL, droplet.name, droplet.source))


def _take_databases(
    state: OldState, producer: ProducerModel, clusters: Mapping[str, str], found: _Collector
) -> None:
    """Databases and users by cluster + name; the old state knows the cluster only by id."""
    known: list[OldResource] = []
    for r in state.resources:
        if r.type not in (DATABASE, USER):
            continue
        cluster_id = str(r.attributes["cluster_id"])
        if cluster_id in clusters:
            known.append(r)
            continue
        found.error(
            "unknown_cluster",
            r.address,
            f"{kinds.noun(r.type)} {_q(r.label)} is on cluster id {cluster_id}, which is not a database "
            "cluster of this account: cannot tell whether a manifest declares it",
            "check the token (is this the old root's account?) or the cluster; a database on a "
            "cluster that is gone can be dropped from the old root's state",
        )
    index = {
        rtype: _by(known, rtype, lambda r: (clusters[str(r.attributes["cluster_id"])], r.label))
        for rtype in (DATABASE, USER)
    }
    for db in producer.databases:
        entry = db_entry(db)
        for rtype, name, address in (
            (DATABASE, db.name, f"{DATABASE}.{entry.db_address}"),
            (USER, db.user, f"{USER}.{entry.user_address}"),
        ):
            _take_database(index[rtype].get((db.cluster, name), []), db, rtype, name, address, found)


def _take_database(
    matches: Sequence[OldResource], db: Database, rtype: str, name: str, address: str, found: _Collector
) -> None:
    if not matches:
        found.absent.append(Absent(address, rtype, name, db.source))
        return
    if len(matches) > 1:
        found.error(
            "ambiguous",
            matches[0].address,
            f"{len(matches)} resources of the old root are {kinds.noun(rtype)} {_q(name)} on cluster "
            f"{_q(db.cluster)} ({', '.join(m.address for m in matches)})",
            "remove the duplicate from the old root's state (`terraform state rm`), then run adopt again",
        )
        return
    old = matches[0]
    import_id = kinds.KINDS[rtype].import_id_of(cluster_id=str(old.attributes["cluster_id"]), name=name)
    found.taken.append(TakenOver(old, address, import_id, name))


def _check_whole_resources(state: OldState, found: _Collector) -> None:
    """``removed { from }`` takes a resource, never one instance: all its instances go or none."""
    taken = {t.old.address for t in found.taken}
    groups: dict[str, list[OldResource]] = defaultdict(list)
    for r in state.resources:
        groups[r.resource_address].append(r)
    for resource, members in sorted(groups.items()):
        kept = [r.address for r in members if r.address not in taken]
        if kept and len(kept) < len(members):
            found.error(
                "partial_resource",
                resource,
                f"only some instances of {resource} are taken over; a `removed` block forgets the "
                f"whole resource, so the old root would also forget {', '.join(kept)}, which then "
                "nobody manages",
                "take them all over, or first split the resource in the old root (separate "
                "resource blocks and `moved` blocks) so the taken-over ones stand alone",
            )


def _check_old_root(state: OldState, found: _Collector) -> None:
    """What the operator has to do in the old root before its ``removed`` file applies."""
    taken = {t.old.address: t for t in found.taken}
    resources = {t.old.resource_address for t in found.taken}
    for r in state.resources:
        if r.address in taken:
            if r.tainted:
                found.warn(
                    "tainted",
                    r.address,
                    "is tainted in the old root (it planned to replace it); infra-apply imports it as it is",
                )
            if r.module:
                found.warn(
                    "in_module",
                    r.address,
                    f"its resource block is in module {'.'.join(s.name for s in r.module)}'s source: "
                    "deleting it there affects every other caller of that module",
                )
            continue
        needs = sorted(set(r.dependencies) & resources)
        if needs:
            found.warn(
                "depends_on_taken",
                r.address,
                f"stays in the old root but refers to {', '.join(needs)}, which it forgets",
                "replace those references (a literal id, or a data source) before applying the removed file",
            )
    for address in state.deposed:
        found.warn(
            "deposed",
            address,
            "has a deposed object (a replacement half done in the old root): left to the old root",
        )


# --- the report as text -----------------------------------------------------------------------


def format_text(t: Takeover) -> str:
    lines = [f"takeover for producer {t.producer} from {visible(t.where)}"]
    done = "taken over" if t.ok else "to take over once the errors below are fixed"
    lines.append(f"{done} ({len(t.taken_over)}):")
    lines += [
        f"  {x.old.address} -> {x.address}  ({_what(x.old.type, x.name)}, import id {_q(x.import_id)})"
        for x in t.taken_over
    ]
    lines.append(f"left in the old root, not declared by producer {t.producer} ({len(t.left)}):")
    lines += [f"  {r.address}  ({kinds.noun(r.type)} {_q(r.label)})" for r in t.left]
    lines.append(f"declared but not in the old state: the next apply creates them ({len(t.absent)}):")
    lines += [f"  {a.address}  ({_what(a.type, a.name)})" for a in t.absent]
    if t.ignored:
        lines.append(f"other resources of the old root, untouched ({len(t.ignored)}):")
        lines += [f"  {a}" for a in t.ignored]
    if t.findings:
        lines.append(f"problems ({len(t.errors)} error(s), {len(t.findings) - len(t.errors)} warning(s)):")
        lines += ["  " + f.format() for f in t.findings]
    if not t.ok:
        lines.append("nothing written: fix the errors above, then run adopt again")
    return "\n".join(lines) + "\n"


# --- the files --------------------------------------------------------------------------------


class TakeoverRefused(InfraApplyError):
    """The takeover has errors (a forced replacement, a partial resource...): write nothing."""


def _require_ok(t: Takeover) -> None:
    if not t.ok:
        first = t.errors[0]
        raise TakeoverRefused(
            f"{len(t.errors)} problem(s) block the takeover, first: {first.address}: "
            f"{visible(first.message)}",
            path=t.where,
            rule=RULE,
        )


def import_block(address: str, import_id: str) -> str:
    return hcl.render("_import.j2", address=address, id=import_id)


def removed_block(resource_address: str) -> str:
    return hcl.render("_removed.j2", address=resource_address)


def import_file(t: Takeover) -> str:
    """infra-apply's imports: the next apply of the producer takes these over, replacing nothing."""
    _require_ok(t)
    imports = [
        {"what": _what(x.old.type, x.name), "old": x.old.address, "address": x.address, "id": x.import_id}
        for x in t.taken_over
    ]
    return hcl.render("takeover-imports.tf.j2", producer=t.producer, imports=imports)


def removed_file(t: Takeover) -> str:
    """For the OLD root: forget what infra-apply took over, destroying nothing (Terraform >= 1.7).

    Applying it needs the listed resource blocks (and references to them) deleted from the old
    root's configuration first; Terraform refuses a ``removed`` block whose resource still exists.
    """
    _require_ok(t)
    return hcl.render("removed.tf.j2", producer=t.producer, addresses=t.removed_from())
