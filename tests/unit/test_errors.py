"""The public errors are ``shmsession``'s: they print, pickle and are documented under the
package's name, not under the private module that defines them."""

from __future__ import annotations

import pickle
import subprocess
import sys
import traceback

import pytest

import shmsession
from shmsession import _errors

ERRORS = sorted(_errors.__all__)


def test_every_error_is_exported_by_the_package() -> None:
    assert set(ERRORS) <= set(shmsession.__all__)
    assert {"InvalidOption", "StoreNotFound", "MissingExtra"} <= set(ERRORS)
    for name in ERRORS:
        assert getattr(shmsession, name) is getattr(_errors, name)


@pytest.mark.parametrize("name", ERRORS)
def test_an_error_prints_and_pickles_under_the_package_name(name: str) -> None:
    cls = getattr(shmsession, name)
    assert cls.__module__ == "shmsession"
    try:
        raise cls("what to do about it")
    except cls as e:
        printed = "".join(traceback.format_exception_only(type(e), e))
        assert printed.startswith(f"shmsession.{name}: "), printed
        again = pickle.loads(pickle.dumps(e))
        assert type(again) is cls and again.args == e.args


def test_a_traceback_in_a_fresh_process_names_the_public_class() -> None:
    """What a user sees in a log: the error of a missing session, uncaught."""
    code = (
        "import shmsession\n"
        "raise shmsession.SessionNotFound('no session with that id')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "shmsession.SessionNotFound: no session with that id"
    ), done.stderr
