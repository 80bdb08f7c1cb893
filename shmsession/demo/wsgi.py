"""The demo's WSGI application; each gunicorn worker runs it.

Standard library only. Each worker opens the store once, on its first request, from the
name in the environment variable :data:`ENV_NAME`. Routes:

``POST /login?user=NAME``
    new session ``{"user": NAME, "visits": 0, "cart": []}``; sets cookie ``sid``.
``GET /`` or ``GET /visit``
    adds one to ``visits`` (compare-and-set) and returns the session.
``POST /cart?item=X``
    appends ``X`` to ``cart`` (compare-and-set) and returns the session.
``POST /logout``
    invalidates the session and clears the cookie.

Every answer is JSON and carries ``"pid"``, the worker's process id. A request without a
cookie, or with the cookie of a session that is gone, gets ``401 {"anonymous": true, ...}``.
"""

from __future__ import annotations

import json
import os
import random
import time
import traceback
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Sequence, Tuple
from typing import TypedDict
from urllib.parse import parse_qs

from .. import SessionNotFound, SessionStorage, VersionConflict

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


class Session(TypedDict):
    """What the demo keeps in a session (stored as JSON bytes)."""

    user: str
    visits: int
    cart: List[str]


#: The environment variable that tells the workers the store's name.
ENV_NAME = "SHMSESSION_DEMO_NAME"
STORE_SIZE = 4 * 2**20
SESSION_TTL = 600
COOKIE_NAME = "sid"
#: A compare-and-set update gives up (503) after this many conflicts in a row. Each conflict
#: means another worker's write went through, so the workers as a whole always progress;
#: one request losing this many times in a row means something is wrong.
MAX_CAS_ATTEMPTS = 50
#: Longest accepted ``user`` or ``item`` parameter, in characters.
MAX_PARAM_LENGTH = 64

_JSON_HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]


_store: Optional[SessionStorage] = None
_store_pid: Optional[int] = None


def _worker_store() -> SessionStorage:
    """The store of this process, opened (created or attached) on first use.

    Raises ``RuntimeError`` when :data:`ENV_NAME` is not set.
    """
    global _store, _store_pid
    # Keyed by pid: a handle inherited through fork (gunicorn --preload, say) belongs to the
    # parent; this process opens its own.
    if _store is None or _store_pid != os.getpid():
        name = os.environ.get(ENV_NAME)
        if not name:
            raise RuntimeError(f"{ENV_NAME} is not set: it must name the session store")
        _store = SessionStorage(name, size=STORE_SIZE, ttl=SESSION_TTL)
        _store_pid = os.getpid()
    return _store


class _Reply:
    """An HTTP answer of the app: status line, JSON body, extra headers."""

    __slots__ = ("status", "body", "headers")

    def __init__(
        self, status: str, body: Dict[str, object], headers: Sequence[Tuple[str, str]] = ()
    ) -> None:
        self.status = status
        self.body = body
        self.headers = list(headers)


def encode(session: Session) -> bytes:
    return json.dumps(session, separators=(",", ":")).encode("utf-8")


def decode(raw: bytes) -> Session:
    """Parse a stored session; ``ValueError`` if it is not one the demo wrote."""
    data = json.loads(raw.decode("utf-8"))
    if not (
        isinstance(data, dict)
        and isinstance(data.get("user"), str)
        and isinstance(data.get("visits"), int)
        and isinstance(data.get("cart"), list)
        and all(isinstance(item, str) for item in data["cart"])
    ):
        raise ValueError(f"not a demo session: {raw[:80]!r}")
    return Session(user=data["user"], visits=data["visits"], cart=list(data["cart"]))


def _session_id(environ: WSGIEnvironment) -> Optional[str]:
    """The ``sid`` cookie of the request, or None (also for a malformed Cookie header)."""
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(environ.get("HTTP_COOKIE", ""))
    except CookieError:
        return None
    morsel = cookies.get(COOKIE_NAME)
    return morsel.value if morsel is not None and morsel.value else None


def _param(environ: WSGIEnvironment, key: str) -> Optional[str]:
    """Query parameter ``key`` if present, non-empty and at most MAX_PARAM_LENGTH long."""
    query: str = environ.get("QUERY_STRING", "")
    values = parse_qs(query).get(key)
    if not values or not values[0] or len(values[0]) > MAX_PARAM_LENGTH:
        return None
    return values[0]


def _anonymous() -> _Reply:
    return _Reply("401 Unauthorized", {"anonymous": True, "pid": os.getpid()})


