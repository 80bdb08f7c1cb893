"""LMDB (py-lmdb): a memory-mapped B+tree file, one read or write transaction per op.

Opened with sync=False and metasync=False: nothing is fsynced, as nothing is in a session
store in memory (shmsession, Redis without persistence). A write still commits a transaction.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable

from peers import Handle, Peer

MAP_SIZE = 8 * 2**30  # address space only; the file grows with the data


class _Handle:
    def __init__(self, path: str) -> None:
        import lmdb

        self.env = lmdb.open(path, map_size=MAP_SIZE, sync=False, metasync=False,
                             max_readers=256, readahead=False)

    def get(self, key: str) -> bytes | None:
        with self.env.begin() as txn:
            value: bytes | None = txn.get(key.encode())
            return value

    def set(self, key: str, value: bytes) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(key.encode(), value)

    def close(self) -> None:
        self.env.close()


class LmdbPeer(Peer):
    label = "lmdb"
    dists = ("lmdb",)
    mapped = True

    def __init__(self, workdir: str, tag: str) -> None:
        super().__init__(workdir, tag)
        self.count = 0

    @staticmethod
    def unavailable() -> str | None:
        try:
            import lmdb  # noqa: F401
        except ImportError:
            return "the lmdb package does not import (pip install lmdb)"
        return None

    def create(self, nkeys: int, size: int) -> str:
        self.count += 1
        path = os.path.join(self.workdir, f"lmdb-{self.count}")
        os.mkdir(path)
        return path

    @classmethod
    def open(cls, name: str) -> Handle:
        return _Handle(name)

    def populate(self, name: str, items: Iterable[tuple[str, bytes]]) -> None:
        handle = _Handle(name)
        try:
            with handle.env.begin(write=True) as txn:
                for key, value in items:
                    txn.put(key.encode(), value)
        finally:
            handle.close()

    def drop(self, name: str) -> None:
        shutil.rmtree(name, ignore_errors=True)


PEER = LmdbPeer
