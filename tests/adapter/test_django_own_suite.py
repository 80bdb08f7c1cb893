"""Django's own cache and session tests, unchanged, on shmsession.

The ``tests/`` folder of the installed Django's source distribution (``cache/`` and
``sessions_tests/``, fetched with pip once per test run) runs in a subprocess under Django's
``DiscoverRunner`` (``django_suite/run.py``): ``BaseCacheTests`` on ``ShmCache`` and
``SessionTestsMixin`` on the session engine, declared as Django declares its own backends
(``django_suite/shm_suite.py``), and Django's own ``CacheSessionTests``, ``CacheDBSessionTests``
(also with time zones) and ``SessionMiddlewareTests`` as they are, with ShmCache as the default
cache and the session engine as ``SESSION_ENGINE`` (``django_suite/suite_settings.py``).

Each class's outcome is pinned: the tests that fail or skip are listed below by name, with the
reason they do not apply to a shared store, and any other failure, or a listed test that starts
to pass, fails here.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, NamedTuple

import pytest

from tests._stores import remove_store

SUITE_DIR = Path(__file__).resolve().parent / "django_suite"
#: The folders of Django's ``tests/`` that the suites import.
DJANGO_TEST_APPS = ("cache", "sessions_tests")

CULL = ("Culling isn't implemented.", "Django's own skip for a backend without its MAX_ENTRIES "
        "and CULL_FREQUENCY options (as Redis and memcached): the store evicts by itself "
        "(max_entries, when_full), least recently used first, not a third at a time")


class Expected(NamedTuple):
    """What one Django test class does on shmsession: at least ``min_run`` tests run, and
    exactly these fail (name: why it cannot apply) and skip (name: (Django's reason, why))."""

    min_run: int
    failing: Dict[str, str]
    skipped: Dict[str, Any]


EXPECTED = {
    "shm_suite.ShmCacheTests": Expected(50, {}, {
        "test_cull": CULL, "test_zero_cull": CULL, "test_cull_delete_when_store_empty": CULL,
    }),
    "shm_suite.ShmSessionTests": Expected(60, {}, {}),
    "sessions_tests.tests.CacheSessionTests": Expected(60, {}, {}),
    "sessions_tests.tests.CacheDBSessionTests": Expected(60, {}, {}),
    "sessions_tests.tests.CacheDBSessionWithTimeZoneTests": Expected(60, {}, {}),
    "sessions_tests.tests.SessionMiddlewareTests": Expected(10, {
        "test_empty_session_saved": "reads the session back from the database engine's "
        "django_session table (Session.objects.get), which a store outside the database "
        "never writes",
    }, {}),
}


@pytest.fixture(scope="module")
def django_tests() -> Iterator[Path]:
    """Django's ``tests/`` folder, with the apps the suites import, for the installed Django."""
    version = importlib.metadata.version("django")
    with tempfile.TemporaryDirectory(prefix="shmsession-django-tests-") as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", f"django=={version}", "-d", tmp],
            check=True, stdout=subprocess.DEVNULL,
        )
        [sdist] = Path(tmp).glob("*.tar.gz")
        wanted = tuple(f"/tests/{app}/" for app in DJANGO_TEST_APPS)
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                if member.isfile() and any(w in member.name for w in wanted):
                    dest = Path(tmp, *member.name.split("/"))
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
        sdist.unlink()
        [tests_dir] = Path(tmp).glob("*/tests")
        yield tests_dir


@pytest.fixture(scope="module")
def outcome(django_tests: Path) -> Iterator[Dict[str, Any]]:
    """What each test did, as ``django_suite/run.py`` writes it, from one run of every class
    in ``EXPECTED`` on fresh stores (removed afterwards)."""
    prefix = f"t-{os.getpid()}-djsuite-{uuid.uuid4().hex[:8]}"
    stores = {"SHMSESSION_SUITE_CACHE": f"{prefix}-cache",
              "SHMSESSION_SUITE_SESSIONS": f"{prefix}-sessions"}
    try:
        with tempfile.TemporaryDirectory(prefix="shmsession-django-suite-") as tmp:
            out = Path(tmp) / "outcome.json"
            env = dict(os.environ, SHMSESSION_SUITE_DB_DIR=tmp, PYTHONDONTWRITEBYTECODE="1",
                       **stores)
            run = subprocess.run(
                [sys.executable, str(SUITE_DIR / "run.py"), str(django_tests), str(out),
                 *EXPECTED],
                env=env, capture_output=True, text=True, timeout=120,
            )
            assert out.exists(), f"the suite did not run:\n{run.stdout}\n{run.stderr}"
            result: Dict[str, Any] = json.loads(out.read_text())
            result["log"] = run.stderr
            yield result
    finally:
        for name in stores.values():
            remove_store(name)


@pytest.mark.parametrize("test_class", list(EXPECTED))
def test_django_own_tests(outcome: Dict[str, Any], test_class: str) -> None:
    expected = EXPECTED[test_class]

    def in_class(ids: Any) -> Dict[str, str]:
        """``{method name: text}`` for the ids that belong to ``test_class``."""
        items = ids.items() if isinstance(ids, dict) else ((i, "") for i in ids)
        return {i[len(test_class) + 1:]: text for i, text in items
                if i.rpartition(".")[0] == test_class}

    run = in_class(outcome["run"])
    failing = {**in_class(outcome["failures"]), **in_class(outcome["errors"]),
               **in_class(outcome["unexpected_successes"])}
    skipped = in_class(outcome["skipped"])
    assert len(run) >= expected.min_run, f"{test_class}: {len(run)} tests ran\n{outcome['log']}"
    assert not in_class(outcome["expected_failures"])
    unexpected = {k: v for k, v in failing.items() if k not in expected.failing}
    assert not unexpected, "\n".join(f"{test_class}.{k}:\n{v}" for k, v in unexpected.items())
    assert set(failing) == set(expected.failing), "a listed failure now passes: unlist it"
    assert skipped == {k: reason for k, (reason, _) in expected.skipped.items()}


def test_no_failure_outside_the_test_methods(outcome: Dict[str, Any]) -> None:
    """A class or module that fails as a whole (``setUpClass``, an import, the test database)
    reports under an id of no test method; none may."""
    ids = set(outcome["run"])
    stray = [i for kind in ("failures", "errors") for i in outcome[kind] if i not in ids]
    assert not stray, "\n".join(f"{i}:\n{outcome['errors'].get(i) or outcome['failures'][i]}"
                                for i in stray)
