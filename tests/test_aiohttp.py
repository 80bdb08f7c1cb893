"""aiohttp-session on shmsession: the storage through aiohttp's own test server and client,
and a real gunicorn with 4 ``aiohttp.GunicornWebWorker`` workers sharing one session store."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Iterator, Optional, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp_session import AbstractStorage, get_session, setup

from shmsession import SessionStorage
from shmsession.aio import AsyncSessionStorage
from shmsession.contrib.aiohttp import ShmStorage

from . import aiohttp_app
from ._servers import Server, call, free_port, in_threads, python, serve

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


def stored(store: SessionStorage, sid: str) -> Optional[Dict[str, Any]]:
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


@pytest.fixture
def shm(name: str) -> Iterator[SessionStorage]:
    with SessionStorage(name, size=1 << 20) as s:
        yield s


# --- through aiohttp's test server -----------------------------------------------------------


def test_login_counter_logout(shm: SessionStorage) -> None:
    app = aiohttp_app.make_app(ShmStorage(store=shm, max_age=600, samesite="Lax"))

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
        record = stored(shm, sid)
        assert record is not None and record["session"] == {"user": "alice", "n": 3}
        assert isinstance(record["created"], int)

        resp = await client.post("/logout")
        assert (await resp.json())["user"] is None
        assert 'Max-Age=0' in set_cookie(resp) or "1970" in set_cookie(resp)  # deleted...
        assert shm.get(sid) is None  # ... and so is the record

        client.session.cookie_jar.clear()
        old = {"Cookie": f"{COOKIE}={sid}"}
        assert (await (await client.get("/whoami", headers=old)).json())["user"] is None
        # Writing to the replayed session gives it a fresh id; the old one stays dead.
        resp = await client.post("/incr", headers=old)
        assert (await resp.json())["n"] == 1
        assert resp.cookies[COOKIE].value not in ("", sid)
        assert shm.get(sid) is None

    with_client(app, test)


def test_new_ids_for_login_and_for_unknown_ids(shm: SessionStorage) -> None:
    app = aiohttp_app.make_app(ShmStorage(store=shm))

    async def test(client: Client) -> None:
        anonymous = (await client.post("/incr")).cookies[COOKIE].value
        login = (await client.post("/login?user=alice")).cookies[COOKIE].value
        assert login != anonymous  # new_session() on login: a new id
        client.session.cookie_jar.clear()
        planted = secrets.token_urlsafe(32)
        resp = await client.post("/login?user=victim", headers={"Cookie": f"{COOKIE}={planted}"})
        assert resp.cookies[COOKIE].value != planted and shm.get(planted) is None
        resp = await client.post("/incr", headers={"Cookie": f"{COOKIE}={'x' * 2000}"})
        assert resp.status == 200 and len(resp.cookies[COOKIE].value) == 43

    with_client(app, test)


def test_a_save_racing_a_logout_does_not_bring_the_id_back(shm: SessionStorage) -> None:
    """A request loads the session; another worker logs it out; the first then saves: the
    data goes under a fresh id, and the logged-out id stays dead."""
    storage = ShmStorage(store=shm)
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
        fresh = resp.cookies[COOKIE].value
        assert fresh not in ("", sid) and shm.get(sid) is None
        assert stored(shm, fresh)["session"]["n"] == 1  # type: ignore[index]

    with_client(app, test)


def test_empty_sessions_store_nothing_and_delete_what_was_there(shm: SessionStorage) -> None:
    app = web.Application()
    setup(app, ShmStorage(store=shm))

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
        assert set_cookie(resp) == "" and len(shm) == 0
        sid = (await client.post("/login?user=alice")).cookies[COOKIE].value
        assert len(shm) == 1
        resp = await client.post("/drop")
        assert "Max-Age=0" in set_cookie(resp) and shm.get(sid) is None and len(shm) == 0

    with_client(app, test)


def test_encoder_decoder_and_undecodable_records(shm: SessionStorage) -> None:
    def encode(obj: object) -> str:
        return "v1:" + json.dumps(obj)

    def decode(text: str) -> Any:
        if not text.startswith("v1:"):
            raise ValueError("not v1")
        return json.loads(text[3:])

    app = aiohttp_app.make_app(ShmStorage(store=shm, encoder=encode, decoder=decode))

    async def test(client: Client) -> None:
        sid = (await client.post("/login?user=alice")).cookies[COOKIE].value
        raw = shm.read(sid)
        assert raw.startswith(b"v1:") and decode(raw.decode())["session"]["user"] == "alice"
        assert (await (await client.get("/whoami")).json())["user"] == "alice"
        shm.write(sid, b"\xff not what the encoder wrote")
        assert (await (await client.get("/whoami")).json())["user"] is None

    with_client(app, test)


def test_max_age_is_the_store_ttl(shm: SessionStorage) -> None:
    """``max_age=1``: the record expires in the store itself; ``max_age=None`` leaves the
    store's default ttl; ``max_age=0`` (a cookie that expires at once) is not refused."""
    def short() -> web.Application:  # an aiohttp app serves one event loop: one per run
        return aiohttp_app.make_app(ShmStorage(store=shm, max_age=1))

    default = aiohttp_app.make_app(ShmStorage(store=shm, cookie_name="S2"))
    zero = aiohttp_app.make_app(ShmStorage(store=shm, cookie_name="S3", max_age=0))

    async def login(client: Client) -> Any:
        return await client.post("/login?user=alice")

    sid = with_client(short(), login).cookies[COOKIE].value
    resp = with_client(default, login)
    assert "Max-Age" not in resp.headers["Set-Cookie"]  # a browser-session cookie
    kept = resp.cookies["S2"].value
    zero_sid = with_client(zero, login).cookies["S3"].value
    assert shm.get(sid) is not None and shm.get(zero_sid) is not None
    time.sleep(1.5)
    assert shm.get(sid) is None and shm.get(zero_sid) is None
    assert stored(shm, kept)["session"]["user"] == "alice"  # type: ignore[index]

    async def replay(client: Client) -> Any:
        return await (await client.get("/whoami", headers={"Cookie": f"{COOKIE}={sid}"})).json()

    assert with_client(short(), replay)["user"] is None


