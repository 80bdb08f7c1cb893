"""diskcache's Cache (SQLite in WAL mode plus files for large values) in a temp dir, defaults."""

from __future__ import annotations

import os
import shutil

from peers import Handle, Peer


class _Handle:
    def __init__(self, path: str) -> None:
        import diskcache

        # size_limit well above the keyspace: culling would turn reads into misses.
        self.cache = diskcache.Cache(path, size_limit=4 * 2**30)
        self.set = self.cache.set

    def get(self, key: str) -> bytes | None:
        value: bytes | None = self.cache.get(key)
        return value

    def close(self) -> None:
        self.cache.close()


class DiskcachePeer(Peer):
    label = "diskcache"
    dists = ("diskcache",)

    def __init__(self, workdir: str, tag: str) -> None:
        super().__init__(workdir, tag)
        self.count = 0

    @staticmethod
    def unavailable() -> str | None:
        try:
            import diskcache  # noqa: F401
        except ImportError:
            return "the diskcache package does not import (pip install diskcache)"
        return None

    def create(self, nkeys: int, size: int) -> str:
        self.count += 1
        return os.path.join(self.workdir, f"diskcache-{self.count}")

    @classmethod
    def open(cls, name: str) -> Handle:
        return _Handle(name)

    def drop(self, name: str) -> None:
        shutil.rmtree(name, ignore_errors=True)


PEER = DiskcachePeer
