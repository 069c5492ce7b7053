"""One module per verb (``infra-apply <verb>`` is ``commands/<verb>.py``).

Each verb's ``run`` takes typed options and returns a typed result (or raises the
``InfraApplyError`` family); its ``output`` turns that result into what the CLI prints and the
exit code. The CLI (``infra_apply/cli.py``) only parses options, calls them and writes out the
``Output``.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra_apply.errors import ExitCode


@dataclass(frozen=True)
class Output:
    """What a verb prints and how infra-apply then exits."""

    stdout: str = ""  # written as is (every line ends in a newline)
    stderr: tuple[str, ...] = ()  # lines, after stdout
    code: ExitCode = ExitCode.OK
