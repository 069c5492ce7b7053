"""Does the state bucket honour conditional writes? Terraform's lockfile depends on it.

With ``use_lockfile = true`` Terraform locks a state by creating ``<key>.tflock`` with
``If-None-Match: *`` (create only if absent). A store that ignores the header (some
S3-compatible ones do; DigitalOcean does not document it for Spaces) accepts the second create
too, so the lock locks nothing and two applies write one state at once.

The probe asks Terraform, the one client infra-apply has for the bucket, to do exactly that twice
on a throwaway key: a holder (``terraform apply`` of a one-``terraform_data`` root, left at its
confirmation prompt, so it holds the lock) and a second taker (``terraform plan
-lock-timeout=0s``) on the same key. The second must be refused (412 Precondition Failed, or 409);
the holder is then told "no", so nothing is ever written but the lock file, which Terraform
removes. A passing answer is cached per bucket (endpoint + bucket) under the state dir; a failing
one is not, so a fixed endpoint is used as soon as it is fixed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from infra_apply.errors import InfraApplyError, TerraformError
from infra_apply.manifests.config import CONFIG_NAME, Backend
from infra_apply.registry.docstore import store_env
from infra_apply.render import hcl
from infra_apply.runtime import terraform as tf
from infra_apply.runtime.fs import TEXT_LIMIT, private_dirs, read_bounded, write_private

PROMPT = b"Enter a value:"
HOLD_SECONDS = 120.0  # init-free apply of an empty root: well under a second on a sound bucket
# Terraform's words for a create-if-absent the store refused (412; 409 when two race).
REFUSED = ("StatusCode: 412", "PreconditionFailed", "StatusCode: 409", "ConditionalRequestConflict")
PROBE_TF = """# Written by infra-apply: probes the state bucket for conditional writes. Never applied.
resource "terraform_data" "probe" {
  input = "probe"
}
"""


class BucketError(InfraApplyError):
    default_rule = "state"


def cache_file(state: Path, backend: Backend) -> Path:
    key = hashlib.sha256(f"{backend.endpoint}\0{backend.bucket}".encode()).hexdigest()[:16]
    return state / "cache" / f"conditional-writes-{key}.json"


def check_locking(state: Path, backend: Backend, binary: tf.Binary, env: Mapping[str, str]) -> None:
    """Refuse a remote state bucket whose lockfile would lock nothing (once per bucket)."""
    if backend.kind != "s3" or _cached(state, backend):
        return
    import uuid  # only for the once-per-bucket probe

    root = state / "bucket-probe" / uuid.uuid4().hex
    private_dirs(root, state)
    try:
        refused, detail = _probe(root, backend, binary, store_env(env))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    where = _where(backend)
    if not refused:
        raise BucketError(
            f"the state bucket {where} does not honour conditional writes: it accepted a second "
            "create-if-absent (If-None-Match: *) of one object, so Terraform's lockfile "
            "(use_lockfile) locks nothing and two runs could write one state at once; nothing was "
            f"planned or applied. Point [state] in {CONFIG_NAME} at a store that refuses it "
            "(412 Precondition Failed), e.g. AWS S3; the bucket is probed again on the next run"
        )
    if detail:
        raise BucketError(f"could not probe the state bucket {where} for conditional writes:\n{detail}")
    cache = cache_file(state, backend)
    private_dirs(cache.parent, state)
    write_private(cache, json.dumps(_answer(backend)) + "\n")


def _answer(backend: Backend) -> dict[str, object]:
    return {"endpoint": backend.endpoint, "bucket": backend.bucket, "conditional_writes": True}


def _where(backend: Backend) -> str:
    return f"s3://{backend.bucket}" + (f" at {backend.endpoint}" if backend.endpoint else "")


def _cached(state: Path, backend: Backend) -> bool:
    try:
        doc = json.loads(read_bounded(cache_file(state, backend), TEXT_LIMIT))
    except (OSError, ValueError):
        return False
    return bool(doc == _answer(backend))


def _probe(root: Path, backend: Backend, binary: tf.Binary, env: Mapping[str, str]) -> tuple[bool, str]:
    """(refused, problem): whether the second lock was refused; ``problem`` is Terraform's
    error when the probe itself failed (no answer either way)."""
    key = "/".join(filter(None, (backend.key_prefix, ".infra-apply-probe", f"{root.name}.tfstate")))
    backend_tf = hcl.render(
        "backend.tf.j2",
        config_name=CONFIG_NAME,
        bucket=backend.bucket,
        key=key,
        region=backend.region,
        endpoint=backend.endpoint,
    )
    write_private(root / "main.tf", PROBE_TF)
    write_private(root / "backend.tf", backend_tf)
    wd = tf.Workdir(binary, root, env)
    try:
        tf.init(wd)
    except TerraformError as exc:
        return True, exc.message
    with _holding(binary, root, env) as held:
        if held:
            return True, held
        second = wd.run("plan", input=False, no_color=True, lock_timeout="0s", refresh=False)
    text = second.stdout + second.stderr
    if second.code == 0:
        return False, ""
    if any(word in text for word in REFUSED):
        return True, ""
    return True, tf.error_text(second)


@contextlib.contextmanager
def _holding(binary: tf.Binary, root: Path, env: Mapping[str, str]) -> Iterator[str]:
    """A ``terraform apply`` holding the probe's lock at its prompt while the block runs; yields
    "" once it holds it, else the holder's output (it failed: no answer)."""
    argv = tf.build_args(binary, "apply", no_color=True, lock_timeout="0s")
    proc = subprocess.Popen(
        argv,
        cwd=root,
        env=dict(env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C reaches it once, from here
        umask=0o077,
    )
    assert proc.stdin is not None and proc.stdout is not None
    seen = b""
    try:
        seen = _read_until_prompt(proc)
        yield "" if PROMPT in seen else seen.decode("utf-8", "replace").strip() or "terraform apply ended"
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.write(b"no\n")  # nothing is applied; Terraform drops the lock
            proc.stdin.close()
        if PROMPT not in seen and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # still starting (or stuck): stop it cleanly
        _wait(proc)


def _read_until_prompt(proc: subprocess.Popen[bytes]) -> bytes:
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + HOLD_SECONDS
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while PROMPT not in seen and time.monotonic() < deadline:
            if not sel.select(tf.SIGNAL_CHECK_SECONDS):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
    return seen


def _wait(proc: subprocess.Popen[bytes]) -> None:
    interrupted: KeyboardInterrupt | None = None
    while True:
        try:
            proc.wait(tf.SIGNAL_CHECK_SECONDS)
            break
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt as exc:
            interrupted = interrupted or exc
            proc.send_signal(signal.SIGINT)
    if proc.stdout is not None:
        proc.stdout.close()
    if interrupted is not None:
        raise interrupted
