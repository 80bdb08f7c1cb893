"""A dict in a multiprocessing manager process, reached over a unix socket by every worker.

Each worker connects to the manager by address and authkey after fork and asks for the dict
by name (``get_dict``), so it holds a proxy of its own, not one inherited from the parent.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterable
from multiprocessing.managers import BaseManager, DictProxy
from typing import Any

from peers import Handle, Peer

_DICTS: dict[str, dict[str, bytes]] = {}  # lives in the manager process


def _get_dict(name: str) -> dict[str, bytes]:
    return _DICTS.setdefault(name, {})


def _drop_dict(name: str) -> None:
    _DICTS.pop(name, None)


def _ignore_sigint() -> None:
    # Ctrl-C goes to the whole process group; the parent shuts the manager down in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Manager(BaseManager):
    pass


_Manager.register("get_dict", callable=_get_dict, proxytype=DictProxy)
_Manager.register("drop_dict", callable=_drop_dict)


class _Handle:
    def __init__(self, name: str) -> None:
        address, key, dict_name = name.split("\0")
        self.manager = _Manager(address=address, authkey=bytes.fromhex(key))
        self.manager.connect()
        self.dict: Any = self.manager.get_dict(dict_name)  # type: ignore[attr-defined]
        self.get = self.dict.get
        self.set = self.dict.__setitem__

    def close(self) -> None:
        del self.dict, self.get, self.set


class ManagerPeer(Peer):
    label = "mp-manager-dict"

    def __init__(self, workdir: str, tag: str) -> None:
        super().__init__(workdir, tag)
        self.address = os.path.join(workdir, "manager.sock")
        self.authkey = secrets.token_bytes(16)
        self.manager: _Manager | None = _Manager(address=self.address, authkey=self.authkey)
        self.manager.start(initializer=_ignore_sigint)
        self.count = 0

    def versions(self) -> str:
        return "multiprocessing (stdlib)"

    def create(self, nkeys: int, size: int) -> str:
        self.count += 1
        return f"{self.address}\0{self.authkey.hex()}\0d{self.count}"

    @classmethod
    def open(cls, name: str) -> Handle:
        return _Handle(name)

    def populate(self, name: str, items: Iterable[tuple[str, bytes]]) -> None:
        handle = _Handle(name)
        try:
            handle.dict.update(dict(items))
        finally:
            handle.close()

    def drop(self, name: str) -> None:
        if self.manager is not None:
            self.manager.drop_dict(name.split("\0")[2])  # type: ignore[attr-defined]

    def cleanup(self) -> None:
        if self.manager is not None:
            self.manager.shutdown()
            self.manager = None


PEER = ManagerPeer
