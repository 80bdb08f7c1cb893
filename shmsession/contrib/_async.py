"""What the async adapters (``starsessions``, ``aiohttp``) share: the store they accept, and
the save they all make.

No storage logic: every function here is a store call or two.
"""

from __future__ import annotations

import inspect
from typing import Any, List, Mapping, Optional, Union

from .._errors import InvalidSessionId
from .._types import AsyncStore, SessionInfo
from ..aio import AsyncSessionStorage
from ..store import SessionStorage

__all__ = [
    "AsyncStore", "OwnersOfStore", "invalidate_owner", "open_async_store", "owner_of",
    "replace_live",
]


def open_async_store(
    name: Optional[str], store: Union[AsyncStore, SessionStorage, None], options: Any
) -> AsyncStore:
    """The adapter's store: ``store`` as given (a :class:`SessionStorage` is wrapped in an
    :class:`AsyncSessionStorage`), or the store ``name`` opened with ``options``.

    :raises TypeError: both or neither of ``name`` and ``store``, options with a store, or a
        store that is neither a :class:`SessionStorage` nor async with a ``replace``.
    """
    if store is None:
        if name is None:
            raise TypeError("give the store's name (and its options), or an open store as store=")
        return AsyncSessionStorage(name, **options)
    if name is not None or options:
        raise TypeError("give either a store name with its options, or store=, not both")
    if isinstance(store, SessionStorage):
        return AsyncSessionStorage(store)
    if not inspect.iscoroutinefunction(getattr(store, "replace", None)):
        raise TypeError(
            f"store= takes a SessionStorage or an async store with an atomic replace "
            f"(AsyncSessionStorage, AsyncRedisSessionStorage...), not {type(store).__name__}"
        )
    return store


async def replace_live(store: AsyncStore, sid: str, data: bytes, ttl: Optional[float],
                       owner: Optional[str] = None) -> bool:
    """Write ``data`` over ``sid``'s session only if one is live, as one of ``owner``'s
    sessions (``None``: it keeps the owner it has); returns whether it did.

    A save must never bring back an id that was deleted (logout) or has expired, nor adopt an
    id the client made up, so "is it live" and "write" are one atomic step: the store's
    ``replace``. Concurrent saves of a live session each go through; the last one wins, as
    the frameworks expect. An id the store cannot hold (a forged cookie) is no session.
    """
    try:
        return await store.replace(sid, data, ttl, owner=owner)
    except InvalidSessionId:
        return False


def owner_of(session: Mapping[str, Any], owner_key: Optional[str]) -> Optional[str]:
    """The owner a session is saved with: ``str`` of its ``owner_key`` value; ``None`` (the
    store keeps the owner the session has) without an ``owner_key``, or when the session has
    no such key or holds ``None`` there."""
    if owner_key is None:
        return None
    value = session.get(owner_key)
    return None if value is None else str(value)


async def invalidate_owner(store: AsyncStore, owner: str, keep: Optional[str]) -> int:
    """Delete every live session of ``owner`` but the session id ``keep``; returns how many.
    A ``keep`` the store cannot hold (a forged cookie) names no session, so nothing is kept.
    """
    try:
        return await store.invalidate_owner(owner, keep=keep)
    except InvalidSessionId:
        if keep is None:
            raise
        return await store.invalidate_owner(owner)


class OwnersOfStore:
    """An adapter's ``sessions_of``, over its ``store``."""

    store: AsyncStore

    async def sessions_of(self, owner: str) -> List[SessionInfo]:
        """The live sessions of ``owner`` (a value of ``owner_key``, as ``str``), oldest
        first: the store's :meth:`~shmsession.SessionStorage.sessions_of` (digests, sizes,
        ages; never ids).

        :raises InvalidOwner: ``owner`` is empty or over ``MAX_ID_BYTES`` bytes of UTF-8.
        """
        return await self.store.sessions_of(owner)
