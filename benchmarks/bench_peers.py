#!/usr/bin/env python3
"""Benchmark shmsession beside the session stores users would pick instead, in one run.

shmsession runs in both builds, as two stores in the same run: ``shmsession`` (the compiled
hot path, when this process has it) and ``shmsession-pure`` (every handle put on the
pure-Python path). Peers (benchmarks/peers/, one module each): LMDB, Redis and memcached over
unix sockets, diskcache, cachelib's FileSystemCache, a multiprocessing manager dict,
shared-memory-dict and UltraDict. Three parts: main cells (value size x read/write mix x
processes), a read-scaling run as the keyspace grows, and a contention run (4 processes
writing the same 8 sessions). Stores run in interleaved rounds; the tables give medians over
rounds and ratios to LMDB taken within each round, and a verdict on issue 15's targets for
both builds. Writes benchmarks/results/peers.md and peers.png.

Run ``python benchmarks/bench_peers.py --quick`` for a sub-minute smoke run; see README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import math
import multiprocessing as mp
import os
import platform
import random
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.context import ForkContext
from pathlib import Path
from typing import Any

from bench_store import (WorkerFailed, collect, fmt_size, remove_leftovers, sigterm_exits,
                         stop_processes, timer_overhead_ns)
from peers import PEERS, Peer, load

HERE = Path(__file__).resolve().parent
REFERENCE = "lmdb"
BUILDS = ("shmsession", "shmsession_pure")  # the peers that are shmsession, in its two builds
# Issue 15's targets, for both builds: ops/s against LMDB and Redis in every main cell, p99
# at 4 processes, and reads at the largest scaling keyspace against the smallest.
TARGET_VS_LMDB = 1.2
TARGET_VS_REDIS = 10.0
TARGET_P99_NS = 30_000
TARGET_P99_PROCS = 4
TARGET_SCALING = 0.85
WARMUP_OPS = 300
READY_TIMEOUT = 90.0  # workers to start, attach and warm up (shared-memory-dict is slow)
CONTENTION_KEYS = 8
SLOW_P99_NS = 1_000_000


@dataclass(frozen=True)
class Cell:
    section: str  # "main", "scaling", "contention"
    keys: int
    size: int
    writes: float  # share of ops that are writes
    procs: int

    def mix(self) -> str:
        return f"{round(100 * (1 - self.writes))}/{round(100 * self.writes)}"


@dataclass
class RunResult:
    median_ns: float
    p99_ns: int
    ops_per_s: float
    ops: int
    bad: int


@dataclass
class Outcome:
    runs: list[RunResult] = field(default_factory=list)
    # per-round ratio of ops/s to another store's (the reference, redis, the pure build),
    # same cell, same round; keyed by that store
    vs: dict[str, list[float]] = field(default_factory=dict)

    @property
    def vs_ref(self) -> list[float]:
        return self.vs.get(REFERENCE, [])


# --- workers ----------------------------------------------------------------------------------

def worker(peer_key: str, name: str, cell: Cell, ids: Sequence[str], nops: int, time_cap: float,
           seed: int, index: int, results: Any, go: Any) -> None:
    """Open a handle of its own, warm up, wait for go, time ``nops`` mixed ops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent alone decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        cls = load(peer_key)
        handle = cls.open(name)
        try:
            payload = timed_loop(handle, cls.mapped, cell, ids, nops, time_cap, seed, index,
                                 results, go)
        finally:
            handle.close()
        results.put(("done", index, payload))
    except BaseException:
        results.put(("error", index, traceback.format_exc()))


