"""Where infra-apply keeps what must never be committed, and the remote-state settings.

State dir: ``INFRA_APPLY_STATE_DIR``, else ``$XDG_STATE_HOME/infra-apply``, else
``~/.local/state/infra-apply``. It holds Terraform working copies (``.terraform/``, plans,
local state) and the sandbox, in folders keyed by what the tree is (``infra_apply.runtime.identity``).

Remote state is configured in one place: ``[state]`` of ``infra-apply.toml`` at the root (or the
file named by ``INFRA_APPLY_CONFIG``), read by ``infra_apply.manifests.config``::

    [state]
    backend = "s3"                                  # "local" (default) or "s3"
    bucket = "uvlava-tfstate"
    endpoint = "https://nyc3.digitaloceanspaces.com"
    region = "us-east-1"                            # Spaces ignores it; S3 needs one
    key_prefix = "infra-apply"                      # state at <prefix>/<producer>/terraform.tfstate
    sandbox_key_prefix = "infra-apply-sandbox"      # optional: --sandbox state in the bucket too
                                                    # (default: sandbox state stays local)
    name = "uvlava"                                 # the key of local state (identity.py)
    allow_local_in_ci = true                        # plan/apply/drift/gpu with local state under CI

Credentials never go in that file: Terraform reads ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` (or infra-apply maps ``SPACES_ACCESS_KEY_ID`` /
``SPACES_SECRET_ACCESS_KEY`` onto them) from the environment. Locking is Terraform's own
lockfile in the bucket (``use_lockfile = true``).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra_apply.errors import InfraApplyError, printable

if TYPE_CHECKING:
    from infra_apply.manifests.config import CONFIG_NAME, Backend, Config

__all__ = [
    "CONFIG_NAME",
    "Backend",
    "check_outside",
    "checked_state_dir",
    "in_ci",
    "load_backend",
    "refuse_local_state_in_ci",
    "root_key",
    "state_dir",
    "validation_cache",
]


def __getattr__(name: str) -> Any:
    # Backend and CONFIG_NAME live in infra_apply.manifests.config; importable from here too,
    # without loading the config reader on every path that asks where the state dir is.
    if name in ("CONFIG_NAME", "Backend"):
        from infra_apply.manifests import config

        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("INFRA_APPLY_STATE_DIR"):
        return Path(env["INFRA_APPLY_STATE_DIR"]).expanduser().resolve()
    base = Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return (base / "infra-apply").resolve()


def validation_cache(root: Path, env: Mapping[str, str] | None = None) -> Path | None:
    """Where validate keeps per-file results; None when INFRA_APPLY_NO_CACHE is set."""
    env = os.environ if env is None else env
    if env.get("INFRA_APPLY_NO_CACHE"):
        return None
    from infra_apply.runtime.identity import identify, validation_cache_file

    return validation_cache_file(state_dir(env), identify(root, env).key)


def checked_state_dir(
    generated: Sequence[Path], env: Mapping[str, str] | None = None, *, create: bool
) -> Path:
    """The state dir, checked before anything is written into it (every command that writes
    there calls this first): never inside one of ``generated`` (state, plans and the sandbox's
    TLS key must not land in a committed folder); with ``create``, made if missing (0700) and
    refused unless it is a folder we may write (one made read-only is respected, even by root).
    """
    state = state_dir(env)
    for folder in generated:
        check_outside(state, folder)
    if create:
        _usable(state)
    _checked.add(state)
    return state


_checked: set[Path] = set()


def was_checked(state: Path) -> bool:
    """Whether a command of this process has checked ``state`` (``checked_state_dir``): what is
    kept there on the side (a cache written at exit, or while the config is read) goes only
    into a state dir the command accepted, never into one it refused."""
    return state in _checked


# --- caches kept on the side --------------------------------------------------------------------
# Small files that only save time (compiled code, checked texts, API hints). They are found
# before any command has checked the state dir, so: read only when private, written only into
# the cache folder of a state dir this process checked, and never an error either way.


def side_cache(env: Mapping[str, str], name: str) -> Path | None:
    """``<state>/cache/<name>``; None with INFRA_APPLY_NO_CACHE, or when the state dir cannot be
    worked out (no home, a symlink loop: the command that needs it says so)."""
    if env.get("INFRA_APPLY_NO_CACHE"):
        return None
    try:
        return state_dir(env) / "cache" / name
    except (OSError, RuntimeError, ValueError):
        return None


def read_side_cache(path: Path, limit: int) -> bytes | None:
    """Its bytes; None when it is missing, larger than ``limit`` or not this user's private file."""
    from infra_apply.runtime.fs import read_private

    try:
        return read_private(path, limit)
    except (OSError, InfraApplyError):
        return None


