"""shmsession.contrib.django: the session engine and the ShmCache backend held to Django's own
session and cache contracts (cases ported from Django's ``SessionTestsMixin`` and
``BaseCacheTests``), Django's ``cache`` and ``cached_db`` session engines running on ShmCache,
the test Client end to end, and a real gunicorn whose 4 workers share sessions and a cache."""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from datetime import timedelta
from importlib import import_module
from pathlib import Path
from typing import (Any, Callable, Coroutine, Dict, Iterator, List, NamedTuple, Optional, Tuple,
                    Type)

import pytest

import django
from django.conf import settings

from tests._servers import SPREAD_ROUNDS, Server, call, free_port, in_threads, python, serve
from tests._stores import server_env
from tests.adapter.django_app import STORE_SIZE, cache_name, settings_for

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The database's folder: made by the _database fixture, not at import, so that collecting
#: this module (``--collect-only``, or every test deselected) leaves nothing behind.
_DB_DIR = os.path.join(tempfile.gettempdir(),
                       f"shmsession-django-test-{os.getpid()}-{uuid.uuid4().hex}")
#: The name settings.configure() gets; every test overrides it with a fresh store.
_CONFIGURED_NAME = f"t-{os.getpid()}-django-configured"

if not settings.configured:
    settings.configure(
        **dict(
            settings_for(_CONFIGURED_NAME),
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.sqlite3",
                    "NAME": os.path.join(_DB_DIR, "db.sqlite3"),
                }
            },
            # Real users for the owner tests (the gunicorn workers have no database).
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                            "django.contrib.sessions"],
        )
    )
    django.setup()

from django.contrib.sessions.backends.base import (  # noqa: E402
    CreateError,
    SessionBase,
    UpdateError,
)
from django.core.cache import caches  # noqa: E402
from django.core.cache.backends.base import (  # noqa: E402
    BaseCache, CacheKeyWarning, InvalidCacheKey)
from django.core.cache.backends.locmem import LocMemCache  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

from shmsession import SessionStorage, Store, StoreFull, ValueTooLarge  # noqa: E402
from shmsession.contrib.django import (  # noqa: E402
    SessionStore, ShmCache, close_stores, logout_everywhere, sessions_of_user)

ENGINES = {
    "shmsession": "shmsession.contrib.django",
    "cache": "django.contrib.sessions.backends.cache",
    "cached_db": "django.contrib.sessions.backends.cached_db",
}


def custom_key_func(key: str, key_prefix: str, version: int) -> str:
    return "CUSTOM-" + "-".join([key_prefix, str(version), key])


