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
* ``PREFIX so:HEX`` -- a session's owner link, only for a session with an owner: a
  one-element list holding the hex of the owner's keyed digest (``_rules.owner_digest``,
  under the same derived key as the ids), with the session's expiry.
* ``PREFIX o:OWNERHEX`` -- an owner's index: a sorted set of its sessions' hex digests,
  scored by the time (microseconds) each became the owner's, with an expiry no shorter than
  its longest session's (none while one never expires). Members of sessions gone or moved
  are dropped lazily, by ``sessions_of``, ``invalidate_owner`` and a write at the owner's
  cap; the link decides whose a session is.

Every write is one Lua script (``EVALSHA``, loaded again by redis-py when the server has
forgotten it): checking what the write depends on (the version a compare-and-set expects,
no session for ``add``, a live one for ``replace``), taking a version and storing the record
happen as one step against every other client.
Needs Redis 7.0 or later (``PEXPIRE ... XX`` for ``touch_on_read``); not Redis Cluster (a
write touches two keys of different slots).

Owners cost in proportion to the owner's sessions, never a ``SCAN``. They are only as
sound as Redis keeps every key: under a ``maxmemory`` eviction policy Redis may evict a link
or an index and not its session, which ``invalidate_owner`` then misses; a store whose owners
are revoked wants ``maxmemory-policy noeviction`` (or no ``maxmemory``).

Differences from the shared-memory store, all where Redis decides: expiry is Redis's own
(millisecond precision, rounded up); ``len()``, ``clear()`` and ``stats().entries`` walk the
keyspace with ``SCAN`` (``clear()`` is not atomic against writes made while it runs); errors
of the connection are redis-py's own (``redis.ConnectionError``...); ``unlink()`` deletes the
store's keys, and other handles just find it empty.

``AsyncRedisSessionStorage`` awaits ``redis.asyncio`` directly (no threads); a provider or
consumer callable runs in the event loop's thread, on bytes already in memory.

One source for the twins: ``_async.py`` holds ``AsyncRedisSessionStorage``, and ``_sync.py``
(``RedisSessionStorage``) is generated from it by ``scripts/unasync.py`` (edit the async one
and run the script; ``tests/unit/test_unasync.py`` fails when ``_sync.py`` is stale). What does no
I/O -- the Lua scripts, validation, keys, records, replies -- is ``_core.py``'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Tuple

from .._errors import missing_extra

try:
    import redis  # noqa: F401 - the two stores import it; a missing extra is said here, once
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    raise missing_extra("redis", "redis-py") from None

from ._async import AsyncRedisSessionStorage
from ._core import DEFAULT_MAX_VALUE as DEFAULT_MAX_VALUE
from ._core import DEFAULT_URL as DEFAULT_URL
from ._core import _glob_escape as _glob_escape  # the tests remove their keys by it
from ._sync import RedisSessionStorage

__all__ = ["AsyncRedisSessionStorage", "RedisSessionStorage"]

if TYPE_CHECKING:  # mypy holds both classes to the protocols every store meets
    from .._types import AsyncStore, Store

    def _conforms(s: RedisSessionStorage, a: AsyncRedisSessionStorage) -> Tuple[Store, AsyncStore]:
        return s, a
