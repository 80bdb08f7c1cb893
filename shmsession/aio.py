"""``AsyncSessionStorage``: the store's methods as coroutines, each offloaded to a thread.

Async wraps sync; it re-implements nothing. Every call is one whole operation of the sync
store -- take the lock, copy, release -- inside one thread hop (``_run``), so the lock is
never held across an ``await`` and the event loop never blocks on it.

Cancellation: a cancelled call stops waiting for its result at once. The operation itself
was handed to a thread whole, so it completes, or raises, exactly as the sync call would;
it is never left half done, and no lock stays held.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, List, Optional, Tuple, TypeVar, Union

from ._rules import BytesLike, Provider
from ._types import AsyncStore, SessionInfo, Stats, Store
from .store import SessionStorage

__all__ = ["AsyncSessionStorage"]

T = TypeVar("T")


class AsyncSessionStorage:
    """The async face of :class:`SessionStorage`.

    ``AsyncSessionStorage(store)`` wraps a store you opened (a :class:`SessionStorage`, or any
    object with its methods, such as the Redis store); ``AsyncSessionStorage(name,
    **options)`` opens one (opening takes a file lock, so inside a running event loop
    prefer ``await AsyncSessionStorage.open(name, **options)``). ``executor`` picks the
    threads (default: the loop's default executor).
    """

    def __init__(
        self,
        store: Union[str, Store],
        *,
        executor: Optional[Executor] = None,
        **options: Any,
    ) -> None:
        #: The store whose methods run in the threads (the one given, or the one opened).
        self.sync: Store
        if isinstance(store, str):
            self.sync = SessionStorage(store, **options)
        else:
            if options:
                raise TypeError("options go to SessionStorage(...) when given a name, not a store")
            self.sync = store
        self._executor = executor

    @classmethod
    async def open(
        cls, name: str, *, executor: Optional[Executor] = None, **options: Any
    ) -> "AsyncSessionStorage":
        """Open (create or attach) store ``name`` without blocking the event loop."""
        loop = asyncio.get_running_loop()
        store = await loop.run_in_executor(executor, functools.partial(SessionStorage, name, **options))
        return cls(store, executor=executor)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # The one dispatch: a whole sync operation in a worker thread.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    @property
    def name(self) -> str:
        """The store's name."""
        return self.sync.name

    @staticmethod
    def new_id() -> str:
        """A fresh session id (see ``SessionStorage.new_id``); no I/O, so not a coroutine."""
        return SessionStorage.new_id()

    async def read(
        self, sid: str, consumer: Optional[Callable[[BinaryIO], T]] = None
    ) -> Union[bytes, T]:
        """See ``SessionStorage.read``; ``consumer`` runs in the worker thread."""
        if consumer is None:
            return await self._run(self.sync.read, sid)
        return await self._run(self.sync.read, sid, consumer)

    async def read_versioned(self, sid: str) -> Tuple[bytes, int]:
        """:meth:`SessionStorage.read_versioned`, run in a worker thread."""
        return await self._run(self.sync.read_versioned, sid)

    async def get(self, sid: str, default: Optional[T] = None) -> Union[bytes, T, None]:
        """:meth:`SessionStorage.get`, run in a worker thread."""
        return await self._run(self.sync.get, sid, default)

    async def write(
        self,
        sid: str,
        value: Union[BytesLike, Provider],
        ttl: Optional[float] = None,
        *,
        expect: Optional[int] = None,
        owner: Optional[str] = None,
    ) -> int:
        """See ``SessionStorage.write``; a provider callable runs in the worker thread."""
        if owner is None:  # a store without owners (the Protocol's) is called as before
            return await self._run(self.sync.write, sid, value, ttl, expect=expect)
        version: int = await self._run(self.sync.write, sid, value, ttl, expect=expect,
                                       owner=owner)
        return version

    async def add(self, sid: str, value: BytesLike, ttl: Optional[float] = None, *,
                  owner: Optional[str] = None) -> bool:
        """:meth:`SessionStorage.add`, run in a worker thread."""
        if owner is None:
            return await self._run(self.sync.add, sid, value, ttl)
        added: bool = await self._run(self.sync.add, sid, value, ttl, owner=owner)
        return added

    async def replace(self, sid: str, value: BytesLike, ttl: Optional[float] = None, *,
                      owner: Optional[str] = None) -> bool:
        """:meth:`SessionStorage.replace`, run in a worker thread."""
        if owner is None:
            return await self._run(self.sync.replace, sid, value, ttl)
        replaced: bool = await self._run(self.sync.replace, sid, value, ttl, owner=owner)
        return replaced

    async def sessions_of(self, owner: str) -> List[SessionInfo]:
        """:meth:`SessionStorage.sessions_of`, run in a worker thread."""
        infos: List[SessionInfo] = await self._run(self.sync.sessions_of, owner)
        return infos

    async def invalidate_owner(self, owner: str, *, keep: Optional[str] = None,
                               keep_digest: Optional[str] = None) -> int:
        """:meth:`SessionStorage.invalidate_owner`, run in a worker thread (one hop: the
        whole deletion holds the store's lock there)."""
        deleted: int = await self._run(self.sync.invalidate_owner, owner, keep=keep,
                                       keep_digest=keep_digest)
        return deleted

    async def invalidate_digest(self, digest: str) -> bool:
        """:meth:`SessionStorage.invalidate_digest`, run in a worker thread."""
        found: bool = await self._run(self.sync.invalidate_digest, digest)
        return found

    async def invalidate(self, sid: str) -> bool:
        """:meth:`SessionStorage.invalidate`, run in a worker thread."""
        return await self._run(self.sync.invalidate, sid)

    async def touch(self, sid: str, ttl: Optional[float] = None) -> bool:
        """:meth:`SessionStorage.touch`, run in a worker thread."""
        return await self._run(self.sync.touch, sid, ttl)

    async def contains(self, sid: str) -> bool:
        """``sid in store`` (``in`` cannot await)."""
        return await self._run(self.sync.__contains__, sid)

    async def len(self) -> int:
        """``len(store)`` (``len`` cannot await)."""
        return await self._run(self.sync.__len__)

    async def clear(self) -> None:
        """:meth:`SessionStorage.clear`, run in a worker thread."""
        await self._run(self.sync.clear)

    async def stats(self) -> Stats:
        """:meth:`SessionStorage.stats`, run in a worker thread."""
        return await self._run(self.sync.stats)

    async def check(self) -> None:
        """:meth:`SessionStorage.check`, run in a worker thread."""
        await self._run(self.sync.check)

    async def close(self) -> None:
        """:meth:`SessionStorage.close`, run in a worker thread."""
        await self._run(self.sync.close)

    async def unlink(self) -> None:
        """:meth:`SessionStorage.unlink`, run in a worker thread."""
        await self._run(self.sync.unlink)

    async def __aenter__(self) -> "AsyncSessionStorage":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncSessionStorage of {self.sync!r}>"


if TYPE_CHECKING:  # mypy holds both classes to the protocols every store meets

    def _conforms(s: SessionStorage, a: AsyncSessionStorage) -> Tuple[Store, AsyncStore]:
        return s, a
