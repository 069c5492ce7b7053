"""color.py: the one decision whether a stream gets colour, and the palette."""

from __future__ import annotations

import pytest

from infra_apply.color import paint, paint_lines, wanted


@pytest.mark.parametrize(
    ("flag", "env", "isatty", "expected"),
    [
        (None, {}, True, True),  # a terminal: colour
        (None, {}, False, False),  # a pipe or a file: none
        (None, {"NO_COLOR": "1"}, True, False),  # https://no-color.org: any non-empty value
        (None, {"NO_COLOR": "0"}, True, False),
        (None, {"NO_COLOR": ""}, True, True),  # empty: as if unset
        (False, {}, True, False),  # --no-color
        (False, {"FORCE_COLOR": "1"}, True, False),
        (True, {}, False, True),  # --color, even into a pipe (CI logs that render ANSI)
        (True, {"NO_COLOR": "1"}, False, True),  # the command line overrides the environment
        (None, {"FORCE_COLOR": "1"}, False, True),
        (None, {"FORCE_COLOR": "0"}, False, False),  # 0 / false: not forced
        (None, {"FORCE_COLOR": "false"}, True, True),
        (None, {"FORCE_COLOR": "1", "NO_COLOR": "1"}, True, False),  # NO_COLOR wins the tie
    ],
)
def test_who_decides(flag: bool | None, env: dict[str, str], isatty: bool, expected: bool) -> None:
    assert wanted(flag, env, isatty) is expected


def test_paint_is_a_no_op_without_colour_and_styles_each_line_alone() -> None:
    assert paint("  - destroy", "delete", False) == "  - destroy"
    assert paint("  - destroy", "delete", True) == "\x1b[31m  - destroy\x1b[0m"
    assert paint("x", "no-op", True) == "x"  # an action without a colour stays plain
    assert paint_lines("a\nb", "refusal", True) == "\x1b[31m\x1b[1ma\x1b[0m\n\x1b[31m\x1b[1mb\x1b[0m"
