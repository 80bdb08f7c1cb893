#!/usr/bin/env python3
"""Benchmark shmsession's SessionStorage read/write against a throwaway shared-memory table.

Cells: op (read, write) x value size (1 KiB, 16 KiB) x processes at once (1, 4). shmsession
runs in both builds, as two stores: ``shmsession`` (this process's build, the compiled hot path
when it has one) and ``shmsession-pure`` (every handle put on the pure-Python path). Each store
runs every cell in every round, the stores' order rotating between rounds; the table gives the
median over rounds of each cell's per-op median and p99 latency and aggregate ops/s. When
``redis-server`` and the ``redis`` package are both there, two more stores join, on one
private server over a unix socket: shmsession's own Redis store (``RedisSessionStorage``, the
same API: what moving to Redis costs) and plain redis-py GET/SET (the floor under it).

Run ``python benchmarks/bench_store.py --quick`` for a sub-minute smoke run; see README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib.metadata
import math
import multiprocessing as mp
import os
import platform
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.context import ForkContext, SpawnContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from queue import Empty
from typing import Any

from _baseline import BaselineTable

HERE = Path(__file__).resolve().parent
KIB = 1024
STORES = ("shmsession", "shmsession-pure", "baseline", "shmsession-redis", "redis")
SHM_KINDS = ("shmsession", "shmsession-pure")
REDIS_KINDS = ("shmsession-redis", "redis")
OPS = ("read", "write")
SEGMENT_SIZE = 256 * 2**20  # room for 10,000 x 16 KiB with headroom, per the package docs
MAX_ENTRIES = 20_000
# Every handle, the parent's and each worker's, is opened with the same options, as the
# workers of a real application would be. "raise" rather than evicting, so a store too small
# for the keyspace fails loudly instead of turning reads into misses.
SHMSESSION_OPTIONS: dict[str, Any] = {
    "size": SEGMENT_SIZE, "max_entries": MAX_ENTRIES, "when_full": "raise",
}
BASELINE_SLOTS = 32_768  # load factor ~0.3 at 10,000 ids keeps probe chains short
WARMUP_OPS = 500  # untimed ops of the measured kind, per process, after a read of every id
READY_TIMEOUT = 60.0  # seconds for workers to start, attach and warm up
REDIS_START_TIMEOUT = 10.0


@dataclass(frozen=True)
class StoreSpec:
    """What a worker needs to open its own handle: a segment name, or a socket path and db
    (and, for shmsession's Redis store, the store's name and secret)."""

    kind: str
    name: str
    db: int = 0
    store: str = ""
    secret: str = ""


@dataclass(frozen=True)
class Cell:
    op: str
    size: int
    procs: int


@dataclass
class RunResult:
    """One store in one cell in one round."""

    median_ns: float
    p99_ns: int
    ops_per_s: float
    ops: int
    bad: int  # reads that missed or returned a value of the wrong length


class WorkerFailed(RuntimeError):
    pass


# --- workers ----------------------------------------------------------------------------------

Reader = Callable[[str], Any]
Writer = Callable[[str, bytes], Any]


def open_handle(spec: StoreSpec) -> tuple[Reader, Writer, Callable[[], None]]:
    """Open a fresh handle on the store named by ``spec``: (read, write, close)."""
    if spec.kind in SHM_KINDS:
        from shmsession import SessionStorage

        store = SessionStorage(spec.name, **SHMSESSION_OPTIONS)
        if spec.kind == "shmsession-pure":
            # The path every call of the pure build takes: every fast path in store.py is
            # guarded by `if hot is not None`.
            store._hot = None
        return store.read, store.write, store.close
    if spec.kind == "baseline":
        table = BaselineTable(spec.name)
        return table.get, table.set, table.close
    if spec.kind == "shmsession-redis":
        from shmsession.redis import RedisSessionStorage

        rstore = RedisSessionStorage(spec.store, f"unix://{spec.name}?db={spec.db}",
                                     secret=spec.secret)
        rstore.check()  # connect now, not inside the first timed op
        return rstore.read, rstore.write, rstore.close
    if spec.kind == "redis":
        import redis

        client = redis.Redis(unix_socket_path=spec.name, db=spec.db)
        client.ping()  # connect now, not inside the first timed op
        return client.get, client.set, client.close
    raise ValueError(f"unknown store kind {spec.kind!r}")


def worker(spec: StoreSpec, op: str, size: int, ids: Sequence[str], nops: int, time_cap: float,
           seed: int, index: int, results: Any, go: Any) -> None:
    """Time ``nops`` ops on a handle of its own; report ("ready"|"done"|"error", index, data)."""
    # The parent alone decides when workers stop (Ctrl-C reaches the whole process group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        read, write, close = open_handle(spec)
        try:
            # Only the shared-memory stores map the data into this process; a Redis client
            # has nothing to fault in.
            payload = timed_loop(read, write, spec.kind not in REDIS_KINDS, op, size, ids,
                                 nops, time_cap, seed, index, results, go)
        finally:
            close()
        results.put(("done", index, payload))
    except BaseException:
        results.put(("error", index, traceback.format_exc()))


def timed_loop(read: Reader, write: Writer, touch_keyspace: bool, op: str, size: int,
               ids: Sequence[str], nops: int, time_cap: float, seed: int, index: int,
               results: Any, go: Any) -> tuple[int, int, int, int, bytes]:
    """Warm up, say ready, wait for go, then run: (ops done, start, end, bad reads, latencies)."""
    keys = random.Random(seed).choices(ids, k=nops)
    value = os.urandom(size)
    lat = array("q", bytes(8 * nops))
    now = time.perf_counter_ns
    bad = 0
    if touch_keyspace:
        # A fresh mapping pays a page fault on first touch of each page; a long-lived worker
        # pays that once, so touch the whole keyspace before timing.
        for key in ids:
            read(key)
    for key in keys[:WARMUP_OPS]:
        if op == "read":
            read(key)
        else:
            write(key, value)
    gc.collect()
    results.put(("ready", index, None))
    if not go.wait(READY_TIMEOUT):
        raise WorkerFailed("never told to start")
    # Collector pauses would land in whichever op happens to trigger them.
    gc.disable()
    try:
        start = now()
        deadline = start + int(time_cap * 1e9)
        done = 0
        if op == "read":
            for key in keys:
                t0 = now()
                try:
                    got = read(key)
                except KeyError:  # SessionNotFound and the baseline's miss
                    got = None
                t1 = now()
                lat[done] = t1 - t0
                done += 1
                if got is None or len(got) != size:  # redis misses return None
                    bad += 1
                if t1 >= deadline:
                    break
        else:
            for key in keys:
                t0 = now()
                write(key, value)
                t1 = now()
                lat[done] = t1 - t0
                done += 1
                if t1 >= deadline:
                    break
        end = now()
    finally:
        gc.enable()
    return done, start, end, bad, lat[:done].tobytes()


def stop_processes(procs: Sequence[BaseProcess]) -> None:
    """Join every started worker, terminating and then killing any that linger."""
    for p in procs:
        if p.pid is not None and p.is_alive():
            p.terminate()
    for p in procs:
        if p.pid is None:
            continue
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join(5)


def collect(results: Any, procs: Sequence[BaseProcess], kind: str, timeout: float) -> list[Any]:
    """Wait for one ``kind`` message from every worker; raise on an error, a death or timeout."""
    got: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(procs):
        try:
            what, index, data = results.get(timeout=0.2)
        except Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise WorkerFailed(f"a worker died with exit code {dead[0]}") from None
            if time.monotonic() > deadline:
                raise WorkerFailed(f"workers not {kind} after {timeout:.0f} s") from None
            continue
        if what == "error":
            raise WorkerFailed(f"worker {index} failed:\n{data}")
        if what != kind:
            raise WorkerFailed(f"worker {index} sent {what!r} while waiting for {kind!r}")
        got[index] = data
    return [got[i] for i in range(len(procs))]


def run_cell(ctx: ForkContext | SpawnContext, spec: StoreSpec, cell: Cell, ids: Sequence[str],
             nops: int, time_cap: float, seed: int) -> RunResult:
    """Start ``cell.procs`` workers on ``spec``, release them together, and summarise."""
    results = ctx.Queue()
    go = ctx.Event()
    procs = [
        ctx.Process(target=worker, daemon=True, name=f"bench-{spec.kind}-{i}",
                    args=(spec, cell.op, cell.size, ids, nops, time_cap, seed * 16 + i, i,
                          results, go))
        for i in range(cell.procs)
    ]
    try:
        for p in procs:
            p.start()
        collect(results, procs, "ready", READY_TIMEOUT)
        go.set()
        done = collect(results, procs, "done", time_cap + READY_TIMEOUT)
        for p in procs:
            p.join(READY_TIMEOUT)  # let them detach cleanly; stop_processes handles stragglers
    finally:
        stop_processes(procs)
        results.close()
    lat = array("q")
    for _, _, _, _, raw in done:
        lat.frombytes(raw)
    total = sum(d[0] for d in done)
    wall_ns = max(d[2] for d in done) - min(d[1] for d in done)
    ordered = sorted(lat)
    return RunResult(
        median_ns=statistics.median(ordered),
        p99_ns=ordered[math.ceil(0.99 * len(ordered)) - 1],  # nearest rank
        ops_per_s=total / (wall_ns / 1e9),
        ops=total,
        bad=sum(d[3] for d in done),
    )


# --- stores, set up and torn down by the parent -----------------------------------------------

def segment_name(tag: str) -> str:
    return f"{tag}{secrets.token_hex(4)}"


@contextlib.contextmanager
def shmsession_store(tag: str, ids: Sequence[str], size: int, kind: str = "shmsession"
                     ) -> Iterator[StoreSpec]:
    from shmsession import SessionStorage

    name = segment_name(tag)
    store = SessionStorage(name, **SHMSESSION_OPTIONS)
    try:
        value = os.urandom(size)
        for sid in ids:
            store.write(sid, value)
        for sid in ids:
            if store.read(sid) != value:
                raise RuntimeError(f"shmsession: read-back of {sid} differs from what was written")
        yield StoreSpec(kind, name)
    finally:
        try:
            store.unlink()
        finally:
            store.close()


@contextlib.contextmanager
def baseline_store(tag: str, ids: Sequence[str], size: int) -> Iterator[StoreSpec]:
    name = "/" + segment_name(tag)
    table = BaselineTable(name, create=True, size=SEGMENT_SIZE, nslots=BASELINE_SLOTS)
    try:
        value = os.urandom(size)
        for sid in ids:
            table.set(sid, value)
        for sid in ids:
            if table.get(sid) != value:
                raise RuntimeError(f"baseline: read-back of {sid} differs from what was written")
        yield StoreSpec("baseline", name)
    finally:
        try:
            table.unlink()
        finally:
            table.close()


def redis_unavailable() -> str | None:
    """Why Redis cannot be measured here, or None when it can."""
    if shutil.which("redis-server") is None:
        return "redis-server is not on PATH"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis package does not import"
    return None


@contextlib.contextmanager
def redis_server(tag: str) -> Iterator[str]:
    """A private redis-server on a unix socket in a temp dir; yields the socket path."""
    import redis

    tmp = tempfile.mkdtemp(prefix=f"{tag}redis-")
    proc: subprocess.Popen[bytes] | None = None
    try:
        sock = os.path.join(tmp, "redis.sock")
        log = os.path.join(tmp, "redis.log")
        proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", tmp, "--logfile", log],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to us; we stop the server in order
        )
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode}: "
                                   f"{Path(log).read_text(errors='replace')[-2000:]}")
            try:
                with redis.Redis(unix_socket_path=sock) as probe:
                    probe.ping()
                break
            except (redis.ConnectionError, FileNotFoundError):
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not answer within "
                                       f"{REDIS_START_TIMEOUT:.0f} s") from None
                time.sleep(0.05)
        yield sock
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def redis_store(sock: str, db: int, ids: Sequence[str], size: int) -> StoreSpec:
    import redis

    value = os.urandom(size)
    with redis.Redis(unix_socket_path=sock, db=db) as client:
        client.flushdb()
        for start in range(0, len(ids), 1000):
            with client.pipeline(transaction=False) as pipe:
                for sid in ids[start:start + 1000]:
                    pipe.set(sid, value)
                pipe.execute()
        if client.dbsize() != len(ids) or client.get(ids[-1]) != value:
            raise RuntimeError("redis: the keyspace did not load")
    return StoreSpec("redis", sock, db)


@contextlib.contextmanager
def shmsession_redis_store(tag: str, sock: str, db: int, ids: Sequence[str], size: int
                           ) -> Iterator[StoreSpec]:
    """shmsession's Redis store, alone in database ``db``, holding the keyspace; deleted
    (sessions and counters) at the end."""
    from shmsession.redis import RedisSessionStorage

    name, secret = segment_name(tag), secrets.token_hex(16)
    store = RedisSessionStorage(name, f"unix://{sock}?db={db}", secret=secret)
    try:
        store.clear()
        value = os.urandom(size)
        for sid in ids:
            store.write(sid, value)
        for sid in ids:
            if store.read(sid) != value:
                raise RuntimeError(
                    f"shmsession-redis: read-back of {sid} differs from what was written")
        yield StoreSpec("shmsession-redis", sock, db, name, secret)
    finally:
        store.unlink()


def leftovers(tag: str) -> list[str]:
    """Anything of this run's still in /dev/shm or the temp dir."""
    found = []
    for folder in ("/dev/shm", tempfile.gettempdir()):
        with contextlib.suppress(OSError):
            found += [os.path.join(folder, n) for n in os.listdir(folder) if tag in n]
    return sorted(found)


