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

The calls run on daemon threads: a run that stops on an error (a manifest that does not
validate) abandons the calls in flight and exits at once, instead of waiting for them up to
the HTTP timeout. An abandoned call only fills its own future: it writes and prints nothing.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
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
        self._lock = threading.Lock()

    def once(self, name: str, *args: str) -> Future[Any]:
        key = (name, *args)
        with self._lock:
            found = self._futures.get(key)
            if found is None:
                method: Callable[..., Any] = getattr(self.source, name)
                found = self._futures[key] = self._pool.submit(method, *args)
        return found

    def early(self, name: str, *args: str) -> None:
        """Ask ahead of need; once the run has ended (its pool shut down) there is no need."""
        with contextlib.suppress(RuntimeError):
            self.once(name, *args)


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

    def __init__(self, env: Mapping[str, str]) -> None:
        from infra_apply.cloud import do_api

        self.endpoint = env.get(do_api.ENDPOINT_VAR) or do_api.DEFAULT_ENDPOINT
        self._pool: _Pool | None = None
        self._by_token: dict[str, _Calls] = {}
        self._lock = threading.Lock()

    def live(self, token: str, label: str = "the DigitalOcean account") -> Shared:
        from infra_apply.cloud import do_api

        with self._lock:
            if self._pool is None:
                self._pool = _Pool(WORKERS)
            calls = self._by_token.get(token)
            if calls is None:
                source = LiveSource(do_api.Client(token, self.endpoint))
                calls = self._by_token[token] = _Calls(source, self._pool)
        return Shared(calls, label)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown()

    def __enter__(self) -> Accounts:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def started(account: Account, env: Mapping[str, str], producers: Iterable[str]) -> Accounts:
    """A run's accounts with ``account``'s catalogue already asked for (``start_catalogue``).
    Light to import: a verb starts it before it imports the rest of the program, so the
    answers arrive while it does (the caller closes it, or hands it to a run that does)."""
    accounts = Accounts(env)
    account.start_catalogue(env, list(producers), accounts)
    return accounts
