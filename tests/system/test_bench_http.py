"""benchmarks/bench_http.py, the end-to-end benchmark, in a one-second smoke run: its table
has every variant, each request kept its session, and it leaves nothing behind (servers,
redis-server, temp dirs, shared-memory segments)."""

from __future__ import annotations

import re
from pathlib import Path

from tests._bench import run_bench, traces_of

LABELS = ("Flask signed cookie (floor)", "shmsession, shared memory", "Flask-Session, Redis",
          "shmsession, `RedisSessionStorage`")


def test_quick_run_has_every_variant_and_leaves_nothing(
        redis_socket: str, tmp_path: Path) -> None:
    out = tmp_path / "http.md"
    run = run_bench("bench_http.py", "--quick", "--duration", "1", "--warmup", "0",
                    "--rounds", "1", "--output", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    table = out.read_text()
    assert table == run.stdout
    for label in LABELS:
        row = re.search(rf"^\| {re.escape(label)} \| ([\d,]+) \|", table, re.M)
        assert row is not None, (label, table)
        assert int(row.group(1).replace(",", "")) > 0
    assert "against Flask-Session's Redis backend" in table
    assert "**" not in table, table  # a note in bold: failed requests or sessions lost
    assert "warning: left behind" not in run.stderr, run.stderr
    assert traces_of(f"bench-http-{run.pid}-") == []
