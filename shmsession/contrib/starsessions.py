"""A starsessions ``SessionStore`` on shmsession: Starlette and FastAPI sessions shared by every
worker process on the host (``uvicorn --workers N``, gunicorn with uvicorn workers)::

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starsessions import SessionAutoloadMiddleware, SessionMiddleware
    from shmsession.contrib.starsessions import ShmStore

    app = Starlette(middleware=[
        Middleware(SessionMiddleware, store=ShmStore("myapp", size=64 * 2**20), lifetime=3600),
        Middleware(SessionAutoloadMiddleware),
    ])

FastAPI: ``app.add_middleware(SessionAutoloadMiddleware)``, then ``app.add_middleware(
SessionMiddleware, store=ShmStore(...))`` (the one added last runs first).

The store holds the bytes starsessions' serializer makes; expiry is the store's ttl. Every
call is one whole operation of :class:`shmsession.aio.AsyncSessionStorage`, run in a thread.

Ids (``rotate_unknown_ids``, on by default): a session is saved under the id it came with only
while that id has a live record. Any other id -- the one starsessions just made for a new
session, one whose session was removed (logout) or has expired, one the client made up -- is
replaced by a fresh ``store.new_id()``, which ``write`` returns and starsessions puts in the
cookie. So an old cookie replayed after logout stays anonymous even once the app writes to its
session, and an id planted in a browser is never adopted (session fixation). A session this
process loaded live and that was deleted before its save (a logout, or ``logout_everywhere``,
in another request or worker) is not written again at all, under no id: the logout holds.

``ShmStore(..., rotate_unknown_ids=False)`` stores every session under the id it is given and
returns that id, as starsessions' ``InMemoryStore`` and ``RedisStore`` do: for code written
against them (a test fixture that seeds a session under a chosen id, a migration importing
sessions with their ids). A client's cookie then names its session whatever it holds, so
regenerate the id at login (``starsessions.regenerate_session_id``) against fixation. Either
way, an id the store cannot hold (empty, over ``SessionStorage.MAX_ID_BYTES``: a forged
cookie) reads as no session and is written under a fresh id, never an error the client could
cause.

Owners (log out everywhere): ``ShmStore(..., owner_key="user_id")`` saves every session that
holds ``"user_id"`` as one of the owner ``str(session["user_id"])``'s sessions; a session
without the key (or with ``None`` there) keeps the owner it has. To read that key the store
decodes what it is given with ``serializer``, which must be the ``SessionMiddleware``'s
(``JsonSerializer()`` by default, as there). ``await store.sessions_of(owner)`` lists the
owner's sessions and ``await store.logout_everywhere(owner, keep=request)`` deletes them but
the current one.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

from .._errors import InvalidSessionId, missing_extra
from ..store import SessionStorage
from ._async import (AsyncStore, OwnersOfStore, invalidate_owner, open_async_store, owner_of,
                     replace_live)

try:
    from starlette.requests import HTTPConnection
    from starsessions import JsonSerializer, Serializer, get_session_id
    from starsessions.stores.base import SessionStore
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise missing_extra("starlette", "starsessions") from exc

__all__ = ["ShmStore"]

#: Loaded, not yet saved ids a store remembers (see ShmStore._loaded): far more requests than
#: one process runs at once.
_MAX_LOADED = 10_000


class ShmStore(OwnersOfStore, SessionStore):
    """starsessions' ``SessionStore`` on the shared-memory store.

    ``ShmStore(name, **options)`` opens (creates or attaches to) the store ``name`` with
    ``options`` for :class:`SessionStorage` (``size``, ``ttl``...); ``ShmStore(store=...)``
    uses an open store: a :class:`SessionStorage`, an ``AsyncSessionStorage``, or any
    object with ``AsyncSessionStorage``'s coroutine methods.

    :param rotate_unknown_ids: ``True`` (the default): ``write`` keeps a session under its id
        only while that id has a live record, and under a fresh one otherwise (fixation
        protection). ``False``: under the id given, as starsessions' own stores (see the
        module docstring).
    :param gc_ttl: seconds the store keeps a session whose cookie lasts for the browser
        session (``SessionMiddleware(lifetime=0)``, starsessions' default), since the store
        cannot know when that ends: starsessions' ``RedisStore`` has the same parameter.
        ``None``: the store's default ttl.
    :param owner_key: the session key whose value names the session's owner (a user id):
        a session holding it is saved as one of the owner ``str(value)``'s sessions, for
        :meth:`sessions_of` and :meth:`logout_everywhere`; ``None`` (the default): sessions
        get no owner from this store. A save whose ``str(value)`` is empty or over
        ``MAX_ID_BYTES`` bytes of UTF-8 raises ``InvalidOwner``.
    :param serializer: the ``SessionMiddleware``'s serializer, which the store uses to read
        ``owner_key`` from the bytes it is given; ``None``: starsessions' default,
        ``JsonSerializer()``.
    """

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        store: Union[AsyncStore, SessionStorage, None] = None,
        rotate_unknown_ids: bool = True,
        gc_ttl: Optional[float] = None,
        owner_key: Optional[str] = None,
        serializer: Optional[Serializer] = None,
        **options: Any,
    ) -> None:
        self.store = open_async_store(name, store, options)
        self.rotate_unknown_ids = rotate_unknown_ids
        self.gc_ttl = gc_ttl
        self.owner_key = owner_key
        self.serializer = JsonSerializer() if serializer is None else serializer
        # Ids whose live session a request of this process loaded and has not saved yet,
        # with how many such requests: a save that finds its session gone then knows it was
        # deleted while the request ran, not new. Bounded: the oldest go first.
        self._loaded: Dict[str, int] = {}

    async def read(self, session_id: str, lifetime: int) -> bytes:
        """The session's bytes; ``b""`` when it is absent, expired or not a valid id."""
        try:
            data = await self.store.get(session_id)
        except InvalidSessionId:
            return b""
        if data is None:
            return b""
        loaded = self._loaded
        if len(loaded) >= _MAX_LOADED and session_id not in loaded:
            del loaded[next(iter(loaded))]
        loaded[session_id] = loaded.get(session_id, 0) + 1
        return data

    async def write(self, session_id: str, data: bytes, lifetime: int, ttl: int) -> str:
        """Store ``data`` for ``ttl`` seconds; returns the id it is stored under (see the
        module docstring: ``session_id`` when it has a live record or ``rotate_unknown_ids``
        is off, a fresh one otherwise or when the store cannot hold ``session_id``).

        As in starsessions' ``RedisStore``: ``lifetime == 0`` (a browser-session cookie)
        keeps the data ``gc_ttl`` seconds, and a ``ttl`` below 1 (a session at the end of
        its lifetime) counts as 1.

        With an ``owner_key``, the session is saved as one of its owner's (see the class).
        """
        seconds: Optional[float] = self.gc_ttl if lifetime == 0 else max(1, ttl)
        owner = None
        if self.owner_key is not None:
            owner = owner_of(self.serializer.deserialize(data), self.owner_key)
        loaded = self._unload(session_id)
        if self.rotate_unknown_ids:
            if await replace_live(self.store, session_id, data, seconds, owner):
                return session_id
            if loaded:  # deleted while the request ran: it stays deleted
                return session_id
        else:
            try:
                await self.store.write(session_id, data, seconds, owner=owner)
                return session_id
            except InvalidSessionId:
                pass
        fresh = self.store.new_id()
        await self.store.write(fresh, data, seconds, owner=owner)
        return fresh

    def _unload(self, session_id: str) -> bool:
        """Whether a request of this process loaded ``session_id`` live and has not saved or
        removed it; counts this save (or removal) as that request's."""
        n = self._loaded.pop(session_id, 0)
        if n > 1:
            self._loaded[session_id] = n - 1
        return n > 0

    async def remove(self, session_id: str) -> None:
        """Delete the session (idempotent). starsessions removes only a session its request
        loaded, and then saves nothing: the removal ends that request's load."""
        self._unload(session_id)
        try:
            await self.store.invalidate(session_id)
        except InvalidSessionId:
            pass

    async def exists(self, session_id: str) -> bool:
        """Whether ``session_id`` has a live session."""
        try:
            return await self.store.contains(session_id)
        except InvalidSessionId:
            return False

    async def logout_everywhere(
        self, owner: str, *, keep: Union[str, HTTPConnection, None] = None
    ) -> int:
        """Delete every live session of ``owner`` but ``keep``: a session id, or a request
        whose session to keep (the current one: "log out my other devices"). Returns how
        many were deleted. The old cookies are anonymous from then on, in every worker.

        Without ``keep``, a request logged in as ``owner`` deletes its own session too, and
        its response does not save it again (a session loaded live and deleted before its
        save stays deleted).

        :raises InvalidOwner: ``owner`` is empty or over ``MAX_ID_BYTES`` bytes of UTF-8.
        """
        if isinstance(keep, HTTPConnection):
            keep = get_session_id(keep)
        return await invalidate_owner(self.store, owner, keep)
