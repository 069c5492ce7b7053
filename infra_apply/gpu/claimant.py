"""Who holds a release claim, and whether that run provably died.

A claim records its run: host name, pid, the process's start time (``/proc/PID/stat`` field
22), the boot id (``/proc/sys/kernel/random/boot_id``) and the pid namespace. On the machine
(same boot, same pid namespace) that wrote it, a pid that is gone, or now belongs to a process
started at another time, proves the claimant dead: its claim is taken over at once. A claim
from anywhere else (another machine, another container, an earlier boot, or a system without
``/proc``) proves nothing here and is taken over only after ``lifecycle.CLAIM_TTL``.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from pathlib import Path

from infra_apply.gpu.lease import Claim
from infra_apply.runtime.terraform import _alive, _start_time

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def claim_now(by: str, at: datetime) -> Claim:
    """A claim by this very run."""
    pid = os.getpid()
    return Claim(
        by,
        at,
        host=socket.gethostname() or None,
        pid=pid,
        started=_start_time(pid),
        boot=_boot(),
        pidns=_pidns(),
    )


def provably_dead(claim: Claim) -> bool:
    """True when ``claim`` was written on this machine since its last boot, in this pid
    namespace, by a process that no longer runs."""
    if claim.pid is None or claim.started is None or claim.boot is None or claim.pidns is None:
        return False
    here = (socket.gethostname() or None, _boot(), _pidns())
    if (claim.host, claim.boot, claim.pidns) != here or None in here:
        return False
    return not _alive(claim.pid, claim.started)


def where(claim: Claim) -> str:
    """``pid 123 on host`` for a refusal; empty for a claim written without its run's identity."""
    if claim.pid is None:
        return ""
    return f"pid {claim.pid} on {claim.host or 'an unnamed host'}"


def _boot() -> str | None:
    try:
        return BOOT_ID.read_text("ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _pidns() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
