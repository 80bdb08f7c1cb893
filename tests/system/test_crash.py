"""Fault injection: stop the writer at every step of every mutating operation.

The journal calls ``store._engine.j.fault`` before every store to shared memory a transaction makes
(and ``clear`` before each of its steps). For each scenario and each step k, the writer is
stopped at step k -- by SIGKILL in a forked child, or by ``SystemExit`` raised in-process,
which is what gunicorn's worker timeout does -- and then, after recovery, the store must pass
``check()`` and hold exactly the contents of before the operation (or, for ``clear``, which
is finished rather than undone, of after). The run that reaches the end must hold the
contents of after, and every session the operation does not concern must be byte-identical.

These are tests of internals: they set the journal's fault hook, read the table raw and map
ids to digests (``store._engine``, ``store._digests``), since no public call can
stop a writer between two of its stores to shared memory.
"""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from shmsession import SessionStorage
from shmsession import _layout as L
from shmsession._build import BUILD
from shmsession._rules import owner_digest

from tests._stores import remove_store

# digest -> (value, version, expires, owner digest, joined)
Contents = Dict[bytes, Tuple[bytes, int, int, bytes, int]]


def contents(store: SessionStorage) -> Contents:
    """Everything the table references, read raw (no lock, no side effects), with each
    session's owner and the time it became the owner's (the links between slots are
    check()'s to verify: a backward shift may change them for any session)."""
    buf = store._engine.buf
    owned = store._engine.o.owned
    return {s[0]: (bytes(buf[s[3] : s[3] + s[2]]), s[7], s[5], owned(i)[0], owned(i)[3])
            for i, s in store._engine.t.used()}


@dataclass
class Scenario:
    name: str
    setup: Callable[[SessionStorage], None]
    op: Callable[[SessionStorage], object]
    # sid -> expected value after the operation (None: absent)
    expect: Dict[str, Optional[bytes]]
    evictions: int = 0  # how many other sessions the operation may remove
    redo: bool = False  # finished by recovery rather than undone (clear)
    # Evictions committed before the operation's own transaction may stay when it is
    # stopped (a run too large for one transaction, see SessionStorage._clear_room).
    early_evictions: bool = False
    options: Dict[str, object] = field(default_factory=dict)
    # The compiled path (_hot.c) does the operation itself, in the compiled build: its own
    # stores, between its own fault points (test_the_compiled_path_runs_its_scenarios).
    compiled: bool = False
    # sid -> the owner it has after the operation (None: no owner)
    owners: Dict[str, Optional[str]] = field(default_factory=dict)


def _fill(n: int, size: int = 200, ttl: Optional[float] = None) -> Callable[[SessionStorage], None]:
    def setup(s: SessionStorage) -> None:
        for k in range(n):
            s.write(f"s{k}", bytes([k]) * (size + 37 * k), ttl=ttl)
    return setup


def _with_expired(s: SessionStorage) -> None:
    _fill(8)(s)
    s.write("gone", b"expired value", ttl=0.001)
    s.write("gone2", b"expired too", ttl=0.001)
    time.sleep(0.01)


def _full_of_small(s: SessionStorage) -> None:
    """The heap (~590 KB) full of 900-byte sessions: no free block takes 8 KiB."""
    for k in range(700):
        s.write(f"f{k}", bytes([k % 251]) * 900)
    s.write("f3", bytes([3]) * 900)  # evicted meanwhile, perhaps: the target is there


def _grow_in_chunks(s: SessionStorage) -> None:
    """Grow a session in the full heap with one transaction carrying 2 evictions, so the
    run is cleared in committed chunks first."""
    from shmsession import _room

    saved = _room._ROOM_TXN
    _room._ROOM_TXN = 2
    try:
        s.write("f3", b"G" * 8000)
    finally:
        _room._ROOM_TXN = saved


def _fill_owned(n: int) -> Callable[[SessionStorage], None]:
    """Sessions s0... of 200+ bytes, s{k} owned by u{k % 3}."""
    def setup(s: SessionStorage) -> None:
        for k in range(n):
            s.write(f"s{k}", bytes([k]) * (200 + 37 * k), owner=f"u{k % 3}")
    return setup


