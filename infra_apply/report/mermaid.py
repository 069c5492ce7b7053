"""A Mermaid flowchart of a producer's droplets, services and mesh hosts, coloured by change.

Node ids are generated (``drop0``, ``drop0_svc1``), never taken from names; every label is
escaped with Mermaid's entity codes, so no name can add a directive, a node or an edge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from infra_apply.model import ProducerModel
from infra_apply.plan_model import Change, display_order
from infra_apply.untrusted import short, visible

_MAX_DIAGRAM_NODES = 200
_MERMAID_CLASSES: Mapping[str, str] = {
    "create": "created",
    "update": "updated",
    "replace": "replaced",
    "delete": "deleted",
    "import": "imported",
}
_MERMAID_CLASSDEFS = (
    "  classDef created fill:#d4f8d4,stroke:#2da44e",
    "  classDef updated fill:#fff5cc,stroke:#bf8700",
    "  classDef replaced fill:#ffe2cc,stroke:#bc4c00",
    "  classDef deleted fill:#ffd8d3,stroke:#cf222e,stroke-dasharray:4 2",
    "  classDef imported fill:#ddf4ff,stroke:#0969da",
)
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


def mermaid_diagram(model: ProducerModel, changes: Sequence[Change]) -> str:
    """A ```mermaid flowchart of the producer's droplets; ids are generated, labels escaped."""
    droplet_actions = {c.name: c.action for c in changes if c.type == "digitalocean_droplet"}
    gone = [
        c.name
        for c in display_order(changes)
        if c.type == "digitalocean_droplet"
        and c.action == "delete"
        and model.droplet(c.name) is None
    ]
    nodes = sum(1 + len(d.services) + len(d.hosts) for d in model.droplets) + len(gone)
    if nodes > _MAX_DIAGRAM_NODES:
        return f"_Diagram omitted: {nodes} nodes is too many to draw._\n"
    lines = ["```mermaid", "flowchart LR", *_MERMAID_CLASSDEFS]
    for i, droplet in enumerate(model.droplets):
        node = f"drop{i}"
        label = droplet.name + (" (GPU, on demand)" if droplet.gpu else "")
        lines.append(f"  {node}[{mermaid_label(label)}]")
        for j, service in enumerate(droplet.services):
            lines.append(f"  {node}_svc{j}[{mermaid_label(f'{service.name} ({service.kind})')}]")
            lines.append(f"  {node} --> {node}_svc{j}")
        for j, host in enumerate(droplet.hosts):
            lines.append(f"  {node}_host{j}([{mermaid_label(host)}])")
            lines.append(f"  {node} -. mesh .- {node}_host{j}")
        if droplet.name in droplet_actions:
            lines.append(f"  class {node} {_MERMAID_CLASSES[droplet_actions[droplet.name]]}")
    for i, name in enumerate(gone):
        lines.append(f"  gone{i}[{mermaid_label(name + ' (destroyed)')}]")
        lines.append(f"  class gone{i} deleted")
    lines.append("```")
    return "\n".join(lines) + "\n"


def mermaid_label(text: str) -> str:
    escaped = "".join(_MERMAID_ESCAPES.get(ch, ch) for ch in visible(short(text, 80)))
    return f'"{escaped}"'
