"""What a plan imports: every module costs each run its import time (docs/development.md,
Benchmarks), so the plan path leaves out what only other verbs need."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Imported by a plan only when it uses them: the registry (register, drift, sandbox runs),
# getpass (a user without USER), importlib.resources' readers (the schema is a file beside
# the module).
NOT_ON_THE_PLAN_PATH = ("infra_apply.mesh", "getpass", "importlib.resources.readers")


def test_the_plan_path_imports_none_of_what_it_does_not_use(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import infra_apply.cli, infra_apply.commands.plan, infra_apply.gpu.leases_view\n"
        "import infra_apply.pricing, infra_apply.build, infra_apply.validate\n"
        "from infra_apply.validate import schema_text\n"
        "schema_text()\n"
        f"print(sorted(m for m in {NOT_ON_THE_PLAN_PATH!r} if m in sys.modules))\n"
    )
    # cwd: the package as installed (or on PYTHONPATH), never a checkout's folder by accident
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert done.stdout.strip() == "[]"
