"""A tree's local state key (infra_apply/runtime/identity.py): what the tree is, not where it lies; the
one-time move from the old path key; and plan/apply refusing local state under CI."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra_apply.cloud.account import LiveAccount, SandboxAccount
from infra_apply.errors import InfraApplyError
from infra_apply.manifests.config import load
from infra_apply.runtime import identity
from infra_apply.runtime.identity import identify, path_key, settle
from tests.conftest import CONFIG, base_tree, cli_env, run_cli, write_tree

GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV, "GIT_CONFIG_GLOBAL": str(cwd / ".no-gitconfig")}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


def repo(base: Path, rel: str = "infra", message: str = "tree") -> Path:
    """A git repository at ``base`` holding a tree at ``base/rel``, one commit."""
    write_tree(base / rel, base_tree())
    git(base, "init", "-q", "-b", "main")
    git(base, "add", "-A")
    git(base, "commit", "-q", "-m", message)
    return base / rel


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    """Each test sees identity as a new process does (git answers and moves are remembered)."""
    identity.git_identity.cache_clear()
    identity._settled.clear()
    yield
    identity.git_identity.cache_clear()
    identity._settled.clear()


# --- the key ------------------------------------------------------------------------------


def test_a_git_tree_has_one_key_wherever_it_is_cloned_moved_or_copied(tmp_path: Path) -> None:
    root = repo(tmp_path / "a")
    key = identify(root, {}).key
    assert key.startswith("git-") and key != path_key(root)
    git(tmp_path, "clone", "-q", str(tmp_path / "a"), str(tmp_path / "b"))
    (tmp_path / "a").rename(tmp_path / "c")
    assert identify(tmp_path / "b" / "infra", {}).key == key
    assert identify(tmp_path / "c" / "infra", {}).key == key
    # a later commit (another branch, a merge) keeps it: the root commit does not change
    (tmp_path / "c" / "infra" / "README").write_text("x")
    git(tmp_path / "c", "add", "-A")
    git(tmp_path / "c", "commit", "-q", "-m", "more")
    identity.git_identity.cache_clear()
    assert identify(tmp_path / "c" / "infra", {}).key == key


def test_another_tree_of_the_same_repository_or_another_repository_has_another_key(tmp_path: Path) -> None:
    root = repo(tmp_path / "a")
    write_tree(tmp_path / "a" / "other", base_tree())
    other = repo(tmp_path / "z", message="another tree")  # same content: another root commit
    keys = {identify(root, {}).key, identify(tmp_path / "a" / "other", {}).key, identify(other, {}).key}
    assert len(keys) == 3


def test_state_name_wins_and_a_tree_outside_git_keeps_its_path_key(tmp_path: Path) -> None:
    loose = write_tree(tmp_path / "loose", base_tree())
    assert identify(loose, {}) == identity.TreeId(path_key(loose), f"its path {loose.resolve()}")
    (loose / "infra-apply.toml").write_text(f'[state]\nname = "uvlava-infra"\n{CONFIG}')
    assert identify(loose, {}).key == "name-uvlava-infra"
    root = repo(tmp_path / "r")
    (root / "infra-apply.toml").write_text(f'[state]\nname = "uvlava-infra"\n{CONFIG}')
    assert identify(root, {}).key == "name-uvlava-infra"


def test_a_shallow_clone_has_no_root_commit_and_keeps_its_path_key(tmp_path: Path) -> None:
    repo(tmp_path / "a")
    (tmp_path / "a" / "infra" / "x").write_text("x")
    git(tmp_path / "a", "add", "-A")
    git(tmp_path / "a", "commit", "-q", "-m", "second")
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{tmp_path / 'a'}", str(tmp_path / "s"))
    shallow = tmp_path / "s" / "infra"
    assert identify(shallow, {}).key == path_key(shallow)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('name = "Ops"', "[state] name 'Ops': 1-63 of a-z 0-9 . _ -"),
        ('name = "../x"', "[state] name '../x': 1-63 of a-z 0-9 . _ -"),
        ("name = 3", "[state] name must be a string"),
        ('allow_local_in_ci = "yes"', "[state] allow_local_in_ci must be true or false"),
        ("allow_local_in_cl = true", "[state] allow_local_in_cl: unknown setting"),
    ],
)
def test_bad_state_settings_are_located_errors(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "infra-apply.toml").write_text(f"[droplets]\nmonitoring = true\n[state]\n{line}\n")
    with pytest.raises(InfraApplyError) as err:
        load(tmp_path, {})
    assert (err.value.path, err.value.line, err.value.col) == ("infra-apply.toml", 4, 1)
    assert err.value.message.startswith(message), err.value.message


# --- the move from the old path key -----------------------------------------------------------------


def old_state(state: Path, old: str) -> None:
    """What an older version kept under the path key: every keyed folder and the cache."""
    for area in identity.AREAS:
        (state / area / old / "ct").mkdir(parents=True)
        (state / area / old / "ct" / "terraform.tfstate").write_text(area)
    (state / "work" / "live" / old / "ct.lock").write_text("")
    (state / "cache").mkdir()
    (state / "cache" / f"validate-{old}.json").write_text("{}")


def test_state_under_the_old_path_key_is_moved_once_with_a_message(tmp_path: Path) -> None:
    root, state = repo(tmp_path / "r"), tmp_path / "state"
    old = path_key(root)
    old_state(state, old)
    said: list[str] = []
    tree = settle(root, state, {}, said.append)
    moved = f"infra-apply: moved this tree's local state from its old path key {old} to {tree.key}"
    assert len(said) == 1 and said[0].startswith(moved)
    for area in identity.AREAS:
        assert not (state / area / old).exists()
        assert (state / area / tree.key / "ct" / "terraform.tfstate").read_text() == area
    assert (state / "work" / "live" / tree.key / "ct.lock").exists()
    assert (state / "cache" / f"validate-{tree.key}.json").exists()
    identity._settled.clear()  # a second run
    assert settle(root, state, {}, said.append) == tree
    assert len(said) == 1


def test_old_and_new_state_both_present_is_refused_and_nothing_moves(tmp_path: Path) -> None:
    root, state = repo(tmp_path / "r"), tmp_path / "state"
    old, new = path_key(root), identify(root, {}).key
    old_state(state, old)
    (state / "sandbox" / "mesh" / new).mkdir(parents=True)
    with pytest.raises(InfraApplyError) as err:
        settle(root, state, {}, print)
    message = str(err.value)
    assert "\n" not in message
    assert f"{state / 'sandbox/mesh' / old} and {state / 'sandbox/mesh' / new}" in message
    assert f"mv {state / 'sandbox/mesh' / old} {state / 'sandbox/mesh' / old}.unused" in message
    assert all((state / area / old / "ct" / "terraform.tfstate").exists() for area in identity.AREAS)
    assert not (state / "work" / "live" / new).exists()


def test_naming_a_git_tree_moves_its_state_from_the_git_key(tmp_path: Path) -> None:
    """Setting ``[state] name`` in a git tree (as docs/configuration.md suggests for moving it out of git)
    keeps its state: what sat under the git key moves to the name, not left for an empty state
    that plans every server as new."""
    root, state = repo(tmp_path / "r"), tmp_path / "state"
    git_key = identify(root, {}).key
    assert git_key.startswith("git-")
    old_state(state, git_key)
    (root / "infra-apply.toml").write_text(f'[state]\nname = "fleet"\n{CONFIG}')
    said: list[str] = []
    tree = settle(root, state, {}, said.append)
    assert tree.key == "name-fleet"
    assert len(said) == 1 and f"from its old git key {git_key} to name-fleet" in said[0], said
    for area in identity.AREAS:
        assert not (state / area / git_key).exists()
        assert (state / area / "name-fleet" / "ct" / "terraform.tfstate").read_text() == area
    assert (state / "cache" / "validate-name-fleet.json").exists()


def test_a_run_still_using_the_old_working_copies_stops_the_move(tmp_path: Path) -> None:
    from filelock import FileLock

    root, state = repo(tmp_path / "r"), tmp_path / "state"
    old = path_key(root)
    old_state(state, old)
    with FileLock(str(state / "work" / "live" / old / "ct.lock")), pytest.raises(InfraApplyError) as err:
        settle(root, state, {}, print)
    assert "another infra-apply run holds the lock on " in str(err.value)
    assert (state / "work" / "live" / old / "ct" / "terraform.tfstate").exists()


def test_the_cli_moves_old_state_once_and_later_runs_are_silent(tmp_path: Path) -> None:
    root = repo(tmp_path / "r")
    env = cli_env(tmp_path, GIT_CONFIG_NOSYSTEM="1")
    state = tmp_path / "state"
    old = path_key(root)
    (state / "work" / "sandbox" / old / "ct").mkdir(parents=True)
    (state / "work" / "sandbox" / old / "ct" / "terraform.tfstate").write_text("{}")
    # register reads the state of the working copy: no Terraform change, just the key
    first = run_cli("--root", str(root), "register", "--producer", "ct", "--sandbox", "--dry-run", env=env)
    assert "moved this tree's local state from its old path key" in first.stderr, first.stderr
    second = run_cli("--root", str(root), "register", "--producer", "ct", "--sandbox", "--dry-run", env=env)
    assert "moved" not in second.stderr
    assert (state / "work" / "sandbox" / identify(root, {}).key / "ct" / "terraform.tfstate").exists()


# --- CI -------------------------------------------------------------------------------------


def test_plan_apply_and_drift_under_ci_with_local_state_are_refused_naming_state(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree", base_tree())
    (root / "infra-apply.toml").write_text(f'[state]\nbackend = "local"\n{CONFIG}')
    env = cli_env(tmp_path, CI="true")
    assert run_cli("--root", str(root), "render", "--out", str(tmp_path / "out"), env=env).returncode == 0
    gpu = (("gpu", "up", "g", "--for", "1h"), ("gpu", "down", "g"), ("gpu", "reap"), ("gpu", "status"))
    for args in (("plan",), ("apply", "--producer", "ct", "--auto-approve"), ("drift",), *gpu):
        r = run_cli("--root", str(root), *args, "--out", str(tmp_path / "out"), env=env)
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith("infra-apply.toml:1:1: error state: CI is set (CI=true)"), r.stderr
        assert "[state]" in r.stderr and "allow_local_in_ci = true" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "state" / "work").exists()  # nothing planned
    # listing what would be planned touches no state: allowed
    listed = run_cli("--root", str(root), "plan", "--list", "--out", str(tmp_path / "out"), env=env)
    assert listed.returncode == 0, listed.stderr


def test_local_state_under_ci_is_allowed_when_said_for_remote_state_and_the_sandbox(tmp_path: Path) -> None:
    def config(text: str) -> None:
        (tmp_path / "infra-apply.toml").write_text(text)

    ci = {"CI": "true"}
    config(CONFIG)
    with pytest.raises(InfraApplyError):
        LiveAccount().refuse_local_state_in_ci(load(tmp_path, {}), ci)
    SandboxAccount().refuse_local_state_in_ci(load(tmp_path, {}), ci)  # throwaway by nature
    LiveAccount().refuse_local_state_in_ci(load(tmp_path, {}), {"CI": "false"})
    LiveAccount().refuse_local_state_in_ci(load(tmp_path, {}), {})
    config(f"[state]\nallow_local_in_ci = true\n{CONFIG}")
    LiveAccount().refuse_local_state_in_ci(load(tmp_path, {}), ci)
    config(f'[state]\nbackend = "s3"\nbucket = "b"\n{CONFIG}')
    LiveAccount().refuse_local_state_in_ci(load(tmp_path, {}), ci)


def test_the_allow_setting_lets_a_ci_plan_reach_the_account_check(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree", base_tree())
    (root / "infra-apply.toml").write_text(f"[state]\nallow_local_in_ci = true\n{CONFIG}")
    r = run_cli("--root", str(root), "plan", "--out", str(tmp_path / "out"), env=cli_env(tmp_path, CI="true"))
    assert "error state" not in r.stderr
    assert "DIGITALOCEAN_TOKEN" in r.stderr  # went on to pre-flight, which needs the token


def test_the_key_is_worked_out_once_per_text_of_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run asks for its key many times: infra-apply.toml is parsed once while its text stays
    the same, and again (a new key) as soon as it changes."""
    from infra_apply.manifests import config

    root = write_tree(tmp_path / "root", {"infra-apply.toml": '[state]\nname = "one"\n'})
    parsed: list[Path] = []
    real = config.load

    def counting(at: Path, env: object = None) -> config.Config:
        parsed.append(at)
        return real(at, env)  # type: ignore[arg-type]

    monkeypatch.setattr(config, "load", counting)
    env = cli_env(tmp_path)
    assert [identify(root, env).key for _ in range(3)] == ["name-one"] * 3
    assert len(parsed) == 1
    (root / "infra-apply.toml").write_text('[state]\nname = "two"\n')
    assert identify(root, env).key == "name-two"
    assert len(parsed) == 2
    (root / "infra-apply.toml").write_text('[state]\nname = "bad name"\n')
    with pytest.raises(InfraApplyError):
        identify(root, env)  # a bad config still raises its own error, every time
    with pytest.raises(InfraApplyError):
        identify(root, env)


