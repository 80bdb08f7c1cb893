"""The compiled hot path's own parts, held against the pure-Python reference they mirror:
its keyed BLAKE2b against hashlib, its digests of ids against ``Digests``, and which ids it
leaves to the pure path. (The store's behaviour on the compiled path is what every other
test checks: the whole suite runs in both builds.)"""

from __future__ import annotations

import hashlib
import importlib
import os
import random
from types import ModuleType

import pytest

from shmsession import SessionStorage
from shmsession._build import BUILD
from shmsession._digests import Digests
from shmsession._rules import _OWNER_PERSON


def _compiled_module() -> ModuleType:
    """``shmsession._hot``, built beside the package (also in a pure pass, which only keeps
    the store from using it)."""
    try:
        return importlib.import_module("shmsession._hot")
    except ImportError:
        if os.environ.get("SHMSESSION_EXPECT_COMPILED"):
            raise
        pytest.skip("installed without a C compiler: no compiled path to test")


@pytest.fixture(scope="module")
def hot() -> ModuleType:
    return _compiled_module()


def test_keyed_blake2b_matches_hashlib(hot: ModuleType) -> None:
    rng = random.Random(7)
    for _ in range(300):
        key = rng.randbytes(rng.randint(1, 64))
        person = rng.choice([b"", _OWNER_PERSON, rng.randbytes(16)])
        data = rng.randbytes(rng.choice([1, 2, 63, 127, 128, 129, 255, 256, 257,
                                         rng.randint(1, 2048)]))
        want = hashlib.blake2b(data, key=key, digest_size=16, person=person).digest()
        hasher = hot.Hasher(key, person) if person else hot.Hasher(key)
        assert hasher.digest(data) == want, (len(key), person, len(data))


def test_the_hasher_refuses_what_blake2b_cannot_take(hot: ModuleType) -> None:
    for key, person in [(b"", b""), (b"k" * 65, b""), (b"k", b"short")]:
        with pytest.raises(ValueError):
            hot.Hasher(key, person) if person else hot.Hasher(key)
    with pytest.raises(ValueError):
        hot.Hasher(b"k").digest(b"")


def test_ids_digest_as_the_pure_path_digests_them(name: str) -> None:
    with SessionStorage(name, size=1 << 20) as store:
        if BUILD == "pure":
            assert store._hot is None
            return
        digests = Digests(store._secret)
        rng = random.Random(3)
        ids = ["a", "x" * 128, "y" * 129, "z" * 1024, SessionStorage.new_id()]
        ids += ["".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(1, 300)))
                for _ in range(200)]
        for sid in ids:
            assert store._hot.digest(sid) == digests.of(sid), sid


@pytest.mark.parametrize("sid", ["", "x" * 1025, "é", "\ud800", b"bytes", 5, None],
                         ids=["empty", "too-long", "non-ascii", "surrogate", "bytes", "int",
                              "none"])
def test_other_ids_are_left_to_the_pure_path(name: str, sid: object) -> None:
    """The compiled path digests plain ASCII ids of 1 to MAX_ID_BYTES only; for the rest the
    pure path validates (and raises) or digests the UTF-8, as it always has."""
    with SessionStorage(name, size=1 << 20) as store:
        if store._hot is not None:
            assert store._hot.digest(sid) is None
            assert store._hot.read(sid) is _compiled_module().SLOW
        if sid == "é":
            store.write(sid, b"v")
            assert store.read(sid) == b"v" and store.invalidate(sid)
        else:
            with pytest.raises((TypeError, ValueError)):
                store.write(sid, b"v")  # type: ignore[arg-type]


