"""End to end in the sandbox: a droplet hosting a database project is created in its cluster's
VPC; one running outside it is never replaced (the plan notes it, pre-flight flags it) and
db-credentials writes no private host it cannot reach."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from dotenv import dotenv_values

from infra_apply.sandbox import cloud
from tests.e2e.test_e2e_sandbox import Ops

pytestmark = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")

MCP = "com.uvlava.quinn.mcp"  # hosts auth-svc, whose database is on uvlava-pg


def test_a_droplet_joins_its_clusters_vpc_and_one_outside_it_stays_and_is_told(example: Path) -> None:
    ops = Ops(example)
    assert ops.run("validate", "--live", "--sandbox")[0] == 0  # makes the sandbox account
    pg_vpc = cloud.stable_uuid("vpc", "uvlava-pg")
    with cloud.transaction(ops.cloud) as c:
        # a cluster created in a VPC of its own, not the region's default one
        [cluster] = c["clusters"].values()
        cluster["private_network_uuid"] = pg_vpc
    code, out, err = ops.apply("quinn")
    assert code == 0, out + err
    live = ops.droplets()
    assert live[MCP]["vpc_uuid"] == pg_vpc
    assert live["com.uvlava.quinn.artifacts"]["vpc_uuid"] == cloud.vpc_uuid("nyc3")
    env = example / "auth.env"
    code, out, err = ops.sandbox("db-credentials", "--producer", "quinn", "auth-svc", "--write", str(env))
    assert code == 0, out + err
    assert dotenv_values(env)["PGHOST"] == cluster["private_host"]

    # The droplet runs in its region's default VPC (created before it hosted a database project).
    with cloud.transaction(ops.cloud) as c:
        record = next(d for d in c["droplets"].values() if d["name"] == MCP)
        record["vpc_uuid"] = cloud.vpc_uuid("nyc3")
    mcp_id = record["id"]
    code, out, err = ops.sandbox("plan", "--producer", "quinn", "--format", "json")
    assert code in (0, 2), out + err
    plan = json.loads(out)["producers"]["quinn"]
    assert [c for c in plan["changes"] if c["action"] in ("replace", "delete")] == []
    [note] = plan["settings_drift"]
    assert (note["name"], note["settings"], note["vpc_cluster"]) == (MCP, ["vpc_uuid"], "uvlava-pg")
    assert (
        f"@quinn/.infra.yaml:19:11: warning preflight: droplet '{MCP}' runs in VPC {cloud.vpc_uuid('nyc3')}, "
        f"not in VPC {pg_vpc} of cluster 'uvlava-pg' it hosts a project of"
    ) in err
    code, out, err = ops.apply("quinn")
    assert code == 0, out + err
    assert {n: d["id"] for n, d in ops.droplets().items()}[MCP] == mcp_id  # never replaced

    # db-credentials refuses the private host, and its remedy works as printed.
    env.unlink()
    code, out, err = ops.sandbox("db-credentials", "--producer", "quinn", "auth-svc", "--write", str(env))
    assert code == 1 and not env.exists()
    assert f"droplet '{MCP}' runs in VPC {cloud.vpc_uuid('nyc3')}, not in VPC {pg_vpc}" in err
    [remedy] = [c for c in re.findall(r"`([^`]+)`", err) if "--connect public" in c]
    words = shlex.split(remedy)
    assert words[0] == "infra-apply" and words[-1] == "--sandbox"
    code, out, err = ops.run(*words[1:])
    assert code == 0, out + err
    assert dotenv_values(env)["PGHOST"] == cluster["host"]
