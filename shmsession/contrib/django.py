"""Django on a shmsession store: a session engine and a cache backend.

Sessions, in ``settings.py``::

    SESSION_ENGINE = "shmsession.contrib.django"
    SHMSESSION = {"name": "myapp-sessions", "size": 64 * 2**20}   # options go to SessionStorage

A cache (Django's own ``cache`` and ``cached_db`` session engines work on it too)::

    CACHES = {
        "default": {
            "BACKEND": "shmsession.contrib.django.ShmCache",
            "LOCATION": "myapp-cache",                 # the store's name
            "OPTIONS": {"size": 64 * 2**20},           # options go to SessionStorage
            "TIMEOUT": 300,
        }
    }

Instead of a name (with options), ``SHMSESSION = {"store": obj}`` and ``"LOCATION": obj`` take
a store object you opened: a :class:`~shmsession.SessionStorage`, or anything with its
methods. Give the sessions and each cache a store of their own: ``cache.clear()`` empties the
whole store.

Each process opens one handle per store name and options, on first use, and keeps it for
its life: threads share it, and a handle opened before a fork (gunicorn ``--preload``) serves
the child too. The session engine's async methods (Django 5.0+) run each store operation in
a worker thread; the cache's are Django's own, which do the same with its sync methods.

Owners: each save of a session records the user ``django.contrib.auth`` logged in to it
(the id under ``SESSION_KEY``, ``"_auth_user_id"``) as its owner, with no setting;
:func:`sessions_of_user` lists a user's sessions and :func:`logout_everywhere` ends them
(after a password change, or from a "log out my other devices" button).

The adapters hold no storage logic: they translate Django's vocabulary into the store's
``get``/``write``/``add``/``replace``/``invalidate``/``touch``/``clear`` and
``sessions_of``/``invalidate_owner`` (and the adapters' shared compare-and-set loop for
``incr``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import os
import pickle
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar, Union, cast

from .._errors import InvalidSessionId, missing_extra
from .._types import SessionInfo
from ..store import SessionStorage
from ._store import Store, read_modify_write

try:
    from django.conf import settings
    from django.contrib.auth import SESSION_KEY
    from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
    from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, InvalidCacheKey
    from django.core.exceptions import ImproperlyConfigured
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise missing_extra("django", "django") from exc

__all__ = ["SessionStore", "ShmCache", "close_stores", "logout_everywhere", "sessions_of_user"]

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# One handle per process for each store name and options
# ---------------------------------------------------------------------------------------------

_handles: Dict[Tuple[str, Tuple[Tuple[str, Any], ...]], SessionStorage] = {}
_handles_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A fork while another thread held the lock would leave it held forever in the child.
    # The handles themselves stay valid: SessionStorage re-opens its descriptor after fork.
    global _handles_lock
    _handles_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _open(location: object, options: Mapping[str, Any], setting: str) -> Store:
    """The store that ``location`` (a name, or a store object) and ``options`` designate."""
    if not isinstance(location, str):
        if location is None:
            raise ImproperlyConfigured(f"{setting} must name a shmsession store")
        if options:
            raise ImproperlyConfigured(
                f"{setting}: options go to SessionStorage(name, ...), so they come with a "
                "store name, not with a store object"
            )
        return cast(Store, location)
    if not location:
        raise ImproperlyConfigured(f"{setting} must name a shmsession store, not be empty")
    key = (location, tuple(sorted(options.items())))
    store = _handles.get(key)
    if store is None:
        with _handles_lock:
            store = _handles.get(key)
            if store is None:
                store = _handles[key] = SessionStorage(location, **options)
    return store


def close_stores() -> None:
    """Close every handle this module opened in this process (at shutdown, or between
    tests). Sessions and cache entries stay in the stores; the next use opens new handles.
    Cache objects made before the call keep their closed handle: get new ones from
    ``django.core.cache.caches``."""
    global _session_memo
    with _handles_lock:
        handles = list(_handles.values())
        _handles.clear()
        _session_memo = None
    for store in handles:
        store.close()


async def _offload(fn: Callable[..., T], *args: Any) -> T:
    """The async dispatch: ``fn(*args)`` -- whole store operations, never a lock held across
    an ``await`` -- in a worker thread of the running loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(fn, *args))


# ---------------------------------------------------------------------------------------------
# The session engine
# ---------------------------------------------------------------------------------------------

_session_memo: Optional[Tuple[object, Store]] = None


