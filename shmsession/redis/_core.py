"""What both Redis stores share and that does no I/O: the Lua scripts, the validation of
every call (the rules of ``SessionStorage``, from ``_rules``), key derivation, the record
format and the reading of Redis's replies. The stores (``_async.py``, and ``_sync.py``
generated from it) add only the round trips.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import Any, BinaryIO, Callable, List, Mapping, Optional, Tuple, TypeVar, Union

from .._errors import CorruptSegment, InvalidTTL, InvalidType, SessionNotFound, VersionConflict
from .._rules import (DIGEST_SIZE, BytesLike, Provider, check_expect, check_id, check_name,
                      check_value, is_int, owner_digest, ttl_ns)
from .._types import SessionInfo, Stats

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

# Lua shared by the scripts that meet owners. A session with an owner has a link,
# PREFIX so:HEX, a one-element list holding the owner's digest in hex, with the session's
# expiry; the owner's index, PREFIX o:OWNERHEX, is a sorted set of the hex digests of its
# sessions, scored by the time (us) each became the owner's, that lives at least as long as
# its longest session. Members whose session is gone or has another owner now are removed
# lazily: a link is the truth, a member only a pointer to check.
_OWNERS_LUA = """
-- The owner (hex) of the session whose link is `link`, or false. LMOVE of a one-element
-- list onto itself returns its element through Redis's write path, which counts no keyspace
-- hit or miss (a GET would count one, on writes, touches and sliding reads; see stats()).
local function owner_of(link)
  return redis.call('LMOVE', link, link, 'LEFT', 'LEFT')
end
-- Give `key` the expiry `ms` ('0': none); returns whether the key is there.
local function expire(key, ms)
  if ms == '0' then
    if redis.call('PEXPIRE', key, 60000) == 0 then return false end
    redis.call('PERSIST', key)
    return true
  end
  return redis.call('PEXPIRE', key, ms) == 1
end
-- An owner index outlives each of its sessions: GT only lengthens (and leaves a key without
-- expiry without one).
local function outlive(index, ms)
  if ms == '0' then redis.call('PERSIST', index) else redis.call('PEXPIRE', index, ms, 'GT') end
end
-- Now, in microseconds, as ZADD takes it (exact: under 2^53). Scores order an owner's
-- sessions; a script takes more than a microsecond, so two writes do not tie (in
-- milliseconds they did, and the cap deleted an arbitrary one of them).
local function now()
  local t = redis.call('TIME')
  return string.format('%.0f', t[1] * 1000000 + t[2])
end
-- Delete the session `member` if its link still names `owner`; returns 1 if a live session
-- went. The caller removes the member from the owner's index.
local function revoke(prefix, member, owner)
  local link = prefix .. 'so:' .. member
  if owner_of(link) ~= owner then return 0 end
  redis.call('DEL', link)
  return redis.call('DEL', prefix .. 's:' .. member)
end
"""

# KEYS: session key, meta hash, link, [the owner's index]. ARGV: value, ttl in ms (0: none),
# mode: "" plain write, "+" add (only if absent), "=" replace (only if live), else the 8 bytes
# of the version a compare-and-set expects; the session's hex digest, the prefix, the owner's
# hex digest ("": keep the session's owner), the most sessions an owner keeps. Returns the new
# version; -1 when the add found a session, the replace none or the CAS another version, -2
# when the CAS found none. SET NX claims the key for an add, SET XX checks it is there for a
# replace, and PEXPIRE tells a plain write whether it is, without reading it, because a read
# would count as a keyspace hit or miss, which a write must not (stats()); neither leaves a
# trace when it fails, so a refused add or replace spends no version. A new session drops any
# link left by one Redis evicted: it starts with no owner.
_PUT = _OWNERS_LUA + """
local mode = ARGV[3]
local fresh = false
if mode == '+' then
  if not redis.call('SET', KEYS[1], '', 'NX') then return -1 end
  fresh = true
elseif mode == '=' then
  if not redis.call('SET', KEYS[1], '', 'XX') then return -1 end
elseif mode ~= '' then
  local old = redis.call('GET', KEYS[1])
  if not old then return -2 end
  if string.sub(old, 1, 8) ~= mode then return -1 end
else
  fresh = redis.call('PEXPIRE', KEYS[1], 60000) == 0
end
local n = redis.call('HINCRBY', KEYS[2], 'version', 1)
local record = struct.pack('>I8', n) .. ARGV[1]
local ms = ARGV[2]
if ms == '0' then
  redis.call('SET', KEYS[1], record)
else
  redis.call('SET', KEYS[1], record, 'PX', ms)
end
local link, member, prefix, owner = KEYS[3], ARGV[4], ARGV[5], ARGV[6]
local was = false
if fresh then redis.call('DEL', link) else was = owner_of(link) end
if owner == '' then
  if was then
    expire(link, ms)
    outlive(prefix .. 'o:' .. was, ms)
  end
  return n
