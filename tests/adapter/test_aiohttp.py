"""aiohttp-session on shmsession: the storage through aiohttp's own test server and client,
on a store in shared memory and on one in Redis. A real gunicorn with 4
``aiohttp.GunicornWebWorker`` workers sharing the sessions: tests/adapter/test_async_workers.py.

A test taking ``any_store`` runs on both backends: the adapter gets the store wrapped
(``AsyncSessionStorage``, as it wraps a ``SessionStorage`` itself) and the test reads it
directly, as another process would."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Optional, TypeVar, Union

import pytest
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp_session import AbstractStorage, Session, get_session, setup

from shmsession import Store
from shmsession.aio import AsyncSessionStorage
from shmsession.contrib.aiohttp import ShmStorage

from . import aiohttp_app

COOKIE = "AIOHTTP_SESSION"
T = TypeVar("T")
if TYPE_CHECKING:
    Client = TestClient[web.Request, web.Application]
else:
    Client = TestClient

# aiohttp-session 2.12.1 (the latest) keys the request with plain strings in its own
# middleware (request["aiohttp_session_storage"] = ...), which aiohttp 3.14 warns about.
# Not ours to fix: ignore exactly that warning, and no other.
pytestmark = pytest.mark.filterwarnings(
    "ignore:It is recommended to use web.RequestKey:aiohttp.web_exceptions.NotAppKeyWarning"
)


def stored(store: Store, sid: str) -> Optional[Dict[str, Any]]:
    """The session as the store holds it (decoded), or None."""
    raw = store.get(sid)
    return None if raw is None else json.loads(raw)


def with_client(app: web.Application, test: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``test`` against ``app`` served by aiohttp's test server on 127.0.0.1."""

    async def main() -> T:
        async with TestClient(TestServer(app)) as client:
            return await test(client)

    return asyncio.run(main())


def set_cookie(resp: Any) -> str:
    """The response's ``Set-Cookie`` header for the session cookie ('' when none)."""
    return next((h for h in resp.headers.getall("Set-Cookie", []) if h.startswith(COOKIE)), "")


# --- through aiohttp's test server -----------------------------------------------------------


def test_login_counter_logout(any_store: Store) -> None:
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    app = aiohttp_app.make_app(ShmStorage(store=aio, max_age=600, samesite="Lax"))

    async def test(client: Client) -> None:
        resp = await client.get("/whoami")
        assert (await resp.json())["user"] is None and set_cookie(resp) == ""

        resp = await client.post("/login?user=alice")
        assert (await resp.json())["user"] == "alice"
        header = set_cookie(resp)
        assert "HttpOnly" in header and "Max-Age=600" in header and "SameSite=Lax" in header
        sid = resp.cookies[COOKIE].value
        assert len(sid) == 43  # the store's id: 256 random bits, and nothing else
        for i in range(1, 4):
            assert (await (await client.post("/incr")).json())["n"] == i
        record = stored(any_store, sid)
        assert record is not None and record["session"] == {"user": "alice", "n": 3}
        assert isinstance(record["created"], int)

        resp = await client.post("/logout")
        assert (await resp.json())["user"] is None
        assert 'Max-Age=0' in set_cookie(resp) or "1970" in set_cookie(resp)  # deleted...
        assert any_store.get(sid) is None  # ... and so is the record

        client.session.cookie_jar.clear()
        old = {"Cookie": f"{COOKIE}={sid}"}
        assert (await (await client.get("/whoami", headers=old)).json())["user"] is None
        # Writing to the replayed session gives it a fresh id; the old one stays dead.
        resp = await client.post("/incr", headers=old)
        assert (await resp.json())["n"] == 1
        assert resp.cookies[COOKIE].value not in ("", sid)
        assert any_store.get(sid) is None

    with_client(app, test)


