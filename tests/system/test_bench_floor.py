"""benchmarks/bench_floor.py in a quick run over a small store: the table has the flock floor
and every op for each build this process has (both, unless it runs the pure build), the two
targets come out as met or not met lines, the reads of random sessions as the store grows
have a row per store size and a line per build, and it leaves nothing behind."""

from __future__ import annotations

import re
from pathlib import Path

from shmsession._build import BUILD
from tests._bench import run_bench, traces_of

FIGURE = r"\d+\.\d\d \(\d+\.\d\d\) \| \d+\.\d\d"  # µs, best (median) | cycles
OPS = ("read, hot session", "write over an existing session", "write of a new id (insert)",
       "touch", "invalidate + write of the same id (the pair)")


def test_quick_run_has_the_floor_both_builds_and_the_targets(tmp_path: Path) -> None:
    out = tmp_path / "floor.md"
    run = run_bench("bench_floor.py", "--quick", "--number", "300", "--sessions", "100",
                    "--scaling", "200,2000", "--reads", "2000", "--output", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    table = out.read_text()
    assert table == run.stdout
    assert f"this process's build: {BUILD}" in table
    builds = 2 if BUILD == "compiled" else 1
    assert re.search(r"^\| `flock` LOCK_EX \+ LOCK_UN \(the floor: 1 cycle\) \| "
                     + r" \| ".join([r"\d+\.\d\d \(\d+\.\d\d\) \| 1\.00"] * builds), table, re.M)
    for op in OPS:
        ratio = r" \| \d+\.\d\dx" if builds == 2 else ""
        assert re.search(rf"^\| {re.escape(op)} \| " + r" \| ".join([FIGURE] * builds)
                         + ratio + r" \|$", table, re.M), (op, table)
    for target in (r"a hot read ≤ 0\.7 cycles", r"a write over an existing session ≤ 3 cycles"):
        if builds == 2:
            line = rf"^- {target}: \*\*(met|not met)\*\*, \d+\.\d\d cycles \(\d+\.\d\d µs; " \
                   r"the pure build: \d+\.\d\d cycles\)$"
        else:
            line = rf"^- {target}: \*\*not measured\*\* \(no compiled build in this process\)$"
        assert re.search(line, table, re.M), (target, table)
    # the scaling part: a row per store size, with the loop and each build's reads
    for keys in ("200", "2,000"):
        assert re.search(rf"^\| {keys} \| \d+ \| " + r" \| ".join([r"\d+ \| -?\d+"] * builds)
                         + r" \|$", table, re.M), (keys, table)
    for build in ("compiled", "pure")[2 - builds:]:
        assert re.search(rf"^- {build}: reads at 2,000 sessions run at \d+% of the rate at "
                         r"200; the store's own part of a read, at -?\d+%$", table, re.M), table
    assert "warning: left behind" not in run.stderr, run.stderr
    assert traces_of(f"bench-floor-{run.pid}-") == []
