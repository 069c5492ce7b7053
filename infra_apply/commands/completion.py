"""``completion``: the script bash, zsh or fish sources for <Tab> (the callbacks it then calls
are ``infra_apply.completion``'s)."""

from __future__ import annotations

import click

from infra_apply.commands import Output


def run(cli: click.Command, shell: str) -> str:
    from infra_apply.completion import script

    return script(cli, shell)


def output(script: str) -> Output:
    return Output(script)
