"""Each producer's GPU leases, kept in the Terraform state of a tiny root of their own.

The root lives beside the producer's working copy, ``<state>/work/<mode>/<tree key>/
<producer>.gpu-leases/`` (the key: ``infra_apply.runtime.identity``; a producer name never holds a
``.``, so it can never be a producer's own copy), and holds one ``terraform_data`` whose input
is the leases' JSON document. Its backend is the producer's: with remote state the document lives in the same
bucket at ``<key_prefix>/<producer>/gpu-leases.tfstate`` (same credentials, same
``use_lockfile`` locking), so a team sees one truth; with local state it is the copy's own
``terraform.tfstate``, private under the state dir. ``terraform_data`` is built into
Terraform: the root needs no provider and no registry.

Reading and writing are ``docstore.DocumentRoot``'s: a compare-and-swap through a saved
plan whose prior value must be the document the caller read.

So a writer that decided on a document somebody else has since changed never overwrites it,
on one machine or across a team. Two locks of ours complete it on one machine:

- ``exclusive()``: the read + decide + act of ``gpu up``/``down``/``reap`` (a file lock beside
  the copy, ``<copy>.lock``); two reaps on one machine never both act;
- the document root's I/O lock around every Terraform run in the copy, so a reader (an
  ordinary plan asking which GPUs are held) never runs Terraform in the copy while a writer does.

What holds for a team (several machines, remote state): every write is atomic (one S3 PUT
under Terraform's lock file) and compare-and-swapped, so two reapers can never both claim a
release: the one whose claim lands second gets ``LeaseConflict``, reads again and sees the
claim. What does not: ``exclusive()`` is per machine, so two machines may both *probe* and
*decide* at once; only the claim decides who acts. A claim left by a machine that died
mid-release is taken over after ``lifecycle.CLAIM_TTL``.

With local state Terraform writes ``terraform.tfstate`` in place (truncate, write, fsync,
under its own ``fcntl`` lock, previous version in ``terraform.tfstate.backup``), not by a
rename: a power cut in that instant can leave it empty. Reading then fails with Terraform's
own error and nothing is written until the file is restored from the backup.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from infra_apply.errors import InfraApplyError, TerraformError
from infra_apply.gpu.lease import Lease, from_dict, to_dict
from infra_apply.registry.docstore import DocumentRoot, Stale, parse, store_env
from infra_apply.render import hcl
from infra_apply.runtime import locks
from infra_apply.runtime import terraform as tf
from infra_apply.runtime.fs import private_dirs, sync_private
from infra_apply.runtime.paths import child
from infra_apply.runtime.state import CONFIG_NAME, Backend

SUFFIX = ".gpu-leases"
MAIN_FILE = "leases.tf"
BACKEND_FILE = "backend.tf"
STATE_NAME = "gpu-leases.tfstate"
FORMAT = 1


class LeaseStoreError(InfraApplyError):
    default_rule = "gpu_leases"


class LeaseConflict(LeaseStoreError):
    """The leases changed since they were read: read again and decide again."""


class StoreBusy(LeaseStoreError):
    """Another infra-apply on this machine is changing the producer's GPU leases."""


@dataclass(frozen=True)
class Snapshot:
    raw: str | None  # the document as stored; None while nothing was ever stored
    leases: Mapping[str, Lease]


@dataclass(frozen=True)
class LeaseStore:
    producer: str
    wd: tf.Workdir
    where: str  # for messages: the copy's local state or the bucket key

    @property
    def path(self) -> Path:
        return self.wd.path

    @contextlib.contextmanager
    def exclusive(self, timeout: float = 0) -> Iterator[None]:
        """Hold the producer's leases for a read + decide + act; ``timeout`` seconds to wait
        (0: fail at once, for a timer's reap; a negative value waits forever)."""
        # One instance per file in this process: re-entrant, so a caller may hold it around
        # a longer sequence (gpu up: lease, apply, record) that also takes it.
        with locks.held(
            Path(f"{self.path}.lock"),
            f"the GPU leases of producer {self.producer}",
            timeout=timeout,
            singleton=True,
            busy=StoreBusy,
        ):
            yield

    @property
    def document(self) -> DocumentRoot:
        return DocumentRoot(self.wd, "leases")

    def read(self) -> Snapshot:
        value = self.document.read()
        if value is None:
            return Snapshot(None, {})
        if not isinstance(value, str):
            raise self._unreadable("its leases output is not a string")
        return Snapshot(value, self._decode(value))

    def write(self, seen: Snapshot, leases: Mapping[str, Lease]) -> Snapshot:
        """Replace the leases read as ``seen`` by ``leases``; ``LeaseConflict`` when the store
        holds anything else by now (nothing is written then)."""
        raw = encode(self.producer, leases)
        try:
            self.document.swap(seen.raw, raw)
        except Stale:
            raise self._conflict() from None
        except tf.CommandFailed as exc:
            if exc.what != "apply":
                raise
            raise LeaseStoreError(
                f"could not write the GPU leases of producer {self.producer} ({self.where}):\n{exc.detail}"
            ) from None
        return Snapshot(raw, dict(leases))

    def update(
        self, change: Callable[[Mapping[str, Lease]], Mapping[str, Lease]], attempts: int = 3
    ) -> Snapshot:
        """Read, ``change``, write; read and change again on a conflict (``change`` must be
        a pure function of the leases it is given)."""
        for attempt in range(attempts):
            seen = self.read()
            try:
                return self.write(seen, change(seen.leases))
            except LeaseConflict:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _conflict(self) -> LeaseConflict:
        return LeaseConflict(
            f"the GPU leases of producer {self.producer} changed while this run decided on them "
            f"({self.where}); nothing was written"
        )

    def _decode(self, raw: str) -> dict[str, Lease]:
        try:
            return decode(self.producer, raw)
        except ValueError as exc:
            raise self._unreadable(str(exc)) from None

    def _unreadable(self, why: str) -> LeaseStoreError:
        return LeaseStoreError(
            f"the GPU lease store of producer {self.producer} ({self.where}) is unreadable: {why}; "
            "nothing was changed"
        )


