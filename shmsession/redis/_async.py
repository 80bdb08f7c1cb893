"""One of the Redis stores. ``_async.py`` is the source: ``scripts/unasync.py`` makes
``_sync.py`` from it, line for line (``tests/unit/test_unasync.py`` fails when it is stale).
Everything that does no I/O is in ``_core.py``; this file holds the round trips."""

from __future__ import annotations

from typing import Any, BinaryIO, Callable, List, Optional, Tuple, TypeVar, Union, overload

import redis.asyncio as _aioredis

from .._errors import StoreClosed
from .._rules import (MAX_OWNER_SESSIONS, BytesLike, Provider, check_digest, check_keep,
                      new_id)
from .._types import SessionInfo, Stats
from ._core import (
    _INVALIDATE,
    _INVALIDATE_OWNER,
    _PUT,
    _READ_SLIDE,
    _SESSIONS_OF,
    _TOUCH,
    _SCAN_COUNT,
    _UNLINK_BATCH,
    DEFAULT_URL,
    _check_client,
    _consume,
    _Core,
)

T = TypeVar("T")


class AsyncRedisSessionStorage:
    """``AsyncSessionStorage``'s API on Redis (see ``shmsession.redis`` for what lies where).

    :param name: the store's name (``SessionStorage``'s rules); the default prefix carries it.
    :param server: a URL -- ``redis://[[user]:[password]@]host:port/db``, ``rediss://...``
        (TLS; ``?ssl_ca_certs=PATH`` and other redis-py options go in the query string),
        ``unix:///path/to/redis.sock?db=0`` -- or an open ``redis.asyncio.Redis``, which the
        caller keeps (``close()`` leaves it open). It must not decode responses.
    :param secret: bytes or str of at least 16 bytes, the same on every host: session ids
        are keyed through it (a handle with another secret sees none of the sessions).
    :param prefix: the prefix of every key of the store (default ``"shmsession:NAME:"``).
    :param ttl: default lifetime of a session in seconds; ``None`` for no expiry.
    :param max_value_size: largest value in bytes (default 1 MiB).
    :param touch_on_read: reads renew the session's expiry by ``ttl`` (sliding expiry).

    Sessions may have an owner (``owner=`` on ``write``, ``add`` and ``replace``; a user id,
    typically), so that ``sessions_of`` lists them and ``invalidate_owner`` deletes them all
    ("log out everywhere"). An owner keeps at most ``MAX_OWNER_SESSIONS`` (1024) live
    sessions: a write that would make one more deletes the owner's oldest.
    """

    # The cap on one owner's live sessions (a class attribute, so that tests can lower it).
    _max_owner_sessions = MAX_OWNER_SESSIONS

    def __init__(
        self,
        name: str,
        server: Union[str, "_aioredis.Redis"] = DEFAULT_URL,
        *,
        secret: Union[bytes, str],
        prefix: Optional[str] = None,
        ttl: Optional[float] = 1800,
        max_value_size: Optional[int] = None,
        touch_on_read: bool = False,
    ) -> None:
        self._c = core = _Core(name, prefix, secret, ttl, max_value_size, touch_on_read)
        #: The store's name, as given.
        self.name = core.name
        #: The prefix of every key of the store.
        self.prefix = core.prefix
        if isinstance(server, str):
            client = _aioredis.Redis.from_url(server)  # connects on first use
            self._owned = True
        else:
            _check_client(server, _aioredis.Redis, "redis.asyncio.Redis")
            client = server
            self._owned = False
        self._client: Optional[_aioredis.Redis] = client
        self._put = client.register_script(_PUT)
        self._delete = client.register_script(_INVALIDATE)
        self._touch = client.register_script(_TOUCH)
        self._slide = client.register_script(_READ_SLIDE)
        self._revoke = client.register_script(_INVALIDATE_OWNER)
        self._sessions_of = client.register_script(_SESSIONS_OF)

    @property
    def _r(self) -> "_aioredis.Redis":
        client = self._client
        if client is None:
            raise StoreClosed(
                "this AsyncRedisSessionStorage was closed; open a new one to use the store"
            )
        return client

    async def _fetch(self, sid: str) -> object:
        c = self._c
        r = self._r
        if c.slide_ms:
            key, _, link = c.session_keys(c.digest(sid))
            return await self._slide(keys=[key, link], args=[c.slide_ms, c.prefix], client=r)
        return await r.get(c.key(sid))

    # ------------------------------------------------------------------ the public API
    #: A fresh session id: 256 random bits from ``secrets``, URL-safe, 43 characters
    #: (a static method, as ``SessionStorage.new_id``).
    new_id = staticmethod(new_id)

    # Three signatures, so that each twin meets its protocol: the first two are the
    # overloads of ``Store.read``, the third is the one signature of the async protocol.
    @overload
    async def read(self, sid: str) -> bytes: ...

    @overload
    async def read(self, sid: str, consumer: Callable[[BinaryIO], T]) -> T: ...

    @overload
    async def read(self, sid: str, consumer: Optional[Callable[[BinaryIO], T]] = None
                   ) -> Union[bytes, T]: ...

    async def read(self, sid: str, consumer: Optional[Callable[[BinaryIO], T]] = None
                   ) -> Union[bytes, T]:
        """See ``SessionStorage.read``; a consumer runs on bytes already received.

        :raises SessionNotFound: no such session, or it has expired.
        """
        c = self._c
        return _consume(c.found(await self._fetch(sid))[0], consumer)

    async def read_versioned(self, sid: str) -> Tuple[bytes, int]:
        """See ``SessionStorage.read_versioned``."""
        c = self._c
        return c.found(await self._fetch(sid))

    async def get(self, sid: str, default: Optional[T] = None) -> Union[bytes, T, None]:
        """See ``SessionStorage.get``."""
        c = self._c
        record = c.record(await self._fetch(sid))
        return default if record is None else record[0]

    async def write(self, sid: str, value: Union[BytesLike, Provider],
                    ttl: Optional[float] = None, *, expect: Optional[int] = None,
                    owner: Optional[str] = None) -> int:
        """See ``SessionStorage.write`` (a provider runs before anything is sent).

        :param owner: a ``str`` (a user id) makes the session one of that owner's, moving it
            from its previous owner if any; ``None`` keeps the owner it has (a new session:
            none). The session keeps its owner until it is deleted or expires.
        :raises VersionConflict: ``expect`` was given and the session has another version,
            or is gone.
        :raises InvalidOwner: ``owner`` is empty or too long (nothing is sent).
        :raises InvalidType: ``owner`` is not a ``str``, or another argument has a wrong type.
        """
        c = self._c
        keys, args = c.write_args(sid, value, ttl, expect, owner, self._max_owner_sessions)
        return c.version(await self._put(keys=keys, args=args, client=self._r))

    async def add(self, sid: str, value: BytesLike, ttl: Optional[float] = None, *,
                  owner: Optional[str] = None) -> bool:
        """Store ``value`` only if ``sid`` has no live session; returns whether it did.
        ``owner`` as for ``write`` (the new session has none without it)."""
        c = self._c
        keys, args = c.add_args(sid, value, ttl, owner, self._max_owner_sessions)
        return int(await self._put(keys=keys, args=args, client=self._r)) >= 0

    async def replace(self, sid: str, value: BytesLike, ttl: Optional[float] = None, *,
                      owner: Optional[str] = None) -> bool:
        """Store ``value`` only if ``sid`` has a live session; returns whether it did. See
        ``SessionStorage.replace``: one step in Redis, so a session deleted (logout) or
        expired meanwhile stays gone. ``owner`` as for ``write``."""
        c = self._c
        keys, args = c.replace_args(sid, value, ttl, owner, self._max_owner_sessions)
        return int(await self._put(keys=keys, args=args, client=self._r)) >= 0

    async def invalidate(self, sid: str) -> bool:
        """Delete the session (and its tie to its owner); returns whether a live one was
        there. Idempotent."""
        c = self._c
        digest = c.digest(sid)
        return bool(await self._delete(keys=c.session_keys(digest), args=[digest, c.prefix],
                                       client=self._r))

    async def touch(self, sid: str, ttl: Optional[float] = None) -> bool:
        """Renew the session's expiry to ``ttl`` seconds from now (its owner kept); whether
        it was there."""
        c = self._c
        key, _, link = c.session_keys(c.digest(sid))
        ms = c.ttl(ttl)
        return bool(await self._touch(keys=[key, link], args=[ms, c.prefix], client=self._r))

    async def sessions_of(self, owner: str) -> List[SessionInfo]:
        """The live sessions of ``owner``, oldest first (never their ids: ``digest`` names
        one for ``invalidate_digest``). ``age`` is the time since the session became the
        owner's (Redis keeps no creation time); ``ttl`` the seconds left, None for none.
        Costs in proportion to the owner's sessions, not to the store.

        :raises InvalidOwner: ``owner`` is empty or too long.
        :raises InvalidType: ``owner`` is not a ``str``.
        """
        c = self._c
        owner_hex = c.owner(owner)
        reply = await self._sessions_of(keys=[c.owner_index(owner_hex)],
                                        args=[owner_hex, c.prefix], client=self._r)
        return c.sessions(reply)

    async def invalidate_owner(self, owner: str, *, keep: Optional[str] = None,
                               keep_digest: Optional[str] = None) -> int:
        """Delete every live session of ``owner`` but the one of session id ``keep`` (the
        current one, to "log out my other devices"), or the one named by ``keep_digest`` as
        ``sessions_of`` gives it; returns how many were deleted. One step
        against every write: a session of the owner written before the call is gone after
        it, and one written after it (with ``owner=None``) is a new session with no owner.

        :raises InvalidOwner: ``owner`` is empty or too long (nothing is deleted).
        :raises InvalidType: ``owner`` is not a ``str``, or ``keep`` not a session id.
        :raises InvalidSessionId: ``keep`` is not a valid session id, or ``keep_digest``
            not 32 lowercase hex digits.
        :raises InvalidOption: both ``keep`` and ``keep_digest`` are given.
        """
        c = self._c
        owner_hex = c.owner(owner)
        kept = check_keep(keep, keep_digest)
        keep_hex = c.digest(keep) if keep is not None else "" if kept is None else kept.hex()
        return int(await self._revoke(keys=[c.owner_index(owner_hex), c.meta],
                                      args=[owner_hex, c.prefix, keep_hex], client=self._r))

    async def invalidate_digest(self, digest: str) -> bool:
        """Delete the session named by ``digest`` as ``sessions_of`` gives it (a "your
        devices" page revokes one this way); returns whether a live one was there.

        :raises InvalidSessionId: ``digest`` is not 32 lowercase hex digits.
        :raises InvalidType: ``digest`` is not a ``str``.
        """
        c = self._c
        digest = check_digest(digest).hex()
        return bool(await self._delete(keys=c.session_keys(digest), args=[digest, c.prefix],
                                       client=self._r))

    async def contains(self, sid: object) -> bool:
        """Whether ``sid`` has a live session: ``sid in store``, which the async store
        spells ``contains(sid)`` (``in`` cannot wait for Redis)."""
        key = self._c.key(sid)
        return bool(await self._r.exists(key))

    async def len(self) -> int:
        """Live sessions of this store: ``len(store)``, which the async store spells
        ``len()``. A ``SCAN`` of the keyspace; not for hot paths."""
        n = 0
        async for _ in self._r.scan_iter(match=self._c.pattern, count=_SCAN_COUNT):
            n += 1
        return n

    async def clear(self) -> None:
        """Delete every session of this store, with its owners' indexes (its keys only,
        found by ``SCAN``). Versions keep growing. Not atomic: a session written while it
        runs may stay."""
        r = self._r
        c = self._c
        batch: List[Any] = []
        async for key in r.scan_iter(match=c.everything, count=_SCAN_COUNT):
            if not c.owns(key):
                continue
            batch.append(key)
            if len(batch) >= _UNLINK_BATCH:
                await r.unlink(*batch)
                batch.clear()
        if batch:
            await r.unlink(*batch)

    async def stats(self) -> Stats:
        """Figures for this store, as far as Redis can give them.

        Per store: ``entries`` (a ``SCAN`` of its keys: not for hot paths), ``writes``
        (versions handed out), ``deletes``. Server-wide, from ``INFO`` (every client and
        database): ``hits``/``misses`` (``keyspace_hits``/``keyspace_misses``; a
        compare-and-set and ``in`` count one too, which they do not in shared memory),
        ``evictions`` (``evicted_keys``), ``expirations`` (``expired_keys``),
        ``bytes_used`` (``used_memory``), ``size`` and ``heap_size`` (``maxmemory``, 0 when
        unlimited), ``bytes_free`` (``maxmemory - used_memory``, 0 when unlimited). Always
        0 here: ``max_entries``, ``table_slots``, ``largest_free``, ``lock_waits``,
        ``lock_wait_seconds``, the ``room_*`` counters and ``fragmentation``.
        """
        r = self._r
        meta = self._c.meta
        info = await r.info("stats", "memory")
        # HINCRBY by 0 reads a counter through Redis's write path, which counts no keyspace
        # hit or miss (HGET would count one, and every stats() would move `hits`).
        version = await r.hincrby(meta, "version", 0)
        deletes = await r.hincrby(meta, "deletes", 0)
        return self._c.stats(info, int(version), int(deletes), await self.len())

    async def check(self) -> None:
        """A cheap sanity check: the server answers (``PING``)."""
        await self._r.ping()

    async def close(self) -> None:
        """Drop this handle (and its connections, when it made its client); the sessions
        stay. Idempotent."""
        client, self._client = self._client, None
        if client is not None and self._owned:
            await client.aclose()

    async def unlink(self) -> None:
        """Delete the store: its sessions and its counters (versions start again from 1),
        then close this handle."""
        await self.clear()
        await self._r.delete(self._c.meta)
        await self.close()

    async def __aenter__(self) -> "AsyncRedisSessionStorage":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._client is None else "open"
        return f"<AsyncRedisSessionStorage {self.name!r} prefix={self.prefix!r}, {state}>"