def _capped_write(s: SessionStorage) -> None:
    """u0 (s0, s3, s6, s9) is at a cap of 4: its newest session deletes its oldest, s0."""
    saved = s._max_owner_sessions
    s._max_owner_sessions = 4
    try:
        s.write("capped", b"c" * 300, owner="u0")
    finally:
        s._max_owner_sessions = saved


def _invalidate_owner_in_parts(s: SessionStorage) -> None:
    """u1's four sessions deleted in transactions of two (as 128 are in a real store)."""
    from shmsession import _ownership

    saved = _ownership._OWNER_TXN
    _ownership._OWNER_TXN = 2
    try:
        s.invalidate_owner("u1")
    finally:
        _ownership._OWNER_TXN = saved


def _delete_before_a_displaced_owned_slot(s: SessionStorage) -> None:
    """Invalidate a session whose slot is followed by an owned one away from its home: the
    deletion shifts that one back, and its owner's list must follow."""
    t = s._engine.t
    slots = dict(t.used())
    for i in sorted(slots):
        k = (i + 1) & t.mask
        if k in slots and t.home(slots[k][0]) != k and s._engine.o.owned(k)[0] != L.NO_OWNER:
            victim = slots[i][0]
            s.invalidate_digest(victim.hex())
            return
    raise AssertionError("no owned slot sits away from its home: fill the table more")


def _sweep_write(s: SessionStorage) -> None:
    # the next write runs a bounded sweep for expired entries, on either path
    s._engine.sweep_next()
    if s._hot is not None:
        s._hot.sweep_next()
    s.write("fresh", b"f" * 300)


