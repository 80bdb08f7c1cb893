#!/usr/bin/env python3
"""Benchmark what owners save and what they cost: ``invalidate_owner`` against a full scan,
and ``write`` with and without an owner.

In one run, on the shared-memory store and (when ``redis-server`` and the ``redis`` package
are both there) on shmsession's Redis store, each holding ``--sessions`` sessions (100,000)
of other owners:

- **Revoke.** Ten sessions of one user are written (untimed), then deleted, once by
  ``invalidate_owner(user)`` and once by a full scan that finds the same ten, alternating
  round by round. Shared memory: a ``sessions()`` walk of the whole table, then
  ``invalidate_digest`` of the rows whose digest is the user's -- a floor, since without
  owners nothing in a row says whose it is (the digests are handed to it). Redis: what a user
  without owners has to do: ``SCAN`` the store's session keys, ``MGET`` them 1,000 at a time,
  decode every value (JSON with the user in it) and ``invalidate_digest`` the user's.
- **Write.** The same value rewritten over existing sessions, one op at a time, the three
  kinds interleaved op by op: without an owner (a session that has none), with the owner it
  already has, and with another owner (each session flips between two owners of its own).

Run ``python benchmarks/bench_owners.py --quick`` for a smoke run; see README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench_store import (publish, redis_server, redis_server_version, redis_unavailable,
                         remove_leftovers, sigterm_exits, version)

HERE = Path(__file__).resolve().parent
TARGET_SESSIONS = 10  # the user's sessions that each revoke deletes
SESSIONS_PER_OTHER_OWNER = 5  # the store's other sessions belong to sessions / 5 owners
PAD = 200  # characters of padding in each value: about 240 bytes of JSON a session
SCAN_BATCH = 1000
WRITES = ("no owner", "the owner it has", "another owner")


def value_of(user: str) -> bytes:
    """A session as an application without owners would keep it: the user inside."""
    return json.dumps({"user": user, "pad": "x" * PAD}).encode()


# --- the stores -----------------------------------------------------------------------------

@contextlib.contextmanager
def shm_store(tag: str, sessions: int) -> Iterator[Any]:
    from shmsession import SessionStorage

    # Room for the sessions, the write benchmark's and headroom; "raise", so that a store too
    # small fails instead of evicting (an eviction would change what is measured).
    max_entries = sessions + sessions // 4 + 4096
    store = SessionStorage(f"{tag}{secrets.token_hex(4)}", size=max_entries * 1024,
                           max_entries=max_entries, when_full="raise")
    try:
        yield store
    finally:
        try:
            store.unlink()
        finally:
            store.close()


@contextlib.contextmanager
def redis_store(tag: str, sock: str) -> Iterator[Any]:
    from shmsession.redis import RedisSessionStorage

    store = RedisSessionStorage(f"{tag}{secrets.token_hex(4)}", f"unix://{sock}",
                                secret=secrets.token_hex(16))
    try:
        yield store
    finally:
        store.unlink()


def fill(store: Any, sessions: int) -> None:
    """``sessions`` sessions, SESSIONS_PER_OTHER_OWNER to an owner, none the user's."""
    for k in range(sessions):
        user = f"other-{k // SESSIONS_PER_OTHER_OWNER}"
        store.write(store.new_id(), value_of(user), owner=user)


# --- the full scans ---------------------------------------------------------------------------

def shm_scan(store: Any, user: str, digests: set[str]) -> int:
    """The floor of a scan in shared memory: walk every session, delete the user's (whose
    digests it is handed: without owners, a row does not say whose it is)."""
    return sum(store.invalidate_digest(r.digest) for r in store.sessions()
               if r.digest in digests)


def redis_scan(sock: str, store: Any, user: str) -> int:
    """What a user without owners does on Redis: SCAN the session keys, read them, decode
    every value, delete the user's."""
    import redis

    client = redis.Redis(unix_socket_path=sock)
    deleted = 0
    try:
        keys = client.scan_iter(match=f"{store.prefix}s:*", count=SCAN_BATCH)
        while batch := [k for _, k in zip(range(SCAN_BATCH), keys)]:
            for key, record in zip(batch, client.mget(batch)):
                # A record is the 8-byte version, then the value.
                if record is not None and json.loads(record[8:])["user"] == user:
                    deleted += store.invalidate_digest(key[-32:].decode())
    finally:
        client.close()
    return deleted


# --- measuring --------------------------------------------------------------------------------