def _session_store() -> Store:
    """The store ``settings.SHMSESSION`` names, opened once per process (and again when the
    setting is replaced, as ``override_settings`` does)."""
    global _session_memo
    conf = getattr(settings, "SHMSESSION", None)
    memo = _session_memo
    if memo is not None and memo[0] is conf:
        return memo[1]
    if not isinstance(conf, Mapping):
        raise ImproperlyConfigured(
            'SESSION_ENGINE "shmsession.contrib.django" needs SHMSESSION = {"name": ..., '
            '"size": ...} (options of SessionStorage), or {"store": <a store object>}, in '
            "settings"
        )
    options = dict(conf)
    if "store" in options:
        store = _open(options.pop("store"), options, 'SHMSESSION["store"]')
    else:
        store = _open(options.pop("name", None), options, 'SHMSESSION["name"]')
    _session_memo = (conf, store)
    return store


def _ttl_of_age(age: float) -> float:
    """The store ttl for a session expiring in ``age`` seconds; 0 when it has expired."""
    return age if age > 0 else 0


def _load(store: Store, key: Optional[str]) -> Optional[bytes]:
    if key is None:
        return None
    try:
        return store.get(key)
    except InvalidSessionId:  # a cookie no store takes
        return None


def _owner(session: Mapping[str, Any]) -> Optional[str]:
    """The owner a save records: the id of the user ``django.contrib.auth`` logged in to
    ``session``; ``None`` (no user) keeps the owner the session has."""
    user_id = session.get(SESSION_KEY)
    return None if user_id is None else str(user_id)


def _create(store: Store, key: str, data: bytes, ttl: float, owner: Optional[str]) -> None:
    """Store a new session; :class:`CreateError` when ``key`` is taken."""
    if ttl:
        if not store.add(key, data, ttl, owner=owner):
            raise CreateError
    elif key in store:  # an already expired session: nothing to store, but the key is taken
        raise CreateError


def _replace(store: Store, key: str, data: bytes, ttl: float, owner: Optional[str]) -> None:
    """Overwrite the live session ``key`` (the last save wins, as Django expects).

    :raises UpdateError: the session is gone (deleted or expired): it is not resurrected.
    """
    try:
        if ttl:
            # One atomic step: a logout that lands while this request runs makes the save
            # fail instead of being undone by it.
            saved = store.replace(key, data, ttl, owner=owner)
        else:  # the session expires now: saving it removes it
            saved = store.invalidate(key)
    except InvalidSessionId:  # a key no store takes names no session
        saved = False
    if not saved:
        raise UpdateError


def _exists(store: Store, key: Optional[str]) -> bool:
    if not key:
        return False
    try:
        return key in store
    except InvalidSessionId:
        return False


def _delete(store: Store, key: str) -> None:
    try:
        store.invalidate(key)
    except InvalidSessionId:
        pass


