"""Benchmarks against a synthetic 2,000-manifest / 200,000-file tree (see gen_tree.py).

Each benchmark is a named function returning table rows; add one by appending to ``BENCHES``.
Every figure is the median of ``--runs`` timed runs after one untimed warm-up (so the page cache
is warm for every contender).

    python bench/run.py [--runs 5] [--only NAME]... [--list] [--regen] [--strict] [--remeasure-install]
    python bench/run.py --quick     # every benchmark once on a small tree: does it still run?

Install sizes need fresh venvs (about a minute): they are measured once and cached in
``bench/out/install-size.json`` until the dependencies or the Python version change;
``--remeasure-install`` measures them again.

``--quick`` (CI) runs each benchmark once on a 200-manifest tree of its own (``<out>/quick``) and
leaves out the install sizes (fresh venvs from PyPI): its figures are not comparable with the
targets, only its exit status counts.

Exit status: 1 when a benchmark could not run (a command failed, a module is missing), or with
``--strict`` when any figure misses its target; else 0.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gen_tree

REPO = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """A benchmark could not produce its figure."""


@dataclass(frozen=True)
class Context:
    repo: Path
    tree: Path
    mesh_hosts: Path
    runs: int
    manifests: int
    cli: tuple[str, ...]  # how to run infra-apply
    remeasure_install: bool = False
    quick: bool = False

    def command(self, *args: str) -> list[str]:
        return [*self.cli, *args]


@dataclass(frozen=True)
class Row:
    figure: str
    median: float | None  # in ``unit``: seconds unless stated
    target: str = "-"
    ratio: float | None = None
    ok: bool | None = None  # None: informational, no target
    note: str = ""
    unit: str = "s"

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: ""}[self.ok]


@dataclass(frozen=True)
class Bench:
    name: str
    description: str
    run: Callable[[Context], list[Row]]
    # False: the benchmark builds its own inputs, so running it alone (``--only``) does not
    # generate the 200,000-file synthetic tree
    tree: bool = True


# --- timing helpers --------------------------------------------------------------------------


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median_time(action: Callable[[], object], runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        action()
    return statistics.median(timed(action) for _ in range(runs))


def command_runner(
    command: Sequence[str], *, ok_codes: Sequence[int] = (0,), cwd: Path = REPO
) -> Callable[[], None]:
    """A callable running ``command`` (output discarded) that raises on an unexpected exit."""

    def run() -> None:
        done = subprocess.run(command, cwd=cwd, capture_output=True, check=False)
        if done.returncode not in ok_codes:
            output = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
            lines = output.splitlines()
            shown = "\n".join(lines[:15] + (["..."] if len(lines) > 15 else []))
            raise BenchError(f"`{' '.join(command)}` exited {done.returncode}:\n{shown}")

    return run


def against_target(figure: str, median: float, target: float, note: str = "") -> Row:
    ratio = median / target
    return Row(figure, median, f"< {target:.2f}s", ratio, ratio < 1.0, note)


# --- benchmarks ------------------------------------------------------------------------------


def count_manifests(result: object) -> int:
    """How many manifests a discovery result lists (``.manifests``, else the result itself)."""
    manifests: Any = getattr(result, "manifests", result)
    return len(list(manifests))


def bench_discover(ctx: Context) -> list[Row]:
    """In-process discovery versus ``find -name '.infra*.yaml'`` over the same tree."""
    try:
        discover = importlib.import_module("infra_apply.manifests.discover").discover
    except (ImportError, AttributeError) as exc:
        raise BenchError(f"infra_apply.manifests.discover.discover unavailable: {exc}") from None
    found = count_manifests(discover(ctx.tree))
    note = f"{found} manifests" + ("" if found == ctx.manifests else f", expected {ctx.manifests}")
    ours = median_time(lambda: discover(ctx.tree), ctx.runs)
    find = command_runner(["find", str(ctx.tree), "-name", ".infra*.yaml"])
    theirs = median_time(find, ctx.runs)
    ratio = ours / theirs
    return [
        Row("find -name '.infra*.yaml'", theirs, note="baseline"),
        Row("discover()", ours, "< 1.0x find", ratio, ratio < 1.0 and found == ctx.manifests, note),
    ]


def bench_validate(ctx: Context) -> list[Row]:
    """The whole ``validate`` command on the tree, as a user runs it: without the per-file cache
    (every manifest parsed and schema-checked) and with it (unchanged files reused)."""
    # --mesh-hosts is a per-command option (docs/commands.md, Options)
    command = ctx.command("--root", str(ctx.tree), "validate", "--mesh-hosts", str(ctx.mesh_hosts))
    os.environ["INFRA_APPLY_NO_CACHE"] = "1"
    try:
        cold = median_time(command_runner(command), ctx.runs)
    finally:
        del os.environ["INFRA_APPLY_NO_CACHE"]
    warm = median_time(command_runner(command), ctx.runs)
    return [
        against_target("infra-apply validate (no cache)", cold, 1.5, f"{ctx.manifests} manifests"),
        against_target("infra-apply validate (cached)", warm, 1.5, "unchanged files reused"),
    ]


def bench_help(ctx: Context) -> list[Row]:
    """Start-up cost: ``infra-apply --help``."""
    median = median_time(command_runner(ctx.command("--help")), ctx.runs)
    return [against_target("infra-apply --help", median, 0.3)]


def bench_render(ctx: Context) -> list[Row]:
    """validate + render of the whole tree into a fresh folder, then --check on the unchanged one."""
    out = ctx.repo / "bench" / "out" / "generated"
    base = ctx.command(
        "--root", str(ctx.tree), "render", "--mesh-hosts", str(ctx.mesh_hosts), "--out", str(out)
    )
    write = command_runner(base)

    def fresh() -> None:
        shutil.rmtree(out, ignore_errors=True)
        write()

    shutil.rmtree(out, ignore_errors=True)
    median = median_time(fresh, ctx.runs)
    check = median_time(command_runner([*base, "--check"]), ctx.runs)
    return [
        against_target("validate + render (fresh out dir)", median, 2.0, f"{ctx.manifests} manifests"),
        against_target("render --check (unchanged)", check, 2.0),
    ]


# --- render of 3 x 100 droplets against cdktf synth -------------------------------------------

RENDER_PRODUCERS = ("ct", "mc", "quinn")
RENDER_DROPLETS = 100  # per producer
RENDER_TARGET = 25.0  # times faster than cdktf synth
CDKTF_APP = REPO / "bench" / "cdktf"  # the cdktf app (main.ts), its pinned packages and config
CDKTF_FILES = ("package.json", "package-lock.json", "cdktf.json", "tsconfig.json", "main.ts")


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float  # user + system of the child processes


def timed_child(action: Callable[[], object]) -> Timing:
    """Wall and CPU time of ``action``, which runs child processes (their CPU counted once they
    have been waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    action()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(wall, cpu)


def median_timing(samples: Sequence[Timing]) -> Timing:
    return Timing(statistics.median(t.wall for t in samples), statistics.median(t.cpu for t in samples))


def render_tree(root: Path) -> None:
    """3 producer-root manifests of 100 droplets each, with the example tree's SSH keys,
    monitoring and user data set for every droplet (so every template part is rendered)."""
    if root.exists():
        shutil.rmtree(root)
    (root / "cloud-init").mkdir(parents=True)
    (root / "cloud-init" / "base.yaml").write_text("#cloud-config\npackage_update: true\n")
    (root / "infra-apply.toml").write_text(
        '[droplets]\nssh_keys = ["ops-2026"]\nmonitoring = true\nuser_data = "cloud-init/base.yaml"\n'
        '[firewall]\nssh_from = ["203.0.113.4/32"]\n'
    )
    for producer in RENDER_PRODUCERS:
        lines = ["apiVersion: infra/v1", f"project: {producer}-infra", "provider: digitalocean", "droplets:"]
        for i in range(RENDER_DROPLETS):
            lines += [
                f"  - name: com.uvlava.{producer}.node{i:03d}",
                f"    role: node{i:03d}",
                "    services:",
                f"      - {{name: {producer}-mcp-{i:03d}, kind: mcp, port: 8700}}",
            ]
        (root / f"@{producer}").mkdir()
        (root / f"@{producer}" / ".infra.yaml").write_text("\n".join(lines) + "\n")


def cdktf_spec(tree: Path) -> dict[str, Any]:
    """What main.js builds, from the same model and addresses infra-apply renders."""
    from infra_apply.manifests.build import build_model
    from infra_apply.manifests.validate import require_valid
    from infra_apply.plan.managed import MANAGED_TAG, producer_tag
    from infra_apply.render.module import public_inbound, render_model
    from infra_apply.render.output import USER_DATA_DIR

    model = build_model(require_valid(tree, None, None, lambda _: None))
    with_addresses = {r.producer: r.droplet_addresses for r in render_model(model, tree / "none")}
    producers = []
    for p in model.producers:
        droplets = [
            {
                "address": with_addresses[p.name][d.name].split(".", 1)[1],
                "name": d.name,
                "region": d.region,
                "size": d.size,
                "image": d.image,
                "tags": sorted({MANAGED_TAG, producer_tag(p.name), f"role:{d.role}"}),
                "ssh_keys": list(d.ssh_keys),
                "monitoring": d.monitoring,
                "user_data": "${path.module}/" + USER_DATA_DIR + "/base.yaml",
                "inbound": [list(rule) for rule in public_inbound(d)],
                "hosts": list(d.hosts),
            }
            for d in p.droplets
        ]
        keys = sorted({k for d in p.droplets for k in d.ssh_keys})
        producers.append({"name": p.name, "ssh_keys": keys, "droplets": droplets})
    return {"producers": producers}


def cdktf_app(work: Path, tree: Path) -> Path:
    """bench/cdktf copied to ``work`` with its pinned node_modules (``npm ci``, once per lock) and
    main.ts compiled to main.js."""
    work.mkdir(parents=True, exist_ok=True)
    lock = (CDKTF_APP / "package-lock.json").read_bytes()
    stamp = work / "node_modules" / ".bench-lock.sha256"
    for name in CDKTF_FILES:
        shutil.copyfile(CDKTF_APP / name, work / name)
    if not stamp.is_file() or stamp.read_text() != hashlib.sha256(lock).hexdigest():
        if shutil.which("npm") is None:
            raise BenchError("cdktf synth needs node and npm (npm ci in bench/out/cdktf)")
        print("installing cdktf into bench/out/cdktf (npm ci, once) ...", file=sys.stderr, flush=True)
        command_runner(["npm", "ci", "--no-audit", "--no-fund"], cwd=work)()
        stamp.write_text(hashlib.sha256(lock).hexdigest())
    # The same app compiled ahead of time (main.js): cdktf synth without compiling TypeScript.
    command_runner([str(work / "node_modules" / ".bin" / "tsc"), "-p", "tsconfig.json"], cwd=work)()
    (work / "spec.json").write_text(json.dumps(cdktf_spec(tree)) + "\n")
    return work


def _speedup(
    figure: str, ours: Timing, cdktf: Timing, plain: Timing, note: str, *, judged: bool = True
) -> Row:
    """Against ``cdktf synth`` of the TypeScript project (the target's baseline); the ratios to
    the JavaScript app, cdktf at its fastest, go in the note. ``judged``: held to the target
    (cold and warm are; a run with every cache off, compiled templates included, is shown)."""
    wall, cpu = cdktf.wall / ours.wall, cdktf.cpu / ours.cpu
    return Row(
        figure,
        ours.wall,
        f">= {RENDER_TARGET:g}x faster" if judged else "-",
        wall,
        (wall >= RENDER_TARGET and cpu >= RENDER_TARGET) if judged else None,
        f"{note}; CPU {ours.cpu:.3f}s, {cpu:.1f}x; vs JS app {plain.wall / ours.wall:.1f}x,"
        f" CPU {plain.cpu / ours.cpu:.1f}x",
    )


def bench_render300(ctx: Context) -> list[Row]:
    """``infra-apply render`` of 3 producers x 100 droplets, cold and warm, against ``cdktf synth``
    of the same resources (the TypeScript project ``cdktf init`` makes, and the same app in plain
    JavaScript). Wall and CPU (user + system) are medians, the series interleaved so the
    machine's load hits them alike; the ratio column is cdktf's time over ours."""
    base = ctx.repo / "bench" / "out" / "render300"
    tree, out, state = base / "tree", base / "generated", base / "state"
    render_tree(tree)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFRA_APPLY_", "DIGITALOCEAN_"))}
    env["INFRA_APPLY_STATE_DIR"] = str(state)
    # As installed (pip compiles every module): without .pyc files each run would compile
    # infra-apply's sources again, which no user's run does.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    command = ctx.command("--root", str(tree), "render", "--out", str(out))
    try:
        if ctx.quick:  # installing cdktf (npm ci, about 450 MB) alone takes minutes
            raise BenchError("--quick: no cdktf baseline")
        app: Path | None = cdktf_app(ctx.repo / "bench" / "out" / "cdktf", tree)
        missing = ""
    except BenchError as exc:  # no node/npm or no registry: our figures still count
        app, missing = None, str(exc).splitlines()[0]
        print(f"render300: no cdktf baseline: {missing}", file=sys.stderr)
    synth_env = {**env, "CHECKPOINT_DISABLE": "1", "CI": "1"}

    def render(extra_env: Mapping[str, str] | None = None) -> None:
        done = subprocess.run(command, env={**env, **(extra_env or {})}, capture_output=True, check=False)
        if done.returncode != 0:
            error = done.stderr.decode()[-2000:]
            raise BenchError(f"`{' '.join(command)}` exited {done.returncode}: {error}")

    def cold() -> None:
        # Nothing from a previous render: no render cache (the validation cache stays: it is
        # validate's), no generated/ (so every file is written).
        for cache in (state / "cache").glob("render-*"):
            cache.unlink()
        shutil.rmtree(out, ignore_errors=True)
        render()

    def nothing_cached() -> None:
        shutil.rmtree(out, ignore_errors=True)
        render({"INFRA_APPLY_NO_CACHE": "1"})

    def synth(*options: str) -> None:
        if app is None:
            return
        shutil.rmtree(app / "cdktf.out", ignore_errors=True)
        done = subprocess.run(
            [str(app / "node_modules" / ".bin" / "cdktf"), "synth", *options],
            cwd=app,
            env=synth_env,
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise BenchError(f"cdktf synth exited {done.returncode}: {done.stdout.decode()[-2000:]}")

    def synth_js() -> None:
        synth("--app", "node main.js")

    # Warm-up: the page cache, .pyc files, the validation cache.
    cold()
    render()
    synth()
    synth_js()
    series: dict[str, list[Timing]] = {"cold": [], "none": [], "warm": [], "cdktf": [], "js": []}
    for _ in range(ctx.runs):
        # Each timed run right after an untimed one of the same command (as hyperfine warms up):
        # a run measured just after another contender (cdktf's node, GBs of heap over both
        # cores) starts on caches that contender left, and is slower for it alone.
        for name, contender in (("cold", cold), ("none", nothing_cached), ("cdktf", synth), ("js", synth_js)):
            contender()
            series[name].append(timed_child(contender))
        render()  # the cache now matches the ledgers render just wrote
        series["warm"].append(timed_child(render))
    t = {name: median_timing(samples) for name, samples in series.items()}
    droplets = f"{len(RENDER_PRODUCERS)} x {RENDER_DROPLETS} droplets"
    if app is None:
        return [
            Row(f"infra-apply render, {name}", t[key].wall, note=f"CPU {t[key].cpu:.3f}s; {missing}")
            for name, key in (("cold", "cold"), ("warm", "warm"), ("nothing cached", "none"))
        ]
    cdktf, js = t["cdktf"], t["js"]
    return [
        Row(f"cdktf synth, {droplets}, TypeScript", cdktf.wall, note=f"baseline; CPU {cdktf.cpu:.3f}s"),
        Row(f"cdktf synth, {droplets}, JavaScript", js.wall, note=f"stricter baseline; CPU {js.cpu:.3f}s"),
        _speedup("infra-apply render, cold", t["cold"], cdktf, js, "no render cache, empty out dir"),
        _speedup("infra-apply render, warm", t["warm"], cdktf, js, "inputs unchanged, cache hit"),
        _speedup(
            "infra-apply render, nothing cached",
            t["none"],
            cdktf,
            js,
            "INFRA_APPLY_NO_CACHE=1, empty out dir",
            judged=False,
        ),
    ]


def _sandbox_env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFRA_APPLY_", "DIGITALOCEAN_"))}
    env["INFRA_APPLY_STATE_DIR"] = str(state)
    return env


def _run_ok(command: Sequence[str], env: dict[str, str], cwd: Path | None = None) -> None:
    done = subprocess.run(list(command), env=env, cwd=cwd, capture_output=True, check=False)
    if done.returncode not in (0, 2):
        raise BenchError(f"`{' '.join(command)}` exited {done.returncode}: {done.stderr.decode()[-2000:]}")


def _plan_overhead(ctx: Context, tree: Path, label: str, extra: Sequence[str] = ()) -> list[Row]:
    """infra-apply's plan of quinn against a bare `terraform plan` in the same working copy."""
    from infra_apply.runtime.identity import identify
    from infra_apply.sandbox.install import install

    state = ctx.repo / "bench" / "out" / "state"
    env = _sandbox_env(state)
    ours = [*ctx.command("--root", str(tree), "plan", "--sandbox", "--producer", "quinn", *extra)]
    _run_ok(ours, env)  # prepares the working copy: rendered files, init, sandbox mirror
    work = state / "work" / "sandbox" / identify(tree, env).key / "quinn"
    tf_env = {**env, **install(state).env, "TF_IN_AUTOMATION": "1"}
    tf_env.pop("TF_PLUGIN_CACHE_DIR", None)
    bare = [
        "terraform",
        "plan",
        "-input=false",
        "-no-color",
        "-lock-timeout=0s",
        "-detailed-exitcode",
        "-out=bare.tfplan",
    ]
    # Interleaved, so a change in the machine's load hits both series alike.
    ours_times: list[float] = []
    bare_times: list[float] = []
    for _ in range(ctx.runs):
        ours_times.append(median_time(lambda: _run_ok(ours, env), 1))
        bare_times.append(median_time(lambda: _run_ok(bare, tf_env, work), 1))
    t_ours, t_bare = statistics.median(ours_times), statistics.median(bare_times)
    ratio = t_ours / t_bare
    overhead = t_ours - t_bare
    return [
        Row(f"bare terraform plan, quinn ({label})", t_bare, note="baseline"),
        Row(
            f"infra-apply plan --producer quinn --sandbox ({label})",
            t_ours,
            "<= 1.25x bare",
            ratio,
            ratio <= 1.25,
            "validate + render + plan + show -json + summary",
        ),
        Row(
            f"plan overhead over the bare plan ({label})",
            overhead,
            "<= 0.15 s",
            None,
            overhead <= 0.15,
            "infra-apply plan minus bare terraform plan, same working copy",
        ),
    ]


def bench_plan(ctx: Context) -> list[Row]:
    """Sandbox plan overhead on the example tree and on the synthetic tree; then all producers
    of the example tree at once against one after another."""
    example = ctx.repo / "examples" / "producer-tree"
    rows = _plan_overhead(ctx, example, "example tree")
    rows += _plan_overhead(ctx, ctx.tree, "synthetic tree", ("--mesh-hosts", str(ctx.mesh_hosts)))
    env = _sandbox_env(ctx.repo / "bench" / "out" / "state")
    plan = [*ctx.command("--root", str(example), "plan", "--sandbox")]
    t_par = median_time(lambda: _run_ok(plan, env), ctx.runs)

    def one_by_one() -> None:
        for producer in ("ct", "mc", "quinn"):
            _run_ok([*plan, "--producer", producer], env)

    t_seq = median_time(one_by_one, ctx.runs)
    return [
        *rows,
        Row("plan ct, mc, quinn one after another", t_seq, note="baseline"),
        Row(
            "plan all producers at once",
            t_par,
            "<= 0.70x sequential",
            t_par / t_seq,
            t_par / t_seq <= 0.7,
            f"{os.cpu_count()} CPUs",
        ),
    ]


# --- plan overhead on the live path ----------------------------------------------------------

API_LATENCY = 0.060  # seconds per DigitalOcean API answer
# Terraform's own work, stubbed: the bare `terraform plan` with the real provider took
# 0.67 s; the stub's plan and show sleep about that long. The overhead figure does not depend on
# these: it is infra-apply's wall time minus the stub's own, measured apart.
STUB_PLAN_SECONDS = 0.60
STUB_SHOW_SECONDS = 0.07
LIVE_OVERHEAD_TARGET = 0.300


def _stub_terraform(folder: Path, show_json: Path) -> Path:
    """A `terraform` that does what infra-apply's live plan asks in fixed time: the real
    DigitalOcean provider cannot be installed here (no registry), the API it would call is the
    stand-in's anyway, and Terraform's own time is not infra-apply's overhead."""
    folder.mkdir(parents=True, exist_ok=True)
    stub = folder / "terraform"
    stub.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        'version) echo \'{"terraform_version": "1.9.8", "platform": "linux_amd64"}\' ;;\n'
        "init) mkdir -p .terraform ;;\n"
        f"plan) sleep {STUB_PLAN_SECONDS}\n"
        '  for a; do case $a in -out=*) : > "${a#-out=}";; esac; done ;;\n'
        f"show) sleep {STUB_SHOW_SECONDS}; cat '{show_json}' ;;\n"
        "esac\n"
    )
    stub.chmod(0o755)
    return stub


def _sandbox_show_json(ctx: Context, tree: Path, producer: str, dest: Path) -> None:
    """The saved plan of ``producer`` as the sandbox plans it (a real ``terraform show -json``):
    what the stub shows, so the summary, cost and exists review work on a real plan."""
    from infra_apply.runtime.identity import identify
    from infra_apply.sandbox.install import install

    state = ctx.repo / "bench" / "out" / "state"
    env = _sandbox_env(state)
    _run_ok([*ctx.command("--root", str(tree), "plan", "--sandbox", "--producer", producer)], env)
    work = state / "work" / "sandbox" / identify(tree, env).key / producer
    tf_env = {**env, **install(state).env, "TF_IN_AUTOMATION": "1"}
    done = subprocess.run(
        ["terraform", "show", "-json", "infra-apply.tfplan"], cwd=work, env=tf_env, capture_output=True
    )
    if done.returncode != 0:
        raise BenchError(f"terraform show -json in {work} exited {done.returncode}")
    dest.write_bytes(done.stdout)


def bench_plan_live(ctx: Context) -> list[Row]:
    """infra-apply plan on the live path (pre-flight, prices, the exists lookups against a local
    stand-in of the DigitalOcean API answering in 60 ms) with Terraform stubbed by fixed sleeps:
    the overhead is the plan's wall time minus the stub's plan and show, each run directly."""
    sys.path.insert(0, str(ctx.repo))
    from pytest_httpserver import HTTPServer

    from tests.do_standin import Account

    tree = ctx.repo / "examples" / "producer-tree"
    work = ctx.repo / "bench" / "out" / "live"
    work.mkdir(parents=True, exist_ok=True)
    show = work / "quinn-plan.json"
    _sandbox_show_json(ctx, tree, "quinn", show)
    stub = _stub_terraform(work / "bin", show)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = HTTPServer(threaded=True)
    server.start()
    try:
        standin = Account(token=None, latency=API_LATENCY)
        standin.serve(server)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("INFRA_APPLY_", "DIGITALOCEAN_", "GITHUB_")) and k != "CI"
        }
        env.update(
            INFRA_APPLY_STATE_DIR=str(work / "state"),
            INFRA_APPLY_TERRAFORM=str(stub),
            DIGITALOCEAN_TOKEN="FAKE-do-token_bench",
            DIGITALOCEAN_API_URL=server.url_for(""),
            HOME=str(work),  # no ~/.vault PAT files of the operator's
            # Compiled modules cached as an install has them (pip compiles at install), even
            # where the environment says not to write them; kept under bench/out/.
            PYTHONPYCACHEPREFIX=str(work / "pycache"),
        )
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        ours = [*ctx.command("--root", str(tree), "plan", "--producer", "quinn")]
        _run_ok(ours, env)  # the working copy, init, the version cache
        before = len(standin.requests)
        _run_ok(ours, env)
        per_run = standin.requests[before:]
        bare_plan = [str(stub), "plan", "-out=bare.tfplan"]
        bare_show = [str(stub), "show", "-json", "bare.tfplan"]
        ours_times: list[float] = []
        bare_times: list[float] = []
        cpu: list[float] = []
        for _ in range(ctx.runs):  # interleaved: a change in load hits both alike
            before_cpu = _children_cpu()
            ours_times.append(timed(lambda: _run_ok(ours, env)))
            cpu.append(_children_cpu() - before_cpu)
            bare_times.append(timed(lambda: _run_all((bare_plan, bare_show), env, work)))
    finally:
        server.stop()
    t_ours, t_bare = statistics.median(ours_times), statistics.median(bare_times)
    overhead = t_ours - t_bare
    calls = f"{len(per_run)} API calls a run, /v2/sizes x{per_run.count('/v2/sizes')}"
    load = os.getloadavg()[0]
    return [
        Row("stubbed terraform plan + show -json (live path)", t_bare, note="baseline: fixed sleeps"),
        Row(
            "infra-apply plan --producer quinn, live path, 60 ms API",
            t_ours,
            ratio=t_ours / t_bare,
            note=f"ratio to the stub's plan + show; {calls}",
        ),
        Row(
            "plan overhead beyond terraform plan + show (live, 60 ms API)",
            overhead * 1000,
            f"<= {LIVE_OVERHEAD_TARGET * 1000:.0f} ms",
            t_ours / t_bare,
            overhead <= LIVE_OVERHEAD_TARGET,
            f"start-up, validate, render, pre-flight, prices, exists lookups, summary; load {load:.1f}",
            unit="ms",
        ),
        Row(
            "CPU time of that plan (infra-apply and the stub)",
            statistics.median(cpu) * 1000,
            note="what a busy machine stretches; the API waits are the rest",
            unit="ms",
        ),
    ]


