"""plan, apply and gpu up with remote state: pre-flight (the account, the token) comes before anything
that talks to the state bucket, the GPU lease store first among them.

The DigitalOcean API and the lease store are stand-ins that record when they are reached; the
rest is the real verb on the example tree (live mode, ``[state]`` in a bucket nothing reaches).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from infra_apply.cloud import preflight
from infra_apply.cloud.account import LiveAccount
from infra_apply.cloud.do_api import ApiError
from infra_apply.commands import apply, gpu, plan
from infra_apply.errors import InfraApplyError
from infra_apply.runtime.workcopy import Context
from tests.commands.fakes import FakeTerminal

REMOTE = """
[state]
backend = "s3"
bucket = "tfstate-never-reached"
endpoint = "http://127.0.0.1:9"
region = "us-east-1"
key_prefix = "infra-apply"
"""
Verb = Callable[[Context], object]
VERBS: dict[str, Verb] = {
    "plan": lambda ctx: plan.run(ctx, ["ct"]),
    "apply": lambda ctx: apply.run(ctx, "ct", FakeTerminal([]).terminal()),
    "gpu up": lambda ctx: gpu.up(ctx, "com.uvlava.ct.gpu", FakeTerminal([]).terminal()),
}


@pytest.fixture
def ctx(example: Path) -> Context:
    root = example / "tree"
    with (root / "infra-apply.toml").open("a") as f:
        f.write(REMOTE)
    env = {
        "INFRA_APPLY_STATE_DIR": str(example / "state"),
        "DIGITALOCEAN_TOKEN": "FAKE-do-token_preflight-order",
        "HOME": str(example / "home"),  # no ~/.vault/do_pat_* of the machine's user
    }
    mesh = example / "mesh-hosts.json"
    return Context(root, example / "generated", LiveAccount(), mesh, env, lambda _: None)


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What was reached, in order; the lease store (the state bucket) ends the run when reached."""
    seen: list[str] = []

    def lease_store(ctx: Context, producer: str) -> object:
        seen.append(f"lease store {producer}")
        raise InfraApplyError("stop: the lease store was reached")

    monkeypatch.setattr("infra_apply.gpu.leases_view.lease_store", lease_store)
    monkeypatch.setattr("infra_apply.commands.gpu.lease_store", lease_store)
    return seen


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_a_refused_token_stops_the_run_before_the_lease_store(
    verb: str, ctx: Context, events: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def account(source: object) -> object:
        events.append("pre-flight: account")
        raise ApiError("DigitalOcean API: Unable to authenticate you", status=401)

    monkeypatch.setattr(preflight.LiveSource, "account", account)
    with pytest.raises(InfraApplyError, match="pre-flight: the DigitalOcean account refused the token"):
        VERBS[verb](ctx)
    assert events == ["pre-flight: account"]


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_the_leases_are_read_once_pre_flight_passed(
    verb: str, ctx: Context, events: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fetch(source: object, wanted: object, say: object) -> object:
        events.append("pre-flight")
        return None

    monkeypatch.setattr(preflight, "fetch", fetch)
    monkeypatch.setattr(preflight, "check", lambda catalogue, wanted: [])
    with pytest.raises(InfraApplyError, match="stop: the lease store was reached"):
        VERBS[verb](ctx)
    assert events == ["pre-flight", "lease store ct"]
