"""The byte layout of a segment: magic, version, every ``struct.Struct`` and offset. No I/O.

::

    offset 0        +-------------------------------------------------------------+
                    | header (HEADER_SIZE bytes)                                  |
                    |   0    IDENTITY   magic, layout version, sizes, offsets,    |
                    |                   the per-segment secret  (written once)    |
                    |   112  IDENTITY_CRC  crc32 of the identity bytes            |
                    |   128  CONTROL    dirty txid, journal bytes used, next      |
                    |                   txid, flags, version counter, read        |
                    |                   sequence  (single-word writes)            |
                    |   256  STATE      entries, heap bytes used, version         |
                    |                   counter, bin bitmap, NBINS bin heads      |
                    |                   (undo-logged as one range per txn)        |
                    |   1024 COUNTERS   hits, misses, ... (advisory, not logged)  |
    journal_off     +-------------------------------------------------------------+
                    | undo journal: ENTRY + old bytes (padded to 8), repeated     |
    table_off       +-------------------------------------------------------------+
                    | table: capacity x slot (128 bytes), open addressing:        |
                    |   SLOT (64 bytes) | SLOT_OWNER (the owner index's links)    |
    owners_off      +-------------------------------------------------------------+
                    | owners: capacity x OWNER_ENTRY (32 bytes), open addressing  |
    heap_off        +-------------------------------------------------------------+
                    | heap: blocks [header | payload ... | owner | footer],       |
                    |       16-aligned (owner: the digest of the entry, if used)  |
    total_size      +-------------------------------------------------------------+

Every integer is little-endian except the header's control words and counters (offsets
128-191 and 1024 on): those are native 8-byte words, each written by ONE aligned 8-byte
store, through a ``memoryview`` cast to ``"Q"`` (see ``words``). ``struct.pack_into`` will
not do for them: it zeroes its target before it packs (and packs "<Q" a byte at a time), so
a writer killed in between leaves a word that was never meant -- a journal length of 0 that
hides every record, a version counter back at 0 -- and a reader without the lock can see the
zero. Offsets stored in the segment are absolute (from byte 0); 0 means "none", which no
block can be since the header sits at 0.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from . import _rules

MAGIC: Final = b"SHMSESS\x00"
# 2: the read sequence word (SEQ_OFF); 3: block owners, room counters; 4: session owners
# (128-byte slots, the owner table)
LAYOUT_VERSION: Final = 4
HEADER_SIZE: Final = 4096

# --- identity: written once by the creator, then only read --------------------------------
#   magic 8s | version I | header_size I | total_size Q | capacity I | max_entries I |
#   journal_off Q | journal_size Q | table_off Q | heap_off Q | heap_size Q |
#   max_value I | reserved I | secret 32s
IDENTITY: Final = struct.Struct("<8sIIQIIQQQQQII32s")
IDENTITY_OFF: Final = 0
IDENTITY_CRC: Final = struct.Struct("<I")
IDENTITY_CRC_OFF: Final = IDENTITY.size  # 112
SECRET_SIZE: Final = 32

# --- control words: each written alone, each write its own commit point ------------------
#   journal_used Q | last txid Q | dirty Q (txid of the open transaction, 0 when none) |
#   flags Q | version counter Q | read sequence Q   (native words, stored through ``words``)
CONTROL_OFF: Final = 128
JOURNAL_USED_OFF: Final = CONTROL_OFF
NEXT_TXID_OFF: Final = CONTROL_OFF + 8
DIRTY_OFF: Final = CONTROL_OFF + 16
FLAGS_OFF: Final = CONTROL_OFF + 24
# begin() stores used=0, the txid, then dirty=txid, in this order: a dirty word never pairs
# with the previous transaction's used count.
# The last version handed out. Not journaled: a rolled-back write may burn a number, which is
# harmless -- a version is only ever compared for equality with one that was published, and
# the counter only grows (it survives clear() too), so no number is published twice.
VERSION_OFF: Final = CONTROL_OFF + 32

# The read sequence word (a seqlock): odd while bytes a reader copies may be changing -- from
# a transaction's first such store to its commit (see _journal), during clear(), after
# unlink() for good, and after a writer died mid-change until the next lock holder repairs. Readers that take no lock
# read it before and after copying; equal and even means they copied one committed state.
# Like every control word it is read and written through ``words``, one 8-byte access each.
SEQ_OFF: Final = CONTROL_OFF + 40

# Indexes of the control words in ``words(buf)``.
USED_W: Final = JOURNAL_USED_OFF >> 3
NEXT_TXID_W: Final = NEXT_TXID_OFF >> 3
DIRTY_W: Final = DIRTY_OFF >> 3
FLAGS_W: Final = FLAGS_OFF >> 3
VERSION_W: Final = VERSION_OFF >> 3
SEQ_W: Final = SEQ_OFF >> 3

USED_TXID_DIRTY: Final = struct.Struct("QQQ")
FLAG_UNLINKED: Final = 1  # set by unlink() before the name goes, so attached handles notice
FLAG_CLEARING: Final = 2  # clear() in progress: redo it (it is idempotent), never undo

U64: Final = struct.Struct("<Q")
I64: Final = struct.Struct("<q")

# --- structural state: undo-logged as one range, once per transaction ---------------------
#   entries Q | heap_used Q | reserved Q | bin_bitmap Q | bins NBINS*Q
NBINS: Final = 48
STATE_OFF: Final = 256
STATE_HEAD: Final = struct.Struct("<QQQQ")
ENTRIES_OFF: Final = STATE_OFF
HEAP_USED_OFF: Final = STATE_OFF + 8
BITMAP_OFF: Final = STATE_OFF + 24
BINS_OFF: Final = STATE_OFF + 32
STATE_SIZE: Final = 32 + 8 * NBINS

# --- advisory counters: plain increments, never logged (a crash may lose one count) -------
COUNTER_NAMES: Final = (
    "hits",
    "misses",
    "writes",
    "deletes",
    "evictions",
    "expirations",
    "lock_waits",
    "lock_wait_ns",
    "sweep_cursor",
    "room_writes",
    "room_evictions",
    "room_max_evictions",
)
COUNTERS_OFF: Final = 1024
COUNTERS: Final = struct.Struct("Q" * len(COUNTER_NAMES))  # native, like WORD
COUNTER_OFF: Final = {name: COUNTERS_OFF + 8 * i for i, name in enumerate(COUNTER_NAMES)}
COUNTER_W: Final = {name: off >> 3 for name, off in COUNTER_OFF.items()}

# --- journal entries ----------------------------------------------------------------------
#   target offset Q | length I | crc32(txid, offset, length) I | old bytes, padded to 8
ENTRY: Final = struct.Struct("<QII")
ENTRY_CRC_INPUT: Final = struct.Struct("<QQI")

# --- table slots: 128 bytes ----------------------------------------------------------------
#   digest 16s | state B | pad 3x | value length I | value offset Q |
#   created q | expires q | last access q | version Q          (times: CLOCK_MONOTONIC ns)
#   then, from SLOT_OWNER_OFF, the owner half (see SLOT_OWNER)
# SLOT is the first half: what every operation reads and writes. The owner half is read and
# written only by what changes an owner, so a write that keeps the owner logs none of it.
SLOT: Final = struct.Struct("<16sB3xIQqqqQ")
SLOT_SIZE: Final = 128
SLOT_ROW: Final = struct.Struct("<16sB3xIQqqqQ64x")  # a whole slot, as SLOT unpacks it
SLOT_SHIFT: Final = SLOT_SIZE.bit_length() - 1  # slot i sits at table_off + (i << SLOT_SHIFT)
DIGEST_SIZE: Final = _rules.DIGEST_SIZE  # the keyed digest of an id (see _rules)
# The fields of a slot as SLOT unpacks it, by index: ``slot[S_EXPIRES]``. Indexes, not a
# NamedTuple: making one per slot and reading its attributes cost the write path 7% more
# instructions (Python 3.11, tuple.__new__ and _tuplegetter); an index costs nothing.
S_DIGEST: Final = 0
S_STATE: Final = 1
S_VALUE_LEN: Final = 2
S_VALUE_OFF: Final = 3  # the payload of the heap block that holds the value (absolute)
S_CREATED: Final = 4
S_EXPIRES: Final = 5  # NEVER (0): never expires
S_ATIME: Final = 6  # last access, advisory: steers eviction only
S_VERSION: Final = 7
SLOT_STATE: Final = 16
SLOT_EXPIRES: Final = 40
SLOT_ATIME: Final = 48
# a lock-free read's view of a slot: digest, state, length, offset, expires, version
SLOT_PEEK: Final = struct.Struct("<16sB3xIQ8xq8xQ")
EMPTY: Final = 0
USED: Final = 1
NEVER: Final = 0  # an expires of 0: the entry never expires
assert SLOT_ROW.size == SLOT_SIZE == 1 << SLOT_SHIFT and SLOT.size == 64

# --- the owner index: a doubly linked list per owner through the slots ---------------------
#   slot half:   owner digest 16s | prev I | next I | joined q | pad 32x
#   owner entry: owner digest 16s | head I | tail I | count I | pad 4x
# A slot's owner half links it into its owner's list, oldest (first joined) at the head;
# prev and next are slot indexes (NONE: the end), joined the time (CLOCK_MONOTONIC ns) it
# became the owner's. An owner digest of zeros means no owner (an unowned slot's links are
# NONE). The owner table, after the session table, has as many entries as the table has
# slots (an owner has a session, so it can never fill): open addressing and backward-shift
# deletion as the session table does, home from the digest's first 8 bytes. An entry
# exists while its owner has a session (count > 0).
SLOT_OWNER: Final = struct.Struct("<16sIIq")
SLOT_OWNER_OFF: Final = 64
SLOT_PREV: Final = SLOT_OWNER_OFF + 16
SLOT_NEXT: Final = SLOT_OWNER_OFF + 20
SLOT_JOINED: Final = SLOT_OWNER_OFF + 24
O_OWNER: Final = 0  # the fields of SLOT_OWNER, by index
O_PREV: Final = 1
O_NEXT: Final = 2
O_JOINED: Final = 3
NONE: Final = 0xFFFFFFFF
NO_OWNER: Final = bytes(DIGEST_SIZE)
UNOWNED: Final = SLOT_OWNER.pack(NO_OWNER, NONE, NONE, 0) + bytes(SLOT_SIZE - 64 - SLOT_OWNER.size)
OWNER_ENTRY: Final = struct.Struct("<16sIII4x")
OWNER_ENTRY_SIZE: Final = 32
OWNER_SHIFT: Final = OWNER_ENTRY_SIZE.bit_length() - 1
E_OWNER: Final = 0  # the fields of OWNER_ENTRY, by index
E_HEAD: Final = 1
E_TAIL: Final = 2
E_COUNT: Final = 3
LINK32: Final = struct.Struct("<I")
assert OWNER_ENTRY.size == OWNER_ENTRY_SIZE == 1 << OWNER_SHIFT
assert len(UNOWNED) == SLOT_SIZE - SLOT_OWNER_OFF

# --- heap blocks -----------------------------------------------------------------------------
#   used: header Q (size | USED_BIT) | payload ... | owner 16s | footer Q (same word as header)
#   free: header Q (size) | next Q | prev Q (absolute offsets, 0 = none) | ... | footer Q
# A used block's owner is the digest of the entry whose value it holds: a walk over the heap
# in address order can find the slot of each block it passes (eviction of a victim's
# physical neighbours, see ``Room.plan``) and ``check()`` can match blocks to slots.
ALIGN: Final = 16
BLOCK_HEADER: Final = 8
BLOCK_TAIL: Final = 24  # owner + footer: a used block's owner sits at ``end - BLOCK_TAIL``
BLOCK_OVERHEAD: Final = BLOCK_HEADER + BLOCK_TAIL
MIN_BLOCK: Final = 32
USED_BIT: Final = 1
FREE_HEAD: Final = struct.Struct("<QQQ")  # header, next, prev
LINK: Final = struct.Struct("<Q")

# --- sizing ----------------------------------------------------------------------------------
MIN_SIZE: Final = 1 << 20
MIN_HEAP: Final = 64 << 10  # and room for two of the largest values (see _attach.geometry)
MAX_VALUE_SIZE: Final = 0xFFFFFFFF  # a value's length is a 32-bit field of its slot
DEFAULT_SIZE: Final = 32 << 20
JOURNAL_METADATA: Final = 256 << 10  # room for every metadata record of one operation
INPLACE_MAX: Final = 64 << 10  # values up to this are overwritten in place (old bytes logged)
MAX_ID_BYTES: Final = _rules.MAX_ID_BYTES
LOAD_FACTOR_NUM: Final = 4  # capacity >= max_entries * 4 / 3: load factor at most 0.75
LOAD_FACTOR_DEN: Final = 3


def words(buf: Any) -> memoryview:
    """``buf`` as native unsigned 8-byte words: ``w[off >> 3]`` loads or stores the word at
    ``off`` (8-aligned) with one 8-byte access (memoryview packs with a sized memcpy). The
    view pins ``buf``: ``release()`` it before closing an mmap."""
    whole = memoryview(buf)
    try:
        return whole[: len(whole) & ~7].cast("Q")
    finally:
        whole.release()


def round_up(n: int, to: int) -> int:
    """``n`` rounded up to a multiple of ``to`` (a power of two)."""
    return (n + to - 1) & ~(to - 1)


def block_size_for(value_len: int) -> int:
    """The size of the heap block that holds a value of ``value_len`` bytes."""
    return max(MIN_BLOCK, round_up(value_len + BLOCK_OVERHEAD, ALIGN))


def capacity_for(max_entries: int) -> int:
    """The table capacity (a power of two) that keeps the load factor at or below 0.75."""
    need = (max_entries * LOAD_FACTOR_NUM + LOAD_FACTOR_DEN - 1) // LOAD_FACTOR_DEN
    return 1 << max(4, (need - 1).bit_length())


class Geometry:
    """Where each region lies in a segment of ``total_size`` bytes; pure arithmetic."""

    __slots__ = (
        "total_size",
        "max_entries",
        "capacity",
        "max_value",
        "journal_off",
        "journal_size",
        "table_off",
        "owners_off",
        "heap_off",
        "heap_size",
    )

    def __init__(self, total_size: int, max_entries: int, max_value: int) -> None:
        self.total_size = total_size
        self.max_entries = max_entries
        self.capacity = capacity_for(max_entries)
        self.max_value = max_value
        self.journal_off = HEADER_SIZE
        # Room for one operation's metadata records plus one value's worth of old bytes (an
        # in-place overwrite, or a value written over space evicted in the same operation).
        self.journal_size = JOURNAL_METADATA + round_up(max_value + 16, 8)
        self.table_off = self.journal_off + self.journal_size
        self.owners_off = self.table_off + self.capacity * SLOT_SIZE
        self.heap_off = round_up(self.owners_off + self.capacity * OWNER_ENTRY_SIZE, 4096)
        self.heap_size = (total_size - self.heap_off) & ~(ALIGN - 1)

    def bounds(self) -> "tuple[int, int, int, int, int]":
        """What every walk of the table and heap checks offsets against: ``(table_off,
        mask, heap_off, heap_end, max_value)``, ``mask`` being ``capacity - 1``."""
        return (self.table_off, self.capacity - 1, self.heap_off,
                self.heap_off + self.heap_size, self.max_value)

    def pack_identity(self, secret: bytes) -> bytes:
        """The identity bytes followed by their crc: what a creator writes at offset 0."""
        import zlib

        ident = IDENTITY.pack(
            MAGIC,
            LAYOUT_VERSION,
            HEADER_SIZE,
            self.total_size,
            self.capacity,
            self.max_entries,
            self.journal_off,
            self.journal_size,
            self.table_off,
            self.heap_off,
            self.heap_size,
            self.max_value,
            0,
            secret,
        )
        return ident + IDENTITY_CRC.pack(zlib.crc32(ident))
