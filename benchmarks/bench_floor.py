#!/usr/bin/env python3
"""Benchmark one store call of each build against the floor under every write: one
``fcntl.flock`` LOCK_EX + LOCK_UN cycle on the store's open descriptor, measured in the same run.

One process, one store, two handles on it: one on the compiled hot path (``shmsession._hot``)
and one put on the pure-Python path after it is opened (``store._hot = None``, which is the
path every call of the pure build takes). Each op runs as timeit runs a statement: a loop of
``--number`` calls with the garbage collector off, repeated ``--repeats`` times; the figure is
the best repeat, divided by ``--number``. The builds alternate within every repeat (and which
one goes first alternates between repeats), and the flock cycle is timed in every repeat too,
so drift of the shared machine reaches all of them alike. A "cycle" is an op's best time
divided by the flock cycle's best time.

Ops, on a store holding ``--sessions`` sessions of ``--size`` bytes: a read of one hot
session, a write over it (the journaled in-place overwrite), a write of a new id (an insert;
the batch is deleted again, untimed, after each repeat), a touch, and an invalidate followed
by a write of the same id (a pair, timed together).

A second part reads random sessions as the store grows (``--scaling``, default 1,000 and
100,000 sessions): one loop over a fixed random sequence of the store's ids per build, and the
same loop calling ``len`` on each id instead of the store, which is what the loop itself costs
as the ids it walks leave the caches (a benchmark's ids are cold in a large keyspace; a
request's id, fresh from its cookie, is not).

Run ``python benchmarks/bench_floor.py --quick`` for a smoke run of a few seconds; see
README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import gc
import os
import platform
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_store import fmt_size, publish, remove_leftovers, sigterm_exits, version

HERE = Path(__file__).resolve().parent
MIB = 2**20
BUILDS = ("compiled", "pure")
FLOOR = "flock"
# Issue 15's targets for the compiled build, in flock cycles of the same run.
READ_TARGET = 0.7
WRITE_TARGET = 3.0

# An op's batch: (store, the hot id, fresh ids, value) -> nanoseconds for len(fresh) calls.
Batch = Callable[[Any, str, Sequence[str], bytes], int]


@dataclass(frozen=True)
class Op:
    key: str
    label: str
    batch: Batch
    inserts: bool = False  # the batch writes the fresh ids, deleted again after it


def _read(store: Any, hot: str, fresh: Sequence[str], value: bytes) -> int:
    read = store.read
    t0 = time.perf_counter_ns()
    for _ in fresh:
        read(hot)
    return time.perf_counter_ns() - t0


def _overwrite(store: Any, hot: str, fresh: Sequence[str], value: bytes) -> int:
    write = store.write
    t0 = time.perf_counter_ns()
    for _ in fresh:
        write(hot, value)
    return time.perf_counter_ns() - t0


def _insert(store: Any, hot: str, fresh: Sequence[str], value: bytes) -> int:
    write = store.write
    t0 = time.perf_counter_ns()
    for sid in fresh:
        write(sid, value)
    return time.perf_counter_ns() - t0


def _touch(store: Any, hot: str, fresh: Sequence[str], value: bytes) -> int:
    touch = store.touch
    t0 = time.perf_counter_ns()
    for _ in fresh:
        touch(hot)
    return time.perf_counter_ns() - t0


def _invalidate_rewrite(store: Any, hot: str, fresh: Sequence[str], value: bytes) -> int:
    invalidate, write = store.invalidate, store.write
    t0 = time.perf_counter_ns()
    for _ in fresh:
        invalidate(hot)
        write(hot, value)
    return time.perf_counter_ns() - t0


def _flock(store: Any, hot: str, fresh: Sequence[str], value: bytes) -> int:
    # The store's own descriptor, as its lock uses it; nothing holds the lock meanwhile (one
    # thread, between calls), so every LOCK_EX is granted at once.
    fd, flock, ex, un = store._seg.fd, fcntl.flock, fcntl.LOCK_EX, fcntl.LOCK_UN
    t0 = time.perf_counter_ns()
    for _ in fresh:
        flock(fd, ex)
        flock(fd, un)
    return time.perf_counter_ns() - t0


FLOOR_OP = Op(FLOOR, "`flock` LOCK_EX + LOCK_UN (the floor: 1 cycle)", _flock)
OPS = (
    Op("read", "read, hot session", _read),
    Op("write", "write over an existing session", _overwrite),
    Op("insert", "write of a new id (insert)", _insert, inserts=True),
    Op("touch", "touch", _touch),
    Op("rewrite", "invalidate + write of the same id (the pair)", _invalidate_rewrite),
)


@contextlib.contextmanager
def handles(tag: str, sessions: int, number: int, size: int) -> Iterator[dict[str, Any]]:
    """One store filled with ``sessions`` sessions, and a handle on it per build there is:
    ``{"compiled": ..., "pure": ...}`` (no "compiled" when this process runs the pure build)."""
    from shmsession import SessionStorage

    # Room for the sessions and one batch of inserts; "raise", so that a store too small fails
    # rather than evicts (an eviction would change what is measured).
    entries = sessions + number + 1024
    seg_size = max(32 * MIB, -(-int(entries * (size + 512) * 1.6) // MIB) * MIB)
    name = f"{tag}{secrets.token_hex(4)}"
    store = SessionStorage(name, size=seg_size, max_entries=entries, when_full="raise")
    opened = [store]
    try:
        value = os.urandom(size)
        for _ in range(sessions):
            store.write(SessionStorage.new_id(), value)
        pure = SessionStorage(name)
        opened.append(pure)
        pure._hot = None  # every fast path in store.py is guarded by `if hot is not None`
        yield {"pure": pure} if store._hot is None else {"compiled": store, "pure": pure}
    finally:
        try:
            store.unlink()
        finally:
            for handle in opened:
                handle.close()


def measure(args: argparse.Namespace, tag: str) -> tuple[dict[tuple[str, str], list[float]], int]:
    """Per (op, build), every repeat's ns per call (the floor under build "-"), and how many
    sessions the store held."""
    from shmsession import SessionStorage

    times: dict[tuple[str, str], list[float]] = {}
    with handles(tag, args.sessions, args.number, args.size) as by_build:
        first = next(iter(by_build.values()))
        hot = SessionStorage.new_id()
        value = os.urandom(args.size)
        first.write(hot, value)
        builds = [b for b in BUILDS if b in by_build]
        for r in range(args.repeats):
            order = builds if r % 2 == 0 else builds[::-1]
            for op in (FLOOR_OP, *OPS):
                for build in ([order[0]] if op is FLOOR_OP else order):
                    store = by_build[build]
                    fresh = [SessionStorage.new_id() for _ in range(args.number)]
                    ns = timed(op.batch, store, hot, fresh, value)
                    times.setdefault((op.key, "-" if op is FLOOR_OP else build), []).append(
                        ns / args.number)
                    if op.inserts:
                        for sid in fresh:
                            store.invalidate(sid)
            print(f"repeat {r + 1}/{args.repeats}: " + "  ".join(
                f"{op}/{build} {ts[-1] / 1e3:.2f}" for (op, build), ts in times.items()) + " µs",
                file=sys.stderr, flush=True)
        held = len(first)
    return times, held


def timed(batch: Batch, store: Any, hot: str, fresh: Sequence[str], value: bytes) -> int:
    """One batch with the collector off, as timeit runs one (a pause would land in it)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return batch(store, hot, fresh, value)
    finally:
        if enabled:
            gc.enable()


