"""ShmCache against cachelib's contract (the cases of cachelib's own ``CommonTests``,
``HasTests``, ``ClearTests``, ``SerializerTests`` and ``DeleteManyWithPrefixTests``, ported),
plus what a shared-memory cache adds: timeouts mapped onto the store, keys of any length,
atomic ``add``/``inc`` across threads and processes, and Flask-Session and Flask-Caching
running on it unchanged."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest
from cachelib import BaseCache
from cachelib.serializers import BaseSerializer

from shmsession import SessionStorage, Store
from shmsession.contrib.cachelib import ShmCache
from tests._stores import handed_out

REPO_ROOT = Path(__file__).resolve().parents[2]
SIZE = 4 << 20

# cachelib's TestData.
SAMPLE_NUMBERS = [0, 10, 1024000, 9, 5000000000000, 99, 738, 2000000]
SAMPLE_PAIRS: Dict[str, Any] = {
    "128": False,
    "beef": True,
    "crevettes": {},
    "1024": "spam",
    "bacon": "eggs",
    "sausage": 2048,
    "3072": [],
    "brandy": [{}, "fried eggs"],
    "lobster": ["baked beans", [512]],
    "4096": {"sauce": [], 256: "truffle"},
}

Factory = Callable[..., ShmCache]


class JSONSerializer(BaseSerializer):
    """A JSON serializer (cachelib has one from 0.17 on; this runs on older ones too)."""

    def dumps(self, value: Any, *args: Any, **kwargs: Any) -> bytes:
        return json.dumps(value).encode()

    def loads(self, bvalue: bytes, *args: Any, **kwargs: Any) -> Any:
        return json.loads(bvalue)


@pytest.fixture
def cache_factory(open_store: Callable[..., Store]) -> Iterator[Factory]:
    """Makes ShmCaches on this test's store, each on a handle of its own, in shared memory
    and in Redis (the ``backend`` fixture): every test taking it runs on both."""
    yield from handed_out(lambda **kwargs: ShmCache(store=open_store(), **kwargs), ShmCache.close)


@pytest.fixture
def cache(cache_factory: Factory) -> ShmCache:
    return cache_factory()


@pytest.fixture
def shm_cache_factory(name: str) -> Iterator[Factory]:
    """Makes ShmCaches by name on this test's store in shared memory (each attaches to the
    same segment): for the tests that read an entry's ttl (``sessions()``, which the Redis
    store does not have) or open the cache by name in another process."""
    yield from handed_out(lambda **kwargs: ShmCache(name, size=SIZE, **kwargs), ShmCache.close)


@pytest.fixture
def shm_cache(shm_cache_factory: Factory) -> ShmCache:
    return shm_cache_factory()


def ttl_of_only_entry(cache: ShmCache) -> Any:
    (info,) = cache.store.sessions()
    return info.ttl


# --------------------------------------------------------------------------- CommonTests
def test_set_get(cache: ShmCache) -> None:
    for k, v in SAMPLE_PAIRS.items():
        assert cache.set(k, v)
        assert cache.get(k) == v
        assert type(cache.get(k)) is type(v)


def test_set_get_many(cache: ShmCache) -> None:
    assert cache.set_many(SAMPLE_PAIRS) == list(SAMPLE_PAIRS)
    assert cache.get_many(*SAMPLE_PAIRS) == list(SAMPLE_PAIRS.values())


def test_get_dict(cache: ShmCache) -> None:
    cache.set_many(SAMPLE_PAIRS)
    assert cache.get_dict(*SAMPLE_PAIRS) == SAMPLE_PAIRS


def test_get_missing_is_none(cache: ShmCache) -> None:
    assert cache.get("nothing here") is None
    assert cache.get_many("a", "b") == [None, None]


def test_delete(cache: ShmCache) -> None:
    for k, v in SAMPLE_PAIRS.items():
        cache.set(k, v)
        assert cache.delete(k) is True
        assert cache.get(k) is None
        assert cache.delete(k) is False


def test_delete_many(cache: ShmCache) -> None:
    cache.set_many(SAMPLE_PAIRS)
    assert cache.delete_many(*SAMPLE_PAIRS) == list(SAMPLE_PAIRS)
    assert not any(cache.get_many(*SAMPLE_PAIRS))
    assert len(cache.store) == 0


def test_delete_many_nonexistent_keys(cache_factory: Factory) -> None:
    for ignore in (True, False):
        cache = cache_factory(ignore_delete_many_errors=ignore)
        cache.set("bacon", "spam")
        assert cache.delete_many("eggs", "bacon") == ["eggs", "bacon"]
        assert cache.get("bacon") is None


def test_add(cache: ShmCache) -> None:
    cache.set_many(SAMPLE_PAIRS)
    for k in SAMPLE_PAIRS:
        assert cache.add(k, "updated") is False
    assert cache.get_many(*SAMPLE_PAIRS) == list(SAMPLE_PAIRS.values())
    for k, v in SAMPLE_PAIRS.items():
        assert cache.add(f"{k}-new", v) is True
        assert cache.get(f"{k}-new") == v


def test_add_on_expired_key_succeeds(cache: ShmCache) -> None:
    cache.set("key", "original", timeout=0.2)
    time.sleep(0.4)
    assert cache.add("key", "new") is True
    assert cache.get("key") == "new"


def test_inc_dec(cache: ShmCache) -> None:
    for n in SAMPLE_NUMBERS:
        assert not cache.get(f"{n}-key-inc")
        assert cache.inc(f"{n}-key-inc", n) == n
        assert cache.get(f"{n}-key-inc") == n
        assert cache.dec(f"{n}-key-dec", n) == -n
        assert cache.get(f"{n}-key-dec") == -n
        assert cache.dec(f"{n}-key-inc", 5) == n - 5
        assert cache.get(f"{n}-key-inc") == n - 5


def test_inc_dec_after_set(cache: ShmCache) -> None:
    assert cache.set("count", 10)
    assert cache.inc("count", 5) == 15
    assert cache.dec("count", 3) == 12
    assert cache.inc("count") == 13
    assert cache.dec("count") == 12
    assert cache.get("count") == 12


def test_inc_of_a_non_number_raises_like_cachelib(cache: ShmCache) -> None:
    cache.set("word", "spam")
    with pytest.raises(TypeError):
        cache.inc("word")
    assert cache.get("word") == "spam"


def test_bool_roundtrip(cache: ShmCache) -> None:
    assert cache.set("true-key", True)
    assert cache.get("true-key") is True
    assert cache.set("false-key", False)
    assert cache.get("false-key") is False


def test_expiration(cache: ShmCache) -> None:
    """cachelib's test_expiration, at its whole-second timeouts (0 never expires)."""
    for k, v in SAMPLE_PAIRS.items():
        cache.set(f"{k}-t0", v, timeout=0)
        cache.set(f"{k}-t1", v, timeout=1)
        cache.set(f"{k}-td0", v, timeout=timedelta())
        cache.set(f"{k}-td1", v, timeout=timedelta(seconds=1))
    time.sleep(1.3)
    for k, v in SAMPLE_PAIRS.items():
        assert cache.get(f"{k}-t0") == v
        assert cache.get(f"{k}-t1") is None
        assert cache.get(f"{k}-td0") == v
        assert cache.get(f"{k}-td1") is None
        assert not cache.has(f"{k}-t1")


