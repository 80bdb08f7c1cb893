"""The undo log: every change to shared bytes goes through :meth:`Journal.write`.

A transaction is ``begin()``, any number of ``record()``/``write()``, then ``commit()``.
Each ``record(off, n)`` copies the *old* bytes at ``off`` into the journal region and only
then advances the shared ``journal_used`` word, so a record is either wholly there or not
counted. ``commit()`` clears the shared ``dirty`` word: that single store is the commit
point. If the writer dies (SIGKILL) or raises (``SystemExit`` from gunicorn's worker
timeout) before it, the next lock holder -- or the writer's own ``finally`` -- calls
:func:`recover`, which puts the old bytes back in reverse order. Restoring is idempotent, so
a crash during recovery is repaired by the next recovery.

Bytes written into space that was free when the transaction began (a value copied into a
block just allocated) need no record: rolling back the metadata makes them unreachable
again. Bytes that rollback must bring back are different: a block freed *during* the transaction
(rolling back makes it live again), and the header, links or footer of a free block that a
merge buried inside a larger one. The heap reports those with ``guard``, and ``raw``
records whatever part of its target they cover (eviction, then the new value copied into
the evicted space, is the case that needs it).

The first store of a transaction that a reader could copy -- in ``write``, ``write2`` or
``raw``, after the undo records it needs -- makes the segment's read sequence word odd, and
``commit()`` makes it even again: readers that take no lock trust a copy only if they saw one
even number before and after it (``_reader``). Undo records, control words and
the header's STATE range are nothing a reader copies, so a transaction holds readers off only
from its first visible store to its commit, not from ``begin()``: for an overwrite in place,
two copies and the commit. Control words (journal length, dirty, sequence) are stored
through ``words``, one 8-byte store each (see ``_layout``).

Everything here runs with the store's lock held by the caller; nothing opens, locks, sleeps
or reads the clock, so a ``bytearray`` is enough to test it.
"""

from __future__ import annotations

import mmap
from typing import Callable, List, Optional, Tuple, Union
from zlib import crc32

from . import _layout as L
from ._errors import CorruptSegment

Buffer = Union[bytearray, memoryview, mmap.mmap]  # any writable buffer

_ENTRY = L.ENTRY
_CRC_IN = L.ENTRY_CRC_INPUT
_USED_W = L.USED_W
_DIRTY_W = L.DIRTY_W
_SEQ_W = L.SEQ_W


class JournalFull(Exception):
    """One operation needed more undo records than the journal holds (caller rolls back)."""


def _entry_crc(txid: int, off: int, n: int) -> int:
    return crc32(_CRC_IN.pack(txid, off, n))


