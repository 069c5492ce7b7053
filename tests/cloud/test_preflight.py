"""Pre-flight against a local stand-in of the DigitalOcean API (documented shapes) and against
the sandbox account: a handful of list calls, located problems, pagination, 401, 429."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from infra_apply.cloud import do_api, preflight
from infra_apply.cloud.account import LiveAccount, SandboxAccount
from infra_apply.errors import InfraApplyError, Problem
from infra_apply.manifests.build import build_model
from infra_apply.manifests.validate import validate_tree
from infra_apply.sandbox import cloud
from tests.conftest import EXAMPLE_TREE, cli_env, run_cli
from tests.do_standin import TOKEN, Account, database_json

PRODUCERS = ["ct", "mc", "quinn"]
GPU_WARNING = (
    "@ct/vision-worker/.infra.yaml:10:5: warning preflight: droplet 'com.uvlava.ct.gpu': size "
    "'gpu-h100x1-80gb' is not offered in region 'nyc3' (offered in: nyc2, tor1); --with-gpu "
    "com.uvlava.ct.gpu would fail"
)


@pytest.fixture
def api(httpserver: HTTPServer) -> Iterator[HTTPServer]:
    httpserver.no_handler_status_code = 418  # an unexpected call fails at once, never retried
    yield httpserver


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE_TREE, tmp_path / "tree")
    return tmp_path / "tree"


def edit(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text()
    assert old in text, (rel, old)
    path.write_text(text.replace(old, new, 1))


def live(root: Path, api: HTTPServer, *, gpu: tuple[str, ...] = (), **env: str) -> list[Problem]:
    v = validate_tree(root)
    assert not v.errors, v.errors
    said: list[str] = []
    found = preflight.problems(
        root=root,
        env={"DIGITALOCEAN_TOKEN": TOKEN, "DIGITALOCEAN_API_URL": api.url_for(""), **env},
        account=LiveAccount(),
        model=build_model(v),
        manifests={m.path: m for m in v.manifests},
        config=v.config,
        producers=PRODUCERS,
        gpu=gpu,
        say=said.append,
    )
    assert said == []
    return found


def requested(api: HTTPServer) -> list[str]:
    return [r.path + (f"?type={r.args['type']}" if "type" in r.args else "") for r, _ in api.log]


def test_the_example_tree_passes_with_a_handful_of_calls(root: Path, api: HTTPServer) -> None:
    Account().serve(api)
    assert [p.format() for p in live(root, api)] == []
    # once per run, whatever the number of droplets, databases and producers
    assert sorted(requested(api)) == [
        "/v2/account",
        "/v2/account/keys",
        "/v2/databases",
        f"/v2/databases/{database_json('uvlava-pg')['id']}/firewall",  # its trusted sources
        "/v2/droplets",  # the VPC of each droplet hosting a database project
        "/v2/images/gpu-h100x1-base",  # not a distribution: asked for by slug
        "/v2/images?type=distribution",
        "/v2/regions",
        "/v2/sizes",
    ]
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r, _ in api.log)
    images = next(r for r, _ in api.log if r.path == "/v2/images")
    assert images.args["type"] == "distribution"


def test_every_page_is_read(root: Path, api: HTTPServer) -> None:
    account = Account(ssh_keys=("a", "b", "c", "ops-2026", "ct-deploy"), page_size=2)
    account.serve(api)
    assert [p.format() for p in live(root, api)] == []  # ct-deploy is on page 3
    assert {"/v2/account/keys?page=3", "/v2/sizes?page=7"} <= set(account.pages)
    assert "/v2/sizes?page=8" not in account.pages  # stops at meta.total


def test_what_the_account_lacks_is_located_where_the_tree_names_it(root: Path, api: HTTPServer) -> None:
    Account(ssh_keys=("ops-2026",), clusters=("main-pg",), unavailable_regions=frozenset({"fra1"})).serve(api)
    edit(root, "@mc/catalog/.infra.yaml", "cluster: uvlava-pg", "cluster: other-pg")
    edit(root, "@quinn/.infra.yaml", "size: s-4vcpu-8gb", "size: s-4vcpu-9gb")
    edit(root, "@quinn/.infra.yaml", "role: mcp\n", "role: mcp\n    image: ubuntu-20-04-x64\n")
    found = [p.format() for p in live(root, api) if p.level == "error"]
    missing_cluster = (
        "error preflight: database cluster '{}' is not in the DigitalOcean account (clusters: main-pg)"
    )
    assert found == [
        "@ct/ledger-api/.infra.yaml:5:12: " + missing_cluster.format("uvlava-pg"),
        "@mc/.infra.yaml:7:13: error preflight: droplet 'com.uvlava.mc.services': region 'fra1' is not "
        "available for new droplets",
        "@mc/catalog/.infra.yaml:5:12: " + missing_cluster.format("other-pg"),
        "@mc/storefront/.infra.yaml:5:12: " + missing_cluster.format("uvlava-pg"),
        "@quinn/.infra.yaml:9:11: error preflight: droplet 'com.uvlava.quinn.artifacts': size 's-4vcpu-9gb' "
        "does not exist in the DigitalOcean account (did you mean s-4vcpu-8gb, s-2vcpu-4gb, s-2vcpu-2gb?)",
        "@quinn/.infra.yaml:21:12: error preflight: droplet 'com.uvlava.quinn.mcp': image "
        "'ubuntu-20-04-x64' does not exist in the DigitalOcean account (did you mean ubuntu-24-04-x64, "
        "ubuntu-22-04-x64?)",
        "@quinn/auth-svc/.infra.yaml:5:12: " + missing_cluster.format("uvlava-pg"),
        "infra-apply.toml:10:1: error preflight: SSH key 'ct-deploy' is not in the DigitalOcean account "
        "(keys: ops-2026)",
        "infra-apply.toml:19:1: " + missing_cluster.format("uvlava-pg"),  # its trusted sources
    ]
    assert "/v2/images/ubuntu-20-04-x64" in requested(api)  # asked once, answered 404


def test_a_gpu_the_run_creates_must_be_offered_in_its_region(root: Path, api: HTTPServer) -> None:
    # [gpu."com.uvlava.ct.gpu"] puts it in nyc2 (the standing hosts' nyc3 has no GPU): as if
    # DigitalOcean had no room there today, the GPU a lease holds fails
    Account(unavailable_regions=frozenset({"nyc2"})).serve(api)
    [p] = live(root, api, gpu=("com.uvlava.ct.gpu",))
    assert (p.level, p.path, p.line) == ("error", "@ct/vision-worker/.infra.yaml", 10)
    assert "nyc2" in p.message


def test_a_refused_token_is_one_line_without_the_token(root: Path, api: HTTPServer) -> None:
    Account(token="FAKE-do-token_another").serve(api)
    with pytest.raises(InfraApplyError) as caught:
        live(root, api)
    message = caught.value.format()
    assert message.startswith("infra-apply: error: pre-flight: the DigitalOcean account refused the token")
    assert "HTTP 401 unauthorized: Unable to authenticate you" in message
    assert TOKEN not in message
    assert requested(api) == ["/v2/account"]  # nothing else is asked with a bad token


def test_a_locked_account_stops_before_anything_else(root: Path, api: HTTPServer) -> None:
    Account(status="locked").serve(api)
    with pytest.raises(InfraApplyError, match=r"is not active \(status locked \(Your account is locked"):
        live(root, api)
    assert requested(api) == ["/v2/account"]


def test_a_rate_limit_is_waited_out_as_retry_after_says(api: HTTPServer) -> None:
    Account().serve(api)
    api.expect_oneshot_request("/v2/sizes").respond_with_json(
        {"id": "too_many_requests", "message": "API Rate limit exceeded."},
        status=429,
        headers={"Retry-After": "7"},
    )
    slept: list[float] = []
    client = do_api.Client(TOKEN, api.url_for(""), retry=do_api.Retry(sleep=slept.append))
    sizes = preflight.LiveSource(client).sizes()
    assert slept == [7.0]
    assert {s["slug"] for s in sizes} >= {"s-2vcpu-4gb", "gpu-h100x1-80gb"}
    assert [r.path for r, _ in api.log] == ["/v2/sizes", "/v2/sizes"]


def test_an_account_without_clusters_answering_null(api: HTTPServer) -> None:
    api.expect_request("/v2/databases").respond_with_json({"databases": None})
    client = do_api.Client(TOKEN, api.url_for(""))
    assert preflight.LiveSource(client).databases() == []


def test_each_token_is_one_account_asked_once(root: Path, api: HTTPServer, tmp_path: Path) -> None:
    """Without DIGITALOCEAN_TOKEN each producer's PAT file names its account: ct and mc share
    one token, quinn has its own; each account is asked once."""
    Account(token=None).serve(api)
    vault = tmp_path / "home" / ".vault"
    vault.mkdir(parents=True)
    for producer, token in (("ct", "token-a"), ("mc", "token-a"), ("quinn", "token-b")):
        (vault / f"do_pat_{producer}").write_text(token + "\n")
        (vault / f"do_pat_{producer}").chmod(0o600)
    v = validate_tree(root)
    found = preflight.problems(
        root=root,
        env={"HOME": str(tmp_path / "home"), "DIGITALOCEAN_API_URL": api.url_for("")},
        account=LiveAccount(),
        model=build_model(v),
        manifests={m.path: m for m in v.manifests},
        config=v.config,
        producers=PRODUCERS,
        say=lambda _: None,
    )
    assert found == []  # the off GPU is in nyc2 ([gpu] of infra-apply.toml), offered there
    accounts = [r.headers["Authorization"] for r, _ in api.log if r.path == "/v2/account"]
    assert sorted(accounts) == ["Bearer token-a", "Bearer token-b"]


# --- the sandbox account ----------------------------------------------------------------------


def sandbox(root: Path, state: Path, producers: list[str], gpu: tuple[str, ...] = ()) -> list[Problem]:
    v = validate_tree(root)
    assert not v.errors, v.errors
    return preflight.problems(
        root=root,
        env={"INFRA_APPLY_STATE_DIR": str(state)},
        account=SandboxAccount(),
        model=build_model(v),
        manifests={m.path: m for m in v.manifests},
        config=v.config,
        producers=producers,
        gpu=gpu,
        say=lambda _: None,
    )


OPEN = "has no trusted sources"


def test_the_sandbox_account_is_seeded_from_the_configuration(root: Path, tmp_path: Path) -> None:
    found = sandbox(root, tmp_path / "state", PRODUCERS)
    assert [p.format() for p in found if OPEN not in p.message] == []
    path = tmp_path / "state" / "sandbox" / "cloud.json"
    assert [c["name"] for c in cloud.list_clusters(path)] == ["uvlava-pg"]
    assert [k["name"] for k in cloud.list_ssh_keys(path)] == ["ct-deploy", "ops-2026"]
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"


def test_the_sandbox_fails_what_digitalocean_would(root: Path, tmp_path: Path) -> None:
    """No more clusters made on demand: a cluster [sandbox] does not list is missing there too."""
    sandbox_account = 'clusters = ["main-pg"]\nssh_keys = ["ops-2026"]'
    edit(root, "infra-apply.toml", 'clusters = ["uvlava-pg"]', sandbox_account)
    found = sandbox(root, tmp_path / "state", ["ct"])
    assert [(p.path, p.line, p.level) for p in found] == [
        ("@ct/ledger-api/.infra.yaml", 5, "error"),
        ("infra-apply.toml", 10, "error"),
    ]
    assert "cluster 'uvlava-pg' is not in the sandbox account (clusters: main-pg)" in found[0].message
    assert "SSH key 'ct-deploy' is not in the sandbox account (keys: ops-2026)" in found[1].message


def test_the_sandbox_catalogue_lives_in_its_cloud(root: Path, tmp_path: Path) -> None:
    """A region the account no longer offers (edited in its cloud file) is refused like a real one."""
    state = tmp_path / "state"
    assert [p for p in sandbox(root, state, ["mc"]) if OPEN not in p.message] == []
    path = state / "sandbox" / "cloud.json"
    with cloud.transaction(path) as c:
        c["catalogue"]["regions"] = [r for r in c["catalogue"]["regions"] if r["slug"] != "fra1"]
    [p] = [p for p in sandbox(root, state, ["mc"]) if OPEN not in p.message]
    assert p.format() == (
        "@mc/.infra.yaml:7:13: error preflight: droplet 'com.uvlava.mc.services': region 'fra1' does "
        "not exist in the sandbox account"
    )


def test_a_running_droplet_outside_its_clusters_vpc_is_flagged_at_its_manifest_line(
    root: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    assert [p for p in sandbox(root, state, ["quinn", "mc"]) if OPEN not in p.message] == []
    path = state / "sandbox" / "cloud.json"
    pg_vpc = cloud.stable_uuid("vpc", "uvlava-pg")
    with cloud.transaction(path) as c:
        # the cluster sits in a VPC of its own; the droplets run in their regions' default VPCs
        [cluster] = c["clusters"].values()
        cluster["private_network_uuid"] = pg_vpc
        for name, region in (("com.uvlava.quinn.mcp", "nyc3"), ("com.uvlava.quinn.dns", "nyc3")):
            cloud.add_droplet(c, cloud.DropletSpec(name=name, region=region))
        cloud.add_droplet(c, cloud.DropletSpec(name="com.uvlava.mc.services", region="fra1"))
    found = [p for p in sandbox(root, state, ["quinn", "mc"]) if OPEN not in p.message]
    assert [(p.path, p.line, p.col, p.level) for p in found] == [
        ("@mc/.infra.yaml", 7, 13, "warning"),  # its region: the cluster is in another one
        ("@quinn/.infra.yaml", 19, 11, "warning"),  # mcp hosts auth-svc; dns hosts no database project
    ]
    assert found[1].message.startswith(
        f"droplet 'com.uvlava.quinn.mcp' runs in VPC {cloud.vpc_uuid('nyc3')}, not in VPC {pg_vpc} of "
        "cluster 'uvlava-pg' it hosts a project of: the cluster's private host is out of its reach"
    )
    assert "(a VPC is regional: the cluster is in nyc3)" in found[0].message
    assert all("vpc_uuid is ForceNew" in p.message for p in found)


def test_problems_of_a_run_raise_and_nothing_else_happens(root: Path, tmp_path: Path) -> None:
    edit(root, "@mc/catalog/.infra.yaml", "cluster: uvlava-pg", "cluster: other-pg")
    v = validate_tree(root)
    said: list[str] = []
    kwargs: dict[str, Any] = {
        "root": root,
        "env": {"INFRA_APPLY_STATE_DIR": str(tmp_path / "state")},
        "account": SandboxAccount(),
        "model": build_model(v),
        "manifests": {m.path: m for m in v.manifests},
        "config": v.config,
        "say": said.append,
    }

    def run(producer: str) -> None:
        found = preflight.problems(producers=[producer], **kwargs)
        preflight.enforce(found, SandboxAccount().label, say=said.append)

    with pytest.raises(preflight.PreflightFailed) as caught:
        run("mc")
    assert caught.value.message == "pre-flight: 1 error(s) against the sandbox account"
    run("quinn")  # another producer is not held up
    run("ct")
    # warnings are said, not raised: the sandbox cluster's trusted sources are not in place yet
    assert [OPEN in line for line in said] == [True, True]


def test_an_account_status_message_echoing_the_token_is_masked_and_printable(
    root: Path, api: HTTPServer
) -> None:
    said = f"locked: {TOKEN} \x1b]8;;https://evil.example\x07here\x1b]8;;\x07\ninfra-apply: all clear"
    api.expect_request("/v2/account").respond_with_json(
        {"account": {"status": "locked", "status_message": said}}
    )
    with pytest.raises(InfraApplyError) as caught:
        live(root, api)
    line = caught.value.format()
    assert TOKEN not in line and "locked: ***" in line
    assert line.isprintable() and "\\x1b]8;;https://evil.example\\x07here" in line
    assert "\\ninfra-apply: all clear" in line


@pytest.mark.parametrize("var", ["DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN"])
@pytest.mark.parametrize(
    "bad", ["FAKE-do-token_lf\n", "FAKE-do-token\r_cr", "FAKE-do-token_\x1b[2J", "FAKE-tökén"]
)
def test_a_token_with_a_control_or_non_ascii_character_is_one_line_naming_its_variable(
    root: Path, tmp_path: Path, var: str, bad: str
) -> None:
    env = cli_env(tmp_path, **{var: bad, "DIGITALOCEAN_API_URL": "http://127.0.0.1:9"})
    r = run_cli("--root", str(root), "validate", "--live", env=env)
    assert r.returncode == 1, r.stderr
    assert r.stderr == (
        f"infra-apply: error: ${var} holds a character no token has (a line break or another control "
        "character, a space, or a non-ASCII character); set it to the token alone\n"
    )
    assert bad.strip() not in r.stdout + r.stderr


class _Catalogue:
    """A source whose answers are given whole: shapes DigitalOcean never sends."""

    label = "the DigitalOcean account"

    def __init__(self, sizes: list[dict[str, Any]]) -> None:
        self._sizes = sizes

    def account(self) -> dict[str, Any]:
        return {"status": "active"}

    def databases(self) -> list[dict[str, Any]]:
        return []

    def ssh_keys(self) -> list[dict[str, Any]]:
        return []

    def sizes(self) -> list[dict[str, Any]]:
        return self._sizes

    def regions(self) -> list[dict[str, Any]]:
        return [{"slug": "nyc3", "available": True}]

    def distribution_images(self) -> list[dict[str, Any]]:
        return [{"slug": "ubuntu-24-04-x64"}]

    def image(self, slug: str) -> dict[str, Any] | None:
        return None


@pytest.mark.parametrize("regions", [5, "nyc3", {"nyc3": True}, [1, 2], True])
def test_a_size_whose_regions_are_not_a_list_of_slugs_is_one_line(regions: object) -> None:
    from types import SimpleNamespace
    from typing import cast

    droplet = SimpleNamespace(image="x", database_clusters=())
    wanted = preflight.Needs(droplets=(cast(Any, SimpleNamespace(droplet=droplet)),))
    source = _Catalogue([{"slug": "s-1vcpu-1gb\x1b]0;x\x07", "available": True, "regions": regions}])
    with pytest.raises(InfraApplyError) as caught:
        preflight.fetch(cast(Any, source), wanted, lambda _line: None)
    line = caught.value.format()
    assert "GET /v2/sizes: size 's-1vcpu-1gb\\x1b]0;x\\x07' has regions that are not a list" in line
    assert line.isprintable()
    ok = _Catalogue([{"slug": "s-1vcpu-1gb", "available": True, "regions": None}])
    assert preflight.fetch(cast(Any, ok), wanted, lambda _line: None).sizes == {"s-1vcpu-1gb": (True, ())}