def _run_all(commands: Sequence[Sequence[str]], env: dict[str, str], cwd: Path) -> None:
    for command in commands:
        _run_ok(command, env, cwd)


def _children_cpu() -> float:
    import resource

    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


# --- install size and import time ------------------------------------------------------------

MB = 1_000_000
RUNTIME_TARGET_MB = 40.0
# What the sandbox needs and the runtime does not (tf brings grpcio and protobuf).
SANDBOX_PACKAGES = ("tf", "cryptography", "grpcio", "protobuf")
INSTALL_CACHE = REPO / "bench" / "out" / "install-size.json"


@dataclass(frozen=True)
class InstallSteps:
    """The pip installs measuring the runtime, then what the sandbox adds on top of it."""

    runtime: tuple[tuple[str, ...], ...]  # pip install arguments, one tuple per call
    sandbox: tuple[tuple[str, ...], ...]
    runtime_label: str
    sandbox_label: str
    extra: bool  # False until the package has a [sandbox] extra


def _requirement_name(requirement: str) -> str:
    name = requirement.split(";")[0]
    for stop in "[=<>!~ ":
        name = name.split(stop)[0]
    return name.strip().lower()


def install_steps(repo: Path) -> InstallSteps:
    """``pip install .`` then ``.[sandbox]``; before that extra exists, the runtime without the
    sandbox packages (then ``--no-deps .``), then ``pip install .`` adding them."""
    project = tomllib.loads((repo / "pyproject.toml").read_text("utf-8"))["project"]
    if "sandbox" in project.get("optional-dependencies", {}):
        return InstallSteps(
            ((str(repo),),),
            ((f"{repo}[sandbox]",),),
            "runtime install (pip install .)",
            "sandbox extra (pip install .[sandbox])",
            extra=True,
        )
    core = tuple(d for d in project["dependencies"] if _requirement_name(d) not in SANDBOX_PACKAGES)
    return InstallSteps(
        (core, ("--no-deps", str(repo))),
        ((str(repo),),),
        "runtime install without the sandbox packages",
        f"sandbox packages ({', '.join(SANDBOX_PACKAGES)}; no [sandbox] extra yet)",
        extra=False,
    )


