"""The keys of the table: each session id's keyed digest, with a memo of the ids seen lately.

The store never holds raw ids: a slot's key is a blake2b of the id keyed with the segment's
secret (``_rules.check_id`` says which ids are valid).
"""

from __future__ import annotations

import hashlib
from typing import Dict

from . import _layout as L
from ._rules import _OWNER_PERSON, check_id, check_owner

__all__ = ["Digests"]

_MEMO_SIZE = 16384  # ids whose digests a handle remembers (see Digests.of): ~5 MB at most


class Digests:
    """The digests of ids under one segment's ``secret``; one per handle."""

    __slots__ = ("_hasher", "_memo", "_memo_old", "_owner_hasher", "_owners")

    def __init__(self, secret: bytes) -> None:
        self._hasher = hashlib.blake2b(key=secret, digest_size=L.DIGEST_SIZE)
        self._memo: Dict[str, bytes] = {}
        self._memo_old: Dict[str, bytes] = {}
        # as _rules.owner_digest makes it (a test holds them equal), copied, not made anew
        self._owner_hasher = hashlib.blake2b(key=secret, digest_size=L.DIGEST_SIZE,
                                             person=_OWNER_PERSON)
        self._owners: Dict[str, bytes] = {}

    def owner(self, owner: object) -> bytes:
        """The keyed digest of a valid owner (``_rules.owner_digest``), remembered for the
        last ``_MEMO_SIZE`` owners seen (a user's requests write with the same owner).

        :raises InvalidOwner, InvalidType: not a valid owner (see ``_rules.check_owner``).
        """
        if type(owner) is str:
            digest = self._owners.get(owner)
            if digest is not None:
                return digest
        h = self._owner_hasher.copy()
        h.update(check_owner(owner))
        digest = h.digest()
        if type(owner) is str:
            if len(self._owners) >= _MEMO_SIZE:
                self._owners = {}
            self._owners[owner] = digest
        return digest

    def of(self, sid: object) -> bytes:
        """The keyed digest of a valid id. A keyed blake2b costs ~0.5 us and a dict lookup
        ~0.08, and a session's requests come back to the same worker's handle, so a memo
        keeps the digests of the ids seen lately: two generations of ``_MEMO_SIZE`` ids;
        when the young one fills it becomes the old one and the old one goes (an LRU
        approximation with O(1) steps and at most ``2 * _MEMO_SIZE`` ids held).

        :raises InvalidSessionId, InvalidType: not a valid id (see ``_rules.check_id``).
        """
        if type(sid) is str:  # exactly str: a subclass could redefine equality
            digest = self._memo.get(sid)
            if digest is not None:
                return digest
            digest = self._memo_old.get(sid)
            if digest is None:
                h = self._hasher.copy()
                h.update(check_id(sid))
                digest = h.digest()
            memo = self._memo
            if len(memo) >= _MEMO_SIZE:
                self._memo_old = memo
                self._memo = memo = {}
            memo[sid] = digest
            return digest
        h = self._hasher.copy()
        h.update(check_id(sid))
        return h.digest()
