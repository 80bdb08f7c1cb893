"""The hash table over a buffer: knows slots, not values.

Open addressing with linear probing over ``capacity`` (a power of two) slots of 128 bytes.
A slot's key is a keyed digest of the session id (see ``_digests``), its home is the
digest's first 8 bytes modulo the capacity. Deletion shifts later members of the probe run
back into the hole (Knuth's algorithm R), so there are no tombstones, runs never grow from
deletions, and the table never needs rebuilding. The invariant :meth:`Table.check` verifies:
every used slot is reachable from its home without crossing an empty slot.

A slot that the deletion moves takes its owner half with it; an owned one's owner list is
told (``Owners.moved``), so the owner index stays exact.

Every change goes through the journal; the caller holds the store's lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Tuple

from . import _layout as L
from ._errors import CorruptSegment
from ._journal import Buffer, Journal
from ._layout import S_DIGEST, S_EXPIRES, S_STATE

if TYPE_CHECKING:
    from ._owners import Owners

__all__ = ["Slot", "Table", "expired", "no_empty_slot"]

_SLOT = L.SLOT
_SIZE = L.SLOT_SIZE
_SHIFT = L.SLOT_SHIFT
_HOME = L.U64
_ROW = L.SLOT_ROW
_EMPTY_SLOT = bytes(_SIZE)
_OWNER_AT = L.SLOT_OWNER_OFF
_OWNER_END = L.SLOT_OWNER_OFF + L.DIGEST_SIZE
_NO_OWNER = L.NO_OWNER

Slot = Tuple[bytes, int, int, int, int, int, int, int]
"""A slot as ``L.SLOT`` unpacks it; read its fields by name: ``slot[L.S_EXPIRES]``."""


def expired(slot: Slot, now: int) -> bool:
    """Whether the entry in ``slot`` has expired at ``now`` (``L.NEVER``: it never does)."""
    expires = slot[S_EXPIRES]
    return expires != L.NEVER and expires <= now


def no_empty_slot() -> CorruptSegment:
    """The error of a probe that went round the whole table (see ``Table.lookup``)."""
    return CorruptSegment(
        "a probe ran round the whole table without finding an empty slot; the segment is "
        "damaged: unlink it and start a new one"
    )


class Table:
    """``capacity`` slots at ``buf[off:]``; writes through ``journal``; caller holds the lock."""

    __slots__ = ("buf", "j", "off", "capacity", "mask", "owners")

    def __init__(self, buf: Buffer, journal: Journal, off: int, capacity: int) -> None:
        self.buf = buf
        self.j = journal
        self.off = off
        self.capacity = capacity
        self.mask = capacity - 1
        self.owners: "Optional[Owners]" = None  # told of moved owned slots (see remove)

    def home(self, digest: bytes) -> int:
        return int(_HOME.unpack_from(digest)[0]) & self.mask

    def probe(self, digest: bytes) -> Tuple[int, Optional[Slot]]:
        """``(i, slot)`` for the used slot ``i`` that holds ``digest``, or ``(-1 - i, None)``
        for the empty slot ``i`` where it would go. One unpack per slot visited: the write
        path runs through here. (The lock-free reader keeps a loop of its own, see
        ``_reader``.)

        :raises CorruptSegment: a whole lap of the table found neither (the load factor
            keeps a quarter of the slots empty, so only damage fills them all).
        """
        buf = self.buf
        base = self.off
        mask = self.mask
        home = i = _HOME.unpack_from(digest)[0] & mask
        while True:
            slot: Slot = _SLOT.unpack_from(buf, base + (i << _SHIFT))
            if not slot[S_STATE]:
                return -1 - i, None
            if slot[S_DIGEST] == digest:
                return i, slot
            i = (i + 1) & mask
            if i == home:
                raise no_empty_slot()

    def lookup(self, digest: bytes) -> int:
        """The index of the slot holding ``digest``, or ``-1 - i`` for the empty slot ``i``
        where it would go (see ``probe``)."""
        return self.probe(digest)[0]

    def get(self, i: int) -> Slot:
        return _SLOT.unpack_from(self.buf, self.off + (i << _SHIFT))

    def put(self, i: int, slot: bytes) -> None:
        """Write a packed slot (``SLOT.pack(...)``, the owner half kept; or followed by an
        owner half, ``L.UNOWNED`` for a new entry) into slot ``i``."""
        self.j.write(self.off + i * _SIZE, slot)

    def remove(self, i: int) -> None:
        """Empty slot ``i`` and shift the rest of its probe run back (no tombstones)."""
        buf = self.buf
        base = self.off
        mask = self.mask
        j = self.j
        hole = i
        k = i
        while True:
            k = (k + 1) & mask
            if k == i:
                raise no_empty_slot()
            pos = base + k * _SIZE
            if not buf[pos + L.SLOT_STATE]:
                break
            home = _HOME.unpack_from(buf, pos)[0] & mask
            # Move k into the hole unless its home lies cyclically in (hole, k]: then the
            # hole is not on its probe path and moving it would make it unreachable.
            if (k - home) & mask >= (k - hole) & mask:
                j.write(base + hole * _SIZE, bytes(buf[pos : pos + _SIZE]))
                owners = self.owners
                if owners is not None and buf[pos + _OWNER_AT : pos + _OWNER_END] != _NO_OWNER:
                    owners.moved(k, hole)
                hole = k
        j.write(base + hole * _SIZE, _EMPTY_SLOT)

    def used(self) -> Iterator[Tuple[int, Slot]]:
        """Every used slot as ``(index, slot)``; reads the table once."""
        raw = bytes(self.buf[self.off : self.off + self.capacity * _SIZE])
        for i, slot in enumerate(_ROW.iter_unpack(raw)):
            if slot[S_STATE]:
                yield i, slot

    def check(self) -> "Tuple[Dict[int, Slot], List[str]]":
        """Verify reachability and uniqueness; returns (used slots by index, problems)."""
        problems: List[str] = []
        slots = dict(self.used())
        seen: Dict[bytes, int] = {}
        for i, slot in slots.items():
            digest, state = slot[S_DIGEST], slot[S_STATE]
            if state != L.USED:
                problems.append(f"slot {i} has an unknown state {state}")
            if digest in seen:
                problems.append(f"slots {seen[digest]} and {i} hold the same key")
            seen[digest] = i
            k = self.home(digest)
            while k != i:
                if k not in slots:
                    problems.append(f"slot {i} is unreachable: empty slot {k} on its probe path")
                    break
                k = (k + 1) & self.mask
        return slots, problems
