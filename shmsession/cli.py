"""The ``shmsession`` command line: look into, watch, check, snapshot and remove stores.

Formatting only: every figure comes from :class:`~shmsession.store.SessionStorage`
(``stats``, ``sessions``, ``check``, ``dump``, ``load``, ``clear``, ``unlink_name``), and a
store is opened with ``create=False``, so no command but ``load`` ever makes one. Store
errors become one line on stderr and an exit status (see :data:`EPILOG`), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import select
import shutil
import signal
import sys
import termios
import time
from types import FrameType, TracebackType
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple, Type

from ._errors import (
    CorruptSegment,
    InvalidName,
    InvalidOption,
    LayoutVersionMismatch,
    SegmentError,
    SegmentPermissionError,
    ShmSessionError,
    StoreFull,
)
from ._segment import segment_path
from .store import SessionInfo, SessionStorage, Stats

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_NO_STORE",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "EXIT_USAGE",
    "format_bytes",
    "format_duration",
    "main",
    "prometheus_text",
]

EXIT_OK = 0
EXIT_PROBLEM = 1  # the check or operation found a problem (or a store error, or "no")
EXIT_USAGE = 2  # bad arguments (argparse's own code), or a confirmation that cannot be asked
EXIT_NO_STORE = 3  # no store of that name exists
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), except in `top`, where Ctrl-C is how to quit

PROG = "shmsession"

EPILOG = """\
exit status:
  0    success (check: the store is sound)
  1    a problem: check found damage, a snapshot is truncated or altered, the store
       refused (permission, layout version, lock timeout...), or you answered "no"
  2    usage error, or clear/unlink without --yes when stdin is not a terminal
  3    no store of that name exists
  130  interrupted (Ctrl-C); `top` exits 0 on Ctrl-C or q

A store NAME is the one given to SessionStorage(NAME); it lives in /dev/shm/shmsession.NAME.
Only `load` creates a store; every other command attaches to an existing one.
"""

#: ``load`` draws a progress bar (when stderr is a terminal) for snapshots of at least this
#: many sessions; smaller ones load in a blink.
PROGRESS_MIN_RECORDS = 1000


class _Exit(Exception):
    """Ends the command with ``code`` and (unless empty) ``message`` on stderr."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Terminated(KeyboardInterrupt):
    """SIGTERM during ``top``, raised like Ctrl-C so that the terminal is restored."""


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def format_bytes(n: float) -> str:
    """``512 B``, ``12.5 KiB``, ``1.2 MiB``... (powers of 1024)."""
    if n < 1024:
        return f"{int(n)} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TiB"


def format_duration(seconds: Optional[float]) -> str:
    """``4.2s``, ``42s``, ``12m05s``, ``3h02m``, ``2d03h``; ``never`` for None."""
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{int(seconds)}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _count(n: int) -> str:
    return f"{n:,}"


def _ratio(part: float, whole: float) -> Optional[float]:
    return part / whole if whole else None


def _percent(ratio: Optional[float]) -> str:
    return "-" if ratio is None else f"{100 * ratio:.1f}%"


def _rate(per_second: Optional[float]) -> str:
    return "-" if per_second is None else f"{per_second:,.1f}/s"


def _derived(s: Stats) -> Dict[str, Optional[float]]:
    """The ratios every view shows: fill of table and heap, hit rate (None: no reads yet)."""
    return {
        "table_fill": _ratio(s.entries, s.max_entries),
        "heap_fill": _ratio(s.bytes_used, s.heap_size),
        "hit_rate": _ratio(s.hits, s.hits + s.misses),
    }


