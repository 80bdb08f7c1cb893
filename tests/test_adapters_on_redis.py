"""Every framework adapter on a REAL Redis store (``shmsession.redis``), through its framework's
own test client: the one-line move from shared memory to Redis, shown to work. Django's
session engine and ShmCache, cachelib's ShmCache (and Flask-Session on it), Flask's
ShmSessionInterface, starsessions' ShmStore and aiohttp-session's ShmStorage; then gunicorn
with 4 sync workers sharing Redis sessions.

Each test's store has its own name (so its own key prefix) on the session's redis-server,
and is deleted at the end (``unlink``: sessions and counters); the test then checks that
nothing is left under the prefix."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from pathlib import Path
from typing import Any, AsyncIterator, List, Optional

import pytest

from shmsession.redis import AsyncRedisSessionStorage, RedisSessionStorage  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET = b"a test secret of more than 16 bytes"


def _keys(sock: str, prefix: str) -> List[bytes]:
    """The keys under ``prefix`` on the server, seen by a client of the test's own."""
    import redis

    from shmsession.redis import _glob_escape

    with redis.Redis(unix_socket_path=sock) as r:
        return list(r.scan_iter(match=_glob_escape(prefix) + "*", count=1000))


@contextlib.asynccontextmanager
async def async_store(name: str, sock: str, **options: Any
                      ) -> AsyncIterator[AsyncRedisSessionStorage]:
    """An async Redis store for one event loop, deleted (``unlink``) in that loop."""
    store = AsyncRedisSessionStorage(name, f"unix://{sock}", secret=SECRET, **options)
    try:
        yield store
    finally:
        await store.unlink()  # its sessions and its counters


# =============================================================================================
# starsessions' ShmStore (Starlette TestClient) and aiohttp-session's ShmStorage
# =============================================================================================


def test_starsessions_shmstore(name: str, redis_socket: str) -> None:
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from shmsession.contrib.starsessions import ShmStore
    from tests import starlette_app

    store = AsyncRedisSessionStorage(name, f"unix://{redis_socket}", secret=SECRET)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:  # the store's connections belong to the app's event loop: closed in it
            yield
        finally:
            await store.unlink()

    app = Starlette(routes=starlette_app.ROUTES,
                    middleware=starlette_app.middleware(ShmStore(store=store), lifetime=600),
                    lifespan=lifespan)
    with TestClient(app) as client:

        def stored(sid: str) -> Optional[bytes]:
            assert client.portal is not None
            result: Optional[bytes] = client.portal.call(store.get, sid)
            return result

        assert client.get("/whoami").json()["user"] is None
        assert client.post("/login?user=alice").json()["user"] == "alice"
        sid = client.cookies["session"]
        assert len(sid) == 43
        for i in range(1, 4):
            assert client.post("/incr").json()["n"] == i
        record = stored(sid)
        assert record is not None
        assert {k: v for k, v in json.loads(record).items() if k != "__metadata__"} == {
            "user": "alice", "n": 3}
        reply = client.post("/logout")
        assert reply.json()["user"] is None and "1970" in reply.headers["set-cookie"]
        assert stored(sid) is None
        client.cookies.clear()
        old = {"cookie": f"session={sid}"}
        assert client.get("/whoami", headers=old).json()["user"] is None
        assert client.post("/incr", headers=old).json()["n"] == 1  # a new, anonymous session
        assert stored(sid) is None
    assert _keys(redis_socket, store.prefix) == []


@pytest.mark.filterwarnings(  # as in tests/test_aiohttp.py: aiohttp-session's, not ours
    "ignore:It is recommended to use web.RequestKey:aiohttp.web_exceptions.NotAppKeyWarning"
)
def test_aiohttp_shmstorage(name: str, redis_socket: str) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from shmsession.contrib.aiohttp import ShmStorage
    from tests.aiohttp_app import make_app

    async def main() -> None:
        async with async_store(name, redis_socket) as store:
            app = make_app(ShmStorage(store=store, max_age=600))
            async with TestClient(TestServer(app)) as client:
                assert (await (await client.get("/whoami")).json())["user"] is None
                reply = await client.post("/login?user=alice")
                assert (await reply.json())["user"] == "alice"
                sid = reply.cookies["AIOHTTP_SESSION"].value
                assert len(sid) == 43
                for i in range(1, 4):
                    assert (await (await client.post("/incr")).json())["n"] == i
                record = await store.get(sid)
                assert record is not None
                assert json.loads(record)["session"] == {"user": "alice", "n": 3}
                await client.post("/logout")
                assert await store.get(sid) is None
                client.session.cookie_jar.clear()
                old = {"Cookie": f"AIOHTTP_SESSION={sid}"}
                assert (await (await client.get("/whoami", headers=old)).json())["user"] is None
                assert (await (await client.post("/incr", headers=old)).json())["n"] == 1
                assert await store.get(sid) is None
        assert _keys(redis_socket, store.prefix) == []

    asyncio.run(main())


