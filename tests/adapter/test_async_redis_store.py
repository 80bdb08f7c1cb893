"""The async adapters on Redis's OWN async store (``AsyncRedisSessionStorage``), through their
frameworks' test clients.

The adapter tests on the "redis" backend (``any_store``) hand the adapter the synchronous
``RedisSessionStorage`` wrapped in ``AsyncSessionStorage``; the multi-worker servers
(tests/adapter/test_async_workers.py) run the async Redis store but only replay a logged-out
cookie to a read. Here the async Redis store serves a whole login, counter, logout and replay,
and a write under the replayed cookie must not bring the logged-out id back.

Each store lives in the app's event loop and is closed there; ``store_handles`` deletes it
after the test and checks that no key is left under its prefix."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, AsyncIterator, Callable, Dict, Iterator, Optional

import pytest

from shmsession import Store
from shmsession.redis import AsyncRedisSessionStorage
from tests._stores import REDIS_SECRET, store_handles


@pytest.fixture
def redis_store(name: str, redis_socket: str) -> Iterator[Callable[..., Store]]:
    """``open_store()`` on this test's store in Redis: the test's own view, as another process
    would have it; the store is deleted after the test and must leave no key."""
    with store_handles("redis", name, redis_socket) as open_store:
        yield open_store


def async_redis(name: str, redis_socket: str) -> AsyncRedisSessionStorage:
    return AsyncRedisSessionStorage(name, f"unix://{redis_socket}", secret=REDIS_SECRET)


def decoded(store: Store, sid: str) -> Optional[Dict[str, Any]]:
    raw = store.get(sid)
    return None if raw is None else json.loads(raw)


def test_starsessions_on_the_async_redis_store(name: str, redis_socket: str,
                                               redis_store: Callable[..., Store]) -> None:
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from shmsession.contrib.starsessions import ShmStore

    from . import starlette_app

    view = redis_store()
    store = async_redis(name, redis_socket)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:  # the store's connections belong to the app's event loop: closed in it
            yield
        finally:
            await store.close()

    app = Starlette(routes=starlette_app.ROUTES,
                    middleware=starlette_app.middleware(ShmStore(store=store), lifetime=600),
                    lifespan=lifespan)
    with TestClient(app) as client:
        assert client.get("/whoami").json()["user"] is None
        assert client.post("/login?user=alice").json()["user"] == "alice"
        sid = client.cookies["session"]
        assert len(sid) == 43
        for i in range(1, 4):
            assert client.post("/incr").json()["n"] == i
        record = decoded(view, sid)
        assert record is not None
        assert {k: v for k, v in record.items() if k != "__metadata__"} == {
            "user": "alice", "n": 3}
        reply = client.post("/logout")
        assert reply.json()["user"] is None and "1970" in reply.headers["set-cookie"]
        assert view.get(sid) is None
        client.cookies.clear()
        old = {"cookie": f"session={sid}"}
        assert client.get("/whoami", headers=old).json()["user"] is None
        reply = client.post("/incr", headers=old)
        assert reply.json()["n"] == 1  # a new, anonymous session ...
        fresh = reply.cookies["session"]
        assert fresh not in ("", sid) and decoded(view, fresh) is not None  # ... of its own id
        assert view.get(sid) is None  # the logged-out id stays dead


@pytest.mark.filterwarnings(  # as in test_aiohttp.py: aiohttp-session's, not ours
    "ignore:It is recommended to use web.RequestKey:aiohttp.web_exceptions.NotAppKeyWarning"
)
def test_aiohttp_on_the_async_redis_store(name: str, redis_socket: str,
                                          redis_store: Callable[..., Store]) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from shmsession.contrib.aiohttp import ShmStorage

    from . import aiohttp_app

    view = redis_store()
    cookie = "AIOHTTP_SESSION"

    async def main() -> None:
        store = async_redis(name, redis_socket)
        try:
            app = aiohttp_app.make_app(ShmStorage(store=store, max_age=600))
            async with TestClient(TestServer(app)) as client:
                assert (await (await client.get("/whoami")).json())["user"] is None
                reply = await client.post("/login?user=alice")
                assert (await reply.json())["user"] == "alice"
                sid = reply.cookies[cookie].value
                assert len(sid) == 43
                for i in range(1, 4):
                    assert (await (await client.post("/incr")).json())["n"] == i
                record = decoded(view, sid)
                assert record is not None and record["session"] == {"user": "alice", "n": 3}
                await client.post("/logout")
                assert view.get(sid) is None
                client.session.cookie_jar.clear()
                old = {"Cookie": f"{cookie}={sid}"}
                assert (await (await client.get("/whoami", headers=old)).json())["user"] is None
                reply = await client.post("/incr", headers=old)
                assert (await reply.json())["n"] == 1  # a new, anonymous session ...
                fresh = reply.cookies[cookie].value
                assert fresh not in ("", sid) and decoded(view, fresh) is not None
                assert view.get(sid) is None  # the logged-out id stays dead
        finally:
            await store.close()

    asyncio.run(main())
