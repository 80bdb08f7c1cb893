"""Throwaway baseline: the simplest shared-memory hash table worth comparing shmsession against.

One posix_ipc segment, mmapped once per handle. Layout: a 64-byte header, then ``nslots``
fixed 64-byte slots (open addressing, linear probing, slot picked by a keyed blake2b digest of
the id), then a bump heap for the value bytes. Every get/set holds ``fcntl.flock(LOCK_EX)`` on
the segment's own descriptor, so each process must open its own handle (flock locks belong to
the open file description, which a fork would share).

Deliberately missing: deletion, expiry, eviction, reuse of heap space a value outgrew, and any
crash-safety. It is what a store costs with none of that, not something to ship.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from hashlib import blake2b

import posix_ipc

_MAGIC = b"BASELN01"
_HEADER = struct.Struct("<8s16sQQQ")  # magic, hash key, nslots, heap start, heap top
_HEADER_SIZE = 64
_SLOT = struct.Struct("<16sQII")  # id digest, value offset, value length, value capacity
_SLOT_SIZE = 64
_EMPTY = bytes(16)  # an all-zero digest marks a free slot; a real one is 1 in 2**128


class BaselineTable:
    """A dict-like ``bytes`` store in a POSIX shared-memory segment; ``get``/``set`` only."""

    def __init__(self, name: str, *, create: bool = False, size: int = 256 * 2**20,
                 nslots: int = 32768) -> None:
        if nslots <= 0 or nslots & (nslots - 1):
            raise ValueError("nslots must be a power of two")
        heap = _HEADER_SIZE + nslots * _SLOT_SIZE
        if create and heap >= size:
            raise ValueError("segment too small for its slots")
        self.name = name
        if create:
            self._shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
        else:
            self._shm = posix_ipc.SharedMemory(name)
        self._fd: int = self._shm.fd  # kept open: it is the lock
        self._mm = mmap.mmap(self._fd, self._shm.size)
        if create:
            _HEADER.pack_into(self._mm, 0, _MAGIC, os.urandom(16), nslots, heap, heap)
        magic, key, nslots, _, _ = _HEADER.unpack_from(self._mm, 0)
        if magic != _MAGIC:
            raise ValueError(f"{name} is not a baseline table")
        self._nslots: int = nslots
        self._mask = nslots - 1
        # Copying a primed hasher skips blake2b's per-call key setup (about a third of its cost).
        self._hasher = blake2b(key=key, digest_size=16)

    def _digest(self, sid: str) -> bytes:
        # Keyed so that ids chosen by clients cannot be aimed at one probe chain.
        h = self._hasher.copy()
        h.update(sid.encode())
        return h.digest()

    def _probe(self, digest: bytes) -> int:
        """Offset of the slot holding ``digest``, or of the free slot where it would go."""
        mm = self._mm
        i = int.from_bytes(digest[:8], "little") & self._mask
        for _ in range(self._nslots):
            pos = _HEADER_SIZE + i * _SLOT_SIZE
            key = mm[pos:pos + 16]
            if key == digest or key == _EMPTY:
                return pos
            i = (i + 1) & self._mask
        raise MemoryError("baseline table: no free slot")

    def get(self, sid: str) -> bytes:
        """The value stored under ``sid``; ``KeyError`` when there is none."""
        digest = self._digest(sid)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            key, off, length, _ = _SLOT.unpack_from(self._mm, self._probe(digest))
            if key != digest:
                raise KeyError(sid)
            return self._mm[off:off + length]
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def set(self, sid: str, value: bytes) -> None:
        """Store ``value`` under ``sid``, in place when it fits the space the id already has."""
        digest = self._digest(sid)
        n = len(value)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            mm = self._mm
            pos = self._probe(digest)
            key, off, _, cap = _SLOT.unpack_from(mm, pos)
            if key != digest or cap < n:
                magic, hkey, nslots, heap, top = _HEADER.unpack_from(mm, 0)
                if top + n > len(mm):
                    raise MemoryError("baseline table: heap exhausted")
                off, cap = top, n
                _HEADER.pack_into(mm, 0, magic, hkey, nslots, heap, top + n)
            mm[off:off + n] = value
            _SLOT.pack_into(mm, pos, digest, off, n, cap)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Detach this handle; the segment stays."""
        self._mm.close()
        self._shm.close_fd()

    def unlink(self) -> None:
        """Remove the segment from the system (handles still attached keep their mapping)."""
        posix_ipc.unlink_shared_memory(self.name)
