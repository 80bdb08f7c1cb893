"""Reads that take no lock: a seqlock over the table and the heap (x86 only).

Every writer makes the segment's read sequence word odd before it changes a byte a reader
copies and even (a new number) once the change is committed (``_journal``). ``Reader``
copies a slot and its value between two loads of the word and keeps the copy only if both
saw the same even number; anything else is tried again, then handed to the locked path
(``locked``, the store's), which also does whatever a read must write: reclaiming an
expired entry, sliding expiry, repairs after a dead writer.
"""

from __future__ import annotations

import mmap
import platform
import time
from typing import Callable, Optional, Tuple

from . import _layout as L
from ._engine import Engine
from ._lock import StoreLock

__all__ = ["LOCK_FREE_READS", "LOCKED", "Reader"]

# Reads take no lock where the processor keeps stores in order for other cores and loads in
# order with each other (x86's TSO): a seqlock needs no more than that and the compiler barrier
# that every CPython call boundary is. Elsewhere (ARM, POWER: weaker ordering, and Python
# offers no fence) every read takes the lock.
LOCK_FREE_READS = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
LOCKED = object()  # _peek's answer "take the lock and read again"

_SEQ_W = L.SEQ_W
_ATIME_W = L.SLOT_ATIME >> 3
_HOME = L.U64
_PEEK_SLOT = L.SLOT_PEEK
_SLOT_SHIFT = L.SLOT_SHIFT
_monotonic_ns = time.monotonic_ns
_PEEK_TRIES = 3  # lock-free attempts before a read takes the lock
_SPIN = 200  # loads of an odd sequence word (~6 us here) before a read takes the lock
# Reads between two housekeeping passes (if the lock is free that instant): checking that
# the segment is still linked, and adding this handle's counts to the shared counters.
HOUSEKEEPING_EVERY = 64


