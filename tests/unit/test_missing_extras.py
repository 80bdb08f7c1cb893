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