def timed_loop(handle: Any, mapped: bool, cell: Cell, ids: Sequence[str], nops: int,
               time_cap: float, seed: int, index: int, results: Any,
               go: Any) -> tuple[int, int, int, int, bytes]:
    rng = random.Random(seed)
    keys = rng.choices(ids, k=nops)
    writes = [rng.random() < cell.writes for _ in range(nops)]
    value = os.urandom(cell.size)
    get, put = handle.get, handle.set
    lat = array("q", bytes(8 * nops))
    now = time.perf_counter_ns
    warm_deadline = time.monotonic() + max(time_cap, 1.0)
    if mapped:
        # A fresh mapping faults on first touch of each page; a long-lived worker pays that
        # once, so touch the keyspace before timing (bounded: some peers are slow).
        for key in ids:
            get(key)
            if time.monotonic() > warm_deadline:
                break
    for key, w in zip(keys[:WARMUP_OPS], writes[:WARMUP_OPS]):
        put(key, value) if w else get(key)
        if time.monotonic() > warm_deadline:
            break
    gc.collect()
    results.put(("ready", index, None))
    if not go.wait(READY_TIMEOUT):
        raise WorkerFailed("never told to start")
    gc.disable()
    bad = 0
    try:
        start = now()
        deadline = start + int(time_cap * 1e9)
        done = 0
        for key, w in zip(keys, writes):
            if w:
                t0 = now()
                put(key, value)
                t1 = now()
            else:
                t0 = now()
                got = get(key)
                t1 = now()
                if got is None or len(got) != cell.size:
                    bad += 1
            lat[done] = t1 - t0
            done += 1
            if t1 >= deadline:
                break
        end = now()
    finally:
        gc.enable()
    return done, start, end, bad, lat[:done].tobytes()


def run_cell(ctx: ForkContext, peer_key: str, name: str, cell: Cell, ids: Sequence[str],
             nops: int, time_cap: float, seed: int) -> RunResult:
    results = ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=worker, daemon=True, name=f"peer-{peer_key}-{i}",
                         args=(peer_key, name, cell, ids, nops, time_cap, seed * 16 + i, i,
                               results, go))
             for i in range(cell.procs)]
    try:
        for p in procs:
            p.start()
        collect(results, procs, "ready", READY_TIMEOUT)
        go.set()
        done = collect(results, procs, "done", time_cap + READY_TIMEOUT)
        for p in procs:
            p.join(READY_TIMEOUT)
    finally:
        stop_processes(procs)
        results.close()
    lat = array("q")
    for *_, raw in done:
        lat.frombytes(raw)
    ordered = sorted(lat)
    wall_ns = max(d[2] for d in done) - min(d[1] for d in done)
    return RunResult(median_ns=statistics.median(ordered),
                     p99_ns=ordered[math.ceil(0.99 * len(ordered)) - 1],
                     ops_per_s=sum(d[0] for d in done) / (wall_ns / 1e9),
                     ops=sum(d[0] for d in done), bad=sum(d[3] for d in done))


# --- phases -----------------------------------------------------------------------------------

