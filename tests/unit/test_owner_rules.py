"""The owner rules every store shares (``_rules``): which owners and digests are valid."""

from __future__ import annotations

import hashlib

import pytest

from shmsession import InvalidOwner, InvalidSessionId, InvalidType
from shmsession._rules import (
    DIGEST_SIZE, MAX_ID_BYTES, check_digest, check_owner, owner_digest,
)


def test_check_owner_gives_the_utf8_bytes() -> None:
    assert check_owner("user-7") == b"user-7"
    assert check_owner("é") == "é".encode()
    assert check_owner("x" * MAX_ID_BYTES) == b"x" * MAX_ID_BYTES


@pytest.mark.parametrize("owner", ["", "x" * (MAX_ID_BYTES + 1), "\ud800"])
def test_check_owner_refuses_empty_long_and_unencodable(owner: str) -> None:
    with pytest.raises(InvalidOwner):
        check_owner(owner)


@pytest.mark.parametrize("owner", [None, 7, b"user"])
def test_check_owner_refuses_what_is_not_a_str(owner: object) -> None:
    with pytest.raises(InvalidType):
        check_owner(owner)


def test_owner_digest_is_keyed_and_personalised() -> None:
    secret = bytes(range(32))
    d = owner_digest(secret, "alice")
    assert d == hashlib.blake2b(b"alice", key=secret, digest_size=DIGEST_SIZE,
                                person=b"shmsession-owner").digest()
    assert d != owner_digest(bytes(32), "alice") != owner_digest(secret, "bob")
    # not the digest an id of the same text gets
    assert d != hashlib.blake2b(b"alice", key=secret, digest_size=DIGEST_SIZE).digest()
    with pytest.raises(InvalidOwner):
        owner_digest(secret, "")


def test_check_digest_takes_lowercase_hex_of_a_digest() -> None:
    assert check_digest("00" * 15 + "ff") == bytes(15) + b"\xff"
    for bad in ("", "ab", "AB" * 16, "0" * 33, "g" * 32, " " + "0" * 31):
        with pytest.raises(InvalidSessionId):
            check_digest(bad)
    with pytest.raises(InvalidType):
        check_digest(b"0" * 32)
