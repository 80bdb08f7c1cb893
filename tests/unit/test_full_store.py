"""A full store in evict mode makes contiguous room: a value that fits the empty store always
fits, whatever the sessions already there, and the work of one write is bounded and counted.

Random evictions alone rarely free neighbouring blocks: with the heap full of ~900-byte
sessions, growing one to 4 KiB failed 20 times out of 20 before eviction cleared runs of
adjacent blocks (``shmsession._room.Room.plan``).
"""

from __future__ import annotations

import os
import random
from typing import Dict, Iterator

import pytest

from shmsession import SessionStorage
from shmsession import _layout as L


def _value(sid: str, size: int, gen: int) -> bytes:
    """Self-describing: a value read back under another id or torn would not match."""
    head = f"{sid}:{gen}:".encode()
    return (head + bytes([gen % 251]) * size)[: max(size, len(head))]


@pytest.fixture
def full(name: str) -> Iterator[SessionStorage]:
    """8 MiB of ~900-byte sessions, written until the store has evicted for a while: the
    steady state of a busy site."""
    store = SessionStorage(name, size=8 << 20, ttl=None, max_value_size=512 << 10)
    try:
        rng = random.Random(1)
        for k in range(12_000):
            store.write(f"s{k}", _value(f"s{k}", rng.randint(800, 1000), 0))
        assert store.stats().evictions > 1000
        yield store
    finally:
        store.close()


def _churn(store: SessionStorage, rng: random.Random, start: int, n: int = 200) -> int:
    for k in range(start, start + n):
        store.write(f"s{k}", _value(f"s{k}", rng.randint(800, 1000), 0))
    return start + n


@pytest.mark.parametrize("size", [1 << 10, 2 << 10, 4 << 10, 8 << 10, 64 << 10])
def test_a_session_grows_in_a_store_full_of_small_ones(full: SessionStorage, size: int) -> None:
    rng = random.Random(size)
    k = 12_000
    for round_ in range(10):
        k = _churn(full, rng, k)
        sid = f"s{k - 1 - rng.randrange(100)}"
        assert sid in full
        full.write(sid, _value(sid, size, round_ + 1))  # StoreFull before the fix
        assert full.read(sid) == _value(sid, size, round_ + 1)
    full.check()
    st = full.stats()
    assert st.room_writes >= 1 and st.room_evictions >= st.room_writes


@pytest.mark.parametrize("size", [4 << 10, 64 << 10, 512 << 10])
def test_a_new_value_up_to_max_value_size_fits_a_full_store(full: SessionStorage,
                                                            size: int) -> None:
    rng = random.Random(size)
    k = 12_000
    for round_ in range(10):
        k = _churn(full, rng, k)
        sid = f"new{round_}"
        full.write(sid, _value(sid, size, 1))
        assert full.read(sid) == _value(sid, size, 1)
    full.check()


def test_one_write_evicts_at_most_one_session_per_min_block_of_its_value(
        full: SessionStorage) -> None:
    """The bound on one write's work, as ``stats()`` reports it."""
    size = 512 << 10
    full.write("big", _value("big", size, 1))
    st = full.stats()
    assert 1 <= st.room_max_evictions <= L.block_size_for(size) // L.MIN_BLOCK + 2
    # ~900-byte blocks: the run evicted about its size in sessions, not the whole store
    assert st.room_max_evictions <= L.block_size_for(size) // 800 + 2
    assert 0.0 <= st.fragmentation < 1.0


def test_the_largest_value_fits_a_heap_full_of_tiny_sessions(name: str) -> None:
    """The worst case for one write: a max_value_size value in a heap of 64-byte sessions
    (~11,000 of them in the way). It takes more evictions than one transaction's journal
    holds, so the run is cleared in committed chunks first (``_clear_room``)."""
    # 14 MiB: 10 MiB of table and owner table (65536 slots), the journal, and ~2.75 MiB of heap
    with SessionStorage(name, size=14 << 20, max_entries=32768, ttl=None,
                        max_value_size=1 << 20) as store:
        for k in range(40_000):
            store.write(f"t{k}", _value(f"t{k}", 64, 0))
        assert store.stats().bytes_free < L.block_size_for(1 << 20)
        for round_ in range(3):
            store.write(f"big{round_}", _value("big", 1 << 20, round_))
            assert store.read(f"big{round_}") == _value("big", 1 << 20, round_)
            store.write("t39999", _value("t39999", 1 << 20, round_))  # a tiny one grows
            for k in range(40_000 + round_ * 500, 40_500 + round_ * 500):
                store.write(f"t{k}", _value(f"t{k}", 64, 0))
        st = store.stats()
        assert st.room_max_evictions > 128  # more than one transaction carries
        assert st.room_max_evictions <= L.block_size_for(1 << 20) // L.MIN_BLOCK + 2
        store.check()


