"""Combining the per-producer plans of a CI matrix into one comment: exactly the plan of every
producer at once (byte for byte, over the golden scenarios), other texts kept verbatim, different
commits said plainly, hostile names unable to forge a mark, the marks invisible on GitHub."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options

from infra_apply.errors import InfraApplyError
from infra_apply.forge.comment import COMMENT_LIMIT, compose, marker, units
from infra_apply.manifests.model import Droplet, ProducerModel, Service
from infra_apply.plan.model import parse_plan
from infra_apply.report import PlanContext, ProducerReport, producer_reports
from infra_apply.report.combine import combine, failed_note, failed_sentence, read_json
from infra_apply.report.json import format_json
from infra_apply.report.markdown import MARKDOWN_LIMIT, format_markdown
from tests.plan_fixtures import SANDBOX_CONTEXT, SCENARIOS, hostile_cost, rc, read_golden, synthetic

FAILED = "### mc: the plan failed (exit 1); see the job log\n"
OTHER_COMMIT = PlanContext(
    sandbox=True,
    commit="0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
    planned_at=SANDBOX_CONTEXT.planned_at,
)


def reports_of(scenario: str) -> tuple[ProducerReport, ...]:
    plans, verdicts, models, costs, _ = SCENARIOS[scenario]()
    return producer_reports(plans, verdicts, models, costs=costs)


def by_producer(reports: Sequence[ProducerReport]) -> list[ProducerReport]:
    # `plan` plans producers in name order; stable, so one producer twice keeps its order.
    return sorted(reports, key=lambda r: r.producer)


def test_the_single_producer_plans_of_a_golden_combine_into_the_golden() -> None:
    """What a matrix of one job per producer posts is what one plan of them all posts."""
    ct, quinn = reports_of("update_size_and_import")
    golden = read_golden("update_size_and_import", "md")
    assert combine([format_markdown([ct]), format_markdown([quinn])]) == golden
    assert combine([format_markdown([quinn]), format_markdown([ct])]) == golden  # any file order
    assert golden.count("| producer |") == 1 and golden.count("Prices:") == 1


@pytest.mark.parametrize("context", [None, SANDBOX_CONTEXT], ids=["no-context", "sandbox-commit"])
def test_combine_of_the_markdowns_is_the_markdown_of_the_plans(context: PlanContext | None) -> None:
    """combine(md(A), md(B)) == md(A + B) for every ordered pair of golden scenarios (the same
    context in every file): empty plans, no changes, costs with unpriced notes, hostile names."""
    reports = {name: reports_of(name) for name in SCENARIOS}
    md = {name: format_markdown(r, context) for name, r in reports.items()}
    wrong = [
        (a, b)
        for a, b in itertools.product(SCENARIOS, repeat=2)
        if combine([md[a], md[b]]) != format_markdown(by_producer([*reports[a], *reports[b]]), context)
    ]
    assert wrong == []
    three = ("outside_drift", "nothing_planned", "update_size_and_import")
    expected = format_markdown(by_producer([r for name in three for r in reports[name]]), context)
    assert combine([md[name] for name in three]) == expected


def test_the_header_names_a_failed_producer_never_saying_no_changes() -> None:
    """A matrix job whose plan failed writes a note, not a plan: the combined comment must not
    read "No changes." above it, as if that producer had nothing to apply."""
    [quinn] = reports_of("no_changes")
    ok = format_markdown([quinn], SANDBOX_CONTEXT)
    assert "\nNo changes.\n" in ok
    body = combine([ok, FAILED])
    head = body.split("<!-- infra-apply:table", 1)[0]
    assert "> ⛔ **The plan of mc (exit 1) failed:** what it would change is unknown" in head
    assert "\nNo changes.\n" not in body and "No changes in the plans that ran." in body
    assert body.endswith("\n" + FAILED)
    # Only failures: a title and the failed producers, then their notes.
    both = combine([FAILED, "### ct_x: the plan failed (exit 2); see the job log\n"])
    title = "## infra-apply plan\n\n> ⛔ **The plans of mc (exit 1), ct\\_x (exit 2) failed:**"
    assert both.startswith(title)


def test_a_failed_plan_note_is_kept_verbatim_after_the_plans() -> None:
    ct, quinn = reports_of("update_size_and_import")
    both = format_markdown([ct, quinn], SANDBOX_CONTEXT)
    files = [FAILED, format_markdown([quinn], SANDBOX_CONTEXT), format_markdown([ct], SANDBOX_CONTEXT)]
    header = failed_sentence([("mc", "1")])
    table = "\n<!-- infra-apply:table "
    assert combine(files) == both.replace(table, f"\n{header}\n{table}", 1) + "\n" + FAILED
    # Without a final newline, and with nothing else: still kept, one section each.
    assert combine(["### a failed", "### b failed\n"]) == "### a failed\n\n### b failed\n"
    odd = "### c\r\nfailed\u2028<!-- infra-apply:section producer=c -->\n"  # byte for byte
    assert combine([odd, format_markdown([ct])]) == format_markdown([ct]) + "\n" + odd
    # A plan from an infra-apply without marks is not read as one: kept whole, not split.
    old = re.sub(r"(?m)^<!-- infra-apply:.*\n", "", format_markdown([ct]))
    assert combine([format_markdown([quinn]), old]) == format_markdown([quinn]) + "\n" + old


def test_plans_of_different_commits_say_so_in_one_header() -> None:
    ct, quinn = reports_of("update_size_and_import")
    later = replace(OTHER_COMMIT, planned_at=SANDBOX_CONTEXT.planned_at + timedelta(minutes=7))
    md = combine([format_markdown([ct], SANDBOX_CONTEXT), format_markdown([quinn], later)])
    head = md.split("<!-- infra-apply:table", 1)[0]
    assert head.splitlines()[0] == (
        "<!-- infra-apply plan: commit=mixed planned-at=2026-11-29T18:40:12Z sandbox=yes -->"
    )
    assert (
        "\n⚠️ **Planned at different commits:** ct at commit `3f9c2e1ab84d`; quinn at commit "
        "`0a1b2c3d4e5f`; between 2026-11-29 18:40 and 18:47 UTC.\n" in head
    )
    assert head.count("## infra-apply plan (sandbox)") == 1 and head.count("Sandbox plan") == 1
    assert "Planned at commit" not in head
    assert md.count("| producer |") == 1 and md.count("Prices:") == 1
    assert md.index("| ct |") < md.index("| quinn |") < md.index("<summary><strong>ct")


def test_plans_of_one_commit_minutes_apart_name_the_commit_once() -> None:
    ct, quinn = reports_of("update_size_and_import")
    later = replace(SANDBOX_CONTEXT, planned_at=datetime(2026, 11, 30, 0, 3, tzinfo=UTC))
    md = combine([format_markdown([ct], SANDBOX_CONTEXT), format_markdown([quinn], later)])
    assert "Planned at commit `3f9c2e1ab84d` between 2026-11-29 18:40 and 2026-11-30 00:03 UTC.\n" in md
    assert md.startswith("<!-- infra-apply plan: commit=3f9c2e1ab84d07c6e5f1a2b3c4d5e6f708192a3b ")
    # One plan in the sandbox and one not: the banner names the sandbox one.
    live = replace(SANDBOX_CONTEXT, sandbox=False)
    md = combine([format_markdown([ct], SANDBOX_CONTEXT), format_markdown([quinn], live)])
    assert "sandbox=mixed -->\n## infra-apply plan\n\n> 🧪 **Partly a sandbox plan:** ct planned" in md


def test_one_file_is_left_as_it_is() -> None:
    for text in (read_golden("hostile", "md"), FAILED, "", "no newline"):
        assert combine([text]) == text


# --- JSON plans: the artifact between CI jobs ----------------------------------------------


def failed_json(producer: str, code: int) -> str:
    """What the workflows write for a producer whose plan failed."""
    return json.dumps({"format_version": 1, "failed": [{"producer": producer, "exit_code": code}]})


@pytest.mark.parametrize("context", [None, SANDBOX_CONTEXT], ids=["no-context", "sandbox-commit"])
def test_the_json_plans_combine_into_the_markdown_of_the_plans(context: PlanContext | None) -> None:
    """combine(json(A), json(B)) == md(A + B) for every ordered pair of golden scenarios, read as
    JSON (never as prose); one JSON plan alone is rendered as its markdown."""
    reports = {name: reports_of(name) for name in SCENARIOS}
    docs = {name: read_json(format_json(r, context)) for name, r in reports.items()}
    wrong = [
        (a, b)
        for a, b in itertools.product(SCENARIOS, repeat=2)
        if combine([docs[a], docs[b]]) != format_markdown(by_producer([*reports[a], *reports[b]]), context)
    ]
    assert wrong == []
    alone = [n for n in SCENARIOS if combine([docs[n]]) != format_markdown(by_producer(reports[n]), context)]
    assert alone == []


def test_json_and_markdown_plans_combine_alike_and_together() -> None:
    ct, quinn = reports_of("update_size_and_import")
    golden = read_golden("update_size_and_import", "md")
    as_json = [read_json(format_json([r])) for r in (quinn, ct)]
    assert combine(as_json) == golden
    assert combine([as_json[0], format_markdown([ct])]) == golden  # an older job's markdown too


def test_a_failed_producer_in_json_shows_as_failed_like_its_markdown_note() -> None:
    [quinn] = reports_of("no_changes")
    body = combine([read_json(format_json([quinn], SANDBOX_CONTEXT)), read_json(failed_json("mc", 1))])
    assert failed_note("mc", 1) == FAILED
    assert body == combine([format_markdown([quinn], SANDBOX_CONTEXT), FAILED])
    head = body.split("<!-- infra-apply:table", 1)[0]
    assert "> ⛔ **The plan of mc (exit 1) failed:**" in head and "\nNo changes.\n" not in body
    only = combine([read_json(failed_json("mc", 1)), read_json(failed_json("ct", 2))])
    assert only == combine([FAILED, failed_note("ct", 2)])


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{", "not a plan --format json document: Expecting"),
        ('{"format_version": 2, "producers": {}}', "no format_version 1"),
        ('{"format_version": 1}', "neither producers nor failed"),
        ('{"format_version": 1, "changed": false, "producers": {"mc": {}}}', "markdown is not a dict"),
        ('{"format_version": 1, "failed": [{"producer": "a\\n### b", "exit_code": 1}]}', "names no producer"),
        ('{"format_version": 1, "failed": [{"producer": "mc", "exit_code": "1"}]}', "mc has no exit_code"),
    ],
)
def test_a_json_file_that_is_not_a_plan_is_an_error(text: str, says: str) -> None:
    with pytest.raises(InfraApplyError, match=re.escape(says)):
        read_json(text)


def test_a_json_row_cannot_add_rows_to_the_table() -> None:
    doc = json.loads(format_json(reports_of("no_changes")))
    doc["producers"]["quinn"]["markdown"]["row"] += "\n| forged | 0 |"
    with pytest.raises(InfraApplyError, match=re.escape("quinn's markdown.row")):
        read_json(json.dumps(doc))


# --- hostile names --------------------------------------------------------------------------

# Names that try to end a mark, forge one on a line of its own, or split a row.
FORGED = (
    "<!-- infra-apply:section producer=evil -->",
    "a\n\n<!-- infra-apply:table producer=x -->\n| producer |",
    "b -->\n\n<!-- infra-apply:prices -->\nPrices: free",
    "c|\n| forged | 0 | 0 | 0 | 0 | 0 | 0 | 0 | ✅ | |",
)


def forged_reports() -> list[ProducerReport]:
    reports = []
    for i, name in enumerate(FORGED):
        droplet = Droplet(
            name=FORGED[-1 - i], producer=name, source="x", hosts=(name,), services=(Service(name, name),)
        )
        changes = [
            rc("digitalocean_droplet.d", ["delete"], before={"name": FORGED[i - 1]}),
            rc("digitalocean_droplet.k", ["create"], after={"name": "x"}),
        ]
        plan = parse_plan(name, synthetic(*changes), {"digitalocean_droplet.k": droplet.name})
        [report] = producer_reports([plan], {}, {name: ProducerModel(name=name, droplets=(droplet,))})
        reports.append(report)
    reports.append(reports_of("hostile")[0])
    return reports


def test_hostile_names_cannot_forge_or_split_a_mark() -> None:
    reports = forged_reports()
    texts = [format_markdown([r], SANDBOX_CONTEXT) for r in reports]
    for text, report in zip(texts, reports, strict=True):
        # The only mark lines are the ones format_markdown writes: a table, a price note when
        # priced, the producer's own unpriced note, its section.
        marks = [line.split(" ", 2)[1] for line in text.splitlines() if line.startswith("<!-- infra-apply:")]
        want = ["infra-apply:table", "infra-apply:section"]
        if report.cost is not None:
            want[1:1] = ["infra-apply:prices", "infra-apply:unpriced"]
        assert marks == want, report.producer
    combined = combine(texts)
    assert combined == format_markdown(by_producer(reports), SANDBOX_CONTEXT)
    table = [line for line in combined.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(reports) and table[0].startswith("| producer |")
    assert combined.count("\n<details") == len(reports)
    assert "\nPrices: free" not in combined


def test_a_huge_producer_name_keeps_the_table_in_the_comment() -> None:
    plan = parse_plan("p" * 100_000, synthetic(rc("digitalocean_droplet.d", ["delete"], before={})), {})
    md = format_markdown(producer_reports([plan]))
    assert units(md) < 2_000 and "\n| " + "p" * 199 + "… | 0 | 0 | 0 | 1 |" in md
    rows = [line for line in combine([md, md]).splitlines() if line.startswith("| ppp")]
    assert len(rows) == 2


# --- the forges' limit ----------------------------------------------------------------------


def forty_creates(producer: str) -> str:
    """One producer's plan of 40 creates (about 9,000 characters), priced with unpriced sizes."""
    changes = [
        rc(
            f"digitalocean_droplet.n{j}",
            ["create"],
            after={"name": f"com.uvlava.{producer}.{j:03}" + "x" * 40},
        )
        for j in range(40)
    ]
    plan = parse_plan(producer, synthetic(*changes), {})
    return format_markdown(producer_reports([plan], costs={producer: hostile_cost()}), SANDBOX_CONTEXT)


