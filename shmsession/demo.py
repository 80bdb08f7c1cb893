"""Watch the worker processes of a real gunicorn share one session store.

Run ``python -m shmsession.demo``. It

1. creates a store (a shared-memory segment with a unique name) and picks a free port on
   127.0.0.1;
2. starts ``gunicorn --workers 4 --worker-class sync`` serving :func:`app` (this module), and
   waits until every worker answers;
3. plays a scripted browser: it logs in, then visits and fills a cart over a new TCP connection
   per request, so that different workers answer, and prints one line per request: the pid of
   the worker that answered and the session it saw; then it sends a burst of concurrent visits,
   which makes workers race on the same session;
4. checks that more than one worker answered, that no visit was lost, that the cart is exactly
   what was added, and that after logout the old cookie is anonymous;
5. stops gunicorn and removes the segment, in every case (also on Ctrl-C or SIGTERM).

Exit status: 0 when every check passed, 1 when a check failed, 2 when the demo could not run
(gunicorn did not start, the store could not be created...), 130 after Ctrl-C (SIGINT),
143 after SIGTERM.

The WSGI app uses the standard library only. Each worker opens the store once, on its first
request, from the name in the environment variable :data:`ENV_NAME`. Routes:

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

import argparse
import http.client
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from types import FrameType
from typing import (
    TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypedDict,
)
from urllib.parse import parse_qs

from shmsession import SessionNotFound, SessionStorage, VersionConflict

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


class Session(TypedDict):
    """What the demo keeps in a session (stored as JSON bytes)."""

    user: str
    visits: int
    cart: List[str]


__all__ = ["ENV_NAME", "app", "main"]

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

_NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,100}")
_JSON_HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]


# --------------------------------------------------------------------------------------------
# The WSGI app (runs inside each gunicorn worker)
# --------------------------------------------------------------------------------------------

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


def _encode(session: Session) -> bytes:
    return json.dumps(session, separators=(",", ":")).encode("utf-8")


def _decode(raw: bytes) -> Session:
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
    """
    for attempt in range(MAX_CAS_ATTEMPTS):
        try:
            raw, version = store.read_versioned(sid)
        except (SessionNotFound, ValueError):
            # ValueError: an id the store rejects (empty, too long) cannot name a session.
            return None
        session = _decode(raw)
        change(session)
        try:
            store.write(sid, _encode(session), expect=version)
        except VersionConflict:
            # Another worker wrote between our read and write: redo the change on top of its
            # value. A short random pause keeps racing workers from colliding in lockstep.
            time.sleep(random.uniform(0.0, 0.0005 * (attempt + 1)))
            continue
        return session, attempt
    raise TimeoutError(f"gave up after {MAX_CAS_ATTEMPTS} conflicting writes to one session")


def _login(store: SessionStorage, environ: WSGIEnvironment) -> _Reply:
    user = _param(environ, "user")
    if user is None:
        return _Reply(
            "400 Bad Request",
            {"error": f"give ?user=NAME, 1 to {MAX_PARAM_LENGTH} characters", "pid": os.getpid()},
        )
    sid = store.new_id()
    session = Session(user=user, visits=0, cart=[])
    store.write(sid, _encode(session))
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
        return _Reply(
            "400 Bad Request",
            {"error": f"give ?item=X, 1 to {MAX_PARAM_LENGTH} characters", "pid": os.getpid()},
        )

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


# --------------------------------------------------------------------------------------------
# The scripted client (standard library only, its own cookie handling)
# --------------------------------------------------------------------------------------------

#: Seconds one request may take, connect to last byte.
REQUEST_TIMEOUT = 10.0
CART_ITEMS = ("apple", "bread", "cheese", "dates", "eggs", "figs", "grapes", "honey", "ice")


class DemoError(Exception):
    """The demo could not run (as opposed to: it ran and a check failed)."""


@dataclass(frozen=True)
class Answer:
    """One HTTP answer as the client saw it."""

    status: int
    body: Dict[str, Any]
    set_cookies: Tuple[str, ...]

    @property
    def pid(self) -> Optional[int]:
        pid = self.body.get("pid")
        return pid if isinstance(pid, int) else None

    @property
    def session(self) -> Dict[str, Any]:
        session = self.body.get("session")
        return session if isinstance(session, dict) else {}


