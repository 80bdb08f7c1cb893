"""Server-side Flask sessions in a shmsession store, shared by every worker process.

::

    import os
    from flask import Flask
    from shmsession.contrib.flask import ShmSessionInterface

    app = Flask(__name__)
    app.secret_key = os.environ["SECRET_KEY"]  # signs the session id cookie (token_hex(32))
    app.session_interface = ShmSessionInterface("myapp", size=64 * 2**20)

``flask.session`` works as before; what changes is where the data lives:

* **The cookie** holds only the session id, 256 random bits from ``store.new_id()``, signed
  with the app's ``secret_key`` (and accepted under ``SECRET_KEY_FALLBACKS``) through
  itsdangerous, timestamped like Flask's own cookie: a tampered, foreign or expired cookie
  opens an empty session. Its attributes come from Flask's ``SESSION_COOKIE_*`` settings
  through the interface's ``get_cookie_*`` methods.
* **The data** is in the store, serialised with Flask's own tagged JSON (the types Flask's
  cookie sessions take: JSON plus tuple, bytes, Markup, UUID, datetime). JSON, not pickle:
  loading a session never runs code. Set :attr:`ShmSessionInterface.serializer` to another
  object with ``dumps``/``loads`` to change that.
* **Lifetime**: a record lives ``PERMANENT_SESSION_LIFETIME`` after its last write, the same
  bound Flask's signed cookie has. A permanent session (``session.permanent = True``) also
  gets a cookie that expires then, and with ``SESSION_REFRESH_EACH_REQUEST`` (the default)
  each request renews both (``store.touch``).
* **Writes**: a session that was not modified is not written. A new session, or one that was
  cleared in the request (``session.clear()``, the first step of a login) or given to
  :meth:`ShmSessionInterface.regenerate`, is saved under a fresh id and its old record
  deleted: an id a client brought along is never promoted to a logged-in session (no session
  fixation). A session that ends empty (nothing but ``_permanent`` counts as empty) is
  deleted from the store with its cookie: logout is ``session.clear()``.
* **Concurrent requests** of one session: each writes its whole session, and the last to
  finish wins (as with every Flask session store); a write is the store's atomic
  ``replace``, which writes only over a live record, so a session deleted meanwhile (logged
  out by another request) stays deleted instead of being written back.

* **Failing requests**: a ``secret_key`` the signer cannot use (not ``str`` or ``bytes``)
  fails every request with a ``TypeError`` naming it, before the store is touched. What a
  failing view put in the session is saved with Flask's 500 answer, as Flask's cookie
  session is; a save that fails leaves the store as it was (see
  :meth:`ShmSessionInterface.save_session`).

* **Owners**: with ``owner_key="user_id"``, each save records ``str(session["user_id"])`` as
  the session's owner, and :meth:`ShmSessionInterface.logout_everywhere` ends every session
  of a user (but the current one, if asked).

The interface holds no storage logic: it maps Flask's open/save onto ``get``, ``add``,
``replace``, ``touch`` and ``invalidate``, and owners onto ``sessions_of`` and
``invalidate_owner``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from .._errors import missing_extra
from .._types import SessionInfo
from ..store import SessionStorage
from ._store import Store

try:
    from flask.json.provider import DefaultJSONProvider
    from flask.sessions import SessionInterface, SessionMixin, session_json_serializer
    from itsdangerous import BadSignature, TimestampSigner, want_bytes
    from werkzeug.datastructures import CallbackDict
except ImportError as exc:  # pragma: no cover - the extra is installed wherever tests run
    raise missing_extra("flask", "flask") from exc

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values

    from flask import Flask
    from flask.wrappers import Request, Response

__all__ = ["ShmSession", "ShmSessionInterface", "Store"]


#: Fresh ids tried before giving up; 256 random bits do not collide, this bounds a broken store.
_MAX_NEW_IDS = 8
#: Signers an interface keeps, one per set of keys and signing settings; past that it starts
#: over rather than grow (keys that change on every request would be a bug of the app).
_MAX_SIGNERS = 8


#: The values Flask's tagged JSON leaves as they are (exact types: a subclass may be tagged).
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})


def _untagged(data: Dict[str, Any]) -> bool:
    """Whether Flask's tagged JSON of ``data`` is plain JSON: str keys, plain values, and not
    a one-key dict whose key is a tag (that one it wraps)."""
    if len(data) == 1 and next(iter(data)) in session_json_serializer.tags:
        return False
    for key, value in data.items():
        if type(key) is not str or type(value) not in _PLAIN_TYPES:
            return False
    return True


class _KeptKeySigner(TimestampSigner):
    """itsdangerous' ``TimestampSigner``, same cookies, but each key is derived once: the
    stock one derives it (an HMAC) on every ``sign`` and for every key an ``unsign`` tries,
    and the interface keeps its signer for as long as the app's keys stay."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._derived: Dict[bytes, bytes] = {}

    def derive_key(self, secret_key: Union[str, bytes, None] = None) -> bytes:
        key = self.secret_keys[-1] if secret_key is None else want_bytes(secret_key)
        derived = self._derived.get(key)
        if derived is None:
            derived = self._derived[key] = super().derive_key(key)
        return derived