# --------------------------------------------------------------------------- Has / Clear
def test_has(cache: ShmCache) -> None:
    assert cache.set_many(SAMPLE_PAIRS)
    for k in SAMPLE_PAIRS:
        assert cache.has(k) is True
    assert cache.has("unknown") is False


def test_clear(cache: ShmCache) -> None:
    assert cache.set_many(SAMPLE_PAIRS)
    assert cache.clear() is True
    assert not any(cache.get_many(*SAMPLE_PAIRS))
    assert len(cache.store) == 0


# --------------------------------------------------------------------------- serializers
def test_serializer_injection(cache: ShmCache) -> None:
    # ``cache._id(key)``, here and below: the id a key is stored under, so the tests can read
    # or plant the stored bytes themselves (the key mapping is ShmCache's own, not public).
    cache.serializer = JSONSerializer()
    assert cache.set("key", {"a": 1, "b": [1, 2, 3]})
    assert cache.get("key") == {"a": 1, "b": [1, 2, 3]}
    assert cache.store.read(cache._id("key")) == b'{"a": 1, "b": [1, 2, 3]}'
    pairs = {"k1": "hello", "k2": 42, "k3": [True, None]}
    assert cache.set_many(pairs) == list(pairs)
    assert cache.get_many(*pairs) == list(pairs.values())
    assert cache.get_dict(*pairs) == pairs
    assert cache.add("new", {"a": 1}) is True
    assert cache.add("new", {"b": 2}) is False
    assert cache.get("new") == {"a": 1}
    assert cache.inc("k2", 8) == 50


