"""The commands infra-apply prints as remedies: each works exactly as printed.

A remedy printed by a ``--sandbox`` run carries ``--sandbox``: without it the operator's paste
would act on the real account and the real mesh-hosts.json, or find no state at all.
"""

from __future__ import annotations

from infra_apply.untrusted import shell


def command(verb: str, *args: str, sandbox: bool) -> str:
    """``infra-apply VERB ARGS... [--sandbox]``; ``verb`` may be two words (``gpu up``), every
    argument is one shell word (quoted when it needs it)."""
    words = ["infra-apply", *verb.split(), *map(shell, args)]
    return " ".join([*words, "--sandbox"] if sandbox else words)


def for_producer(verb: str, producer: str, *args: str, sandbox: bool) -> str:
    """``infra-apply VERB --producer P ARGS... [--sandbox]``."""
    return command(verb, "--producer", producer, *args, sandbox=sandbox)