def _caches_for(handle: Callable[..., Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """The CACHES of the tests, all on one cache store; ``handle(**options)`` gives the
    ``LOCATION`` (and ``OPTIONS``) of a handle on it with those store options."""
    base = {"BACKEND": "shmsession.contrib.django.ShmCache", **handle()}
    return {
        "default": dict(base),
        "prefix": dict(base, KEY_PREFIX="cacheprefix"),
        "v2": dict(base, VERSION=2),
        "custom_key": dict(base, KEY_FUNCTION=custom_key_func),
        # Same store, another handle option: a second handle on the same store.
        "twin": dict(base, **handle(ttl=60)),
        "short": dict(base, TIMEOUT=1),
        # A handle whose store default ttl is 1 s: timeout=None must still mean forever.
        "store_ttl_1s": dict(base, TIMEOUT=None, **handle(ttl=1)),
    }


class Stores(NamedTuple):
    """Handles of the test's own on the stores its sessions and caches live in
    (``on_backend``)."""

    sessions: Store
    cache: Store
    open_cache: Callable[..., Store]  # another handle on the cache store


@pytest.fixture(scope="module", autouse=True)
def _database() -> Iterator[None]:
    """The sessions table, for the cached_db engine, and the users'; the database is removed
    afterwards."""
    os.mkdir(_DB_DIR, 0o700)
    try:
        call_command("migrate", verbosity=0, interactive=False)
        yield
    finally:
        connections.close_all()
        close_stores()
        for leftover in (_CONFIGURED_NAME, cache_name(_CONFIGURED_NAME)):
            SessionStorage.unlink_name(leftover)
        shutil.rmtree(_DB_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def stores(name: str) -> Iterator[str]:
    """Each test: sessions in a fresh store ``name``, caches in a fresh ``name-cache``, in
    shared memory and configured by name."""

    def by_name(**options: Any) -> Dict[str, Any]:
        return {"LOCATION": cache_name(name), "OPTIONS": {"size": STORE_SIZE, **options}}

    try:
        with override_settings(SHMSESSION={"name": name, "size": STORE_SIZE},
                               CACHES=_caches_for(by_name)):
            yield name
    finally:
        close_stores()
        SessionStorage.unlink_name(cache_name(name))


@pytest.fixture
def on_backend(stores: str, open_store: Callable[..., Store]) -> Iterator[Stores]:
    """Sessions and caches in stores given as objects (``SHMSESSION = {"store": ...}``,
    ``LOCATION = store``), in shared memory and in Redis: every test taking it runs on both."""

    def open_cache(**options: Any) -> Store:
        return open_store("-cache", **options)

    cache = open_cache()
    caches_conf = _caches_for(lambda **options: {"LOCATION": open_cache(**options) if options
                                                  else cache})
    try:
        with override_settings(SHMSESSION={"store": open_store()}, CACHES=caches_conf):
            # The test's own handles, not Django's: what any other process would see.
            yield Stores(open_store(), open_cache(), open_cache)
    finally:
        close_stores()


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def raw(name: str) -> SessionStorage:
    """A handle of the test's own on store ``name``: what any other process would see."""
    return SessionStorage(name, create=False)


# =============================================================================================
# Session engines: Django's SessionTestsMixin (storage cases), on all three engines
# =============================================================================================


@pytest.fixture(params=list(ENGINES))
def engine(request: pytest.FixtureRequest, on_backend: Stores) -> Type[SessionBase]:
    """Each session engine, on stores in shared memory and in Redis."""
    cls: Type[SessionBase] = import_module(ENGINES[request.param]).SessionStore
    return cls


def test_save_then_exists(engine: Type[SessionBase]) -> None:
    session = engine()
    session.save()
    assert session.exists(session.session_key) is True


def test_delete(engine: Type[SessionBase]) -> None:
    session = engine()
    session.save()
    session.delete(session.session_key)
    assert session.exists(session.session_key) is False


def test_flush(engine: Type[SessionBase]) -> None:
    session = engine()
    session["foo"] = "bar"
    session.save()
    prev_key = session.session_key
    session.flush()
    assert session.exists(prev_key) is False
    assert session.session_key is None
    assert session.modified is True and session.accessed is True
    assert engine(prev_key).load() == {}


def test_cycle(engine: Type[SessionBase]) -> None:
    session = engine()
    session["a"], session["b"] = "c", "d"
    session.save()
    prev_key = session.session_key
    prev_data = list(session.items())
    session.cycle_key()
    assert session.exists(prev_key) is False
    assert session.session_key != prev_key
    assert list(session.items()) == prev_data
    assert dict(engine(session.session_key).items()) == dict(prev_data)


def test_cycle_with_no_session_cache(engine: Type[SessionBase]) -> None:
    session = engine()
    session["a"], session["b"] = "c", "d"
    session.save()
    prev_data = list(session.items())
    session = engine(session.session_key)
    assert not hasattr(session, "_session_cache")
    session.cycle_key()
    assert sorted(session.items()) == sorted(prev_data)


def test_save_doesnt_clear_data(engine: Type[SessionBase]) -> None:
    session = engine()
    session["a"] = "b"
    session.save()
    assert session["a"] == "b"
    assert engine(session.session_key)["a"] == "b"


def test_invalid_key(engine: Type[SessionBase]) -> None:
    session = engine("1")
    try:
        session.save()
        assert session.session_key != "1"
        assert session.get("cat") is None
        session.delete()
    finally:
        session.delete("1")


def test_session_load_does_not_create_record(engine: Type[SessionBase]) -> None:
    session = engine("someunknownkey")
    assert session.load() == {}
    assert session.session_key is None
    assert session.exists(session.session_key) is False
    assert session.exists("someunknownkey") is False


def test_save_does_not_resurrect_a_session_logged_out_elsewhere(engine: Type[SessionBase]) -> None:
    s1 = engine()
    s1["test_data"] = "value1"
    s1.save(must_create=True)
    s2 = engine(s1.session_key)
    s2.delete()
    s1["test_data"] = "value2"
    with pytest.raises(UpdateError):
        s1.save()
    assert s1.load() == {}


def test_a_request_that_loaded_the_session_does_not_resurrect_it(
    engine: Type[SessionBase],
) -> None:
    # The race behind the case above: this request read the session, a logout elsewhere
    # deleted it, then this request saves. The save must fail, not write it back.
    s1 = engine()
    s1["test_data"] = "value1"
    s1.save()
    request = engine(s1.session_key)
    assert request["test_data"] == "value1"  # loaded
    engine(s1.session_key).delete()
    request["test_data"] = "value2"
    with pytest.raises(UpdateError):
        request.save()
    assert engine().exists(s1.session_key) is False


def test_actual_expiry(engine: Type[SessionBase]) -> None:
    session = engine()
    session["foo"] = "bar"
    session.set_expiry(-timedelta(seconds=10))
    session.save()
    old_key = session.session_key
    new_session = engine(old_key)
    try:
        assert "foo" not in new_session  # an expiry in the past: gone at once
    finally:
        session.delete(old_key)
        new_session.delete(new_session.session_key)


def test_load_overlong_key(engine: Type[SessionBase]) -> None:
    session = engine()
    # The cache engines' keys go through ShmCache, which warns for keys memcached refuses,
    # as Django's local-memory cache does (Django's own version of this test ignores the
    # warning for them); the shmsession engine's keys never reach a cache.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session._session_key = (string.ascii_letters + string.digits) * 20
        assert session.load() == {}
        session._session_key = "k" * 5000  # over the store's 1024 bytes: no store takes it
        assert session.load() == {}
        assert session.exists("k" * 5000) is False
    assert all(w.category is CacheKeyWarning for w in caught)
    assert bool(caught) == (not issubclass(engine, SessionStore))


def test_create_and_save(engine: Type[SessionBase]) -> None:
    session = engine()
    session.create()
    key = session.session_key
    assert key is not None and session.exists(key)
    session["x"] = 1
    session.save()
    assert engine(key)["x"] == 1


def test_save_in_two_contexts_is_last_writer_wins(engine: Type[SessionBase]) -> None:
    first = engine()
    first["who"] = "first"
    first.save()
    a, b = engine(first.session_key), engine(first.session_key)
    assert a["who"] == b["who"] == "first"  # both loaded the same version
    a["who"] = "a"
    a.save()
    b["who"] = "b"
    b.save()  # stale, but the session exists: Django sessions are last-writer-wins
    assert dict(engine(first.session_key).items()) == {"who": "b"}


# -- the async twins (Django 5.0+); cached_db left out: its database calls run in threads ----


@pytest.fixture(params=["shmsession", "cache"])
def async_engine(request: pytest.FixtureRequest, on_backend: Stores) -> Type[SessionBase]:
    cls: Type[SessionBase] = import_module(ENGINES[request.param]).SessionStore
    return cls


async def _saved(engine: Type[SessionBase], key: str, value: str) -> SessionBase:
    """A new session of ``engine`` holding ``key = value``, saved."""
    session = engine()
    await session.aset(key, value)
    await session.asave()
    return session


def test_async_save_exists_delete_flush(async_engine: Type[SessionBase]) -> None:
    async def main() -> None:
        session = await _saved(async_engine, "foo", "bar")
        key = session.session_key
        assert await session.aexists(key) is True
        assert await async_engine(key).aget("foo") == "bar"
        await session.aflush()
        assert await session.aexists(key) is False
        assert session.session_key is None
        other = async_engine()
        await other.asave()
        await other.adelete(other.session_key)
        assert await other.aexists(other.session_key) is False

    run(main())


def test_async_cycle_create_and_invalid_key(async_engine: Type[SessionBase]) -> None:
    async def main() -> None:
        session = await _saved(async_engine, "a", "c")
        prev = session.session_key
        await session.acycle_key()
        assert session.session_key != prev
        assert await session.aexists(prev) is False
        assert await async_engine(session.session_key).aget("a") == "c"

        fresh = async_engine()
        await fresh.acreate()
        assert await fresh.aexists(fresh.session_key) is True

        invalid = async_engine("1")
        await invalid.asave()
        assert invalid.session_key != "1"
        assert await invalid.aget("cat") is None

    run(main())


def test_async_load_and_no_resurrection(async_engine: Type[SessionBase]) -> None:
    async def main() -> None:
        unknown = async_engine("someunknownkey")
        assert await unknown.aload() == {}
        assert unknown.session_key is None
        assert await unknown.aexists(unknown.session_key) is False

        s1 = async_engine()
        await s1.aset("test_data", "value1")
        await s1.asave(must_create=True)
        await async_engine(s1.session_key).adelete()
        await s1.aset("test_data", "value2")
        with pytest.raises(UpdateError):
            await s1.asave()
        assert await s1.aload() == {}

        expired = async_engine()
        await expired.aset("foo", "bar")
        await expired.aset_expiry(-timedelta(seconds=10))
        await expired.asave()
        assert await async_engine(expired.session_key).ahas_key("foo") is False
        await async_engine().aclear_expired()

    run(main())


# =============================================================================================
# The shmsession engine itself
# =============================================================================================


def test_sessions_are_in_the_shared_store_in_djangos_encoding(on_backend: Stores) -> None:
    session = SessionStore()
    session["user"] = "alice"
    session["cart"] = ["x", "y"]
    session.save()
    key = session.session_key
    assert key is not None
    other = on_backend.sessions
    data = other.read(key)
    assert SessionStore().decode(data.decode()) == {"user": "alice", "cart": ["x", "y"]}
    # And what another process writes there is what the engine reads.
    other.write(key, SessionStore().encode({"user": "bob"}).encode())
    assert dict(SessionStore(key).items()) == {"user": "bob"}


def test_must_create_raises_create_error_on_an_existing_key(on_backend: Stores) -> None:
    first = SessionStore()
    first["owner"] = "first"
    first.save()
    second = SessionStore(first.session_key)
    second["owner"] = "second"
    with pytest.raises(CreateError):
        second.save(must_create=True)
    assert SessionStore(first.session_key)["owner"] == "first"


def test_corrupt_data_in_the_store_loads_as_an_empty_session(on_backend: Stores) -> None:
    session = SessionStore()
    session["a"] = 1
    session.save()
    key = session.session_key
    assert key is not None
    on_backend.sessions.write(key, b"\xff\xfe not django's encoding")
    assert SessionStore(key).load() == {}


def test_expiry_is_the_stores_from_get_expiry_age(on_backend: Stores) -> None:
    short, long = SessionStore(), SessionStore()
    short["a"] = long["a"] = 1
    short.set_expiry(1)
    long.set_expiry(3600)
    short.save()
    long.save()
    short_key, long_key = short.session_key, long.session_key
    assert short_key is not None and long_key is not None
    assert short.exists(short_key)
    time.sleep(1.3)
    assert SessionStore().exists(short_key) is False
    stale = SessionStore(short_key)
    assert stale.load() == {} and stale.session_key is None
    assert SessionStore(long_key)["a"] == 1
    with pytest.raises(UpdateError):  # saving the expired one does not bring it back
        short.save()
    SessionStore.clear_expired()  # the store expires by itself: nothing to do, nothing raised
    call_command("clearsessions")
    other = on_backend.sessions
    assert short_key not in other and long_key in other


def test_session_store_needs_no_arguments_and_reads_settings(stores: str) -> None:
    session = SessionStore()
    assert session.session_key is None and session.load() == {}
    with override_settings(SHMSESSION=None):
        with pytest.raises(ImproperlyConfigured, match="SHMSESSION"):
            SessionStore().save()
    with override_settings(SHMSESSION={"size": STORE_SIZE}):
        with pytest.raises(ImproperlyConfigured, match="name"):
            SessionStore().save()


def test_a_store_object_in_settings(name: str) -> None:
    other_name = f"{name}-obj"
    store = SessionStorage(other_name, size=STORE_SIZE)
    try:
        with override_settings(SHMSESSION={"store": store}):
            session = SessionStore()
            session["via"] = "object"
            session.save()
            assert session.session_key in store
        with override_settings(SHMSESSION={"store": store, "size": STORE_SIZE}):
            with pytest.raises(ImproperlyConfigured, match="options"):
                SessionStore().save()
    finally:
        store.unlink()


def test_concurrent_saves_from_threads_each_land_whole(stores: str) -> None:
    first = SessionStore()
    first["writer"] = -1
    first.save()
    key = first.session_key
    versions = [
        {"writer": i, f"only_{i}": "x" * (100 * i), "items": list(range(i))} for i in range(8)
    ]
    barrier = threading.Barrier(len(versions))
    errors: List[BaseException] = []

    def writer(data: Dict[str, Any]) -> None:
        try:
            session = SessionStore(key)
            session.load()
            barrier.wait(timeout=30)
            for _ in range(20):
                session.clear()
                session.update(data)
                session.save()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert dict(SessionStore(key).items()) in versions


def test_a_handle_opened_before_fork_serves_the_child(stores: str) -> None:
    # In a fresh interpreter: forking this pytest process, whose helper threads (asgiref's)
    # may still live, would be unsafe.
    code = f"""
import os, sys
sys.path.insert(0, {str(REPO_ROOT)!r})
from django.conf import settings
from tests.adapter.django_app import settings_for
settings.configure(**settings_for({stores!r}))
import django
django.setup()
from shmsession.contrib import django as shm_django
from shmsession.contrib.django import SessionStore
# Internals: the engine's own handle (_session_store), to see the child keeps it.
before = shm_django._session_store()  # the handle is opened here, in the parent
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    status = 1
    try:
        session = SessionStore()
        session["child"] = os.getpid()
        session.save()
        os.write(w, session.session_key.encode())
        status = 0 if shm_django._session_store() is before else 2
    finally:
        os._exit(status)
os.close(w)
key = os.read(r, 100).decode()
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert SessionStore(key)["child"] == pid
session = SessionStore(key)
session["parent"] = os.getpid()
session.save()
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    with raw(stores) as other:
        assert len(other) == 1


# -- with Django's test Client -----------------------------------------------------------------


def test_client_login_visit_logout_and_replay(on_backend: Stores) -> None:
    client = Client()
    assert client.get("/whoami/").status_code == 401
    assert client.post("/login/?user=alice").status_code == 200
    cookie = client.cookies["sessionid"].value
    other = on_backend.sessions
    assert cookie in other
    for n in range(1, 4):
        assert client.post("/incr/").json()["n"] == n
    assert client.get("/whoami/").json()["session"] == {"user": "alice", "n": 3}
    # A second browser with the same cookie sees the same session, and writes it in turn.
    twin = Client()
    twin.cookies["sessionid"] = cookie
    assert twin.get("/whoami/").json()["session"]["n"] == 3
    for n in range(4, 8):
        assert (client, twin)[n % 2].post("/incr/").json()["n"] == n
    assert twin.get("/whoami/").json()["session"] == {"user": "alice", "n": 7}
    assert [client.post("/cache/incr/").json()["hits"] for _ in range(3)] == [1, 2, 3]

    response = client.post("/logout/")
    assert response.status_code == 200
    assert response.cookies["sessionid"].value == ""  # the browser is told to drop it
    assert cookie not in other  # and the server side is gone
    replay = Client()
    replay.cookies["sessionid"] = cookie
    answer = replay.get("/whoami/")
    assert answer.status_code == 401 and answer.json()["anonymous"] is True
    assert replay.post("/incr/").status_code == 401
    assert cookie not in other


def test_client_login_cycles_the_key_and_bad_cookies_are_anonymous(on_backend: Stores) -> None:
    client = Client()
    client.post("/login/?user=alice")
    first = client.cookies["sessionid"].value
    client.post("/login/?user=bob")
    second = client.cookies["sessionid"].value
    assert first != second
    assert first not in on_backend.sessions and second in on_backend.sessions
    for bad in ("x" * 3000, "short", "ünïcödé-cookie-value", "someunknownkey"):
        stranger = Client()
        stranger.cookies["sessionid"] = bad
        assert stranger.get("/whoami/").status_code == 401


# -- owners: log a user out everywhere ---------------------------------------------------------


def _signed_in(user: str) -> Client:
    client = Client()
    assert client.post(f"/signin/?user={user}").status_code == 200
    return client


def test_client_logout_everywhere_from_a_third_request(on_backend: Stores) -> None:
    other = on_backend.sessions
    first, second, third = (_signed_in("7") for _ in range(3))
    bob = _signed_in("8")
    old = [c.cookies["sessionid"].value for c in (first, second)]
    assert len(sessions_of_user("7")) == 3 and len(other.sessions_of("7")) == 3
    assert len(sessions_of_user(8)) == 1  # a primary key, as well as a user

    # "Log out my other devices": the current session stays.
    assert third.post("/logout-everywhere/?keep=1").json()["revoked"] == 2
    assert all(key not in other for key in old)
    for client in (first, second):
        assert client.get("/whoami/").status_code == 401
    assert third.get("/whoami/").json()["session"]["user"] == "7"
    assert bob.get("/whoami/").json()["session"]["user"] == "8"
    assert len(sessions_of_user("7")) == 1

    # Without keep, the current session goes too; its next request is anonymous.
    assert third.post("/incr/").json()["n"] == 1
    assert third.post("/logout-everywhere/").json()["revoked"] == 1
    assert third.post("/incr/").status_code == 401
    assert sessions_of_user("7") == [] and len(sessions_of_user("8")) == 1


def test_the_engine_records_the_user_that_auth_logs_in(on_backend: Stores) -> None:
    """``django.contrib.auth.login`` (through the test client's ``force_login``) puts the
    user's id under ``SESSION_KEY``; each save records it as the session's owner."""
    from django.contrib.auth import SESSION_KEY
    from django.contrib.auth.models import AnonymousUser, User

    alice = User.objects.create_user(f"alice-{uuid.uuid4().hex}")
    bob = User.objects.create_user(f"bob-{uuid.uuid4().hex}")
    phone, laptop, desk, bobs = Client(), Client(), Client(), Client()
    for client, user in ((phone, alice), (laptop, alice), (desk, alice), (bobs, bob)):
        client.force_login(user)
    keys = [c.cookies["sessionid"].value for c in (phone, laptop, desk)]
    anonymous = SessionStore()
    anonymous["cart"] = ["x"]
    anonymous.save()  # no user: nobody's session
    late = SessionStore()
    late[SESSION_KEY] = str(alice.pk)
    run(late.asave())  # the async save records the owner too
    assert len(sessions_of_user(alice)) == 4
    assert len(on_backend.sessions.sessions_of(str(alice.pk))) == 4
    assert sessions_of_user(AnonymousUser()) == [] and logout_everywhere(AnonymousUser()) == 0

    assert logout_everywhere(alice, keep=SessionStore(keys[2])) == 3  # keep: a session
    assert [key in on_backend.sessions for key in keys] == [False, False, True]
    assert not SessionStore().exists(late.session_key)
    assert SessionStore(keys[2])[SESSION_KEY] == str(alice.pk)
    assert logout_everywhere(alice.pk, keep=keys[2]) == 0  # keep: a session key
    assert logout_everywhere(alice) == 1 and keys[2] not in on_backend.sessions
    assert len(sessions_of_user(bob)) == 1 and SessionStore().exists(anonymous.session_key)


def test_a_session_keeps_its_owner_until_it_is_deleted(on_backend: Stores) -> None:
    """A save without ``SESSION_KEY`` keeps the owner the session has: removing the key
    alone leaves it the user's (``logout_everywhere`` still ends it); ``flush()``, which
    ``django.contrib.auth.logout`` calls, deletes it."""
    from django.contrib.auth import SESSION_KEY

    popped, flushed = SessionStore(), SessionStore()
    for session in (popped, flushed):
        session[SESSION_KEY] = "7"
        session.save()
    del popped[SESSION_KEY]
    popped["cart"] = ["x"]
    popped.save()
    flushed.flush()
    assert len(sessions_of_user("7")) == 1
    assert logout_everywhere("7") == 1 and not SessionStore().exists(popped.session_key)


# =============================================================================================
# Django's cache and cached_db engines on ShmCache
# =============================================================================================


def _saved_in_the_cache(engine: str) -> Any:
    """A session of Django's session engine ``engine`` holding ``x = 1``, saved: it is in the
    default cache."""
    session = import_module(ENGINES[engine]).SessionStore()
    session["x"] = 1
    session.save()
    assert caches["default"].get(session.cache_key) == {"x": 1}
    return session


def test_cache_engine_stores_in_the_shm_cache(on_backend: Stores) -> None:
    session = _saved_in_the_cache("cache")
    cache = caches["default"]
    assert isinstance(cache, ShmCache)
    assert pickle.loads(on_backend.cache.read(cache.make_key(session.cache_key))) == {"x": 1}


def test_cached_db_engine_reads_the_shm_cache_first(on_backend: Stores) -> None:
    cached_db = import_module(ENGINES["cached_db"]).SessionStore
    session = _saved_in_the_cache("cached_db")
    cache = caches["default"]
    # Change the cached copy: a load shows the cache was read, not the database.
    cache.set(session.cache_key, {"x": 2})
    assert cached_db(session.session_key)["x"] == 2
    # Drop the cached copy: the database still has the session, and refills the cache.
    cache.delete(session.cache_key)
    assert cached_db(session.session_key)["x"] == 1
    assert cache.get(session.cache_key) == {"x": 1}


def test_client_with_the_cache_engines(on_backend: Stores) -> None:
    for engine in ("cache", "cached_db"):
        with override_settings(SESSION_ENGINE=ENGINES[engine]):
            client = Client()
            client.post("/login/?user=carol")
            assert client.post("/incr/").json()["n"] == 1
            assert client.get("/whoami/").json()["session"] == {"user": "carol", "n": 1}
            cookie = client.cookies["sessionid"].value
            client.post("/logout/")
            replay = Client()
            replay.cookies["sessionid"] = cookie
            assert replay.get("/whoami/").status_code == 401, engine


# =============================================================================================
# ShmCache: Django's BaseCacheTests
# =============================================================================================


def f() -> int:
    return 42


class C:
    def m(self) -> int:
        return 24


class Unpicklable:
    def __getstate__(self) -> Dict[str, Any]:
        raise pickle.PickleError()


@pytest.fixture
def cache(on_backend: Stores) -> ShmCache:
    """The default cache, on a store in shared memory and on one in Redis."""
    backend = caches["default"]
    assert isinstance(backend, ShmCache)
    return backend


def test_simple_get_set_and_none(cache: ShmCache) -> None:
    cache.set("key", "value")
    assert cache.get("key") == "value"
    cache.set("key_default_none", None)
    assert cache.get("key_default_none", default="default") is None
    assert cache.get("does_not_exist") is None
    assert cache.get("does_not_exist", "bang!") == "bang!"


def test_add(cache: ShmCache) -> None:
    assert cache.add("addkey1", "value") is True
    assert cache.add("addkey1", "newvalue") is False
    assert cache.get("addkey1") == "value"


def test_prefix_version_and_custom_key_func_keep_keys_apart(cache: ShmCache) -> None:
    cache.set("somekey", "value")
    assert caches["prefix"].has_key("somekey") is False
    caches["prefix"].set("somekey", "value2")
    assert cache.get("somekey") == "value"
    assert caches["prefix"].get("somekey") == "value2"

    cache.set("answer1", 42)
    assert cache.get("answer1", version=1) == 42
    assert cache.get("answer1", version=2) is None
    assert caches["v2"].get("answer1") is None
    assert caches["v2"].get("answer1", version=1) == 42
    caches["v2"].set("answer2", 42)
    assert cache.get("answer2") is None and cache.get("answer2", version=2) == 42

    assert caches["custom_key"].get("answer1") is None
    caches["custom_key"].set("answer3", 3)
    assert cache.get("answer3") is None and caches["custom_key"].get("answer3") == 3


def test_get_many_set_many_delete_many(cache: ShmCache) -> None:
    assert cache.set_many({"a": "a", "b": "b", "c": "c", "d": "d"}) == []
    assert cache.get_many(["a", "c", "d"]) == {"a": "a", "c": "c", "d": "d"}
    assert cache.get_many(iter(["a", "b", "e"])) == {"a": "a", "b": "b"}
    cache.delete_many(["a", "b"])
    assert cache.get_many(["a", "b", "c"]) == {"c": "c"}


def test_delete_and_has_key_return_bools(cache: ShmCache) -> None:
    cache.set_many({"key1": "spam", "key2": "eggs"})
    assert cache.delete("key1") is True
    assert cache.delete("key1") is False
    assert cache.get("key1") is None and cache.get("key2") == "eggs"
    assert cache.has_key("key2") is True and "key2" in cache
    assert cache.has_key("goodbye") is False and "goodbye" not in cache
    cache.set("no_expiry", "here", None)
    assert cache.has_key("no_expiry")


def test_incr_decr(cache: ShmCache) -> None:
    cache.set("answer", 41)
    assert cache.incr("answer") == 42 and cache.get("answer") == 42
    assert cache.incr("answer", 10) == 52
    assert cache.incr("answer", -10) == 42
    assert cache.decr("answer") == 41 and cache.decr("answer", -1) == 42
    with pytest.raises(ValueError):
        cache.incr("does_not_exist")
    with pytest.raises(ValueError):
        cache.decr("does_not_exist")
    cache.set("answer1", 37, version=1)
    cache.set("answer1", 42, version=2)
    cache.incr("answer1", version=2)
    assert cache.get("answer1", version=1) == 37 and cache.get("answer1", version=2) == 43


def test_incr_is_atomic_across_threads_and_handles(cache: ShmCache) -> None:
    cache.set("counter", 0, None)
    twin = caches["twin"]  # another handle on the same segment
    errors: List[BaseException] = []

    def bump(target: Any) -> None:
        try:
            for _ in range(100):
                target.incr("counter")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=bump, args=(t,)) for t in (cache, twin) * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert cache.get("counter") == 600


def test_close_keeps_the_handle(cache: ShmCache) -> None:
    cache.set("k", 1)
    cache.close()
    assert cache.get("k") == 1


def test_data_types_unicode_and_binary(cache: ShmCache) -> None:
    stuff = {
        "string": "this is a string",
        "int": 42,
        "list": [1, 2, 3, 4],
        "tuple": (1, 2, 3, 4),
        "dict": {"A": 1, "B": 2},
        "function": f,
        "class": C,
        "unicode_ascii": "Iñtërnâtiônàlizætiøn1",
        "Iñtërnâtiônàlizætiøn": "Iñtërnâtiônàlizætiøn2",
        "bytes": b"\x00\xff" * 10,
    }
    for key, value in stuff.items():
        cache.set(key, value)
        assert cache.get(key) == value
    for key, value in stuff.items():
        cache.delete(key)
        assert cache.add(key, value) is True
        assert cache.get(key) == value
    cache.clear()
    cache.set_many(stuff)
    assert cache.get_many(list(stuff)) == stuff


def test_clear(cache: ShmCache, on_backend: Stores) -> None:
    cache.set_many({"key1": "spam", "key2": "eggs"})
    caches["v2"].set("key3", "ham")
    session = SessionStore()
    session["kept"] = True
    session.save()
    cache.clear()  # empties the cache's store, and only it
    assert cache.get("key1") is None and caches["v2"].get("key3") is None
    assert len(on_backend.cache) == 0
    assert session.session_key in on_backend.sessions


def test_timeouts_zero_negative_forever_long_float(cache: ShmCache) -> None:
    cache.set("key1", "eggs", 0)
    assert cache.get("key1") is None
    assert cache.add("key2", "ham", 0) is True  # "added", and expired at once
    assert cache.get("key2") is None
    cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, 0)
    assert cache.get_many(["key3", "key4"]) == {}
    cache.set("key5", "belgian fries", timeout=5)
    assert cache.touch("key5", timeout=0) is True
    assert cache.get("key5") is None
    cache.set("key6", "was here")
    cache.set("key6", "gone", -1)  # a timeout in the past removes what was there
    assert cache.get("key6") is None
    cache.set("key7", "present")
    assert cache.add("key7", "other", 0) is False
    assert cache.get("key7") == "present"

    cache.set("forever", "eggs", None)
    cache.add("forever2", "ham", None)
    assert cache.add("forever", "new eggs", None) is False
    assert cache.get_many(["forever", "forever2"]) == {"forever": "eggs", "forever2": "ham"}

    cache.set("long", "eggs", 60 * 60 * 24 * 30 + 1)  # 30 days + 1 s: relative, as everywhere
    assert cache.get("long") == "eggs"
    cache.set("float", "spam", 100.2)
    assert cache.get("float") == "spam"


def test_expiration_touch_and_default_timeout(cache: ShmCache) -> None:
    cache.set("expire1", "very quickly", 1)
    cache.set("expire2", "very quickly", 1)
    cache.set("expire3", "very quickly", 1)
    cache.set("touched", "very quickly", 1)
    assert cache.touch("touched", 10) is True
    cache.set("forever", "belgian fries", timeout=1)
    assert cache.touch("forever", timeout=None) is True
    cache.set_many({"many1": 1, "many2": 2}, 1)
    caches["short"].set("default_timeout", "1 s")  # TIMEOUT=1 in its settings
    caches["store_ttl_1s"].set("none", "forever", None)
    caches["store_ttl_1s"].set("default_none", "forever too")  # TIMEOUT=None in its settings
    assert cache.touch("nonexistent") is False
    time.sleep(1.5)
    assert cache.get("expire1") is None
    assert cache.add("expire2", "newvalue") is True
    assert cache.get("expire2") == "newvalue"
    assert cache.has_key("expire3") is False
    assert cache.touch("expire3") is False
    assert cache.get("touched") == "very quickly"
    assert cache.get("forever") == "belgian fries"
    assert cache.get_many(["many1", "many2"]) == {}
    assert caches["short"].get("default_timeout") is None
    assert caches["store_ttl_1s"].get_many(["none", "default_none"]) == {
        "none": "forever",
        "default_none": "forever too",
    }


def test_versions_incr_decr(cache: ShmCache) -> None:
    cache.set("answer", 42, version=2)
    assert cache.incr_version("answer", version=2) == 3
    assert cache.get("answer", version=2) is None and cache.get("answer", version=3) == 42
    assert cache.decr_version("answer", version=3) == 2
    assert cache.get("answer", version=2) == 42
    with pytest.raises(ValueError):
        cache.incr_version("does_not_exist")


def test_get_or_set(cache: ShmCache) -> None:
    assert cache.get("projector") is None
    assert cache.get_or_set("projector", 42) == 42
    assert cache.get("projector") == 42
    assert cache.get_or_set("null", None) is None
    assert cache.get_or_set("mykey", lambda: "value") == "value"
    assert cache.get_or_set("mykey", "other") == "value"
    assert cache.get_or_set("brian", 1979, version=2) == 1979
    assert cache.get("brian", version=1) is None


def test_pickle_errors_are_not_silent(cache: ShmCache) -> None:
    with pytest.raises(pickle.PickleError):
        cache.add("unpicklable", Unpicklable())
    with pytest.raises(pickle.PickleError):
        cache.set("unpicklable", Unpicklable())


#: Keys memcached refuses (long, spaces, control characters), over the store's 1024 bytes of
#: id (hashed), and not encodable as UTF-8 (hashed).
ODD_KEYS = [
    "a" * 250 + "清",
    "b" * 300,
    "key with spaces and 清",
    "control\x00chars\n\t",
    "ünïcödé" * 100,  # 1,400+ bytes of UTF-8: over the store's limit, hashed
    "x" * 5000,
    "x" * 4999 + "y",  # shares a long prefix with the previous key: must not collide
    "lone \ud800 surrogate",
]


def test_any_key_works(cache: ShmCache, on_backend: Stores) -> None:
    """Every ``str`` key is stored (the warnings are Django's: see the next tests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheKeyWarning)
        for i, key in enumerate(ODD_KEYS):
            cache.set(key, i)
        for i, key in enumerate(ODD_KEYS):
            assert cache.get(key) == i, key[:40]
            assert cache.has_key(key)
        assert cache.incr(ODD_KEYS[-2]) == len(ODD_KEYS) - 1
        assert cache.get_many(ODD_KEYS[:2]) == {ODD_KEYS[0]: 0, ODD_KEYS[1]: 1}
        for key in ODD_KEYS:
            assert cache.delete(key) is True
    assert len(on_backend.cache) == 0
    with pytest.raises(InvalidCacheKey):
        ShmCache(on_backend.cache, {"KEY_FUNCTION": lambda k, p, v: b"bytes"}).get("k")


def _key_warnings(backend: BaseCache, key: str) -> List[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend.set(key, 1)
        backend.get(key)
    assert all(w.category is CacheKeyWarning for w in caught)
    return [str(w.message) for w in caught]


def test_keys_warn_as_with_locmem(cache: ShmCache) -> None:
    """Django's contract: every backend but memcached warns for keys memcached would refuse,
    and stores them. The same warnings as Django's local-memory cache, key for key."""
    locmem = LocMemCache("shmsession-test", {})
    for key in [*ODD_KEYS, "plain-key", "y" * 240]:
        expected = _key_warnings(locmem, key)
        assert _key_warnings(cache, key) == expected, key[:40]
        assert bool(expected) == (key in ODD_KEYS)


# Django's own tests of CacheKeyWarning, ported from Django's tests/cache/tests.py
# (BaseCacheTests._perform_invalid_key_test, test_invalid_key_characters,
# test_invalid_key_length, test_invalid_with_version_key_length), with their assertions.
def _perform_invalid_key_test(cache: ShmCache, key: str, expected_warning: str,
                              key_func: Optional[Callable[..., str]] = None) -> None:
    """All the builtin backends should warn (except memcached that should error) on keys
    that would be refused by memcached (Django's words)."""

    def func(key: str, *args: Any) -> str:  # Django's default key function never warns
        return key

    old_func = cache.key_func
    cache.key_func = key_func or func
    tests: List[Tuple[str, List[Any]]] = [
        ("add", [key, 1]),
        ("get", [key]),
        ("set", [key, 1]),
        ("incr", [key]),
        ("decr", [key]),
        ("touch", [key]),
        ("delete", [key]),
        ("get_many", [[key, "b"]]),
        ("set_many", [{key: 1, "b": 2}]),
        ("delete_many", [[key, "b"]]),
    ]
    try:
        for operation, args in tests:
            with pytest.warns(CacheKeyWarning) as caught:
                getattr(cache, operation)(*args)
            assert str(caught[0].message) == expected_warning, operation
    finally:
        cache.key_func = old_func


def test_invalid_key_characters(cache: ShmCache) -> None:
    # memcached doesn't allow whitespace or control characters in keys.
    key = "key with spaces and 清"
    _perform_invalid_key_test(
        cache, key, "Cache key contains characters that will cause errors if used with "
        f"memcached: {key!r}")


def test_invalid_key_length(cache: ShmCache) -> None:
    # memcached limits key length to 250.
    key = ("a" * 250) + "清"
    _perform_invalid_key_test(
        cache, key, f"Cache key will cause errors if used with memcached: {key!r} "
        "(longer than 250)")


def test_invalid_with_version_key_length(cache: ShmCache) -> None:
    # Custom make_key() that adds a version to the key and exceeds the limit.
    def key_func(key: str, *args: Any) -> str:
        return key + ":1"

    key = "a" * 249
    _perform_invalid_key_test(
        cache, key, f"Cache key will cause errors if used with memcached: {key_func(key)!r} "
        "(longer than 250)", key_func=key_func)


def test_caches_with_the_same_location_share_data(cache: ShmCache, on_backend: Stores) -> None:
    twin = caches["twin"]
    # Two handles (the cache's private ``_store``: nothing public tells them apart).
    assert isinstance(twin, ShmCache) and twin._store is not cache._store
    cache.set("shared", {"a": 1})
    assert twin.get("shared") == {"a": 1}
    twin.delete("shared")
    assert cache.get("shared") is None
    # A cache made from a store object the caller opened.
    other = on_backend.open_cache()
    direct = ShmCache(other, {})
    direct.set("direct", 5)
    assert cache.get("direct") == 5
    with pytest.raises(ImproperlyConfigured, match="options"):
        ShmCache(other, {"OPTIONS": {"size": STORE_SIZE}})


def test_configuration_errors(stores: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="max_entries"):
        ShmCache(cache_name(stores), {"OPTIONS": {"MAX_ENTRIES": 10}})
    with pytest.raises(ImproperlyConfigured, match="when_full"):
        ShmCache(cache_name(stores), {"OPTIONS": {"CULL_FREQUENCY": 3}})
    with pytest.raises(ImproperlyConfigured, match="name"):
        ShmCache("", {})


def test_full_store_evicts_or_raises(name: str) -> None:
    evicting = ShmCache(f"{name}-evict", {"OPTIONS": {"size": 1 << 20, "max_entries": 16}})
    raising = ShmCache(
        f"{name}-raise", {"OPTIONS": {"size": 1 << 20, "max_entries": 16, "when_full": "raise"}}
    )
    try:
        for i in range(50):
            evicting.set(f"cull{i}", "value", 1000)
        kept = sum(evicting.has_key(f"cull{i}") for i in range(50))
        assert kept == 16 and evicting.has_key("cull49")  # the newest survives
        for i in range(16):
            raising.set(f"k{i}", i, 1000)
        with pytest.raises(StoreFull):
            raising.set("one-too-many", 1, 1000)
        with pytest.raises(ValueTooLarge):
            evicting.set("huge", b"x" * (1 << 20))
    finally:
        close_stores()
        SessionStorage.unlink_name(f"{name}-evict")
        SessionStorage.unlink_name(f"{name}-raise")


def test_async_cache_api(cache: ShmCache) -> None:
    async def main() -> None:
        await cache.aset("a", 1)
        assert await cache.aget("a") == 1
        assert await cache.aadd("a", 2) is False
        assert await cache.aincr("a", 4) == 5
        assert await cache.atouch("a", 100) is True
        assert await cache.ahas_key("a") is True
        assert await cache.aget_many(["a", "b"]) == {"a": 5}
        assert await cache.adelete("a") is True
        await cache.aset_many({"x": 1, "y": 2})
        await cache.aclear()
        assert await cache.aget("x") is None

    run(main())


# =============================================================================================
# A real gunicorn: 4 sync workers, one session store and one cache between them
# =============================================================================================



@pytest.fixture
def gunicorn(backend: str, open_store: Callable[..., Store], name: str,
             request: pytest.FixtureRequest) -> Iterator[Server]:
    """gunicorn, 4 sync workers, serving tests/adapter/django_app on stores this fixture made in
    ``backend``: the sessions' (``server.store``: a handle on it) and the cache's."""
    sock = request.getfixturevalue("redis_socket") if backend == "redis" else None
    open_store("-cache")  # the cache's store (cache_name), deleted after the test
    store = open_store()
    port = free_port()
    env = dict(server_env(backend, name, sock),
               DJANGO_SETTINGS_MODULE="tests.adapter.django_app.settings")
    argv = python("-m", "gunicorn", "--workers", "4", "--worker-class", "sync",
                  "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "--timeout", "60",
                  "tests.adapter.django_app.wsgi:application")
    yield from serve(argv, env, port, name, "/whoami/", store)


@pytest.mark.timeout(150)
def test_gunicorn_workers_share_sessions_and_cache(gunicorn: Server) -> None:
    port, store = gunicorn.port, gunicorn.store
    assert store is not None

    def jar(sid: str) -> Dict[str, str]:
        return {"sessionid": sid}

    reply = call(port, "GET", "/whoami/")  # anonymous
    assert reply.status == 401 and reply.json()["anonymous"] is True, reply

    # Log in.
    reply = call(port, "POST", "/login/?user=alice")
    found = reply.cookie("sessionid")
    assert reply.status == 200 and found is not None and found[0], reply
    cookie = found[0]
    assert cookie in store  # the session is in the shared store

    # Concurrent readers on new connections: every worker that answers sees the session.
    # Bursts until two workers have answered (a loaded machine may let one worker take a
    # whole burst).
    alice = {"user": "alice", "n": 0}
    read_pids: set = set()
    for _ in range(SPREAD_ROUNDS):
        answers = in_threads([lambda: call(port, "GET", "/whoami/", jar(cookie))] * 20, 20)
        assert all(r.status == 200 and r.json()["session"] == alice for r in answers), answers
        read_pids.update(r.json()["pid"] for r in answers)
        if len(read_pids) >= 2:
            break
    assert len(read_pids) >= 2, f"only worker(s) {read_pids} answered"

    # Sequential read-modify-writes -- at least 40, and on at least two workers -- lose no
    # update.
    incr_pids = []
    for i in range(1, 40 * SPREAD_ROUNDS + 1):
        reply = call(port, "POST", "/incr/", jar(cookie))
        assert reply.status == 200 and reply.json()["n"] == i, (i, reply)
        incr_pids.append(reply.json()["pid"])
        if i >= 40 and len(set(incr_pids)) >= 2:
            break
    assert len(set(incr_pids)) >= 2, f"all increments went to {set(incr_pids)}"
    reply = call(port, "GET", "/whoami/", jar(cookie))
    assert reply.json()["session"] == {"user": "alice", "n": len(incr_pids)}

    # Concurrent writes of whole, distinct sessions end in exactly one of them.
    versions = [
        {"user": "alice", "writer": i, f"only_{i}": "v" * 200 * i, "items": [i] * 10 * i}
        for i in range(8)
    ]
    answers = in_threads([lambda v=v: call(port, "POST", "/put/", jar(cookie), body=v)
                          for v in versions], len(versions))
    assert all(r.status == 200 for r in answers), answers
    reply = call(port, "GET", "/whoami/", jar(cookie))
    assert reply.status == 200 and reply.json()["session"] in versions, reply

    # The cache: concurrent incr in the workers, no increment lost or repeated.
    hits: List[int] = []
    hit_pids: set = set()
    for _ in range(SPREAD_ROUNDS):
        answers = in_threads([lambda: call(port, "POST", "/cache/incr/")] * 20, 20)
        hits += [r.json()["hits"] for r in answers]
        hit_pids.update(r.json()["pid"] for r in answers)
        if len(hit_pids) >= 2:
            break
    assert sorted(hits) == list(range(1, len(hits) + 1)), hits
    assert len(hit_pids) >= 2, f"only worker(s) {hit_pids} answered"

    # Log out; the old cookie, replayed to any worker, is anonymous.
    reply = call(port, "POST", "/logout/", jar(cookie))
    assert reply.status == 200 and reply.cookie("sessionid") == ("", True), reply
    assert cookie not in store
    replays = in_threads([lambda: call(port, "GET", "/whoami/", jar(cookie))] * 12, 12)
    assert all(r.status == 401 and r.json()["anonymous"] is True for r in replays), replays
    assert gunicorn.proc.poll() is None, f"gunicorn died\n{gunicorn.output()[-3000:]}"


@pytest.mark.timeout(150)
def test_gunicorn_logout_everywhere(gunicorn: Server) -> None:
    port, store = gunicorn.port, gunicorn.store
    assert store is not None

    def signin(user: str) -> Dict[str, str]:
        reply = call(port, "POST", f"/signin/?user={user}")
        found = reply.cookie("sessionid")
        assert reply.status == 200 and found is not None and found[0], reply
        return {"sessionid": found[0]}

    first, second, third, bob = signin("7"), signin("7"), signin("7"), signin("8")
    assert len(store.sessions_of("7")) == 3 and len(store.sessions_of("8")) == 1

    reply = call(port, "POST", "/logout-everywhere/?keep=1", third)
    assert reply.status == 200 and reply.json()["revoked"] == 2, reply
    # The old cookies, on every worker that answers (until two have): anonymous; the kept
    # one and bob's are not.
    jars, users = [first, second, third, bob], [None, None, "7", "8"]
    pids: set = set()
    for _ in range(SPREAD_ROUNDS):
        answers = in_threads([lambda j=j: call(port, "GET", "/whoami/", j) for j in jars] * 5,
                             20)
        for k, r in enumerate(answers):
            if users[k % 4] is None:
                assert r.status == 401 and r.json()["anonymous"] is True, (k, r)
            else:
                assert r.status == 200 and r.json()["session"]["user"] == users[k % 4], (k, r)
        pids.update(r.json()["pid"] for r in answers)
        if len(pids) >= 2:
            break
    assert len(pids) >= 2, f"only worker(s) {pids} answered"
    assert len(store.sessions_of("7")) == 1

    # Without keep, the current session goes too.
    reply = call(port, "POST", "/logout-everywhere/", third)
    assert reply.status == 200 and reply.json()["revoked"] == 1, reply
    replays = in_threads([lambda: call(port, "GET", "/whoami/", third)] * 12, 12)
    assert all(r.status == 401 and r.json()["anonymous"] is True for r in replays), replays
    assert store.sessions_of("7") == [] and len(store.sessions_of("8")) == 1
    assert gunicorn.proc.poll() is None, f"gunicorn died\n{gunicorn.output()[-3000:]}"


def test_a_numeric_default_timeout_outlives_a_shorter_store_ttl(on_backend: Stores) -> None:
    """Restored from the deleted tests/test_adapters_on_redis.py (which asserted it on Redis
    only): Django's timeouts decide, not the store's default ttl -- a value set with the
    cache's default TIMEOUT (Django's 300 s) outlives a store whose own ttl is 1 s, while an
    explicit 1 s timeout ends."""
    cache = ShmCache(on_backend.open_cache(ttl=1), {})  # no TIMEOUT given: Django's 300 s
    assert cache.default_timeout == 300
    cache.set("default", 3)
    assert cache.add("added", 4) is True
    cache.set("touched", 5, 1)
    assert cache.touch("touched") is True  # to the default timeout
    cache.set("one-second", 2, 1)
    time.sleep(1.3)
    assert cache.get("one-second") is None
    assert cache.get_many(["default", "added", "touched"]) == {
        "default": 3, "added": 4, "touched": 5}
