"""The sandbox account's catalogue: regions, sizes with prices, images, as DigitalOcean lists them.

Taken from ``/work/shared/do-catalogue-facts.md`` (gathered 2026-11-29 from DigitalOcean's API reference and
public projects pinning its sizes, prices and GPU regions). The prices come from
``infra_apply.plan.prices`` (the package's one dated price table, also the plan summaries' offline
fallback). Where the facts give no figure (most GPU sizes' prices and machine shapes), the
table says ``None`` rather than guess one; a sandbox droplet of such a size reports 0 for it.

Pre-flight reads these through the same shapes as the API's ``/v2/regions``, ``/v2/sizes`` and
``/v2/images`` (``regions()``, ``sizes()``, ``images()``), so one check serves both accounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra_apply.manifests.config import UPTIME_REGIONS as UPTIME_REGIONS  # where uptime checks probe from
from infra_apply.plan.prices import AS_OF as AS_OF  # the catalogue's date is its prices' date
from infra_apply.plan.prices import DISKS_GB, PRICES, as_float

# The convention's regions for standing hosts (nyc3, ams3, fra1) and a few more of DigitalOcean's
# public regions (droplets an old Terraform root made elsewhere), where the Basic sizes are
# offered; and where DigitalOcean offers GPU droplets.
STANDARD_REGIONS = ("nyc3", "ams3", "fra1", "lon1", "sfo3", "sgp1", "tor1")
NVIDIA_GPU_REGIONS = ("nyc2", "tor1")
AMD_GPU_REGIONS = ("atl1",)

REGION_NAMES = {
    "ams3": "Amsterdam 3",
    "atl1": "Atlanta 1",
    "fra1": "Frankfurt 1",
    "lon1": "London 1",
    "nyc2": "New York 2",
    "nyc3": "New York 3",
    "sfo3": "San Francisco 3",
    "sgp1": "Singapore 1",
    "tor1": "Toronto 1",
}


@dataclass(frozen=True)
class Size:
    slug: str
    vcpus: int | None
    memory_mb: int | None
    regions: tuple[str, ...]
    description: str

    @property
    def disk_gb(self) -> int | None:
        return DISKS_GB.get(self.slug)

    @property
    def price_monthly(self) -> float | None:
        price = PRICES.get(self.slug)
        return as_float(price.monthly) if price is not None else None

    @property
    def price_hourly(self) -> float | None:
        price = PRICES.get(self.slug)
        return as_float(price.hourly) if price is not None else None


def _basic(slug: str, vcpus: int, memory_gb: float) -> Size:
    return Size(slug, vcpus, int(memory_gb * 1024), STANDARD_REGIONS, "Basic")


def _gpu(
    slug: str,
    regions: tuple[str, ...],
    shape: tuple[int | None, int | None] = (None, None),
) -> Size:
    return Size(slug, *shape, regions, "GPU")


SIZES: dict[str, Size] = {
    s.slug: s
    for s in (
        _basic("s-1vcpu-512mb-10gb", 1, 0.5),
        _basic("s-1vcpu-1gb", 1, 1),
        _basic("s-1vcpu-2gb", 1, 2),
        _basic("s-2vcpu-2gb", 2, 2),
        _basic("s-2vcpu-4gb", 2, 4),
        _basic("s-4vcpu-8gb", 4, 8),
        _basic("s-8vcpu-16gb", 8, 16),
        _gpu("gpu-h100x1-80gb", NVIDIA_GPU_REGIONS, shape=(20, 240 * 1024)),
        _gpu("gpu-h100x8-640gb", NVIDIA_GPU_REGIONS),
        _gpu("gpu-h200x1-141gb", NVIDIA_GPU_REGIONS),
        _gpu("gpu-l40sx1-48gb", NVIDIA_GPU_REGIONS),
        _gpu("gpu-6000adax1-48gb", NVIDIA_GPU_REGIONS),
        _gpu("gpu-4000adax1-20gb", NVIDIA_GPU_REGIONS),
        _gpu("gpu-mi300x1-192gb", AMD_GPU_REGIONS),
    )
}

# slug -> (distribution, regions); "base" images go with the NVIDIA GPU sizes.
ALL_REGIONS = tuple(sorted(REGION_NAMES))
IMAGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "ubuntu-24-04-x64": ("Ubuntu", "24.04 (LTS) x64", ALL_REGIONS),
    "ubuntu-22-04-x64": ("Ubuntu", "22.04 (LTS) x64", ALL_REGIONS),
    "debian-12-x64": ("Debian", "12 x64", ALL_REGIONS),
    "gpu-h100x1-base": ("Ubuntu", "NVIDIA AI/ML Ready (H100)", NVIDIA_GPU_REGIONS),
}
DISTRIBUTION_IMAGES = frozenset({"ubuntu-24-04-x64", "ubuntu-22-04-x64", "debian-12-x64"})


def sizes() -> list[dict[str, Any]]:
    """``GET /v2/sizes`` ``sizes``."""
    return [
        {
            "slug": s.slug,
            "vcpus": s.vcpus,
            "memory": s.memory_mb,
            "disk": s.disk_gb,
            "transfer": None,
            "price_monthly": s.price_monthly,
            "price_hourly": s.price_hourly,
            "regions": list(s.regions),
            "available": True,
            "description": s.description,
        }
        for s in SIZES.values()
    ]


def regions() -> list[dict[str, Any]]:
    """``GET /v2/regions`` ``regions``."""
    return [
        {
            "slug": slug,
            "name": name,
            "sizes": [s.slug for s in SIZES.values() if slug in s.regions],
            "available": True,
            "features": ["private_networking", "backups", "ipv6", "metadata", "install_agent"],
        }
        for slug, name in sorted(REGION_NAMES.items())
    ]


def images(*, distribution_only: bool = False) -> list[dict[str, Any]]:
    """``GET /v2/images`` ``images`` (``?type=distribution``: only the distributions)."""
    return [
        {
            "id": 170000000 + number,
            "slug": slug,
            "distribution": distribution,
            "name": name,
            "type": "base",
            "public": True,
            "regions": list(where),
            "status": "available",
        }
        for number, (slug, (distribution, name, where)) in enumerate(sorted(IMAGES.items()), start=1)
        if slug in DISTRIBUTION_IMAGES or not distribution_only
    ]
