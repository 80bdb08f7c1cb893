"""Layout, journal, heap and table on plain buffers: no segment, no lock, no clock."""

from __future__ import annotations

import random
import struct
from typing import Dict, List

import pytest

from shmsession import _layout as L
from shmsession._errors import CorruptSegment
from shmsession._heap import Heap, bin_of
from shmsession._journal import Journal, JournalFull, is_dirty, recover
from shmsession._table import Table


# --------------------------------------------------------------------------- layout
def test_struct_sizes_match_the_diagram() -> None:
    assert L.IDENTITY.size == 112
    assert L.IDENTITY_CRC_OFF + 4 <= L.CONTROL_OFF
    assert L.VERSION_OFF + 8 <= L.STATE_OFF
    assert L.STATE_OFF + L.STATE_SIZE <= L.COUNTERS_OFF
    assert L.COUNTERS_OFF + L.COUNTERS.size <= L.HEADER_SIZE
    assert L.SLOT.size == 64 and L.SLOT_ROW.size == L.SLOT_SIZE == 128
    assert L.SLOT_OWNER_OFF + L.SLOT_OWNER.size <= L.SLOT_SIZE
    assert L.OWNER_ENTRY.size == L.OWNER_ENTRY_SIZE == 32
    assert L.ENTRY.size == 16


@pytest.mark.parametrize("size,entries,max_value", [(1 << 20, 64, 4096), (32 << 20, 32768, 1 << 20),
                                                    (5_000_001, 1000, 70_000)])
def test_geometry_regions_are_ordered_and_disjoint(size: int, entries: int, max_value: int) -> None:
    g = L.Geometry(size, entries, max_value)
    assert g.capacity & (g.capacity - 1) == 0
    assert g.capacity * 3 >= entries * 4  # load factor <= 0.75
    assert L.HEADER_SIZE == g.journal_off
    assert g.journal_off + g.journal_size == g.table_off
    assert g.table_off + g.capacity * L.SLOT_SIZE == g.owners_off
    assert g.owners_off + g.capacity * L.OWNER_ENTRY_SIZE <= g.heap_off
    assert g.heap_off + g.heap_size <= size
    assert g.heap_off % L.ALIGN == 0 and g.heap_size % L.ALIGN == 0
    assert g.journal_size >= L.JOURNAL_METADATA + max_value + 16


def test_block_size_is_aligned_and_holds_the_value() -> None:
    for n in [0, 1, 15, 16, 17, 100, 1024, 65536]:
        b = L.block_size_for(n)
        assert b % L.ALIGN == 0 and b >= L.MIN_BLOCK and b - L.BLOCK_OVERHEAD >= n


# --------------------------------------------------------------------------- journal
JBASE, JSIZE = L.HEADER_SIZE, 4096


def _journal(extra: int = 4096) -> "tuple[bytearray, Journal]":
    buf = bytearray(JBASE + JSIZE + extra)
    return buf, Journal(buf, JBASE, JSIZE)


def test_committed_writes_stay_and_leave_the_journal_clean() -> None:
    buf, j = _journal()
    data = JBASE + JSIZE
    j.begin()
    assert is_dirty(buf)
    j.write(data, b"new bytes")
    j.commit()
    assert not is_dirty(buf)
    assert bytes(buf[data : data + 9]) == b"new bytes"
    assert recover(buf, JBASE, JSIZE) is False


def test_recover_restores_every_byte_in_reverse_order() -> None:
    buf, j = _journal()
    data = JBASE + JSIZE
    buf[data : data + 32] = bytes(range(32))
    before = bytes(buf)
    j.begin()
    j.write(data, b"A" * 8)
    j.write(data + 4, b"B" * 8)  # overlaps the first: order of undo matters
    j.write(data, b"C" * 16)
    # the writer dies here: no commit
    assert recover(buf, JBASE, JSIZE) is True
    assert bytes(buf[data:]) == before[data:]
    assert not is_dirty(buf)
    assert recover(buf, JBASE, JSIZE) is False  # idempotent


