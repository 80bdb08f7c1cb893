"""shmsession's SessionStorage, opened by name in every process."""

from __future__ import annotations

import secrets
from typing import Any

from peers import Handle, Peer

MIB = 2**20


class _Handle:
    def __init__(self, name: str, options: dict[str, Any]) -> None:
        from shmsession import SessionStorage

        self.store = SessionStorage(name, **options)
        self.get = self.store.get  # None on a miss
        self.set = self.store.write

    def close(self) -> None:
        self.store.close()


def _options(name: str) -> tuple[str, dict[str, Any]]:
    seg, size, entries = name.rsplit(":", 2)
    # "raise" rather than evicting: a store too small for the keyspace fails loudly.
    return seg, {"size": int(size), "max_entries": int(entries), "when_full": "raise"}


class ShmsessionPeer(Peer):
    label = "shmsession"
    dists = ("shmsession", "posix_ipc")
    mapped = True
    # Put every handle on the pure-Python path after it is opened (``store._hot = None``;
    # every fast path in store.py is guarded by ``if hot is not None``): the path every call
    # of the pure build takes, so one run can hold both builds (peers/shmsession_pure.py).
    pure = False

    def __init__(self, workdir: str, tag: str) -> None:
        super().__init__(workdir, tag)
        self.names: list[str] = []

    @staticmethod
    def unavailable() -> str | None:
        try:
            import shmsession  # noqa: F401
        except ImportError as exc:
            return f"shmsession does not import ({exc})"
        return None

    def create(self, nkeys: int, size: int) -> str:
        # 256 MiB holds 10,000 x 16 KiB with headroom; scale from there.
        seg_size = max(64 * MIB, -(-int(nkeys * (size + 512) * 1.55) // MIB) * MIB)
        name = f"{self.tag}{secrets.token_hex(4)}:{seg_size}:{max(1024, 2 * nkeys)}"
        self.names.append(name)
        return name

    @classmethod
    def open(cls, name: str) -> Handle:
        seg, options = _options(name)
        handle = _Handle(seg, options)
        if cls.pure:
            handle.store._hot = None
        return handle

    def drop(self, name: str) -> None:
        from shmsession import SessionStorage

        SessionStorage.unlink_name(_options(name)[0])
        if name in self.names:
            self.names.remove(name)

    def cleanup(self) -> None:
        for name in list(self.names):
            self.drop(name)


PEER = ShmsessionPeer
