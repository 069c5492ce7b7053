"""The commands infra-apply prints as remedies: each works exactly as printed.

A remedy printed by a ``--sandbox`` run carries ``--sandbox``: without it the operator's paste
would act on the real account and the real mesh-hosts.json, or find no state at all. A run
given ``--root`` on its command line prints it too: pasted in the same folder, the remedy acts
on that tree, not on whatever tree the folder holds.
"""

from __future__ import annotations

from infra_apply.untrusted import shell

# The global options this process was given on its command line (one CLI run per process; set
# once by the CLI before any command runs, read from any thread).
_given: tuple[str, ...] = ()


def repeat_global(*words: str) -> None:
    """Every remedy printed from now on repeats ``words`` (``--root DIR``) before its verb."""
    global _given
    _given = words


def command(verb: str, *args: str, sandbox: bool) -> str:
    """``infra-apply [--root DIR] VERB ARGS... [--sandbox]``; ``verb`` may be two words (``gpu
    up``), every argument is one shell word (quoted when it needs it)."""
    words = ["infra-apply", *map(shell, _given), *verb.split(), *map(shell, args)]
    return " ".join([*words, "--sandbox"] if sandbox else words)


def for_producer(verb: str, producer: str, *args: str, sandbox: bool) -> str:
    """``infra-apply VERB --producer P ARGS... [--sandbox]``."""
    return command(verb, "--producer", producer, *args, sandbox=sandbox)
