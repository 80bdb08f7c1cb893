"""Making room in a full store: where a value goes when no free block can take it.

A value that fits the empty store must always be storable in evict mode, so room is made
*contiguous*: expired entries go first, then one run of physically adjacent heap blocks as
large as the value is cleared (``Room.plan``), and an entry that needs a slot when the table
is at ``max_entries`` evicts one least recently used entry (``Room.make_slot_room``). Random
evictions alone rarely free neighbours: a store full of ~900-byte sessions refused every
4 KiB value before this. The work of one write is bounded (one eviction per ``MIN_BLOCK``
bytes of its value) and counted in ``stats()`` (the ``room_*`` counters).

Works through the ``Engine`` it belongs to, inside its transaction; the caller holds the
store's lock. Like the engine, it never reads the clock: ``now`` is passed in.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, List, Optional, Tuple

from . import _layout as L
from ._errors import StoreFull
from ._layout import S_ATIME, S_DIGEST, S_STATE, S_VALUE_OFF
from ._table import Slot, expired

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["Room"]

_C = L.COUNTER_W
_EVICTIONS = _C["evictions"]
_EXPIRATIONS = _C["expirations"]
_ROOM_WRITES = _C["room_writes"]
_ROOM_EVICTIONS = _C["room_evictions"]
_ROOM_MAX = _C["room_max_evictions"]

_SWEEP_SLOTS = 256  # slots an evicting write sweeps for expired entries before evicting
_MAX_REMOVALS = 64  # expired entries one write may reclaim on its way to room for its value
_SAMPLE = 8  # used slots sampled to pick a least-recently-used victim (as Redis does)
_ROOM_SEEDS = 3  # sampled victims whose runs Room.plan weighs
_ROOM_TXN = 128  # evictions one transaction carries (~50 KiB of undo records; see Room.clear)


class Room:
    """Room-making for the engine ``e``; every method runs inside ``e``'s transaction."""

    __slots__ = ("e",)

    def __init__(self, engine: "Engine") -> None:
        self.e = engine

    def alloc(self, n: int, digest: bytes, old: int, now: int) -> Tuple[int, bool]:
        """Heap room for ``n`` bytes of the entry ``digest``, whose value is in the block at
        ``old`` (0 for a new entry): the payload offset, and whether ``old`` was freed on
        the way (then the caller must not free it again). Caller holds the lock, inside the
        write's transaction.

        Expired entries are reclaimed first. Then, in evict mode, one run of physically
        adjacent blocks at least as large as the value's block is cleared (``plan``),
        so a value that fits the empty store always finds room, at the cost of at most one
        eviction per ``MIN_BLOCK`` bytes of the value. Random evictions alone rarely free
        neighbours: a store full of 1 KiB sessions refused every 4 KiB value after them.
        """
        h = self.e.h
        p = h.alloc(n, digest)
        if p:
            return p, False
        if self.e.sweep(now, _SWEEP_SLOTS if self.e.evict else self.e.geo.capacity,
                       _MAX_REMOVALS):
            p = h.alloc(n, digest)
            if p:
                return p, False
        if not self.e.evict:
            raise StoreFull(
                f"no room for a value of {n} bytes, and the store is set to raise "
                "(when_full='raise'): delete sessions, shorten their ttl, or create the store "
                "with a larger size"
            )
        victims, with_old = self.plan(L.block_size_for(n), digest, old, now)
        self.clear(victims, now)
        if with_old:
            h.free(old)
        p = h.alloc(n, digest)
        if not p:
            raise self.e.damaged(f"the heap gave no block after a run of "
                                f"{L.block_size_for(n)} bytes was cleared for it")
        return p, with_old

    def plan(self, need: int, protect: bytes, old: int,
                   now: int) -> Tuple[List[bytes], bool]:
        """Choose a run of adjacent heap blocks of at least ``need`` bytes to clear: the
        entries (digests) to evict, and whether the run takes in ``old``, the block of the
        entry being rewritten (its value goes anyway). Reads only; caller holds the lock.

        Each of the ``_ROOM_SEEDS`` least recently used entries of a random sample (as
        Redis samples) seeds a run, which grows one neighbour at a time towards the
        cheaper side: a free block or ``old`` first, then an expired entry, then the less
        recently used. The run that evicts the fewest live entries wins. Every step adds
        at least ``MIN_BLOCK`` bytes, so a run is at most ``need // MIN_BLOCK + 2`` blocks.
        """
        seeds = [slot[S_VALUE_OFF] - L.BLOCK_HEADER for slot in self.lru_sample(protect, now)]
        seeds = seeds[:_ROOM_SEEDS]
        if old:
            seeds.append(old - L.BLOCK_HEADER)  # the block being rewritten, and its neighbours
        best: Optional[Tuple[int, List[bytes], bool]] = None
        for blk in seeds:
            run = self.run_from(blk, need, old, now)
            if run is not None and (best is None or run[0] < best[0]):
                best = run
                if run[0] <= 1:
                    break
        if best is None:
            raise StoreFull(
                f"no run of {need} bytes can be cleared in this store's heap of "
                f"{self.e.geo.heap_size} bytes: create the store with a larger size"
            )
        return best[1], best[2]

    def run_from(self, start: int, need: int, old: int,
                  now: int) -> Optional[Tuple[int, List[bytes], bool]]:
        """The run grown from the block at ``start`` (see ``plan``): how many live
        entries it evicts, their digests and whether it takes in ``old``; None when the
        whole heap is smaller than ``need``."""
        h = self.e.h
        lo = start
        hi = start + h.block(start)[0]
        victims: List[bytes] = []
        live = 0
        with_old = False

        def rank(blk: int) -> Tuple[int, int, bytes]:
            # (0, 0, b""): costs nothing; (1, 0, digest): expired; (2, atime, digest): live.
            size, used = h.block(blk)
            if not used or blk + L.BLOCK_HEADER == old:
                return (0, 0, b"")
            digest = h.owner_of(blk, size)
            slot = self.slot_of(digest, blk)
            if expired(slot, now):
                return (1, 0, digest)
            return (2, slot[S_ATIME], digest)

        def take(r: Tuple[int, int, bytes], blk: int) -> None:
            nonlocal live, with_old
            if r[0]:
                victims.append(r[2])
                live += r[0] == 2
            elif blk + L.BLOCK_HEADER == old:
                with_old = True

        take(rank(start), start)
        left: Optional[Tuple[int, int, bytes]] = None
        right: Optional[Tuple[int, int, bytes]] = None
        while hi - lo < need:
            if left is None and lo > h.off:
                left = rank(h.block_before(lo))
            if right is None and hi < h.end:
                right = rank(hi)
            if left is not None and (right is None or left[:2] < right[:2]):
                lo = h.block_before(lo)
                take(left, lo)
                left = None
            elif right is not None:
                size = h.block(hi)[0]
                take(right, hi)
                hi += size
                right = None
            else:
                return None  # the whole heap is smaller than need
        return live, victims, with_old

    def slot_of(self, digest: bytes, blk: int) -> Slot:
        """The slot of the entry that owns the used block ``blk``.

        :raises CorruptSegment: no entry with that digest points at the block.
        """
        slot = self.e.t.probe(digest)[1]
        if slot is None or slot[S_VALUE_OFF] != blk + L.BLOCK_HEADER:
            raise self.e.damaged(f"heap block {blk} names an entry that does not point back "
                                "at it")
        return slot

    def clear(self, victims: List[bytes], now: int) -> None:
        """Evict ``victims`` (digests), counting the work in ``stats()``. Caller holds the
        lock, inside the write's transaction.

        One transaction holds the undo records of ``_ROOM_TXN`` evictions with room to
        spare; a larger run (a value of many times the typical session) is cleared in
        committed transactions of that many first, the rest in the write's own. A writer
        stopped in between leaves those sessions evicted and its value unwritten: the
        store stays whole, and evicting them is what a full store may do at any time.
        """
        j = self.e.j
        early = max(0, len(victims) - _ROOM_TXN)
        if early:
            j.commit()  # the write's transaction so far: reclaims that stand on their own
            for k in range(0, early, _ROOM_TXN):
                j.begin()
                for digest in victims[k : min(k + _ROOM_TXN, early)]:
                    self.evict_entry(digest, now)
                j.commit()
            j.begin()
        for digest in victims[early:]:
            self.evict_entry(digest, now)
        self.e.bump(_ROOM_WRITES)
        self.e.bump(_ROOM_EVICTIONS, len(victims))
        if len(victims) > self.e.w[_ROOM_MAX]:
            self.e.w[_ROOM_MAX] = len(victims)  # advisory, like the counters

    def evict_entry(self, digest: bytes, now: int) -> None:
        i, slot = self.e.t.probe(digest)
        if slot is None:  # plan() found it, and nothing but other victims has gone since
            raise self.e.damaged("an entry chosen for eviction vanished")
        self.e.drop(i, slot)
        self.e.bump(_EXPIRATIONS if expired(slot, now) else _EVICTIONS)

    def lru_sample(self, protect: bytes, now: int) -> List[Slot]:
        """Up to ``_SAMPLE`` used slots other than ``protect``'s from a random place in the
        table, expired ones first, then least recently used first."""
        t = self.e.t
        mask = t.mask
        sample: List[Slot] = []
        start = random.getrandbits(32) & mask
        for k in range(t.capacity):
            slot = t.get((start + k * 7919) & mask)  # an odd stride visits every slot once
            if slot[S_STATE] and slot[S_DIGEST] != protect:
                sample.append(slot)
                if len(sample) >= _SAMPLE:
                    break
        sample.sort(key=lambda s: (not expired(s, now), s[S_ATIME]))
        return sample

    def make_slot_room(self, protect: bytes, now: int) -> None:
        """Remove one entry other than ``protect`` to free a slot: an expired one if any is
        found, else (in evict mode) the least recently used of a random sample. Caller
        holds the lock."""
        if self.e.sweep(now, self.e.geo.capacity if not self.e.evict else _SWEEP_SLOTS, 1):
            return
        if not self.e.evict:
            raise StoreFull(
                "the store is full and set to raise (when_full='raise'): delete sessions, "
                "shorten their ttl, or create the store with a larger size / max_entries"
            )
        sample = self.lru_sample(protect, now)
        if not sample:
            raise StoreFull("the store has no other session to evict for this value")
        victim = sample[0]
        self.e.drop(self.e.t.lookup(victim[S_DIGEST]), victim)
        self.e.bump(_EVICTIONS)
