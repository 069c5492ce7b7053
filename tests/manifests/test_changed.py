"""plan --changed: the pure selection, then the real CLI on a real git repository."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from infra_apply.manifests.changed import Layout, select
from tests.conftest import cli_env, run_cli

LAYOUT = Layout(root="tree", out="generated", config="tree/infra-apply.toml", everything=("templates",))
PRODUCERS = ("ct", "mc", "quinn")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("tree/@ct/ledger-api/.infra.yaml", ("ct",)),
        ("tree/@ct/ledger-api/.infra.dev.yaml", ("ct",)),
        ("tree/@quinn/.infra.yaml", ("quinn",)),
        ("generated/mc/droplets.tf", ("mc",)),
        ("generated/mc/addresses.json", ("mc",)),
        ("tree/@ct/ledger-api/src/main.py", ()),  # application code is not infrastructure
        ("tree/@ct/node_modules/x/.infra.yaml", ()),  # discovery never reads it
        ("tree/@ct/ledger-api/app.infra.yaml", ()),  # not a manifest name
        ("README.md", ()),
        ("generated/README.md", ()),
        ("tree/@gone/app/.infra.yaml", ()),  # no such producer any more: nothing to plan
        ("tree/infra-apply.toml", PRODUCERS),
        ("templates/droplets.tf.j2", PRODUCERS),
        ("tree/.infra.yaml", PRODUCERS),  # outside every producer folder: may declare any droplet
        ("tree/shared/.infra.yaml", PRODUCERS),
    ],
)
def test_select_by_path(path: str, expected: tuple[str, ...]) -> None:
    assert select([path], LAYOUT, PRODUCERS).producers == expected


def test_select_says_why() -> None:
    paths = ["tree/@ct/.infra.yaml", "generated/ct/droplets.tf", "tree/@ct/app/main.py", "generated/mc/x.tf"]
    sel = select(paths, LAYOUT, PRODUCERS)
    assert sel.producers == ("ct", "mc")
    assert sel.because == {
        "ct": ("generated/ct/droplets.tf", "tree/@ct/.infra.yaml"),
        "mc": ("generated/mc/x.tf",),
    }
    assert sel.everything is None


def test_select_root_at_the_top_and_outputs_outside_the_repo() -> None:
    layout = Layout(root="", out=None, config="infra-apply.toml")
    assert select(["@mc/catalog/.infra.yaml", "generated/ct/droplets.tf"], layout, PRODUCERS).producers == (
        "mc",
    )
    everything = select(["infra-apply.toml"], layout, PRODUCERS)
    assert (everything.producers, everything.everything) == (PRODUCERS, "infra-apply.toml")


# --- a real repository ------------------------------------------------------------------------


class Repo:
    """The example tree, its generated/ and mesh-hosts.json committed on main in ``base``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "tree"
        self.env = cli_env(
            base,
            GIT_CONFIG_GLOBAL=str(base / "gitconfig"),
            GIT_CONFIG_NOSYSTEM="1",
            GIT_AUTHOR_NAME="t",
            GIT_AUTHOR_EMAIL="t@example.invalid",
            GIT_COMMITTER_NAME="t",
            GIT_COMMITTER_EMAIL="t@example.invalid",
        )
        (base / ".gitignore").write_text("state/\n")
        self.git("init", "-q", "-b", "main")
        self.commit("the example tree")
        self.git("checkout", "-q", "-b", "change")

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=self.base, env=self.env, capture_output=True, text=True, check=True
        )
        return done.stdout

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)

    def edit(self, rel: str, old: str, new: str) -> None:
        path = self.root / rel
        text = path.read_text()
        assert old in text, (rel, old)
        path.write_text(text.replace(old, new))

    def cli(self, *args: str, cwd: Path | None = None) -> tuple[int, str, str]:
        r = run_cli("--root", str(self.root), *args, env=self.env, cwd=cwd or self.base)
        assert "Traceback" not in r.stderr, r.stderr
        return r.returncode, r.stdout, r.stderr

    def selected(self, base: str = "main") -> list[str]:
        code, out, err = self.cli("plan", "--changed", "--base", base, "--list", "--format", "json")
        assert code == 0, err
        producers: list[str] = json.loads(out)["producers"]
        return producers


@pytest.fixture
def repo(example: Path) -> Repo:
    return Repo(example)


