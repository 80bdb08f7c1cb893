"""What every session store promises, written once and run against each of them (cachelib's
``CommonTests``): ``SessionStorage``, ``AsyncSessionStorage``, ``RedisSessionStorage`` and
``AsyncRedisSessionStorage``.

A concrete test class mixes in :class:`StoreContract` and supplies a ``make_store`` fixture: a
callable ``make_store(**options)`` that opens a NEW handle on the test's own store (the same
store on every call within one test), with options among ``ttl``, ``max_value_size`` and
``touch_on_read``; the fixture closes every handle and removes the store after the test.
Handles have ``SessionStorage``'s synchronous API: an async store comes wrapped in
:class:`Blocking`. Classes of stores whose one handle may be shared by threads add
:class:`SharedHandleContract`; async ones add :class:`AsyncContract`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import threading
import time
from dataclasses import fields
from typing import Any, BinaryIO, Callable, List, Sequence, Tuple, TypeVar

import pytest

from shmsession import (
    InvalidSessionId,
    InvalidTTL,
    InvalidType,
    SessionNotFound,
    ShmSessionError,
    Stats,
    StoreClosed,
    ValueTooLarge,
    VersionConflict,
)

T = TypeVar("T")
MakeStore = Callable[..., Any]

URLSAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
BAD_IDS = [(None, InvalidType), (b"bytes", InvalidType), (5, InvalidType), ("", InvalidSessionId),
           ("x" * 1025, InvalidSessionId), ("\udc80", InvalidSessionId)]
BAD_VALUES = ["text", 5, None, [b"x"], {"a": 1}]
BAD_TTLS = [(0, InvalidTTL), (-1, InvalidTTL), (-0.5, InvalidTTL), (math.nan, InvalidTTL),
            (-math.inf, InvalidTTL), ("10", InvalidType), (True, InvalidType)]
BAD_EXPECTS = [-1, "1", 1.5, True]
THREAD_TIMEOUT = 90.0  # seconds for a whole concurrent phase on a loaded 2-core machine
CAS_TRIES = 2000  # read-modify-write attempts one increment may take before the test fails


class Blocking:
    """An async store driven from synchronous test code: each coroutine method runs to
    completion on this handle's own event loop, so each handle may live in its own thread
    (one thread at a time)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.loop = asyncio.new_event_loop()

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def __getattr__(self, attr: str) -> Any:
        fn = getattr(self.inner, attr)
        if not inspect.iscoroutinefunction(fn):
            return fn
        return lambda *args, **kwargs: self.run(fn(*args, **kwargs))

    def __contains__(self, sid: object) -> bool:
        return bool(self.run(self.inner.contains(sid)))

    def __len__(self) -> int:
        return int(self.run(self.inner.len()))

    def __enter__(self) -> "Blocking":
        self.run(self.inner.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self.inner.__aexit__(*exc))

    def dispose(self) -> None:
        """Close the store (idempotent) and the loop with its threads."""
        try:
            self.run(self.inner.close())
        finally:
            try:
                self.run(self.loop.shutdown_default_executor())
            finally:
                self.loop.close()


