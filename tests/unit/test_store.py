"""SessionStorage's API in one process: behaviour, errors, limits, expiry."""

from __future__ import annotations

import gc
import os
import math
import pickle
import threading
import time

import pytest

import shmsession
from shmsession import (
    InvalidName,
    InvalidOption,
    InvalidTTL,
    InvalidType,
    SegmentMismatch,
    SessionNotFound,
    SessionStorage,
    StoreFull,
)
from tests.contract.contract import URLSAFE


def test_public_surface_is_pinned() -> None:
    assert shmsession.__all__ == sorted(shmsession.__all__)
    assert set(shmsession.__all__) == {
        "AsyncStore", "Store",
        "CorruptSegment", "CorruptSnapshot", "InsufficientSharedMemory", "InvalidName", "InvalidSessionId",
        "InvalidOption", "InvalidOwner", "InvalidTTL", "InvalidType", "LayoutVersionMismatch", "LockTimeout",
        "MissingExtra",
        "SegmentError",
        "SegmentMismatch", "SegmentPermissionError", "SegmentUnlinked", "SessionNotFound",
        "SessionInfo", "SessionStorage", "ShmSessionError", "Stats", "StoreClosed", "StoreFull", "StoreNotFound",
        "ValueTooLarge", "VersionConflict", "__version__",
    }


def test_no_ttl_and_infinite_ttl_store_no_expiry(name: str) -> None:
    """Beyond the contract (which sees such sessions outlive a ttl): the store keeps no
    expiry for them at all, so ``sessions()`` reports none."""
    with SessionStorage(name, size=1 << 20, ttl=None) as s:
        s.write(s.new_id(), b"forever")
        s.write("b", b"also", ttl=math.inf)
        assert [info.ttl for info in s.sessions()] == [None, None]
        assert s.read("b") == b"also"
        s.unlink()


def test_a_read_reclaims_the_expired_session_it_finds(store: SessionStorage) -> None:
    """Beyond the contract (which counts reclaiming after many calls): the one read that
    finds an expired session reclaims it there and then."""
    sid = store.new_id()
    store.write(sid, b"short", ttl=0.05)
    assert store.read(sid) == b"short"
    time.sleep(0.08)
    assert sid not in store
    with pytest.raises(SessionNotFound):
        store.read(sid)
    stats = store.stats()
    assert stats.expirations >= 1 and stats.entries == 0  # reclaimed by the read
    assert store.add(sid, b"again") is True
    store.check()


def test_writes_now_and_then_sweep_expired_entries_out(name: str) -> None:
    """Every _SWEEP_EVERY-th write of a handle reclaims up to 8 expired entries, though
    the store is far from full: entries that never expire and empty slots are passed
    over."""
    with SessionStorage(name, size=1 << 20, max_entries=16) as s:
        for k in range(10):
            s.write(f"old-{k}", b"x" * 100, ttl=0.05)
        s.write("forever", b"f", ttl=math.inf)
        s.write("keep", b"k", ttl=60)
        time.sleep(0.08)
        for _ in range(31):
            s.write("keep", b"k", ttl=60)
        assert s.stats().expirations == 8  # one sweep so far, at 8 removals
        for _ in range(32):
            s.write("keep", b"k", ttl=60)
        st = s.stats()
        assert st.expirations == 10 and st.entries == 2
        assert s.read("forever") == b"f" and s.read("keep") == b"k"
        s.check()
        s.unlink()


def test_expired_entries_are_reclaimed_by_writes_without_reads(name: str) -> None:
    with SessionStorage(name, size=1 << 20, max_entries=200, ttl=0.05) as s:
        for k in range(150):
            s.write(f"old-{k}", b"x" * 100)
        time.sleep(0.08)
        for k in range(600):  # more than max_entries: only room because expired ones go
            s.write(f"new-{k % 150}", b"y" * 100, ttl=60)
        st = s.stats()
        assert st.entries <= 200 and st.expirations >= 150 and st.evictions == 0
        s.check()
        s.unlink()


def test_new_id_needs_no_handle() -> None:
    """Beyond the contract's ``store.new_id()``: it is a static method of the class."""
    ids = {SessionStorage.new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 43 and set(i) <= URLSAFE for i in ids)


def test_clear_frees_every_heap_byte(store: SessionStorage) -> None:
    """Beyond the contract's clear: the heap is empty after it (Redis reports the server's
    memory in ``bytes_used``, so this holds for the shared-memory store only)."""
    for k in range(50):
        store.write(f"k{k}", b"x" * 300)
    store.clear()
    assert store.stats().bytes_used == 0
    store.check()


