"""Sections a signal must not cut short: a signal arriving inside waits for the section's end.

A Ctrl-C (or SIGTERM / SIGHUP, cli.py) stops Terraform cleanly wherever it lands; a few writes
must not be stopped halfway all the same, because what they leave behind costs money: the end of
a released GPU's lease (left claimed, the next plan would create the GPU again).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

_NAMES = ("SIGINT", "SIGTERM", "SIGHUP")
AGAIN_SECONDS = 0.005  # a finalizer runs for microseconds


def stopping(make: Callable[[int], BaseException]) -> Callable[[int, FrameType | None], None]:
    """A handler raising ``make(signum)`` where the signal lands, except inside a finalizer
    (``__del__``, run whenever an object goes, filelock's among them): Python prints an
    exception raised there and drops it, and the stop would be lost (the run going on after its
    SIGTERM). There the signal is sent again a moment later, once the finalizer has returned."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if _in_finalizer(frame):
            again = threading.Timer(AGAIN_SECONDS, os.kill, (os.getpid(), signum))
            again.daemon = True
            again.start()
            return
        raise make(signum)

    return handler


def _in_finalizer(frame: FrameType | None) -> bool:
    for _ in range(256):
        if frame is None:
            return False
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold INT, TERM and HUP for the section; the first one held is then handled as it would
    have been (KeyboardInterrupt, cli's Stopped, or the default action). Off the main thread a
    signal never raises, so there it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        held.append(signum)

    numbers = [n for name in _NAMES if (n := getattr(signal, name, None)) is not None]
    previous = {n: signal.getsignal(n) for n in numbers}
    for n in numbers:
        if previous[n] is not signal.SIG_IGN:
            signal.signal(n, hold)
    try:
        yield
    finally:
        for n in numbers:
            signal.signal(n, previous[n])
    if held:
        _handle(held[0], previous[held[0]])


def _handle(signum: int, handler: object) -> None:
    if callable(handler):
        handler(signum, None)
    elif signum == signal.SIGINT and handler == signal.SIG_DFL:
        raise KeyboardInterrupt
    else:
        os.kill(os.getpid(), signum)  # its default action, as if it came now
