"""[alerts] (issue 21): the configuration, what it watches, the golden module with alerts
configured (tests/fixtures/alerts), and the Slack webhook URL kept out of every file shown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from infra_apply.cloud.account import SandboxAccount
from infra_apply.manifests import config
from infra_apply.manifests.config import Alerts, ConfigError, DropletAlerts, SlackRoute
from infra_apply.render import alerts
from infra_apply.render.module import ProducerContext, names_of, sensitive_env
from infra_apply.render.output import Rendered
from infra_apply.runtime.workcopy import sensitive_or_missing
from infra_apply.sandbox.install import install
from tests.conftest import EXAMPLE_TREE, REPO, cli_env, run_cli

FIXTURE = REPO / "tests" / "fixtures" / "alerts"
GOLDEN = FIXTURE / "generated"

FULL = """\
[alerts]
email = ["ops@example.net"]
slack = { channel = "#ops", url_env = "SLACK_ALERT_WEBHOOK" }
cert_expiry_days = 14
[alerts.droplets]
cpu_percent = 90
memory_percent = 90
disk_percent = 85
"""

SANDBOX = SandboxAccount()


def load(tmp_path: Path, toml: str) -> config.Config:
    (tmp_path / "infra-apply.toml").write_text(toml, encoding="utf-8")
    return config.load(tmp_path, {})


def test_the_alerts_table_is_read_into_settings(tmp_path: Path) -> None:
    got = load(tmp_path, FULL).alerts
    assert got == Alerts(
        email=("ops@example.net",),
        slack=SlackRoute("#ops", "SLACK_ALERT_WEBHOOK"),
        cert_expiry_days=14,
        regions=("us_east", "eu_west"),
        droplets=DropletAlerts(90, 90, 85),
    )
    assert got is not None and got.at is not None and (got.at.line, got.at.col) == (1, 1)


def test_without_an_alerts_table_nothing_is_watched(tmp_path: Path) -> None:
    assert load(tmp_path, "[droplets]\nmonitoring = true\n").alerts is None


@pytest.mark.parametrize(
    ("toml", "where", "message"),
    [
        ('[alerts]\nemail = ["ops@example.net"]\npager = "x"\n', "3:1", "[alerts] pager: unknown setting"),
        ('[alerts]\nemail = ["not-an-address"]\n', "2:1", "'not-an-address' is not an email address"),
        ("[alerts]\ncert_expiry_days = 14\n", "1:1", "[alerts] says nowhere to send alerts"),
        ('[alerts]\nemail = ["o@x.net"]\ncert_expiry_days = 0\n', "3:1", "cert_expiry_days must be"),
        ('[alerts]\nemail = ["o@x.net"]\nregions = ["nyc3"]\n', "3:1",
         "'nyc3' is not an uptime check region"),
        ('[alerts]\nslack = { channel = "#ops", url = "https://hooks.slack.com/x" }\n', "2:1",
         "slack.url: unknown setting"),
        ('[alerts]\nslack = { channel = "#ops", url_env = "not a name" }\n', "2:1",
         "slack.url_env must name"),
        ('[alerts]\nemail = ["o@x.net"]\n[alerts.droplets]\ncpu_percent = 150\n', "4:1",
         "[alerts.droplets] cpu_percent must be a whole percent"),
        ('[alerts]\nemail = ["o@x.net"]\n[alerts.droplets]\nload = 3\n', "4:1",
         "[alerts.droplets] load: unknown setting"),
    ],
)  # fmt: skip
def test_a_bad_alerts_setting_is_one_located_error(
    tmp_path: Path, toml: str, where: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, toml)
    err = caught.value
    assert f"{err.line}:{err.col}" == where
    assert message in err.message
    assert "https://hooks.slack.com" not in err.message  # a URL written here is never echoed


def test_a_check_per_public_domain_and_alerts_by_the_producers_tag() -> None:
    public = [
        alerts.PublicService("b.example.net", "forge", "edge"),
        alerts.PublicService("a.example.net", "web", "edge"),
        alerts.PublicService("a.example.net", "web-2", "edge"),  # one check per domain
    ]
    w = alerts.watch(public, "quinn", "producer:quinn", DropletAlerts(cpu_percent=90))
    assert [(c.domain, c.service) for c in w.checks] == [("a.example.net", "web"), ("b.example.net", "forge")]
    [cpu] = w.monitors
    assert (cpu.metric, cpu.value, cpu.tag, cpu.name) == (
        "v1/insights/droplet/cpu",
        90,
        "producer:quinn",
        "droplets-cpu",
    )
    # a check and its alerts go by the domain: one --allow-destroy DOMAIN allows all three
    names = names_of(ProducerContext("quinn", checks=w.checks, monitors=w.monitors))
    check = w.checks[0]
    assert {names[f"digitalocean_uptime_alert.{a}"] for a in check.alert_addresses} == {"a.example.net"}
    assert names[f"digitalocean_uptime_check.{check.address}"] == "a.example.net"
    assert names[f"digitalocean_monitor_alert.{cpu.address}"] == "droplets-cpu"


def test_the_slack_url_comes_from_the_environment_named(tmp_path: Path) -> None:
    got = load(tmp_path, FULL).alerts
    url = "https://hooks.slack.com/services/FAKE-do-token_slack"
    assert alerts.terraform_env(got, {"SLACK_ALERT_WEBHOOK": url}, stand_in_url=None) == {
        "TF_VAR_alert_slack_url": url
    }
    assert alerts.terraform_env(got, {}, stand_in_url=SANDBOX.webhook_stand_in) == {
        "TF_VAR_alert_slack_url": SANDBOX.webhook_stand_in
    }
    with pytest.raises(ConfigError) as caught:
        alerts.terraform_env(got, {}, stand_in_url=None)
    assert (caught.value.line, caught.value.col) == (1, 1)
    assert "export SLACK_ALERT_WEBHOOK" in caught.value.message
    assert alerts.terraform_env(None, {}, stand_in_url=None) == {}


def test_a_module_declaring_the_webhook_variable_gets_it_from_the_environment(tmp_path: Path) -> None:
    cfg = load(tmp_path, FULL)
    url = "https://hooks.slack.com/services/FAKE-do-token_slack"
    declares = Rendered("quinn", {"alerts.tf": 'variable "alert_slack_url" {\n  sensitive = true\n}\n'})
    assert sensitive_env(declares, cfg, {"SLACK_ALERT_WEBHOOK": url}, None) == {"TF_VAR_alert_slack_url": url}
    # e-mail only, or nothing watched: no variable declared, nothing asked of the environment
    assert sensitive_env(Rendered("quinn", {"alerts.tf": "# e-mail only\n"}), cfg, {}, None) == {}
    with pytest.raises(ConfigError, match="export SLACK_ALERT_WEBHOOK"):
        sensitive_env(declares, cfg, {}, None)


def test_a_url_env_holding_no_webhook_url_is_never_handed_to_terraform(tmp_path: Path) -> None:
    """slack.url_env = "DIGITALOCEAN_TOKEN" by mistake put the token in every alert (sent to
    DigitalOcean, kept in its console); the error never shows the value."""
    got = load(tmp_path, FULL).alerts
    token = "FAKE-do-token_mistyped-url-env"
    for env in ({"SLACK_ALERT_WEBHOOK": token}, {"SLACK_ALERT_WEBHOOK": "http://hooks.example/x"}):
        for stand_in in (None, SANDBOX.webhook_stand_in):
            with pytest.raises(ConfigError) as caught:
                alerts.terraform_env(got, env, stand_in_url=stand_in)
            line = caught.value.format()
            assert "does not hold an https:// webhook URL" in line and token not in line, line
    declares = Rendered("quinn", {"alerts.tf": 'variable "alert_slack_url" {\n  sensitive = true\n}\n'})
    cfg = load(tmp_path, FULL)
    env_given, missing = sensitive_or_missing(declares, cfg, {"SLACK_ALERT_WEBHOOK": token}, None)
    assert missing is not None and env_given == {"TF_VAR_alert_slack_url": alerts.NOT_SET}


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")
def test_a_run_that_plans_no_alert_needs_no_slack_url(tmp_path: Path) -> None:
    """The GPU reaper's targeted plans, drift's refresh and db-credentials never change an
    alert: with the URL unset they ran into the located error (a reaper that stops releasing
    GPUs bills them); a plan that could change an alert still stops with it."""
    from infra_apply.runtime import terraform as tf
    from infra_apply.runtime.workcopy import TerraformCopy

    cfg = load(tmp_path, FULL)
    declares = Rendered("ct", {"alerts.tf": 'variable "alert_slack_url" {\n  sensitive = true\n}\n'})
    env, missing = sensitive_or_missing(declares, cfg, {}, None)
    assert env == {"TF_VAR_alert_slack_url": alerts.NOT_SET} and missing is not None
    assert "export SLACK_ALERT_WEBHOOK" in missing.message
    work = tmp_path / "work"
    work.mkdir()
    (work / "main.tf").write_text(
        'variable "alert_slack_url" {\n  type      = string\n  sensitive = true\n}\n'
        'resource "terraform_data" "gpu" {}\n'
        'resource "terraform_data" "alert" {\n  input = var.alert_slack_url\n}\n'
    )
    wd = tf.Workdir(tf.find_binary(os.environ), work, {**os.environ, **env, "TF_IN_AUTOMATION": "1"})
    copy = TerraformCopy(wd, "ct", lambda _: None, missing_url=missing)
    tf.init(wd)
    assert copy.plan(targets=["terraform_data.gpu"])  # the GPU's own plan goes ahead
    copy.plan(refresh_only=True)
    for targets in ([], ["digitalocean_uptime_alert.shop_down", "terraform_data.gpu"]):
        with pytest.raises(ConfigError) as caught:
            copy.plan(targets=targets)
        assert caught.value is missing
    # the strict form stays for what needs the URL itself
    with pytest.raises(ConfigError):
        sensitive_env(declares, cfg, {}, None)


def golden_tree(tmp_path: Path) -> Path:
    """generated/ with the golden files over it: the example tree's render with [alerts] (only
    the files differing from generated/ are kept under tests/fixtures/alerts)."""
    out = tmp_path / "golden"
    shutil.copytree(REPO / "generated", out)
    for kept in GOLDEN.glob("*/*.tf"):
        shutil.copy(kept, out / kept.parent.name / kept.name)
    return out


def alerts_config(folder: Path) -> Path:
    """The example tree's infra-apply.toml with the fixture's [alerts] appended."""
    path = folder / "infra-apply.toml"
    example = (EXAMPLE_TREE / "infra-apply.toml").read_text(encoding="utf-8")
    path.write_text(example + (FIXTURE / "alerts.toml").read_text(encoding="utf-8"), encoding="utf-8")
    return path


def _render_check(tmp_path: Path, out: Path) -> subprocess.CompletedProcess[str]:
    # A copy of the tree with the config in its place: a render names its config file in the
    # headers (the cluster's trusted sources), as the root's own infra-apply.toml.
    tree = tmp_path / "tree"
    shutil.copytree(EXAMPLE_TREE, tree)
    alerts_config(tree)
    return run_cli("--root", str(tree), "render", "--check", "--out", str(out), env=cli_env(tmp_path))


def test_the_golden_module_with_alerts_configured_is_current(tmp_path: Path) -> None:
    r = _render_check(tmp_path, golden_tree(tmp_path))
    assert r.returncode == 0, (
        r.stdout + r.stderr + "\n(make golden refreshes tests/fixtures/alerts/generated)"
    )
    quinn = (GOLDEN / "quinn" / "alerts.tf").read_text()
    # the shared edge droplet (quinn's) owns the checks of every domain behind its proxy
    assert quinn.count('resource "digitalocean_uptime_check"') == 6
    assert 'target  = "https://forge.ct.uvlava.com"' in quinn
    assert quinn.count('resource "digitalocean_uptime_alert"') == 12
    assert 'tags        = ["watched:quinn"]' in quinn
    # ct runs no reverse proxy: its droplets are watched, no domain is checked
    ct = (GOLDEN / "ct" / "alerts.tf").read_text()
    assert "digitalocean_uptime_check" not in ct and ct.count("digitalocean_monitor_alert") == 3
    # the example tree itself has no [alerts]: nothing rendered there
    assert not list((REPO / "generated").glob("*/alerts.tf"))


def test_droplet_alerts_watch_only_the_standing_droplets_with_monitoring_on(tmp_path: Path) -> None:
    """An alert on a droplet whose agent sends no metric could never fire, and a GPU's busy CPU
    is its job: the alerts' tag goes on the standing droplets with monitoring on only."""
    tree = tmp_path / "tree"
    shutil.copytree(EXAMPLE_TREE, tree)
    alerts_config(tree)
    with (tree / "infra-apply.toml").open("a", encoding="utf-8") as f:
        f.write("[producers.mc.droplets]\nmonitoring = false\n")
    out = tmp_path / "out"
    r = run_cli("--root", str(tree), "render", "--out", str(out), env=cli_env(tmp_path))
    assert r.returncode == 0, r.stderr
    # mc: no droplet with monitoring on, so nothing to watch by tag and no tag to carry
    assert "watched:" not in (out / "mc" / "droplets.tf").read_text()
    mc_alerts = out / "mc" / "alerts.tf"
    assert not mc_alerts.exists() or "digitalocean_monitor_alert" not in mc_alerts.read_text()
    # ct: its standing droplets carry the tag, its GPU droplet does not
    assert 'tags        = ["watched:ct"]' in (out / "ct" / "alerts.tf").read_text()
    assert (out / "ct" / "droplets.tf").read_text().count('"watched:ct"') == 2
    assert "watched:" not in (out / "ct" / "gpu.tf").read_text()


