"""The live accounts of one run, each asked once: pre-flight, prices and the "never create what
exists" lookups share one catalogue per token.

``Accounts.live`` gives a ``Shared`` source (``preflight.Source``) per token; ``prefetch``
starts every list a run reads at once (account, clusters, SSH keys, sizes, regions,
distribution images, droplets, firewalls, and each declared image by slug) on one bounded pool
over the one HTTP transport, and asks for each declared cluster's databases and users the
moment the cluster list arrives. A consumer reading a list waits for
that one answer only; every answer is fetched at most once per run (``/v2/sizes`` once, for
pre-flight and prices alike). A failed call fails whoever reads it, as an unshared call would.

One run is one verb's: a later run (another apply) builds its own ``Accounts`` and sees what
the account holds then, never a list from before its own changes.

What a run can only ask once its manifests are read (an image by slug; a cluster's firewall,
databases and users, by the cluster's id from the cluster list) would be a second round trip
before pre-flight. A plan started by the CLI remembers those calls for the next plan of the same
tree, endpoint and token (``hints_file``, in the state dir), which asks them in its first round
with the lists. Only the timing moves: every answer is fetched by this run, and read only when this
run asks that very call (a cluster re-created under a new id is asked by its new id); a call
nobody needs any more is one GET nobody reads, and is not remembered again.

The calls run on daemon threads: a run that stops on an error (a manifest that does not
validate) abandons the calls in flight and exits at once, instead of waiting for them up to
the HTTP timeout. An abandoned call only fills its own future: it writes and prints nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra_apply.cloud.preflight import JsonObject, LiveSource, Source

if TYPE_CHECKING:
    from infra_apply.cloud.account import Account

# Every list at once, plus a cluster's dbs and users: about ten requests in flight per account.
WORKERS = 12
LISTS = (
    "account",
    "databases",
    "ssh_keys",
    "sizes",
    "regions",
    "distribution_images",
    "droplets",
    "firewalls",
)
# A run started before its manifests are read asks every cluster's firewall (pre-flight reads
# the firewall of each cluster used) when the account holds at most this many: a second round
# trip is off the path to the plan, for a few GETs nobody may read.
FEW_CLUSTERS = 4
# The calls a run makes once its manifests are read, remembered for the next run's first round.
HINTED = frozenset({"image", "database_firewall", "database_dbs", "database_users"})
HINTS_KEPT = 64
HINTS_LIMIT = 64 * 1024  # bytes
_HINT_ARG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # an image slug or a cluster's id
Hint = tuple[str, str]


class _Pool:
    """A bounded pool of daemon threads: ``ThreadPoolExecutor``'s workers are joined when the
    interpreter exits, so an error would wait for the calls in flight; these are not."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._started = 0
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[str, ...]] | None]
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, method: Callable[..., Any], *args: str) -> Future[Any]:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule a call after the run ended")
            done: Future[Any] = Future()
            self._jobs.put((done, method, args))
            if self._started < self._workers:  # a run asks about a dozen things: one thread each
                self._started += 1
                threading.Thread(target=self._work, name=f"account_{self._started}", daemon=True).start()
        return done

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            done, method, args = job
            if done.set_running_or_notify_cancel():
                try:
                    done.set_result(method(*args))
                except BaseException as exc:  # the reader gets it, as from an unshared call
                    done.set_exception(exc)

    def shutdown(self) -> None:
        """Cancel what has not started; leave what runs to finish or be abandoned at exit."""
        with self._lock:
            self._closed = True
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
            for _ in range(self._started):
                self._jobs.put(None)


