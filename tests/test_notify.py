"""Webhook notifications: what a local hook receives (pytest_httpserver), retries, and that no
secret ever reaches a payload or a warning."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from infra_apply.cloud.account import choose
from infra_apply.forge import notify
from infra_apply.manifests.config import ConfigError, load
from infra_apply.sandbox import cloud
from tests import stopping
from tests.test_e2e_sandbox import Ops

TOKEN = "FAKE-do-token_notify"


def payloads(server: HTTPServer) -> list[dict[str, object]]:
    return [json.loads(req.get_data()) for req, _ in server.log]


def test_notify_config_names_a_variable_and_is_located(tmp_path: Path) -> None:
    (tmp_path / "infra-apply.toml").write_text('[notify]\nwebhook_url_env = "INFRA_APPLY_WEBHOOK"\n')
    assert load(tmp_path, {}).notify == notify.NotifySettings("INFRA_APPLY_WEBHOOK")
    (tmp_path / "infra-apply.toml").write_text('[notify]\nwebhook_url_env = "https://hooks.example/x"\n')
    with pytest.raises(ConfigError) as bad:
        load(tmp_path, {})
    assert (bad.value.line, bad.value.col) == (2, 1)
    (tmp_path / "infra-apply.toml").write_text("[notify]\nurl = 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load(tmp_path, {})


def test_a_500_is_retried_and_the_event_delivered_once(httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request("/hook", method="POST").respond_with_data("boom", status=500)
    httpserver.expect_ordered_request("/hook", method="POST").respond_with_data("ok")
    warnings: list[str] = []
    slept: list[float] = []
    hook = notify.Notifier(httpserver.url_for("/hook"), warnings.append, slept.append)
    assert hook.send(notify.apply_refused("quinn", choose(True)))
    assert warnings == [] and slept == [notify.BACKOFF_SECONDS]
    first, second = payloads(httpserver)
    assert first == second
    assert first["format_version"] == 1 and first["event"] == "apply.refused"
    assert "quinn" in str(first["text"])


def test_a_failing_hook_warns_once_without_its_url(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/secret-path").respond_with_data("no", status=503)
    warnings: list[str] = []
    url = httpserver.url_for("/secret-path")
    hook = notify.Notifier(url, warnings.append, lambda _: None)
    assert not hook.send(notify.apply_failed("quinn", 1, choose(False)))
    assert len(httpserver.log) == notify.ATTEMPTS
    [line] = warnings
    assert "not delivered" in line and "secret-path" not in line and url not in line


def test_an_unreachable_hook_warns_without_its_url() -> None:
    warnings: list[str] = []
    url = "http://127.0.0.1:9/secret-path"  # discard port: nothing listens
    hook = notify.Notifier(url, warnings.append, lambda _: None)
    assert not hook.send(notify.drift_found(["quinn"], choose(False)))
    [line] = warnings
    assert "secret-path" not in line


def test_an_unset_variable_is_one_warning_and_nothing_sent() -> None:
    warnings: list[str] = []
    hook = notify.notifier(notify.NotifySettings("INFRA_APPLY_WEBHOOK"), {}, warnings.append)
    assert hook.url is None and not hook.send(notify.apply_refused("quinn", choose(False)))
    [line] = warnings
    assert "INFRA_APPLY_WEBHOOK" in line and "not set" in line
    assert notify.notifier(notify.NotifySettings(), {}, warnings.append).url is None
    assert len(warnings) == 1


# --- sandbox e2e ---------------------------------------------------------------------------


@pytest.fixture
def ops(example: Path, httpserver: HTTPServer) -> Iterator[Ops]:
    ops = Ops(example)
    config = ops.root / "infra-apply.toml"
    text = config.read_text() if config.exists() else ""
    config.write_text(text + '\n[notify]\nwebhook_url_env = "INFRA_APPLY_WEBHOOK"\n')
    ops.env["INFRA_APPLY_WEBHOOK"] = httpserver.url_for("/hook")
    ops.env["DIGITALOCEAN_TOKEN"] = TOKEN
    httpserver.expect_request("/hook").respond_with_data("ok")
    yield ops
    stopping.clean_up(ops)


def no_secret(server: HTTPServer) -> None:
    for req, _ in server.log:
        body = req.get_data(as_text=True)
        assert TOKEN not in body and "/hook" not in body and "password" not in body.lower(), body


def test_apply_done_refused_and_failed_are_told(ops: Ops, httpserver: HTTPServer) -> None:
    assert ops.apply("quinn")[0] == 0
    manifest = ops.root / "@quinn/.infra.yaml"
    text = manifest.read_text()
    start, end = text.index("  - name: com.uvlava.quinn.mcp"), text.index("  - name: com.uvlava.dns")
    manifest.write_text(text[:start] + text[end:])
    assert ops.apply("quinn")[0] == 3
    code, _, err = ops.apply("nosuch")
    assert code == 1 and "nosuch" in err
    events = [(p["event"], p["producer"]) for p in payloads(httpserver)]
    assert events == [("apply.done", "quinn"), ("apply.refused", "quinn"), ("apply.failed", "nosuch")]
    # the failure is told by its exit code; its message stays in the job's log
    assert payloads(httpserver)[2]["exit_code"] == 1
    done = payloads(httpserver)[0]
    assert done["applied"] is True and done["sandbox"] is True
    no_secret(httpserver)


def test_drift_is_told_once_until_it_changes(ops: Ops, httpserver: HTTPServer) -> None:
    assert ops.apply("quinn")[0] == 0
    httpserver.clear_log()
    assert ops.sandbox("drift", "--producer", "quinn")[0] == 0
    assert payloads(httpserver) == []
    live = ops.droplets()
    dns = next(n for n in live if n.endswith(".dns"))
    tags = [str(t) for t in live[dns]["tags"]]  # type: ignore[attr-defined]
    cloud.edit_droplet(ops.cloud, str(live[dns]["id"]), tags=[*tags, "edited-by-hand"])
    for _ in range(2):
        assert ops.sandbox("drift", "--producer", "quinn")[0] == 2
    [event] = payloads(httpserver)
    assert event["event"] == "drift" and event["producers"] == ["quinn"]
    no_secret(httpserver)


def test_a_fresh_runner_does_not_tell_drift_told_before_with_remote_state(
    example: Path, httpserver: HTTPServer
) -> None:
    """Remote state: what was told lives in the state bucket, so a second runner with an
    empty state dir (a fresh CI job) knows it."""
    from tests.test_remote_state import Remote, ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        remote = Remote(example, f"http://{host}:{port}")
        config = remote.root / "infra-apply.toml"
        config.write_text(config.read_text() + '[notify]\nwebhook_url_env = "INFRA_APPLY_WEBHOOK"\n')
        httpserver.expect_request("/hook").respond_with_data("ok")
        shared = remote.base / "cloud.json"
        extra = {"INFRA_APPLY_SANDBOX_CLOUD": str(shared), "INFRA_APPLY_WEBHOOK": httpserver.url_for("/hook")}
        first, second = remote.env("state-a", **extra), remote.env("state-b", **extra)
        assert remote.run(first, "apply", "--producer", "quinn", "--auto-approve")[0] == 0
        live = {str(d["name"]): d for d in cloud.list_droplets(shared)}
        dns = next(n for n in live if n.endswith(".dns"))
        tags = [str(t) for t in live[dns]["tags"]]  # type: ignore[attr-defined]
        cloud.edit_droplet(shared, str(live[dns]["id"]), tags=[*tags, "edited-by-hand"])
        assert remote.run(first, "drift", "--producer", "quinn")[0] == 2
        code, _, err = remote.run(second, "drift", "--producer", "quinn")
        assert code == 2 and "notification" not in err and "remember" not in err, err
        assert remote.get("infra-apply/notified.tfstate") is not None
    finally:
        server.stop()
    assert [p["event"] for p in payloads(httpserver)] == ["apply.done", "drift"]
    no_secret(httpserver)


def test_a_gpu_lease_ending_within_the_hour_is_told_once(example: Path, httpserver: HTTPServer) -> None:
    from tests.test_e2e_gpu import GPU, GpuOps, up

    ops = GpuOps(example)
    try:
        ops.configure(idle_after="2h")  # idle, but not for long enough: reap keeps it
        config = ops.root / "infra-apply.toml"
        config.write_text(config.read_text() + '\n[notify]\nwebhook_url_env = "INFRA_APPLY_WEBHOOK"\n')
        ops.env["INFRA_APPLY_WEBHOOK"] = httpserver.url_for("/hook")
        httpserver.expect_request("/hook").respond_with_data("ok")
        up(ops)  # leased for 1h: its end is within the hour from now on
        httpserver.clear_log()
        for _ in range(2):
            code, out, err = ops.gpu("reap")
            assert code == 0, out + err
        assert GPU in ops.droplets()
    finally:
        stopping.clean_up(ops)
    [event] = payloads(httpserver)
    assert (event["event"], event["gpu"], event["producer"]) == ("gpu.lease_ending", GPU, "ct")
    no_secret(httpserver)


def test_a_plain_http_url_elsewhere_than_localhost_is_never_sent_to() -> None:
    warnings: list[str] = []
    env = {"HOOK": "http://hooks.example.net/services/T000/B000/FAKEsecret"}
    hook = notify.notifier(notify.NotifySettings("HOOK"), env, warnings.append)
    assert hook.url is None
    [line] = warnings
    assert "https" in line and "FAKEsecret" not in line and "hooks.example.net" not in line
