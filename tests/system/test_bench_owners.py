"""benchmarks/bench_owners.py in a quick run over a tiny store: both tables come out with a
row for each store and each kind of write, and it leaves nothing behind (segments,
redis-server, temp dirs)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.system.test_bench_http import traces_of

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_owners.py"
NUMBER = r"[\d,]+(?:\.\d)?"


def test_quick_run_has_both_tables_and_leaves_nothing(redis_socket: str, tmp_path: Path) -> None:
    out = tmp_path / "owners.md"
    proc = subprocess.Popen(
        [sys.executable, str(BENCH), "--quick", "--sessions", "500", "--ops", "300",
         "--keys", "50", "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=100)
    finally:
        if proc.poll() is None:
            proc.kill()  # its finally blocks do not run; the traces check below says so
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    table = out.read_text()
    assert table == stdout
    assert "each store holds 500 sessions" in table
    for store in ("shared memory", "Redis"):
        assert re.search(rf"^\| {store} \| {NUMBER} \| {NUMBER} \| [\d,]+× \|$", table,
                         re.M), (store, table)
        for kind in ("no owner", "the owner it has", "another owner"):
            assert re.search(rf"^\| {store} \| {kind} \| {NUMBER} \| {NUMBER} \| \d+\.\d\d \|$",
                             table, re.M), (store, kind, table)
    assert "skipped" not in table
    assert "warning: left behind" not in stderr, stderr
    assert traces_of(f"bench-owners-{proc.pid}-") == []