def test_rollback_is_recover_of_the_open_transaction() -> None:
    buf, j = _journal()
    data = JBASE + JSIZE
    j.begin()
    j.write(data + 100, b"xyz")
    j.rollback()
    assert bytes(buf[data + 100 : data + 103]) == bytes(3)


def test_a_record_not_yet_counted_is_ignored() -> None:
    # Stop the writer after the entry header but before the used word: nothing to undo.
    buf, j = _journal()
    data = JBASE + JSIZE
    calls: List[int] = []

    class Stop(Exception):
        pass

    def fault() -> None:
        calls.append(1)
        if len(calls) == 3:  # record's third point: header and old bytes in, not yet counted
            raise Stop

    j.begin()
    j.fault = fault
    buf[data] = 7
    with pytest.raises(Stop):
        j.write(data, b"\x09")
    j.fault = None
    assert recover(buf, JBASE, JSIZE) is True
    assert buf[data] == 7


def test_recover_refuses_a_damaged_record() -> None:
    buf, j = _journal()
    data = JBASE + JSIZE
    j.begin()
    j.write(data, b"abc")
    buf[JBASE] ^= 0xFF  # the record's target offset
    with pytest.raises(CorruptSegment):
        recover(buf, JBASE, JSIZE)


def test_a_transaction_too_big_for_the_journal_raises_journal_full() -> None:
    buf, j = _journal(extra=8192)
    j.begin()
    with pytest.raises(JournalFull):
        j.write(JBASE + JSIZE, bytes(JSIZE))
    j.rollback()
    assert not is_dirty(buf)


def test_state_range_is_logged_once_per_transaction() -> None:
    buf, j = _journal()
    j.begin()
    j.log_state()
    used = j.used
    j.log_state()
    assert j.used == used == 16 + L.STATE_SIZE
    j.commit()


# --------------------------------------------------------------------------- heap
HEAP_SIZE = 1 << 20
OWNER = b"0123456789abcdef"  # the digest a used block names as its owner


def _heap(size: int = HEAP_SIZE) -> "tuple[bytearray, Journal, Heap]":
    jsize = 1 << 20
    heap_off = L.HEADER_SIZE + jsize
    buf = bytearray(heap_off + size)
    j = Journal(buf, L.HEADER_SIZE, jsize)
    h = Heap(buf, j, heap_off, size)
    h.format()
    return buf, j, h


def _assert_sound(h: Heap, live: Dict[int, int]) -> None:
    used, problems = h.check()
    assert problems == []
    assert set(used) == set(live)
    assert all(owner == OWNER for owner in used.values())


def test_a_formatted_heap_is_one_free_block() -> None:
    _, _, h = _heap()
    assert h.free_bytes() == HEAP_SIZE and h.used_bytes() == 0
    assert h.largest_free() == HEAP_SIZE - L.BLOCK_OVERHEAD
    _assert_sound(h, {})


def test_alloc_and_free_coalesce_back_to_one_block() -> None:
    _, j, h = _heap()
    j.begin()
    ps = [h.alloc(n, OWNER) for n in (100, 2000, 50, 7000, 1)]
    assert all(ps) and len(set(ps)) == 5
    for p, n in zip(ps, (100, 2000, 50, 7000, 1)):
        assert h.capacity(p) >= n
    _assert_sound(h, {p: 0 for p in ps})
    for p in (ps[1], ps[3], ps[0], ps[4], ps[2]):  # frees that merge left, right and both
        h.free(p)
    j.commit()
    _assert_sound(h, {})
    assert h.largest_free() == HEAP_SIZE - L.BLOCK_OVERHEAD


def test_alloc_returns_zero_when_nothing_fits() -> None:
    _, j, h = _heap(64 << 10)
    j.begin()
    assert h.alloc(100 << 10, OWNER) == 0
    p = h.alloc(40 << 10, OWNER)
    assert p and h.alloc(40 << 10, OWNER) == 0
    j.commit()


