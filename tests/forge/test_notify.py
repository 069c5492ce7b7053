"""Webhook notifications: what a local hook receives (pytest_httpserver), retries, and that no
secret ever reaches a payload or a warning."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pytest_httpserver import HTTPServer

from infra_apply.cloud.account import choose
from infra_apply.errors import InfraApplyError
from infra_apply.forge import notify
from infra_apply.manifests.config import ConfigError, load
from infra_apply.plan.drift import DriftReport, Orphan, ProducerDrift
from infra_apply.runtime.workcopy import Context
from infra_apply.sandbox import cloud
from tests import stopping
from tests.conftest import moto_server
from tests.e2e.test_e2e_sandbox import Ops
from tests.runtime.test_remote_state import Remote

TOKEN = "FAKE-do-token_notify"
T = TypeVar("T")


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


@contextlib.contextmanager
def drifted_runners(example: Path, url: str) -> Iterator[tuple[Remote, dict[str, str], dict[str, str]]]:
    """Quinn applied against a moto state bucket, then edited by hand; two runners' environments
    (fresh state dirs, one bucket, one sandbox cloud) with ``url`` as the webhook."""
    server = moto_server()
    try:
        host, port = server.get_host_and_port()
        remote = Remote(example, f"http://{host}:{port}")
        config = remote.root / "infra-apply.toml"
        config.write_text(config.read_text() + '[notify]\nwebhook_url_env = "INFRA_APPLY_WEBHOOK"\n')
        shared = remote.base / "cloud.json"
        extra = {"INFRA_APPLY_SANDBOX_CLOUD": str(shared), "INFRA_APPLY_WEBHOOK": url}
        first, second = remote.env("state-a", **extra), remote.env("state-b", **extra)
        assert remote.run(first, "apply", "--producer", "quinn", "--auto-approve")[0] == 0
        live = {str(d["name"]): d for d in cloud.list_droplets(shared)}
        dns = next(n for n in live if n.endswith(".dns"))
        tags = [str(t) for t in live[dns]["tags"]]  # type: ignore[attr-defined]
        cloud.edit_droplet(shared, str(live[dns]["id"]), tags=[*tags, "edited-by-hand"])
        yield remote, first, second
    finally:
        server.stop()


def test_a_fresh_runner_does_not_tell_drift_told_before_with_remote_state(
    example: Path, httpserver: HTTPServer
) -> None:
    """Remote state: what was told lives in the state bucket, so a second runner with an
    empty state dir (a fresh CI job) knows it."""
    httpserver.expect_request("/hook").respond_with_data("ok")
    with drifted_runners(example, httpserver.url_for("/hook")) as (remote, first, second):
        assert remote.run(first, "drift", "--producer", "quinn")[0] == 2
        code, _, err = remote.run(second, "drift", "--producer", "quinn")
        assert code == 2 and "notification" not in err and "remember" not in err, err
        assert remote.get("infra-apply/notified.tfstate") is not None
    assert [p["event"] for p in payloads(httpserver)] == ["apply.done", "drift"]
    no_secret(httpserver)


def test_a_gpu_lease_ending_within_the_hour_is_told_once(example: Path, httpserver: HTTPServer) -> None:
    from tests.e2e.test_e2e_gpu import GPU, GpuOps, up

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


# --- the GPU verbs' applies ------------------------------------------------------------------


def test_gpu_up_down_and_reap_tell_their_applies_naming_the_command(
    example: Path, httpserver: HTTPServer
) -> None:
    from tests.e2e.test_e2e_gpu import GPU, GpuOps, up

    ops = GpuOps(example)
    try:
        config = ops.root / "infra-apply.toml"

        def configure(**settings: str) -> None:  # [gpu] is the last table: [notify] after it
            ops.configure(**settings)
            config.write_text(config.read_text() + '\n[notify]\nwebhook_url_env = "INFRA_APPLY_WEBHOOK"\n')

        configure(idle_after="0s")
        ops.env["INFRA_APPLY_WEBHOOK"] = httpserver.url_for("/hook")
        httpserver.expect_request("/hook").respond_with_data("ok")
        up(ops)
        configure(idle_after="0s", size="gpu-h200x1-141gb")  # gpu up never resizes one that is up
        assert ops.gpu("up", GPU, "--for", "1h")[0] == 3
        code, out, err = ops.gpu("down", GPU)
        assert code == 0, out + err
        assert ops.gpu("up", GPU, "--for", "1h")[0] == 0
        cloud.inject_faults(ops.cloud, fail_delete=[GPU])
        assert ops.gpu("reap")[0] == 1  # idle: released, but the cloud refuses the delete
        cloud.inject_faults(ops.cloud)
        code, out, err = ops.gpu("reap")
        assert code == 0, out + err
        assert GPU not in ops.droplets()
    finally:
        stopping.clean_up(ops)
    events = [p for p in payloads(httpserver) if str(p["event"]).startswith("apply.")]
    told = [(p["event"], p["command"], p.get("gpu"), p["producer"]) for p in events]
    assert told == [
        ("apply.done", "apply", None, "ct"),
        ("apply.done", "gpu up", GPU, "ct"),
        ("apply.refused", "gpu up", GPU, "ct"),
        ("apply.done", "gpu down", GPU, "ct"),
        ("apply.done", "gpu up", GPU, "ct"),
        ("apply.failed", "gpu reap", GPU, "ct"),
        ("apply.done", "gpu reap", GPU, "ct"),
    ]
    assert events[3]["changes"] == {"delete": 3} and events[3]["applied"] is True  # the GPU's resources
    assert all(p["format_version"] == 1 for p in payloads(httpserver))
    assert f"gpu down {GPU}: applied" in str(events[3]["text"])
    no_secret(httpserver)


# --- once, across runners --------------------------------------------------------------------


class GateHook:
    """A webhook that holds each drift event until a second one arrives or a run has ended
    (at most ``HOLD`` seconds): whatever their timing, two runners' tellings overlap, so a
    runner that tells before it claims is caught telling twice."""

    HOLD = 8.0  # under notify.LIMITS.timeout: a held request is still answered

    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []
        self.cond = threading.Condition()
        self.ended = 0
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with gate.cond:
                    gate.events.append(body)
                    gate.cond.notify_all()
                    if body["event"] == "drift":
                        gate.cond.wait_for(lambda: gate.drifts >= 2 or gate.ended > 0, timeout=gate.HOLD)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    @property
    def drifts(self) -> int:
        return sum(1 for e in self.events if e["event"] == "drift")

    def end(self) -> None:
        with self.cond:
            self.ended += 1
            self.cond.notify_all()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def at_once(runs: list[Callable[[], T]], gate: GateHook) -> list[T]:
    """Each of ``runs`` in a thread of its own, started together; the gate hears of each end."""
    results: dict[int, T] = {}

    def one(i: int) -> None:
        try:
            results[i] = runs[i]()
        finally:
            gate.end()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(runs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == len(runs), "a run raised"
    return [results[i] for i in range(len(runs))]


def test_two_runners_finding_one_drift_at_once_tell_it_once(example: Path) -> None:
    """Two CI runners (fresh state dirs, one state bucket) drift at the same moment: the one
    whose claim lands in the bucket tells, the other finds it claimed."""
    gate = GateHook()
    try:
        with drifted_runners(example, gate.url) as (remote, first, second):

            def drift(env: dict[str, str]) -> Callable[[], tuple[int, str, str]]:
                return lambda: remote.run(env, "drift", "--producer", "quinn")

            done = at_once([drift(first), drift(second)], gate)
    finally:
        gate.close()
    for code, out, err in done:
        assert code == 2 and "not delivered" not in err and "could not remember" not in err, out + err
    assert [e["event"] for e in gate.events] == ["apply.done", "drift"]


def drift_context(base: Path, url: str, say: Callable[[str], None] = lambda _: None) -> Context:
    """A run's context over a tree holding only [notify], with local state under ``base``."""
    root = base / "tree"
    root.mkdir(parents=True, exist_ok=True)
    (root / "infra-apply.toml").write_text('[notify]\nwebhook_url_env = "INFRA_APPLY_WEBHOOK"\n')
    env = {"INFRA_APPLY_STATE_DIR": str(base / "state"), "INFRA_APPLY_WEBHOOK": url, "PATH": "/usr/bin:/bin"}
    return Context(root, base / "generated", choose(True), None, env, say)


