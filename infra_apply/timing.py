"""Phase timings on progress lines (stderr): ``ct: plan done in 12.4s (changes)``.

Elapsed times come from a monotonic clock (a wall-clock step must not make a phase negative or
hours long); the clock is a parameter so a test fixes the seconds instead of waiting for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

Clock = Callable[[], float]
MONOTONIC: Clock = time.monotonic


def done_line(producer: str, phase: str, seconds: float, detail: str = "") -> str:
    """``ct: plan done in 12.4s`` with `` (detail)`` when there is one."""
    line = f"{producer}: {phase} done in {seconds:.1f}s"
    return f"{line} ({detail})" if detail else line


def total_line(count: int, what: str, seconds: float) -> str:
    """The end of a multi-producer run: ``3 producers planned in 14.2s``."""
    return f"{count} producers {what} in {seconds:.1f}s"


def counts_detail(counts: Iterable[tuple[str, int]]) -> str:
    """``3 to create, 1 to update`` from (action, count) pairs (the non-zero counts only), or
    ``no changes``."""
    verbs = {"delete": "destroy"}
    parts = [f"{n} to {verbs.get(action, action)}" for action, n in counts if n]
    return ", ".join(parts) or "no changes"