def request(port: int, method: str, target: str, cookie: Optional[str] = None) -> Answer:
    """Send one request over a NEW connection (so any worker may take it) and read the answer.

    Raises ``OSError`` (incl. timeouts) when the server does not answer, ``DemoError`` when
    it answers something that is not JSON.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        headers = {"Connection": "close", "Content-Length": "0"}
        if cookie is not None:
            headers["Cookie"] = cookie
        conn.request(method, target, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        set_cookies = tuple(response.headers.get_all("Set-Cookie") or ())
    finally:
        conn.close()
    try:
        body = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise DemoError(f"{method} {target}: {response.status}, not JSON: {raw[:200]!r}") from None
    if not isinstance(body, dict):
        raise DemoError(f"{method} {target}: {response.status}, not a JSON object: {body!r}")
    return Answer(response.status, body, set_cookies)


@dataclass
class Browser:
    """A client that keeps cookies like a browser would (for one host; no expiry dates)."""

    port: int
    cookies: Dict[str, str] = field(default_factory=dict)

    def cookie_header(self) -> Optional[str]:
        if not self.cookies:
            return None
        return "; ".join(f"{key}={value}" for key, value in sorted(self.cookies.items()))

    def send(self, method: str, target: str) -> Answer:
        answer = request(self.port, method, target, self.cookie_header())
        for header in answer.set_cookies:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(header)
            except CookieError:
                raise DemoError(f"{method} {target}: bad Set-Cookie {header!r}") from None
            for key, morsel in jar.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = morsel.value
        return answer


def _say(text: str = "") -> None:
    print(text, flush=True)  # flush: the user watches it live, even through a pipe


_ROW = "{:>3}  {:<24}  {:>6}  {:>10}  {:>6}  {}"
CART_WIDTH = 40


def _cart_text(cart: object, width: int = CART_WIDTH) -> str:
    """The cart as ``3 [apple, bread, cheese]``; the oldest items give way to ``...`` when
    it would be wider than ``width`` characters."""
    if not isinstance(cart, list) or not cart:
        return "0 []"
    items = [str(item) for item in cart]
    for shown in range(len(items), 1, -1):
        listed = ", ".join((["..."] if shown < len(items) else []) + items[-shown:])
        if len(f"{len(items)} [{listed}]") <= width:
            return f"{len(items)} [{listed}]"
    return f"{len(items)} [{'..., ' if len(items) > 1 else ''}{items[-1]}]"




def _row(number: object, target: str, answer: Optional[Answer]) -> str:
    if answer is None:
        return _ROW.format(number, target, "-", "-", "-", "-")
    session = answer.session
    visits = session.get("visits", "-")
    cart = _cart_text(session.get("cart")) if session else "-"
    if answer.body.get("anonymous") is True:
        visits, cart = "-", "(anonymous)"
    return _ROW.format(number, target, answer.status, answer.pid or "-", visits, cart)


@dataclass
class Checks:
    """The demo's verdicts, printed as they are made."""

    failed: List[str] = field(default_factory=list)

    def check(self, ok: bool, text: str) -> bool:
        _say(f"  [{'ok' if ok else 'FAIL'}] {text}")
        if not ok:
            self.failed.append(text)
        return ok


def _burst(port: int, cookie: str, clients: int, visits_each: int) -> List[Optional[Answer]]:
    """``clients`` threads each send ``visits_each`` visits at once; None marks a dead request."""
    results: List[List[Optional[Answer]]] = [[] for _ in range(clients)]
    start = threading.Event()

    def client(out: List[Optional[Answer]]) -> None:
        start.wait(REQUEST_TIMEOUT)
        for _ in range(visits_each):
            try:
                out.append(request(port, "GET", "/visit", cookie))
            except (OSError, DemoError):
                out.append(None)

    threads = [threading.Thread(target=client, args=(out,), daemon=True) for out in results]
    for thread in threads:
        thread.start()
    start.set()  # release them together, so that their visits overlap
    deadline = time.monotonic() + REQUEST_TIMEOUT * (visits_each + 1)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    answers = [answer for out in results for answer in out]
    # A thread still running past the deadline counts its missing visits as dead requests.
    return answers + [None] * (clients * visits_each - len(answers))


