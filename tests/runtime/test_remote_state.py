"""Remote state in an S3-compatible bucket (moto's server standing in for DigitalOcean Spaces),
driven through the real CLI, real Terraform and the sandbox provider.

Terraform's own lockfile (``use_lockfile = true``) guards the state: a second apply of the same
producer, from another machine (another state dir, so another working copy), fails with
Terraform's lock error while the first holds the lock, and no state is lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from infra_apply.cloud.account import SandboxAccount, SandboxProvider
from infra_apply.runtime.workcopy import Context, terraform_env
from infra_apply.sandbox import cloud
from infra_apply.sandbox.install import SandboxSetup
from tests.conftest import cli_env, moto_server, run_cli

QUINN = {"com.uvlava.dns", "com.uvlava.quinn.artifacts", "com.uvlava.quinn.mcp"}
STATE_KEY = "infra-apply/quinn/terraform.tfstate"
LOCK_KEY = f"{STATE_KEY}.tflock"
# Distinctive dummy credentials (moto accepts any), so a leak into a file is found by grep.
ACCESS_KEY = "AKIAINFRAAPPLYMOTO01"
SECRET_KEY = "moto-secret-0f9d6c2e-never-in-files"
LOCK_ERROR = "Error acquiring the state lock"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free local port for this module's tests."""
    server = moto_server()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


class Remote:
    """The copied example tree with an infra-apply.toml pointing at a fresh bucket."""

    def __init__(self, base: Path, endpoint: str) -> None:
        self.base = base
        self.root = base / "tree"
        self.out = base / "generated"
        self.endpoint = endpoint
        self.bucket = f"tfstate-{uuid.uuid4().hex[:12]}"
        self.s3 = s3_client(endpoint)
        self.s3.create_bucket(Bucket=self.bucket)
        (self.root / "infra-apply.toml").write_text(
            "# Team state: DigitalOcean Spaces in production, moto's S3 server in this test.\n"
            "[state]\n"
            'backend = "s3"\n'
            f'bucket = "{self.bucket}"\n'
            f'endpoint = "{endpoint}"\n'
            'region = "us-east-1"\n'
            'key_prefix = "live"\n'
            # Sandbox runs keep local state unless they opt into the bucket under their own prefix.
            'sandbox_key_prefix = "infra-apply"\n',
            "utf-8",
        )

    def env(self, state: str = "state", **extra: str) -> dict[str, str]:
        env = {k: v for k, v in cli_env(self.base).items() if not k.startswith("AWS_")}
        env.update(
            INFRA_APPLY_STATE_DIR=str(self.base / state),
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            **extra,
        )
        return env

    def args(self, command: str, *args: str) -> list[str]:
        return ["--root", str(self.root), command, *args, "--sandbox", "--out", str(self.out)]

    def run(self, env: dict[str, str], command: str, *args: str) -> tuple[int, str, str]:
        r = run_cli(*self.args(command, *args), env=env)
        assert "Traceback" not in r.stderr, r.stderr
        return r.returncode, r.stdout, r.stderr

    def get(self, key: str) -> bytes | None:
        try:
            body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise
        return body

    def state(self) -> dict[str, Any]:
        raw = self.get(STATE_KEY)
        assert raw is not None, f"no {STATE_KEY} in bucket {self.bucket}"
        doc: dict[str, Any] = json.loads(raw)
        return doc


def droplet_names(state: dict[str, Any]) -> list[str]:
    """Every droplet instance in a Terraform state document, by its name attribute."""
    return sorted(
        instance["attributes"]["name"]
        for resource in state["resources"]
        if resource["type"] == "digitalocean_droplet" and resource["mode"] == "managed"
        for instance in resource["instances"]
    )


def files_holding(base: Path, *needles: str) -> list[str]:
    """Files under ``base`` containing any needle, looking inside zip files (saved plans) too."""
    found = []
    wanted = [n.encode() for n in needles]
    for path in base.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        blobs = [path.read_bytes()]
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                blobs += [archive.read(name) for name in archive.namelist()]
        if any(n in blob for n in wanted for blob in blobs):
            found.append(str(path.relative_to(base)))
    return found


