"""The Starlette app of the starsessions tests: in-process through ``TestClient``, and served
by ``uvicorn --workers 4 --factory tests.adapter.starlette_app:create_app``, configured from the
environment (``tests._stores.server_env``: a store the test made, in shared memory or in
Redis)."""

from __future__ import annotations

import os
from typing import Any, Dict

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starsessions import SessionAutoloadMiddleware, SessionMiddleware

from shmsession.contrib.starsessions import ShmStore
from tests._stores import store_from_env

def _answer(request: Request, **extra: Any) -> JSONResponse:
    body: Dict[str, Any] = {"pid": os.getpid(), "user": request.session.get("user"),
                            "n": request.session.get("n")}
    body.update(extra)
    return JSONResponse(body)


async def login(request: Request) -> JSONResponse:
    request.session.clear()
    request.session.update(user=request.query_params["user"], n=0)
    return _answer(request)


async def whoami(request: Request) -> JSONResponse:
    return _answer(request)


async def incr(request: Request) -> JSONResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return _answer(request)


async def put(request: Request) -> JSONResponse:
    """Replace the session's blob by ``size`` copies of ``tag``: one whole version."""
    tag = request.query_params["tag"]
    request.session.update(tag=tag, blob=tag * int(request.query_params["size"]))
    return _answer(request)


async def blob(request: Request) -> JSONResponse:
    """Whether the session's blob is one whole version (``tag`` repeated, nothing mixed)."""
    tag, data = request.session.get("tag"), request.session.get("blob")
    whole = tag is not None and data is not None and data == tag * len(data)
    return _answer(request, tag=tag, size=len(data or ""), whole=whole)


async def logout(request: Request) -> JSONResponse:
    request.session.clear()
    return _answer(request)


async def devices(request: Request) -> JSONResponse:
    """How many sessions the session's user has (the store's ``owner_key`` is ``"user"``)."""
    store: ShmStore = request.app.state.store
    return _answer(request, devices=len(await store.sessions_of(request.session["user"])))


async def logout_everywhere(request: Request) -> JSONResponse:
    """Log the session's user out of all their sessions; ``?keep=1``: but this one."""
    store: ShmStore = request.app.state.store
    keep = request if request.query_params.get("keep") else None
    deleted = await store.logout_everywhere(request.session["user"], keep=keep)
    if keep is None:
        request.session.clear()  # else the response would save it under a fresh id
    return _answer(request, deleted=deleted)


ROUTES = [
    Route("/login", login, methods=["POST"]),
    Route("/whoami", whoami),
    Route("/incr", incr, methods=["POST"]),
    Route("/put", put, methods=["POST"]),
    Route("/blob", blob),
    Route("/logout", logout, methods=["POST"]),
    Route("/devices", devices),
    Route("/logout-everywhere", logout_everywhere, methods=["POST"]),
]


def middleware(store: ShmStore, lifetime: int = 0) -> list[Middleware]:
    """starsessions' two middlewares on ``store`` (plain http in tests: no ``Secure`` flag)."""
    return [
        Middleware(SessionMiddleware, store=store, lifetime=lifetime, cookie_https_only=False),
        Middleware(SessionAutoloadMiddleware),
    ]


def make_app(store: ShmStore, lifetime: int = 0) -> Starlette:
    app = Starlette(routes=ROUTES, middleware=middleware(store, lifetime))
    app.state.store = store
    return app


def create_app() -> Starlette:
    """uvicorn's factory: the store the test made (attached to, never created, in shared
    memory; in Redis, the async store, whose connections belong to the worker's loop)."""
    name, redis_url, secret = store_from_env()
    if redis_url is None:
        return make_app(ShmStore(name, create=False, owner_key="user"), lifetime=600)
    from shmsession.redis import AsyncRedisSessionStorage

    return make_app(ShmStore(store=AsyncRedisSessionStorage(name, redis_url, secret=secret),
                             owner_key="user"), lifetime=600)
