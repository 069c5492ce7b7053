"""Never create what exists: before anything is applied, every resource a plan would *create*
is looked up in the account (droplets and firewalls by name, databases and users in their
cluster), and a producer with an empty state is checked for droplets tagged for it.

Each hit is a located error (the manifest line declaring it) naming the existing thing and the
command that takes it over; nothing is applied. The one exception is infra-apply's own work
lost from this state: a droplet whose creation a run of this working copy started (the journal
written before every apply lists its address and name, and the droplet was created while that
apply ran, carrying infra-apply's tags) but that state does not hold. It is imported
by the next plan/apply, never created twice. A teammate's stale state cannot match: the journal
lives in this working copy only, never in the account or the producer's tags.

A droplet the provider left *tainted* (an apply interrupted while DigitalOcean was still
bringing it up) is untainted when the account shows it active with the declared region, size
and image; otherwise the plan's replacement stands and the guard's refusal says why.

The account is read with concurrent calls (droplets, firewalls and clusters at once, then each
declared cluster's databases and users at once), started before ``terraform plan`` and read
after it, so the lookups overlap the plan instead of adding to it. In a plan or apply run the
lists come from the run's ``accounts.Accounts``: pre-flight started them with the rest of the
catalogue, so they are asked once per run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra_apply import kinds, remedy
from infra_apply.cloud.do_api import AccountDroplet, account_droplet
from infra_apply.errors import Problem, ValidationFailed
from infra_apply.manifests.manifest import Manifest
from infra_apply.manifests.model import Droplet, ProducerModel
from infra_apply.plan.managed import is_managed, is_producers, prior_resources
from infra_apply.plan.parse import JsonObject
from infra_apply.render.module import PUBLIC_SUFFIX, db_entry
from infra_apply.render.output import Rendered

if TYPE_CHECKING:
    from infra_apply.cloud.preflight import Source

RULE = "exists"
JOURNAL = "infra-apply-journal.json"
RECOVERED = "infra-apply-recovered.tf"
# DigitalOcean stamps created_at with its own clock: a droplet stamped a little before the
# journal (a local clock running fast) is still this run's.
CLOCK_SKEW = timedelta(minutes=5)
# An apply killed outright (SIGKILL) never says when it ended; its orphaned Terraform finishes
# its creates well within this. A droplet made later is someone else's.
LONGEST_APPLY = timedelta(hours=1)

DROPLET = kinds.DROPLET.type
FIREWALL = kinds.FIREWALL.type
DATABASE = kinds.DATABASE.type
USER = kinds.USER.type
# what the account may already hold: the kinds adopt can import, by noun
_KIND = {k.type: k.noun for k in kinds.TAKEOVER}


class ExistsRefused(ValidationFailed):
    """The plan would create what the account already holds: nothing is applied."""

    def __init__(self, problems: list[Problem], where: str) -> None:
        super().__init__(problems)
        self.where = where
        self.message = f"{len(problems)} error(s): the plan would create what already exists in {where}"


# --- what the account holds -------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    label: str
    droplets: tuple[AccountDroplet, ...] = ()
    firewalls: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # name -> ids
    clusters: Mapping[str, str] = field(default_factory=dict)  # id -> name
    dbs: Mapping[str, frozenset[str]] = field(default_factory=dict)  # cluster id -> names
    users: Mapping[str, frozenset[str]] = field(default_factory=dict)  # cluster id -> names
    # cluster name -> its trusted sources now, (type, value) each (GET /v2/databases/$ID/firewall)
    rules: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def named(self, name: str) -> list[AccountDroplet]:
        return [d for d in self.droplets if d.name == name]


def fetch(source: Source, clusters: Iterable[str]) -> Account:
    """The account's droplets, firewalls and the databases and users of ``clusters`` (names),
    the independent calls made at once."""
    wanted = set(clusters)
    with ThreadPoolExecutor(max_workers=8) as pool:
        droplets = pool.submit(source.droplets)
        firewalls = pool.submit(source.firewalls)
        found = pool.submit(source.databases) if wanted else None
        ids = {str(c.get("id")): str(c.get("name")) for c in (found.result() if found else [])}
        ids = {i: n for i, n in ids.items() if n in wanted}
        dbs = {i: pool.submit(source.database_dbs, i) for i in ids}
        users = {i: pool.submit(source.database_users, i) for i in ids}
        rules = {i: pool.submit(source.database_firewall, i) for i in ids}
        by_name: dict[str, list[str]] = {}
        for fw in firewalls.result():
            by_name.setdefault(str(fw.get("name")), []).append(str(fw.get("id")))
        return Account(
            source.label,
            tuple(account_droplet(d) for d in droplets.result()),
            {n: tuple(v) for n, v in by_name.items()},
            ids,
            {i: frozenset(str(x.get("name")) for x in f.result()) for i, f in dbs.items()},
            {i: frozenset(str(x.get("name")) for x in f.result()) for i, f in users.items()},
            {
                ids[i]: tuple(sorted((str(r.get("type")), str(r.get("value"))) for r in f.result()))
                for i, f in rules.items()
            },
        )


def start(source: Source | None, clusters: Iterable[str]) -> Future[Account] | None:
    """Look the account up in the background (while Terraform plans); ``source``: the prepared
    producer's (``Account.source``: with the run's accounts, the lists pre-flight already asked
    for); None when there is none (no token: Terraform could not create anything either)."""
    if source is None:
        return None
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(fetch, source, tuple(clusters))
    pool.shutdown(wait=False)
    return future


# --- the journal --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Journal:
    """What an apply of this working copy set out to create, written before it started."""

    started_at: datetime
    creates: Mapping[str, str]  # droplet address -> name
    ended_at: datetime | None = None  # when the apply stopped (None: killed outright)

    def covers(self, created: datetime) -> bool:
        """Whether a droplet created at ``created`` can be this apply's."""
        until = self.ended_at or self.started_at + LONGEST_APPLY
        return self.started_at - CLOCK_SKEW <= created <= until + CLOCK_SKEW