def test_default_serializer_is_cachelibs_pickle(cache: ShmCache) -> None:
    assert isinstance(ShmCache.serializer, BaseSerializer)
    assert cache.set("key", b"raw bytes")
    assert cache.get("key") == b"raw bytes"
    assert cache.serializer.loads(cache.store.read(cache._id("key"))) == b"raw bytes"


def test_unpicklable_value_is_refused_and_unreadable_value_is_none(cache: ShmCache) -> None:
    with pytest.raises(TypeError):  # as with cachelib's own caches
        cache.set("lock", threading.Lock())
    assert cache.get("lock") is None
    cache.store.write(cache._id("garbage"), b"\x80\x05not a pickle")
    assert cache.get("garbage") is None


# --------------------------------------------------------------------------- key prefix
def test_delete_many_with_prefix(cache_factory: Factory) -> None:
    cache = cache_factory(key_prefix="test_prefix:")
    cache.set_many({"foo": 1, "bar": 2, "baz": 3})
    assert cache.delete_many("foo", "bar", "baz") == ["foo", "bar", "baz"]
    assert not any(cache.get_many("foo", "bar", "baz"))


def test_key_prefixes_separate_caches_on_one_store(cache_factory: Factory) -> None:
    a = cache_factory(key_prefix="a:")
    b = cache_factory(key_prefix="b:")
    plain = cache_factory()
    a.set("k", "from a")
    b.set("k", "from b")
    assert (a.get("k"), b.get("k"), plain.get("k"), plain.get("a:k")) == (
        "from a", "from b", None, "from a",
    )


# --------------------------------------------------------------------------- the cachelib API
def test_every_public_basecache_method_is_implemented() -> None:
    assert issubclass(ShmCache, BaseCache)  # what Flask-Session and Flask-Caching accept
    public = [m for m in vars(BaseCache) if not m.startswith("_") and callable(getattr(BaseCache, m))]
    assert {"get", "set", "add", "delete", "has", "clear", "inc", "dec"} <= set(public)
    for method in public:
        assert callable(getattr(ShmCache, method))
    # The base class's stand-ins (has raises, clear/delete pretend) are all replaced.
    for method in ("get", "set", "add", "delete", "delete_many", "has", "clear", "inc", "dec"):
        assert getattr(ShmCache, method) is not getattr(BaseCache, method), method


def test_flask_sessions_keyword_call(cache: ShmCache) -> None:
    """Flask-Session's CacheLibSessionInterface calls set(key=, value=, timeout=)."""
    assert cache.set(key="session:abc", value={"user": "alice"}, timeout=2678400) is True
    assert cache.get(key="session:abc") == {"user": "alice"}
    assert cache.add(key="session:abc", value={}, timeout=5) is False
    assert cache.delete(key="session:abc") is True