def test_a_session_as_large_as_half_the_heap_grows_over_its_own_block(name: str) -> None:
    """Growing the one big session of a store: its old block lies in the only run large
    enough, so the run takes it in (its value goes anyway)."""
    # 4.75 MiB: 1.25 MiB of table and owner table (8192 slots), the journal, ~2.25 MiB of heap
    with SessionStorage(name, size=(4 << 20) + (768 << 10), ttl=None,
                        max_value_size=1 << 20) as store:
        heap = store.stats().heap_size
        assert heap < 3 * L.block_size_for(1 << 20)
        rng = random.Random(3)
        for k in range(3000):
            store.write(f"t{k}", os.urandom(rng.randint(100, 3000)))
        for round_ in range(6):
            size = (1 << 20) - round_ * 1000 if round_ % 2 else (1 << 19) + round_
            store.write("grower", _value("grower", size, round_))
            assert store.read("grower") == _value("grower", size, round_)
            for k in range(200):
                store.write(f"u{round_}-{k}", os.urandom(rng.randint(100, 3000)))
            # The churn may evict it: a run of adjacent blocks grown from a sampled least
            # recently used session takes in its neighbours, and this one is half the heap
            # (2 of 80 runs lost it, in either build). It is never torn.
            assert store.get("grower") in (None, _value("grower", size, round_))
            store.check()


def test_when_full_raise_still_raises_and_keeps_every_session(name: str) -> None:
    from shmsession import StoreFull

    with SessionStorage(name, size=2 << 20, ttl=None, when_full="raise") as store:
        written: Dict[str, bytes] = {}
        with pytest.raises(StoreFull):
            for k in range(10_000):
                written[f"s{k}"] = _value(f"s{k}", 900, 0)
                store.write(f"s{k}", written[f"s{k}"])
        del written[f"s{k}"]
        assert all(store.read(sid) == value for sid, value in written.items())
        assert store.stats().room_writes == 0
        store.check()


@pytest.mark.slow
def test_soak_a_store_at_100_percent_for_200000_writes(name: str,
                                                      record_property: object) -> None:
    """Sessions growing and shrinking between 100 B and 64 KiB (log-uniform: as many small
    as large), ids drawn from a pool that holds about three times the store: no StoreFull,
    ``check()`` clean along the way, and the fragmentation figure reported."""
    rng = random.Random(2026)
    size = 16 << 20
    with SessionStorage(name, size=size, ttl=None, max_value_size=64 << 10) as store:
        pool = 3 * size // 10_000  # the mean value is ~10 KB
        fragmentation = []
        for n in range(200_000):
            sid = f"p{rng.randrange(pool)}"
            length = int(100 * (65536 / 100) ** rng.random())
            store.write(sid, _value(sid, length, n))
            if n % 20_000 == 19_999:
                store.check()
                st = store.stats()
                fragmentation.append(st.fragmentation)
                assert st.bytes_used > 0.9 * st.heap_size, "the store is not being kept full"
        st = store.stats()
        assert st.evictions > 50_000 and st.room_writes > 1000
        assert st.room_max_evictions <= L.block_size_for(64 << 10) // L.MIN_BLOCK + 2
        report = (f"fragmentation {min(fragmentation):.3f}-{max(fragmentation):.3f}, heap "
                  f"{st.bytes_used / st.heap_size:.1%} used, {st.room_writes} writes made "
                  f"room by {st.room_evictions} evictions (most at once "
                  f"{st.room_max_evictions}), {st.evictions} evictions in all")
        record_property("soak", report)  # type: ignore[operator]
        print(report)
