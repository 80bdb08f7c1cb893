"""The owner index over a buffer: which sessions each owner has, oldest first.

Each owner (a keyed digest of a user id, see ``_rules.owner_digest``) has an entry in the
owner table -- head, tail and count of a doubly linked list -- and the list runs through
the owner halves of its sessions' slots (see ``_layout``). Joining appends at the tail, so
the head is the session that became the owner's first. The owner table is open addressing
with linear probing and backward-shift deletion, as ``_table`` is for sessions; nothing
points at an owner entry, so moving one needs no fixing. A session slot that moves (the
session table's backward shift) is followed by ``moved``.

The index is exact: a session leaves its owner's list in the same transaction that removes
it (``Engine.drop``). Every change goes through the journal; the caller holds the lock.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from . import _layout as L
from ._errors import CorruptSegment
from ._journal import Buffer, Journal
from ._layout import E_COUNT, E_HEAD, E_OWNER, E_TAIL, NO_OWNER, NONE, O_NEXT, O_OWNER, O_PREV
from ._table import Slot, no_empty_slot

# The probe and the backward shift are those of ``_table``, written again for 32-byte
# entries: the session table's are the write path's, specialised to its slot.

__all__ = ["Entry", "Owners"]

_ENTRY = L.OWNER_ENTRY
_ESHIFT = L.OWNER_SHIFT
_OWNED = L.SLOT_OWNER
_LINK = L.LINK32
_HOME = L.U64
_SSHIFT = L.SLOT_SHIFT
_EMPTY_ENTRY = bytes(L.OWNER_ENTRY_SIZE)

Entry = Tuple[bytes, int, int, int]
"""An owner entry as ``L.OWNER_ENTRY`` unpacks it: owner digest, head, tail, count."""
Owned = Tuple[bytes, int, int, int]
"""A slot's owner half as ``L.SLOT_OWNER`` unpacks it: owner digest, prev, next, joined."""


def _damaged(what: str) -> CorruptSegment:
    return CorruptSegment(
        f"the owner index is damaged: {what}; check() lists every problem. Unlink the store "
        "and start a new one"
    )


