"""The aiohttp app of the aiohttp-session tests: in-process through aiohttp's test server, and
served by ``gunicorn -k aiohttp.GunicornWebWorker -w 4 tests.adapter.aiohttp_app:create_app``,
configured from the environment (``tests._stores.server_env``: a store the test made, in
shared memory or in Redis)."""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web
from aiohttp_session import get_session, new_session, setup

from shmsession import AsyncStore
from shmsession.aio import AsyncSessionStorage
from shmsession.contrib.aiohttp import ShmStorage
from tests._stores import store_from_env

routes = web.RouteTableDef()
STORAGE = web.AppKey("storage", ShmStorage)


def _answer(session: Any, **extra: Any) -> web.Response:
    return web.json_response({"pid": os.getpid(), "user": session.get("user"),
                              "n": session.get("n"), **extra})


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    session = await new_session(request)  # a fresh id on login, as aiohttp-session advises
    session.update(user=request.query["user"], n=0)
    return _answer(session)


@routes.get("/whoami")
async def whoami(request: web.Request) -> web.Response:
    return _answer(await get_session(request))


@routes.post("/incr")
async def incr(request: web.Request) -> web.Response:
    session = await get_session(request)
    session["n"] = session.get("n", 0) + 1
    return _answer(session)


@routes.post("/put")
async def put(request: web.Request) -> web.Response:
    """Replace the session's blob by ``size`` copies of ``tag``: one whole version."""
    session = await get_session(request)
    tag = request.query["tag"]
    session.update(tag=tag, blob=tag * int(request.query["size"]))
    return _answer(session)


@routes.get("/blob")
async def blob(request: web.Request) -> web.Response:
    """Whether the session's blob is one whole version (``tag`` repeated, nothing mixed)."""
    session = await get_session(request)
    tag, data = session.get("tag"), session.get("blob")
    whole = tag is not None and data is not None and data == tag * len(data)
    return _answer(session, tag=tag, size=len(data or ""), whole=whole)


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    session = await get_session(request)
    session.invalidate()
    return _answer(session)


@routes.get("/devices")
async def devices(request: web.Request) -> web.Response:
    """How many sessions the session's user has (the storage's ``owner_key`` is ``"user"``)."""
    session = await get_session(request)
    return _answer(session, devices=len(await request.app[STORAGE].sessions_of(session["user"])))


@routes.post("/logout-everywhere")
async def logout_everywhere(request: web.Request) -> web.Response:
    """Log the session's user out of all their sessions; ``?keep=1``: but this one."""
    session = await get_session(request)
    keep = request if request.query.get("keep") else None
    deleted = await request.app[STORAGE].logout_everywhere(session["user"], keep=keep)
    if keep is None:
        session.invalidate()  # its record is gone already; this deletes the cookie
    return _answer(session, deleted=deleted)


def make_app(storage: ShmStorage) -> web.Application:
    app = web.Application()
    app[STORAGE] = storage
    setup(app, storage)
    app.add_routes(routes)
    return app


async def create_app() -> web.Application:
    """GunicornWebWorker's factory, awaited in each worker: the store the test made
    (attached to, never created, without blocking the worker's event loop, in shared memory;
    in Redis, the async store)."""
    name, redis_url, secret = store_from_env()
    store: AsyncStore
    if redis_url is None:
        store = await AsyncSessionStorage.open(name, create=False)
    else:
        from shmsession.redis import AsyncRedisSessionStorage

        store = AsyncRedisSessionStorage(name, redis_url, secret=secret)
    return make_app(ShmStorage(store=store, max_age=600, owner_key="user"))
