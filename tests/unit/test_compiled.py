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