def test_new_ids_for_login_and_for_unknown_ids(any_store: Store) -> None:
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    app = aiohttp_app.make_app(ShmStorage(store=aio))

    async def test(client: Client) -> None:
        anonymous = (await client.post("/incr")).cookies[COOKIE].value
        login = (await client.post("/login?user=alice")).cookies[COOKIE].value
        assert login != anonymous  # new_session() on login: a new id
        client.session.cookie_jar.clear()
        planted = secrets.token_urlsafe(32)
        resp = await client.post("/login?user=victim", headers={"Cookie": f"{COOKIE}={planted}"})
        assert resp.cookies[COOKIE].value != planted and any_store.get(planted) is None
        resp = await client.post("/incr", headers={"Cookie": f"{COOKIE}={'x' * 2000}"})
        assert resp.status == 200 and len(resp.cookies[COOKIE].value) == 43

    with_client(app, test)


def test_a_session_seeded_under_a_chosen_id_stays_under_it(any_store: Store) -> None:
    """Why aiohttp needs no ``rotate_unknown_ids``: aiohttp-session's own storages adopt no
    id either (an id without data loads as a new session, which gets a fresh key), and a
    fixture seeds a session by writing its record and sending its cookie -- a live id,
    which every save keeps."""
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    record = {"created": int(time.time()), "session": {"user": "alice", "n": 1}}
    any_store.write("chosen-id", json.dumps(record).encode(), 600)

    async def test(client: Client) -> None:
        resp = await client.post("/incr", headers={"Cookie": f"{COOKIE}=chosen-id"})
        assert (await resp.json())["n"] == 2
        assert resp.cookies[COOKIE].value == "chosen-id"

    with_client(aiohttp_app.make_app(ShmStorage(store=aio)), test)
    assert stored(any_store, "chosen-id")["session"]["n"] == 2  # type: ignore[index]


def test_a_save_racing_a_logout_does_not_bring_the_session_back(any_store: Store) -> None:
    """A request loads the session; another worker logs it out; the first then saves: the
    logout holds. The logged-out id stays dead, nothing is stored under a fresh one (that
    would log the browser back in), and the response deletes the cookie -- as the Flask
    interface does."""
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    storage = ShmStorage(store=aio)
    app = aiohttp_app.make_app(storage)

    async def slow_incr(request: web.Request) -> web.Response:
        session = await get_session(request)
        assert await storage.store.invalidate(str(session.identity))  # the other worker
        session["n"] = session.get("n", 0) + 1
        return web.json_response({"n": session["n"]})

    app.router.add_post("/slow-incr", slow_incr)

    async def test(client: Client) -> None:
        sid = (await client.post("/login?user=alice")).cookies[COOKIE].value
        resp = await client.post("/slow-incr")
        assert resp.status == 200 and resp.cookies[COOKIE].value == ""  # deleted
        assert any_store.get(sid) is None and len(any_store) == 0
        assert (await (await client.get("/whoami")).json())["user"] is None

    with_client(app, test)


def test_empty_sessions_store_nothing_and_delete_what_was_there(any_store: Store) -> None:
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    app = web.Application()
    setup(app, ShmStorage(store=aio))

    async def touch_new(request: web.Request) -> web.Response:
        (await get_session(request)).changed()  # a changed but empty new session
        return web.Response(text="ok")

    async def drop_keys(request: web.Request) -> web.Response:
        session = await get_session(request)
        for key in list(session):
            del session[key]
        return web.Response(text="ok")

    app.add_routes([web.post("/touch", touch_new), web.post("/drop", drop_keys),
                    *aiohttp_app.routes])

    async def test(client: Client) -> None:
        resp = await client.post("/touch")
        assert set_cookie(resp) == "" and len(any_store) == 0
        sid = (await client.post("/login?user=alice")).cookies[COOKIE].value
        assert len(any_store) == 1
        resp = await client.post("/drop")
        assert "Max-Age=0" in set_cookie(resp)
        assert any_store.get(sid) is None and len(any_store) == 0

    with_client(app, test)


def test_encoder_decoder_and_undecodable_records(any_store: Store) -> None:
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    def encode(obj: object) -> str:
        return "v1:" + json.dumps(obj)

    def decode(text: str) -> Any:
        if not text.startswith("v1:"):
            raise ValueError("not v1")
        return json.loads(text[3:])

    app = aiohttp_app.make_app(ShmStorage(store=aio, encoder=encode, decoder=decode))

    async def test(client: Client) -> None:
        sid = (await client.post("/login?user=alice")).cookies[COOKIE].value
        raw = any_store.read(sid)
        assert raw.startswith(b"v1:") and decode(raw.decode())["session"]["user"] == "alice"
        assert (await (await client.get("/whoami")).json())["user"] == "alice"
        any_store.write(sid, b"\xff not what the encoder wrote")
        assert (await (await client.get("/whoami")).json())["user"] is None

    with_client(app, test)


