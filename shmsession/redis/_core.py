"""What both Redis stores share and that does no I/O: the Lua scripts, the validation of
every call (the rules of ``SessionStorage``, from ``_rules``), key derivation, the record
format and the reading of Redis's replies. The stores (``_async.py``, and ``_sync.py``
generated from it) add only the round trips.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, BinaryIO, Callable, List, Mapping, Optional, Tuple, TypeVar, Union

from .._errors import CorruptSegment, InvalidTTL, InvalidType, SessionNotFound, VersionConflict
from .._rules import (DIGEST_SIZE, BytesLike, Provider, check_expect, check_id, check_name,
                      check_value, is_int, ttl_ns)
from .._types import Stats

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
    (``math.inf``). Validation is ``_rules``'s, so both stores refuse the same values."""
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