def write_journal(folder: Path, raw: JsonObject, now: datetime) -> None:
    """Before an apply: the droplets its saved plan creates (nothing when it creates none)."""
    from infra_apply.runtime.fs import write_private

    creates = {c.address: c.name for c in planned_creates(raw) if c.type == DROPLET}
    if not creates:
        return
    doc = {"started_at": _stamp(now), "creates": creates}
    write_private(folder / JOURNAL, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


def end_journal(folder: Path, now: datetime) -> None:
    """After an apply that stopped or failed: when it ended (what it created came before)."""
    from infra_apply.runtime.fs import TEXT_LIMIT, read_bounded, write_private

    path = folder / JOURNAL
    try:
        doc = json.loads(read_bounded(path, TEXT_LIMIT))
    except (OSError, ValueError):
        return
    if isinstance(doc, dict):
        doc["ended_at"] = _stamp(now)
        write_private(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clear_journal(folder: Path) -> None:
    """After an apply that went through: state holds everything it created."""
    (folder / JOURNAL).unlink(missing_ok=True)


def read_journal(folder: Path) -> Journal | None:
    from infra_apply.runtime.fs import TEXT_LIMIT, read_bounded

    try:
        doc = json.loads(read_bounded(folder / JOURNAL, TEXT_LIMIT))
        started = _timestamp(str(doc["started_at"]))
        creates = {str(k): str(v) for k, v in dict(doc["creates"]).items()}
        ended = _timestamp(str(doc["ended_at"])) if doc.get("ended_at") else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no journal (or not one we wrote): nothing is vouched for
    return None if started is None else Journal(started, creates, ended)


def _timestamp(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


# --- the review (pure) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Create:
    type: str
    address: str  # the instance address (what an import block names)
    base: str  # without the index
    name: str
    cluster_id: str | None = None


@dataclass(frozen=True)
class Import:
    address: str
    id: str
    name: str


@dataclass(frozen=True)
class Review:
    problems: tuple[Problem, ...] = ()
    imports: tuple[Import, ...] = ()  # this state's own lost droplets
    untaint: tuple[str, ...] = ()  # tainted droplets the account shows healthy
    notes: tuple[str, ...] = ()  # why a tainted droplet stays tainted

    @property
    def settles(self) -> bool:
        """Whether acting on it changes the plan (so it must be made again)."""
        return bool(self.imports or self.untaint)


def planned_creates(raw: JsonObject) -> list[Create]:
    found = []
    for rc in _list(raw.get("resource_changes")):
        if rc.get("mode") != "managed" or rc.get("type") not in _KIND:
            continue
        change = _dict(rc.get("change"))
        if _list(change.get("actions")) != ["create"]:
            continue  # a replacement's new object takes the old one's place
        after = _dict(change.get("after"))
        name = after.get("name")
        if not isinstance(name, str):
            continue
        cluster = after.get("cluster_id")
        address = str(rc.get("address"))
        base = f"{rc.get('type')}.{rc.get('name')}"
        found.append(
            Create(str(rc["type"]), address, base, name, cluster if isinstance(cluster, str) else None)
        )
    return found


def review(
    raw: JsonObject,
    producer: ProducerModel,
    rendered: Rendered,
    manifests: Mapping[str, Manifest],
    account: Account,
    journal: Journal | None,
    keep: Sequence[str],
) -> Review:
    """What the saved plan ``raw`` would create that ``account`` already holds; the remedies
    printed keep the flags ``keep`` (``Account.remedy_flags``)."""
    where = _Locator(producer, rendered, manifests)
    adopt = _remedy(producer.name, keep)
    problems: list[Problem] = []
    imports: list[Import] = []
    for c in planned_creates(raw):
        if c.type == DROPLET:
            live = account.named(c.name)
            own = _own(live, c, journal)
            if own is not None:
                imports.append(Import(c.address, own.id, c.name))
                continue
            ids = [d.id for d in live]
        elif c.type == FIREWALL:
            ids = list(account.firewalls.get(c.name, ()))
        else:
            table = account.dbs if c.type == DATABASE else account.users
            held = table.get(c.cluster_id or "", frozenset())
            held_id = kinds.KINDS[c.type].import_id_of(cluster_id=c.cluster_id or "", name=c.name)
            ids = [held_id] if c.name in held else []
        if ids:
            problems.append(where.problem(c, _exists(c, ids, account, adopt)))
    if not _applied_here(raw):
        taken = {c.name for c in planned_creates(raw)} | set(_imported(raw).values())
        problems += _tagged_without_state(producer, account, where, adopt, taken)
    untaint, notes = _tainted(raw, producer, rendered, account)
    return Review(tuple(sorted(set(problems), key=Problem.sort_key)), tuple(imports), untaint, notes)


def _exists(c: Create, ids: Sequence[str], account: Account, adopt: _Adopt) -> str:
    kind = _KIND[c.type]
    where = ""
    if c.cluster_id is not None:
        where = f" in cluster {account.clusters.get(c.cluster_id, c.cluster_id)!r}"
    which = f"id {ids[0]}" if len(ids) == 1 else f"{len(ids)} of them: ids {', '.join(ids)}"
    return (
        f"{kind} {c.name!r} already exists{where} in {account.label} ({which}); the plan would create "
        f"a second one{' and fail' if c.type in (DATABASE, USER) else ''}: take it over with {adopt.by_name} "
        f"(where another Terraform root manages it: {adopt.from_state})"
    )


def _own(live: Sequence[AccountDroplet], c: Create, journal: Journal | None) -> AccountDroplet | None:
    """The one droplet named like ``c`` that this working copy's interrupted apply created."""
    if journal is None or journal.creates.get(c.address) != c.name:
        return None
    ours = [
        d
        for d in live
        if is_managed(d.tags)
        and (created := _timestamp(d.created_at)) is not None
        and journal.covers(created)
    ]
    return ours[0] if len(ours) == 1 and len(live) == 1 else None


def _imported(raw: JsonObject) -> dict[str, str]:
    """Address -> name of what the plan imports (``adopt``'s import blocks)."""
    found = {}
    for rc in _list(raw.get("resource_changes")):
        change = _dict(rc.get("change"))
        if change.get("importing") is not None:
            found[str(rc.get("address"))] = str(_dict(change.get("after")).get("name"))
    return found


def _applied_here(raw: JsonObject) -> bool:
    """Whether state holds something an apply put there: the resources a plan imports (adopt's
    import blocks) are in its prior state before any apply, so they do not count."""
    from infra_apply.plan.drift import applied  # after the plan: imported while it runs

    if not applied(raw):
        return False
    imported = _imported(raw)
    return bool(_list(raw.get("resource_drift"))) or any(
        str(r.get("address")) not in imported for r in prior_resources(raw)
    )


def _tagged_without_state(
    producer: ProducerModel, account: Account, where: _Locator, adopt: _Adopt, reported: set[str]
) -> list[Problem]:
    """No state here, yet the account holds droplets tagged for the producer (drift's "no state
    here" case): each one not already reported by name (or imported) is an error of its own."""
    declared = {d.name for d in producer.droplets}
    found = []
    for d in account.droplets:
        if is_producers(d.tags, producer.name) and d.name not in reported:
            if d.name in declared:
                how = f"take them over with {adopt.by_name} (or, from the old state, {adopt.from_state})"
            else:
                how = (
                    f"no manifest of {producer.name} declares that name, so adopt cannot take it over: "
                    "apply from the state that holds it (remote state: docs/runbooks.md, "
                    '"Second machine and CI"), '
                    "or destroy it by hand if it is a leftover"
                )
            found.append(
                where.producer_problem(
                    f"producer {producer.name} has no state here, yet droplet {d.name!r} (id {d.id}) "
                    f"is tagged for it in {account.label}: applying would create its fleet again; {how}"
                )
            )
    return found


def _tainted(
    raw: JsonObject, producer: ProducerModel, rendered: Rendered, account: Account
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    by_address = {a: producer.droplet(n) for n, a in rendered.droplet_addresses.items()}
    live = {d.id: d for d in account.droplets}
    untaint, notes = [], []
    for rc in _list(raw.get("resource_changes")):
        if rc.get("type") != DROPLET or rc.get("action_reason") != "replace_because_tainted":
            continue
        address = str(rc.get("address"))
        before = _dict(_dict(rc.get("change")).get("before"))
        declared = by_address.get(f"{DROPLET}.{rc.get('name')}")
        found = live.get(str(before.get("id")))
        why = _unhealthy(found, declared, account.label)
        if why is None:
            untaint.append(address)
        else:
            notes.append(f"{address} is tainted (an apply was interrupted while it came up) and {why}")
    return tuple(untaint), tuple(notes)


def _unhealthy(live: AccountDroplet | None, declared: Droplet | None, label: str) -> str | None:
    """Why a tainted droplet cannot be kept as it is; None when it can."""
    if live is None:
        return f"is not in {label} any more: the replacement creates it"
    if declared is None:
        return "no manifest declares it"
    if live.status != "active":
        return f"{label} shows it {live.status or 'in no known status'}, not active"
    for what, have, want in (("region", live.region, declared.region), ("size", live.size, declared.size)):
        if have.lower() != want.lower():
            return f"its {what} is {have}, the manifest says {want}"
    if live.image and live.image != declared.image:
        return f"its image is {live.image}, the manifest says {declared.image}"
    return None


@dataclass(frozen=True)
class _Locator:
    producer: ProducerModel
    rendered: Rendered
    manifests: Mapping[str, Manifest]

    def problem(self, c: Create, message: str) -> Problem:
        path, line, col = self._where(c)
        return Problem(path, line, col, "error", RULE, message)

    def producer_problem(self, message: str) -> Problem:
        first = self.producer.droplets[0] if self.producer.droplets else None
        if first is not None:
            path, line, col = self._droplet(first)
        else:
            path, line, col = (self.producer.sources or ("",))[0], 1, 1
        return Problem(path, line, col, "error", RULE, message)

    def _where(self, c: Create) -> tuple[str, int, int]:
        # a droplet's public firewall is located at its droplet, like its own firewall
        suffix = c.base.split(".", 1)[1].removesuffix(PUBLIC_SUFFIX)
        for d in self.producer.droplets:
            if self.rendered.droplet_addresses.get(d.name, "").split(".", 1)[-1] == suffix:
                return self._droplet(d)
        for db in self.producer.databases:
            entry = db_entry(db)
            key = {DATABASE: (entry.db_address, "name"), USER: (entry.user_address, "user")}.get(c.type)
            if key is not None and key[0] == suffix:
                return self._at(db.source, ("database", key[1]))
        return (self.producer.sources or ("",))[0], 1, 1

    def _droplet(self, d: Droplet) -> tuple[str, int, int]:
        m = self.manifests.get(d.source)
        if m is None or d.gpu:
            return self._at(d.source, ("service", "gpu"))
        entries = m.data.get("droplets") or []
        index = next((i for i, e in enumerate(entries) if e.get("name") == d.name), 0)
        return self._at(d.source, ("droplets", index, "name"))

    def _at(self, source: str, key: tuple[str | int, ...]) -> tuple[str, int, int]:
        m = self.manifests.get(source)
        line, col = m.locate(key) if m is not None else (1, 1)
        return source, line, col


@dataclass(frozen=True)
class _Adopt:
    """The two ways to take over what exists: by name, or from the old root's state."""

    by_name: str
    from_state: str


def _remedy(producer: str, keep: Sequence[str]) -> _Adopt:
    return _Adopt(
        remedy.for_producer("adopt", producer, keep=keep),
        remedy.for_producer("adopt", producer, "--from-state", "FILE", keep=keep),
    )


def _dict(value: object) -> JsonObject:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


# --- acting on it -------------------------------------------------------------------------------


def recovered_file(imports: Sequence[Import]) -> str:
    """Import blocks for this state's lost droplets (in the working copy only: never reviewed
    HCL, and gone once state holds them)."""
    from infra_apply.plan.takeover import import_block

    blocks = [import_block(i.address, i.id) for i in sorted(imports, key=lambda i: i.address)]
    return "# Written by infra-apply: droplets an interrupted apply of this state created.\n\n" + "\n".join(
        blocks
    )


def act(
    folder: Path, r: Review, untaint: Callable[[str], None], say: Callable[[str], None], producer: str
) -> None:
    """Write the lost droplets' imports into the working copy and untaint the healthy ones."""
    from infra_apply.runtime.fs import write_private

    if r.imports:
        write_private(folder / RECOVERED, recovered_file(r.imports).encode("utf-8"))
        for i in r.imports:
            say(
                f"{producer}: droplet {i.name!r} (id {i.id}) was created by an interrupted apply of "
                f"this state but is missing from it: importing it into {i.address}, not creating it again"
            )
    for address in r.untaint:
        untaint(address)
        say(
            f"{producer}: {address} was left tainted by an interrupted apply; the account shows it "
            "active with the declared settings: untainted (terraform untaint), it is kept"
        )


def refuse(r: Review, where: str) -> None:
    """Stop when ``r`` found what exists; ``where``: the account's label."""
    if r.problems:
        raise ExistsRefused(list(r.problems), where)
