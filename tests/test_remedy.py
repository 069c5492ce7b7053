"""Remedies name the files the run used wherever they are pasted (remedy.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra_apply import remedy


@pytest.fixture(autouse=True)
def _nothing_given() -> Iterator[None]:
    remedy.forget()
    yield
    remedy.forget()


def test_relative_paths_given_are_repeated_from_the_folder_the_run_started_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    remedy.out_verbs(frozenset({"apply"}))
    remedy.repeat_mesh("mesh-hosts.json")
    remedy.repeat_out("generated")
    printed = remedy.command("apply", "--producer", "quinn", keep=("--sandbox",))
    assert printed == (
        f"infra-apply apply --producer quinn --mesh-hosts {tmp_path / 'mesh-hosts.json'} "
        f"--out {tmp_path / 'generated'} --sandbox"
    )


def test_a_removed_current_folder_keeps_the_path_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    os.rmdir(gone)
    remedy.repeat_mesh("mesh-hosts.json")
    assert remedy.command("register", keep=()) == "infra-apply register --mesh-hosts mesh-hosts.json"
