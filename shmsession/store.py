"""``SessionStorage``: the shared-memory session store, and the only layer that takes the lock.

Arguments are validated and digested before the lock is taken; every change then runs as:
lock, repair what a dead writer left (if anything), one journaled transaction, unlock.
Reads take no lock where the processor allows it (a seqlock, see ``_reader``) and fall back to
the locked path for anything that must write. Callbacks (the streaming forms of ``read``
and ``write``) run outside the lock. The parts: the segment (``_attach``), the lock and the
reader (``_access``), the operations on the bytes (``_engine``).
"""

from __future__ import annotations

import io
import time
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Tuple, TypeVar, Union, overload

from . import _dump
from . import _layout as L
from . import _build, _segment
from ._access import Access
from ._attach import check_options, open_segment
from ._digests import Digests
from ._engine import Engine, engine_stats
from ._errors import CorruptSegment, SessionNotFound, ShmSessionError
from ._rules import (
    BytesLike, Provider, check_digest, check_expect, check_keep, check_name, check_value,
    new_id,
)
from ._rules import ttl_ns as _ttl_ns  # "ttl_ns" names the nanoseconds in the methods
from ._types import SessionInfo, Stats

__all__ = ["SessionInfo", "SessionStorage", "Stats"]  # the types re-exported from _types

T = TypeVar("T")

_monotonic_ns = time.monotonic_ns
_SLOW = getattr(_build.hot, "SLOW", object())  # the compiled path's "take the Python path"


