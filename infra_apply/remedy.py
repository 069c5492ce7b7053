"""The commands infra-apply prints as remedies: each works exactly as printed.

A remedy printed by a ``--sandbox`` run carries ``--sandbox``: without it the operator's paste
would act on the real account and the real mesh-hosts.json, or find no state at all. A run
given ``--root`` on its command line prints it too: pasted in the same folder, the remedy acts
on that tree, not on whatever tree the folder holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from infra_apply.untrusted import shell

# The global options this process was given on its command line (one CLI run per process; set
# once by the CLI before any command runs, read from any thread).
_given: tuple[str, ...] = ()


def repeat_global(*words: str) -> None:
    """Every remedy printed from now on repeats ``words`` (``--root DIR``) before its verb."""
    global _given
    _given = words


def command(verb: str, *args: str, keep: Sequence[str]) -> str:
    """``infra-apply [--root DIR] VERB ARGS... [KEEP...]``; ``verb`` may be two words (``gpu
    up``), every argument is one shell word (quoted when it needs it). ``keep``: the flags of
    the run's account (``Account.remedy_flags``: ``--sandbox``)."""
    words = ["infra-apply", *map(shell, _given), *verb.split(), *map(shell, args)]
    return " ".join([*words, *keep])


def for_producer(verb: str, producer: str, *args: str, keep: Sequence[str]) -> str:
    """``infra-apply VERB --producer P ARGS... [KEEP...]``."""
    return command(verb, "--producer", producer, *args, keep=keep)


def kept(recorded_sandbox: bool) -> tuple[str, ...]:
    """The flags to keep for a report that records whether its run was a sandbox one (a plan
    file read back by ``comment`` has no account, only that fact)."""
    from infra_apply.cloud.account import choose

    return choose(recorded_sandbox).remedy_flags