def stats_lines(s: Stats) -> List[str]:
    """``stats`` for people: one aligned ``label  value`` line per figure."""
    d = _derived(s)
    rows = [
        ("store", f"{s.name} ({format_bytes(s.size)} of shared memory)"),
        ("entries", f"{_count(s.entries)} of {_count(s.max_entries)} "
                    f"({_percent(d['table_fill'])} of the table)"),
        ("heap", f"{format_bytes(s.bytes_used)} of {format_bytes(s.heap_size)} used "
                 f"({_percent(d['heap_fill'])}), {format_bytes(s.bytes_free)} free"),
        ("largest free block", format_bytes(s.largest_free)),
        ("fragmentation", f"{_percent(s.fragmentation)} of the free space is outside the "
                          "largest free block"),
        ("hit rate", f"{_percent(d['hit_rate'])} ({_count(s.hits)} hits, "
                     f"{_count(s.misses)} misses)"),
        ("writes", _count(s.writes)),
        ("deletes", _count(s.deletes)),
        ("evictions", _count(s.evictions)),
        ("expirations", _count(s.expirations)),
        ("room made", f"{_count(s.room_writes)} writes evicted {_count(s.room_evictions)} "
                      f"sessions for contiguous room (at most {_count(s.room_max_evictions)} "
                      "at once)"),
        ("lock waits", f"{_count(s.lock_waits)} ({s.lock_wait_seconds:.3f} s waited in all)"),
    ]
    width = max(len(label) for label, _ in rows)
    return [f"{label:<{width}}  {value}" for label, value in rows]


# name, HELP text, value: each metric of the Prometheus exposition.
_Metric = Tuple[str, str, Callable[[Stats], float]]
_GAUGES: Tuple[_Metric, ...] = (
    ("entries", "Sessions in the store, expired ones not yet reclaimed included.",
     lambda s: s.entries),
    ("max_entries", "Most sessions the store holds.", lambda s: s.max_entries),
    ("table_fill_ratio", "entries / max_entries.", lambda s: s.entries / s.max_entries),
    ("size_bytes", "Shared memory reserved for the store.", lambda s: s.size),
    ("heap_size_bytes", "Bytes of the value heap.", lambda s: s.heap_size),
    ("heap_used_bytes", "Bytes of the value heap in use.", lambda s: s.bytes_used),
    ("heap_free_bytes", "Bytes of the value heap free.", lambda s: s.bytes_free),
    ("heap_largest_free_bytes", "Largest free block of the value heap.",
     lambda s: s.largest_free),
    ("heap_fill_ratio", "heap_used_bytes / heap_size_bytes.",
     lambda s: s.bytes_used / s.heap_size if s.heap_size else 0.0),
    ("heap_fragmentation_ratio", "1 - largest free block / free bytes.",
     lambda s: s.fragmentation),
    ("room_max_evictions", "Most sessions one write evicted for contiguous room.",
     lambda s: s.room_max_evictions),
)
_COUNTERS: Tuple[_Metric, ...] = (
    ("hits", "Reads that found a live session.", lambda s: s.hits),
    ("misses", "Reads that found no live session.", lambda s: s.misses),
    ("writes", "Sessions written.", lambda s: s.writes),
    ("deletes", "Live sessions deleted.", lambda s: s.deletes),
    ("evictions", "Live sessions evicted to make room.", lambda s: s.evictions),
    ("expirations", "Expired sessions reclaimed.", lambda s: s.expirations),
    ("room_writes", "Writes that evicted sessions for contiguous room.",
     lambda s: s.room_writes),
    ("room_evictions", "Sessions evicted for contiguous room (also in evictions, expirations).",
     lambda s: s.room_evictions),
    ("lock_waits", "Lock acquisitions that had to wait.", lambda s: s.lock_waits),
    ("lock_wait_seconds", "Seconds spent waiting for the lock.", lambda s: s.lock_wait_seconds),
)


