"""Webhook notifications: one versioned JSON event per apply, per new drift, per GPU lease
ending within the hour (``[notify] webhook_url_env`` names the variable holding the URL).

Every event is ``{"format_version": 1, "event": ..., "text": ...}`` plus a few fields of its
own; ``text`` makes it a Slack incoming-webhook message as it is. An event carries names,
counts and times only: never a token, a password, an error's detail (Terraform's output may
quote state) or any value from state.

Sending never fails the command: an unset variable, an unreachable hook or one that keeps
answering an error is one warning line, and the URL is never printed (it is a secret: a Slack
hook's path is its credential). A 5xx, a 429 or a transport failure is retried with backoff,
``ATTEMPTS`` times in all.

What was already told is remembered beside the state (``NotifyMemory``), so that a fresh CI
runner does not repeat it: the drift fingerprint of each producer, and each lease whose end
was announced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from infra_apply.cloud import http
from infra_apply.errors import InfraApplyError
from infra_apply.manifests.config import NotifySettings as NotifySettings  # its home: [notify]
from infra_apply.runtime.fs import atomic_write, private_dirs, read_bounded, sync_private

if TYPE_CHECKING:
    from infra_apply.cloud.account import Account
    from infra_apply.commands.apply import Applied
    from infra_apply.gpu.lease import Lease
    from infra_apply.manifests.config import Backend
    from infra_apply.plan.drift import DriftReport, ProducerDrift
    from infra_apply.registry.docstore import DocumentRoot
    from infra_apply.runtime.workcopy import Context

FORMAT_VERSION = 1
ATTEMPTS = 3
BACKOFF_SECONDS = 1.0  # then doubled per retry
LIMITS = http.Limits(timeout=10.0, deadline=20.0, max_bytes=64 * 1024)
LEASE_WARNING = timedelta(hours=1)
MEMORY_FILE = "notified.json"
MEMORY_LIMIT = 1024 * 1024
REMOTE_ROOT = "notify.memory"  # beside the producers' working copies; never a producer's name
REMOTE_STATE_NAME = "notified.tfstate"
_RETRIED = frozenset({429, 500, 502, 503, 504})

Warn = Callable[[str], None]
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Event:
    kind: str  # apply.done | apply.failed | apply.refused | drift | gpu.lease_ending
    text: str  # Slack-compatible, one line
    fields: Mapping[str, object]

    def payload(self) -> dict[str, object]:
        return {"format_version": FORMAT_VERSION, "event": self.kind, **self.fields, "text": self.text}


@dataclass(frozen=True)
class Notifier:
    url: str | None  # None: nothing is sent
    warn: Warn
    sleep: Sleep = time.sleep

    def send(self, event: Event, attempts: int = ATTEMPTS) -> bool:
        """POST ``event``; True once the hook took it. A failure is one warning, never raised."""
        if self.url is None:
            return False
        body = json.dumps(event.payload(), sort_keys=True, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "infra-apply"}
        parts = urlsplit(self.url)
        # the whole URL, and its path and query on their own: where a hook keeps its credential
        secrets = [s for s in (self.url, parts.path, parts.query) if len(s) > 1]
        why = ""
        for attempt in range(attempts):
            if attempt:
                self.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
            try:
                reply = http.send(
                    "POST", self.url, headers=headers, data=body, limits=LIMITS, secrets=secrets
                )
            except http.TransportError as exc:
                why = exc.message
                continue
            if 200 <= reply.status < 300:
                return True
            why = f"HTTP {reply.status}"
            if reply.status not in _RETRIED:
                break
        self.warn(f"infra-apply: warning: the {event.kind} notification was not delivered ({why})")
        return False


def notifier(
    settings: NotifySettings, env: Mapping[str, str], warn: Warn, sleep: Sleep = time.sleep
) -> Notifier:
    """The run's notifier: none configured sends nothing silently; a configured variable that
    is unset or empty says so once."""
    if not settings.webhook_url_env:
        return Notifier(None, warn, sleep)
    url = env.get(settings.webhook_url_env, "").strip()
    if not url:
        warn(
            f"infra-apply: warning: [notify] webhook_url_env names {settings.webhook_url_env}, "
            "which is not set; no notification is sent"
        )
        return Notifier(None, warn, sleep)
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in http.LOOPBACK):
        # plain http would hand the URL (the hook's credential) to the network
        warn(
            f"infra-apply: warning: {settings.webhook_url_env} is not an https:// URL (plain http "
            "only to localhost); no notification is sent"
        )
        return Notifier(None, warn, sleep)
    return Notifier(url, warn, sleep)


# --- the events -------------------------------------------------------------------------------


def apply_done(producer: str, changed: bool, counts: Mapping[str, int], account: Account) -> Event:
    summary = ", ".join(f"{n} to {action}" for action, n in sorted(counts.items()) if n) or "no changes"
    what = "applied" if changed else "nothing to apply"
    text = f"infra-apply: producer {producer}: {what} ({summary}){account.note}"
    return Event(
        "apply.done",
        text,
        {
            "producer": producer,
            "applied": changed,
            "changes": dict(sorted(counts.items())),
            "sandbox": account.stand_in,
        },
    )


def apply_failed(producer: str, exit_code: int, account: Account) -> Event:
    # The error's text is left out on purpose: Terraform's detail may quote state values.
    text = (
        f"infra-apply: producer {producer}: apply failed (exit {exit_code}); see the job's log{account.note}"
    )
    return Event(
        "apply.failed", text, {"producer": producer, "exit_code": exit_code, "sandbox": account.stand_in}
    )


def apply_refused(producer: str, account: Account) -> Event:
    text = (
        f"infra-apply: producer {producer}: apply refused by the guard (exit 3); nothing was "
        f"changed{account.note}"
    )
    return Event("apply.refused", text, {"producer": producer, "exit_code": 3, "sandbox": account.stand_in})


def drift_found(producers: Iterable[str], account: Account) -> Event:
    """The command in ``text`` keeps the account's remedy flags (``--sandbox``): it works."""
    from infra_apply import remedy

    names = sorted(producers)
    args = [w for name in names for w in ("--producer", name)]
    see = remedy.command("drift", *args, keep=account.remedy_flags)
    text = f"infra-apply: new drift in {', '.join(names)}; {see} shows it"
    return Event("drift", text, {"producers": names, "sandbox": account.stand_in})


