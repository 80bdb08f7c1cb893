"""Output that changes while you watch: the ``top`` view and ``load``'s progress bar.

On a terminal ``top`` redraws the alternate screen (no cursor, keys read without echo so
that ``q`` quits); anywhere else it prints one line, or one JSON object, per interval.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import sys
import termios
import time
from types import TracebackType
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple, Type

from .. import SessionStorage, Stats
from .._process import Terminated, sigterm_interrupts
from .format import count, derived, format_bytes, percent, rate, ratio, table


#: ``load`` draws a progress bar (when stderr is a terminal) for snapshots of at least this
#: many sessions; smaller ones load in a blink.
PROGRESS_MIN_RECORDS = 1000

Sample = Tuple[float, Stats]  # (time.monotonic(), the store's figures then)


class ProgressBar:
    """A progress callback ``(n, total)`` that draws a bar on ``stream`` when it is a
    terminal and ``total`` reaches ``minimum``; it records ``total`` either way."""

    WIDTH = 30

    def __init__(self, label: str, stream: TextIO, minimum: int = PROGRESS_MIN_RECORDS) -> None:
        self.label = label
        self.stream = stream
        self.minimum = minimum
        self.enabled = stream.isatty()
        self.total = 0
        self.drawn = False
        self._last = 0.0

    def __call__(self, n: int, total: int) -> None:
        self.total = total
        if not self.enabled or total < self.minimum:
            return
        now = time.monotonic()
        if n < total and now - self._last < 0.1:
            return
        self._last = now
        filled = self.WIDTH * n // total
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
            f"{100 * n // total:3d}%  {n:,}/{total:,}"
        )
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def rates(cur: Sample, prev: Optional[Sample]) -> Optional[Dict[str, Optional[float]]]:
    """Per-second rates between two samples, and the hit rate over that interval."""
    if prev is None:
        return None
    dt = cur[0] - prev[0]
    a, b = prev[1], cur[1]
    if dt <= 0:
        return None
    hits, misses = b.hits - a.hits, b.misses - a.misses
    return {
        "ops": (hits + misses + b.writes - a.writes) / dt,
        "hits": hits / dt,
        "misses": misses / dt,
        "writes": (b.writes - a.writes) / dt,
        "deletes": (b.deletes - a.deletes) / dt,
        "evictions": (b.evictions - a.evictions) / dt,
        "expirations": (b.expirations - a.expirations) / dt,
        "lock_waits": (b.lock_waits - a.lock_waits) / dt,
        "lock_wait_seconds": (b.lock_wait_seconds - a.lock_wait_seconds) / dt,
        "hit_rate": ratio(hits, hits + misses),
    }


def top_frame(cur: Sample, prev: Optional[Sample], interval: float) -> List[str]:
    """The lines of one ``top`` screen."""
    s = cur[1]
    r = rates(cur, prev) or {}
    d = derived(s)
    clock = time.strftime("%H:%M:%S", time.localtime())

    def per_s(key: str) -> str:
        return rate(r.get(key))

    wait_time = r.get("lock_wait_seconds")
    rows = [
        ("", "now / since created", "last interval"),
        ("entries", f"{count(s.entries)} / {count(s.max_entries)} "
                    f"({percent(d['table_fill'])})", ""),
        ("heap used", f"{format_bytes(s.bytes_used)} / {format_bytes(s.heap_size)} "
                      f"({percent(d['heap_fill'])})", ""),
        ("largest free block", format_bytes(s.largest_free), ""),
        ("operations", count(s.hits + s.misses + s.writes), per_s("ops")),
        ("hits", count(s.hits), per_s("hits")),
        ("misses", count(s.misses), per_s("misses")),
        ("hit rate", percent(d["hit_rate"]), percent(r.get("hit_rate"))),
        ("writes", count(s.writes), per_s("writes")),
        ("deletes", count(s.deletes), per_s("deletes")),
        ("evictions", count(s.evictions), per_s("evictions")),
        ("expirations", count(s.expirations), per_s("expirations")),
        ("lock waits", count(s.lock_waits), per_s("lock_waits")),
        ("lock wait time", f"{s.lock_wait_seconds:.3f} s",
         "-" if wait_time is None else f"{1000 * wait_time:,.1f} ms/s"),
    ]
    return [
        f"shmsession top  store {s.name!r}  {format_bytes(s.size)}  every {interval:g} s  "
        f"{clock}",
        "",
        *table(rows, "<>>"),
        "",
        "rates appear after the second sample" if prev is None else "",
        "q or Ctrl-C quits",
    ]


def top_line(cur: Sample, prev: Optional[Sample]) -> str:
    """One plain line of ``top`` when stdout is not a terminal."""
    s = cur[1]
    r = rates(cur, prev) or {}
    d = derived(s)
    return (
        f"{time.strftime('%H:%M:%S', time.localtime())}  "
        f"entries {count(s.entries)}/{count(s.max_entries)} ({percent(d['table_fill'])})  "
        f"heap {format_bytes(s.bytes_used)}/{format_bytes(s.heap_size)} "
        f"({percent(d['heap_fill'])})  ops {rate(r.get('ops'))}  "
        f"hit rate {percent(r.get('hit_rate'))}  evictions {rate(r.get('evictions'))}  "
        f"expirations {rate(r.get('expirations'))}  lock waits {rate(r.get('lock_waits'))}"
    )


class _Screen:
    """The terminal during ``top``: the alternate screen, no cursor, and (when stdin is the
    terminal too) keys read without echo, so ``q`` quits. Everything is undone on exit,
    whatever ends the loop."""

    ENTER = "\x1b[?1049h\x1b[?25l"
    LEAVE = "\x1b[0m\x1b[?25h\x1b[?1049l"

    def __init__(self, out: TextIO, keys: Optional[TextIO]) -> None:
        self.out = out
        self.key_fd = keys.fileno() if keys is not None and keys.isatty() else -1
        self._saved: Optional[List[Any]] = None

    def __enter__(self) -> "_Screen":
        if self.key_fd >= 0:
            try:
                self._saved = termios.tcgetattr(self.key_fd)
                mode = termios.tcgetattr(self.key_fd)
                mode[3] &= ~(termios.ECHO | termios.ICANON)  # keep ISIG: Ctrl-C still works
                mode[6][termios.VMIN] = 1
                mode[6][termios.VTIME] = 0
                termios.tcsetattr(self.key_fd, termios.TCSANOW, mode)
            except termios.error:
                self.key_fd = -1
                self._saved = None
        self.out.write(self.ENTER)
        self.out.flush()
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        try:
            self.out.write(self.LEAVE)
            self.out.flush()
        finally:
            if self._saved is not None:
                termios.tcsetattr(self.key_fd, termios.TCSADRAIN, self._saved)

    def draw(self, lines: Sequence[str]) -> None:
        size = shutil.get_terminal_size()
        shown = [line[: size.columns] for line in lines[: size.lines]]
        self.out.write("\x1b[H" + "".join(f"{line}\x1b[K\r\n" for line in shown)[:-2] + "\x1b[J")
        self.out.flush()

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds``; True when ``q`` was pressed meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.key_fd < 0:
                time.sleep(left)
                continue
            ready, _, _ = select.select([self.key_fd], [], [], left)
            if ready:
                data = os.read(self.key_fd, 64)
                if not data or b"q" in data.lower():
                    return True


def top(store: SessionStorage, interval: float, iterations: Optional[int],
        as_json: bool) -> int:
    """Show ``store``'s figures every ``interval`` seconds, ``iterations`` times or until
    q, Ctrl-C (exit status 0) or SIGTERM (128 + SIGTERM)."""
    prev: Optional[Sample] = None
    frames = 0
    try:
        with sigterm_interrupts():
            if sys.stdout.isatty() and not as_json:
                keys = sys.stdin if sys.stdin.isatty() else None
                with _Screen(sys.stdout, keys) as screen:
                    while True:
                        cur = (time.monotonic(), store.stats())
                        screen.draw(top_frame(cur, prev, interval))
                        prev = cur
                        frames += 1
                        if frames == iterations or screen.wait(interval):
                            break
            else:
                while True:
                    cur = (time.monotonic(), store.stats())
                    if as_json:
                        print(json.dumps({"time": time.time(), **cur[1].as_dict(),
                                          **derived(cur[1]), "rates": rates(cur, prev)},
                                         sort_keys=True), flush=True)
                    else:
                        print(top_line(cur, prev), flush=True)
                    prev = cur
                    frames += 1
                    if frames == iterations:
                        break
                    time.sleep(interval)
    except Terminated:
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        pass  # Ctrl-C is how top is meant to end
    return 0
