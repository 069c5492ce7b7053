"""The diagrams the Mermaid unit tests draw: test_report_mermaid asserts their content and
test_mermaid_check parses every one of them with Mermaid itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, NamedTuple

from infra_apply.manifests.model import Database, Droplet, ProducerModel, Service
from infra_apply.plan.parse import Action, Change
from infra_apply.plan.semantics import PublicPort
from infra_apply.report.mermaid import mermaid_diagram


class Case(NamedTuple):
    model: ProducerModel
    changes: tuple[Change, ...] = ()
    gpus_up: tuple[str, ...] = ()  # the GPU droplets a lease holds up


def drop(name: str, hosts: tuple[str, ...], *services: Service, **extra: Any) -> Droplet:
    return Droplet(
        name=name, producer="mc", source="@mc/.infra.yaml", hosts=hosts, services=services, **extra
    )


def db(
    name: str, user: str, project: str, host: str | None, cluster: str = "uvlava-pg", env: str = "prod"
) -> Database:
    return Database(cluster, name, user, project, env, "mc", f"@mc/{project}/.infra.yaml", host)


def change(rtype: str, name: str, action: Action, **extra: Any) -> Change:
    return Change(f"{rtype}.{name.replace('.', '_')}", rtype, name, action, **extra)


SERVICES = drop(
    "com.uvlava.mc.services",
    ("mint", "mc-web"),
    Service("storefront", "web", "mc", 8000, depends_on=("catalog", "auth-svc")),
    Service("catalog", "api", "mc", 8001),
    Service("mc-edge", "reverse-proxy", "mc", 443),
    region="fra1",
)
DNS = drop("com.uvlava.dns", ("dns",), Service("dns-authority", "dns", port=53), size="s-1vcpu-1gb")
GPU = drop(
    "com.uvlava.mc.gpu",
    ("mc-gpu",),
    gpu=True,
    projects=("render-job",),
    size="gpu-h100x1-80gb",
    region="tor1",
)
DATABASES = (
    db("reports", "reports_app", "reporter", "mint", cluster="analytics-pg"),
    db("catalog", "catalog_app", "catalog", "mint"),
    db("storefront", "storefront_app", "storefront", "mint"),
    db("storefront_dev", "storefront_dev", "storefront", "fennel", env="dev"),
)
TOPOLOGY = ProducerModel("mc", droplets=(DNS, GPU, SERVICES), databases=DATABASES)
GPU_UP = (GPU.name,)

# The reviewer's case: mc-edge removed from the manifests, so the plan's only change is the
# services droplet's firewall closing 80 and 443 to the internet.
NO_EDGE = ProducerModel(
    "mc",
    droplets=(DNS, GPU, replace(SERVICES, services=SERVICES.services[:2])),
    databases=DATABASES,
)
EDGE_CLOSED = (
    change(
        "digitalocean_firewall",
        "com.uvlava.mc.services",
        "update",
        ports_closed=(PublicPort("tcp", "80"), PublicPort("tcp", "443")),
    ),
)

# quinn's mcp droplet lists only mcp-hub; the auth-svc project runs there (service.host: mcp).
AUTH = Service("auth-svc", "python3.12", "quinn", 8090, depends_on=("mcp-hub",))
MCP = drop("com.uvlava.quinn.mcp", ("mcp",), Service("mcp-hub", "mcp", port=8800), hosted=(AUTH,))
ARTIFACTS = drop(
    "com.uvlava.quinn.artifacts",
    ("forge", "registry"),
    Service("quinn-forge", "forgejo", "quinn", 3003, depends_on=("auth-svc",)),
)
HOSTED = ProducerModel(
    "quinn",
    droplets=(ARTIFACTS, MCP),
    databases=(db("auth", "auth_app", "auth-svc", "mcp"),),
)

MARKED = (
    change("digitalocean_droplet", "com.uvlava.mc.services", "replace"),
    change("digitalocean_droplet", "com.uvlava.mc.gpu", "create"),
    change("digitalocean_droplet", "com.uvlava.mc.old", "delete"),
    change("digitalocean_droplet", "com.uvlava.dns", "import"),
    change("digitalocean_firewall", "com.uvlava.dns", "update", ports_opened=(PublicPort("udp", "53"),)),
    change("digitalocean_database_db", "catalog", "create"),
    change("digitalocean_database_user", "storefront_app", "update"),
)

# Each breaks Mermaid (or the markdown around it) if it ever reaches a diagram unescaped.
HOSTILE = (
    'evil"quote',
    "%%{init: {'theme':'dark'}}%%",
    "tick`` ```break",
    "close]bracket[open",
    "end",
    "subgraph",
    "new\nline\nclick drop0 call alert()",
    "a --> b; c -.-> d",
    "pipe|label|",
    "<br/><img src=x onerror=alert(1)>",
    "#amp;#quot;#59;",
    "ünïcødé 漢字 🚀 bidi\u202eevil",
)


def _hostile() -> Case:
    droplets = tuple(
        Droplet(
            name=name,
            producer="mc",
            source="x",
            size=name,
            hosts=(name, "end"),
            services=(Service(name, name, depends_on=(name, HOSTILE[(i + 1) % len(HOSTILE)])),),
        )
        for i, name in enumerate(HOSTILE)
    )
    dbs = tuple(db(name, name, name, name, cluster=name) for name in HOSTILE)
    changes = tuple(change("digitalocean_droplet", name + " gone", "delete") for name in HOSTILE)
    return Case(ProducerModel("mc", droplets=droplets, databases=dbs), changes)


def _over_the_cap() -> Case:
    droplets = tuple(
        drop(f"com.uvlava.mc.box{i:03}", (f"box{i:03}",), *(Service(f"svc{i}-{j}", "api") for j in range(5)))
        for i in range(60)
    )
    dbs = tuple(db(f"db{i}", f"user{i}", f"svc{i}-0", f"box{i:03}") for i in range(60))
    return Case(ProducerModel("mc", droplets=droplets, databases=dbs))


def _over_mermaids_edge_limit() -> Case:
    """600 depends_on edges: more than Mermaid's 500, under the node cap."""
    wants = tuple(f"far-{k}" for k in range(40))
    droplets = tuple(
        drop(
            f"com.uvlava.mc.web{i}",
            (f"web{i}",),
            *(Service(f"web{i}-{j}", "web", depends_on=wants) for j in range(5)),
        )
        for i in range(3)
    )
    return Case(ProducerModel("mc", droplets=droplets))


CASES: Mapping[str, Callable[[], Case]] = {
    "topology": lambda: Case(TOPOLOGY, gpus_up=GPU_UP),
    "marked": lambda: Case(TOPOLOGY, MARKED),
    "gpu_down": lambda: Case(TOPOLOGY),
    "firewall_only": lambda: Case(NO_EDGE, EDGE_CLOSED, GPU_UP),
    "hosted": lambda: Case(HOSTED),
    "hostile": _hostile,
    "empty": lambda: Case(ProducerModel("mc")),
    "only_destroyed": lambda: Case(
        ProducerModel("mc"), (change("digitalocean_droplet", "com.uvlava.mc.old", "delete"),)
    ),
    "over_the_cap": _over_the_cap,
    "over_mermaids_edge_limit": _over_mermaids_edge_limit,
}


def diagram(case: str) -> str:
    model, changes, gpus_up = CASES[case]()
    return mermaid_diagram(model, changes, gpus_up)
