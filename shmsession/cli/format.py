"""What the commands print: sizes and durations, the tables for people (through one table
formatter), the Prometheus text exposition and JSON. Pure functions of
:class:`~shmsession.Stats` and :class:`~shmsession.SessionInfo`: no I/O.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .. import SessionInfo, Stats


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


def count(n: int) -> str:
    """``12,345``."""
    return f"{n:,}"


def ratio(part: float, whole: float) -> Optional[float]:
    """``part / whole``; None when ``whole`` is 0 (nothing to compare yet)."""
    return part / whole if whole else None


def percent(fraction: Optional[float]) -> str:
    """``12.5%``; ``-`` for None."""
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


def rate(per_second: Optional[float]) -> str:
    """``1,234.5/s``; ``-`` for None."""
    return "-" if per_second is None else f"{per_second:,.1f}/s"


def json_text(data: object) -> str:
    """``data`` as indented JSON with sorted keys, the shape every ``--json`` prints."""
    return json.dumps(data, indent=2, sort_keys=True)


def table(rows: Sequence[Sequence[str]], align: str) -> List[str]:
    """``rows`` of cells as aligned lines: columns two spaces apart, each as wide as its
    widest cell, ``align`` one character a column (``<`` left, ``>`` right); no line ends
    with spaces."""
    widths = [max((len(row[k]) for row in rows), default=0) for k in range(len(align))]
    return [
        "  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(row, align, widths)).rstrip()
        for row in rows
    ]


def derived(s: Stats) -> Dict[str, Optional[float]]:
    """The ratios every view shows: fill of table and heap, hit rate (None: no reads yet)."""
    return {
        "table_fill": ratio(s.entries, s.max_entries),
        "heap_fill": ratio(s.bytes_used, s.heap_size),
        "hit_rate": ratio(s.hits, s.hits + s.misses),
    }


def stats_lines(s: Stats) -> List[str]:
    """``stats`` for people: one aligned ``label  value`` line per figure."""
    d = derived(s)
    return table([
        ("store", f"{s.name} ({format_bytes(s.size)} of shared memory)"),
        ("entries", f"{count(s.entries)} of {count(s.max_entries)} "
                    f"({percent(d['table_fill'])} of the table)"),
        ("heap", f"{format_bytes(s.bytes_used)} of {format_bytes(s.heap_size)} used "
                 f"({percent(d['heap_fill'])}), {format_bytes(s.bytes_free)} free"),
        ("largest free block", format_bytes(s.largest_free)),
        ("fragmentation", f"{percent(s.fragmentation)} of the free space is outside the "
                          "largest free block"),
        ("hit rate", f"{percent(d['hit_rate'])} ({count(s.hits)} hits, "
                     f"{count(s.misses)} misses)"),
        ("writes", count(s.writes)),
        ("deletes", count(s.deletes)),
        ("evictions", count(s.evictions)),
        ("expirations", count(s.expirations)),
        ("room made", f"{count(s.room_writes)} writes evicted {count(s.room_evictions)} "
                      f"sessions for contiguous room (at most {count(s.room_max_evictions)} "
                      "at once)"),
        ("lock waits", f"{count(s.lock_waits)} ({s.lock_wait_seconds:.3f} s waited in all)"),
    ], "<<")


def session_lines(rows: Sequence[SessionInfo]) -> List[str]:
    """``ls`` for people: an aligned table of digest, size, age, time left, version."""
    return table([("DIGEST", "SIZE", "AGE", "TIME LEFT", "VERSION")] + [
        (r.digest, format_bytes(r.size), format_duration(r.age), format_duration(r.ttl),
         str(r.version))
        for r in rows
    ], "<>>>>")


def store_lines(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    """``ls`` without a name: an aligned table of the host's stores (``?`` where a store
    could not be opened)."""
    def entries(r: Mapping[str, Any]) -> str:
        return "?" if r["entries"] is None else f"{r['entries']:,} / {r['max_entries']:,}"

    return table([("NAME", "SIZE", "FILL", "ENTRIES", "OWNER", "MODE")] + [
        (r["name"], format_bytes(r["size"]),
         "?" if r["heap_fill"] is None else percent(r["heap_fill"]), entries(r), r["owner"],
         r["mode"])
        for r in rows
    ], "<>>><<")


# name, HELP text, value: each gauge of the Prometheus exposition.
_GAUGES: Tuple[Tuple[str, str, Callable[[Stats], float]], ...] = (
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
# Each counter is the Stats field of its name (shmsession_<name>_total), with its HELP text.
_COUNTERS: Dict[str, str] = {
    "hits": "Reads that found a live session.",
    "misses": "Reads that found no live session.",
    "writes": "Sessions written.",
    "deletes": "Live sessions deleted.",
    "evictions": "Live sessions evicted to make room.",
    "expirations": "Expired sessions reclaimed.",
    "room_writes": "Writes that evicted sessions for contiguous room.",
    "room_evictions": "Sessions evicted for contiguous room (also in evictions, expirations).",
    "lock_waits": "Lock acquisitions that had to wait.",
    "lock_wait_seconds": "Seconds spent waiting for the lock.",
}


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
    samples = [(f"shmsession_{name}", "gauge", text, value(s)) for name, text, value in _GAUGES]
    samples += [(f"shmsession_{name}_total", "counter", text, getattr(s, name))
                for name, text in _COUNTERS.items()]
    out: List[str] = []
    for metric, kind, text, number in samples:
        out.append(f"# HELP {metric} {text}")
        out.append(f"# TYPE {metric} {kind}")
        out.append(f"{metric}{label} {_prom_number(number)}")
    return "\n".join(out) + "\n"
