"""exists.py's pure core on synthetic plans, and its lookups against the API stand-in: which
existing thing is refused, which lost droplet is this state's own, which tainted one is kept."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from infra_apply.cloud import do_api, preflight
from infra_apply.cloud.do_api import AccountDroplet
from infra_apply.manifests.model import Database, Droplet, ProducerModel
from infra_apply.plan import exists
from infra_apply.render.output import Rendered
from tests.do_standin import TOKEN, Account, database_json

DNS = Droplet(name="com.uvlava.dns", producer="quinn", source="@quinn/.infra.yaml", size="s-1vcpu-1gb")
AUTH = Database(
    "uvlava-pg", "auth", "auth_app", "auth-svc", "production", "quinn", "@quinn/auth-svc/.infra.yaml"
)
QUINN = ProducerModel("quinn", (DNS,), (AUTH,), ("@quinn/.infra.yaml",))
RENDERED = Rendered("quinn", {}, droplet_addresses={DNS.name: "digitalocean_droplet.dns"})
STARTED = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
OURS = ("managed-by:infra-apply", "producer:quinn", "role:dns")


def create(rtype: str, name: str, address: str, **after: Any) -> dict[str, Any]:
    return {
        "address": address,
        "mode": "managed",
        "type": rtype,
        "name": address.split(".", 1)[1],
        "change": {"actions": ["create"], "after": {"name": name, **after}},
    }


def plan(*changes: dict[str, Any], state: bool = True) -> dict[str, Any]:
    prior = {
        "values": {"root_module": {"resources": [{"mode": "managed", "type": "digitalocean_database_db"}]}}
    }
    return {"resource_changes": list(changes), **({"prior_state": prior} if state else {})}


def droplet(
    did: str, name: str = DNS.name, tags: tuple[str, ...] = (), created: datetime = STARTED
) -> AccountDroplet:
    return live(did, name, tags=tags, created_at=created.strftime("%Y-%m-%dT%H:%M:%SZ"))


def live(did: str, name: str = DNS.name, **fields: Any) -> AccountDroplet:
    base: dict[str, Any] = {"region": "nyc3", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64"}
    base |= {"public_ipv4": None, "private_ipv4": None, "tags": (), "status": "active"}
    return AccountDroplet(did, name, **(base | fields))


def review(
    raw: dict[str, Any], account: exists.Account, journal: exists.Journal | None = None
) -> exists.Review:
    return exists.review(raw, QUINN, RENDERED, {}, account, journal, ("--sandbox",))


DNS_CREATE = create("digitalocean_droplet", DNS.name, "digitalocean_droplet.dns")
JOURNAL = exists.Journal(STARTED, {"digitalocean_droplet.dns": DNS.name})


def test_a_droplet_under_a_declared_name_is_refused_with_the_adopt_command() -> None:
    r = review(plan(DNS_CREATE), exists.Account("the sandbox account", (droplet("7"),)))
    [p] = r.problems
    assert (p.path, p.level, p.rule) == ("@quinn/.infra.yaml", "error", "exists")
    assert "droplet 'com.uvlava.dns' already exists in the sandbox account (id 7)" in p.message
    assert "infra-apply adopt --producer quinn --sandbox" in p.message
    assert "infra-apply adopt --producer quinn --from-state FILE --sandbox" in p.message
    assert not r.imports


def test_databases_and_users_are_looked_up_in_their_cluster() -> None:
    raw = plan(
        create(
            "digitalocean_database_db", "auth", "digitalocean_database_db.uvlava-pg__auth", cluster_id="c1"
        ),
        create(
            "digitalocean_database_user",
            "auth_app",
            "digitalocean_database_user.uvlava-pg__auth_app",
            cluster_id="c1",
        ),
    )
    elsewhere = exists.Account("a", clusters={"c2": "other"}, dbs={"c2": frozenset({"auth"})})
    assert review(raw, elsewhere).problems == ()
    here = exists.Account(
        "a",
        clusters={"c1": "uvlava-pg"},
        dbs={"c1": frozenset({"auth"})},
        users={"c1": frozenset({"auth_app"})},
    )
    messages = [p.message for p in review(raw, here).problems]
    assert any(
        "database 'auth' already exists in cluster 'uvlava-pg' in a (id c1,auth)" in m for m in messages
    )
    assert any("database user 'auth_app' already exists" in m for m in messages)


def test_a_lost_droplet_is_imported_only_with_this_working_copys_journal() -> None:
    lost = droplet("9", tags=OURS, created=STARTED + timedelta(seconds=30))
    account = exists.Account("a", (lost,))
    r = review(plan(DNS_CREATE), account, JOURNAL)
    assert r.problems == () and r.imports == (exists.Import("digitalocean_droplet.dns", "9", DNS.name),)
    # a teammate's stale state: the same tags, but no journal here vouches for it
    assert review(plan(DNS_CREATE), account).imports == ()
    assert len(review(plan(DNS_CREATE), account).problems) == 1


@pytest.mark.parametrize(
    "found",
    [
        droplet("9", tags=OURS, created=STARTED - timedelta(hours=1)),  # older than the apply
        droplet("9", tags=()),  # not made from infra-apply's HCL
        droplet("9", tags=OURS, created=STARTED + timedelta(hours=2)),  # long after a killed apply
    ],
)
def test_a_droplet_the_journal_cannot_vouch_for_is_refused(found: AccountDroplet) -> None:
    r = review(plan(DNS_CREATE), exists.Account("a", (found,)), JOURNAL)
    assert r.imports == () and len(r.problems) == 1


def test_a_droplet_made_after_the_apply_ended_is_not_its_own() -> None:
    """A failed apply's journal stays; a teammate's apply next day makes the droplet again."""
    ended = exists.Journal(STARTED, JOURNAL.creates, STARTED + timedelta(minutes=3))
    later = droplet("9", tags=OURS, created=STARTED + timedelta(minutes=30))
    assert review(plan(DNS_CREATE), exists.Account("a", (later,)), ended).imports == ()
    during = droplet("9", tags=OURS, created=STARTED + timedelta(minutes=2))
    assert len(review(plan(DNS_CREATE), exists.Account("a", (during,)), ended).imports) == 1


def test_two_droplets_under_the_name_are_never_imported() -> None:
    twins = (droplet("9", tags=OURS), droplet("10", tags=OURS))
    r = review(plan(DNS_CREATE), exists.Account("a", twins), JOURNAL)
    assert r.imports == () and "2 of them: ids 9, 10" in r.problems[0].message


def test_an_empty_state_with_droplets_tagged_for_the_producer_is_refused() -> None:
    other = droplet("11", name="com.uvlava.quinn.old", tags=OURS)
    foreign = droplet("12", name="com.uvlava.ct.x", tags=("managed-by:infra-apply", "producer:ct"))
    r = review(plan(state=False), exists.Account("a", (other, foreign)))
    [p] = r.problems
    assert "producer quinn has no state here, yet droplet 'com.uvlava.quinn.old' (id 11)" in p.message
    assert review(plan(state=True), exists.Account("a", (other,))).problems == ()


def test_a_state_holding_only_adopts_imports_is_still_empty() -> None:
    """After ``adopt`` the plan's prior state holds the droplets it imports, yet nothing was
    applied here: a droplet tagged for the producer under a name no manifest declares (adopt cannot
    take it over) still stops the apply, whose create would bill a second one, and its remedy is
    not adopt again."""
    imported = {
        "address": "digitalocean_droplet.dns",
        "mode": "managed",
        "type": "digitalocean_droplet",
        "name": "dns",
        "change": {"actions": ["no-op"], "importing": {"id": "7"}, "after": {"name": DNS.name}},
    }
    prior = {"values": {"root_module": {"resources": [{"mode": "managed", **imported}]}}}
    raw = {"resource_changes": [imported], "prior_state": prior}
    old = droplet("11", name="com.uvlava.quinn.old", tags=OURS)
    r = review(raw, exists.Account("a", (droplet("7", tags=OURS), old)))
    [p] = r.problems
    assert "producer quinn has no state here, yet droplet 'com.uvlava.quinn.old' (id 11)" in p.message
    assert "no manifest of quinn declares that name, so adopt cannot take it over" in p.message
    # once something was applied the state is the producer's own: nothing to say
    applied = {"values": {"root_module": {"resources": [{"mode": "managed", "address": "x.y"}]}}}
    assert review({**raw, "prior_state": applied}, exists.Account("a", (old,))).problems == ()


def tainted(did: str) -> dict[str, Any]:
    return {
        "address": "digitalocean_droplet.dns",
        "mode": "managed",
        "type": "digitalocean_droplet",
        "name": "dns",
        "action_reason": "replace_because_tainted",
        "change": {"actions": ["delete", "create"], "before": {"id": did}, "after": {"name": DNS.name}},
    }


def test_a_tainted_droplet_is_untainted_only_when_active_with_the_declared_settings() -> None:
    healthy = droplet("5")
    assert review(plan(tainted("5")), exists.Account("a", (healthy,))).untaint == (
        "digitalocean_droplet.dns",
    )
    new = live("5", status="new")
    r = review(plan(tainted("5")), exists.Account("a", (new,)))
    assert r.untaint == () and "shows it new, not active" in r.notes[0]
    r = review(plan(tainted("5")), exists.Account("a", ()))
    assert r.untaint == () and "is not in a any more" in r.notes[0]


def test_the_journal_round_trips_and_is_cleared(tmp_path: Path) -> None:
    exists.write_journal(tmp_path, plan(DNS_CREATE), STARTED)
    assert exists.read_journal(tmp_path) == JOURNAL
    assert (tmp_path / exists.JOURNAL).stat().st_mode & 0o777 == 0o600
    exists.end_journal(tmp_path, STARTED + timedelta(minutes=3))
    assert exists.read_journal(tmp_path) == exists.Journal(
        STARTED, JOURNAL.creates, STARTED + timedelta(minutes=3)
    )
    exists.clear_journal(tmp_path)
    assert exists.read_journal(tmp_path) is None


@pytest.fixture
def api(httpserver: HTTPServer) -> Iterator[HTTPServer]:
    httpserver.no_handler_status_code = 418
    yield httpserver


def test_the_live_lookup_reads_the_documented_endpoints(api: HTTPServer) -> None:
    made = {
        "id": 3164444,
        "name": DNS.name,
        "status": "active",
        "created_at": "2026-12-06T12:00:30Z",
        "tags": list(OURS),
        "region": {"slug": "nyc3"},
        "size_slug": "s-1vcpu-1gb",
        "image": {"slug": "ubuntu-24-04-x64"},
    }
    account = Account(
        droplets=[made],
        firewalls=[{"id": "fb6045f1", "name": "fw-dns", "droplet_ids": [], "tags": []}],
        dbs={"uvlava-pg": ["auth"]},
        users={"uvlava-pg": ["auth_app"]},
        page_size=1,
    )
    account.serve(api)
    source = preflight.LiveSource(do_api.Client(TOKEN, api.url_for("")))
    found = exists.fetch(source, {"uvlava-pg"})
    cid = database_json("uvlava-pg")["id"]
    assert found.named(DNS.name) == [live("3164444", tags=OURS, created_at="2026-12-06T12:00:30Z")]
    assert found.firewalls == {"fw-dns": ("fb6045f1",)}
    assert (found.dbs, found.users) == ({cid: frozenset({"auth"})}, {cid: frozenset({"auth_app"})})