def _prom_number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _prom_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(s: Stats) -> str:
    """The Prometheus text exposition format (version 0.0.4) of ``s``, for the node
    exporter's textfile collector: ``# HELP`` and ``# TYPE`` before each metric's one
    sample, counters named ``shmsession_<x>_total``, every sample labelled
    ``store="NAME"``, the last line ended by a line feed. The counters count since the
    segment was made, so a re-created store shows as a counter reset."""
    label = f'{{store="{_prom_label(s.name)}"}}'
    out: List[str] = []
    for kind, metrics, suffix in (("gauge", _GAUGES, ""), ("counter", _COUNTERS, "_total")):
        for name, text, value in metrics:
            metric = f"shmsession_{name}{suffix}"
            out.append(f"# HELP {metric} {text}")
            out.append(f"# TYPE {metric} {kind}")
            out.append(f"{metric}{label} {_prom_number(value(s))}")
    return "\n".join(out) + "\n"


def session_lines(rows: Sequence[SessionInfo]) -> List[str]:
    """``ls`` for people: an aligned table of digest, size, age, time left, version."""
    table = [("DIGEST", "SIZE", "AGE", "TIME LEFT", "VERSION")] + [
        (r.digest, format_bytes(r.size), format_duration(r.age), format_duration(r.ttl),
         str(r.version))
        for r in rows
    ]
    widths = [max(len(row[k]) for row in table) for k in range(5)]
    return [
        "  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])])
        for row in table
    ]


def _problems_of(exc: CorruptSegment) -> Tuple[List[str], int]:
    """The problems a :class:`CorruptSegment` names, one per item, and how many there are
    in all (the store lists at most 20 in its message)."""
    problems = getattr(exc, "problems", None)
    if isinstance(problems, (list, tuple)) and problems:
        return [str(p) for p in problems], len(problems)
    message = str(exc)
    m = re.match(r"store .* fails (\d+) check\(s\): (.*)\Z", message, re.S)
    if m is None:
        return [message], 1
    listed = m.group(2).split("; ")
    return listed, max(int(m.group(1)), len(listed))


# --------------------------------------------------------------------------------------------
# Opening a store, asking, progress
# --------------------------------------------------------------------------------------------


def _open(args: argparse.Namespace) -> SessionStorage:
    """Attach to store ``args.name``; never creates one."""
    name: str = args.name
    try:
        return SessionStorage(name, create=False, lock_timeout=args.lock_timeout)
    except SegmentError as exc:
        if isinstance(exc, (SegmentPermissionError, CorruptSegment, LayoutVersionMismatch)):
            raise
        if not _exists(name):
            raise _Exit(EXIT_NO_STORE, _no_store(name)) from None
        raise


def _exists(name: str) -> bool:
    try:
        return SessionStorage.exists(name)
    except ShmSessionError:  # there is something, which we may not open
        return True


def _no_store(name: str) -> str:
    return (f"no store named {name!r} ({segment_path(name)} does not exist); check the name, "
            "and that the application that creates it has started")