def test_max_age_is_the_store_ttl(any_store: Store) -> None:
    """``max_age=1``: the record expires in the store itself; ``max_age=None`` leaves the
    store's default ttl; ``max_age=0`` (a cookie that expires at once) is not refused."""
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    def short() -> web.Application:  # an aiohttp app serves one event loop: one per run
        return aiohttp_app.make_app(ShmStorage(store=aio, max_age=1))

    default = aiohttp_app.make_app(ShmStorage(store=aio, cookie_name="S2"))
    zero = aiohttp_app.make_app(ShmStorage(store=aio, cookie_name="S3", max_age=0))

    async def login(client: Client) -> Any:
        return await client.post("/login?user=alice")

    sid = with_client(short(), login).cookies[COOKIE].value
    resp = with_client(default, login)
    assert "Max-Age" not in resp.headers["Set-Cookie"]  # a browser-session cookie
    kept = resp.cookies["S2"].value
    zero_sid = with_client(zero, login).cookies["S3"].value
    assert any_store.get(sid) is not None and any_store.get(zero_sid) is not None
    time.sleep(1.5)
    assert any_store.get(sid) is None and any_store.get(zero_sid) is None
    assert stored(any_store, kept)["session"]["user"] == "alice"  # type: ignore[index]

    async def replay(client: Client) -> Any:
        return await (await client.get("/whoami", headers={"Cookie": f"{COOKIE}={sid}"})).json()

    assert with_client(short(), replay)["user"] is None


def test_a_storage_is_aiohttp_sessions_with_its_options(name: str) -> None:
    """(What every adapter's constructor takes: tests/adapter/test_adapter_stores.py.)"""
    by_name = ShmStorage(name, size=1 << 20, max_age=60)
    try:
        assert isinstance(by_name, AbstractStorage)
        assert by_name.cookie_name == COOKIE and by_name.max_age == 60
    finally:
        assert isinstance(by_name.store, AsyncSessionStorage)
        by_name.store.sync.close()


# --- owners: log out everywhere -----------------------------------------------------------


def owners_app(any_store: Store) -> web.Application:
    """The test app on a storage whose owner key is ``"user"``."""
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    return aiohttp_app.make_app(ShmStorage(store=aio, max_age=600, owner_key="user"))


async def call(client: Client, method: str, path: str, sid: Optional[str] = None) -> Any:
    """``path``'s JSON, with ``sid`` as the session cookie (the client keeps no cookies)."""
    headers = {} if sid is None else {"Cookie": f"{COOKIE}={sid}"}
    resp = await client.request(method, path, headers=headers)
    assert resp.status == 200, resp
    return await resp.json(), resp


async def login(client: Client, user: str) -> str:
    body, resp = await call(client, "POST", f"/login?user={user}")
    assert body["user"] == user
    return str(resp.cookies[COOKIE].value)


def with_cookieless_client(app: web.Application, test: Callable[[Client], Awaitable[T]]) -> T:
    """``with_client``, for a client that keeps no cookies: each call names its session."""

    async def main() -> T:
        async with TestClient(TestServer(app), cookie_jar=DummyCookieJar()) as client:
            return await test(client)

    return asyncio.run(main())


def test_logout_everywhere_keeps_only_the_current_session(any_store: Store) -> None:
    """alice logged in from two clients; a third, also alice, logs her out everywhere else:
    both old cookies are anonymous, the third stays logged in, and bob is untouched."""

    async def test(client: Client) -> None:
        a, b, c = [await login(client, "alice") for _ in range(3)]
        bob = await login(client, "bob")
        assert (await call(client, "GET", "/devices", c))[0]["devices"] == 3

        body, _ = await call(client, "POST", "/logout-everywhere?keep=1", c)
        assert (body["deleted"], body["user"]) == (2, "alice")
        for sid in (a, b):
            assert (await call(client, "GET", "/whoami", sid))[0]["user"] is None
            assert any_store.get(sid) is None
        assert (await call(client, "GET", "/whoami", c))[0]["user"] == "alice"
        assert (await call(client, "GET", "/devices", c))[0]["devices"] == 1
        body, _ = await call(client, "GET", "/devices", bob)
        assert (body["user"], body["devices"]) == ("bob", 1)

    with_cookieless_client(owners_app(any_store), test)