class SessionStorage:
    """A session store in a POSIX shared-memory segment, shared by every process that opens
    the same ``name`` on this host.

    ``SessionStorage(name)`` creates the segment or attaches to it. Size-related options
    (``size``, ``max_entries``, ``max_value_size``) fix the segment's geometry when it is
    created; given to an existing segment they must match it (:class:`SegmentMismatch`).
    The others (``ttl``, ``when_full``, ``lock_timeout``, ``touch_on_read``) belong to
    this handle and are not checked against the segment or other handles: ``ttl`` is the
    default lifetime of this handle's own writes and touches, and ``when_full`` decides
    what this handle's writes do on a full store, so handles given different ones each
    follow their own.

    :param name: 1-100 characters of ``A-Za-z0-9._-``; the segment is
        ``/dev/shm/shmsession.NAME``.
    :param size: bytes of shared memory, all reserved at creation: at least 1 MiB
        (1048576); default 32 MiB.
    :param max_entries: most sessions held at once (default ``size // 1024``, at least 16).
    :param ttl: default lifetime of a session in seconds; ``None`` for no expiry.
    :param max_value_size: largest value in bytes (default ``min(1 MiB, size // 16)``): at
        least 1 and under 4 GiB, and what ``size`` leaves after the journal (which holds
        one value's old bytes) and the table must hold two such values and 64 KiB at least;
        :class:`InvalidOption` names what is missing.
    :param when_full: ``"evict"`` (expired sessions first, then least recently used) or
        ``"raise"`` (:class:`StoreFull` once no expired session can be reclaimed).
    :param lock_timeout: seconds to wait for the lock before :class:`LockTimeout` (at most
        ``threading.TIMEOUT_MAX``). The default, ``None``, waits in the kernel for as long
        as it takes: a holder keeps the lock for microseconds, the kernel drops it when the
        holder dies, and a wait costs one wake-up. A timeout guards against a holder that
        is stopped (SIGSTOP, a debugger) at the price of a helper thread per contended wait
        (see ``_lock``).
    :param touch_on_read: reads renew the session's expiry by ``ttl`` (sliding expiry).
    :param create: ``False`` to attach only (raise if the store does not exist).
    """

    #: The longest session id, in bytes of UTF-8, that the store accepts.
    MAX_ID_BYTES = L.MAX_ID_BYTES

    @property
    def _max_owner_sessions(self) -> int:
        # Live sessions an owner keeps at most: MAX_OWNER_SESSIONS, which the contract tests
        # lower (the Redis stores' attribute of the same name).
        return self._engine.max_owner_sessions

    @_max_owner_sessions.setter
    def _max_owner_sessions(self, cap: int) -> None:
        self._engine.max_owner_sessions = cap

    def __init__(
        self,
        name: str,
        *,
        size: Optional[int] = None,
        max_entries: Optional[int] = None,
        ttl: Optional[float] = 1800,
        max_value_size: Optional[int] = None,
        when_full: str = "evict",
        lock_timeout: Optional[float] = None,
        touch_on_read: bool = False,
        create: bool = True,
        _secret: Optional[bytes] = None,
    ) -> None:
        check_options(name, size, max_entries, max_value_size, when_full, lock_timeout)
        #: The store's name, as given.
        self.name = name
        self._default_ttl_ns = 0 if ttl is None else _ttl_ns(ttl)
        self._options = dict(  # for __reduce__
            size=size, max_entries=max_entries, ttl=ttl, max_value_size=max_value_size,
            when_full=when_full, lock_timeout=lock_timeout, touch_on_read=touch_on_read,
        )
        seg, geo, secret = open_segment(
            name, size, max_entries, max_value_size, create=create,
            timeout=10.0 if lock_timeout is None else lock_timeout, secret=_secret,
        )
        self._seg = seg
        self._geo = geo
        self._max_value = geo.max_value
        self._secret = secret  # what the digests are keyed with (a snapshot carries it)
        self._digests = Digests(secret)
        self._engine = engine = Engine(
            seg.buf, geo, name, evict=when_full == "evict", touch_on_read=bool(touch_on_read),
            default_ttl_ns=self._default_ttl_ns,
        )
        #: Whether this handle created the segment (``False``: it attached to one that existed).
        self.created = seg.created
        # The parts an operation calls, each held here: ``self._reader.find(...)`` costs
        # less than a bound method kept as an attribute (CPython 3.11 specialises a method
        # looked up on a type, not a callable found in an instance's dict).
        self._access = access = Access(seg, engine, secret, lock_timeout)
        self._hot = access.hot  # the compiled hot path, or None (see _build)
        self._lock = access.lock
        self._reader = access.reader  # reads: lock-free where they can be

    # ------------------------------------------------------------------ validation
    def _value(self, value: object) -> bytes:
        return check_value(value, self._max_value)

    def _ttl(self, sid: object, ttl: Optional[float]) -> int:
        """``ttl`` in nanoseconds (None: this handle's default). The compiled path needs it
        before the id is checked, so a bad ttl checks the id first: arguments are reported
        in their order, whichever path runs."""
        if ttl is None:
            return self._default_ttl_ns
        try:
            return _ttl_ns(ttl)
        except ShmSessionError:
            self._digests.of(sid)
            raise

    def __del__(self) -> None:
        # Dropped without close(): see Access.collect.
        try:
            access = self._access
        except AttributeError:  # half-made: __init__ raised before the access existed
            return
        access.collect()

    # ------------------------------------------------------------------ the public API
    #: A fresh session id: 256 random bits from ``secrets``, URL-safe, 43 characters
    #: (a static method: ``SessionStorage.new_id()``).
    new_id = staticmethod(new_id)

    @overload
    def read(self, sid: str) -> bytes: ...

    @overload
    def read(self, sid: str, consumer: Callable[[BinaryIO], T]) -> T: ...

    def read(self, sid: str, consumer: Optional[Callable[[BinaryIO], T]] = None) -> Union[bytes, T]:
        """The session's bytes; or, given ``consumer``, what ``consumer(stream)`` returns,
        where ``stream`` is a read-only binary stream of them (called outside the lock).

        :raises SessionNotFound: no such session, or it has expired.
        """
        hot = self._hot
        if hot is not None and consumer is None:
            value = hot.read(sid)
            if value is not _SLOW:
                return value  # type: ignore[no-any-return]
        found = self._reader.find(self._digests.of(sid))
        if found is None:
            raise SessionNotFound("no session with this id (absent or expired)")
        if consumer is None:
            return found[0]
        return consumer(io.BufferedReader(io.BytesIO(found[0])))

    def read_versioned(self, sid: str) -> Tuple[bytes, int]:
        """The session's bytes and version, for a later ``write(..., expect=version)``.

        :raises SessionNotFound: no such session, or it has expired.
        """
        hot = self._hot
        if hot is not None:
            found = hot.find(sid)
            if found is not _SLOW:
                if found is None:
                    raise SessionNotFound("no session with this id (absent or expired)")
                return found  # type: ignore[no-any-return]
        found = self._reader.find(self._digests.of(sid))
        if found is None:
            raise SessionNotFound("no session with this id (absent or expired)")
        return found

    def get(self, sid: str, default: Optional[T] = None) -> Union[bytes, T, None]:
        """The session's bytes, or ``default`` when it is absent or expired."""
        hot = self._hot
        if hot is not None:
            value = hot.get(sid, default)
            if value is not _SLOW:
                return value  # type: ignore[no-any-return]
        found = self._reader.find(self._digests.of(sid))
        return default if found is None else found[0]

    def write(
        self,
        sid: str,
        value: Union[BytesLike, Provider],
        ttl: Optional[float] = None,
        *,
        expect: Optional[int] = None,
        owner: Optional[str] = None,
    ) -> int:
        """Store ``value`` for ``sid``, replacing what was there; returns the new version.

        ``value`` is bytes-like, or a callable given a writable binary stream: what it has
        written when it returns is stored (nothing is, if it raises). ``ttl`` in seconds
        (``None``: the store's default, ``math.inf``: never expires). With ``expect``, the
        write happens only if the stored version is ``expect`` (compare-and-set). ``owner``
        (a user id, typically) makes the session one of that owner's, its newest (see
        :meth:`sessions_of`), moving it from another owner; ``None`` keeps the owner it
        has (a new session: none). An owner with ``MAX_OWNER_SESSIONS`` sessions loses its
        oldest to the new one. Arguments are checked first: a bad one raises before
        anything is changed.

        :raises VersionConflict: ``expect`` was given and the session has another version,
            or is gone.
        :raises StoreFull: no room, and ``when_full="raise"`` (or nothing could be evicted).
        :raises ValueTooLarge: ``value`` is over ``max_value_size``.
        :raises InvalidType: ``sid`` is not a ``str``, or ``value`` neither bytes-like nor
            a callable.
        :raises InvalidSessionId: ``sid`` is empty or over ``MAX_ID_BYTES``.
        :raises InvalidTTL: ``ttl`` is not a positive number of seconds.
        :raises InvalidOwner: ``owner`` is empty or over ``MAX_ID_BYTES`` (InvalidType:
            not a ``str``).
        """
        ttl_ns = self._default_ttl_ns if ttl is None else self._ttl(sid, ttl)
        hot = self._hot
        if hot is not None:
            version = hot.write(sid, value, ttl_ns, expect, 0, owner)
            if version is not _SLOW:
                return version  # type: ignore[no-any-return]
        digest = self._digests.of(sid)
        if expect is not None:  # the common case makes no call
            check_expect(expect)
        odigest = None if owner is None else self._digests.owner(owner)
        if type(value) is bytes and len(value) <= self._max_value:
            data = value  # the common case, checked inline
        else:
            if callable(value) and not isinstance(value, (bytes, bytearray, memoryview)):
                stream = io.BytesIO()
                value(stream)
                value = stream.getvalue()
            data = self._value(value)
        self._access.acquire()
        try:
            return self._engine.put(digest, data, ttl_ns, expect, False, False, _monotonic_ns(),
                                    odigest)
        finally:
            self._lock.release()

    def add(self, sid: str, value: BytesLike, ttl: Optional[float] = None, *,
            owner: Optional[str] = None) -> bool:
        """Store ``value`` only if ``sid`` has no live session; returns whether it did.
        ``owner``: as for :meth:`write`."""
        return self._put_if(sid, value, ttl, True, owner)

    def replace(self, sid: str, value: BytesLike, ttl: Optional[float] = None, *,
                owner: Optional[str] = None) -> bool:
        """Store ``value`` only if ``sid`` has a live session; returns whether it did. The
        mirror of :meth:`add`: a save that must not bring back a session deleted (logout) or
        expired meanwhile, nor adopt an id nobody issued. ``owner``: as for :meth:`write`."""
        return self._put_if(sid, value, ttl, False, owner)

    def _put_if(self, sid: str, value: BytesLike, ttl: Optional[float], absent: bool,
                owner: Optional[str]) -> bool:
        """``add`` (``absent``) or ``replace``: a write on a condition the engine checks."""
        ttl_ns = self._ttl(sid, ttl)
        hot = self._hot
        if hot is not None:
            version = hot.write(sid, value, ttl_ns, None, 1 if absent else 2, owner)
            if version is not _SLOW:
                return version >= 0  # type: ignore[no-any-return]
        digest = self._digests.of(sid)
        data = self._value(value)
        odigest = None if owner is None else self._digests.owner(owner)
        self._access.acquire()
        try:
            now = _monotonic_ns()
            return self._engine.put(digest, data, ttl_ns, None, absent, not absent, now,
                                    odigest) >= 0
        finally:
            self._lock.release()

    def sessions_of(self, owner: str) -> List[SessionInfo]:
        """The live sessions of ``owner`` (see ``write(..., owner=)``), oldest (the first to
        become the owner's) first: digest, size, age, time left, version -- never the raw
        ids, which the store does not keep. Costs in proportion to the owner's sessions,
        not to the store's.

        :raises InvalidOwner: ``owner`` is empty or over ``MAX_ID_BYTES``.
        :raises InvalidType: ``owner`` is not a ``str``.
        """
        odigest = self._digests.owner(owner)
        with self._access.locked() as engine:
            now = _monotonic_ns()
            return [_dump.info(s, now) for s in engine.ownership.slots_of(odigest, now)]

    def invalidate_owner(self, owner: str, *, keep: Optional[str] = None,
                         keep_digest: Optional[str] = None) -> int:
        """Delete every session of ``owner`` except the session id ``keep`` (the current
        one, for "log out my other devices"), or the one named by ``keep_digest`` as
        :class:`SessionInfo` gives it; returns how many live sessions it deleted.
        Atomic against every write: it holds the lock throughout, so a session written
        meanwhile is either deleted or written after it (a read that takes no lock may see
        some of the owner's sessions gone before the others). Costs in proportion to the
        owner's sessions.

        :raises InvalidOwner: ``owner`` is empty or over ``MAX_ID_BYTES``.
        :raises InvalidType: ``owner`` is not a ``str``.
        :raises InvalidSessionId: ``keep`` is not a valid id, or ``keep_digest`` not 32
            lowercase hex digits.
        :raises InvalidOption: both ``keep`` and ``keep_digest`` are given.
        """
        odigest = self._digests.owner(owner)
        kept = check_keep(keep, keep_digest)
        if keep is not None:
            kept = self._digests.of(keep)
        self._access.acquire()
        try:
            return self._engine.ownership.invalidate_owner(odigest, kept, _monotonic_ns())
        finally:
            self._lock.release()

    def invalidate_digest(self, digest: str) -> bool:
        """Delete the session named by ``digest`` as :class:`SessionInfo` gives it (from
        :meth:`sessions_of` or :meth:`sessions`: a "your devices" page revokes one);
        returns whether a live one was there.

        :raises InvalidSessionId: ``digest`` is not 32 lowercase hex digits (InvalidType:
            not a ``str``).
        """
        raw = check_digest(digest)
        self._access.acquire()
        try:
            return self._engine.invalidate(raw, _monotonic_ns())
        finally:
            self._lock.release()

    def invalidate(self, sid: str) -> bool:
        """Delete the session; returns whether a live one was there. Idempotent."""
        hot = self._hot
        if hot is not None:
            deleted = hot.invalidate(sid)
            if deleted is not _SLOW:
                return deleted  # type: ignore[no-any-return]
        digest = self._digests.of(sid)
        self._access.acquire()
        try:
            return self._engine.invalidate(digest, _monotonic_ns())
        finally:
            self._lock.release()

    def touch(self, sid: str, ttl: Optional[float] = None) -> bool:
        """Renew the session's expiry to ``ttl`` seconds from now (sliding expiry).

        :returns: whether a live session was there to renew.
        """
        ttl_ns = self._ttl(sid, ttl)
        hot = self._hot
        if hot is not None:
            renewed = hot.touch(sid, ttl_ns)
            if renewed is not _SLOW:
                return renewed  # type: ignore[no-any-return]
        digest = self._digests.of(sid)
        self._access.acquire()
        try:
            return self._engine.touch(digest, ttl_ns, _monotonic_ns())
        finally:
            self._lock.release()

    def __contains__(self, sid: object) -> bool:
        """Whether ``sid`` has a live session: ``sid in store``."""
        hot = self._hot
        if hot is not None:
            found = hot.find(sid)
            if found is not _SLOW:
                return found is not None
        return self._reader.find(self._digests.of(sid)) is not None

    def __len__(self) -> int:
        """Live sessions (a scan of the table; not for hot paths)."""
        with self._access.locked() as engine:
            return len(engine.live_slots(_monotonic_ns()))

    def clear(self) -> None:
        """Delete every session. Crash-safe: a clear interrupted anywhere is finished by the
        next lock holder (clearing is idempotent, so it is redone, not undone)."""
        with self._access.locked() as engine:
            engine.clear()

    def stats(self) -> Stats:
        """Entries, bytes used and free, capacity, and the advisory counters (which include
        every handle's counts up to its last ``HOUSEKEEPING_EVERY`` operations)."""
        with self._access.locked() as engine:
            self._access.counts.flush()
            return engine_stats(engine)

    def check(self) -> None:
        """Verify every structural invariant of the segment, the owner index's too (every
        owner's list against the table).

        :raises CorruptSegment: listing every problem found.
        """
        with self._access.locked() as engine:
            problems = engine.problems()
        if problems:
            error = CorruptSegment(
                f"store {self.name!r} fails {len(problems)} check(s): " + "; ".join(problems[:20])
            )
            error.problems = tuple(problems)
            raise error

    def close(self) -> None:
        """Detach this handle; the store and its sessions stay. Idempotent.

        Other threads of this process that use the handle: an operation that holds the
        lock finishes first (close waits for it); those waiting for the lock, and every
        later call, raise :class:`StoreClosed`; a read that takes no lock returns what it
        had copied, or raises :class:`StoreClosed`.
        """
        self._access.close()

    def unlink(self) -> None:
        """Remove the store from the system and close this handle. Other handles still
        attached raise :class:`SegmentUnlinked` on their next operation."""
        self._access.unlink(self.name)

    def sessions(self) -> List[SessionInfo]:
        """One :class:`SessionInfo` per live session (digest, size, age, time left); never
        the raw ids, which the store does not keep. A scan under the lock."""
        with self._access.locked() as engine:
            return _dump.infos(engine, _monotonic_ns())

    def dump(self, path: str) -> int:
        """Write every live session, with its time left, to the snapshot file ``path``
        (mode 0600; replaced atomically). Returns how many sessions it wrote.

        The snapshot is taken under the lock, so it is one consistent moment of the store;
        other processes wait for it (a whole dump of 10,000 sessions of 1 KiB took
        about 60 ms here, fsync included; the lock is held for part of that).
        """
        return _dump.dump(path, self._secret, self._access.locked)

    @classmethod
    def load(
        cls,
        name: str,
        path: str,
        *,
        progress: Optional[Callable[[int, int], None]] = None,
        **options: Any,
    ) -> "SessionStorage":
        """Create store ``name`` from the snapshot ``path`` and return it open.

        Each session gets back the time it had left when dumped, less the time since (by
        the wall clock): sessions that expired meanwhile are not revived. The store must
        not exist yet: the snapshot brings the secret its digests are keyed with.

        The new store has the dumped store's ``size``, ``max_entries`` and
        ``max_value_size``, so an application that gives them when it attaches finds the
        store it made. ``options`` given override them one by one; a limit the dumped
        store had at the default for its size follows a new ``size``, as if the store were
        made again with its own options and these. (A snapshot written before snapshots
        kept the geometry gets the defaults of ``SessionStorage``.)

        A snapshot that does not fit the new store is refused and the store removed,
        unless ``when_full="evict"`` is given explicitly: then the least recently used
        sessions make room, as in normal operation.

        :raises CorruptSnapshot: a truncated or altered file (nothing is created).
        :raises StoreFull: the sessions do not fit these options (the store is removed
            again).
        :raises ValueTooLarge: a session is over this store's ``max_value_size`` (the store
            is removed again).
        :raises SegmentError: store ``name`` already exists.
        """
        return _dump.load(cls, name, path, progress, options)

    @staticmethod
    def unlink_name(name: str) -> bool:
        """Remove store ``name`` without opening it (also a damaged or foreign segment);
        returns whether it existed. Handles attached elsewhere are told when possible."""
        check_name(name)
        try:
            store = SessionStorage(name, create=False)
        except Exception:  # noqa: BLE001 - unlinking is the remedy for every open failure
            return _segment.unlink(name)
        store.unlink()
        return True

    @staticmethod
    def exists(name: str) -> bool:
        """Whether a segment for store ``name`` exists."""
        return _segment.exists(name)

    def __enter__(self) -> "SessionStorage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._lock.closed else "open"
        return f"<SessionStorage {self.name!r} {self._geo.total_size} bytes, {state}>"

    def __reduce__(self) -> Tuple[Any, ...]:
        # A handle crosses a process boundary (multiprocessing spawn) by name.
        return (_reopen, (self.name, self._options))


def _reopen(name: str, options: Dict[str, Any]) -> SessionStorage:
    return SessionStorage(name, **options)
