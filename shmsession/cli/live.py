"""Output that changes while you watch: the ``top`` view and ``load``'s progress bar.

On a terminal ``top`` draws through :mod:`curses` (the alternate screen, no cursor, keys
read without echo so that ``q`` quits); anywhere else it prints one line, or one JSON object,
per interval.
"""

from __future__ import annotations

import curses
import json
import signal
import sys
import time
from types import TracebackType
from typing import Dict, List, Optional, Sequence, TextIO, Tuple, Type

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


def _can_draw() -> bool:
    """Whether curses knows the terminal on stdout ($TERM) and can move its cursor."""
    try:
        curses.setupterm(fd=sys.stdout.fileno())
    except curses.error:  # TERM unset or unknown
        return False
    return curses.tigetstr("cup") is not None


class _Screen:
    """The terminal during ``top``, through curses; everything is undone on exit (curses
    restores the terminal modes it found), whatever ends the loop. ``keys``: read keys
    from stdin (only when it is a terminal), so that ``q`` quits."""

    def __init__(self, keys: bool) -> None:
        self.keys = keys
        self.lines: Sequence[str] = ()

    def __enter__(self) -> "_Screen":
        self.win = curses.initscr()
        try:
            curses.noecho()
            curses.cbreak()  # keys one by one; unlike raw mode, Ctrl-C still sends SIGINT
            self.win.keypad(True)  # a resized terminal reads as KEY_RESIZE
            try:
                curses.curs_set(0)
            except curses.error:  # a terminal that cannot hide its cursor
                pass
        except BaseException:
            curses.endwin()
            raise
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        curses.endwin()

    def draw(self, lines: Sequence[str]) -> None:
        self.lines = lines
        rows, columns = self.win.getmaxyx()
        self.win.erase()
        for y, line in enumerate(lines[:rows]):
            try:
                self.win.addnstr(y, 0, line, columns)
            except curses.error:  # the bottom-right cell: the cursor cannot move past it
                pass
        self.win.refresh()

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds``; True when ``q`` was pressed meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if not self.keys:
                time.sleep(left)
                continue
            self.win.timeout(max(1, int(left * 1000)))
            key = self.win.getch()
            if key in (ord("q"), ord("Q")):
                return True
            if key == curses.KEY_RESIZE:
                self.draw(self.lines)


def top(store: SessionStorage, interval: float, iterations: Optional[int],
        as_json: bool) -> int:
    """Show ``store``'s figures every ``interval`` seconds, ``iterations`` times or until
    q, Ctrl-C (exit status 0) or SIGTERM (128 + SIGTERM)."""
    prev: Optional[Sample] = None
    frames = 0
    try:
        with sigterm_interrupts():
            if sys.stdout.isatty() and not as_json and _can_draw():
                with _Screen(keys=sys.stdin.isatty()) as screen:
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
