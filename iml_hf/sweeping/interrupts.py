"""Stopping a sweep: Ctrl-C (SIGINT) and SIGTERM raise ``Interrupted`` while it runs, and are ignored
while it cleans up (a second Ctrl-C must not cut the cleanup short)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM reached the sweep; ``code`` is its exit status (128 + signal)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.code = 128 + signum


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def _handled_by(handler: Callable[[int, FrameType | None], Any] | signal.Handlers) -> Iterator[None]:
    """SIGINT and SIGTERM go to ``handler`` inside the block, then their handlers are restored (main
    thread only: no other thread may set a handler)."""
    saved = {}
    if threading.current_thread() is threading.main_thread():
        saved = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in saved.items():
            signal.signal(signum, old)


def signals_interrupt() -> AbstractContextManager[None]:
    """Inside the block SIGINT and SIGTERM (scancel, kill) raise ``Interrupted``: SIGTERM stops the sweep as Ctrl-C does."""
    return _handled_by(_raise_interrupted)


def signals_ignored() -> AbstractContextManager[None]:
    """Inside the block SIGINT and SIGTERM are ignored."""
    return _handled_by(signal.SIG_IGN)
