"""Whether the sandbox extra (``infra-apply[sandbox]``) is installed.

A runtime install leaves out what only the stand-in provider needs (tf and its gRPC stack, and
cryptography for the provider's certificate). ``--sandbox`` checks for them first, so a missing
extra is one line naming it instead of a traceback, or a provider crash inside Terraform.
"""

from __future__ import annotations

import importlib.util

from infra_apply.errors import InfraApplyError

# What the sandbox imports itself (server, resources, install), not their whole closure.
MODULES = ("tf", "grpc", "cryptography")
INSTALL = "pip install 'infra-apply[sandbox]'"


def missing() -> list[str]:
    """The sandbox's modules this interpreter cannot import; found without importing them."""
    return [name for name in MODULES if not _importable(name)]


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        # A finder that refuses the name, or a module entry without a spec, is no usable module.
        return False


def require() -> None:
    """Raise the one-line error naming the extra when any of its modules is missing."""
    absent = missing()
    if absent:
        raise InfraApplyError(
            f"--sandbox needs the sandbox extra ({', '.join(absent)} not installed): {INSTALL}"
        )
