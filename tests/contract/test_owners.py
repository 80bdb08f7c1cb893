"""Owners ("log out everywhere", issue 14), written once against the store API and run against
every store that has them: ``owner=`` on ``write``/``add``/``replace``, ``sessions_of``,
``invalidate_owner`` and ``invalidate_digest``.

``STORES`` names each kind of store and how to open a handle on the test's store: the
shared-memory store and the Redis one, each also through its async twin. Handles have the sync API:
an async store comes wrapped in ``Blocking``. The cap on an owner's sessions is lowered
through the store's ``_max_owner_sessions`` attribute.
"""

from __future__ import annotations

import math
import re
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest

from shmsession import (InvalidOption, InvalidOwner, InvalidSessionId, InvalidType, SessionInfo,
                        SessionNotFound)
from shmsession._rules import MAX_OWNER_SESSIONS
from tests._stores import REDIS_SECRET, handed_out
from tests.contract.contract import THREAD_TIMEOUT, Blocking, MakeStore, in_threads
from tests.redis_server import redis_keys

Opener = Callable[[pytest.FixtureRequest, str], Iterator[MakeStore]]


def _redis(wrap: bool) -> Opener:
    def open_stores(request: pytest.FixtureRequest, name: str) -> Iterator[MakeStore]:
        from shmsession.redis import AsyncRedisSessionStorage, RedisSessionStorage

        sock = request.getfixturevalue("redis_socket")
        url = f"unix://{sock}"
        try:
            if wrap:
                yield from handed_out(
                    lambda **o: Blocking(AsyncRedisSessionStorage(name, url, secret=REDIS_SECRET,
                                                                  **o)),
                    Blocking.dispose)
            else:
                yield from handed_out(
                    lambda **o: RedisSessionStorage(name, url, secret=REDIS_SECRET, **o),
                    RedisSessionStorage.close)
        finally:
            redis_keys(sock, f"shmsession:{name}:", drop=True)
    return open_stores


def _shm(wrap: bool) -> Opener:
    def open_stores(request: pytest.FixtureRequest, name: str) -> Iterator[MakeStore]:
        from shmsession import SessionStorage
        from shmsession.aio import AsyncSessionStorage

        if wrap:
            yield from handed_out(
                lambda **o: Blocking(AsyncSessionStorage(SessionStorage(name, size=4 << 20, **o))),
                Blocking.dispose)
        else:
            yield from handed_out(lambda **o: SessionStorage(name, size=4 << 20, **o),
                                  SessionStorage.close)
    return open_stores


STORES: Dict[str, Opener] = {"shm": _shm(False), "async-shm": _shm(True),
                             "redis": _redis(False), "async-redis": _redis(True)}

BAD_OWNERS = [(5, InvalidType), (b"alice", InvalidType), ("", InvalidOwner),
              ("x" * 1025, InvalidOwner), ("\udc80", InvalidOwner)]
BAD_DIGESTS = [(None, InvalidType), (b"0" * 32, InvalidType), ("", InvalidSessionId),
               ("0" * 31, InvalidSessionId), ("A" * 32, InvalidSessionId),
               ("z" * 32, InvalidSessionId)]
HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(params=sorted(STORES))
def make_store(request: pytest.FixtureRequest, name: str) -> Iterator[MakeStore]:
    yield from STORES[request.param](request, name)


@pytest.fixture
def store(make_store: MakeStore) -> Any:
    return make_store()


def lower_cap(store: Any, cap: int) -> None:
    inner = getattr(store, "inner", store)  # a Blocking's async store
    getattr(inner, "sync", inner)._max_owner_sessions = cap  # an AsyncSessionStorage's store


def listed(store: Any, owner: str) -> List[str]:
    """The digests of ``owner``'s sessions, oldest first."""
    return [info.digest for info in store.sessions_of(owner)]


def digest_of(store: Any, owner: str, sid: str) -> str:
    """The digest ``sessions_of`` gives for ``sid``, found by its value (the test writes each
    session's id as its value)."""
    for info in store.sessions_of(owner):
        if info.version == store.read_versioned(sid)[1]:
            return info.digest
    raise AssertionError(f"{sid} is not one of {owner}'s sessions")


