"""The public types every store returns: ``Stats`` and ``SessionInfo``. No logic."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

__all__ = ["SessionInfo", "Stats"]


@dataclass(frozen=True)
class Stats:
    """A snapshot of a store's figures (``SessionStorage.stats()``).

    ``entries`` counts sessions not yet reclaimed, expired ones included; the counters
    (hits ... expirations, lock waits, room_*) are advisory and count since the segment was
    made. ``fragmentation`` is ``1 - largest_free / bytes_free`` (0 when nothing is free):
    how much of the free space is out of reach of the largest value it could take.

    The ``room_*`` counters measure what a full store in evict mode does for a value no free
    block can take: ``room_writes`` such writes, ``room_evictions`` the sessions they evicted
    (also counted in ``evictions``/``expirations``) to clear one run of adjacent blocks, and
    ``room_max_evictions`` the most one write evicted (at most one per 32 bytes of value).
    """

    name: str
    size: int
    entries: int
    max_entries: int
    table_slots: int
    heap_size: int
    bytes_used: int
    bytes_free: int
    largest_free: int
    hits: int
    misses: int
    writes: int
    deletes: int
    evictions: int
    expirations: int
    lock_waits: int
    lock_wait_seconds: float
    room_writes: int
    room_evictions: int
    room_max_evictions: int
    fragmentation: float

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SessionInfo:
    """What ``SessionStorage.sessions()`` tells of one session (never its id)."""

    digest: str  # hex of the keyed digest the table is indexed by
    size: int  # bytes of value
    age: float  # seconds since it was created
    ttl: Optional[float]  # seconds left, None when it never expires
    version: int