SCENARIOS = [
    Scenario("write-new", _fill(10), lambda s: s.write("new", b"n" * 500), {"new": b"n" * 500},
             compiled=True),
    Scenario("write-in-place", _fill(10), lambda s: s.write("s3", b"i" * 300), {"s3": b"i" * 300},
             compiled=True),
    Scenario("write-grow", _fill(10), lambda s: s.write("s3", b"g" * 9000), {"s3": b"g" * 9000}),
    Scenario("write-shrink", _fill(10, 5000), lambda s: s.write("s4", b"k"), {"s4": b"k"}),
    Scenario("write-cas", _fill(10),
             lambda s: s.write("s5", b"c" * 50, expect=s.read_versioned("s5")[1]),
             {"s5": b"c" * 50}),
    Scenario("write-cas-in-place", _fill(10),
             lambda s: s.write("s5", b"c" * 350, expect=s.read_versioned("s5")[1]),
             {"s5": b"c" * 350}, compiled=True),
    Scenario("add", _fill(10), lambda s: s.add("added", b"a" * 64), {"added": b"a" * 64},
             compiled=True),
    Scenario("replace", _fill(10), lambda s: s.replace("s6", b"r" * 900), {"s6": b"r" * 900}),
    Scenario("replace-in-place", _fill(10), lambda s: s.replace("s6", b"r" * 400),
             {"s6": b"r" * 400}, compiled=True),
    Scenario("invalidate", _fill(14), lambda s: s.invalidate("s2"), {"s2": None}, compiled=True),
    Scenario("invalidate-last", _fill(14), lambda s: s.invalidate("s13"), {"s13": None},
             compiled=True),
    Scenario("touch", _fill(10), lambda s: s.touch("s1", ttl=3600), {"s1": b"\x01" * 237},
             compiled=True),
    Scenario("touch-expired", _with_expired, lambda s: s.touch("gone"), {"gone": None},
             compiled=True),
    Scenario("invalidate-expired", _with_expired, lambda s: s.invalidate("gone2"),
             {"gone2": None}, compiled=True),
    Scenario("expired-read", _with_expired, lambda s: s.get("gone"), {"gone": None}),
    Scenario("expired-overwrite", _with_expired, lambda s: s.write("gone", b"back"),
             {"gone": b"back"}),
    Scenario("sweep", _with_expired, _sweep_write,
             {"fresh": b"f" * 300, "gone": None, "gone2": None},
             options=dict(max_entries=16)),  # a sweep's 64 slots cover the whole table
    Scenario("evict-entry", _fill(16), lambda s: s.write("over", b"o" * 100), {"over": b"o" * 100},
             evictions=1, options=dict(max_entries=16)),
    Scenario("evict-heap", _fill(12, 60_000), lambda s: s.write("big", b"B" * 60_000),
             {"big": b"B" * 60_000}, evictions=64),
    Scenario("grow-in-full-heap", _full_of_small, lambda s: s.write("f3", b"G" * 8000),
             {"f3": b"G" * 8000}, evictions=64),
    Scenario("grow-in-chunks", _full_of_small, _grow_in_chunks, {"f3": b"G" * 8000},
             evictions=64, early_evictions=True),
    Scenario("clear", _fill(10), lambda s: s.clear(), {f"s{k}": None for k in range(10)},
             redo=True),
    Scenario("clear-owned", _fill_owned(10), lambda s: s.clear(),
             {f"s{k}": None for k in range(10)}, redo=True),
    Scenario("write-new-owned", _fill_owned(10), lambda s: s.write("new", b"n" * 500, owner="u1"),
             {"new": b"n" * 500}, owners={"new": "u1"}),
    Scenario("write-first-owner", _fill(10), lambda s: s.write("s2", b"o" * 90, owner="u9"),
             {"s2": b"o" * 90}, owners={"s2": "u9"}),
    Scenario("write-owner-change", _fill_owned(10),
             lambda s: s.write("s3", b"m" * 4000, owner="u2"), {"s3": b"m" * 4000},
             owners={"s3": "u2"}),
    Scenario("write-same-owner", _fill_owned(10),
             lambda s: s.write("s5", b"w" * 400, owner="u2"), {"s5": b"w" * 400},
             owners={"s5": "u2"}, compiled=True),
    Scenario("replace-owner-change", _fill_owned(10),
             lambda s: s.replace("s4", b"r" * 100, owner="u0"), {"s4": b"r" * 100},
             owners={"s4": "u0"}),
    Scenario("invalidate-owned", _fill_owned(10), lambda s: s.invalidate("s4"), {"s4": None}),
    Scenario("invalidate-owner-keep", _fill_owned(12),
             lambda s: s.invalidate_owner("u1", keep="s4"),
             {"s1": None, "s4": b"\x04" * 348, "s7": None, "s10": None}, owners={"s4": "u1"}),
    Scenario("invalidate-owner-in-parts", _fill_owned(12), _invalidate_owner_in_parts,
             {"s1": None, "s4": None, "s7": None, "s10": None}, evictions=4,
             early_evictions=True),
    Scenario("invalidate-digest", _fill_owned(10),
             lambda s: s.invalidate_digest(s._digests.of("s5").hex()), {"s5": None}),
    Scenario("owner-cap", _fill_owned(10), _capped_write, {"capped": b"c" * 300, "s0": None},
             owners={"capped": "u0"}),
    Scenario("delete-shifts-owned", _fill_owned(24), _delete_before_a_displaced_owned_slot, {},
             evictions=1, options=dict(max_entries=24)),  # 24 sessions in 32 slots
]


class Stop(BaseException):
    """Stands for the exception that stops the writer (SystemExit, KeyboardInterrupt)."""


def _open(sc: Scenario) -> Iterator[SessionStorage]:
    name = f"t-crash-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    opts = dict(size=1 << 20, ttl=None, max_value_size=64 << 10)
    opts.update(sc.options)
    store = SessionStorage(name, **opts)  # type: ignore[arg-type]
    try:
        sc.setup(store)
        yield store
    finally:
        store.close()
        remove_store(name)


def _verify_after(store: SessionStorage, sc: Scenario, before: Contents, after: Contents) -> None:
    targets = {store._digests.of(sid): v for sid, v in sc.expect.items()}
    for digest, value in targets.items():
        if value is None:
            assert digest not in after
        else:
            assert after[digest][0] == value
    for sid, owner in sc.owners.items():
        want = L.NO_OWNER if owner is None else owner_digest(store._secret, owner)
        assert after[store._digests.of(sid)][3] == want
    untouched = {d: v for d, v in before.items() if d not in targets}
    removed = [d for d in untouched if d not in after]
    assert len(removed) <= sc.evictions
    for d in untouched:
        if d in after:
            assert after[d] == untouched[d], "a session the operation does not concern changed"