end
local index = KEYS[4]
local count = redis.call('ZCARD', index)
if was ~= owner then
  if was then redis.call('ZREM', prefix .. 'o:' .. was, member) end
  redis.call('DEL', link)
  redis.call('RPUSH', link, owner)
  count = count + redis.call('ZADD', index, now(), member)
else
  count = count + redis.call('ZADD', index, 'NX', now(), member)
end
expire(link, ms)
if ms ~= '0' and count == 1 then
  redis.call('PEXPIRE', index, ms)  -- a new index: ZADD made it without an expiry
else
  outlive(index, ms)
end
-- The cap, counting live sessions only: over it counting every member, drop the members of
-- sessions gone or moved (they may make the room), then delete the owner's oldest sessions,
-- never the one written. Only a write that finds the owner at its cap pays this walk.
local deleted = 0
local cap = tonumber(ARGV[7])
if count > cap then
  local live = {}
  for _, m in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    if count <= cap then break end
    if m ~= member and owner_of(prefix .. 'so:' .. m) ~= owner then
      redis.call('ZREM', index, m)
      count = count - 1
    else
      live[#live + 1] = m
    end
  end
  -- Here either count <= cap, or `live` holds every member, oldest first: count of them,
  -- over a cap of at least 1, so the loop ends before it runs out of members.
  for _, m in ipairs(live) do
    if count <= cap then break end
    if m ~= member then
      redis.call('ZREM', index, m)
      count = count - 1
      deleted = deleted + revoke(prefix, m, owner)
    end
  end
end
if deleted > 0 then redis.call('HINCRBY', KEYS[2], 'deletes', deleted) end
return n
"""

# KEYS: session key, meta hash, link. ARGV: the session's hex digest, the prefix. DEL answers
# 0 for an expired key (Redis drops it first). The link and the index's member go with it.
_INVALIDATE = _OWNERS_LUA + """
local owner = owner_of(KEYS[3])
if owner then
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', ARGV[2] .. 'o:' .. owner, ARGV[1])
end
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], 'deletes', 1)
return 1
"""

# KEYS: session key, link. ARGV: ttl in ms (0: none), the prefix. The link, and the owner's
# index, follow the session's new expiry.
_TOUCH = _OWNERS_LUA + """
if not expire(KEYS[1], ARGV[1]) then return 0 end
if expire(KEYS[2], ARGV[1]) then outlive(ARGV[2] .. 'o:' .. owner_of(KEYS[2]), ARGV[1]) end
return 1
"""

# KEYS: session key, link. ARGV: the store's ttl in ms, the prefix. Sliding expiry on read
# (touch_on_read): XX renews only a session that has an expiry, as SessionStorage does.
_READ_SLIDE = _OWNERS_LUA + """
local record = redis.call('GET', KEYS[1])
if record and redis.call('PEXPIRE', KEYS[1], ARGV[1], 'XX') == 1 and
    redis.call('PEXPIRE', KEYS[2], ARGV[1], 'XX') == 1 then
  outlive(ARGV[2] .. 'o:' .. owner_of(KEYS[2]), ARGV[1])