def test_storage_by_name_or_object(name: str) -> None:
    by_name = ShmStorage(name, size=1 << 20, max_age=60)
    try:
        assert isinstance(by_name, AbstractStorage)
        assert isinstance(by_name.store, AsyncSessionStorage)
        assert by_name.cookie_name == COOKIE and by_name.max_age == 60
        with SessionStorage(name) as sync:
            assert isinstance(ShmStorage(store=sync).store, AsyncSessionStorage)
            wrapped = AsyncSessionStorage(sync)
            assert ShmStorage(store=wrapped).store is wrapped
            with pytest.raises(TypeError):
                ShmStorage(name, store=sync)
            with pytest.raises(TypeError):
                ShmStorage(store=sync, size=1 << 20)
        with pytest.raises(TypeError):
            ShmStorage()
        with pytest.raises(TypeError, match="async store"):
            ShmStorage(store=object())  # type: ignore[arg-type]
    finally:
        assert isinstance(by_name.store, AsyncSessionStorage)
        by_name.store.sync.close()


# --- gunicorn -w 4 -k aiohttp.GunicornWebWorker ------------------------------------------------


@pytest.fixture(scope="module")
def gunicorn() -> Iterator[Server]:
    """4 aiohttp workers under gunicorn serving ``aiohttp_app`` on a store this test made."""
    name = f"t-{os.getpid()}-gunicorn-{secrets.token_hex(4)}"
    port = free_port()
    try:
        with SessionStorage(name, size=4 << 20):
            pass  # made here, attached to by every worker
        argv = python("-m", "gunicorn", "tests.aiohttp_app:create_app",
                      "--worker-class", "aiohttp.GunicornWebWorker", "--workers", "4",
                      "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "5",
                      "--log-level", "warning")
        yield from serve(argv, {aiohttp_app.ENV_STORE: name}, port, name, "/whoami")
    finally:
        SessionStorage.unlink_name(name)


def login(port: int, user: str) -> str:
    reply = call(port, "POST", f"/login?user={user}")
    assert reply.status == 200 and reply.json()["user"] == user, reply
    cookie = reply.cookie(COOKIE)
    assert cookie is not None and not cookie[1], reply
    return cookie[0]


def test_workers_share_one_session(gunicorn: Server) -> None:
    jar = {COOKIE: login(gunicorn.port, "alice")}
    replies = in_threads([lambda: call(gunicorn.port, "GET", "/whoami", jar)] * 48, threads=12)
    assert all(r.status == 200 and r.json()["user"] == "alice" for r in replies), replies
    pids = {r.json()["pid"] for r in replies}
    assert len(pids) >= 2, pids


def test_sequential_counter_loses_no_update(gunicorn: Server) -> None:
    jar = {COOKIE: login(gunicorn.port, "carol")}
    pids = set()
    for i in range(1, 41):
        reply = call(gunicorn.port, "POST", "/incr", jar)
        body = reply.json()
        assert (reply.status, body["user"], body["n"]) == (200, "carol", i), reply
        pids.add(body["pid"])
    with SessionStorage(gunicorn.store_name) as shm:
        assert stored(shm, jar[COOKIE])["session"]["n"] == 40  # type: ignore[index]
    assert len(pids) >= 2, pids  # the increments really went through several workers


def test_concurrent_writes_end_in_one_whole_version(gunicorn: Server) -> None:
    jar = {COOKIE: login(gunicorn.port, "dave")}
    assert call(gunicorn.port, "POST", "/put?tag=z&size=30000", jar).status == 200
    tags = [chr(ord("a") + i) for i in range(16)]
    writes = [lambda t=t: call(gunicorn.port, "POST", f"/put?tag={t}&size=30000", jar)
              for t in tags]
    reads = [lambda: call(gunicorn.port, "GET", "/blob", jar)] * 16
    replies = in_threads([job for pair in zip(writes, reads) for job in pair], threads=12)
    assert all(r.status == 200 for r in replies), replies
    for r in replies[1::2]:  # every read saw one whole version
        body = r.json()
        assert body["whole"] and body["size"] == 30000 and body["user"] == "dave", body
    final = call(gunicorn.port, "GET", "/blob", jar).json()
    assert final["whole"] and final["tag"] in tags and final["user"] == "dave", final
    with SessionStorage(gunicorn.store_name) as shm:
        record = stored(shm, jar[COOKIE])
    assert record is not None
    assert record["session"]["blob"] == record["session"]["tag"] * 30000


def test_logout_then_replayed_cookie_is_anonymous(gunicorn: Server) -> None:
    sid = login(gunicorn.port, "erin")
    jar = {COOKIE: sid}
    reply = call(gunicorn.port, "POST", "/logout", jar)
    assert reply.status == 200 and reply.cookie(COOKIE) is not None
    assert reply.cookie(COOKIE)[1], reply  # type: ignore[index]  # deleted
    replays = in_threads([lambda: call(gunicorn.port, "GET", "/whoami", jar)] * 16, threads=8)
    assert all(r.status == 200 and r.json()["user"] is None for r in replays), replays
    with SessionStorage(gunicorn.store_name) as shm:
        assert shm.get(sid) is None
