"""benchmarks/bench_peers.py in a quick run of shmsession's two builds beside Redis (the peers
the test environment has): both builds' rows in the main cells and the scaling run, the
verdict on issue 15's targets for each, and nothing left behind."""

from __future__ import annotations

import re
from pathlib import Path

from tests._bench import run_bench, traces_of

RATIO = r"\d+\.\d\dx \(\d+\.\d\d–\d+\.\d\d\)"
VERDICT = r"(yes|\*\*no\*\*)"
MET = r"(met|\*\*not met\*\*)"
MISSED = r"(?: \(not in [^)]+\))?"  # the cells that miss a target, if any


def test_quick_run_judges_both_builds_and_leaves_nothing(redis_socket: str,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "peers.md"
    run = run_bench("bench_peers.py", "--quick", "--ops", "200", "--keys", "500", "--sizes",
                    "1024", "--procs", "1,4", "--mixes", "50",
                    "--stores", "shmsession,shmsession_pure,redis", "--scaling", "500,1000",
                    "--scaling-stores", "shmsession,shmsession_pure", "--no-contention",
                    "--output", str(out), "--chart", str(tmp_path / "peers.png"))
    assert run.returncode == 0, run.stderr[-3000:]
    table = out.read_text()
    assert table == run.stdout
    for store in ("shmsession", "shmsession-pure"):
        for procs in (1, 4):
            assert re.search(rf"^\| 1 KiB \| 50/50 \| {procs} \| \*\*{store}\*\* \|", table,
                             re.M), (store, procs, table)
            # ops/s | ÷ lmdb (no LMDB here) | ÷ redis | ÷ pure | p99 | the three verdicts
            vs_pure = "-" if store == "shmsession-pure" else RATIO
            p99 = VERDICT if procs == 4 else "-"
            assert re.search(rf"^\| 1 KiB \| 50/50 \| {procs} \| {store} \| [\d,]+ \| - \| "
                             rf"{RATIO} \| {vs_pure} \| \d+\.\d \| - \| {VERDICT} \| {p99} \|$",
                             table, re.M), (store, procs, table)
        for keys in ("500", "1,000"):
            assert re.search(rf"^\| {keys} \| {store} \|", table, re.M), (store, keys, table)
        assert re.search(rf"^\| {store} \| [\d,]+ \| [\d,]+ \| \d+% \| {VERDICT} \|$", table,
                         re.M), (store, table)
        assert re.search(rf"^- \*\*{store}\*\*: ≥ 1\.2x lmdb: not measured; "
                         rf"≥ 10x redis: {MET}, in \d of 2 cells{MISSED}; "
                         rf"p99 ≤ 30 µs at 4 processes: {MET}, in \d of 1 cell{MISSED}; "
                         rf"reads at the largest keyspace ≥ 85% of the smallest: {MET}\.$",
                         table, re.M), (store, table)
    assert "reads missed" not in table, table
    assert "warning: left behind" not in run.stderr, run.stderr
    assert traces_of(f"bench-{run.pid}-") == []
