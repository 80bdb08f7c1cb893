"""The stores that bench_peers.py puts beside shmsession, each behind one small interface.

A peer has two halves. The parent side (a ``Peer`` subclass) starts what the store needs (a
server, a temp dir), creates and fills a store, and removes everything in ``cleanup``. The
child side is ``Peer.open(name)``: a worker process calls it after fork to get a handle of
its own with ``get``, ``set`` and ``close``. ``name`` is a plain string, so it says
everything a child needs (a path, a socket, a db number).

Each module here imports its third-party package lazily. ``unavailable()`` says why a peer
cannot run, so a missing package costs one line in the report, not the run.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import time
from collections.abc import Iterable
from typing import Protocol

# Run order and table order. The key is the module name under peers/.
PEERS = ("shmsession", "shmsession_pure", "lmdb", "redis", "memcached", "diskcache", "cachelib",
         "manager", "shared_memory_dict", "ultradict")
POPULATE_TIMEOUT = 120.0  # seconds to fill one store; a peer slower than that is dropped


class Handle(Protocol):
    def get(self, key: str) -> bytes | None: ...
    def set(self, key: str, value: bytes) -> object: ...  # some clients return a flag
    def close(self) -> None: ...


class Peer:
    """Parent side of one kind of store. Subclasses override what they need."""

    label = "?"
    dists: tuple[str, ...] = ()  # distributions whose versions go in the report header
    # Whether a fresh handle maps the data into the process (a page fault per page on first
    # touch): workers then read the whole keyspace once, untimed, as bench_store.py does.
    mapped = False
    caveat = ""  # one line for the report's notes: what a reader must know about the figures

    def __init__(self, workdir: str, tag: str) -> None:
        self.workdir = workdir
        self.tag = tag

    @staticmethod
    def unavailable() -> str | None:
        """Why this peer cannot run here, or None."""
        return None

    def versions(self) -> str:
        out = []
        for dist in self.dists:
            try:
                out.append(f"{dist} {importlib.metadata.version(dist)}")
            except importlib.metadata.PackageNotFoundError:
                out.append(f"{dist} ?")
        return ", ".join(out)

    def create(self, nkeys: int, size: int) -> str:
        """Make a new empty store with room for ``nkeys`` values of ``size`` bytes."""
        raise NotImplementedError

    @classmethod
    def open(cls, name: str) -> Handle:
        """In a worker, after fork: a handle of its own on the store ``name``."""
        raise NotImplementedError

    def populate(self, name: str, items: Iterable[tuple[str, bytes]]) -> None:
        """Write every item through a handle of the parent's, read it back, close it."""
        deadline = time.monotonic() + POPULATE_TIMEOUT
        handle = self.open(name)
        try:
            kept = []
            for key, value in items:
                handle.set(key, value)
                kept.append((key, value))
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.label}: filling took over {POPULATE_TIMEOUT:.0f} s")
            for key, value in kept[:: max(1, len(kept) // 1000)]:
                if handle.get(key) != value:
                    raise RuntimeError(f"{self.label}: read-back of {key} differs")
        finally:
            handle.close()

    def drop(self, name: str) -> None:
        """Remove the store ``name`` (and the data it holds)."""

    def cleanup(self) -> None:
        """Stop any server and remove everything this peer made. Safe to call twice."""


def load(key: str) -> type[Peer]:
    module = importlib.import_module(f"peers.{key}")
    cls: type[Peer] = module.PEER
    return cls