def orphan_in(producer: str) -> DriftReport:
    stray = Orphan("4711", f"{producer}-stray", ("managed-by:infra-apply", f"producer:{producer}"))
    return DriftReport(producers=(ProducerDrift(producer),), orphans=(stray,), sandbox=True)


def test_two_runs_on_one_machine_tell_one_drift_once(tmp_path: Path) -> None:
    """Local state: the claim is made under the memory's lock, so of two runs telling the same
    drift at once one tells and the other finds it claimed; a changed drift is told again."""
    gate = GateHook()
    try:
        ctx = drift_context(tmp_path, gate.url)
        at_once([lambda: notify.notify_drift(ctx, orphan_in("quinn")) for _ in range(2)], gate)
        assert [e["producers"] for e in gate.events] == [["quinn"]]
        memory = notify.memory_of(ctx)
        assert isinstance(memory, notify.LocalMemory)
        assert memory.path.stat().st_mode & 0o777 == 0o600
        notify.notify_drift(ctx, orphan_in("quinn"))  # the same drift: told already
        assert len(gate.events) == 1
    finally:
        gate.close()


def test_a_drift_not_delivered_gives_its_claim_back_so_the_next_run_tells_it(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    for _ in range(notify.ATTEMPTS):
        httpserver.expect_ordered_request("/hook").respond_with_data("down", status=503)
    warnings: list[str] = []
    ctx = drift_context(tmp_path, httpserver.url_for("/hook"), warnings.append)
    slept: list[float] = []
    original = notify.notifier

    def no_wait(*args: Any, **kwargs: Any) -> notify.Notifier:
        return replace(original(*args, **kwargs), sleep=slept.append)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(notify, "notifier", no_wait)
        notify.notify_drift(ctx, orphan_in("quinn"))
        assert len(httpserver.log) == notify.ATTEMPTS and len(slept) == notify.ATTEMPTS - 1
        [line] = warnings
        assert "drift notification was not delivered" in line
        assert notify.memory_of(ctx).read().drift.get("quinn") is None  # the claim went back
        httpserver.expect_request("/hook").respond_with_data("ok")
        notify.notify_drift(ctx, orphan_in("quinn"))
    assert len(httpserver.log) == notify.ATTEMPTS + 1
    assert payloads(httpserver)[-1]["producers"] == ["quinn"]
    assert notify.memory_of(ctx).read().drift.get("quinn")


def test_a_claim_that_meets_another_runners_write_is_decided_again_on_it(tmp_path: Path) -> None:
    """What ``RemoteMemory.update`` does on Stale, with the memory's file lock: the change is
    decided on the memory as it is, never on what was read before another run wrote."""
    memory = notify.LocalMemory(tmp_path / "state" / "notified.json", tmp_path / "state")
    memory.update(lambda m: notify.Memory({"quinn": "A"}, m.leases))
    before, after = memory.update(lambda m: notify.Memory({**m.drift, "quinn": "A", "ct": "B"}, m.leases))
    assert before.drift == {"quinn": "A"} and after.drift == {"quinn": "A", "ct": "B"}
    assert memory.read() == after


# --- a configuration that does not load ----------------------------------------------------


def test_an_invalid_config_still_tells_apply_failed_with_its_first_line(
    ops: Ops, httpserver: HTTPServer
) -> None:
    config = ops.root / "infra-apply.toml"
    good = config.read_text()
    config.write_text(good + "\n[droplets.nosuch]\nsize = 1\n")
    code, _, err = ops.apply("quinn")
    assert code == 1
    [event] = payloads(httpserver)
    assert (event["event"], event["producer"], event["command"], event["exit_code"]) == (
        "apply.failed",
        "quinn",
        "apply",
        1,
    )
    first = err.strip().splitlines()[0]
    assert event["error"] == first and first.startswith("infra-apply.toml:"), (event, err)
    assert first in str(event["text"])
    # not TOML at all: nothing can be known, not even [notify]
    config.write_text(good + "\n[droplets\n")
    assert ops.apply("quinn")[0] == 1
    assert len(payloads(httpserver)) == 1
    no_secret(httpserver)


def test_a_reap_stopped_by_an_invalid_config_is_told(ops: Ops, httpserver: HTTPServer) -> None:
    """The reaper runs on a timer with nobody watching: a configuration that stops it (and so
    leaves every GPU billing) is told, with its first line."""
    config = ops.root / "infra-apply.toml"
    config.write_text(config.read_text() + "\n[droplets.nosuch]\nsize = 1\n")
    code, _, err = ops.sandbox("gpu", "reap")
    assert code == 1
    [event] = payloads(httpserver)
    assert (event["event"], event["command"], event["exit_code"]) == ("reap.failed", "gpu reap", 1)
    first = err.strip().splitlines()[0]
    assert event["error"] == first and first.startswith("infra-apply.toml:"), (event, err)
    assert "no GPU lease is reaped" in str(event["text"])
    no_secret(httpserver)


def test_notify_is_read_alone_strictly_from_a_config_that_does_not_load(tmp_path: Path) -> None:
    path = tmp_path / "infra-apply.toml"
    for text, expected in [
        ('[notify]\nwebhook_url_env = "HOOK"\n[nosuch]\n', "HOOK"),
        ('[notify]\nwebhook_url_env = "HOOK"\nextra = 1\n', ""),
        ('[notify]\nwebhook_url_env = "https://hooks.example/x"\n', ""),
        ("[notify]\nwebhook_url_env = 1\n", ""),
        ('notify = "HOOK"\n', ""),
        ('[notify]\nwebhook_url_env = "HOOK"\n[[[', ""),
    ]:
        path.write_text(text)
        assert notify.notify_alone(tmp_path, {}) == notify.NotifySettings(expected), text


def test_a_config_error_line_masks_every_secret_looking_value() -> None:
    env = {"DIGITALOCEAN_TOKEN": TOKEN, "INFRA_APPLY_WEBHOOK": "https://hooks.example/T0/B0/FAKEsecret"}
    error = ConfigError(f"bad value {TOKEN!r} near https://hooks.example/T0/B0/FAKEsecret", path="x.toml")
    line = notify.config_error_line(error, env)
    assert line is not None and TOKEN not in line and "FAKEsecret" not in line and line.startswith("x.toml")
    assert notify.config_error_line(InfraApplyError("terraform said: secret"), env) is None


def test_two_reaps_at_once_tell_a_lease_ending_once_and_a_failed_one_again(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from infra_apply.gpu.lease import Lease

    now = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
    ending = Lease(
        "com.uvlava.ct.gpu", "ct", "ops@host", now - timedelta(hours=7), now + timedelta(minutes=30)
    )
    later = Lease("com.uvlava.mc.gpu", "mc", "ops@host", now, now + timedelta(hours=3))
    gate = GateHook()
    try:
        ctx = drift_context(tmp_path, gate.url)
        at_once([lambda: notify.notify_leases(ctx, [ending, later], now) for _ in range(2)], gate)
        assert [(e["event"], e["gpu"]) for e in gate.events] == [("gpu.lease_ending", ending.gpu)]
    finally:
        gate.close()
    # the hook is gone: not delivered, so the claim goes back and a later reap tells it
    warnings: list[str] = []
    other = replace(ending, gpu="com.uvlava.ct.gpu2")
    ctx = drift_context(tmp_path, "http://127.0.0.1:9/hook", warnings.append)  # nothing listens
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(notify, "BACKOFF_SECONDS", 0.0)
        notify.notify_leases(ctx, [ending, other], now)
    assert len(warnings) == 1 and "not delivered" in warnings[0]
    told = notify.memory_of(ctx).read().leases
    assert f"ct/{ending.gpu}" in told and f"ct/{other.gpu}" not in told
