"""dump/load: a versioned, checksummed snapshot; byte-for-byte round trip with ttls kept;
truncated or altered files refused before anything is created."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from shmsession import CorruptSnapshot, SegmentError, SessionStorage
from shmsession import _snapshot

from tests._stores import remove_store


def test_round_trip_of_100000_sessions_byte_for_byte_with_ttls(name: str, tmp_path: Path) -> None:
    target = name + "-b"
    path = str(tmp_path / "snap")
    try:
        with SessionStorage(name, size=64 << 20, max_entries=120_000, ttl=None) as src:
            ids = [f"s{k}" for k in range(100_000)]
            for k, sid in enumerate(ids):
                src.write(sid, (sid * (1 + k % 30)).encode(), ttl=None if k % 3 else 3600 + k)
            src.write("short", b"goes", ttl=0.05)
            assert src.dump(path) == 100_001
            assert os.stat(path).st_mode & 0o777 == 0o600
            time.sleep(0.1)  # "short" expires while the store is down
            src.unlink()
        seen = []
        with SessionStorage.load(target, path, progress=lambda n, t: seen.append((n, t)),
                                 size=64 << 20, max_entries=120_000) as dst:
            assert seen[-1] == (100_001, 100_001)
            assert len(dst) == 100_000 and "short" not in dst
            for k, sid in enumerate(ids):
                assert dst.read(sid) == (sid * (1 + k % 30)).encode()
            # sessions() names sessions by digest, never by id: ``_digests`` maps one to the other.
            left = {info.digest: info.ttl for info in dst.sessions()}
            for k in (0, 3, 99_999):
                ttl = left[dst._digests.of(ids[k]).hex()]
                assert ttl is not None and 3600 + k - 60 < ttl <= 3600 + k  # kept, less the pause
            assert left[dst._digests.of(ids[1]).hex()] is None
            dst.check()
            dst.unlink()
    finally:
        remove_store(target)


@pytest.fixture
def snapshot(name: str, tmp_path: Path) -> Path:
    with SessionStorage(name, size=1 << 20) as s:
        for k in range(50):
            s.write(f"k{k}", os.urandom(200))
        s.dump(str(tmp_path / "snap"))
        s.unlink()
    return tmp_path / "snap"


@pytest.mark.parametrize("damage", ["truncate-end", "truncate-middle", "flip-value", "flip-header",
                                    "empty", "not-a-snapshot", "future-format"])
def test_a_damaged_snapshot_is_refused_and_nothing_is_created(
    snapshot: Path, name: str, damage: str
) -> None:
    data = bytearray(snapshot.read_bytes())
    if damage == "truncate-end":
        data = data[:-5]
    elif damage == "truncate-middle":
        data = data[: len(data) // 2]
    elif damage == "flip-value":
        data[len(data) // 2] ^= 1
    elif damage == "flip-header":
        data[20] ^= 1
    elif damage == "empty":
        data = bytearray()
    elif damage == "not-a-snapshot":
        data = bytearray(b"hello world" * 100)
    elif damage == "future-format":
        data[8] = 99
    snapshot.write_bytes(bytes(data))
    with pytest.raises(CorruptSnapshot) as info:
        SessionStorage.load(name, str(snapshot), size=1 << 20)
    assert "snapshot" in str(info.value) or "refusing" in str(info.value)
    assert not SessionStorage.exists(name)


def test_load_refuses_an_existing_store(snapshot: Path, name: str) -> None:
    with SessionStorage(name, size=1 << 20) as s:
        s.write("keep", b"me")
        with pytest.raises(SegmentError):
            SessionStorage.load(name, str(snapshot))
        assert s.read("keep") == b"me"
        s.unlink()


def test_sessions_lists_digests_sizes_and_time_left_never_ids(store: SessionStorage) -> None:
    store.write("secret-id-1", b"x" * 10, ttl=100)
    store.write("secret-id-2", b"y" * 20, ttl=float("inf"))
    infos = sorted(store.sessions(), key=lambda i: i.size)
    assert [i.size for i in infos] == [10, 20]
    assert 99 < infos[0].ttl <= 100 and infos[1].ttl is None  # type: ignore[operator]
    assert all("secret-id" not in repr(i) for i in infos)
    assert all(i.age >= 0 and len(i.digest) == 32 for i in infos)


def test_dump_replaces_the_file_atomically(store: SessionStorage, tmp_path: Path) -> None:
    path = tmp_path / "snap"
    path.write_bytes(b"old snapshot")
    store.write("a", b"1")
    assert store.dump(str(path)) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with open(path, "rb") as f:
        records = _snapshot.read_snapshot(f).records
    assert [r[3] for r in records] == [b"1"]


def test_a_snapshot_that_does_not_fit_is_refused_unless_eviction_is_asked_for(
    name: str, tmp_path: Path
) -> None:
    from shmsession import StoreFull, ValueTooLarge

    path = str(tmp_path / "snap")
    with SessionStorage(name, size=1 << 20, ttl=None) as s:
        for k in range(300):
            s.write(f"k{k}", b"x" * 100)
        s.write("big", b"y" * 20_000)
        s.dump(path)
        s.unlink()
    with pytest.raises(ValueTooLarge):
        SessionStorage.load(name, path, size=1 << 20, max_value_size=10_000)
    assert not SessionStorage.exists(name)
    with pytest.raises(StoreFull):
        SessionStorage.load(name, path, size=1 << 20, max_entries=100)
    assert not SessionStorage.exists(name)
    with SessionStorage.load(name, path, size=1 << 20, max_entries=100, when_full="evict") as t:
        assert len(t) == 100 and t.stats().evictions == 201 and t.stats().writes == 0
        t.unlink()


def _geometry(store: SessionStorage) -> "tuple[int, int, int, int]":
    """What the segment's geometry shows in stats(): heap_size depends on max_value_size (the
    journal holds one value's old bytes), so equal figures mean equal max_value_size too."""
    s = store.stats()
    return s.size, s.max_entries, s.table_slots, s.heap_size


