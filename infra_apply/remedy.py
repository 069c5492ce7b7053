"""The commands infra-apply prints as remedies: each works exactly as printed.

A remedy printed by a ``--sandbox`` run carries ``--sandbox``: without it the operator's paste
would act on the real account and the real mesh-hosts.json, or find no state at all. A run
given ``--root`` on its command line prints it too: pasted in the same folder, the remedy acts
on that tree, not on whatever tree the folder holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from infra_apply.untrusted import shell

# What this process was given on its command line (one CLI run per process; set by the CLI
# before any command runs, read from any thread): the global options to repeat before the verb
# (``--root``), ``--mesh-hosts`` (every verb takes it after itself), ``--out`` and the verbs
# that take it.
_given: tuple[str, ...] = ()
_mesh: tuple[str, ...] = ()
_out: tuple[str, ...] = ()
_out_verbs: frozenset[str] = frozenset()


def repeat_global(*words: str) -> None:
    """Every remedy printed from now on repeats ``words`` (``--root DIR``) before its verb."""
    global _given
    _given = words


def repeat_mesh(path: str) -> None:
    """Every remedy printed from now on carries ``--mesh-hosts PATH``: pasted in a shell without
    INFRA_APPLY_MESH_HOSTS, it registers into the same file."""
    global _mesh
    _mesh = ("--mesh-hosts", absolute(path))


def out_verbs(verbs: frozenset[str]) -> None:
    """The verbs that take ``--out`` (``apply``, ``gpu up``)."""
    global _out_verbs
    _out_verbs = verbs


def repeat_out(out: str) -> None:
    """Every remedy printed from now on for a verb that takes ``--out`` carries ``--out OUT``:
    pasted, it plans the Terraform this run wrote, not the default folder's."""
    global _out
    _out = ("--out", absolute(out))


def absolute(path: str) -> str:
    """``path`` from this process's folder: a remedy pasted in another folder (another pane, the
    tree's parent) must name the same file. Not resolved: ``..`` and symlinks mean what they
    meant to the command given."""
    try:
        return str(Path(path).absolute())
    except OSError:  # the current folder was removed: kept as given (the run meets that itself)
        return path


def forget() -> None:
    """Nothing given: an in-process run (tests) leaves nothing behind for the next."""
    global _given, _mesh, _out, _out_verbs
    _given, _mesh, _out, _out_verbs = (), (), (), frozenset()


def command(verb: str, *args: str, keep: Sequence[str]) -> str:
    """``infra-apply [--root DIR] VERB ARGS... [--mesh-hosts FILE] [--out DIR] [KEEP...]``;
    ``verb`` may be two words (``gpu up``), every argument is one shell word (quoted when it
    needs it). ``keep``: the flags of the run's account (``Account.remedy_flags``: ``--sandbox``)."""
    mesh = _mesh if "--mesh-hosts" not in args else ()
    out = _out if verb in _out_verbs and "--out" not in args else ()
    words = ["infra-apply", *map(shell, _given), *verb.split(), *map(shell, (*args, *mesh, *out))]
    return " ".join([*words, *keep])


def for_producer(verb: str, producer: str, *args: str, keep: Sequence[str]) -> str:
    """``infra-apply VERB --producer P ARGS... [KEEP...]``."""
    return command(verb, "--producer", producer, *args, keep=keep)


def kept(recorded_sandbox: bool) -> tuple[str, ...]:
    """The flags to keep for a report that records whether its run was a sandbox one (a plan
    file read back by ``comment`` has no account, only that fact)."""
    from infra_apply.cloud.account import choose

    return choose(recorded_sandbox).remedy_flags
