"""starsessions (Starlette, FastAPI) on shmsession: the store contract and the app through
Starlette's TestClient, on a store in shared memory and on one in Redis, and a save racing a
logout step by step. ``uvicorn --workers 4`` sharing the sessions:
tests/adapter/test_async_workers.py.

A test taking ``any_store`` runs on both backends: the adapter gets the store wrapped
(``AsyncSessionStorage``, as it wraps a ``SessionStorage`` itself) and the test reads it
directly, as another process would."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import secrets
import time
from typing import Any, Callable, Dict, List, Optional

import pytest
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection
from starlette.testclient import TestClient
from starsessions import (
    JsonSerializer,
    SessionAutoloadMiddleware,
    SessionMiddleware,
    SessionStore,
)
from starsessions.session import (
    SessionHandler,
    is_loaded,
    load_session,
    regenerate_session_id,
)

from shmsession import AsyncStore, SessionStorage, Store
from shmsession._errors import InvalidOwner
from shmsession.aio import AsyncSessionStorage
from shmsession.contrib.starsessions import ShmStore

from . import starlette_app
from tests._stores import REDIS_SECRET

COOKIE = "session"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def stored(store: Store, sid: str) -> Optional[Dict[str, Any]]:
    """The session as the store holds it (decoded), or None."""
    raw = store.get(sid)
    return None if raw is None else json.loads(raw)


# --- the SessionStore contract -------------------------------------------------------------


def test_store_contract(any_store: Store) -> None:
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    store = ShmStore(store=aio)
    assert isinstance(store, SessionStore)

    async def main() -> None:
        assert await store.read("nobody", lifetime=60) == b""
        assert await store.exists("nobody") is False
        # An id without a live record is never adopted: the data goes under a fresh id.
        sid = await store.write("made-up", b'{"a": 1}', lifetime=60, ttl=60)
        assert sid != "made-up" and len(sid) == 43
        assert await store.read("made-up", lifetime=60) == b""
        assert await store.read(sid, lifetime=60) == b'{"a": 1}'
        assert await store.exists(sid) is True
        # A live id is written in place and returned as given.
        assert await store.write(sid, b'{"a": 2}', lifetime=60, ttl=60) == sid
        assert await store.read(sid, lifetime=60) == b'{"a": 2}'
        await store.remove(sid)
        assert await store.read(sid, lifetime=60) == b""
        assert await store.exists(sid) is False
        await store.remove(sid)  # idempotent
        # ... and once removed, writing to it again does not bring it back.
        again = await store.write(sid, b'{"a": 3}', lifetime=60, ttl=60)
        assert again != sid and await store.read(sid, lifetime=60) == b""
        # Ids the store cannot hold (a forged 2,000-character cookie) are unknown sessions.
        forged = "x" * 2000
        assert await store.read(forged, lifetime=60) == b""
        assert await store.exists(forged) is False
        await store.remove(forged)
        assert len(await store.write(forged, b"{}", lifetime=60, ttl=60)) == 43

    run(main())


def test_concurrent_writes_to_one_session_leave_one_whole_value(any_store: Store) -> None:
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    store = ShmStore(store=aio)
    values = [bytes([65 + i]) * 50_000 for i in range(16)]

    async def main() -> List[str]:
        sid = await store.write("new", b"{}", lifetime=60, ttl=60)
        ids = await asyncio.gather(*(store.write(sid, v, lifetime=60, ttl=60) for v in values))
        return [sid, *ids]

    sid, *ids = run(main())
    assert ids == [sid] * len(values)
    assert any_store.read(sid) in values


def test_ttl_handling_mirrors_redis_store(any_store: Store) -> None:
    """``lifetime=0`` (browser-session cookie) keeps the data ``gc_ttl``; a ``ttl`` of 0 or
    less (a session at its end) keeps it 1 s rather than failing; others keep ``ttl``."""
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    store = ShmStore(store=aio, gc_ttl=1)

    async def main() -> Dict[str, str]:
        return {
            "session-only": await store.write("a", b"1", lifetime=0, ttl=0),
            "ending": await store.write("b", b"2", lifetime=60, ttl=-5),
            "ten minutes": await store.write("c", b"3", lifetime=600, ttl=600),
        }

    ids = run(main())
    assert all(any_store.get(sid) is not None for sid in ids.values())
    time.sleep(1.6)
    assert any_store.get(ids["session-only"]) is None
    assert any_store.get(ids["ending"]) is None
    assert any_store.get(ids["ten minutes"]) == b"3"

    default = ShmStore(store=aio)  # gc_ttl=None: the store's default ttl (1800 s)
    sid = run(default.write("d", b"4", lifetime=0, ttl=0))
    time.sleep(0.2)
    assert any_store.get(sid) == b"4"


def test_a_session_written_by_name_is_read_through_a_given_store(name: str) -> None:
    """(What every adapter's constructor takes: tests/adapter/test_adapter_stores.py.)"""
    by_name = ShmStore(name, size=1 << 20)
    try:
        sid = run(by_name.write("x", b"shared", lifetime=60, ttl=60))
        with SessionStorage(name) as sync:
            assert run(ShmStore(store=sync).read(sid, 60)) == b"shared"
    finally:
        assert isinstance(by_name.store, AsyncSessionStorage)
        by_name.store.sync.close()


# --- starsessions' own store tests, on rotate_unknown_ids=False -----------------------------
# Ported from starsessions' tests (github.com/alex-oleshkevich/starsessions: tests/backends/
# test_memory.py and test_redis.py, which run InMemoryStore and RedisStore; tests/test_session.py
# and tests/test_middleware.py, which run the ``store`` fixture of tests/conftest.py), on its
# 2.x API: ``write(id, data, lifetime, ttl)``, ``SessionMiddleware(store=...)``. With
# ``rotate_unknown_ids=False`` the store keeps every session under the id it is given, as theirs
# do, so code written against them (a fixture seeding a session under a chosen id, a migration
# importing sessions with their ids) runs unchanged.


@pytest.fixture
def given_ids(any_store: Store) -> ShmStore:
    """The adapter on this test's store, storing under the ids it is given."""
    return ShmStore(store=AsyncSessionStorage(any_store), rotate_unknown_ids=False)


def test_given_id_read_write(given_ids: ShmStore, any_store: Store) -> None:
    """test_in_memory_read_write, test_redis_read_write."""
    async def main() -> None:
        assert await given_ids.write("session_id", b"data", lifetime=60, ttl=60) == "session_id"
        assert await given_ids.read("session_id", lifetime=60) == b"data"

    run(main())
    assert any_store.get("session_id") == b"data"  # another process sees it under that id


def test_given_id_remove(given_ids: ShmStore) -> None:
    """test_in_memory_remove, test_redis_remove."""
    async def main() -> None:
        assert await given_ids.write("session_id", b"data", lifetime=60, ttl=60) == "session_id"
        await given_ids.remove("session_id")
        assert await given_ids.read("session_id", lifetime=60) == b""
        await given_ids.remove("missing")  # should not fail on a missing key

    run(main())


def test_given_id_write_with_session_only_setup(given_ids: ShmStore) -> None:
    """test_redis_write_with_session_only_setup: ``lifetime=0, ttl=0`` is stored (for
    ``gc_ttl``), under the id given."""
    async def main() -> None:
        assert await given_ids.write("session_id", b"data", lifetime=0, ttl=0) == "session_id"
        assert await given_ids.read("session_id", lifetime=0) == b"data"

    run(main())


def test_given_id_empty_session(given_ids: ShmStore) -> None:
    """test_redis_empty_session."""
    assert run(given_ids.read("unknown_session_id", lifetime=60)) == b""


def test_given_id_rewritten_after_remove(given_ids: ShmStore) -> None:
    """As InMemoryStore and RedisStore: a removed id written again holds the new data."""
    async def main() -> None:
        await given_ids.write("session_id", b"old", lifetime=60, ttl=60)
        await given_ids.remove("session_id")
        assert await given_ids.write("session_id", b"new", lifetime=60, ttl=60) == "session_id"
        assert await given_ids.read("session_id", lifetime=60) == b"new"

    run(main())


def test_given_id_the_store_cannot_hold_gets_a_fresh_one(given_ids: ShmStore) -> None:
    """Not in starsessions' tests (its stores take any str): an id over the store's limit --
    a forged cookie -- reads as no session and is written under a fresh id, as with the
    default, rather than failing the client's request."""
    forged = "x" * (SessionStorage.MAX_ID_BYTES + 1)

    async def main() -> None:
        assert await given_ids.read(forged, lifetime=60) == b""
        assert await given_ids.exists(forged) is False
        await given_ids.remove(forged)
        sid = await given_ids.write(forged, b"{}", lifetime=60, ttl=60)
        assert sid != forged and len(sid) == 43
        assert await given_ids.read(sid, lifetime=60) == b"{}"
        # The longest id the store holds is still taken as given.
        longest = "y" * SessionStorage.MAX_ID_BYTES
        assert await given_ids.write(longest, b"[]", lifetime=60, ttl=60) == longest
        assert await given_ids.read(longest, lifetime=60) == b"[]"

    run(main())


def _handler(store: ShmStore, session_id: Optional[str]) -> HTTPConnection:
    """A connection with starsessions' session handler on ``store``, as its middleware makes."""
    connection = HTTPConnection({"type": "http"})
    connection.scope["session"] = {}
    connection.scope["session_handler"] = SessionHandler(
        connection, session_id, store, JsonSerializer(), lifetime=60)
    return connection


def test_given_id_load_session(given_ids: ShmStore) -> None:
    """tests/test_session.py: test_load_session."""
    connection = _handler(given_ids, "session_id")

    async def main() -> None:
        await given_ids.write("session_id", b'{"key": "value"}', lifetime=60, ttl=60)
        await load_session(connection)

    run(main())
    assert is_loaded(connection)
    assert connection.session == {"key": "value"}


def test_given_id_regenerate_session_id(given_ids: ShmStore) -> None:
    """tests/test_session.py: test_regenerate_session_id."""
    connection = _handler(given_ids, "some_id")

    async def main() -> None:
        await given_ids.write("some_id", b"value", 3600, 3600)
        assert await given_ids.read("some_id", 3600) == b"value"

    run(main())
    session_id = regenerate_session_id(connection)
    assert session_id and session_id != "some_id"


def test_given_id_middleware_loads_seeded_session(given_ids: ShmStore) -> None:
    """tests/test_middleware.py: test_loads_existing_session, then
    test_send_cookie_if_session_updated: the cookie keeps the seeded id."""
    run(given_ids.write("session_id", b'{"user": "alice", "n": 1}', lifetime=600, ttl=600))
    with TestClient(starlette_app.make_app(given_ids, lifetime=600)) as client:
        cookie = {"cookie": f"{COOKIE}=session_id"}
        assert client.get("/whoami", headers=cookie).json()["user"] == "alice"
        reply = client.post("/incr", headers=cookie)
        assert reply.json()["n"] == 2
        assert reply.cookies[COOKIE] == "session_id"
    assert json.loads(run(given_ids.read("session_id", 600)))["n"] == 2


def test_given_id_middleware_clears_storage_if_session_destroyed(given_ids: ShmStore) -> None:
    """tests/test_middleware.py: test_send_cookie_if_session_destroyed,
    test_will_clear_storage_if_session_destroyed."""
    run(given_ids.write("session_id", b'{"user": "alice"}', lifetime=600, ttl=600))
    with TestClient(starlette_app.make_app(given_ids, lifetime=600)) as client:
        reply = client.post("/logout", headers={"cookie": f"{COOKIE}=session_id"})
        assert "1970" in reply.headers["set-cookie"]
    assert run(given_ids.exists("session_id")) is False


def test_given_id_middleware_handles_not_existing_session(given_ids: ShmStore) -> None:
    """tests/test_middleware.py: test_handles_not_existing_session,
    test_storage_has_no_data_for_session_id."""
    with TestClient(starlette_app.make_app(given_ids)) as client:
        assert client.get("/whoami", headers={"cookie": f"{COOKIE}=someid"}).json()["user"] is None


def test_given_id_middleware_stores_under_the_cookies_id(given_ids: ShmStore) -> None:
    """tests/test_middleware.py: test_session_middleware_with_custom_backend -- the id the
    request came with, live or not, is the one the session is stored under (no fixation
    protection: what ``rotate_unknown_ids=True``, the default, is for)."""
    with TestClient(starlette_app.make_app(given_ids)) as client:
        reply = client.post("/login?user=bob", headers={"cookie": f"{COOKIE}=someid"})
        assert reply.cookies[COOKIE] == "someid"
    assert json.loads(run(given_ids.read("someid", 60)))["user"] == "bob"


# --- an app through Starlette's TestClient -------------------------------------------------


def test_login_counter_logout(any_store: Store) -> None:
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    with TestClient(starlette_app.make_app(ShmStore(store=aio), lifetime=600)) as client:
        assert client.get("/whoami").json()["user"] is None
        assert COOKIE not in client.cookies  # an empty session sets no cookie

        assert client.post("/login?user=alice").json()["user"] == "alice"
        sid = client.cookies[COOKIE]
        assert len(sid) == 43  # the store's id, not the one starsessions proposed
        for i in range(1, 4):
            assert client.post("/incr").json() == {"pid": os.getpid(), "user": "alice", "n": i}
        record = stored(any_store, sid)
        assert record is not None and record["user"] == "alice" and record["n"] == 3
        assert client.cookies[COOKIE] == sid

        reply = client.post("/logout")
        assert reply.json()["user"] is None
        assert "1970" in reply.headers["set-cookie"]  # the cookie is deleted...
        assert any_store.get(sid) is None  # ... and so is the record

        old = {"cookie": f"{COOKIE}={sid}"}  # replayed by hand: the client dropped it
        client.cookies.clear()
        assert client.get("/whoami", headers=old).json()["user"] is None
        # Writing to the replayed session gives it a fresh id; the old one stays dead.
        reply = client.post("/incr", headers=old)
        assert reply.json()["n"] == 1
        assert reply.cookies[COOKIE] not in ("", sid)
        assert any_store.get(sid) is None


def test_planted_session_id_is_not_adopted(any_store: Store) -> None:
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    planted = secrets.token_hex(16)
    with TestClient(starlette_app.make_app(ShmStore(store=aio))) as client:
        reply = client.post("/login?user=victim", headers={"cookie": f"{COOKIE}={planted}"})
        assert reply.json()["user"] == "victim"
        assert reply.cookies[COOKIE] != planted
        assert any_store.get(planted) is None
        assert stored(any_store, reply.cookies[COOKIE])["user"] == "victim"  # type: ignore[index]


def test_session_expires_in_the_store(any_store: Store) -> None:
    """``lifetime=2``: the record expires in the store itself (the old cookie, replayed by
    hand past its max-age, is anonymous)."""
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    with TestClient(starlette_app.make_app(ShmStore(store=aio), lifetime=2)) as client:
        client.post("/login?user=alice")
        sid = client.cookies[COOKIE]
        assert client.get("/whoami").json()["user"] == "alice"
        assert any_store.get(sid) is not None
        time.sleep(2.2)
        assert any_store.get(sid) is None
        client.cookies.clear()
        assert client.get("/whoami", headers={"cookie": f"{COOKIE}={sid}"}).json()["user"] is None


def test_fastapi(any_store: Store) -> None:
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    app = FastAPI()
    # add_middleware puts each new one outside the others: autoload first, sessions last.
    for mw in reversed(starlette_app.middleware(ShmStore(store=aio))):
        app.add_middleware(mw.cls, *mw.args, **mw.kwargs)

    @app.post("/login")
    async def login(request: Request, user: str) -> Dict[str, Any]:
        request.session["user"] = user
        return {"user": user}

    @app.get("/whoami")
    async def whoami(request: Request) -> Dict[str, Any]:
        return {"user": request.session.get("user")}

    with TestClient(app) as client:
        client.post("/login", params={"user": "bob"})
        assert client.get("/whoami").json() == {"user": "bob"}
        assert stored(any_store, client.cookies[COOKIE])["user"] == "bob"  # type: ignore[index]


# --- a save racing a logout, step by step ----------------------------------------------------


class _Interleaved:
    """A real async store seen as the saving request's steps: every coroutine call on it is
    one step, and before step ``i`` another request of the same session acts on its own
    handle -- it saves the session (so a compare-and-set the saver makes always conflicts)
    while ``i < logout_at``, logs it out at ``i == logout_at``, and does nothing after."""

    def __init__(self, inner: AsyncStore, other: AsyncStore,
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


def test_a_save_never_revives_a_session_logged_out_while_it_runs(
        backend: str, name: str, open_store: Callable[..., Store],
        request: pytest.FixtureRequest) -> None:
    """starsessions' save (``ShmStore.write``, through ``replace_live``) on an async store --
    the shared-memory store wrapped, and Redis's own async store -- with the logout landing
    before each step of the save in turn -- step 0, 1, 2, ... until it lands after the save --
    and another request writing the session before every earlier step. The save's request
    loaded the session first (``ShmStore.read``), as starsessions does. Whatever the save
    does, the logout holds: the logged-out id stays dead, and nothing of the save is stored
    under a fresh id either (that would log the browser back in)."""
    max_steps = 64  # store calls one save may make before the test calls it unbounded
    open_store()  # the store, deleted after the test

    def async_handle() -> AsyncStore:
        if backend == "shm":
            return AsyncSessionStorage(open_store())
        from shmsession.redis import AsyncRedisSessionStorage

        return AsyncRedisSessionStorage(name, f"unix://{request.getfixturevalue('redis_socket')}",
                                        secret=REDIS_SECRET)

    async def main() -> None:
        saver, other = async_handle(), async_handle()
        try:
            for logout_at in range(max_steps):
                sid = other.new_id()
                await other.write(sid, b'{"n": 0}', 600)
                shm_store = ShmStore(store=saver)  # type: ignore[arg-type]
                assert await shm_store.read(sid, lifetime=600) == b'{"n": 0}'  # the load
                store = _Interleaved(saver, other, sid, logout_at)
                shm_store.store = store  # type: ignore[assignment]
                saved_under = await shm_store.write(sid, b'{"n": 1}', lifetime=600, ttl=600)
                landed_after = not store.logged_out
                if landed_after:
                    assert await other.invalidate(sid)
                assert await other.get(sid) is None, (
                    f"a logout before step {logout_at} of {store.steps} was undone by the "
                    f"save (which returned the {'same' if saved_under == sid else 'a new'} id)")
                assert saved_under == sid and await other.len() == 0, (
                    f"a logout before step {logout_at} of {store.steps}: the save stored its "
                    f"data under a fresh id")
                if landed_after:
                    return
            raise AssertionError(f"a save took more than {max_steps} store calls")
        finally:
            await saver.close()
            await other.close()

    asyncio.run(main())


# --- owners: log out everywhere -----------------------------------------------------------


def test_logout_everywhere_keeps_only_the_current_session(any_store: Store) -> None:
    """alice logged in from two clients; a third, also alice, logs her out everywhere else:
    both old cookies are anonymous, the third stays logged in, and bob is untouched."""
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    app = starlette_app.make_app(ShmStore(store=aio, owner_key="user"), lifetime=600)
    with TestClient(app) as a, TestClient(app) as b, TestClient(app) as c, \
            TestClient(app) as bob:
        for client, user in ((a, "alice"), (b, "alice"), (c, "alice"), (bob, "bob")):
            assert client.post(f"/login?user={user}").json()["user"] == user
        old = [a.cookies[COOKIE], b.cookies[COOKIE]]
        assert c.get("/devices").json()["devices"] == 3

        reply = c.post("/logout-everywhere?keep=1")
        assert reply.json()["deleted"] == 2 and reply.json()["user"] == "alice"
        for client, sid in zip((a, b), old):
            assert client.get("/whoami").json()["user"] is None
            assert any_store.get(sid) is None
        assert c.get("/whoami").json()["user"] == "alice"
        assert c.get("/devices").json()["devices"] == 1
        body = bob.get("/devices").json()
        assert (body["user"], body["devices"]) == ("bob", 1)


def test_logout_everywhere_without_keep_logs_out_the_current_session_too(
        any_store: Store) -> None:
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    app = starlette_app.make_app(ShmStore(store=aio, owner_key="user"), lifetime=600)
    with TestClient(app) as a, TestClient(app) as b, TestClient(app) as c:
        for client in (a, b, c):
            client.post("/login?user=alice")
        sids = [client.cookies[COOKIE] for client in (a, b, c)]
        reply = c.post("/logout-everywhere")
        assert reply.json()["deleted"] == 3 and reply.json()["user"] is None
        assert "1970" in reply.headers["set-cookie"]  # the current cookie is deleted too
        for sid in sids:
            assert any_store.get(sid) is None
            c.cookies.clear()
            assert c.get("/whoami", headers={"cookie": f"{COOKIE}={sid}"}).json()["user"] is None
        assert run(ShmStore(store=aio).sessions_of("alice")) == []


def test_owner_key_on_save(any_store: Store) -> None:
    """A session holding the owner key is its value's (as ``str``); one without it, or with
    ``None`` there, keeps the owner it has; a store without ``owner_key`` records none."""
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    store = ShmStore(store=aio, owner_key="user")
    ser = JsonSerializer().serialize

    async def owned(owner: str) -> int:
        return len(await store.sessions_of(owner))

    async def main() -> None:
        sid = await store.write("new", ser({"user": "alice", "n": 0}), lifetime=60, ttl=60)
        assert await owned("alice") == 1
        # The key removed without clearing the session: it stays alice's.
        assert await store.write(sid, ser({"n": 1}), lifetime=60, ttl=60) == sid
        assert await store.write(sid, ser({"user": None}), lifetime=60, ttl=60) == sid
        assert await owned("alice") == 1
        # Another value moves it to that owner, as a str.
        assert await store.write(sid, ser({"user": 7}), lifetime=60, ttl=60) == sid
        assert (await owned("alice"), await owned("7")) == (0, 1)
        # Without owner_key, sessions get no owner (and keep the one they have).
        plain = ShmStore(store=aio)
        other = await plain.write("new", ser({"user": "alice"}), lifetime=60, ttl=60)
        assert await owned("alice") == 0
        assert await plain.write(sid, ser({"user": "alice"}), lifetime=60, ttl=60) == sid
        assert await owned("7") == 1
        # An owner the store cannot hold is refused before anything changes.
        with pytest.raises(InvalidOwner):
            await store.write(sid, ser({"user": ""}), lifetime=60, ttl=60)
        assert await aio.get(sid) == ser({"user": "alice"})
        # A keep= the store cannot hold (a forged cookie) keeps nothing.
        assert await store.logout_everywhere("7", keep="x" * 2000) == 1
        assert await aio.get(sid) is None and await aio.get(other) is not None

    run(main())


def test_owner_key_with_given_ids_and_another_serializer(any_store: Store) -> None:
    """``rotate_unknown_ids=False`` records the owner too, and the owner key is read with
    the middleware's serializer."""

    class Reversed(JsonSerializer):
        def serialize(self, data: Any) -> bytes:
            return super().serialize(data)[::-1]

        def deserialize(self, data: bytes) -> Dict[str, Any]:
            return super().deserialize(data[::-1])

    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    store = ShmStore(store=aio, owner_key="user", serializer=Reversed(),
                     rotate_unknown_ids=False)
    app = Starlette(routes=starlette_app.ROUTES, middleware=[
        Middleware(SessionMiddleware, store=store, cookie_https_only=False,
                   serializer=Reversed()),
        Middleware(SessionAutoloadMiddleware)])
    with TestClient(app) as client:
        client.post("/login?user=carol", headers={"cookie": f"{COOKIE}=chosen"})
        assert client.cookies[COOKIE] == "chosen"
        assert client.get("/whoami").json()["user"] == "carol"
    assert run(store.logout_everywhere("carol")) == 1
    assert any_store.get("chosen") is None