def test_stats_describe_the_segment(store: SessionStorage) -> None:
    """Beyond the contract's counters: the figures of the segment's geometry."""
    store.write("k", b"x" * 1000)
    st = store.stats()
    assert st.bytes_used + st.bytes_free == st.heap_size
    assert st.size == 4 << 20 and st.max_entries == (4 << 20) // 1024


def test_counts_of_a_handle_dropped_without_close_are_not_lost(store: SessionStorage) -> None:
    other = SessionStorage(store.name)
    for i in range(5):
        other.write(f"k{i}", b"v")
    other.read("k0")
    del other  # the last reference: no close()
    gc.collect()
    st = store.stats()
    assert (st.writes, st.hits) == (5, 1), st


def test_a_handle_dropped_without_close_lets_go_of_its_descriptor(store: SessionStorage) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    SessionStorage(store.name).write("k", b"v")  # warm up whatever imports on first use
    gc.collect()
    before = open_fds()
    for _ in range(20):
        SessionStorage(store.name).write("k", b"v")  # each handle dropped at once
    gc.collect()
    assert open_fds() == before


# --------------------------------------------------------------------- bad input, full store
def test_a_released_memoryview_is_refused_as_invalid_type(store: SessionStorage) -> None:
    view = memoryview(b"gone")
    view.release()
    for call in (lambda: store.write("k", view), lambda: store.add("k", view),
                 lambda: store.replace("k", view)):
        with pytest.raises(InvalidType) as info:
            call()
        assert "released" in str(info.value), str(info.value)
    assert "k" not in store


@pytest.mark.parametrize("kwargs", [dict(size=1000), dict(size="big"), dict(max_entries=0),
                                    dict(when_full="drop"), dict(lock_timeout=-1),
                                    dict(ttl=0), dict(size=1 << 20, max_value_size=1 << 20)])
