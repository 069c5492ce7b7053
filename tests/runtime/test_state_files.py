"""The files infra-apply keeps: the state dir (where it may be, its privacy), the sandbox's own
registry, and bad input around them reported as located errors (exit 1), never as bugs (70)."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from infra_apply.cloud.account import SandboxAccount, sandbox_registry
from infra_apply.registry.meshfile import load_document
from infra_apply.runtime.workcopy import Context, mesh_target
from tests.conftest import EXAMPLE_MESH, REPO, cli_env, run_cli

# --- the sandbox's registry copy ------------------------------------------------------------

SEED = """
import resource, signal, sys
from pathlib import Path
from infra_apply.cloud.account import SandboxAccount
from infra_apply.runtime.workcopy import Context, mesh_target
from infra_apply.registry.meshfile import load_document

root, source, state, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = Context(root=root, out=root / "generated", account=SandboxAccount(), mesh_path=source,
              env={"INFRA_APPLY_STATE_DIR": state})
if mode == "killed-at":
    # Killed halfway through writing: the kernel sends SIGXFSZ (default action: terminate)
    # when a write crosses this size, after part of the registry has reached the disk.
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[5]), int(sys.argv[5])))
elif mode == "race":
    go = Path(sys.argv[5])
    print("ready", flush=True)
    while not go.exists():
        pass
