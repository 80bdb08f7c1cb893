"""The documentation site builds with ``mkdocs build --strict`` (warnings are errors), and its
API reference, generated from the docstrings, documents the whole public surface: every name
of ``shmsession.__all__``, every public member of the stores, and the adapters' classes and
functions. The members are read from the classes themselves, so a method added without a
docstring (which the reference would leave out) fails here."""

from __future__ import annotations

import asyncio
import html
import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

import shmsession
from shmsession import SessionStorage, _errors
from shmsession.aio import AsyncSessionStorage
from shmsession.redis import AsyncRedisSessionStorage, RedisSessionStorage
from tests._stores import REDIS_SECRET

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ["django", "flask", "cachelib", "starsessions", "aiohttp", "gunicorn"]
# What the brief of the API reference named, beside what is computed from the classes below.
NAMED = ["replace", "exists", "created", "read", "write", "invalidate", "touch", "stats",
         "sessions", "dump", "load", "close"]


def mkdocs_build(cwd: Path, site: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", *flags, "--site-dir", site],
        cwd=cwd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def api_ids() -> Set[str]:
    """The anchors of the built API page: one per documented object, by its full path."""
    with tempfile.TemporaryDirectory(prefix="shmsession-docs-") as site:
        done = mkdocs_build(ROOT, site, "--strict")
        assert done.returncode == 0, done.stderr
        page = (Path(site) / "api" / "index.html").read_text(encoding="utf-8")
    return {html.unescape(i) for i in re.findall(r'\bid="([^"]+)"', page)}


def public(cls: type, *instances: object) -> List[str]:
    """The public members of ``cls``, and the public attributes its instances set."""
    names = {n for n in dir(cls) if not n.startswith("_")}
    for instance in instances:
        names.update(n for n in vars(instance) if not n.startswith("_"))
    return sorted(names)


def added(cls: type) -> List[str]:
    """The public members an adapter class adds to its framework's base class (the members
    it overrides are the framework's, and documented there)."""
    return sorted(n for n in vars(cls) if not n.startswith("_")
                  and not any(hasattr(base, n) for base in cls.__mro__[1:]))


def missing(ids: Set[str], path: str, names: List[str]) -> List[str]:
    assert names, path
    return [f"{path}.{n}" for n in names if f"{path}.{n}" not in ids]


def test_every_public_name_and_error_is_documented(api_ids: Set[str]) -> None:
    assert missing(api_ids, "shmsession", list(shmsession.__all__)) == []
    assert missing(api_ids, "shmsession", list(_errors.__all__)) == []  # as shmsession.X


def test_every_public_member_of_the_shared_memory_stores_is_documented(
    api_ids: Set[str], store: SessionStorage
) -> None:
    assert missing(api_ids, "shmsession.SessionStorage", NAMED) == []
    assert missing(api_ids, "shmsession.SessionStorage", public(SessionStorage, store)) == []
    wrapped = AsyncSessionStorage(store)
    assert missing(api_ids, "shmsession.aio.AsyncSessionStorage",
                   public(AsyncSessionStorage, wrapped)) == []


def test_every_public_member_of_the_redis_stores_is_documented(
    api_ids: Set[str], redis_socket: str
) -> None:
    url = f"unix://{redis_socket}"
    sync = RedisSessionStorage("t-docs", url, secret=REDIS_SECRET)  # connects on first use
    asynchronous = AsyncRedisSessionStorage("t-docs", url, secret=REDIS_SECRET)
    try:
        assert missing(api_ids, "shmsession.redis.RedisSessionStorage",
                       public(RedisSessionStorage, sync)) == []
        assert missing(api_ids, "shmsession.redis.AsyncRedisSessionStorage",
                       public(AsyncRedisSessionStorage, asynchronous)) == []
    finally:
        sync.close()
        asyncio.run(asynchronous.close())


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_every_public_class_and_function_of_an_adapter_is_documented(
    api_ids: Set[str], adapter: str
) -> None:
    path = f"shmsession.contrib.{adapter}"
    module = importlib.import_module(path)
    own = [n for n in module.__all__ if getattr(module, n).__module__ == path]  # not Store
    assert missing(api_ids, path, own) == []
    for name in own:
        obj = getattr(module, name)
        if inspect.isclass(obj) and added(obj):
            assert missing(api_ids, f"{path}.{name}", added(obj)) == []


# ---------------------------------------------------------------------------------------------
# Warnings are errors: the same configuration, on a copy of the docs with one fault, fails
# (built without --strict: mkdocs.yml's own ``strict: true`` is what must fail it)
# ---------------------------------------------------------------------------------------------

# A fault written into a page, and what the warning it draws names.
FAULTS: Dict[str, Tuple[str, str]] = {
    "broken link": ("[a page that is not there](no-such-page.md)", "no-such-page.md"),
    "unknown cross-reference": ("[the store][shmsession.NoSuchStore]", "shmsession.NoSuchStore"),
}


@pytest.fixture
def docs_copy() -> Iterator[Path]:
    """The site's sources in a temp folder (the package by a link): what ``mkdocs build``
    reads, and nothing it writes lands in the worktree."""
    with tempfile.TemporaryDirectory(prefix="shmsession-docs-") as tmp:
        copy = Path(tmp)
        shutil.copy(ROOT / "mkdocs.yml", copy)
        shutil.copy(ROOT / "CHANGELOG.md", copy)
        shutil.copytree(ROOT / "benchmarks" / "results", copy / "benchmarks" / "results")
        shutil.copytree(ROOT / "docs", copy / "docs")
        shutil.copytree(ROOT / "scripts", copy / "scripts")
        os.symlink(ROOT / "shmsession", copy / "shmsession")
        yield copy


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_warning_fails_the_build(docs_copy: Path, fault: str) -> None:
    site = str(docs_copy / "site")
    clean = mkdocs_build(docs_copy, site)
    assert clean.returncode == 0, clean.stderr  # the copy itself builds
    text, named = FAULTS[fault]
    index = docs_copy / "docs" / "index.md"
    index.write_text(index.read_text(encoding="utf-8") + f"\n{text}\n", encoding="utf-8")
    broken = mkdocs_build(docs_copy, site)
    assert broken.returncode != 0
    warnings = [line for line in broken.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and named in warnings[0], broken.stderr
    assert "Aborted with 1 warnings in strict mode" in broken.stdout
