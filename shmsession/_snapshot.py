"""The snapshot file format of ``dump``/``load``: encoding and checking only, no store logic.

::

    header   magic 8s "SHMSNAP\\0" | format I | reserved I | secret 32s | written_at d |
             size Q | max_entries I | max_value_size I          (format 1 ends at written_at)
    record   digest 16s | ttl_left_ns q (-1: never expires) | version Q | length I |
             owner 16s | owned_for_ns q | value        (formats 1 and 2 have no owner fields)
    ...
    trailer  magic 8s "SNAPEND\\0" | records Q | sha256 32s of every byte before the trailer

Sessions are stored under their keyed digests (the store never holds raw ids), so the
snapshot carries the segment's secret: a store loaded from it finds the same ids again. The
file therefore is as sensitive as the sessions themselves; it is written with mode 0600.
Expiry is kept as time left, so a session's lifetime does not grow or shrink while the
store is down; the clock the store uses (CLOCK_MONOTONIC) does not survive a reboot. The
header keeps the dumped store's geometry, so ``load`` can make the same store again; a
snapshot of format 1 has none (``Snapshot.shape`` is None) and still loads. Format 3 keeps
each session's owner digest (zeros: none) and how long it has been the owner's; the records
of one owner come oldest first, so loading them in order rebuilds the owner's list as it
was. Formats 1 and 2 load as sessions without owners.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import BinaryIO, Callable, Iterable, Iterator, NamedTuple, Optional, Tuple

from ._errors import CorruptSnapshot

__all__ = ["Live", "Record", "Shape", "Snapshot", "SnapshotWriter", "open_for_writing",
           "read_snapshot", "still_live", "write_file"]

MAGIC = b"SHMSNAP\x00"
END = b"SNAPEND\x00"
FORMAT = 3  # 2: the header keeps the store's geometry; 3: records keep their owners
HEADERS = {1: struct.Struct("<8sII32sd"), 2: struct.Struct("<8sII32sdQII"),
           3: struct.Struct("<8sII32sdQII")}
HEADER = HEADERS[FORMAT]
RECORDS = {1: struct.Struct("<16sqQI"), 2: struct.Struct("<16sqQI"),
           3: struct.Struct("<16sqQI16sq")}
RECORD = RECORDS[FORMAT]
TRAILER = struct.Struct("<8sQ32s")
NO_OWNER = bytes(16)

Record = Tuple[bytes, int, int, bytes, bytes, int]
"""digest, ttl left in ns (-1: never expires), version, value, owner digest (``NO_OWNER``:
none), ns it has been the owner's"""


class Shape(NamedTuple):
    """The geometry of the store a snapshot was dumped from."""

    size: int
    max_entries: int
    max_value_size: int


class Snapshot(NamedTuple):
    """A snapshot checked whole: what ``read_snapshot`` returns."""

    secret: bytes
    written_at: float
    shape: Optional[Shape]  # None: format 1, which did not keep it
    records: Iterator[Record]


class SnapshotWriter:
    """Writes records to ``out`` and the checksummed trailer on ``close``."""

    def __init__(self, out: BinaryIO, secret: bytes, written_at: float, shape: Shape) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.records = 0
        self._put(HEADER.pack(MAGIC, FORMAT, 0, secret, written_at, *shape))

    def _put(self, data: bytes) -> None:
        self._hash.update(data)
        self._out.write(data)

    def add(self, digest: bytes, ttl_left_ns: int, version: int, value: bytes,
            owner: bytes = NO_OWNER, owned_for_ns: int = 0) -> None:
        self._put(RECORD.pack(digest, ttl_left_ns, version, len(value), owner, owned_for_ns))
        self._put(value)
        self.records += 1

    def close(self) -> None:
        self._out.write(TRAILER.pack(END, self.records, self._hash.digest()))
        self._out.flush()