def revoke_rounds(store: Any, scan: Callable[[Any, str, set[str]], int], rounds: int
                  ) -> tuple[list[int], list[int]]:
    """Per round, ns of ``invalidate_owner`` and of the scan, each of TARGET_SESSIONS
    sessions written just before (the order alternating between rounds)."""
    user = "the-user"
    owner_ns: list[int] = []
    scan_ns: list[int] = []
    for r in range(2 * rounds):
        for _ in range(TARGET_SESSIONS):
            store.write(store.new_id(), value_of(user), owner=user)
        digests = {s.digest for s in store.sessions_of(user)}
        if len(digests) != TARGET_SESSIONS:
            raise RuntimeError(f"{len(digests)} sessions of the user, not {TARGET_SESSIONS}")
        by_owner = (r % 4) in (0, 3)  # owner, scan, scan, owner, ...
        t0 = time.perf_counter_ns()
        n = store.invalidate_owner(user) if by_owner else scan(store, user, digests)
        elapsed = time.perf_counter_ns() - t0
        if n != TARGET_SESSIONS or store.sessions_of(user):
            raise RuntimeError(f"{'invalidate_owner' if by_owner else 'the scan'} deleted "
                               f"{n} sessions of the user, not {TARGET_SESSIONS}")
        (owner_ns if by_owner else scan_ns).append(elapsed)
    return owner_ns, scan_ns


