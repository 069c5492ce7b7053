"""``gpu status`` rows: every GPU droplet, up or down, with uptime, lease end, last busy time,
hourly price and cost so far, as text and JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from infra_apply.gpu.config import GpuSettings
from infra_apply.gpu.lease import Claim, Lease, mark_up, new_lease
from infra_apply.gpu.status import GpuRef, LiveGpu, rows, to_json, to_text

H, M = timedelta(hours=1), timedelta(minutes=1)
T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
NOW = T0 + 75 * M
CT, MC, QUINN = "com.uvlava.ct.gpu", "com.uvlava.mc.gpu", "com.uvlava.quinn.gpu"
DECLARED = [GpuRef(MC, "mc"), GpuRef(CT, "ct"), GpuRef(QUINN, "quinn")]
SETTINGS = {CT: GpuSettings(CT, region="tor1")}


def up_lease() -> Lease:
    leased = new_lease(T0, None, GpuSettings(CT), producer="ct", who="ops@box")
    up = mark_up(leased, T0 + 5 * M, droplet_id="1001", ip="203.0.113.9", hourly_price=3.39)
    return replace(up, last_busy=T0 + 60 * M)


def test_every_gpu_up_or_down() -> None:
    table = rows(DECLARED, {CT: up_lease()}, SETTINGS, NOW)
    assert [(r.gpu, r.producer, r.state) for r in table] == [
        (CT, "ct", "up"),
        (MC, "mc", "down"),
        (QUINN, "quinn", "down"),
    ]
    ct = table[0]
    assert (ct.uptime, ct.until, ct.last_busy, ct.hourly_price, ct.cost) == (
        70 * M,
        T0 + 2 * H,
        T0 + H,
        3.39,
        6.78,
    )
    assert (ct.size, ct.region, ct.who, ct.droplet_id, ct.ip) == (
        "gpu-h100x1-80gb",
        "tor1",
        "ops@box",
        "1001",
        "203.0.113.9",
    )
    down = table[1]
    assert (down.uptime, down.until, down.cost, down.region) == (timedelta(0), None, None, "nyc2")


def test_text() -> None:
    text = to_text(rows(DECLARED, {CT: up_lease()}, SETTINGS, NOW), NOW)
    assert text.splitlines() == [
        "GPU                   PRODUCER  STATE  UPTIME  LEASE END                   "
        "LAST BUSY                    $/HOUR  COST",
        "com.uvlava.ct.gpu     ct        up     1h10m   2026-11-29 12:00Z (in 45m)  "
        "2026-11-29 11:00Z (15m ago)  $3.39   $6.78",
        # A GPU that is down shows what an hour would cost: its size's dated list price.
        "com.uvlava.mc.gpu     mc        down   -       -                           "
        "-                            $3.39   -",
        "com.uvlava.quinn.gpu  quinn     down   -       -                           "
        "-                            $3.39   -",
        "cost: hours started since the droplet came up x its hourly price, at most 672 hours a month "
        "(an upper estimate; the bill is the truth)",
    ]


def test_json() -> None:
    doc = json.loads(to_json(rows(DECLARED, {CT: up_lease()}, SETTINGS, NOW), NOW))
    assert doc["now"] == "2026-11-29T11:15:00Z"
    assert doc["gpus"][0] == {
        "gpu": CT,
        "producer": "ct",
        "state": "up",
        "size": "gpu-h100x1-80gb",
        "region": "tor1",
        "who": "ops@box",
        "lease_since": "2026-11-29T10:00:00Z",
        "lease_until": "2026-11-29T12:00:00Z",
        "last_busy": "2026-11-29T11:00:00Z",
        "uptime_seconds": 4200,
        "hourly_price": 3.39,
        "cost_so_far": 6.78,
        "droplet_id": "1001",
        "ip": "203.0.113.9",
        "releasing": None,
        "last_error": None,
    }
    assert [g["state"] for g in doc["gpus"]] == ["up", "down", "down"]


def test_states_that_need_attention() -> None:
    pending = new_lease(T0, None, GpuSettings(MC), producer="mc", who="ops@box")  # apply still running
    releasing = replace(up_lease(), releasing=Claim("reaper@box run 1a2b3c4d", NOW - M))
    failed = replace(
        new_lease(T0, None, GpuSettings(QUINN), producer="quinn", who="q@x"), last_error="apply failed: boom"
    )
    orphan = LiveGpu("2002", "203.0.113.20", 3.39, created=T0)
    table = rows(
        DECLARED,
        {CT: releasing, MC: pending, QUINN: failed},
        SETTINGS,
        NOW,
        live={"com.uvlava.x.gpu": orphan},
    )
    assert [(r.gpu, r.state) for r in table] == [
        ("com.uvlava.x.gpu", "unleased"),
        (CT, "releasing"),
        (MC, "leased"),
        (QUINN, "leased"),
    ]
    text = to_text(table, NOW)
    assert f"{CT}: being released by reaper@box run 1a2b3c4d since 2026-11-29T11:14:00Z" in text
    assert f"{QUINN}: last release failed (the next reap retries): apply failed: boom" in text
    assert (
        "com.uvlava.x.gpu: up without a lease: gpu reap releases it unless its queue is busy (then it "
        "takes a lease); gpu up com.uvlava.x.gpu leases it, gpu down com.uvlava.x.gpu releases it now" in text
    )
    unleased = table[0]
    assert (unleased.producer, unleased.uptime, unleased.cost) == ("?", 75 * M, 6.78)


def test_an_unleased_gpu_whose_state_has_no_created_at_has_an_unknown_uptime_and_cost() -> None:
    # never a made-up uptime (0s would also bill nothing): unknown, "?" in text, null in JSON
    (row,) = rows([GpuRef(CT, "ct")], {}, {}, NOW, live={CT: LiveGpu("1001", None, 3.39)})
    assert (row.state, row.uptime, row.hourly_price, row.cost) == ("unleased", None, 3.39, None)
    assert to_text([row], NOW).splitlines()[1].split()[3] == "?"
    (doc,) = json.loads(to_json([row], NOW))["gpus"]
    assert (doc["uptime_seconds"], doc["cost_so_far"]) == (None, None)


def test_a_leased_gpu_found_in_state_is_up_before_its_droplet_is_recorded() -> None:
    pending = new_lease(T0, None, GpuSettings(CT), producer="ct", who="ops@box")
    (row,) = rows([GpuRef(CT, "ct")], {CT: pending}, {}, NOW, live={CT: LiveGpu("1001", "203.0.113.9")})
    assert (row.state, row.droplet_id, row.ip) == ("up", "1001", "203.0.113.9")


def test_nothing_declared() -> None:
    assert to_text(rows([], {}, {}, NOW), NOW) == "no GPU droplets declared or leased\n"
    assert json.loads(to_json([], NOW))["gpus"] == []
