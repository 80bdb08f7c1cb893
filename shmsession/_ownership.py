"""An owner's sessions ("log out everywhere"): joining an owner, listing, deleting.

Works through the ``Engine`` it belongs to (its table, owner index ``_owners`` and journal),
inside the engine's transactions, as ``_room`` does; the caller holds the store's lock and
passes ``now``. The index itself -- each owner's list of slots, kept exact by every path that
removes or moves a session -- is ``_owners``'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional

from . import _layout as L
from ._layout import S_DIGEST, S_STATE
from ._table import Slot, expired

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["Ownership"]

_C = L.COUNTER_W
_DELETES = _C["deletes"]
_EXPIRATIONS = _C["expirations"]
_NO_OWNER = L.NO_OWNER
_OWNER_TXN = 128  # sessions one transaction of invalidate_owner deletes (see there)


class Ownership:
    """The owners' operations for the engine ``e``."""

    __slots__ = ("e",)

    def __init__(self, engine: "Engine") -> None:
        self.e = engine

    def own(self, i: int, digest: bytes, owner: bytes, joined: int, now: int) -> None:
        """Make the entry ``digest``, in slot ``i``, one of ``owner``'s sessions, its newest
        (joined at ``joined``), moving it from another owner; nothing changes if it is
        ``owner``'s already. Only live sessions count toward ``MAX_OWNER_SESSIONS``: an
        owner at the cap loses its expired sessions first (counted in ``expirations``), then,
        if still at the cap, its oldest (counted in ``deletes``). Caller holds the lock,
        inside a transaction."""
        e = self.e
        t = e.t
        o = e.o
        current = o.owner_of(i)
        if current == owner:
            return
        if current != _NO_OWNER:
            o.unlink(i, True)
        if o.count(owner) >= e.max_owner_sessions:
            # By digest (each drop may shift later slots of a probe run back), and only as
            # many as bring the owner under the cap: one transaction's journal is bounded.
            for d in [s[S_DIGEST] for s in map(t.get, o.members(owner)) if expired(s, now)]:
                k, slot = t.probe(d)
                if slot is None:
                    raise e.damaged("an owner's list names a session the table lacks")
                e.drop(k, slot)
                e.bump(_EXPIRATIONS)
                if o.count(owner) < e.max_owner_sessions:
                    break
            if o.count(owner) >= e.max_owner_sessions:
                oldest = o.members(owner)[0]
                e.drop(oldest, t.get(oldest))
                e.bump(_DELETES)
            i = t.lookup(digest)  # the drops may have shifted this entry back
        o.link(i, owner, joined)

    def slots_of(self, owner: bytes, now: int) -> List[Slot]:
        """The live entries of ``owner``, oldest (first joined) first. Reads only."""
        e = self.e
        t = e.t
        members = [t.get(i) for i in e.o.members(owner)]
        if not all(s[S_STATE] for s in members):
            raise e.damaged("an owner's list holds an empty slot")
        live = [s for s in members if not expired(s, now)]
        for s in live:
            e.check_range(s)
        return live

    def invalidate_owner(self, owner: bytes, keep: Optional[bytes], now: int) -> int:
        """Delete every entry of ``owner`` but ``keep`` (a digest, or None); returns how
        many live ones went (expired ones go too, counted as expirations).

        The entries go in transactions of ``_OWNER_TXN`` (the journal holds the undo
        records of one operation's metadata, and an owner may have ``MAX_OWNER_SESSIONS``);
        the caller holds the lock across all of them, so no write, and no read that takes
        the lock, sees a part done (a lock-free read may see the first part gone before the
        rest). A writer killed in between leaves the sessions of the committed part deleted
        and the index exact.
        """
        e = self.e
        t = e.t
        doomed = [t.get(i)[S_DIGEST] for i in e.o.members(owner)]
        doomed = [d for d in doomed if d != keep]
        deleted = 0
        for k in range(0, len(doomed), _OWNER_TXN):
            part = doomed[k : k + _OWNER_TXN]
            e.j.begin()
            try:
                for d in part:
                    i, slot = t.probe(d)
                    if slot is None:
                        raise e.damaged("a session of an owner's list vanished")
                    e.drop(i, slot)
                    if expired(slot, now):
                        e.bump(_EXPIRATIONS)
                    else:
                        e.bump(_DELETES)
                        deleted += 1
            except BaseException:
                e.j.rollback()
                raise
            e.j.commit()
        return deleted