def _confirm(question: str, yes: bool, action: str) -> None:
    """Ask ``question`` on the terminal unless ``yes``; raise :class:`_Exit` unless the
    answer is yes. Without a terminal to ask on, refuse: only ``--yes`` may go ahead."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise _Exit(EXIT_USAGE, f"refusing to {action} without --yes: stdin is not a terminal "
                                "to ask for confirmation")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if answer.strip().lower() not in ("y", "yes"):
        if not answer.endswith("\n"):
            sys.stderr.write("\n")
        raise _Exit(EXIT_PROBLEM, "not confirmed; nothing was changed")


class _ProgressBar:
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


# --------------------------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------------------------


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def cmd_stats(args: argparse.Namespace) -> int:
    with _open(args) as store:
        s = store.stats()
    if args.json:
        _print_json({**s.as_dict(), **_derived(s)})
    elif args.prometheus:
        sys.stdout.write(prometheus_text(s))
    else:
        print("\n".join(stats_lines(s)))
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    with _open(args) as store:
        rows = store.sessions()
    key: Callable[[SessionInfo], Any] = {
        "age": lambda r: r.age,  # oldest first
        "size": lambda r: r.size,  # largest first
        "ttl": lambda r: -math.inf if r.ttl is None else -r.ttl,  # soonest to expire first
    }[args.sort]
    rows.sort(key=key, reverse=not args.reverse)
    shown = rows if args.limit is None else rows[: args.limit]
    if args.json:
        _print_json([
            {"digest": r.digest, "size": r.size, "age": r.age, "ttl": r.ttl,
             "version": r.version}
            for r in shown
        ])
        return EXIT_OK
    if not rows:
        print(f"no live sessions in store {args.name!r}")
        return EXIT_OK
    print("\n".join(session_lines(shown)))
    total = sum(r.size for r in rows)
    more = f"; showing {len(shown):,} (--limit)" if len(shown) < len(rows) else ""
    print(f"{len(rows):,} live session(s), {format_bytes(total)} of values{more}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    problems: List[str] = []
    count = 0
    entries: Optional[int] = None
    try:
        with _open(args) as store:
            store.check()
            entries = store.stats().entries
    except CorruptSegment as exc:  # raised by check(), or by opening a damaged header
        problems, count = _problems_of(exc)
    if args.json:
        _print_json({"name": args.name, "sound": not problems, "problems": problems,
                     "problem_count": count})
    elif not problems:
        print(f"store {args.name!r} is sound ({entries:,} entries checked)")
    else:
        print(f"store {args.name!r} is DAMAGED: {count} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        if count > len(problems):
            print(f"  ... and {count - len(problems)} more")
        print(f"Its sessions cannot be trusted: remove it (shmsession unlink {args.name}) and "
              "let the application create it again.")
    return EXIT_PROBLEM if problems else EXIT_OK


def cmd_clear(args: argparse.Namespace) -> int:
    with _open(args) as store:
        n = len(store)
        _confirm(f"Delete all {n:,} session(s) of store {args.name!r}? Every user of it is "
                 "logged out.", args.yes, "clear the store")
        store.clear()
    print(f"cleared store {args.name!r}: {n:,} session(s) deleted")
    return EXIT_OK


def cmd_unlink(args: argparse.Namespace) -> int:
    name: str = args.name
    if not _exists(name):
        raise _Exit(EXIT_NO_STORE, _no_store(name))
    try:
        with _open(args) as store:
            what = f" ({len(store):,} session(s), {format_bytes(store.stats().size)})"
    except ShmSessionError:  # damaged or foreign: unlinking is the remedy, so go on
        what = " (it cannot be opened)"
    _confirm(f"Remove store {name!r}{what}? Its sessions are lost, and processes attached to "
             "it get SegmentUnlinked on their next call.", args.yes, "unlink the store")
    if not SessionStorage.unlink_name(name):
        raise _Exit(EXIT_NO_STORE, _no_store(name))
    print(f"removed store {name!r}")
    return EXIT_OK


def cmd_dump(args: argparse.Namespace) -> int:
    with _open(args) as store:
        count = store.dump(args.file)
    size = os.stat(args.file).st_size
    print(f"dumped {count:,} session(s) of store {args.name!r} to {args.file} "
          f"({format_bytes(size)})")
    return EXIT_OK


def cmd_load(args: argparse.Namespace) -> int:
    options: Dict[str, Any] = {
        key: getattr(args, key)
        for key in ("size", "max_entries", "max_value_size")
        if getattr(args, key) is not None
    }
    # A store too small for the snapshot would evict (log out) some of its users as it
    # loads; unless asked to, refuse instead (the store then removes what it began).
    options["when_full"] = "evict" if args.evict else "raise"
    bar = _ProgressBar("loading", sys.stderr)
    try:
        with SessionStorage.load(args.name, args.file, progress=bar,
                                 lock_timeout=args.lock_timeout, **options) as store:
            live = len(store)
            s = store.stats()
    except StoreFull:
        raise _Exit(EXIT_PROBLEM, f"the sessions of {args.file} do not fit in a store of these "
                                  "sizes: give a larger --size or --max-entries (or --evict "
                                  "to drop the least recently used); nothing was created"
                    ) from None
    except InvalidOption as exc:
        raise _Exit(EXIT_USAGE, str(exc)) from None  # options the store refused
    finally:
        bar.finish()
    notes = []
    expired = bar.total - live - s.evictions
    if expired > 0:
        notes.append(f"{expired:,} expired while the store was down")
    if s.evictions:
        notes.append(f"{s.evictions:,} evicted for lack of room (--evict)")
    print(f"loaded {live:,} session(s) from {args.file} into new store {args.name!r} "
          f"({format_bytes(s.size)})" + "".join(f"; {note}" for note in notes))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, extra: List[str]) -> int:
    from . import demo  # imports http.client and friends: only when asked

    return demo.main(extra)


# --------------------------------------------------------------------------------------------
# top
# --------------------------------------------------------------------------------------------


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


_Sample = Tuple[float, Stats]


def _rates(cur: _Sample, prev: Optional[_Sample]) -> Optional[Dict[str, Optional[float]]]:
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
        "hit_rate": _ratio(hits, hits + misses),
    }


def top_frame(cur: _Sample, prev: Optional[_Sample], interval: float) -> List[str]:
    """The lines of one ``top`` screen."""
    s = cur[1]
    r = _rates(cur, prev) or {}
    d = _derived(s)
    clock = time.strftime("%H:%M:%S", time.localtime())

    def per_s(key: str) -> str:
        return _rate(r.get(key))

    rows: List[Tuple[str, str, str]] = [
        ("entries", f"{_count(s.entries)} / {_count(s.max_entries)} "
                    f"({_percent(d['table_fill'])})", ""),
        ("heap used", f"{format_bytes(s.bytes_used)} / {format_bytes(s.heap_size)} "
                      f"({_percent(d['heap_fill'])})", ""),
        ("largest free block", format_bytes(s.largest_free), ""),
        ("operations", _count(s.hits + s.misses + s.writes), per_s("ops")),
        ("hits", _count(s.hits), per_s("hits")),
        ("misses", _count(s.misses), per_s("misses")),
        ("hit rate", _percent(d["hit_rate"]), _percent(r.get("hit_rate"))),
        ("writes", _count(s.writes), per_s("writes")),
        ("deletes", _count(s.deletes), per_s("deletes")),
        ("evictions", _count(s.evictions), per_s("evictions")),
        ("expirations", _count(s.expirations), per_s("expirations")),
        ("lock waits", _count(s.lock_waits), per_s("lock_waits")),
        ("lock wait time", f"{s.lock_wait_seconds:.3f} s",
         "-" if "lock_wait_seconds" not in r
         else f"{1000 * (r['lock_wait_seconds'] or 0.0):,.1f} ms/s"),
    ]
    w0 = max(len(row[0]) for row in rows)
    heads = ("", "now / since created", "last interval")
    w1 = max(len(row[1]) for row in rows + [heads])
    w2 = max(len(row[2]) for row in rows + [heads])
    lines = [
        f"shmsession top  store {s.name!r}  {format_bytes(s.size)}  every {interval:g} s  "
        f"{clock}",
        "",
        f"{heads[0]:<{w0}}  {heads[1]:>{w1}}  {heads[2]:>{w2}}",
    ]
    lines += [f"{a:<{w0}}  {b:>{w1}}  {c:>{w2}}" for a, b, c in rows]
    lines += ["", "rates appear after the second sample" if prev is None else "",
              "q or Ctrl-C quits"]
    return lines


def top_line(cur: _Sample, prev: Optional[_Sample]) -> str:
    """One plain line of ``top`` when stdout is not a terminal."""
    s = cur[1]
    r = _rates(cur, prev) or {}
    d = _derived(s)
    return (
        f"{time.strftime('%H:%M:%S', time.localtime())}  "
        f"entries {_count(s.entries)}/{_count(s.max_entries)} ({_percent(d['table_fill'])})  "
        f"heap {format_bytes(s.bytes_used)}/{format_bytes(s.heap_size)} "
        f"({_percent(d['heap_fill'])})  ops {_rate(r.get('ops'))}  "
        f"hit rate {_percent(r.get('hit_rate'))}  evictions {_rate(r.get('evictions'))}  "
        f"expirations {_rate(r.get('expirations'))}  lock waits {_rate(r.get('lock_waits'))}"
    )


def _terminate(signum: int, frame: Optional[FrameType]) -> None:
    raise _Terminated


def cmd_top(args: argparse.Namespace) -> int:
    with _open(args) as store:
        live = sys.stdout.isatty() and not args.json
        previous = signal.signal(signal.SIGTERM, _terminate)
        prev: Optional[_Sample] = None
        frames = 0
        try:
            if live:
                keys = sys.stdin if sys.stdin.isatty() else None
                with _Screen(sys.stdout, keys) as screen:
                    while True:
                        cur = (time.monotonic(), store.stats())
                        screen.draw(top_frame(cur, prev, args.interval))
                        prev = cur
                        frames += 1
                        if frames == args.iterations or screen.wait(args.interval):
                            break
            else:
                while True:
                    cur = (time.monotonic(), store.stats())
                    if args.json:
                        print(json.dumps({"time": time.time(), **cur[1].as_dict(),
                                          **_derived(cur[1]), "rates": _rates(cur, prev)},
                                         sort_keys=True), flush=True)
                    else:
                        print(top_line(cur, prev), flush=True)
                    prev = cur
                    frames += 1
                    if frames == args.iterations:
                        break
                    time.sleep(args.interval)
        except _Terminated:
            return 128 + signal.SIGTERM
        except KeyboardInterrupt:
            return EXIT_OK  # Ctrl-C is how top is meant to end
        finally:
            signal.signal(signal.SIGTERM, previous)
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """``1048576``, ``512K``, ``64M``, ``64MiB``, ``1G`` -> bytes (powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(?:i?[bB])?\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: give bytes, or a number with K, M or G (e.g. 64M)"
        )
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return n


