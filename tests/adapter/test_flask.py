"""ShmSessionInterface: Flask's session contract through Flask's test client, on a store in
shared memory and on one in Redis (the ``backend`` fixture), then a real gunicorn with 4 sync
workers sharing the sessions, once on each backend."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import pytest
from flask import Flask, request, session
from flask.sessions import SecureCookieSessionInterface, SessionInterface
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner
from werkzeug.test import TestResponse

from shmsession import SessionStorage, Store, ValueTooLarge
from shmsession.contrib.flask import ShmSession, ShmSessionInterface
from tests._servers import SPREAD_ROUNDS, Server, call, free_port, in_threads, python, serve
from tests._stores import REDIS_SECRET

REPO_ROOT = Path(__file__).resolve().parents[2]
SIZE = 4 << 20
SECRET = "test secret key"
COOKIE = "session"


# --------------------------------------------------------------------------- the test app
def make_app(store: Store, owner_key: Optional[str] = None, **config: Any) -> Flask:
    """An app on ``store``; two of them on one store stand for two workers."""
    app = Flask(__name__)
    app.testing = True
    app.secret_key = SECRET
    app.config.update(config)
    app.session_interface = ShmSessionInterface(store=store, owner_key=owner_key)
    hold: Dict[str, threading.Event] = app.config.setdefault("HOLD", {})

    @app.post("/login/<user>")
    def login(user: str) -> Dict[str, Any]:
        session.clear()
        session["user"] = user
        session["n"] = 0
        return {"user": user}

    @app.post("/set/<key>/<value>")
    def set_(key: str, value: str) -> Dict[str, Any]:
        session[key] = value
        return {}

    @app.post("/inc")
    def inc() -> Dict[str, Any]:
        session["n"] = session.get("n", 0) + 1
        return {"n": session["n"]}

    @app.get("/me")
    def me() -> Dict[str, Any]:
        return {"session": dict(session)}

    @app.get("/nothing")
    def nothing() -> str:
        return "no session here"

    @app.post("/logout")
    def logout() -> Dict[str, Any]:
        session.clear()
        return {}

    @app.post("/permanent")
    def permanent() -> Dict[str, Any]:
        session.permanent = True
        session["p"] = 1
        return {}

    @app.post("/flag-only")
    def flag_only() -> Dict[str, Any]:
        session.permanent = True
        return {}

    @app.post("/regenerate")
    def regenerate() -> Dict[str, Any]:
        iface = app.session_interface
        assert isinstance(iface, ShmSessionInterface) and isinstance(session, ShmSession)
        iface.regenerate(session)
        return {}

    @app.post("/types")
    def types() -> Dict[str, Any]:
        session["tuple"] = (1, "two")
        session["bytes"] = b"\x00\xff"
        session["when"] = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
        return {}

    @app.get("/types")
    def read_types() -> Dict[str, Any]:
        ok = (
            session["tuple"] == (1, "two")
            and session["bytes"] == b"\x00\xff"
            and session["when"] == datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
        )
        return {"ok": ok}

    @app.post("/fail")
    def fail() -> Dict[str, Any]:
        """Puts something in the session, then fails: the app's own error."""
        session["before"] = "the error"
        raise LookupError("the view's own error")

    @app.post("/big")
    def big() -> Dict[str, Any]:
        """A session larger than either store takes (2 MiB): the save fails."""
        session["big"] = "x" * (2 << 20)
        return {}

    @app.post("/login-big")
    def login_big() -> Dict[str, Any]:
        session.clear()
        session["big"] = "x" * (2 << 20)
        return {}

    @app.post("/pop/<key>")
    def pop(key: str) -> Dict[str, Any]:
        session.pop(key, None)
        return {}

    @app.post("/logout-everywhere")
    def logout_everywhere() -> Dict[str, Any]:
        """Logs ``session["user"]`` out everywhere; ``?keep=1``: but for this session."""
        iface = app.session_interface
        assert isinstance(iface, ShmSessionInterface) and isinstance(session, ShmSession)
        keep = session if request.args.get("keep") else None
        return {"revoked": iface.logout_everywhere(session["user"], keep=keep)}

    @app.post("/held/<key>/<value>")
    def held(key: str, value: str) -> Dict[str, Any]:
        """Sets ``key``, waits for the test, sets ``key2``: a request caught mid-way."""
        session[key] = value
        hold["entered"].set()
        assert hold["release"].wait(30)
        session[key + "2"] = value
        return {}

    return app