load_document(mesh_target(ctx))
"""


def seeding_context(tmp_path: Path) -> Context:
    return Context(
        root=tmp_path / "tree",
        out=tmp_path / "tree" / "generated",
        account=SandboxAccount(),
        mesh_path=EXAMPLE_MESH,
        env={"INFRA_APPLY_STATE_DIR": str(tmp_path / "state")},
    )


def seed_in_child(tmp_path: Path, *mode: str) -> subprocess.Popen[bytes]:
    args = [str(tmp_path / "tree"), str(EXAMPLE_MESH), str(tmp_path / "state"), *mode]
    return subprocess.Popen([sys.executable, "-c", SEED, *args], cwd=REPO, stdout=subprocess.PIPE)


def test_a_kill_while_seeding_the_sandbox_registry_leaves_no_partial_copy(tmp_path: Path) -> None:
    source = EXAMPLE_MESH.read_bytes()
    assert len(source) > 200
    child = seed_in_child(tmp_path, "killed-at", "100")
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGXFSZ
    ctx = seeding_context(tmp_path)
    sizes = [p.stat().st_size for p in sandbox_registry(ctx).parent.iterdir()]
    assert 100 in sizes  # it died in the middle of writing the registry, 100 bytes in
    copy = mesh_target(ctx)
    assert copy == sandbox_registry(ctx)
    assert copy.read_bytes() == source
    load_document(copy)
    assert [p.name for p in copy.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_an_empty_sandbox_registry_left_by_an_older_version_is_seeded_again(tmp_path: Path) -> None:
    ctx = seeding_context(tmp_path)
    copy = sandbox_registry(ctx)
    copy.parent.mkdir(parents=True)
    copy.touch()
    assert mesh_target(ctx) == copy
    assert copy.read_bytes() == EXAMPLE_MESH.read_bytes()


def test_concurrent_first_sandbox_runs_all_read_a_whole_registry(tmp_path: Path) -> None:
    go = tmp_path / "go"
    children = [seed_in_child(tmp_path, "race", str(go)) for _ in range(12)]
    for child in children:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    go.touch()  # all seed at once
    for child in children:
        child.communicate(timeout=120)
    assert [c.returncode for c in children] == [0] * len(children)
    assert sandbox_registry(seeding_context(tmp_path)).read_bytes() == EXAMPLE_MESH.read_bytes()


# --- where the state dir may be --------------------------------------------------------------

COMMANDS = {
    "validate": ("validate",),
    "render": ("render", "--out", "{out}"),
    "plan": ("plan", "--sandbox", "--out", "{out}"),
    "apply": ("apply", "--producer", "quinn", "--auto-approve", "--sandbox", "--out", "{out}"),
    "register": ("register", "--producer", "quinn", "--sandbox", "--out", "{out}"),
    "rename": ("rename", "--producer", "quinn", "com.uvlava.dns", "--sandbox", "--out", "{out}"),
    "adopt": ("adopt", "--producer", "quinn", "--sandbox", "--out", "{out}"),
}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("inside", ["generated", "tree/generated"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_state_dir_inside_generated_is_refused_before_anything_is_written(
    example: Path, command: str, inside: str
) -> None:
    """Inside --out (here example/generated) or inside the root's own generated/."""
    out = example / "generated"
    (example / "tree" / "generated").mkdir()
    state = example / inside / "state"
    before = {folder: snapshot(example / folder) for folder in ("generated", "tree")}
    args = [a.format(out=out) for a in COMMANDS[command]]
    r = run_cli(
        "--root",
        str(example / "tree"),
        *args,
        "--mesh-hosts",
        str(example / "mesh-hosts.json"),
        # validate has no --out: INFRA_APPLY_OUT names the generated folder for every command
        env=cli_env(example, INFRA_APPLY_STATE_DIR=str(state), INFRA_APPLY_OUT=str(out)),
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "must never land in generated/" in r.stderr and "Traceback" not in r.stderr
    assert not state.exists()
    assert {folder: snapshot(example / folder) for folder in ("generated", "tree")} == before


# --- privacy of what the state dir holds ----------------------------------------------------


def loose_modes(*folders: Path) -> list[str]:
    """Everything under ``folders`` that is not private: folders other than 0700, files with any
    group/other bit or other than 0600/0700."""
    found = []
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            st = path.lstat()
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                continue
            ok = mode == 0o700 if stat.S_ISDIR(st.st_mode) else mode in (0o600, 0o700)
            if not ok:
                found.append(f"{mode:04o} {path.relative_to(folder.parent)}")
    return found


def loosen(folder: Path) -> None:
    """What an older version left: 0755 folders, 0644 files (0755 executables)."""
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        path.chmod(0o755 if path.is_dir() or mode & 0o100 else 0o644)


def test_state_plans_and_working_copies_are_private_to_the_user(example: Path) -> None:
    env = cli_env(example)
    state = example / "state"

    def sandbox(*args: str) -> int:
        r = run_cli(
            "--root",
            str(example / "tree"),
            *args,
            "--sandbox",
            "--out",
            str(example / "generated"),
            "--mesh-hosts",
            str(example / "mesh-hosts.json"),
            env=env,
        )
        assert "Traceback" not in r.stderr, r.stderr
        return r.returncode

    assert sandbox("apply", "--producer", "quinn", "--auto-approve") == 0
    work = next(state.glob("work/sandbox/*/quinn"))
    for secret in ("terraform.tfstate", "infra-apply.tfplan", ".terraform"):
        assert (work / secret).exists(), secret
    assert '"password"' in (work / "terraform.tfstate").read_text()  # what is at stake
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert loose_modes(state / "work", state / "sandbox", state / "cache") == []

    loosen(state / "work")
    loosen(state / "sandbox")
    assert loose_modes(state / "work", state / "sandbox")  # the control: now they are loose
    assert sandbox("plan", "--producer", "quinn") == 0
    assert loose_modes(state / "work", state / "sandbox", state / "cache") == []


# --- bad input is a located error, never a bug ----------------------------------------------

Setup = Callable[[Path], tuple[list[str], dict[str, str]]]


def manifest(text: str) -> Setup:
    def setup(base: Path) -> tuple[list[str], dict[str, str]]:
        bad = base / "tree" / "@quinn" / "bad" / ".infra.yaml"
        bad.parent.mkdir()
        bad.write_text(text)
        return ["validate"], {}

    return setup


def registry(text: str) -> Setup:
    def setup(base: Path) -> tuple[list[str], dict[str, str]]:
        (base / "bad-mesh.json").write_text(text)
        return ["validate", "--mesh-hosts", str(base / "bad-mesh.json")], {}

    return setup


def state_dir(make: Callable[[Path], Path]) -> Setup:
    def setup(base: Path) -> tuple[list[str], dict[str, str]]:
        plan = ["plan", "--producer", "quinn", "--sandbox", "--out", str(base / "generated")]
        return plan, {"INFRA_APPLY_STATE_DIR": str(make(base))}

    return setup


def regular_file(base: Path) -> Path:
    (base / "state-file").write_text("not a folder\n")
    return base / "state-file"


def read_only(base: Path) -> Path:
    (base / "ro-state").mkdir(mode=0o555)
    return base / "ro-state"


def long_root(base: Path) -> tuple[list[str], dict[str, str]]:
    return ["--root", str(base / ("r" * 5000)), "validate"], {}


def corrupt_cloud(base: Path) -> tuple[list[str], dict[str, str]]:
    cloud = base / "state" / "sandbox" / "cloud.json"
    cloud.parent.mkdir(parents=True, exist_ok=True)  # the example fixture's account is there
    cloud.write_text('{"version": 1, "droplets": {"1001": {"name": "com.uvlava.dns",\n')
    return ["plan", "--producer", "quinn", "--sandbox", "--out", str(base / "generated")], {}


HEAD = '{"network": "10.9.0.0/24", "hosts": {}, "x": '
BAD_INPUT: dict[str, tuple[Setup, str]] = {
    "manifest-unknown-alias": (
        manifest("apiVersion: infra/v1\nproject: bad\nprovider: digitalocean\nx: *nope\n"),
        "@quinn/bad/.infra.yaml:4:4: error yaml: unknown alias *nope",
    ),
    "manifest-4301-digit-int": (
        manifest("apiVersion: infra/v1\nproject: bad\nprovider: digitalocean\nx: " + "9" * 4301 + "\n"),
        "@quinn/bad/.infra.yaml:4:4: error yaml: number too large",
    ),
    "mesh-4301-digit-int": (
        registry(HEAD + "9" * 4301 + "}\n"),
        f"bad-mesh.json:1:{len(HEAD) + 1}: error host_in_mesh: mesh-hosts.json has the number 9999",
    ),
    "mesh-nested-100000-deep": (
        registry(HEAD + "[" * 100_000 + "]" * 100_000 + "}\n"),
        f"bad-mesh.json:1:{len(HEAD) + 100}: error host_in_mesh: mesh-hosts.json is nested deeper",
    ),
    "state-dir-regular-file": (
        state_dir(regular_file),
        "state-file: error state_dir: the state dir is not a folder",
    ),
    "state-dir-dev-null": (
        state_dir(lambda _: Path("/dev/null")),
        "/dev/null: error state_dir: the state dir is not a folder",
    ),
    "state-dir-read-only": (
        state_dir(read_only),
        "ro-state: error state_dir: the state dir is read-only (mode 0555)",
    ),
    "root-5000-characters": (long_root, "infra-apply: error: --root "),
    "corrupt-sandbox-cloud": (
        corrupt_cloud,
        "sandbox/cloud.json:2:1: error sandbox: the sandbox cloud file is not valid JSON",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_a_located_error_with_exit_1_never_a_bug(example: Path, case: str) -> None:
    setup, expected = BAD_INPUT[case]
    args, extra_env = setup(example)
    if args[0] != "--root":
        args = ["--root", str(example / "tree"), *args]
    r = run_cli(*args, env=cli_env(example, **extra_env))
    output = r.stdout + r.stderr
    assert r.returncode == 1, output[-2000:]
    assert "Traceback" not in output and "internal error" not in output
    assert expected in output, output[-2000:]
    assert max(len(line) for line in output.splitlines()) < 400  # nothing huge echoed back


def test_a_corrupt_sandbox_cloud_says_how_to_start_afresh(example: Path) -> None:
    args, _ = corrupt_cloud(example)
    r = run_cli("--root", str(example / "tree"), *args, env=cli_env(example))
    [line] = [x for x in r.stderr.splitlines() if " error " in x]
    assert line.startswith(f"{example}/state/sandbox/cloud.json:2:1: error sandbox:")
    assert "delete it and the sandbox working copies" in line


# --- a registry its owner made read-only ----------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [("apply", "--producer", "quinn", "--auto-approve"), ("register", "--producer", "quinn")],
)
def test_a_read_only_registry_stops_a_live_run_before_anything_happens(
    example: Path, command: tuple[str, ...]
) -> None:
    registry_file = example / "mesh-hosts.json"
    registry_file.chmod(0o444)
    before = registry_file.read_bytes()
    r = run_cli(
        "--root",
        str(example / "tree"),
        *command,
        "--out",
        str(example / "generated"),
        "--mesh-hosts",
        str(registry_file),
        env=cli_env(example, DIGITALOCEAN_TOKEN="FAKE-do-token_not_a_real_token"),
    )
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines() == [
        f"{registry_file}: error mesh: mesh-hosts.json is read-only (mode 0444); it is never replaced: "
        "make it writable to register hosts (or use register --dry-run to see the change)"
    ]
    assert not (example / "state" / "work").exists()  # no working copy, no Terraform run
    assert registry_file.read_bytes() == before and stat.S_IMODE(registry_file.stat().st_mode) == 0o444
