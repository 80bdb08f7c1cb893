"""One handle's way in to the engine: under the lock, or lock-free through the reader; and
its way out (close, unlink, and the collector's path for a handle dropped without close).

Whoever takes the lock first repairs what a dead writer left (an open transaction, a clear
half done, the read sequence left odd) and, every ``HOUSEKEEPING_EVERY``-th time, does the
housekeeping: is the segment unlinked, and add this handle's pending counts to the shared
counters. ``SessionStorage`` takes the lock through here and nothing else does (the reader's
fallback to the lock is ``Access.fetch``).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Tuple

from . import _layout as L
from . import _segment
from ._build import hot as _hot
from ._counts import GC_FLUSH_WAIT, PendingCounts
from ._engine import Engine
from ._errors import CorruptSegment, SessionNotFound, StoreClosed
from ._lock import StoreLock
from ._reader import HOUSEKEEPING_EVERY, Reader
from ._rules import _OWNER_PERSON as OWNER_PERSON
from ._segment import Segment

__all__ = ["Access"]

_DIRTY_W = L.DIRTY_W
_FLAGS_W = L.FLAGS_W
_SEQ_W = L.SEQ_W
_monotonic_ns = time.monotonic_ns


class Access:
    """The lock, the lock-free reader and the pending counts of one handle of ``seg``,
    whose bytes ``engine`` works on, with ids digested under ``secret``; ``lock_timeout`` is
    the handle's option (see ``SessionStorage``). ``hot`` is the compiled hot path over the
    same (``_hot.c``), or None in the pure build (``_build``)."""

    __slots__ = ("seg", "engine", "w", "lock", "reader", "counts", "ops", "hot")

    def __init__(self, seg: Segment, engine: Engine, secret: bytes,
                 lock_timeout: Optional[float]) -> None:
        self.seg = seg
        self.engine = engine
        self.w = words = engine.w  # the control words, which acquire and the lock watch

        def reopen() -> int:
            seg.reopen()
            return seg.fd

        # The handle's one lock, for life: close() closes it (see StoreLock.close).
        self.lock = lock = StoreLock(seg.fd, lock_timeout, reopen)
        # A waiting writer watches for the holder's transaction to end (see StoreLock.busy):
        # the dirty word is set from begin to commit, the sequence word only around the
        # stores a reader could copy.
        lock.busy = lambda: bool(words[_DIRTY_W])
        self.ops = 0  # lock acquisitions: every HOUSEKEEPING_EVERY-th one does housekeeping
        self.reader = reader = Reader(seg.buf, engine, lock, self.fetch, self.repair)
        self.hot: Optional[Any] = None
        if _hot is not None:
            # It calls back for whatever is not its own: the repair and housekeeping, under
            # the lock or with it tried; a write with an expired entry due for the sweep.
            geo = engine.geo
            self.hot = _hot.Hot(
                seg.buf, geo.bounds(), geo.journal_off, geo.journal_size, geo.max_entries,
                secret, OWNER_PERSON, lock, engine.j, self.repair, reader.housekeep,
                engine.sweep_next, SessionNotFound, reader.lock_free, engine.touch_on_read,
                engine.default_ttl_ns)
        # What the reader, the engine, the lock and the compiled path count, added to the
        # shared counters every HOUSEKEEPING_EVERY operations, at stats() and close(), and at
        # exit and fork.
        self.counts = PendingCounts(engine, reader, lock, self.hot)

    def acquire(self) -> None:
        """Take the lock, and repair first if anything is left to repair."""
        lock = self.lock
        lock.acquire()
        w = self.w
        self.ops += 1
        # Repairs when something is left to repair; otherwise housekeeping (the unlinked
        # check is an fstat, counters are flushed) every HOUSEKEEPING_EVERY ops, not after
        # every wait: under contention most writes wait, and this runs inside the lock.
        if (w[_DIRTY_W] or w[_FLAGS_W] or w[_SEQ_W] & 1
                or not self.ops % HOUSEKEEPING_EVERY):
            try:
                self.repair()
            except BaseException:
                lock.release()
                raise

    @contextmanager
    def locked(self) -> Iterator[Engine]:
        """The engine, with the lock held (see ``acquire``) until the block ends: for the
        operations off the hot path."""
        self.acquire()
        try:
            yield self.engine
        finally:
            self.lock.release()

    def fetch(self, digest: bytes) -> Optional[Tuple[bytes, int]]:
        """A read under the lock: what a lock-free one hands over (see ``_reader``)."""
        self.acquire()
        try:
            return self.engine.fetch(digest, _monotonic_ns())
        finally:
            self.lock.release()

    def repair(self) -> None:
        """Under the lock: undo what a dead writer left, finish a clear, let lock-free
        readers back in, add the pending counts (see ``Engine.repair``).

        :raises SegmentUnlinked: the store was unlinked. :raises CorruptSegment:
        """
        self.engine.repair(self.seg.unlinked())
        self.counts.flush()

    # ------------------------------------------------------------------ the way out
    def close(self) -> None:
        """Detach the handle (see ``SessionStorage.close``). Idempotent."""
        lock = self.lock
        try:
            # Wait out a critical section of another thread before unmapping under it.
            lock.acquire()
        except StoreClosed:
            return  # closed already (by this thread or another)
        try:
            self.reader.lock_free = False  # reads from now on take the lock, and learn
            if self.hot is not None:
                self.hot.lock_free = False
            self.counts.flush()
        finally:
            try:
                lock.close()  # under the thread lock: no thread uses the mapping after this
            finally:
                self.detach()

    def detach(self) -> None:
        if self.hot is not None:
            self.hot.close()  # it pins the mapping too
        self.engine.close()  # the journal's views pin the mapping
        self.seg.close()

    def unlink(self, name: str) -> None:
        """Remove store ``name`` (this handle's) and close the handle (see
        ``SessionStorage.unlink``)."""
        try:
            self.acquire()
        except StoreClosed:
            # A closed handle (here, or by another thread) still removes the store.
            _segment.unlink(name)
            return
        except CorruptSegment:
            # Unlinking is the remedy for damage: the name goes all the same, and handles
            # attached elsewhere learn from the unlinked segment (st_nlink == 0).
            _segment.unlink(name)
            self.close()
            return
        try:
            engine = self.engine
            engine.mark_unlinked()
            # The name goes before the lock does: whoever takes the lock next finds the
            # flag and an unlinked segment together (see Engine.repair).
            try:
                _segment.unlink(name)
            except BaseException:
                engine.unmark_unlinked()
                raise
        finally:
            self.lock.release()
        self.close()

    def collect(self) -> None:
        """A handle dropped without close(), from ``SessionStorage.__del__``: what it counted
        since its last flush is not lost, and its descriptor and mapping go. The collector
        may run this in any thread, even one in the middle of an operation on another
        handle, so the wait for the lock is short and bounded."""
        self.counts.flush_within(GC_FLUSH_WAIT)  # never raises
        # No thread can be using a handle the collector found, so its descriptor and mapping
        # go without the lock (close() would wait for it).
        try:
            lock = self.lock
            if not lock.closed:
                lock.closed = True
                self.detach()
        except Exception:  # noqa: BLE001 - at interpreter shutdown
            pass