def disk_usage(folder: Path) -> int:
    """Bytes on disk under ``folder``, as du(1) counts them."""
    total = 0
    for root, dirs, files in os.walk(folder):
        total += sum((Path(root) / name).lstat().st_blocks * 512 for name in (*dirs, *files))
    return total


def _run_checked(command: Sequence[str]) -> None:
    done = subprocess.run(list(command), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if not line.startswith("WARNING: ")]
        raise BenchError(f"`{' '.join(command)}` exited {done.returncode}:\n" + "\n".join(lines[-15:]))


def _fresh_venv(path: Path) -> Path:
    _run_checked([sys.executable, "-m", "venv", str(path)])
    return path / "bin" / "python"


def _pip(python: Path, args: Sequence[str]) -> None:
    _run_checked([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args])


def _distributions(python: Path) -> int:
    code = "import importlib.metadata as m; print(len({d.name for d in m.distributions()}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout)


def measure_install(steps: InstallSteps, work: Path) -> dict[str, float]:
    """Sizes in MB of a venv's ``lib/`` after each step, minus an empty venv's (pip, setuptools)."""
    shutil.rmtree(work, ignore_errors=True)
    try:
        empty = disk_usage(_fresh_venv(work / "empty").parent.parent / "lib")
        python = _fresh_venv(work / "venv")
        lib = python.parent.parent / "lib"
        base_dists = _distributions(python)
        for args in steps.runtime:
            _pip(python, args)
        runtime, runtime_dists = disk_usage(lib), _distributions(python)
        for args in steps.sandbox:
            _pip(python, args)
        full, full_dists = disk_usage(lib), _distributions(python)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "runtime_mb": (runtime - empty) / MB,
        "runtime_dists": runtime_dists - base_dists,
        "sandbox_mb": (full - runtime) / MB,
        "sandbox_dists": full_dists - runtime_dists,
        "total_mb": (full - empty) / MB,
    }


