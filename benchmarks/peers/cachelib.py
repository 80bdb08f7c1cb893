"""cachelib's FileSystemCache (one pickled file per key) in a temp dir, no expiry, no pruning."""

from __future__ import annotations

import os
import shutil

from peers import Handle, Peer


class _Handle:
    def __init__(self, path: str) -> None:
        from cachelib import FileSystemCache

        # threshold=0: never prune (the default 500 would evict most of the keyspace).
        self.cache = FileSystemCache(path, threshold=0, default_timeout=0)

    def get(self, key: str) -> bytes | None:
        value: bytes | None = self.cache.get(key)
        return value

    def set(self, key: str, value: bytes) -> None:
        self.cache.set(key, value)

    def close(self) -> None:
        pass  # FileSystemCache holds no open resource between calls


class CachelibPeer(Peer):
    label = "cachelib-fs"
    dists = ("cachelib",)

    def __init__(self, workdir: str, tag: str) -> None:
        super().__init__(workdir, tag)
        self.count = 0

    @staticmethod
    def unavailable() -> str | None:
        try:
            import cachelib  # noqa: F401
        except ImportError:
            return "the cachelib package does not import (pip install cachelib)"
        return None

    def create(self, nkeys: int, size: int) -> str:
        self.count += 1
        return os.path.join(self.workdir, f"cachelib-{self.count}")

    @classmethod
    def open(cls, name: str) -> Handle:
        return _Handle(name)

    def drop(self, name: str) -> None:
        shutil.rmtree(name, ignore_errors=True)


PEER = CachelibPeer
