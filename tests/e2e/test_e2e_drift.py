"""``drift`` end to end: real Terraform and the sandbox provider on (a copy of) the example tree,
with the world changed behind Terraform's back through the sandbox cloud."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra_apply.runtime.identity import identify
from infra_apply.sandbox import cloud
from tests import stopping
from tests.e2e.test_e2e_sandbox import Ops

MCP, DNS, ARTIFACTS = "com.uvlava.quinn.mcp", "com.uvlava.dns", "com.uvlava.quinn.artifacts"
STRAY = "stray-box"


@pytest.fixture
def ops(example: Path) -> Iterator[Ops]:
    ops = Ops(example)
    yield ops
    stopping.clean_up(ops)


def drift(ops: Ops, *args: str) -> tuple[int, str, str]:
    return ops.sandbox("drift", "--producer", "quinn", *args)


REMEDY = re.compile(r"infra-apply [a-z-]+ [^—;()]*?--sandbox")


def remedies(text: str) -> list[str]:
    """Every command the report tells the operator to run."""
    return REMEDY.findall(text)


def run_remedy(ops: Ops, command: str, **placeholders: str) -> tuple[int, str, str]:
    """Run a printed remedy as it is (the test's --out and registry added, FILE-like words
    filled in; an apply confirmed, as there is no terminal here)."""
    words = [placeholders.get(w, w) for w in shlex.split(command)]
    assert words[0] == "infra-apply" and words[-1] == "--sandbox", command
    extra = ["--auto-approve"] if words[1] == "apply" else []
    return ops.run(*words[1:], *extra, "--out", str(ops.out), "--mesh-hosts", str(ops.mesh))


def state_file(ops: Ops) -> Path:
    key = identify(ops.root, ops.env).key
    return ops.base / "state" / "work" / "sandbox" / key / "quinn" / "terraform.tfstate"


def edit_registry(ops: Ops) -> None:
    """A host lost from the registry and a stale public IP (the sandbox's own registry)."""
    doc = json.loads(ops.registry.read_text())
    del doc["hosts"]["dns"]
    doc["hosts"]["mcp"]["public_ip"] = "192.0.2.250"
    ops.registry.write_text(json.dumps(doc, indent=2) + "\n")


def test_drift_reports_changes_outside_terraform_until_applied(ops: Ops) -> None:
    assert ops.apply("quinn")[0] == 0
    code, out, err = drift(ops)
    assert (code, out.strip().splitlines()[-1]) == (0, "No drift."), err

    live = ops.droplets()
    new_size = "s-4vcpu-8gb" if live[MCP]["size"] != "s-4vcpu-8gb" else "s-8vcpu-16gb"
    # CPU and RAM only: a resize that grew the disk could never be undone (DigitalOcean refuses)
    cloud.edit_droplet(ops.cloud, str(live[MCP]["id"]), size=new_size, disk=False)
    tags = [str(t) for t in live[DNS]["tags"]]  # type: ignore[attr-defined]
    cloud.edit_droplet(ops.cloud, str(live[DNS]["id"]), tags=[*tags, "edited-by-hand"])
    cloud.delete_droplet(ops.cloud, str(live[ARTIFACTS]["id"]))
    stray = cloud.create_droplet(ops.cloud, STRAY, tags=["managed-by:infra-apply", "producer:quinn"])
    edit_registry(ops)
    state_before = state_file(ops).read_bytes()

    code, out, err = drift(ops)
    assert code == 2, err
    lines = out.splitlines()
    assert f"  ! deleted outside Terraform: {ARTIFACTS} (digitalocean_droplet.quinn_artifacts)" in lines
    assert f"  ! changed outside Terraform: {DNS} (digitalocean_droplet.dns): tags +edited-by-hand" in lines
    resize = [line for line in lines if line.startswith(f"  ! resized outside Terraform: {MCP} ")]
    assert resize and f'size "{live[MCP]["size"]}" → "{new_size}"' in resize[0]
    assert (
        f"  ! host dns (droplet {DNS}) is missing from mesh-hosts.json "
        "— run infra-apply register --producer quinn --sandbox"
    ) in lines
    assert any(
        f"host mcp (droplet {MCP}) disagrees with state" in line and "public_ip" in line for line in lines
    )
    assert any(
        f"droplet {STRAY} (id {stray['id']}) is tagged managed-by:infra-apply" in line for line in lines
    )
    # a refresh-only plan is never applied: the state still holds what Terraform last applied
    assert state_file(ops).read_bytes() == state_before

    code, out, err = drift(ops, "--format", "json")
    assert code == 2, err
    doc = json.loads(out)
    quinn = doc["producers"]["quinn"]
    outside = {(c["address"], c["action"]) for c in quinn["outside"]}
    dns = next(c for c in quinn["outside"] if c["address"] == "digitalocean_droplet.dns")
    assert [(d["attr"], d["added"], d["removed"]) for d in dns["diffs"]] == [("tags", ["edited-by-hand"], [])]
    assert {
        ("digitalocean_droplet.quinn_artifacts", "delete"),
        ("digitalocean_droplet.dns", "update"),
        ("digitalocean_droplet.quinn_mcp", "resize"),
    } <= outside
    assert {(h["host"], h["change"]) for h in quinn["mesh"]["hosts"]} == {
        ("dns", "added"),
        ("mcp", "updated"),
    }
    assert [(o["name"], o["id"], o["producer"]) for o in doc["orphans"]] == [(STRAY, stray["id"], "quinn")]
    assert doc["drift"] is True and doc["sandbox"] is True

    code, out, err = drift(ops, "--format", "markdown")
    assert code == 2 and out.startswith("<!-- infra-apply drift -->\n"), err

    # The operator puts things right: apply (recreates, resizes back, retags), register, and
    # destroys the stray droplet by hand (no state owns it, so no apply would).
    code, _, err = ops.apply("quinn", "--allow-resize", MCP)
    assert code == 0, err
    assert run_remedy(ops, "infra-apply register --producer quinn --sandbox")[0] == 0  # as printed
    assert cloud.delete_droplet(ops.cloud, stray["id"])
    code, out, err = drift(ops)
    assert (code, out) == (0, "Producer quinn:\nNo drift.\n"), err
    code, out, _ = drift(ops, "--format", "json")
    assert code == 0 and json.loads(out)["drift"] is False


def test_a_producer_never_applied_is_not_drift_and_each_remedy_printed_works(ops: Ops) -> None:
    """Issue 13: a fresh state dir and a registry that already holds quinn's host forge. Not
    drift (the scheduled workflow must not open an issue); the remedy printed is run as printed,
    and so is the one for a state lost after that."""
    code, out, err = ops.sandbox("drift")
    assert code == 0, err
    assert re.search(r"^3 producers checked in \d+\.\ds$", err, re.M), err
    for phase in ("refresh-only plan", "show"):
        assert re.search(rf"^quinn: {phase} done in \d+\.\ds \(.+\)$", err, re.M), err
    code, out, err = drift(ops)
    assert (code, out) == (
        0,
        "Producer quinn:\n  not applied yet: run infra-apply apply --producer quinn --sandbox\n"
        "Nothing to compare.\n",
    ), err
    assert json.loads(drift(ops, "--format", "json")[1])["producers"]["quinn"]["applied"] is False
    [command] = remedies(out)
    code, _, err = run_remedy(ops, command)
    assert code == 0, err
    live = ops.droplets()
    assert ops.hosts()["forge"]["public_ip"] == live[ARTIFACTS]["ipv4_address"]  # apply registered it
    assert drift(ops)[:2] == (0, "Producer quinn:\nNo drift.\n")

    # The state is lost (or moved): the droplets are still there, so an apply would create them
    # a second time. The report says adopt instead; its --from-state remedy takes them over.
    old_state = ops.base / "old.tfstate"
    state_file(ops).rename(old_state)
    code, out, err = drift(ops)
    assert code == 2, err
    assert "do not apply, it would create them again" in out and "infra-apply apply" not in out
    from_state = next(c for c in remedies(out) if "--from-state" in c)
    assert run_remedy(ops, from_state, FILE=str(old_state))[0] == 0
    code, _, err = ops.apply("quinn")
    assert code == 0, err
    assert {n: d["id"] for n, d in ops.droplets().items()} == {n: d["id"] for n, d in live.items()}
    assert drift(ops)[:2] == (0, "Producer quinn:\nNo drift.\n")


def test_unknown_producer_is_one_line_and_exit_1(ops: Ops) -> None:
    code, out, err = ops.sandbox("drift", "--producer", "nope")
    assert code == 1 and out == ""
    assert "unknown producer nope" in err and len(err.strip().splitlines()) == 1


def test_an_ordinary_plan_tells_changes_outside_terraform_from_its_own(ops: Ops) -> None:
    """Real Terraform: a droplet deleted by hand shows under "Changed outside Terraform", and a
    plan that only re-creates it says it brings nothing new; the comment is marked as sandbox."""
    assert ops.apply("quinn")[0] == 0
    cloud.delete_droplet(ops.cloud, str(ops.droplets()[DNS]["id"]))
    sha = "89abcdef0123456789abcdef0123456789abcdef"
    ops.env["GITHUB_SHA"] = sha
    code, md, err = ops.sandbox("plan", "--producer", "quinn", "--format", "markdown")
    assert code == 2, err
    assert md.startswith(f"<!-- infra-apply plan: commit={sha} planned-at=")
    assert "## infra-apply plan (sandbox)\n" in md and "> 🧪 **Sandbox plan:**" in md
    outside, mine = md.index("#### Changed outside Terraform"), md.index("#### Changed by this pull request")
    assert (
        "- ✋ deleted outside Terraform: com.uvlava.dns (digitalocean\\_droplet.dns) "
        "— this plan re-creates it" in md[outside:mine]
    )
    assert "only undoes a change made outside Terraform" in md[mine:]
    assert "- 🆕 create **com.uvlava.dns** (digitalocean\\_droplet.dns) (undoes a change made outside" in md
    code, out, err = ops.sandbox("plan", "--producer", "quinn", "--format", "json")
    quinn = json.loads(out)["producers"]["quinn"]
    assert code == 2 and quinn["only_undoes_outside"] is True, err
    assert ("digitalocean_droplet.dns", "delete") in {(o["address"], o["action"]) for o in quinn["outside"]}


def test_a_pull_request_changing_what_was_changed_by_hand_undoes_nothing_and_a_disk_never_shrinks(
    ops: Ops,
) -> None:
    """Issue 13, real Terraform: by hand dns was grown (disk too), mcp tagged and artifacts
    deleted; the pull request sizes dns to a size it never had (whose disk is smaller than the
    one dns has now), renames mcp's role and makes artifacts bigger. Nothing of it is an undo,
    and the sandbox refuses the shrinking resize as DigitalOcean does, losing nothing."""
    assert ops.apply("quinn")[0] == 0
    live = ops.droplets()
    cloud.edit_droplet(ops.cloud, str(live[DNS]["id"]), size="s-2vcpu-4gb")  # disk 25 → 80 GB
    tags = [str(t) for t in live[MCP]["tags"]]  # type: ignore[attr-defined]
    cloud.edit_droplet(ops.cloud, str(live[MCP]["id"]), tags=[*tags, "owner:alice"])
    cloud.delete_droplet(ops.cloud, str(live[ARTIFACTS]["id"]))
    ops.edit("@quinn/.infra.yaml", "size: s-1vcpu-1gb", "size: s-1vcpu-2gb")  # 50 GB disk
    ops.edit("@quinn/.infra.yaml", "role: mcp", "role: jobs")
    ops.edit("@quinn/.infra.yaml", "size: s-4vcpu-8gb", "size: s-8vcpu-16gb")

    code, out, err = ops.sandbox("plan", "--producer", "quinn")
    assert code == 2, err
    lines = out.splitlines()
    said = {line.split(" (digitalocean_droplet.")[0]: line for line in lines if " — this plan " in line}
    assert said[f"  ! deleted outside Terraform: {ARTIFACTS}"].endswith(
        "— this plan re-creates it as s-8vcpu-16gb, not as it was"
    )
    assert said[f"  ! changed outside Terraform: {MCP}"].endswith(
        "tags +owner:alice — this plan changes tags -owner:alice, -role:mcp +role:jobs, not back"
    )
    dns = said[f"  ! resized outside Terraform: {DNS}"]
    assert (
        'size "s-1vcpu-1gb" → "s-2vcpu-4gb" — this plan resizes it to s-1vcpu-2gb, a size it never had' in dns
    )
    assert "but its disk is already 80 GB and DigitalOcean never shrinks a disk, so that resize" in dns
    assert "Nothing new" not in out and "back to" not in out
    assert [line for line in lines if "(undoes a change" in line] == [
        f"  ~ update  firewall of {ARTIFACTS} (digitalocean_firewall.{address}): "
        "droplet_ids [] → (known after apply) (undoes a change made outside Terraform)"
        for address in ("quinn_artifacts", "quinn_artifacts__public")
    ]  # both firewalls follow the re-created droplet, whatever that is
    assert "can never be shrunk back" not in out

    code, out, err = ops.sandbox("plan", "--producer", "quinn", "--format", "json")
    quinn = json.loads(out)["producers"]["quinn"]
    assert code == 2 and quinn["only_undoes_outside"] is False, err
    assert not any(c["undoes_outside"] for c in quinn["changes"] if c["type"] == "digitalocean_droplet")
    resize = next(c["resize"] for c in quinn["changes"] if c["address"] == "digitalocean_droplet.dns")
    assert (resize["fails"], resize["disk_grows"], resize["disk_before_gb"]) == (True, False, 80)
    tags_diff = next(
        d for c in quinn["changes"] if c["address"] == "digitalocean_droplet.quinn_mcp" for d in c["diffs"]
    )
    assert (tags_diff["added"], tags_diff["removed"]) == (["role:jobs"], ["owner:alice", "role:mcp"])

    # No flag makes that resize possible: apply stops on it before anything runs (the real
    # provider would power dns off before DigitalOcean's 422), and applies nothing else either.
    before = ops.droplets()
    code, out, err = ops.apply("quinn", "--allow-resize", DNS)
    assert code == 1, (out, err)
    assert (
        f"error resize: droplet {DNS}: size s-2vcpu-4gb → s-1vcpu-2gb can never be applied: "
        "s-1vcpu-2gb's disk is 50 GB, below the droplet's 80 GB"
    ) in err
    assert ops.droplets() == before  # untouched: dns still s-2vcpu-4gb with its 80 GB disk
    state = json.loads(state_file(ops).read_text())
    kept = [r for r in state["resources"] if r["type"] == "digitalocean_droplet" and r["name"] == "dns"]
    # state is as the first apply left it: apply never ran
    assert kept and kept[0]["instances"][0]["attributes"]["size"] == "s-1vcpu-1gb"


def test_a_second_copy_of_a_droplet_in_state_is_a_duplicate_and_its_remedy_removes_it(ops: Ops) -> None:
    """What a moved checkout's apply leaves: a tagged copy under a name the state holds. adopt
    has nothing to take over for it; the report's remedy, run as printed, destroys the copy."""
    assert ops.apply("quinn")[0] == 0
    original = ops.droplets()[DNS]
    copy = cloud.create_droplet(ops.cloud, DNS, region=str(original["region"]), tags=list(original["tags"]))
    code, out, err = drift(ops)
    assert code == 2, err
    assert "Droplets no state knows" not in out
    [line] = [x for x in out.splitlines() if "is a duplicate" in x]
    assert f"droplet {DNS} (id {copy['id']}) is a duplicate" in line
    assert f"holds droplet {original['id']} under that name" in line
    doc = json.loads(drift(ops, "--format", "json")[1])
    assert [(d["id"], d["state_id"]) for d in doc["duplicates"]] == [(str(copy["id"]), str(original["id"]))]
    assert doc["orphans"] == []
    assert "nothing to adopt" in ops.sandbox("adopt", "--producer", "quinn")[1]
    remedy = line.split("destroy it by hand with ", 1)[1]
    done = subprocess.run(shlex.split(remedy), capture_output=True, text=True, env=ops.env, check=False)
    assert done.returncode == 0, done.stderr
    assert [d["id"] for d in cloud.list_droplets(ops.cloud) if d["name"] == DNS] == [original["id"]]
    assert drift(ops)[0] == 0