def measure_scaling(args: argparse.Namespace, tag: str) -> dict[tuple[int, str], float]:
    """Per (keys, build or "loop"), the best ns per read of a random session: a store of
    ``keys`` sessions for each of ``args.scaling``, ``args.reads`` reads per repeat."""
    import random

    from shmsession import SessionStorage

    best: dict[tuple[int, str], float] = {}
    for keys in args.scaling:
        with handles(tag, 0, keys, args.size) as by_build:
            first = next(iter(by_build.values()))
            value = os.urandom(args.size)
            ids = [SessionStorage.new_id() for _ in range(keys)]
            for sid in ids:
                first.write(sid, value)
            rng = random.Random(keys)
            walk = [ids[rng.randrange(keys)] for _ in range(args.reads)]
            loops: dict[str, Callable[[str], object]] = {"loop": len}
            loops.update({b: store.get for b, store in by_build.items()})
            for r in range(args.repeats):
                order = list(loops) if r % 2 == 0 else list(loops)[::-1]
                for what in order:
                    ns = timed(lambda *_: _walk(loops[what], walk), first, "", (), b"")
                    key = (keys, what)
                    best[key] = min(best.get(key, float("inf")), ns / len(walk))
            print(f"scaling {keys:,}: " + "  ".join(
                f"{what} {best[(keys, what)]:.0f}" for what in loops) + " ns",
                file=sys.stderr, flush=True)
    return best


