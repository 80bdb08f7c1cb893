#!/usr/bin/env python3
"""End to end: what a server-side session costs per HTTP request, Flask on gunicorn.

One Flask app (``http_app.py``) with four session backends, each served by its own gunicorn
(4 sync workers on 127.0.0.1), loaded in turn by ``wrk`` (or, without it, a bounded Python
client) with one session cookie kept per connection: Flask's signed-cookie sessions (the
floor), shmsession's Flask adapter on a shared-memory store, Flask-Session's Redis backend,
and shmsession's Flask adapter on ``RedisSessionStorage``. Both Redis variants use one private
redis-server on a unix socket. Every request reads and writes a ~0.6 KiB session. Rounds
interleave the variants, their order rotating; the table gives req/s per round, medians, and
the cost per request over the floor in µs (1e6/rps - 1e6/rps_floor).

Run ``python benchmarks/bench_http.py --quick`` for a short smoke run; see README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from bench_store import (publish, redis_server, redis_server_version, redis_unavailable,
                         remove_leftovers, version)

from shmsession._process import (
    answering_workers,
    free_port,
    gunicorn_command,
    sigterm_interrupts,
    start_server,
    stop_server,
)

HERE = Path(__file__).resolve().parent
VARIANTS = ("cookie", "shm", "flask-session-redis", "shm-redis")
REDIS_VARIANTS = ("flask-session-redis", "shm-redis")
LABELS = {
    "cookie": "Flask signed cookie (floor)",
    "shm": "shmsession, shared memory",
    "flask-session-redis": "Flask-Session, Redis",
    "shm-redis": "shmsession, `RedisSessionStorage`",
}
START_TIMEOUT = 60.0  # seconds for gunicorn's workers to answer
WRK_GRACE = 30.0  # seconds a wrk run may take beyond its duration before it is killed
REQUEST_TIMEOUT = 5.0  # seconds, one request of the Python client
#: Requests one connection of the Python client makes at most, whatever the duration.
MAX_REQUESTS_PER_CONNECTION = 200_000

# One wrk thread per connection (-t = -c), so a thread's globals are its connection's: the
# session cookie it carries, the highest counter the app answered, and bad answers. done()
# runs once, after every thread, and reports them with wrk's own figures.
WRK_SCRIPT = r"""
cookie, maxn, bad = nil, 0, 0
local threads = {}

function setup(thread) table.insert(threads, thread) end

function request()
  if cookie then return wrk.format("GET", "/", {["Cookie"] = cookie}) end
  return wrk.format("GET", "/")
end

function response(status, headers, body)
  local set = headers["Set-Cookie"]
  if set then cookie = string.match(set, "^[^;]+") end
  local n = tonumber(body)
  if status ~= 200 or not n then bad = bad + 1 elseif n > maxn then maxn = n end
end

function done(summary, latency, requests)
  local counted, answers_bad = 0, 0
  for _, t in ipairs(threads) do
    counted = counted + t:get("maxn")
    answers_bad = answers_bad + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d errors=%d counted=%d bad=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout + e.status,
    counted, answers_bad))