@pytest.fixture
def store(any_store: Store) -> Store:
    """The test's store, in shared memory and in Redis: every test taking it runs on both."""
    return any_store


@pytest.fixture
def shm_store(name: str) -> Iterator[SessionStorage]:
    """A store in shared memory, for the tests that read a session's ttl (``sessions()``,
    which the Redis store does not have)."""
    with SessionStorage(name, size=SIZE) as s:
        yield s


@pytest.fixture
def app(store: Store) -> Flask:
    return make_app(store)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def interface(app: Flask) -> ShmSessionInterface:
    iface = app.session_interface
    assert isinstance(iface, ShmSessionInterface)
    return iface


def signer(app: Flask) -> TimestampSigner:
    found = interface(app).get_signer(app)
    assert found is not None
    return found


def cookie_of(client: FlaskClient, name: str = COOKIE) -> Optional[str]:
    found = client.get_cookie(name)
    return None if found is None else found.value


def sid_of(app: Flask, client: FlaskClient) -> str:
    value = cookie_of(client)
    assert value is not None
    return signer(app).unsign(value).decode()


def set_cookies(response: TestResponse) -> List[str]:
    return response.headers.getlist("Set-Cookie")


def stored(store: Store, sid: str) -> Dict[str, Any]:
    data: Dict[str, Any] = json.loads(store.read(sid))
    return data


# --------------------------------------------------------------------------- the basics
def test_login_counter_and_two_apps_share_sessions(store: Store) -> None:
    app1, app2 = make_app(store), make_app(store)
    c1 = app1.test_client()
    assert c1.post("/login/alice").status_code == 200
    value = cookie_of(c1)
    assert value is not None and value.count(".") == 2  # id.timestamp.signature
    sid = sid_of(app1, c1)
    assert len(sid) == 43
    assert stored(store, sid) == {"user": "alice", "n": 0}  # JSON in the store, no pickle

    c2 = app2.test_client()
    c2.set_cookie(COOKIE, value)  # the same browser, answered by the other "worker"
    for i in range(1, 11):
        assert (c1, c2)[i % 2].post("/inc").get_json() == {"n": i}
    assert c2.get("/me").get_json() == {"session": {"user": "alice", "n": 10}}
    assert len(store) == 1 and sid_of(app1, c1) == sid  # one record, same id throughout


def test_unmodified_session_is_not_written(store: Store, client: FlaskClient,
                                           app: Flask) -> None:
    client.post("/login/alice")
    sid = sid_of(app, client)
    _, version = store.read_versioned(sid)
    for path in ("/me", "/nothing", "/me"):
        response = client.get(path)
        assert response.status_code == 200
        assert set_cookies(response) == []  # not permanent: no refresh either
    assert store.read_versioned(sid)[1] == version
    client.post("/inc")
    assert store.read_versioned(sid)[1] != version


def test_anonymous_requests_store_nothing(store: Store, client: FlaskClient) -> None:
    for path in ("/me", "/nothing", "/me"):
        response = client.get(path)
        assert set_cookies(response) == []
    assert client.post("/flag-only").status_code == 200  # only "_permanent": still empty
    assert client.post("/logout").status_code == 200
    assert len(store) == 0 and cookie_of(client) is None


def test_vary_cookie_when_accessed(client: FlaskClient) -> None:
    assert "Vary" not in client.get("/nothing").headers
    assert "Cookie" in client.get("/me").headers["Vary"]  # read, even of an empty session
    client.post("/login/alice")
    assert "Cookie" in client.get("/me").headers["Vary"]
    assert "Vary" not in client.get("/nothing").headers


def test_logout_deletes_the_record_and_the_cookie(store: Store, client: FlaskClient,
                                                  app: Flask) -> None:
    client.post("/login/alice")
    old = cookie_of(client)
    sid = sid_of(app, client)
    response = client.post("/logout")
    assert any(c.startswith(f"{COOKIE}=;") and "Expires=Thu, 01 Jan 1970" in c
               for c in set_cookies(response))
    assert "Cookie" in response.headers["Vary"]
    assert sid not in store and len(store) == 0
    assert cookie_of(client) is None

    assert old is not None
    other = app.test_client()
    other.set_cookie(COOKIE, old)  # replay the old cookie
    assert other.get("/me").get_json() == {"session": {}}
    assert other.post("/inc").get_json() == {"n": 1}  # an anonymous session, not alice's...
    assert sid_of(app, other) != sid  # ...under a fresh id
    assert sid not in store