# --- the document ---------------------------------------------------------------------------


def encode(producer: str, leases: Mapping[str, Lease]) -> str:
    """Canonical JSON (sorted, compact): the same leases always give the same text, so a
    write that changes nothing is a no-op plan."""
    for name, lease in leases.items():
        if name != lease.gpu or lease.producer != producer:
            raise ValueError(
                f"lease {name!r} ({lease.gpu}, producer {lease.producer}) filed under {producer}"
            )
    doc = {
        "format": FORMAT,
        "producer": producer,
        "leases": {name: to_dict(lease) for name, lease in sorted(leases.items())},
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def decode(producer: str, raw: str) -> dict[str, Lease]:
    doc = parse(raw, "a leases document")
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if doc.get("format") != FORMAT:
        raise ValueError(
            f"format {doc.get('format')!r}; this infra-apply reads format {FORMAT} (a newer one wrote it?)"
        )
    if doc.get("producer") != producer:
        raise ValueError(f"it holds the leases of producer {doc.get('producer')!r}")
    leases = doc.get("leases")
    if not isinstance(leases, dict):
        raise ValueError("leases is not a JSON object")
    out = {}
    for name, entry in leases.items():
        lease = from_dict(entry)
        if lease.gpu != name or lease.producer != producer:
            raise ValueError(f"lease {name!r} names GPU {lease.gpu!r} of producer {lease.producer!r}")
        out[name] = lease
    return out


# --- the lease root -------------------------------------------------------------------------


def lease_copy(work_root: Path, producer: str) -> Path:
    """``<work_root>/<producer>.gpu-leases``: beside the producer's working copy."""
    return child(work_root, f"{producer}{SUFFIX}")


def store_key(backend: Backend, producer: str) -> str:
    return "/".join(filter(None, (backend.key_prefix, producer, STATE_NAME)))


def open_store(
    state: Path,
    work_root: Path,
    producer: str,
    backend: Backend,
    binary: tf.Binary,
    env: Mapping[str, str],
) -> LeaseStore:
    """The lease store of ``producer``: its root written (0700/0600 under the state dir
    ``state``) and initialised when its files changed. ``work_root`` is the producer working
    copies' folder (``deploy.workdir_root``), so sandbox and live leases never mix."""
    path = lease_copy(work_root, producer)
    files = _files(producer, backend)
    if BACKEND_FILE in files and _holds_local_leases(path):
        # checked before anything is written: the copy keeps working with the old settings
        raise LeaseStoreError(
            f"{path} holds GPU leases in local state but remote state is configured; migrate "
            f"them first (terraform -chdir={path} init -migrate-state)"
        )
    try:
        private_dirs(path, state)
        _sync(path, files)
    except OSError as exc:
        raise LeaseStoreError(f"cannot write the GPU lease store {path}: {exc.strerror}") from None
    where = f"s3://{backend.bucket}/{store_key(backend, producer)}" if backend.kind == "s3" else str(path)
    store = LeaseStore(producer, tf.Workdir(binary, path, store_env(env)), where)
    try:
        store.document.ensure_init(files)
    except TerraformError as exc:
        raise LeaseStoreError(
            f"{exc.message}\nIf the state backend changed ({CONFIG_NAME}), migrate the GPU leases "
            f"first: terraform -chdir={path} init -migrate-state"
        ) from None
    return store


def _files(producer: str, backend: Backend) -> dict[str, bytes]:
    files = {MAIN_FILE: hcl.render("gpu-leases.tf.j2", producer=producer).encode()}
    if backend.kind == "s3":
        files[BACKEND_FILE] = hcl.render(
            "backend.tf.j2",
            config_name=CONFIG_NAME,
            bucket=backend.bucket,
            key=store_key(backend, producer),
            region=backend.region,
            endpoint=backend.endpoint,
        ).encode()
    return files


def _sync(path: Path, files: Mapping[str, bytes]) -> None:
    sync_private(path, files)


def _holds_local_leases(path: Path) -> bool:
    return tf.local_state_has_resources(path)
