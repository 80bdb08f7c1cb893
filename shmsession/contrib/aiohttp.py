"""An aiohttp-session storage on shmsession: aiohttp sessions shared by every worker process on
the host (gunicorn with ``-k aiohttp.GunicornWebWorker``, or several ``web.run_app`` processes)::

    from aiohttp import web
    from aiohttp_session import setup
    from shmsession.contrib.aiohttp import ShmStorage

    app = web.Application()
    setup(app, ShmStorage("myapp", size=64 * 2**20, max_age=3600))

The cookie holds only the session's id, 256 random bits from ``store.new_id()``; the data
stays in the store, encoded by the storage's ``encoder`` (JSON by default) as aiohttp-session's
own server-side storages do. Every call is one whole operation of
:class:`shmsession.aio.AsyncSessionStorage`, run in a thread.

* ``max_age`` (or a session's own ``session.max_age``) is both the cookie's max-age and the
  store's ttl; ``None`` makes a browser-session cookie whose record lives for the store's
  default ttl.
* A session left empty (``session.invalidate()``, or every key deleted) deletes its record
  and its cookie: an old cookie replayed afterwards is anonymous.
* Ids: a session is saved under the id it came with only while that id has a live record; a
  new session, or one whose record was deleted or has expired meanwhile, gets a fresh id (and
  cookie), so a deleted id never comes back. There is no switch for this (unlike
  ``ShmStore(rotate_unknown_ids=False)`` for starsessions), because aiohttp-session's own
  storages adopt no id either: a cookie whose id has no data loads as a new session, which
  ``save_session`` gives a fresh key. They differ from this storage in one case only: a
  session deleted by another request between this one's load and save (a logout) is written
  back under its old id by ``RedisStorage``; here it stays deleted, under no id, and its
  cookie is deleted. A session seeded under a chosen id
  (its record written to the store, its id sent as the cookie) is live, so it keeps that id.
* Owners (log out everywhere): ``ShmStorage(..., owner_key="user_id")`` saves every session
  that holds ``"user_id"`` as one of the owner ``str(session["user_id"])``'s sessions; a
  session without the key (or with ``None`` there) keeps the owner it has. ``await
  storage.sessions_of(owner)`` lists the owner's sessions and ``await
  storage.logout_everywhere(owner, keep=request)`` deletes them but the current one.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Union

from .._errors import InvalidSessionId, missing_extra
from ..store import SessionStorage
from ._async import (AsyncStore, OwnersOfStore, invalidate_owner, open_async_store, owner_of,
                     replace_live)

try:
    from aiohttp import web
    from aiohttp_session import AbstractStorage, Session, get_session
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise missing_extra("aiohttp", "aiohttp-session") from exc

__all__ = ["ShmStorage"]


class ShmStorage(OwnersOfStore, AbstractStorage):
    """aiohttp-session's ``AbstractStorage`` on the shared-memory store.

    ``ShmStorage(name, **options)`` opens (creates or attaches to) the store ``name`` with
    ``options`` for :class:`SessionStorage` (``size``, ``ttl``...); ``ShmStorage(store=...)``
    uses an open store: a :class:`SessionStorage`, an ``AsyncSessionStorage``, or any object
    with ``AsyncSessionStorage``'s coroutine methods. The cookie parameters, ``encoder`` and
    ``decoder`` are aiohttp-session's.

    :param owner_key: the session key whose value names the session's owner (a user id):
        a session holding it is saved as one of the owner ``str(value)``'s sessions, for
        :meth:`sessions_of` and :meth:`logout_everywhere`; ``None`` (the default): sessions
        get no owner from this storage. A save whose ``str(value)`` is empty or over
        ``MAX_ID_BYTES`` bytes of UTF-8 raises ``InvalidOwner``.
    """

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        store: Union[AsyncStore, SessionStorage, None] = None,
        cookie_name: str = "AIOHTTP_SESSION",
        domain: Optional[str] = None,
        max_age: Optional[int] = None,
        path: str = "/",
        secure: Optional[bool] = None,
        httponly: bool = True,
        samesite: Optional[str] = None,
        encoder: Callable[[object], str] = json.dumps,
        decoder: Callable[[str], Any] = json.loads,
        owner_key: Optional[str] = None,
        **options: Any,
    ) -> None:
        super().__init__(
            cookie_name=cookie_name,
            domain=domain,
            max_age=max_age,
            path=path,
            secure=secure,
            httponly=httponly,
            samesite=samesite,
            encoder=encoder,
            decoder=decoder,
        )
        self.store = open_async_store(name, store, options)
        self.owner_key = owner_key

    async def load_session(self, request: web.Request) -> Session:
        """The session the request's cookie names; a new, empty one when there is no cookie
        or its id has no live record."""
        key = self.load_cookie(request)
        if key is None:
            return Session(None, data=None, new=True, max_age=self.max_age)
        try:
            raw = await self.store.get(key)
        except InvalidSessionId:
            raw = None
        if raw is None:
            return Session(None, data=None, new=True, max_age=self.max_age)
        try:
            data = self._decoder(raw.decode("utf-8"))
        except ValueError:  # undecodable data reads as an empty session, as in RedisStorage
            data = None
        return Session(key, data=data, new=False, max_age=self.max_age)

    async def save_session(
        self, request: web.Request, response: web.StreamResponse, session: Session
    ) -> None:
        """Store a non-empty session and set its cookie; delete an empty one's record and
        cookie."""
        key: Optional[str] = None if session.identity is None else str(session.identity)
        if session.empty:
            if key is not None:
                try:
                    await self.store.invalidate(key)
                except InvalidSessionId:
                    pass
            if key is not None or self.load_cookie(request) is not None:
                self.save_cookie(response, "", max_age=session.max_age)
            return
        data = self._encoder(self._get_session_data(session)).encode("utf-8")
        # A max_age of 0 or less expires the cookie at once; the record then lives 1 s
        # rather than being refused (the store's ttl must be positive).
        ttl = None if session.max_age is None else max(1, session.max_age)
        owner = owner_of(session, self.owner_key)
        if key is None or not await replace_live(self.store, key, data, ttl, owner):
            if key is not None and not session.new:
                # Loaded live, deleted while the request ran (a logout, here or in another
                # worker): it stays deleted, under no id, and so does its cookie.
                self.save_cookie(response, "", max_age=session.max_age)
                return
            key = self.store.new_id()
            await self.store.write(key, data, ttl, owner=owner)
        self.save_cookie(response, key, max_age=session.max_age)

    async def logout_everywhere(
        self, owner: str, *, keep: Union[str, Session, web.Request, None] = None
    ) -> int:
        """Delete every live session of ``owner`` but ``keep``: a session id, a
        :class:`Session`, or a request whose session to keep (the current one: "log out my
        other devices"). Returns how many were deleted. The old cookies are anonymous from
        then on, in every worker.

        Without ``keep``, a request logged in as ``owner`` deletes its own session too; a
        change the request then makes to it is not saved, and its cookie is deleted.

        :raises InvalidOwner: ``owner`` is empty or over ``MAX_ID_BYTES`` bytes of UTF-8.
        """
        if isinstance(keep, web.Request):
            keep = await get_session(keep)
        if isinstance(keep, Session):
            keep = None if keep.identity is None else str(keep.identity)
        return await invalidate_owner(self.store, owner, keep)
