"""What the async adapters (``starsessions``, ``aiohttp``) share: the store they accept, and the
one write they need that the store's API composes rather than offers.

No storage logic: every function here is a short sequence of the store's own calls.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional, Protocol, Tuple, Union

from .._errors import InvalidSessionId, SessionNotFound, VersionConflict
from ..aio import AsyncSessionStorage
from ..store import SessionStorage

__all__ = ["AsyncStore", "open_async_store", "replace_live"]

#: Compare-and-set attempts ``replace_live`` makes before it writes unconditionally.
_CAS_TRIES = 8


class AsyncStore(Protocol):
    """The calls the async adapters make: :class:`AsyncSessionStorage`'s, or any object that
    has them as coroutines (a store on another backend)."""

    def new_id(self) -> str: ...

    async def get(self, sid: str) -> Optional[bytes]: ...

    async def read_versioned(self, sid: str) -> Tuple[bytes, int]: ...

    async def write(
        self, sid: str, value: bytes, ttl: Optional[float] = None, *, expect: Optional[int] = None
    ) -> int: ...

    async def invalidate(self, sid: str) -> bool: ...

    async def contains(self, sid: str) -> bool: ...


def open_async_store(
    name: Optional[str], store: Union[AsyncStore, SessionStorage, None], options: Any
) -> AsyncStore:
    """The adapter's store: ``store`` as given (a :class:`SessionStorage` is wrapped in an
    :class:`AsyncSessionStorage`), or the store ``name`` opened with ``options``.

    :raises TypeError: both or neither of ``name`` and ``store``, options with a store, or a
        synchronous store other than :class:`SessionStorage`.
    """
    if store is None:
        if name is None:
            raise TypeError("give the store's name (and its options), or an open store as store=")
        return AsyncSessionStorage(name, **options)
    if name is not None or options:
        raise TypeError("give either a store name with its options, or store=, not both")
    if isinstance(store, SessionStorage):
        return AsyncSessionStorage(store)
    if not inspect.iscoroutinefunction(getattr(store, "read_versioned", None)):
        raise TypeError(
            f"store= takes a SessionStorage or an async store (AsyncSessionStorage, "
            f"AsyncRedisSessionStorage...), not {type(store).__name__}"
        )
    return store


async def replace_live(store: AsyncStore, sid: str, data: bytes, ttl: Optional[float]) -> bool:
    """Write ``data`` over ``sid``'s session only if one is live; returns whether it did.

    A save must never bring back an id that was deleted (logout) or has expired, nor adopt an
    id the client made up, so "is it live" and "write" have to be one atomic step: a
    compare-and-set against the version just read. A conflict means another request of the
    same session wrote in between; the session is then live, and the framework's rule is
    that the last save wins, so read again and retry. After ``_CAS_TRIES`` conflicts in a
    row (a session under a storm of writes) it writes unconditionally. A store with an
    atomic ``replace`` (``SessionStorage`` has one) does all of this in one call.
    """
    replace = getattr(store, "replace", None)
    if replace is not None:
        try:
            return bool(await replace(sid, data, ttl))
        except InvalidSessionId:
            return False
    try:
        for _ in range(_CAS_TRIES):
            try:
                _, version = await store.read_versioned(sid)
            except SessionNotFound:
                return False
            try:
                await store.write(sid, data, ttl, expect=version)
                return True
            except VersionConflict:
                continue
    except InvalidSessionId:  # an id the store cannot hold (a forged cookie) is no session
        return False
    await store.write(sid, data, ttl)
    return True