class Owners:
    """``capacity`` owner entries at ``buf[off:]``, over the session table at ``table_off``;
    writes through ``journal``; the caller holds the lock."""

    __slots__ = ("buf", "j", "off", "table_off", "capacity", "mask")

    def __init__(self, buf: Buffer, journal: Journal, off: int, table_off: int,
                 capacity: int) -> None:
        self.buf = buf
        self.j = journal
        self.off = off
        self.table_off = table_off
        self.capacity = capacity
        self.mask = capacity - 1

    # ------------------------------------------------------------------ slots' owner halves
    def owned(self, i: int) -> Owned:
        """Slot ``i``'s owner half."""
        return _OWNED.unpack_from(self.buf, self.table_off + (i << _SSHIFT) + L.SLOT_OWNER_OFF)

    def owner_of(self, i: int) -> bytes:
        """Slot ``i``'s owner digest (``NO_OWNER``: none)."""
        pos = self.table_off + (i << _SSHIFT) + L.SLOT_OWNER_OFF
        return bytes(self.buf[pos : pos + L.DIGEST_SIZE])

    def _set_link(self, i: int, field: int, to: int) -> None:
        self.j.write(self.table_off + (i << _SSHIFT) + field, _LINK.pack(to))

    def _slot_index(self, i: int) -> int:
        if i >= self.capacity:
            raise _damaged(f"a link points at slot {i}, past the table's {self.capacity}")
        return i

    # ------------------------------------------------------------------ owner entries
    def find(self, owner: bytes) -> Tuple[int, Optional[Entry]]:
        """``(k, entry)`` for the entry ``k`` of ``owner``, or ``(-1 - k, None)`` for the
        empty entry ``k`` where it would go.

        :raises CorruptSegment: a whole lap found neither.
        """
        buf = self.buf
        base = self.off
        mask = self.mask
        home = k = _HOME.unpack_from(owner)[0] & mask
        while True:
            entry: Entry = _ENTRY.unpack_from(buf, base + (k << _ESHIFT))
            if not entry[E_COUNT]:
                return -1 - k, None
            if entry[E_OWNER] == owner:
                return k, entry
            k = (k + 1) & mask
            if k == home:
                raise no_empty_slot()

    def entry_of(self, owner: bytes) -> Tuple[int, Entry]:
        """The entry of ``owner``, which a slot names as its owner.

        :raises CorruptSegment: there is none.
        """
        k, entry = self.find(owner)
        if entry is None:
            raise _damaged("a session names an owner that has no entry")
        return k, entry

    def _put(self, k: int, owner: bytes, head: int, tail: int, count: int) -> None:
        self.j.write(self.off + (k << _ESHIFT), _ENTRY.pack(owner, head, tail, count))

    def _remove(self, k: int) -> None:
        """Empty entry ``k`` and shift the rest of its probe run back (see ``Table.remove``)."""
        buf = self.buf
        base = self.off
        mask = self.mask
        hole = k
        n = k
        while True:
            n = (n + 1) & mask
            if n == k:
                raise no_empty_slot()
            pos = base + (n << _ESHIFT)
            entry: Entry = _ENTRY.unpack_from(buf, pos)
            if not entry[E_COUNT]:
                break
            home = _HOME.unpack_from(buf, pos)[0] & mask
            if (n - home) & mask >= (n - hole) & mask:
                self.j.write(base + (hole << _ESHIFT), bytes(buf[pos : pos + L.OWNER_ENTRY_SIZE]))
                hole = n
        self.j.write(base + (hole << _ESHIFT), _EMPTY_ENTRY)

    def count(self, owner: bytes) -> int:
        entry = self.find(owner)[1]
        return 0 if entry is None else entry[E_COUNT]

    # ------------------------------------------------------------------ list changes
    def link(self, i: int, owner: bytes, joined: int) -> None:
        """Make the unowned used slot ``i`` the newest of ``owner``'s sessions."""
        k, entry = self.find(owner)
        pos = self.table_off + (i << _SSHIFT) + L.SLOT_OWNER_OFF
        if entry is None:
            self.j.write(pos, _OWNED.pack(owner, NONE, NONE, joined))
            self._put(-1 - k, owner, i, i, 1)
            return
        tail = self._slot_index(entry[E_TAIL])
        self.j.write(pos, _OWNED.pack(owner, tail, NONE, joined))
        self._set_link(tail, L.SLOT_NEXT, i)
        self._put(k, owner, entry[E_HEAD], i, entry[E_COUNT] + 1)

    def unlink(self, i: int, clear: bool) -> None:
        """Take the owned slot ``i`` out of its owner's list (the entry goes with the last
        session); ``clear``: mark the slot unowned (it stays; a slot being emptied needs
        not)."""
        owner, prev, nxt, _ = self.owned(i)
        k, entry = self.entry_of(owner)
        head, tail = self._point(entry, prev, nxt, nxt, prev)
        count = entry[E_COUNT]
        if count <= 1:
            self._remove(k)
        else:
            self._put(k, owner, head, tail, count - 1)
        if clear:
            self.j.write(self.table_off + (i << _SSHIFT) + L.SLOT_OWNER_OFF, L.UNOWNED)

    def _point(self, entry: Entry, prev: int, nxt: int, after_prev: int,
               before_next: int) -> Tuple[int, int]:
        """Point ``prev``'s next link at ``after_prev`` and ``nxt``'s prev link at
        ``before_next``; where one is NONE (an end of the list) the entry's head or tail is
        what changes: the new ``(head, tail)``, for the caller to write with the count."""
        head, tail = entry[E_HEAD], entry[E_TAIL]
        if prev == NONE:
            head = after_prev
        else:
            self._set_link(self._slot_index(prev), L.SLOT_NEXT, after_prev)
        if nxt == NONE:
            tail = before_next
        else:
            self._set_link(self._slot_index(nxt), L.SLOT_PREV, before_next)
        return head, tail

    def moved(self, old: int, new: int) -> None:
        """The owned slot at ``old`` was moved to ``new`` (the session table's backward
        shift): point its neighbours, or its owner's head and tail, at ``new``."""
        owner, prev, nxt, _ = self.owned(new)
        k, entry = self.entry_of(owner)
        head, tail = self._point(entry, prev, nxt, new, new)
        if (head, tail) != (entry[E_HEAD], entry[E_TAIL]):
            self._put(k, owner, head, tail, entry[E_COUNT])

    def members(self, owner: bytes) -> List[int]:
        """The slot indexes of ``owner``'s sessions, oldest first (empty: no such owner).

        :raises CorruptSegment: the list is longer than its count, or leaves the table.
        """
        entry = self.find(owner)[1]
        if entry is None:
            return []
        out: List[int] = []
        i = entry[E_HEAD]
        for _ in range(entry[E_COUNT]):
            out.append(self._slot_index(i))
            i = self.owned(i)[O_NEXT]
        if i != NONE:
            raise _damaged(f"the list of an owner of {entry[E_COUNT]} sessions runs longer")
        return out

    # ------------------------------------------------------------------ check
    def check(self, slots: Dict[int, Slot]) -> List[str]:
        """Problems of the index against the used ``slots`` (by index, from ``Table.check``):
        every entry's list walks head to tail with consistent links, its length is its count,
        its members are used slots naming it; every owned slot is in its owner's list; an
        unowned slot has NONE links; every entry is reachable from its home."""
        problems: List[str] = []
        raw = bytes(self.buf[self.off : self.off + (self.capacity << _ESHIFT)])
        entries = {k: e for k, e in enumerate(_ENTRY.iter_unpack(raw)) if e[E_COUNT]}
        listed: Dict[int, bytes] = {}
        for k, (owner, head, tail, count) in entries.items():
            h = _HOME.unpack_from(owner)[0] & self.mask
            while h != k:
                if h not in entries:
                    problems.append(f"owner entry {k} is unreachable from its home")
                    break
                h = (h + 1) & self.mask
            prev, i, n = NONE, head, 0
            while i != NONE and n <= count:
                if i >= self.capacity or i not in slots:
                    problems.append(f"owner entry {k}: its list reaches {i}, not a used slot")
                    break
                if i in listed:
                    problems.append(f"slot {i} is in two owner lists, or twice in one")
                    break
                listed[i] = owner
                o = self.owned(i)
                if o[O_OWNER] != owner:
                    problems.append(f"slot {i} is in the list of an owner it does not name")
                if o[O_PREV] != prev:
                    problems.append(f"slot {i}: its prev link is {o[O_PREV]}, not {prev}")
                prev, i, n = i, o[O_NEXT], n + 1
            if n != count:
                problems.append(f"owner entry {k} counts {count} sessions, its list has {n}")
            elif prev != tail:
                problems.append(f"owner entry {k}: its tail is {tail}, its list ends at {prev}")
        for i in slots:
            o = self.owned(i)
            if o[O_OWNER] == NO_OWNER:
                if (o[O_PREV], o[O_NEXT]) != (NONE, NONE):
                    problems.append(f"slot {i} has no owner but links")
            elif i not in listed:
                problems.append(f"slot {i} names an owner whose list does not hold it")
        return problems