# --------------------------------------------------------------------------- fixation
def test_login_gives_a_fresh_id_and_drops_the_old_record(store: Store,
                                                         client: FlaskClient, app: Flask) -> None:
    client.post("/set/cart/apples")  # anonymous session with data
    before = sid_of(app, client)
    client.post("/login/alice")  # clear() + set
    after = sid_of(app, client)
    assert after != before and before not in store
    assert stored(store, after) == {"user": "alice", "n": 0}
    client.post("/regenerate")  # keeps the data, changes the id
    regenerated = sid_of(app, client)
    assert regenerated not in (before, after) and after not in store
    assert stored(store, regenerated) == {"user": "alice", "n": 0}
    assert len(store) == 1


def test_an_unknown_id_is_never_adopted(store: Store, client: FlaskClient,
                                        app: Flask) -> None:
    """An attacker's validly signed cookie naming an id of their choice (or an expired one)
    yields a session saved under a new id."""
    planted = "attacker-chosen-id"
    client.set_cookie(COOKIE, signer(app).sign(planted).decode())
    assert client.get("/me").get_json() == {"session": {}}
    client.post("/set/user/victim")
    sid = sid_of(app, client)
    assert sid != planted and planted not in store
    assert stored(store, sid) == {"user": "victim"}


# --------------------------------------------------------------------------- the cookie
@pytest.mark.parametrize("forge", ["sid", "signature", "other key", "flask cookie", "garbage"])
def test_tampered_cookie_is_anonymous(forge: str, store: Store, client: FlaskClient,
                                      app: Flask) -> None:
    client.post("/login/alice")
    value = cookie_of(client)
    assert value is not None
    sid, timestamp, signature = value.split(".")
    if forge == "sid":
        other = store.new_id()
        store.write(other, b'{"user": "mallory"}')
        forged = f"{other}.{timestamp}.{signature}"
    elif forge == "signature":
        forged = f"{sid}.{timestamp}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    elif forge == "other key":
        forged = TimestampSigner("another key", salt="shmsession").sign(sid).decode()
    elif forge == "flask cookie":  # Flask's own signed cookie, same secret key
        serializer = SecureCookieSessionInterface().get_signing_serializer(app)
        assert serializer is not None
        forged = serializer.dumps(sid)  # type: ignore[assignment]
    else:
        forged = "\u00e9\x01not even base64"
    attacker = app.test_client()
    attacker.set_cookie(COOKIE, forged)
    response = attacker.get("/me")
    assert response.get_json() == {"session": {}}
    # The stale cookie is removed from the browser.
    assert any(c.startswith(f"{COOKIE}=;") for c in set_cookies(response))
    assert stored(store, sid_of(app, client)) == {"user": "alice", "n": 0}  # untouched


def test_secret_key_rotation(store: Store) -> None:
    old_app = make_app(store)
    old_client = old_app.test_client()
    old_client.post("/login/alice")
    value = cookie_of(old_client)
    assert value is not None
    new_app = make_app(store, SECRET_KEY_FALLBACKS=[SECRET])
    new_app.secret_key = "the new key"
    client = new_app.test_client()
    client.set_cookie(COOKIE, value)
    assert client.get("/me").get_json() == {"session": {"user": "alice", "n": 0}}
    client.post("/inc")  # re-signed with the new key
    renewed = cookie_of(client)
    assert renewed is not None and renewed != value
    only_new_key = TimestampSigner("the new key", salt="shmsession", key_derivation="hmac",
                                   digest_method=hashlib.sha256)
    assert only_new_key.unsign(renewed).decode() == sid_of(old_app, old_client)


