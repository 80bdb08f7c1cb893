"""Optional dependencies stay optional: importing an adapter (or the Redis store) without its
framework raises ``MissingExtra``, an ``ImportError`` naming what is missing and the extra
that installs it. Each case runs in a fresh interpreter in which the framework cannot be
imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

CASES = [
    # (module imported, top-level module made unimportable, extra, name of what is missing)
    ("shmsession.contrib.django", "django", "django", "django"),
    ("shmsession.contrib.flask", "flask", "flask", "flask"),
    ("shmsession.contrib.cachelib", "cachelib", "cachelib", "cachelib"),
    ("shmsession.contrib.starsessions", "starsessions", "starlette", "starsessions"),
    ("shmsession.contrib.aiohttp", "aiohttp_session", "aiohttp", "aiohttp-session"),
    ("shmsession.redis", "redis", "redis", "redis-py"),
]

SCRIPT = """\
import sys
sys.modules[{blocked!r}] = None  # what an environment without it looks like
from shmsession import MissingExtra
try:
    import {module}
except ImportError as e:
    assert isinstance(e, MissingExtra), type(e)
    print(e)
else:
    raise SystemExit('imported {module} without {blocked}')
"""


@pytest.mark.parametrize("module,blocked,extra,missing", CASES, ids=[c[2] for c in CASES])
def test_a_missing_extra_is_named(module: str, blocked: str, extra: str, missing: str) -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(module=module, blocked=blocked)],
                         capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"pip install 'shmsession[{extra}]'" in out.stdout, out.stdout
    assert missing in out.stdout.split(" is not installed")[0], out.stdout


DEMO_WITHOUT_GUNICORN = """\
import sys
sys.modules["gunicorn"] = None  # a plain `pip install .`: no gunicorn
from shmsession.{entry} import main
sys.exit(main({argv}))
"""


@pytest.mark.parametrize("entry,argv,status", [("cli", ["demo"], 1), ("demo", [], 2)])
def test_the_demo_without_gunicorn_names_its_extra_and_starts_nothing(
    entry: str, argv: list, status: int
) -> None:
    """``shmsession demo`` (status 1, a problem: 2 is the command's usage error) and
    ``python -m shmsession.demo`` (status 2, "could not run") say what to install, before a
    store is made or a server started."""
    out = subprocess.run(
        [sys.executable, "-c", DEMO_WITHOUT_GUNICORN.format(entry=entry, argv=argv)],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
    )
    assert out.returncode == status, out.stdout + out.stderr
    assert "pip install 'shmsession[demo]'" in out.stderr, out.stderr
    assert "gunicorn" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert "started gunicorn" not in out.stdout and "store" not in out.stdout, out.stdout


def test_the_demo_under_the_command_names_itself_shmsession_demo() -> None:
    out = subprocess.run([sys.executable, "-m", "shmsession", "demo", "--help"],
                         capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: shmsession demo "), out.stdout
    alone = subprocess.run([sys.executable, "-m", "shmsession.demo", "--help"],
                           capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert alone.stdout.startswith("usage: python -m shmsession.demo "), alone.stdout
