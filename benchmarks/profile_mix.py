#!/usr/bin/env python3
"""Where a mixed read/write cell's time goes: lock waits and reads off the straight path.

One cell of ``bench_peers.py`` (N processes, a share of writes, one value size) run on
shmsession alone, with two counters that the peers harness cannot have: each process times
``StoreLock._spin_until_free`` (how long its writers try for a busy lock before getting it
or sleeping in ``flock``) and counts the reads that leave ``Reader.find``'s straight path
for ``Reader._peek`` (a writer was at work, or the entry is not at its home slot). It prints, per run,
aggregate ops/s, p50/p99 of reads and writes, and per process the lock waits (a read that
falls back to the lock can wait too), the time spent trying, the wall time of the timed loop
and the reads that went to ``_peek``.

    .venv/bin/python benchmarks/profile_mix.py                     # 4 processes, 50/50, 1 KiB
    .venv/bin/python benchmarks/profile_mix.py --procs 2 --writes 10 --runs 5

Every run makes its own segment and unlinks it in ``finally``. The counters wrap two private
methods of this checkout, so the script measures the code it sits beside.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import random
import secrets
import sys
import time
from array import array
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shmsession import SessionStorage  # noqa: E402
from shmsession import _lock, _reader  # noqa: E402

READY_TIMEOUT = 60.0


def instrument() -> dict[str, int]:
    """Wrap the two private methods in this process; returns the live counters."""
    counts = {"spin_ns": 0, "spins": 0, "slow_reads": 0}
    spin = _lock.StoreLock._spin_until_free
    peek = _reader.Reader._peek

    def timed_spin(self: _lock.StoreLock, fd: int) -> bool:
        t0 = time.perf_counter_ns()
        try:
            return spin(self, fd)
        finally:
            counts["spin_ns"] += time.perf_counter_ns() - t0
            counts["spins"] += 1

    def counted_peek(self: _reader.Reader, digest: bytes) -> object:
        counts["slow_reads"] += 1
        return peek(self, digest)

    _lock.StoreLock._spin_until_free = timed_spin  # type: ignore[method-assign]
    _reader.Reader._peek = counted_peek  # type: ignore[method-assign]
    return counts


def worker(name: str, ids: list[str], args: argparse.Namespace, seed: int, results: Any,
           go: Any) -> None:
    try:
        counts = instrument()
        s = SessionStorage(name)
        try:
            rng = random.Random(seed)
            keys = rng.choices(ids, k=args.ops)
            writes = [rng.random() * 100 < args.writes for _ in range(args.ops)]
            value = os.urandom(args.size)
            for k in ids:  # first touch of every page, untimed
                s.get(k)
            results.put(("ready", None))
            if not go.wait(READY_TIMEOUT):
                raise RuntimeError("never told to start")
            for c in counts:
                counts[c] = 0
            lat_r = array("q")
            lat_w = array("q")
            now = time.perf_counter_ns
            gc.disable()
            start = now()
            for k, w in zip(keys, writes):
                if w:
                    t0 = now()
                    s.write(k, value)
                    lat_w.append(now() - t0)
                else:
                    t0 = now()
                    s.get(k)
                    lat_r.append(now() - t0)
            end = now()
            gc.enable()
        finally:
            s.close()
        results.put(("done", (lat_r.tobytes(), lat_w.tobytes(), start, end, dict(counts))))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        results.put(("error", repr(exc)))


def pct(xs: list[int], q: float) -> float:
    return xs[min(len(xs) - 1, int(len(xs) * q))] / 1e3 if xs else 0.0


def run_once(args: argparse.Namespace) -> str:
    ctx = mp.get_context("fork")
    name = f"profile-{os.getpid()}-{secrets.token_hex(4)}"
    ids = [secrets.token_urlsafe(32) for _ in range(args.keys)]
    s = SessionStorage(name, size=max(64 << 20, args.keys * (args.size + 512) * 2),
                       max_entries=2 * args.keys, when_full="raise")
    procs = []
    try:
        value = os.urandom(args.size)
        for k in ids:
            s.write(k, value)
        results = ctx.Queue()
        go = ctx.Event()
        procs = [ctx.Process(target=worker, args=(name, ids, args, 1000 + i, results, go),
                             daemon=True) for i in range(args.procs)]
        for p in procs:
            p.start()
        for _ in procs:
            kind, payload = results.get(timeout=READY_TIMEOUT)
            if kind != "ready":
                raise RuntimeError(f"worker failed: {payload}")
        go.set()
        done = []
        for _ in procs:
            kind, payload = results.get(timeout=READY_TIMEOUT + 120)
            if kind != "done":
                raise RuntimeError(f"worker failed: {payload}")
            done.append(payload)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
        s.unlink()
        s.close()
    reads: list[int] = []
    writes: list[int] = []
    for r, w, *_ in done:
        reads.extend(array("q", r))
        writes.extend(array("q", w))
    reads.sort()
    writes.sort()
    span = max(d[3] for d in done) - min(d[2] for d in done)
    lines = [f"{(len(reads) + len(writes)) / span * 1e9:,.0f} ops/s | read p50 "
             f"{pct(reads, .5):.1f} p99 {pct(reads, .99):.1f} µs | write p50 "
             f"{pct(writes, .5):.1f} p99 {pct(writes, .99):.1f} µs"]
    for i, (r, w, start, end, c) in enumerate(done):
        nr, nw = len(r) // 8, len(w) // 8
        lines.append(f"  process {i}: {c['spins']:,} lock waits ({nw:,} writes), "
                     f"{c['spin_ns'] / 1e6:.1f} ms trying; {(end - start) / 1e6:.1f} ms "
                     f"timed; {c['slow_reads']:,} of {nr:,} reads went to _peek")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--writes", type=float, default=50.0, help="percent of ops that write")
    ap.add_argument("--size", type=int, default=1024, help="value bytes")
    ap.add_argument("--ops", type=int, default=20_000, help="ops per process")
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    if not (args.procs >= 1 and 0 <= args.writes <= 100 and args.size >= 1
            and 1 <= args.ops <= 10_000_000 and 1 <= args.keys <= 1_000_000
            and 1 <= args.runs <= 100):
        ap.error("out of range: procs >= 1, 0 <= writes <= 100, size >= 1, ops and keys >= 1")
    print(f"{args.procs} processes, {args.writes:g}% writes, {args.size} B values, "
          f"{args.keys:,} sessions, {args.ops:,} ops each; nproc {os.cpu_count()}")
    for k in range(args.runs):
        print(f"run {k + 1}: {run_once(args)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
