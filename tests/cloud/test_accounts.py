"""One catalogue per run: pre-flight, prices and the exists lookups share the live account's
answers (each list asked once, ``/v2/sizes`` once), and the lists are asked all at once; a plan
of some producers says only their manifests' warnings."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from infra_apply.cloud import preflight
from infra_apply.cloud.account import LiveAccount
from infra_apply.cloud.accounts import LISTS, Accounts
from infra_apply.cloud.pricing import run_prices
from infra_apply.errors import InfraApplyError, Problem
from infra_apply.manifests.build import build_model
from infra_apply.manifests.validate import validate_tree
from infra_apply.plan import exists
from infra_apply.plan.cost import API_SOURCE
from infra_apply.runtime.workcopy import Context, warnings_for
from tests.conftest import EXAMPLE_TREE, REPO, cli_env, run_cli
from tests.do_standin import TOKEN, Account

PRODUCERS = ["ct", "mc", "quinn"]
CATALOGUE = frozenset(
    {
        "/v2/account",
        "/v2/databases",
        "/v2/account/keys",
        "/v2/sizes",
        "/v2/regions",
        "/v2/images",
        "/v2/droplets",
        "/v2/firewalls",
    }
)


@pytest.fixture
def api() -> Iterator[HTTPServer]:
    # threaded: concurrent requests are served concurrently, as DigitalOcean serves them
    server = HTTPServer(threaded=True)
    server.no_handler_status_code = 418  # an unexpected call fails at once, never retried
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE_TREE, tmp_path / "tree")
    return tmp_path / "tree"


def live_preflight(root: Path, env: dict[str, str], accounts: Accounts) -> list[Problem]:
    v = validate_tree(root)
    manifests = {m.path: m for m in v.manifests}
    model, config = build_model(v), v.config
    return preflight.problems(
        root=root,
        env=env,
        account=LiveAccount(),
        model=model,
        manifests=manifests,
        config=config,
        producers=PRODUCERS,
        say=lambda _: None,
        accounts=accounts,
    )


def one_run(root: Path, api: HTTPServer, tmp_path: Path) -> list[Problem]:
    """What a plan run asks of the account: pre-flight, the prices, each producer's lookups."""
    env = {"DIGITALOCEAN_TOKEN": TOKEN, "DIGITALOCEAN_API_URL": api.url_for("")}
    v = validate_tree(root)
    model = build_model(v)
    ctx = Context(root, root / "generated", LiveAccount(), None, env)
    with Accounts(env) as accounts:
        found = live_preflight(root, env, accounts)
        assert run_prices(ctx, PRODUCERS, accounts=accounts).source == API_SOURCE
        for p in model.producers:
            lookup = exists.start(accounts.live(TOKEN), {db.cluster for db in p.databases})
            assert lookup is not None
            assert lookup.result().label == "the DigitalOcean account"
    return found


def test_a_run_asks_each_catalogue_list_once_all_at_once(root: Path, api: HTTPServer, tmp_path: Path) -> None:
    # Every list's first request waits for all the others: asked one after another, the first
    # one would wait alone and be answered 418.
    model = build_model(validate_tree(root))
    images = {f"/v2/images/{d.image}" for p in model.producers for d in p.droplets}
    assert "/v2/images/gpu-h100x1-base" in images  # not a distribution: asked by slug
    standin = Account(together=CATALOGUE | images)
    standin.serve(api)
    assert one_run(root, api, tmp_path) == []
    asked = sorted(standin.requests)
    assert asked.count("/v2/sizes") == 1  # pre-flight and prices alike
    # once the ids are known: its databases, users and trusted sources
    cluster_lists = {f"/v2/databases/{_id()}/{k}" for k in ("dbs", "users", "firewall")}
    assert set(asked) == CATALOGUE | images | cluster_lists
    assert len(asked) == len(set(asked)), asked  # nothing asked twice
    assert len(LISTS) == len(CATALOGUE)


def _id(cluster: str = "uvlava-pg") -> str:
    from tests.do_standin import database_json

    return str(database_json(cluster)["id"])


def test_a_refused_token_still_stops_preflight_first(root: Path, api: HTTPServer) -> None:
    """A refused token still stops pre-flight with its message (the account call reads it first)."""
    standin = Account(token="FAKE-do-token_another")
    standin.serve(api)
    env = {"DIGITALOCEAN_TOKEN": TOKEN, "DIGITALOCEAN_API_URL": api.url_for("")}
    with Accounts(env) as accounts, pytest.raises(InfraApplyError, match="refused the token"):
        live_preflight(root, env, accounts)


# --- warnings for the producers planned -------------------------------------------------------


