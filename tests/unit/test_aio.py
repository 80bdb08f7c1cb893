"""AsyncSessionStorage: whole operations in threads; the event loop never waits on the lock."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Callable, Iterator, List, Tuple

import pytest

from shmsession import SessionNotFound, SessionStorage, VersionConflict
from shmsession.aio import AsyncSessionStorage


def run(coro: "asyncio.Future[object] | object") -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_every_method(name: str) -> None:
    async def main() -> None:
        store = await AsyncSessionStorage.open(name, size=1 << 20)
        async with store:
            sid = store.new_id()
            v1 = await store.write(sid, b"one")
            assert await store.read(sid) == b"one"
            assert await store.read(sid, lambda s: s.read().upper()) == b"ONE"
            assert await store.read_versioned(sid) == (b"one", v1)
            await store.write(sid, b"two", expect=v1)
            with pytest.raises(VersionConflict):
                await store.write(sid, b"three", expect=v1)
            assert await store.get("nobody", b"d") == b"d"
            assert await store.add(sid, b"x") is False
            assert await store.touch(sid) is True
            assert await store.contains(sid) and await store.len() == 1
            assert (await store.stats()).writes == 2
            await store.check()
            assert await store.invalidate(sid) is True
            with pytest.raises(SessionNotFound):
                await store.read(sid)
            await store.write(sid, lambda s: s.write(b"streamed"))
            assert await store.read(sid) == b"streamed"
            await store.clear()
            assert await store.len() == 0
            await store.unlink()
        assert not SessionStorage.exists(name)

    run(main())


def test_wrapping_an_open_store(name: str) -> None:
    with SessionStorage(name, size=1 << 20) as sync:
        sync.write("k", b"v")
        store = AsyncSessionStorage(sync)
        assert run(store.read("k")) == b"v"
        with pytest.raises(TypeError):
            AsyncSessionStorage(sync, size=1 << 20)
        sync.unlink()


@pytest.fixture
def lock_holder(name: str) -> Iterator[Tuple[SessionStorage, Callable[[float], int]]]:
    """A store, and a function that forks a child holding its lock for some seconds."""
    store = SessionStorage(name, size=1 << 20)
    pids: List[int] = []

    def hold(seconds: float) -> int:
        # Internals: the child holds the store's own lock (``_access``/``_lock``), which no
        # public call keeps held while the loop's calls run.
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                store._access.acquire()
                os.write(w, b"held")
                time.sleep(seconds)
                store._lock.release()
            finally:
                os._exit(0)
        os.close(w)
        assert os.read(r, 4) == b"held"
        os.close(r)
        pids.append(pid)
        return pid

    try:
        yield store, hold
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass  # already reaped by the test
        store.close()


def test_the_event_loop_keeps_ticking_while_another_process_holds_the_lock(
    lock_holder: Tuple[SessionStorage, Callable[[float], int]],
) -> None:
    sync, hold = lock_holder
    sync.write("k", b"v")
    store = AsyncSessionStorage(sync)

    async def main() -> Tuple[float, float, int]:
        lags: List[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                t0 = time.monotonic()
                await asyncio.sleep(0.005)
                lags.append(time.monotonic() - t0 - 0.005)

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        hold(0.4)
        t0 = time.monotonic()
        await store.write("k", b"w")  # (a read takes no lock on x86: it would not wait)
        waited = time.monotonic() - t0
        stop.set()
        await tick
        return waited, max(lags), len(lags)

    waited, worst_lag, ticks = run(main())  # type: ignore[misc]
    assert waited >= 0.25, "the write did not wait for the other process's lock"
    assert ticks >= 20, "the loop did not tick while the write waited"
    assert worst_lag < 0.1, f"the event loop stalled for {worst_lag * 1000:.0f} ms"


def test_a_cancelled_call_leaves_the_store_consistent_and_no_lock_held(
    lock_holder: Tuple[SessionStorage, Callable[[float], int]],
) -> None:
    sync, hold = lock_holder
    sync.write("k", b"old")
    sync.write("other", b"untouched")
    store = AsyncSessionStorage(sync)

    async def main() -> None:
        pid = hold(0.3)
        task = asyncio.create_task(store.write("k", b"new" * 1000))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.get_running_loop().run_in_executor(None, os.waitpid, pid, 0)
        # The write was handed to a thread whole: it completes once the lock frees.
        deadline = time.monotonic() + 5
        while await store.get("k") != b"new" * 1000 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        await store.write("after", b"x")  # nothing is left holding the lock
        assert time.monotonic() - t0 < 1

    run(main())
    sync.check()
    assert sync.read("k") == b"new" * 1000
    assert sync.read("other") == b"untouched"


def test_many_concurrent_compare_and_set_increments_lose_nothing(name: str) -> None:
    async def main() -> int:
        async with AsyncSessionStorage(name, size=1 << 20) as store:
            await store.write("n", b"0")

            async def bump(times: int) -> None:
                for _ in range(times):
                    while True:
                        value, version = await store.read_versioned("n")
                        try:
                            await store.write("n", str(int(value) + 1).encode(), expect=version)
                            break
                        except VersionConflict:
                            continue

            await asyncio.gather(*(bump(25) for _ in range(8)))
            result = int(await store.read("n"))
            await store.unlink()
            return result

    assert run(main()) == 200