# --------------------------------------------------------------------------- timeouts
def test_timeout_none_is_default_timeout(shm_cache_factory: Factory) -> None:
    cache = shm_cache_factory(default_timeout=120)
    cache.set("k", 1)
    assert 110 < ttl_of_only_entry(cache) <= 120
    cache.set("k", 1, timeout=None)
    assert 110 < ttl_of_only_entry(cache) <= 120


def test_timeout_zero_never_expires(shm_cache_factory: Factory) -> None:
    cache = shm_cache_factory()
    cache.set("k", 1, timeout=0)
    assert ttl_of_only_entry(cache) is None
    never = shm_cache_factory(default_timeout=0)
    never.set("k", 2)
    assert ttl_of_only_entry(never) is None
    assert never.inc("k") == 3
    assert ttl_of_only_entry(never) is None


def test_timeout_kinds(shm_cache: ShmCache) -> None:
    cache = shm_cache  # by name, in shared memory: see shm_cache_factory
    cache.set("k", 1, timeout=timedelta(minutes=2))
    assert 110 < ttl_of_only_entry(cache) <= 120
    cache.set("k", 1, timeout=7.5)  # floats as they are, and no DeprecationWarning
    assert 6 < ttl_of_only_entry(cache) <= 7.5
    with pytest.raises(TypeError):
        cache.set("k", 1, timeout="300")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ShmCache(store=cache.store, default_timeout=-1)


def test_negative_timeout_is_already_expired(cache: ShmCache) -> None:
    cache.set("k", "old")
    assert cache.set("k", "new", timeout=-1) is True
    assert cache.get("k") is None and not cache.has("k")
    assert cache.add("k", "new", timeout=-1) is True
    assert cache.get("k") is None
    cache.set("k", "there")
    assert cache.add("k", "new", timeout=-1) is False


def test_short_timeouts_expire(cache: ShmCache) -> None:
    cache.set("short", "v", timeout=0.3)
    cache.set("long", "v", timeout=30)
    assert cache.get("short") == "v"
    time.sleep(0.5)
    assert cache.get("short") is None and cache.get("long") == "v"


def test_timeouts_override_the_stores_ttl(open_store: Callable[..., Store]) -> None:
    """cachelib's timeouts, not the store's default ttl (1 s here), decide: 0 is never, and
    a cache closes no store it was given."""
    store = open_store(ttl=1)
    cache = ShmCache(store=store, default_timeout=0)  # cachelib: 0 = never expire
    assert cache.set("a", {"x": [1, 2]}) is True
    assert cache.add("b", 1, timeout=1) is True
    assert cache.set("c", 1, timeout=30) is True
    time.sleep(1.3)
    assert cache.get("b") is None  # its timeout
    assert cache.get("a") == {"x": [1, 2]}  # timeout 0: never, despite the store's 1 s
    assert cache.get("c") == 1
    assert cache.clear() is True and cache.get("a") is None and len(store) == 0
    cache.close()  # a store it was given stays open
    assert store.add("still-open", b"1")


# --------------------------------------------------------------------------- keys
def test_long_and_non_ascii_keys(cache: ShmCache) -> None:
    """Also a test of the key mapping itself (``_id``): keys up to the store's 1024 bytes are
    kept, longer ones hashed under a prefix no plain key has."""
    keys = [
        "",
        "ключ",
        "clé-🔑",
        "x" * 250,
        "é" * 512,  # 1024 bytes: kept as it is
        "é" * 513,  # 1026 bytes: hashed
        "k" * 1024,
        "k" * 1025,
        "k" * 5000,
        "k" * 5000 + "!",
        "\udcff lone surrogate",
        "\0starts with NUL",
    ]
    for i, key in enumerate(keys):
        assert cache.set(key, i)
    for i, key in enumerate(keys):
        assert cache.get(key) == i, key[:20]
        assert cache.has(key)
    assert len(cache.store) == len(keys)  # no two keys fell on one id
    assert cache._id("é" * 512) == "é" * 512
    assert cache._id("k" * 1025).startswith("\0") and len(cache._id("k" * 1025)) == 65
    assert cache.delete_many(*keys) == keys
    assert len(cache.store) == 0