def _positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    if not 0 < x < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return x


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Look into, watch, check, snapshot and remove shmsession stores "
                    "(session stores in POSIX shared memory).",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("name", metavar="NAME", help="the store's name")
    common.add_argument(
        "--lock-timeout", type=_positive_float, default=10.0, metavar="SECONDS",
        help="give up when the store's lock is not free within SECONDS (default 10): a "
             "worker stopped inside the store must not hang this command",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str, func: Callable[..., int], description: str = "",
                parents: Sequence[argparse.ArgumentParser] = (common,),
                **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=description or summary,
                           epilog=EPILOG, formatter_class=formatter, parents=list(parents),
                           **kw)
        p.set_defaults(func=func)
        return p

    p = command(
        "stats", "the store's figures: entries, fill, hit rate, evictions, lock waits",
        cmd_stats,
        "Show entries, fill of the table (entries / max_entries) and of the heap (bytes used /\n"
        "heap size), the largest free block, hit rate, evictions, expirations, lock waits and\n"
        "lock wait time. Counters count since the store was created; each process adds its\n"
        "hits, misses and writes every 64 operations, so the last few may not show yet.",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object, for machines")
    fmt.add_argument(
        "--prometheus", action="store_true",
        help="the Prometheus text format (for the node exporter's textfile collector)",
    )

    p = command(
        "top", "a live view of the figures and their rates per second", cmd_top,
        "Redraw the store's figures and their rates per second (operations = hits + misses +\n"
        "writes) every --interval, until q or Ctrl-C. When stdout is not a terminal, print\n"
        "one line per interval instead (--json: one JSON object per line).",
    )
    p.add_argument("--interval", type=_positive_float, default=1.0, metavar="SECONDS",
                   help="seconds between two samples (default 1)")
    p.add_argument("--iterations", type=_positive_int, default=None, metavar="N",
                   help="stop after N samples (default: run until interrupted)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per interval, with the rates (never a live view)")

    p = command(
        "ls", "one line per live session: digest, size, age, time left", cmd_ls,
        "List the live sessions: the keyed digest each is filed under (the store never holds\n"
        "raw session ids), the size of its value, its age, its time left and its version.",
    )
    p.add_argument("--sort", choices=("age", "size", "ttl"), default="age",
                   help="age: oldest first (default); size: largest first; ttl: soonest to "
                        "expire first")
    p.add_argument("-r", "--reverse", action="store_true", help="reverse the order")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="show the first N only")
    p.add_argument("--json", action="store_true", help="a JSON list, for machines")

    p = command(
        "check", "verify every structural invariant of the store", cmd_check,
        "Verify the store's structures. Exit 0 when it is sound; 1, with one problem per\n"
        "line, when it is damaged.",
    )
    p.add_argument("--json", action="store_true", help="a JSON object, for machines")

    p = command("clear", "delete every session of the store (asks first)", cmd_clear,
                "Delete every session; the store stays. Asks on the terminal unless --yes.")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")

    p = command(
        "unlink", "remove the store from the system (asks first)", cmd_unlink,
        "Remove the store's segment (also a damaged one). Processes attached to it get\n"
        "SegmentUnlinked on their next call. Asks on the terminal unless --yes.",
    )
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")

    p = command(
        "dump", "write every live session to a snapshot file", cmd_dump,
        "Write every live session, with its time left, to FILE: a versioned, checksummed\n"
        "snapshot, mode 0600 (it holds every session), replaced atomically.",
    )
    p.add_argument("file", metavar="FILE", help="the snapshot to write")

    p = command(
        "load", "create a store from a snapshot file", cmd_load,
        "Create store NAME from the snapshot FILE (the store must not exist). Each session\n"
        "gets the time it had left less the time since the dump. A truncated or altered\n"
        "file is refused before anything is created, and so is a snapshot that does not\n"
        "fit in the sizes given (unless --evict).",
    )
    p.add_argument("file", metavar="FILE", help="the snapshot to read")
    p.add_argument("--size", type=parse_size, metavar="BYTES",
                   help="shared memory for the new store, e.g. 64M (default 32M)")
    p.add_argument("--max-entries", type=_positive_int, metavar="N",
                   help="most sessions the new store holds (default size / 1024)")
    p.add_argument("--max-value-size", type=parse_size, metavar="BYTES",
                   help="largest value, e.g. 256K (default min(1M, size / 16))")
    p.add_argument("--evict", action="store_true",
                   help="when the sessions do not fit, evict the least recently used instead "
                        "of refusing to load")

    command(
        "demo", "run the demo: 4 gunicorn workers share one store", cmd_demo,
        "Run the demo (python -m shmsession.demo); `shmsession demo --help` lists its options.",
        parents=(), add_help=False,
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``shmsession`` command; returns its exit status (see :data:`EPILOG`)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command != "demo" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        status: int = cmd_demo(args, extra) if args.command == "demo" else args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is handled below, not at exit
        return status
    except _Exit as exc:
        if exc.message:
            print(f"{PROG} {args.command}: {exc.message}", file=sys.stderr)
        return exc.code
    except InvalidName as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ShmSessionError as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except BrokenPipeError:
        # The reader went away (`shmsession ls NAME | head`): say nothing more, as a
        # command killed by SIGPIPE would. Python would complain when flushing at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as exc:  # the snapshot file: not found, not writable...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{PROG} {args.command}: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        print(f"\n{PROG} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
