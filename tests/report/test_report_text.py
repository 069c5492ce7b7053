"""The terminal summary: destructive changes first, values only when safe, one line each."""

from __future__ import annotations

import re

import pytest

from infra_apply.plan.model import parse_plan
from infra_apply.report import producer_reports
from infra_apply.report.text import format_text
from tests.plan_fixtures import (
    HOSTILE,
    IMPORT_NAMES,
    OUTSIDE_NAMES,
    RESIZE_NAMES,
    SCENARIOS,
    hostile_plans,
    parsed,
    rc,
    read_golden,
    render_golden,
    synthetic,
)

# The SGR sequences the palette uses: green, yellow, bright magenta + bold, red, cyan, reset.
GREEN, YELLOW, MAGENTA, RED, CYAN, RESET = (
    "\x1b[32m",
    "\x1b[33m",
    "\x1b[95m\x1b[1m",
    "\x1b[31m",
    "\x1b[36m",
    "\x1b[0m",
)
SGR = re.compile(r"\x1b\[[0-9;]*m")


def test_steady_state_plan_is_one_line_saying_so() -> None:
    plan = parsed("no_changes")
    assert format_text(producer_reports([plan])) == "Producer quinn:\nNo changes.\n"


def test_text_tells_how_to_fix_name_drift() -> None:
    text = format_text(producer_reports([parsed("name_drift")]))
    assert (
        '  ! name drift: digitalocean_droplet.quinn_artifacts is live as "quinn-artifacts-01" but '
        'the manifest says "com.uvlava.quinn.artifacts" — run infra-apply rename --producer quinn '
        "com.uvlava.quinn.artifacts\n"
    ) in text


def test_text_lists_destructive_changes_first_with_counts() -> None:
    text = format_text(producer_reports([parsed("replace_delete")]))
    lines = text.splitlines()
    assert lines[0] == "Producer quinn:"
    actions = [line[:11] for line in lines[1:-1]]
    assert actions == ["  - destroy"] * 4 + ["-/+ replace", "  ~ update "]
    assert lines[5] == (
        "-/+ replace com.uvlava.quinn.artifacts (digitalocean_droplet.quinn_artifacts): "
        'region "nyc3" → "fra1" forces replacement'
    )
    assert lines[-1] == "Plan: 0 to create, 1 to update, 1 to replace, 4 to destroy, 0 to import."


def test_text_shows_update_values_creates_and_imports() -> None:
    text = format_text(producer_reports([parsed("update_size", "ct"), parsed("import", names=IMPORT_NAMES)]))
    assert (
        "  ~ resize  com.uvlava.ct.services (digitalocean_droplet.ct_services): "
        'size "s-1vcpu-1gb" → "s-2vcpu-4gb": downtime'
    ) in text
    assert "  + create  com.uvlava.ct.gpu (digitalocean_droplet.ct_gpu[0])\n" in text
    assert (
        " <= import  com.uvlava.quinn.artifacts (digitalocean_droplet.quinn_artifacts): import id 412345678"
    ) in text
    assert "Plan: 1 to create, 1 to update, 0 to replace, 0 to destroy, 2 to import." in text


def test_text_marks_a_resize_as_downtime_and_calls_out_public_ports() -> None:
    lines = format_text(producer_reports([parsed("resize_ports", names=RESIZE_NAMES)])).splitlines()
    assert lines[1] == (
        '  ~ resize  com.uvlava.dns (digitalocean_droplet.dns): size "s-1vcpu-1gb" → "s-1vcpu-2gb": '
        "downtime (powered off, resized, powered on); the disk grows and can never be shrunk back"
    )
    # disk, memory, vcpus and prices follow from the size: not listed again attribute by attribute
    assert "memory" not in lines[1] and "price" not in lines[1]
    assert lines[4:6] == [
        "  ! public ports closed: 80/tcp, 443/tcp on firewall of com.uvlava.quinn.artifacts "
        "(digitalocean_firewall.quinn_artifacts)",
        "  ! public ports opened: 80/tcp, 443/tcp on firewall of com.uvlava.quinn.mcp "
        "(digitalocean_firewall.quinn_mcp)",
    ]


def test_hostile_names_stay_on_one_line_in_text() -> None:
    plans, _ = hostile_plans()
    text = format_text(producer_reports(plans))
    lines = text.splitlines()
    assert len(lines) == 1 + 2 * len(HOSTILE) + len(HOSTILE) + 1  # head, changes, drift, counts
    assert "\u202e" not in text and "\\u202e" in text
    assert "new\\nline\\n```" in text


