"""Where infra-apply keeps what must never be committed, and the remote-state settings.

State dir: ``INFRA_APPLY_STATE_DIR``, else ``$XDG_STATE_HOME/infra-apply``, else
``~/.local/state/infra-apply``. It holds Terraform working copies (``.terraform/``, plans,
local state) and the sandbox.

Remote state is configured in one place: ``infra-apply.toml`` at the root (or the file named by
``INFRA_APPLY_CONFIG``)::

    [state]
    backend = "s3"                                  # "local" (default) or "s3"
    bucket = "uvlava-tfstate"
    endpoint = "https://nyc3.digitaloceanspaces.com"
    region = "us-east-1"                            # Spaces ignores it; S3 needs one
    key_prefix = "infra-apply"                      # state at <prefix>/<producer>/terraform.tfstate
    sandbox_key_prefix = "infra-apply-sandbox"      # optional: --sandbox state in the bucket too
                                                    # (default: sandbox state stays local)

Credentials never go in that file: Terraform reads ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` (or infra-apply maps ``SPACES_ACCESS_KEY_ID`` /
``SPACES_SECRET_ACCESS_KEY`` onto them) from the environment. Locking is Terraform's own
lockfile in the bucket (``use_lockfile = true``).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra_apply import hcl
from infra_apply.errors import InfraApplyError

CONFIG_NAME = "infra-apply.toml"


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
    return state_dir(env) / "cache" / f"validate-{root_key(root)}.json"


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
    return state


def _usable(state: Path) -> None:
    def fail(problem: str) -> InfraApplyError:
        return InfraApplyError(
            f"the state dir {problem}; point INFRA_APPLY_STATE_DIR at a folder of your own",
            path=str(state),
            rule="state_dir",
        )

    from infra_apply.fs import private_dirs

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
    resolved = root.resolve()
    return f"{resolved.name or 'root'}-{hashlib.sha1(str(resolved).encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class Backend:
    kind: str  # "local" | "s3"
    bucket: str = ""
    endpoint: str = ""
    region: str = "us-east-1"
    key_prefix: str = "infra-apply"

    def hcl(self, producer: str) -> str | None:
        """``backend.tf`` for a working copy (never for generated/), or None for local state."""
        if self.kind == "local":
            return None
        return hcl.render(
            "backend.tf.j2",
            config_name=CONFIG_NAME,
            bucket=self.bucket,
            key="/".join(filter(None, (self.key_prefix, producer, "terraform.tfstate"))),
            region=self.region,
            endpoint=self.endpoint,
        )


STATE_KEYS = ("backend", "bucket", "endpoint", "region", "key_prefix", "sandbox_key_prefix")
# Anything that looks like a credential is refused by name, and its value is never echoed.
CREDENTIAL_KEYS = frozenset(
    {
        "access_key",
        "secret_key",
        "token",
        "access_key_id",
        "secret_access_key",
        "session_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
    }
)


def load_backend(root: Path, env: Mapping[str, str] | None = None, *, sandbox: bool = False) -> Backend:
    """The state backend. Sandbox runs keep local state unless ``sandbox_key_prefix`` opts them
    into the bucket, under a prefix of their own: stand-in resources must never be written over
    real state."""
    env = os.environ if env is None else env
    path = Path(env["INFRA_APPLY_CONFIG"]) if env.get("INFRA_APPLY_CONFIG") else root / CONFIG_NAME
    shown = _shown(path, root)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        if env.get("INFRA_APPLY_CONFIG"):
            raise InfraApplyError(f"INFRA_APPLY_CONFIG names {path}, which does not exist") from None
        return Backend("local")
    except (OSError, UnicodeDecodeError) as exc:
        raise InfraApplyError(f"cannot read {CONFIG_NAME}: {exc}", path=shown, rule="config") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message, line, col = _toml_error(str(exc), text)
        raise InfraApplyError(
            f"invalid TOML: {message}", path=shown, line=line, col=col, rule="config"
        ) from None

    def fail(message: str, key: str | None = None, table: str = "state") -> InfraApplyError:
        line, col = _locate(text, table, key)
        return InfraApplyError(message, path=shown, line=line, col=col, rule="config")

    section = doc.get("state", {})
    if not isinstance(section, dict):
        raise fail("state must be a table: write [state] and its settings below it", "state", table="")
    for key in section:
        if key.lower() in CREDENTIAL_KEYS:
            raise fail(
                f"[state] {key}: credentials never go in {CONFIG_NAME}; set "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment",
                key,
            )
    for key, value in section.items():
        if key not in STATE_KEYS:
            raise fail(f"[state] {key}: unknown setting (known: {', '.join(STATE_KEYS)})", key)
        if not isinstance(value, str):
            raise fail(f"[state] {key} must be a string", key)
    kind = section.get("backend", "local")
    if kind == "local":
        return Backend("local")
    if kind != "s3":
        raise fail(f'[state] backend must be "local" or "s3", not {kind!r}', "backend")
    if not section.get("bucket"):
        raise fail("[state] bucket is required for the s3 backend", "bucket")
    key_prefix = section.get("key_prefix", "infra-apply").strip("/")
    sandbox_prefix = section.get("sandbox_key_prefix", "").strip("/")
    if sandbox_prefix and sandbox_prefix == key_prefix:
        raise fail(
            "[state] sandbox_key_prefix must differ from key_prefix (sandbox state must never "
            "replace real state)",
            "sandbox_key_prefix",
        )
    if sandbox and not sandbox_prefix:
        return Backend("local")
    return Backend(
        "s3",
        bucket=section["bucket"],
        endpoint=section.get("endpoint", ""),
        region=section.get("region") or "us-east-1",
        key_prefix=sandbox_prefix if sandbox else key_prefix,
    )


def _shown(path: Path, root: Path) -> str:
    """The config path as messages show it: relative to the root when inside it."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _toml_error(message: str, text: str) -> tuple[str, int, int]:
    """tomllib's "... (at line L, column C)" as (message, L, C)."""
    import re

    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if m:
        return message[: m.start()], int(m.group(1)), int(m.group(2))
    m = re.search(r"\s*\(at end of document\)$", message)
    if m:
        return message[: m.start()], max(1, len(text.splitlines())), 1
    return message, 1, 1


def _locate(text: str, table: str, key: str | None) -> tuple[int, int]:
    """Line and column of ``key`` in ``[table]`` ("" = top level); the table header when
    ``key`` is None or not found there; 0, 0 when neither is found."""
    import re

    current = ""
    header = (0, 0)
    for number, line in enumerate(text.splitlines(), start=1):
        m = re.match(r"\s*\[\s*([^\]]+?)\s*\]", line)
        if m and not line.lstrip().startswith("[["):
            current = m.group(1).strip().strip('"')
            if current == table:
                header = (number, line.index("[") + 1)
            continue
        if current != table or key is None:
            continue
        m = re.match(rf"(\s*)[\"']?{re.escape(key)}[\"']?\s*[=.]", line)
        if m:
            return number, len(m.group(1)) + 1
    return header
