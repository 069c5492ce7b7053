"""What a plan imports: every module costs each run its import time (docs/development.md,
Benchmarks), so the plan path leaves out what only other verbs need."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Imported by a plan only when it uses them: the registry (register, drift, sandbox runs),
# getpass (a user without USER), importlib.resources' readers (the schema is a file beside
# the module).
NOT_ON_THE_PLAN_PATH = ("infra_apply.registry.mesh", "getpass", "importlib.resources.readers")


def loaded_after(code: str, modules: tuple[str, ...], tmp_path: Path) -> str:
    """Which of ``modules`` a fresh interpreter has imported after running ``code``."""
    code = f"import sys\n{code}print(sorted(m for m in {modules!r} if m in sys.modules))\n"
    # cwd: the package as installed (or on PYTHONPATH), never a checkout's folder by accident
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    return done.stdout.strip()


def test_the_plan_path_imports_none_of_what_it_does_not_use(tmp_path: Path) -> None:
    code = (
        "import infra_apply.cli, infra_apply.commands.plan, infra_apply.gpu.leases_view\n"
        "import infra_apply.cloud.pricing, infra_apply.manifests.build, infra_apply.manifests.validate\n"
        "from infra_apply.manifests.validate import schema_text\n"
        "schema_text()\n"
    )
    assert loaded_after(code, NOT_ON_THE_PLAN_PATH, tmp_path) == "[]"


# A plan's output in one format never imports another format's renderer (markdown's pulls in
# the comment limits, the diagram and html).
OTHER_FORMATS = ("infra_apply.report.markdown", "infra_apply.report.json", "infra_apply.forge.comment")


def test_a_text_plan_output_imports_no_other_format(tmp_path: Path) -> None:
    code = "from infra_apply.commands.plan import PlanResult, output\noutput(PlanResult(), 'text')\n"
    assert loaded_after(code, OTHER_FORMATS, tmp_path) == "[]"


# The plan's catalogue round starts (cli.py, accounts.started) before the rest of the program is
# imported, so the API answers while it is: the accounts import none of the manifests stage.
NOT_FOR_THE_EARLY_ROUND = (
    "infra_apply.manifests.config",
    "infra_apply.manifests.model",
    "infra_apply.runtime.workcopy",
)


def test_the_early_catalogue_round_imports_no_manifests_stage(tmp_path: Path) -> None:
    code = "import infra_apply.cloud.accounts, infra_apply.cloud.account, infra_apply.cloud.pat\n"
    assert loaded_after(code, NOT_FOR_THE_EARLY_ROUND, tmp_path) == "[]"


# Used only once Terraform has planned: imported while it plans (commands/plan.py, AFTER_THE_PLAN),
# not before it starts.
AFTER_THE_PLAN = ("infra_apply.plan.guard", "infra_apply.plan.drift", "infra_apply.plan.trusted")


def test_what_the_plan_uses_after_terraform_is_not_imported_before(tmp_path: Path) -> None:
    code = (
        "import infra_apply.cli, infra_apply.commands.plan, infra_apply.gpu.leases_view\n"
        "import infra_apply.cloud.pricing, infra_apply.manifests.build, infra_apply.manifests.validate\n"
        "import infra_apply.runtime.workcopy, infra_apply.plan.exists\n"
    )
    assert loaded_after(code, AFTER_THE_PLAN, tmp_path) == "[]"


# Every command reads infra-apply.toml: its reader loads money, GPU and webhook code only for
# the tables that need them; render's and validate's reports load nothing of plan's.
NOT_ON_THE_CONFIG_PATH = (
    "infra_apply.forge.notify",
    "infra_apply.cloud.http",
    "infra_apply.plan.budget",
    "infra_apply.plan.cost",
    "infra_apply.gpu.config",
    "infra_apply.gpu.lease",
    "http.client",
    "ssl",
)


def test_reading_the_config_loads_no_notify_http_budget_or_gpu(tmp_path: Path) -> None:
    (tmp_path / "infra-apply.toml").write_text('[droplets]\nssh_keys = ["ops"]\n[notify]\n')
    code = (
        "from pathlib import Path\nfrom infra_apply.manifests.config import load\n"
        f"load(Path({str(tmp_path)!r}), {{}})\n"
    )
    assert loaded_after(code, NOT_ON_THE_CONFIG_PATH, tmp_path) == "[]"


def test_a_render_report_loads_nothing_of_plan(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path\nfrom infra_apply.commands.render import Rendering, output\n"
        "from infra_apply.render.output import Drift\n"
        "output(Rendering(Path('out'), False, (), Drift((), ())), 'text')\n"
    )
    plan = ("infra_apply.plan.parse", "infra_apply.plan.guard", "infra_apply.plan.cost", "infra_apply.kinds")
    assert loaded_after(code, plan, tmp_path) == "[]"


# A render writes the managed-by/producer tags (plan/tags.py) and asks git for the tree's
# identity: neither loads the plan parser, plan --changed's module or PyYAML for that.
NOT_ON_THE_RENDER_PATH = ("infra_apply.plan.parse", "infra_apply.manifests.changed", "yaml")


def test_rendering_and_the_git_identity_load_no_plan_parser_or_changed(tmp_path: Path) -> None:
    code = (
        "import infra_apply.render.module\nfrom infra_apply.runtime import identity\n"
        f"assert identity._git_identity({str(tmp_path)!r}) is None\n"
    )
    assert loaded_after(code, NOT_ON_THE_RENDER_PATH, tmp_path) == "[]"


def test_the_state_dir_module_loads_no_config_reader_yet_keeps_its_names(tmp_path: Path) -> None:
    code = "import infra_apply.runtime.state\n"
    assert loaded_after(code, ("infra_apply.manifests.config",), tmp_path) == "[]"
    from infra_apply.manifests import config
    from infra_apply.runtime import state

    assert (state.CONFIG_NAME, state.Backend) == (config.CONFIG_NAME, config.Backend)
