"""The store contract (tests/contract/contract.py) run against every store, and what only the Redis
store has to show: keys that hide session ids, a store confined to its prefix, its options,
its URLs, TLS, and the extra it needs."""

from __future__ import annotations

import asyncio
import math
import re
import time
from typing import Any, Callable, Iterator

import pytest

from shmsession import (
    CorruptSegment,
    InvalidName,
    InvalidTTL,
    InvalidType,
    SessionStorage,
    StoreClosed,
)
from shmsession.aio import AsyncSessionStorage
from tests.contract.contract import AsyncContract, Blocking, SharedHandleContract, StoreContract
from tests._stores import REDIS_SECRET as SECRET, handed_out
from tests.redis_server import redis_keys


# --------------------------------------------------------------------- the four stores
class TestSharedMemory(StoreContract, SharedHandleContract):
    @pytest.fixture
    def make_store(self, name: str) -> Iterator[Callable[..., Any]]:
        # The name fixture removes the segment.
        yield from handed_out(lambda **o: SessionStorage(name, size=4 << 20, **o),
                            SessionStorage.close)


class TestAsyncSharedMemory(StoreContract, AsyncContract):
    @pytest.fixture
    def make_store(self, name: str) -> Iterator[Callable[..., Any]]:
        yield from handed_out(
            lambda **o: Blocking(AsyncSessionStorage(SessionStorage(name, size=4 << 20, **o))),
            Blocking.dispose)


class TestRedis(StoreContract, SharedHandleContract):
    @pytest.fixture
    def make_store(self, name: str, redis_socket: str) -> Iterator[Callable[..., Any]]:
        from shmsession.redis import RedisSessionStorage

        url = f"unix://{redis_socket}"
        try:
            yield from handed_out(lambda **o: RedisSessionStorage(name, url, secret=SECRET, **o),
                                RedisSessionStorage.close)
        finally:
            redis_keys(redis_socket, f"shmsession:{name}:", drop=True)


class TestAsyncRedis(StoreContract, AsyncContract):
    @pytest.fixture
    def make_store(self, name: str, redis_socket: str) -> Iterator[Callable[..., Any]]:
        from shmsession.redis import AsyncRedisSessionStorage

        url = f"unix://{redis_socket}"
        try:
            yield from handed_out(
                lambda **o: Blocking(AsyncRedisSessionStorage(name, url, secret=SECRET, **o)),
                Blocking.dispose)
        finally:
            redis_keys(redis_socket, f"shmsession:{name}:", drop=True)


# --------------------------------------------------------------------- Redis only
@pytest.fixture
def redis_url(redis_socket: str, name: str) -> Iterator[str]:
    try:
        yield f"unix://{redis_socket}"
    finally:
        for prefix in (f"shmsession:{name}", "t-other:", "t-[glob]*:", "t-gx:", "t-lone"):
            redis_keys(redis_socket, prefix, drop=True)


def test_session_ids_never_reach_redis(redis_url: str, redis_socket: str, name: str) -> None:
    from shmsession.redis import RedisSessionStorage

    with RedisSessionStorage(name, redis_url, secret=SECRET) as store:
        ids = [store.new_id() for _ in range(5)] + ["short", "ключ"]
        for sid in ids:
            store.write(sid, b"value of " + sid.encode())
        keys = redis_keys(redis_socket, f"shmsession:{name}:")
        assert len(keys) == len(ids) + 1  # the sessions and the meta hash
        pattern = re.compile(rb"shmsession:" + re.escape(name.encode()) + rb":(s:[0-9a-f]{32}|meta)")
        assert all(pattern.fullmatch(k) for k in keys), keys
        for sid in ids:
            assert not any(sid.encode() in k for k in keys)
        # Another secret: other keys, none of these sessions; a str secret is its bytes.
        with RedisSessionStorage(name, redis_url, secret=b"another secret, 16+ bytes") as other:
            assert all(other.get(sid) is None for sid in ids) and len(other) == len(ids)
        with RedisSessionStorage(name, redis_url, secret=SECRET.decode()) as same:
            assert all(same.read(sid) == b"value of " + sid.encode() for sid in ids)


