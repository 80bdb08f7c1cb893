"""ShmSessionInterface keeps its cookie signer between requests: the keys an app has now are
the ones that sign and verify, whenever they change, and one interface serves apps with
different keys without mixing them up."""

from __future__ import annotations

from typing import Any, Dict, Optional

from flask import Flask, session
from flask.testing import FlaskClient

from shmsession import SessionStorage
from shmsession.contrib.flask import ShmSessionInterface

OLD, NEW = "the old key", "the new key"


def make_app(iface: ShmSessionInterface, key: str) -> Flask:
    app = Flask(__name__)
    app.testing = True
    app.secret_key = key
    app.session_interface = iface

    @app.post("/login/<user>")
    def login(user: str) -> Dict[str, Any]:
        session["user"] = user
        return {}

    @app.post("/touch")
    def touch() -> Dict[str, Any]:
        session["n"] = session.get("n", 0) + 1
        return {}

    @app.get("/me")
    def me() -> Dict[str, Any]:
        return {"user": session.get("user")}

    return app


def cookie_of(client: FlaskClient) -> Optional[str]:
    found = client.get_cookie("session")
    return None if found is None else found.value


def user_with(app: Flask, cookie: str) -> Any:
    client = app.test_client()
    client.set_cookie("session", cookie)
    return client.get("/me").get_json()["user"]


def test_the_signer_is_kept_while_the_keys_stay(store: SessionStorage) -> None:
    iface = ShmSessionInterface(store=store)
    app = make_app(iface, OLD)
    first = iface.get_signer(app)
    assert first is not None and iface.get_signer(app) is first
    app.config["SECRET_KEY_FALLBACKS"] = ["older"]
    assert iface.get_signer(app) is not first


def test_a_key_rotated_in_place_takes_effect_at_once(store: SessionStorage) -> None:
    iface = ShmSessionInterface(store=store)
    app = make_app(iface, OLD)
    client = app.test_client()
    client.post("/login/alice")
    old_cookie = cookie_of(client)
    assert old_cookie is not None and user_with(app, old_cookie) == "alice"

    # The same app and interface, the key rotated: the old key verifies only as a fallback.
    app.secret_key = NEW
    app.config["SECRET_KEY_FALLBACKS"] = [OLD]
    assert user_with(app, old_cookie) == "alice"
    client.post("/touch")  # re-signed with the new key
    new_cookie = cookie_of(client)
    assert new_cookie is not None and new_cookie != old_cookie

    app.config["SECRET_KEY_FALLBACKS"] = []
    assert user_with(app, old_cookie) is None  # the old key is no longer accepted
    assert user_with(app, new_cookie) == "alice"


def test_one_interface_keeps_apps_with_different_keys_apart(store: SessionStorage) -> None:
    iface = ShmSessionInterface(store=store)
    one, other = make_app(iface, OLD), make_app(iface, NEW)
    client = one.test_client()
    client.post("/login/alice")
    cookie = cookie_of(client)
    assert cookie is not None
    assert user_with(one, cookie) == "alice"
    assert user_with(other, cookie) is None  # signed with the other app's key
    assert iface.get_signer(one) is not iface.get_signer(other)


def test_cookies_are_itsdangerous_timestamp_signatures_both_ways(store: SessionStorage) -> None:
    """The kept signer derives each key once; its cookies stay what itsdangerous'
    ``TimestampSigner`` makes with the interface's settings, and it accepts theirs, for the
    current key and a fallback."""
    from itsdangerous import TimestampSigner

    iface = ShmSessionInterface(store=store)
    app = make_app(iface, NEW)
    app.config["SECRET_KEY_FALLBACKS"] = [OLD]
    ours = iface.get_signer(app)
    assert ours is not None
    settings: Dict[str, Any] = dict(salt=iface.salt, key_derivation=iface.key_derivation,
                                    digest_method=iface.digest_method)
    theirs = TimestampSigner([OLD, NEW], **settings)
    for _ in range(2):  # the second time from what the signer kept
        signed = ours.sign("an-id")
        assert theirs.unsign(signed) == b"an-id"
        assert signed.rsplit(b".", 1)[1] == theirs.get_signature(signed.rsplit(b".", 1)[0])
        assert ours.unsign(theirs.sign("by-them")) == b"by-them"
        assert ours.unsign(TimestampSigner(OLD, **settings).sign("by-old")) == b"by-old"
    client = app.test_client()
    client.post("/login/alice")
    cookie = cookie_of(client)
    assert cookie is not None and theirs.unsign(cookie)
