"""The pull-request comment: refusals called out, droplets drawn, hostile names inert, size bounded."""

from __future__ import annotations

import re

import pytest

from infra_apply.guard import guard
from infra_apply.plan_model import parse_plan
from infra_apply.report import producer_reports
from infra_apply.report.markdown import MARKDOWN_LIMIT, format_markdown
from tests.mermaid_check import MERMAID_LINE
from tests.plan_fixtures import (
    HOSTILE,
    QUINN_MODEL,
    RESIZE_NAMES,
    SCENARIOS,
    hostile_cost,
    hostile_plans,
    parsed,
    rc,
    read_golden,
    render_golden,
    synthetic,
)


def test_markdown_calls_out_refused_changes_and_draws_the_droplets() -> None:
    plans = [parsed("replace_delete"), parsed("no_changes", "mc")]
    md = format_markdown(producer_reports(plans, {}, {"quinn": QUINN_MODEL}))
    assert md.startswith("## infra-apply plan\n")
    assert "| quinn | 0 | 1 | 1 | 4 | 0 | 0 | ⛔ refused without `--allow-destroy` / " in md
    assert "| mc | 0 | 0 | 0 | 0 | 0 | 0 | ✅ |" in md
    assert "<details open>" in md  # destructive producers are expanded
    warnings = [line for line in md.splitlines() if line.startswith("- ⚠️")]
    assert len(warnings) == 5
    assert any(
        'region "nyc3" → "fra1" forces replacement — needs `infra-apply apply --producer '
        "quinn --allow-replace com.uvlava.quinn.artifacts`" in w
        for w in warnings
    )
    first_warning = md.index("- ⚠️")
    assert first_warning < md.index("**Other changes**") < md.index("```mermaid")
    assert "class drop0 replaced" in md
    assert 'gone0["com.uvlava.quinn.mcp<br/>destroyed"]' in md
    assert 'drop0_svc1["verdaccio<br/>npm-registry"]' in md
    assert 'drop0_host{{"s-2vcpu-4gb · fra1<br/>mesh: forge, registry"}}' in md


def test_markdown_shows_verdicts_given_by_the_caller() -> None:
    plan = parsed("replace_delete")
    allowed = guard(plan, ["forge", "com.uvlava.quinn.mcp"], ["com.uvlava.quinn.artifacts"])
    md = format_markdown(producer_reports([plan], {"quinn": allowed}, {}))
    assert "| quinn | 0 | 1 | 1 | 4 | 0 | 0 | ✅ |" in md
    assert "needs `" not in md


def test_markdown_marks_a_resize_with_its_command_and_calls_out_public_ports() -> None:
    plan = parsed("resize_ports", names=RESIZE_NAMES)
    md = format_markdown(producer_reports([plan]))
    assert "| quinn | 0 | 3 | 0 | 0 | 0 | 0 | ⛔ refused without `--allow-resize` |" in md
    assert "<details open>" in md
    resize = (
        '- ⚠️ **resize** com.uvlava.dns (digitalocean\\_droplet.dns): size "s-1vcpu-1gb" → "s-1vcpu-2gb": '
        "downtime (powered off, resized, powered on); the disk grows and can never be shrunk back — "
        "needs `infra-apply apply --producer quinn --allow-resize com.uvlava.dns`\n"
    )
    assert resize in md
    opened = (
        "- 🔓 public ports opened: 80/tcp, 443/tcp on com.uvlava.quinn.mcp "
        "(digitalocean\\_firewall.quinn\\_mcp)"
    )
    closed = "- 🔒 public ports closed: 80/tcp, 443/tcp on com.uvlava.quinn.artifacts"
    assert opened in md and closed in md
    # The call-outs come before the ordinary changes, and the resize is not repeated there.
    assert md.index("**Resized in place: downtime**") < md.index(opened) < md.index("**Other changes**")
    assert "update **com.uvlava.dns**" not in md
    allowed = guard(plan, (), (), ["com.uvlava.dns"])
    assert "needs `" not in format_markdown(producer_reports([plan], {"quinn": allowed}))