def test_an_owner_is_set_by_write_add_and_replace(store: Any) -> None:
    assert store.sessions_of("alice") == []
    store.write("w", b"written", owner="alice")
    assert store.add("a", b"added!", owner="alice") is True
    store.write("r", b"r")
    assert store.replace("r", b"replaced", owner="alice") is True
    store.write("anonymous", b"v")
    store.write("b", b"bob's", owner="bob")
    infos = store.sessions_of("alice")
    assert all(isinstance(i, SessionInfo) for i in infos) and len(infos) == 3
    assert {(i.size, i.version) for i in infos} == {
        (len(store.read(sid)), store.read_versioned(sid)[1]) for sid in ("w", "a", "r")}
    assert all(HEX32.fullmatch(i.digest) for i in infos) and len({i.digest for i in infos}) == 3
    assert len(listed(store, "bob")) == 1 and not set(listed(store, "bob")) & set(listed(
        store, "alice"))
    assert store.sessions_of("Alice") == [] and store.sessions_of("carol") == []


def test_a_refused_add_or_replace_sets_no_owner(store: Any) -> None:
    store.write("there", b"v")
    assert store.add("there", b"w", owner="alice") is False
    assert store.replace("absent", b"w", owner="alice") is False
    assert store.sessions_of("alice") == []
    store.write("absent", b"now")  # written later, without an owner: it has none
    assert store.sessions_of("alice") == [] and store.invalidate_owner("alice") == 0
    assert store.read("there") == b"v" and store.read("absent") == b"now"


def test_none_keeps_the_owner_and_another_owner_takes_it(store: Any) -> None:
    store.write("s", b"1", owner="alice")
    store.write("s", b"22")
    assert store.replace("s", b"333") is True
    assert store.touch("s", ttl=60) is True
    v = store.write("s", b"4444", expect=store.read_versioned("s")[1])
    [info] = store.sessions_of("alice")
    assert (info.size, info.version) == (4, v)
    store.write("s", b"55555", owner="bob")
    assert store.sessions_of("alice") == [] and store.invalidate_owner("alice") == 0
    assert [i.size for i in store.sessions_of("bob")] == [5]
    assert store.replace("s", b"6", owner="alice") is True  # and back
    assert store.sessions_of("bob") == [] and len(store.sessions_of("alice")) == 1
    assert store.invalidate_owner("alice") == 1 and "s" not in store


def test_sessions_are_listed_oldest_first_with_their_time_left(make_store: MakeStore) -> None:
    store = make_store(ttl=100)
    for sid in ("first", "second", "third"):
        store.write(sid, sid.encode(), owner="alice")
        time.sleep(0.01)
    store.write("first", b"rewritten", owner="alice")  # still the owner's oldest session
    store.write("forever", b"v", ttl=math.inf, owner="alice")
    infos = store.sessions_of("alice")
    assert [i.size for i in infos] == [len(b"rewritten"), 6, 5, 1]
    assert infos[0].age >= infos[1].age >= infos[2].age >= infos[3].age >= 0
    assert infos[0].age < 30
    assert all(95 < i.ttl <= 100 for i in infos[:3]) and infos[3].ttl is None


def test_expired_sessions_are_not_listed_nor_counted(make_store: MakeStore) -> None:
    store = make_store(ttl=30)
    store.write("brief", b"v", ttl=0.2, owner="alice")
    store.add("brief-too", b"v", ttl=0.2, owner="alice")
    store.write("kept", b"v", owner="alice")
    time.sleep(0.4)
    assert [i.size for i in store.sessions_of("alice")] == [1]
    assert store.invalidate_owner("alice") == 1 and "kept" not in store
    store.write("brief", b"again")  # a new session under an expired id has no owner
    assert store.sessions_of("alice") == []


def test_an_expired_id_taken_by_another_owner_is_not_the_first_owners(make_store: MakeStore
                                                                      ) -> None:
    # Each first owner meets its old id in one call only (whichever call runs first could
    # forget the id for the others), and keeps a session of its own meanwhile.
    store = make_store(ttl=30)
    for sid, owner in (("r1", "alice"), ("r2", "dave"), ("r3", "erin")):
        store.write(sid, b"v", ttl=0.2, owner=owner)
        store.write(f"{owner}'s own", b"v", owner=owner)
    time.sleep(0.3)
    store.write("r1", b"bob's now", owner="bob")
    store.write("r2", b"bob's too", owner="bob")
    assert store.add("r3", b"carol's now", owner="carol") is True
    assert store.invalidate_owner("alice") == 1 and store.read("r1") == b"bob's now"
    assert [i.size for i in store.sessions_of("dave")] == [1]
    lower_cap(store, 1)
    store.write("erin's", b"v", owner="erin")  # at erin's cap of 1: erin's own goes, not r3
    assert "erin's own" not in store
    assert store.read("r3") == b"carol's now" and len(store.sessions_of("carol")) == 1
    assert len(store.sessions_of("bob")) == 2 and len(store.sessions_of("erin")) == 1


