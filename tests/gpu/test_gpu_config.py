"""``[gpu."NAME"]`` settings: durations, defaults, and a located one-line error for each mistake."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from datetime import timedelta

import pytest

from infra_apply.errors import InfraApplyError
from infra_apply.gpu.config import (
    DurationError,
    GpuSettings,
    Locate,
    defaults,
    format_duration,
    parse_duration,
    parse_gpu_tables,
    settings_for,
)

H, M, S = timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("30m", 30 * M),
        ("8h", 8 * H),
        ("90s", 90 * S),
        ("1h30m", H + 30 * M),
        ("0s", timedelta(0)),
        ("0h", timedelta(0)),
        ("2h0m5s", 2 * H + 5 * S),
        ("1h90m", H + 90 * M),
        ("05m", 5 * M),
        ("999999h", 999999 * H),
    ],
)
def test_durations_that_parse(text: str, value: timedelta) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "30",  # no unit
        "m",
        "1.5h",
        "-5m",
        "+5m",
        " 30m",
        "30m ",
        "30m\n",
        "30M",
        "1d",
        "30m1h",  # units out of order
        "1h1h",
        "30 m",
        "1h 30m",
        "٣m",  # a digit, but not an ASCII one
        "1000000h",  # beyond six digits
        "30min",
        "P1D",
    ],
)
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(DurationError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (90 * S, "1m30s"),
        (H + 30 * M, "1h30m"),
        (8 * H, "8h"),
        (-5 * M, "0s"),
        (1.7 * S, "1s"),
    ],
)
def test_format_duration_is_read_back(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    if value >= timedelta(0):
        assert parse_duration(text) == timedelta(seconds=int(value.total_seconds()))


# --- parse_gpu_tables, fed the way config.py feeds it: tomllib's table and a locator -----------


def locator(text: str) -> Locate:
    """(line, col) of a key path in ``text``: a small stand-in for config.py's locator, enough
    for the tables these tests write (one header per table, one key per line)."""

    def header_path(line: str) -> tuple[str, ...] | None:
        m = re.match(r"\s*\[([^\[\]]+)\]\s*(#.*)?$", line)
        if not m:
            return None
        return tuple(p.strip().strip('"') for p in re.findall(r'"[^"]*"|[^.]+', m.group(1)))

    def locate(path: Sequence[str]) -> tuple[int, int]:
        table: tuple[str, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            found = header_path(line)
            if found is not None:
                table = found
                if found == tuple(path):
                    return number, line.index("[") + 1
                continue
            m = re.match(r'(\s*)("?)([^"=\s]+)\2\s*=', line)
            if m and (*table, m.group(3)) == tuple(path):
                return number, len(m.group(1)) + 1
        return 0, 0

    return locate


def parse(text: str) -> dict[str, GpuSettings]:
    return parse_gpu_tables(tomllib.loads(text)["gpu"], locator(text))


def error_of(text: str) -> str:
    with pytest.raises(InfraApplyError) as info:
        parse(text)
    assert info.value.rule == "config"
    line = info.value.format()
    assert "\n" not in line
    return line


DESIGN_EXAMPLE = """\
[state]
backend = "local"
[gpu."com.uvlava.ct.gpu"]           # the on-demand GPU lifecycle
size = "gpu-h100x1-80gb"
queue_depth = "ssh lime vision-worker queue-depth"   # a command printing an integer
idle_after = "30m"
max_lifetime = "8h"
"""


def test_the_design_example() -> None:
    s = parse(DESIGN_EXAMPLE)["com.uvlava.ct.gpu"]
    assert s == GpuSettings(
        name="com.uvlava.ct.gpu",
        size="gpu-h100x1-80gb",
        image="gpu-h100x1-base",
        region="nyc2",  # NVIDIA GPU droplets are offered in nyc2 and tor1, not nyc3
        queue_depth="ssh lime vision-worker queue-depth",
        idle_after=30 * M,
        max_lifetime=8 * H,
        default_lease=2 * H,
        probe_timeout=30 * S,
    )


def test_every_setting_given() -> None:
    s = parse(
        '[gpu."com.uvlava.mc.gpu"]\nsize = "gpu-l40sx1-48gb"\nimage = "gpu-h100x1-base"\nregion = "tor1"\n'
        'queue_depth = "echo 0"\nidle_after = "0s"\nmax_lifetime = "1h30m"\ndefault_lease = "45m"\n'
        'probe_timeout = "90s"\n'
    )["com.uvlava.mc.gpu"]
    assert (s.size, s.region, s.idle_after, s.max_lifetime, s.default_lease, s.probe_timeout) == (
        "gpu-l40sx1-48gb",
        "tor1",
        timedelta(0),
        90 * M,
        45 * M,
        90 * S,
    )


def test_an_empty_table_and_an_unnamed_gpu_get_the_defaults() -> None:
    parsed = parse('[gpu."com.uvlava.ct.gpu"]\n')
    assert parsed["com.uvlava.ct.gpu"] == defaults("com.uvlava.ct.gpu")
    assert settings_for("com.uvlava.mc.gpu", parsed) == defaults("com.uvlava.mc.gpu")
    d = defaults("x")
    assert (d.queue_depth, d.idle_after, d.max_lifetime, d.default_lease) == (None, 30 * M, 8 * H, 2 * H)


def test_defaults_shrink_to_fit_a_short_max_lifetime() -> None:
    s = parse('[gpu."g"]\nmax_lifetime = "20m"\n')["g"]
    assert (s.idle_after, s.default_lease) == (20 * M, 20 * M)


def test_an_amd_size_defaults_to_its_own_region() -> None:
    s = parse('[gpu."g"]\nsize = "gpu-mi300x1-192gb"\nimage = "amd-rocm"\n')["g"]
    assert (s.region, s.image) == ("atl1", "amd-rocm")


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        ('idle_afer = "30m"', "2:1", "unknown setting (known: size, image, region, queue_depth, idle_after"),
        ('  idle_after = "30"', "2:3", "idle_after: '30' is not a duration"),
        ('idle_after = "1.5h"', "2:1", "idle_after: '1.5h' is not a duration"),
        ("idle_after = 30", "2:1", 'idle_after must be a string (a duration is a string, e.g. "30m")'),
        ('idle_after = "9h"\nmax_lifetime = "8h"', "2:1", "idle_after 9h is longer than max_lifetime 8h"),
        ('max_lifetime = "10m"\nidle_after = "30m"', "3:1", "idle_after 30m is longer than max_lifetime 10m"),
        ('default_lease = "9h"', "2:1", "default_lease 9h is longer than max_lifetime 8h"),
        ('default_lease = "0s"', "2:1", "default_lease must be longer than 0s"),
        ('max_lifetime = "0s"', "2:1", "max_lifetime must be longer than 0s"),
        ('max_lifetime = "169h"', "2:1", "max_lifetime 169h is over 168h: that is a standing GPU"),
        ('probe_timeout = "0s"', "2:1", "probe_timeout must be between 1s and 10m"),
        ('probe_timeout = "11m"', "2:1", "probe_timeout must be between 1s and 10m"),
        ('region = "nyc3"', "2:1", "region 'nyc3' offers no NVIDIA GPU droplets; use nyc2 or tor1"),
        (
            'size = "gpu-mi300x1-192gb"\nimage = "x"\nregion = "nyc2"',
            "4:1",
            "offers no AMD GPU droplets; use atl1",
        ),
        ('size = "gpu-mi300x1-192gb"', "2:1", "is an AMD GPU: set image"),
        ('size = "s-2vcpu-4gb"', "2:1", "size 's-2vcpu-4gb' is not a GPU size"),
        ('size = "GPU-H100"', "2:1", "size 'GPU-H100' is not a DigitalOcean slug"),
        ('image = ""', "2:1", "image '' is not a DigitalOcean slug"),
        ('queue_depth = "  "', "2:1", "queue_depth is empty"),
        ("queue_depth = ['echo', '3']", "2:1", "queue_depth must be a string"),
    ],
)
def test_each_mistake_is_one_located_line(body: str, where: str, message: str) -> None:
    line = error_of(f'[gpu."com.uvlava.ct.gpu"]\n{body}\n')
    assert line.startswith(f'infra-apply.toml:{where}: error config: [gpu."com.uvlava.ct.gpu"] '), line
    assert message in line


def test_gpu_must_be_a_table_of_tables() -> None:
    assert error_of('[state]\nbackend = "local"\n[gpu]\nsize = "gpu-h100x1-80gb"\n') == (
        'infra-apply.toml:4:1: error config: gpu.size must be a table: write [gpu."NAME"] with the GPU '
        "droplet's name, then its settings below it"
    )
    with pytest.raises(InfraApplyError, match=r'gpu must be a table of GPU droplets: write \[gpu."NAME"\]'):
        parse_gpu_tables("nope", lambda path: (1, 1))


def test_a_name_that_is_not_a_droplet_name() -> None:
    line = error_of('[gpu."ct gpu"]\n')
    assert line == (
        'infra-apply.toml:1:1: error config: [gpu."ct gpu"] is not a droplet name '
        "(letters, digits, '.' and '-')"
    )


def test_a_key_with_a_newline_stays_on_one_line() -> None:
    text = '[gpu."g"]\n"idle\\nafter" = "30m"\n'
    with pytest.raises(InfraApplyError) as info:
        parse(text)
    assert "\n" not in info.value.format()
    assert "idle\\nafter: unknown setting" in info.value.format()


def test_the_path_is_the_callers() -> None:
    with pytest.raises(InfraApplyError) as info:
        parse_gpu_tables({"g": {"bogus": "1"}}, lambda path: (7, 3), path="conf/infra.toml")
    assert info.value.format().startswith("conf/infra.toml:7:3: error config: ")