def test_cookie_attributes_from_flask_config(store: Store) -> None:
    app = make_app(
        store,
        SESSION_COOKIE_NAME="sid",
        SESSION_COOKIE_DOMAIN="example.test",
        SESSION_COOKIE_PATH="/shop",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=False,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PARTITIONED=True,
    )
    response = app.test_client().post("/login/alice")
    (header,) = set_cookies(response)
    assert header.startswith("sid=")
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    partitioned = {"partitioned"} if hasattr(SessionInterface, "get_cookie_partitioned") else set()
    assert attributes == {"domain", "path", "secure", "samesite"} | partitioned  # Flask 3.1+
    assert "Domain=example.test" in header and "Path=/shop" in header
    assert "SameSite=Strict" in header and "HttpOnly" not in header

    default = make_app(store).test_client().post("/login/bob")
    (header,) = set_cookies(default)
    assert header.startswith(f"{COOKIE}=") and "HttpOnly" in header and "Path=/" in header
    assert "Expires" not in header  # not permanent: a browser-session cookie


def test_no_secret_key_refuses_writes(store: Store) -> None:
    app = make_app(store)
    app.secret_key = None
    client = app.test_client()
    assert client.get("/me").get_json() == {"session": {}}
    with pytest.raises(RuntimeError, match="secret"):
        client.post("/login/alice")
    assert len(store) == 0