def test_a_store_touches_only_its_own_keys(redis_url: str, redis_socket: str,
                                           name: str) -> None:
    import redis

    from shmsession.redis import RedisSessionStorage

    with redis.Redis(unix_socket_path=redis_socket) as raw:
        raw.set("t-lone", b"not a session")
        stores = [RedisSessionStorage(name, redis_url, secret=SECRET),
                  RedisSessionStorage("other", redis_url, secret=SECRET, prefix="t-other:"),
                  # A prefix of glob characters, which as a pattern would match the next one.
                  RedisSessionStorage("glob", redis_url, secret=SECRET, prefix="t-[glob]*:"),
                  RedisSessionStorage("gx", redis_url, secret=SECRET, prefix="t-gx:")]
        try:
            for n, s in enumerate(stores):
                for k in range(n + 1):
                    s.write(f"s{k}", b"v")
            assert [len(s) for s in stores] == [1, 2, 3, 4]
            assert [s.stats().entries for s in stores] == [1, 2, 3, 4]
            stores[2].clear()
            assert [len(s) for s in stores] == [1, 2, 0, 4]
            stores[0].clear()
            assert [len(s) for s in stores] == [0, 2, 0, 4]
            assert raw.get("t-lone") == b"not a session"
            v = stores[1].write("s0", b"w")
            stores[1].unlink()  # sessions and counters go; versions start again
            assert redis_keys(redis_socket, "t-other:") == []
            with RedisSessionStorage("other", redis_url, secret=SECRET,
                                     prefix="t-other:") as again:
                assert again.write("s0", b"x") == 1 < v
            assert len(stores[3]) == 4
        finally:
            for s in stores:
                s.close()


def test_expiry_is_the_keys_own(redis_url: str, redis_socket: str, name: str) -> None:
    """What the contract cannot wait for: "never" is no expiry at all, and a ttl is the
    key's PX, rounded up to whole milliseconds."""
    import redis

    from shmsession.redis import RedisSessionStorage

    with RedisSessionStorage(name, redis_url, secret=SECRET, ttl=100,
                             touch_on_read=True) as store, \
            redis.Redis(unix_socket_path=redis_socket) as raw:

        def pttl(sid: str) -> int:
            # Internals: the Redis key a session lives under, whose PX this test reads.
            return int(raw.pttl(store._c.key(sid)))

        store.write("inf", b"v", ttl=math.inf)
        store.read("inf")  # touch_on_read gives no expiry to a session without one
        store.write("touched-inf", b"v")
        assert 99_000 < pttl("touched-inf") <= 100_000
        store.touch("touched-inf", ttl=math.inf)
        store.write("rewritten", b"v", ttl=5)
        store.write("rewritten", b"w", ttl=math.inf)
        assert [pttl(s) for s in ("inf", "touched-inf", "rewritten")] == [-1, -1, -1]
        store.write("tiny", b"v", ttl=30.0004)
        assert 29_000 < pttl("tiny") <= 30_001
        store.touch("tiny", ttl=1e-9)  # rounded up to 1 ms, not down to "no expiry"
        assert pttl("tiny") in (-2, 0, 1)
        store.write("long", b"v", ttl=10**9)
        assert pttl("long") > 10**11
        with pytest.raises(InvalidTTL):
            store.write("k", b"v", ttl=1e300)  # too long: not an OverflowError
        with RedisSessionStorage(name, redis_url, secret=SECRET, ttl=None) as forever:
            forever.write("none", b"v")
            forever.add("none-added", b"v")
            assert pttl("none") == -1 and pttl("none-added") == -1


