"""The bytes ShmSessionInterface stores are exactly Flask's tagged JSON (what
``flask.sessions.session_json_serializer`` makes and reads), whatever the session holds and
however the app's JSON provider sorts and escapes, so records stay readable by Flask's own
serializer and by any version of the interface."""

from __future__ import annotations

import datetime
from typing import Any, Dict

from flask import Flask
from flask.sessions import session_json_serializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from shmsession import SessionStorage
from shmsession.contrib.flask import ShmSession, ShmSessionInterface

TAG_KEYS = [" t", " di", " b", " m", " u", " d", " x"]  # Flask's tags, and a key that is not
KEYS = st.one_of(st.text(max_size=6), st.sampled_from(TAG_KEYS))
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
    st.sampled_from(['" ', "{\" t\":1}", " lead", "é", "\u2028"]),
)
TAGGED = st.one_of(
    st.binary(max_size=6), st.builds(Markup, st.text(max_size=6)), st.uuids(),
    st.datetimes(timezones=st.just(datetime.timezone.utc)).map(lambda d: d.replace(microsecond=0)),
)
VALUES = st.recursive(
    st.one_of(SCALARS, TAGGED),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(KEYS, inner, max_size=3),
    ),
    max_leaves=8,
)
SESSIONS = st.dictionaries(KEYS, VALUES, max_size=5)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # the store is unused
@given(data=SESSIONS, sort_keys=st.booleans(), ensure_ascii=st.booleans())
def test_stored_bytes_are_flasks_tagged_json(store: SessionStorage, data: Dict[str, Any],
                                             sort_keys: bool, ensure_ascii: bool) -> None:
    app = Flask(__name__)
    app.json.sort_keys = sort_keys  # type: ignore[attr-defined]
    app.json.ensure_ascii = ensure_ascii  # type: ignore[attr-defined]
    iface = ShmSessionInterface(store=store)
    with app.app_context():
        expected = session_json_serializer.dumps(dict(data)).encode("utf-8")
        stored = iface._encode(app, ShmSession(data))  # internals: the bytes a save stores
        assert stored == expected
        assert iface._decode(app, stored) == session_json_serializer.loads(expected.decode())
