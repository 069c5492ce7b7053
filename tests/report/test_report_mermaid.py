"""The Mermaid diagram: the producer's topology (droplets holding services, mesh hosts, public
ports, depends_on, the shared database cluster), what the plan changes, generated ids and
escaped labels. test_mermaid_check parses every diagram drawn here with Mermaid itself."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from infra_apply.manifests.build import build_model
from infra_apply.manifests.model import Droplet, Model, ProducerModel, Service
from infra_apply.manifests.validate import validate_tree
from infra_apply.plan.model import parse_plan
from infra_apply.render.module import render_model
from infra_apply.report import GpuUp, producer_reports
from infra_apply.report.markdown import format_markdown
from infra_apply.report.mermaid import mermaid_diagram
from tests.conftest import EXAMPLE_MESH, EXAMPLE_TREE, REPO, droplet, producer_root, project, write_tree
from tests.mermaid_cases import CASES, GPU_UP, HOSTILE, MARKED, TOPOLOGY, change, diagram
from tests.mermaid_check import MERMAID_LINE, mermaid_blocks
from tests.plan_fixtures import rc, synthetic

_NODE = re.compile(r"^\s+(?:subgraph )?([a-z0-9_]+)[\[({]+\"(.*?)\"[\])}]+$")
_EDGE = re.compile(r"^  ([a-z0-9_]+) (-->|-\.->)(?:\|\"(.*?)\"\|)? ([a-z0-9_]+)$")


class Parsed:
    """A diagram of ours read back: labels by node id, subgraph members, edges, classes."""

    def __init__(self, text: str) -> None:
        [body] = mermaid_blocks(text)
        self.lines = body.splitlines()
        self.labels: dict[str, str] = {}
        self.members: dict[str, list[str]] = {}
        self.edges: list[tuple[str, str, str, str]] = []  # (from, arrow, label, to)
        self.classes: dict[str, str] = {}
        self.classdefs: list[str] = []
        inside: str | None = None
        for line in self.lines:
            if line == "  end":
                inside = None
            elif line.startswith("  classDef "):
                self.classdefs.append(line.split()[1])
            elif line.startswith("  class "):
                _, node, cls = line.split()
                self.classes[node] = cls
            elif m := _EDGE.match(line):
                self.edges.append((m[1], m[2], m[3] or "", m[4]))
            elif m := _NODE.match(line):
                self.labels[m[1]] = m[2]
                if inside is not None:
                    self.members[inside].append(m[1])
                if line.startswith("  subgraph "):
                    inside = m[1]
                    self.members[inside] = []

    def node(self, label: str) -> str:
        [node] = [n for n, text in self.labels.items() if text == label]
        return node

    def ports(self, node: str) -> list[str]:
        return [label for a, _, label, b in self.edges if a == "internet" and b == f"{node}_host"]


def test_each_droplet_is_a_group_holding_its_machine_and_services() -> None:
    d = Parsed(diagram("topology"))
    services = d.node("com.uvlava.mc.services")
    assert d.members[services] == [
        f"{services}_host",
        f"{services}_svc0",
        f"{services}_svc1",
        f"{services}_svc2",
    ]
    assert d.labels[f"{services}_host"] == "s-2vcpu-4gb · fra1<br/>mesh: mint, mc-web"
    assert d.labels[f"{services}_svc0"] == "storefront<br/>web · port 8000"
    gpu = d.node("com.uvlava.mc.gpu")
    assert d.labels[f"{gpu}_host"] == "gpu-h100x1-80gb · tor1 · GPU, on demand<br/>mesh: mc-gpu"
    assert d.labels[f"{gpu}_job0"] == "render-job<br/>GPU job"
    # Three droplets, two clusters; nothing changes, so no classes and no legend.
    assert sorted(d.members) == ["cluster0", "cluster1", "drop0", "drop1", "drop2"]
    assert d.classdefs == ["external"] and set(d.classes.values()) == {"external"}


def test_public_ports_are_the_ones_each_firewall_opens_to_the_internet() -> None:
    model = build_model(validate_tree(EXAMPLE_TREE, EXAMPLE_MESH))
    rendered = {r.producer: r.files["firewalls.tf"] for r in render_model(model, REPO / "generated")}
    for producer in model.producers:
        # Every GPU up: its firewall (counted like its droplet) is rendered all the same.
        d = Parsed(mermaid_diagram(producer, (), [g.name for g in producer.droplets if g.gpu]))
        drawn = {d.labels[n]: d.ports(n) for n in d.members if n.startswith("drop")}
        assert drawn == _firewall_ports(rendered[producer.name]), producer.name
    # The example's reverse proxies and DNS do open more than WireGuard; its SSH is narrowed.
    quinn = Parsed(mermaid_diagram(model.producer("quinn") or ProducerModel("quinn"), ()))
    assert quinn.ports(quinn.node("com.uvlava.dns")) == ["51820/udp", "53/tcp", "53/udp"]
    assert "443/tcp" in quinn.ports(quinn.node("com.uvlava.quinn.artifacts"))


def _firewall_ports(hcl: str) -> dict[str, list[str]]:
    """droplet name -> "port/protocol" of each inbound rule with a 0.0.0.0/0 source."""
    out: dict[str, list[str]] = {}
    for block in re.split(r'^# "', hcl, flags=re.MULTILINE)[1:]:
        name = block.split('"', 1)[0]
        rules = re.findall(r'inbound_rule \{\s+protocol\s+= "(\w+)"\s+port_range\s+= "([\d-]+)"\s+'
                           r'source_addresses = \["0\.0\.0\.0/0"', block)  # fmt: skip
        out.setdefault(name, []).extend(f"{port}/{proto}" for proto, port in rules)  # both firewalls
    return out


def test_depends_on_is_a_dotted_http_edge_and_an_unknown_service_an_external_node() -> None:
    d = Parsed(diagram("topology"))
    storefront, catalog = d.node("storefront<br/>web · port 8000"), d.node("catalog<br/>api · port 8001")
    outside = d.node("auth-svc<br/>not on these droplets")
    http = [(a, b) for a, arrow, label, b in d.edges if arrow == "-.->" and label == "HTTP over mesh"]
    assert http == [(storefront, catalog), (storefront, outside)]
    assert d.classes[outside] == "external"
    assert not any(outside in members for members in d.members.values())


def test_the_shared_cluster_holds_each_projects_own_database_with_an_edge_from_its_user() -> None:
    d = Parsed(diagram("topology"))
    pg, analytics = (
        d.node("uvlava-pg · shared database cluster"),
        d.node("analytics-pg · shared database cluster"),
    )
    assert [d.labels[n] for n in d.members[pg]] == [
        "catalog (catalog_app)",
        "storefront (storefront_app)",
        "storefront_dev (storefront_dev)<br/>dev",
    ]
    users = {b: (a, label) for a, arrow, label, b in d.edges if b.startswith("cluster")}
    catalog_db, storefront_db, dev_db = d.members[pg]
    assert users[catalog_db] == (d.node("catalog<br/>api · port 8001"), "")
    assert users[storefront_db] == (d.node("storefront<br/>web · port 8000"), "")
    # The dev variant runs on the operator's mac: outside, and not drawn inside the cluster.
    assert users[dev_db] == (d.node("storefront<br/>on fennel"), "")
    assert d.node("storefront<br/>on fennel") not in d.members[pg]
    # A project that is not one of the droplet's services: the edge leaves the droplet, named.
    [reports] = d.members[analytics]
    assert users[reports] == (f"{d.node('com.uvlava.mc.services')}_host", "reporter")


def test_what_the_plan_changes_is_marked_with_a_legend_of_only_the_classes_used() -> None:
    d = Parsed(diagram("marked"))
    assert d.classes[d.node("com.uvlava.mc.services · replaced")] == "replaced"
    assert d.classes[d.node("com.uvlava.mc.gpu · created")] == "created"
    assert d.classes[d.node("com.uvlava.dns · imported")] == "imported"
    # A destroyed droplet the manifests no longer declare is still drawn.
    assert d.classes[d.node("com.uvlava.mc.old<br/>destroyed")] == "deleted"
    assert d.classes[d.node("catalog (catalog_app)<br/>created")] == "created"
    assert d.classes[d.node("storefront (storefront_app)<br/>updated")] == "updated"
    assert d.ports(d.node("com.uvlava.dns · imported"))[-1] == "53/udp (opened)"
    legend = [d.labels[n] for n in d.members["legend"]]
    assert legend == ["created", "updated", "replaced", "destroyed", "imported"]
    # Only what is used: no update, no legend entry for it.
    only_replace = Parsed(mermaid_diagram(TOPOLOGY, MARKED[:1], GPU_UP))
    assert [only_replace.labels[n] for n in only_replace.members["legend"]] == ["replaced"]
    assert only_replace.classdefs == ["replaced", "external"]


def test_a_droplet_whose_firewall_alone_changes_is_marked_and_its_closed_ports_drawn_dashed() -> None:
    d = Parsed(diagram("firewall_only"))
    services = d.node("com.uvlava.mc.services · firewall changed")
    assert d.classes[services] == "firewall"
    assert [d.labels[n] for n in d.members["legend"]] == ["firewall changed"]
    closed = [(arrow, label) for a, arrow, label, b in d.edges if a == "internet" and b == f"{services}_host"]
    assert closed == [
        ("-->", "22/tcp"),
        ("-->", "51820/udp"),
        ("-.->", "80/tcp (closed)"),
        ("-.->", "443/tcp (closed)"),
    ]
    # A droplet the plan changes itself says that, not its firewall's change.
    both = Parsed(mermaid_diagram(TOPOLOGY, MARKED, GPU_UP))
    assert both.classes[both.node("com.uvlava.dns · imported")] == "imported"
    assert "firewall" not in both.classes.values()


def test_a_project_running_on_a_droplet_is_drawn_inside_it_with_its_database_and_dependents() -> None:
    d = Parsed(diagram("hosted"))
    mcp, artifacts = d.node("com.uvlava.quinn.mcp"), d.node("com.uvlava.quinn.artifacts")
    auth = d.node("auth-svc<br/>python3.12 · port 8090")
    assert d.members[mcp] == [f"{mcp}_host", f"{mcp}_svc0", auth]
    users = [(a, label) for a, _, label, b in d.edges if b == d.node("auth (auth_app)")]
    assert users == [(auth, "")]
    http = [(a, b) for a, arrow, _, b in d.edges if arrow == "-.->"]
    assert http == [(f"{artifacts}_svc0", auth), (auth, f"{mcp}_svc0")]
    assert "external" not in d.classes.values()


def test_an_on_demand_gpu_that_is_down_has_no_public_ports_and_one_being_created_has() -> None:
    down = Parsed(diagram("gpu_down"))
    gpu = down.node("com.uvlava.mc.gpu · down, on demand")
    assert down.classes[gpu] == "down" and down.ports(gpu) == []
    assert down.labels[f"{gpu}_job0"] == "render-job<br/>GPU job"
    assert "legend" not in down.members  # down is no change of the plan
    # Held up by a lease: an ordinary box with its ports.
    up = Parsed(diagram("topology"))
    assert up.ports(up.node("com.uvlava.mc.gpu")) == ["22/tcp", "51820/udp"]
    # Created by the plan (`gpu up`): created, with its ports, lease or not yet.
    created = Parsed(diagram("marked"))
    gpu = created.node("com.uvlava.mc.gpu · created")
    assert created.classes[gpu] == "created" and created.ports(gpu) == ["22/tcp", "51820/udp"]
    # Released by the plan (`gpu down`, `gpu reap`): drawn destroyed, not down.
    release = change("digitalocean_droplet", "com.uvlava.mc.gpu", "delete")
    released = Parsed(mermaid_diagram(TOPOLOGY, (release,)))
    assert released.classes[released.node("com.uvlava.mc.gpu · destroyed")] == "deleted"


def test_a_name_destroyed_at_one_address_and_created_at_another_is_drawn_twice() -> None:
    model = ProducerModel("mc", droplets=(Droplet("com.uvlava.mc.box", "mc", "x", hosts=("box",)),))
    changes = (
        change("digitalocean_droplet", "com.uvlava.mc.box", "delete"),
        change("digitalocean_droplet", "com.uvlava.mc.box", "create"),
    )
    d = Parsed(mermaid_diagram(model, changes))
    assert d.classes[d.node("com.uvlava.mc.box · created")] == "created"
    assert d.classes[d.node("com.uvlava.mc.box<br/>destroyed")] == "deleted"


def test_hostile_names_stay_inside_their_labels() -> None:
    text = diagram("hostile")
    [body] = mermaid_blocks(text)
    for line in body.splitlines():
        assert MERMAID_LINE.fullmatch(line), line
    assert "%%" not in body and "`" not in body
    lines = body.splitlines()
    # One subgraph per droplet and per cluster, each closed once: no name opened or closed one.
    subgraphs = [line for line in lines if line.startswith("  subgraph ")]
    assert len(subgraphs) == 2 * len(HOSTILE) + 1  # + the legend
    assert lines.count("  end") == len(subgraphs)
    assert "#quot;" in body and "#96;" in body and "#37;#37;#123;init" in body and "#60;br/#62;" in body


def test_a_producer_over_the_cap_draws_what_fits_and_says_what_was_left_out() -> None:
    d = Parsed(diagram("over_the_cap"))
    assert len(d.labels) <= 200
    assert d.labels["omitted"] == "not drawn: 32 droplets, 60 databases<br/>too many for one diagram"
    drawn = [n for n in d.members if n.startswith("drop")]
    assert len(drawn) == 60 - 32
    # Mermaid refuses more than 500 edges: those count too.
    e = Parsed(diagram("over_mermaids_edge_limit"))
    assert len(e.edges) <= 400
    assert e.labels["omitted"] == "not drawn: 2 droplets<br/>too many for one diagram"


def test_an_empty_producer_says_so() -> None:
    d = Parsed(diagram("empty"))
    assert d.labels == {"empty": "no droplets or databases"} and not d.edges


def test_the_diagram_does_not_depend_on_the_order_of_the_changes() -> None:
    model, changes, _ = CASES["marked"]()
    assert mermaid_diagram(model, changes[::-1]) == mermaid_diagram(model, changes)


def test_mermaid_ids_never_come_from_names() -> None:
    model = ProducerModel(
        name="quinn",
        droplets=(Droplet(name="end", producer="quinn", source="x", hosts=("graph",)),),
    )
    diagram = mermaid_diagram(model, ())
    assert (
        '  subgraph drop0["end"]' in diagram
        and '    drop0_host{{"s-2vcpu-4gb · nyc3<br/>mesh: graph"}}' in diagram
    )


def test_the_model_carries_depends_on_and_where_each_database_user_runs() -> None:
    model = build_model(validate_tree(EXAMPLE_TREE, EXAMPLE_MESH))
    services = {
        s.name: s.depends_on for p in model.producers for d in p.droplets for s in d.services if s.depends_on
    }
    assert services == {
        "ledger-api": ("auth-svc",),
        "vision-worker": ("ledger-api",),
        "storefront": ("catalog", "auth-svc"),
    }
    hosts = {db.project: db.host for p in model.producers for db in p.databases}
    assert hosts == {"auth-svc": "mcp", "catalog": "mint", "ledger-api": "lime", "storefront": "mint"}


def test_the_model_puts_each_project_on_the_droplet_its_service_host_names() -> None:
    model = build_model(validate_tree(EXAMPLE_TREE, EXAMPLE_MESH))
    hosted = {d.name: d.hosted for p in model.producers for d in p.droplets if d.hosted}
    # storefront, catalog, ledger-api and vision-worker are listed services of their droplets;
    # ledger-api's dev variant runs on the operator's mac (fennel): on no droplet.
    assert hosted == {"com.uvlava.quinn.mcp": (Service("auth-svc", "python3.12", "quinn", 8090),)}
    quinn = Parsed(mermaid_diagram(model.producer("quinn") or ProducerModel("quinn"), ()))
    mcp = quinn.node("com.uvlava.quinn.mcp")
    auth = quinn.node("auth-svc<br/>python3.12 · port 8090")
    assert auth in quinn.members[mcp]
    assert (auth, "-->", "", quinn.node("auth (auth_app)")) in quinn.edges


def test_depends_on_of_a_same_named_project_on_another_host_is_not_this_services(tmp_path: Path) -> None:
    tree = write_tree(
        tmp_path,
        {
            "@ct/.infra.yaml": producer_root(
                "ct",
                droplet("com.uvlava.ct.services", ["lime"], {"name": "app", "kind": "api"}),
                droplet("com.uvlava.ct.redroid", ["redroid"], {"name": "emu", "kind": "api"}),
            ),
            "@ct/app/.infra.yaml": project("app", service={"host": "redroid", "depends_on": ["emu"]}),
            "@ct/emu/.infra.yaml": project("emu", service={"host": "redroid", "depends_on": ["app"]}),
        },
    )
    model: Model = build_model(validate_tree(tree))
    [ct] = model.producers
    assert {s.name: s.depends_on for d in ct.droplets for s in d.services} == {"app": (), "emu": ("app",)}


def _rules(*ports: str) -> list[dict[str, object]]:
    return [{"protocol": "tcp", "port_range": p, "source_addresses": ["0.0.0.0/0"]} for p in ports]


def test_the_pull_request_comment_draws_closed_ports_and_each_gpu_as_its_lease_says() -> None:
    """Through parse_plan and the markdown report: a firewall closing 80 and 443 (mc-edge
    removed), and the GPU up only while a lease (not being released) holds it."""
    before, after = {"inbound_rule": _rules("22", "80", "443")}, {"inbound_rule": _rules("22")}
    fw = rc("digitalocean_firewall.mc_services", ["update"], before=before, after=after)
    plan = parse_plan("mc", synthetic(fw), {"digitalocean_firewall.mc_services": "com.uvlava.mc.services"})
    no_edge, _, _ = CASES["firewall_only"]()

    def comment(*gpus: GpuUp) -> Parsed:
        return Parsed(format_markdown(producer_reports([plan], models={"mc": no_edge}, gpus={"mc": gpus})))

    until = datetime(2026, 11, 29, 18, 0, tzinfo=UTC)
    for d, up in [
        (comment(), False),
        (comment(GpuUp("com.uvlava.mc.gpu", until, 3.39)), True),
        (comment(GpuUp("com.uvlava.mc.gpu", until, 3.39, releasing=True)), False),
    ]:
        services = d.node("com.uvlava.mc.services · firewall changed")
        assert [(arrow, label) for _, arrow, label, b in d.edges if b == f"{services}_host"][-2:] == [
            ("-.->", "80/tcp (closed)"),
            ("-.->", "443/tcp (closed)"),
        ]
        gpu = d.node("com.uvlava.mc.gpu" if up else "com.uvlava.mc.gpu · down, on demand")
        assert d.ports(gpu) == (["22/tcp", "51820/udp"] if up else [])
