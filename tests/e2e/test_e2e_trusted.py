"""A shared cluster's trusted sources end to end (real Terraform, the sandbox provider): the
first rules are refused until the cluster is named with --allow-trusted-sources, and so is a
host of the cluster's projects not tagged yet; the remedies printed work as printed; a droplet
going changes no rule; every rule a change would remove is named in every plan format."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra_apply.sandbox import cloud
from tests import stopping
from tests.conftest import EXAMPLE_MESH, EXAMPLE_TREE, REPO
from tests.e2e.test_e2e_remedies import printed
from tests.e2e.test_e2e_sandbox import Ops

TAG = ("tag", "db-uvlava-pg")
OPERATOR = ("ip_addr", "203.0.113.4/32")
HAND_MADE = ("ip_addr", "198.51.100.7")


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    """The example tree with a fresh sandbox account: its cluster trusts every address."""
    shutil.copytree(EXAMPLE_TREE, tmp_path / "tree")
    shutil.copy(EXAMPLE_MESH, tmp_path / "mesh-hosts.json")
    shutil.copytree(REPO / "generated", tmp_path / "generated")
    ops = Ops(tmp_path)
    yield ops
    stopping.clean_up(ops)


def rules(ops: Ops) -> set[tuple[str, str]]:
    c = cloud.load(ops.cloud)
    cluster = cloud.find_cluster(c, "uvlava-pg")
    assert cluster is not None
    return {(r["type"], r["value"]) for r in cloud.cluster_rules(c, str(cluster["id"]))}


def test_trusted_sources_are_refused_then_applied_and_stay_as_droplets_go(ops: Ops) -> None:
    toml = ops.root / "infra-apply.toml"
    configured = toml.read_text()
    # ct applied before the cluster's trusted sources were configured: its host is not tagged
    section = configured[configured.index('[clusters."uvlava-pg"]') : configured.index("[gpu.")]
    toml.write_text(configured.replace(section, ""))
    assert ops.apply("ct")[0] == 0
    toml.write_text(configured)

    code, out, err = ops.sandbox("plan", "--producer", "quinn", "--format", "json")
    assert code == 2, err
    [fw] = [c for c in json.loads(out)["producers"]["quinn"]["changes"] if c["name"] == "uvlava-pg"]
    host = (
        "droplet com.uvlava.ct.services (it hosts a project using uvlava-pg and does not carry tag "
        "db-uvlava-pg yet; to keep it, run infra-apply apply --producer ct --sandbox first)"
    )
    assert fw["cuts_off"] == ["every client not listed (the cluster trusts any address now)", host]
    assert "has no trusted sources in the sandbox account" in err  # pre-flight's warning

    code, out, err = ops.apply("quinn")
    assert code == 3, out + err
    assert "rerun with --allow-trusted-sources uvlava-pg" in err
    assert rules(ops) == set() and "com.uvlava.quinn.mcp" not in ops.droplets()  # nothing applied
    # the host's remedy, as printed (no terminal to confirm on): ct's droplets take the tag in place
    [first] = re.findall(r"run (infra-apply apply --producer ct --sandbox) first", err)
    ct_id = ops.droplets()["com.uvlava.ct.services"]["id"]
    code, _, err = printed(ops, first, "--auto-approve")
    assert code == 0, err
    tagged = ops.droplets()["com.uvlava.ct.services"]
    assert tagged["id"] == ct_id and "db-uvlava-pg" in tagged["tags"]

    # left: the first rules, which the refusal's own remedy allows
    code, out, err = ops.apply("quinn")
    assert code == 3, out + err
    [refusal] = [line for line in err.splitlines() if "digitalocean_database_firewall" in line]
    assert "cuts off every client not listed" in refusal and "droplet com.uvlava" not in refusal
    [flag] = re.findall(r"rerun with (--allow-trusted-sources \S+)$", refusal)
    code, out, err = ops.apply("quinn", *shlex.split(flag))
    assert code == 0, out + err
    assert rules(ops) == {TAG, OPERATOR}
    assert "db-uvlava-pg" in ops.droplets()["com.uvlava.quinn.mcp"]["tags"]
    assert "db-uvlava-pg" not in ops.droplets()["com.uvlava.dns"]["tags"]  # hosts no database project
    assert ops.sandbox("plan", "--producer", "quinn")[0] == 0  # no perpetual diff

    # a droplet goes: the rule list does not change (and asks for no flag)
    manifest = ops.root / "@quinn" / ".infra.yaml"
    text = manifest.read_text()
    manifest.write_text(text[: text.index("  - name: com.uvlava.dns")])
    code, out, err = ops.apply("quinn", "--allow-destroy", "com.uvlava.dns")
    assert code == 0, out + err
    assert "com.uvlava.dns" not in ops.droplets() and "uvlava-pg (digitalocean_database_firewall" not in out
    assert rules(ops) == {TAG, OPERATOR}

    # a rule made by hand is named in every format, as the rule the plan removes
    with cloud.transaction(ops.cloud) as c:
        cluster = cloud.find_cluster(c, "uvlava-pg")
        assert cluster is not None
        cloud.put_cluster_rules(c, str(cluster["id"]), [TAG, OPERATOR, HAND_MADE])
    named = "ip_addr 198.51.100.7 (a rule made outside infra-apply)"
    for fmt in ("text", "markdown", "json"):
        code, out, err = ops.sandbox("plan", "--producer", "quinn", "--format", fmt)
        assert code == 2, err
        assert named in out.replace("\\_", "_"), (fmt, out)  # markdown escapes the _
    code, out, err = ops.apply("quinn")
    assert code == 3 and f"cuts off {named} — rerun with --allow-trusted-sources uvlava-pg" in err
    assert rules(ops) == {TAG, OPERATOR, HAND_MADE}
