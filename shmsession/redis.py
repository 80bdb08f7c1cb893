"""The same API on Redis, for sessions shared by more than one host.

``RedisSessionStorage`` and ``AsyncRedisSessionStorage`` (on ``redis.asyncio``) have the
methods, arguments, return values and errors of ``SessionStorage`` and
``AsyncSessionStorage``, so moving from one host to many is a one-line change::

    store = SessionStorage("myapp", ttl=1800)
    store = RedisSessionStorage("myapp", "redis://cache:6379/0", secret=KEY, ttl=1800)

What lies in Redis, under ``prefix`` (default ``"shmsession:NAME:"``):

* ``PREFIX s:HEX`` -- one string per session: an 8-byte big-endian version, then the value,
  with the session's expiry as the key's own (``PX``). ``HEX`` is a keyed blake2b digest of
  the session id under ``secret``: a session id never reaches Redis, so its keyspace, a
  ``MONITOR``, a dump or a replica hands out no bearer token.
* ``PREFIX meta`` -- a hash: ``version`` (the last version handed out: ``HINCRBY`` makes
  versions strictly increasing across every host, and ``clear()`` leaves it) and
  ``deletes``.

Every write is one Lua script (``EVALSHA``, loaded again by redis-py when the server has
forgotten it): checking what the write depends on (the version a compare-and-set expects,
no session for ``add``, a live one for ``replace``), taking a version and storing the record
happen as one step against every other client.
Needs Redis 7.0 or later (``PEXPIRE ... XX`` for ``touch_on_read``); not Redis Cluster (a
write touches two keys of different slots).

Differences from the shared-memory store, all where Redis decides: expiry is Redis's own
(millisecond precision, rounded up); ``len()``, ``clear()`` and ``stats().entries`` walk the
keyspace with ``SCAN`` (``clear()`` is not atomic against writes made while it runs); errors
of the connection are redis-py's own (``redis.ConnectionError``...); ``unlink()`` deletes the
store's keys, and other handles just find it empty.
"""

from __future__ import annotations

import hashlib
import io
from typing import (
    TYPE_CHECKING,
    Any,
    BinaryIO,
    Callable,
    List,
    Mapping,
    Optional,
    Tuple,
    TypeVar,
    Union,
    overload,
)

from ._errors import (
    CorruptSegment,
    InvalidTTL,
    InvalidType,
    SessionNotFound,
    StoreClosed,
    VersionConflict,
    missing_extra,
)
from ._rules import (
    DIGEST_SIZE,
    BytesLike,
    Provider,
    check_expect,
    check_id,
    check_name,
    check_value,
    is_int,
    new_id,
    ttl_ns,
)
from ._types import AsyncStore, Stats, Store

try:
    import redis as _redis
    import redis.asyncio as _aioredis
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    raise missing_extra("redis", "redis-py") from None

__all__ = ["AsyncRedisSessionStorage", "RedisSessionStorage"]

T = TypeVar("T")

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_MAX_VALUE = 1 << 20
# A Redis string holds at most 512 MiB; the record adds its 8-byte version.
_MAX_VALUE_LIMIT = (512 << 20) - 8
_MIN_SECRET = 16
# About 35,000 years, far below where Redis's PX deadline overflows (2**63 ms); a longer
# ttl is refused (math.inf says "never").
_MAX_TTL_MS = 1 << 50
_VERSION_BYTES = 8
_SCAN_COUNT = 1000
_UNLINK_BATCH = 500

# KEYS: session key, meta hash. ARGV: value, ttl in ms (0: none), mode: "" plain write, "+"
# add (only if absent), "=" replace (only if live), else the 8 bytes of the version a
# compare-and-set expects. Returns the new version; -1 when the add found a session, the
# replace none or the CAS another version, -2 when the CAS found none. SET NX claims the key
# for an add, and SET XX checks it is there for a replace, without reading it, because a
# read would count as a keyspace hit or miss, which a write must not (stats()); neither
# leaves a trace when it fails, so a refused add or replace spends no version.
_PUT = """
local mode = ARGV[3]
if mode == '+' then
  if not redis.call('SET', KEYS[1], '', 'NX') then return -1 end
elseif mode == '=' then
  if not redis.call('SET', KEYS[1], '', 'XX') then return -1 end
elseif mode ~= '' then
  local old = redis.call('GET', KEYS[1])
  if not old then return -2 end
  if string.sub(old, 1, 8) ~= mode then return -1 end
end
local n = redis.call('HINCRBY', KEYS[2], 'version', 1)
local record = struct.pack('>I8', n) .. ARGV[1]
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], record)
else
  redis.call('SET', KEYS[1], record, 'PX', ARGV[2])
end
return n
"""

