"""The live sessions taken out of a store whole, and put back: the listing of ``sessions()``,
the snapshot ``dump`` writes and the new store ``load`` makes from one. The file format is
``_snapshot``'s; the lock is the store's (it hands these functions an engine it holds the
lock for, see ``Access.locked``).
"""

from __future__ import annotations

import time
from typing import (
    TYPE_CHECKING, Any, BinaryIO, Callable, ContextManager, Dict, List, Optional, Tuple,
)

from . import _segment, _snapshot
from ._attach import defaults
from ._engine import Engine
from ._errors import SegmentError, ValueTooLarge
from ._layout import NO_OWNER, S_CREATED, S_DIGEST, S_EXPIRES, S_VALUE_LEN, S_VERSION
from ._rules import check_name
from ._table import Slot, expired
from ._types import SessionInfo

if TYPE_CHECKING:
    from .store import SessionStorage

__all__ = ["dump", "info", "infos", "load"]

_BATCH = 256  # sessions a load writes under one taking of the lock

Locked = Callable[[], ContextManager[Engine]]  # the store's engine, under its lock


def info(s: Slot, now: int) -> SessionInfo:
    """The :class:`SessionInfo` of the live session in slot ``s`` at ``now``."""
    return SessionInfo(s[S_DIGEST].hex(), s[S_VALUE_LEN], (now - s[S_CREATED]) / 1e9,
                       None if not s[S_EXPIRES] else (s[S_EXPIRES] - now) / 1e9, s[S_VERSION])


def infos(engine: Engine, now: int) -> List[SessionInfo]:
    """One :class:`SessionInfo` per live session; the caller holds the lock."""
    return [info(s, now) for s in engine.live_slots(now)]


def dump(path: str, secret: bytes, locked: Locked) -> int:
    """Write every live session to the snapshot ``path`` (see ``SessionStorage.dump``), all
    read in one taking of the lock; returns how many."""

    def fill(out: BinaryIO) -> _snapshot.SnapshotWriter:
        with locked() as engine:
            geo = engine.geo
            shape = _snapshot.Shape(geo.total_size, geo.max_entries, geo.max_value)
            writer = _snapshot.SnapshotWriter(out, secret, time.time(), shape)
            now = time.monotonic_ns()
            for s, owner, joined in _oldest_first(engine, now):
                expires = s[S_EXPIRES]
                writer.add(s[S_DIGEST], expires - now if expires else -1, s[S_VERSION],
                           engine.value_of(s), owner, now - joined if joined else 0)
        return writer

    return _snapshot.write_file(path, fill)


def _oldest_first(engine: Engine, now: int) -> List[Tuple[Slot, bytes, int]]:
    """Every live session's slot, owner digest and the time it became the owner's (0:
    unowned), the sessions of each owner oldest first: loaded in this order, each owner's
    list comes back as it was. The caller holds the lock."""
    rows = []
    for i, s in engine.t.used():
        if not expired(s, now):
            owner, _, _, joined = engine.o.owned(i)
            rows.append((s, owner, joined if owner != NO_OWNER else 0))
    rows.sort(key=lambda row: row[2])
    return rows


def load(open_store: Callable[..., "SessionStorage"], name: str, path: str,
         progress: Optional[Callable[[int, int], None]],
         options: Dict[str, Any]) -> "SessionStorage":
    """Create store ``name`` with ``open_store(name, _secret=..., **options)`` and load the
    snapshot ``path`` into it (see ``SessionStorage.load``); removes it again on failure."""
    with open(path, "rb") as src:
        secret, written_at, shape, records = _snapshot.read_snapshot(src, progress)
    check_name(name)
    if shape is not None:
        options = _remade(shape, options)
    if _segment.exists(name):
        raise SegmentError(
            f"store {name!r} exists; a snapshot loads into a new store only: unlink it "
            "first, or load into another name"
        )
    store = open_store(name, _secret=secret, **options)
    if not store.created:
        store.close()
        raise SegmentError(f"store {name!r} was created by another process meanwhile")
    max_value = store._max_value
    locked: Locked = store._access.locked
    try:
        batch: List[_snapshot.Live] = []
        for record in _snapshot.still_live(records, written_at, time.time()):
            batch.append(record)
            if len(batch) >= _BATCH:
                _put_batch(locked, batch, max_value, options)
                batch = []
        _put_batch(locked, batch, max_value, options)
    except BaseException:
        store.unlink()
        raise
    return store


def _remade(shape: _snapshot.Shape, options: Dict[str, Any]) -> Dict[str, Any]:
    """``options`` with the dumped store's geometry where they leave it out: as if the
    options the dumped store was made with were given again, and ``options`` over them.

    The segment does not record which of its limits were asked for. One equal to the default
    for its size is taken as left to the default, so it follows a new ``size`` (a store
    loaded bigger gets the room for sessions a store made at that size would have); another
    is kept whatever the size (the application asks for it when it attaches). A limit
    asked for at exactly its default is the one case this reads wrongly.
    """
    made = dict(options)
    default_entries, default_value = defaults(shape.size)
    for key, dumped, default in (("max_entries", shape.max_entries, default_entries),
                                 ("max_value_size", shape.max_value_size, default_value)):
        if made.get(key) is None and dumped != default:
            made[key] = dumped
    if made.get("size") is None:
        made["size"] = shape.size
    return made


def _put_batch(locked: Locked, batch: List[_snapshot.Live], max_value: int,
               options: Dict[str, Any]) -> None:
    for _, value, *_ in batch:
        if len(value) > max_value:
            raise ValueTooLarge(
                f"the snapshot holds a value of {len(value)} bytes, over this store's "
                f"max_value_size of {max_value}: load it with a larger max_value_size"
            )
    with locked() as engine:
        # A snapshot that does not fit is refused, unless when_full="evict" is given
        # explicitly (the handle's own default evicts): see SessionStorage.load.
        evict = engine.evict
        engine.evict = options.get("when_full") == "evict"
        try:
            now = time.monotonic_ns()
            for digest, value, ttl_ns, owner, owned_for in batch:
                if owner == NO_OWNER:
                    engine.put(digest, value, ttl_ns, None, False, False, now)
                else:
                    engine.put(digest, value, ttl_ns, None, False, False, now, owner,
                               max(1, now - owned_for))
            engine.writes_done = 0  # a restore is not traffic
        finally:
            engine.evict = evict