def run_script(
    port: int, store: SessionStorage, requests: int, clients: int, visits_each: int
) -> List[str]:
    """Play the scripted browser against the server on ``port``; returns the failed checks.

    ``store`` is the demo's own handle on the segment, used to look at the session from a
    process that is not a worker.
    """
    checks = Checks()
    browser = Browser(port)
    pids: List[int] = []

    def note(answer: Answer) -> Answer:
        if answer.pid is not None:
            pids.append(answer.pid)
        return answer

    _say("Every request below goes over a new TCP connection; any of the workers may take it.")
    _say()
    header = _ROW.format("#", "request", "status", "worker pid", "visits", "cart")
    rule = "-" * (len(header) - len("cart") + CART_WIDTH)
    _say(header)
    _say(rule)

    login = note(browser.send("POST", "/login?user=alice"))
    _say(_row(1, "POST /login?user=alice", login))
    if login.status != 200 or COOKIE_NAME not in browser.cookies:
        _say()
        checks.check(False, f"logging in gave {login.status} {login.body}, and no cookie")
        return checks.failed
    sid = browser.cookies[COOKIE_NAME]
    old_cookie = browser.cookie_header() or ""

    visits_sent = 0
    expected_cart: List[str] = []
    unexpected: List[str] = []  # requests whose answer was not the one a shared session gives
    for number in range(2, requests + 2):
        if number % 4 == 0:
            item = CART_ITEMS[len(expected_cart) % len(CART_ITEMS)]
            expected_cart.append(item)
            target, method = f"/cart?item={item}", "POST"
        else:
            visits_sent += 1
            target, method = "/visit", "GET"
        answer = note(browser.send(method, target))
        _say(_row(number, f"{method} {target}", answer))
        # Requests go one at a time, so each answer must show exactly the state so far.
        if (
            answer.status != 200
            or answer.session.get("visits") != visits_sent
            or answer.session.get("cart") != expected_cart
        ):
            unexpected.append(f"#{number} {method} {target} -> {answer.status} {answer.body}")
    _say()
    checks.check(
        not unexpected,
        f"each of the {requests} answers showed every earlier visit and cart item"
        + "".join(f"\n         {line}" for line in unexpected[:5]),
    )

    _say()
    _say(
        f"Concurrent burst: {clients} clients send {visits_each} visits each at the same time, "
        "so workers race to update the same session."
    )
    burst = _burst(port, browser.cookie_header() or "", clients, visits_each)
    for reply in burst:
        if reply is not None:
            note(reply)
    ok_burst = [reply for reply in burst if reply is not None and reply.status == 200]
    retries = sum(int(reply.body.get("retries", 0)) for reply in ok_burst)
    burst_pids = {reply.pid for reply in ok_burst}
    _say(
        f"  {len(ok_burst)} of {len(burst)} answered 200, by {len(burst_pids)} worker(s); "
        f"{retries} compare-and-set retr{'y' if retries == 1 else 'ies'} resolved conflicts"
    )
    visits_sent += len(burst)
    checks.check(len(ok_burst) == len(burst), f"all {len(burst)} concurrent visits answered 200")

    # The demo process itself is not a worker: it reads the session straight from the segment.
    try:
        stored = _decode(store.read(sid))
    except (SessionNotFound, ValueError) as exc:
        raise DemoError(f"the session is not in the store after the requests: {exc!r}") from None
    distinct = sorted(set(pids))
    _say()
    _say("Summary (session read by the demo process straight from shared memory):")
    _say(f"  session id (cookie)  : {sid[:12]}... ({len(sid)} characters)")
    _say(
        f"  session              : user={stored['user']} visits={stored['visits']} "
        f"cart={stored['cart']}"
    )
    _say(f"  distinct worker pids : {len(distinct)}  ({', '.join(map(str, distinct))})")
    _say(f"  final visits         : {stored['visits']} == {visits_sent} visit requests")
    checks.check(len(distinct) >= 2, f"{len(distinct)} distinct workers answered (need at least 2)")
    checks.check(
        stored["visits"] == visits_sent,
        f"no visit lost: {stored['visits']} counted for {visits_sent} sent",
    )
    checks.check(
        stored["cart"] == expected_cart,
        f"cart is exactly the {len(expected_cart)} items added, in order",
    )

    _say()
    _say(header)
    _say(rule)
    number = requests + 2
    logout = note(browser.send("POST", "/logout"))
    _say(_row(number, "POST /logout", logout))
    replay = request(port, "GET", "/visit", old_cookie)  # the cookie the browser just dropped
    _say(_row(number + 1, "GET /visit (old cookie)", replay))
    _say()
    checks.check(
        logout.status == 200 and logout.body.get("logged_out") is True and not browser.cookies,
        "logout invalidated the session and cleared the cookie",
    )
    checks.check(
        replay.status == 401 and replay.body.get("anonymous") is True,
        f"replaying the old cookie is anonymous ({replay.status})",
    )
    checks.check(store.get(sid) is None, "the session is gone from shared memory")
    return checks.failed


