"""Which folders under the state dir belong to a tree: found from what the tree is, not where.

A tree's local state (working copies with their ``terraform.tfstate``, GPU lease copies,
import overlays, takeover files, the sandbox's mesh registry, the validation cache) lives under
the state dir in folders named by the tree's *key*::

    <state>/work/{live,sandbox}/<key>/          working copies, locks, GPU leases
    <state>/takeover/{live,sandbox}/<key>/      adopt --from-state's removed.tf
    <state>/sandbox/{imports,mesh}/<key>/       the sandbox's import overlays and mesh registry
    <state>/cache/validate-<key>.json

The key, first that applies:

1. ``[state] name = "N"`` in ``infra-apply.toml``: ``name-N``. Said in the tree itself, so any
   checkout of it anywhere is the same tree (and two trees given one name share state).
2. The git repository holding the root: ``git-<hash>`` of the repository's root commit (the
   first commit of its first-parent history, which every clone, fork and worktree shares) and
   the root's path inside the repository. A re-clone, a moved or copied checkout, a worktree:
   one key. A shallow clone has no root commit to read and falls through to 3.
3. Otherwise the root's absolute path (``path_key``): ``<folder>-<hash of the path>``, the key
   every tree had before; a tree outside git follows its folder (set ``[state] name`` to move it).

State found under the old path key of the same root (and, once a git tree is given ``[state]
name``, under its git key) is moved once (``settle``) to the new key, with a line on stderr;
when both exist nothing moves and the run stops, saying what to do.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infra_apply.errors import InfraApplyError, printable
from infra_apply.runtime import locks
from infra_apply.runtime.fs import CONFIG_LIMIT, private_dirs, read_bounded
from infra_apply.runtime.paths import inside

if TYPE_CHECKING:
    from collections.abc import Callable

# Every folder keyed by the tree (``keyed``): a migration moves each of them.
AREAS: tuple[str, ...] = (
    "work/live",
    "work/sandbox",
    "takeover/live",
    "takeover/sandbox",
    "sandbox/imports",
    "sandbox/mesh",
)
MIGRATE_LOCK = "migrate.lock"
LOCK_WAIT_SECONDS = 60.0
GIT_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class TreeId:
    key: str  # the folder name under each area
    source: str  # what the key was found from, for messages


def path_key(root: Path) -> str:
    """The key of the root's absolute path (the key of a tree outside git, and of every tree
    before state followed the tree)."""
    resolved = root.resolve()
    return f"{resolved.name or 'root'}-{hashlib.sha1(str(resolved).encode()).hexdigest()[:10]}"


def identify(root: Path, env: Mapping[str, str] | None = None) -> TreeId:
    from infra_apply.manifests.config import config_path, load

    # A run asks for its key several times (checks, caches, working copies): the config is
    # parsed and checked once per text of infra-apply.toml, not once per question.
    path = config_path(root, env)
    memo: tuple[str, str, bytes | None] | None
    try:
        memo = (str(root.resolve()), str(path), read_bounded(path, CONFIG_LIMIT))
    except FileNotFoundError:
        memo = (str(root.resolve()), str(path), None)
    except OSError:
        memo = None  # load says what is wrong with it
    if memo is not None and memo in _identified:
        return _identified[memo]
    name = load(root, env).state.name
    if name:
        tree = TreeId(f"name-{name}", f'[state] name = "{name}"')
    else:
        tree = git_tree(root) or TreeId(path_key(root), f"its path {printable(str(root.resolve()))}")
    if memo is not None:
        _identified[memo] = tree
    return tree


_identified: dict[tuple[str, str, bytes | None], TreeId] = {}


def git_tree(root: Path) -> TreeId | None:
    """The key from the git repository holding the root (2. above), or None outside git."""
    found = git_identity(str(root.resolve()))
    if found is None:
        return None
    commit, rel = found
    digest = hashlib.sha256(f"{commit}\0{rel}".encode()).hexdigest()[:16]
    return TreeId(f"git-{digest}", f"git repository {commit[:12]}, path {printable(rel)}")


_ahead: dict[str, Future[tuple[str, str] | None]] = {}
_ahead_lock = threading.Lock()


def ask_git_ahead(root: Path) -> None:
    """Start ``git_identity`` of ``root`` on a daemon thread: its git processes run on another
    core while the program imports, and ``identify`` reads their answer (a failure there is
    asked again, the same way, at the point of use)."""
    key = str(root.resolve())
    done: Future[tuple[str, str] | None] = Future()
    with _ahead_lock:
        if key in _ahead:
            return
        _ahead[key] = done

    def ask() -> None:
        try:
            done.set_result(_git_identity(key))
        except BaseException as exc:
            done.set_exception(exc)

    threading.Thread(target=ask, name="git-identity", daemon=True).start()


@functools.cache
def git_identity(root: str) -> tuple[str, str] | None:
    """(root commit, root's posix path inside the repository), or None: not in git, git
    missing, a repository without commits, a shallow clone."""
    with _ahead_lock:
        asked = _ahead.pop(root, None)
    if asked is not None:
        with contextlib.suppress(Exception):
            return asked.result()
    return _git_identity(root)


def _git_identity(root: str) -> tuple[str, str] | None:
    # Both questions at once: two short git processes, the second on the other core while the
    # first runs. A shallow clone's answer to the second is its graft point, never used.
    top_shallow = _git_started(root, "rev-parse", "--show-toplevel", "--is-shallow-repository")
    first = _git_started(root, "rev-list", "--first-parent", "--max-parents=0", "HEAD")
    try:
        top, shallow = _git_answer(top_shallow).splitlines()[:2]
        roots = _git_answer(first).split()
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    finally:
        for started in (top_shallow, first):
            _git_end(started)
    if shallow.strip() != "false":
        return None
    try:
        rel = Path(root).relative_to(Path(top).resolve()).as_posix()
    except ValueError:
        return None
    return (roots[0], rel) if len(roots) == 1 else None


def _git_started(cwd: str, *args: str) -> subprocess.Popen[bytes] | OSError:
    try:
        return subprocess.Popen(
            ["git", "-c", "core.quotepath=off", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except OSError as exc:  # git missing, the root gone: no git identity
        return exc


def _git_answer(started: subprocess.Popen[bytes] | OSError) -> str:
    """The process's stdout; raises when it could not start, failed or did not answer in time."""
    if isinstance(started, OSError):
        raise started
    out, _ = started.communicate(timeout=GIT_TIMEOUT_SECONDS)
    if started.returncode != 0:
        raise subprocess.CalledProcessError(started.returncode, started.args)
    return out.decode("utf-8", "surrogateescape")


def _git_end(started: subprocess.Popen[bytes] | OSError) -> None:
    """Never leaves a git process behind (timed out, or not read after the other failed)."""
    if isinstance(started, OSError) or started.returncode is not None:
        return
    started.kill()
    started.wait()
    if started.stdout is not None:
        started.stdout.close()


def keyed(state: Path, area: str, key: str) -> Path:
    """``<state>/<area>/<key>``, refused unless it lies inside the state dir."""
    return inside(state / area / key, state)


def validation_cache_file(state: Path, key: str) -> Path:
    return state / "cache" / f"validate-{key}.json"


_settled: set[tuple[Path, str, str]] = set()


def settle(root: Path, state: Path, env: Mapping[str, str] | None, say: Callable[[str], None]) -> TreeId:
    """The tree's key, after moving its state kept under a former key, once per process."""
    tree = identify(root, env)
    for old, label in _former_keys(root, tree):
        marker = (state, old, tree.key)
        if old != tree.key and marker not in _settled and state.is_dir():
            migrate(state, old, tree, say, label)
        _settled.add(marker)
    return tree


def _former_keys(root: Path, tree: TreeId) -> list[tuple[str, str]]:
    """Keys this tree's state may still sit under: its path (every tree before keys followed
    the tree) and, once a git tree is given ``[state] name``, its git key."""
    keys = [(path_key(root), "path key")]
    if tree.key.startswith("name-") and (git := git_tree(root)) is not None:
        keys.append((git.key, "git key"))
    return keys


def migrate(state: Path, old: str, new: TreeId, say: Callable[[str], None], label: str = "path key") -> None:
    """Move every area's ``old`` folder (and the validation cache) to ``new.key`` by renames
    within the state dir, under a lock: all or, on a conflict, nothing."""
    if not _pending(state, old) and not validation_cache_file(state, old).exists():
        return
    what = f"the local state under {state} (being moved)"
    with locks.held(state / MIGRATE_LOCK, what, timeout=LOCK_WAIT_SECONDS):
        moved = _move(state, old, new, label)
    if moved:
        say(
            f"infra-apply: moved this tree's local state from its old {label} {old} to {new.key} "
            f"({new.source}) under {state}: {', '.join(moved)} (once; later runs use the new key)"
        )


def _pending(state: Path, old: str) -> list[str]:
    return [area for area in AREAS if os.path.lexists(state / area / old)]


def _move(state: Path, old: str, new: TreeId, label: str) -> list[str]:
    areas = _pending(state, old)
    both = [a for a in areas if os.path.lexists(state / a / new.key)]
    if both:
        a = both[0]
        raise InfraApplyError(
            f"this tree's local state is under its old {label} and its new key ({new.source}): "
            f"{state / a / old} and {state / a / new.key}; nothing was moved. Keep the one that "
            f"holds the state you use and move the other out of {state} "
            f"(e.g. mv {state / a / old} {state / a / old}.unused), then run again",
            rule="state_key",
        )
    with _held(state, old, areas):
        for area in areas:
            target = keyed(state, area, new.key)
            private_dirs(target.parent, state)
            try:
                # rename(2) never crosses the state dir's file system and is atomic per folder;
                # it refuses a non-empty target that appeared meanwhile.
                os.rename(state / area / old, target)
            except OSError as exc:
                raise InfraApplyError(
                    f"cannot move {state / area / old} to {target}: {exc.strerror}; "
                    "nothing else was moved since, run again",
                    rule="state_key",
                ) from None
    cache = validation_cache_file(state, old)
    if cache.exists():
        if validation_cache_file(state, new.key).exists():
            cache.unlink()  # a cache: the newer one stays
        else:
            os.rename(cache, validation_cache_file(state, new.key))
    return areas


@contextmanager
def _held(state: Path, old: str, areas: Sequence[str]) -> Iterator[None]:
    """Every lock an infra-apply run takes in the old folders (working copies, GPU leases, the
    sandbox registry), taken without waiting: a run still using them stops the move."""
    with ExitStack() as stack:
        for area in areas:
            for path in sorted((state / area / old).glob("*.lock")):
                stack.enter_context(locks.held(path, str(path.with_suffix("")), busy=_busy_key))
        yield


def _busy_key(message: str) -> InfraApplyError:
    return InfraApplyError(message, rule="state_key")