def test_bad_constructor_options(name: str, kwargs: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises((ValueError, TypeError)):
        SessionStorage(name, **kwargs)
    assert not SessionStorage.exists(name)


def test_a_size_under_the_minimum_is_refused_naming_the_minimum(name: str) -> None:
    with pytest.raises(InvalidOption) as info:
        SessionStorage(name, size=1000)
    assert str(info.value) == "size must be at least 1048576 bytes (1 MiB), got 1000"
    assert not SessionStorage.exists(name)


@pytest.mark.parametrize("value_size", [0, -5, 1 << 32])
def test_a_max_value_size_out_of_range_is_refused_naming_the_limits(name: str,
                                                                    value_size: int) -> None:
    with pytest.raises(InvalidOption) as info:
        SessionStorage(name, size=1 << 20, max_value_size=value_size)
    message = str(info.value)
    assert "max_value_size must be at least 1 byte and under 4 GiB" in message, message
    assert f"got {value_size}" in message
    assert not SessionStorage.exists(name)


def test_a_max_value_size_the_heap_cannot_hold_twice_is_refused_naming_the_need(
    name: str
) -> None:
    from shmsession import _layout as L

    with pytest.raises(InvalidOption) as info:
        SessionStorage(name, size=1 << 20, max_value_size=400_000)
    message = str(info.value)
    need = 2 * L.block_size_for(400_000)
    assert f"values need at least {need} bytes" in message, message
    assert "two of max_value_size=400000" in message and "64 KiB" in message, message
    assert not SessionStorage.exists(name)


@pytest.mark.parametrize("bad", ["", "a/b", "..", "x" * 101, "with space", None, 7])
def test_bad_names(bad: object) -> None:
    with pytest.raises(InvalidName):
        SessionStorage(bad)  # type: ignore[arg-type]


def test_full_store_raises_when_set_to_raise(name: str) -> None:
    with SessionStorage(name, size=1 << 20, max_entries=20, when_full="raise") as s:
        for k in range(20):
            s.write(f"s{k}", b"v")
        with pytest.raises(StoreFull) as info:
            s.write("one-too-many", b"v")
        assert "when_full" in str(info.value)
        assert all(s.read(f"s{k}") == b"v" for k in range(20))  # nothing lost
        s.write("s3", b"updating an existing one still works")
        s.check()
        s.unlink()


def test_full_heap_raises_when_set_to_raise(name: str) -> None:
    with SessionStorage(name, size=1 << 20, when_full="raise", max_value_size=64 << 10) as s:
        n = 0
        with pytest.raises(StoreFull):
            while n < 1000:
                s.write(f"s{n}", bytes([n % 256]) * (60 << 10))
                n += 1
        assert n > 5
        assert all(s.read(f"s{k}") == bytes([k % 256]) * (60 << 10) for k in range(n))
        s.check()
        s.unlink()


def test_full_store_evicts_least_recently_used_when_set_to_evict(name: str) -> None:
    with SessionStorage(name, size=1 << 20, max_entries=100) as s:
        for k in range(100):
            s.write(f"s{k}", b"v")
        for _ in range(3):
            for k in range(50):  # the first half is in use
                s.read(f"s{k}")
        for k in range(30):
            s.write(f"new{k}", b"v")
        st = s.stats()
        assert st.entries == 100 and st.evictions == 30
        survivors = sum(f"s{k}" in s for k in range(50))
        assert survivors >= 40  # sampled LRU: recently read sessions mostly stay
        s.check()
        s.unlink()


# --------------------------------------------------------------------- life cycle
def test_attach_shares_data_and_geometry_must_match(name: str) -> None:
    a = SessionStorage(name, size=2 << 20, max_entries=500)
    b = SessionStorage(name)  # attaches, whatever the geometry
    try:
        a.write("k", b"from a")
        assert b.read("k") == b"from a"
        assert b.stats().size == 2 << 20 and b.stats().max_entries == 500
        with pytest.raises(SegmentMismatch) as info:
            SessionStorage(name, size=4 << 20)
        assert "unlink" in str(info.value)
        with pytest.raises(SegmentMismatch):
            SessionStorage(name, max_entries=10)
    finally:
        b.close()
        a.unlink()


def test_attach_with_another_max_value_size_is_refused(name: str) -> None:
    with SessionStorage(name, size=2 << 20, max_value_size=50_000) as a:
        with pytest.raises(SegmentMismatch) as info:
            SessionStorage(name, max_value_size=60_000)
        assert "max_value_size=50000, not 60000" in str(info.value)
        with SessionStorage(name, max_value_size=50_000) as b:
            assert b._max_value == 50_000
        a.unlink()


def test_ttl_and_touch_on_read_are_each_handles_own(name: str) -> None:
    """The segment keeps no ttl: each handle's ``ttl`` is the default of its own writes and
    touches, and its ``touch_on_read`` renews by it on its own reads."""
    with SessionStorage(name, size=1 << 20, ttl=100, touch_on_read=True) as short, \
            SessionStorage(name, ttl=None) as forever:

        def left(sid: str) -> "float | None":
            digest = short._digests.of(sid).hex()
            return next(info.ttl for info in short.sessions() if info.digest == digest)

        short.write("a", b"1")
        forever.write("b", b"2")
        forever.write("c", b"3", ttl=50)  # an explicit ttl wins over the handle's
        assert 99 < left("a") <= 100 and left("b") is None  # type: ignore[operator]
        assert 49 < left("c") <= 50  # type: ignore[operator]
        assert short.touch("b") and 99 < left("b") <= 100  # type: ignore[operator]
        assert forever.read("c") == b"3" and left("c") <= 50  # type: ignore[operator]
        assert short.read("c") == b"3" and 99 < left("c") <= 100  # type: ignore[operator]
        short.unlink()


def test_when_full_is_each_handles_own(name: str) -> None:
    """The segment keeps no when_full: on the same full store one handle raises StoreFull
    where another evicts."""
    with SessionStorage(name, size=1 << 20, max_entries=16, when_full="raise") as raising, \
            SessionStorage(name, when_full="evict") as evicting:
        for k in range(16):
            raising.write(f"s{k}", b"v")
        with pytest.raises(StoreFull):
            raising.write("one more", b"v")
        evicting.write("one more", b"v")
        assert evicting.stats().evictions == 1 and len(raising) == 16
        assert "one more" in raising
        with pytest.raises(StoreFull):
            raising.write("and another", b"v")
        raising.unlink()


def test_unlink_removes_segment_and_lock_file_and_tells_other_handles(name: str) -> None:
    import os

    from shmsession import SegmentUnlinked
    from shmsession._segment import lock_path, segment_path

    a = SessionStorage(name, size=1 << 20)
    b = SessionStorage(name)
    a.write("k", b"v")
    assert os.path.exists(segment_path(name)) and os.path.exists(lock_path(name))
    a.unlink()
    assert not os.path.exists(segment_path(name)) and not os.path.exists(lock_path(name))
    assert not SessionStorage.exists(name)
    with pytest.raises(SegmentUnlinked):
        b.read("k")
    b.close()
    assert SessionStorage.unlink_name(name) is False


def test_create_false_does_not_create(name: str) -> None:
    from shmsession import StoreNotFound

    with pytest.raises(StoreNotFound) as info:
        SessionStorage(name, create=False)
    assert isinstance(info.value, FileNotFoundError)
    assert not SessionStorage.exists(name)


def test_a_handle_pickles_by_name(name: str) -> None:
    with SessionStorage(name, size=1 << 20) as s:
        s.write("k", b"v")
        with pickle.loads(pickle.dumps(s)) as t:
            assert t.read("k") == b"v"
        s.unlink()


def test_repr(store: SessionStorage) -> None:
    assert store.name in repr(store) and "open" in repr(store)


def test_mixed_size_churn_at_70_percent_of_the_heap_never_reports_full(name: str) -> None:
    """Through the store (when_full="raise"): sessions of 100 B to 64 KiB, rewritten at random
    with new sizes while live data stays near 70% of the heap; no write fails."""
    import random

    rng = random.Random(4)
    with SessionStorage(name, size=16 << 20, max_value_size=64 << 10, when_full="raise",
                        ttl=None) as s:
        heap = s.stats().heap_size

        def draw() -> int:
            return int(100 * (65536 / 100) ** rng.random())

        sizes = {}
        total = 0
        while total < 0.70 * heap:
            sid = s.new_id()
            sizes[sid] = draw()
            s.write(sid, b"v" * sizes[sid])
            total += sizes[sid]
        ids = list(sizes)
        for _ in range(4000):
            sid = rng.choice(ids)
            new = draw()
            if total - sizes[sid] + new > 0.72 * heap:
                new = max(100, sizes[sid] // 2)  # hold live data near 70%
            s.write(sid, bytes([new % 256]) * new)
            total += new - sizes[sid]
            sizes[sid] = new
        s.check()
        assert all(len(s.read(sid)) == n for sid, n in sizes.items())
        assert s.stats().evictions == 0
        s.unlink()


def test_a_ttl_over_100_years_is_refused_not_overflowed(store: SessionStorage, name: str) -> None:
    for ttl in (1e10, 1e300):
        with pytest.raises(InvalidTTL) as info:
            store.write("k", b"v", ttl=ttl)
        assert "math.inf" in str(info.value)
    with pytest.raises(InvalidTTL):
        SessionStorage(name + "-x", size=1 << 20, ttl=1e10)
    store.write("k", b"v", ttl=99 * 365 * 86400)
    assert store.read("k") == b"v"


def test_a_lock_timeout_beyond_what_threading_can_wait_is_refused(name: str) -> None:
    """threading's waits take at most threading.TIMEOUT_MAX seconds: a longer lock_timeout
    would be accepted and then fail every contended acquire with OverflowError."""
    for timeout in (1e10, threading.TIMEOUT_MAX * 2):
        with pytest.raises(InvalidOption) as info:
            SessionStorage(name, size=1 << 20, lock_timeout=timeout)
        message = str(info.value)
        assert "TIMEOUT_MAX" in message and "None" in message, message
    assert not SessionStorage.exists(name)


def test_the_longest_lock_timeout_works_when_another_thread_holds_the_lock(name: str) -> None:
    """A test of the lock inside the store: it holds the store's lock itself (``_access``,
    ``_lock``), which no public call can keep held while another thread waits."""
    with SessionStorage(name, size=1 << 20, lock_timeout=threading.TIMEOUT_MAX) as s:
        s.write("k", b"v")
        s._access.acquire()
        wrote: "list[object]" = []

        def write() -> None:
            try:
                wrote.append(s.write("k", b"w"))
            except BaseException as exc:  # noqa: BLE001 - reported below
                wrote.append(exc)

        waiter = threading.Thread(target=write, daemon=True)
        try:
            waiter.start()
            time.sleep(0.05)  # the waiter is blocked on the thread lock by now
        finally:
            s._lock.release()
        waiter.join(10.0)
        assert not waiter.is_alive()
        assert len(wrote) == 1 and isinstance(wrote[0], int), wrote
        assert s._lock.waits == 1  # it did wait, with the longest timeout, and got the lock
        assert s.read("k") == b"w"
        s.unlink()