def test_markdown_expands_a_producer_that_opens_a_port_but_not_one_that_only_closes() -> None:
    def rules(ports: list[str]) -> dict[str, object]:
        public = [{"protocol": "tcp", "port_range": p, "source_addresses": ["0.0.0.0/0"]} for p in ports]
        return {"inbound_rule": public}

    def firewall(before: list[str], after: list[str]) -> str:
        change = rc("digitalocean_firewall.f", ["update"], before=rules(before), after=rules(after))
        return format_markdown(producer_reports([parse_plan("quinn", synthetic(change), {})]))

    assert "<details open>" in firewall(["22"], ["22", "8080"])
    closing = firewall(["22", "8080"], ["22"])
    assert "<details>" in closing and "- 🔒 public ports closed: 8080/tcp" in closing


def test_markdown_for_quiet_producers_is_just_the_table() -> None:
    md = format_markdown(producer_reports([parsed("no_changes")], {}, {"quinn": QUINN_MODEL}))
    assert "<details" not in md
    assert md.endswith("No changes.\n")


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_hostile_names_cannot_break_the_markdown() -> None:
    plans, models = hostile_plans()
    # The cost lines name the same hostile droplets, with hostile sizes.
    md = format_markdown(producer_reports(plans, {}, models, costs={plans[0].producer: hostile_cost()}))
    lines = md.splitlines()
    # Table: header, separator and one row, each with the same number of cell borders.
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 3
    assert {unescaped_pipes(line) for line in table} == {10}
    # Dollar signs are escaped: GitHub and Forgejo would read "$6.00 ... $" as inline math.
    assert "$" in md and not re.search(r"(?<!\\)\$", md)
    # HTML: only our own details/summary tags survive; no script, no injected closing tag.
    assert md.count("<details") == md.count("</details>") == 1
    assert "<script" not in md and "<summary><strong>" in md
    # Headings and fences: only ours.
    assert [line for line in lines if line.startswith("#")] == ["## infra-apply plan"]
    fences = [line for line in lines if line.startswith("```") or line.startswith("~~~")]
    assert fences == ["```mermaid", "```"]
    body = md.split("```mermaid\n", 1)[1].split("\n```\n", 1)[0]
    for line in body.splitlines():
        assert MERMAID_LINE.fullmatch(line), line
    assert "%%" not in body and "`" not in body
    assert "#quot;" in body and "#96;" in body and "#37;#37;#123;init" in body
    # Every change is still listed on its own line.
    assert len([line for line in lines if line.startswith("- ⚠️ **destroy**")]) == len(HOSTILE)
    assert len([line for line in lines if line.startswith("- 🆕 create")]) == len(HOSTILE)


def test_markdown_of_a_huge_plan_is_truncated_under_the_limit() -> None:
    big = [
        rc(
            f"digitalocean_droplet.gone_{i}",
            ["delete"],
            before={"name": f"com.uvlava.quinn.box{i}"},
        )
        for i in range(2000)
    ]
    big += [
        rc(f"digitalocean_firewall.new_{i}", ["create"], after={"name": f"fw-{i}"})
        for i in range(3000)
    ]
    quinn = parse_plan("quinn", synthetic(*big), {})
    ct = parse_plan("ct", synthetic(*big[:100]), {})
    assert len(quinn.changes) == 5000
    md = format_markdown(producer_reports([quinn, ct], {}, {"quinn": QUINN_MODEL}))
    assert len(md) <= MARKDOWN_LIMIT
    shown = len([line for line in md.splitlines() if line.startswith(("- ⚠️", "- 🆕"))])
    assert 0 < shown < 5000
    assert md.endswith(
        f"… truncated: {5100 - shown} more changes; "
        "run infra-apply plan locally for the full list\n"
    )
    # Truncation never leaves a section or a fence open, and the table is intact.
    assert md.count("<details") == md.count("</details>")
    assert "| quinn | 3000 | 0 | 0 | 2000 | 0 | 0 |" in md
    assert "| ct | 0 | 0 | 0 | 100 | 0 | 0 |" in md


def test_markdown_with_huge_names_still_fits() -> None:
    changes = [
        rc(f"digitalocean_droplet.d{i}", ["delete"], before={"name": "n" * 100_000})
        for i in range(3)
    ]
    plan = parse_plan("p" * 100_000, synthetic(*changes), {})
    assert len(format_markdown(producer_reports([plan], {}, {}))) <= MARKDOWN_LIMIT


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_markdown_prints_its_golden_byte_for_byte(scenario: str) -> None:
    assert render_golden(scenario, "md") == read_golden(scenario, "md")
