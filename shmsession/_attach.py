"""Opening a store's segment: the constructor's option checks, the geometry options give,
the format of a new segment, and the checks of an existing one against what was asked.

``SessionStorage.__init__`` calls ``check_options`` then ``open_segment``; the segment's own
life cycle (the life-cycle lock, ``shm_open``, ``mmap``, the identity and owner checks) is
``_segment``'s.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any, Optional, Tuple

from . import _layout as L
from . import _segment
from ._errors import CorruptSegment, InvalidOption, SegmentMismatch
from ._heap import Heap
from ._journal import Journal
from ._rules import check_name, check_option, is_number

__all__ = ["check_options", "defaults", "geometry", "open_segment"]


def check_options(name: object, size: object, max_entries: object, max_value_size: object,
                  when_full: object, lock_timeout: object) -> None:
    """Refuse what ``SessionStorage(...)`` cannot work with, before anything is opened.

    :raises InvalidName, InvalidType, InvalidOption:
    """
    check_name(name)
    check_option("size", size, L.MIN_SIZE, rule=f"at least {L.MIN_SIZE} bytes (1 MiB)")
    check_option("max_entries", max_entries, 1)
    check_option("max_value_size", max_value_size, 1, L.MAX_VALUE_SIZE,
                 rule="at least 1 byte and under 4 GiB")
    if when_full not in ("evict", "raise"):
        raise InvalidOption(f'when_full must be "evict" or "raise", got {when_full!r}')
    # threading's waits (the thread lock, the Event of a timed flock wait) refuse a
    # longer timeout with OverflowError: refuse it here rather than at the first wait.
    if lock_timeout is not None and (
        not is_number(lock_timeout)
        or not 0 < lock_timeout <= threading.TIMEOUT_MAX  # type: ignore[operator]
    ):
        raise InvalidOption(
            f"lock_timeout must be a positive number of seconds up to threading.TIMEOUT_MAX "
            f"({threading.TIMEOUT_MAX:.0f}, about 292 years), or None to wait without "
            f"limit; got {lock_timeout!r}"
        )


def defaults(size: int) -> Tuple[int, int]:
    """``(max_entries, max_value_size)`` of a store of ``size`` bytes made without them."""
    return max(16, size // 1024), min(1 << 20, size // 16)


def geometry(size: Optional[int], max_entries: Optional[int],
             max_value: Optional[int]) -> L.Geometry:
    total = L.DEFAULT_SIZE if size is None else size
    default_entries, default_value = defaults(total)
    entries = default_entries if max_entries is None else max_entries
    value_max = default_value if max_value is None else max_value
    geo = L.Geometry(total, entries, value_max)
    # Two of the largest values, so that writing one never depends on evicting the other.
    need = max(2 * L.block_size_for(value_max), L.MIN_HEAP)
    if geo.heap_size < need:
        raise InvalidOption(
            f"size={total} leaves {max(geo.heap_size, 0)} bytes for values after the journal, "
            f"a table for {entries} entries and its owner index, and values need at least "
            f"{need} bytes (two of max_value_size={value_max}, and 64 KiB at least): ask for "
            "a larger size, fewer max_entries, or a smaller max_value_size"
        )
    return geo


def open_segment(name: str, size: Optional[int], max_entries: Optional[int],
                 max_value_size: Optional[int], *, create: bool, timeout: float,
                 secret: Optional[bytes]) -> Tuple[_segment.Segment, L.Geometry, bytes]:
    """Attach to store ``name``, or create it (unless ``create`` is false) with the geometry
    the options give and ``secret`` (random when None); returns the open segment, its
    geometry and the secret its digests are keyed with.

    :raises SegmentMismatch: an existing store was made with other sizes than asked.
    :raises CorruptSegment, and the rest of the ``SegmentError`` family of ``_segment``.
    """
    want = geometry(size, max_entries, max_value_size)
    made_with = secrets.token_bytes(L.SECRET_SIZE) if secret is None else secret

    def initialise(buf: Any) -> None:
        # Runs under the life-cycle lock before any other process can attach. The identity
        # (magic first in memory order) goes last, so a half-made segment is never valid.
        journal = Journal(buf, want.journal_off, want.journal_size)
        try:
            Heap(buf, journal, want.heap_off, want.heap_size).format()
        finally:
            journal.close()
        buf[: L.IDENTITY.size + 4] = want.pack_identity(made_with)

    seg = _segment.Segment.open(name, want.total_size, initialise, create=create,
                                timeout=timeout)
    try:
        ident = L.IDENTITY.unpack_from(seg.buf, 0)
        geo = L.Geometry(ident[3], ident[5], ident[11])
        if not seg.created:
            for label, asked, have in (
                ("size", size, geo.total_size),
                ("max_entries", max_entries, geo.max_entries),
                ("max_value_size", max_value_size, geo.max_value),
            ):
                if asked is not None and asked != have:
                    raise SegmentMismatch(
                        f"store {name!r} exists with {label}={have}, not {asked}; open it "
                        f"without {label} (or with {have}), or unlink it to change it"
                    )
        if (geo.capacity, geo.heap_off, geo.heap_size) != (ident[4], ident[9], ident[10]):
            raise CorruptSegment(f"store {name!r}: header geometry is inconsistent")
    except BaseException:
        seg.close()
        raise
    return seg, geo, bytes(ident[13])
