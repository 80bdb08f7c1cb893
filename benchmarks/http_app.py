"""The Flask app that ``bench_http.py`` serves under gunicorn: one app, four session backends.

Configured from the environment, read once per worker at import:

``BENCH_HTTP_VARIANT``
    ``cookie`` (Flask's own signed-cookie sessions), ``shm`` (shmsession's adapter on the
    shared-memory store), ``flask-session-redis`` (Flask-Session's Redis backend) or
    ``shm-redis`` (shmsession's adapter on ``RedisSessionStorage``).
``BENCH_HTTP_SECRET``
    the app's ``secret_key`` (and the Redis store's secret).
``BENCH_HTTP_STORE``
    the shared-memory store's name, or the prefix of the Redis keys (made by the benchmark,
    which removes them).
``BENCH_HTTP_REDIS``
    the redis-server's unix socket (the two Redis variants).

``GET /`` is the measured request: it reads the session and writes it back, a counter plus
random padding of ``PAD_CHARS`` characters (about 0.6 KiB serialised, whatever the backend),
and answers the counter. ``GET /pid`` touches no session and answers the worker's pid, for
the start-up probe.
"""

from __future__ import annotations

import os
import secrets
from flask import Flask, jsonify, session
from flask.typing import ResponseReturnValue

#: Characters of padding: hex, so neither zlib (Flask's cookie) nor anything else shrinks it.
PAD_CHARS = 576

VARIANTS = ("cookie", "shm", "flask-session-redis", "shm-redis")

variant = os.environ["BENCH_HTTP_VARIANT"]
if variant not in VARIANTS:
    raise ValueError(f"BENCH_HTTP_VARIANT must be one of {VARIANTS}, not {variant!r}")
_SECRET = os.environ["BENCH_HTTP_SECRET"]

app = Flask(__name__)
app.secret_key = _SECRET


def _configure(app: Flask) -> None:
    """Install the variant's session interface (a worker's stores live as long as it does)."""
    if variant == "cookie":
        return
    name = os.environ["BENCH_HTTP_STORE"]
    if variant == "shm":
        from shmsession import SessionStorage
        from shmsession.contrib.flask import ShmSessionInterface

        store = SessionStorage(name, create=False)  # created (and unlinked) by the benchmark
        app.session_interface = ShmSessionInterface(store=store)
        return
    sock = os.environ["BENCH_HTTP_REDIS"]
    if variant == "shm-redis":
        from shmsession.contrib.flask import ShmSessionInterface
        from shmsession.redis import RedisSessionStorage

        rstore = RedisSessionStorage(name, f"unix://{sock}", secret=_SECRET)
        app.session_interface = ShmSessionInterface(store=rstore)
        return
    import redis
    from flask_session import Session

    app.config.update(
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis(unix_socket_path=sock),
        SESSION_KEY_PREFIX=name,
    )
    Session(app)


_configure(app)


@app.get("/")
def counter() -> ResponseReturnValue:
    if "pad" not in session:
        session["pad"] = secrets.token_hex(PAD_CHARS // 2)
    session["n"] = session.get("n", 0) + 1
    return str(session["n"])


@app.get("/pid")
def pid() -> ResponseReturnValue:
    return jsonify(pid=os.getpid())