def test_renewals_keep_the_owner_past_the_first_expiry(make_store: MakeStore) -> None:
    # One owner per renewal, so that none keeps another's sessions listed.
    store = make_store(ttl=0.3)
    sliding = make_store(ttl=0.3, touch_on_read=True)
    for sid in ("touched", "rewritten", "replaced", "forever"):
        store.write(sid, b"v", owner=sid)
    sliding.write("read", b"v", owner="read")
    assert store.touch("touched", ttl=30) is True
    store.write("rewritten", b"w", ttl=30)
    assert store.replace("replaced", b"w", ttl=30) is True
    assert store.touch("forever", ttl=math.inf) is True
    for _ in range(5):  # 0.75 s of sliding reads
        time.sleep(0.15)
        assert sliding.read("read") == b"v"
    for sid in ("touched", "rewritten", "replaced", "forever", "read"):
        assert len(store.sessions_of(sid)) == 1, sid
        assert store.invalidate_owner(sid) == 1 and sid not in store


def test_writes_without_an_owner_read_nothing(store: Any) -> None:
    """A write, add or replace with ``owner=None`` counts no keyspace hit or miss, owned
    session or not (as a write without owners)."""
    store.write("owned", b"v", owner="alice")
    store.write("plain", b"v")
    before = store.stats()
    store.write("owned", b"w")
    store.write("plain", b"w")
    store.write("new", b"w")
    assert store.replace("owned", b"x") is True and store.add("added", b"x") is True
    assert store.touch("owned", ttl=60) is True
    after = store.stats()
    assert (after.hits - before.hits, after.misses - before.misses) == (0, 0)


def test_invalidate_owner_deletes_every_session_of_the_owner_only(store: Any) -> None:
    ids = [store.new_id() for _ in range(5)]
    for sid in ids:
        store.write(sid, b"v", owner="alice")
    store.write("bob's", b"v", owner="bob")
    store.write("anonymous", b"v")
    deletes = store.stats().deletes
    assert store.invalidate_owner("alice") == 5
    assert store.stats().deletes - deletes == 5
    for sid in ids:
        assert sid not in store and store.get(sid) is None
        with pytest.raises(SessionNotFound):
            store.read(sid)
    assert store.read("bob's") == b"v" and store.read("anonymous") == b"v"
    assert store.sessions_of("alice") == [] and len(store.sessions_of("bob")) == 1
    assert store.invalidate_owner("alice") == 0 and store.invalidate_owner("nobody") == 0
    # What "log out everywhere" relies on: an old id brings nothing back.
    assert store.replace(ids[0], b"stale save") is False and ids[0] not in store
    store.write(ids[1], b"new")  # a new session, with no owner
    assert store.sessions_of("alice") == [] and store.read(ids[1]) == b"new"
    assert store.invalidate_owner("alice") == 0 and ids[1] in store


def test_invalidate_owner_keeps_the_current_session(store: Any) -> None:
    for sid in ("phone", "laptop", "current"):
        store.write(sid, sid.encode(), owner="alice")
    store.write("bob's", b"v", owner="bob")
    kept = digest_of(store, "alice", "current")
    assert store.invalidate_owner("alice", keep="current") == 2  # keep is not counted
    assert "phone" not in store and "laptop" not in store
    assert store.read("current") == b"current" and listed(store, "alice") == [kept]
    assert store.invalidate_owner("alice", keep="current") == 0
    # keep of another owner's session, or of an unknown id: harmless.
    store.write("tablet", b"v", owner="alice")
    assert store.invalidate_owner("alice", keep="bob's") == 2
    assert store.read("bob's") == b"v" and store.sessions_of("alice") == []
    store.write("tablet", b"v", owner="alice")
    assert store.invalidate_owner("alice", keep="never-issued") == 1
    assert "tablet" not in store and "never-issued" not in store


def test_invalidate_digest_deletes_that_one_session(store: Any) -> None:
    for sid in ("phone", "laptop"):
        store.write(sid, sid.encode(), owner="alice")
    phone = digest_of(store, "alice", "phone")
    deletes = store.stats().deletes
    assert store.invalidate_digest(phone) is True
    assert "phone" not in store and store.read("laptop") == b"laptop"
    assert phone not in listed(store, "alice") and len(listed(store, "alice")) == 1
    assert store.stats().deletes - deletes == 1
    assert store.invalidate_digest(phone) is False
    assert store.invalidate_digest("0" * 32) is False
    store.write("phone", b"again")  # its tie to the owner went with it
    assert len(listed(store, "alice")) == 1 and store.invalidate_owner("alice") == 1
    assert store.read("phone") == b"again"


