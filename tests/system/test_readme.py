"""The README's first example runs as written, in a fresh process, and leaves nothing behind.
(Every other block's turn comes with the documentation's own collector.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from shmsession._segment import lock_path, segment_path
from tests._stores import remove_store

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Example\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Example section has one python block"
    return str(blocks[0])


def test_the_first_example_runs_as_written_and_removes_its_store() -> None:
    code = _example()
    assert 'SessionStorage("myapp"' in code
    # private paths: where the store lives is what the test checks is gone
    existed = os.path.exists(segment_path("myapp"))
    assert not existed, "a store named myapp exists on this host; the test would change it"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert not os.path.exists(segment_path("myapp"))
        assert not os.path.exists(lock_path("myapp"))
    finally:
        remove_store("myapp")