def test_hashed_form_cannot_be_forged_by_a_plain_key(cache: ShmCache) -> None:
    long_key = "k" * 2000
    cache.set(long_key, "long")
    forged = cache._id(long_key)  # what the long key is stored under
    cache.set(forged, "forged")
    assert cache.get(long_key) == "long" and cache.get(forged) == "forged"


def test_non_str_key_is_refused(cache: ShmCache) -> None:
    with pytest.raises(TypeError):
        cache.set(b"bytes", 1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- store limits
def test_value_too_large_fails_and_drops_the_old_value(name: str) -> None:
    cache = ShmCache(name, size=SIZE, max_value_size=1024)
    try:
        assert cache.set("k", "small")
        assert cache.set("k", "x" * 5000) is False
        assert cache.get("k") is None  # not the stale "small"
        assert cache.add("k", "x" * 5000) is False
        assert cache.inc("k", 1) == 1
    finally:
        cache.close()


def test_a_cache_closes_no_store_it_was_given(name: str) -> None:
    """(What every adapter's constructor takes: tests/adapter/test_adapter_stores.py.)"""
    with SessionStorage(name, size=SIZE) as store:
        cache = ShmCache(store=store)
        cache.set("k", "v")
        cache.close()  # not its store: stays open
        assert ShmCache(store=store).get("k") == "v"


# --------------------------------------------------------------------------- concurrency
def test_concurrent_add_has_one_winner(cache: ShmCache) -> None:
    results: List[bool] = []
    barrier = threading.Barrier(20)

    def adder(i: int) -> None:
        barrier.wait(timeout=30)
        results.append(cache.add("race-key", i))

    threads = [threading.Thread(target=adder, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [False] * 19 + [True]
    assert cache.get("race-key") in range(20)


def test_concurrent_inc_loses_nothing_across_threads_and_processes(
    shm_cache: ShmCache, name: str
) -> None:
    """Two processes x 4 threads of inc on one key: every increment counts."""
    cache = shm_cache  # by name, in shared memory: see shm_cache_factory
    per_thread, threads_n = 150, 4
    child = textwrap.dedent(
        f"""
        import threading
        from shmsession.contrib.cachelib import ShmCache
        cache = ShmCache({name!r}, size={SIZE})
        def work():
            for _ in range({per_thread}):
                assert cache.inc("counter") is not None
        ts = [threading.Thread(target=work) for _ in range({threads_n})]
        for t in ts: t.start()
        for t in ts: t.join()
        cache.close()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], cwd=REPO_ROOT)
    try:

        def work() -> None:
            for _ in range(per_thread):
                assert cache.dec("counter", -1) is not None  # dec of -1 is inc of 1

        threads = [threading.Thread(target=work) for _ in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert cache.get("counter") == 2 * threads_n * per_thread


def test_values_are_shared_between_processes(shm_cache: ShmCache, name: str) -> None:
    cache = shm_cache  # by name, in shared memory: see shm_cache_factory
    cache.set("from-parent", {"n": 1}, timeout=0)
    script = (
        "from shmsession.contrib.cachelib import ShmCache\n"
        f"c = ShmCache({name!r}, size={SIZE})\n"
        "assert c.get('from-parent') == {'n': 1}\n"
        "c.set('from-child', [1, 2], timeout=60)\n"
        "c.close()\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, check=True, timeout=60)
    assert cache.get("from-child") == [1, 2]


# --------------------------------------------------------------------------- frameworks
def test_flask_session_on_shmcache(cache: ShmCache) -> None:
    """Flask-Session's SESSION_TYPE="cachelib" with SESSION_CACHELIB=ShmCache, unchanged."""
    from flask import Flask, session
    from flask_session import Session

    def make_app() -> Flask:
        app = Flask(__name__)
        app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=cache, SECRET_KEY="k")
        Session(app)

        @app.post("/login/<user>")
        def login(user: str) -> Dict[str, Any]:
            session["user"] = user
            session["n"] = 0
            return {"user": user}

        @app.post("/inc")
        def inc() -> Dict[str, Any]:
            session["n"] += 1
            return {"n": session["n"]}

        @app.get("/me")
        def me() -> Dict[str, Any]:
            return {"user": session.get("user"), "n": session.get("n")}

        @app.post("/logout")
        def logout() -> Dict[str, Any]:
            session.clear()
            return {}

        return app

    worker1, worker2 = make_app().test_client(), make_app().test_client()
    assert worker1.post("/login/alice").status_code == 200
    cookie = worker1.get_cookie("session")
    assert cookie is not None
    sid = cookie.value
    stored = cache.get("session:" + sid)  # Flask-Session's key prefix
    assert stored == {"_permanent": True, "user": "alice", "n": 0}
    if isinstance(cache.store, SessionStorage):  # a ttl the Redis store does not report
        assert 31 * 86400 - 60 < ttl_of_only_entry(cache) <= 31 * 86400  # the lifetime

    worker2.set_cookie("session", sid)  # the same browser, answered by another app
    for i in range(1, 6):
        client = (worker1, worker2)[i % 2]
        assert client.post("/inc").get_json() == {"n": i}
    assert worker1.get("/me").get_json() == {"user": "alice", "n": 5}
    assert worker2.get("/me").get_json() == {"user": "alice", "n": 5}

    worker2.post("/logout")
    assert cache.get("session:" + sid) is None
    worker1.set_cookie("session", sid)  # replay the old cookie
    assert worker1.get("/me").get_json() == {"user": None, "n": None}


def test_flask_caching_on_shmcache(name: str) -> None:
    """Flask-Caching takes ShmCache by its import path, options from CACHE_OPTIONS."""
    from flask import Flask
    from flask_caching import Cache

    calls: List[int] = []

    def make_app() -> "tuple[Flask, Cache]":
        app = Flask(__name__)
        app.config.update(
            CACHE_TYPE="shmsession.contrib.cachelib.ShmCache",
            CACHE_DEFAULT_TIMEOUT=60,
            CACHE_OPTIONS={"name": name, "size": SIZE},
        )
        flask_cache = Cache(app)

        @app.get("/slow/<int:x>")
        @flask_cache.cached()
        def slow(x: int) -> Dict[str, int]:
            calls.append(x)
            return {"square": x * x}

        return app, flask_cache

    (app1, cache1), (app2, cache2) = make_app(), make_app()
    try:
        backend = app1.extensions["cache"][cache1]
        assert isinstance(backend, ShmCache)
        assert backend.default_timeout == 60
        c1, c2 = app1.test_client(), app2.test_client()
        assert c1.get("/slow/7").get_json() == {"square": 49}
        assert c2.get("/slow/7").get_json() == {"square": 49}  # the other app's cached answer
        assert c2.get("/slow/8").get_json() == {"square": 64}
        assert calls == [7, 8]
        with app1.app_context():
            cache1.set("shared", 41)
            assert cache1.cache.inc("shared") == 42
        with app2.app_context():
            assert cache2.get("shared") == 42
            cache2.clear()
        assert c1.get("/slow/7").get_json() == {"square": 49}
        assert calls == [7, 8, 7]
    finally:
        app1.extensions["cache"][cache1].close()
        app2.extensions["cache"][cache2].close()


def test_timeout_float_default_no_warning(shm_cache_factory: Factory) -> None:
    cache = shm_cache_factory(default_timeout=2.5)
    cache.set("k", 1)
    assert 1.5 < ttl_of_only_entry(cache) <= 2.5
    assert math.isclose(cache.default_timeout, 2.5)