@pytest.fixture
def remote(example: Path, s3_endpoint: str) -> Remote:
    return Remote(example, s3_endpoint)


def test_state_lands_in_the_bucket_and_credentials_stay_in_the_environment(remote: Remote) -> None:
    env = remote.env()
    code, out, err = remote.run(env, "apply", "--producer", "quinn", "--auto-approve")
    assert code == 0, err
    assert "quinn: applied" in out
    assert droplet_names(remote.state()) == sorted(QUINN)
    assert remote.get(LOCK_KEY) is None  # released
    state = remote.base / "state"
    work = next(state.glob("work/sandbox/*/quinn"))
    assert 'backend "s3"' in (work / "backend.tf").read_text()
    local_states = [p for p in state.rglob("terraform.tfstate*") if p.parent.name != ".terraform"]
    assert local_states == []
    # .terraform/terraform.tfstate is Terraform's note of the backend config, never the state
    assert "resources" not in json.loads((work / ".terraform" / "terraform.tfstate").read_text())
    assert files_holding(remote.base, ACCESS_KEY, SECRET_KEY) == []
    code, out, err = remote.run(env, "plan", "--producer", "quinn")
    assert (code, "No changes." in out) == (0, True), out + err


def test_concurrent_applies_one_holds_the_lock_the_other_fails_no_state_lost(remote: Remote) -> None:
    shared_cloud = remote.base / "cloud.json"
    env_a = remote.env("state-a", INFRA_APPLY_SANDBOX_CLOUD=str(shared_cloud))
    # B fails at once on A's lock (by default it would wait 60 s for it, and A, frozen that
    # long while its provider starts, would miss Terraform's plugin start timeout)
    env_b = remote.env("state-b", INFRA_APPLY_SANDBOX_CLOUD=str(shared_cloud), INFRA_APPLY_LOCK_TIMEOUT="0")
    a = subprocess.Popen(
        [sys.executable, "-m", "infra_apply", *remote.args("apply", "--producer", "quinn", "--auto-approve")],
        env=env_a,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    frozen: int | None = None
    try:
        lock = wait_for_apply_lock(remote, a)
        # Hold A inside its apply, lock taken, for as long as B needs: stop Terraform's process
        # group (Terraform and its provider) rather than racing B against a sub-second apply.
        frozen = terraform_child(a.pid, "apply")
        os.killpg(frozen, signal.SIGSTOP)
        assert remote.get(LOCK_KEY) == lock, "A's apply finished before it could be held"
        code, out, err = remote.run(env_b, "apply", "--producer", "quinn", "--auto-approve")
        assert code == 1, out + err
        assert LOCK_ERROR in err
        assert "OperationTypeApply" in err  # the lock B met is A's apply
        assert "quinn: applied" not in out
    finally:
        if frozen is not None:
            os.killpg(frozen, signal.SIGCONT)
        out_a, err_a = a.communicate(timeout=300)
    assert a.returncode == 0, out_a + err_a
    assert "quinn: applied" in out_a
    assert remote.get(LOCK_KEY) is None
    assert droplet_names(remote.state()) == sorted(QUINN)  # each exactly once
    assert sorted(d["name"] for d in cloud.list_droplets(shared_cloud)) == sorted(QUINN)
    for env in (env_a, env_b):
        code, out, err = remote.run(env, "plan", "--producer", "quinn")
        assert (code, "No changes." in out) == (0, True), out + err
    assert sorted(d["name"] for d in cloud.list_droplets(shared_cloud)) == sorted(QUINN)


def wait_for_apply_lock(remote: Remote, proc: subprocess.Popen[str], timeout: float = 120) -> bytes:
    """The lock file's content once the apply (not the plan before it) holds the lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = remote.get(LOCK_KEY)
        if raw is not None and json.loads(raw).get("Operation") == "OperationTypeApply":
            return raw
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"apply ended (exit {proc.returncode}) before its lock was seen:\n{out}\n{err}")
        time.sleep(0.01)
    pytest.fail("no apply lock appeared in the bucket")


def terraform_child(parent: int, command: str) -> int:
    """The pid of ``parent``'s child running ``terraform <command>`` (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and command.encode() in argv[1:2]:
            return int(entry.name)
    raise AssertionError(f"no terraform {command} process under pid {parent}")


BAD_CONFIGS = {
    "unknown-backend": ('[state]\nbackend = "gcs"\nbucket = "b"\n', "2:1", 'backend must be "local" or "s3"'),
    "credentials": (
        f'[state]\nbackend = "s3"\nbucket = "b"\nsecret_key = "{SECRET_KEY}"\n',
        "4:1",
        "credentials never go in infra-apply.toml",
    ),
    "typo": ('[state]\nbackend = "s3"\nbucket = "b"\nendpiont = "https://x"\n', "4:1", "unknown setting"),
    "no-bucket": ('[state]\nbackend = "s3"\n', "1:1", "bucket is required"),
    "not-a-table": ('state = "s3"\n', "1:1", "state must be a table"),
    "not-toml": ("[state]\nbackend = s3\n", "2:11", "invalid TOML"),
    "sandbox-over-live": (
        '[state]\nbackend = "s3"\nbucket = "b"\nsandbox_key_prefix = "infra-apply"\n',
        "4:1",
        "sandbox_key_prefix must differ from key_prefix",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_a_bad_config_is_one_located_error(example: Path, name: str) -> None:
    text, where, message = BAD_CONFIGS[name]
    (example / "tree" / "infra-apply.toml").write_text(text, "utf-8")
    env = cli_env(example)
    r = run_cli(
        "--root", str(example / "tree"), "plan", "--sandbox", "--out", str(example / "generated"), env=env
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert errors == [errors[0]] and errors[0].startswith(f"infra-apply.toml:{where}: error config: ")
    assert message in errors[0]
    assert SECRET_KEY not in r.stdout + r.stderr
    assert not (example / "state" / "work").exists()  # stopped before any working copy


def test_spaces_keys_are_mapped_for_terraform_only(tmp_path: Path) -> None:
    ctx = Context(
        root=tmp_path,
        out=tmp_path / "generated",
        account=SandboxAccount(),
        mesh_path=None,
        env={"SPACES_ACCESS_KEY_ID": ACCESS_KEY, "SPACES_SECRET_ACCESS_KEY": SECRET_KEY},
    )
    box = tmp_path / "sandbox"
    setup = SandboxSetup(box, box, box, Path("/sandbox/terraformrc"), box / "cloud.json", box, "h1:x")
    provider = SandboxProvider(setup, setup.cloud)
    env = terraform_env(ctx, "quinn", provider)
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (ACCESS_KEY, SECRET_KEY)
    ctx = Context(
        root=tmp_path,
        out=tmp_path / "generated",
        account=SandboxAccount(),
        mesh_path=None,
        env={"SPACES_ACCESS_KEY_ID": "spaces", "AWS_ACCESS_KEY_ID": "aws"},
    )
    assert terraform_env(ctx, "quinn", provider)["AWS_ACCESS_KEY_ID"] == "aws"  # an explicit AWS key wins


def test_sandbox_never_uses_the_live_state_key_unless_opted_in(remote: Remote) -> None:
    text = (remote.root / "infra-apply.toml").read_text()
    (remote.root / "infra-apply.toml").write_text(text.replace('sandbox_key_prefix = "infra-apply"\n', ""))
    code, _, err = remote.run(remote.env(), "apply", "--producer", "quinn", "--auto-approve")
    assert code == 0, err
    listed = remote.s3.list_objects_v2(Bucket=remote.bucket).get("Contents", [])
    assert listed == []  # stand-in resources never reach the team's bucket
