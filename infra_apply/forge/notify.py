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

What was already told is remembered beside the state (``LocalMemory``, ``RemoteMemory``), so
that a fresh CI runner does not repeat it: the drift fingerprint of each producer, and each lease
whose end was announced. A run claims an event before telling it (compare-and-swap of the memory
in the state bucket, the memory's file lock with local state): of two runners finding the same
drift, the one whose claim lands tells it and the other sees the claim and stays silent. A send
that fails gives its claim back, so the next run tries again.

An apply event names what ran (``command``: ``apply``, ``gpu up``, ``gpu down``, ``gpu reap``);
fields are only ever added, so ``format_version`` stays 1 for every reader of these events.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from infra_apply.cloud import http
from infra_apply.errors import InfraApplyError
from infra_apply.manifests.config import NotifySettings as NotifySettings  # its home: [notify]
from infra_apply.runtime import locks
from infra_apply.runtime.fs import atomic_write, private_dirs, read_bounded, sync_private
from infra_apply.untrusted import mask

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
MEMORY_LOCK = "notified.json.lock"
MEMORY_LOCK_SECONDS = 60.0  # a claim holds it for a read and a write
MEMORY_LIMIT = 1024 * 1024
SWAP_ATTEMPTS = 5  # a claim re-read this often while other runners keep writing the memory
APPLY = "apply"
# Environment variables whose values a payload must never carry, by their name.
_SECRET_NAMES = ("TOKEN", "SECRET", "PASSWORD", "KEY", "WEBHOOK", "URL")
REMOTE_ROOT = "notify.memory"  # beside the producers' working copies; never a producer's name
REMOTE_STATE_NAME = "notified.tfstate"
_RETRIED = frozenset({429, 500, 502, 503, 504})

Warn = Callable[[str], None]
Sleep = Callable[[float], None]
T = TypeVar("T")


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


@dataclass(frozen=True)
class Ran:
    """What ran the apply an event tells of: ``apply``, or a GPU verb and its GPU."""

    command: str = APPLY
    gpu: str | None = None

    @property
    def label(self) -> str:
        """Where the text says it ("" for apply: its text stays as it always was)."""
        return "" if self.gpu is None else f"{self.command} {self.gpu}: "

    def fields(self) -> dict[str, object]:
        out: dict[str, object] = {"command": self.command}
        if self.gpu is not None:
            out["gpu"] = self.gpu
        return out


def apply_done(
    producer: str, changed: bool, counts: Mapping[str, int], account: Account, ran: Ran = Ran()
) -> Event:
    summary = ", ".join(f"{n} to {action}" for action, n in sorted(counts.items()) if n) or "no changes"
    what = "applied" if changed else "nothing to apply"
    text = f"infra-apply: producer {producer}: {ran.label}{what} ({summary}){account.note}"
    return Event(
        "apply.done",
        text,
        {
            "producer": producer,
            "applied": changed,
            "changes": dict(sorted(counts.items())),
            "sandbox": account.stand_in,
            **ran.fields(),
        },
    )


def apply_failed(
    producer: str, exit_code: int, account: Account, ran: Ran = Ran(), error: str | None = None
) -> Event:
    """``error``: the first line of a configuration error (masked), the one error told; any
    other error's text is left out on purpose: Terraform's detail may quote state values."""
    why = f": {error}" if error else "; see the job's log"
    text = f"infra-apply: producer {producer}: {ran.label}apply failed (exit {exit_code}){why}{account.note}"
    fields: dict[str, object] = {"producer": producer, "exit_code": exit_code, "sandbox": account.stand_in}
    if error:
        fields["error"] = error
    return Event("apply.failed", text, fields | ran.fields())


def reap_failed(exit_code: int, account: Account, error: str | None = None) -> Event:
    """``gpu reap`` stopped before any producer's leases were read (the reaper runs on a timer:
    nobody watches it, and GPUs it does not reap keep billing). ``error`` as for apply_failed."""
    why = f": {error}" if error else "; see the reaper's log"
    text = (
        f"infra-apply: gpu reap failed (exit {exit_code}){why}; no GPU lease is reaped until it "
        f"runs again{account.note}"
    )
    fields: dict[str, object] = {"exit_code": exit_code, "sandbox": account.stand_in, "command": "gpu reap"}
    if error:
        fields["error"] = error
    return Event("reap.failed", text, fields)


def tell_reap_failure(ctx: Context, exc: InfraApplyError) -> None:
    """Tell a reap that stopped before it knew the producers (its configuration, its checks)."""
    for_run(ctx).send(reap_failed(int(exc.exit_code), ctx.account, config_error_line(exc, ctx.env)))


def apply_refused(producer: str, account: Account, ran: Ran = Ran()) -> Event:
    text = (
        f"infra-apply: producer {producer}: {ran.label}apply refused by the guard (exit 3); nothing was "
        f"changed{account.note}"
    )
    return Event(
        "apply.refused",
        text,
        {"producer": producer, "exit_code": 3, "sandbox": account.stand_in, **ran.fields()},
    )


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


Change = Callable[[Memory], Memory]


@dataclass(frozen=True)
class LocalMemory:
    """The memory under the state dir (local state): ``<work root>/notified.json``, 0600. A
    claim reads and writes it under its lock (``notified.json.lock``), so two runs on one
    machine never both claim one event."""

    path: Path
    state: Path  # the state dir: every folder up to the file is made private

    def read(self) -> Memory:
        try:
            return decode(read_bounded(self.path, MEMORY_LIMIT).decode("utf-8", "replace"))
        except (OSError, InfraApplyError):  # none yet, or unreadable: forgotten
            return Memory({}, {})

    def update(self, change: Change) -> tuple[Memory, Memory]:
        """Apply ``change`` to the memory as it is now; (before, after) of what was written."""
        private_dirs(self.path.parent, self.state)
        lock = self.path.with_name(MEMORY_LOCK)
        with locks.held(lock, "the notifications' memory", timeout=MEMORY_LOCK_SECONDS):
            before = self.read()
            after = change(before)
            if after != before:
                atomic_write(self.path, encode(after), 0o600)
        return before, after


@dataclass(frozen=True)
class RemoteMemory:
    """The memory in the state bucket, ``<key_prefix>/notified.tfstate``: a document root
    (docstore.py) beside the GPU leases and the mesh allocation record, written by
    compare-and-swap, so that of two runners claiming at once one claim lands and the other
    is re-decided on what the first wrote."""

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

    def update(self, change: Change) -> tuple[Memory, Memory]:
        """Apply ``change`` to the memory as it is now; (before, after) of what was written.
        Another runner's write in between (``Stale``) re-reads and re-decides."""
        from infra_apply.registry.docstore import Stale

        root = self._root()
        for _ in range(SWAP_ATTEMPTS):
            value = root.read()
            seen = value if isinstance(value, str) else None
            before = decode(seen) if seen is not None else Memory({}, {})
            after = change(before)
            if after == before:
                return before, after
            try:
                root.swap(seen, encode(after))
            except Stale:
                continue
            return before, after
        raise InfraApplyError(
            f"other runners kept writing it ({SWAP_ATTEMPTS} attempts); the next run tries again"
        )


# --- in a run ---------------------------------------------------------------------------------


def for_run(ctx: Context) -> Notifier:
    """The notifier of a run. A configuration that parses as TOML but is invalid elsewhere
    still has its ``[notify]`` read alone, so the failure can be told; one that does not
    parse sends nothing (the command itself reports it)."""
    from infra_apply.manifests.config import ConfigError, load

    try:
        settings = load(ctx.root, ctx.env).notify
    except ConfigError:
        settings = notify_alone(ctx.root, ctx.env)
    except InfraApplyError:
        return Notifier(None, ctx.say)
    return notifier(settings, ctx.env, ctx.say)


def notify_alone(root: Path, env: Mapping[str, str]) -> NotifySettings:
    """``[notify]`` of a configuration that did not load, strictly: a table holding nothing but
    a valid ``webhook_url_env``; anything else (or no TOML at all) is no notifications."""
    import tomllib

    from infra_apply.manifests.config import _ENV_NAME, config_path
    from infra_apply.runtime.fs import CONFIG_LIMIT

    try:
        doc = tomllib.loads(read_bounded(config_path(root, env), CONFIG_LIMIT).decode("utf-8"))
    except (OSError, InfraApplyError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return NotifySettings()
    table = doc.get("notify")
    if not isinstance(table, dict) or set(table) != {"webhook_url_env"}:
        return NotifySettings()
    name = table["webhook_url_env"]
    return NotifySettings(name) if isinstance(name, str) and _ENV_NAME.fullmatch(name) else NotifySettings()


def config_error_line(exc: InfraApplyError, env: Mapping[str, str]) -> str | None:
    """The first line of a configuration error as the CLI prints it, with every value of a
    secret-looking variable masked; None for any other error (its text stays in the log)."""
    from infra_apply.manifests.config import ConfigError

    if not isinstance(exc, ConfigError):
        return None
    secrets = [v for k, v in env.items() if any(n in k.upper() for n in _SECRET_NAMES)]
    return mask(exc.format().splitlines()[0], secrets)


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
    return tell_apply(ctx, producer, Ran(), run, lambda done: done)


def tell_apply(
    ctx: Context, producer: str, ran: Ran, run: Callable[[], T], applied: Callable[[T], Applied]
) -> T:
    """Run what applies (``apply``, or a GPU verb's apply: ``ran``) and tell how it ended. A
    refusal is any exit 3 (a GPU verb's error keeps the guard's exit code, not its class)."""
    from infra_apply.errors import ExitCode, Stopped
    from infra_apply.plan.parse import COUNTED_ACTIONS

    hook = for_run(ctx)
    try:
        result = run()
    except InfraApplyError as exc:
        if exc.exit_code == ExitCode.REFUSED:
            hook.send(apply_refused(producer, ctx.account, ran))
        else:
            error = config_error_line(exc, ctx.env)
            hook.send(apply_failed(producer, int(exc.exit_code), ctx.account, ran, error))
        raise
    except KeyboardInterrupt as exc:
        code = 128 + exc.signum if isinstance(exc, Stopped) else int(ExitCode.INTERRUPTED)
        hook.send(apply_failed(producer, code, ctx.account, ran), attempts=1)  # stopping: no waiting
        raise
    done = applied(result)
    counts: dict[str, int] = {}
    for change in done.planned.plan.changes:
        if change.action in COUNTED_ACTIONS:
            counts[change.action] = counts.get(change.action, 0) + 1
    hook.send(apply_done(producer, done.applied, counts, ctx.account, ran))
    return result


def notify_drift(ctx: Context, report: DriftReport) -> None:
    """One event when a producer's drift differs from what was last told; a producer whose
    drift is gone is forgotten, so its next drift is told again. The new fingerprints are
    claimed before telling: a runner that finds them claimed by another stays silent."""
    hook = for_run(ctx)
    if hook.url is None:
        return
    memory = memory_of(ctx)
    now = {p.producer: _drift_print(p, report) for p in report.producers if p.applied}
    before, claimed = _claim(ctx, memory, lambda seen: Memory({**seen.drift, **now}, seen.leases))
    new = {p: fp for p, fp in now.items() if fp and fp != before.drift.get(p, "")}
    if not new or hook.send(drift_found(new, ctx.account)) or not claimed:
        return
    # not told: the claim goes back, so the next run tries again
    _claim(ctx, memory, lambda seen: Memory(_given_back(seen.drift, new, before.drift), seen.leases))


def notify_leases(ctx: Context, leases: Iterable[Lease], now: datetime) -> None:
    """One event per lease ending within the hour, once per lease (its end told is kept and
    claimed before telling, as drift is)."""
    hook = for_run(ctx)
    if hook.url is None:
        return
    memory = memory_of(ctx)
    due = {
        f"{lease.producer}/{lease.gpu}": lease
        for lease in leases
        if lease.releasing is None and ending_soon(lease.until, now)
    }
    stamps = {key: lease.until.isoformat() for key, lease in due.items()}

    def claim(seen: Memory) -> Memory:
        # a lease end told a day ago is forgotten: the memory stays as small as the leases
        told = {k: v for k, v in seen.leases.items() if _after(v, now - timedelta(days=1))}
        return Memory(seen.drift, told | stamps)

    before, claimed = _claim(ctx, memory, claim)
    mine = {key: stamp for key, stamp in stamps.items() if before.leases.get(key) != stamp}
    failed = {
        key: stamp
        for key, stamp in mine.items()
        if not hook.send(lease_ending(due[key].producer, due[key].gpu, due[key].until, ctx.account))
    }
    if failed and claimed:
        _claim(ctx, memory, lambda seen: Memory(seen.drift, _given_back(seen.leases, failed, before.leases)))


def _given_back(
    current: Mapping[str, str], ours: Mapping[str, str], before: Mapping[str, str]
) -> dict[str, str]:
    """``current`` with each claim of ours that is still there put back as it was before."""
    out = dict(current)
    for key, value in ours.items():
        if out.get(key) != value:
            continue  # claimed again since, by another run: theirs now
        if key in before:
            out[key] = before[key]
        else:
            del out[key]
    return out


def _claim(ctx: Context, memory: LocalMemory | RemoteMemory, change: Change) -> tuple[Memory, bool]:
    """(the memory the claim was decided on, whether it landed). A memory that cannot be
    written is a warning, and what it last said decides (at worst an event is told twice)."""
    try:
        before, _ = memory.update(change)
    except (OSError, InfraApplyError) as exc:
        why = exc.message.splitlines()[0] if isinstance(exc, InfraApplyError) else exc.strerror
        ctx.say(f"infra-apply: warning: could not remember the notifications sent ({why})")
        return memory.read(), False
    return before, True


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
