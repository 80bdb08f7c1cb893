"""Redis through redis-py over a unix socket: a private redis-server, no persistence.

The server is bench_store.py's (``redis_server``): ``--save '' --appendonly no`` in a temp dir.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterable

from peers import Handle, Peer


class _Handle:
    def __init__(self, name: str) -> None:
        import redis

        sock, db = name.rsplit(":", 1)
        self.client = redis.Redis(unix_socket_path=sock, db=int(db))
        self.client.ping()  # connect now, not inside the first timed op
        # Bound methods, no wrapper: the figures are the client's own cost.
        self.get: Callable[[str], bytes | None] = self.client.get  # type: ignore[assignment]
        self.set: Callable[[str, bytes], object] = self.client.set

    def close(self) -> None:
        self.client.close()


class RedisPeer(Peer):
    label = "redis"
    dists = ("redis",)

    def __init__(self, workdir: str, tag: str) -> None:
        from bench_store import redis_server, redis_server_version

        super().__init__(workdir, tag)
        self.stack = contextlib.ExitStack()
        self.sock = self.stack.enter_context(redis_server(tag))
        self.server_version = redis_server_version()
        self.db = 0

    def versions(self) -> str:
        return f"{super().versions()}, redis-server {self.server_version}"

    @staticmethod
    def unavailable() -> str | None:
        if shutil.which("redis-server") is None:
            return "redis-server is not on PATH (apt-get install redis-server)"
        try:
            import redis  # noqa: F401
        except ImportError:
            return "the redis package does not import (pip install redis)"
        return None

    def create(self, nkeys: int, size: int) -> str:
        self.db = (self.db + 1) % 16
        name = f"{self.sock}:{self.db}"
        handle = _Handle(name)
        try:
            handle.client.flushdb()
        finally:
            handle.close()
        return name

    @classmethod
    def open(cls, name: str) -> Handle:
        return _Handle(name)

    def populate(self, name: str, items: Iterable[tuple[str, bytes]]) -> None:
        handle = _Handle(name)
        try:
            pairs = list(items)
            for start in range(0, len(pairs), 1000):
                with handle.client.pipeline(transaction=False) as pipe:
                    for key, value in pairs[start:start + 1000]:
                        pipe.set(key, value)
                    pipe.execute()
            if handle.client.dbsize() != len(pairs):
                raise RuntimeError("redis: the keyspace did not load")
        finally:
            handle.close()

    def drop(self, name: str) -> None:
        handle = _Handle(name)
        try:
            handle.client.flushdb()
        finally:
            handle.close()

    def cleanup(self) -> None:
        self.stack.close()


PEER = RedisPeer
