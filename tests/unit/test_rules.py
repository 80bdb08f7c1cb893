"""The owner rules of ``_rules``: what an owner and a digest may be, and the keyed owner digest
(the rest of ``_rules`` is covered through every store by the contract)."""

from __future__ import annotations

import hashlib

import pytest

from shmsession import InvalidOwner, InvalidSessionId, InvalidType
from shmsession._rules import (DIGEST_SIZE, MAX_ID_BYTES, MAX_OWNER_SESSIONS, check_digest,
                               check_owner, owner_digest)

SECRET = b"a secret of more than sixteen bytes"


class Name(str):
    pass


def test_an_owner_is_its_utf8_bytes() -> None:
    assert check_owner("42") == b"42"
    assert check_owner("ключ") == "ключ".encode()
    assert check_owner("x" * MAX_ID_BYTES) == b"x" * MAX_ID_BYTES
    assert check_owner(Name("alice")) == b"alice"


@pytest.mark.parametrize("owner,err", [
    (None, InvalidType), (42, InvalidType), (b"alice", InvalidType), (object(), InvalidType),
    ("", InvalidOwner), ("x" * (MAX_ID_BYTES + 1), InvalidOwner),
    ("é" * (MAX_ID_BYTES // 2 + 1), InvalidOwner), ("\udc80", InvalidOwner),
])
def test_a_bad_owner_is_refused(owner: object, err: type) -> None:
    with pytest.raises(err) as info:
        check_owner(owner)
    assert isinstance(info.value, TypeError if err is InvalidType else ValueError)
    with pytest.raises(err):
        owner_digest(SECRET, owner)  # type: ignore[arg-type]


def test_owner_digests_are_keyed_and_apart_from_session_digests() -> None:
    d = owner_digest(SECRET, "alice")
    assert len(d) == DIGEST_SIZE and d == owner_digest(SECRET, Name("alice"))
    assert d != owner_digest(SECRET, "bob")
    assert d != owner_digest(b"another secret, sixteen bytes+", "alice")
    # A session whose id is the owner's name has another digest (the person separates them).
    assert d != hashlib.blake2b(b"alice", key=SECRET, digest_size=DIGEST_SIZE).digest()
    assert d == hashlib.blake2b(b"alice", key=SECRET, digest_size=DIGEST_SIZE,
                                person=b"shmsession-owner").digest()


def test_a_digest_is_32_lowercase_hex_digits() -> None:
    raw = bytes(range(16))
    assert check_digest(raw.hex()) == raw
    assert check_digest(Name("ab" * 16)) == b"\xab" * 16


@pytest.mark.parametrize("digest,err", [
    (None, InvalidType), (b"00" * 16, InvalidType), (16, InvalidType),
    ("", InvalidSessionId), ("0" * 31, InvalidSessionId), ("0" * 33, InvalidSessionId),
    ("AB" * 16, InvalidSessionId), ("g" * 32, InvalidSessionId), ("0" * 32 + "\n", InvalidSessionId),
    (" " + "0" * 31, InvalidSessionId), ("٠" * 32, InvalidSessionId),
])
def test_a_bad_digest_is_refused(digest: object, err: type) -> None:
    with pytest.raises(err):
        check_digest(digest)


def test_the_owner_cap() -> None:
    assert MAX_OWNER_SESSIONS == 1024
