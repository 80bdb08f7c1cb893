"""The value allocator over a buffer: knows blocks, not keys.

Blocks carry boundary tags (the same ``size | used`` word as header and footer), so freeing
coalesces with both neighbours at once and no two free blocks are ever adjacent. A used
block also keeps its owner (the entry's 16-byte digest, opaque here) in front of its
footer, so a walk in address order can name the entry behind every block it passes. Free blocks
sit in doubly linked lists, one per power-of-two size class, with a bitmap of the non-empty
classes in the header. ``alloc`` tries the exact class first (bounded first fit, close to
best fit), then takes the head of the next non-empty larger class and splits it: the
segregated-fit scheme of dlmalloc and TLSF, which keeps fragmentation low under churn of
mixed sizes (tests/unit/test_structures.py measures it at 70% fill).

Every metadata change goes through the journal; the caller holds the store's lock.
"""

from __future__ import annotations

from typing import Dict, List

from . import _layout as L
from ._errors import CorruptSegment
from ._journal import Buffer, Journal

_U64 = L.U64
_FREE_HEAD = L.FREE_HEAD
_USED = L.USED_BIT
_MIN = L.MIN_BLOCK
_BINS = L.BINS_OFF
_TAIL = L.BLOCK_TAIL
_SCAN = 16  # nodes of the exact size class examined before taking a larger block


def _damaged(what: str) -> CorruptSegment:
    return CorruptSegment(
        f"the heap is damaged: {what}; unlink the store and start a new one (check() lists "
        "every problem)"
    )


def bin_of(size: int) -> int:
    """The size class of a block: blocks of class ``b`` are ``2**b <= size < 2**(b+1)``."""
    return size.bit_length() - 1


