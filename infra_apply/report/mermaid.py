"""A Mermaid flowchart of a producer's topology, marked with what the plan changes.

Drawn left to right: the internet, with an edge per port a droplet's firewall opens to it (and
a dashed one per port the plan closes); one subgraph per droplet (name, size, region, mesh
hosts) holding its services and the projects whose ``service.host`` it runs; dotted
``depends_on`` edges between services (HTTP over the mesh); each shared database cluster as a
subgraph holding the projects' own databases, with an edge from the service (or droplet) of the
project using each. Droplets and databases the plan touches carry its change's class (and say
it in words, for readers who cannot tell the colours apart), a droplet whose firewall alone
changes too; destroyed droplets stay drawn. An on-demand GPU that no lease holds up and the plan
does not create is drawn down (dashed, no public ports): it does not exist.

Node ids are generated (``drop0``, ``drop0_svc1``), never taken from names; every label is
escaped with Mermaid's entity codes, so no name can add a directive, a node or an edge. A
diagram over Mermaid's limits (or too big to read) draws what fits and says what it left out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from infra_apply import kinds
from infra_apply.manifests.model import Database, Droplet, ProducerModel, Service
from infra_apply.plan.parse import Change, display_order
from infra_apply.render.module import public_inbound
from infra_apply.untrusted import short, visible

_MAX_DIAGRAM_NODES = 200
# Under Mermaid's own defaults (maxEdges 500, maxTextSize 50,000): over them it draws nothing.
_MAX_DIAGRAM_EDGES = 400
_MAX_DIAGRAM_CHARS = 40_000
_MERMAID_CLASSES: Mapping[str, str] = {
    "create": "created",
    "update": "updated",
    "replace": "replaced",
    "delete": "deleted",
    "import": "imported",
}
# What a marked box says in words (the legend uses the same words).
_CLASS_WORDS: Mapping[str, str] = {
    "created": "created",
    "updated": "updated",
    "replaced": "replaced",
    "deleted": "destroyed",
    "imported": "imported",
    "firewall": "firewall changed",
}
# A GPU droplet that is down is no change of the plan: said in its title, not in the legend.
_DOWN = "down"
_TITLE_WORDS: Mapping[str, str] = {**_CLASS_WORDS, _DOWN: "down, on demand"}
_MERMAID_CLASSDEFS: Mapping[str, str] = {
    "created": "fill:#d4f8d4,stroke:#2da44e",
    "updated": "fill:#fff5cc,stroke:#bf8700",
    "replaced": "fill:#ffe2cc,stroke:#bc4c00",
    "deleted": "fill:#ffd8d3,stroke:#cf222e,stroke-dasharray:4 2",
    "imported": "fill:#ddf4ff,stroke:#0969da",
    "firewall": "fill:#fbefff,stroke:#8250df",
    _DOWN: "fill:#ffffff,stroke:#8c959f,stroke-dasharray:6 4,color:#57606a",
    "external": "fill:#f6f8fa,stroke:#8c959f,stroke-dasharray:3 3",
}
# Mermaid entity codes; `%`, `{`, `}` would otherwise allow `%%{init}` directives and
# backticks would turn a label into a markdown string (or close the ``` fence).
_MERMAID_ESCAPES: Mapping[str, str] = {
    '"': "#quot;",
    "#": "#35;",
    "%": "#37;",
    "&": "#38;",
    "<": "#60;",
    ">": "#62;",
    "\\": "#92;",
    "`": "#96;",
    "{": "#123;",
    "|": "#124;",
    "}": "#125;",
}
_LINE_BREAK = "<br/>"  # our own, between escaped lines: a name can never produce one


@dataclass(frozen=True)
class _Gone:
    """A destroyed droplet not drawn as a box (see ``_gone``)."""

    name: str


_Item = Droplet | _Gone | Database


@dataclass(frozen=True)
class _Marks:
    """What the plan changes, as Mermaid classes by manifest name."""

    droplets: Mapping[str, str]
    databases: Mapping[str, str]
    users: Mapping[str, str]
    opened: Mapping[str, frozenset[str]]  # droplet name -> ports an update opens ("443/tcp")
    closed: Mapping[str, tuple[str, ...]]  # droplet name -> ports an update closes
    firewalls: frozenset[str]  # droplets whose firewall the plan changes
    down: frozenset[str]  # GPU droplets that do not exist and the plan does not create

    def droplet(self, name: str) -> str | None:
        """The droplet's class: its own change first, else down, else its firewall's change."""
        if name in self.droplets:
            return self.droplets[name]
        if name in self.down:
            return _DOWN
        return "firewall" if name in self.firewalls else None


def mermaid_diagram(model: ProducerModel, changes: Sequence[Change], gpus_up: Collection[str] = ()) -> str:
    """A ```mermaid flowchart of the producer's topology; ids are generated, labels escaped.

    ``gpus_up``: the on-demand GPU droplets a lease holds up (kept by the plan); any other GPU
    droplet the plan does not create, update or destroy is down."""
    marks = _marks(model, changes, gpus_up)
    items: tuple[_Item, ...] = (*model.droplets, *_gone(model, changes), *model.databases)
    drawn = _draw(items[: _fitting(items, marks)], items, marks)
    return "```mermaid\n" + "\n".join(drawn.lines()) + "\n```\n"


def _escape(text: str, limit: int = 80) -> str:
    return "".join(_MERMAID_ESCAPES.get(ch, ch) for ch in visible(short(text, limit)))


def _label(*lines: str) -> str:
    return '"' + _LINE_BREAK.join(_escape(line) for line in lines if line) + '"'


def _drawn_as(rtype: str) -> kinds.Diagram:
    """How the kinds table draws a type; one it does not know is not drawn."""
    kind = kinds.kind_of(rtype)
    return kind.diagram if kind is not None else "none"


def _marks(model: ProducerModel, changes: Sequence[Change], gpus_up: Collection[str]) -> _Marks:
    def classes(drawn: kinds.Diagram) -> dict[str, str]:
        # A name destroyed at one address and created at another is drawn as the one that will
        # exist (its destroyed twin is drawn apart, see _gone); else destructive first.
        ordered = sorted(display_order(changes), key=lambda c: c.action == "delete")
        out: dict[str, str] = {}
        for c in ordered:
            if _drawn_as(c.type) == drawn and c.action in _MERMAID_CLASSES:
                out.setdefault(c.name, _MERMAID_CLASSES[c.action])
        return out

    # A firewall's manifest name is its droplet's. A created firewall opens what its new
    # droplet has: only a change to an existing one opens or closes anything worth saying.
    firewalls = [c for c in changes if _drawn_as(c.type) == "droplet-rules" and c.action in _MERMAID_CLASSES]
    rules = [c for c in firewalls if c.action in ("update", "replace")]
    touched = {c.name for c in changes if _drawn_as(c.type) == "box"}
    return _Marks(
        droplets=classes("box"),
        databases=classes("database"),
        users=classes("database-user"),
        opened={c.name: frozenset(map(str, c.ports_opened)) for c in rules if c.ports_opened},
        closed={c.name: tuple(map(str, c.ports_closed)) for c in rules if c.ports_closed},
        firewalls=frozenset(c.name for c in firewalls),
        down=frozenset(
            d.name for d in model.droplets if d.gpu and d.name not in gpus_up and d.name not in touched
        ),
    )


def _gone(model: ProducerModel, changes: Sequence[Change]) -> list[_Gone]:
    """Droplets destroyed and not drawn as a box: gone from the manifests, or destroyed at one
    address while a droplet of the same name is created (or kept) at another."""
    droplets = [c for c in display_order(changes) if _drawn_as(c.type) == "box"]
    twins = {c.name for c in droplets if c.action != "delete"}
    names = [
        c.name
        for c in droplets
        if c.action == "delete" and (model.droplet(c.name) is None or c.name in twins)
    ]
    return [_Gone(name) for name in dict.fromkeys(names)]


def _fitting(items: Sequence[_Item], marks: _Marks) -> int:
    """How many leading items fit Mermaid's limits. Each item adds at least one node more than
    it can take away (an external node it resolves), so the fit is monotonic: bisect it, from
    at most one item per node."""
    if len(items) <= _MAX_DIAGRAM_NODES and _draw(items, items, marks).fits():
        return len(items)
    lo, hi = 0, min(len(items), _MAX_DIAGRAM_NODES + 1)  # hi: the fewest known not to fit
    while lo < hi - 1:
        mid = (lo + hi) // 2
        if _draw(items[:mid], items, marks).fits():
            lo = mid
        else:
            hi = mid
    return lo


class _Placed(NamedTuple):
    """Where a service (or a GPU job) is drawn: its droplet's index and its own node id."""

    droplet: int
    node: str


@dataclass
class _Drawing:
    """A diagram being drawn: its lines by section, and what counts against Mermaid's limits."""

    body: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)  # nodes drawn after (outside) the subgraphs
    edges: list[str] = field(default_factory=list)
    classes: dict[str, list[str]] = field(default_factory=dict)  # class -> node ids
    nodes: int = 0
    externals: dict[str, str] = field(default_factory=dict)  # label -> node id

    def node(self, node: str, shape: str, cls: str | None = None, indent: int = 2) -> None:
        self._add(self.body, f"{' ' * indent}{node}{shape}", node, cls)

    def _add(self, where: list[str], line: str, node: str, cls: str | None) -> None:
        where.append(line)
        self.nodes += 1
        if cls is not None:
            self.classes.setdefault(cls, []).append(node)

    def subgraph(self, node: str, label: str, cls: str | None = None) -> None:
        self._add(self.body, f"  subgraph {node}[{label}]", node, cls)

    def external(self, *lines: str) -> str:
        """The id of the external node with this label, drawn once (and never inside the
        subgraph being drawn when it is asked for: Mermaid would put it there)."""
        label = _label(*lines)
        if label not in self.externals:
            node = self.externals[label] = f"ext{len(self.externals)}"
            self._add(self.outside, f"  {node}[{label}]", node, "external")
        return self.externals[label]

    def lines(self) -> list[str]:
        used = [c for c in _MERMAID_CLASSDEFS if c in self.classes]
        out = ["flowchart LR", *(f"  classDef {c} {_MERMAID_CLASSDEFS[c]}" for c in used)]
        out += self.body + self.outside + self.edges
        out += [f"  class {node} {c}" for c in used for node in self.classes[c]]
        return out

    def fits(self) -> bool:
        size = sum(len(line) + 1 for line in self.lines())
        return (
            self.nodes <= _MAX_DIAGRAM_NODES
            and len(self.edges) <= _MAX_DIAGRAM_EDGES
            and size <= _MAX_DIAGRAM_CHARS
        )


def _draw(items: Sequence[_Item], everything: Sequence[_Item], marks: _Marks) -> _Drawing:
    d = _Drawing()
    droplets = [i for i in items if isinstance(i, Droplet)]
    if droplets:
        d.node("internet", '(("internet"))')
    placed: dict[str, list[_Placed]] = {}  # service name -> where drawn
    for i, droplet in enumerate(droplets):
        for name, node in _droplet(d, i, droplet, marks):
            placed.setdefault(name, []).append(_Placed(i, node))
    for i, gone in enumerate(i for i in items if isinstance(i, _Gone)):
        d.node(f"gone{i}", f"[{_label(gone.name, _CLASS_WORDS['deleted'])}]", "deleted")
    for i, droplet in enumerate(droplets):
        _depends_on_edges(d, i, droplet, placed)
    _databases(d, [i for i in items if isinstance(i, Database)], droplets, placed, marks)
    _legend(d)
    _omitted(d, everything[len(items) :])
    if not everything:
        d.node("empty", f"[{_label('no droplets or databases')}]")
    return d


def _droplet(d: _Drawing, i: int, droplet: Droplet, marks: _Marks) -> Iterator[tuple[str, str]]:
    """The droplet's subgraph and its public ports; yields (service name, node id)."""
    node, cls = f"drop{i}", marks.droplet(droplet.name)
    # One line: Mermaid draws a subgraph's title over its contents when it wraps.
    title = droplet.name + (f" · {_TITLE_WORDS[cls]}" if cls else "")
    d.subgraph(node, _label(title), cls)
    # The machine itself: what the internet reaches and the mesh knows it as.
    where = f"{droplet.size} · {droplet.region}" + (" · GPU, on demand" if droplet.gpu else "")
    hosts = "mesh: " + ", ".join(droplet.hosts) if droplet.hosts else "no mesh host"
    d.node(f"{node}_host", f"{{{{{_label(where, hosts)}}}}}", indent=4)
    for j, service in enumerate(_services(droplet)):
        d.node(f"{node}_svc{j}", f"[{_label(service.name, _kind_port(service))}]", indent=4)
        yield service.name, f"{node}_svc{j}"
    for j, project in enumerate(droplet.projects):  # a GPU droplet runs its projects' jobs
        d.node(f"{node}_job{j}", f"[{_label(project, 'GPU job')}]", indent=4)
        yield project, f"{node}_job{j}"
    d.body.append("  end")
    if cls == _DOWN:
        return  # a droplet that does not exist has no firewall: nothing reaches it
    opened = marks.opened.get(droplet.name, frozenset())
    ports = [f"{port}/{proto}" for proto, port in public_inbound(droplet)]
    for port in ports:
        text = port + (" (opened)" if port in opened else "")
        d.edges.append(f"  internet -->|{_label(text)}| {node}_host")
    for port in marks.closed.get(droplet.name, ()):
        if port not in ports:  # the manifests open it still, however the plan gets there
            d.edges.append(f"  internet -.->|{_label(f'{port} (closed)')}| {node}_host")


def _services(droplet: Droplet) -> tuple[Service, ...]:
    """The droplet's listed services, then the projects that run there (``Droplet.hosted``)."""
    return (*droplet.services, *droplet.hosted)


def _kind_port(service: Service) -> str:
    return service.kind + (f" · port {service.port}" if service.port is not None else "")


def _depends_on_edges(d: _Drawing, i: int, droplet: Droplet, placed: Mapping[str, list[_Placed]]) -> None:
    for j, service in enumerate(_services(droplet)):
        for dep in service.depends_on:
            targets = [p.node for p in placed.get(dep, [])] or [d.external(dep, "not on these droplets")]
            d.edges += [f'  drop{i}_svc{j} -.->|"HTTP over mesh"| {t}' for t in targets]


def _databases(
    d: _Drawing,
    databases: Sequence[Database],
    droplets: Sequence[Droplet],
    placed: Mapping[str, list[_Placed]],
    marks: _Marks,
) -> None:
    for k, cluster in enumerate(dict.fromkeys(db.cluster for db in databases)):
        d.subgraph(f"cluster{k}", _label(f"{cluster} · shared database cluster"))
        for m, db in enumerate(db for db in databases if db.cluster == cluster):
            node = f"cluster{k}_db{m}"
            cls = marks.databases.get(db.name) or marks.users.get(db.user)
            env = "" if db.environment == "prod" else db.environment
            label = _label(f"{db.name} ({db.user})", env, _CLASS_WORDS[cls] if cls else "")
            d.node(node, f"[({label})]", cls, indent=4)
            d.edges += [f"  {user} {node}" for user in _users(d, db, droplets, placed)]
        d.body.append("  end")


def _users(
    d: _Drawing, db: Database, droplets: Sequence[Droplet], placed: Mapping[str, list[_Placed]]
) -> list[str]:
    """The start of an edge from the project using a database: its service on the droplet
    running it, else that droplet, else an external node (on a mac, or on a droplet not drawn)."""
    hosting = [i for i, drop in enumerate(droplets) if db.host in drop.hosts]
    services = [p.node for p in placed.get(db.project, []) if db.host is None or p.droplet in hosting]
    if services:
        return [f"{n} -->" for n in services]
    if hosting:  # the project is not drawn on the droplet (its model says not): the edge names it
        return [f"drop{i}_host -->|{_label(db.project)}|" for i in hosting]
    return [d.external(db.project, f"on {db.host}" if db.host else "") + " -->"]


def _legend(d: _Drawing) -> None:
    used = [c for c in _CLASS_WORDS if c in d.classes]
    if not used:
        return
    d.body.append(f"  subgraph legend[{_label('plan')}]")
    for c in used:
        d.node(f"legend_{c}", f"[{_label(_CLASS_WORDS[c])}]", c, indent=4)
    d.body.append("  end")


def _omitted(d: _Drawing, left: Sequence[_Item]) -> None:
    if not left:
        return
    counts = {
        "droplets": sum(isinstance(i, Droplet) for i in left),
        "destroyed droplets": sum(isinstance(i, _Gone) for i in left),
        "databases": sum(isinstance(i, Database) for i in left),
    }
    what = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    d.node("omitted", f"[{_label(f'not drawn: {what}', 'too many for one diagram')}]", "external")
