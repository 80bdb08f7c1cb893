"""The one compare-and-set loop the synchronous adapters' read-modify-writes share
(``shmsession.contrib._store.read_modify_write``: Django's ``incr``, cachelib's ``inc``), on
the shared-memory store and on a real Redis store. The other writer is a second handle that
acts from inside ``change``, i.e. between the loop's read and its write, so every race here
is lost on purpose and the outcome is fixed."""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

import pytest

from shmsession import VersionConflict
from shmsession.contrib._store import MAX_CAS_ATTEMPTS, read_modify_write

@pytest.fixture
def two_handles(open_store: Callable[..., Any]) -> Tuple[Any, Any]:
    """Two handles on one fresh store (in shared memory, then in Redis): the loop's, and
    another writer's."""
    return open_store(), open_store()


def test_a_value_made_meanwhile_is_changed_on_top(two_handles: Tuple[Any, Any]) -> None:
    mine, other = two_handles
    seen: List[Optional[bytes]] = []

    def add_one(old: Optional[bytes]) -> Tuple[bytes, int]:
        seen.append(old)
        if old is None:  # another process creates it between our read and our add
            other.write("n", b"41")
        n = int(old or b"0") + 1
        return b"%d" % n, n

    assert read_modify_write(mine, "n", add_one, 60) == 42
    assert seen == [None, b"41"] and mine.read("n") == b"42"


def test_it_gives_up_with_version_conflict_after_the_bound(two_handles: Tuple[Any, Any]
                                                           ) -> None:
    mine, other = two_handles
    mine.write("n", b"0")
    calls = 0

    def always_overtaken(old: Optional[bytes]) -> Tuple[bytes, None]:
        nonlocal calls
        calls += 1
        other.write("n", b"other %d" % calls)  # lands between our read and our write
        return b"mine", None

    with pytest.raises(VersionConflict, match=str(MAX_CAS_ATTEMPTS)):
        read_modify_write(mine, "n", always_overtaken, 60)
    assert calls == MAX_CAS_ATTEMPTS and mine.read("n") == b"other %d" % calls


def test_an_error_in_change_stores_nothing(two_handles: Tuple[Any, Any]) -> None:
    mine, _ = two_handles
    v = mine.write("n", b"word")
    fail: Callable[[Optional[bytes]], Tuple[bytes, int]] = lambda old: (b"", int(old or b""))
    with pytest.raises(ValueError):
        read_modify_write(mine, "n", fail, 60)
    with pytest.raises(ValueError):
        read_modify_write(mine, "absent", fail, 60)
    assert mine.read_versioned("n") == (b"word", v) and "absent" not in mine