def test_logout_everywhere_without_keep_logs_out_the_current_session_too(
        any_store: Store) -> None:

    async def test(client: Client) -> None:
        sids = [await login(client, "alice") for _ in range(3)]
        body, resp = await call(client, "POST", "/logout-everywhere", sids[2])
        assert (body["deleted"], body["user"]) == (3, None)
        assert resp.cookies[COOKIE].value == ""  # the current cookie is deleted too
        for sid in sids:
            assert any_store.get(sid) is None
            assert (await call(client, "GET", "/whoami", sid))[0]["user"] is None

    with_cookieless_client(owners_app(any_store), test)


def test_owner_key_on_save(any_store: Store) -> None:
    """A session holding the owner key is its value's (as ``str``); one without it, or with
    ``None`` there, keeps the owner it has; a storage without ``owner_key`` records none;
    ``keep=`` takes a session id, a ``Session`` or a request."""
    aio = AsyncSessionStorage(any_store)  # the adapter's view of the test's store
    storage = ShmStorage(store=aio, owner_key="user")
    plain = ShmStorage(store=aio)
    app = aiohttp_app.make_app(storage)

    async def drop_user(request: web.Request) -> web.Response:  # the key, not the session
        session = await get_session(request)
        del session["user"]
        return web.json_response({})

    async def set_user(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["user"] = json.loads(request.query["value"])
        return web.json_response({})

    async def plain_save(request: web.Request) -> web.Response:
        """Save the session, with user alice, as an app without owners would (the request's
        own session is unchanged: the middleware does not save it again)."""
        session = await get_session(request)
        changed = Session(session.identity, data={"session": {"user": "alice"}}, new=False)
        changed.changed()
        resp = web.json_response({})
        await plain.save_session(request, resp, changed)
        return resp

    async def keep_me(request: web.Request) -> web.Response:
        kind = request.query["as"]
        keep: Union[web.Request, Session, str] = (
            request if kind == "request" else await get_session(request) if kind == "session"
            else "x" * 2000)  # a forged cookie's id
        return web.json_response(await storage.logout_everywhere("7", keep=keep))

    app.router.add_post("/drop-user", drop_user)
    app.router.add_post("/set-user", set_user)
    app.router.add_post("/plain-save", plain_save)
    app.router.add_post("/keep", keep_me)

    async def owned(owner: str) -> int:
        return len(await storage.sessions_of(owner))

    async def test(client: Client) -> None:
        sid = await login(client, "alice")
        assert await owned("alice") == 1
        await call(client, "POST", "/drop-user", sid)  # removed without clearing: still hers
        assert stored(any_store, sid)["session"] == {"n": 0}  # type: ignore[index]
        await call(client, "POST", "/set-user?value=null", sid)
        assert await owned("alice") == 1
        await call(client, "POST", "/set-user?value=7", sid)  # another value: a str owner
        assert (await owned("alice"), await owned("7")) == (0, 1)
        resp = await client.post("/set-user?value=%22%22", headers={"Cookie": f"{COOKIE}={sid}"})
        assert resp.status == 500  # InvalidOwner: "" is no owner; the save changed nothing
        assert stored(any_store, sid)["session"] == {"n": 0, "user": 7}  # type: ignore[index]
        await call(client, "POST", "/plain-save", sid)  # no owner_key: the owner stays
        assert stored(any_store, sid)["session"] == {"user": "alice"}  # type: ignore[index]
        assert (await owned("alice"), await owned("7")) == (0, 1)
        other = await login(client, "7")
        for kind in ("request", "session"):
            assert (await call(client, "POST", f"/keep?as={kind}", sid))[0] == 1  # other
            assert any_store.get(sid) is not None
            other = await login(client, "7")
        assert (await call(client, "POST", "/keep?as=forged", sid))[0] == 2
        assert any_store.get(sid) is None and any_store.get(other) is None

    with_cookieless_client(app, test)
