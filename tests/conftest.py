"""Shared fixtures: every test gets its own store name, and nothing is left in /dev/shm;
the private redis-servers (tests/redis_server.py); and ``backend``, which runs a test on a
store in shared memory and on one in Redis."""

from __future__ import annotations

import os
import uuid
from typing import Any, Callable, Iterator, List

import pytest

from shmsession import SessionStorage, Store
from shmsession._segment import LOCK_PREFIX, PREFIX, SHM_DIR, lock_path, segment_path
from tests.redis_server import REDIS_SECRET, redis_keys, redis_socket, redis_tls

__all__ = ["redis_socket", "redis_tls"]  # fixtures for every test module

TEST_PREFIX = "t-"
BACKENDS = ["shm", "redis"]
OpenStore = Callable[..., Store]


def shm_leftovers(tag: str = TEST_PREFIX) -> List[str]:
    """Entries in /dev/shm that belong to test stores of this test run (their names carry
    the pid of the pytest process, so a run beside this one does not count)."""
    pid = str(os.getpid())
    return sorted(
        f for f in os.listdir(SHM_DIR)
        for prefix in (PREFIX, LOCK_PREFIX)
        if f.startswith(prefix + tag) and pid in f[len(prefix) :].split("-")
    )


def remove_store(name: str) -> None:
    """Remove a store's segment and lock file whatever state they are in."""
    for path in (segment_path(name), lock_path(name)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


@pytest.fixture
def name() -> Iterator[str]:
    """A fresh store name; its segment and lock file are removed after the test."""
    n = f"{TEST_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        yield n
    finally:
        remove_store(n)


@pytest.fixture
def store(name: str) -> Iterator[SessionStorage]:
    """A small store (4 MiB) with the default options."""
    s = SessionStorage(name, size=4 << 20)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Where the test's sessions live: "shm" (SessionStorage) or "redis" (RedisSessionStorage
    on the session's private redis-server)."""
    return str(request.param)


@pytest.fixture
def open_store(backend: str, name: str, request: pytest.FixtureRequest) -> Iterator[OpenStore]:
    """``open_store(suffix="", **options)``: a new handle on this test's store in ``backend``
    (the same store on every call; another store, of its own, for each ``suffix``). After the
    test every handle is closed and every store deleted; a Redis store must leave no key."""
    handles: List[Store] = []
    suffixes = {""}
    if backend == "redis":
        from shmsession.redis import RedisSessionStorage

        sock = request.getfixturevalue("redis_socket")

        def open_handle(store_name: str, **options: Any) -> Store:
            return RedisSessionStorage(store_name, f"unix://{sock}", secret=REDIS_SECRET,
                                       **options)
    else:
        def open_handle(store_name: str, **options: Any) -> Store:
            return SessionStorage(store_name, size=4 << 20, **options)

    def make(suffix: str = "", **options: Any) -> Store:
        suffixes.add(suffix)
        handles.append(open_handle(name + suffix, **options))
        return handles[-1]

    try:
        yield make
    finally:
        for handle in handles:
            handle.close()
        for suffix in sorted(suffixes):
            if backend == "shm":
                remove_store(name + suffix)
                continue
            with open_handle(name + suffix) as last:
                prefix = last.prefix  # type: ignore[attr-defined]
                last.unlink()  # its sessions and its counters
            assert redis_keys(sock, prefix) == [], prefix


@pytest.fixture
def any_store(open_store: OpenStore) -> Store:
    """A handle on this test's store, in shared memory or in Redis (see ``backend``)."""
    return open_store()


@pytest.fixture(autouse=True, scope="session")
def _nothing_left_behind() -> Iterator[None]:
    before = set(shm_leftovers())
    yield
    left = set(shm_leftovers()) - before
    assert not left, f"tests left these in {SHM_DIR}: {sorted(left)}"
