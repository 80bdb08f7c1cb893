"""What the synchronous adapters (Django, cachelib, Flask) need of a store besides its calls
(the :class:`~shmsession.Store` protocol, re-exported here): the one compare-and-set loop
their read-modify-writes share (:func:`read_modify_write`).

A save over a live session is not a read-modify-write: it is the store's atomic ``replace``,
one call, which never brings back a session deleted meanwhile. The loop below is for values
computed from the previous one (a counter's ``incr``), where another writer's value must be
read again and the change made on top of it.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple, TypeVar

from .._errors import SessionNotFound, VersionConflict
from .._types import Store

__all__ = ["MAX_CAS_ATTEMPTS", "Store", "read_modify_write"]

R = TypeVar("R")

#: Rounds one read-modify-write may lose before it gives up. Each lost round means another
#: writer's write went through, so the writers as a whole always progress; losing this many
#: in a row does not happen under sane load.
MAX_CAS_ATTEMPTS = 1000


def read_modify_write(
    store: Store,
    sid: str,
    change: Callable[[Optional[bytes]], Tuple[bytes, R]],
    ttl: Optional[float] = None,
) -> R:
    """Store what ``change`` makes of ``sid``'s value, atomically against every other
    writer, and return the result ``change`` gave with it.

    ``change(old)`` gets the value (``None`` when there is none) and returns ``(new bytes,
    result)``; it may raise to give up, and then nothing is stored. The new bytes go in only
    if ``sid`` still holds what ``change`` saw -- ``write(..., expect=version)`` over a value,
    ``add`` where there was none -- else another writer got in first, and ``change`` runs
    again on what that writer left.

    :raises VersionConflict: ``MAX_CAS_ATTEMPTS`` rounds in a row were lost to other writers.
    Errors of ``change`` and of the store (``ValueTooLarge``, ``StoreFull``...) propagate.
    """
    for _ in range(MAX_CAS_ATTEMPTS):
        try:
            old: Optional[bytes]
            old, version = store.read_versioned(sid)
        except SessionNotFound:
            old = None
        data, result = change(old)
        if old is None:
            if store.add(sid, data, ttl):
                return result
            continue  # another writer created it first: change its value instead
        try:
            store.write(sid, data, ttl, expect=version)
        except VersionConflict:
            continue
        return result
    raise VersionConflict(
        f"the value changed {MAX_CAS_ATTEMPTS} times while this process was updating it"
    )
