"""Shared fixtures: every test gets its own store name, and nothing is left in /dev/shm."""

from __future__ import annotations

import os
import uuid
from typing import Iterator, List

import pytest

from shmsession import SessionStorage
from shmsession._segment import LOCK_PREFIX, PREFIX, SHM_DIR, lock_path, segment_path

TEST_PREFIX = "t-"


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


@pytest.fixture(autouse=True, scope="session")
def _nothing_left_behind() -> Iterator[None]:
    before = set(shm_leftovers())
    yield
    left = set(shm_leftovers()) - before
    assert not left, f"tests left these in {SHM_DIR}: {sorted(left)}"