def test_owners_in_redis(redis_url: str, redis_socket: str, name: str) -> None:
    """What the owner contract (test_owners.py) cannot see: the keys of owners, which hold no
    owner name; an owner index that lives as long as its longest session, then goes; clear()
    taking them all; and an owner keyed by the secret like the ids."""
    import redis

    from shmsession.redis import RedisSessionStorage

    prefix = f"shmsession:{name}:".encode()
    owner = "alice@example.com"
    with RedisSessionStorage(name, redis_url, secret=SECRET, ttl=100) as store, \
            redis.Redis(unix_socket_path=redis_socket) as raw:
        store.write("s1", b"v", owner=owner)
        store.write("s2", b"v", ttl=0.2, owner=owner)
        store.write("plain", b"v")
        keys = redis_keys(redis_socket, prefix.decode())
        kinds = sorted(re.fullmatch(re.escape(prefix) + rb"(s|so|o|meta):?([0-9a-f]{32})?",
                                    k).group(1) for k in keys)  # type: ignore[union-attr]
        assert kinds == [b"meta", b"o", b"s", b"s", b"s", b"so", b"so"]
        [index] = [k for k in keys if k.startswith(prefix + b"o:")]
        links = [raw.lrange(k, 0, -1) for k in keys if k.startswith(prefix + b"so:")]
        assert links == [[index[-32:]]] * 2  # each link names the index, by the owner's digest
        members = raw.zrange(index, 0, -1)
        assert sorted(members) == sorted(k[-32:] for k in keys if k.startswith(prefix + b"so:"))
        assert not any(b"alice" in k for k in keys)
        assert 99_000 < raw.pttl(index) <= 100_000  # the longest session's
        time.sleep(0.3)  # s2 expired: its link with it; its member goes on the next listing
        assert len(store.sessions_of(owner)) == 1 and raw.zcard(index) == 1
        store.write("s3", b"v", ttl=math.inf, owner=owner)
        assert raw.pttl(index) == -1  # a session that never expires: nor does its index
        store.invalidate("s3")
        store.sessions_of(owner)  # a listing sets the index's expiry to its longest again
        assert 99_000 < raw.pttl(index) <= 100_000
        store.write("brief", b"v", ttl=0.2, owner="bob")
        [bobs] = [k for k in redis_keys(redis_socket, prefix.decode())
                  if k.startswith(prefix + b"o:") and k != index]
        assert 0 < raw.pttl(bobs) <= 200
        time.sleep(0.3)  # an owner's sessions expired: the index goes with them
        assert raw.exists(bobs) == 0 and store.sessions_of("bob") == []
        # Another secret: another owner digest, none of these sessions.
        store.write("s4", b"v", owner=owner)
        with RedisSessionStorage(name, redis_url, secret=b"another secret, 16+ bytes") as other:
            assert other.sessions_of(owner) == [] and other.invalidate_owner(owner) == 0
        store.clear()
        assert redis_keys(redis_socket, prefix.decode()) == [prefix + b"meta"]


def test_clear_takes_only_its_own_keys_under_a_nested_prefix(redis_url: str,
                                                              redis_socket: str) -> None:
    """clear() deletes sessions, links and indexes by SCAN of its prefix: a store whose prefix
    extends it (``t-nest:`` and ``t-nest:sub:``) keeps every key, its meta hash included."""
    from shmsession.redis import RedisSessionStorage

    outer = RedisSessionStorage("outer", redis_url, secret=SECRET, prefix="t-nest:")
    inner = RedisSessionStorage("inner", redis_url, secret=SECRET, prefix="t-nest:sub:")
    try:
        for store in (outer, inner):
            store.write("k", b"v", owner="alice")
            store.write("plain", b"v")
        kept = redis_keys(redis_socket, "t-nest:sub:")
        outer.clear()
        assert redis_keys(redis_socket, "t-nest:sub:") == kept
        assert inner.read("k") == b"v" and len(inner.sessions_of("alice")) == 1
        assert len(outer) == 0 and outer.sessions_of("alice") == []
        assert redis_keys(redis_socket, "t-nest:") == [b"t-nest:meta"] + kept
    finally:
        for store in (outer, inner):
            store.close()
        redis_keys(redis_socket, "t-nest:", drop=True)


