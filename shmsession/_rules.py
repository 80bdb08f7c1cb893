"""The rules every store shares -- the shared-memory store and the Redis one alike: what a
session id, a value, a ttl, a store name and a version may be, and the errors that refuse
them. Both stores call these before they touch anything, so bad input changes nothing and
fails the same way everywhere. No I/O, and nothing of either backend.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from typing import Any, BinaryIO, Callable, Optional, Union

from ._errors import (InvalidName, InvalidOption, InvalidOwner, InvalidSessionId, InvalidTTL,
                      InvalidType, ValueTooLarge)

__all__ = [
    "BytesLike", "DIGEST_SIZE", "MAX_ID_BYTES", "MAX_OWNER_SESSIONS", "MAX_TTL", "Provider",
    "check_digest", "check_expect", "check_id", "check_keep", "check_name", "check_option",
    "check_owner", "check_value", "is_int", "is_number", "new_id", "owner_digest", "ttl_ns",
]

BytesLike = Union[bytes, bytearray, memoryview]
Provider = Callable[[BinaryIO], Any]  # a value given as a callable that writes it to a stream

#: The longest session id, in bytes of UTF-8, that a store accepts.
MAX_ID_BYTES = 1024
#: Bytes of the keyed digest a store indexes a session by (it never keeps the raw id).
DIGEST_SIZE = 16
#: The most live sessions one owner has: a write that would make one more deletes the
#: owner's oldest session (the one that became the owner's first).
MAX_OWNER_SESSIONS = 1024

_OWNER_PERSON = b"shmsession-owner"  # owner digests never equal a session id's digest
_HEX_DIGEST = re.compile(r"[0-9a-f]{%d}" % (2 * DIGEST_SIZE))

_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


def new_id() -> str:
    """A fresh session id: 256 random bits from ``secrets``, URL-safe, 43 characters."""
    return secrets.token_urlsafe(32)


def check_name(name: object) -> str:
    """Return ``name`` if it can name a store, else raise :class:`InvalidName`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidName(
            f"store name {name!r} is not valid: use 1 to 100 characters from "
            "A-Z a-z 0-9 . _ - (it names a file in /dev/shm)"
        )
    return name


def check_id(sid: object) -> bytes:
    """The UTF-8 bytes of a valid session id.

    :raises InvalidType: not a ``str``. :raises InvalidSessionId: empty, over
        ``MAX_ID_BYTES``, or not encodable.
    """
    if type(sid) is not str:
        if isinstance(sid, str):
            sid = str(sid)
        else:
            raise InvalidType(f"a session id must be a str, not {type(sid).__name__}")
    try:
        raw = sid.encode()
    except UnicodeEncodeError:
        raise InvalidSessionId("a session id must be encodable as UTF-8") from None
    if not raw or len(raw) > MAX_ID_BYTES:
        raise InvalidSessionId(
            f"a session id must be 1 to {MAX_ID_BYTES} bytes of UTF-8, got {len(raw)}"
        )
    return raw


def check_owner(owner: object) -> bytes:
    """The UTF-8 bytes of a valid owner (a user id, typically).

    :raises InvalidType: not a ``str``. :raises InvalidOwner: empty, over ``MAX_ID_BYTES``,
        or not encodable.
    """
    if not isinstance(owner, str):
        raise InvalidType(f"an owner must be a str (a user id), not {type(owner).__name__}")
    try:
        raw = str(owner).encode()
    except UnicodeEncodeError:
        raise InvalidOwner("an owner must be encodable as UTF-8") from None
    if not raw or len(raw) > MAX_ID_BYTES:
        raise InvalidOwner(
            f"an owner must be 1 to {MAX_ID_BYTES} bytes of UTF-8, got {len(raw)}; pass the "
            "user's id (str(user.pk)), not the user"
        )
    return raw


def owner_digest(secret: bytes, owner: str) -> bytes:
    """The keyed digest a store keeps instead of ``owner`` (as it keeps a digest instead of
    each session id), personalised so that no owner's digest is a session id's.

    :raises InvalidType, InvalidOwner: not a valid owner (see :func:`check_owner`).
    """
    raw = check_owner(owner)
    return hashlib.blake2b(raw, key=secret, digest_size=DIGEST_SIZE,
                           person=_OWNER_PERSON).digest()


