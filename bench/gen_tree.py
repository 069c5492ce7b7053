"""Generate a synthetic ~/Code-like producer tree for the benchmarks.

Three producers (@ct, @mc, @quinn), ``manifests`` valid manifests in total (a producer-root
``.infra.yaml`` with droplets each, project ``.infra.yaml`` files, some ``.infra.dev.yaml``
variants), plus ``other_files`` unrelated files of which ``node_modules_files`` live under nested
``node_modules`` folders, the rest being project sources, docs and ``.git`` internals. A matching
``mesh-hosts.json`` is written beside the tree.

The tree is cached: ``ensure_tree`` regenerates only when the parameters (or GENERATOR_VERSION)
changed since the last complete generation, recorded in ``<out>/tree.params.json``.

    python bench/gen_tree.py [--out bench/out] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

GENERATOR_VERSION = 4
DEFAULT_OUT = Path(__file__).resolve().parent / "out"
ROLES = ("services", "apps", "workers", "data")
# The database cluster the project manifests name; the tree's infra-apply.toml seeds it into the
# sandbox account, whose default clusters do not include it (plan would otherwise fail on it).
CLUSTER = "main-pg"
RUNTIMES = ("node", "python", "go", "rust")
FILE_MODE = 0o644
OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


@dataclass(frozen=True)
class Params:
    producers: tuple[str, ...] = ("ct", "mc", "quinn")
    manifests: int = 2_000
    other_files: int = 200_000
    node_modules_files: int = 150_000
    dev_every: int = 9  # every Nth project also has a .infra.dev.yaml
    database_every: int = 4  # every Nth project has its own database on the cluster
    git_every: int = 3  # every Nth project has a .git folder
    version: int = GENERATOR_VERSION

    def fingerprint(self) -> dict[str, object]:
        stored: dict[str, object] = json.loads(json.dumps(asdict(self)))  # tuples -> lists
        return stored


@dataclass(frozen=True)
class Project:
    producer: str
    index: int
    folder: str  # root-relative, e.g. "@ct/services/ct-svc-0012"
    name: str
    host: str
    runtime: str

    @property
    def has_node_modules(self) -> bool:
        return self.runtime == "node"


@dataclass
class Tree:
    """Everything to write: manifest texts and the empty files, by root-relative path."""

    manifests: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    projects: list[Project] = field(default_factory=list)


# --- manifests -----------------------------------------------------------------------------


def droplet_hosts(producer: str) -> list[str]:
    return [f"{producer}-{role}" for role in ROLES]


def producer_manifest(producer: str) -> str:
    lines = ["apiVersion: infra/v1", f"project: {producer}-infra", "provider: digitalocean"]
    lines.append("droplets:")
    for role, host in zip(ROLES, droplet_hosts(producer), strict=True):
        lines += [
            f"  - name: com.uvlava.{producer}.{role}",
            f"    role: {role}",
            f"    hosts: [{host}]",
            "    services:",
            f"      - {{name: {producer}-{role}-forge, kind: forgejo, producer: {producer}, port: 3000}}",
            f"      - {{name: {producer}-{role}-mcp, kind: mcp, producer: {producer}, port: 8700}}",
        ]
    return "\n".join(lines) + "\n"


def project_manifest(project: Project, params: Params, previous: Project | None) -> str:
    lines = [
        "apiVersion: infra/v1",
        f"project: {project.name}",
        "provider: digitalocean",
        "service:",
        f"  host: {project.host}",
        f"  runtime: {project.runtime}",
        f"  port: {10_000 + project.index}",
        f"  systemd_unit: {project.name}.service",
        "  deploy: scripts/deploy.sh",
    ]
    if previous is not None and project.index % 5 == 0:
        lines += ["  depends_on:", f"    - {previous.name}"]
    if project.index % params.database_every == 1:
        db = project.name.replace("-", "_")
        lines += ["database:", f"  cluster: {CLUSTER}", f"  name: {db}", f"  user: {db}_app"]
    return "\n".join(lines) + "\n"


def dev_manifest(project: Project) -> str:
    return (
        "apiVersion: infra/v1\n"
        f"project: {project.name}\n"
        "environment: dev\n"
        "provider: mac\n"
        "service:\n"
        "  host: fennel\n"
        f"  runtime: {project.runtime}\n"
        f"  port: {20_000 + project.index}\n"
        "  deploy: scripts/dev.sh\n"
    )


def project_folder(producer: str, index: int) -> tuple[str, str]:
    kind = ("app", "svc", "pkg", "tool")[index % 4]
    group = {"app": "", "svc": "services/", "pkg": "@packages/", "tool": "tools/misc/"}[kind]
    name = f"{producer}-{kind}-{index:04d}"
    return f"@{producer}/{group}{name}", name


def settings() -> str:
    """The tree's infra-apply.toml: the sandbox account holds the cluster the manifests use."""
    return f'[sandbox]\nclusters = ["{CLUSTER}"]\n'