class SessionStore(SessionBase):
    """Django sessions in the shmsession store named by ``settings.SHMSESSION``.

    Session data is encoded as Django's database and file engines encode it (the
    ``SESSION_SERIALIZER``, signed and compressed). Expiry is the store's: a session lives
    ``get_expiry_age()`` seconds from its last save, so ``clear_expired`` has nothing to do.
    """

    # -- translation between the two vocabularies (no I/O) ------------------------------------
    def _decoded(self, key: Optional[str], data: Optional[bytes]) -> Dict[str, Any]:
        if key is None or data is None:
            self._session_key = None
            return {}
        # latin-1 decodes any bytes; what is not Django's encoding fails the signature check
        # in decode(), which logs it and gives an empty session.
        return self.decode(data.decode("latin-1"))

    def _encoded(self, session: Dict[str, Any]) -> bytes:
        return self.encode(session).encode("ascii")

    # -- SessionBase ---------------------------------------------------------------------------
    def load(self) -> Dict[str, Any]:
        key = self._session_key
        return self._decoded(key, _load(_session_store(), key))

    def exists(self, session_key: Optional[str]) -> bool:
        return _exists(_session_store(), session_key)

    def create(self) -> None:
        for _ in range(10000):  # as Django's cache engine; 32 random characters do not collide
            self._session_key = cast(Any, self)._get_new_session_key()
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return
        raise RuntimeError("Unable to create a new session key in the shmsession store.")

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        session = cast(Any, self)._get_session(no_load=must_create)
        data = self._encoded(session)
        key = self.session_key  # loading above clears a key whose session is gone
        if key is None:
            raise UpdateError
        ttl = _ttl_of_age(self.get_expiry_age())
        store = _session_store()
        if must_create:
            _create(store, key, data, ttl, _owner(session))
        else:
            _replace(store, key, data, ttl, _owner(session))

    def delete(self, session_key: Optional[str] = None) -> None:
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        _delete(_session_store(), session_key)

    @classmethod
    def clear_expired(cls) -> None:
        """Nothing to do: the store drops expired sessions by itself."""

    # -- the async twins (Django 5.0+) ---------------------------------------------------------
    async def aload(self) -> Dict[str, Any]:
        key = self._session_key
        return self._decoded(key, await _offload(_load, _session_store(), key))

    async def aexists(self, session_key: Optional[str]) -> bool:
        return await _offload(_exists, _session_store(), session_key)

    async def acreate(self) -> None:
        for _ in range(10000):
            self._session_key = await cast(Any, self)._aget_new_session_key()
            try:
                await self.asave(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return
        raise RuntimeError("Unable to create a new session key in the shmsession store.")

    async def asave(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return await self.acreate()
        session = await cast(Any, self)._aget_session(no_load=must_create)
        data = self._encoded(session)
        key = self.session_key
        if key is None:
            raise UpdateError
        ttl = _ttl_of_age(await self.aget_expiry_age())
        store = _session_store()
        if must_create:
            await _offload(_create, store, key, data, ttl, _owner(session))
        else:
            await _offload(_replace, store, key, data, ttl, _owner(session))

    async def adelete(self, session_key: Optional[str] = None) -> None:
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        await _offload(_delete, _session_store(), session_key)

    @classmethod
    async def aclear_expired(cls) -> None:
        """Nothing to do: the store drops expired sessions by itself."""


def _owner_of_user(user: Any) -> Optional[str]:
    """The owner of ``user``'s sessions: the id ``django.contrib.auth.login`` stores under
    ``SESSION_KEY`` for a user object, ``str(user)`` for a primary key; ``None`` for an
    anonymous or unsaved user, who has no sessions."""
    if getattr(user, "is_anonymous", False) is True:
        return None
    meta = getattr(user, "_meta", None)
    if meta is None:
        return str(user)
    if user.pk is None:
        return None
    return str(meta.pk.value_to_string(user))


def sessions_of_user(user: Any) -> List[SessionInfo]:
    """The live sessions of ``user`` (a user object, or its primary key) in the engine's
    store, oldest first: digest, size, age, time left, version -- never session keys.

    Only sessions of this engine (``SESSION_ENGINE = "shmsession.contrib.django"``) have
    owners; an anonymous user has none.
    """
    owner = _owner_of_user(user)
    return [] if owner is None else _session_store().sessions_of(owner)


def logout_everywhere(user: Any, *, keep: Union[SessionBase, str, None] = None) -> int:
    """Delete every session of ``user`` (a user object, or its primary key) but ``keep``
    (``request.session``, or a session key: the one to stay logged in), and return how many
    were deleted. Their cookies are anonymous from then on; a request of one of them that is
    running does not save it back.
    """
    owner = _owner_of_user(user)
    if owner is None:
        return 0
    kept = keep.session_key if isinstance(keep, SessionBase) else keep
    return _session_store().invalidate_owner(owner, keep=kept)


# ---------------------------------------------------------------------------------------------
# The cache backend
# ---------------------------------------------------------------------------------------------


def _store_id(key: str) -> str:
    """The store id for a cache key: the key itself, or, when the store cannot take it (over
    ``SessionStorage.MAX_ID_BYTES`` of UTF-8, or not encodable), ``sha256-`` and its digest in
    hex. Django's key function always puts ``:`` in its keys and the digest form has none, so
    the two forms never meet."""
    try:
        raw = key.encode()
    except UnicodeEncodeError:  # lone surrogates
        raw = key.encode("utf-8", "surrogatepass")
    else:
        if 0 < len(raw) <= SessionStorage.MAX_ID_BYTES:
            return key
    return "sha256-" + hashlib.sha256(raw).hexdigest()


class ShmCache(BaseCache):
    """A Django cache backend on a shmsession store, shared by every process that names it.

    ``LOCATION`` is the store's name (or a store object); ``OPTIONS`` go to
    :class:`~shmsession.SessionStorage` (``size``, ``max_entries``, ``when_full``...): a full
    store evicts expired entries, then the least recently used ones, unless
    ``when_full="raise"``. Values are pickled. Timeouts follow Django: ``0`` or less stores
    nothing (and removes what was there), ``None`` keeps the entry until it is deleted or
    evicted. ``incr``/``decr`` are atomic across processes (the adapters' compare-and-set
    loop; ``VersionConflict`` if it keeps losing) and, as in Django's ``BaseCache``, give the
    entry the default timeout. Every ``str`` key works (keys over the store's 1024 bytes are
    hashed); like Django's own backends other than memcached, a key memcached would refuse
    (over 250 characters, spaces or control characters) is stored with a
    ``CacheKeyWarning``. ``close()`` keeps the process's handle open (Django calls it after
    each request).
    """

    #: The pickle protocol of the values (as in Django's file, database and local-memory
    #: caches).
    pickle_protocol = pickle.HIGHEST_PROTOCOL

    def __init__(self, location: Union[str, Store], params: Dict[str, Any]) -> None:
        options = dict(params.get("OPTIONS") or {})
        for django_option, ours in (("MAX_ENTRIES", "max_entries"), ("CULL_FREQUENCY", None)):
            if django_option in options:
                hint = f'use "{ours}"' if ours else "the store evicts by itself (when_full)"
                raise ImproperlyConfigured(
                    f"ShmCache OPTIONS: {django_option} is not an option of this backend; {hint}"
                )
        super().__init__(params)
        self._store: Store = _open(location, options, "ShmCache LOCATION")

    # -- translation ---------------------------------------------------------------------------
    def validate_key(self, key: Any) -> None:
        """Warn as ``LocMemCache`` does (Django's ``BaseCache.validate_key``: a
        ``CacheKeyWarning`` for a key memcached would refuse); the key is stored all the same.

        :raises InvalidCacheKey: ``key`` (what ``KEY_FUNCTION`` made) is not a ``str``.
        """
        if not isinstance(key, str):
            raise InvalidCacheKey(f"cache keys must be str, not {type(key).__name__}")
        super().validate_key(key)

    def _id(self, key: Any, version: Optional[int]) -> str:
        return _store_id(self.make_and_validate_key(key, version=version))

    def _ttl(self, timeout: Any) -> float:
        """Store ttl for a Django timeout: ``math.inf`` for None, 0 for "do not store"."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return math.inf
        return float(timeout) if timeout > 0 else 0

    def _dumps(self, value: Any) -> bytes:
        return pickle.dumps(value, self.pickle_protocol)

    # -- BaseCache -----------------------------------------------------------------------------
    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None
    ) -> bool:
        sid = self._id(key, version)
        data = self._dumps(value)
        ttl = self._ttl(timeout)
        if ttl:
            return self._store.add(sid, data, ttl)
        # Added and expired at once: nothing is stored, and it "was added" if it was absent.
        return sid not in self._store

    def get(self, key: Any, default: Any = None, version: Optional[int] = None) -> Any:
        raw = self._store.get(self._id(key, version))
        return default if raw is None else pickle.loads(raw)

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None
    ) -> None:
        sid = self._id(key, version)
        data = self._dumps(value)
        ttl = self._ttl(timeout)
        if ttl:
            self._store.write(sid, data, ttl)
        else:
            self._store.invalidate(sid)

    def touch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None
    ) -> bool:
        sid = self._id(key, version)
        ttl = self._ttl(timeout)
        return self._store.touch(sid, ttl) if ttl else self._store.invalidate(sid)

    def delete(self, key: Any, version: Optional[int] = None) -> bool:
        return self._store.invalidate(self._id(key, version))

    def has_key(self, key: Any, version: Optional[int] = None) -> bool:
        return self._id(key, version) in self._store

    def incr(self, key: Any, delta: int = 1, version: Optional[int] = None) -> Any:
        sid = self._id(key, version)
        ttl = self._ttl(DEFAULT_TIMEOUT)

        def add_delta(raw: Optional[bytes]) -> Tuple[bytes, Any]:
            if raw is None:
                raise ValueError(f"Key '{key}' not found")
            value = pickle.loads(raw) + delta
            return self._dumps(value), value

        if not ttl:  # the default timeout keeps nothing: the new value is not stored
            value = add_delta(self._store.get(sid))[1]
            self._store.invalidate(sid)
            return value
        return read_modify_write(self._store, sid, add_delta, ttl)

    def clear(self) -> None:
        """Empty the whole store (every key prefix and version in it)."""
        self._store.clear()

    def close(self, **kwargs: Any) -> None:
        """Keep the handle: it is this process's, shared by threads and reused by requests."""