# --------------------------------------------------------------------------------------------
# Running gunicorn
# --------------------------------------------------------------------------------------------

#: Seconds gunicorn may take to answer, and then for all workers to answer.
STARTUP_TIMEOUT = 20.0
#: Most anonymous requests sent while waiting for all workers to answer.
MAX_PROBES = 1000
#: Seconds gunicorn may take to stop after SIGTERM before it is killed.
SHUTDOWN_TIMEOUT = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_gunicorn(name: str, port: int, workers: int) -> "subprocess.Popen[bytes]":
    """Start gunicorn serving :func:`app` on ``port`` with store ``name``; does not wait.

    gunicorn gets a session of its own: Ctrl-C in the terminal reaches only the demo, which
    then stops gunicorn in order, and the whole process group can be killed as a last resort.
    """
    env = dict(os.environ)
    env[ENV_NAME] = name
    # The workers must import this very package, even when it is not installed.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "gunicorn",
        "--workers", str(workers),
        "--worker-class", "sync",
        "--bind", f"127.0.0.1:{port}",
        "--log-level", "warning",
        "shmsession.demo:app",
    ]  # fmt: skip
    # stdout=2: gunicorn writes nothing the user needs on stdout; its warnings and errors
    # already go to stderr, and stdout stays the demo's report alone.
    return subprocess.Popen(
        command, env=env, stdin=subprocess.DEVNULL, stdout=2, start_new_session=True
    )