def test_warnings_are_said_only_for_the_producers_planned(root: Path) -> None:
    v = validate_tree(root)
    model = build_model(v)
    feeds = {s: p.name for p in model.producers for s in p.sources}
    ct_file = next(s for s, name in feeds.items() if name == "ct")
    quinn_file = next(s for s, name in feeds.items() if name == "quinn")
    warnings = [
        Problem(ct_file, 3, 1, "warning", "ssh_access", "ct's"),
        Problem(quinn_file, 3, 1, "warning", "ssh_access", "quinn's"),
        Problem("infra-apply.toml", 1, 1, "warning", "config", "everyone's"),
    ]
    assert [p.message for p in warnings_for(warnings, model, ["quinn"])] == ["quinn's", "everyone's"]
    assert [p.message for p in warnings_for(warnings, model, ["@ct"])] == ["ct's", "everyone's"]
    assert warnings_for(warnings, model, None) == warnings


def test_a_plan_of_one_producer_says_none_of_the_others_warnings(root: Path, tmp_path: Path) -> None:
    # @ct/ledger-api/.infra.dev.yaml warns (host 'fennel' unchecked without --mesh-hosts): ct's
    ct_warning = "warning host_in_mesh: host 'fennel'"
    env = cli_env(tmp_path)
    done = run_cli("--root", str(root), "plan", "--sandbox", "--producer", "quinn", env=env)
    assert done.returncode in (0, 2), done.stderr
    assert ct_warning not in done.stderr
    assert "quinn: plan done" in done.stderr


def test_a_live_plan_asks_the_account_once(root: Path, api: HTTPServer, tmp_path: Path) -> None:
    """The whole live ``plan`` (Terraform stubbed as the bench stubs it: the real provider is not
    installable here): pre-flight, prices and the exists lookups share one catalogue."""
    standin = Account(together=CATALOGUE)
    done = live_plan(root, api, standin, tmp_path, DIGITALOCEAN_TOKEN=TOKEN)
    assert done.returncode == 0, done.stderr
    assert standin.requests.count("/v2/sizes") == 1
    assert len(standin.requests) == len(set(standin.requests)), standin.requests
    assert set(standin.requests) >= CATALOGUE


