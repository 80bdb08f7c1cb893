"""Being stopped like Ctrl-C: one SIGTERM handler, for the demo and the ``top`` command,
raised like Ctrl-C so that the same clean-up runs. Standard library only.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from types import FrameType
from typing import Iterator, Optional

__all__ = ["Terminated", "sigterm_interrupts"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same clean-up runs."""


def _terminate(signum: int, frame: Optional[FrameType]) -> None:
    raise Terminated


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside, SIGTERM raises :class:`Terminated` in the main thread; the handler there
    before is put back on the way out. Install it before ``curses.initscr``: curses installs
    its own SIGTERM handler, which ends the process without our clean-up, only where
    none is set."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
