"""One JSON document in the Terraform state of a tiny provider-less root, written by
compare-and-swap: the GPU leases' store (``gpu/store.py``) and the mesh allocation record
(``allocations.py``) are two of them.

The root holds one ``terraform_data`` named ``name`` whose input is the document (a string
variable of the same name, read back through an output of that name). With remote state its
backend is the producers' bucket, so Terraform is the one client infra-apply has for the bucket:
its s3 backend signs the requests and takes the lock (``use_lockfile``).

Reading is ``terraform output -json <name>``. Writing (:meth:`DocumentRoot.swap`):

1. ``terraform plan -var <name>=<new document> -out=<plan>`` (Terraform reads the current state);
2. the plan's prior value must be the document the caller read, else the swap fails;
3. ``terraform apply <plan>``: Terraform takes the state lock and refuses a saved plan whose
   state changed since step 1 ("Saved plan is stale"), which also fails the swap.

So a writer that decided on a document somebody else has since changed never overwrites it, on
one machine or across a team. An I/O lock (a file beside the document) keeps a reader on this
machine from running Terraform in the root while a writer does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra_apply import kinds
from infra_apply.runtime import locks
from infra_apply.runtime import terraform as tf
from infra_apply.runtime.fs import tighten, write_private

STAMP = ".infra-apply-init"
IO_LOCK = ".infra-apply-io.lock"
# A write holds Terraform's state lock for well under a second; a reader waits that long.
LOCK_TIMEOUT = "60s"
IO_LOCK_SECONDS = 300.0
STALE = "Saved plan is stale"
LOCK_ERROR = "Error acquiring the state lock"
# What a document root never needs: the token (it talks to no cloud) and the plugin cache.
_DROPPED = ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN", "TF_PLUGIN_CACHE_DIR")


def _lock_vanished(detail: str) -> bool:
    """Terraform's lockfile race: its create was refused (another writer held the lock), then
    the lock was released before Terraform could read who held it, and it gives up at once
    instead of waiting out ``-lock-timeout``. Nothing was written: read again and retry."""
    return LOCK_ERROR in detail and "PreconditionFailed" in detail and "NoSuchKey" in detail


class Stale(Exception):
    """The document changed since it was read: nothing was written."""


@dataclass(frozen=True)
class DocumentRoot:
    wd: tf.Workdir
    name: str  # the variable, the terraform_data resource and the output

    @property
    def path(self) -> Path:
        return self.wd.path

    @property
    def plan_file(self) -> str:
        return f"{self.name}.tfplan"

    @contextlib.contextmanager
    def io(self) -> Iterator[None]:
        what = f"the {self.name} stored in {self.path}"
        with locks.held(self.path / IO_LOCK, what, timeout=IO_LOCK_SECONDS, singleton=True):
            yield

    def read(self) -> object:
        """The stored value (a string unless somebody wrote another kind); None: never written."""
        with self.io():
            try:
                return tf.output_json(self.wd, self.name)
            except tf.OutputMissing:
                return None

    def swap(self, seen: str | None, raw: str) -> None:
        """Store ``raw`` where ``seen`` was read; ``Stale`` when the root holds anything else
        by now. Terraform's own failures raise ``tf.CommandFailed``."""
        with self.io():
            plan = self.path / self.plan_file
            try:
                changed = tf.plan(
                    self.wd, self.plan_file, variables={self.name: raw}, lock_timeout=LOCK_TIMEOUT
                )
                if self._prior(tf.show_json(self.wd, self.plan_file)) != seen:
                    raise Stale
                if changed:
                    tf.apply(self.wd, self.plan_file, lock_timeout=LOCK_TIMEOUT)
            except tf.CommandFailed as exc:
                if STALE in exc.detail or _lock_vanished(exc.detail):
                    raise Stale from None
                raise
            finally:
                plan.unlink(missing_ok=True)

    def _prior(self, plan: Mapping[str, Any]) -> str | None:
        """The document the plan found in state (None when there is none yet)."""
        for change in plan.get("resource_changes") or ():
            if change.get("address") == kinds.RECORD.address(self.name):
                before = (change.get("change") or {}).get("before")
                value = before.get("input") if isinstance(before, dict) else None
                return value if isinstance(value, str) else None
        return None

    def ensure_init(self, files: Mapping[str, bytes]) -> None:
        """``terraform init`` unless ``files`` are those of the last successful one (and, with
        a backend, its ``.terraform/`` is there). Never ``-reconfigure``: a changed backend
        must be migrated, not forgotten; the caller says how."""
        stamp = hashlib.sha256(b"\0".join(files[n] for n in sorted(files))).hexdigest().encode()
        stamp_file = self.path / STAMP
        remote = any(b'backend "s3"' in body for body in files.values())
        with self.io():
            if (
                stamp_file.is_file()
                and stamp_file.read_bytes() == stamp
                and (not remote or (self.path / ".terraform").is_dir())
            ):
                return
            tf.init(self.wd)
            tighten(self.path)
            write_private(stamp_file, stamp)


def parse(raw: str, what: str) -> object:
    """A stored document's JSON; ValueError (one line) for anything else. The document sits in
    Terraform state, which anyone may edit: a deeply nested one is refused, not a crash."""
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"not {what} (nested too deeply)") from None


def store_env(env: Mapping[str, str]) -> dict[str, str]:
    """Terraform's environment for a document root: the caller's, without the DigitalOcean token,
    with the Spaces keys mapped onto the names the s3 backend reads."""
    out = {k: v for k, v in env.items() if k not in _DROPPED}
    for ours, theirs in (
        ("SPACES_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("SPACES_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ):
        if env.get(ours) and not env.get(theirs):
            out[theirs] = env[ours]
    out.setdefault("CHECKPOINT_DISABLE", "1")
    out["TF_IN_AUTOMATION"] = "1"
    return out
