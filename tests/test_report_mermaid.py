"""The Mermaid diagram: generated ids, escaped labels."""

from __future__ import annotations

from infra_apply.model import Droplet, ProducerModel
from infra_apply.report.mermaid import mermaid_diagram


def test_mermaid_ids_never_come_from_names() -> None:
    model = ProducerModel(
        name="quinn",
        droplets=(Droplet(name="end", producer="quinn", source="x", hosts=("graph",)),),
    )
    diagram = mermaid_diagram(model, ())
    assert '  drop0["end"]' in diagram and '  drop0_host0(["graph"])' in diagram