def test_the_cap_deletes_the_oldest_sessions_of_the_owner(make_store: MakeStore) -> None:
    store = make_store(ttl=30)
    lower_cap(store, 3)
    store.write("bob's", b"v", owner="bob")
    store.write("brief", b"v", ttl=0.2, owner="alice")
    time.sleep(0.3)  # an expired session takes no room
    deletes = store.stats().deletes
    for k in range(5):
        store.write(f"s{k}", b"%d" % k, owner="alice")
        time.sleep(0.005)
    assert store.stats().deletes - deletes == 2
    assert "s0" not in store and "s1" not in store
    assert [i.version for i in store.sessions_of("alice")] == [
        store.read_versioned(f"s{k}")[1] for k in (2, 3, 4)]
    store.write("s2", b"again", owner="alice")  # one of the three: nothing to delete
    assert store.add("s5", b"5", owner="alice") is True  # one more: the oldest, s2, goes
    assert "s2" not in store and [s in store for s in ("s3", "s4", "s5")] == [True] * 3
    assert store.stats().deletes - deletes == 3 and store.read("bob's") == b"v"
    store.write("s6", b"6")  # no owner: no cap
    assert store.replace("s6", b"6", owner="alice") is True and "s3" not in store


def test_only_live_sessions_count_toward_the_cap(make_store: MakeStore) -> None:
    store = make_store(ttl=30)
    lower_cap(store, 2)
    store.write("a", b"a", owner="alice")
    store.write("brief", b"v", ttl=0.2, owner="alice")
    time.sleep(0.3)
    deletes = store.stats().deletes
    store.write("b", b"b", owner="alice")  # "brief" is gone: two live sessions, none deleted
    assert "a" in store and store.stats().deletes == deletes
    store.write("moved", b"v", owner="alice")
    assert "a" not in store and "b" in store  # now the oldest goes
    store.write("moved", b"v", owner="bob")  # moved away: alice has one session left
    store.write("c", b"c", owner="alice")
    assert "b" in store and "c" in store and store.stats().deletes == deletes + 1
    store.write("b", b"b again", owner="alice")  # at the cap, but no session joins: none goes
    assert store.read("b") == b"b again" and "c" in store
    assert sorted(i.size for i in store.sessions_of("alice")) == [1, 7]
    assert store.stats().deletes == deletes + 1


def test_the_real_cap(store: Any) -> None:
    started = time.monotonic()
    for k in range(MAX_OWNER_SESSIONS + 1):
        store.write(f"s{k}", b"v", owner="alice")
    infos = store.sessions_of("alice")
    assert len(infos) == MAX_OWNER_SESSIONS and "s0" not in store and "s1" in store
    assert store.invalidate_owner("alice") == MAX_OWNER_SESSIONS
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("owner,err", BAD_OWNERS)
def test_bad_owners_are_refused_before_anything_changes(store: Any, owner: object,
                                                        err: type) -> None:
    v = store.write("live", b"kept", owner="alice")
    calls: Tuple[Callable[[], object], ...] = (
        lambda: store.write("new", b"v", owner=owner),
        lambda: store.write("live", b"v", owner=owner),
        lambda: store.write("live", lambda s: s.write(b"v"), owner=owner),
        lambda: store.write("live", b"v", expect=v, owner=owner),
        lambda: store.add("new", b"v", owner=owner),
        lambda: store.replace("live", b"v", owner=owner),
        lambda: store.sessions_of(owner), lambda: store.invalidate_owner(owner),
        lambda: store.invalidate_owner(owner, keep="live"))
    for call in calls:
        with pytest.raises(err):
            call()
    with pytest.raises(InvalidType):
        store.sessions_of(None)
    with pytest.raises(InvalidType):
        store.invalidate_owner(None)
    with pytest.raises(InvalidSessionId):
        store.invalidate_owner("alice", keep="")  # a bad keep deletes nothing either
    assert store.read_versioned("live") == (b"kept", v) and "new" not in store
    assert len(store.sessions_of("alice")) == 1
    assert store.write("live", b"again") == v + 1  # no version was spent on bad input


@pytest.mark.parametrize("digest,err", BAD_DIGESTS)
def test_bad_digests_are_refused(store: Any, digest: object, err: type) -> None:
    store.write("live", b"kept", owner="alice")
    with pytest.raises(err):
        store.invalidate_digest(digest)
    assert store.read("live") == b"kept" and len(store.sessions_of("alice")) == 1


