"""Reads that take no lock (the seqlock of ``shmsession._reader``, on x86).

A read copies without the lock and keeps the copy only if the segment's sequence word was
the same even number before and after. These tests hold it to what a locked read gave:
never a torn value, never a false miss while deletions shift entries around, no waiting on a
lock holder that is not writing, and waiting (then repair) when the holder is mid-change.

These are tests of internals: to catch a reader between two loads, or a writer mid-change,
they hold the lock, open a transaction, or spy on the reader's control words
(``_access``, ``_engine``, ``_reader``), which no public call exposes.
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Dict, Tuple

import pytest

from shmsession import SessionNotFound, SessionStorage
from shmsession import _layout as L
from shmsession._reader import LOCK_FREE_READS

from ._children import Children, Conn, lock_held_by_a_child

pytestmark = pytest.mark.skipif(
    not LOCK_FREE_READS, reason="on this processor every read takes the lock"
)

SIZE = 4 << 20


def _value(k: int, gen: int) -> bytes:
    """Key k's value of generation gen: self-describing, so a torn one shows."""
    size = 40 + (gen * 7919 + k * 104729) % 3000
    head = f"{k}:{gen}:".encode()
    return head + bytes([gen % 251]) * size


def _whole(k: int, got: bytes) -> bool:
    kk, gen, _ = got.split(b":", 2)
    return int(kk) == k and got == _value(k, int(gen))


def test_a_read_does_not_wait_for_a_lock_holder_that_is_not_writing(name: str) -> None:
    with SessionStorage(name, size=SIZE) as store:
        store.write("k", b"v")
        with lock_held_by_a_child(name, 10.0) as (kids, child):
            t0 = time.monotonic()
            for _ in range(200):
                assert store.read("k") == b"v"
                assert store.get("absent") is None
                assert "k" in store
            elapsed = time.monotonic() - t0
            child.send("release")
            child.expect("released")
            child.expect("done")
            kids.join_all()
        assert elapsed < 1.0, f"600 reads took {elapsed:.3f} s: they waited for the lock"


def _mid_transaction_child(conn: Conn, name: str, hold: float, visible: bool = True) -> None:
    """Open a transaction that overwrites "k" in place, and sit in it for ``hold`` s (or
    until SIGKILLed); then finish it. With ``visible`` false it sits after saving the undo
    record, before the overwrite."""
    s = SessionStorage(name)
    s._access.acquire()
    voff = s._engine.t.get(s._engine.t.lookup(s._digests.of("k")))[3]
    s._engine.j.begin()
    if visible:
        s._engine.j.write(voff, b"TORN")
    else:
        s._engine.j.record(voff, 4)
    conn.send(("held", time.monotonic()))
    conn.poll(hold)
    s._engine.j.commit()
    s._lock.release()
    conn.send(("released", time.monotonic()))


def _read_during_transaction(name: str, visible: bool) -> Tuple[bytes, float]:
    """Read "k" while another process sits 0.5 s in a transaction that has overwritten its
    first bytes (``visible``) or only saved their undo record; the value read, and how long
    the read took."""
    with SessionStorage(name, size=SIZE) as store:
        store.write("k", b"1234 and more")
        with lock_held_by_a_child(name, 0.5, _mid_transaction_child, visible) as (kids, child):
            t0 = time.monotonic()
            got = store.read("k")
            waited = time.monotonic() - t0
            child.expect("released")
            child.expect("done")
            kids.join_all()
        return got, waited


def test_a_read_waits_for_a_writer_in_the_middle_of_a_change(name: str) -> None:
    got, waited = _read_during_transaction(name, visible=True)
    assert waited >= 0.25, "the read did not wait for the writer's commit"
    assert got == b"TORN and more"  # what the writer committed, whole


def test_a_read_does_not_wait_for_a_transaction_that_changed_nothing_it_copies(name: str) -> None:
    """The sequence word goes odd at a transaction's first store a reader could copy, not at
    begin(): undo records and control words are not such stores."""
    got, waited = _read_during_transaction(name, visible=False)
    assert waited < 0.25, f"the read waited {waited:.3f} s for a transaction it cannot see"
    assert got == b"1234 and more"