def write_file(path: str, fill: Callable[[BinaryIO], SnapshotWriter]) -> int:
    """Write a snapshot to ``path``, replacing it atomically (a temporary file beside it,
    fsync, rename; mode 0600): ``fill(out)`` makes a :class:`SnapshotWriter` on ``out`` and
    adds the records. Returns how many it added; leaves no temporary file behind."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open_for_writing(tmp) as out:
            writer = fill(out)
            writer.close()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return writer.records


Live = Tuple[bytes, bytes, int, bytes, int]
"""digest, value, ttl in ns (0: never expires), owner digest, ns it has been the owner's"""


def still_live(records: Iterable[Record], written_at: float, now: float) -> Iterator[Live]:
    """``(digest, value, ttl_ns, owner, owned_for_ns)`` of each record that has time left at
    wall-clock ``now``: a session gets back the time it had left when dumped, less the time
    since, and one that expired meanwhile is dropped (``ttl_ns`` 0: never expires)."""
    elapsed = max(0, int((now - written_at) * 1e9))
    for digest, ttl_left, _, value, owner, owned_for in records:
        if ttl_left >= 0:
            ttl_left -= elapsed
            if ttl_left <= 0:
                continue  # expired while the store was down
        yield digest, value, 0 if ttl_left < 0 else ttl_left, owner, owned_for


def open_for_writing(path: str) -> BinaryIO:
    """Create ``path`` (replacing it) with mode 0600: the snapshot holds every session."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def read_snapshot(
    src: BinaryIO, progress: Optional[Callable[[int, int], None]] = None
) -> Snapshot:
    """Check ``src`` whole, then return what it holds.

    The whole file is verified (length, trailer, sha256) before a single record is handed
    out, so a truncated or altered snapshot is refused before anything is loaded.

    :raises CorruptSnapshot: naming what is wrong.
    """
    data = src.read()
    name = getattr(src, "name", "the snapshot")
    if len(data) < HEADERS[1].size + TRAILER.size or data[:8] != MAGIC:
        raise CorruptSnapshot(f"{name} is not a shmsession snapshot")
    fmt = HEADERS[1].unpack_from(data, 0)[1]
    header = HEADERS.get(fmt)
    if header is None:
        raise CorruptSnapshot(
            f"{name} has snapshot format {fmt}; this shmsession reads formats 1 to {FORMAT}"
        )
    if len(data) < header.size + TRAILER.size:
        raise CorruptSnapshot(f"{name} is truncated (no whole header): refusing to load it")
    fields = header.unpack_from(data, 0)
    secret, written_at = fields[3:5]
    shape = Shape(*fields[5:]) if fmt >= 2 else None
    end, count, digest = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    body = memoryview(data)[: len(data) - TRAILER.size]
    if end != END:
        raise CorruptSnapshot(f"{name} is truncated (no end marker): refusing to load it")
    if hashlib.sha256(body).digest() != digest:
        raise CorruptSnapshot(f"{name} fails its checksum (altered or damaged): refusing to load it")

    # Walk the records once before handing any out: a bad length is refused up front too.
    record = RECORDS[fmt]
    starts = []
    pos = header.size
    for n in range(count):
        if pos + record.size > len(body):
            raise CorruptSnapshot(f"{name}: record {n} runs past the end")
        starts.append(pos)
        pos += record.size + record.unpack_from(body, pos)[3]
    if pos != len(body):
        raise CorruptSnapshot(f"{name}: the records do not fill the file exactly")

    def records() -> Iterator[Record]:
        for n, at in enumerate(starts):
            fields = record.unpack_from(body, at)
            dg, ttl, version, length = fields[:4]
            owner, owned_for = fields[4:] if fmt >= 3 else (NO_OWNER, 0)
            if progress is not None:
                progress(n + 1, count)
            value = bytes(body[at + record.size : at + record.size + length])
            yield dg, ttl, version, value, owner, owned_for

    return Snapshot(secret, written_at, shape, records())