class ShmSession(CallbackDict[str, Any], SessionMixin):
    """The ``flask.session`` of a request: a dict that records whether it was modified.

    :attr:`sid` is the store id (``None`` until the session is first saved), :attr:`new`
    whether no stored session was found for the request.
    """

    def __init__(
        self,
        initial: Optional[Mapping[str, Any]] = None,
        sid: Optional[str] = None,
        stale_cookie: bool = False,
    ) -> None:
        def on_update(self: ShmSession) -> None:
            self.modified = True
            self.accessed = True

        super().__init__(initial, on_update)
        self.sid = sid
        self.new = sid is None
        #: Set by :meth:`clear` and :meth:`ShmSessionInterface.regenerate`: save under a new id.
        self.rotate = False
        #: The request brought a cookie that named no live session.
        self.stale_cookie = stale_cookie
        #: A save raised: Flask's error handler saves again, and that save leaves it alone.
        self.save_failed = False
        self.modified = False
        self.accessed = False

    # Flask before 3.1.3 leaves tracking reads to the session object; marking every read
    # (not only item access, as Flask's cookie session does) errs on the side of a
    # ``Vary: Cookie``, which keeps caches from serving one user's page to another.
    def __getitem__(self, key: str) -> Any:
        self.accessed = True
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        return super().get(key, default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        return super().setdefault(key, default)

    def __contains__(self, key: object) -> bool:
        self.accessed = True
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        # Overriding __iter__ also makes dict(session) go through here.
        self.accessed = True
        return super().__iter__()

    def __len__(self) -> int:
        self.accessed = True
        return super().__len__()

    def keys(self) -> dict_keys[str, Any]:
        self.accessed = True
        return super().keys()

    def values(self) -> dict_values[str, Any]:
        self.accessed = True
        return super().values()

    def items(self) -> dict_items[str, Any]:
        self.accessed = True
        return super().items()

    def copy(self) -> Dict[str, Any]:
        self.accessed = True
        return dict.copy(self)

    def clear(self) -> None:
        """Empty the session and have it saved, if refilled, under a fresh id."""
        super().clear()
        self.rotate = True
        self.modified = True

    def __bool__(self) -> bool:
        # A session holding nothing but the permanent flag is empty: an app that sets
        # ``session.permanent = True`` for every visitor must not store a record for each.
        # dict.keys: the interface's own look does not count as the app accessing it.
        return any(key != "_permanent" for key in dict.keys(self))


class ShmSessionInterface(SessionInterface):
    """Flask's session interface on the shmsession store ``name`` (or ``store``).

    :param name: the store to create or attach to; ``options`` (``size``, ``max_entries``,
        ``max_value_size``, ``when_full``, ``lock_timeout``...) go to
        :class:`~shmsession.SessionStorage`. Give either ``name`` or ``store``.
    :param store: an open store (anything with ``SessionStorage``'s methods) to use instead
        of opening ``name``; it stays the caller's to close.
    :param owner_key: the session key whose value names the session's owner (a user id):
        each save of a session that holds it (and not ``None``) makes the session one of
        ``str(value)``'s, for :meth:`sessions_of` and :meth:`logout_everywhere`. A session
        without it keeps the owner it has: it stays its owner's until it is deleted
        (``session.clear()``, logging out), also when the key alone is removed.
    """

    #: The class of ``flask.session``; a subclass of :class:`ShmSession` may replace it.
    session_class = ShmSession
    #: Salt of the cookie signature: not Flask's, so neither cookie passes for the other.
    salt = "shmsession"
    #: The hash of the cookie's signature (itsdangerous's ``digest_method``; Flask's own
    #: cookie interface has this attribute and ``key_derivation`` too).
    digest_method = staticmethod(hashlib.sha256)
    #: How itsdangerous derives the signing key from the secret key.
    key_derivation = "hmac"
    #: Turns a session dict into ``str`` or ``bytes`` and back (``dumps``/``loads``).
    serializer: Any = session_json_serializer

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        store: Optional[Store] = None,
        owner_key: Optional[str] = None,
        **options: Any,
    ) -> None:
        if (name is None) == (store is None):
            raise TypeError(
                "give ShmSessionInterface either a store name or store=, not both or neither"
            )
        if store is not None and options:
            raise TypeError(f"options {sorted(options)} are for opening a store by name")
        if store is None:
            assert name is not None
            store = SessionStorage(name, **options)
        self.store: Store = store
        self.owner_key = owner_key
        self._signers: Dict[Tuple[Any, ...], TimestampSigner] = {}

    # ------------------------------------------------------------------ helpers
    def get_signer(self, app: Flask) -> Optional[TimestampSigner]:
        """The signer of the id cookie, or ``None`` when the app has no ``secret_key``.

        Made once per set of keys (``secret_key`` and ``SECRET_KEY_FALLBACKS``, read on every
        call, so a rotation takes effect at once) and kept: a signer holds no state between
        calls, building one costs about what a signature does, and every request needs one
        in ``open_session`` and again in ``save_session``.

        :raises TypeError: a key is not ``str`` or ``bytes`` (``app.secret_key = ...``
            copied literally from an example): raised here, before the store is touched,
            rather than by the signer once a session has been written.
        """
        if not app.secret_key:
            return None
        fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or ()
        keys = (*fallbacks, app.secret_key)
        settings = (keys, self.salt, self.key_derivation, self.digest_method)
        try:
            signer = self._signers.get(settings)
        except TypeError:  # an unhashable key: the check below names it
            signer = None
        if signer is None:
            # Checked once per set of keys: a kept signer's keys passed.
            for setting, key in [*(("SECRET_KEY_FALLBACKS", k) for k in fallbacks),
                                 ("secret_key", app.secret_key)]:
                if not isinstance(key, (str, bytes)):
                    raise TypeError(
                        f"app.{setting} holds a {type(key).__name__}, not a str or bytes: "
                        "set it to a long random string, e.g. secrets.token_hex(32)"
                    )
            if len(self._signers) >= _MAX_SIGNERS:
                self._signers.clear()
            # itsdangerous signs with the last key and accepts any of them.
            signer = self._signers[settings] = _KeptKeySigner(
                [want_bytes(key) for key in keys],
                salt=self.salt,
                key_derivation=self.key_derivation,
                digest_method=self.digest_method,
            )
        return signer

    @staticmethod
    def lifetime(app: Flask) -> float:
        """Seconds a stored session lives after its last write: ``PERMANENT_SESSION_LIFETIME``."""
        return app.permanent_session_lifetime.total_seconds()

    def regenerate(self, session: ShmSession) -> None:
        """Save ``session`` under a fresh id at the end of the request and delete its old
        record (call it when the user's privileges change, e.g. at login)."""
        session.rotate = True
        session.modified = True

    def sessions_of(self, owner: object) -> List[SessionInfo]:
        """The live sessions of ``owner`` (the value under ``owner_key``; compared as
        ``str(owner)``), oldest first: digests, sizes, ages, never ids (the store's
        ``sessions_of``)."""
        return self.store.sessions_of(self._owner(owner))

    def logout_everywhere(self, owner: object, *, keep: Optional[ShmSession] = None) -> int:
        """Delete every session of ``owner`` (the value under ``owner_key``; compared as
        ``str(owner)``) but ``keep`` (``flask.session``, to log out the user's other
        devices), and return how many were deleted. Their cookies open empty sessions from
        then on; a request of one of them that is running saves nothing back."""
        return self.store.invalidate_owner(self._owner(owner),
                                           keep=None if keep is None else keep.sid)

    def _owner(self, owner: object) -> str:
        if self.owner_key is None:
            raise TypeError("sessions have owners only with ShmSessionInterface(owner_key=...)")
        return str(owner)

    def _owner_of(self, session: ShmSession) -> Optional[str]:
        """The owner ``session`` is saved with: ``None`` keeps the one it has."""
        if self.owner_key is None:
            return None
        value = dict.get(session, self.owner_key)  # not the app's access: no Vary
        return None if value is None else str(value)

    def _encode(self, app: Flask, session: ShmSession) -> bytes:
        data = dict.copy(session)
        if self.serializer is session_json_serializer:
            provider = app.json
            # Flask's tagged JSON, the same bytes (tests/adapter/test_flask_session_format.py),
            # without its Python walk over a session that holds only plain values.
            if type(provider) is DefaultJSONProvider and _untagged(data):
                return json.dumps(data, separators=(",", ":"), ensure_ascii=provider.ensure_ascii,
                                  sort_keys=provider.sort_keys).encode("utf-8")
        text = self.serializer.dumps(data)
        return text.encode("utf-8") if isinstance(text, str) else bytes(text)

    def _decode(self, app: Flask, raw: bytes) -> Any:
        text = raw.decode("utf-8")
        # A tag is a one-key dict whose key starts with a space: in JSON, `" ` after a quote.
        # Text without one decodes to the same thing without Flask's walk that untags.
        if (self.serializer is session_json_serializer and '" ' not in text
                and type(app.json) is DefaultJSONProvider):
            return json.loads(text)
        return self.serializer.loads(text)

    def _cookie_options(self, app: Flask) -> Dict[str, Any]:
        options: Dict[str, Any] = dict(
            domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app),
            secure=self.get_cookie_secure(app),
            samesite=self.get_cookie_samesite(app),
            httponly=self.get_cookie_httponly(app),
        )
        if hasattr(self, "get_cookie_partitioned"):  # Flask 3.1+
            options["partitioned"] = self.get_cookie_partitioned(app)
        return options

    # ------------------------------------------------------------------ Flask's contract
    def open_session(self, app: Flask, request: Request) -> Optional[ShmSession]:
        """The session the request's cookie names, or a new empty one; ``None`` (Flask then
        uses its null session, which refuses writes) when the app has no ``secret_key``."""
        signer = self.get_signer(app)
        if signer is None:
            return None
        cookie = request.cookies.get(self.get_cookie_name(app))
        if not cookie:
            return self.session_class()
        try:
            sid = signer.unsign(cookie, max_age=int(self.lifetime(app))).decode("utf-8")
        except (BadSignature, UnicodeDecodeError):  # tampered, foreign key, or too old
            return self.session_class(stale_cookie=True)
        try:
            raw = self.store.get(sid)
            if raw is None:  # expired, logged out, or never there
                return self.session_class(stale_cookie=True)
            data = self._decode(app, raw)
        except (ValueError, TypeError, KeyError):  # an id the store refuses, or not a session
            return self.session_class(stale_cookie=True)
        if not isinstance(data, dict):
            return self.session_class(stale_cookie=True)
        return self.session_class(data, sid=sid)

    def save_session(
        self, app: Flask, session: Optional[SessionMixin], response: Response
    ) -> None:
        """Write the session if it was modified, renew it if Flask refreshes it, delete it
        (and its cookie) if it ended empty; set ``Vary: Cookie`` if it was accessed.

        On a failing request: what the view put in the session before it raised is saved
        with Flask's 500 answer, record and cookie together, as Flask's own cookie session
        is (Flask saves the session only when it handles the error itself; with
        ``PROPAGATE_EXCEPTIONS``, as in testing, it saves nothing and nothing is written).
        A save that raises (a key the signer cannot use, a session the store refuses)
        leaves the store as it was, with no record that no cookie names; Flask's error
        handler then saves the same session into its 500 answer, and that save does
        nothing, so the error Flask reports is the first one. ``session`` is ``None`` when
        ``open_session`` raised: nothing was opened, nothing is saved.
        """
        if session is None:
            return
        if not isinstance(session, ShmSession):
            raise TypeError(f"ShmSessionInterface saves only ShmSession, not {type(session)}")
        if session.save_failed:
            return
        try:
            self._save(app, session, response)
        except BaseException:
            session.save_failed = True
            raise

    def _save(self, app: Flask, session: ShmSession, response: Response) -> None:
        name = self.get_cookie_name(app)
        options = self._cookie_options(app)
        if session.accessed:
            response.vary.add("Cookie")

        if not session:
            if session.sid is not None and (session.modified or session.rotate):
                self.store.invalidate(session.sid)  # logout: the server-side record goes
                session.sid = None
            if session.stale_cookie or (session.modified and not session.new):
                response.delete_cookie(name, **options)
                response.vary.add("Cookie")
            return

        signer = self.get_signer(app)  # raises on a key it cannot use, before any write
        if signer is None:
            raise RuntimeError("app.secret_key was unset during the request: "
                               "the session cannot be signed")
        ttl = self.lifetime(app)
        if session.modified:  # clear() and regenerate() mark it modified too
            if session.sid is None or session.rotate:
                sid = self._create(self._encode(app, session), ttl, self._owner_of(session))
                try:
                    self._set_cookie(app, signer, sid, session, response, name, options)
                except BaseException:
                    self.store.invalidate(sid)  # no cookie names it
                    raise
                # The old record goes once the new one is stored: a failed login is no logout.
                if session.sid is not None:
                    self.store.invalidate(session.sid)
                session.sid = sid
                return
            if not self.store.replace(session.sid, self._encode(app, session), ttl,
                                      owner=self._owner_of(session)):
                # Deleted meanwhile by another request (a logout): it stays deleted.
                response.delete_cookie(name, **options)
                response.vary.add("Cookie")
                return
        elif self.should_set_cookie(app, session):
            assert session.sid is not None
            if not self.store.touch(session.sid, ttl):
                response.delete_cookie(name, **options)
                response.vary.add("Cookie")
                return
        else:
            return
        self._set_cookie(app, signer, session.sid, session, response, name, options)

    # ------------------------------------------------------------------ store calls
    def _create(self, data: bytes, ttl: float, owner: Optional[str]) -> str:
        for _ in range(_MAX_NEW_IDS):
            sid = self.store.new_id()
            if self.store.add(sid, data, ttl, owner=owner):
                return sid
        raise RuntimeError(f"{_MAX_NEW_IDS} fresh session ids were all taken: is the store sane?")

    def _set_cookie(
        self, app: Flask, signer: TimestampSigner, sid: str, session: ShmSession,
        response: Response, name: str, options: Dict[str, Any],
    ) -> None:
        expires: Optional[datetime] = self.get_expiration_time(app, session)
        response.set_cookie(name, signer.sign(sid).decode("ascii"), expires=expires, **options)
        if not session.accessed:  # else _save has added it (werkzeug parses Vary per access)
            response.vary.add("Cookie")
