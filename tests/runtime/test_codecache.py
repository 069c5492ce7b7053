"""The compiled methods of dataclasses kept in the state dir (runtime/codecache.py): a command's
second start compiles none of them again, the classes behave exactly as compiled ones, and a file
that is not the user's own, whole and made by this Python is never run."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from infra_apply.runtime import codecache, state
from tests.conftest import EXAMPLE_TREE, cli_env, run_cli

# A fresh process that installs the cache and loads the model (its dataclasses): how many
# method texts it had to compile, and how many the file gave it.
PROBE = (
    "import json, os; from infra_apply.runtime import codecache; codecache.install(os.environ); "
    "from infra_apply.runtime.state import checked_state_dir; checked_state_dir([], create=False); "
    "import infra_apply.manifests.model, infra_apply.render.module; "
    "print(json.dumps([len(codecache._added), len(codecache._codes)]))"
)


def probe(env: dict[str, str]) -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    compiled, known = json.loads(done.stdout)
    return compiled, known


def cache_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    env = cli_env(tmp_path)
    cache = Path(env["INFRA_APPLY_STATE_DIR"]) / "cache"
    cache.mkdir(parents=True, mode=0o700)
    return env, cache / codecache.NAME


def test_the_second_start_compiles_no_dataclass_method(tmp_path: Path) -> None:
    env, path = cache_env(tmp_path)
    compiled, _ = probe(env)
    assert compiled > 50  # every method of every class it defined
    assert path.stat().st_mode & 0o777 == 0o600
    assert probe(env) == (0, compiled)


def test_a_command_fills_the_cache_it_then_runs_from(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    args = ("--root", str(EXAMPLE_TREE), "render", "--out", str(tmp_path / "out"))
    assert run_cli(*args, env=env).returncode == 0  # makes the state dir and its cache folder
    assert run_cli(*args, env=env).returncode == 0  # keeps what it compiled
    stored = codecache.load(Path(env["INFRA_APPLY_STATE_DIR"]) / "cache" / codecache.NAME)
    assert any("def __init__(self,name:" in text for text in stored)
    assert probe(env)[0] < len(stored)


def test_no_cache_and_no_cache_folder_keep_nothing(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    state = Path(env["INFRA_APPLY_STATE_DIR"])
    assert probe(env)[0] > 0
    assert not state.exists()  # never makes the state dir: nothing has checked where it is
    (state / "cache").mkdir(parents=True, mode=0o700)
    assert probe({**env, "INFRA_APPLY_NO_CACHE": "1"}) == (0, 0)  # not installed at all
    assert not (state / "cache" / codecache.NAME).exists()


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "readable by others":
        path.chmod(0o644)
    elif how == "flipped byte":
        path.write_bytes(data[:-10] + bytes([data[-10] ^ 1]) + data[-9:])
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "another python":
        path.write_bytes(data.replace(sys.version.encode(), b"3.11.0 (other build)", 1))
    elif how == "a symlink":
        target = path.with_name("elsewhere")
        path.rename(target)
        path.symlink_to(target)


@pytest.mark.parametrize(
    "how", ["readable by others", "flipped byte", "truncated", "another python", "a symlink"]
)
def test_a_file_that_is_not_ours_whole_and_this_pythons_is_never_run(tmp_path: Path, how: str) -> None:
    env, path = cache_env(tmp_path)
    compiled, _ = probe(env)
    _damage(path, how)
    assert codecache.load(path) == {}
    assert probe(env)[0] == compiled  # compiled again, all of it


def test_classes_made_through_the_cache_behave_as_compiled_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataclasses, "exec", codecache.cached_exec, raising=False)
    monkeypatch.setattr(codecache, "_codes", {})
    monkeypatch.setattr(codecache, "_added", [])

    def define() -> type:
        @dataclass(frozen=True)
        class Droplet:
            name: str
            size: str = "s-1vcpu-1gb"
            tags: tuple[str, ...] = field(default_factory=tuple)

            def __post_init__(self) -> None:
                if not self.name:
                    raise ValueError("a droplet needs a name")

        return Droplet

    first = define()
    compiled = len(codecache._added)
    second = define()  # the same texts: from the cache
    assert compiled > 0 and len(codecache._added) == compiled
    for cls in (first, second):
        d = cls("dns")
        assert (d.name, d.size, d.tags) == ("dns", "s-1vcpu-1gb", ())
        assert d == cls("dns") and hash(d) == hash(cls("dns")) and d != cls("dns", "s-2vcpu-4gb")
        assert repr(d).endswith("Droplet(name='dns', size='s-1vcpu-1gb', tags=())")
        with pytest.raises(dataclasses.FrozenInstanceError):
            d.name = "other"  # type: ignore[misc]
        with pytest.raises(ValueError, match="needs a name"):
            cls("")
        assert [f.name for f in dataclasses.fields(cls)] == ["name", "size", "tags"]
        assert dataclasses.replace(d, size="x").size == "x"


def test_the_cli_starts_with_the_cache_installed(tmp_path: Path) -> None:
    """Installed before any command loads its modules: ``validate`` adds the methods of the
    classes it defined, and its second run compiles none (the file is not written again)."""
    env, path = cache_env(tmp_path)
    probe(env)
    known = len(codecache.load(path))
    for _ in range(2):
        done = run_cli("--root", str(EXAMPLE_TREE), "validate", env=env)
        assert done.returncode == 0, done.stderr
        if _ == 0:
            assert len(codecache.load(path)) > known
            written = path.stat().st_mtime_ns, path.read_bytes()
    assert (path.stat().st_mtime_ns, path.read_bytes()) == written


def test_a_cache_grown_past_its_bound_keeps_only_what_the_last_run_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Versions come and go, each with its own texts: past ``KEPT`` the file is cut back to the
    texts the run that wrote it used, so it never grows without end."""
    path = tmp_path / "cache" / codecache.NAME
    path.parent.mkdir()
    monkeypatch.setattr(state, "_checked", {tmp_path})  # as a command that checked it
    used = "x = 1\n"
    monkeypatch.setattr(
        codecache, "_codes", {f"y = {i}\n": compile(f"y = {i}", "<string>", "exec") for i in range(5)}
    )
    monkeypatch.setattr(codecache, "_added", [])
    monkeypatch.setattr(codecache, "_used", set())
    monkeypatch.setattr(codecache, "KEPT", 3)
    codecache.cached_exec(used, {})
    codecache.store(path)
    assert set(codecache.load(path)) == {used}
    monkeypatch.setattr(codecache, "KEPT", 100)
    codecache.cached_exec("z = 2\n", {})
    codecache.store(path)
    assert len(codecache.load(path)) == 7


def test_a_state_dir_that_cannot_be_worked_out_leaves_the_cli_working(tmp_path: Path) -> None:
    """No home directory (a CI container's uid), ``~nobody-here``: ``--help`` still works; a
    command that needs the state dir says what is wrong itself."""
    env = {**cli_env(tmp_path), "INFRA_APPLY_STATE_DIR": "~no-such-user-here/state"}
    done = run_cli("--help", env=env)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_nothing_is_kept_in_a_state_dir_the_command_refused(tmp_path: Path) -> None:
    """A state dir inside ``generated/`` is refused before anything is written: the compiled
    code kept at exit too, even where a cache folder is already there."""
    shutil.copytree(EXAMPLE_TREE, tmp_path / "tree")
    cache = tmp_path / "tree" / "generated" / "state" / "cache"
    cache.mkdir(parents=True)
    env = {**cli_env(tmp_path), "INFRA_APPLY_STATE_DIR": str(cache.parent)}
    done = run_cli("--root", str(tmp_path / "tree"), "validate", env=env)
    assert done.returncode == 1 and "generated/" in done.stderr, done.stderr
    assert list(cache.iterdir()) == []
