"""README examples run as written, each in a fresh process, and leave nothing behind.
(Every other block's turn comes with the documentation's own collector; the starsessions
blocks are run by tests/adapter/test_starsessions.py.)"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from shmsession._segment import lock_path, segment_path
from tests._stores import remove_store

README = Path(__file__).resolve().parents[2] / "README.md"


def _block(heading: str) -> str:
    """The one python block of the README section under ``heading``."""
    text = README.read_text(encoding="utf-8")
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, f"the section {heading!r} has one python block"
    return str(blocks[0])


# What each example is run with, after its own code: a check that it did what it says.
FLASK_CHECK = """
from flask import session

@app.get("/")
def count():
    session["n"] = session.get("n", 0) + 1
    return str(session["n"])

client = app.test_client()
assert [client.get("/").text for _ in range(3)] == ["1", "2", "3"]
app.session_interface.store.unlink()
"""

EXAMPLES = [("## Example", ""), ("### Flask: `pip install 'shmsession[flask]'`", FLASK_CHECK)]


@pytest.mark.parametrize("heading,check", EXAMPLES, ids=["core", "flask"])
def test_an_example_runs_as_written_and_removes_its_store(heading: str, check: str) -> None:
    code = _block(heading)
    assert '"myapp"' in code
    # private paths: where the store lives is what the test checks is gone
    existed = os.path.exists(segment_path("myapp"))
    assert not existed, "a store named myapp exists on this host; the test would change it"
    try:
        done = subprocess.run([sys.executable, "-c", code + check], capture_output=True,
                              text=True, timeout=60,
                              env={**os.environ, "SECRET_KEY": secrets.token_hex(32)})
        assert done.returncode == 0, done.stderr
        assert not os.path.exists(segment_path("myapp"))
        assert not os.path.exists(lock_path("myapp"))
    finally:
        remove_store("myapp")