def _install_key(repo: Path, steps: InstallSteps) -> str:
    project = tomllib.loads((repo / "pyproject.toml").read_text("utf-8"))["project"]
    what = [sys.version, steps.runtime_label, project["dependencies"], project.get("optional-dependencies")]
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def bench_install(ctx: Context) -> list[Row]:
    """Install size of the runtime and of the sandbox: fresh venvs, measured once per set of
    dependencies and cached (installing takes about a minute)."""
    steps = install_steps(ctx.repo)
    key = _install_key(ctx.repo, steps)
    cached = json.loads(INSTALL_CACHE.read_text()) if INSTALL_CACHE.exists() else {}
    if ctx.remeasure_install or cached.get("key") != key:
        sizes = measure_install(steps, ctx.repo / "bench" / "out" / "install-venvs")
        cached = {"key": key, "measured": time.strftime("%Y-%m-%d"), "sizes": sizes}
        INSTALL_CACHE.parent.mkdir(parents=True, exist_ok=True)
        INSTALL_CACHE.write_text(json.dumps(cached, indent=2) + "\n")
    sizes, when = cached["sizes"], f"measured {cached['measured']}"
    runtime = sizes["runtime_mb"]
    rows = [
        Row(
            steps.runtime_label,
            runtime,
            f"<= {RUNTIME_TARGET_MB:g} MB",
            runtime / RUNTIME_TARGET_MB,
            runtime <= RUNTIME_TARGET_MB,
            f"{sizes['runtime_dists']:g} distributions, {when}",
            "MB",
        ),
        Row(
            steps.sandbox_label,
            sizes["sandbox_mb"],
            note=f"+{sizes['sandbox_dists']:g} distributions",
            unit="MB",
        ),
    ]
    if not steps.extra:
        rows.append(Row("pip install . today (runtime + sandbox packages)", sizes["total_mb"], unit="MB"))
    return rows


