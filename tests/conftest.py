"""Shared fixtures: every test gets its own store name, and nothing is left in /dev/shm;
the private redis-servers (tests/redis_server.py); and ``backend``, which runs a test on a
store in shared memory and on one in Redis."""

from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest

from shmsession import SessionStorage, Store
from shmsession._build import BUILD
from shmsession._segment import SHM_DIR
from tests._stores import (BACKENDS, TEST_PREFIX, OpenStore, remove_store, shm_leftovers,
                           store_handles)
from tests.redis_server import redis_socket, redis_tls

__all__ = ["redis_socket", "redis_tls"]  # fixtures for every test module


def pytest_report_header() -> str:
    """Which hot path this run tests: ./run test --installed runs the suite on both."""
    return f"shmsession build: {BUILD}"


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
    (the same store on every call; another store, of its own, for each ``suffix``); every
    handle closed and every store deleted after the test (``_stores.store_handles``)."""
    sock = request.getfixturevalue("redis_socket") if backend == "redis" else None
    with store_handles(backend, name, sock) as open_handle:
        yield open_handle


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
