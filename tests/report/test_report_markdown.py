"""The pull-request comment: refusals called out, droplets drawn, hostile names inert, size bounded."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from infra_apply.forge.comment import COMMENT_LIMIT, compose, marker, units
from infra_apply.plan.guard import guard
from infra_apply.plan.model import parse_plan
from infra_apply.report import PlanContext, producer_reports
from infra_apply.report._common import ONLY_UNDOES
from infra_apply.report.markdown import MARKDOWN_LIMIT, format_markdown
from tests.mermaid_check import MERMAID_LINE
from tests.plan_fixtures import (
    HOSTILE,
    IMPORT_NAMES,
    OUTSIDE_NAMES,
    QUINN_MODEL,
    RESIZE_NAMES,
    SANDBOX_CONTEXT,
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
    assert "| quinn | 0 | 1 | 1 | 4 | 0 | 0 | 0 | ⛔ refused without `--allow-destroy` / " in md
    assert "| mc | 0 | 0 | 0 | 0 | 0 | 0 | 0 | ✅ |" in md
    assert "<details open>" in md  # destructive producers are expanded
    warnings = [line for line in md.splitlines() if line.startswith("- ⚠️")]
    assert len(warnings) == 5
    assert any(
        'region "nyc3" → "fra1" forces replacement — needs `infra-apply apply --producer '
        "quinn --allow-replace com.uvlava.quinn.artifacts`" in w
        for w in warnings
    )
    first_warning = md.index("- ⚠️")
    assert md.index("**Destroys**") < first_warning < md.index("**Replacements**")
    assert md.index("**Replacements**") < md.index("**Updates**") < md.index("```mermaid")
    assert "class drop0 replaced" in md
    assert 'gone0["com.uvlava.quinn.mcp<br/>destroyed"]' in md
    assert 'drop0_svc1["verdaccio<br/>npm-registry"]' in md
    assert 'drop0_host{{"s-2vcpu-4gb · fra1<br/>mesh: forge, registry"}}' in md


def test_markdown_shows_verdicts_given_by_the_caller() -> None:
    plan = parsed("replace_delete")
    allowed = guard(plan, ["forge", "com.uvlava.quinn.mcp"], ["com.uvlava.quinn.artifacts"])
    md = format_markdown(producer_reports([plan], {"quinn": allowed}, {}))
    assert "| quinn | 0 | 1 | 1 | 4 | 0 | 0 | 0 | ✅ |" in md
    assert "needs `" not in md
    assert "✅ **Guard:** apply would go ahead: each destroy, replacement and resize is allowed." in md


def test_markdown_marks_a_resize_with_its_command_and_calls_out_public_ports() -> None:
    plan = parsed("resize_ports", names=RESIZE_NAMES)
    md = format_markdown(producer_reports([plan]))
    assert "| quinn | 0 | 3 | 0 | 0 | 0 | 0 | 0 | ⛔ refused without `--allow-resize` |" in md
    assert "<details open>" in md
    resize = (
        '- ⚠️ **resize** com.uvlava.dns (digitalocean\\_droplet.dns): size "s-1vcpu-1gb" → "s-1vcpu-2gb": '
        "downtime (powered off, resized, powered on); the disk grows and can never be shrunk back — "
        "needs `infra-apply apply --producer quinn --allow-resize com.uvlava.dns`\n"
    )
    assert resize in md
    opened = (
        "- 🔓 public ports opened: 80/tcp, 443/tcp on firewall of com.uvlava.quinn.mcp "
        "(digitalocean\\_firewall.quinn\\_mcp)"
    )
    closed = "- 🔒 public ports closed: 80/tcp, 443/tcp on firewall of com.uvlava.quinn.artifacts"
    assert opened in md and closed in md
    # The call-outs come before the ordinary changes, and the resize is not repeated there.
    assert md.index("**Resizes (downtime)**") < md.index(opened) < md.index("**Updates**")
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
    assert {unescaped_pipes(line) for line in table} == {11}
    # Dollar signs are escaped: GitHub and Forgejo would read "$6.00 ... $" as inline math.
    assert "$" in md and not re.search(r"(?<!\\)\$", md)
    # HTML: only our own details/summary tags survive; no script, no injected closing tag.
    assert md.count("<details") == md.count("</details>") == 1
    assert "<script" not in md and "<summary><strong>" in md
    # Headings and fences: only ours.
    assert [line for line in lines if line.startswith("#")] == [
        "## infra-apply plan",
        "#### Changed by this pull request",
    ]
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
    big += [rc(f"digitalocean_firewall.new_{i}", ["create"], after={"name": f"fw-{i}"}) for i in range(3000)]
    quinn = parse_plan("quinn", synthetic(*big), {})
    ct = parse_plan("ct", synthetic(*big[:100]), {})
    assert len(quinn.changes) == 5000
    md = format_markdown(producer_reports([quinn, ct], {}, {"quinn": QUINN_MODEL}))
    assert len(md) <= MARKDOWN_LIMIT
    shown = len([line for line in md.splitlines() if line.startswith(("- ⚠️", "- 🆕"))])
    assert 0 < shown < 5000
    assert md.endswith(
        f"… truncated: {5100 - shown} more changes; run infra-apply plan locally for the full list\n"
    )
    # Truncation never leaves a section or a fence open, and the table is intact.
    assert md.count("<details") == md.count("</details>")
    assert "| quinn | 3000 | 0 | 0 | 2000 | 0 | 0 | 0 |" in md
    assert "| ct | 0 | 0 | 0 | 100 | 0 | 0 | 0 |" in md
    # A sandbox plan's note names the sandbox plan, and still fits.
    sandbox = PlanContext(True, None, datetime(2026, 11, 29, tzinfo=UTC))
    md = format_markdown(producer_reports([quinn, ct], {}, {"quinn": QUINN_MODEL}, stand_in=True), sandbox)
    assert len(md) <= MARKDOWN_LIMIT
    assert md.endswith("; run infra-apply plan --sandbox locally for the full list\n")


def test_a_huge_plan_uses_the_forges_room_and_comment_never_cuts_it() -> None:
    # Emoji outside the BMP count twice where the forges count (UTF-16), so the limit is in units.
    big = [rc(f"digitalocean_droplet.n{i}", ["create"], after={"name": f"box{i}"}) for i in range(3000)]
    md = format_markdown(producer_reports([parse_plan("quinn", synthetic(*big), {})]), SANDBOX_CONTEXT)
    assert MARKDOWN_LIMIT + len(marker("k" * 64) + "\n") == COMMENT_LIMIT == 65_536
    assert 60_000 < units(md) <= MARKDOWN_LIMIT and units(md) > len(md)
    body, cut = compose(md, "k" * 64)  # the longest key `comment --key` accepts
    assert not cut and units(body) <= COMMENT_LIMIT
    assert md.endswith("run infra-apply plan --sandbox locally for the full list\n")


def test_markdown_with_huge_names_still_fits() -> None:
    changes = [rc(f"digitalocean_droplet.d{i}", ["delete"], before={"name": "n" * 100_000}) for i in range(3)]
    plan = parse_plan("p" * 100_000, synthetic(*changes), {})
    assert len(format_markdown(producer_reports([plan], {}, {}))) <= MARKDOWN_LIMIT


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_markdown_prints_its_golden_byte_for_byte(scenario: str) -> None:
    assert render_golden(scenario, "md") == read_golden(scenario, "md")


# --------------------------------------------------------------------------------------------
# What the comment says: where and when it was planned, outside Terraform, the guard, headings


def test_a_sandbox_plan_carries_a_banner_and_the_commit_it_was_planned_at() -> None:
    plan = parsed("no_changes")
    md = format_markdown(producer_reports([plan]), SANDBOX_CONTEXT)
    lines = md.splitlines()
    full = "3f9c2e1ab84d07c6e5f1a2b3c4d5e6f708192a3b"
    assert lines[0] == f"<!-- infra-apply plan: commit={full} planned-at=2026-11-29T18:40:12Z sandbox=yes -->"
    assert lines[1] == "## infra-apply plan (sandbox)"
    assert lines[3].startswith("> 🧪 **Sandbox plan:** planned against infra-apply's local stand-in cloud")
    assert "Planned at commit `3f9c2e1ab84d` on 2026-11-29 18:40 UTC." in lines
    assert md.count(full) == 1  # the full sha only in the hidden line
    # a real account: no banner; an unknown commit is left out; a hostile one never printed
    when = datetime(2026, 11, 29, 9, 5, tzinfo=UTC)
    real = format_markdown(producer_reports([plan]), PlanContext(False, None, when))
    assert "Sandbox" not in real and "sandbox=no" in real and "commit=unknown" in real
    assert "\nPlanned on 2026-11-29 09:05 UTC.\n" in real and "## infra-apply plan\n" in real
    hostile = format_markdown(producer_reports([plan]), PlanContext(False, "abc --><script>", when))
    assert "<script>" not in hostile and "commit=unknown" in hostile
    # the time is always said in UTC, whatever zone the caller's clock is in
    berlin = datetime(2026, 11, 29, 11, 5, tzinfo=timezone(timedelta(hours=2)))
    assert "Planned on 2026-11-29 09:05 UTC." in format_markdown(
        producer_reports([plan]), PlanContext(False, None, berlin)
    )
    # no context (a caller that has none): nothing about it
    assert format_markdown(producer_reports([plan])).startswith("## infra-apply plan\n")


def test_outside_terraform_is_its_own_section_apart_from_this_pull_request() -> None:
    md = format_markdown(producer_reports([parsed("outside_drift", names=OUTSIDE_NAMES)]))
    outside = md.index("#### Changed outside Terraform")
    mine = md.index("#### Changed by this pull request")
    assert outside < mine
    section = md[outside:mine]
    assert (
        "- ✋ deleted outside Terraform: com.uvlava.quinn.cache (digitalocean\\_droplet.quinn\\_cache) "
        "— this plan re-creates it\n"
    ) in section
    assert "this plan changes tags back; name stays as found (see name drift)" in section
    assert (
        "resized outside Terraform: com.uvlava.quinn.build (digitalocean\\_droplet.quinn\\_build): size "
        '"s-2vcpu-4gb" → "s-4vcpu-8gb" — this plan resizes it back to s-2vcpu-4gb, but its disk is already '
        "160 GB and DigitalOcean never shrinks a disk, so that resize will fail"
    ) in section
    assert "| quinn | 3 | 5 | 1 | 2 | 0 | 4 | 1 |" in md
    # the plan's changes that only set the drift right say so; the pull request's own do not
    cache = "- 🆕 create **com.uvlava.quinn.cache** (digitalocean\\_droplet.quinn\\_cache)"
    assert f"{cache} (undoes a change made outside Terraform)" in md
    assert "- 🆕 create **com.uvlava.quinn.ci** (digitalocean\\_droplet.quinn\\_ci)\n" in md
    assert ONLY_UNDOES not in md


def test_a_plan_that_only_undoes_outside_changes_says_so_in_every_format() -> None:
    from infra_apply.report.json import format_json
    from infra_apply.report.text import format_text
    from tests.plan.test_plan_outside import outside_only_plan

    reports = producer_reports([parse_plan("quinn", outside_only_plan(), {})])
    md, text = format_markdown(reports), format_text(reports)
    assert f"_{ONLY_UNDOES}_" in md and f"  {ONLY_UNDOES}" in text.splitlines()
    assert "- 🆕 create **web** (digitalocean\\_droplet.web) (undoes a change made outside Terraform)" in md
    assert "deleted outside Terraform: web (digitalocean_droplet.web) — this plan re-creates it" in text
    import json

    quinn = json.loads(format_json(reports))["producers"]["quinn"]
    assert quinn["only_undoes_outside"] is True
    assert [(o["address"], o["plan"]["response"]) for o in quinn["outside"]] == [
        ("digitalocean_droplet.web", "recreates"),
        ("digitalocean_droplet.db", "reverts"),
    ]


def test_firewalls_are_labelled_as_firewalls_not_their_droplets_twice() -> None:
    md = format_markdown(producer_reports([parsed("replace_delete")], {}, {"quinn": QUINN_MODEL}))
    assert (
        "- 🔧 update **firewall of com.uvlava.quinn.artifacts** (digitalocean\\_firewall.quinn\\_artifacts)"
    ) in md
    assert "**com.uvlava.quinn.artifacts** (digitalocean\\_firewall" not in md
    # a firewall removed from the manifests is told by its droplet in state, like every firewall
    assert "- ⚠️ **destroy** firewall of com.uvlava.quinn.mcp (digitalocean\\_firewall.quinn\\_mcp)" in md


def test_headings_fit_what_the_producer_changes() -> None:
    def headings(md: str) -> list[str]:
        return re.findall(r"^\*\*([A-Z][^*]+)\*\*", md, re.M)

    replace = rc(
        "digitalocean_droplet.web",
        ["delete", "create"],
        before={"region": "nyc3"},
        after={"region": "fra1"},
        replace_paths=[["region"]],
    )
    only_replace = format_markdown(producer_reports([parse_plan("quinn", synthetic(replace), {})]))
    assert headings(only_replace) == ["Replacements"]
    assert "Destroy" not in only_replace.split("</summary>", 1)[1].split("#### Changed by", 1)[1]
    plans = [parsed("outside_drift", names=OUTSIDE_NAMES), parsed("no_changes", "mc")]
    md = format_markdown(producer_reports(plans))
    assert headings(md) == [
        "Destroys",
        "Replacements",
        "Resizes (downtime)",
        "Public ports",
        "Creates",
        "Updates",
        "Name drift",
    ]
    # a producer without changes has its table row and no section
    assert "| mc | 0 | 0 | 0 | 0 | 0 | 0 | 0 | ✅ |" in md and "<strong>mc</strong>" not in md


def test_the_guard_verdict_is_said_in_words_per_producer() -> None:
    plan = parsed("outside_drift", names=OUTSIDE_NAMES)
    md = format_markdown(producer_reports([plan]))
    # quinn.build's resize can never succeed (a smaller disk): apply stops on it, whatever is
    # allowed, so no command is offered; the rest is still said.
    assert (
        "⛔ **Guard:** apply would stop with an error (exit 1) before changing anything: resizing "
        "com.uvlava.quinn.build can never succeed (a disk never shrinks; no flag allows it). Past "
        "that, it would refuse (exit 3) without consent to destroy com.uvlava.quinn.docs, replace "
        "com.uvlava.quinn.mcp and resize com.uvlava.dns.\n"
    ) in md
    allowed = guard(plan, ["com.uvlava.quinn.docs"], ["com.uvlava.quinn.mcp"], ["com.uvlava.dns"])
    md = format_markdown(producer_reports([plan], {"quinn": allowed}))
    assert "can never succeed (a disk never shrinks; no flag allows it).\n" in md
    plan = parsed("replace_delete")
    md = format_markdown(producer_reports([plan]))
    assert "without consent to destroy forge, com.uvlava.quinn.mcp and replace" in md
    assert "To go ahead: `infra-apply apply --producer quinn --allow-destroy forge " in md
    quiet = format_markdown(producer_reports([parsed("import", names=IMPORT_NAMES)]))
    assert "✅ **Guard:** apply would go ahead: nothing is destroyed, replaced or resized." in quiet


def test_the_gpus_up_line_escapes_its_dollar_sign_like_every_cost_line() -> None:
    """GitHub and Forgejo read "$...$" as math: "$3.39/hour" must be written "\\$3.39/hour"."""
    from infra_apply.report import GpuUp

    gpu = GpuUp("com.uvlava.ct.gpu", datetime(2026, 11, 29, 18, 0, tzinfo=UTC), 3.39)
    md = format_markdown(producer_reports([parsed("no_changes")], gpus={"quinn": (gpu,)}))
    [line] = [line for line in md.splitlines() if "is up: lease ends" in line]
    assert line.endswith("lease ends 2026-11-29 18:00Z, \\$3.39/hour")
    assert re.search(r"(?<!\\)\$", md) is None  # no dollar sign anywhere unescaped