end
return record
"""

# KEYS: the owner's index, meta hash. ARGV: the owner's hex digest, the prefix, the hex digest
# of the session to keep ("" none). Deletes every live session still linked to the owner, in
# one step against every write, and empties the index (but for `keep`, if it is the owner's).
_INVALIDATE_OWNER = _OWNERS_LUA + """
local owner, prefix, keep = ARGV[1], ARGV[2], ARGV[3]
local n = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if m ~= keep then
    n = n + revoke(prefix, m, owner)
    redis.call('ZREM', KEYS[1], m)
  elseif owner_of(prefix .. 'so:' .. m) ~= owner then
    redis.call('ZREM', KEYS[1], m)
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[2], 'deletes', n) end
return n
"""

# KEYS: the owner's index. ARGV: the owner's hex digest, the prefix. Returns the time (us),
# then per live session, oldest first: hex digest, the us it became the owner's, PTTL (-1:
# none), the record's length and its first 8 bytes (the version). Drops stale members, and
# sets the index's expiry to its longest session's.
_SESSIONS_OF = _OWNERS_LUA + """
local owner, prefix = ARGV[1], ARGV[2]
local out = {now()}
local longest = 0
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #members, 2 do
  local m = members[i]
  local key = prefix .. 's:' .. m
  local head = redis.call('GETRANGE', key, 0, 7)
  if #head == 8 and owner_of(prefix .. 'so:' .. m) == owner then
    local ttl = redis.call('PTTL', key)
    if ttl == -1 or longest == -1 then longest = -1 elseif ttl > longest then longest = ttl end
    for _, v in ipairs({m, members[i + 1], ttl, redis.call('STRLEN', key), head}) do
      out[#out + 1] = v
    end
  else
    redis.call('ZREM', KEYS[1], m)
  end
end
if longest == -1 then
  redis.call('PERSIST', KEYS[1])
elseif longest > 0 then
  redis.call('PEXPIRE', KEYS[1], longest)
end
return out
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
        self._links = prefix + "so:"
        self._owners = prefix + "o:"
        self.pattern = _glob_escape(self._sessions) + "*"
        # clear() scans every key under the prefix and takes the store's own: sessions, owner
        # links and owner indexes (not the meta hash, nor a store's under a longer prefix).
        self.everything = _glob_escape(prefix) + "*"
        self._own = re.compile(re.escape(prefix.encode()) + rb"(?:s|so|o):[0-9a-f]{32}")
        # The key is derived, not the secret itself: blake2b keys stop at 64 bytes, and a
        # secret shared with other uses (a framework's SECRET_KEY) yields unrelated digests.
        key = hashlib.blake2b(secret, digest_size=32, person=b"shmsession:redis").digest()
        self._hasher = hashlib.blake2b(key=key, digest_size=DIGEST_SIZE)
        self._owner_key = key

    def owns(self, key: bytes) -> bool:
        """Whether ``key`` (as SCAN gives it) is a session, link or index of this store."""
        return self._own.fullmatch(key) is not None

    def digest(self, sid: object) -> str:
        """The hex digest of session ``sid``; raises what ``SessionStorage`` raises for it."""
        h = self._hasher.copy()
        h.update(check_id(sid))
        return h.hexdigest()

    def key(self, sid: object) -> str:
        """The Redis key of session ``sid``; raises what ``SessionStorage`` raises for it."""
        return self._sessions + self.digest(sid)

    def session_keys(self, digest: str) -> List[str]:
        """The keys of the session of hex ``digest``: its record, the meta hash, its link."""
        return [self._sessions + digest, self.meta, self._links + digest]

    def owner(self, owner: object) -> str:
        """The hex digest of a valid ``owner``; raises ``InvalidType`` or ``InvalidOwner``."""
        return owner_digest(self._owner_key, owner).hex()  # type: ignore[arg-type]

    def owner_index(self, owner_hex: str) -> str:
        return self._owners + owner_hex

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
        owner: Optional[str],
        cap: int,
    ) -> Tuple[List[str], List[Union[bytes, int, str]]]:
        """Validate a ``write`` (in ``SessionStorage.write``'s order, the owner before the
        value; a provider runs last) and return the ``_PUT`` script's keys and arguments."""
        digest = self.digest(sid)
        ms = self.ttl(ttl)
        check_expect(expect)
        owner_hex = None if owner is None else self.owner(owner)
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
        return self._put_args(digest, data, ms, mode, owner_hex, cap)

    def add_args(self, sid: str, value: BytesLike, ttl: Optional[float], owner: Optional[str],
                 cap: int) -> Tuple[List[str], List[Union[bytes, int, str]]]:
        """Validate an ``add`` and return the ``_PUT`` script's keys and arguments."""
        return self._only_if_args(sid, value, ttl, b"+", owner, cap)

    def replace_args(self, sid: str, value: BytesLike, ttl: Optional[float],
                     owner: Optional[str], cap: int
                     ) -> Tuple[List[str], List[Union[bytes, int, str]]]:
        """Validate a ``replace`` and return the ``_PUT`` script's keys and arguments."""
        return self._only_if_args(sid, value, ttl, b"=", owner, cap)

    def _only_if_args(self, sid: str, value: BytesLike, ttl: Optional[float], mode: bytes,
                      owner: Optional[str], cap: int
                      ) -> Tuple[List[str], List[Union[bytes, int, str]]]:
        # SessionStorage.add's and .replace's order: the id, the ttl, the owner, the value.
        digest = self.digest(sid)
        ms = self.ttl(ttl)
        owner_hex = None if owner is None else self.owner(owner)
        return self._put_args(digest, self.value(value), ms, mode, owner_hex, cap)

    def _put_args(self, digest: str, data: bytes, ms: int, mode: bytes,
                  owner_hex: Optional[str], cap: int
                  ) -> Tuple[List[str], List[Union[bytes, int, str]]]:
        keys = self.session_keys(digest)
        if owner_hex is not None:
            keys.append(self.owner_index(owner_hex))
        return keys, [data, ms, mode, digest, self.prefix, owner_hex or "", cap]

    def sessions(self, reply: List[Any]) -> List[SessionInfo]:
        """The ``_SESSIONS_OF`` script's reply -> the owner's sessions, oldest first."""
        now, rows = float(reply[0]), reply[1:]
        out = []
        for i in range(0, len(rows), 5):
            digest, since, pttl, length, head = rows[i:i + 5]
            out.append(SessionInfo(
                digest=digest.decode(),
                size=int(length) - _VERSION_BYTES,
                age=max(0.0, (now - float(since)) / 1e6),
                ttl=None if pttl == -1 else max(0, int(pttl)) / 1000,
                version=int.from_bytes(head, "big"),
            ))
        return out

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