def test_load_without_sizes_makes_the_store_the_dumped_one_was(name: str, tmp_path: Path) -> None:
    """A 4 MiB store comes back as 4 MiB with its limits, so the application's own
    ``SessionStorage(name, size=..., ...)`` attaches to it instead of SegmentMismatch."""
    path = str(tmp_path / "snap")
    app_options = dict(size=4 << 20, max_entries=1000, max_value_size=100_000)
    with SessionStorage(name, **app_options) as src:  # type: ignore[arg-type]
        src.write("k", b"v")
        before = _geometry(src)
        src.dump(path)
        src.unlink()
    with SessionStorage.load(name, path) as loaded:
        assert _geometry(loaded) == before
    with SessionStorage(name, **app_options) as app:  # type: ignore[arg-type]
        assert app.read("k") == b"v" and _geometry(app) == before
        app.unlink()


def test_load_options_override_the_dumped_geometry_one_by_one(name: str, tmp_path: Path) -> None:
    """An option given wins; one not given is the dumped store's, unless the dumped store had
    it at the default for its size: then it is the default for the new size, as if the dumped
    store's own options were given again with the new ones."""
    custom, plain = str(tmp_path / "custom"), str(tmp_path / "plain")
    with SessionStorage(name, size=4 << 20, max_entries=1000, max_value_size=100_000) as s:
        s.dump(custom)
        s.unlink()
    with SessionStorage(name, size=4 << 20) as s:  # max_entries, max_value_size: defaults
        s.dump(plain)
        s.unlink()
    with SessionStorage.load(name, custom, size=8 << 20) as t:
        assert t.stats().max_entries == 1000 and t._max_value == 100_000
        assert t.stats().size == 8 << 20
        t.unlink()
    with SessionStorage.load(name, custom, max_entries=50) as t:
        assert (t.stats().size, t.stats().max_entries, t._max_value) == (4 << 20, 50, 100_000)
        t.unlink()
    with SessionStorage.load(name, plain, size=8 << 20) as t:
        assert _geometry(t)[:2] == (8 << 20, (8 << 20) // 1024)
        assert t._max_value == (8 << 20) // 16
        t.unlink()


#: A snapshot of format 1, written by ``SessionStorage.dump`` at commit af47f5d (before
#: snapshots recorded the store's geometry): a store of 1 MiB, max_entries=100, ttl=None,
#: holding "alice", "bob", and "carol" with a ttl of 60 s, long expired.
FORMAT_1 = Path(__file__).parent / "data" / "format-1.snap"


def test_a_snapshot_of_format_1_still_loads_with_the_default_geometry(name: str) -> None:
    with SessionStorage.load(name, str(FORMAT_1)) as t:
        assert t.read("alice") == b"alice's session"
        assert t.read("bob") == bytes(range(256)) * 4
        assert "carol" not in t and len(t) == 2
        assert t.stats().size == 32 << 20 and t.stats().max_entries == (32 << 20) // 1024
        t.unlink()
    with SessionStorage.load(name, str(FORMAT_1), size=1 << 20, max_entries=100) as t:
        assert _geometry(t)[:2] == (1 << 20, 100) and len(t) == 2
        t.unlink()


FORMAT_2 = Path(__file__).parent / "data" / "format-2.snap"


def test_a_snapshot_of_format_2_still_loads_its_geometry_without_owners(name: str) -> None:
    """tests/system/data/format-2.snap was written by SessionStorage.dump at d26e263 (layout
    3, before owners) from a store of size=2 MiB, max_entries=200: alice, bob (never
    expiring) and carol (expired before the dump)."""
    with SessionStorage.load(name, str(FORMAT_2)) as t:
        assert _geometry(t)[:2] == (2 << 20, 200)
        assert t.read("alice") == b"alice's session"
        assert t.read("bob") == bytes(range(256)) * 4
        assert "carol" not in t and len(t) == 2
        assert t.sessions_of("alice") == []
        t.write("alice", b"owned now", owner="alice")
        assert [i.digest for i in t.sessions_of("alice")] == [t._digests.of("alice").hex()]
        t.check()
        t.unlink()