def in_threads(calls: Sequence[Callable[[], T]]) -> List[T]:
    """Run each call in its own thread, all released together; their results in order.
    Raises the first error any of them raised."""
    barrier = threading.Barrier(len(calls))
    results: List[Any] = [None] * len(calls)
    errors: List[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(THREAD_TIMEOUT)
            results[i] = calls[i]()
        except BaseException as e:  # noqa: BLE001 - handed to the test below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + THREAD_TIMEOUT
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a thread did not finish in time"
    if errors:
        raise errors[0]
    return results


def increment(store: Any, sid: str, times: int) -> int:
    """Add 1 to the number stored at ``sid``, ``times`` times, by read + compare-and-set,
    retrying on conflict; returns how many conflicts it met."""
    conflicts = 0
    for _ in range(times):
        for _ in range(CAS_TRIES):
            value, version = store.read_versioned(sid)
            try:
                store.write(sid, b"%d" % (int(value) + 1), expect=version)
                break
            except VersionConflict:
                conflicts += 1
        else:
            raise AssertionError(f"no increment got through in {CAS_TRIES} tries")
    return conflicts


class StoreContract:
    """The behaviour of every store, on handles from the concrete class's ``make_store``."""

    @pytest.fixture
    def store(self, make_store: MakeStore) -> Any:
        return make_store()

    # ------------------------------------------------------------------ reading and writing
    def test_new_ids_are_unique_urlsafe_43_characters(self, store: Any) -> None:
        ids = {store.new_id() for _ in range(1000)}
        assert len(ids) == 1000
        assert all(len(i) == 43 and set(i) <= URLSAFE for i in ids)

    def test_write_read_roundtrip(self, store: Any) -> None:
        sid = store.new_id()
        v1 = store.write(sid, b"hello")
        assert type(v1) is int and v1 > 0
        assert store.read(sid) == b"hello" and type(store.read(sid)) is bytes
        assert store.read_versioned(sid) == (b"hello", v1)
        buf = bytearray(b"x" * 5000)
        v2 = store.write(sid, buf)  # grows
        buf[0:1] = b"!"  # the store kept a copy, not the caller's buffer
        assert v2 > v1
        assert store.read(sid) == b"x" * 5000
        v3 = store.write(sid, memoryview(b"small"))
        assert store.read_versioned(sid) == (b"small", v3) and v3 > v2
        store.write(sid, b"")
        assert store.read(sid) == b"" and store.get(sid) == b"" and sid in store
        store.write(sid, bytes(range(256)) * 4)  # every byte value, NUL included
        assert store.read(sid) == bytes(range(256)) * 4
        store.check()

    def test_missing_id_raises_session_not_found_a_key_error(self, store: Any) -> None:
        with pytest.raises(SessionNotFound) as info:
            store.read("nobody")
        assert isinstance(info.value, KeyError) and isinstance(info.value, ShmSessionError)
        assert "no session" in str(info.value)
        with pytest.raises(SessionNotFound):
            store.read_versioned("nobody")
        with pytest.raises(SessionNotFound):
            store.read("nobody", lambda s: s.read())
        assert store.get("nobody") is None
        assert store.get("nobody", b"d") == b"d"
        assert "nobody" not in store
        assert len(store) == 0

    def test_str_subclass_ids_are_the_same_session(self, store: Any) -> None:
        class Sid(str):
            pass

        store.write(Sid("abc"), b"v")
        assert store.read("abc") == b"v" and Sid("abc") in store

    def test_long_and_unicode_ids_work(self, store: Any) -> None:
        for sid in ["é" * 300, "x" * 1024, "ключ:сессии", "a", "*?[]\\ {}"]:
            store.write(sid, sid.encode())
        for sid in ["é" * 300, "x" * 1024, "ключ:сессии", "a", "*?[]\\ {}"]:
            assert store.read(sid) == sid.encode()
        assert len(store) == 5

    def test_invalidate_is_idempotent_and_says_what_it_did(self, store: Any) -> None:
        sid, other = store.new_id(), store.new_id()
        store.write(sid, b"v")
        store.write(other, b"w")
        assert store.invalidate(sid) is True
        assert store.invalidate(sid) is False
        assert store.invalidate("never-there") is False
        with pytest.raises(SessionNotFound):
            store.read(sid)
        assert sid not in store and store.read(other) == b"w" and len(store) == 1
        store.check()

    def test_add_is_create_if_absent(self, store: Any) -> None:
        sid = store.new_id()
        assert store.add(sid, b"first") is True
        value, version = store.read_versioned(sid)
        assert (value, version > 0) == (b"first", True)
        assert store.add(sid, b"second") is False
        assert store.read_versioned(sid) == (b"first", version)  # untouched, same version
        store.invalidate(sid)
        assert store.add(sid, bytearray(b"again")) is True
        assert store.read(sid) == b"again"

    def test_replace_writes_only_over_a_live_session(self, store: Any) -> None:
        sid, other = store.new_id(), store.new_id()
        assert store.replace(sid, b"adopted?") is False  # an id nobody issued
        assert sid not in store and len(store) == 0
        v1 = store.write(sid, b"old")
        assert store.replace(sid, bytearray(b"new")) is True
        value, v2 = store.read_versioned(sid)
        assert value == b"new" and v2 > v1  # a new version, as a write makes
        with pytest.raises(VersionConflict):
            store.write(sid, b"stale", expect=v1)  # a compare-and-set sees the replace
        assert store.replace(sid, memoryview(b"newer"), 30) is True
        value, v3 = store.read_versioned(sid)
        assert value == b"newer" and v3 > v2
        assert store.invalidate(sid) is True
        assert store.replace(sid, b"back?") is False  # logout stays logout
        assert sid not in store and store.get(sid) is None
        v4 = store.write(other, b"o")
        assert store.replace(sid, b"again?") is False
        assert store.write(other, b"p") == v4 + 1  # a refused replace spent no version
        before = store.stats()
        assert store.replace(other, b"q") is True and store.replace(sid, b"r") is False
        after = store.stats()
        # A replace is a write: one counted when it writes, and no keyspace hit or miss.
        assert [getattr(after, f) - getattr(before, f)
                for f in ("writes", "hits", "misses")] == [1, 0, 0]
        assert store.read(other) == b"q" and len(store) == 1
        store.check()

    def test_replace_does_not_revive_an_expired_session(self, make_store: MakeStore) -> None:
        store = make_store(ttl=30)
        store.write("brief", b"v", ttl=0.05)
        store.write("kept", b"v", ttl=0.05)
        assert store.replace("kept", b"w", ttl=math.inf) is True  # a replace resets the expiry
        time.sleep(0.3)
        assert store.replace("brief", b"revived?") is False
        assert "brief" not in store and store.get("brief") is None
        assert store.read("kept") == b"w"

    def test_compare_and_set(self, store: Any) -> None:
        sid = store.new_id()
        v1 = store.write(sid, b"a")
        v2 = store.write(sid, b"b", expect=v1)
        assert v2 > v1
        with pytest.raises(VersionConflict) as info:
            store.write(sid, b"c", expect=v1)  # a second writer that read v1
        assert "changed" in str(info.value)
        assert store.read_versioned(sid) == (b"b", v2)  # the loser changed nothing
        v3 = store.write(sid, lambda s: s.write(b"streamed"), expect=v2)
        assert store.read_versioned(sid) == (b"streamed", v3)
        store.invalidate(sid)
        with pytest.raises(VersionConflict) as info:
            store.write(sid, b"d", expect=v3)  # deleted since read
        assert "deleted" in str(info.value)
        assert sid not in store
        with pytest.raises(VersionConflict):
            store.write(store.new_id(), b"e", expect=1)  # never existed
        assert len(store) == 0
        v4 = store.write(sid, b"f")
        with pytest.raises(VersionConflict, match="changed"):
            store.write(sid, b"g", expect=v4 + (1 << 64))  # no version is that large
        assert store.read_versioned(sid) == (b"f", v4)

    @pytest.mark.parametrize("expect", BAD_EXPECTS)
    def test_bad_expect_is_refused(self, store: Any, expect: object) -> None:
        v = store.write("k", b"v")
        with pytest.raises(InvalidType):
            store.write("k", b"w", expect=expect)
        assert store.read_versioned("k") == (b"v", v)

    def test_versions_grow_across_handles_and_clear(self, make_store: MakeStore) -> None:
        a, b = make_store(), make_store()
        versions = []
        for k in range(10):
            versions.append((a if k % 2 else b).write(f"s{k % 3}", b"v"))
        assert versions == sorted(set(versions))  # strictly increasing, whichever handle
        a.clear()
        assert b.write("s0", b"after") > versions[-1]

    def test_streaming_read_and_write(self, store: Any) -> None:
        sid = store.new_id()

        def provider(stream: BinaryIO) -> None:
            stream.write(b"part one, ")
            stream.write(b"part two")

        v = store.write(sid, provider)
        assert store.read_versioned(sid) == (b"part one, part two", v)

        def consumer(stream: BinaryIO) -> Tuple[bytes, bool, bool]:
            return stream.read(), stream.readable(), stream.writable()

        assert store.read(sid, consumer) == (b"part one, part two", True, False)

        def failing(stream: BinaryIO) -> None:
            stream.write(b"half")
            raise RuntimeError("the provider failed")

        with pytest.raises(RuntimeError):
            store.write(sid, failing)
        assert store.read_versioned(sid) == (b"part one, part two", v)  # nothing stored
        with pytest.raises(RuntimeError):
            store.write(store.new_id(), failing)
        assert len(store) == 1
        with pytest.raises(ZeroDivisionError):
            store.read(sid, lambda s: 1 // 0)  # the consumer's error, unchanged
        assert store.read(sid) == b"part one, part two"

    # ------------------------------------------------------------------ expiry
    def test_ttl_expiry_and_touch(self, make_store: MakeStore) -> None:
        short = make_store(ttl=1)
        forever = make_store(ttl=None)
        before = short.stats()
        version = short.write("default", b"v")  # the store's ttl: 1 s
        short.write("none-is-default", b"v", None)
        assert short.add("added", b"v") is True
        short.write("touched-longer", b"v", ttl=1)
        short.write("touched-forever", b"v", ttl=1)
        short.write("inf", b"v", ttl=math.inf)
        short.write("touched-shorter", b"v", ttl=math.inf)
        short.write("touched-default", b"v", ttl=30)
        forever.write("store-without-ttl", b"v")
        forever.add("added-forever", b"v")
        short.write("rewritten", b"v", ttl=1)
        short.write("replaced-default", b"v", ttl=30)
        short.write("replaced-forever", b"v", ttl=1)
        assert short.touch("touched-longer", ttl=30) is True
        assert short.touch("touched-forever", ttl=math.inf) is True
        assert short.touch("touched-shorter", ttl=1) is True
        assert short.touch("touched-default") is True  # None: the store's ttl, 1 s
        assert short.write("rewritten", b"w", ttl=math.inf) > 0  # a write resets the expiry
        assert short.replace("replaced-default", b"w") is True  # None: the store's 1 s
        assert short.replace("replaced-forever", b"w", ttl=math.inf) is True
        written = time.monotonic()
        assert short.touch("absent") is False and short.touch("absent", ttl=math.inf) is False
        gone = ["default", "none-is-default", "added", "touched-shorter", "touched-default",
                "replaced-default"]
        alive = ["touched-longer", "touched-forever", "inf", "store-without-ttl",
                 "added-forever", "rewritten", "replaced-forever"]
        assert all(sid in short for sid in gone + alive)
        assert len(short) == len(gone) + len(alive)
        time.sleep(max(0.0, written + 1.25 - time.monotonic()))  # every 1 s ttl has run out
        for sid in gone:
            assert sid not in short and short.get(sid) is None, sid
            with pytest.raises(SessionNotFound):
                short.read(sid)
            with pytest.raises(SessionNotFound):
                short.read_versioned(sid)
            assert short.touch(sid) is False and short.touch(sid, ttl=math.inf) is False
            assert short.replace(sid, b"late") is False and sid not in short
            assert short.invalidate(sid) is False
        with pytest.raises(VersionConflict):
            short.write("default", b"late", expect=version)
        assert "default" not in short
        for sid in alive:
            assert short.get(sid) is not None, sid
        assert short.read("rewritten") == b"w" and short.read("replaced-forever") == b"w"
        assert len(short) == len(alive) and len(forever) == len(alive)
        after = short.stats()  # the expired sessions were reclaimed, and counted
        assert after.entries == len(alive)
        assert after.expirations - before.expirations >= len(gone)
        short.check()
        assert short.add("default", b"again") is True  # an expired id is free again
        assert short.read("default") == b"again"

    def test_touch_on_read_slides_expiry(self, make_store: MakeStore) -> None:
        sliding = make_store(ttl=0.6, touch_on_read=True)
        plain = make_store(ttl=0.6)
        sliding.write("slides", b"v")
        plain.write("fixed", b"v")
        sliding.write("no-expiry", b"v", ttl=math.inf)
        assert sliding.read("no-expiry") == b"v"  # must not give it an expiry
        assert plain.read("fixed") == b"v"  # a handle without touch_on_read does not slide
        written = time.monotonic()
        reads = [sliding.read, sliding.get, lambda sid: sliding.read_versioned(sid)[0]] * 2
        for read in reads:  # 1.5 s in all, well over the ttl: kept alive by reads alone
            time.sleep(0.25)
            assert read("slides") == b"v"
        assert time.monotonic() - written > 0.6 + 0.1
        assert "fixed" not in plain
        assert sliding.read("no-expiry") == b"v"

    # ------------------------------------------------------------------ bad input
    @pytest.mark.parametrize("sid,err", BAD_IDS)
    def test_bad_ids_are_refused_and_change_nothing(self, store: Any, sid: object,
                                                    err: type) -> None:
        v = store.write("keep", b"kept")
        for call in (lambda: store.write(sid, b"v"), lambda: store.read(sid),
                     lambda: store.read_versioned(sid), lambda: store.get(sid),
                     lambda: store.invalidate(sid), lambda: store.touch(sid),
                     lambda: store.add(sid, b"v"), lambda: sid in store,
                     lambda: store.write(sid, b"v", expect=v), lambda: store.replace(sid, b"v")):
            with pytest.raises(err):
                call()
        assert store.read("keep") == b"kept" and len(store) == 1
        assert store.write("keep", b"again") == v + 1  # no version was spent on bad input
        assert store.stats().writes == 2
        store.check()

    @pytest.mark.parametrize("value", BAD_VALUES)
    def test_non_bytes_values_are_refused(self, store: Any, value: object) -> None:
        v = store.write("live", b"kept")
        calls: Tuple[Callable[[], object], ...] = (
            lambda: store.write("k", value), lambda: store.add("k", value),
            lambda: store.replace("k", value), lambda: store.replace("live", value))
        for call in calls:
            with pytest.raises(InvalidType) as info:
                call()
            assert isinstance(info.value, TypeError) and "bytes" in str(info.value)
        assert "k" not in store and len(store) == 1
        assert store.read_versioned("live") == (b"kept", v)

    def test_add_and_replace_take_no_provider_and_a_provider_error_propagates(
            self, store: Any) -> None:
        with pytest.raises(InvalidType):
            store.add("k", lambda s: s.write(b"v"))
        v = store.write("live", b"kept")
        with pytest.raises(InvalidType):
            store.replace("live", lambda s: s.write(b"v"))
        assert store.read_versioned("live") == (b"kept", v)
        with pytest.raises(TypeError):
            store.write("k", lambda s: s.write("text"))  # the stream's own error
        assert "k" not in store

    def test_oversized_value_is_refused_and_the_old_one_kept(self, make_store: MakeStore
                                                             ) -> None:
        s = make_store(max_value_size=1000)
        v = s.write("k", b"old")
        calls: Tuple[Callable[[], object], ...] = (
            lambda: s.write("k", b"x" * 1001), lambda: s.add("new", b"x" * 1001),
            lambda: s.write("k", lambda st: st.write(b"x" * 1001)),
            lambda: s.write("k", bytearray(1001), expect=v), lambda: s.replace("k", b"x" * 1001))
        for call in calls:
            with pytest.raises(ValueTooLarge) as info:
                call()
            assert isinstance(info.value, ValueError) and "max_value_size" in str(info.value)
        assert s.read_versioned("k") == (b"old", v) and "new" not in s
        assert s.write("k", b"x" * 1000, expect=v) > v

    def test_bad_ttl_is_refused_and_changes_nothing(self, make_store: MakeStore) -> None:
        store = make_store(ttl=1)
        store.write("there", b"v", ttl=30)
        for ttl, err in BAD_TTLS:
            calls: Tuple[Callable[[], object], ...] = (
                lambda: store.write("k", b"v", ttl=ttl), lambda: store.add("k", b"v", ttl),
                lambda: store.replace("k", b"v", ttl), lambda: store.replace("there", b"w", ttl),
                lambda: store.touch("k", ttl=ttl), lambda: store.touch("there", ttl=ttl),
                lambda: make_store(ttl=ttl))
            for call in calls:
                with pytest.raises(err):
                    call()
        assert "k" not in store and len(store) == 1
        time.sleep(1.1)  # "there" kept its 30 s; a touch to the default 1 s would end it
        assert store.read("there") == b"v"  # and its value: no replace went through

    def test_a_bad_id_is_reported_before_a_bad_ttl(self, store: Any) -> None:
        """Arguments are checked in their order: the id first, whichever path runs."""
        for call in (lambda: store.write("", b"v", ttl=-1), lambda: store.add("", b"v", -1),
                     lambda: store.replace("", b"v", -1), lambda: store.touch("", ttl=-1),
                     lambda: store.write(5, b"v", ttl="10")):
            with pytest.raises((InvalidSessionId, InvalidType)) as info:
                call()
            assert not isinstance(info.value, InvalidTTL)
            assert isinstance(info.value, InvalidSessionId) or "session id" in str(info.value)
        assert len(store) == 0

    # ------------------------------------------------------------------ whole store
    def test_len_contains_clear(self, store: Any) -> None:
        store.clear()  # an empty store clears fine
        ids = [store.new_id() for _ in range(50)]
        for sid in ids:
            store.write(sid, sid.encode())
        assert len(store) == 50 and all(sid in store for sid in ids)
        assert store.stats().entries == 50
        store.clear()
        assert len(store) == 0 and store.stats().entries == 0
        assert not any(sid in store for sid in ids) and store.get(ids[0]) is None
        store.check()
        store.write(ids[0], b"after")
        assert store.read(ids[0]) == b"after" and len(store) == 1

    def test_stats_counts(self, store: Any) -> None:
        before = store.stats()
        assert isinstance(before, Stats) and before.entries == 0
        sid = store.new_id()
        store.write(sid, b"x" * 1000)
        assert store.read(sid) == b"x" * 1000
        store.get("nope")
        store.invalidate(sid)
        store.invalidate(sid)  # nothing there: no delete counted
        after = store.stats()
        delta = [getattr(after, f) - getattr(before, f)
                 for f in ("hits", "misses", "writes", "deletes")]
        assert delta == [1, 1, 1, 1]
        assert after.entries == 0
        store.write("a", b"1")
        store.add("b", b"2")
        assert store.stats().entries == 2 and store.stats().writes - after.writes == 2
        snapshot = store.stats().as_dict()
        assert set(snapshot) == {f.name for f in fields(Stats)}
        assert snapshot["name"] == store.name
        for f in fields(Stats):
            if f.name != "name":
                value = snapshot[f.name]
                assert isinstance(value, (int, float)) and value >= 0, f.name

    def test_check_passes_on_a_healthy_store(self, store: Any) -> None:
        store.write("k", b"v")
        assert store.check() is None

    def test_handles_share_the_store(self, make_store: MakeStore) -> None:
        a, b = make_store(), make_store()
        a.write("k", b"from a")
        assert b.read("k") == b"from a"
        assert b.add("k", b"from b") is False
        b.invalidate("k")
        assert "k" not in a and len(a) == 0

    def test_close_then_use_raises_store_closed(self, make_store: MakeStore) -> None:
        h = make_store()
        h.write("k", b"v")
        h.close()
        h.close()  # idempotent
        for call in (lambda: h.read("k"), lambda: h.write("k", b"w"), lambda: "k" in h,
                     lambda: h.invalidate("k"), lambda: h.replace("k", b"w")):
            with pytest.raises(StoreClosed) as info:
                call()
            assert isinstance(info.value, ValueError)
        with make_store() as again:
            assert again.read("k") == b"v"  # closing a handle keeps the store
        with pytest.raises(StoreClosed):
            again.read("k")  # the with block closed it
        assert make_store().read("k") == b"v"

    # ------------------------------------------------------------------ concurrency
    def test_add_is_atomic_between_handles_in_threads(self, make_store: MakeStore) -> None:
        handles = [make_store() for _ in range(6)]
        for round_ in range(8):
            sid = f"race-{round_}"
            won = in_threads([functools.partial(h.add, sid, b"%d" % k)
                              for k, h in enumerate(handles)])
            assert won.count(True) == 1, won
            assert handles[0].read(sid) == b"%d" % won.index(True)

    def test_replace_never_revives_a_session_invalidated_concurrently(self, make_store: MakeStore
                                                                      ) -> None:
        # Replaces from several handles race one invalidate of a live session. In any order
        # the invalidate finds the session live and the replaces after it find none, so the
        # session always ends deleted; a replace that checked, then wrote, could revive it.
        handles = [make_store() for _ in range(5)]
        for round_ in range(10):
            sid = f"race-{round_}"
            handles[0].write(sid, b"live")
            calls: List[Callable[[], bool]] = [functools.partial(h.replace, sid, b"%d" % k)
                                               for k, h in enumerate(handles[1:])]
            calls.append(functools.partial(handles[0].invalidate, sid))
            *replaced, invalidated = in_threads(calls)
            assert invalidated is True, replaced
            assert sid not in handles[0] and handles[1].get(sid) is None, replaced
        assert len(handles[0]) == 0

    def test_compare_and_set_loses_no_update_between_handles(self, make_store: MakeStore
                                                             ) -> None:
        handles = [make_store() for _ in range(4)]
        handles[0].write("counter", b"0")
        in_threads([functools.partial(increment, h, "counter", 15) for h in handles])
        assert handles[0].read("counter") == b"60"


class SharedHandleContract:
    """For stores whose one handle serves many threads at once (the synchronous ones)."""

    def test_threads_share_one_handle(self, store: Any) -> None:
        for round_ in range(5):
            sid = f"race-{round_}"
            won = in_threads([functools.partial(store.add, sid, b"%d" % k) for k in range(6)])
            assert won.count(True) == 1 and store.read(sid) == b"%d" % won.index(True)
        store.write("counter", b"0")
        in_threads([lambda: increment(store, "counter", 15) for _ in range(4)])
        assert store.read("counter") == b"60"

    def test_callbacks_may_use_the_store(self, store: Any) -> None:
        sid, other = store.new_id(), store.new_id()
        store.write(sid, b"x")
        # A callback that uses the store itself would deadlock if a lock were held.
        store.write(other, lambda s: s.write(store.read(sid) + b"y"))
        assert store.read(other, lambda s: s.read() + store.read(sid)) == b"xyx"


class AsyncContract:
    """For async stores: concurrent calls on ONE handle, from one event loop."""

    def test_gathered_calls_on_one_handle(self, store: Blocking) -> None:
        inner = store.inner

        async def increments(times: int) -> None:
            for _ in range(times):
                for _ in range(CAS_TRIES):
                    value, version = await inner.read_versioned("counter")
                    try:
                        await inner.write("counter", b"%d" % (int(value) + 1), expect=version)
                        break
                    except VersionConflict:
                        await asyncio.sleep(0)
                else:
                    raise AssertionError(f"no increment got through in {CAS_TRIES} tries")

        async def main() -> Tuple[List[bool], List[bool]]:
            await inner.write("counter", b"0")
            await asyncio.gather(*(increments(10) for _ in range(4)))
            won = await asyncio.gather(*(inner.add("race", b"%d" % k) for k in range(8)))
            await inner.write("live", b"v")
            *_, invalidated = await asyncio.gather(
                *(inner.replace("live", b"%d" % k) for k in range(4)), inner.invalidate("live"))
            return list(won), [invalidated, await inner.contains("live")]

        won, (invalidated, revived) = store.run(main())
        assert won.count(True) == 1 and store.read("race") == b"%d" % won.index(True)
        assert store.read("counter") == b"40"
        assert invalidated is True and revived is False