def run_phase(ctx: ForkContext, peers: dict[str, Peer], kinds: list[str], cells: list[Cell],
              args: argparse.Namespace, out: dict[tuple[Cell, str], Outcome],
              notes: list[str]) -> None:
    """Create and fill a store per peer for ``cells`` (same keyspace and size), run the rounds."""
    keys, size = cells[0].keys, cells[0].size
    ids = [secrets.token_urlsafe(32) for _ in range(keys)]  # the format of new_id()
    value = os.urandom(size)
    names: dict[str, str] = {}
    live = list(kinds)
    try:
        for kind in kinds:
            t0 = time.monotonic()
            try:
                names[kind] = peers[kind].create(keys, size)
                peers[kind].populate(names[kind], ((i, value) for i in ids))
            except Exception as exc:  # one peer failing must not stop the others
                live.remove(kind)
                say(notes, f"{peers[kind].label}: could not fill {keys:,} x {fmt_size(size)}: "
                           f"{type(exc).__name__}: {last_line(exc)}")
                continue
            print(f"filled {kind} with {keys:,} x {fmt_size(size)} in "
                  f"{time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
        for r in range(args.rounds):
            order = live[r % len(live):] + live[:r % len(live)] if live else []
            for ci, cell in enumerate(cells):
                seed = zlib.crc32(f"{describe(cell)}/{r}".encode())  # same ops for every store
                got: dict[str, RunResult] = {}
                for kind in order:
                    if kind not in live:
                        continue
                    try:
                        res = run_cell(ctx, kind, names[kind], cell, ids, args.ops,
                                       args.time_cap, seed)
                    except WorkerFailed as exc:
                        live.remove(kind)
                        say(notes, f"{peers[kind].label}: failed in {describe(cell)}, dropped from "
                                   f"the rest of this part: {last_line(exc)}")
                        continue
                    got[kind] = res
                    out.setdefault((cell, kind), Outcome()).runs.append(res)
                    print(f"{cell.section:10} round {r + 1}/{args.rounds}  {describe(cell):28} "
                          f"{peers[kind].label:18} p50 {res.median_ns / 1e3:9.2f} µs  "
                          f"p99 {res.p99_ns / 1e3:9.2f} µs  {res.ops_per_s:10,.0f} ops/s",
                          file=sys.stderr, flush=True)
                for kind, res in got.items():
                    for other in (REFERENCE, "redis", "shmsession_pure"):
                        if other in got:
                            out[(cell, kind)].vs.setdefault(other, []).append(
                                res.ops_per_s / got[other].ops_per_s)
    finally:
        for kind, name in names.items():
            with contextlib.suppress(Exception):
                peers[kind].drop(name)


def last_line(exc: BaseException) -> str:
    """The last line of an error (a worker's traceback ends with the exception), shortened."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    line = lines[-1]
    return line if len(line) <= 120 else line[:117] + "..."


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def say(notes: list[str], line: str) -> None:
    """A note for the report's Notes, shown at once on stderr (stdout is the report)."""
    print(line, file=sys.stderr, flush=True)
    notes.append(f"- {line}")


def describe(cell: Cell) -> str:
    return (f"{cell.keys:,} keys {fmt_size(cell.size)} {cell.mix()} x{cell.procs}")


# --- report -----------------------------------------------------------------------------------

def med(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def span(xs: Sequence[float], fmt: str) -> str:
    return f"{format(med(xs), fmt)} ({format(min(xs), fmt)}–{format(max(xs), fmt)})"


def fig(o: Outcome) -> tuple[str, str, str]:
    p50 = f"{med([r.median_ns for r in o.runs]) / 1e3:.1f}"
    p99 = f"{med([r.p99_ns for r in o.runs]) / 1e3:.1f}"
    return p50, p99, span([r.ops_per_s for r in o.runs], ",.0f")


def ratio_text(xs: Sequence[float]) -> str:
    if not xs:
        return "-"
    return f"{med(xs):.2f}x ({min(xs):.2f}–{max(xs):.2f})"


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "**no**")


def render_targets(main: list[Cell], scaling: list[Cell], peers: dict[str, Peer],
                   out: dict[tuple[Cell, str], Outcome]) -> list[str]:
    """Issue 15's targets for each build of shmsession: a table of the main cells, one of the
    scaling ratio, and a line per build saying in how many cells each target is met."""
    builds = [k for k in BUILDS if k in peers]
    p99_target = f"p99 ≤ {TARGET_P99_NS / 1e3:g} µs"
    lines = [
        "", "## Issue 15's targets, both builds", "",
        f"In every main cell: ops/s ≥ {TARGET_VS_LMDB:g}x LMDB's and ≥ {TARGET_VS_REDIS:g}x "
        "Redis's (ratios taken round by round, median; min–max in brackets), and "
        f"{p99_target} at {TARGET_P99_PROCS} processes (median over rounds); reads at the "
        f"largest keyspace ≥ {TARGET_SCALING:.0%} of those at the smallest. `÷ pure` is the "
        "compiled build's ops/s over the pure build's in the same round.", "",
        "| value | read/write | procs | store | ops/s | ÷ lmdb | ÷ redis | ÷ pure | p99 µs "
        f"| ≥ {TARGET_VS_LMDB:g}x lmdb | ≥ {TARGET_VS_REDIS:g}x redis | {p99_target} |",
        "|---|---|--:|---|--:|--:|--:|--:|--:|:-:|:-:|:-:|",
    ]
    # per build and target, the cells judged: (where, met)
    judged: dict[str, dict[str, list[tuple[str, bool]]]] = {k: {} for k in builds}

    def judge(k: str, target: str, where: str, ok: bool | None) -> bool | None:
        if ok is not None:
            judged[k].setdefault(target, []).append((where, ok))
        return ok

    for c in main:
        for k in builds:
            o = out.get((c, k))
            if not o:
                continue
            where = f"{fmt_size(c.size)} {c.mix()} x{c.procs}"
            vs_l, vs_r = o.vs.get(REFERENCE, []), o.vs.get("redis", [])
            p99 = med([r.p99_ns for r in o.runs])
            ok_l = judge(k, "lmdb", where, med(vs_l) >= TARGET_VS_LMDB if vs_l else None)
            ok_r = judge(k, "redis", where, med(vs_r) >= TARGET_VS_REDIS if vs_r else None)
            ok_p = judge(k, "p99", where,
                         p99 <= TARGET_P99_NS if c.procs == TARGET_P99_PROCS else None)
            vs_p = "-" if k == "shmsession_pure" else ratio_text(o.vs.get("shmsession_pure", []))
            lines.append(f"| {fmt_size(c.size)} | {c.mix()} | {c.procs} | {peers[k].label} | "
                         f"{med([r.ops_per_s for r in o.runs]):,.0f} | {ratio_text(vs_l)} | "
                         f"{ratio_text(vs_r)} | {vs_p} | {p99 / 1e3:.1f} | {verdict(ok_l)} | "
                         f"{verdict(ok_r)} | {verdict(ok_p)} |")
    if len(scaling) >= 2:
        lo, hi = scaling[0], scaling[-1]
        lines += ["", f"| store | reads/s at {lo.keys:,} keys | at {hi.keys:,} "
                      f"| {hi.keys:,} ÷ {lo.keys:,} | ≥ {TARGET_SCALING:.0%} |",
                  "|---|--:|--:|--:|:-:|"]
        for k in [*builds, REFERENCE]:
            a, b = out.get((lo, k)), out.get((hi, k))
            if not (a and b):
                continue
            first, last = (med([r.ops_per_s for r in x.runs]) for x in (a, b))
            ok = judge(k, "scaling", f"{hi.keys:,} keys", last / first >= TARGET_SCALING
                       ) if k in builds else None
            lines.append(f"| {peers[k].label} | {first:,.0f} | {last:,.0f} | {last / first:.0%} "
                         f"| {verdict(ok)} |")
    names = {"lmdb": f"≥ {TARGET_VS_LMDB:g}x lmdb", "redis": f"≥ {TARGET_VS_REDIS:g}x redis",
             "p99": f"{p99_target} at {TARGET_P99_PROCS} processes",
             "scaling": f"reads at the largest keyspace ≥ {TARGET_SCALING:.0%} of the smallest"}
    lines.append("")
    for k in builds:
        parts = []
        for target, name in names.items():
            cells = judged[k].get(target, [])
            missed = [where for where, ok in cells if not ok]
            if not cells:
                parts.append(f"{name}: not measured")
            elif target == "scaling":
                parts.append(f"{name}: {'**not met**' if missed else 'met'}")
            else:
                parts.append(f"{name}: {'**not met**' if missed else 'met'}, in "
                             f"{len(cells) - len(missed)} of {len(cells)} "
                             f"cell{'s' if len(cells) > 1 else ''}"
                             + (f" (not in {', '.join(missed)})" if missed else ""))
        lines.append(f"- **{peers[k].label}**: " + "; ".join(parts) + ".")
    return lines


def render(args: argparse.Namespace, peers: dict[str, Peer], cells: list[Cell],
           out: dict[tuple[Cell, str], Outcome], header: list[str], notes: list[str]) -> str:
    lines = list(header)
    kinds = list(peers)
    main = [c for c in cells if c.section == "main"]
    if main:
        lines += ["", "## Main cells", "",
                  f"{main[0].keys:,} pre-filled ids. p50/p99 per op in µs; ops/s of all processes "
                  "together, median (min–max over rounds); ÷ lmdb is the ops/s ratio taken in each "
                  "round, median (min–max).", "",
                  "| value | read/write | procs | store | p50 µs | p99 µs | ops/s | ÷ lmdb |",
                  "|---|---|--:|---|--:|--:|--:|--:|"]
        for c in main:
            for k in kinds:
                o = out.get((c, k))
                if o:
                    p50, p99, ops = fig(o)
                    name = f"**{peers[k].label}**" if k in BUILDS else peers[k].label
                    lines.append(f"| {fmt_size(c.size)} | {c.mix()} | {c.procs} | {name} | {p50} "
                                 f"| {p99} | {ops} | {ratio_text(o.vs_ref)} |")
    scaling = [c for c in cells if c.section == "scaling"]
    if scaling:
        lines += ["", "## Reads as the keyspace grows", "",
                  f"100% reads of {fmt_size(scaling[0].size)} values, {scaling[0].procs} process.",
                  "", "| keys | store | p50 µs | p99 µs | ops/s | ÷ lmdb |", "|--:|---|--:|--:|--:|--:|"]
        for c in scaling:
            for k in kinds:
                o = out.get((c, k))
                if o:
                    p50, p99, ops = fig(o)
                    lines.append(f"| {c.keys:,} | {peers[k].label} | {p50} | {p99} | {ops} "
                                 f"| {ratio_text(o.vs_ref)} |")
    lines += render_targets(main, scaling, peers, out)
    cont = [c for c in cells if c.section == "contention"]
    if cont:
        c = cont[0]
        lines += ["", "## Contention", "",
                  f"{c.procs} processes writing the same {c.keys} sessions "
                  f"({fmt_size(c.size)} values) at once.", "",
                  "| store | p50 µs | p99 µs | ops/s | ÷ lmdb | p99 > 1 ms |",
                  "|---|--:|--:|--:|--:|:-:|"]
        for k in kinds:
            o = out.get((c, k))
            if o:
                p50, p99, ops = fig(o)
                slow = "**yes**" if med([r.p99_ns for r in o.runs]) > SLOW_P99_NS else "no"
                lines.append(f"| {peers[k].label} | {p50} | {p99} | {ops} | "
                             f"{ratio_text(o.vs_ref)} | {slow} |")
    for (c, k), o in out.items():
        bad = sum(r.bad for r in o.runs)
        if bad:
            notes.append(f"- {peers[k].label}, {describe(c)}: {bad} reads missed or returned a "
                         "value of the wrong length.")
        short = [r.ops for r in o.runs if r.ops < args.ops * c.procs]
        if short:
            notes.append(f"- {peers[k].label}, {describe(c)}: stopped by the {args.time_cap:g} s "
                         f"cap in {len(short)} round(s) (fewest ops {min(short):,} of "
                         f"{args.ops * c.procs:,}).")
    notes = notes + [f"- {p.label}: {p.caveat}." for p in peers.values() if p.caveat]
    if notes:
        lines += ["", "## Notes", "", *notes]
    return "\n".join(lines) + "\n"


def plot(path: Path, peers: dict[str, Peer], cells: list[Cell],
         out: dict[tuple[Cell, str], Outcome], title: str) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib does not import (pip install matplotlib): no chart"
    main = [c for c in cells if c.section == "main"]
    kinds = [k for k in peers if any((c, k) in out for c in main)]
    if not main or not kinds:
        return None
    fig_, ax = plt.subplots(figsize=(max(10, 1.6 * len(main)), 6), dpi=110)
    width = 0.85 / len(kinds)
    cmap = plt.get_cmap("tab10")
    for j, k in enumerate(kinds):
        xs, ys, lo, hi = [], [], [], []
        for i, c in enumerate(main):
            o = out.get((c, k))
            if not o:  # skipped or dropped in this cell: say so rather than leave a gap
                ax.text(i - 0.425 + width * (j + 0.5), 0.01, "n/a", rotation=90, ha="center",
                        va="bottom", fontsize=7, color=cmap(j % 10),
                        transform=ax.get_xaxis_transform())  # x in data, y in axes units
                continue
            vals = [r.ops_per_s for r in o.runs]
            m = med(vals)
            xs.append(i - 0.425 + width * (j + 0.5))
            ys.append(m)
            lo.append(m - min(vals))
            hi.append(max(vals) - m)
        ax.bar(xs, ys, width, label=peers[k].label, color=cmap(j % 10),
               edgecolor="black" if k in BUILDS else "none", linewidth=1.2,
               yerr=[lo, hi], capsize=1.5, error_kw={"elinewidth": 0.6})
    ax.set_yscale("log")
    ax.set_xticks(range(len(main)))
    ax.set_xticklabels([f"{fmt_size(c.size)}\n{c.mix()} r/w\n{c.procs} proc" for c in main])
    ax.set_ylabel("ops/s, all processes (log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(ncol=min(5, len(kinds)), fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.16))
    fig_.tight_layout()
    fig_.savefig(path)
    plt.close(fig_)
    return None


# --- main -------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 round, 500 ops, 0.3 s cap, 2,000 keys, scaling to 10,000 "
                         "(under a minute)")
    ap.add_argument("--ops", type=int, help="ops per process per cell (default 10,000)")
    ap.add_argument("--time-cap", type=float, help="seconds per cell before workers stop (2)")
    ap.add_argument("--rounds", type=int, help="rounds, store order rotating (default 3)")
    ap.add_argument("--keys", type=int, help="main keyspace (default 10,000; --quick 2,000)")
    ap.add_argument("--sizes", default="1024,16384", help="value sizes in bytes")
    ap.add_argument("--procs", default="1,4", help="process counts")
    ap.add_argument("--mixes", default="10,50", help="write percentages (default 10,50)")
    ap.add_argument("--stores", default=",".join(PEERS), help="peers for main and contention")
    ap.add_argument("--scaling", help="keyspaces of the read-scaling run "
                                      "(default 1000,10000,100000; '' skips it)")
    ap.add_argument("--scaling-stores",
                    default="shmsession,shmsession_pure,lmdb,redis,memcached,diskcache")
    ap.add_argument("--no-contention", action="store_true")
    ap.add_argument("--output", type=Path, default=HERE / "results" / "peers.md")
    ap.add_argument("--chart", type=Path, default=HERE / "results" / "peers.png")
    args = ap.parse_args(argv)
    quick = {"ops": 500, "time_cap": 0.3, "rounds": 1, "keys": 2_000, "scaling": "1000,10000"}
    full = {"ops": 10_000, "time_cap": 2.0, "rounds": 3, "keys": 10_000,
            "scaling": "1000,10000,100000"}
    for key, default in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.procs = [int(p) for p in args.procs.split(",")]
    args.mixes = [int(m) / 100 for m in args.mixes.split(",")]
    args.scaling = [int(k) for k in args.scaling.split(",") if k.strip()]
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    args.scaling_stores = [s.strip() for s in args.scaling_stores.split(",") if s.strip()]
    unknown = set(args.stores + args.scaling_stores) - set(PEERS)
    if unknown:
        ap.error(f"unknown stores {sorted(unknown)}; known: {','.join(PEERS)}")
    if min(args.ops, args.keys, args.rounds, *args.sizes, *args.procs) < 1 or args.time_cap <= 0:
        ap.error("counts, sizes and the time cap must be positive")
    return args


def run(args: argparse.Namespace, tag: str, workdir: str,
        stack: contextlib.ExitStack) -> tuple[str, str]:
    notes: list[str] = []
    wanted = [k for k in PEERS if k in args.stores or k in args.scaling_stores]
    peers: dict[str, Peer] = {}
    for key in wanted:
        try:
            cls = load(key)
        except ImportError as exc:
            say(notes, f"{key}: skipped ({exc})")
            continue
        why = cls.unavailable()
        if why:
            say(notes, f"{cls.label}: skipped ({why})")
            continue
        try:
            os.makedirs(os.path.join(workdir, key))
            peer = cls(os.path.join(workdir, key), tag)
        except Exception as exc:
            say(notes, f"{cls.label}: skipped (could not start: {type(exc).__name__}: {exc})")
            continue
        stack.callback(peer.cleanup)
        peers[key] = peer
    if "shmsession" not in peers:
        raise SystemExit("shmsession is not available; install it with `pip install -e .`")
    from shmsession._build import BUILD

    if BUILD != "compiled":
        say(notes, "shmsession: this process runs the pure build (no compiled hot path, or "
                   "SHMSESSION_PURE=1), so the `shmsession` rows are the pure path too")
    ctx = mp.get_context("fork")
    cells: list[Cell] = []
    out: dict[tuple[Cell, str], Outcome] = {}
    main_kinds = [k for k in peers if k in args.stores]
    for size in args.sizes:
        phase = [Cell("main", args.keys, size, w, p) for w in args.mixes for p in args.procs]
        cells += phase
        run_phase(ctx, peers, main_kinds, phase, args, out, notes)
    for keys in args.scaling:
        phase = [Cell("scaling", keys, 1024, 0.0, 1)]
        cells += phase
        run_phase(ctx, peers, [k for k in peers if k in args.scaling_stores], phase, args, out,
                  notes)
    if not args.no_contention:
        phase = [Cell("contention", CONTENTION_KEYS, 1024, 1.0, 4)]
        cells += phase
        run_phase(ctx, peers, main_kinds, phase, args, out, notes)

    pkgs = "; ".join(dict.fromkeys(p.versions() for p in peers.values() if p.versions()))
    when = f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    header = [
        "# shmsession beside its peers",
        "",
        f"nproc {os.cpu_count()}, {platform.platform()}, {cpu_model()}; "
        f"Python {platform.python_version()}; {pkgs}; {when}",
        "",
        f"{'quick' if args.quick else 'full'} run: {args.ops:,} ops per process per cell (cap "
        f"{args.time_cap:g} s), {args.rounds} round(s) with the store order rotating, 43-char ids "
        "picked uniformly at random (every store sees the same sequence), fork start, every "
        "process opening its own handle. Each op is timed alone by perf_counter_ns(), nothing "
        f"subtracted (an empty timed region reads {timer_overhead_ns()} ns here). The machine "
        "has 2 cores and is shared: 4 processes oversubscribe it.",
        "",
        f"shmsession runs in both builds: `shmsession` is this process's build ({BUILD}), "
        "`shmsession-pure` a store of its own whose every handle is put on the pure-Python "
        "path (`store._hot = None`), as every call of the pure build runs.",
    ]
    table = render(args, peers, cells, out, header, notes)
    args.chart.parent.mkdir(parents=True, exist_ok=True)
    why = plot(args.chart, peers, cells, out,
               f"ops/s per store, {args.keys:,} sessions ({platform.python_version()}, "
               f"{os.cpu_count()} cores, {'quick' if args.quick else 'full'} run, {when}); "
               "bars: median, whiskers: min–max over rounds")
    if why:
        print(why, file=sys.stderr)
    return table, "" if why else str(args.chart)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sigterm_exits()
    tag = f"bench-{os.getpid()}-"
    workdir = tempfile.mkdtemp(prefix=f"{tag}peers-")
    t0 = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            table, chart = run(args, tag, workdir, stack)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        remove_leftovers(tag)
    print(table, end="")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table)
    print(f"written to {args.output}{' and ' + chart if chart else ''} "
          f"in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
