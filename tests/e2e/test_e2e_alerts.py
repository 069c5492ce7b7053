"""End to end in the sandbox (issue 21): with [alerts], an apply creates the uptime checks,
their alerts and the droplet alerts; removing a domain removes its check in the next plan
(one --allow-destroy DOMAIN for the check and its alerts); the Slack webhook URL is in no file
infra-apply writes outside the state, no output format and no PR comment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from infra_apply.sandbox import cloud
from tests.e2e.test_e2e_sandbox import Ops
from tests.forge.test_comment import PR, FakeForge
from tests.render.test_alerts import alerts_config

pytestmark = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")

SECRET = "https://hooks.slack.com/services/FAKE-do-token_slackT0/B0/s3cr3tW3bh00k"
ROTATED = "https://hooks.slack.com/services/FAKE-do-token_slackT1/B1/r0tat3d"
DOMAIN = "shop.mc.uvlava.com"


def _files_holding(folder: Path, secret: str) -> list[str]:
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and secret.encode() in p.read_bytes()
    )


def _set_slack_url(path: Path, url: str) -> None:
    with cloud.transaction(path) as c:
        for a in c["uptime_alerts"].values():
            a["notifications"][0]["slack"][0]["url"] = url
        for m in c["monitor_alerts"].values():
            m["alerts"][0]["slack"][0]["url"] = url


def test_checks_and_alerts_are_applied_removed_with_their_domain_and_never_show_the_url(
    example: Path, httpserver: HTTPServer
) -> None:
    alerts_config(example / "tree")
    ops = Ops(example)
    ops.env["SLACK_ALERT_WEBHOOK"] = SECRET
    assert ops.run("render", "--out", str(ops.out))[0] == 0
    code, out, err = ops.apply("mc")
    assert code == 0, out + err
    account = cloud.load(ops.cloud)
    [check] = account["uptime_checks"].values()
    assert (check["target"], check["type"]) == (f"https://{DOMAIN}", "https")
    kinds = sorted(a["type"] for a in account["uptime_alerts"].values())
    assert kinds == ["down", "ssl_expiry"]
    assert all(a["check_id"] == check["id"] for a in account["uptime_alerts"].values())
    ssl = next(a for a in account["uptime_alerts"].values() if a["type"] == "ssl_expiry")
    assert ssl["threshold"] == 14
    # the webhook reached the (stand-in) provider: the variable is wired through
    assert ssl["notifications"][0]["slack"] == [{"channel": "#ops", "url": SECRET}]
    monitors = sorted((m["type"], m["value"], m["tags"]) for m in account["monitor_alerts"].values())
    assert monitors == [
        ("v1/insights/droplet/cpu", 90, ["watched:mc"]),
        ("v1/insights/droplet/disk_utilization_percent", 85, ["watched:mc"]),
        ("v1/insights/droplet/memory_utilization_percent", 90, ["watched:mc"]),
    ]
    # the tag they watch is on mc's droplets (monitoring on): the alerts can fire
    mc = [d for d in account["droplets"].values() if "producer:mc" in d["tags"]]
    assert mc and all("watched:mc" in d["tags"] for d in mc)
    code, out, err = ops.sandbox("plan", "--producer", "mc")
    assert code == 0 and "No changes." in out, out + err

    # A Slack route changed in the console is drift (the sandbox read it back as unchanged),
    # shown without either URL; the next plan puts the webhook back.
    _set_slack_url(ops.cloud, ROTATED)
    code, out, err = ops.sandbox("drift", "--producer", "mc", "--format", "json")
    assert code == 2, out + err
    outside = json.loads(out)["producers"]["mc"]["outside"]
    assert sorted(c["type"] for c in outside) == sorted(
        ["digitalocean_uptime_alert"] * 2 + ["digitalocean_monitor_alert"] * 3
    ), out
    drifted = [out, err]
    assert ops.apply("mc")[0] == 0
    assert all(
        a["notifications"][0]["slack"][0]["url"] == SECRET
        for a in cloud.load(ops.cloud)["uptime_alerts"].values()
    )

    # A new webhook URL updates every alert in place; neither URL is shown.
    shown: list[str] = []
    ops.env["SLACK_ALERT_WEBHOOK"] = ROTATED
    for fmt in ("text", "json", "markdown"):
        code, out, err = ops.sandbox("plan", "--producer", "mc", "--format", fmt)
        assert code == 2, out + err
        shown += [out, err]
    rotated = json.loads(shown[2])["producers"]["mc"]["changes"]
    assert sorted(c["action"] for c in rotated) == ["update"] * 5
    ops.env["SLACK_ALERT_WEBHOOK"] = SECRET

    # The domain goes: its check and both alerts go in the same plan.
    ops.edit("@mc/.infra.yaml", f", domain: {DOMAIN}", "")
    for fmt in ("text", "json", "markdown"):
        code, out, err = ops.sandbox("plan", "--producer", "mc", "--format", fmt)
        assert code == 2, out + err
        shown += [out, err]
    plan_json = shown[-4]
    plan = json.loads(plan_json)["producers"]["mc"]
    gone = sorted((c["type"], c["name"]) for c in plan["changes"] if c["action"] == "delete")
    assert gone == [
        ("digitalocean_uptime_alert", DOMAIN),
        ("digitalocean_uptime_alert", DOMAIN),
        ("digitalocean_uptime_check", DOMAIN),
    ]
    code, out, err = ops.apply("mc")
    assert code == 3
    assert err.count("rerun with --allow-destroy") == 1 and f"--allow-destroy {DOMAIN}" in err
    shown += [out, err]
    code, out, err = ops.apply("mc", "--allow-destroy", DOMAIN)
    assert code == 0, out + err
    shown += [out, err]
    account = cloud.load(ops.cloud)
    assert account["uptime_checks"] == {} and account["uptime_alerts"] == {}
    assert len(account["monitor_alerts"]) == 3  # by tag: not tied to the domain

    # The PR comment, from the JSON plan file CI passes between jobs.
    (example / "plan.json").write_text(plan_json, encoding="utf-8")
    forge = FakeForge(httpserver, "github")
    env_before = dict(ops.env)
    ops.env = forge.env(example, SLACK_ALERT_WEBHOOK=SECRET)
    code, out, err = ops.run("comment", "--pr", str(PR), str(example / "plan.json"))
    ops.env = env_before
    assert code == 0, err
    [comment] = forge.comments
    assert "digitalocean_uptime_check" in comment["body"] or DOMAIN in comment["body"]
    shown += [out, err, comment["body"]]

    assert not [s for s in (*drifted, *shown) if SECRET in s or ROTATED in s]
    assert _files_holding(ops.out, SECRET) == []
    assert _files_holding(ops.root, SECRET) == []
    assert _files_holding(example, SECRET) != []  # the grep can find it: the state holds it