# KEYS: session key, meta hash. DEL answers 0 for an expired key (Redis drops it first).
_INVALIDATE = """
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], 'deletes', 1)
return 1
"""

# KEYS: session key. PERSIST alone answers 0 for a live key that has no expiry, so PEXPIRE
# (1 for any live key) tells whether the session is there, and PERSIST then lifts it.
_PERSIST = """
if redis.call('PEXPIRE', KEYS[1], 60000) == 0 then return 0 end
redis.call('PERSIST', KEYS[1])
return 1
"""

# KEYS: session key. ARGV: the store's ttl in ms. Sliding expiry on read (touch_on_read):
# XX renews only a session that has an expiry, as SessionStorage does.
_READ_SLIDE = """
local record = redis.call('GET', KEYS[1])
if record then redis.call('PEXPIRE', KEYS[1], ARGV[1], 'XX') end
return record
"""


def _ttl_ms(ttl: object) -> int:
    """Seconds -> whole milliseconds for ``PX``, rounded up; 0 stands for "never"
    (``math.inf``). Validation is ``store.py``'s, so both stores refuse the same values."""
    try:
        ms = -(-ttl_ns(ttl) // 1_000_000)
    except OverflowError:  # a finite float whose nanoseconds overflow, e.g. 1e300
        ms = _MAX_TTL_MS + 1
    if ms > _MAX_TTL_MS:
        raise InvalidTTL(f"ttl of {ttl!r} seconds is too long; use math.inf for no expiry")
    return ms


def _glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis ``MATCH`` pattern."""
    return "".join("\\" + c if c in "\\*?[]^" else c for c in text)


class _Core:
    """What both Redis stores share and that does no I/O: validation (the rules of
    ``SessionStorage``), key derivation, the record format, and the reading of replies."""

    def __init__(
        self,
        name: str,
        prefix: Optional[str],
        secret: Union[bytes, str],
        ttl: Optional[float],
        max_value_size: Optional[int],
        touch_on_read: bool,
    ) -> None:
        check_name(name)
        if prefix is None:
            prefix = f"shmsession:{name}:"
        elif type(prefix) is not str or not prefix:
            raise InvalidType(f"prefix must be a non-empty str, not {prefix!r}")
        if isinstance(secret, str):
            secret = secret.encode()
        elif not isinstance(secret, bytes):
            raise InvalidType(f"secret must be bytes or str, not {type(secret).__name__}")
        if len(secret) < _MIN_SECRET:
            raise ValueError(
                f"secret must be at least {_MIN_SECRET} bytes, got {len(secret)}; use a long "
                "random one (secrets.token_hex(32)), the same on every host"
            )
        if max_value_size is None:
            max_value_size = DEFAULT_MAX_VALUE
        elif not is_int(max_value_size):
            raise InvalidType(f"max_value_size must be an int, not {type(max_value_size).__name__}")
        elif not 1 <= max_value_size <= _MAX_VALUE_LIMIT:
            raise ValueError(
                f"max_value_size must be 1 to {_MAX_VALUE_LIMIT} (a Redis string's limit), "
                f"got {max_value_size}"
            )
        self.name = name
        self.prefix = prefix
        self.max_value = max_value_size
        self.default_ms = 0 if ttl is None else _ttl_ms(ttl)
        # Sliding expiry needs an expiry to slide: as in SessionStorage, none without a ttl.
        self.slide_ms = self.default_ms if touch_on_read else 0
        self.meta = prefix + "meta"
        self._sessions = prefix + "s:"
        self.pattern = _glob_escape(self._sessions) + "*"
        # The key is derived, not the secret itself: blake2b keys stop at 64 bytes, and a
        # secret shared with other uses (a framework's SECRET_KEY) yields unrelated digests.
        key = hashlib.blake2b(secret, digest_size=32, person=b"shmsession:redis").digest()
        self._hasher = hashlib.blake2b(key=key, digest_size=DIGEST_SIZE)

    def key(self, sid: object) -> str:
        """The Redis key of session ``sid``; raises what ``SessionStorage`` raises for it."""
        h = self._hasher.copy()
        h.update(check_id(sid))
        return self._sessions + h.hexdigest()

    def value(self, value: object) -> bytes:
        return check_value(value, self.max_value)

    def ttl(self, ttl: Optional[float]) -> int:
        return self.default_ms if ttl is None else _ttl_ms(ttl)

    def write_args(
        self,
        sid: str,
        value: Union[BytesLike, Provider],
        ttl: Optional[float],
        expect: Optional[int],
    ) -> Tuple[str, List[Union[bytes, int]]]:
        """Validate a ``write`` (in ``SessionStorage.write``'s order; a provider runs last)
        and return the ``_PUT`` script's key and arguments."""
        key = self.key(sid)
        ms = self.ttl(ttl)
        check_expect(expect)
        if callable(value) and not isinstance(value, (bytes, bytearray, memoryview)):
            stream = io.BytesIO()
            value(stream)
            value = stream.getvalue()
        data = self.value(value)
        if expect is None:
            mode = b""
        elif expect >> 64:
            mode = b"\xff" * (_VERSION_BYTES + 1)  # no version is that large: a sure conflict
        else:
            mode = expect.to_bytes(_VERSION_BYTES, "big")
        return key, [data, ms, mode]

    def add_args(self, sid: str, value: BytesLike, ttl: Optional[float]
                 ) -> Tuple[str, List[Union[bytes, int]]]:
        """Validate an ``add`` and return the ``_PUT`` script's key and arguments."""
        return self._only_if_args(sid, value, ttl, b"+")

    def replace_args(self, sid: str, value: BytesLike, ttl: Optional[float]
                     ) -> Tuple[str, List[Union[bytes, int]]]:
        """Validate a ``replace`` and return the ``_PUT`` script's key and arguments."""
        return self._only_if_args(sid, value, ttl, b"=")

    def _only_if_args(self, sid: str, value: BytesLike, ttl: Optional[float], mode: bytes
                      ) -> Tuple[str, List[Union[bytes, int]]]:
        # SessionStorage.add's and .replace's order: the id, the ttl, then the value.
        key = self.key(sid)
        ms = self.ttl(ttl)
        return key, [self.value(value), ms, mode]

    def version(self, reply: Any) -> int:
        """The ``_PUT`` script's reply to a write: the new version, or the conflict."""
        n = int(reply)
        if n == -1:
            raise VersionConflict("the session changed since it was read")
        if n == -2:
            raise VersionConflict("the session was deleted or expired since it was read")
        return n

    def record(self, reply: object) -> Optional[Tuple[bytes, int]]:
        """A session's record as Redis returned it -> (value, version), or None."""
        if reply is None:
            return None
        if not isinstance(reply, bytes) or len(reply) < _VERSION_BYTES:
            raise CorruptSegment(
                f"a key under {self.prefix!r} holds something that is not a session record; "
                "is another program writing under this prefix?"
            )
        return reply[_VERSION_BYTES:], int.from_bytes(reply[:_VERSION_BYTES], "big")

    def found(self, reply: object) -> Tuple[bytes, int]:
        record = self.record(reply)
        if record is None:
            raise SessionNotFound("no session with this id (absent or expired)")
        return record

    def stats(self, info: Mapping[str, Any], version: int, deletes: int, entries: int) -> Stats:
        maxmemory = int(info.get("maxmemory", 0))
        used = int(info.get("used_memory", 0))
        return Stats(
            name=self.name,
            size=maxmemory,
            entries=entries,
            max_entries=0,
            table_slots=0,
            heap_size=maxmemory,
            bytes_used=used,
            bytes_free=max(0, maxmemory - used) if maxmemory else 0,
            largest_free=0,
            hits=int(info.get("keyspace_hits", 0)),
            misses=int(info.get("keyspace_misses", 0)),
            writes=version,
            deletes=deletes,
            evictions=int(info.get("evicted_keys", 0)),
            expirations=int(info.get("expired_keys", 0)),
            lock_waits=0,
            lock_wait_seconds=0.0,
            room_writes=0,
            room_evictions=0,
            room_max_evictions=0,
            fragmentation=0.0,
        )


def _check_client(client: object, kind: type, what: str) -> None:
    if not isinstance(client, kind):
        raise InvalidType(
            f"server must be a redis URL or a {what}, not {type(client).__name__}"
        )
    kwargs = client.get_connection_kwargs()  # type: ignore[attr-defined]
    if kwargs.get("decode_responses"):
        raise ValueError(
            "this client decodes responses to str; session values are bytes: pass a client "
            "made without decode_responses=True"
        )


def _consume(data: bytes, consumer: Optional[Callable[[BinaryIO], T]]) -> Union[bytes, T]:
    if consumer is None:
        return data
    return consumer(io.BufferedReader(io.BytesIO(data)))


class RedisSessionStorage:
    """``SessionStorage``'s API on Redis (see the module docstring for what lies where).

    :param name: the store's name (``SessionStorage``'s rules); the default prefix carries it.
    :param server: a URL -- ``redis://[[user]:[password]@]host:port/db``, ``rediss://...``
        (TLS; ``?ssl_ca_certs=PATH`` and other redis-py options go in the query string),
        ``unix:///path/to/redis.sock?db=0`` -- or an open ``redis.Redis``, which the caller
        keeps (``close()`` leaves it open). It must not decode responses.
    :param secret: bytes or str of at least 16 bytes, the same on every host: session ids
        are keyed through it (a handle with another secret sees none of the sessions).
    :param prefix: the prefix of every key of the store (default ``"shmsession:NAME:"``).
    :param ttl: default lifetime of a session in seconds; ``None`` for no expiry.
    :param max_value_size: largest value in bytes (default 1 MiB).
    :param touch_on_read: reads renew the session's expiry by ``ttl`` (sliding expiry).
    """

    def __init__(
        self,
        name: str,
        server: Union[str, "_redis.Redis"] = DEFAULT_URL,
        *,
        secret: Union[bytes, str],
        prefix: Optional[str] = None,
        ttl: Optional[float] = 1800,
        max_value_size: Optional[int] = None,
        touch_on_read: bool = False,
    ) -> None:
        self._c = core = _Core(name, prefix, secret, ttl, max_value_size, touch_on_read)
        self.name = core.name
        self.prefix = core.prefix
        if isinstance(server, str):
            client = _redis.Redis.from_url(server)
            self._owned = True
        else:
            _check_client(server, _redis.Redis, "redis.Redis")
            client = server
            self._owned = False
        self._client: Optional[_redis.Redis] = client
        self._put = client.register_script(_PUT)
        self._delete = client.register_script(_INVALIDATE)
        self._persist = client.register_script(_PERSIST)
        self._slide = client.register_script(_READ_SLIDE)

    @property
    def _r(self) -> "_redis.Redis":
        client = self._client
        if client is None:
            raise StoreClosed("this RedisSessionStorage was closed; open a new one to use the store")
        return client

    def _fetch(self, key: str) -> object:
        r = self._r
        if self._c.slide_ms:
            return self._slide(keys=[key], args=[self._c.slide_ms], client=r)
        return r.get(key)

    # ------------------------------------------------------------------ the public API
    new_id = staticmethod(new_id)

    @overload
    def read(self, sid: str) -> bytes: ...

    @overload
    def read(self, sid: str, consumer: Callable[[BinaryIO], T]) -> T: ...

    def read(self, sid: str, consumer: Optional[Callable[[BinaryIO], T]] = None) -> Union[bytes, T]:
        """See ``SessionStorage.read``.

        :raises SessionNotFound: no such session, or it has expired.
        """
        c = self._c
        return _consume(c.found(self._fetch(c.key(sid)))[0], consumer)

    def read_versioned(self, sid: str) -> Tuple[bytes, int]:
        """See ``SessionStorage.read_versioned``."""
        c = self._c
        return c.found(self._fetch(c.key(sid)))

    def get(self, sid: str, default: Optional[T] = None) -> Union[bytes, T, None]:
        """See ``SessionStorage.get``."""
        c = self._c
        record = c.record(self._fetch(c.key(sid)))
        return default if record is None else record[0]

    def write(
        self,
        sid: str,
        value: Union[BytesLike, Provider],
        ttl: Optional[float] = None,
        *,
        expect: Optional[int] = None,
    ) -> int:
        """See ``SessionStorage.write`` (a provider runs before anything is sent).

        :raises VersionConflict: ``expect`` was given and the session has another version,
            or is gone.
        """
        c = self._c
        key, args = c.write_args(sid, value, ttl, expect)
        return c.version(self._put(keys=[key, c.meta], args=args, client=self._r))

    def add(self, sid: str, value: BytesLike, ttl: Optional[float] = None) -> bool:
        """Store ``value`` only if ``sid`` has no live session; returns whether it did."""
        c = self._c
        key, args = c.add_args(sid, value, ttl)
        return int(self._put(keys=[key, c.meta], args=args, client=self._r)) >= 0

    def replace(self, sid: str, value: BytesLike, ttl: Optional[float] = None) -> bool:
        """Store ``value`` only if ``sid`` has a live session; returns whether it did. See
        ``SessionStorage.replace``: one step in Redis, so a session deleted (logout) or
        expired meanwhile stays gone."""
        c = self._c
        key, args = c.replace_args(sid, value, ttl)
        return int(self._put(keys=[key, c.meta], args=args, client=self._r)) >= 0

    def invalidate(self, sid: str) -> bool:
        """Delete the session; returns whether a live one was there. Idempotent."""
        c = self._c
        key = c.key(sid)
        return bool(self._delete(keys=[key, c.meta], client=self._r))

    def touch(self, sid: str, ttl: Optional[float] = None) -> bool:
        """Renew the session's expiry to ``ttl`` seconds from now; whether it was there."""
        c = self._c
        key = c.key(sid)
        ms = c.ttl(ttl)
        r = self._r
        if ms:
            return bool(r.pexpire(key, ms))
        return bool(self._persist(keys=[key], client=r))

    def __contains__(self, sid: object) -> bool:
        key = self._c.key(sid)
        return bool(self._r.exists(key))

    def __len__(self) -> int:
        """Live sessions of this store (a ``SCAN`` of the keyspace; not for hot paths)."""
        return sum(1 for _ in self._r.scan_iter(match=self._c.pattern, count=_SCAN_COUNT))

    def clear(self) -> None:
        """Delete every session of this store (its keys only, found by ``SCAN``). Versions
        keep growing. Not atomic: a session written while it runs may stay."""
        r = self._r
        batch: List[Any] = []
        for key in r.scan_iter(match=self._c.pattern, count=_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= _UNLINK_BATCH:
                r.unlink(*batch)
                batch.clear()
        if batch:
            r.unlink(*batch)

    def stats(self) -> Stats:
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
        info = r.info("stats", "memory")
        # HINCRBY by 0 reads a counter through Redis's write path, which counts no keyspace
        # hit or miss (HGET would count one, and every stats() would move `hits`).
        version = r.hincrby(meta, "version", 0)
        deletes = r.hincrby(meta, "deletes", 0)
        return self._c.stats(info, int(version), int(deletes), len(self))


    def check(self) -> None:
        """A cheap sanity check: the server answers (``PING``)."""
        self._r.ping()

    def close(self) -> None:
        """Drop this handle (and its connections, when it made its client); the sessions
        stay. Idempotent."""
        client, self._client = self._client, None
        if client is not None and self._owned:
            client.close()

    def unlink(self) -> None:
        """Delete the store: its sessions and its counters (versions start again from 1),
        then close this handle."""
        self.clear()
        self._r.delete(self._c.meta)
        self.close()

    def __enter__(self) -> "RedisSessionStorage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._client is None else "open"
        return f"<RedisSessionStorage {self.name!r} prefix={self.prefix!r}, {state}>"


class AsyncRedisSessionStorage:
    """``AsyncSessionStorage``'s API on ``redis.asyncio``: the parameters of
    :class:`RedisSessionStorage`, ``server`` being a URL or a ``redis.asyncio.Redis``.
    Calls await Redis directly (no threads); a provider or consumer callable runs in the
    event loop's thread, on bytes already in memory."""

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
        self.name = core.name
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
        self._persist = client.register_script(_PERSIST)
        self._slide = client.register_script(_READ_SLIDE)

    @property
    def _r(self) -> "_aioredis.Redis":
        client = self._client
        if client is None:
            raise StoreClosed(
                "this AsyncRedisSessionStorage was closed; open a new one to use the store"
            )
        return client

    async def _fetch(self, key: str) -> object:
        r = self._r
        if self._c.slide_ms:
            return await self._slide(keys=[key], args=[self._c.slide_ms], client=r)
        return await r.get(key)

    new_id = staticmethod(new_id)

    async def read(
        self, sid: str, consumer: Optional[Callable[[BinaryIO], T]] = None
    ) -> Union[bytes, T]:
        """See ``SessionStorage.read``."""
        c = self._c
        return _consume(c.found(await self._fetch(c.key(sid)))[0], consumer)

    async def read_versioned(self, sid: str) -> Tuple[bytes, int]:
        c = self._c
        return c.found(await self._fetch(c.key(sid)))

    async def get(self, sid: str, default: Optional[T] = None) -> Union[bytes, T, None]:
        c = self._c
        record = c.record(await self._fetch(c.key(sid)))
        return default if record is None else record[0]

    async def write(
        self,
        sid: str,
        value: Union[BytesLike, Provider],
        ttl: Optional[float] = None,
        *,
        expect: Optional[int] = None,
    ) -> int:
        """See ``SessionStorage.write``."""
        c = self._c
        key, args = c.write_args(sid, value, ttl, expect)
        return c.version(await self._put(keys=[key, c.meta], args=args, client=self._r))

    async def add(self, sid: str, value: BytesLike, ttl: Optional[float] = None) -> bool:
        c = self._c
        key, args = c.add_args(sid, value, ttl)
        return int(await self._put(keys=[key, c.meta], args=args, client=self._r)) >= 0

    async def replace(self, sid: str, value: BytesLike, ttl: Optional[float] = None) -> bool:
        """See ``RedisSessionStorage.replace``."""
        c = self._c
        key, args = c.replace_args(sid, value, ttl)
        return int(await self._put(keys=[key, c.meta], args=args, client=self._r)) >= 0

    async def invalidate(self, sid: str) -> bool:
        c = self._c
        key = c.key(sid)
        return bool(await self._delete(keys=[key, c.meta], client=self._r))

    async def touch(self, sid: str, ttl: Optional[float] = None) -> bool:
        c = self._c
        key = c.key(sid)
        ms = c.ttl(ttl)
        r = self._r
        if ms:
            return bool(await r.pexpire(key, ms))
        return bool(await self._persist(keys=[key], client=r))

    async def contains(self, sid: str) -> bool:
        """``sid in store`` (``in`` cannot await)."""
        key = self._c.key(sid)
        return bool(await self._r.exists(key))

    async def len(self) -> int:
        """``len(store)`` (``len`` cannot await); a ``SCAN``, not for hot paths."""
        n = 0
        async for _ in self._r.scan_iter(match=self._c.pattern, count=_SCAN_COUNT):
            n += 1
        return n

    async def clear(self) -> None:
        """See ``RedisSessionStorage.clear``."""
        r = self._r
        batch: List[Any] = []
        async for key in r.scan_iter(match=self._c.pattern, count=_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= _UNLINK_BATCH:
                await r.unlink(*batch)
                batch.clear()
        if batch:
            await r.unlink(*batch)

    async def stats(self) -> Stats:
        """See ``RedisSessionStorage.stats``."""
        r = self._r
        meta = self._c.meta
        info = await r.info("stats", "memory")
        version = await r.hincrby(meta, "version", 0)  # no keyspace hit: see the sync store
        deletes = await r.hincrby(meta, "deletes", 0)
        return self._c.stats(info, int(version), int(deletes), await self.len())

    async def check(self) -> None:
        """A cheap sanity check: the server answers (``PING``)."""
        await self._r.ping()

    async def close(self) -> None:
        """See ``RedisSessionStorage.close``."""
        client, self._client = self._client, None
        if client is not None and self._owned:
            await client.aclose()

    async def unlink(self) -> None:
        """See ``RedisSessionStorage.unlink``."""
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


if TYPE_CHECKING:  # mypy holds both classes to the protocols every store meets

    def _conforms(s: RedisSessionStorage, a: AsyncRedisSessionStorage) -> Tuple[Store, AsyncStore]:
        return s, a
