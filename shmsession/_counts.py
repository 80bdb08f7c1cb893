"""A handle's pending counts, and the process-wide hooks that keep them from being lost.

The reader and the engine count hits, misses and writes, and the lock counts its waits, per
handle; ``PendingCounts.flush`` adds them to the segment's shared counters (one shared
read-modify-write every ``HOUSEKEEPING_EVERY`` operations rather than one per operation).
A worker that exits without ``close()``, as most do, would lose the rest, and a child forked
with some pending would add them a second time. So every open handle adds its rest at exit
and, when its lock is free that instant, just before a fork; and a child starts with nothing
pending. None of these waits long for a lock: a holder that is stopped must not stop an exit
or a fork.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from typing import Any, List

from . import _layout as L
from ._engine import Engine
from ._lock import StoreLock
from ._reader import Reader

__all__ = ["GC_FLUSH_WAIT", "PendingCounts"]

_LOCK_WAITS = L.COUNTER_W["lock_waits"]
_LOCK_WAIT_NS = L.COUNTER_W["lock_wait_ns"]
_EXIT_FLUSH_WAIT = 0.5  # seconds an exiting process waits for each handle's lock
GC_FLUSH_WAIT = 0.05  # the same for a handle the garbage collector takes


class PendingCounts:
    """What one handle (its ``engine``, ``reader`` and ``lock``) has counted since it last
    added to the shared counters. Made once per handle; tracked for the exit and fork hooks
    for as long as the handle holds it."""

    __slots__ = ("engine", "reader", "lock", "hot", "__weakref__")

    def __init__(self, engine: Engine, reader: Reader, lock: StoreLock, hot: Any) -> None:
        self.engine = engine
        self.reader = reader
        self.lock = lock
        self.hot = hot  # the compiled path (_hot.c), or None
        with _tracked_guard:
            _tracked.add(self)

    def flush(self) -> None:
        """Add the pending counts to the shared counters; the caller holds the lock."""
        engine = self.engine
        lock = self.lock
        reader = self.reader
        hits, misses, waits, wait_ns = reader.hits, reader.misses, lock.waits, lock.wait_ns
        reader.hits = reader.misses = lock.waits = lock.wait_ns = 0
        hot = self.hot
        if hot is not None:  # the compiled path counts the same, apart
            hot_hits, hot_misses, writes, hot_waits, hot_wait_ns = hot.take_counts()
            hits += hot_hits
            misses += hot_misses
            waits += hot_waits
            wait_ns += hot_wait_ns
            engine.writes_done += writes
        if waits:
            engine.bump(_LOCK_WAITS, waits)
            engine.bump(_LOCK_WAIT_NS, wait_ns)
        engine.add_counts(hits, misses)

    def pending(self) -> bool:
        e = self.engine
        r = self.reader
        return bool(r.hits or r.misses or e.hits or e.misses or e.writes_done
                    or self.lock.waits or self.hot is not None and self.hot.pending())

    def flush_within(self, wait: float) -> None:
        """``flush`` if the lock comes within ``wait`` seconds; else leave the counts. Never
        raises: it runs at exit, before fork and from the garbage collector, and the counts
        are advisory."""
        try:
            lock = self.lock
            if not self.pending():
                return
            if lock.closed or not lock.acquire_within(wait):
                return
            try:
                self.flush()
            finally:
                lock.release()
        except Exception:  # noqa: BLE001 - e.g. a descriptor a child could not re-open
            pass

    def zero(self) -> None:
        """Forget the reader's and the engine's counts (the lock zeroes its own at fork)."""
        r = self.reader
        r.hits = r.misses = 0
        e = self.engine
        e.hits = e.misses = e.writes_done = 0
        if self.hot is not None:
            self.hot.zero()


_tracked: "weakref.WeakSet[PendingCounts]" = weakref.WeakSet()
# A WeakSet that another thread changes while a hook iterates it raises RuntimeError.
_tracked_guard = threading.Lock()


def _all_tracked() -> List[PendingCounts]:
    with _tracked_guard:
        return list(_tracked)


def _flush_at_exit() -> None:
    for counts in _all_tracked():
        counts.flush_within(_EXIT_FLUSH_WAIT)


def _flush_before_fork() -> None:
    # Before _lock's own before-fork hook, which takes every handle's thread lock (CPython
    # calls these hooks in the reverse order of registration, and _lock, imported above,
    # registered its hook before this module's): the locks can still be had here.
    for counts in _all_tracked():
        counts.flush_within(0.0)


def _start_child_at_zero() -> None:
    # What the parent had pending at the fork is the parent's to add. (After _lock's
    # after-in-child hook, in the order of registration: it zeroes the lock-wait counts.)
    global _tracked_guard
    _tracked_guard = threading.Lock()  # a thread that held it at the fork is not in the child
    for counts in list(_tracked):
        counts.zero()


atexit.register(_flush_at_exit)
os.register_at_fork(before=_flush_before_fork, after_in_child=_start_child_at_zero)