def test_a_read_after_a_writer_died_mid_change_sees_the_change_undone(name: str) -> None:
    with SessionStorage(name, size=SIZE) as store:
        store.write("k", b"1234 and more")
        with lock_held_by_a_child(name, 60.0, _mid_transaction_child) as (kids, child):
            os.kill(child.pid, signal.SIGKILL)
            child.proc.join(10)
        # The sequence word was left odd: the read goes to the lock, which repairs first.
        assert store.read("k") == b"1234 and more"
        assert store.get("k") == b"1234 and more"
        store.check()


def _churn_child(conn: Conn, name: str, seed: int, seconds: float, permanent: int) -> int:
    """Rewrite the permanent keys (in place, grown, shrunk) and write and delete churn keys,
    whose deletions shift the permanent ones along their probe runs. Returns ops done."""
    s = SessionStorage(name)
    r = random.Random(seed)
    gen = seed * 1_000_000
    ops = 0
    conn.send(("started", None))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and ops < 2_000_000:
        gen += 1
        x = r.random()
        if x < 0.4:
            k = r.randrange(permanent)
            s.write(f"p{k}", _value(k, gen))
        elif x < 0.7:
            s.write(f"c{r.randrange(40)}", b"c" * r.randrange(1, 2000))
        else:
            s.invalidate(f"c{r.randrange(40)}")
        ops += 1
    return ops


def test_reads_racing_writers_never_see_a_torn_value_or_a_false_miss(name: str) -> None:
    """Two processes rewrite 16 sessions and churn 40 more through a 128-slot table (probe
    runs overlap; deletions shift entries back) while this one reads the 16 without the lock.
    Every read must find its session (none is ever deleted) and get a whole version."""
    permanent = 16
    with SessionStorage(name, size=SIZE, max_entries=96, ttl=None, max_value_size=8192) as store:
        for k in range(permanent):
            store.write(f"p{k}", _value(k, 0))
        reads = 0
        seen: Dict[int, set] = {k: set() for k in range(permanent)}
        with Children("fork") as kids:
            writers = [kids.start(_churn_child, name, seed, 2.0, permanent) for seed in (1, 2)]
            for w in writers:
                w.expect("started")
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and reads < 2_000_000:
                k = reads % permanent
                try:
                    got = store.read(f"p{k}")
                except SessionNotFound:
                    raise AssertionError(f"p{k} was missed: a false miss") from None
                assert _whole(k, got), f"a torn value of p{k}: {got[:40]!r}..."
                seen[k].add(got.split(b":", 2)[1])
                reads += 1
            done = [w.expect("done") for w in writers]
            kids.join_all()
        assert reads > 10_000 and min(done) > 1_000, (reads, done)
        # The reads did overlap the writes: most sessions were seen in several versions.
        assert sum(len(v) > 3 for v in seen.values()) > permanent // 2
        store.check()


class _WriterBetweenLoads:
    """The store's control words, with a whole transaction's worth of sequence change (+2)
    landing between a read's first and second load of the sequence word -- the moment a
    concurrent writer would have to hit, made certain."""

    def __init__(self, words: memoryview, moves: int) -> None:
        self.words = words
        self.moves = moves
        self.seq_loads = 0

    def __getitem__(self, i: int) -> int:
        if i == L.SEQ_W:
            self.seq_loads += 1
            if self.seq_loads % 2 == 0 and self.moves:
                self.moves -= 1
                self.words[i] += 2
        return int(self.words[i])

    def __setitem__(self, i: int, v: int) -> None:
        self.words[i] = v


@pytest.mark.parametrize("present", [True, False], ids=["hit", "miss"])
def test_a_read_that_saw_the_sequence_move_looks_again(name: str, present: bool) -> None:
    with SessionStorage(name, size=SIZE) as store:
        if present:
            store.write("k", b"v")
        # The pure-Python reader's: the compiled one (_hot.c) loads the words in C, where
        # nothing can come between two loads (the concurrent tests above read through it).
        store._hot = None
        reader = store._reader  # the lock-free path's view of the control words
        words = reader.w

        def get_with_a_writer_moving(moves: int) -> int:
            """A get while a writer moves the sequence ``moves`` times; its sequence loads."""
            spy = _WriterBetweenLoads(words, moves=moves)
            reader.w = spy  # type: ignore[assignment]
            try:
                assert store.get("k") == (b"v" if present else None)
            finally:
                reader.w = words
            return spy.seq_loads

        assert get_with_a_writer_moving(1) == 4, (
            "the first copy was kept though the sequence had moved")
        # Moving on every attempt: the read gives up on lock-free copies and takes the lock.
        assert get_with_a_writer_moving(100) >= 6
