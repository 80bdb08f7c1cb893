"""benchmarks/bench_store.py in a quick run over a small keyspace: the table has a row for
each build of shmsession (``shmsession``, this process's build, and ``shmsession-pure``) in
every cell, says which build ran, and the run leaves nothing behind."""

from __future__ import annotations

import re
from pathlib import Path

from shmsession._build import BUILD
from tests._bench import run_bench, traces_of


def test_quick_run_has_both_builds_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "store.md"
    run = run_bench("bench_store.py", "--quick", "--ops", "200", "--rounds", "1", "--keys",
                    "500", "--sizes", "1024", "--procs", "1",
                    "--stores", "shmsession,shmsession-pure,baseline", "--output", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    table = out.read_text()
    assert table == run.stdout
    assert f"`shmsession` is this process's build ({BUILD})" in table
    for op in ("read", "write"):
        for store in ("shmsession", "shmsession-pure"):
            assert re.search(rf"^\| {op} \| 1 KiB \| 1 \| {store} \| \d+\.\d\d \|.* \| "
                             r"\d+\.\d\dx \|$", table, re.M), (op, store, table)
    assert "**" not in table, table  # a note in bold: reads that missed
    assert "warning: left behind" not in run.stderr, run.stderr
    assert traces_of(f"bench-{run.pid}-") == []