def test_text_shows_what_changed_outside_terraform_before_its_own_changes() -> None:
    lines = format_text(producer_reports([parsed("outside_drift", names=OUTSIDE_NAMES)])).splitlines()
    start, mine = lines.index("  Changed outside Terraform:"), lines.index("  Changed by this plan:")
    assert start == 1 and mine == 6
    assert lines[2] == (
        "  ! deleted outside Terraform: com.uvlava.quinn.cache (digitalocean_droplet.quinn_cache) "
        "— this plan re-creates it"
    )
    assert lines[5] == (
        "  ! changed outside Terraform: firewall of com.uvlava.quinn.cache "
        "(digitalocean_firewall.quinn_cache): droplet_ids -1002 — this plan changes droplet_ids back"
    )
    assert (
        "  + create  com.uvlava.quinn.cache (digitalocean_droplet.quinn_cache) "
        "(undoes a change made outside Terraform)"
    ) in lines
    assert "  + create  firewall of com.uvlava.quinn.ci (digitalocean_firewall.quinn_ci)" in lines


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_text_prints_its_golden_byte_for_byte(scenario: str) -> None:
    assert render_golden(scenario, "txt") == read_golden(scenario, "txt")


def test_colour_marks_each_action_and_every_warning_line() -> None:
    reports = producer_reports(
        [
            parsed("replace_delete"),
            parsed("update_size", "ct"),
            parsed("import", names=IMPORT_NAMES),
            parsed("resize_ports", names=RESIZE_NAMES),
        ]
    )
    lines = format_text(reports, color=True).splitlines()
    assert (
        f"{RED}  - destroy{RESET} com.uvlava.quinn.mcp (digitalocean_droplet.quinn_mcp): "
        "no longer in the manifests" in lines
    )
    assert any(line.startswith(f"{MAGENTA}-/+ replace{RESET} com.uvlava.quinn.artifacts ") for line in lines)
    firewall = f"{YELLOW}  ~ update {RESET} firewall of com.uvlava.quinn.artifacts "
    assert any(line.startswith(firewall) for line in lines)
    assert any(line.startswith(f"{YELLOW}  ~ resize {RESET} com.uvlava.ct.services ") for line in lines)
    assert f"{GREEN}  + create {RESET} com.uvlava.ct.gpu (digitalocean_droplet.ct_gpu[0])" in lines
    assert any(line.startswith(f"{CYAN} <= import {RESET} com.uvlava.quinn.artifacts ") for line in lines)
    warnings = [line for line in lines if "! public ports" in line]
    assert len(warnings) == 4 and all(w.startswith(f"{YELLOW}  ! ") and w.endswith(RESET) for w in warnings)
    # Headings and counts stay plain; without the escapes the text is exactly the plain text.
    assert [line for line in lines if line.startswith(("Producer ", "Plan: "))] and not any(
        "\x1b" in line for line in lines if line.startswith(("Producer ", "Plan: "))
    )
    assert SGR.sub("", "\n".join(lines) + "\n") == format_text(reports)


def test_no_colour_is_the_plain_text() -> None:
    reports = producer_reports([parsed("replace_delete"), parsed("resize_ports", names=RESIZE_NAMES)])
    assert "\x1b" not in format_text(reports, color=False)
    assert format_text(reports, color=False) == format_text(reports)


def test_colour_never_lets_a_names_own_escape_sequences_through() -> None:
    # A name that would clear the screen, retitle the terminal and turn everything after it red.
    evil = "evil\x1b[2J\x1b]0;owned\x07\x1b[31m"
    plan = parse_plan(
        "quinn",
        synthetic(rc("digitalocean_droplet.k0", ["create"], after={"name": "x"})),
        {"digitalocean_droplet.k0": evil},
    )
    text = format_text(producer_reports([plan]), color=True)
    assert "evil\\x1b[2J\\x1b]0;owned\\x07\\x1b[31m (digitalocean_droplet.k0)" in text
    assert set(SGR.findall(text)) == {GREEN, RESET}  # only the palette's own sequences
    assert "\x1b" not in SGR.sub("", text) and "\x07" not in text
    hostile, _ = hostile_plans()
    assert "\x1b" not in SGR.sub("", format_text(producer_reports(hostile), color=True))