def test_the_early_round_reads_a_pat_file_quietly(
    api: HTTPServer, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The early round reads a named producer's PAT file without a word: pre-flight reads it
    again and says its warning where it did without the early start."""
    vault = tmp_path / ".vault"
    vault.mkdir(mode=0o700)
    (vault / "do_pat_quinn").write_text(TOKEN + "\n")
    (vault / "do_pat_quinn").chmod(0o644)  # pre-flight warns about it
    standin = Account()
    standin.serve(api)
    env = {"HOME": str(tmp_path), "DIGITALOCEAN_API_URL": api.url_for("")}
    with Accounts(env) as accounts:
        LiveAccount().start_catalogue(env, ["quinn"], accounts)
        assert accounts.live(TOKEN).account()["status"] == "active"  # the round the PAT started
        LiveAccount().start_catalogue(env, ["nobody"], accounts)  # no token: nothing, no error
    assert capfd.readouterr() == ("", "")
    assert standin.requests.count("/v2/account") == 1


def live_plan(
    root: Path, api: HTTPServer, standin: Account, tmp_path: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    try:
        import run as bench
    finally:
        sys.path.pop(0)
    show = tmp_path / "plan.json"
    show.write_text('{"format_version": "1.2", "terraform_version": "1.9.8", "resource_changes": []}')
    stub = bench._stub_terraform(tmp_path / "bin", show)
    standin.serve(api)
    env = cli_env(
        tmp_path,
        INFRA_APPLY_TERRAFORM=str(stub),
        DIGITALOCEAN_API_URL=api.url_for(""),
        HOME=str(tmp_path),
        **extra,
    )
    env.pop("CI", None)
    return run_cli("--root", str(root), "plan", "--producer", "quinn", env=env)


@pytest.mark.parametrize("token_from", ["env", "pat_file"])
def test_a_plan_that_fails_validation_abandons_the_early_catalogue_round(
    root: Path, api: HTTPServer, tmp_path: Path, token_from: str
) -> None:
    """The catalogue round starts before the manifests validate (its answers come while they
    render), with the environment's token or the named producer's PAT file; a manifest error
    then stops the run at once, never waiting for the round (here an account call the API holds
    open longer than the run may take), and the abandoned calls print nothing."""
    import threading

    asked = threading.Event()
    release = threading.Event()

    def held(_: object) -> object:
        asked.set()
        release.wait(timeout=120)
        from werkzeug import Response

        return Response("{}", 503)

    api.expect_request("/v2/account").respond_with_handler(held)  # type: ignore[arg-type]
    manifest = root / "@quinn" / "auth-svc" / ".infra.yaml"
    manifest.write_text(manifest.read_text() + "no_such_key: 1\n")
    env = cli_env(tmp_path, DIGITALOCEAN_API_URL=api.url_for(""), HOME=str(tmp_path))
    if token_from == "env":
        env["DIGITALOCEAN_TOKEN"] = TOKEN
    else:
        (tmp_path / ".vault").mkdir(mode=0o700)
        (tmp_path / ".vault" / "do_pat_quinn").write_text(TOKEN + "\n")
        (tmp_path / ".vault" / "do_pat_quinn").chmod(0o600)
    env.pop("CI", None)
    try:
        # the HTTP timeout (60 s) is far beyond this bound: a run waiting for the call fails it
        done = run_cli("--root", str(root), "plan", "--producer", "quinn", env=env, timeout=45)
    finally:
        release.set()
    assert done.returncode == 1, done.stderr
    assert asked.is_set()  # the round had started before the error
    assert "no_such_key" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


# --- the early round: started by the CLI before it imports the plan verb ------------------------


def test_the_early_round_asks_each_clusters_firewall_before_preflight_names_it(
    api: HTTPServer, tmp_path: Path
) -> None:
    """Pre-flight reads the firewall of each cluster used; the early round (before the manifests
    say which) asks every cluster's as soon as the cluster list arrives, so pre-flight does not
    wait a second round trip; and the read is that same call, never a second one."""
    import time

    standin = Account(clusters=("uvlava-pg", "other-pg"))
    standin.serve(api)
    env = {"DIGITALOCEAN_TOKEN": TOKEN, "DIGITALOCEAN_API_URL": api.url_for("")}
    firewalls = {f"/v2/databases/{_id(n)}/firewall" for n in ("uvlava-pg", "other-pg")}
    with Accounts(env) as accounts:
        LiveAccount().start_catalogue(env, ["quinn"], accounts)
        deadline = time.monotonic() + 30  # a bound on a hang, not a speed asserted
        # the whole round, before the run ends: closing it cancels the calls not yet started
        while not CATALOGUE | firewalls <= set(standin.requests) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert firewalls <= set(standin.requests)  # asked with nobody reading them yet
        assert accounts.live(TOKEN).database_firewall(_id("uvlava-pg")) != []
    assert sorted(standin.requests) == sorted(CATALOGUE | firewalls)  # each asked once


def test_the_early_round_asks_no_firewall_of_an_account_with_many_clusters() -> None:
    from concurrent.futures import Future

    from infra_apply.cloud.accounts import FEW_CLUSTERS, Shared, _Calls, _Pool

    class Firewalls:
        label = "the DigitalOcean account"

        def database_firewall(self, cluster_id: str) -> list[dict[str, str]]:
            return []

    def asked(clusters: int) -> set[tuple[str, ...]]:
        pool = _Pool(1)
        calls = _Calls(Firewalls(), pool)  # type: ignore[arg-type]  # only the firewall is asked
        listed: Future[list[dict[str, str]]] = Future()
        listed.set_result([{"id": f"id-{i}", "name": f"pg-{i}"} for i in range(clusters)])
        Shared(calls, "the DigitalOcean account")._firewalls(listed)
        pool.shutdown()
        return set(calls._futures)

    assert asked(FEW_CLUSTERS) == {("database_firewall", f"id-{i}") for i in range(FEW_CLUSTERS)}
    assert asked(FEW_CLUSTERS + 1) == set()  # the clusters used are asked by pre-flight, as before


# --- what a run asks late, asked by the next one in its first round -----------------------------


def _hints(tmp_path: Path, root: Path, api: HTTPServer, token: str = TOKEN) -> Path:
    from infra_apply.cloud.accounts import _for_token, hints_file

    env = cli_env(tmp_path, DIGITALOCEAN_API_URL=api.url_for(""))
    found = hints_file(env, root)
    assert found is not None
    return _for_token(found, token)


def test_the_next_plan_asks_in_its_first_round_what_the_last_one_asked_late(
    root: Path, api: HTTPServer, tmp_path: Path
) -> None:
    """The image by slug and the cluster's firewall are known only once the manifests are read
    (or the cluster list has come): the next plan of the tree asks them with the lists, so
    pre-flight waits one round trip, not two."""
    first = live_plan(root, api, Account(), tmp_path, DIGITALOCEAN_TOKEN=TOKEN)
    assert first.returncode == 0, first.stderr
    late = {"/v2/images/ubuntu-24-04-x64", f"/v2/databases/{_id()}/firewall"}
    hints = _hints(tmp_path, root, api)
    assert hints.stat().st_mode & 0o777 == 0o600
    assert ["image", "ubuntu-24-04-x64"] in json.loads(hints.read_text())
    api.clear()
    standin = Account(together=CATALOGUE | late)  # 418 unless all are in flight at once
    second = live_plan(root, api, standin, tmp_path, DIGITALOCEAN_TOKEN=TOKEN)
    assert second.returncode == 0, second.stderr
    assert len(standin.requests) == len(set(standin.requests))  # still each call once


def test_a_remembered_call_nobody_needs_is_asked_once_and_forgotten(
    root: Path, api: HTTPServer, tmp_path: Path
) -> None:
    """An image no manifest uses any more, a cluster since re-created under another id: one GET
    each (their 404s read by nobody), the plan as without them, and not remembered again."""
    hints = _hints(tmp_path, root, api)
    hints.parent.mkdir(parents=True, mode=0o700)
    stale = [["database_firewall", "0b5e7c1a-dead-4bee-a000-000000000000"], ["image", "debian-9-x64"]]
    hints.write_text(json.dumps(stale))
    hints.chmod(0o600)
    standin = Account()
    done = live_plan(root, api, standin, tmp_path, DIGITALOCEAN_TOKEN=TOKEN)
    assert done.returncode == 0, done.stderr
    assert {"/v2/images/debian-9-x64", f"/v2/databases/{stale[0][1]}/firewall"} <= set(standin.requests)
    kept = json.loads(hints.read_text())
    assert not [h for h in kept if h in stale] and ["image", "ubuntu-24-04-x64"] in kept


@pytest.mark.parametrize(
    "text",
    [
        '{"image": "ubuntu-24-04-x64"}',
        '[["droplets", "x"]]',  # not a call made late
        '[["image", "../account"]]',  # never a path of its own
        '[["image", ""]]',
        '[["image", 7]]',
        "[[",
    ],
)
def test_a_hints_file_that_is_not_what_a_run_writes_is_ignored(tmp_path: Path, text: str) -> None:
    from infra_apply.cloud.accounts import read_hints

    path = tmp_path / "hints.json"
    path.write_text(text)
    path.chmod(0o600)
    assert read_hints(path) == []
    path.write_text('[["image", "ubuntu-24-04-x64"]]')
    assert read_hints(path) == [("image", "ubuntu-24-04-x64")]
    path.chmod(0o644)  # a file others could have written
    assert read_hints(path) == []


def test_no_hints_with_no_cache_nor_without_a_cache_folder(tmp_path: Path) -> None:
    from infra_apply.cloud.accounts import hints_file, store_hints

    env = cli_env(tmp_path)
    assert hints_file({**env, "INFRA_APPLY_NO_CACHE": "1"}, tmp_path) is None
    path = hints_file(env, tmp_path)
    assert path is not None
    store_hints(path, [("image", "ubuntu-24-04-x64")])
    assert not Path(env["INFRA_APPLY_STATE_DIR"]).exists()  # never makes the state dir


def test_each_token_has_its_own_hints_and_the_token_is_not_in_them(
    root: Path, api: HTTPServer, tmp_path: Path
) -> None:
    """Another account is never asked about the first one's clusters."""
    assert live_plan(root, api, Account(), tmp_path, DIGITALOCEAN_TOKEN=TOKEN).returncode == 0
    api.clear()
    other = "FAKE-do-token_another-account"
    standin = Account(token=other)
    done = live_plan(root, api, standin, tmp_path, DIGITALOCEAN_TOKEN=other)
    assert done.returncode == 0, done.stderr
    assert standin.requests.index(f"/v2/databases/{_id()}/firewall") > standin.requests.index("/v2/databases")
    files = sorted(_hints(tmp_path, root, api, t).name for t in (TOKEN, other))
    assert files[0] != files[1]
    for name in files:
        text = (_hints(tmp_path, root, api).parent / name).read_text()
        assert TOKEN not in text and other not in text and TOKEN not in name and other not in name


def test_hints_are_never_written_into_a_state_dir_the_run_refused(
    root: Path, api: HTTPServer, tmp_path: Path
) -> None:
    """A state dir inside ``generated/`` is refused before anything is written, hints included."""
    state = root / "generated" / "state"
    (state / "cache").mkdir(parents=True)
    done = live_plan(
        root, api, Account(), tmp_path, DIGITALOCEAN_TOKEN=TOKEN, INFRA_APPLY_STATE_DIR=str(state)
    )
    assert done.returncode == 1 and "generated/" in done.stderr, done.stderr
    assert list((state / "cache").iterdir()) == []