class Journal:
    """Undo log over ``buf[base:base+size]``; the caller holds the store's lock."""

    __slots__ = ("buf", "words", "view", "base", "size", "txid", "used", "state_logged", "freed",
                 "fault")

    def __init__(self, buf: Buffer, base: int, size: int) -> None:
        self.buf = buf
        self.words = L.words(buf)  # the control words, one 8-byte store each (see _layout)
        # Old bytes are copied into the journal view to view: one memmove. A slice of an
        # mmap is a new bytes object first (16 KiB: 0.81 us a record against 0.40).
        self.view = memoryview(buf)
        self.base = base
        self.size = size
        self.txid = 0
        self.used = 0
        self.state_logged = False
        self.freed: List[Tuple[int, int]] = []
        # Fault injection: called before every store to shared memory that a transaction
        # makes, so a test can stop the writer between any two of them.
        self.fault: Optional[Callable[[], None]] = None

    def begin(self) -> None:
        """Open a transaction; the store must be clean (``recover`` ran at lock time)."""
        w = self.words
        fault = self.fault
        txid = (w[L.NEXT_TXID_W] + 1) & 0xFFFFFFFFFFFFFFFF or 1
        if fault is not None:
            fault()
        # used=0 lands before dirty=txid: a dirty word never pairs with the last transaction's
        # used count. From the dirty store on, a crash means "roll back whatever was recorded"
        # (possibly nothing).
        w[_USED_W] = 0
        w[L.NEXT_TXID_W] = txid
        w[_DIRTY_W] = txid
        self.txid = txid
        self.used = 0
        self.state_logged = False
        if self.freed:
            self.freed = []

    def record(self, off: int, n: int) -> None:
        """Save the ``n`` bytes at ``off`` before the caller changes them."""
        used = self.used
        end = used + 16 + ((n + 7) & ~7)
        if end > self.size:
            raise JournalFull(f"one operation needs more than {self.size} journal bytes")
        buf = self.buf
        fault = self.fault
        pos = self.base + used
        if fault is not None:
            fault()
        _ENTRY.pack_into(buf, pos, off, n, _entry_crc(self.txid, off, n))
        if fault is not None:
            fault()
        view = self.view
        view[pos + 16 : pos + 16 + n] = view[off : off + n]
        if fault is not None:
            fault()
        # The record counts from this store on; before it, the target is still untouched.
        self.words[_USED_W] = end
        self.used = end

    def write(self, off: int, data: bytes) -> None:
        """Record the old bytes at ``off``, then overwrite them with ``data``."""
        n = len(data)
        self.record(off, n)
        self._expose()
        self.buf[off : off + n] = data

    def write2(self, a: int, data_a: bytes, b: int, data_b: bytes) -> None:
        """``write(a, data_a)`` then ``write(b, data_b)``, with their two records counted by
        one store: the overwrite of a value and its slot, the hottest path, in one call."""
        na = len(data_a)
        nb = len(data_b)
        used = self.used
        mid = used + 16 + ((na + 7) & ~7)
        end = mid + 16 + ((nb + 7) & ~7)
        if end > self.size:
            raise JournalFull(f"one operation needs more than {self.size} journal bytes")
        buf = self.buf
        fault = self.fault
        txid = self.txid
        pa = self.base + used
        pb = self.base + mid
        if fault is not None:
            fault()
        _ENTRY.pack_into(buf, pa, a, na, crc32(_CRC_IN.pack(txid, a, na)))  # = _entry_crc
        view = self.view
        view[pa + 16 : pa + 16 + na] = view[a : a + na]
        _ENTRY.pack_into(buf, pb, b, nb, crc32(_CRC_IN.pack(txid, b, nb)))
        view[pb + 16 : pb + 16 + nb] = view[b : b + nb]
        if fault is not None:
            fault()
        w = self.words
        w[_USED_W] = end  # both records count from here
        self.used = end
        self._expose()
        buf[a : a + na] = data_a
        if fault is not None:
            fault()
        buf[b : b + nb] = data_b

    def _expose(self) -> None:
        """Called just before a store that a reader without the lock could copy (``write``,
        ``write2``, ``raw``): the first in a transaction makes the read sequence word odd,
        so such readers stop trusting their copies until ``commit`` makes it even again."""
        w = self.words
        fault = self.fault
        seq = w[_SEQ_W]
        if not seq & 1:
            if fault is not None:
                fault()
            w[_SEQ_W] = seq + 1
        if fault is not None:
            fault()

    def log_state(self) -> None:
        """Record the header's STATE range once per transaction (bins, counts, version)."""
        if not self.state_logged:
            self.record(L.STATE_OFF, L.STATE_SIZE)
            self.state_logged = True

    def guard(self, start: int, end: int) -> None:
        """Have ``raw`` record ``[start, end)`` before overwriting it in this transaction."""
        self.freed.append((start, end))

    def raw(self, off: int, data: Union[bytes, bytearray, memoryview]) -> None:
        """Write ``data`` at ``off``, recording only the bytes under a ``guard``; the rest is
        the inside of free blocks, which nothing reads."""
        if self.freed:
            end = off + len(data)
            for start, stop in self.freed:
                lo = max(start, off)
                hi = min(stop, end)
                if lo < hi:
                    self.record(lo, hi - lo)
        self._expose()
        self.buf[off : off + len(data)] = data

    def commit(self) -> None:
        """Make the transaction durable: one store of 0 into the shared dirty word."""
        fault = self.fault
        if fault is not None:
            fault()
        w = self.words
        w[_DIRTY_W] = 0
        # The new state is whole: lock-free readers may trust it again. A writer stopped
        # between these two stores leaves nothing open and the sequence odd, which the next
        # lock holder closes (Access.acquire repairs when it finds the sequence odd).
        seq_close(w)
        self.txid = 0

    def rollback(self) -> None:
        """Undo the open transaction (used in ``finally`` when an operation raised)."""
        recover(self.buf, self.base, self.size)
        seq_close(self.words)
        self.txid = 0

    def close(self) -> None:
        """Let go of the buffer (an mmap cannot close while a view pins it)."""
        self.words.release()
        self.view.release()


def seq_open(words: memoryview) -> None:
    """Make the read sequence odd (if it is not already): shared bytes are about to change."""
    seq = words[_SEQ_W]
    if not seq & 1:
        words[_SEQ_W] = seq + 1


def seq_close(words: memoryview) -> None:
    """Make the read sequence even again, a new number: the bytes are one whole state."""
    seq = words[_SEQ_W]
    if seq & 1:
        words[_SEQ_W] = (seq + 1) & 0xFFFFFFFFFFFFFFFF


def is_dirty(buf: Buffer) -> bool:
    """True when a transaction was left open (its writer died or raised)."""
    return bool(L.USED_TXID_DIRTY.unpack_from(buf, L.JOURNAL_USED_OFF)[2])


def recover(buf: Buffer, base: int, size: int) -> bool:
    """Roll back an open transaction, if any; returns whether there was one.

    Raises :class:`CorruptSegment` when a counted record fails its check, which no crash
    of a writer can cause (records are counted only once complete).
    """
    used, _, dirty = L.USED_TXID_DIRTY.unpack_from(buf, L.JOURNAL_USED_OFF)
    if not dirty:
        return False
    if used > size:
        raise CorruptSegment(
            f"the undo journal claims {used} bytes in a region of {size}; "
            "the segment is damaged: unlink it and start a new one"
        )
    entries = []
    pos = 0
    while pos < used:
        off, n, crc = _ENTRY.unpack_from(buf, base + pos)
        if (crc != _entry_crc(dirty, off, n) or pos + 16 + n > used
                or off < L.STATE_OFF or off + n > len(buf)):
            raise CorruptSegment(
                f"undo journal record at {pos} of transaction {dirty} fails its crc; "
                "the segment is damaged: unlink it and start a new one"
            )
        entries.append((off, n, base + pos + 16))
        pos += 16 + ((n + 7) & ~7)
    w = L.words(buf)
    try:
        seq_open(w)  # odd already if the writer stored anything a reader sees; made sure
        for off, n, src in reversed(entries):
            buf[off : off + n] = buf[src : src + n]
        w[_DIRTY_W] = 0
    finally:
        w.release()
    # The sequence stays odd: the caller closes it once every repair is done (a clear() may
    # still be waiting to be finished).
    return True
