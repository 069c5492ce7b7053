"""workcopy.py: a producer's working copy, the environment Terraform gets there, and the real
``WorkingCopy`` over the terraform binary."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from infra_apply.cloud.account import LiveProvider, SandboxProvider, choose
from infra_apply.cloud.pat import token_env
from infra_apply.errors import InfraApplyError
from infra_apply.render.output import Rendered
from infra_apply.runtime.state import Backend
from infra_apply.runtime.workcopy import STAMP, Context, TerraformCopy, sync, terraform_env

SECRET = "FAKE-do-token_0123456789abcdef-vault-secret-for-quinn"


def context(tmp_path: Path, sandbox: bool, **env: str) -> Context:
    return Context(
        root=tmp_path / "tree", out=tmp_path / "generated", account=choose(sandbox), mesh_path=None, env=env
    )


def sandbox_provider(tmp_path: Path, cli_config: str, cloud: str) -> SandboxProvider:
    """The stand-in provider as ``sandbox.install`` describes it (nothing installed)."""
    from infra_apply.sandbox.install import SandboxSetup

    box = tmp_path / "sandbox"
    setup = SandboxSetup(
        box, box / "launcher", box / "mirror", Path(cli_config), Path(cloud), box / "tls", "h1:x"
    )
    return SandboxProvider(setup, Path(cloud))


def test_terraform_env_in_the_sandbox_drops_tokens_and_the_plugin_cache(tmp_path: Path) -> None:
    ctx = context(
        tmp_path,
        True,
        DIGITALOCEAN_TOKEN=SECRET,
        DIGITALOCEAN_ACCESS_TOKEN=SECRET,
        TF_PLUGIN_CACHE_DIR="/cache",
        TF_CLI_CONFIG_FILE="/operator/terraformrc",
        PATH="/usr/bin",
    )
    provider = sandbox_provider(tmp_path, "/state/sandbox/terraformrc", "/state/sandbox/cloud.json")
    env = terraform_env(ctx, "quinn", provider)
    assert SECRET not in env.values()
    assert not env.get("TF_PLUGIN_CACHE_DIR")  # no plugin cache at all
    assert env["TF_CLI_CONFIG_FILE"] == "/state/sandbox/terraformrc"
    assert (env["PATH"], env["TF_IN_AUTOMATION"]) == ("/usr/bin", "1")
    assert ctx.env["DIGITALOCEAN_TOKEN"] == SECRET  # the caller's mapping is not touched


def test_terraform_env_outside_the_sandbox_leaves_terraforms_settings_alone(tmp_path: Path) -> None:
    ctx = context(
        tmp_path,
        False,
        DIGITALOCEAN_TOKEN=SECRET,
        TF_PLUGIN_CACHE_DIR="/cache",
        TF_CLI_CONFIG_FILE="/operator/terraformrc",
        HOME=str(tmp_path),
    )
    env = terraform_env(ctx, "quinn", LiveProvider())
    assert env["DIGITALOCEAN_TOKEN"] == SECRET
    assert (env["TF_PLUGIN_CACHE_DIR"], env["TF_CLI_CONFIG_FILE"]) == ("/cache", "/operator/terraformrc")


def test_token_from_the_vault_and_its_absence(tmp_path: Path) -> None:
    with pytest.raises(InfraApplyError) as exc:
        token_env({"HOME": str(tmp_path)}, "quinn")
    assert "DIGITALOCEAN_TOKEN" in exc.value.message
    assert str(tmp_path / ".vault" / "do_pat_quinn") in exc.value.message
    (tmp_path / ".vault").mkdir()
    (tmp_path / ".vault" / "do_pat_quinn").write_text("   \n")
    with pytest.raises(InfraApplyError):
        token_env({"HOME": str(tmp_path)}, "quinn")  # an empty file is no token
    (tmp_path / ".vault" / "do_pat_quinn").write_text(f"{SECRET}\n")
    assert token_env({"HOME": str(tmp_path)}, "quinn") == {"DIGITALOCEAN_TOKEN": SECRET}
    with pytest.raises(InfraApplyError, match="do_pat_ct"):
        token_env({"HOME": str(tmp_path)}, "ct")  # one producer's token is not another's
    assert token_env({"HOME": str(tmp_path), "DIGITALOCEAN_ACCESS_TOKEN": "FAKE-do-token_x"}, "ct") == {}
    ctx = context(tmp_path, False, HOME=str(tmp_path))
    assert terraform_env(ctx, "quinn", LiveProvider())["DIGITALOCEAN_TOKEN"] == SECRET
    assert "DIGITALOCEAN_TOKEN" not in ctx.env


def test_sync_writes_the_render_privately_and_drops_what_is_no_longer_rendered(tmp_path: Path) -> None:
    ctx = context(tmp_path, True)
    path = tmp_path / "state" / "work" / "ct"
    path.mkdir(parents=True, mode=0o755)
    (path / "gone.tf").write_text("# rendered once\n")
    (path / "terraform.tfstate").write_text("{}")
    rendered = Rendered("ct", {"main.tf": "# main\n", "addresses.json": "{}\n"})
    sync(ctx, rendered, path, Backend("local"), sandbox_provider(tmp_path, "/dev/null", "/dev/null"))
    assert sorted(p.name for p in path.iterdir()) == ["main.tf", "terraform.tfstate"]
    assert stat.S_IMODE((path / "main.tf").stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


class NeverInit:
    """A terraform.Workdir stand-in proving init is skipped: running anything fails the test."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.env: dict[str, str] = {}

    def must(self, *args: object, **kwargs: object) -> None:
        raise AssertionError(f"terraform ran: {args}")


def test_init_runs_only_when_what_it_depends_on_changed(tmp_path: Path) -> None:
    (tmp_path / ".terraform").mkdir()
    (tmp_path / "versions.tf").write_text("terraform {}\n")
    wd = NeverInit(tmp_path)
    copy = TerraformCopy(wd, "ct", say=lambda _: None)  # type: ignore[arg-type]
    (tmp_path / STAMP).write_text(copy._init_stamp())
    copy.init()  # the stamp matches: nothing runs
    (tmp_path / "versions.tf").write_text('terraform {\n  required_version = ">= 1.5"\n}\n')
    with pytest.raises(AssertionError, match="terraform ran"):
        copy.init()


def test_a_real_init_says_how_long_it_took_and_a_skipped_one_says_nothing(tmp_path: Path) -> None:
    from infra_apply.runtime import terraform as tf
    from tests.commands.fakes import Ticks

    (tmp_path / "versions.tf").write_text('terraform {\n  required_version = ">= 1.5"\n}\n')
    (tmp_path / ".terraform").mkdir()  # a module without providers gets none from init
    said: list[str] = []
    wd = tf.Workdir(tf.find_binary(), tmp_path, {"CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"})
    copy = TerraformCopy(wd, "ct", say=said.append, clock=Ticks(100.0, 103.25))
    copy.init()
    copy.init()  # up to date: no terraform, no line (and no clock read past the two given)
    assert said == ["ct: terraform init", "ct: init done in 3.2s"]
