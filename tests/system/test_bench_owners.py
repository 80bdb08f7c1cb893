"""benchmarks/bench_owners.py in a quick run over a tiny store: both tables come out with a
row for each store and each kind of write, and it leaves nothing behind (segments,
redis-server, temp dirs)."""

from __future__ import annotations

import re
from pathlib import Path

from tests._bench import run_bench, traces_of

NUMBER = r"[\d,]+(?:\.\d)?"


def test_quick_run_has_both_tables_and_leaves_nothing(redis_socket: str, tmp_path: Path) -> None:
    out = tmp_path / "owners.md"
    run = run_bench("bench_owners.py", "--quick", "--sessions", "500", "--ops", "300",
                    "--keys", "50", "--output", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    table = out.read_text()
    assert table == run.stdout
    assert "each store holds 500 sessions" in table
    for store in ("shared memory", "Redis"):
        assert re.search(rf"^\| {store} \| {NUMBER} \| {NUMBER} \| [\d,]+× \|$", table,
                         re.M), (store, table)
        for kind in ("no owner", "the owner it has", "another owner"):
            assert re.search(rf"^\| {store} \| {kind} \| {NUMBER} \| {NUMBER} \| \d+\.\d\d \|$",
                             table, re.M), (store, kind, table)
    assert "skipped" not in table
    assert "warning: left behind" not in run.stderr, run.stderr
    assert traces_of(f"bench-owners-{run.pid}-") == []