class Reader:
    """Lock-free reads of one handle over ``buf``, the mapping ``engine`` works on (whose
    bounds and ``touch_on_read``/``default_ttl_ns`` settings the reads follow).

    :param locked: the store's read under the lock (value and version, or None), for what
        a lock-free copy cannot settle. :param repair: the store's housekeeping, run with
        ``lock`` held. Counts ``hits`` and ``misses`` for the store to add to the shared
        counters. ``lock_free`` false (after ``close()``, or off x86) sends every read to
        ``locked``.
    """

    __slots__ = ("buf", "w", "lock", "locked", "repair", "lock_free", "touch_on_read",
                 "default_ttl_ns", "table_off", "mask", "heap_off", "heap_end", "max_value",
                 "ops", "hits", "misses")

    def __init__(self, buf: mmap.mmap, engine: Engine, lock: StoreLock,
                 locked: Callable[[bytes], Optional[Tuple[bytes, int]]],
                 repair: Callable[[], None]) -> None:
        self.buf = buf
        # The engine's words, settings and bounds, copied into slots: every read uses them.
        self.w = engine.w
        self.touch_on_read = engine.touch_on_read
        self.default_ttl_ns = engine.default_ttl_ns
        self.table_off, self.mask, self.heap_off, self.heap_end, self.max_value = (
            engine.geo.bounds())
        self.lock = lock
        self.locked = locked
        self.repair = repair
        self.lock_free = LOCK_FREE_READS
        self.ops = 0
        self.hits = self.misses = 0

    def find(self, digest: bytes) -> Optional[Tuple[bytes, int]]:
        """Value and version, or None: lock-free when it can be, else through ``locked``."""
        if self.lock_free:
            try:
                # The common case straight through: no writer at work, the entry (or an
                # empty slot) at its home, nothing to write but the advisory access time.
                # Anything else goes to _peek, which also does the housekeeping.
                self.ops += 1
                if self.ops % HOUSEKEEPING_EVERY:
                    buf = self.buf
                    w = self.w
                    seq = w[_SEQ_W]
                    if not seq & 1:
                        pos = self.table_off + ((_HOME.unpack_from(digest)[0] & self.mask) << _SLOT_SHIFT)
                        key, used, n, voff, expires, version = _PEEK_SLOT.unpack_from(buf, pos)
                        if key == digest:
                            now = _monotonic_ns()
                            if ((not expires or expires > now and not self.touch_on_read)
                                    and self.heap_off <= voff and voff + n <= self.heap_end
                                    and n <= self.max_value):
                                value = buf[voff : voff + n]
                                if w[_SEQ_W] == seq:
                                    w[(pos >> 3) + _ATIME_W] = now  # advisory: see _peek
                                    self.hits += 1
                                    return value, version
                        elif not used and w[_SEQ_W] == seq:
                            self.misses += 1
                            return None
                found = self._peek(digest)
            except ValueError:  # the mapping was closed by another thread: say so, below
                found = LOCKED
            if found is not LOCKED:
                return found  # type: ignore[return-value]
        return self.locked(digest)

    def housekeep(self) -> None:
        """The housekeeping of every ``HOUSEKEEPING_EVERY``-th read (the compiled reader's
        too), if the lock is free this instant: ``repair`` under it."""
        if self.lock.try_acquire():
            try:
                self.repair()
            finally:
                self.lock.release()

    def _peek(self, digest: bytes) -> object:
        """A read that takes no lock (a seqlock): value and version, None, or ``LOCKED``.

        Every writer makes the sequence word odd before it changes a byte a reader copies
        and even (a new number) once the change is committed (``_journal``). So a
        copy made between two loads of one even number is one committed state: a value and
        version written together, and a miss that is a real miss (not a hole a deletion was
        shifting an entry over). Anything else -- an odd number, a change, a torn or
        out-of-range slot -- is tried again, then handed to the locked path, which also
        does whatever needs writing: reclaiming an expired entry, sliding expiry, repairs.
        Every ``HOUSEKEEPING_EVERY``-th operation (``find`` counts them and sends those
        here) also checks for an unlinked segment and flushes this handle's counters, if the
        lock is free that instant (a holder that is not writing never holds reads up). The
        one store made here is the advisory last-access time of the slot just read.
        """
        if not self.ops % HOUSEKEEPING_EVERY:
            self.housekeep()
        buf = self.buf
        w = self.w
        mask = self.mask
        base = self.table_off
        home = _HOME.unpack_from(digest)[0] & mask
        for _ in range(_PEEK_TRIES):
            seq = w[_SEQ_W]
            if seq & 1:
                # A writer is at work: it takes microseconds, a sleep in flock and the
                # wake-up take tens, so watch the word a little first. (It may have died:
                # then the lock, which repairs, is the way on.)
                for _ in range(_SPIN):
                    seq = w[_SEQ_W]
                    if not seq & 1:
                        break
                else:
                    return LOCKED
            # A probe of its own, not Table.probe: the table may change under this loop (no
            # lock), so a lap without an empty slot is a torn view to try again, not damage to
            # raise, and every slot read is one copy of the fields the seqlock then validates.
            i = home
            while True:
                pos = base + (i << _SLOT_SHIFT)
                key, used, n, voff, expires, version = _PEEK_SLOT.unpack_from(buf, pos)
                if not used or key == digest:
                    break
                i = (i + 1) & mask
                if i == home:
                    break  # a whole lap without an empty slot: a torn view
            if not used:
                if w[_SEQ_W] != seq:
                    continue
                self.misses += 1
                return None
            if key != digest:
                continue
            now = _monotonic_ns()
            if expires and (expires <= now or self.touch_on_read and self.default_ttl_ns):
                return LOCKED  # reclaim it, or slide its expiry: both write
            if voff < self.heap_off or voff + n > self.heap_end or n > self.max_value:
                continue  # torn: the slot changed under us
            value = buf[voff : voff + n]
            if w[_SEQ_W] != seq:
                continue
            # Advisory, like the locked path's: steers eviction only. Racing a writer it may
            # land on a slot that moved or emptied; nothing reads it there.
            w[(pos >> 3) + _ATIME_W] = now
            self.hits += 1
            return value, version
        return LOCKED
