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

Credentials never go in that file: Terraform reads ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` (or infra-apply maps ``SPACES_ACCESS_KEY_ID`` /
``SPACES_SECRET_ACCESS_KEY`` onto them) from the environment. Locking is Terraform's own
lockfile in the bucket (``use_lockfile = true``).
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from infra_apply.errors import InfraApplyError
from infra_apply.render import hcl_string

CONFIG_NAME = "infra-apply.toml"


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("INFRA_APPLY_STATE_DIR"):
        return Path(env["INFRA_APPLY_STATE_DIR"]).expanduser().resolve()
    base = Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return (base / "infra-apply").resolve()


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
        lines = [
            f"bucket = {hcl_string(self.bucket)}",
            f"key = {hcl_string(f'{self.key_prefix}/{producer}/terraform.tfstate')}",
            f"region = {hcl_string(self.region)}",
            f"endpoints = {{ s3 = {hcl_string(self.endpoint)} }}" if self.endpoint else "",
            "use_path_style = true",
            "use_lockfile = true",
            "skip_credentials_validation = true",
            "skip_region_validation = true",
            "skip_requesting_account_id = true",
            "skip_metadata_api_check = true",
            "skip_s3_checksum = true",
        ]
        body = "\n".join(f"    {line}" for line in lines if line)
        return (
            f"# Written by infra-apply from {CONFIG_NAME}; credentials come from the environment.\n"
            f'terraform {{\n  backend "s3" {{\n{body}\n  }}\n}}\n'
        )


def load_backend(root: Path, env: Mapping[str, str] | None = None) -> Backend:
    env = os.environ if env is None else env
    path = Path(env["INFRA_APPLY_CONFIG"]) if env.get("INFRA_APPLY_CONFIG") else root / CONFIG_NAME
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        if env.get("INFRA_APPLY_CONFIG"):
            raise InfraApplyError(f"INFRA_APPLY_CONFIG names {path}, which does not exist") from None
        return Backend("local")
    except tomllib.TOMLDecodeError as exc:
        raise InfraApplyError(f"invalid TOML: {exc}", path=str(path), line=1, col=1) from None
    section = doc.get("state", {})
    kind = section.get("backend", "local")
    if kind == "local":
        return Backend("local")
    if kind != "s3":
        raise InfraApplyError(f'[state] backend must be "local" or "s3", not {kind!r}', path=str(path))
    for key in ("access_key", "secret_key", "token"):
        if key in section:
            raise InfraApplyError(
                f"[state] {key}: credentials never go in {CONFIG_NAME}; set "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment",
                path=str(path),
            )
    if not section.get("bucket"):
        raise InfraApplyError("[state] bucket is required for the s3 backend", path=str(path))
    return Backend(
        "s3",
        bucket=str(section["bucket"]),
        endpoint=str(section.get("endpoint", "")),
        region=str(section.get("region", "us-east-1")),
        key_prefix=str(section.get("key_prefix", "infra-apply")).strip("/"),
    )
