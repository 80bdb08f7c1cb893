"""The engine: every operation of the store on the segment's bytes, under the lock.

``Engine`` holds the journal, table, owner index and heap over one buffer and composes them
into the store's operations -- read, write, delete, touch, sweep, clear, repair, check, and
each one journaled transaction (``_journal``). Making room in a full store is ``_room``'s,
and the owners' operations (an owner's sessions, listed or deleted) are ``_ownership``'s. The
caller (``SessionStorage``) holds the store's lock around every call and passes ``now``
(CLOCK_MONOTONIC nanoseconds): nothing here locks, sleeps, reads the clock or opens
anything, so a ``bytearray`` is enough to test it.

Hits, misses and writes are counted here per handle (``hits``, ``misses``,
``writes_done``) and added to the shared counters by ``add_counts``.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, Callable, List, Optional, Tuple

from . import _layout as L
from ._errors import CorruptSegment, SegmentUnlinked, StoreFull, VersionConflict
from ._heap import Heap
from ._journal import Buffer, Journal, JournalFull, recover, seq_close, seq_open
from ._layout import (
    FLAGS_W, NEVER, S_CREATED, S_DIGEST, S_EXPIRES, S_STATE, S_VALUE_LEN, S_VALUE_OFF,
    S_VERSION, SEQ_W, USED, VERSION_W,
)
from ._owners import Owners
from ._ownership import Ownership
from ._room import Room
from ._rules import MAX_OWNER_SESSIONS
from ._table import Slot, Table, expired
from ._types import Stats

__all__ = ["Engine", "engine_stats"]

# Assigned, not imported: CPython 3.11 compiles a method call on an imported name as an
# attribute load and a call (it takes the name for a module), which cost the write path
# ~1,000 instructions more (callgrind) than LOAD_METHOD on these.
_U64 = L.U64
_I64 = L.I64
_SLOT = L.SLOT
_ATIME_W = L.SLOT_ATIME >> 3
_C = L.COUNTER_W  # counters by word index (see bump)
_HITS = _C["hits"]
_MISSES = _C["misses"]
_WRITES = _C["writes"]
_DELETES = _C["deletes"]
_EXPIRATIONS = _C["expirations"]
_SWEEP_CURSOR = _C["sweep_cursor"]
_SLOT_WORDS = L.SLOT_SIZE >> 3
_UNOWNED = L.UNOWNED
_OWNER_AT = L.SLOT_OWNER_OFF
_OWNER_END = L.SLOT_OWNER_OFF + L.DIGEST_SIZE
_NO_OWNER = L.NO_OWNER

_SWEEP_EVERY = 32  # writes of this handle between two bounded sweeps for expired entries
_SWEEP_SLOTS = 64  # slots one sweep examines


class Engine:
    """The store's operations over ``buf`` laid out as ``geo``; the caller holds the lock.

    :param name: the store's name, for messages. ``evict``, ``touch_on_read`` and
        ``default_ttl_ns`` are the handle's options (see ``SessionStorage``).
    """

    def __init__(self, buf: Buffer, geo: L.Geometry, name: str, *, evict: bool,
                 touch_on_read: bool, default_ttl_ns: int) -> None:
        self.buf = buf
        self.geo = geo
        self.name = name
        self.evict = evict
        self.touch_on_read = touch_on_read
        self.default_ttl_ns = default_ttl_ns
        #: Live sessions an owner keeps at most (the tests lower it, as on Redis).
        self.max_owner_sessions = MAX_OWNER_SESSIONS
        self.j = Journal(buf, geo.journal_off, geo.journal_size)
        self.w = self.j.words  # control words and counters: see _layout.words
        self.t = Table(buf, self.j, geo.table_off, geo.capacity)
        self.h = Heap(buf, self.j, geo.heap_off, geo.heap_size)
        self.o = Owners(buf, self.j, geo.owners_off, geo.table_off, geo.capacity)
        self.t.owners = self.o
        self.room = Room(self)
        self.ownership = Ownership(self)
        self.max_entries = geo.max_entries
        self.table_off, self.mask, self.heap_off, self.heap_end, self.max_value = geo.bounds()
        self.hits = self.misses = self.writes_done = 0  # since the last add_counts
        self.writes = 0  # writes of this handle: every _SWEEP_EVERY-th one sweeps

    def close(self) -> None:
        """Let go of the buffer (the journal's views pin it)."""
        self.j.close()

    # ------------------------------------------------------------------ operations
    def fetch(self, digest: bytes, now: int) -> Optional[Tuple[bytes, int]]:
        """Value and version, or None; reclaims an expired entry."""
        t = self.t
        i, slot = t.probe(digest)
        if slot is None:
            self.misses += 1
            return None
        if expired(slot, now):
            self.transact(self.drop, i, slot)
            self.bump(_EXPIRATIONS)
            self.misses += 1
            return None
        value = self.value_of(slot)
        if self.touch_on_read and slot[S_EXPIRES] and self.default_ttl_ns:
            self.transact(self.set_expires, i, now + self.default_ttl_ns)
        # Advisory, not journaled: last access only steers eviction.
        self.w[((t.off + i * L.SLOT_SIZE) >> 3) + _ATIME_W] = now
        self.hits += 1
        return value, slot[S_VERSION]

    def put(self, digest: bytes, data: bytes, ttl_ns: int, expect: Optional[int],
            only_new: bool, only_live: bool, now: int, owner: Optional[bytes] = None,
            joined: int = 0) -> int:
        """Store ``data`` for ``digest`` (``ttl_ns`` 0: never expires); returns the new
        version, or -1 when ``only_new`` found a live entry or ``only_live`` found none.
        ``owner`` (a digest): make the entry that owner's (see ``own``; ``joined``, when
        not 0, the time it became so); None keeps the owner it has. Everything it changes
        is one transaction (but see ``Room.clear``).

        :raises VersionConflict: ``expect`` is not the stored version. :raises StoreFull:
        """
        j = self.j
        t = self.t
        h = self.h
        buf = self.buf
        j.begin()
        try:
            self.writes += 1
            if not self.writes % _SWEEP_EVERY:
                self.sweep(now, _SWEEP_SLOTS, 8)
            i, slot = t.probe(digest)
            if slot is not None and slot[S_EXPIRES] and slot[S_EXPIRES] <= now:
                self.drop(i, slot)
                self.bump(_EXPIRATIONS)
                slot = None
            if (slot is not None and only_new) or (slot is None and only_live):
                j.commit()  # what the sweep or the expiry above reclaimed stays reclaimed
                return -1
            if expect is not None and (slot is None or slot[S_VERSION] != expect):
                raise VersionConflict(
                    "the session changed since it was read" if slot is not None
                    else "the session was deleted or expired since it was read"
                )
            version = self.w[VERSION_W] + 1
            self.w[VERSION_W] = version  # not journaled: see _layout
            n = len(data)
            expires = now + ttl_ns if ttl_ns else NEVER
            if slot is not None:
                # The block the slot points at must be a used one that names this entry as
                # its owner: a damaged offset must not turn this write into one over another
                # session's value.
                voff = slot[S_VALUE_OFF]
                blk = voff - 8
                if not self.heap_off <= blk < self.heap_end - L.MIN_BLOCK:
                    raise self.damaged(f"a slot points at {voff}, outside the heap")
                tag = _U64.unpack_from(buf, blk)[0]
                end = blk + (tag & ~1)
                if not (tag & 1 and end <= self.heap_end
                        and buf[end - L.BLOCK_TAIL : end - 8] == digest):
                    raise self.damaged(f"a slot points at {voff}, not at a block of its own")
                room = end - blk - L.BLOCK_OVERHEAD
                if n <= room <= 2 * n + 256 and n <= L.INPLACE_MAX:
                    # Same block: the old bytes of value and slot go to the journal first.
                    j.write2(voff, data, t.off + i * L.SLOT_SIZE, _SLOT.pack(
                        digest, USED, n, voff, slot[S_CREATED], expires, now, version))
                else:
                    p, freed_old = self.room.alloc(n, digest, voff, now)
                    j.raw(p, data)
                    i = t.lookup(digest)  # evictions may have shifted the slot
                    t.put(i, _SLOT.pack(
                        digest, USED, n, p, slot[S_CREATED], expires, now, version))
                    if not freed_old:
                        h.free(voff)
            else:
                if _U64.unpack_from(buf, L.ENTRIES_OFF)[0] >= self.max_entries:
                    self.room.make_slot_room(digest, now)
                p = self.room.alloc(n, digest, 0, now)[0]
                j.raw(p, data)
                i = t.lookup(digest)
                t.put(-1 - i, _SLOT.pack(digest, USED, n, p, now, expires, now, version)
                      + _UNOWNED)
                self.add_entries(1)
            if owner is not None:
                # i: the slot in every branch above (a new entry's, as -1 - i)
                self.ownership.own(i if i >= 0 else -1 - i, digest, owner, joined or now, now)
            j.commit()
        except JournalFull:
            j.rollback()
            raise StoreFull(
                "making room for this value needed more evictions than one operation may "
                "make; the store is too small for its sessions: create it with a larger size"
            ) from None
        except BaseException:
            j.rollback()
            raise
        self.writes_done += 1
        return int(version)

    def invalidate(self, digest: bytes, now: int) -> bool:
        """Delete the entry; returns whether a live one was there."""
        i, slot = self.t.probe(digest)
        if slot is None:
            return False
        live = not expired(slot, now)
        self.transact(self.drop, i, slot)
        self.bump(_DELETES if live else _EXPIRATIONS)
        return live

    def touch(self, digest: bytes, ttl_ns: int, now: int) -> bool:
        """Renew the entry's expiry to ``ttl_ns`` from ``now``; whether a live one was there."""
        i, slot = self.t.probe(digest)
        if slot is None:
            return False
        if expired(slot, now):
            self.transact(self.drop, i, slot)
            self.bump(_EXPIRATIONS)
            return False
        self.transact(self.set_expires, i, now + ttl_ns if ttl_ns else NEVER)
        return True

    def live_slots(self, now: int) -> List[Slot]:
        """Every live entry's slot, each with its value range checked (a scan)."""
        live = [s for _, s in self.t.used() if not expired(s, now)]
        for s in live:
            self.check_range(s)
        return live

    def clear(self) -> None:
        """Delete every entry. Crash-safe: a clear interrupted anywhere is finished by the
        next lock holder (clearing is idempotent, so it is redone, not undone)."""
        w = self.w
        self.fault()
        seq_open(w)
        self.fault()
        w[FLAGS_W] |= L.FLAG_CLEARING  # from here on: redo
        self.redo_clear()
        self.fault()
        seq_close(w)

    def repair(self, unlinked: bool) -> None:
        """Undo what a dead writer left, finish a clear, let lock-free readers back in.
        ``unlinked``: the segment's name is gone (``Segment.unlinked``).

        :raises SegmentUnlinked: the store was unlinked. :raises CorruptSegment:
        """
        w = self.w
        flags = w[FLAGS_W]
        if flags:
            # Each flag is set only together with something else that can be checked, so
            # a stray write into the word reads as damage, not as an unlink or a clear
            # (redoing a clear that never began would delete every session).
            if flags & ~(L.FLAG_UNLINKED | L.FLAG_CLEARING):
                raise self.damaged(f"the flags word holds unknown bits ({flags:#x})")
            if flags & L.FLAG_UNLINKED and not unlinked:
                # unlink() removes the name before it lets go of the lock
                raise self.damaged("the flags word says unlinked, but the segment is not")
            if flags & L.FLAG_CLEARING and not w[SEQ_W] & 1:
                # clear() makes the sequence odd before it sets the flag
                raise self.damaged("the flags word says a clear is under way, but no "
                                   "change is")
        if unlinked:
            raise SegmentUnlinked(
                f"store {self.name!r} was unlinked while this handle was open; open it "
                "again to use a new segment"
            )
        recover(self.buf, self.geo.journal_off, self.geo.journal_size)  # a txn left open
        if flags & L.FLAG_CLEARING:
            self.redo_clear()
        seq_close(w)  # a writer may have died with the sequence odd, even after commit

    def mark_unlinked(self) -> None:
        """Tell every handle the store is going: the flag, and the read sequence odd for
        good (lock-free readers take the lock, and learn)."""
        w = self.w
        w[FLAGS_W] |= L.FLAG_UNLINKED
        seq_open(w)

    def unmark_unlinked(self) -> None:
        """Undo ``mark_unlinked`` (the name could not be removed)."""
        w = self.w
        w[FLAGS_W] &= ~L.FLAG_UNLINKED
        seq_close(w)

    def problems(self) -> List[str]:
        import zlib

        buf = self.buf
        problems: List[str] = []
        if L.IDENTITY_CRC.unpack_from(buf, L.IDENTITY_CRC_OFF)[0] != zlib.crc32(
            bytes(buf[: L.IDENTITY.size])
        ):
            problems.append("header crc mismatch")
        slots, table_problems = self.t.check()
        problems += table_problems
        problems += self.o.check(slots)
        used_blocks, heap_problems = self.h.check()
        problems += heap_problems
        entries = _U64.unpack_from(buf, L.ENTRIES_OFF)[0]
        if entries != len(slots):
            problems.append(f"header counts {entries} entries, table holds {len(slots)}")
        if entries > self.max_entries:
            problems.append(f"{entries} entries, over max_entries {self.max_entries}")
        version = self.w[VERSION_W]
        referenced = set()
        for i, slot in slots.items():
            voff, vlen = slot[S_VALUE_OFF], slot[S_VALUE_LEN]
            if voff not in used_blocks:
                problems.append(f"slot {i} points at {voff}, which is not a used block")
                continue
            if voff in referenced:
                problems.append(f"block {voff} is referenced by two slots")
            elif used_blocks[voff] != slot[S_DIGEST]:
                problems.append(f"slot {i} points at block {voff}, which names another owner")
            referenced.add(voff)
            if vlen > self.h.capacity(voff):
                problems.append(f"slot {i}: value of {vlen} bytes overflows its block")
            if slot[S_VERSION] > version:
                problems.append(f"slot {i}: version {slot[S_VERSION]} is ahead of the counter")
        leaked = set(used_blocks) - referenced
        if leaked:
            problems.append(f"{len(leaked)} used heap block(s) referenced by no slot")
        return problems

    # ------------------------------------------------------------------ counts
    def bump(self, counter: int, by: int = 1) -> None:
        # Advisory counters (word indexes): not journaled; a writer killed here loses at
        # most this count.
        w = self.w
        w[counter] = (w[counter] + by) & 0xFFFFFFFFFFFFFFFF

    def add_counts(self, hits: int, misses: int) -> None:
        """Add this handle's pending counts (and ``hits``/``misses`` counted elsewhere,
        by the lock-free reader) to the shared counters."""
        hits += self.hits
        misses += self.misses
        if hits:
            self.bump(_HITS, hits)
        if misses:
            self.bump(_MISSES, misses)
        if self.writes_done:
            self.bump(_WRITES, self.writes_done)
        self.hits = self.misses = self.writes_done = 0

    def counters(self) -> "dict[str, int]":
        return dict(zip(L.COUNTER_NAMES, L.COUNTERS.unpack_from(self.buf, L.COUNTERS_OFF)))

    def entries(self) -> int:
        return int(_U64.unpack_from(self.buf, L.ENTRIES_OFF)[0])

    def fault(self) -> None:
        # Fault injection outside the journal (clear); see Journal.fault.
        fault = self.j.fault
        if fault is not None:
            fault()

    # ------------------------------------------------------------------ parts
    def value_of(self, slot: Slot) -> bytes:
        """The value bytes of a used slot, once its range is checked against the heap."""
        self.check_range(slot)
        voff = slot[S_VALUE_OFF]
        return bytes(self.buf[voff : voff + slot[S_VALUE_LEN]])

    def check_range(self, slot: Slot) -> None:
        voff, n = slot[S_VALUE_OFF], slot[S_VALUE_LEN]
        if not (self.heap_off + L.BLOCK_HEADER <= voff and voff + n <= self.heap_end
                and n <= self.max_value):
            raise self.damaged(f"a slot's value range [{voff}, {voff + n}) lies outside the "
                                "heap or over max_value_size")

    def damaged(self, what: str) -> CorruptSegment:
        return CorruptSegment(
            f"store {self.name!r} is damaged: {what}; check() lists every problem. Unlink "
            "it (SessionStorage.unlink_name) and start a new one"
        )

    def transact(self, fn: Callable[..., None], *args: Any) -> None:
        j = self.j
        j.begin()
        try:
            fn(*args)
        except BaseException:
            j.rollback()
            raise
        j.commit()

    def set_expires(self, i: int, expires: int) -> None:
        self.j.write(self.t.off + i * L.SLOT_SIZE + L.SLOT_EXPIRES, _I64.pack(expires))

    def drop(self, i: int, slot: Slot) -> None:
        """Remove entry ``i`` (whose unpacked slot is ``slot``) and free its value; an owned
        entry leaves its owner's list (every removal comes here: the index stays exact)."""
        pos = self.table_off + (i << L.SLOT_SHIFT)
        if self.buf[pos + _OWNER_AT : pos + _OWNER_END] != _NO_OWNER:
            self.o.unlink(i, False)
        self.h.free(slot[S_VALUE_OFF])
        self.t.remove(i)
        self.add_entries(-1)

    def add_entries(self, by: int) -> None:
        j = self.j
        j.log_state()
        buf = self.buf
        _U64.pack_into(buf, L.ENTRIES_OFF, _U64.unpack_from(buf, L.ENTRIES_OFF)[0] + by)

    def sweep(self, now: int, slots: int, limit: int) -> int:
        """Reclaim up to ``limit`` expired entries among ``slots`` slots from the shared sweep
        cursor; returns how many. Caller holds the lock, inside a transaction.

        It runs inside the lock every ``_SWEEP_EVERY`` writes, so a span with nothing due --
        the common case -- is passed over in C: its expires words (0 for an empty slot and
        for one that never expires) read through a strided view, sorted, and the smallest
        nonzero one compared with ``now``."""
        w = self.w
        t = self.t
        mask = t.mask
        first = (t.off + L.SLOT_EXPIRES) >> 3  # word index of slot 0's expires
        cursor = w[_SWEEP_CURSOR] & mask
        removed = 0
        i = cursor
        left = min(slots, t.capacity)
        while left and removed < limit:
            span = min(left, t.capacity - i)  # up to the end of the table, then wrap
            run = w[first + i * _SLOT_WORDS : first + (i + span) * _SLOT_WORDS : _SLOT_WORDS]
            expires = run.tolist()
            run.release()
            due = sorted(expires)
            z = bisect_right(due, 0)
            if z == span or due[z] > now:
                i = (i + span) & mask
                left -= span
                continue
            k = 0
            for k, e in enumerate(expires):
                if 0 < e <= now:
                    break
            i += k
            left -= k
            slot = t.get(i)
            if not slot[S_STATE]:  # not an entry: a damaged slot is check()'s to report
                i = (i + 1) & mask
                left -= 1
                continue
            # Slot i stays under the cursor: a later entry may shift into it.
            self.drop(i, slot)
            self.bump(_EXPIRATIONS)
            removed += 1
        w[_SWEEP_CURSOR] = i  # advisory
        return removed

    def sweep_next(self) -> None:
        """Have the next ``put`` run the sweep of every ``_SWEEP_EVERY``-th write: for the
        compiled path (``_hot.c``), whose writes count apart and which found an entry due."""
        self.writes = -1

    def redo_clear(self) -> None:
        buf = self.buf
        geo = self.geo
        self.fault()
        # the table and the owner table after it
        buf[geo.table_off : geo.heap_off] = bytes(geo.heap_off - geo.table_off)
        self.fault()
        self.h.format()
        self.fault()
        _U64.pack_into(buf, L.ENTRIES_OFF, 0)
        self.fault()
        self.w[FLAGS_W] &= ~L.FLAG_CLEARING


def engine_stats(engine: Engine) -> Stats:
    """The store's figures (``SessionStorage.stats()``) as the segment holds them now;
    the caller holds the lock, and has added its own pending counts."""
    counters = engine.counters()
    entries = engine.entries()
    h = engine.h
    geo = engine.geo
    free = h.free_bytes()
    largest = h.largest_free()
    return Stats(
        name=engine.name,
        size=geo.total_size,
        entries=entries,
        max_entries=geo.max_entries,
        table_slots=geo.capacity,
        heap_size=geo.heap_size,
        bytes_used=h.used_bytes(),
        bytes_free=free,
        largest_free=largest,
        hits=counters["hits"],
        misses=counters["misses"],
        writes=counters["writes"],
        deletes=counters["deletes"],
        evictions=counters["evictions"],
        expirations=counters["expirations"],
        lock_waits=counters["lock_waits"],
        lock_wait_seconds=counters["lock_wait_ns"] / 1e9,
        room_writes=counters["room_writes"],
        room_evictions=counters["room_evictions"],
        room_max_evictions=counters["room_max_evictions"],
        # largest_free is a payload size, free a count of block bytes
        fragmentation=(1 - min(free, largest + L.BLOCK_OVERHEAD) / free) if free else 0.0,
    )