def _walk(call: Callable[[str], object], walk: Sequence[str]) -> int:
    t0 = time.perf_counter_ns()
    for sid in walk:
        call(sid)
    return time.perf_counter_ns() - t0


# --- report -----------------------------------------------------------------------------------

def render_scaling(args: argparse.Namespace, best: dict[tuple[int, str], float]) -> list[str]:
    small, large = min(args.scaling), max(args.scaling)
    builds = [b for b in BUILDS if (small, b) in best]
    lines = [
        "", "## Reads of random sessions as the store grows", "",
        f"A `get` of a random session of {fmt_size(args.size)} (the same random sequence of "
        f"{args.reads:,} ids for every loop), best of {args.repeats} repeats, ns per read; "
        "`loop` is the same loop calling `len` on each id: what walking the ids costs once "
        "they leave the caches. `store's own` is a read less the loop; the last rows compare "
        f"{large:,} sessions with {small:,} as read rates (the issue's target: ≥ 85%).",
        "",
        "| sessions | loop ns | " + " | ".join(f"{b} ns | {b}: store's own ns"
                                                for b in builds) + " |",
        "|--:|--:|" + "--:|--:|" * len(builds),
    ]
    for keys in args.scaling:
        loop = best[(keys, "loop")]
        lines.append(f"| {keys:,} | {loop:.0f} | " + " | ".join(
            f"{best[(keys, b)]:.0f} | {best[(keys, b)] - loop:.0f}" for b in builds) + " |")
    lines.append("")
    for b in builds:
        rate = best[(small, b)] / best[(large, b)]
        own = (best[(small, b)] - best[(small, "loop")]) / (
            best[(large, b)] - best[(large, "loop")])
        lines.append(f"- {b}: reads at {large:,} sessions run at {rate:.0%} of the rate at "
                     f"{small:,}; the store's own part of a read, at {own:.0%}")
    return lines