end
"""
WRK_LINE = re.compile(r"^BENCH requests=(\d+) duration_us=(\d+) errors=(\d+) counted=(\d+) "
                      r"bad=(\d+)$", re.M)


@dataclass
class Load:
    """One load run against one server."""

    requests: int
    seconds: float
    errors: int  # socket errors, timeouts, and answers that were not 200 with a counter
    counted: int  # the sessions' final counters, summed over connections
    commands: dict[str, float] = field(default_factory=dict)  # Redis calls per request
    worker_cpu: float | None = None  # µs of CPU per request, gunicorn's workers together
    redis_cpu: float | None = None  # µs of CPU per request, redis-server

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def lost(self, connections: int) -> bool:
        """Whether sessions lost writes: each connection's counter should have counted every
        answered request of it (give or take one per connection cut at the end)."""
        return abs(self.counted - self.requests) > max(connections, self.requests // 100)


# --- load -------------------------------------------------------------------------------------

def wrk_load(port: int, seconds: int, connections: int, script: Path) -> Load:
    argv = ["wrk", f"-t{connections}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
            "-s", str(script), f"http://127.0.0.1:{port}/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + WRK_GRACE,
                         stdin=subprocess.DEVNULL)
    found = WRK_LINE.search(out.stdout)
    if out.returncode or not found:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout[-2000:]}"
                           f"{out.stderr[-2000:]}")
    requests, duration_us, errors, counted, bad = map(int, found.groups())
    return Load(requests, duration_us / 1e6, errors + bad, counted)


def python_load(port: int, seconds: int, connections: int, script: Path) -> Load:
    """wrk's load from threads of http.client: one session per thread, a new connection per
    request (gunicorn's sync workers close each one anyway); bounded by time and count."""
    deadline = time.monotonic() + seconds

    def connection(_: int) -> tuple[int, int, int]:
        cookie: str | None = None
        done = errors = maxn = 0
        while done < MAX_REQUESTS_PER_CONNECTION and time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
            try:
                conn.request("GET", "/", headers={"Cookie": cookie} if cookie else {})
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                continue
            finally:
                conn.close()
            done += 1
            set_cookie = resp.headers.get("Set-Cookie")
            if set_cookie:
                cookie = set_cookie.split(";", 1)[0]
            if resp.status != 200 or not body.isdigit():
                errors += 1
            else:
                maxn = max(maxn, int(body))
        return done, errors, maxn

    start = time.monotonic()
    with ThreadPoolExecutor(connections) as pool:
        results = list(pool.map(connection, range(connections)))
    elapsed = time.monotonic() - start
    return Load(sum(r[0] for r in results), elapsed, sum(r[1] for r in results),
                sum(r[2] for r in results))


def redis_figures(sock: str) -> tuple[dict[str, int], float]:
    """Calls per command since the server started (``INFO commandstats``: the commands a Lua
    script runs count too), and the server's CPU seconds so far."""
    import redis

    with redis.Redis(unix_socket_path=sock) as client:
        stats = client.info("commandstats")
        cpu = client.info("cpu")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    return calls, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def cpu_seconds(pids: Sequence[int]) -> float | None:
    """User + system CPU seconds the processes ``pids`` have used (Linux's /proc); None
    where that cannot be read."""
    ticks = 0
    try:
        for pid in pids:
            # Fields after the parenthesised command name: utime and stime are 12th and 13th.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(load: Any, server: Server, seconds: int, connections: int, script: Path,
            sock: str | None) -> Load:
    """One load run, with the CPU it cost the workers (and, with ``sock``, redis-server and
    the Redis commands) per request."""
    calls, redis_before = redis_figures(sock) if sock else ({}, 0.0)
    workers_before = cpu_seconds(server.pids)
    result: Load = load(server.port, seconds, connections, script)
    workers_after = cpu_seconds(server.pids)
    per_request = 1e6 / max(result.requests, 1)
    if workers_before is not None and workers_after is not None:
        result.worker_cpu = (workers_after - workers_before) * per_request
    if sock:
        after, redis_after = redis_figures(sock)
        after.pop("info", None)  # our own looks
        result.commands = {cmd: (n - calls.get(cmd, 0)) * per_request / 1e6
                           for cmd, n in sorted(after.items())}
        # Drop the rare ones (a new connection's HELLO): they cost no request anything.
        result.commands = {cmd: n for cmd, n in result.commands.items() if n >= 0.005}
        result.redis_cpu = (redis_after - redis_before) * per_request
    return result


# --- servers ----------------------------------------------------------------------------------

class Server(NamedTuple):
    port: int
    pids: list[int]  # the workers'


@contextlib.contextmanager
def serve(variants: Sequence[str], env: Mapping[str, str], workers: int, tmp: Path
          ) -> Iterator[dict[str, Server]]:
    """A gunicorn per variant serving ``http_app`` with its sessions, all started at once;
    yields them once every worker answers; stops each one's process group at the end."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        ports = {}
        for variant in variants:
            ports[variant] = port = free_port()
            with open(tmp / f"gunicorn-{variant}.log", "wb") as log:  # the server has its own
                started.append(start_server(gunicorn_command("http_app:app", port, workers),
                                            {**env, "BENCH_HTTP_VARIANT": variant},
                                            cwd=str(HERE), output=log))
        servers = {}
        for variant, server in zip(variants, started):
            port = ports[variant]
            pids = answering_workers(server, port, "/pid", workers, START_TIMEOUT)
            if len(pids) < workers:
                log_text = (tmp / f"gunicorn-{variant}.log").read_text(errors="replace")
                raise RuntimeError(f"{variant}: {len(pids)} of {workers} gunicorn workers "
                                   f"answered in {START_TIMEOUT:.0f} s:\n{log_text[-2000:]}")
            servers[variant] = Server(port, pids)
        yield servers
    finally:
        for server in started:
            stop_server(server)


@contextlib.contextmanager
def shm_store(name: str) -> Iterator[None]:
    """The shared-memory store the ``shm`` variant's workers attach to; unlinked at the end."""
    from shmsession import SessionStorage

    store = SessionStorage(name)
    try:
        yield
    finally:
        try:
            store.unlink()
        finally:
            store.close()