def test_a_save_with_the_owner_it_has_stays_compiled(name: str) -> None:
    """A user's requests save with the owner the session has: the compiled path overwrites
    in place; linking an owner (a new session's, or another's) is the pure path's."""
    with SessionStorage(name, size=1 << 20, ttl=None) as store:
        hot = store._hot
        if hot is None:
            assert BUILD == "pure"
            return
        store.write("a", b"1" * 100, owner="u1")  # linked: pure
        done = hot.done
        store.write("a", b"2" * 100, owner="u1")
        assert store.replace("a", b"3" * 100, owner="u1")
        assert hot.done == done + 2
        store.write("a", b"4" * 100, owner="u2")  # moved to another owner: pure
        assert hot.done == done + 2
        assert [s.digest for s in store.sessions_of("u2")] == [hot.digest("a").hex()]
        assert store.sessions_of("u1") == [] and store.read("a") == b"4" * 100
        store.check()


def test_the_compiled_paths_constants_are_the_pure_paths(hot: ModuleType) -> None:
    """_hot.c copies the layout's offsets and the pure path's bounds; the Python side is the
    one source, and each copy must equal its original."""
    from shmsession import _engine, _heap, _lock, _reader
    from shmsession import _layout as L
    from shmsession import _rules

    expected = {
        "USED_W": L.USED_W, "NEXT_TXID_W": L.NEXT_TXID_W, "DIRTY_W": L.DIRTY_W,
        "FLAGS_W": L.FLAGS_W, "VERSION_W": L.VERSION_W, "SEQ_W": L.SEQ_W,
        "COUNTERS_W": L.COUNTERS_OFF >> 3, "SWEEP_CURSOR_W": L.COUNTER_W["sweep_cursor"],
        "SLOT_SHIFT": L.SLOT_SHIFT, "SLOT_SIZE": L.SLOT_SIZE,
        "SLOT_HALF": L.SLOT.size, "SLOT_OWNER": L.SLOT_OWNER_OFF,
        "STATE_OFF": L.STATE_OFF, "STATE_SIZE": L.STATE_SIZE, "ENTRIES_OFF": L.ENTRIES_OFF,
        "HEAP_USED_OFF": L.HEAP_USED_OFF, "BITMAP_OFF": L.BITMAP_OFF, "BINS_OFF": L.BINS_OFF,
        "NBINS": L.NBINS, "ALIGN": L.ALIGN, "HEAP_SCAN": _heap._SCAN,
        "C_DELETES": L.COUNTER_NAMES.index("deletes"),
        "C_EXPIRATIONS": L.COUNTER_NAMES.index("expirations"),
        "DIGEST": L.DIGEST_SIZE, "BLOCK_TAIL": L.BLOCK_TAIL,
        "BLOCK_OVERHEAD": L.BLOCK_OVERHEAD, "MIN_BLOCK": L.MIN_BLOCK,
        "INPLACE_MAX": L.INPLACE_MAX, "MAX_ID_BYTES": _rules.MAX_ID_BYTES,
        "SWEEP_EVERY": _engine._SWEEP_EVERY, "SWEEP_SLOTS": _engine._SWEEP_SLOTS,
        "HOUSEKEEPING_EVERY": _reader.HOUSEKEEPING_EVERY, "PEEK_TRIES": _reader._PEEK_TRIES,
        "SPIN": _reader._SPIN, "LOCK_SPIN_NS": _lock._SPIN_NS,
        "LOCK_SPIN_LOADS": _lock._SPIN_LOADS,
    }
    # each field of a slot where L.SLOT packs it: a distinct byte in each, found again
    fields = ("SLOT_STATE", "SLOT_LEN", "SLOT_VOFF", "SLOT_CREATED", "SLOT_EXPIRES",
              "SLOT_ATIME", "SLOT_VERSION")
    packed = L.SLOT.pack(b"d" * 16, *range(1, len(fields) + 1))
    expected.update({f: packed.index(bytes([k]), 16) for k, f in enumerate(fields, 1)})
    assert (expected["SLOT_STATE"], expected["SLOT_EXPIRES"], expected["SLOT_ATIME"]) == (
        L.SLOT_STATE, L.SLOT_EXPIRES, L.SLOT_ATIME)
    assert hot.LAYOUT == expected
