"""What ``[alerts]`` watches in one producer's module (docs/watching.md).

An uptime check for every service with a ``domain`` on a standing droplet of the producer
whose firewall opens 80/443 (it runs a reverse proxy: the domain is a public HTTPS endpoint),
with a "down" and a certificate-expiry alert; and one metric alert per ``[alerts.droplets]``
threshold on every droplet carrying the producer's ``watched:P`` tag (its standing droplets
with monitoring on), so a new droplet is covered without a change. The Slack webhook URL is
a sensitive Terraform variable read from the environment: it never reaches a rendered file, a
plan report or the comment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from infra_apply.kinds import MONITOR_ALERT, UPTIME_ALERT, UPTIME_CHECK
from infra_apply.manifests.config import Alerts, ConfigError, DropletAlerts
from infra_apply.render import hcl

SLACK_VARIABLE = "alert_slack_url"
# What Terraform gets when the webhook variable is not set and the run plans no alert (a GPU
# verb's targeted plan, a refresh): Terraform wants every variable, and this never reaches
# DigitalOcean (``plans_alerts``: any plan that could send it stops with the error instead).
NOT_SET = "https://hooks.slack.invalid/not-set"
_WATCH_TYPES = (UPTIME_CHECK.type, UPTIME_ALERT.type, MONITOR_ALERT.type)
# [alerts.droplets] key -> (DigitalOcean metric, what the description calls it)
METRICS: Mapping[str, tuple[str, str]] = {
    "cpu_percent": ("v1/insights/droplet/cpu", "CPU"),
    "memory_percent": ("v1/insights/droplet/memory_utilization_percent", "memory"),
    "disk_percent": ("v1/insights/droplet/disk_utilization_percent", "disk"),
}


@dataclass(frozen=True)
class UptimeEntry:
    """One public domain's check (its alerts are named after its address)."""

    domain: str
    service: str
    droplet: str
    address: str

    @property
    def alert_addresses(self) -> tuple[str, str]:
        return (f"{self.address}_down", f"{self.address}_ssl_expiry")


@dataclass(frozen=True)
class MonitorEntry:
    address: str
    name: str  # what the guard and the reports call it (--allow-destroy droplets-cpu)
    metric: str
    value: int
    tag: str
    description: str


@dataclass(frozen=True)
class Watch:
    """Everything ``alerts.tf`` renders for one producer."""

    checks: tuple[UptimeEntry, ...]
    monitors: tuple[MonitorEntry, ...]


@dataclass(frozen=True)
class PublicService:
    """A service with a domain on a droplet whose firewall opens HTTP(S)."""

    domain: str
    service: str
    droplet: str


def watch(
    public: Sequence[PublicService], producer: str, droplet_tag: str | None, thresholds: DropletAlerts
) -> Watch:
    """The checks for ``public`` (one per domain, the first service naming it) and the metric
    alerts on ``droplet_tag`` (None: no droplet of the producer is watched)."""
    seen: dict[str, PublicService] = {}
    for s in sorted(public, key=lambda s: (s.domain, s.droplet, s.service)):
        seen.setdefault(s.domain, s)
    checks = tuple(UptimeEntry(s.domain, s.service, s.droplet, hcl.slug(s.domain)) for s in seen.values())
    monitors = []
    if droplet_tag is not None:
        for key, (metric, what) in METRICS.items():
            value = getattr(thresholds, key)
            if value is not None:
                monitors.append(
                    MonitorEntry(
                        address=f"droplet_{key}",
                        name=f"droplets-{key.removesuffix('_percent')}",
                        metric=metric,
                        value=value,
                        tag=droplet_tag,
                        description=f"{producer} droplets: {what} over {value}% for 5 minutes",
                    )
                )
    return Watch(checks, tuple(monitors))


def terraform_env(
    alerts: Alerts | None, env: Mapping[str, str], *, stand_in_url: str | None
) -> dict[str, str]:
    """``TF_VAR_alert_slack_url`` from the variable ``[alerts] slack.url_env`` names. Unset is
    an error (Terraform would stop for input) unless the account has a URL standing in for it
    (``Account.webhook_stand_in``: the sandbox, which sends nothing)."""
    if alerts is None or alerts.slack is None:
        return {}
    name = alerts.slack.url_env
    url = env.get(name, "")
    message = None
    if url and not url.startswith("https://"):
        # url_env naming another secret (DIGITALOCEAN_TOKEN) would hand it to every alert
        message = (
            f"[alerts] slack.url_env names {name}, which does not hold an https:// webhook URL "
            "(its value is not shown): name the variable holding the Slack webhook URL"
        )
    url = url or stand_in_url or ""
    if not url:
        message = (
            f"[alerts] slack.url_env names {name}, which is not set: export {name} with the Slack webhook URL"
        )
    if message is not None:
        raise alerts.at.error(message) if alerts.at is not None else ConfigError(message)
    return {f"TF_VAR_{SLACK_VARIABLE}": url}


def plans_alerts(targets: Sequence[str], *, refresh_only: bool) -> bool:
    """Whether a plan can change an alert (and so send the Slack URL): any plan but a refresh,
    unless every ``-target`` is another kind (a target takes only what it depends on)."""
    if refresh_only:
        return False
    return not targets or any(t.split(".", 1)[0] in _WATCH_TYPES for t in targets)