def test_a_stale_alerts_golden_fails_the_check(tmp_path: Path) -> None:
    out = golden_tree(tmp_path)
    (out / "mc" / "alerts.tf").write_text("# Generated by infra-apply\n")
    r = _render_check(tmp_path, out)
    assert r.returncode != 0 and "mc/alerts.tf" in r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")
def test_the_golden_modules_validate_and_plan_the_alerts(tmp_path: Path) -> None:
    account = config.load(EXAMPLE_TREE, {}).sandbox
    env = {k: v for k, v in os.environ.items() if k != "TF_PLUGIN_CACHE_DIR"}
    env |= install(tmp_path / "state", account.clusters, account.ssh_keys).env
    env["TF_VAR_alert_slack_url"] = "https://hooks.slack.com/services/FAKE-do-token_x"
    work = golden_tree(tmp_path) / "mc"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["terraform", *args], cwd=work, env=env, capture_output=True, text=True)

    assert run("fmt", "-check", "-recursive").returncode == 0
    assert run("init", "-input=false").returncode == 0
    validated = run("validate", "-json")
    assert json.loads(validated.stdout)["valid"], validated.stdout
    planned = run("plan", "-input=false", "-out=p")
    assert planned.returncode == 0, planned.stderr
    doc = json.loads(run("show", "-json", "p").stdout)
    types = sorted(rc["type"] for rc in doc["resource_changes"] if rc["change"]["actions"] == ["create"])
    assert types.count("digitalocean_uptime_check") == 1
    assert types.count("digitalocean_uptime_alert") == 2
    assert types.count("digitalocean_monitor_alert") == 3
