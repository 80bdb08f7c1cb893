"""The Flask app of the Redis gunicorn test in tests/test_adapters_on_redis.py: sessions in a
:class:`~shmsession.redis.RedisSessionStorage`, configured from the environment.

``SHMSESSION_TEST_REDIS``: the Redis server's unix socket; ``SHMSESSION_TEST_STORE``: the
store's name (its keys' prefix); ``SHMSESSION_TEST_SECRET``: the app's secret key and the
store's secret. Every answer is JSON with ``pid``, the worker that answered.
"""

from __future__ import annotations

import os
import time
from flask import Flask, Response, jsonify, request, session

from shmsession.contrib.flask import ShmSessionInterface
from shmsession.redis import RedisSessionStorage

_SECRET = os.environ["SHMSESSION_TEST_SECRET"]
store = RedisSessionStorage(
    os.environ["SHMSESSION_TEST_STORE"],
    f"unix://{os.environ['SHMSESSION_TEST_REDIS']}",
    secret=_SECRET,
    ttl=600,
)
app = Flask(__name__)
app.secret_key = _SECRET
app.session_interface = ShmSessionInterface(store=store)


def _seconds(arg: str) -> float:
    """A pause asked for in the query string, bounded to one second."""
    return min(max(float(request.args.get(arg, 0)), 0.0), 1.0)


def _answer() -> Response:
    return jsonify(pid=os.getpid(), user=session.get("user"), n=session.get("n"))


@app.post("/login")
def login() -> Response:
    session.clear()  # a fresh id for the logged-in session
    session["user"] = request.args["user"]
    session["n"] = 0
    return _answer()


@app.get("/me")
def me() -> Response:
    time.sleep(_seconds("sleep"))  # keeps this worker busy, so others take the next requests
    return _answer()


@app.post("/inc")
def inc() -> Response:
    if "user" not in session:
        return _answer()
    session["n"] += 1
    response = _answer()
    # Busy a moment after the client has its answer: the next request goes to another worker.
    linger = _seconds("linger")
    response.call_on_close(lambda: time.sleep(linger))
    return response


@app.post("/logout")
def logout() -> Response:
    session.clear()
    return _answer()