def write_ops(store: Any, ops: int, keys: int) -> dict[str, list[int]]:
    """ns per write of each kind in WRITES, ``ops`` each, interleaved op by op, over ``keys``
    sessions per kind rewritten in turn."""
    value = value_of("someone")
    plain = [store.new_id() for _ in range(keys)]
    same = [store.new_id() for _ in range(keys)]
    moved = [store.new_id() for _ in range(keys)]
    pairs = [(f"a-{k}", f"b-{k}") for k in range(keys)]  # a moved session flips between them
    for k in range(keys):
        store.write(plain[k], value)
        store.write(same[k], value, owner=f"same-{k}")
        store.write(moved[k], value, owner=pairs[k][0])
    times: dict[str, list[int]] = {kind: [] for kind in WRITES}
    now = time.perf_counter_ns
    write = store.write
    for i in range(ops):
        k = i % keys
        owner = pairs[k][1 - (i // keys) % 2]  # its first rewrite gives it b-k, then a-k...
        t0 = now()
        write(plain[k], value)
        t1 = now()
        write(same[k], value, owner=f"same-{k}")
        t2 = now()
        write(moved[k], value, owner=owner)
        t3 = now()
        times["no owner"].append(t1 - t0)
        times["the owner it has"].append(t2 - t1)
        times["another owner"].append(t3 - t2)
    for k in range(min(keys, 10)):  # a moved session is its last owner's, and only its
        rewrites = ops // keys + (k < ops % keys)
        last = pairs[k][1 - (rewrites - 1) % 2] if rewrites else pairs[k][0]
        other = pairs[k][0] if last == pairs[k][1] else pairs[k][1]
        if len(store.sessions_of(last)) != 1 or store.sessions_of(other):
            raise RuntimeError(f"moved session {k} is not its last owner's alone")
    return times


# --- report -----------------------------------------------------------------------------------

def us(ns: float) -> str:
    return f"{ns / 1e3:,.1f}"


def p99(samples: Sequence[int]) -> int:
    return sorted(samples)[min(len(samples) - 1, int(0.99 * len(samples)))]


def render(args: argparse.Namespace, results: dict[str, dict[str, Any]], notes: list[str],
           redis: bool) -> str:
    pkgs = [f"shmsession {version('shmsession')}", f"posix_ipc {version('posix_ipc')}"]
    if redis:
        pkgs.append(f"redis-py {version('redis')}, redis-server {redis_server_version()}")
    lines = [
        "# shmsession owners benchmark",
        "",
        f"nproc {os.cpu_count()}, {platform.platform()}; Python {platform.python_version()}; "
        f"{', '.join(pkgs)}; {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        "",
        f"{'quick' if args.quick else 'full'} run: each store holds {args.sessions:,} "
        f"sessions of {args.sessions // SESSIONS_PER_OTHER_OWNER:,} other owners (about "
        f"{len(value_of('other-0'))} bytes of JSON each), one process, timed by "
        "perf_counter_ns() around each call. Redis: a private redis-server on a unix socket.",
        "",
        f"## Revoking one user's {TARGET_SESSIONS} sessions",
        "",
        f"Median over {args.rounds} rounds each, the two ways alternating. The shared-memory "
        "scan is a floor: a walk of every session, handed the user's digests (without owners "
        "nothing says whose a session is); the Redis scan does what a user without owners "
        "must: SCAN, MGET, decode every value.",
        "",
        "| store | `invalidate_owner` µs | full scan µs | scan ÷ `invalidate_owner` |",
        "|---|--:|--:|--:|",
    ]
    for label, r in results.items():
        owner, scan = statistics.median(r["owner"]), statistics.median(r["scan"])
        lines.append(f"| {label} | {us(owner)} | {us(scan)} | {scan / owner:,.0f}× |")
    lines += [
        "",
        "## What owners add to `write`",
        "",
        f"{args.ops:,} writes of each kind, interleaved op by op over {args.keys:,} sessions "
        "a kind, each rewriting the same value over a live session: with no owner (a session "
        "that has none), with the owner it already has, with another owner (the session moves "
        "from one owner's list to another's).",
        "",
        "| store | write | median µs | p99 µs | ÷ plain write (median) |",
        "|---|---|--:|--:|--:|",
    ]
    for label, r in results.items():
        plain = statistics.median(r["write"]["no owner"])
        for kind in WRITES:
            samples = r["write"][kind]
            median = statistics.median(samples)
            lines.append(f"| {label} | {kind} | {us(median)} | {us(p99(samples))} "
                         f"| {median / plain:.2f} |")
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n"


# --- main -------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 3 revoke rounds, 3,000 writes of each kind")
    ap.add_argument("--sessions", type=int, default=100_000,
                    help="sessions of other owners in each store (default 100,000)")
    ap.add_argument("--rounds", type=int,
                    help="revokes of each way, each of 10 sessions (default 15)")
    ap.add_argument("--ops", type=int, help="writes of each kind (default 30,000)")
    ap.add_argument("--keys", type=int, default=1000,
                    help="sessions each kind of write rewrites in turn (default 1,000)")
    ap.add_argument("--stores", default="shm,redis",
                    help="which of shm,redis to run (redis only if available)")
    ap.add_argument("--output", type=Path, default=HERE / "results" / "owners.md")
    args = ap.parse_args(argv)
    defaults = {"rounds": 3, "ops": 3_000} if args.quick else {"rounds": 15, "ops": 30_000}
    for key, default in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not args.stores or set(args.stores) - {"shm", "redis"}:
        ap.error("--stores takes a subset of shm,redis")
    if min(args.sessions, args.rounds, args.ops, args.keys) < 1:
        ap.error("counts must be positive")
    return args


def measure(label: str, store: Any, scan: Callable[[Any, str, set[str]], int],
            args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.monotonic()
    fill(store, args.sessions)
    print(f"{label}: {args.sessions:,} sessions written in {time.monotonic() - t0:.1f} s",
          file=sys.stderr, flush=True)
    owner_ns, scan_ns = revoke_rounds(store, scan, args.rounds)
    print(f"{label}: invalidate_owner median {us(statistics.median(owner_ns))} µs, "
          f"full scan {us(statistics.median(scan_ns))} µs", file=sys.stderr, flush=True)
    times = write_ops(store, args.ops, args.keys)
    print(f"{label}: write " + ", ".join(f"{kind} {us(statistics.median(t))} µs"
                                         for kind, t in times.items()),
          file=sys.stderr, flush=True)
    return {"owner": owner_ns, "scan": scan_ns, "write": times}


def run(args: argparse.Namespace, tag: str) -> str:
    notes: list[str] = []
    results: dict[str, dict[str, Any]] = {}
    redis = "redis" in args.stores
    if redis and (why := redis_unavailable()):
        print(f"redis: skipped ({why})", file=sys.stderr, flush=True)
        notes.append(f"- The Redis store: skipped ({why}).")
        redis = False
    if "shm" in args.stores:
        with shm_store(tag, args.sessions) as store:
            results["shared memory"] = measure("shared memory", store, shm_scan, args)
    if redis:
        with redis_server(tag) as sock, redis_store(tag, sock) as store:
            results["Redis"] = measure("Redis", store,
                                       lambda st, user, _: redis_scan(sock, st, user), args)
    return render(args, results, notes, redis)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sigterm_exits()  # the finally blocks unlink the store and stop the server
    tag = f"bench-owners-{os.getpid()}-"
    try:
        table = run(args, tag)
    finally:
        remove_leftovers(tag)
    publish(table, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