# --- report -----------------------------------------------------------------------------------

def cost_us(rps: float, floor_rps: float) -> float:
    """Wall time per request over the floor's, in µs."""
    return 1e6 / rps - 1e6 / floor_rps


def fmt_commands(commands: Mapping[str, float]) -> str:
    return ", ".join(f"{cmd} {n:.2f}" for cmd, n in commands.items()) or "-"


def fmt_median(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):.0f}" if known else "-"


def render(variants: Sequence[str], runs: Mapping[str, list[Load]], header: Sequence[str],
           notes: Sequence[str]) -> str:
    nrounds = len(runs[variants[0]])
    floor = runs.get("cookie")
    lines = [*header, "", "| variant | " + " | ".join(f"req/s, round {r + 1}"
                                                       for r in range(nrounds))
             + " | req/s, median | µs per request | over the floor, µs: median (min–max) "
             "| CPU µs per request: workers | CPU µs per request: redis-server "
             "| Redis calls per request |",
             "|---|" + "--:|" * (nrounds + 5) + "---|"]
    costs: dict[str, list[float]] = {}
    for variant in variants:
        loads = runs[variant]
        rps = [load.rps for load in loads]
        med = statistics.median(rps)
        if floor is None or variant == "cookie":
            over = "-"
        else:
            costs[variant] = [cost_us(a.rps, f.rps) for a, f in zip(loads, floor)]
            over = (f"{statistics.median(costs[variant]):+.0f} "
                    f"({min(costs[variant]):+.0f} to {max(costs[variant]):+.0f})")
        lines.append(f"| {LABELS[variant]} | " + " | ".join(f"{x:,.0f}" for x in rps)
                     + f" | {med:,.0f} | {1e6 / med:.0f} | {over} "
                     f"| {fmt_median([load.worker_cpu for load in loads])} "
                     f"| {fmt_median([load.redis_cpu for load in loads])} "
                     f"| {fmt_commands(loads[-1].commands)} |")
    if "shm-redis" in costs and "flask-session-redis" in costs:
        ours, theirs = costs["shm-redis"], costs["flask-session-redis"]
        # Each round's difference compares two runs made a few seconds apart: the figure
        # least moved by other load on the machine.
        diffs = [a - b for a, b in zip(ours, theirs)]
        rps_ratio = statistics.median(
            a.rps / b.rps for a, b in zip(runs["shm-redis"], runs["flask-session-redis"]))
        mo, mt = statistics.median(ours), statistics.median(theirs)
        cost_ratio = f"{mo / mt:.2f}" if mt > 0 else "- (Flask-Session's is not above 0)"
        lines += [
            "",
            "shmsession's adapter on `RedisSessionStorage` against Flask-Session's Redis "
            f"backend: {statistics.median(diffs):+.0f} µs per request, the median over rounds "
            f"of the difference ({', '.join(f'{d:+.0f}' for d in diffs)}); req/s ratio "
            f"{rps_ratio:.3f} (median over rounds); cost over the floor {mo:+.0f} µs ÷ "
            f"{mt:+.0f} µs = {cost_ratio}.",
        ]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


# --- main -------------------------------------------------------------------------------------

