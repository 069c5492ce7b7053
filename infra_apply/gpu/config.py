"""``[gpu."NAME"]`` in infra-apply.toml: one on-demand GPU droplet's lifecycle settings.

```toml
[gpu."com.uvlava.ct.gpu"]
size = "gpu-h100x1-80gb"        # default; image and region follow the size when not given
queue_depth = "ssh lime vision-worker queue-depth"   # prints an integer
idle_after = "30m"              # released once its queue has been empty this long
max_lifetime = "8h"             # released this long after `gpu up`, busy or not
default_lease = "2h"            # `gpu up` without --for
probe_timeout = "30s"           # the queue_depth command is killed after this long
```

``config.py`` (the one reader of infra-apply.toml) hands the raw ``[gpu]`` table to
``parse_gpu_tables`` with a callback that places a key in the file, so every problem here is
one located line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from infra_apply.errors import InfraApplyError, printable

CONFIG_NAME = "infra-apply.toml"

# (key path from the top of the document, e.g. ("gpu", NAME, "idle_after")) -> (line, col);
# (0, 0) when the caller cannot place it.
Locate = Callable[[Sequence[str]], tuple[int, int]]
Fail = Callable[[str | None, str], InfraApplyError]  # (key or None for the table, message)

# DigitalOcean's GPU offer, from /work/shared/do-catalogue-facts.md (gathered 2026-11-29). Pre-flight checks
# the live offer; this table only catches a region that cannot work at all (nyc3, fra1 and ams3,
# the standing hosts' regions, offer no GPU).
NVIDIA_REGIONS = ("nyc2", "tor1")
AMD_REGIONS = ("atl1",)
DEFAULT_SIZE = "gpu-h100x1-80gb"
NVIDIA_IMAGE = "gpu-h100x1-base"

DEFAULT_IDLE_AFTER = timedelta(minutes=30)
DEFAULT_MAX_LIFETIME = timedelta(hours=8)
DEFAULT_LEASE = timedelta(hours=2)
DEFAULT_PROBE_TIMEOUT = timedelta(seconds=30)
# A week is already a long time for an H100 (about 570 USD); beyond it a GPU is standing.
LIFETIME_LIMIT = timedelta(days=7)
PROBE_TIMEOUT_LIMIT = timedelta(minutes=10)

GPU_KEYS = (
    "size",
    "image",
    "region",
    "queue_depth",
    "idle_after",
    "max_lifetime",
    "default_lease",
    "probe_timeout",
)
DURATION_KEYS = ("idle_after", "max_lifetime", "default_lease", "probe_timeout")

_DURATION = re.compile(r"\A(?:(?P<h>[0-9]{1,6})h)?(?:(?P<m>[0-9]{1,6})m)?(?:(?P<s>[0-9]{1,6})s)?\Z")
_SLUG = re.compile(r"\A[a-z0-9][a-z0-9._-]*\Z")
# A droplet name: letters, digits, '.' and '-' (DigitalOcean's own syntax).
_DROPLET_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9.-]{0,252}\Z")


class DurationError(ValueError):
    """Not a duration: carries the message shown to the user."""


def parse_duration(text: str) -> timedelta:
    """``"30m"``, ``"8h"``, ``"90s"``, ``"1h30m"``, ``"0s"``: hours, minutes, seconds in that
    order, each at most once, whole numbers; nothing else (no spaces, signs, fractions, days)."""
    m = _DURATION.fullmatch(text)
    if not text or m is None:
        raise DurationError(f'{text!r} is not a duration; write e.g. "30m", "8h", "90s" or "1h30m"')
    h, mins, s = (int(m.group(g) or 0) for g in ("h", "m", "s"))
    return timedelta(hours=h, minutes=mins, seconds=s)


def format_duration(value: timedelta) -> str:
    """The shortest spelling ``parse_duration`` reads back: ``1h30m``, ``45s``, ``0s``.
    Negative values (clock skew) show as ``0s``; fractions of a second are dropped."""
    total = max(0, int(value.total_seconds()))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    text = "".join(f"{n}{unit}" for n, unit in ((h, "h"), (m, "m"), (s, "s")) if n)
    return text or "0s"


def is_amd(size: str) -> bool:
    return size.startswith("gpu-mi")


@dataclass(frozen=True)
class GpuSettings:
    """One GPU droplet's lifecycle. ``queue_depth`` None: no probe, so the GPU lives until its
    lease ends (never busy, never idle-released), and ``max_lifetime`` still caps it."""

    name: str
    size: str = DEFAULT_SIZE
    image: str = NVIDIA_IMAGE
    region: str = NVIDIA_REGIONS[0]
    queue_depth: str | None = None
    idle_after: timedelta = DEFAULT_IDLE_AFTER
    max_lifetime: timedelta = DEFAULT_MAX_LIFETIME
    default_lease: timedelta = DEFAULT_LEASE
    probe_timeout: timedelta = DEFAULT_PROBE_TIMEOUT


def defaults(name: str) -> GpuSettings:
    """The settings of a GPU droplet infra-apply.toml does not mention."""
    return GpuSettings(name)


def settings_for(name: str, parsed: Mapping[str, GpuSettings]) -> GpuSettings:
    return parsed.get(name) or defaults(name)


def parse_gpu_tables(table: object, locate: Locate, *, path: str = CONFIG_NAME) -> dict[str, GpuSettings]:
    """The raw ``[gpu]`` TOML table (``tomllib``'s dict) -> settings per GPU droplet name.

    Every problem raises ``InfraApplyError`` (rule ``config``) placed by ``locate``: a
    ``[gpu]`` that is not a table of tables, an unknown key, a value of the wrong type, a bad
    duration or slug, a region without GPUs, or durations that contradict each other.
    """
    if not isinstance(table, Mapping):
        raise _error(locate, path, ("gpu",), 'gpu must be a table of GPU droplets: write [gpu."NAME"]')
    out: dict[str, GpuSettings] = {}
    for name, section in table.items():
        if not isinstance(section, Mapping):
            raise _error(
                locate,
                path,
                ("gpu", name),
                f'gpu.{name} must be a table: write [gpu."NAME"] with the GPU droplet\'s name, '
                "then its settings below it",
            )
        out[name] = _parse_one(str(name), section, locate, path)
    return out


def _parse_one(name: str, section: Mapping[str, Any], locate: Locate, path: str) -> GpuSettings:
    def fail(key: str | None, message: str) -> InfraApplyError:  # a Fail
        where = ("gpu", name) if key is None else ("gpu", name, key)
        return _error(locate, path, where, f'[gpu."{name}"] {message}')

    if not _DROPLET_NAME.fullmatch(name):
        raise fail(None, "is not a droplet name (letters, digits, '.' and '-')")
    for key in section:
        if key not in GPU_KEYS:
            raise fail(key, f"{key}: unknown setting (known: {', '.join(GPU_KEYS)})")
    for key, value in section.items():
        if not isinstance(value, str):
            hint = ' (a duration is a string, e.g. "30m")' if key in DURATION_KEYS else ""
            raise fail(key, f"{key} must be a string{hint}")
    durations: dict[str, timedelta] = {}
    for key in DURATION_KEYS:
        if key in section:
            try:
                durations[key] = parse_duration(section[key])
            except DurationError as exc:
                raise fail(key, f"{key}: {exc}") from None
    size = section.get("size", DEFAULT_SIZE)
    cap = durations.get("max_lifetime", DEFAULT_MAX_LIFETIME)
    settings = GpuSettings(
        name=name,
        size=size,
        image=section.get("image", NVIDIA_IMAGE),
        region=section.get("region", (AMD_REGIONS if is_amd(size) else NVIDIA_REGIONS)[0]),
        queue_depth=_queue_depth(section, fail),
        max_lifetime=cap,
        # defaults shrink to fit a short max_lifetime; explicit values that do not fit are errors
        idle_after=durations.get("idle_after", min(DEFAULT_IDLE_AFTER, cap)),
        default_lease=durations.get("default_lease", min(DEFAULT_LEASE, cap)),
        probe_timeout=durations.get("probe_timeout", DEFAULT_PROBE_TIMEOUT),
    )
    _check_slugs(settings, section, fail)
    _check_durations(settings, section, fail)
    return settings


def _queue_depth(section: Mapping[str, str], fail: Fail) -> str | None:
    if "queue_depth" not in section:
        return None
    command = section["queue_depth"]
    if not command.strip():
        raise fail("queue_depth", "queue_depth is empty: leave it out, or give a command printing an integer")
    if "\0" in command:
        raise fail("queue_depth", "queue_depth holds a NUL character")
    return command


def _check_slugs(s: GpuSettings, section: Mapping[str, str], fail: Fail) -> None:
    for key in ("size", "image", "region"):
        value = getattr(s, key)
        if not _SLUG.fullmatch(value):
            raise fail(key, f"{key} {value!r} is not a DigitalOcean slug (lowercase, digits, '-', '.')")
    if not s.size.startswith("gpu-"):
        raise fail("size", f"size {s.size!r} is not a GPU size (GPU sizes start with gpu-: {DEFAULT_SIZE})")
    amd = is_amd(s.size)
    if amd and "image" not in section:
        raise fail("size", f"size {s.size!r} is an AMD GPU: set image ({NVIDIA_IMAGE} is for NVIDIA)")
    regions = AMD_REGIONS if amd else NVIDIA_REGIONS
    if s.region not in regions:
        vendor = "AMD" if amd else "NVIDIA"
        raise fail(
            "region" if "region" in section else "size",
            f"region {s.region!r} offers no {vendor} GPU droplets; use {' or '.join(regions)} "
            "(DigitalOcean's GPU regions; the standing hosts' nyc3, fra1 and ams3 have none)",
        )


def _check_durations(s: GpuSettings, section: Mapping[str, str], fail: Fail) -> None:
    cap = format_duration(s.max_lifetime)
    if s.max_lifetime <= timedelta(0):
        raise fail("max_lifetime", "max_lifetime must be longer than 0s")
    if s.max_lifetime > LIFETIME_LIMIT:
        raise fail(
            "max_lifetime",
            f"max_lifetime {cap} is over {format_duration(LIFETIME_LIMIT)}: that is a standing GPU "
            "(rule gpu_ondemand)",
        )
    if s.idle_after > s.max_lifetime:
        key = "idle_after" if "idle_after" in section else "max_lifetime"
        raise fail(key, f"idle_after {format_duration(s.idle_after)} is longer than max_lifetime {cap}")
    if s.default_lease <= timedelta(0):
        raise fail("default_lease", "default_lease must be longer than 0s")
    if s.default_lease > s.max_lifetime:
        key = "default_lease" if "default_lease" in section else "max_lifetime"
        raise fail(key, f"default_lease {format_duration(s.default_lease)} is longer than max_lifetime {cap}")
    if not timedelta(0) < s.probe_timeout <= PROBE_TIMEOUT_LIMIT:
        raise fail(
            "probe_timeout",
            f"probe_timeout must be between 1s and {format_duration(PROBE_TIMEOUT_LIMIT)}",
        )


def _error(locate: Locate, path: str, where: Sequence[str], message: str) -> InfraApplyError:
    line, col = locate(tuple(where))
    # TOML keys may hold any character: the message must stay on its one line
    return InfraApplyError(printable(message), path=path, line=line, col=col, rule="config")