# --------------------------------------------------------------------------- failing requests
def failing_request(client: FlaskClient, path: str, propagate: bool,
                    caplog: pytest.LogCaptureFixture) -> Tuple[BaseException, List[str]]:
    """POST ``path``, a request that fails, the way Flask fails it: with
    ``PROPAGATE_EXCEPTIONS`` the error is raised to the client; without, Flask logs it, answers
    500 and saves the session into that answer (``handle_exception``). Returns the error and
    the answer's ``Set-Cookie`` headers (none when raised). The error must be the only one
    Flask logged: a second error in the interface, on the error handler's save, would be too."""
    client.application.config["PROPAGATE_EXCEPTIONS"] = propagate
    caplog.clear()
    if propagate:
        with pytest.raises(Exception) as raised:
            client.post(path)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        return raised.value, []
    response = client.post(path)
    assert response.status_code == 500
    (logged,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged.exc_info is not None and logged.exc_info[1] is not None
    return logged.exc_info[1], set_cookies(response)


@pytest.mark.parametrize("propagate", [True, False], ids=["propagated", "500"])
@pytest.mark.parametrize("setting", ["secret_key", "SECRET_KEY_FALLBACKS"])
@pytest.mark.parametrize("key", [..., 12345], ids=["Ellipsis", "int"])
def test_an_unusable_secret_key_fails_before_the_store(
        key: Any, setting: str, propagate: bool, store: Store,
        caplog: pytest.LogCaptureFixture) -> None:
    """``app.secret_key = ...`` (the docs' placeholder, taken literally) or any key the
    signer cannot use: every request fails with an error naming the setting, before the store
    is touched, and Flask's error path does not fail a second time in the interface."""
    app = make_app(store)
    if setting == "secret_key":
        app.secret_key = key
    else:
        app.config["SECRET_KEY_FALLBACKS"] = ["an old key", key]
    for path in ("/login/alice", "/inc", "/fail"):
        error, cookies = failing_request(app.test_client(), path, propagate, caplog)
        assert isinstance(error, TypeError)
        assert f"app.{setting}" in str(error) and type(key).__name__ in str(error)
        assert cookies == []
        assert len(store) == 0


@pytest.mark.parametrize("propagate", [True, False], ids=["propagated", "500"])
def test_a_failing_view_saves_its_session_as_flask_does(
        propagate: bool, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """What a failing view put in the session is saved with Flask's 500 answer, record and
    cookie together, as Flask's own cookie session saves it; when the error propagates Flask
    saves nothing, and nothing is written. Either way no record is left without a cookie."""
    app = make_app(store)
    error, cookies = failing_request(app.test_client(), "/fail", propagate, caplog)
    assert isinstance(error, LookupError) and str(error) == "the view's own error"
    if propagate:
        assert cookies == [] and len(store) == 0
        return
    (cookie,) = cookies
    sid = signer(app).unsign(cookie.split(";")[0].split("=", 1)[1]).decode()
    assert stored(store, sid) == {"before": "the error"} and len(store) == 1

    # Flask's cookie session, on the same app and request, sets its cookie too.
    app.session_interface = SecureCookieSessionInterface()
    _, flask_cookies = failing_request(app.test_client(), "/fail", propagate, caplog)
    assert len(flask_cookies) == 1 and flask_cookies[0].startswith(f"{COOKIE}=")


@pytest.mark.parametrize("propagate", [True, False], ids=["propagated", "500"])
@pytest.mark.parametrize("path", ["/big", "/login-big"], ids=["write", "rotate"])
def test_a_failed_save_leaves_the_store_as_it_was(
        path: str, propagate: bool, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """A save the store refuses (a session too large) raises the store's error once: Flask's
    error handler saves the same session again into its 500 answer, and that save leaves it
    alone. The logged-in session is untouched (a failed login does not log out)."""
    app = make_app(store)
    client = app.test_client()
    client.post("/login/alice")
    sid = sid_of(app, client)
    error, cookies = failing_request(client, path, propagate, caplog)
    assert isinstance(error, ValueTooLarge)
    assert cookies == []
    assert len(store) == 1 and stored(store, sid) == {"user": "alice", "n": 0}
    assert client.get("/me").get_json() == {"session": {"user": "alice", "n": 0}}


@pytest.mark.parametrize("propagate", [True, False], ids=["propagated", "500"])
def test_a_cookie_that_cannot_be_set_leaves_no_record(
        propagate: bool, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """The record of a new session is written before its cookie (the id is the store's);
    when setting the cookie fails (here werkzeug's warning on a cookie over 4 KiB, made an
    error) the record goes again: no record is left that no cookie names."""
    app = make_app(store, SESSION_COOKIE_PATH="/" + "p" * 5000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        error, cookies = failing_request(app.test_client(), "/login/alice", propagate, caplog)
    assert isinstance(error, UserWarning) and "too large" in str(error)
    assert cookies == [] and len(store) == 0


# --------------------------------------------------------------------------- lifetime
def test_permanent_lifetime_is_the_store_ttl(shm_store: SessionStorage) -> None:
    app = make_app(shm_store, PERMANENT_SESSION_LIFETIME=timedelta(minutes=10))
    client = app.test_client()
    response = client.post("/permanent")
    (header,) = set_cookies(response)
    expires = re.search(r"Expires=([^;]+)", header)
    assert expires is not None
    when = datetime.strptime(expires.group(1), "%a, %d %b %Y %H:%M:%S GMT")
    left = when.replace(tzinfo=timezone.utc) - datetime.now(timezone.utc)
    assert timedelta(minutes=9) < left <= timedelta(minutes=10)
    (info,) = shm_store.sessions()
    assert info.ttl is not None and 590 < info.ttl <= 600

    # SESSION_REFRESH_EACH_REQUEST (default): a read renews the record and the cookie,
    # without rewriting the data.
    sid = sid_of(app, client)
    _, version = shm_store.read_versioned(sid)
    time.sleep(1.1)
    response = client.get("/me")
    assert len(set_cookies(response)) == 1
    (info,) = shm_store.sessions()
    assert info.ttl is not None and info.ttl > 599 - 0.5
    assert shm_store.read_versioned(sid)[1] == version

    no_refresh = make_app(shm_store, PERMANENT_SESSION_LIFETIME=timedelta(minutes=10),
                          SESSION_REFRESH_EACH_REQUEST=False).test_client()
    no_refresh.set_cookie(COOKIE, cookie_of(client) or "")
    assert set_cookies(no_refresh.get("/me")) == []


def test_non_permanent_record_also_lives_the_lifetime(shm_store: SessionStorage) -> None:
    app = make_app(shm_store, PERMANENT_SESSION_LIFETIME=timedelta(seconds=300))
    app.test_client().post("/login/alice")
    (info,) = shm_store.sessions()
    assert info.ttl is not None and 290 < info.ttl <= 300


def test_expired_session_is_anonymous(store: Store) -> None:
    app = make_app(store, PERMANENT_SESSION_LIFETIME=timedelta(seconds=1))
    client = app.test_client()
    client.post("/login/alice")
    assert client.get("/me").get_json() == {"session": {"user": "alice", "n": 0}}
    time.sleep(2.2)  # past the record's ttl and the signature's max_age
    assert client.get("/me").get_json() == {"session": {}}
    assert len(store) == 0


# --------------------------------------------------------------------------- data
def test_flask_tagged_types_round_trip(client: FlaskClient) -> None:
    client.post("/types")
    assert client.get("/types").get_json() == {"ok": True}


def test_unreadable_record_is_anonymous(store: Store, client: FlaskClient,
                                        app: Flask) -> None:
    client.post("/login/alice")
    sid = sid_of(app, client)
    for junk in (b"\xff\xfe", b"not json", b"[1, 2]"):
        store.write(sid, junk)
        assert client.get("/me").get_json() == {"session": {}}
        client.set_cookie(COOKIE, signer(app).sign(sid).decode())


def test_an_interface_made_by_name_serves_sessions(name: str) -> None:
    """(What every adapter's constructor takes: tests/adapter/test_adapter_stores.py.)"""
    iface = ShmSessionInterface(name, size=SIZE)
    try:
        app = make_app(iface.store)
        app.test_client().post("/login/alice")
        assert len(iface.store) == 1
    finally:
        iface.store.close()


# --------------------------------------------------------------------------- races
def _logged_in_and_held(app: Flask, client: FlaskClient, path: str
                        ) -> Tuple[str, str, threading.Thread, List[TestResponse]]:
    """Log ``client`` in, then start a request of its session to ``path`` (a /held/ route)
    and wait until it is caught mid-way; returns the session id, the cookie, the request's
    thread and the list its response goes to."""
    client.post("/login/alice")
    sid = sid_of(app, client)
    value = cookie_of(client)
    assert value is not None
    hold: Dict[str, threading.Event] = app.config["HOLD"]
    hold["entered"], hold["release"] = threading.Event(), threading.Event()
    client = app.test_client()
    client.set_cookie(COOKIE, value)
    out: List[TestResponse] = []
    thread = threading.Thread(target=lambda: out.append(client.post(path)))
    thread.start()
    assert hold["entered"].wait(30)
    return sid, value, thread, out


def test_logout_during_a_request_is_not_undone(store: Store, client: FlaskClient,
                                               app: Flask) -> None:
    # The held request has read the session, not saved it.
    sid, value, thread, out = _logged_in_and_held(app, client, "/held/x/1")
    client.post("/logout")
    app.config["HOLD"]["release"].set()
    thread.join(30)
    assert out and out[0].status_code == 200
    assert sid not in store and len(store) == 0  # not written back
    assert any(c.startswith(f"{COOKIE}=;") for c in set_cookies(out[0]))


def test_concurrent_writes_last_whole_version_wins(store: Store, client: FlaskClient,
                                                   app: Flask) -> None:
    sid, value, thread, out = _logged_in_and_held(app, client, "/held/k/slow")
    other = app.test_client()
    other.set_cookie(COOKIE, value)
    other.post("/set/k/fast")  # saved while the slow request holds an older version
    assert stored(store, sid)["k"] == "fast"
    app.config["HOLD"]["release"].set()
    thread.join(30)
    assert out and out[0].status_code == 200
    assert stored(store, sid) == {"user": "alice", "n": 0, "k": "slow", "k2": "slow"}


# --------------------------------------------------------------------------- owners
def logged_in(app: Flask, user: str) -> FlaskClient:
    client = app.test_client()
    assert client.post(f"/login/{user}").status_code == 200
    return client


def anonymous(client: FlaskClient) -> bool:
    return client.get("/me").json == {"session": {}}


def test_logout_everywhere_from_a_third_request(store: Store) -> None:
    app = make_app(store, owner_key="user")
    iface = interface(app)
    first, second, third = (logged_in(app, "alice") for _ in range(3))
    bob = logged_in(app, "bob")
    assert len(iface.sessions_of("alice")) == 3
    assert len(iface.sessions_of("bob")) == 1

    # "Log out my other devices": the current session stays.
    assert third.post("/logout-everywhere?keep=1").json == {"revoked": 2}
    assert anonymous(first) and anonymous(second)
    assert third.get("/me").json == {"session": {"user": "alice", "n": 0}}
    assert len(iface.sessions_of("alice")) == 1
    assert bob.get("/me").json == {"session": {"user": "bob", "n": 0}}

    # Without keep, the current session goes too, and its next save does not bring it back.
    assert third.post("/inc").json == {"n": 1}
    assert third.post("/logout-everywhere").json == {"revoked": 1}
    assert third.post("/inc").json == {"n": 1}  # an anonymous session: a fresh one
    assert iface.sessions_of("alice") == [] and len(iface.sessions_of("bob")) == 1


def test_the_owner_is_str_of_the_owner_keys_value(store: Store) -> None:
    app = make_app(store, owner_key="uid")
    iface = interface(app)

    @app.post("/uid/<int:uid>")
    def set_uid(uid: int) -> Dict[str, Any]:
        session["uid"] = uid
        return {}

    @app.post("/no-uid")
    def no_uid() -> Dict[str, Any]:
        session["uid"] = None
        return {}

    client = app.test_client()
    client.post("/set/x/1")  # no owner key: the session is nobody's
    assert iface.sessions_of("42") == [] and iface.sessions_of("None") == []
    client.post("/uid/42")  # an int: the owner is "42"
    size = len(store.read(sid_of(app, client)))
    assert [info.size for info in iface.sessions_of("42")] == [size]
    client.post("/no-uid")  # None is no owner: the session stays 42's
    assert len(iface.sessions_of("42")) == 1 and iface.sessions_of("None") == []
    assert iface.logout_everywhere(42) == 1 and anonymous(client)


def test_without_owner_key_sessions_have_no_owner(store: Store) -> None:
    app = make_app(store)
    client = logged_in(app, "alice")
    assert store.sessions_of("alice") == []
    with pytest.raises(TypeError, match="owner_key"):
        interface(app).logout_everywhere("alice")
    assert not anonymous(client)


def test_a_session_keeps_its_owner_until_it_ends(store: Store) -> None:
    """Removing the owner key without clearing the session leaves it its owner's (the store
    drops an owner only with the session), so logging the owner out everywhere still ends
    it; logout (``session.clear()``) deletes it."""
    app = make_app(store, owner_key="user")
    iface = interface(app)
    popped, cleared = logged_in(app, "alice"), logged_in(app, "alice")
    popped.post("/pop/user")
    assert popped.get("/me").json == {"session": {"n": 0}}
    cleared.post("/logout")
    assert len(iface.sessions_of("alice")) == 1
    assert iface.logout_everywhere("alice") == 1 and anonymous(popped)


# --------------------------------------------------------------------------- real gunicorn
@pytest.fixture
def gunicorn(backend: str, any_store: Store, name: str, request: pytest.FixtureRequest
             ) -> Iterator[Server]:
    """gunicorn, 4 sync workers, serving tests/adapter/flask_app.py on the test's store (made by
    ``any_store``) in ``backend``."""
    env = {"SHMSESSION_TEST_STORE": name, "SHMSESSION_TEST_SECRET": REDIS_SECRET.decode()}
    if backend == "redis":
        env["SHMSESSION_TEST_REDIS"] = request.getfixturevalue("redis_socket")
    port = free_port()
    argv = python("-m", "gunicorn", "--workers", "4", "--worker-class", "sync",
                  "--bind", f"127.0.0.1:{port}", "--timeout", "60", "--graceful-timeout", "5",
                  "tests.adapter.flask_app:app")
    yield from serve(argv, env, port, name, "/me")


@pytest.mark.timeout(110)
def test_gunicorn_workers_share_sessions(gunicorn: Server, store: Store) -> None:
    port = gunicorn.port
    reply = call(port, "POST", "/login?user=alice")
    found = reply.cookie(COOKIE)
    assert reply.status == 200 and found is not None and not found[1], reply
    jar = {COOKIE: found[0]}
    sid = _sid(found[0])
    assert len(store) == 1 and json.loads(store.read(sid)) == {"user": "alice", "n": 0}

    # Many concurrent requests, each on its own connection: every worker that answers
    # sees alice's session. Bursts until two workers have answered (a loaded machine may
    # let one worker take a whole burst).
    read_pids: Set[int] = set()
    for _ in range(SPREAD_ROUNDS):
        seen = in_threads([lambda: call(port, "GET", "/me?sleep=0.03", jar)] * 48, threads=12)
        assert all(r.status == 200 for r in seen), seen
        assert {r.json()["session"]["user"] for r in seen} == {"alice"}
        read_pids.update(r.json()["pid"] for r in seen)
        if len(read_pids) >= 2:
            break
    assert len(read_pids) >= 2, read_pids

    # Sequential read-modify-writes over workers -- at least 40, and on at least two
    # workers -- lose no update.
    inc_pids = []
    for i in range(1, 40 * SPREAD_ROUNDS + 1):
        reply = call(port, "POST", "/inc?linger=0.05", jar)
        body = reply.json()
        assert reply.status == 200 and body["session"]["n"] == i, (i, reply)
        inc_pids.append(body["pid"])
        if i >= 40 and len(set(inc_pids)) >= 2:
            break
    assert len(set(inc_pids)) >= 2, inc_pids
    assert json.loads(store.read(sid))["n"] == len(inc_pids)

    # Concurrent writes to one session, with readers in between: every read and the end
    # state are one whole version (a == b, blob == a * 100), never a mix of two.
    tags = [f"t{i}" for i in range(16)]
    writes = [lambda t=t: call(port, "POST", f"/put?tag={t}&sleep=0.02", jar) for t in tags]
    reads = [lambda: call(port, "GET", "/me", jar)] * len(tags)
    replies = in_threads([job for pair in zip(reads, writes) for job in pair], threads=12)
    assert all(r.status == 200 for r in replies), replies
    for k, r in enumerate(replies):
        view = r.json()["session"]
        assert view["user"] == "alice" and view["n"] == 40
        if k % 2 == 0 and view["a"] is None:  # a read before any put was saved
            assert view["b"] is None and view["blob"] is None
        else:
            assert view["a"] in tags and view["b"] == view["a"]
            assert view["blob"] == view["a"] * 100
    final = json.loads(store.read(sid))
    assert final["a"] in tags and final["b"] == final["a"] and final["blob"] == final["a"] * 100
    assert len(store) == 1

    # Logout, then replay the old cookie to every worker: anonymous, nothing stored.
    reply = call(port, "POST", "/logout", jar)
    assert reply.status == 200 and reply.cookie(COOKIE) == ("", True), reply
    assert len(store) == 0
    replays = in_threads([lambda: call(port, "POST", "/inc", jar)] * 16, threads=12)
    assert all(r.status == 200 and r.json()["session"] is None for r in replays), replays
    assert len(store) == 0


@pytest.mark.timeout(110)
def test_gunicorn_logout_everywhere(gunicorn: Server, store: Store) -> None:
    port = gunicorn.port

    def login() -> Dict[str, str]:
        reply = call(port, "POST", "/login?user=alice")
        found = reply.cookie(COOKIE)
        assert reply.status == 200 and found is not None and found[0], reply
        return {COOKIE: found[0]}

    first, second, third = login(), login(), login()
    bob = call(port, "POST", "/login?user=bob").cookie(COOKIE)
    assert bob is not None
    assert len(store.sessions_of("alice")) == 3 and len(store.sessions_of("bob")) == 1

    reply = call(port, "POST", "/logout-everywhere?keep=1", third)
    assert reply.status == 200 and reply.json()["revoked"] == 2, reply
    # The old cookies, on every worker that answers (until two have): anonymous; the kept
    # one and bob's are not.
    jars = [first, second, third, {COOKIE: bob[0]}]
    users = [None, None, "alice", "bob"]
    pids: Set[int] = set()
    for _ in range(SPREAD_ROUNDS):
        jobs = [lambda j=j: call(port, "GET", "/me?sleep=0.03", j) for j in jars] * 6
        seen = in_threads(jobs, threads=12)
        for k, r in enumerate(seen):
            assert r.status == 200 and r.json()["session"]["user"] == users[k % 4], (k, r)
        pids.update(r.json()["pid"] for r in seen)
        if len(pids) >= 2:
            break
    assert len(pids) >= 2, pids
    assert len(store.sessions_of("alice")) == 1

    # Without keep, the current session goes too.
    reply = call(port, "POST", "/logout-everywhere", third)
    assert reply.status == 200 and reply.json()["revoked"] == 1, reply
    replays = in_threads([lambda: call(port, "POST", "/inc", third)] * 12, threads=12)
    assert all(r.status == 200 and r.json()["session"] is None for r in replays), replays
    assert store.sessions_of("alice") == [] and len(store) == 1  # bob's


def _sid(cookie: str) -> str:
    return cookie.split(".")[0]