def test_git_asked_ahead_is_the_answer_identify_reads_and_a_failed_ask_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``plan`` asks git for the tree's identity while it imports (``ask_git_ahead``): the key
    is the one git gives when asked in place, git is asked once, and a failed ask is made again
    where the key is needed, so asking ahead never changes a key."""
    root = repo(tmp_path / "a")
    key = str(root.resolve())
    expected = identity._git_identity(key)
    assert expected is not None
    real = identity._git_identity
    asked: list[str] = []

    def counted(where: str) -> tuple[str, str] | None:
        asked.append(where)
        return real(where)

    def broken(where: str) -> tuple[str, str] | None:
        raise OSError("git vanished")

    try:
        monkeypatch.setattr(identity, "_git_identity", counted)
        identity.ask_git_ahead(root)
        identity.ask_git_ahead(root)  # asked once
        assert identify(root, {}).key.startswith("git-")
        assert identity.git_identity(key) == expected
        assert asked == [key]  # the answer asked ahead, not a second git run
        identity.git_identity.cache_clear()
        monkeypatch.setattr(identity, "_git_identity", broken)
        identity.ask_git_ahead(root)
        assert isinstance(identity._ahead[key].exception(timeout=60), OSError)
        monkeypatch.setattr(identity, "_git_identity", counted)
        assert identity.git_identity(key) == expected  # asked again, in place
        assert asked == [key, key]
    finally:
        identity._ahead.clear()