def test_invalidate_owner_is_one_step_against_concurrent_writes(make_store: MakeStore
                                                                ) -> None:
    """Writers keep writing the owner's sessions (new ones, and again the ones they wrote)
    while invalidate_owner runs. Versions order every write, so the call must cut them in
    two: every session last written before it is gone, every one written after it is there
    with its last value; none survives half."""
    writers, rounds = 3, 60
    handles = [make_store() for _ in range(writers + 1)]
    for k in range(10):  # sessions that surely exist before the call
        handles[0].write(f"pre-{k}", b"pre", owner="alice")
    written, started, done = threading.Event(), threading.Event(), threading.Event()
    counted = [0]
    lock = threading.Lock()
    log: List[Tuple[str, int, bytes]] = []

    def write(w: int) -> None:
        h = handles[w]
        for k in range(rounds):
            # Writes overlap the call from its start, and the last ones surely follow it
            # (however the threads are scheduled): the test then sees both sides of it.
            if k == rounds * 2 // 3:
                assert started.wait(THREAD_TIMEOUT)
            if k == rounds - 3:
                assert done.wait(THREAD_TIMEOUT)
            sid = f"w{w}-{k // 2}"  # each session written twice, a round apart
            value = b"%d-%d" % (w, k)
            version = h.write(sid, value, owner="alice")
            with lock:
                log.append((sid, version, value))
                counted[0] += 1
                if counted[0] >= writers * rounds // 3:
                    written.set()

    def revoke() -> int:
        assert written.wait(THREAD_TIMEOUT)
        started.set()
        try:
            return int(handles[writers].invalidate_owner("alice"))
        finally:
            done.set()

    *_, deleted = in_threads([lambda w=w: write(w) for w in range(writers)] + [revoke])
    last: Dict[str, Tuple[int, bytes]] = {f"pre-{k}": (0, b"pre") for k in range(10)}
    for sid, version, value in log:
        if version > last.get(sid, (0, b""))[0]:
            last[sid] = (version, value)
    present = {sid for sid in last if sid in handles[0]}
    absent = set(last) - present
    assert {f"pre-{k}" for k in range(10)} <= absent
    cut_low = max(last[sid][0] for sid in absent)
    cut_high = min(last[sid][0] for sid in present)
    assert cut_low < cut_high, "a session written before the call survived it"
    for sid in present:
        assert handles[0].read_versioned(sid) == (last[sid][1], last[sid][0])
    first: Dict[str, int] = {}
    for sid, version, _ in log:
        first[sid] = min(version, first.get(sid, version))
    first.update({f"pre-{k}": 0 for k in range(10)})
    assert (sum(v < cut_low + 1 for v in first.values()) <= deleted
            <= sum(v < cut_high for v in first.values()))
    assert sorted(i.version for i in handles[0].sessions_of("alice")) == sorted(
        last[sid][0] for sid in present)


# --- keep_digest: keep the owner's session named by its digest -------------------------------
# For callers that hold digests, not ids (``shmsession revoke --keep-digest``, a "your
# devices" page).


def test_keep_digest_keeps_that_session_only(store: Any) -> None:
    for sid in ("phone", "laptop", "current"):
        store.write(sid, sid.encode(), owner="alice")
    store.write("bob's", b"v", owner="bob")
    kept = listed(store, "alice")[2]
    assert store.invalidate_owner("alice", keep_digest=kept) == 2  # kept is not counted
    assert listed(store, "alice") == [kept]
    assert store.read("current") == b"current" and "phone" not in store
    assert "bob's" in store
    assert store.invalidate_owner("alice", keep_digest=kept) == 0


def test_keep_digest_of_another_owners_session_keeps_nothing_of_this_one(store: Any) -> None:
    store.write("a1", b"v", owner="alice")
    store.write("a2", b"v", owner="alice")
    store.write("b", b"v", owner="bob")
    store.write("plain", b"v")
    bobs = listed(store, "bob")[0]
    assert store.invalidate_owner("alice", keep_digest=bobs) == 2
    assert "b" in store and "plain" in store and listed(store, "alice") == []
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
    digest = listed(store, "alice")[0]
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
    kept = listed(store, "alice")[0]
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
    assert kept in listed(store, "alice") and deleted >= 49 + len(before)
    assert [sid for sid in before if sid in store] == []
    assert [k for k in range(1, 50) if f"old-{k}" in store] == []