class _Interleaved:
    """A real async store seen as the saving request's steps: every coroutine call on it is
    one step, and before step ``i`` another request of the same session acts on its own
    handle -- it saves the session (so a compare-and-set the saver makes always conflicts)
    while ``i < logout_at``, logs it out at ``i == logout_at``, and does nothing after."""

    def __init__(self, inner: AsyncRedisSessionStorage, other: AsyncRedisSessionStorage,
                 sid: str, logout_at: int) -> None:
        self.inner, self.other, self.sid, self.logout_at = inner, other, sid, logout_at
        self.steps = 0
        self.logged_out = False

    async def _before_step(self) -> None:
        i, self.steps = self.steps, self.steps + 1
        if i < self.logout_at:
            await self.other.write(self.sid, b'{"by": "another request"}')
        elif i == self.logout_at:
            assert await self.other.invalidate(self.sid)
            self.logged_out = True

    def __getattr__(self, attr: str) -> Any:
        fn = getattr(self.inner, attr)
        if not inspect.iscoroutinefunction(fn):
            return fn

        async def step(*args: Any, **kwargs: Any) -> Any:
            await self._before_step()
            return await fn(*args, **kwargs)

        return step


def test_a_save_never_revives_a_session_logged_out_while_it_runs(name: str, redis_socket: str
                                                                  ) -> None:
    """starsessions' save (``ShmStore.write``, through ``replace_live``) on the async Redis
    store, with the logout landing before each step of the save in turn -- step 0, 1, 2, ...
    until it lands after the save -- and another request writing the session before every
    earlier step. Whatever the save does, the logged-out id must stay dead, and the data
    saved must be kept under a fresh id when it did not go in before the logout."""
    from shmsession.contrib.starsessions import ShmStore

    max_steps = 64  # store calls one save may make before the test calls it unbounded

    async def main() -> None:
        async with async_store(name, redis_socket) as saver:
            other = AsyncRedisSessionStorage(name, f"unix://{redis_socket}", secret=SECRET)
            try:
                for logout_at in range(max_steps):
                    sid = other.new_id()
                    await other.write(sid, b'{"n": 0}', 600)
                    store = _Interleaved(saver, other, sid, logout_at)
                    saved_under = await ShmStore(store=store).write(  # type: ignore[arg-type]
                        sid, b'{"n": 1}', lifetime=600, ttl=600)
                    landed_after = not store.logged_out
                    if landed_after:
                        assert await other.invalidate(sid)
                    assert await other.get(sid) is None, (
                        f"a logout before step {logout_at} of {store.steps} was undone by the "
                        f"save (which returned the {'same' if saved_under == sid else 'a new'} id)")
                    if saved_under != sid:
                        assert await other.get(saved_under) == b'{"n": 1}'
                    if landed_after:
                        return
                raise AssertionError(f"a save took more than {max_steps} store calls")
            finally:
                await other.close()

    asyncio.run(main())


def test_the_stores_are_interchangeable() -> None:
    """The one-line move: the Redis stores have every call of the store protocols, which
    the adapters accept (mypy checks the signatures too: ``redis._conforms``)."""
    from shmsession import AsyncStore, Store

    for protocol, cls in ((Store, RedisSessionStorage), (AsyncStore, AsyncRedisSessionStorage)):
        wanted = [m for m, v in vars(protocol).items()
                  if (not m.startswith("_") or m in ("__contains__", "__len__"))
                  and callable(getattr(v, "__func__", v))]  # calls, not the name property
        assert "replace" in wanted and "write" in wanted
        assert all(callable(getattr(cls, m, None)) for m in wanted), (cls, wanted)
