"""Every code block of the README and of ``docs/`` runs as written, in the order of its page,
each in a fresh process, and a page leaves nothing in /dev/shm.

What a block's language means here:

- ``python``: written to a file in the page's own temp folder and run there by this venv's
  Python, so a module a block wrote (``settings.py``, ``app.py``) imports in the next one;
- ``sh``: run by ``sh -e`` in that folder, with this venv's ``bin`` first on ``PATH`` (so
  ``shmsession`` is the installed command);
- ``text``: output, diagrams and file trees, never run; ``ini`` is parsed (a systemd unit),
  ``toml`` too. Any other language fails the test: each block is one of these.

An HTML comment on the line before a block directs it: ``<!-- file: NAME -->`` writes the
block to NAME in the temp folder instead of running it (a ``gunicorn.conf.py`` the next block
uses), and ``<!-- not run: REASON -->`` leaves it out, with the reason in the source (the
commands that install the package or run this very suite).

Every block runs with ``SECRET_KEY`` (a fresh secret) in its environment, as the docs ask of
the reader, and a page that names ``REDIS_URL`` gets a private redis-server's. A page starts
only if no store it names exists on the host (it would change that store), and whatever store
it leaves behind fails it, after the test has removed it. Pages name their stores ``myapp...``;
the test judges those only.
"""

from __future__ import annotations

import configparser
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Set

import pytest

from shmsession._segment import LOCK_PREFIX, PREFIX, SHM_DIR
from tests._stores import remove_store

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHM = Path(SHM_DIR)
# Pages name their stores myapp, myapp-cache, ...: other tests may make and remove stores of
# their own while a page runs, and those are not the page's to judge or to remove.
STORE_FILE = re.compile(f"(?:{re.escape(PREFIX)}|{re.escape(LOCK_PREFIX)})(myapp[\\w.-]*)")
BLOCK_TIMEOUT = 120  # seconds: a block that starts a server stops it itself

_FENCE = re.compile(
    r"(?:^<!--\s*(?P<directive>[a-z ]+):\s*(?P<arg>.*?)\s*-->\n)?"
    r"^```(?P<lang>[\w-]*)\n(?P<code>.*?)^```$",
    re.M | re.S,
)


@dataclass
class Block:
    line: int
    lang: str
    code: str
    directive: Optional[str]
    arg: str


def blocks(page: Path) -> List[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for m in _FENCE.finditer(text):
        found.append(Block(text.count("\n", 0, m.start("lang")) + 1, m["lang"], m["code"],
                           m["directive"], m["arg"] or ""))
    # every fence was matched: an unclosed or indented one would hide a block
    assert text.count("\n```") + text.startswith("```") == 2 * len(found), (
        f"{page.name}: a code fence that is not closed, or not at the start of a line")
    return found


def store_files() -> Set[str]:
    return {p.name for p in SHM.iterdir() if STORE_FILE.fullmatch(p.name)}


def _store_names(files: Set[str]) -> Set[str]:
    return {m[1] for f in files if (m := STORE_FILE.fullmatch(f))}


def test_every_page_has_blocks_and_each_is_known() -> None:
    """The collector sees the pages it is meant to, and no block slips past it by language."""
    assert (ROOT / "README.md") in PAGES and len(PAGES) > 1
    for page in PAGES:
        for b in blocks(page):
            where = f"{page.relative_to(ROOT)}:{b.line}"
            assert b.lang in ("python", "sh", "text", "ini", "toml"), (
                f"{where}: a block of language {b.lang!r} (give it one the collector knows)")
            assert b.directive in (None, "file", "not run"), f"{where}: {b.directive!r}?"
            if b.directive is not None:
                assert b.arg, f"{where}: a directive needs its argument (the file, the reason)"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_block_of_the_page_runs_as_written(page: Path,
                                                 request: pytest.FixtureRequest) -> None:
    page_blocks = blocks(page)
    text = page.read_text(encoding="utf-8")
    named = set(re.findall(r"""\b(myapp[\w.-]*)""", text))
    taken = named & _store_names(store_files())
    assert not taken, f"stores {sorted(taken)} exist on this host; the page would change them"
    env = {**os.environ, "SECRET_KEY": secrets.token_hex(32),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if "REDIS_URL" in text:
        env["REDIS_URL"] = "unix://" + request.getfixturevalue("redis_socket")
    before = store_files()
    folder = Path(tempfile.mkdtemp(prefix="shmsession-docs-"))
    try:
        for i, b in enumerate(page_blocks):
            where = f"{page.relative_to(ROOT)}:{b.line}"
            if b.directive == "not run" or b.lang == "text":
                continue
            if b.directive == "file":
                (folder / b.arg).write_text(b.code, encoding="utf-8")
            elif b.lang == "ini":
                configparser.ConfigParser(strict=False, interpolation=None).read_string(b.code)
            elif b.lang == "toml":
                tomllib.loads(b.code)
            else:
                if b.lang == "python":
                    script = folder / f"block_{i}_line_{b.line}.py"
                    script.write_text(b.code, encoding="utf-8")
                    argv = [sys.executable, script.name]
                else:
                    argv = ["sh", "-ec", b.code]
                done = subprocess.run(argv, cwd=folder, env=env, capture_output=True,
                                      text=True, timeout=BLOCK_TIMEOUT,
                                      stdin=subprocess.DEVNULL)
                assert done.returncode == 0, (
                    f"{where} ({b.lang}) exited {done.returncode}:\n"
                    f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    finally:
        left = store_files() - before
        for name in _store_names(left):
            remove_store(name)
        shutil.rmtree(folder, ignore_errors=True)
    assert not left, f"{page.relative_to(ROOT)} left {sorted(left)} in /dev/shm"