class Heap:
    """Blocks in ``buf[off:off+size]``; writes through ``journal``; caller holds the lock."""

    __slots__ = ("buf", "j", "off", "end")

    def __init__(self, buf: Buffer, journal: Journal, off: int, size: int) -> None:
        self.buf = buf
        self.j = journal
        self.off = off
        self.end = off + size

    # -- set-up (creator only, before anyone else can see the segment) ----------------------
    def format(self) -> None:
        """Make the whole heap one free block and empty every other class."""
        buf = self.buf
        size = self.end - self.off
        buf[_BINS : _BINS + 8 * L.NBINS] = bytes(8 * L.NBINS)
        _U64.pack_into(buf, L.HEAP_USED_OFF, 0)
        _U64.pack_into(buf, L.BITMAP_OFF, 0)
        _FREE_HEAD.pack_into(buf, self.off, size, 0, 0)
        _U64.pack_into(buf, self.end - 8, size)
        b = bin_of(size)
        _U64.pack_into(buf, _BINS + 8 * b, self.off)
        _U64.pack_into(buf, L.BITMAP_OFF, 1 << b)

    # -- free lists ----------------------------------------------------------------------------
    def _unlink(self, blk: int, size: int) -> None:
        buf = self.buf
        j = self.j
        _, nxt, prv = _FREE_HEAD.unpack_from(buf, blk)
        self._check_link(nxt)
        self._check_link(prv)
        if prv:
            j.write(prv + 8, _U64.pack(nxt))
        else:
            b = bin_of(size)
            j.log_state()
            _U64.pack_into(buf, _BINS + 8 * b, nxt)
            if not nxt:
                bitmap = _U64.unpack_from(buf, L.BITMAP_OFF)[0]
                _U64.pack_into(buf, L.BITMAP_OFF, bitmap & ~(1 << b))
        if nxt:
            j.write(nxt + 16, _U64.pack(prv))

    def _link(self, blk: int, size: int) -> None:
        buf = self.buf
        j = self.j
        b = bin_of(size)
        head = _U64.unpack_from(buf, _BINS + 8 * b)[0]
        self._check_link(head)
        j.write(blk, _FREE_HEAD.pack(size, head, 0))
        j.write(blk + size - 8, _U64.pack(size))
        if head:
            j.write(head + 16, _U64.pack(blk))
        j.log_state()
        _U64.pack_into(buf, _BINS + 8 * b, blk)
        bitmap = _U64.unpack_from(buf, L.BITMAP_OFF)[0]
        _U64.pack_into(buf, L.BITMAP_OFF, bitmap | (1 << b))

    def _find(self, need: int) -> int:
        buf = self.buf
        b = bin_of(need)
        node = _U64.unpack_from(buf, _BINS + 8 * b)[0]
        for _ in range(_SCAN):
            if not node:
                break
            self._check_link(node)
            if _U64.unpack_from(buf, node)[0] >= need:
                return int(node)
            node = _U64.unpack_from(buf, node + 8)[0]
        larger = _U64.unpack_from(buf, L.BITMAP_OFF)[0] >> (b + 1)
        if not larger:
            return 0
        b += (larger & -larger).bit_length()
        if b >= L.NBINS:
            raise _damaged(f"the size-class bitmap names class {b}, past the last")
        node = _U64.unpack_from(buf, _BINS + 8 * b)[0]
        self._check_link(node)
        return int(node)

    # -- the interface -------------------------------------------------------------------------
    def alloc(self, n: int, owner: bytes) -> int:
        """A payload offset with room for ``n`` bytes, or 0 when no free block is big enough.
        ``owner`` (16 bytes: the entry's digest) is kept in the block's tail (``owner_of``)."""
        need = L.block_size_for(n)
        blk = self._find(need)
        if not blk:
            return 0
        j = self.j
        size, used = self.block(blk)
        if used or size < need:
            raise _damaged(f"the free lists hold block {blk}, which is in use or too small")
        self._unlink(blk, size)
        if size - need >= _MIN:
            self._link(blk + need, size - need)
        else:
            need = size
        tag = _U64.pack(need | _USED)
        # The header record must cover the old links too: the caller copies the value over
        # them without a record of its own.
        j.record(blk, 24)
        j.raw(blk, tag)
        j.write(blk + need - _TAIL, owner + tag)
        self._add_used(need)
        return blk + 8

    def free(self, payload: int) -> None:
        """Return the block holding ``payload`` to the free lists, merged with free neighbours."""
        buf = self.buf
        blk = payload - 8
        size, used = self.block(blk)
        if not used:
            raise _damaged(f"block {blk} is freed, but it is not in use")
        freed = size
        self.j.guard(blk, blk + size)  # live data until this transaction commits
        nxt = blk + size
        j = self.j
        # Merging buries a neighbour's header and links, or its footer, inside the new free
        # block, where a value may later be copied in this same transaction: guard them.
        if nxt < self.end:
            tag = self.block(nxt)
            if not tag[1]:
                j.guard(nxt, nxt + 24)
                self._unlink(nxt, tag[0])
                size += tag[0]
        if blk > self.off:
            tag = _U64.unpack_from(buf, blk - 8)[0]
            if not tag & _USED:
                j.guard(blk - 8, blk)
                blk = self.block_before(blk)
                self._unlink(blk, tag)
                size += tag
        self._link(blk, size)
        self._add_used(-freed)

    def _add_used(self, by: int) -> None:
        buf = self.buf
        self.j.log_state()
        used = _U64.unpack_from(buf, L.HEAP_USED_OFF)[0] + by
        if not 0 <= used <= self.end - self.off:
            raise _damaged(f"the heap's count of bytes used would be {used}")
        _U64.pack_into(buf, L.HEAP_USED_OFF, used)

    def capacity(self, payload: int) -> int:
        """How many value bytes the block holding ``payload`` has room for."""
        return int(_U64.unpack_from(self.buf, payload - 8)[0] & ~_USED) - L.BLOCK_OVERHEAD

    def used_bytes(self) -> int:
        return int(_U64.unpack_from(self.buf, L.HEAP_USED_OFF)[0])

    def free_bytes(self) -> int:
        return self.end - self.off - self.used_bytes()

    def largest_free(self) -> int:
        """Payload bytes of the largest free block (a scan of the top non-empty class).

        :raises CorruptSegment: the list is longer than the heap has room for blocks.
        """
        buf = self.buf
        bitmap = _U64.unpack_from(buf, L.BITMAP_OFF)[0]
        if not bitmap:
            return 0
        node = _U64.unpack_from(buf, _BINS + 8 * (bitmap.bit_length() - 1))[0]
        best = 0
        for _ in range(self.max_blocks()):
            if not node:
                return max(0, best - L.BLOCK_OVERHEAD)
            self._check_block(node)
            best = max(best, _U64.unpack_from(buf, node)[0] & ~_USED)
            node = _U64.unpack_from(buf, node + 8)[0]
        raise _damaged("a free list of the heap is longer than the heap: it has a cycle")

    # -- walking blocks in address order (for making contiguous room) -------------------------
    def max_blocks(self) -> int:
        """The most blocks the heap can hold: the bound of every walk over it."""
        return (self.end - self.off) // _MIN + 1

    def block(self, blk: int) -> "tuple[int, bool]":
        """``(size, used)`` of the block starting at ``blk``.

        :raises CorruptSegment: the block's tag is not one a sound heap can hold.
        """
        self._check_block(blk)
        tag = _U64.unpack_from(self.buf, blk)[0]
        size = tag & ~_USED
        if size < _MIN or size & (L.ALIGN - 1) or blk + size > self.end:
            raise _damaged(f"heap block at {blk} has a bad size {size}")
        return int(size), bool(tag & _USED)

    def block_before(self, blk: int) -> int:
        """The start of the block that ends at ``blk`` (read from its footer)."""
        size = _U64.unpack_from(self.buf, blk - 8)[0] & ~_USED
        start = blk - size
        if size < _MIN or size & (L.ALIGN - 1) or start < self.off:
            raise _damaged(f"heap block ending at {blk} has a bad size {size}")
        return int(start)

    def owner_of(self, blk: int, size: int) -> bytes:
        """The owner recorded in the used block ``blk`` of ``size`` bytes."""
        end = blk + size - _TAIL
        return bytes(self.buf[end : end + 16])

    def _check_block(self, blk: int) -> None:
        if not self.off <= blk < self.end or blk & (L.ALIGN - 1):
            raise _damaged(f"a heap link points at {blk}, where no block can start")

    def _check_link(self, link: int) -> None:
        if link:  # 0 ends a list
            self._check_block(link)

    # -- verification ------------------------------------------------------------------------------
    def check(self) -> "tuple[Dict[int, bytes], List[str]]":
        """Walk every block and list; returns (owner by payload offset in use, problems)."""
        buf = self.buf
        problems: List[str] = []
        used: Dict[int, bytes] = {}
        free_blocks: Dict[int, int] = {}
        used_total = 0
        pos = self.off
        prev_free = False
        while pos < self.end:
            tag = _U64.unpack_from(buf, pos)[0]
            size = tag & ~_USED
            if size < _MIN or size % L.ALIGN or pos + size > self.end:
                problems.append(f"heap block at {pos} has a bad size {size}")
                return used, problems
            if _U64.unpack_from(buf, pos + size - 8)[0] != tag:
                problems.append(f"heap block at {pos}: footer differs from header")
            if tag & _USED:
                used[pos + 8] = self.owner_of(pos, size)
                used_total += size
                prev_free = False
            else:
                if prev_free:
                    problems.append(f"heap block at {pos}: two adjacent free blocks")
                free_blocks[pos] = size
                prev_free = True
            pos += size
        if used_total != self.used_bytes():
            problems.append(f"heap counts {self.used_bytes()} bytes used, blocks hold {used_total}")
        bitmap = _U64.unpack_from(buf, L.BITMAP_OFF)[0]
        listed = 0
        for b in range(L.NBINS):
            node = _U64.unpack_from(buf, _BINS + 8 * b)[0]
            if bool(node) != bool(bitmap >> b & 1):
                problems.append(f"size class {b}: bitmap bit disagrees with its list")
            prev = 0
            while node:
                if node not in free_blocks:
                    problems.append(f"size class {b} lists {node}, which is not a free block")
                    break
                if bin_of(free_blocks[node]) != b:
                    problems.append(f"free block {node} is in size class {b}, not its own")
                if _U64.unpack_from(buf, node + 16)[0] != prev:
                    problems.append(f"free block {node}: back link broken")
                listed += 1
                if listed > len(free_blocks):
                    problems.append("a free list has a cycle")
                    return used, problems
                prev = node
                node = _U64.unpack_from(buf, node + 8)[0]
        if listed != len(free_blocks):
            problems.append(f"{len(free_blocks)} free blocks, {listed} in the free lists")
        return used, problems