def check_digest(digest: object) -> bytes:
    """The bytes of a session's digest given as ``sessions_of`` gives it (lowercase hex).

    :raises InvalidType: not a ``str``. :raises InvalidSessionId: not 32 lowercase hex digits.
    """
    if not isinstance(digest, str):
        raise InvalidType(f"a digest must be a str of hex, not {type(digest).__name__}")
    if not _HEX_DIGEST.fullmatch(digest):
        raise InvalidSessionId(
            f"a digest must be {2 * DIGEST_SIZE} lowercase hex digits, as sessions_of() "
            f"gives it, got {digest[:80]!r}"
        )
    return bytes.fromhex(digest)


def check_keep(keep: object, keep_digest: object) -> Optional[bytes]:
    """What ``invalidate_owner`` keeps: None when it keeps a session id (``keep``, which the
    store digests itself) or nothing, else the bytes of ``keep_digest``.

    :raises InvalidOption: both are given. :raises InvalidType, InvalidSessionId:
        ``keep_digest`` is not a digest (see :func:`check_digest`).
    """
    if keep_digest is None:
        return None
    if keep is not None:
        raise InvalidOption("invalidate_owner keeps one session: give keep (its id) or "
                            "keep_digest (its digest), not both")
    return check_digest(keep_digest)


def check_value(value: object, max_value: int) -> bytes:
    """``value`` as bytes (a copy of a bytearray or memoryview: the caller may change theirs
    while the store writes).

    :raises InvalidType: not bytes-like, or a released memoryview. :raises ValueTooLarge:
        over ``max_value``.
    """
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, (bytearray, memoryview)):
        try:
            data = bytes(value)
        except ValueError:  # the one way bytes() of a memoryview fails
            raise InvalidType(
                "a session value cannot be a released memoryview (its buffer is gone): "
                "write it before releasing the view, or pass bytes(view) made before"
            ) from None
    else:
        raise InvalidType(
            f"a session value must be bytes, bytearray or memoryview, not "
            f"{type(value).__name__}; serialise it first (json.dumps(...).encode())"
        )
    if len(data) > max_value:
        raise ValueTooLarge(
            f"value of {len(data)} bytes is over this store's max_value_size of {max_value}; "
            "store less in the session, or open the store with a larger max_value_size"
        )
    return data


def check_expect(expect: object) -> None:
    """Refuse an ``expect=`` (compare-and-set) that is not a version.

    :raises InvalidType: not ``None`` and not an int >= 0.
    """
    if expect is not None and (not is_int(expect) or expect < 0):  # type: ignore[operator]
        raise InvalidType(f"expect must be a version (an int >= 0), got {expect!r}")


def check_option(label: str, number: object, least: int, most: Optional[int] = None,
                 rule: str = "") -> None:
    """Refuse a size-like constructor option: ``None``, or an int from ``least`` to ``most``
    (no limit when None). ``rule`` says so in the message (default "at least LEAST").

    :raises InvalidType: not an int. :raises InvalidOption: out of range.
    """
    if number is not None:
        if not is_int(number):
            raise InvalidType(f"{label} must be an int, not {type(number).__name__}")
        if number < least or (most is not None and number > most):  # type: ignore[operator]
            raise InvalidOption(f"{label} must be {rule or f'at least {least}'}, got {number}")


def is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


MAX_TTL = 100 * 365 * 86400  # seconds; expiry times are signed 64-bit nanoseconds


def ttl_ns(ttl: object) -> int:
    """Seconds -> nanoseconds; 0 stands for "never expires" (``math.inf``)."""
    if not is_number(ttl):
        raise InvalidType(f"ttl must be a number of seconds (or None), not {type(ttl).__name__}")
    if ttl == math.inf:
        return 0
    if not 0 < ttl < math.inf:  # type: ignore[operator]
        raise InvalidTTL(f"ttl must be a positive number of seconds, got {ttl!r}")
    if ttl > MAX_TTL:  # type: ignore[operator]
        raise InvalidTTL(
            f"ttl of {ttl!r} s is over 100 years; use math.inf for a session that never expires"
        )
    return max(1, int(ttl * 1_000_000_000))  # type: ignore[operator]