def _update(
    store: SessionStorage, sid: str, change: Callable[[Session], None]
) -> Optional[Tuple[Session, int]]:
    """Apply ``change`` to session ``sid`` atomically with respect to every other process.

    Returns the session as written and the number of retries, or None when the session does
    not exist (or vanished meanwhile). Raises ``TimeoutError`` after MAX_CAS_ATTEMPTS
    conflicts.

    A read-modify-write, so a compare-and-set (``write(expect=version)``) and not
    ``replace``: ``replace`` writes only over a live session, but over any version of it,
    so two workers that read the same visit count both write count + 1 and one visit is
    lost (the burst of ``./run demo`` lost 2 and 4 of 56 visits in two of three runs with
    it). ``expect`` also refuses a session deleted since it was read (logout): the retry
    then finds it gone, and it is never revived.
    """
    for attempt in range(MAX_CAS_ATTEMPTS):
        try:
            raw, version = store.read_versioned(sid)
        except (SessionNotFound, ValueError):
            # ValueError: an id the store rejects (empty, too long) cannot name a session.
            return None
        session = decode(raw)
        change(session)
        try:
            store.write(sid, encode(session), expect=version)
        except VersionConflict:
            # Another worker wrote between our read and write: redo the change on top of its
            # value. A short random pause keeps racing workers from colliding in lockstep.
            time.sleep(random.uniform(0.0, 0.0005 * (attempt + 1)))
            continue
        return session, attempt
    raise TimeoutError(f"gave up after {MAX_CAS_ATTEMPTS} conflicting writes to one session")


def _missing(what: str) -> _Reply:
    """400 for a missing or too long parameter; ``what`` shows it, e.g. ``?user=NAME``."""
    return _Reply(
        "400 Bad Request",
        {"error": f"give {what}, 1 to {MAX_PARAM_LENGTH} characters", "pid": os.getpid()},
    )


def _login(store: SessionStorage, environ: WSGIEnvironment) -> _Reply:
    user = _param(environ, "user")
    if user is None:
        return _missing("?user=NAME")
    sid = store.new_id()
    session = Session(user=user, visits=0, cart=[])
    store.write(sid, encode(session))
    cookie = f"{COOKIE_NAME}={sid}; HttpOnly; Path=/; SameSite=Lax"
    return _Reply(
        "200 OK", {"pid": os.getpid(), "session": dict(session)}, [("Set-Cookie", cookie)]
    )


def _changed(
    store: SessionStorage, environ: WSGIEnvironment, change: Callable[[Session], None]
) -> _Reply:
    """Apply ``change`` to the request's session; 401 when there is none."""
    sid = _session_id(environ)
    result = None if sid is None else _update(store, sid, change)
    if result is None:
        return _anonymous()
    session, retries = result
    return _Reply("200 OK", {"pid": os.getpid(), "session": dict(session), "retries": retries})


def _visit(store: SessionStorage, environ: WSGIEnvironment) -> _Reply:
    def count_visit(session: Session) -> None:
        session["visits"] += 1

    return _changed(store, environ, count_visit)


def _add_to_cart(store: SessionStorage, environ: WSGIEnvironment) -> _Reply:
    item = _param(environ, "item")
    if item is None:
        return _missing("?item=X")

    def add_item(session: Session) -> None:
        session["cart"].append(item)

    return _changed(store, environ, add_item)


def _logout(store: SessionStorage, environ: WSGIEnvironment) -> _Reply:
    sid = _session_id(environ)
    if sid is None:
        return _anonymous()
    try:
        removed = store.invalidate(sid)
    except ValueError:  # an id the store rejects names no session
        removed = False
    expired = f"{COOKIE_NAME}=; Max-Age=0; HttpOnly; Path=/; SameSite=Lax"
    return _Reply("200 OK", {"pid": os.getpid(), "logged_out": removed}, [("Set-Cookie", expired)])


_Handler = Callable[[SessionStorage, "WSGIEnvironment"], _Reply]
_ROUTES: Dict[str, Tuple[str, _Handler]] = {
    "/": ("GET", _visit),
    "/visit": ("GET", _visit),
    "/login": ("POST", _login),
    "/cart": ("POST", _add_to_cart),
    "/logout": ("POST", _logout),
}


def _route(environ: WSGIEnvironment) -> _Reply:
    path = environ.get("PATH_INFO", "") or "/"
    route = _ROUTES.get(path)
    if route is None:
        return _Reply("404 Not Found", {"error": f"no route {path}", "pid": os.getpid()})
    method, handler = route
    if environ.get("REQUEST_METHOD", "GET") != method:
        return _Reply(
            "405 Method Not Allowed",
            {"error": f"{path} takes {method}", "pid": os.getpid()},
            [("Allow", method)],
        )
    return handler(_worker_store(), environ)


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The demo's WSGI application (see the module docstring for its routes).

    Always answers JSON. A busy store (a compare-and-set loop that gave up, a lock timeout)
    gives 503; any other error 500, with its traceback on ``wsgi.errors``.
    """
    try:
        reply = _route(environ)
    except TimeoutError as exc:
        reply = _Reply("503 Service Unavailable", {"error": str(exc), "pid": os.getpid()})
    except Exception as exc:  # the client must get an answer it can print, not a dropped socket
        traceback.print_exc(file=environ["wsgi.errors"])
        reply = _Reply(
            "500 Internal Server Error",
            {"error": f"{type(exc).__name__}: {exc}", "pid": os.getpid()},
        )
    body = json.dumps(reply.body).encode("utf-8")
    start_response(
        reply.status, _JSON_HEADERS + [("Content-Length", str(len(body)))] + reply.headers
    )
    return [body]