def publish(table: str, output: Path) -> None:
    """The table to stdout and to ``output``; where it went to stderr."""
    print(table, end="")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(table)
    print(f"written to {output}", file=sys.stderr)


def remove_leftovers(tag: str) -> None:
    """Remove anything of this run's still in /dev/shm or the temp dir, with a warning each:
    something that should have cleaned up after itself did not."""
    for path in leftovers(tag):
        print(f"warning: left behind {path}; removing it", file=sys.stderr)
        with contextlib.suppress(OSError):
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)


# --- report -----------------------------------------------------------------------------------

def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def redis_server_version() -> str:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return next((w[2:] for w in out.split() if w.startswith("v=")), out.strip() or "?")


def timer_overhead_ns() -> int:
    """Median of back-to-back perf_counter_ns() pairs: the floor every figure includes."""
    now = time.perf_counter_ns
    samples = []
    for _ in range(20_000):
        t0 = now()
        samples.append(now() - t0)
    return int(statistics.median(samples))


def fmt_size(n: int) -> str:
    return f"{n // KIB} KiB" if n % KIB == 0 else f"{n} B"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def render(cells: Sequence[Cell], kinds: Sequence[str],
           rounds: dict[tuple[Cell, str], list[RunResult]], header: Sequence[str],
           notes: Sequence[str]) -> str:
    lines = list(header)
    lines += [
        "",
        "| op | value | procs | store | median µs | median µs, min–max over rounds | p99 µs "
        "| ops/s, all procs | median ÷ baseline | p99 ÷ baseline | ops/s ÷ baseline |",
        "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for cell in cells:
        agg: dict[str, tuple[float, float, float]] = {}
        for kind in kinds:
            runs = rounds[(cell, kind)]
            agg[kind] = (statistics.median(r.median_ns for r in runs) / 1e3,
                         statistics.median(r.p99_ns for r in runs) / 1e3,
                         statistics.median(r.ops_per_s for r in runs))
        base = agg.get("baseline")
        for kind in kinds:
            med, p99, ops = agg[kind]
            meds = [r.median_ns / 1e3 for r in rounds[(cell, kind)]]
            if base is None or kind == "baseline":
                vs = ["-", "-", "-"]
            else:
                vs = [ratio(med, base[0]), ratio(p99, base[1]), ratio(ops, base[2])]
            lines.append(
                f"| {cell.op} | {fmt_size(cell.size)} | {cell.procs} | {kind} | {med:.2f} "
                f"| {min(meds):.2f}–{max(meds):.2f} | {p99:.2f} | {ops:,.0f} | "
                + " | ".join(vs) + " |")
    move = ("shmsession", "shmsession-redis", "redis")
    if all(kind in kinds for kind in move):
        lines += render_move(cells, rounds)
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def render_move(cells: Sequence[Cell], rounds: dict[tuple[Cell, str], list[RunResult]]
                ) -> list[str]:
    """The cost of moving to Redis: the same calls on shmsession's Redis store, next to the
    shared-memory store and to plain redis-py GET/SET on the same server."""
    lines = [
        "",
        "## Moving to Redis: the same calls on `RedisSessionStorage`",
        "",
        "Median µs per op, from the table above; `÷ shmsession` is what one call costs more "
        "after the move, `÷ redis-py` what the store adds over a bare GET/SET (its Lua "
        "script, version and expiry on a write; its keyed id and version header on a read).",
        "",
        "| op | value | procs | shmsession µs | shmsession-redis µs | redis-py µs "
        "| shmsession-redis ÷ shmsession | shmsession-redis ÷ redis-py |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for cell in cells:
        shm, moved, raw = (statistics.median(r.median_ns for r in rounds[(cell, kind)]) / 1e3
                           for kind in ("shmsession", "shmsession-redis", "redis"))
        lines.append(f"| {cell.op} | {fmt_size(cell.size)} | {cell.procs} | {shm:.2f} "
                     f"| {moved:.2f} | {raw:.2f} | {ratio(moved, shm)} | {ratio(moved, raw)} |")
    return lines


# --- main -------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2,000 ops, 1 s cap, 3 rounds (well under a minute)")
    ap.add_argument("--ops", type=int, help="ops per process per cell (default 20,000)")
    ap.add_argument("--time-cap", type=float,
                    help="seconds after which a cell's workers stop early (default 10)")
    ap.add_argument("--rounds", type=int, help="rounds over all cells and stores (default 5)")
    ap.add_argument("--keys", type=int, default=10_000, help="keyspace size (default 10,000)")
    ap.add_argument("--sizes", default="1024,16384", help="value sizes in bytes")
    ap.add_argument("--procs", default="1,4", help="process counts")
    ap.add_argument("--stores", default=",".join(STORES),
                    help=f"which of {','.join(STORES)} to run (the Redis ones only if "
                    "available)")
    ap.add_argument("--start-method", choices=("fork", "spawn"), default="fork")
    ap.add_argument("--output", type=Path, default=HERE / "results" / "store.md")
    args = ap.parse_args(argv)
    quick = {"ops": 2_000, "time_cap": 1.0, "rounds": 3}
    full = {"ops": 20_000, "time_cap": 10.0, "rounds": 5}
    for key, default in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.procs = [int(p) for p in args.procs.split(",")]
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = set(args.stores) - set(STORES)
    if unknown or not args.stores:
        ap.error(f"--stores takes a subset of {','.join(STORES)}")
    if min(args.ops, args.keys, args.rounds, *args.sizes, *args.procs) < 1 or args.time_cap <= 0:
        ap.error("counts, sizes and the time cap must be positive")
    if len(args.sizes) > 8:  # each size takes two of Redis's 16 databases
        ap.error("at most 8 value sizes")
    return args


def run(args: argparse.Namespace, tag: str) -> str:
    notes: list[str] = []
    kinds = [k for k in STORES if k in args.stores]
    if set(SHM_KINDS) & set(kinds):
        try:
            import shmsession  # noqa: F401
        except ImportError as exc:
            raise SystemExit(f"shmsession does not import ({exc}); install it with "
                             "`pip install -e .`, or pass --stores baseline") from None
    redis_kinds = [k for k in REDIS_KINDS if k in kinds]
    if redis_kinds:
        why = redis_unavailable()
        if why:
            for kind in redis_kinds:
                kinds.remove(kind)
            line = f"{', '.join(redis_kinds)}: skipped ({why})"
            print(line, flush=True)
            notes.append(f"- {line}.")
            redis_kinds = []

    ctx = mp.get_context("fork") if args.start_method == "fork" else mp.get_context("spawn")
    ids = [secrets.token_urlsafe(32) for _ in range(args.keys)]  # the format of new_id()
    cells = [Cell(op, size, procs) for size in args.sizes for procs in args.procs for op in OPS]
    rounds: dict[tuple[Cell, str], list[RunResult]] = {(c, k): [] for c in cells for k in kinds}

    with contextlib.ExitStack() as stack:
        specs: dict[tuple[str, int], StoreSpec] = {}
        sock = stack.enter_context(redis_server(tag)) if redis_kinds else ""
        for db, size in enumerate(args.sizes):
            for kind in SHM_KINDS:
                if kind in kinds:
                    specs[kind, size] = stack.enter_context(
                        shmsession_store(tag, ids, size, kind))
            if "baseline" in kinds:
                specs["baseline", size] = stack.enter_context(baseline_store(tag, ids, size))
            if "shmsession-redis" in kinds:  # databases after those of plain redis-py
                specs["shmsession-redis", size] = stack.enter_context(
                    shmsession_redis_store(tag, sock, len(args.sizes) + db, ids, size))
            if "redis" in kinds:
                specs["redis", size] = redis_store(sock, db, ids, size)

        for r in range(args.rounds):
            order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
            for ci, cell in enumerate(cells):
                # Same seed for every store in a cell: they all see the same key sequence.
                seed = r * len(cells) + ci
                for kind in order:
                    res = run_cell(ctx, specs[kind, cell.size], cell, ids, args.ops,
                                   args.time_cap, seed)
                    rounds[(cell, kind)].append(res)
                    print(f"round {r + 1}/{args.rounds}  {cell.op:5} {fmt_size(cell.size):>6} "
                          f"x{cell.procs}  {kind:16}  median {res.median_ns / 1e3:8.2f} µs  "
                          f"p99 {res.p99_ns / 1e3:8.2f} µs  {res.ops_per_s:10,.0f} ops/s",
                          file=sys.stderr, flush=True)

    for (cell, kind), runs in rounds.items():
        bad = sum(r.bad for r in runs)
        if bad:
            notes.append(f"- **{kind}, {cell.op} {fmt_size(cell.size)} x{cell.procs}: {bad} "
                         "reads missed or returned a value of the wrong length.**")
        short = [r.ops for r in runs if r.ops < args.ops * cell.procs]
        if short:
            notes.append(f"- {kind}, {cell.op} {fmt_size(cell.size)} x{cell.procs}: hit the "
                         f"{args.time_cap:g} s cap in {len(short)} round(s) "
                         f"(fewest ops {min(short):,} of {args.ops * cell.procs:,}).")

    pkgs = [f"shmsession {version('shmsession')}", f"posix_ipc {version('posix_ipc')}"]
    if redis_kinds:
        pkgs.append(f"redis-py {version('redis')}, redis-server {redis_server_version()}")
    header = [
        "# shmsession store benchmark",
        "",
        f"nproc {os.cpu_count()}, {platform.platform()}; Python {platform.python_version()}; "
        f"{', '.join(pkgs)}; {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        "",
        f"{'quick' if args.quick else 'full'} run: {args.ops:,} ops per process per cell "
        f"(cap {args.time_cap:g} s), {args.rounds} rounds with the store order rotating, "
        f"{args.keys:,} pre-populated 43-char ids picked uniformly at random, "
        f"{args.start_method} start. Each op is timed alone by perf_counter_ns() around the "
        f"call, nothing subtracted (an empty timed region reads {timer_overhead_ns()} ns here). "
        "Every figure is the median over rounds; ÷ baseline compares with the throwaway table "
        "in `_baseline.py`.",
    ]
    if set(SHM_KINDS) & set(kinds):
        from shmsession._build import BUILD

        header += ["", f"`shmsession` is this process's build ({BUILD}); `shmsession-pure` is a "
                   "store of its own whose every handle is put on the pure-Python path "
                   "(`store._hot = None`), as every call of the pure build runs."]
    return render(cells, kinds, rounds, header, notes)


def sigterm_exits() -> None:
    """From now on SIGTERM becomes SystemExit, so the finally blocks unlink segments, stop
    workers and servers; a second one is ignored rather than cutting that clean-up short.
    (Workers started by fork set SIGTERM back to the default first, see ``worker``.)"""

    def on_sigterm(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sigterm_exits()
    tag = f"bench-{os.getpid()}-"
    try:
        table = run(args, tag)
    finally:
        remove_leftovers(tag)
    publish(table, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