def _verify_stopped(store: SessionStorage, sc: Scenario, before: Contents, k: int) -> str:
    store.check()  # takes the lock: repairs first, then verifies every invariant
    now = contents(store)
    if now == before:
        return "before"
    if sc.early_evictions and all(before.get(d) == v for d, v in now.items()):
        # Only whole evictions were kept: nothing written, nothing else changed.
        assert len(before) - len(now) <= sc.evictions
        return "evicted"
    assert sc.redo, f"{sc.name}: stopped at step {k}, the store is neither as before nor undone"
    _verify_after(store, sc, before, now)
    return "after"


def _campaign(sc: Scenario, stop: Callable[[SessionStorage, int], Optional[str]]) -> Dict[str, int]:
    """Stop the op at step 1, 2, ... until a run completes; returns outcome counts."""
    outcomes: Dict[str, int] = {"before": 0, "after": 0, "evicted": 0}
    for store in _open(sc):
        before = contents(store)
        for k in range(1, 10_000):
            outcome = stop(store, k)
            if outcome is None:  # the run reached the end
                store.check()
                _verify_after(store, sc, before, contents(store))
                outcomes["steps"] = k - 1
                return outcomes
            outcomes[outcome] += 1
            if outcome in ("after", "evicted"):
                # clear was finished by recovery, or evictions were kept; put the contents
                # back for the next k
                sc.setup(store)
                before = contents(store)
    raise AssertionError("the operation never completed")


@pytest.mark.parametrize("sc", SCENARIOS, ids=[sc.name for sc in SCENARIOS])
def test_system_exit_at_every_step_rolls_back(sc: Scenario) -> None:
    def stop(store: SessionStorage, k: int) -> Optional[str]:
        calls = [0]

        def fault() -> None:
            calls[0] += 1
            if calls[0] == k:
                raise Stop

        before = contents(store)
        random.seed(k)
        store._engine.j.fault = fault
        try:
            sc.op(store)
        except Stop:
            return _verify_stopped(store, sc, before, k)
        finally:
            store._engine.j.fault = None
        return None

    outcomes = _campaign(sc, stop)
    assert outcomes["steps"] >= 1
    assert outcomes["before"] + outcomes["after"] + outcomes["evicted"] == outcomes["steps"]
    assert outcomes["evicted"] == 0 or sc.early_evictions


@pytest.mark.parametrize("sc", SCENARIOS, ids=[sc.name for sc in SCENARIOS])
def test_sigkill_at_every_step_is_repaired_by_the_next_process(sc: Scenario) -> None:
    def stop(store: SessionStorage, k: int) -> Optional[str]:
        before = contents(store)
        pid = os.fork()
        if pid == 0:  # the writer: killed at its k-th store to shared memory
            try:
                calls = [0]

                def fault() -> None:
                    calls[0] += 1
                    if calls[0] == k:
                        os.kill(os.getpid(), signal.SIGKILL)

                random.seed(k)
                store._engine.j.fault = fault
                sc.op(store)
                os._exit(0)
            finally:
                os._exit(3)
        deadline = time.monotonic() + 30
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("the writer hung")
            time.sleep(0.001)
        if os.WIFSIGNALED(status):
            assert os.WTERMSIG(status) == signal.SIGKILL
            # The survivor goes on at once: the kernel dropped the dead writer's flock.
            t0 = time.monotonic()
            outcome = _verify_stopped(store, sc, before, k)
            assert time.monotonic() - t0 < 5
            return outcome
        assert os.WEXITSTATUS(status) == 0, "the writer failed"
        return None

    outcomes = _campaign(sc, stop)
    assert outcomes["steps"] >= 1
    assert outcomes["before"] + outcomes["after"] + outcomes["evicted"] == outcomes["steps"]
    assert outcomes["evicted"] == 0 or sc.early_evictions


def test_the_campaign_covers_many_steps() -> None:
    """Guard against a fault hook that silently stopped being called."""
    counts: List[int] = []
    for sc in SCENARIOS[:3]:
        for store in _open(sc):
            calls = [0]

            def fault() -> None:
                calls[0] += 1

            store._engine.j.fault = fault
            sc.op(store)
            store._engine.j.fault = None
            counts.append(calls[0])
    assert all(c >= 5 for c in counts), counts


@pytest.mark.parametrize("sc", [sc for sc in SCENARIOS if sc.compiled],
                         ids=[sc.name for sc in SCENARIOS if sc.compiled])