def test_rolled_back_heap_operations_leave_it_as_before() -> None:
    buf, j, h = _heap()
    j.begin()
    keep = [h.alloc(n, OWNER) for n in (300, 3000, 30)]
    j.commit()
    snapshot = bytes(buf[L.STATE_OFF : L.STATE_OFF + L.STATE_SIZE]) + bytes(buf[h.off :])
    j.begin()
    h.free(keep[1])
    h.alloc(5000, OWNER)
    h.free(keep[0])
    j.rollback()
    assert bytes(buf[L.STATE_OFF : L.STATE_OFF + L.STATE_SIZE]) + bytes(buf[h.off :]) == snapshot
    _assert_sound(h, {p: 0 for p in keep})


def test_size_classes() -> None:
    assert bin_of(32) == 5 and bin_of(63) == 5 and bin_of(64) == 6
    assert bin_of(1 << 40) == 40 < L.NBINS


def test_random_churn_against_a_model() -> None:
    rng = random.Random(7)
    buf, j, h = _heap()
    live: Dict[int, int] = {}
    for step in range(3000):
        j.begin()
        if live and (rng.random() < 0.45 or h.free_bytes() < HEAP_SIZE // 4):
            p = rng.choice(list(live))
            h.free(p)
            del live[p]
        else:
            n = rng.choice([rng.randint(1, 200), rng.randint(200, 5000), rng.randint(5000, 40000)])
            p = h.alloc(n, OWNER)
            if p:
                assert p not in live and h.capacity(p) >= n
                buf[p : p + n] = bytes([step & 0xFF]) * n
                live[p] = n
        j.commit()
        if step % 250 == 0:
            _assert_sound(h, live)
    _assert_sound(h, live)
    assert h.used_bytes() == sum(h.capacity(p) + L.BLOCK_OVERHEAD for p in live)


def test_mixed_size_churn_at_70_percent_fill_never_fails_for_fragmentation() -> None:
    """Values of 100 B to 64 KiB, live data held near 70% of the heap, 20,000 replacements:
    every allocation succeeds (the issue's bound on fragmentation)."""
    size = 32 << 20
    rng = random.Random(11)
    _, j, h = _heap(size)

    def draw() -> int:
        # log-uniform: as many small values as large ones
        return int(100 * (65536 / 100) ** rng.random())

    live: List[int] = []
    payload = 0
    while payload < 0.70 * size:
        n = draw()
        j.begin()
        p = h.alloc(n, OWNER)
        j.commit()
        assert p, f"alloc of {n} failed at {payload / size:.0%} fill"
        live.append(p)
        payload += n
    failures = 0
    for _ in range(20_000):
        k = rng.randrange(len(live))
        j.begin()
        old = live[k]
        freed = h.capacity(old)
        h.free(old)
        n = draw()
        # keep live data near 70%: the new value replaces one of about the same total
        p = h.alloc(n, OWNER)
        j.commit()
        if not p:
            failures += 1
            j.begin()
            live[k] = h.alloc(min(freed, n), OWNER)
            j.commit()
            continue
        live[k] = p
    used, problems = h.check()
    assert problems == []
    assert failures == 0
    assert h.used_bytes() < 0.80 * size


# --------------------------------------------------------------------------- table
CAP = 64


def _table(cap: int = CAP) -> "tuple[bytearray, Journal, Table]":
    jsize = 1 << 16
    buf = bytearray(L.HEADER_SIZE + jsize + cap * L.SLOT_SIZE)
    j = Journal(buf, L.HEADER_SIZE, jsize)
    return buf, j, Table(buf, j, L.HEADER_SIZE + jsize, cap)


def _digest(home: int, tag: int) -> bytes:
    return struct.pack("<QQ", home, tag)  # first 8 bytes pick the home slot


def _slot(d: bytes, v: int = 0) -> bytes:
    return L.SLOT.pack(d, L.USED, v, 0, 0, 0, 0, v)


def test_lookup_put_remove_with_collisions_and_wraparound() -> None:
    _, j, t = _table()
    keys = [_digest(CAP - 2, k) for k in range(5)] + [_digest(CAP - 1, 9), _digest(0, 10)]
    j.begin()
    for k, d in enumerate(keys):
        i = t.lookup(d)
        assert i < 0
        t.put(-1 - i, _slot(d, k))
    j.commit()
    for k, d in enumerate(keys):
        i = t.lookup(d)
        assert i >= 0 and t.get(i)[7] == k
    assert t.check()[1] == []
    j.begin()
    t.remove(t.lookup(keys[1]))  # from the middle of a run that wraps around
    j.commit()
    assert t.lookup(keys[1]) < 0
    for k, d in enumerate(keys):
        if k != 1:
            assert t.get(t.lookup(d))[7] == k
    slots, problems = t.check()
    assert problems == [] and len(slots) == len(keys) - 1


def test_random_table_operations_against_a_dict() -> None:
    rng = random.Random(3)
    _, j, t = _table(256)
    model: Dict[bytes, int] = {}
    for step in range(5000):
        d = _digest(rng.randrange(256) if rng.random() < 0.5 else rng.randrange(8), rng.randrange(400))
        j.begin()
        i = t.lookup(d)
        assert (i >= 0) == (d in model)
        if i >= 0 and rng.random() < 0.5:
            t.remove(i)
            del model[d]
        elif len(model) < 192:
            if i >= 0:
                t.put(i, _slot(d, step))
            else:
                t.put(-1 - i, _slot(d, step))
            model[d] = step
        j.commit()
    slots, problems = t.check()
    assert problems == []
    assert {s[0]: s[7] for s in slots.values()} == model


def test_check_reports_an_unreachable_slot() -> None:
    buf, j, t = _table()
    j.begin()
    t.put(5, _slot(_digest(3, 1)))  # home 3, but 3 and 4 are empty
    j.commit()
    assert any("unreachable" in p for p in t.check()[1])


def test_probe_hands_over_the_slot_it_stops_at_and_a_full_table_is_damage() -> None:
    _, j, t = _table(16)
    keys = [_digest(15, k) for k in range(3)]  # one run wrapping from the last slot to 0
    j.begin()
    for k, d in enumerate(keys):
        i, slot = t.probe(d)
        assert slot is None and -1 - i == (15 + k) % 16  # the empty slot it would take
        t.put(-1 - i, _slot(d, k))
    j.commit()
    for k, d in enumerate(keys):
        i, slot = t.probe(d)
        assert i == (15 + k) % 16 and slot == t.get(i)
        assert slot is not None and slot[L.S_DIGEST] == d and slot[L.S_VERSION] == k
    j.begin()
    for k in range(3, 16):  # every slot used: only damage does that (load factor <= 0.75)
        d = _digest(15, k)
        t.put(-1 - t.probe(d)[0], _slot(d, k))
    j.commit()
    with pytest.raises(CorruptSegment, match="whole table"):
        t.probe(_digest(4, 99))


def test_the_digest_memo_gives_what_a_fresh_hash_gives_across_generations() -> None:
    from shmsession import _digests
    from shmsession._errors import InvalidType

    secret = bytes(range(32))
    memo = _digests.Digests(secret)
    ids = [f"id-{k}" for k in range(2 * _digests._MEMO_SIZE + 10)]  # through two rotations
    first = [memo.of(sid) for sid in ids]
    assert len(set(first)) == len(ids)
    assert first[:50] == [_digests.Digests(secret).of(sid) for sid in ids[:50]]
    # Again, backwards: from the young generation, then the old one, then hashed afresh.
    assert [memo.of(sid) for sid in reversed(ids)] == first[::-1]
    assert memo.of(ids[0]) != _digests.Digests(bytes(32)).of(ids[0])  # keyed by the secret

    class Id(str):
        pass

    assert memo.of(Id("id-3")) == first[3]
    with pytest.raises(InvalidType):
        memo.of(b"id-3")
