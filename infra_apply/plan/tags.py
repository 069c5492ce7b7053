"""The tags infra-apply puts on every droplet, and the rule that reads them back.

Render writes the tags; drift (orphans), the account check (``exists``) and the drift verb read
them with the same rule, so a droplet one of them counts as infra-apply's the others do too.
Apart from ``managed.py`` (which re-exports these names) so that render, which only writes the
tags, does not load the plan parser.
"""

from __future__ import annotations

from collections.abc import Collection

MANAGED_TAG = "managed-by:infra-apply"
PRODUCER_TAG = "producer:"


def producer_tag(producer: str) -> str:
    return PRODUCER_TAG + producer


def is_managed(tags: Collection[str]) -> bool:
    """A droplet carrying these tags is infra-apply's (some producer's)."""
    return MANAGED_TAG in tags


def is_producers(tags: Collection[str], producer: str) -> bool:
    """A droplet carrying these tags is infra-apply's, made for ``producer``."""
    return MANAGED_TAG in tags and producer_tag(producer) in tags


def tagged_producer(tags: Collection[str]) -> str | None:
    """The producer a droplet's tags name; None when they name none."""
    return next((t[len(PRODUCER_TAG) :] for t in tags if t.startswith(PRODUCER_TAG)), None)