def test_the_compiled_path_runs_its_scenarios(sc: Scenario) -> None:
    """In the compiled build these operations are the compiled path's own (so the campaign
    above stops it at each of its stores); in the pure build there is no compiled path."""
    for store in _open(sc):
        if BUILD == "pure":
            assert store._hot is None
            sc.op(store)
            continue
        done = store._hot.done
        sc.op(store)
        assert store._hot.done == done + 1, "the pure path did it"


def _value(k: int, gen: int) -> bytes:
    """Session k's value of generation gen: self-describing, so a torn one is detectable."""
    size = 50 + (gen * 7919 + k * 104729) % 20_000
    head = f"{k}:{gen}:".encode()
    return (head + bytes([gen % 251]) * size)[: max(size, len(head))]


def test_sigkill_at_random_moments_never_tears_a_session() -> None:
    """A writer doing every kind of mutation is SIGKILLed at random moments, 30 times; each
    time the survivor finds the store sound and every session a whole, real version."""
    rng = random.Random(5)
    name = f"t-crash-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    store = SessionStorage(name, size=2 << 20, max_entries=64, ttl=None, max_value_size=32 << 10)
    gens: Dict[int, int] = {}
    try:
        for k in range(40):
            store.write(f"r{k}", _value(k, 0))
        for round_ in range(30):
            pid = os.fork()
            if pid == 0:
                try:
                    r = random.Random(round_)
                    gen = 1 + round_ * 100_000
                    deadline = time.monotonic() + 5
                    while time.monotonic() < deadline:
                        gen += 1
                        k = r.randrange(40)
                        op = r.random()
                        if op < 0.7:
                            store.write(f"r{k}", _value(k, gen), ttl=r.choice([None, 0.002]))
                        elif op < 0.8:
                            store.invalidate(f"r{k}")
                        elif op < 0.9:
                            store.touch(f"r{k}")
                        else:
                            store.get(f"r{k}")
                finally:
                    os._exit(0)
            time.sleep(rng.uniform(0.005, 0.05))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            store.check()
            for k in range(40):
                got = store.get(f"r{k}")
                if got is None:
                    continue
                kk, gen, _ = got.split(b":", 2)
                assert int(kk) == k and got == _value(k, int(gen)), "a torn or foreign value"
                gens[k] = int(gen)
        assert len(gens) > 10
    finally:
        store.close()
        remove_store(name)


def test_control_words_are_never_seen_half_written() -> None:
    """Every control word (journal length, dirty, version counter, sequence) is stored with
    one 8-byte store. ``struct.pack_into`` zeroes its target before it packs: a writer killed
    in between would leave a journal length of 0 that hides its records, or a version counter
    back at 0. A watcher samples the words while another process writes: the version counter
    only grows, and the journal length is never 0 inside a transaction past its first record."""
    name = f"t-crash-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    store = SessionStorage(name, size=2 << 20, ttl=None)
    try:
        store.write("k", b"v" * 100)
        pid = os.fork()
        if pid == 0:
            try:
                deadline = time.monotonic() + 1.5
                n = 0
                while time.monotonic() < deadline and n < 1_000_000:
                    store.write("k", b"w" * (100 + n % 2000))  # in place, and moved
                    n += 1
            finally:
                os._exit(0)
        w = store._engine.w
        last = w[L.VERSION_W]
        samples = backwards = shrunk = 0
        seen_txid = seen_used = 0
        deadline = time.monotonic() + 1.0
        try:
            while time.monotonic() < deadline:
                for _ in range(1000):
                    version = w[L.VERSION_W]
                    if version < last:
                        backwards += 1
                    last = max(last, version)
                    txid = w[L.DIRTY_W]
                    used = w[L.USED_W]
                    if txid and w[L.DIRTY_W] == txid:  # one transaction around the sample
                        if txid == seen_txid and used < seen_used:
                            shrunk += 1
                        seen_txid, seen_used = txid, used
                samples += 1000
        finally:
            os.waitpid(pid, 0)
        assert samples > 100_000
        assert backwards == 0, f"the version counter went back {backwards} times"
        assert shrunk == 0, f"a journal length shrank mid-transaction {shrunk} times"
        assert last > 1000  # the writer did write meanwhile
        store.check()
    finally:
        store.close()
        remove_store(name)