class _Calls:
    """Each distinct call of one source, made once on the run's pool."""

    def __init__(self, source: Source, pool: _Pool) -> None:
        self.source = source
        self._pool = pool
        self._futures: dict[tuple[str, ...], Future[Any]] = {}
        self._asked: set[tuple[str, ...]] = set()  # by the run itself, not from a hint
        self.hints: list[Hint] = []  # what the last run with this token asked late
        self._lock = threading.Lock()

    def once(self, name: str, *args: str) -> Future[Any]:
        return self._call((name, *args), asked=True)

    def early(self, name: str, *args: str, hinted: bool = False) -> None:
        """Ask ahead of need; once the run has ended (its pool shut down) there is no need.
        ``hinted``: remembered from the last run, not (yet) asked by this one."""
        with contextlib.suppress(RuntimeError):
            self._call((name, *args), asked=not hinted)

    def _call(self, key: tuple[str, ...], *, asked: bool) -> Future[Any]:
        with self._lock:
            found = self._futures.get(key)
            if found is None:
                method: Callable[..., Any] = getattr(self.source, key[0])
                found = self._futures[key] = self._pool.submit(method, *key[1:])
            if asked:
                self._asked.add(key)
        return found

    def answered_hints(self) -> list[Hint]:
        """The calls of ``HINTED`` this run asked and got an answer to."""
        with self._lock:
            done = {k: self._futures[k] for k in self._asked if k[0] in HINTED and len(k) == 2}
        return sorted(
            (k[0], k[1]) for k, f in done.items() if f.done() and not f.cancelled() and f.exception() is None
        )


def _answer(done: Future[Any]) -> list[JsonObject]:
    """A finished list call's answer; nothing when it failed (whoever reads it gets the failure)."""
    if done.cancelled() or done.exception() is not None:
        return []
    return list(done.result())


class Shared:
    """A ``preflight.Source`` whose answers are fetched once per run and shared."""

    def __init__(self, calls: _Calls, label: str) -> None:
        self._calls = calls
        self.label = label

    def prefetch(self, clusters: Iterable[str] = (), images: Iterable[str] = ()) -> None:
        """Start every list now, and each of ``images`` (slugs) by slug: pre-flight needs one
        round trip, not a second for the images outside the distributions (the few slugs that
        are distributions cost a call each, in the same round). ``clusters`` (names) have their
        databases and users asked as soon as the cluster list arrives: only the exists lookups
        read them, after ``terraform plan``."""
        for name in LISTS:
            self._calls.once(name)
        for slug in sorted({s for s in images if not s.isdigit()}):
            self._calls.once("image", slug)
        wanted = set(clusters)
        if wanted:
            self._calls.once("databases").add_done_callback(lambda f: self._cluster_lists(f, wanted))

    def start(self) -> None:
        """A run's first round, asked before its manifests say what they use: every list, and
        each cluster's firewall when the account holds few (``FEW_CLUSTERS``)."""
        self.prefetch()
        for name, arg in self._calls.hints:
            self._calls.early(name, arg, hinted=True)
        self._calls.once("databases").add_done_callback(self._firewalls)

    def _firewalls(self, done: Future[Any]) -> None:
        found = _answer(done)
        if len(found) <= FEW_CLUSTERS:
            for cluster in found:
                self._calls.early("database_firewall", str(cluster.get("id")))

    def _cluster_lists(self, done: Future[Any], wanted: set[str]) -> None:
        ids = [str(c.get("id")) for c in _answer(done) if str(c.get("name")) in wanted]
        for cluster_id in ids:
            self._calls.early("database_dbs", cluster_id)
            self._calls.early("database_users", cluster_id)
            self._calls.early("database_firewall", cluster_id)

    def _get(self, name: str, *args: str) -> Any:
        return self._calls.once(name, *args).result()

    def account(self) -> JsonObject:
        found: JsonObject = self._get("account")
        return found

    def databases(self) -> list[JsonObject]:
        return list(self._get("databases"))

    def ssh_keys(self) -> list[JsonObject]:
        return list(self._get("ssh_keys"))

    def sizes(self) -> list[JsonObject]:
        return list(self._get("sizes"))

    def regions(self) -> list[JsonObject]:
        return list(self._get("regions"))

    def distribution_images(self) -> list[JsonObject]:
        return list(self._get("distribution_images"))

    def image(self, slug: str) -> JsonObject | None:
        found: JsonObject | None = self._get("image", slug)
        return found

    def droplets(self) -> list[JsonObject]:
        return list(self._get("droplets"))

    def firewalls(self) -> list[JsonObject]:
        return list(self._get("firewalls"))

    def database_dbs(self, cluster_id: str) -> list[JsonObject]:
        return list(self._get("database_dbs", cluster_id))

    def database_users(self, cluster_id: str) -> list[JsonObject]:
        return list(self._get("database_users", cluster_id))

    def database_firewall(self, cluster_id: str) -> list[JsonObject]:
        return list(self._get("database_firewall", cluster_id))