def wait_for_workers(server: "subprocess.Popen[bytes]", port: int, workers: int) -> List[int]:
    """Wait until gunicorn answers, then until ``workers`` distinct workers have answered.

    Returns the pids seen. Raises ``DemoError`` when gunicorn exits or does not answer within
    STARTUP_TIMEOUT. Seeing fewer workers than asked for by then is not an error here (the
    checks judge it): requests simply go to the workers that did start.
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT
    first: Optional[Answer] = None
    for _ in range(int(STARTUP_TIMEOUT / 0.1)):
        if server.poll() is not None:
            raise DemoError(f"gunicorn exited with status {server.returncode} before answering")
        try:
            first = request(port, "GET", "/")
            break
        except OSError:  # not listening yet
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    if first is None:
        if server.poll() is not None:
            raise DemoError(
                f"gunicorn exited with status {server.returncode} before answering "
                "(its messages are above)"
            )
        raise DemoError(f"gunicorn did not answer on port {port} within {STARTUP_TIMEOUT} s")
    # gunicorn answers as soon as its first worker is up; the others may still be importing
    # the app. Anonymous probes show which workers are taking connections.
    seen = {first.pid} - {None}
    deadline = time.monotonic() + STARTUP_TIMEOUT
    for _ in range(MAX_PROBES):
        if len(seen) >= workers or time.monotonic() > deadline or server.poll() is not None:
            break
        before = len(seen)
        seen.add(request(port, "GET", "/").pid)
        seen.discard(None)
        if len(seen) == before:
            time.sleep(0.02)
    return sorted(pid for pid in seen if pid is not None)


def stop_gunicorn(server: "subprocess.Popen[bytes]") -> None:
    """Stop gunicorn and every process it started; returns once they are gone.

    SIGTERM first (gunicorn's graceful shutdown: the master stops its workers, then exits);
    SIGKILL to the whole process group as the last resort. Raises
    ``subprocess.TimeoutExpired`` only if even SIGKILL does not end the master.
    """
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"gunicorn did not stop within {SHUTDOWN_TIMEOUT} s; killing it", file=sys.stderr)
    # Checked also when the master did exit: had it died abruptly, its workers would linger
    # in its process group (start_new_session made the group's id the master's pid).
    if server.poll() is None or not _group_gone(server.pid, within=2.0):
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.wait(SHUTDOWN_TIMEOUT)
        _group_gone(server.pid, within=2.0)


def _group_gone(pgid: int, within: float) -> bool:
    """Whether process group ``pgid`` is empty, waiting up to ``within`` seconds for it."""
    deadline = time.monotonic() + within
    for _ in range(int(within / 0.05) + 1):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return False


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so the same clean-up runs."""


def _terminate(signum: int, frame: Optional[FrameType]) -> None:
    raise _Terminated


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; returns the exit status (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m shmsession.demo",
        description="Watch gunicorn workers share one shmsession store.",
    )
    parser.add_argument(
        "--name",
        help="segment name (default: demo-<pid>-<random hex>); must not be in use",
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    parser.add_argument(
        "--requests", type=int, default=32, help="scripted requests after login (default 32)"
    )
    parser.add_argument(
        "--clients", type=int, default=4, help="concurrent clients in the burst (default 4)"
    )
    parser.add_argument(
        "--burst-visits", type=int, default=8, help="visits per burst client (default 8)"
    )
    args = parser.parse_args(argv)
    name: str = args.name or f"demo-{os.getpid()}-{secrets.token_hex(4)}"
    if not _NAME_PATTERN.fullmatch(name):
        parser.error("--name must be 1 to 100 characters from A-Z a-z 0-9 . _ -")
    for option in ("workers", "requests", "clients", "burst_visits"):
        if not 1 <= getattr(args, option) <= 1000:
            parser.error(f"--{option.replace('_', '-')} must be between 1 and 1000")

    signal.signal(signal.SIGTERM, _terminate)
    store: Optional[SessionStorage] = None
    server: Optional["subprocess.Popen[bytes]"] = None
    status = 2
    try:
        # The demo creates the segment before any worker starts, so the workers only attach
        # to it, and it owns the segment's removal.
        store = SessionStorage(name, size=STORE_SIZE, ttl=SESSION_TTL)
        port = free_port()
        _say(f"shmsession demo: store {name!r} ({STORE_SIZE // 2**20} MiB of shared memory)")
        server = start_gunicorn(name, port, args.workers)
        _say(
            f"started gunicorn (master pid {server.pid}) on http://127.0.0.1:{port} "
            f"with {args.workers} sync workers"
        )
        ready = wait_for_workers(server, port, args.workers)
        _say(f"workers answering: {len(ready)} ({', '.join(map(str, ready))})")
        _say()
        failed = run_script(port, store, args.requests, args.clients, args.burst_visits)
        _say()
        if failed:
            _say(f"DEMO FAILED: {len(failed)} check(s) failed:")
            for text in failed:
                _say(f"  - {text}")
            status = 1
        else:
            _say("All checks passed: every worker saw the same session.")
            status = 0
    except KeyboardInterrupt as exc:
        # Leading newline: the signal may have cut a table row short.
        _say(f"\n{'terminated' if isinstance(exc, _Terminated) else 'interrupted'}; cleaning up")
        status = 128 + (signal.SIGTERM if isinstance(exc, _Terminated) else signal.SIGINT)
    except (DemoError, OSError) as exc:
        print(f"DEMO COULD NOT RUN: {exc}", file=sys.stderr, flush=True)
        status = 2
    finally:
        # A second Ctrl-C must not cut the clean-up short; every wait in it is bounded.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        status = _clean_up(name, store, server, status)
    return status


def _clean_up(
    name: str,
    store: Optional[SessionStorage],
    server: Optional["subprocess.Popen[bytes]"],
    status: int,
) -> int:
    """Stop gunicorn, then remove the segment; returns ``status``, or 2 if clean-up failed."""
    if server is not None:
        try:
            stop_gunicorn(server)
            _say(f"stopped gunicorn (exit status {server.returncode})")
        except Exception as exc:  # keep going: the segment must be removed all the same
            print(f"could not stop gunicorn (pid {server.pid}): {exc!r}", file=sys.stderr)
            status = status or 2
    if store is not None:
        # After the workers are gone, so none of them re-creates the segment.
        try:
            store.unlink()
            _say(f"removed segment {name!r}")
        except Exception as exc:
            print(f"could not remove segment {name!r}: {exc!r}", file=sys.stderr)
            status = status or 2
        finally:
            try:
                store.close()
            except Exception:  # closing after unlink may be refused; nothing is left to free
                pass
    return status


if __name__ == "__main__":
    sys.exit(main())
