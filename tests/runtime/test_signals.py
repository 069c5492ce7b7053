"""Signal handlers that never lose a stop (runtime/signals.py)."""

from __future__ import annotations

import signal
import sys
import threading

import pytest

from infra_apply.errors import Stopped
from infra_apply.runtime import signals


def test_a_stop_raises_where_it_lands() -> None:
    handler = signals.stopping(Stopped)
    with pytest.raises(Stopped) as stopped:
        handler(signal.SIGTERM, sys._getframe())
    assert stopped.value.signum == signal.SIGTERM


def test_a_stop_landing_in_a_finalizer_is_sent_again_not_lost(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python prints an exception raised in ``__del__`` and drops it: a SIGTERM landing while
    filelock's lock object was being collected let the run go on as if never stopped."""
    sent = threading.Event()
    kills: list[int] = []

    def kill(_pid: int, signum: int) -> None:
        kills.append(signum)
        sent.set()

    monkeypatch.setattr(signals.os, "kill", kill)
    handler = signals.stopping(Stopped)

    class Lock:
        def __del__(self) -> None:
            handler(signal.SIGTERM, sys._getframe())  # where the signal landed

    Lock()  # collected at once: its finalizer runs here
    assert sent.wait(30), "the stop was dropped"
    assert kills == [signal.SIGTERM]
    assert "Exception ignored" not in capsys.readouterr().err