def plan_manifests(params: Params, tree: Tree) -> None:
    for producer in params.producers:
        tree.manifests[f"@{producer}/.infra.yaml"] = producer_manifest(producer)
    previous: Project | None = None
    for index in itertools.count():
        if len(tree.manifests) >= params.manifests:
            return
        producer = params.producers[index % len(params.producers)]
        folder, name = project_folder(producer, index)
        hosts = droplet_hosts(producer)
        project = Project(
            producer,
            index,
            folder,
            name,
            hosts[index % len(hosts)],
            RUNTIMES[(index // 4) % len(RUNTIMES)],
        )
        tree.projects.append(project)
        tree.manifests[f"{folder}/.infra.yaml"] = project_manifest(project, params, previous)
        if index % params.dev_every == 0 and len(tree.manifests) < params.manifests:
            tree.manifests[f"{folder}/.infra.dev.yaml"] = dev_manifest(project)
        previous = project


# --- other files ---------------------------------------------------------------------------


def node_module_files(project: Project) -> Iterator[str]:
    """Endless realistic node_modules content for one project."""
    base = f"{project.folder}/node_modules"
    for n in itertools.count():
        pkg = f"@scope-{n % 7}/pkg-{n}" if n % 6 == 0 else f"pkg-{n}"
        root = f"{base}/{pkg}"
        yield from (
            f"{root}/package.json",
            f"{root}/index.js",
            f"{root}/lib/{pkg.rsplit('/', 1)[-1]}.js",
            f"{root}/lib/util.js",
            f"{root}/README.md",
        )
        if n % 3 == 0:
            dep = f"{root}/node_modules/dep-{n}"
            yield from (f"{dep}/package.json", f"{dep}/index.js", f"{dep}/lib/index.js")


def source_files(project: Project, params: Params) -> Iterator[str]:
    """Endless ordinary project content: sources, docs, and .git internals for some."""
    base = project.folder
    yield from (f"{base}/README.md", f"{base}/scripts/deploy.sh")
    ext = {"node": "js", "python": "py", "go": "go", "rust": "rs"}[project.runtime]
    has_git = project.index % params.git_every == 0
    if has_git:
        yield from (f"{base}/.git/HEAD", f"{base}/.git/config", f"{base}/.git/index")
    for n in itertools.count():
        yield f"{base}/src/module_{n}.{ext}"
        yield f"{base}/src/pkg_{n // 8}/part_{n}.{ext}"
        if n % 2 == 0:
            yield f"{base}/docs/page_{n}.md"
        if has_git:
            digest = hashlib.sha1(f"{project.index}/{n}".encode()).hexdigest()
            yield f"{base}/.git/objects/{digest[:2]}/{digest[2:]}"


def round_robin(streams: Iterable[Iterator[str]], total: int) -> list[str]:
    """Take ``total`` items, one from each stream in turn (the streams are endless)."""
    active = list(streams)
    if not active:
        return []
    return list(itertools.islice(itertools.chain.from_iterable(zip(*active, strict=False)), total))


def plan_files(params: Params, tree: Tree) -> None:
    node_projects = [p for p in tree.projects if p.has_node_modules]
    tree.files += round_robin((node_module_files(p) for p in node_projects), params.node_modules_files)
    tree.files += round_robin(
        (source_files(p, params) for p in tree.projects),
        params.other_files - params.node_modules_files,
    )


def plan(params: Params) -> Tree:
    tree = Tree()
    plan_manifests(params, tree)
    plan_files(params, tree)
    return tree


# --- writing -------------------------------------------------------------------------------


def make_folders(root: Path, paths: Iterable[str]) -> None:
    folders = {os.path.dirname(p) for p in paths}
    for folder in sorted(folders):
        os.makedirs(root / folder, exist_ok=True)


def touch_all(root: Path, paths: Iterable[str]) -> None:
    base = os.fspath(root)
    for path in paths:
        os.close(os.open(f"{base}/{path}", OPEN_FLAGS, FILE_MODE))


def write_tree(root: Path, tree: Tree) -> None:
    make_folders(root, itertools.chain(tree.manifests, tree.files))
    touch_all(root, tree.files)
    for path, text in tree.manifests.items():
        (root / path).write_text(text, encoding="utf-8")
    (root / "infra-apply.toml").write_text(settings(), encoding="utf-8")


def mesh_hosts() -> dict[str, object]:
    hosts = {
        "wg": {"mesh_ip": "10.9.0.1", "public_ip": "198.51.100.7", "provider": "digitalocean"},
        "lime": {"mesh_ip": "10.9.0.2", "public_ip": "198.51.100.8", "provider": "digitalocean"},
        "fennel": {"mesh_ip": "10.9.0.3", "provider": "mac"},
        "redroid": {"mesh_ip": "10.9.0.4", "public_ip": "198.51.100.9", "provider": "digitalocean"},
    }
    return {"network": "10.9.0.0/24", "hosts": hosts, "services": {}}


# --- cache ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    out: Path

    @property
    def tree(self) -> Path:
        return self.out / "tree"

    @property
    def mesh_hosts(self) -> Path:
        return self.out / "mesh-hosts.json"

    @property
    def stamp(self) -> Path:
        return self.out / "tree.params.json"


def is_current(layout: Layout, params: Params) -> bool:
    if not (layout.tree.is_dir() and layout.mesh_hosts.is_file() and layout.stamp.is_file()):
        return False
    try:
        return bool(json.loads(layout.stamp.read_text()) == params.fingerprint())
    except (OSError, ValueError):
        return False


def generate(layout: Layout, params: Params) -> None:
    layout.stamp.unlink(missing_ok=True)  # an interrupted run must not look complete
    if layout.tree.exists():
        shutil.rmtree(layout.tree)
    layout.tree.mkdir(parents=True)
    write_tree(layout.tree, plan(params))
    layout.mesh_hosts.write_text(json.dumps(mesh_hosts(), indent=2) + "\n")
    layout.stamp.write_text(json.dumps(params.fingerprint(), indent=2) + "\n")


def ensure_tree(out: Path = DEFAULT_OUT, params: Params | None = None, *, force: bool = False) -> Layout:
    """Return the layout of an up-to-date tree under ``out``, generating it when needed."""
    params = params or Params()
    layout = Layout(out)
    if force or not is_current(layout, params):
        started = time.perf_counter()
        print(f"generating {layout.tree} ...", file=sys.stderr, flush=True)
        generate(layout, params)
        elapsed = time.perf_counter() - started
        print(f"generated in {elapsed:.1f}s", file=sys.stderr, flush=True)
    return layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--force", action="store_true", help="regenerate even if cached")
    args = parser.parse_args(argv)
    layout = ensure_tree(args.out, force=args.force)
    print(layout.tree)
    return 0


if __name__ == "__main__":
    sys.exit(main())