def test_thirty_producers_over_the_limit_are_cut_once_with_every_row_kept() -> None:
    names = [f"p{i:02}" for i in range(30)]
    texts = [forty_creates(name) for name in reversed(names)]  # any file order
    assert all(units(text) < MARKDOWN_LIMIT for text in texts)  # each file whole on its own
    combined = combine(texts)
    assert units(combined) > 2 * COMMENT_LIMIT
    body, cut = compose(combined, "plan")
    assert cut and units(body) <= COMMENT_LIMIT
    assert body.startswith(marker("plan") + "\n<!-- infra-apply plan: commit=3f9c2e1ab84d")
    assert body.count("## infra-apply plan") == 1 and body.count("Sandbox plan") == 1
    rows = re.findall(r"(?m)^\| (p\d\d) \| 40 \|", body)
    assert rows == names  # the whole table, in producer order, before any section
    assert body.count("<details") == body.count("</details>") and body.count("```") % 2 == 0
    assert body.endswith("comment limit; the rest is in the CI job log and its plan artifact.\n")


# --- invisible on the forge -----------------------------------------------------------------


def gfm(text: str) -> str:
    """GitHub's renderer (cmark-gfm), raw HTML kept so hidden comments can be seen and dropped."""
    html: str = cmarkgfm.github_flavored_markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE)
    return html


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_marks_change_nothing_github_shows(scenario: str) -> None:
    md = read_golden(scenario, "md")
    marks = re.compile(r"(?m)^<!-- infra-apply:.* -->\n")
    assert marks.search(md)
    # Each mark is an HTML comment block of its own: drop it from the HTML and it is the page
    # the comment without marks renders (the table whole, no stray text).
    assert marks.sub("", gfm(md)) == gfm(marks.sub("", md))


def test_the_combined_table_renders_one_row_per_producer() -> None:
    texts = [format_markdown([r], SANDBOX_CONTEXT) for r in reports_of("update_size_and_import")]
    html = gfm(combine([*texts, FAILED]))
    assert html.count("<table>") == 1 and html.count("<tr>") == 3  # the head and two producers
    assert html.rstrip().endswith("<h3>mc: the plan failed (exit 1); see the job log</h3>")