def render(args: argparse.Namespace, times: dict[tuple[str, str], list[float]], held: int,
           build: str, scaling: dict[tuple[int, str], float]) -> str:
    floor = min(times[(FLOOR, "-")])
    builds = [b for b in BUILDS if any(k[1] == b for k in times)]

    def cell(op: str, b: str) -> list[str]:
        ts = times.get((op, b))
        if not ts:
            return ["-", "-"]
        return [f"{min(ts) / 1e3:.2f} ({statistics.median(ts) / 1e3:.2f})",
                f"{min(ts) / floor:.2f}"]

    when = f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    lines = [
        "# One call against the floor, both builds",
        "",
        f"nproc {os.cpu_count()}, {platform.platform()}; Python {platform.python_version()}; "
        f"shmsession {version('shmsession')} (this process's build: {build}); {when}",
        "",
        f"{'quick' if args.quick else 'full'} run: one process, one store of {held:,} "
        f"sessions of {fmt_size(args.size)}, a handle per build on it. Each figure is the best "
        f"of {args.repeats} repeats of a loop of {args.number:,} calls with the collector off "
        "(timeit's way), per call, with the median of the repeats in brackets; the builds "
        "alternate within every repeat. A cycle is the figure divided by the best `flock` "
        "LOCK_EX + LOCK_UN cycle of this run, on the store's own descriptor.",
        "",
        "| op | " + " | ".join(f"{b} µs, best (median) | {b} cycles" for b in builds)
        + (" | pure ÷ compiled |" if len(builds) == 2 else ""),
        "|---|" + "--:|--:|" * len(builds) + ("--:|" if len(builds) == 2 else ""),
    ]
    flock_row = [f"{floor / 1e3:.2f} ({statistics.median(times[(FLOOR, '-')]) / 1e3:.2f})",
                 "1.00"]
    lines.append(f"| {FLOOR_OP.label} | " + " | ".join(flock_row * len(builds))
                 + (" | - |" if len(builds) == 2 else " |"))
    for op in OPS:
        row = [x for b in builds for x in cell(op.key, b)]
        if len(builds) == 2:
            row.append(f"{min(times[(op.key, 'pure')]) / min(times[(op.key, 'compiled')]):.2f}x")
        lines.append(f"| {op.label} | " + " | ".join(row) + " |")
    lines += ["", "## Targets (issue 15, compiled build)", ""]
    for key, what, target in (("read", "a hot read", READ_TARGET),
                              ("write", "a write over an existing session", WRITE_TARGET)):
        ts = times.get((key, "compiled"))
        if not ts:
            lines.append(f"- {what} ≤ {target:g} cycles: **not measured** (no compiled build "
                         "in this process)")
            continue
        cycles = min(ts) / floor
        verdict = "met" if cycles <= target else "not met"
        pure = min(times[(key, "pure")]) / floor
        lines.append(f"- {what} ≤ {target:g} cycles: **{verdict}**, {cycles:.2f} cycles "
                     f"({min(ts) / 1e3:.2f} µs; the pure build: {pure:.2f} cycles)")
    if scaling:
        lines += render_scaling(args, scaling)
    return "\n".join(lines) + "\n"


# --- main -------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 3 repeats of 1,000 calls (a few seconds)")
    ap.add_argument("--repeats", type=int, help="repeats of every loop (default 20)")
    ap.add_argument("--number", type=int, help="calls per loop (default 10,000)")
    ap.add_argument("--sessions", type=int, default=1000,
                    help="sessions in the store besides the hot one (default 1,000)")
    ap.add_argument("--size", type=int, default=1024, help="value bytes (default 1024)")
    ap.add_argument("--scaling", type=lambda t: [int(k) for k in t.split(",")],
                    help="store sizes, in sessions, of the scaling part (default 1000,100000; "
                         "--quick: 500,5000; 0: leave it out)")
    ap.add_argument("--reads", type=int,
                    help="random reads per repeat of the scaling part (default 100,000)")
    ap.add_argument("--output", type=Path, default=HERE / "results" / "floor.md")
    args = ap.parse_args(argv)
    defaults = ({"repeats": 3, "number": 1_000, "scaling": [500, 5_000], "reads": 5_000}
                if args.quick else {"repeats": 20, "number": 10_000,
                                    "scaling": [1_000, 100_000], "reads": 100_000})
    for key, default in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    if min(args.repeats, args.number, args.size, args.reads) < 1 or args.sessions < 0:
        ap.error("counts and the size must be positive")
    if args.scaling == [0]:
        args.scaling = []
    elif len(args.scaling) < 2 or min(args.scaling) < 1:
        ap.error("--scaling: two or more store sizes, each at least 1 (or 0)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sigterm_exits()  # the finally blocks unlink the store
    tag = f"bench-floor-{os.getpid()}-"
    try:
        from shmsession._build import BUILD

        times, held = measure(args, tag)
        scaling = measure_scaling(args, tag) if args.scaling else {}
    finally:
        remove_leftovers(tag)
    publish(render(args, times, held, BUILD, scaling), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