def test_nothing_changed_plans_nothing(repo: Repo) -> None:
    assert repo.selected() == []
    code, out, err = repo.cli("plan", "--changed", "--base", "main", "--format", "markdown")
    assert code == 0, err
    assert out.startswith("## infra-apply plan") and "No changes" in out
    assert "no producer to plan" in err


def test_committed_uncommitted_and_untracked_changes(repo: Repo) -> None:
    repo.edit("@ct/ledger-api/.infra.yaml", "ledger-api", "ledger-api2")
    repo.commit("ct: rename the project")
    assert repo.selected() == ["ct"]
    repo.edit("@mc/catalog/.infra.yaml", "catalog", "catalog2")  # unstaged
    assert repo.selected() == ["ct", "mc"]
    new = repo.root / "@quinn" / "new-app" / ".infra.yaml"
    new.parent.mkdir()
    new.write_text("apiVersion: infra/v1\nproject: new-app\nprovider: local\n")  # untracked
    assert repo.selected() == ["ct", "mc", "quinn"]


def test_application_code_alone_selects_nothing(repo: Repo) -> None:
    src = repo.root / "@ct" / "ledger-api" / "src" / "main.py"
    src.parent.mkdir(parents=True)
    src.write_text("print('hi')\n")
    (repo.base / "README.md").write_text("docs\n")
    repo.commit("code and docs")
    assert repo.selected() == []


def test_what_main_gained_since_the_branch_left_is_not_selected(repo: Repo) -> None:
    repo.edit("@ct/ledger-api/.infra.yaml", "ledger-api", "ledger-api2")
    repo.commit("ct change on the branch")
    repo.git("checkout", "-q", "main")
    repo.edit("@mc/catalog/.infra.yaml", "catalog", "catalog2")
    repo.commit("mc change on main")
    repo.git("checkout", "-q", "change")
    assert repo.selected() == ["ct"]  # the merge base, not main's tip


def test_generated_module_change_selects_its_producer(repo: Repo) -> None:
    ledger = repo.base / "generated" / "quinn" / "addresses.json"
    ledger.write_text(ledger.read_text() + "\n")
    assert repo.selected() == ["quinn"]


def test_config_change_selects_every_producer(repo: Repo) -> None:
    (repo.root / "infra-apply.toml").write_text('[state]\nbackend = "local"\n')
    assert repo.selected() == ["ct", "mc", "quinn"]


def test_moving_a_project_selects_both_producers(repo: Repo) -> None:
    shutil.move(repo.root / "@mc" / "catalog", repo.root / "@quinn" / "catalog")
    repo.commit("move catalog to quinn")
    assert repo.selected() == ["mc", "quinn"]


def test_plan_changed_plans_only_the_changed_producer(repo: Repo) -> None:
    """Real Terraform with the sandbox provider: only mc is planned."""
    repo.edit("@mc/catalog/.infra.yaml", "catalog", "catalog2")
    code, out, err = repo.cli(
        "plan",
        "--changed",
        "--base",
        "main",
        "--sandbox",
        "--format",
        "json",
        "--out",
        str(repo.base / "generated"),
        "--mesh-hosts",
        str(repo.base / "mesh-hosts.json"),
    )
    assert code in (0, 2), err
    assert list(json.loads(out)["producers"]) == ["mc"]
    assert "selected mc" in err and "@mc/catalog/.infra.yaml" in err


def test_outside_a_repository_is_one_clear_error(example: Path) -> None:
    r = run_cli("--root", str(example / "tree"), "plan", "--changed", "--list", env=cli_env(example))
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"infra-apply: error: {example / 'tree'} is not inside a git repository "
        "(plan --changed compares git commits)"
    )


def test_unknown_base_is_one_clear_error(repo: Repo) -> None:
    code, _, err = repo.cli("plan", "--changed", "--base", "origin/main", "--list")
    assert code == 1
    assert err.startswith("infra-apply: error: --base origin/main: no such commit")
    assert len(err.strip().splitlines()) == 1


def test_changed_and_producer_do_not_mix_and_list_alone_lists_all(repo: Repo) -> None:
    code, _, err = repo.cli("plan", "--changed", "--producer", "ct")
    assert code == 1 and "drop --producer" in err  # a usage error: never 2, which means "changes"
    code, out, err = repo.cli("plan", "--list", "--out", str(repo.base / "generated"))
    assert (code, out) == (0, "ct\nmc\nquinn\n"), err  # without --changed: every producer