def keep_side_cache(path: Path, data: bytes) -> None:
    """Write ``path`` (0600) when it lies in the cache folder of a state dir this process checked
    and that folder exists; a read-only one only costs the next run its speed."""
    from infra_apply.runtime.fs import write_private

    if not was_checked(path.parent.parent) or not path.parent.is_dir():
        return
    with contextlib.suppress(OSError, ValueError, InfraApplyError):
        write_private(path, data)


def _usable(state: Path) -> None:
    def fail(problem: str) -> InfraApplyError:
        return InfraApplyError(
            f"the state dir {problem}; point INFRA_APPLY_STATE_DIR at a folder of your own",
            path=str(state),
            rule="state_dir",
        )

    from infra_apply.runtime.fs import private_dirs

    try:
        if not os.path.lexists(state):
            private_dirs(state, state)
        st = state.stat()
    except (FileExistsError, NotADirectoryError):
        raise fail("cannot be created: a part of its path is not a folder") from None
    except OSError as exc:
        raise fail(f"cannot be created or read: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise fail("is not a folder")
    if not st.st_mode & stat.S_IWUSR or not os.access(state, os.W_OK | os.X_OK):
        raise fail(f"is read-only (mode {stat.S_IMODE(st.st_mode):04o})")


def check_outside(state: Path, generated: Path) -> None:
    gen = generated.resolve()
    if state == gen or gen in state.parents:
        raise InfraApplyError(
            f"INFRA_APPLY_STATE_DIR ({state}) is inside {gen}; state, plans and "
            ".terraform/ must never land in generated/"
        )


def root_key(root: Path) -> str:
    """The old key of a tree's local state, its absolute path (``identity.path_key``): where
    state of a tree outside git lies, and where older versions kept every tree's."""
    from infra_apply.runtime.identity import path_key

    return path_key(root)


def load_backend(root: Path, env: Mapping[str, str] | None = None) -> Backend:
    """The live state backend from ``[state]`` of the configuration (``infra_apply.manifests.config``
    reads it; a run asks its account, ``Account.backend``)."""
    from infra_apply.cloud.account import LiveAccount

    return LiveAccount().backend(root, os.environ if env is None else env)


def in_ci(env: Mapping[str, str]) -> bool:
    """``CI`` set to anything but empty/0/false/no: GitHub, Forgejo and GitLab set ``CI=true``."""
    return env.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def refuse_local_state_in_ci(config: Config, env: Mapping[str, str]) -> None:
    """plan/apply/drift/gpu under CI with local state: a runner's state dir is thrown away after
    the job, so every run would plan (and apply) every server as new. (A sandbox run is exempt:
    ``Account.refuse_local_state_in_ci``.)"""
    if not in_ci(env) or config.state.kind != "local" or config.state.allow_local_in_ci:
        return
    from infra_apply.manifests.config import CONFIG_NAME

    where = config.state.at
    raise InfraApplyError(
        f"CI is set (CI={printable(env.get('CI', ''))}) and this tree keeps local state, which a "
        "runner throws away: every run would create every server again. Set remote state in "
        f'[state] of {CONFIG_NAME} (backend = "s3", bucket = ...; docs/configuration.md), or '
        "[state] allow_local_in_ci = true for a throwaway tree",
        path=where.path if where else (config.path or CONFIG_NAME),
        line=where.line if where else 0,
        col=where.col if where else 0,
        rule="state",
    )
