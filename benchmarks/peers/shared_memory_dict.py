"""shared-memory-dict: one pickled dict in a fixed-size segment, read whole on every get.

Every get unpickles the whole dict and every set pickles it back, so its cost grows with the
keyspace; its writes take no cross-process lock unless SHARED_MEMORY_USE_LOCK=1 is set before
import (and that lock only works between processes forked after the import), so concurrent
writers can lose updates. It is measured as users would call it.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterable
from typing import Any

from peers import Handle, Peer


def _untrack(shm: Any) -> None:
    # Before Python 3.13, attaching registers the segment with the resource tracker, which
    # would then warn about (and unlink) it at exit; the parent unlinks it in ``drop``.
    from multiprocessing import resource_tracker

    with contextlib.suppress(Exception):
        resource_tracker.unregister(shm._name, "shared_memory")


class _Handle:
    def __init__(self, name: str) -> None:
        from shared_memory_dict import SharedMemoryDict

        seg, size = name.rsplit(":", 1)
        self.smd = SharedMemoryDict(name=seg, size=int(size))
        _untrack(self.smd.shm)
        self.get = self.smd.get

    def set(self, key: str, value: bytes) -> None:
        self.smd[key] = value

    def close(self) -> None:
        self.smd.cleanup()


class SharedMemoryDictPeer(Peer):
    label = "shared-memory-dict"
    dists = ("shared-memory-dict",)
    mapped = True
    caveat = ("its writes take no lock between processes (unless SHARED_MEMORY_USE_LOCK=1 before "
              "import, and then only across fork): concurrent writers can lose updates or leave "
              "a torn pickle that fails to load; every op (un)pickles the whole dict")

    def __init__(self, workdir: str, tag: str) -> None:
        super().__init__(workdir, tag)
        self.names: list[str] = []

    @staticmethod
    def unavailable() -> str | None:
        try:
            import shared_memory_dict  # noqa: F401
        except ImportError:
            return "the shared-memory-dict package does not import (pip install shared-memory-dict)"
        return None

    def create(self, nkeys: int, size: int) -> str:
        name = f"{self.tag}{secrets.token_hex(4)}:{int(nkeys * (size + 128) * 1.25) + 2**20}"
        self.names.append(name)
        return name

    @classmethod
    def open(cls, name: str) -> Handle:
        return _Handle(name)

    def populate(self, name: str, items: Iterable[tuple[str, bytes]]) -> None:
        handle = _Handle(name)
        try:
            handle.smd.update(dict(items))  # one pickle, not one per key
        finally:
            handle.close()

    def drop(self, name: str) -> None:
        from multiprocessing import shared_memory

        with contextlib.suppress(FileNotFoundError):
            shm = shared_memory.SharedMemory(name="sm_" + name.rsplit(":", 1)[0])
            shm.close()
            shm.unlink()
        if name in self.names:
            self.names.remove(name)

    def cleanup(self) -> None:
        for name in list(self.names):
            self.drop(name)


PEER = SharedMemoryDictPeer
