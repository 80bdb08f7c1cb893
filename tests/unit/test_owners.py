"""Owners in the shared-memory store: ``write(..., owner=)``, ``sessions_of``,
``invalidate_owner``, ``invalidate_digest``, and the owner index that keeps them exact
through every path that removes or moves a session (``shmsession._owners``).

Every test runs on a real segment and ends with ``check()``, which walks the index against
the table; ``_index`` reads the index raw to compare it with what the test expects.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Dict, Iterator, List

import pytest

from shmsession import (
    CorruptSegment, InvalidOwner, InvalidSessionId, InvalidType, SessionStorage,
)
from shmsession import _ownership
from shmsession import _layout as L
from shmsession._rules import MAX_OWNER_SESSIONS, owner_digest
from shmsession.aio import AsyncSessionStorage


@pytest.fixture
def small(name: str) -> Iterator[SessionStorage]:
    """64 sessions at most in 128 slots: probe runs, collisions and backward shifts."""
    s = SessionStorage(name, size=1 << 20, max_entries=64, ttl=None, max_value_size=4096)
    try:
        yield s
    finally:
        s.close()


def _digests(s: SessionStorage, *sids: str) -> List[str]:
    return [s._digests.of(sid).hex() for sid in sids]


def _of(s: SessionStorage, owner: str) -> List[str]:
    return [i.digest for i in s.sessions_of(owner)]


def _index(s: SessionStorage) -> Dict[bytes, List[bytes]]:
    """Owner digest -> session digests, oldest first, read raw from the owner lists."""
    e = s._engine
    out: Dict[bytes, List[bytes]] = {}
    for i, slot in e.t.used():
        owner = e.o.owned(i)[0]
        if owner != L.NO_OWNER and owner not in out:
            out[owner] = [e.t.get(k)[0] for k in e.o.members(owner)]
    return out


def test_write_with_an_owner_lists_the_session_oldest_first(small: SessionStorage) -> None:
    for k in range(5):
        small.write(f"a{k}", b"x" * (10 + k), owner="alice")
    small.write("b0", b"b", owner="bob")
    small.write("n0", b"nobody")
    assert _of(small, "alice") == _digests(small, *[f"a{k}" for k in range(5)])
    assert [i.size for i in small.sessions_of("alice")] == [10, 11, 12, 13, 14]
    assert _of(small, "bob") == _digests(small, "b0")
    assert small.sessions_of("carol") == []
    small.check()


def test_none_keeps_the_owner_and_its_place(small: SessionStorage) -> None:
    small.write("a0", b"1", owner="alice")
    small.write("a1", b"1", owner="alice")
    small.write("a0", b"2" * 3000)  # grows into another block: the slot half stays
    small.write("a0", b"3")  # in place
    assert small.replace("a0", b"4")
    assert small.touch("a0", ttl=60)
    small.write("a0", b"5", owner="alice")  # the same owner: its place is kept
    assert _of(small, "alice") == _digests(small, "a0", "a1")
    assert small.read("a0") == b"5"
    small.check()


def test_add_and_replace_take_an_owner(small: SessionStorage) -> None:
    assert small.add("s", b"v", owner="alice")
    assert not small.add("s", b"w", owner="bob")  # not added: the owner stays
    assert _of(small, "alice") == _digests(small, "s") and _of(small, "bob") == []
    assert not small.replace("t", b"v", owner="bob")  # no session: nothing owned
    assert _of(small, "bob") == []
    assert small.replace("s", b"w", owner="bob")
    assert _of(small, "alice") == [] and _of(small, "bob") == _digests(small, "s")
    small.check()


def test_an_owner_change_moves_the_session_to_the_newest_place(small: SessionStorage) -> None:
    for k in range(3):
        small.write(f"s{k}", b"v", owner="alice")
    small.write("b", b"v", owner="bob")
    small.write("s1", b"w", owner="bob")
    assert _of(small, "alice") == _digests(small, "s0", "s2")
    assert _of(small, "bob") == _digests(small, "b", "s1")
    small.write("s1", b"w", owner="alice")
    assert _of(small, "alice") == _digests(small, "s0", "s2", "s1")
    small.check()


def test_invalidate_owner_deletes_all_but_keep(small: SessionStorage) -> None:
    for k in range(6):
        small.write(f"a{k}", b"v", owner="alice")
        small.write(f"b{k}", b"v", owner="bob")
    writes = small.stats().deletes
    assert small.invalidate_owner("alice", keep="a3") == 5
    assert small.stats().deletes == writes + 5
    assert [f"a{k}" in small for k in range(6)] == [k == 3 for k in range(6)]
    assert all(f"b{k}" in small for k in range(6))
    assert _of(small, "alice") == _digests(small, "a3")
    assert small.invalidate_owner("alice") == 1
    assert small.invalidate_owner("alice") == 0 and _of(small, "alice") == []
    assert small.invalidate_owner("nobody", keep="b0") == 0
    assert len(small) == 6
    small.check()


def test_invalidate_owner_counts_only_live_sessions(small: SessionStorage) -> None:
    small.write("gone", b"v", ttl=0.001, owner="alice")
    small.write("here", b"v", owner="alice")
    time.sleep(0.01)
    assert _of(small, "alice") == _digests(small, "here")  # the expired one is not listed
    assert small.invalidate_owner("alice") == 1
    assert small.stats().entries == 0
    small.check()


def test_invalidate_owner_of_more_than_one_transaction(name: str) -> None:
    """More sessions than one transaction of invalidate_owner carries (_OWNER_TXN)."""
    with SessionStorage(name, size=4 << 20, max_entries=2000, ttl=None) as s:
        n = 3 * _ownership._OWNER_TXN + 5
        for k in range(n):
            s.write(f"a{k}", b"v" * 100, owner="alice")
            if k % 4 == 0:
                s.write(f"b{k}", b"w" * 100, owner="bob")
        assert s.invalidate_owner("alice", keep="a7") == n - 1
        assert s.sessions_of("alice")[0].digest == s._digests.of("a7").hex()
        assert len(s) == 1 + len(s.sessions_of("bob"))
        s.check()


def test_invalidate_digest_deletes_the_session_sessions_of_names(small: SessionStorage) -> None:
    small.write("a0", b"v", owner="alice")
    small.write("a1", b"v", owner="alice")
    first = small.sessions_of("alice")[0].digest
    assert small.invalidate_digest(first)
    assert not small.invalidate_digest(first)
    assert "a0" not in small and "a1" in small
    assert _of(small, "alice") == _digests(small, "a1")
    small.write("plain", b"v")
    assert small.invalidate_digest(_digests(small, "plain")[0])  # an unowned one too
    small.check()


def test_bad_input_raises_before_anything_changes(small: SessionStorage) -> None:
    small.write("s", b"v", owner="alice")
    before = (small.stats().writes, _of(small, "alice"))
    for bad, error in (("", InvalidOwner), ("x" * 1025, InvalidOwner), (7, InvalidType),
                       (b"alice", InvalidType)):
        with pytest.raises(error):
            small.write("s", b"new", owner=bad)  # type: ignore[arg-type]
        with pytest.raises(error):
            small.add("t", b"new", owner=bad)  # type: ignore[arg-type]
        with pytest.raises(error):
            small.replace("s", b"new", owner=bad)  # type: ignore[arg-type]
        with pytest.raises(error):
            small.sessions_of(bad)  # type: ignore[arg-type]
        with pytest.raises(error):
            small.invalidate_owner(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionId):
        small.invalidate_owner("alice", keep="")
    for bad_digest in ("", "A" * 32, "0" * 31, "z" * 32):
        with pytest.raises(InvalidSessionId):
            small.invalidate_digest(bad_digest)
    with pytest.raises(InvalidType):
        small.invalidate_digest(None)  # type: ignore[arg-type]
    assert small.read("s") == b"v" and "t" not in small
    assert (small.stats().writes, _of(small, "alice")) == before
    small.check()


def test_the_cap_deletes_the_owners_oldest(name: str) -> None:
    with SessionStorage(name, size=2 << 20, max_entries=MAX_OWNER_SESSIONS + 100,
                        ttl=None) as s:
        for k in range(MAX_OWNER_SESSIONS):
            s.write(f"a{k}", b"v", owner="alice")
        s.write("b", b"v", owner="bob")
        deletes = s.stats().deletes
        s.write("new", b"v", owner="alice")
        assert "a0" not in s and "a1" in s and "new" in s
        assert s.stats().deletes == deletes + 1
        listed = _of(s, "alice")
        assert len(listed) == MAX_OWNER_SESSIONS
        assert listed[0] == _digests(s, "a1")[0] and listed[-1] == _digests(s, "new")[0]
        s.write("b", b"v", owner="alice")  # moving one in evicts the oldest too
        assert "a1" not in s and _of(s, "alice")[-1] == _digests(s, "b")[0]
        assert _of(s, "bob") == []
        s.check()


def test_expiry_and_sweeps_leave_the_index_exact(small: SessionStorage) -> None:
    for k in range(40):
        small.write(f"s{k}", b"v" * 20, ttl=0.001 if k % 2 else None, owner=f"u{k % 4}")
    time.sleep(0.01)
    small.check()
    assert small.get("s1") is None  # reclaimed on read
    small.write("s3", b"back", owner="u1")  # reclaimed on write, then owned anew
    small._engine.sweep_next()  # the next write sweeps, on either path
    if small._hot is not None:
        small._hot.sweep_next()
    small.write("x", b"v")
    small.check()
    assert small._engine.sweep(time.monotonic_ns(), 1 << 10, 1 << 10) >= 0
    small.check()
    assert sum(len(v) for v in _index(small).values()) == 21  # 20 even ones and s3
    assert _of(small, "u1") == _digests(small, "s3")
    assert _of(small, "u0") == _digests(small, *[f"s{k}" for k in range(0, 40, 4)])


def test_eviction_under_pressure_keeps_the_index_exact(name: str) -> None:
    with SessionStorage(name, size=1 << 20, max_entries=200, ttl=None,
                        max_value_size=8192) as s:
        for k in range(3000):
            s.write(f"s{k}", os.urandom(100 + (k * 7919) % 3000), owner=f"u{k % 7}")
            if k % 500 == 0:
                s.check()
        st = s.stats()
        assert st.evictions > 1000
        s.check()
        index = _index(s)
        assert sum(len(v) for v in index.values()) == st.entries
        for k in range(7):
            assert _of(s, f"u{k}") == [d.hex() for d in index.get(
                owner_digest(s._secret, f"u{k}"), [])]


def test_backward_shifts_of_owned_slots_keep_the_lists(small: SessionStorage) -> None:
    """64 sessions in 128 slots: deleting in every order moves owned slots back."""
    sids = [f"s{k}" for k in range(64)]
    for k, sid in enumerate(sids):
        small.write(sid, b"v" * k, owner=f"u{k % 5}")
    t = small._engine.t
    displaced = sum(1 for i, slot in t.used() if t.home(slot[0]) != i)
    assert displaced > 5  # the deletions below do shift owned slots
    for k in list(range(0, 64, 3)) + list(range(1, 64, 3)):
        assert small.invalidate(sids[k])
        small.check()
    for owner in range(5):
        left = [sids[k] for k in range(2, 64, 3) if k % 5 == owner]
        assert _of(small, f"u{owner}") == _digests(small, *left)


def test_clear_empties_the_index(small: SessionStorage) -> None:
    for k in range(10):
        small.write(f"s{k}", b"v", owner="alice")
    small.clear()
    assert _of(small, "alice") == [] and _index(small) == {}
    small.write("s0", b"v", owner="alice")
    assert _of(small, "alice") == _digests(small, "s0")
    small.check()


def test_check_catches_a_broken_link(small: SessionStorage) -> None:
    for k in range(4):
        small.write(f"s{k}", b"v", owner="alice")
    e = small._engine
    i = e.t.lookup(small._digests.of("s1"))
    pos = e.t.off + (i << L.SLOT_SHIFT) + L.SLOT_NEXT
    saved = bytes(e.buf[pos : pos + 4])
    e.buf[pos : pos + 4] = L.LINK32.pack(L.NONE)  # the list ends early
    with pytest.raises(CorruptSegment) as caught:
        small.check()
    assert any("owner entry" in p for p in caught.value.problems)
    e.buf[pos : pos + 4] = saved
    small.check()
    owner_pos = e.t.off + (i << L.SLOT_SHIFT) + L.SLOT_OWNER_OFF
    e.buf[owner_pos] ^= 1  # a member names another owner
    with pytest.raises(CorruptSegment) as caught:
        small.check()
    assert any("does not name" in p for p in caught.value.problems)
    e.buf[owner_pos] ^= 1
    small.check()


def test_a_snapshot_keeps_owners_and_their_order(name: str, tmp_path: "os.PathLike[str]") -> None:
    path = os.path.join(tmp_path, "owners.snap")
    with SessionStorage(name, size=1 << 20, ttl=None) as s:
        for k in range(6):
            s.write(f"a{k}", b"v" * k, owner="alice", ttl=math.inf if k % 2 else 3600)
        s.write("b", b"w", owner="bob")
        s.write("a0", b"moved", owner="bob")
        s.write("a2", b"moved", owner="alice")  # same owner: keeps its place
        s.write("plain", b"p")
        want = {o: _of(s, o) for o in ("alice", "bob")}
        assert s.dump(path) == 8
        s.unlink()
    with SessionStorage.load(name, path) as t:
        assert {o: _of(t, o) for o in ("alice", "bob")} == want
        assert t.read("a0") == b"moved" and t.read("plain") == b"p"
        t.check()
        assert t.invalidate_owner("alice") == 5 and len(t) == 3
        t.unlink()


def test_the_async_store_has_the_owner_methods(name: str) -> None:
    async def main() -> None:
        async with await AsyncSessionStorage.open(name, size=1 << 20, ttl=None) as s:
            await s.write("a", b"1", owner="alice")
            assert await s.add("b", b"2", owner="alice")
            assert await s.replace("a", b"3", owner="alice")
            infos = await s.sessions_of("alice")
            assert [i.digest for i in infos] == _digests(s.sync, "a", "b")
            assert await s.invalidate_digest(infos[1].digest)
            await s.write("c", b"4", owner="alice")
            assert await s.invalidate_owner("alice", keep="c") == 1
            assert [i.digest for i in await s.sessions_of("alice")] == _digests(s.sync, "c")
            await s.check()
            await s.unlink()

    asyncio.run(main())


def test_a_handle_digests_owners_as_the_shared_rule_does(small: SessionStorage) -> None:
    """The handle's memo of owner digests (``Digests.owner``) gives what
    ``_rules.owner_digest`` gives, the Redis store's rule too, and refuses the same."""
    class Name(str):
        pass

    for owner in ("alice", "é" * 300, Name("bob"), "alice"):
        assert small._digests.owner(owner) == owner_digest(small._secret, owner)
    with pytest.raises(InvalidOwner):
        small._digests.owner("")
    with pytest.raises(InvalidType):
        small._digests.owner(3)


def test_a_list_through_an_empty_slot_is_damage(small: SessionStorage) -> None:
    small.write("s0", b"v", owner="alice")
    small.write("s1", b"v", owner="alice")
    e = small._engine
    i = e.t.lookup(small._digests.of("s1"))
    pos = e.t.off + (i << L.SLOT_SHIFT) + L.SLOT_STATE
    e.buf[pos] = L.EMPTY  # the slot goes, its owner's list still holds it
    with pytest.raises(CorruptSegment):
        small.sessions_of("alice")
    with pytest.raises(CorruptSegment):
        small.check()
    e.buf[pos] = L.USED
    small.check()
