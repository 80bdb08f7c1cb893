"""A cachelib cache in a shmsession store: every worker process on the host shares it.

:class:`ShmCache` is a :class:`cachelib.BaseCache`, so whatever takes a cachelib cache takes
it unchanged: Flask-Session (``SESSION_TYPE = "cachelib"``, ``SESSION_CACHELIB =
ShmCache("myapp-sessions")``) and Flask-Caching 2.5+ (``CACHE_TYPE =
"shmsession.contrib.cachelib.ShmCache"``, ``CACHE_OPTIONS = {"name": "myapp-cache"}``).

cachelib's vocabulary, translated:

* ``timeout``: ``None`` is ``default_timeout``; ``0`` never expires (``math.inf`` in the
  store: the opposite of Django's ``0``); a negative timeout is already expired, so ``set``
  removes the key. An ``int``, a ``float`` or a :class:`datetime.timedelta` (floats are
  taken as they are, without cachelib's deprecation warning).
* Values go through ``self.serializer`` (cachelib's pickle ``BaseSerializer`` unless you set
  another, e.g. ``JSONSerializer``). Pickle runs code on load: the store is readable only by
  processes of your own user (the segment is mode 0600), so only they can plant a value.
* Keys: any ``str``. A key (with ``key_prefix``) of 1 to 1024 bytes of UTF-8 is the store's
  id as it is; any other (empty, longer, not encodable, or starting with NUL) is replaced by
  NUL + its SHA-256, a form no kept-as-is key takes.
* ``add`` is the store's atomic ``add``; ``inc``/``dec`` are the adapters' shared
  compare-and-set loop (``read_versioned``, then ``write(expect=)``, or ``add`` for a missing
  key), so concurrent increments from any process lose nothing. Like every cachelib cache's
  ``inc``, they give the key ``default_timeout``.
* ``set`` of a value the store cannot hold (over ``max_value_size``; full with
  ``when_full="raise"``) returns ``False`` and removes the key's previous value, so the
  cache never answers with a stale one.
* ``clear()`` empties the whole store, whatever ``key_prefix`` is: give a cache its own store.

The cache holds no storage logic: each call is a store call or two (a short retry loop
for ``inc``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from typing import Any, List, Optional, Tuple, Union

from .._errors import StoreFull, ValueTooLarge, VersionConflict, missing_extra
from ..store import SessionStorage
from ._store import Store, read_modify_write

try:
    from cachelib.base import BaseCache
    from cachelib.serializers import BaseSerializer
except ImportError as exc:  # pragma: no cover - the extra is installed wherever tests run
    raise missing_extra("cachelib", "cachelib") from exc

__all__ = ["ShmCache", "Store"]


Timeout = Union[int, float, dt.timedelta, None]

_HASHED = "\0"  # first character of a hashed key; no key kept as it is starts with it


class ShmCache(BaseCache):
    """A cachelib cache kept in the shmsession store ``name`` (or in ``store``).

    :param name: the store to create or attach to; ``options`` (``size``, ``max_entries``,
        ``max_value_size``, ``when_full``, ``lock_timeout``...) go to
        :class:`~shmsession.SessionStorage`. Give either ``name`` or ``store``.
    :param default_timeout: seconds (or a ``timedelta``) for a ``timeout`` of ``None``;
        ``0`` never expires.
    :param key_prefix: put before every key, to share a store between caches.
    :param ignore_delete_many_errors: cachelib's option; ``delete_many`` never fails here
        (a key is absent after ``invalidate``), so it changes nothing.
    :param store: an open store (anything with ``SessionStorage``'s methods) to use
        instead of opening ``name``; it stays the caller's to close.
    """

    #: Turns a value into bytes and back (``dumps``/``loads``): cachelib's pickle
    #: ``BaseSerializer``, unless set to another (``JSONSerializer``...).
    serializer = BaseSerializer()

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        default_timeout: Union[int, float, dt.timedelta] = 300,
        key_prefix: str = "",
        ignore_delete_many_errors: bool = True,
        store: Optional[Store] = None,
        **options: Any,
    ) -> None:
        if (name is None) == (store is None):
            raise TypeError("give ShmCache either a store name or store=, not both or neither")
        if store is not None and options:
            raise TypeError(f"options {sorted(options)} are for opening a store by name")
        # BaseCache.__init__ only stores the timeout (and warns on floats): set both here.
        BaseCache.__init__(self, 0)
        seconds = self._seconds(default_timeout)
        if seconds < 0:
            raise ValueError(f"default_timeout must be >= 0 (0: never expire), got {seconds}")
        self.default_timeout: float = seconds  # type: ignore[assignment]
        self.ignore_delete_many_errors = ignore_delete_many_errors
        self.key_prefix = key_prefix
        self._opened: Optional[SessionStorage] = None
        if store is None:
            assert name is not None
            store = self._opened = SessionStorage(name, **options)
        self._store: Store = store

    @property
    def store(self) -> Store:
        """The store this cache keeps its values in."""
        return self._store

    def close(self) -> None:
        """Detach from the store if this cache opened it (the values stay in it)."""
        if self._opened is not None:
            self._opened.close()

    # ------------------------------------------------------------------ translation
    @staticmethod
    def _seconds(timeout: Union[int, float, dt.timedelta]) -> float:
        if isinstance(timeout, dt.timedelta):
            return timeout.total_seconds()
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(
                f"timeout must be a number of seconds or a timedelta, not {type(timeout).__name__}"
            )
        return timeout

    def _ttl(self, timeout: Timeout) -> float:
        """The store ttl of a cachelib timeout: ``math.inf`` for never, ``<= 0`` for expired."""
        seconds = self.default_timeout if timeout is None else self._seconds(timeout)
        return math.inf if seconds == 0 else seconds

    def _id(self, key: str) -> str:
        if not isinstance(key, str):
            raise TypeError(f"a cache key must be a str, not {type(key).__name__}")
        full = self.key_prefix + key
        try:
            size = len(full.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates
            size = 0
        if 0 < size <= SessionStorage.MAX_ID_BYTES and not full.startswith(_HASHED):
            return full
        return _HASHED + hashlib.sha256(full.encode("utf-8", "surrogatepass")).hexdigest()

    # ------------------------------------------------------------------ cachelib API
    def get(self, key: str) -> Any:
        """The value of ``key``, or ``None`` when it is absent, expired or unreadable."""
        raw = self._store.get(self._id(key))
        return None if raw is None else self.serializer.loads(raw)

    def set(self, key: str, value: Any, timeout: Timeout = None) -> bool:
        """Store ``value`` under ``key``; ``False`` when the store cannot hold it."""
        sid = self._id(key)
        ttl = self._ttl(timeout)
        data = self.serializer.dumps(value)
        if data is None:  # the serializer could not pickle it (and logged why)
            return False
        if ttl < 0:  # already expired: cachelib stores it unreadable; nothing to keep here
            self._store.invalidate(sid)
            return True
        try:
            self._store.write(sid, data, ttl)
        except (ValueTooLarge, StoreFull):
            self._store.invalidate(sid)  # never answer later with the value this replaced
            return False
        return True

    def add(self, key: str, value: Any, timeout: Timeout = None) -> bool:
        """Store ``value`` only if ``key`` has no live value (atomically); whether it did."""
        sid = self._id(key)
        ttl = self._ttl(timeout)
        data = self.serializer.dumps(value)
        if data is None:
            return False
        if ttl < 0:
            return sid not in self._store
        try:
            return self._store.add(sid, data, ttl)
        except (ValueTooLarge, StoreFull):
            return False

    def delete(self, key: str) -> bool:
        """Remove ``key``; whether it had a live value."""
        return self._store.invalidate(self._id(key))

    def delete_many(self, *keys: str) -> List[str]:
        """Remove every key; all of them are absent afterwards, so all are returned."""
        for key in keys:
            self._store.invalidate(self._id(key))
        return list(keys)

    def has(self, key: str) -> bool:
        """Whether ``key`` has a live value (without reading it)."""
        return self._id(key) in self._store

    def clear(self) -> bool:
        """Empty the whole store (every key, whatever its prefix). Returns ``True``."""
        self._store.clear()
        return True

    def inc(self, key: str, delta: int = 1) -> Optional[int]:
        """Add ``delta`` to the value of ``key`` (missing: 0) atomically across processes;
        returns the new value, or ``None`` (cachelib's backend error) if the store could not
        hold it or other writers kept changing it (``MAX_CAS_ATTEMPTS`` rounds)."""
        sid = self._id(key)

        def add_delta(raw: Optional[bytes]) -> Tuple[bytes, int]:
            value: int = delta if raw is None else (self.serializer.loads(raw) or 0) + delta
            data: Optional[bytes] = self.serializer.dumps(value)
            if data is None:  # the serializer could not (and logged why)
                raise _Unserializable
            return data, value

        try:
            return read_modify_write(self._store, sid, add_delta, self._ttl(None))
        except (_Unserializable, ValueTooLarge, StoreFull, VersionConflict):
            return None

    def dec(self, key: str, delta: int = 1) -> Optional[int]:
        """Subtract ``delta`` from the value of ``key`` (missing: 0); see :meth:`inc`."""
        return self.inc(key, -delta)


class _Unserializable(Exception):
    """``inc`` gives up: the serializer returned ``None`` for the new value."""