def lease_ending(producer: str, gpu: str, until: datetime, account: Account) -> Event:
    stamp = until.strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f"infra-apply: GPU {gpu} (producer {producer}): its lease ends at {stamp}{account.note}"
    return Event(
        "gpu.lease_ending",
        text,
        {"producer": producer, "gpu": gpu, "until": stamp, "sandbox": account.stand_in},
    )


def fingerprint(parts: Iterable[str]) -> str:
    """What a producer's drift report said, as one hash: the values stay out of the memory."""
    digest = hashlib.sha256()
    for part in sorted(parts):
        digest.update(part.encode("utf-8", "backslashreplace") + b"\0")
    return digest.hexdigest()


def ending_soon(until: datetime, now: datetime) -> bool:
    return now <= until <= now + LEASE_WARNING


# --- what was already told ------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    drift: Mapping[str, str]  # producer -> fingerprint of the drift last told ("" : none)
    leases: Mapping[str, str]  # "producer/gpu" -> the lease end announced


def encode(memory: Memory) -> str:
    doc = {"format": 1, "drift": dict(memory.drift), "leases": dict(memory.leases)}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def decode(raw: str) -> Memory:
    """The stored memory; anything unreadable is forgotten (at worst an event is told twice)."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return Memory({}, {})
    if not isinstance(doc, dict) or doc.get("format") != 1:
        return Memory({}, {})

    def strings(value: object) -> dict[str, str]:
        if not isinstance(value, dict):
            return {}
        return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}

    return Memory(strings(doc.get("drift")), strings(doc.get("leases")))


@dataclass(frozen=True)
class LocalMemory:
    """The memory under the state dir (local state): ``<work root>/notified.json``, 0600."""

    path: Path
    state: Path  # the state dir: every folder up to the file is made private

    def read(self) -> Memory:
        try:
            return decode(read_bounded(self.path, MEMORY_LIMIT).decode("utf-8", "replace"))
        except (OSError, InfraApplyError):  # none yet, or unreadable: forgotten
            return Memory({}, {})

    def write(self, memory: Memory) -> None:
        private_dirs(self.path.parent, self.state)
        atomic_write(self.path, encode(memory), 0o600)


@dataclass(frozen=True)
class RemoteMemory:
    """The memory in the state bucket, ``<key_prefix>/notified.tfstate``: a document root
    (docstore.py) beside the GPU leases and the mesh allocation record."""

    ctx: Context
    backend: Backend

    def _root(self) -> DocumentRoot:
        from infra_apply.manifests.config import CONFIG_NAME
        from infra_apply.registry.docstore import DocumentRoot, store_env
        from infra_apply.render import hcl
        from infra_apply.runtime import terraform as tf
        from infra_apply.runtime.paths import child
        from infra_apply.runtime.state import state_dir
        from infra_apply.runtime.workcopy import workdir_root

        env = self.ctx.env
        key = "/".join(filter(None, (self.backend.key_prefix, REMOTE_STATE_NAME)))
        files = {
            "notified.tf": hcl.render("notified.tf.j2").encode(),
            "backend.tf": hcl.render(
                "backend.tf.j2",
                config_name=CONFIG_NAME,
                bucket=self.backend.bucket,
                key=key,
                region=self.backend.region,
                endpoint=self.backend.endpoint,
            ).encode(),
        }
        path = child(workdir_root(self.ctx), REMOTE_ROOT)
        private_dirs(path, state_dir(env))
        sync_private(path, files)
        binary = tf.find_binary(env, version_cache=state_dir(env) / "cache" / "terraform-version.json")
        root = DocumentRoot(tf.Workdir(binary, path, store_env(env)), "notified")
        root.ensure_init(files)
        return root

    def read(self) -> Memory:
        try:
            value = self._root().read()
        except (OSError, InfraApplyError):
            return Memory({}, {})
        return decode(value) if isinstance(value, str) else Memory({}, {})

    def write(self, memory: Memory) -> None:
        from infra_apply.registry.docstore import Stale

        root = self._root()
        seen = root.read()
        # Stale: another runner wrote it meanwhile; at worst an event is told twice
        with contextlib.suppress(Stale):
            root.swap(seen if isinstance(seen, str) else None, encode(memory))


# --- in a run ---------------------------------------------------------------------------------


def for_run(ctx: Context) -> Notifier:
    """The notifier of a run; a configuration that does not load sends nothing (the command
    itself reports it)."""
    from infra_apply.manifests.config import load

    try:
        settings = load(ctx.root, ctx.env).notify
    except InfraApplyError:
        return Notifier(None, ctx.say)
    return notifier(settings, ctx.env, ctx.say)


def memory_of(ctx: Context) -> LocalMemory | RemoteMemory:
    """Beside the state: under the state dir with local state, in the state bucket with
    remote state (so a fresh CI runner knows what an earlier one told)."""
    from infra_apply.runtime.state import state_dir
    from infra_apply.runtime.workcopy import workdir_root

    backend = ctx.account.backend(ctx.root, ctx.env)
    if backend.kind == "local":
        return LocalMemory(workdir_root(ctx) / MEMORY_FILE, state_dir(ctx.env))
    return RemoteMemory(ctx, backend)


def notify_apply(ctx: Context, producer: str, run: Callable[[], Applied]) -> Applied:
    """Run ``apply`` and tell how it ended: done, refused by the guard, or failed."""
    from infra_apply.errors import ExitCode, GuardRefused, Stopped
    from infra_apply.plan.parse import COUNTED_ACTIONS

    hook = for_run(ctx)
    try:
        done = run()
    except GuardRefused:
        hook.send(apply_refused(producer, ctx.account))
        raise
    except InfraApplyError as exc:
        hook.send(apply_failed(producer, int(exc.exit_code), ctx.account))
        raise
    except KeyboardInterrupt as exc:
        code = 128 + exc.signum if isinstance(exc, Stopped) else int(ExitCode.INTERRUPTED)
        hook.send(apply_failed(producer, code, ctx.account), attempts=1)  # stopping: no waiting
        raise
    counts: dict[str, int] = {}
    for change in done.planned.plan.changes:
        if change.action in COUNTED_ACTIONS:
            counts[change.action] = counts.get(change.action, 0) + 1
    hook.send(apply_done(producer, done.applied, counts, ctx.account))
    return done


def notify_drift(ctx: Context, report: DriftReport) -> None:
    """One event when a producer's drift differs from what was last told; a producer whose
    drift is gone is forgotten, so its next drift is told again."""
    hook = for_run(ctx)
    if hook.url is None:
        return
    memory = memory_of(ctx)
    seen = memory.read()
    now = {p.producer: _drift_print(p, report) for p in report.producers if p.applied}
    new = [p for p, fp in now.items() if fp and fp != seen.drift.get(p, "")]
    told = not new or hook.send(drift_found(new, ctx.account))
    if not told:
        return  # not told: the next run tries again
    drift = {**seen.drift, **now}
    if drift != dict(seen.drift):
        _remember(ctx, memory, Memory(drift, seen.leases))


def notify_leases(ctx: Context, leases: Iterable[Lease], now: datetime) -> None:
    """One event per lease ending within the hour, once per lease (its end told is kept)."""
    hook = for_run(ctx)
    if hook.url is None:
        return
    memory = memory_of(ctx)
    seen = memory.read()
    # a lease end told a day ago is forgotten: the memory stays as small as the leases
    told = {k: v for k, v in seen.leases.items() if _after(v, now - timedelta(days=1))}
    for lease in leases:
        key, stamp = f"{lease.producer}/{lease.gpu}", lease.until.isoformat()
        due = lease.releasing is None and ending_soon(lease.until, now) and told.get(key) != stamp
        if due and hook.send(lease_ending(lease.producer, lease.gpu, lease.until, ctx.account)):
            told[key] = stamp
    if told != dict(seen.leases):
        _remember(ctx, memory, Memory(seen.drift, told))


def _after(stamp: str, moment: datetime) -> bool:
    try:
        return datetime.fromisoformat(stamp) > moment
    except (ValueError, TypeError):  # naive or unreadable: forgotten
        return False


def _drift_print(p: ProducerDrift, report: DriftReport) -> str:
    """The producer's drift as a fingerprint ("" : none), its orphans and duplicates included."""
    parts = [f"outside {c!r}" for c in p.outside] + [f"name {n!r}" for n in p.names]
    parts += [f"mesh {m!r}" for m in p.mesh]
    parts += [f"orphan {o.id}" for o in report.orphans if o.producer == p.producer]
    parts += [f"duplicate {d.id}" for d in report.duplicates if d.owner == p.producer]
    return fingerprint(parts) if parts else ""


def _remember(ctx: Context, memory: LocalMemory | RemoteMemory, value: Memory) -> None:
    try:
        memory.write(value)
    except (OSError, InfraApplyError) as exc:
        why = exc.message.splitlines()[0] if isinstance(exc, InfraApplyError) else exc.strerror
        ctx.say(f"infra-apply: warning: could not remember the notifications sent ({why})")