def test_a_session_evicted_alone_leaves_its_id_no_owner(redis_url: str, redis_socket: str,
                                                        name: str) -> None:
    """Redis may evict a session's key and not its link (maxmemory): the id written again
    without an owner is a new session, not the old owner's."""
    import redis

    from shmsession.redis import RedisSessionStorage

    with RedisSessionStorage(name, redis_url, secret=SECRET) as store, \
            redis.Redis(unix_socket_path=redis_socket) as raw:
        store.write("written", b"v", owner="alice")
        store.write("added", b"v", owner="alice")
        store.write("kept", b"v", owner="alice")
        raw.delete(store._c.key("written"), store._c.key("added"))  # internals: an eviction
        store.write("written", b"new")
        assert store.add("added", b"new") is True
        assert store.invalidate_owner("alice") == 1
        assert store.read("written") == b"new" and store.read("added") == b"new"


def test_a_foreign_value_under_the_prefix_is_reported(redis_url: str, redis_socket: str,
                                                      name: str) -> None:
    import redis

    from shmsession.redis import RedisSessionStorage

    with RedisSessionStorage(name, redis_url, secret=SECRET) as store:
        store.write("k", b"v")
        with redis.Redis(unix_socket_path=redis_socket) as raw:
            raw.set(store._c.key("k"), b"odd")  # internals: the key "k" lives under
        with pytest.raises(CorruptSegment) as info:
            store.read("k")
        assert "prefix" in str(info.value)


def test_a_client_given_is_used_and_left_open(redis_url: str, redis_socket: str,
                                              name: str) -> None:
    import redis
    import redis.asyncio as aioredis

    from shmsession.redis import AsyncRedisSessionStorage, RedisSessionStorage

    with redis.Redis(unix_socket_path=redis_socket) as client:
        store = RedisSessionStorage(name, client, secret=SECRET)
        store.write("k", b"v")
        store.close()
        with pytest.raises(StoreClosed):
            store.read("k")
        assert client.ping() is True  # still the caller's

    async def main() -> bytes:
        client = aioredis.Redis(unix_socket_path=redis_socket)
        try:
            store = AsyncRedisSessionStorage(name, client, secret=SECRET)
            value = await store.read("k")
            await store.close()
            assert await client.ping() is True
            return value
        finally:
            await client.aclose()

    assert asyncio.run(main()) == b"v"


def test_options_are_checked_before_anything_connects(name: str) -> None:
    import redis
    import redis.asyncio as aioredis

    from shmsession.redis import AsyncRedisSessionStorage, RedisSessionStorage

    # No server listens there; refusals come from the arguments alone.
    url = "redis://127.0.0.1:9/0"
    for cls in (RedisSessionStorage, AsyncRedisSessionStorage):
        with pytest.raises(TypeError):
            cls(name, url)  # type: ignore[call-arg]  # secret is required
        with pytest.raises(ValueError, match="at least 16"):
            cls(name, url, secret="short")
        with pytest.raises(InvalidType):
            cls(name, url, secret=12345678901234567890)  # type: ignore[arg-type]
        with pytest.raises(InvalidName):
            cls("no/slash", url, secret=SECRET)
        with pytest.raises(InvalidType):
            cls(name, url, secret=SECRET, prefix="")
        with pytest.raises(InvalidType):
            cls(name, url, secret=SECRET, max_value_size="big")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            cls(name, url, secret=SECRET, max_value_size=0)
        with pytest.raises(ValueError):
            cls(name, url, secret=SECRET, max_value_size=1 << 40)
        with pytest.raises(ValueError):
            cls(name, "http://127.0.0.1/", secret=SECRET)
    with pytest.raises(InvalidType, match="redis.Redis"):
        RedisSessionStorage(name, aioredis.Redis(), secret=SECRET)  # type: ignore[arg-type]
    with pytest.raises(InvalidType, match="redis.asyncio.Redis"):
        AsyncRedisSessionStorage(name, redis.Redis(), secret=SECRET)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="decode_responses"):
        RedisSessionStorage(name, redis.Redis(decode_responses=True), secret=SECRET)
    with pytest.raises(ValueError, match="decode_responses"):
        AsyncRedisSessionStorage(name, aioredis.Redis(decode_responses=True), secret=SECRET)


