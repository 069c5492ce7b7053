"""Shell completion: click's protocol (``_INFRA_APPLY_COMPLETE``) plus infra-apply's own names.

``infra-apply completion bash|zsh|fish`` prints the script a shell sources; after that, <Tab>
re-runs infra-apply in completion mode, which calls the callbacks below. They read the tree
under ``--root`` (or ``$INFRA_APPLY_ROOT``) cheaply, without a validation run, so completion
works on a tree that does not validate yet and stays fast on a large one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
from click.shell_completion import CompletionItem, get_completion_class

from infra_apply.manifests.names import DropletName, producer_folders, tree_droplets

SHELLS = ("bash", "zsh", "fish")
PROG = "infra-apply"
COMPLETE_VAR = "_INFRA_APPLY_COMPLETE"
_Keep = Callable[[DropletName], bool]


def script(cli: click.Command, shell: str) -> str:
    """The completion script for ``shell``, as ``_INFRA_APPLY_COMPLETE=<shell>_source`` prints it."""
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click.Choice limits shell to SHELLS
        raise click.BadParameter(f"unsupported shell {shell!r}")
    return cls(cli, {}, PROG, COMPLETE_VAR).source()


def _root(ctx: click.Context) -> Path:
    """The root as parsed so far: completion runs no group callback, so read the group's
    parameters (``--root`` on the command line, else ``$INFRA_APPLY_ROOT``, else ".")."""
    root = ctx.find_root().params.get("root")
    return Path(root) if root is not None else Path(".")


def complete_producers(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    bare = incomplete.lstrip("@")
    return [CompletionItem(p) for p in producer_folders(_root(ctx)) if p.startswith(bare)]


def complete_droplets(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Droplet names of the producer given with ``--producer`` (of every producer without it)."""
    return _droplets(ctx, incomplete, lambda d: True)


def complete_gpu_droplets(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """On-demand GPU droplet names (``service.gpu``)."""
    return _droplets(ctx, incomplete, lambda d: d.gpu)


def _droplets(ctx: click.Context, incomplete: str, keep: _Keep) -> list[CompletionItem]:
    producer = ctx.params.get("producer")
    wanted = producer.lstrip("@") if isinstance(producer, str) else None
    return [
        CompletionItem(d.name, help=f"@{d.producer}" if d.producer else None)
        for d in tree_droplets(_root(ctx))
        if keep(d) and d.name.startswith(incomplete) and (wanted is None or d.producer == wanted)
    ]