def run(args: argparse.Namespace, tag: str) -> str:
    notes: list[str] = []
    variants = [v for v in VARIANTS if v in args.variants]
    redis_wanted = [v for v in variants if v in REDIS_VARIANTS]
    if redis_wanted and (why := redis_unavailable()):
        variants = [v for v in variants if v not in REDIS_VARIANTS]
        notes.append(f"- {', '.join(redis_wanted)}: skipped ({why}).")
        print(notes[-1], file=sys.stderr, flush=True)
    if not variants:
        raise SystemExit("nothing to run")
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    load = wrk_load if use_wrk else python_load
    client = (f"wrk -t{args.connections} -c{args.connections} -d{args.duration}s"
              if use_wrk else f"the Python client ({args.connections} threads)")

    runs: dict[str, list[Load]] = {v: [] for v in variants}
    sock: str | None = None
    tmp = Path(tempfile.mkdtemp(prefix=tag))
    try:
        script = tmp / "session.lua"
        script.write_text(WRK_SCRIPT)
        with contextlib.ExitStack() as stack:
            env = {"BENCH_HTTP_SECRET": secrets.token_hex(32),
                   "BENCH_HTTP_STORE": f"{tag}{secrets.token_hex(4)}"}
            if any(v in REDIS_VARIANTS for v in variants):
                sock = stack.enter_context(redis_server(tag))
                env["BENCH_HTTP_REDIS"] = sock
            if "shm" in variants:
                stack.enter_context(shm_store(env["BENCH_HTTP_STORE"]))
            servers = stack.enter_context(serve(variants, env, args.workers, tmp))
            if args.warmup:  # imports, connections, first sessions: not in the figures
                for v in variants:
                    load(servers[v].port, args.warmup, args.connections, script)
            for r in range(args.rounds):
                order = variants[r % len(variants):] + variants[:r % len(variants)]
                for v in order:
                    res = measure(load, servers[v], args.duration, args.connections, script,
                                  sock if v in REDIS_VARIANTS else None)
                    runs[v].append(res)
                    print(f"round {r + 1}/{args.rounds}  {v:20} {res.rps:8,.0f} req/s  "
                          f"{res.requests:7,} requests  {res.errors} errors",
                          file=sys.stderr, flush=True)
                    if res.errors or res.lost(args.connections):
                        notes.append(f"- **{LABELS[v]}, round {r + 1}: {res.errors} failed "
                                     f"requests; sessions counted {res.counted:,} of "
                                     f"{res.requests:,} requests.**")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    pkgs = [f"shmsession {version('shmsession')}", f"Flask {version('flask')}",
            f"gunicorn {version('gunicorn')}"]
    if sock:
        pkgs += [f"Flask-Session {version('flask-session')}", f"redis-py {version('redis')}",
                 f"redis-server {redis_server_version()}"]
    header = [
        "# End to end: a session per HTTP request",
        "",
        f"nproc {os.cpu_count()}, {platform.platform()}; Python {platform.python_version()}; "
        f"{', '.join(pkgs)}; {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        "",
        f"{'quick' if args.quick else 'full'} run: gunicorn with {args.workers} sync workers "
        f"on 127.0.0.1 per variant; load from {client}, one session cookie per connection, "
        f"{args.duration} s per run after a {args.warmup} s warm-up; {args.rounds} rounds, "
        "the variants' order rotating. Every request reads and writes a ~0.6 KiB session "
        "(a counter and 576 hex characters). µs per request is 1e6 ÷ req/s; over the floor "
        "is that minus the signed-cookie variant's, round by round. CPU per request (medians "
        "over rounds) is what the gunicorn workers (`/proc`) and redis-server (`INFO cpu`) "
        "used during the run, divided by its requests. Redis calls per request (last round, `INFO "
        "commandstats`) include the commands a Lua script runs.",
    ]
    return render(variants, runs, header, notes)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2 s per run, 1 s warm-up, 3 rounds")
    ap.add_argument("--duration", type=int, help="seconds per run (default 5)")
    ap.add_argument("--warmup", type=int, help="seconds of untimed load per variant (default 3)")
    ap.add_argument("--rounds", type=int, help="rounds over the variants (default 5)")
    ap.add_argument("--connections", type=int, default=8, help="concurrent connections")
    ap.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"which of {','.join(VARIANTS)} to run")
    ap.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                    help="load generator: wrk when on PATH (auto), or the Python client")
    ap.add_argument("--output", type=Path, default=HERE / "results" / "http.md")
    args = ap.parse_args(argv)
    preset = {"duration": 2, "warmup": 1, "rounds": 3} if args.quick else \
        {"duration": 5, "warmup": 3, "rounds": 5}
    for key, default in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if set(args.variants) - set(VARIANTS) or not args.variants:
        ap.error(f"--variants takes a subset of {','.join(VARIANTS)}")
    if min(args.duration, args.rounds, args.connections, args.workers) < 1 or args.warmup < 0:
        ap.error("durations and counts must be at least 1 (the warm-up at least 0)")
    if args.client == "wrk" and not shutil.which("wrk"):
        ap.error("wrk is not on PATH (Debian: apt-get install wrk)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tag = f"bench-http-{os.getpid()}-"
    try:
        with sigterm_interrupts():  # SIGTERM runs the same clean-up as Ctrl-C
            table = run(args, tag)
    finally:
        remove_leftovers(tag)
    publish(table, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
