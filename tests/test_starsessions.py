"""starsessions (Starlette, FastAPI) on shmsession: the store contract, the app through
Starlette's TestClient, and a real ``uvicorn --workers 4`` sharing one session store."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from typing import Any, Dict, Iterator, List, Optional

import pytest
from fastapi import FastAPI, Request
from starlette.testclient import TestClient
from starsessions import SessionStore

from shmsession import SessionStorage
from shmsession.aio import AsyncSessionStorage
from shmsession.contrib.starsessions import ShmStore

from . import starlette_app
from ._servers import Server, call, free_port, in_threads, python, serve

COOKIE = "session"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def stored(store: SessionStorage, sid: str) -> Optional[Dict[str, Any]]:
    """The session as the store holds it (decoded), or None."""
    raw = store.get(sid)
    return None if raw is None else json.loads(raw)


@pytest.fixture
def shm(name: str) -> Iterator[SessionStorage]:
    with SessionStorage(name, size=1 << 20) as s:
        yield s


# --- the SessionStore contract -------------------------------------------------------------


def test_store_contract(shm: SessionStorage) -> None:
    store = ShmStore(store=shm)
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


def test_concurrent_writes_to_one_session_leave_one_whole_value(shm: SessionStorage) -> None:
    store = ShmStore(store=shm)
    values = [bytes([65 + i]) * 50_000 for i in range(16)]

    async def main() -> List[str]:
        sid = await store.write("new", b"{}", lifetime=60, ttl=60)
        ids = await asyncio.gather(*(store.write(sid, v, lifetime=60, ttl=60) for v in values))
        return [sid, *ids]

    sid, *ids = run(main())
    assert ids == [sid] * len(values)
    assert shm.read(sid) in values


def test_ttl_handling_mirrors_redis_store(shm: SessionStorage) -> None:
    """``lifetime=0`` (browser-session cookie) keeps the data ``gc_ttl``; a ``ttl`` of 0 or
    less (a session at its end) keeps it 1 s rather than failing; others keep ``ttl``."""
    store = ShmStore(store=shm, gc_ttl=1)

    async def main() -> Dict[str, str]:
        return {
            "session-only": await store.write("a", b"1", lifetime=0, ttl=0),
            "ending": await store.write("b", b"2", lifetime=60, ttl=-5),
            "ten minutes": await store.write("c", b"3", lifetime=600, ttl=600),
        }

    ids = run(main())
    assert all(shm.get(sid) is not None for sid in ids.values())
    time.sleep(1.6)
    assert shm.get(ids["session-only"]) is None
    assert shm.get(ids["ending"]) is None
    assert shm.get(ids["ten minutes"]) == b"3"

    default = ShmStore(store=shm)  # gc_ttl=None: the store's default ttl (1800 s)
    sid = run(default.write("d", b"4", lifetime=0, ttl=0))
    time.sleep(0.2)
    assert shm.get(sid) == b"4"


def test_store_by_name_or_object(name: str) -> None:
    by_name = ShmStore(name, size=1 << 20)
    try:
        assert isinstance(by_name.store, AsyncSessionStorage)
        sid = run(by_name.write("x", b"shared", lifetime=60, ttl=60))
        with SessionStorage(name) as sync:
            assert run(ShmStore(store=sync).read(sid, 60)) == b"shared"
            wrapped = AsyncSessionStorage(sync)
            assert ShmStore(store=wrapped).store is wrapped
            with pytest.raises(TypeError):
                ShmStore(name, store=sync)
            with pytest.raises(TypeError):
                ShmStore(store=sync, size=1 << 20)
        with pytest.raises(TypeError):
            ShmStore()
        with pytest.raises(TypeError, match="async store"):
            ShmStore(store=object())  # type: ignore[arg-type]
    finally:
        assert isinstance(by_name.store, AsyncSessionStorage)
        by_name.store.sync.close()


# --- an app through Starlette's TestClient -------------------------------------------------


def test_login_counter_logout(shm: SessionStorage) -> None:
    with TestClient(starlette_app.make_app(ShmStore(store=shm), lifetime=600)) as client:
        assert client.get("/whoami").json()["user"] is None
        assert COOKIE not in client.cookies  # an empty session sets no cookie

        assert client.post("/login?user=alice").json()["user"] == "alice"
        sid = client.cookies[COOKIE]
        assert len(sid) == 43  # the store's id, not the one starsessions proposed
        for i in range(1, 4):
            assert client.post("/incr").json() == {"pid": os.getpid(), "user": "alice", "n": i}
        record = stored(shm, sid)
        assert record is not None and record["user"] == "alice" and record["n"] == 3
        assert client.cookies[COOKIE] == sid

        reply = client.post("/logout")
        assert reply.json()["user"] is None
        assert "1970" in reply.headers["set-cookie"]  # the cookie is deleted...
        assert shm.get(sid) is None  # ... and so is the record

        old = {"cookie": f"{COOKIE}={sid}"}  # replayed by hand: the client dropped it
        client.cookies.clear()
        assert client.get("/whoami", headers=old).json()["user"] is None
        # Writing to the replayed session gives it a fresh id; the old one stays dead.
        reply = client.post("/incr", headers=old)
        assert reply.json()["n"] == 1
        assert reply.cookies[COOKIE] not in ("", sid)
        assert shm.get(sid) is None


def test_planted_session_id_is_not_adopted(shm: SessionStorage) -> None:
    planted = secrets.token_hex(16)
    with TestClient(starlette_app.make_app(ShmStore(store=shm))) as client:
        reply = client.post("/login?user=victim", headers={"cookie": f"{COOKIE}={planted}"})
        assert reply.json()["user"] == "victim"
        assert reply.cookies[COOKIE] != planted
        assert shm.get(planted) is None
        assert stored(shm, reply.cookies[COOKIE])["user"] == "victim"  # type: ignore[index]


def test_session_expires_in_the_store(shm: SessionStorage) -> None:
    """``lifetime=2``: the record expires in the store itself (the old cookie, replayed by
    hand past its max-age, is anonymous)."""
    with TestClient(starlette_app.make_app(ShmStore(store=shm), lifetime=2)) as client:
        client.post("/login?user=alice")
        sid = client.cookies[COOKIE]
        assert client.get("/whoami").json()["user"] == "alice"
        assert shm.get(sid) is not None
        time.sleep(2.2)
        assert shm.get(sid) is None
        client.cookies.clear()
        assert client.get("/whoami", headers={"cookie": f"{COOKIE}={sid}"}).json()["user"] is None


def test_fastapi(shm: SessionStorage) -> None:
    app = FastAPI()
    # add_middleware puts each new one outside the others: autoload first, sessions last.
    for mw in reversed(starlette_app.middleware(ShmStore(store=shm))):
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
        assert stored(shm, client.cookies[COOKIE])["user"] == "bob"  # type: ignore[index]


# --- uvicorn --workers 4 ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def uvicorn() -> Iterator[Server]:
    """``uvicorn --workers 4`` serving ``starlette_app`` on a store this test made."""
    name = f"t-{os.getpid()}-uvicorn-{secrets.token_hex(4)}"
    port = free_port()
    try:
        with SessionStorage(name, size=4 << 20):
            pass  # made here, attached to by every worker
        argv = python("-m", "uvicorn", "--factory", "tests.starlette_app:create_app",
                      "--host", "127.0.0.1", "--port", str(port), "--workers", "4",
                      "--log-level", "warning", "--no-access-log")
        yield from serve(argv, {starlette_app.ENV_STORE: name}, port, name, "/whoami")
    finally:
        SessionStorage.unlink_name(name)


def login(port: int, user: str) -> str:
    reply = call(port, "POST", f"/login?user={user}")
    assert reply.status == 200 and reply.json()["user"] == user, reply
    cookie = reply.cookie(COOKIE)
    assert cookie is not None and not cookie[1], reply
    return cookie[0]


def test_workers_share_one_session(uvicorn: Server) -> None:
    sid = login(uvicorn.port, "alice")
    jar = {COOKIE: sid}
    replies = in_threads([lambda: call(uvicorn.port, "GET", "/whoami", jar)] * 48, threads=12)
    assert all(r.status == 200 and r.json()["user"] == "alice" for r in replies), replies
    pids = {r.json()["pid"] for r in replies}
    assert len(pids) >= 2, pids


def test_sequential_counter_loses_no_update(uvicorn: Server) -> None:
    jar = {COOKIE: login(uvicorn.port, "carol")}
    pids = set()
    for i in range(1, 41):
        reply = call(uvicorn.port, "POST", "/incr", jar)
        body = reply.json()
        assert (reply.status, body["user"], body["n"]) == (200, "carol", i), reply
        pids.add(body["pid"])
    with SessionStorage(uvicorn.store_name) as shm:
        assert stored(shm, jar[COOKIE])["n"] == 40  # type: ignore[index]
    assert len(pids) >= 2, pids  # the increments really went through several workers


def test_concurrent_writes_end_in_one_whole_version(uvicorn: Server) -> None:
    jar = {COOKIE: login(uvicorn.port, "dave")}
    assert call(uvicorn.port, "POST", "/put?tag=z&size=30000", jar).status == 200
    tags = [chr(ord("a") + i) for i in range(16)]
    writes = [lambda t=t: call(uvicorn.port, "POST", f"/put?tag={t}&size=30000", jar)
              for t in tags]
    reads = [lambda: call(uvicorn.port, "GET", "/blob", jar)] * 16
    replies = in_threads([job for pair in zip(writes, reads) for job in pair], threads=12)
    assert all(r.status == 200 for r in replies), replies
    for r in replies[1::2]:  # every read saw one whole version
        body = r.json()
        assert body["whole"] and body["size"] == 30000 and body["user"] == "dave", body
    final = call(uvicorn.port, "GET", "/blob", jar).json()
    # starsessions saves every session a request loaded, changed or not: a read that loaded
    # "z" before the writes and saved after them is a real last write, so "z" may win too.
    assert final["whole"] and final["tag"] in tags + ["z"] and final["user"] == "dave", final
    with SessionStorage(uvicorn.store_name) as shm:
        record = stored(shm, jar[COOKIE])
    assert record is not None and record["blob"] == record["tag"] * 30000


def test_logout_then_replayed_cookie_is_anonymous(uvicorn: Server) -> None:
    sid = login(uvicorn.port, "erin")
    jar = {COOKIE: sid}
    reply = call(uvicorn.port, "POST", "/logout", jar)
    assert reply.status == 200 and reply.cookie(COOKIE) is not None
    assert reply.cookie(COOKIE)[1], reply  # type: ignore[index]  # deleted
    replays = in_threads([lambda: call(uvicorn.port, "GET", "/whoami", jar)] * 16, threads=8)
    assert all(r.status == 200 and r.json()["user"] is None for r in replays), replays
    with SessionStorage(uvicorn.store_name) as shm:
        assert shm.get(sid) is None
