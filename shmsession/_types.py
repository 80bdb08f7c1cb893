"""The public types: what every store returns (``Stats``, ``SessionInfo``) and what every
store is (``Store``, ``AsyncStore``). No logic.

``SessionStorage`` and ``RedisSessionStorage`` meet ``Store``; ``AsyncSessionStorage`` and
``AsyncRedisSessionStorage`` meet ``AsyncStore`` (mypy checks all four). The adapters accept
a store by these protocols, so any backend with the same calls (and the same atomicity of
``add`` and ``replace``) fits them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Protocol, Tuple, TypeVar, Union, overload

from ._rules import BytesLike, Provider

__all__ = ["AsyncStore", "SessionInfo", "Stats", "Store"]

T = TypeVar("T")


@dataclass(frozen=True)
class Stats:
    """A snapshot of a store's figures (``SessionStorage.stats()``).

    ``entries`` counts sessions not yet reclaimed, expired ones included; the counters
    (hits ... expirations, lock waits, room_*) are advisory and count since the segment was
    made. ``fragmentation`` is ``1 - largest_free / bytes_free`` (0 when nothing is free):
    how much of the free space is out of reach of the largest value it could take.

    The ``room_*`` counters measure what a full store in evict mode does for a value no free
    block can take: ``room_writes`` such writes, ``room_evictions`` the sessions they evicted
    (also counted in ``evictions``/``expirations``) to clear one run of adjacent blocks, and
    ``room_max_evictions`` the most one write evicted (at most one per 32 bytes of value).
    """

    name: str
    size: int
    entries: int
    max_entries: int
    table_slots: int
    heap_size: int
    bytes_used: int
    bytes_free: int
    largest_free: int
    hits: int
    misses: int
    writes: int
    deletes: int
    evictions: int
    expirations: int
    lock_waits: int
    lock_wait_seconds: float
    room_writes: int
    room_evictions: int
    room_max_evictions: int
    fragmentation: float

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SessionInfo:
    """What ``SessionStorage.sessions()`` tells of one session (never its id)."""

    digest: str  #: hex of the keyed digest the table is indexed by
    size: int  #: bytes of value
    age: float  #: seconds since it was created
    ttl: Optional[float]  #: seconds left, None when it never expires
    version: int  #: the version ``write`` returned (``read_versioned`` gives it too)


class Store(Protocol):
    """A session store: the calls of :class:`~shmsession.SessionStorage` (see there for what
    each does). ``add`` and ``replace`` must be atomic: saves rely on them to keep a logout."""

    @property
    def name(self) -> str: ...

    def new_id(self) -> str: ...

    @overload
    def read(self, sid: str) -> bytes: ...

    @overload
    def read(self, sid: str, consumer: Callable[[BinaryIO], T]) -> T: ...

    def read_versioned(self, sid: str) -> Tuple[bytes, int]: ...

    def get(self, sid: str, default: Optional[T] = None) -> Union[bytes, T, None]: ...

    def write(self, sid: str, value: Union[BytesLike, Provider], ttl: Optional[float] = None,
              *, expect: Optional[int] = None, owner: Optional[str] = None) -> int: ...

    def add(self, sid: str, value: BytesLike, ttl: Optional[float] = None, *,
            owner: Optional[str] = None) -> bool: ...

    def replace(self, sid: str, value: BytesLike, ttl: Optional[float] = None, *,
                owner: Optional[str] = None) -> bool: ...

    def invalidate(self, sid: str) -> bool: ...

    def sessions_of(self, owner: str) -> List[SessionInfo]: ...

    def invalidate_owner(self, owner: str, *, keep: Optional[str] = None,
                         keep_digest: Optional[str] = None) -> int: ...

    def invalidate_digest(self, digest: str) -> bool: ...

    def touch(self, sid: str, ttl: Optional[float] = None) -> bool: ...

    def __contains__(self, sid: object) -> bool: ...

    def __len__(self) -> int: ...

    def clear(self) -> None: ...

    def stats(self) -> Stats: ...

    def check(self) -> None: ...

    def close(self) -> None: ...

    def unlink(self) -> None: ...


class AsyncStore(Protocol):
    """A session store whose calls are coroutines (``in`` and ``len`` are ``contains()`` and
    ``len()``): :class:`~shmsession.aio.AsyncSessionStorage`'s."""

    @property
    def name(self) -> str: ...

    def new_id(self) -> str: ...

    async def read(self, sid: str,
                   consumer: Optional[Callable[[BinaryIO], T]] = None) -> Union[bytes, T]: ...

    async def read_versioned(self, sid: str) -> Tuple[bytes, int]: ...

    async def get(self, sid: str, default: Optional[T] = None) -> Union[bytes, T, None]: ...

    async def write(self, sid: str, value: Union[BytesLike, Provider],
                    ttl: Optional[float] = None, *, expect: Optional[int] = None,
                    owner: Optional[str] = None) -> int: ...

    async def add(self, sid: str, value: BytesLike, ttl: Optional[float] = None, *,
                  owner: Optional[str] = None) -> bool: ...

    async def replace(self, sid: str, value: BytesLike, ttl: Optional[float] = None, *,
                      owner: Optional[str] = None) -> bool: ...

    async def invalidate(self, sid: str) -> bool: ...

    async def sessions_of(self, owner: str) -> List[SessionInfo]: ...

    async def invalidate_owner(self, owner: str, *, keep: Optional[str] = None,
                               keep_digest: Optional[str] = None) -> int: ...

    async def invalidate_digest(self, digest: str) -> bool: ...

    async def touch(self, sid: str, ttl: Optional[float] = None) -> bool: ...

    async def contains(self, sid: str) -> bool: ...

    async def len(self) -> int: ...

    async def clear(self) -> None: ...

    async def stats(self) -> Stats: ...

    async def check(self) -> None: ...

    async def close(self) -> None: ...

    async def unlink(self) -> None: ...
