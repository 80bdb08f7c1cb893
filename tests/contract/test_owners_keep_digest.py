"""``invalidate_owner(owner, keep_digest=D)``: keep the owner's session named by its digest, as
``sessions_of`` gives it, for callers that hold digests, not ids (``shmsession revoke
--keep-digest``, a "your devices" page). Run against the four stores of test_owners."""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator, List

import pytest

from shmsession import InvalidOption, InvalidSessionId, InvalidType
from tests.contract.contract import THREAD_TIMEOUT, MakeStore
from tests.contract.test_owners import BAD_DIGESTS, STORES


@pytest.fixture(params=sorted(STORES))
def make_store(request: pytest.FixtureRequest, name: str) -> Iterator[MakeStore]:
    yield from STORES[request.param](request, name)


@pytest.fixture
def store(make_store: MakeStore) -> Any:
    return make_store()


def _digests(store: Any, owner: str) -> List[str]:
    return [i.digest for i in store.sessions_of(owner)]


def test_keep_digest_keeps_that_session_only(store: Any) -> None:
    for sid in ("phone", "laptop", "current"):
        store.write(sid, sid.encode(), owner="alice")
    store.write("bob's", b"v", owner="bob")
    kept = _digests(store, "alice")[2]
    assert store.invalidate_owner("alice", keep_digest=kept) == 2  # kept is not counted
    assert _digests(store, "alice") == [kept]
    assert store.read("current") == b"current" and "phone" not in store
    assert "bob's" in store
    assert store.invalidate_owner("alice", keep_digest=kept) == 0


def test_keep_digest_of_another_owners_session_keeps_nothing_of_this_one(store: Any) -> None:
    store.write("a1", b"v", owner="alice")
    store.write("a2", b"v", owner="alice")
    store.write("b", b"v", owner="bob")
    store.write("plain", b"v")
    bobs = _digests(store, "bob")[0]
    assert store.invalidate_owner("alice", keep_digest=bobs) == 2
    assert "b" in store and "plain" in store and _digests(store, "alice") == []
    assert store.invalidate_owner("nobody", keep_digest="0" * 32) == 0


@pytest.mark.parametrize("bad,error", BAD_DIGESTS)
def test_an_invalid_keep_digest_deletes_nothing(store: Any, bad: Any, error: type) -> None:
    store.write("a", b"v", owner="alice")
    if bad is None:
        assert store.invalidate_owner("alice", keep_digest=None) == 1  # None: keep nothing
        return
    with pytest.raises(error):
        store.invalidate_owner("alice", keep_digest=bad)
    assert "a" in store


def test_keep_and_keep_digest_together_are_refused(store: Any) -> None:
    store.write("a", b"v", owner="alice")
    digest = _digests(store, "alice")[0]
    with pytest.raises(InvalidOption, match="not both"):
        store.invalidate_owner("alice", keep="a", keep_digest=digest)
    assert isinstance(InvalidOption("x"), ValueError)
    assert "a" in store and not issubclass(InvalidOption, (InvalidSessionId, InvalidType))


def test_keep_digest_is_one_step_against_concurrent_writes(make_store: MakeStore) -> None:
    """A writer adds sessions to the owner before, during and after a revoke that keeps one
    digest: every session the owner had when the call began is gone but the kept one."""
    store = make_store()
    writer_store = make_store()
    for k in range(50):
        store.write(f"old-{k}", b"v", owner="alice")
    kept = _digests(store, "alice")[0]
    stop = threading.Event()
    written: List[str] = []

    def writer() -> None:
        # At most 500 (550 in all): under the cap, which would delete the owner's oldest
        # session, the kept one.
        for k in range(500):
            if stop.is_set():
                break
            writer_store.write(f"new-{k}", b"v", owner="alice")
            written.append(f"new-{k}")

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + THREAD_TIMEOUT
        while len(written) < n and t.is_alive() and time.monotonic() < deadline:
            time.sleep(0.001)

    t = threading.Thread(target=writer)
    t.start()
    try:
        wait_for(10)
        before = list(written)
        deleted = store.invalidate_owner("alice", keep_digest=kept)
        wait_for(len(written) + 10)
    finally:
        stop.set()
        t.join(THREAD_TIMEOUT)
    assert not t.is_alive()
    assert len(before) >= 10 and len(written) > len(before), "writes on both sides of the call"
    assert kept in _digests(store, "alice") and deleted >= 49 + len(before)
    assert [sid for sid in before if sid in store] == []
    assert [k for k in range(1, 50) if f"old-{k}" in store] == []