class Accounts:
    """The live accounts one run talks to, one ``Shared`` source per token. Close it (or use it
    as a context manager) when the run ends: calls nobody waits for are dropped."""

    def __init__(self, env: Mapping[str, str], hints: Path | None = None) -> None:
        """``hints``: where the calls to ask in the first round are remembered (``hints_file``)."""
        from infra_apply.cloud import do_api

        self.endpoint = env.get(do_api.ENDPOINT_VAR) or do_api.DEFAULT_ENDPOINT
        self._pool: _Pool | None = None
        self._by_token: dict[str, _Calls] = {}
        self._lock = threading.Lock()
        self._hints_file = hints

    def live(self, token: str, label: str = "the DigitalOcean account") -> Shared:
        from infra_apply.cloud import do_api

        with self._lock:
            if self._pool is None:
                self._pool = _Pool(WORKERS)
            calls = self._by_token.get(token)
            if calls is None:
                source = LiveSource(do_api.Client(token, self.endpoint))
                calls = self._by_token[token] = _Calls(source, self._pool)
                if self._hints_file is not None:
                    calls.hints = read_hints(_for_token(self._hints_file, token))
        return Shared(calls, label)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown()
            by_token = list(self._by_token.items())
        if self._hints_file is None:
            return
        for token, calls in by_token:  # each token's account has its own clusters
            answered = calls.answered_hints()[:HINTS_KEPT]
            if answered != calls.hints:
                store_hints(_for_token(self._hints_file, token), answered)

    def __enter__(self) -> Accounts:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def started(
    account: Account, env: Mapping[str, str], producers: Iterable[str], root: Path | None = None
) -> Accounts:
    """A run's accounts with ``account``'s catalogue already asked for (``start_catalogue``),
    with the calls the last run of the tree at ``root`` made once its manifests were read.
    Light to import: a verb starts it before it imports the rest of the program, so the
    answers arrive while it does (the caller closes it, or hands it to a run that does)."""
    accounts = Accounts(env, hints_file(env, root) if root is not None else None)
    account.start_catalogue(env, list(producers), accounts)
    return accounts


def hints_file(env: Mapping[str, str], root: Path) -> Path | None:
    """``<state>/cache/catalogue-hints-<key of the root's path and the API endpoint>.json``, one
    per token beside it (``_for_token``); None with INFRA_APPLY_NO_CACHE."""
    from infra_apply.cloud import do_api
    from infra_apply.runtime.state import side_cache

    endpoint = env.get(do_api.ENDPOINT_VAR) or do_api.DEFAULT_ENDPOINT
    try:
        where = f"{root.resolve()}\0{endpoint}".encode("utf-8", "surrogatepass")
    except (OSError, RuntimeError):
        return None  # a root that cannot be resolved: the run says so where it reads it
    return side_cache(env, f"catalogue-hints-{hashlib.sha256(where).hexdigest()[:20]}.json")


def _for_token(hints: Path, token: str) -> Path:
    """One file per token (by a digest of it: the token itself is never written), so a second
    account is never asked about the first one's clusters."""
    digest = hashlib.sha256(b"infra-apply catalogue hints\0" + token.encode("utf-8", "surrogatepass"))
    return hints.with_name(f"{hints.stem}-{digest.hexdigest()[:16]}{hints.suffix}")


def read_hints(path: Path) -> list[Hint]:
    """The remembered calls; none when the file is missing, not private or not what
    ``store_hints`` writes (each call a known name and a plain slug or id)."""
    from infra_apply.runtime.state import read_side_cache

    data = read_side_cache(path, HINTS_LIMIT)
    try:
        found = json.loads(data) if data is not None else []
    except ValueError:
        return []
    if not isinstance(found, list):
        return []
    hints = [
        (h[0], h[1])
        for h in found
        if isinstance(h, list)
        and len(h) == 2
        and h[0] in HINTED
        and isinstance(h[1], str)
        and _HINT_ARG.fullmatch(h[1])
    ]
    return sorted(set(hints))[:HINTS_KEPT]


def store_hints(path: Path, hints: list[Hint]) -> None:
    """Only into the cache folder of a state dir the run checked (never one it refused, say
    inside ``generated/``); a read-only one only costs the next run its round."""
    from infra_apply.runtime.state import keep_side_cache

    keep_side_cache(path, json.dumps([list(h) for h in hints]).encode() + b"\n")
