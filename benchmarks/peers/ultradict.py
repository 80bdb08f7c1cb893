"""UltraDict: a local dict per process, kept in step through a shared-memory update stream.

Opened with shared_lock=True (needs the ``atomics`` package), the only lock that works between
processes that attach by name. A 32 MiB update stream; when it fills, the writer pickles the
whole dict into a fixed-size full-dump segment and every reader reloads it.
"""

from __future__ import annotations

import contextlib
import secrets

from peers import Handle, Peer

BUFFER_SIZE = 32 * 2**20


class _Handle:
    def __init__(self, name: str, create: bool = False, full_dump_size: int | None = None) -> None:
        from UltraDict import UltraDict

        self.ud = UltraDict(name=name, create=create, buffer_size=BUFFER_SIZE, shared_lock=True,
                            full_dump_size=full_dump_size, auto_unlink=False)

    def get(self, key: str) -> bytes | None:
        try:
            value: bytes = self.ud[key]  # .get() would apply the update stream twice
        except KeyError:
            return None
        return value

    def set(self, key: str, value: bytes) -> None:
        self.ud[key] = value

    def close(self) -> None:
        self.ud.close()


class UltraDictPeer(Peer):
    label = "UltraDict"
    dists = ("UltraDict", "atomics")
    mapped = True
    caveat = ("reads come from a per-process dict; when the 32 MiB update stream fills, a writer "
              "pickles the whole dict and every reader reloads it, which shows in p99 and ops/s")

    def __init__(self, workdir: str, tag: str) -> None:
        super().__init__(workdir, tag)
        self.creators: dict[str, _Handle] = {}

    @staticmethod
    def unavailable() -> str | None:
        try:
            import atomics  # noqa: F401
            import UltraDict  # noqa: F401
        except ImportError as exc:
            return f"UltraDict with shared_lock needs UltraDict and atomics ({exc})"
        return None

    def create(self, nkeys: int, size: int) -> str:
        name = f"{self.tag}{secrets.token_hex(4)}"
        # The creator's handle stays open until drop: it owns the segments.
        self.creators[name] = _Handle(name, create=True,
                                      full_dump_size=int(nkeys * (size + 200) * 1.3) + 2**20)
        return name

    @classmethod
    def open(cls, name: str) -> Handle:
        return _Handle(name)

    def drop(self, name: str) -> None:
        handle = self.creators.pop(name, None)
        if handle is not None:
            with contextlib.suppress(Exception):
                handle.ud.close(unlink=True)

    def cleanup(self) -> None:
        for name in list(self.creators):
            self.drop(name)


PEER = UltraDictPeer