def test_urls_choose_the_transport_without_connecting(name: str) -> None:
    import redis
    import redis.asyncio as aioredis

    from shmsession.redis import AsyncRedisSessionStorage, RedisSessionStorage

    cases = [
        ("redis://user:pw@cache.invalid:6380/3", redis.Connection, aioredis.Connection,
         {"host": "cache.invalid", "port": 6380, "db": 3, "username": "user", "password": "pw"}),
        ("rediss://cache.invalid:6390/0?ssl_ca_certs=/etc/ca.pem", redis.SSLConnection,
         aioredis.SSLConnection, {"host": "cache.invalid", "port": 6390,
                                  "ssl_ca_certs": "/etc/ca.pem"}),
        ("unix:///run/redis/redis.sock?db=2", redis.UnixDomainSocketConnection,
         aioredis.UnixDomainSocketConnection, {"path": "/run/redis/redis.sock", "db": 2}),
    ]
    # Internals: the client's connection pool (``_r``), which shows the transport chosen
    # without a server to connect to.
    for url, sync_cls, async_cls, expected in cases:
        store = RedisSessionStorage(name, url, secret=SECRET)
        pool = store._r.connection_pool
        assert pool.connection_class is sync_cls, url
        assert {k: pool.connection_kwargs.get(k) for k in expected} == expected
        store.close()
        astore = AsyncRedisSessionStorage(name, url, secret=SECRET)
        apool = astore._r.connection_pool
        assert apool.connection_class is async_cls, url
        assert {k: apool.connection_kwargs.get(k) for k in expected} == expected
        asyncio.run(astore.close())


def test_tls_round_trip(redis_tls: "tuple[int, str]", name: str) -> None:
    import redis

    from shmsession.redis import AsyncRedisSessionStorage, RedisSessionStorage

    port, ca = redis_tls
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    with RedisSessionStorage(name, url, secret=SECRET) as store:
        assert store._r.connection_pool.connection_class is redis.SSLConnection  # internals
        store.write("k", b"over TLS")
        assert store.read("k") == b"over TLS"

        async def main() -> bytes:
            async with AsyncRedisSessionStorage(name, url, secret=SECRET) as astore:
                return await astore.read("k")

        assert asyncio.run(main()) == b"over TLS"
        store.unlink()
    # Without the CA the server's certificate is refused: TLS really is checked.
    with RedisSessionStorage(name, f"rediss://127.0.0.1:{port}/0", secret=SECRET) as bad:
        with pytest.raises(redis.ConnectionError, match="(?i)certificate"):
            bad.read("k")
    # And plain redis:// to the TLS port gets no answer it understands.
    with RedisSessionStorage(name, f"redis://127.0.0.1:{port}/0?socket_timeout=5",
                             secret=SECRET) as plain:
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            plain.read("k")


def test_the_stores_are_interchangeable() -> None:
    """The one-line move: the Redis stores have every call of the store protocols, which
    the adapters accept (mypy checks the signatures too: ``redis._conforms``)."""
    from shmsession import AsyncStore, Store
    from shmsession.redis import AsyncRedisSessionStorage, RedisSessionStorage

    for protocol, cls in ((Store, RedisSessionStorage), (AsyncStore, AsyncRedisSessionStorage)):
        wanted = [m for m, v in vars(protocol).items()
                  if (not m.startswith("_") or m in ("__contains__", "__len__"))
                  and callable(getattr(v, "__func__", v))]  # calls, not the name property
        assert "replace" in wanted and "write" in wanted
        assert all(callable(getattr(cls, m, None)) for m in wanted), (cls, wanted)