def top_level_imports(importtime: str) -> dict[str, float]:
    """Module -> cumulative seconds of the top-level entries of ``python -X importtime`` output
    (each includes everything it imported)."""
    found: dict[str, float] = {}
    for line in importtime.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(fields) != 3 or not fields[1].strip().isdigit():
            continue
        name = fields[2][1:]
        if not name.startswith(" "):  # nested imports are indented under their importer
            found[name] = int(fields[1]) / 1e6
    return found


def _importtime(args: Sequence[str], env: dict[str, str] | None = None) -> dict[str, float]:
    command = [sys.executable, "-X", "importtime", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode not in (0, 2):
        raise BenchError(f"`{' '.join(command)}` exited {done.returncode}: {done.stderr[-2000:]}")
    return top_level_imports(done.stderr)


def _median_import(
    args: Sequence[str],
    count: Callable[[dict[str, float]], float],
    runs: int,
    env: dict[str, str] | None = None,
) -> float:
    _importtime(args, env)  # warm-up: the page cache and .pyc files
    return statistics.median(count(_importtime(args, env)) for _ in range(runs))


def _ours(modules: dict[str, float]) -> float:
    return sum(t for name, t in modules.items() if name.split(".")[0] == "infra_apply")


def bench_imports(ctx: Context) -> list[Row]:
    """Import time (``python -X importtime``, top-level cumulative) of the CLI, of the API client,
    and of every module a sandbox plan of the example tree imports beyond interpreter start-up."""
    startup = set(_importtime(["-c", "pass"])) | {"runpy"}  # runpy: only for ``-m``

    def beyond_startup(modules: dict[str, float]) -> float:
        return sum(t for name, t in modules.items() if name not in startup)

    example = ctx.repo / "examples" / "producer-tree"
    plan = [
        "-m",
        "infra_apply",
        "--root",
        str(example),
        "plan",
        "--sandbox",
        "--producer",
        "quinn",
        "--mesh-hosts",
        str(ctx.repo / "examples" / "mesh-hosts.json"),
    ]
    env = _sandbox_env(ctx.repo / "bench" / "out" / "state")
    return [
        Row(
            "import infra_apply.cli",
            _median_import(["-c", "import infra_apply.cli"], _ours, ctx.runs),
            note="with click; the CLI imports the rest lazily",
        ),
        Row(
            "import infra_apply.cloud.do_api",
            _median_import(["-c", "import infra_apply.cloud.do_api"], _ours, ctx.runs),
            note="stdlib only: urllib.request + json",
        ),
        Row(
            "imports of plan --producer quinn --sandbox",
            _median_import(plan, beyond_startup, ctx.runs, env),
            note="example tree; every module beyond interpreter start-up",
        ),
    ]


BENCHES: list[Bench] = [
    Bench("discover", "discovery alone vs find(1)", bench_discover),
    Bench("validate", "infra-apply validate on the whole tree", bench_validate),
    Bench("help", "infra-apply --help start-up", bench_help),
    Bench("render", "validate + render of the whole tree, and render --check", bench_render),
    Bench(
        "render300",
        "render of 3 x 100 droplets, cold and warm, against cdktf synth",
        bench_render300,
        tree=False,
    ),
    Bench("plan", "sandbox plan overhead and parallel plans (example tree)", bench_plan),
    Bench(
        "plan-live",
        "live plan overhead, 60 ms API (stand-in API, stubbed terraform)",
        bench_plan_live,
        tree=False,
    ),
    Bench("install", "install size of the runtime and of the sandbox (cached venvs)", bench_install),
    Bench("imports", "import time of the CLI, the API client and a sandbox plan", bench_imports),
]


# --- driver ----------------------------------------------------------------------------------


def cli_command() -> tuple[str, ...]:
    """The console script beside this interpreter, else on PATH, else ``python -m``."""
    script = Path(sys.executable).parent / "infra-apply"
    if script.exists():
        return (str(script),)
    found = shutil.which("infra-apply")
    return (found,) if found else (sys.executable, "-m", "infra_apply")


def _figure(row: Row) -> str:
    if row.median is None:
        return "-"
    return f"{row.median:.3f}s" if row.unit == "s" else f"{row.median:.1f} {row.unit}"


def format_table(rows: Sequence[Row]) -> str:
    header = ("figure", "median", "target", "ratio", "result", "note")
    body = [
        (
            r.figure,
            _figure(r),
            r.target,
            "-" if r.ratio is None else f"{r.ratio:.2f}",
            r.verdict,
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
        for line in (header, tuple("-" * w for w in widths), *body)
    ]
    return "\n".join(line.rstrip() for line in lines)


def run_bench(bench: Bench, ctx: Context) -> list[Row]:
    print(f"running {bench.name}: {bench.description} ...", file=sys.stderr, flush=True)
    try:
        return bench.run(ctx)
    except BenchError as exc:
        print(f"{bench.name}: {exc}", file=sys.stderr)
        return [Row(bench.name, None, ok=False, note="ERROR (see above)")]


# --quick: small enough to run in CI in well under a minute, large enough to cover every path
# (every producer, databases, dev variants, node_modules pruning).
QUICK_PARAMS = gen_tree.Params(manifests=200, other_files=4_000, node_modules_files=2_000)
QUICK_SKIPS = ("install",)  # fresh venvs from PyPI: a minute on their own


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = [b.name for b in BENCHES]
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument(
        "--only",
        action="append",
        choices=names,
        metavar="NAME",
        help=f"run only these benchmarks ({', '.join(names)}); repeatable",
    )
    parser.add_argument("--list", action="store_true", help="list benchmarks and exit")
    parser.add_argument("--regen", action="store_true", help="regenerate the tree")
    parser.add_argument("--out", type=Path, default=gen_tree.DEFAULT_OUT)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one run of each benchmark on a small tree, without install sizes (CI)",
    )
    parser.add_argument(
        "--remeasure-install",
        action="store_true",
        help="measure install sizes again instead of using bench/out/install-size.json",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    # Caches, working copies and the sandbox of benchmark runs stay under bench/out/.
    os.environ["INFRA_APPLY_STATE_DIR"] = str(REPO / "bench" / "out" / "state")
    for key in [k for k in os.environ if k.startswith("DIGITALOCEAN_")]:
        del os.environ[key]
    args = parse_args(argv)
    if args.list:
        for bench in BENCHES:
            print(f"{bench.name:12} {bench.description}")
        return 0
    params = QUICK_PARAMS if args.quick else gen_tree.Params()
    out = args.out / "quick" if args.quick else args.out
    selected = [
        b
        for b in BENCHES
        if (not args.only or b.name in args.only) and not (args.quick and b.name in QUICK_SKIPS)
    ]
    if args.regen or any(b.tree for b in selected):
        layout = gen_tree.ensure_tree(out, params, force=args.regen)
    else:
        layout = gen_tree.Layout(out)  # not generated: no selected benchmark reads it
    ctx = Context(
        REPO,
        layout.tree,
        layout.mesh_hosts,
        1 if args.quick else max(args.runs, 1),
        params.manifests,
        cli_command(),
        args.remeasure_install,
        args.quick,
    )
    rows = [row for bench in selected for row in run_bench(bench, ctx)]
    print(format_table(rows))
    errored = any(r.median is None for r in rows)
    missed = any(r.ok is False for r in rows)
    return 1 if errored or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
