"""A tiny Flask app on ShmSessionInterface, served by a real gunicorn in
tests/adapter/test_flask.py.

The environment (``tests._stores.server_env``) says where the sessions are: the store the
test made, which each worker attaches to (``create=False``) in shared memory, or opens in
Redis; its secret is also the app's secret key. Every answer is JSON with ``pid``, the worker
that answered.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict

from flask import Flask, Response, jsonify, request, session

from shmsession.contrib.flask import ShmSession, ShmSessionInterface
from tests._stores import store_from_env

_NAME, _REDIS_URL, _SECRET = store_from_env()
app = Flask(__name__)
app.secret_key = _SECRET
if _REDIS_URL is not None:
    from shmsession.redis import RedisSessionStorage

    _redis = RedisSessionStorage(_NAME, _REDIS_URL, secret=_SECRET, ttl=600)
    _iface = ShmSessionInterface(store=_redis, owner_key="user")
else:
    _iface = ShmSessionInterface(_NAME, create=False, owner_key="user")
app.session_interface = _iface


def _seconds(arg: str) -> float:
    """A pause asked for in the query string, bounded to one second."""
    return min(max(float(request.args.get(arg, 0)), 0.0), 1.0)


def _answer(**body: Any) -> Response:
    return jsonify(pid=os.getpid(), **body)


def _view() -> Dict[str, Any]:
    return {key: session.get(key) for key in ("user", "n", "a", "b", "blob")}


@app.post("/login")
def login() -> Response:
    session.clear()  # a fresh id for the logged-in session
    session["user"] = request.args["user"]
    session["n"] = 0
    return _answer(session=_view())


@app.get("/me")
def me() -> Response:
    time.sleep(_seconds("sleep"))  # keeps this worker busy, so others take the next requests
    return _answer(session=_view())


@app.post("/inc")
def inc() -> Response:
    if "user" not in session:
        return _answer(session=None)
    session["n"] += 1
    response = _answer(session=_view())
    # Stay busy a moment after the client has its answer, so the next request of a
    # sequential client is taken by another worker.
    linger = _seconds("linger")
    response.call_on_close(lambda: time.sleep(linger))
    return response


@app.post("/put")
def put() -> Response:
    """Writes three fields that must always agree; a pause between them widens the race."""
    tag = request.args["tag"]
    session["a"] = tag
    time.sleep(_seconds("sleep"))
    session["b"] = tag
    session["blob"] = tag * 100
    return _answer(session=_view())


@app.post("/logout-everywhere")
def logout_everywhere() -> Response:
    """Logs the session's user out of every session; ``?keep=1``: but this one."""
    assert isinstance(session, ShmSession)
    keep = session if request.args.get("keep") else None
    return _answer(revoked=_iface.logout_everywhere(session["user"], keep=keep))


@app.post("/logout")
def logout() -> Response:
    session.clear()
    return _answer(session=None)
