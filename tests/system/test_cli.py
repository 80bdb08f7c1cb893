"""The ``shmsession`` command, driven as a user would: real subprocesses, real pipes, and a
real pseudo-terminal for what only happens on a terminal (confirmation prompts, the live
``top`` view, Ctrl-C, the progress bar)."""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import pwd
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

import pyte
import pytest

from shmsession import SessionStorage
from shmsession import _layout as L
from shmsession._segment import lock_path, segment_path

from tests._stores import remove_store

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMAND = [sys.executable, "-m", "shmsession"]
RUN_TIMEOUT = 60.0  # one command, on a loaded machine
T = TypeVar("T")
SUBCOMMANDS = ("stats", "top", "ls", "check", "clear", "revoke", "unlink", "dump", "load",
               "demo")

pytestmark = pytest.mark.timeout(120)


def run(*args: str, stdin: Optional[str] = None,
        timeout: float = RUN_TIMEOUT) -> "subprocess.CompletedProcess[str]":
    """Run ``shmsession ARGS`` with pipes (no terminal); stdin is empty unless given."""
    return subprocess.run(
        COMMAND + list(args), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
        input=stdin if stdin is not None else "",
    )


def assert_one_line_error(result: "subprocess.CompletedProcess[str]", code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("shmsession ")
    return lines[0]


def fill(name: str, count: int = 10, size: int = 4 << 20) -> List[str]:
    """Create store ``name`` with ``count`` sessions of growing size; returns their ids."""
    ids = [f"user-session-{k:05d}-{SessionStorage.new_id()}" for k in range(count)]
    with SessionStorage(name, size=size) as store:
        for k, sid in enumerate(ids):
            store.write(sid, b"v" * (100 * (k + 1)), ttl=math.inf if k == 0 else 600 + k)
    return ids


# --------------------------------------------------------------------------------------------
# A pseudo-terminal
# --------------------------------------------------------------------------------------------


def _take_controlling_tty() -> None:
    # In the child, after setsid (start_new_session): make the pty its controlling
    # terminal, so that Ctrl-C typed on it becomes SIGINT, as in a real terminal.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Pty:
    """``shmsession ARGS`` with a pseudo-terminal as stdin, stdout and stderr (or only the
    streams in ``on_tty``; the others are pipes). ``output`` holds the bytes it wrote to the
    terminal, ``screen`` what a terminal (the emulator pyte) shows of them."""

    def __init__(self, args: Sequence[str], on_tty: Sequence[str] = ("stdin", "stdout", "stderr"),
                 rows: int = 40, columns: int = 120, term: str = "xterm-256color") -> None:
        self.screen = pyte.Screen(columns, rows)
        self._stream = pyte.ByteStream(self.screen)
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.attrs_before = termios.tcgetattr(self.slave)
        streams = {s: (self.slave if s in on_tty else subprocess.PIPE)
                   for s in ("stdin", "stdout", "stderr")}
        self.proc = subprocess.Popen(
            COMMAND + list(args), cwd=REPO_ROOT, start_new_session=True,
            preexec_fn=_take_controlling_tty if "stdin" in on_tty else None,
            env={**os.environ, "TERM": term},
            **streams,  # type: ignore[arg-type]
        )
        self.output = b""

    def read_until(self, pattern: str, timeout: float = 30.0) -> "re.Match[bytes]":
        """Read the terminal until ``pattern`` (a bytes regex) matches what it was sent."""
        regex = re.compile(pattern.encode(), re.S)
        return self._until(lambda: regex.search(self.output), pattern, timeout)

    def shown_until(self, pattern: str, timeout: float = 30.0) -> str:
        """Read the terminal until its screen, as text (one line a row), matches ``pattern``
        (a str regex); returns that text."""
        regex = re.compile(pattern)
        return self._until(lambda: self.shown() if regex.search(self.shown()) else None,
                           pattern, timeout)

    def shown(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def _until(self, found: Callable[[], Optional[T]], pattern: str, timeout: float) -> T:
        deadline = time.monotonic() + timeout
        while True:
            result = found()
            if result is not None:
                return result
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not shown within {timeout} s; sent: "
                                     f"{self.output[-3000:]!r}; screen:\n{self.shown()}")
            self._read(min(left, 0.5))

    def _read(self, wait: float) -> None:
        ready, _, _ = select.select([self.master], [], [], wait)
        if ready:
            try:
                data = os.read(self.master, 65536)
            except OSError as exc:  # EIO: nothing left on the other side
                if exc.errno != errno.EIO:
                    raise
                return
            self.output += data
            self._stream.feed(data)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout} s: {self.output[-2000:]!r}")
            self._read(0.05)
        self._read(0.05)  # the last bytes it wrote
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        finally:
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
            os.close(self.master)
            os.close(self.slave)


@pytest.fixture
def pty_run() -> Iterator[List[Pty]]:
    """Pty sessions a test starts; each is killed (if still running) and reaped after it."""
    started: List[Pty] = []
    try:
        yield started
    finally:
        for session in started:
            session.close()


def start(started: List[Pty], *args: str, **kw: object) -> Pty:
    session = Pty(args, **kw)  # type: ignore[arg-type]
    started.append(session)
    return session


# --------------------------------------------------------------------------------------------
# Help, usage, and a store that is not there
# --------------------------------------------------------------------------------------------


def test_help_lists_every_command_and_the_exit_codes() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in SUBCOMMANDS:
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M), command
    for code in ("0", "1", "2", "3", "130"):
        assert re.search(rf"^\s+{code}\s", result.stdout, re.M), code
    for command in ("stats", "ls", "load"):
        sub = run(command, "--help")
        assert sub.returncode == 0 and "exit status" in sub.stdout and "NAME" in sub.stdout
    demo = run("demo", "--help")  # handed to the demo's own parser
    assert demo.returncode == 0 and "--workers" in demo.stdout


@pytest.mark.parametrize("args", [
    (),
    ("stats",),
    ("stats", "x", "--bogus"),
    ("stats", "x", "--json", "--prometheus"),
    ("top", "x", "--interval", "0"),
    ("ls", "x", "--sort", "colour"),
    ("revoke", "x", "--yes"),  # no --owner
    ("revoke", "x", "--owner", "alice", "--keep-digest", "not-a-digest"),
    ("load", "x", "f", "--size", "lots"),
])
def test_usage_errors_exit_2(args: Tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 2, result
    assert "usage:" in result.stderr and "Traceback" not in result.stderr


def test_an_invalid_store_name_is_a_usage_error() -> None:
    line = assert_one_line_error(run("stats", "no/slashes"), 2)
    assert "not valid" in line


@pytest.mark.parametrize("args", [
    ("stats", "{}"), ("stats", "{}", "--prometheus"), ("top", "{}", "--iterations", "1"),
    ("ls", "{}"), ("ls", "{}", "--owner", "alice"), ("check", "{}"), ("clear", "{}", "--yes"),
    ("revoke", "{}", "--owner", "alice", "--yes"), ("unlink", "{}", "--yes"),
    ("dump", "{}", "/nonexistent-dir/snap"),
])
def test_no_such_store_exits_3_and_creates_nothing(name: str, args: Tuple[str, ...]) -> None:
    line = assert_one_line_error(run(*(a.format(name) for a in args)), 3)
    assert f"no store named {name!r}" in line
    assert not os.path.exists(segment_path(name)) and not os.path.exists(lock_path(name))


# --------------------------------------------------------------------------------------------
# stats
# --------------------------------------------------------------------------------------------


def _store_with_traffic(name: str) -> None:
    """10 sessions, then 6 hits and 4 misses, flushed to the shared counters by close()."""
    ids = fill(name)
    with SessionStorage(name, create=False) as store:
        for sid in ids[:6]:
            store.read(sid)
        for k in range(4):
            assert store.get(f"missing-{k}") is None


def test_stats_for_people_and_json(name: str) -> None:
    _store_with_traffic(name)
    people = run("stats", name)
    assert people.returncode == 0, people.stderr
    text = people.stdout
    with SessionStorage(name, create=False) as store:
        expected = store.stats()
    assert re.search(rf"^entries\s+10 of {expected.max_entries:,} \(\d+\.\d%", text, re.M), text
    assert re.search(r"^heap\s+\d+\.\d KiB of \d+\.\d MiB used \(\d+\.\d%\)", text, re.M), text
    assert re.search(r"^hit rate\s+60\.0% \(6 hits, 4 misses\)", text, re.M), text
    assert re.search(r"^largest free block\s+\d+\.\d MiB$", text, re.M), text
    for label in ("evictions", "expirations", "lock waits", "writes"):
        assert re.search(rf"^{label}\s+\d", text, re.M), label
    assert re.search(r"^lock waits\s+\d+ \(\d+\.\d{3} s waited", text, re.M)

    machine = run("stats", name, "--json")
    assert machine.returncode == 0
    data = json.loads(machine.stdout)
    assert data["name"] == name and data["entries"] == 10
    assert (data["hits"], data["misses"], data["writes"]) == (6, 4, 10)
    assert data["hit_rate"] == pytest.approx(0.6)
    assert data["table_fill"] == pytest.approx(10 / data["max_entries"])
    assert data["heap_fill"] == pytest.approx(data["bytes_used"] / data["heap_size"])
    assert data["bytes_used"] >= sum(100 * (k + 1) for k in range(10))


_METRIC = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(
    rf"^(?P<name>{_METRIC})(?:\{{(?P<labels>{_LABEL}(?:,{_LABEL})*,?)?\}})? "
    r"(?P<value>[+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|Inf|NaN))"
    r"(?: -?\d+)?$"
)


def parse_prometheus(text: str) -> Dict[str, Tuple[str, Dict[str, str], float]]:
    """A strict reader of the Prometheus text format (0.0.4) for what this exposition uses:
    every line is ``# HELP``, ``# TYPE`` or a sample; HELP and TYPE at most once per metric
    and before its samples; a metric's lines one uninterrupted group; counters end in
    ``_total``; the text ends with a line feed. Returns {metric: (type, labels, value)}."""
    assert text.endswith("\n"), "the last line must end with a line feed"
    types: Dict[str, str] = {}
    helps: Dict[str, str] = {}
    samples: Dict[str, Tuple[str, Dict[str, str], float]] = {}
    done: set = set()
    current: Optional[str] = None
    for line in text[:-1].split("\n"):
        if line.startswith("#"):
            m = re.fullmatch(rf"# (HELP|TYPE) ({_METRIC}) (.*)", line)
            assert m, f"not a HELP or TYPE line: {line!r}"
            kind, metric, rest = m.groups()
            assert metric not in samples, f"{kind} after a sample of {metric}"
            if kind == "TYPE":
                assert rest in ("counter", "gauge", "histogram", "summary", "untyped"), line
                assert metric not in types, f"two TYPE lines for {metric}"
                types[metric] = rest
            else:
                assert metric not in helps, f"two HELP lines for {metric}"
                assert "\n" not in rest and re.fullmatch(r"(?:[^\\]|\\[\\n])*", rest), line
                helps[metric] = rest
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            metric = m["name"]
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                     m["labels"] or ""))
            value = float(m["value"].replace("Inf", "inf"))
            assert metric not in samples, f"two samples of {metric} with one label set"
            samples[metric] = (types.get(metric, "untyped"), labels, value)
        if current is not None and metric != current:
            done.add(current)
        assert metric not in done, f"the lines of {metric} are not one group"
        current = metric
    for metric, (kind, _, _) in samples.items():
        assert metric in helps and metric in types, f"{metric} lacks HELP or TYPE"
        if kind == "counter":
            assert metric.endswith("_total") and samples[metric][2] >= 0, metric
    return samples


def test_stats_prometheus_text_format_parses_strictly(name: str) -> None:
    _store_with_traffic(name)
    result = run("stats", name, "--prometheus")
    assert result.returncode == 0, result.stderr
    metrics = parse_prometheus(result.stdout)
    data = json.loads(run("stats", name, "--json").stdout)
    for metric, (kind, labels, _) in metrics.items():
        assert metric.startswith("shmsession_")
        assert labels == {"store": name}, (metric, labels)
    counters = {m: v for m, (k, _, v) in metrics.items() if k == "counter"}
    gauges = {m: v for m, (k, _, v) in metrics.items() if k == "gauge"}
    for field in ("hits", "misses", "writes", "deletes", "evictions", "expirations",
                  "lock_waits", "lock_wait_seconds"):
        assert counters[f"shmsession_{field}_total"] == pytest.approx(data[field]), field
    assert gauges["shmsession_entries"] == 10
    assert gauges["shmsession_heap_used_bytes"] == data["bytes_used"]
    assert gauges["shmsession_heap_largest_free_bytes"] == data["largest_free"]
    assert gauges["shmsession_table_fill_ratio"] == pytest.approx(data["table_fill"])
    assert gauges["shmsession_heap_fill_ratio"] == pytest.approx(data["heap_fill"])
    assert (counters["shmsession_hits_total"], counters["shmsession_misses_total"]) == (6, 4)


def test_the_prometheus_reader_is_strict() -> None:
    good = '# HELP a_total A.\n# TYPE a_total counter\na_total{store="s"} 1\n'
    assert parse_prometheus(good)["a_total"] == ("counter", {"store": "s"}, 1.0)
    for bad in (
        good[:-1],  # no final line feed
        good.replace("# TYPE a_total counter\n", "") + "# TYPE a_total counter\n",
        good.replace("counter", "countr"),
        good.replace('"s"}', '"s}'),
        good.replace("a_total{", "a total{"),
        good + '# HELP b B.\n# TYPE b gauge\nb 2\na_total{store="s"} 3\n',
        good.replace("a_total", "a"),  # a counter not named *_total
    ):
        with pytest.raises(AssertionError):
            parse_prometheus(bad)


# --------------------------------------------------------------------------------------------
# ls
# --------------------------------------------------------------------------------------------


def test_ls_shows_digests_sizes_and_times_never_ids(name: str) -> None:
    ids = fill(name, 12)
    with SessionStorage(name, create=False) as store:
        digests = {info.digest for info in store.sessions()}
    result = run("ls", name)
    assert result.returncode == 0, result.stderr
    for sid in ids:
        assert sid not in result.stdout and sid[:20] not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["DIGEST", "SIZE", "AGE", "TIME", "LEFT", "VERSION"]
    rows = lines[1:-1]
    assert {row.split()[0] for row in rows} == digests
    assert re.fullmatch(r"12 live session\(s\), \d+\.\d KiB of values", lines[-1])
    assert sum("never" in row for row in rows) == 1  # the session written with ttl=inf
    assert all(re.search(r"\d+(?:\.\d)? (?:B|KiB)\s", row) for row in rows), rows
    widths = {len(row) for row in lines[:-1]}
    assert len(widths) == 1, "columns are aligned"

    biggest = run("ls", name, "--sort", "size", "--limit", "3", "--json")
    assert biggest.returncode == 0
    listed = json.loads(biggest.stdout)
    assert [r["size"] for r in listed] == [1200, 1100, 1000]
    assert set(listed[0]) == {"digest", "size", "age", "ttl", "version"}
    assert all(r["digest"] in digests for r in listed)
    soonest = json.loads(run("ls", name, "--sort", "ttl", "--json").stdout)
    ttls = [r["ttl"] for r in soonest]
    assert ttls[-1] is None and ttls[:-1] == sorted(ttls[:-1])
    limited = run("ls", name, "--limit", "2")
    assert len(limited.stdout.splitlines()) == 4 and "showing 2" in limited.stdout


def test_ls_without_a_name_lists_the_stores_on_the_host(name: str) -> None:
    """Like ``ipcs -m``: one row a store, with what ``stats`` and the file say, whoever's it is."""
    other = name + "-b"
    try:
        fill(name, 3)
        SessionStorage(other, size=2 << 20).close()
        listed = run("ls")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert lines[0].split() == ["NAME", "SIZE", "FILL", "ENTRIES", "OWNER", "MODE"]
        rows = {line.split()[0]: line for line in lines[1:-1]}
        user = pwd.getpwuid(os.getuid()).pw_name
        assert re.fullmatch(rf"{re.escape(name)} +4\.0 MiB +\d+\.\d% +3 / [\d,]+ +{user} "
                            r"+-rw-------", rows[name]), rows[name]
        assert re.search(r" 0 / [\d,]+ ", rows[other]), rows[other]
        assert re.fullmatch(r"\d+ store\(s\) in /dev/shm", lines[-1]), lines[-1]
        assert len({len(line) for line in lines[:-1] if line.split()[0] in (name, other)}) <= 2

        machine = {r["name"]: r for r in json.loads(run("ls", "--json").stdout)}
        mine = machine[name]
        assert (mine["size"], mine["entries"], mine["owner"], mine["mode"]) == (
            4 << 20, 3, user, "-rw-------")
        assert mine["error"] is None and 0 < mine["heap_fill"] < 1
        assert mine["max_entries"] >= 3 and machine[other]["entries"] == 0
    finally:
        remove_store(other)


def test_ls_without_a_name_shows_a_store_it_cannot_open_and_goes_on(name: str) -> None:
    """A planted file, or one of another layout, is a row with the reason, not a failure."""
    with open(segment_path(name), "wb") as f:
        f.write(b"not a store" * 1000)
    os.chmod(segment_path(name), 0o600)
    listed = run("ls")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(name + " "))
    assert "?" in row.split()[2:4], row  # no fill, no entries
    machine = {r["name"]: r for r in json.loads(run("ls", "--json").stdout)}
    assert machine[name]["entries"] is None and machine[name]["error"], machine[name]
    assert "Traceback" not in listed.stderr


def test_ls_sorting_options_need_a_store_name() -> None:
    line = assert_one_line_error(run("ls", "--sort", "size"), 2)
    assert "NAME" in line


def test_ls_into_a_closed_pipe_ends_quietly(name: str) -> None:
    with SessionStorage(name, size=16 << 20) as store:  # ~700 KB of listing: more than
        for k in range(10_000):                          # a pipe and our reads can hold
            store.write(f"s{k}", b"x")
    proc = subprocess.Popen(COMMAND + ["ls", name], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith(b"DIGEST")
        proc.stdout.close()  # like `| head -1`
        err = proc.stderr.read()
        assert proc.wait(RUN_TIMEOUT) == 128 + signal.SIGPIPE
        assert err == b""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


# --------------------------------------------------------------------------------------------
# check, and store errors
# --------------------------------------------------------------------------------------------


def _damage_table(name: str) -> None:
    """Give one used slot an unknown state, and point another at no heap block."""
    with open(segment_path(name), "r+b") as seg:
        ident = L.IDENTITY.unpack(seg.read(L.IDENTITY.size))
        capacity, table_off = ident[4], ident[8]
        seg.seek(table_off)
        table = seg.read(capacity * L.SLOT_SIZE)
        used = [i for i in range(capacity)
                if table[i * L.SLOT_SIZE + L.SLOT_STATE] == L.USED]
        assert len(used) >= 2
        seg.seek(table_off + used[0] * L.SLOT_SIZE + L.SLOT_STATE)
        seg.write(b"\x07")
        seg.seek(table_off + used[1] * L.SLOT_SIZE + 24)  # the value offset
        seg.write(struct.pack("<Q", 8))


def test_check_sound_then_damaged(name: str) -> None:
    fill(name, 20)
    sound = run("check", name)
    assert sound.returncode == 0 and "is sound" in sound.stdout and "20 entries" in sound.stdout
    _damage_table(name)
    damaged = run("check", name)
    assert damaged.returncode == 1, damaged
    assert "Traceback" not in damaged.stderr
    problems = [line[4:] for line in damaged.stdout.splitlines() if line.startswith("  - ")]
    assert any("unknown state 7" in p for p in problems), damaged.stdout
    assert any("points at 8, which is not a used block" in p for p in problems), damaged.stdout
    assert any("referenced by no slot" in p for p in problems), damaged.stdout
    assert re.search(rf"store '{name}' is DAMAGED: {len(problems)} problem", damaged.stdout)
    machine = run("check", name, "--json")
    assert machine.returncode == 1
    report = json.loads(machine.stdout)
    assert report["sound"] is False and report["problems"] == problems


def test_store_errors_are_one_line_messages(name: str) -> None:
    fill(name, 3)
    path = segment_path(name)
    os.chmod(path, 0o644)  # readable by others: the store refuses it
    line = assert_one_line_error(run("stats", name), 1)
    assert "group or others" in line or "mode" in line, line
    os.chmod(path, 0o600)
    with open(path, "r+b") as seg:  # another layout version
        seg.seek(8)
        seg.write(struct.pack("<I", L.LAYOUT_VERSION + 1))
    line = assert_one_line_error(run("ls", name), 1)
    assert "layout version" in line, line
    damaged = run("check", name)  # reported as what it is, not a crash
    assert damaged.returncode == 1 and "Traceback" not in damaged.stderr
    gone = run("unlink", name, "--yes")  # the remedy works on a store that cannot be opened
    assert gone.returncode == 0, gone.stderr
    assert not SessionStorage.exists(name)


def test_a_lock_held_elsewhere_times_out_instead_of_hanging(name: str) -> None:
    fill(name, 1)
    fd = os.open(segment_path(name), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what a worker stopped inside the store would hold
        started = time.monotonic()
        line = assert_one_line_error(run("stats", name, "--lock-timeout", "0.5"), 1)
        assert time.monotonic() - started < RUN_TIMEOUT
        assert "lock" in line.lower(), line
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# clear and unlink: confirmation
# --------------------------------------------------------------------------------------------


def _live(name: str) -> int:
    with SessionStorage(name, create=False) as store:
        return len(store)


@pytest.mark.parametrize("command", ["clear", "unlink"])
def test_refuses_without_yes_when_stdin_is_not_a_terminal(name: str, command: str) -> None:
    fill(name, 5)
    line = assert_one_line_error(run(command, name, stdin="y\n"), 2)
    assert "--yes" in line
    assert _live(name) == 5


def test_clear_asks_on_a_terminal(name: str, pty_run: List[Pty]) -> None:
    fill(name, 5)
    no = start(pty_run, "clear", name)
    no.read_until(r"Delete all 5 session\(s\) of store '[^']+'\?.*\[y/N\] ")
    no.type(b"n\r")
    assert no.wait() == 1
    assert b"nothing was changed" in no.output
    assert _live(name) == 5
    yes = start(pty_run, "clear", name)
    yes.read_until(r"\[y/N\] ")
    yes.type(b"y\r")
    assert yes.wait() == 0
    assert b"5 session(s) deleted" in yes.output
    assert _live(name) == 0 and SessionStorage.exists(name)
    assert run("clear", name, "--yes").returncode == 0


def test_unlink_asks_on_a_terminal(name: str, pty_run: List[Pty]) -> None:
    fill(name, 5)
    no = start(pty_run, "unlink", name)
    no.read_until(r"Remove store '[^']+' \(5 session\(s\), 4\.0 MiB\)\?.*\[y/N\] ")
    no.type(b"\r")  # the default is no
    assert no.wait() == 1
    assert SessionStorage.exists(name) and _live(name) == 5
    yes = start(pty_run, "unlink", name)
    yes.read_until(r"\[y/N\] ")
    yes.type(b"yes\r")
    assert yes.wait() == 0
    assert b"removed store" in yes.output
    assert not SessionStorage.exists(name)


# --------------------------------------------------------------------------------------------
# Owners: ls --owner and revoke
# --------------------------------------------------------------------------------------------


def fill_owners(name: str) -> Dict[str, List[str]]:
    """Store ``name`` with 3 sessions of alice (growing sizes), 2 of bob and 2 of nobody;
    returns each owner's digests in the order they became the owner's ("" for nobody's)."""
    with SessionStorage(name, size=4 << 20) as store:
        for k in range(3):
            store.write(f"alice-{k}-{SessionStorage.new_id()}", b"a" * (100 * (3 - k)),
                        owner="alice")
            time.sleep(0.002)  # distinct ages, so that sorting by age is not a tie
        for k in range(2):
            store.write(f"bob-{k}-{SessionStorage.new_id()}", b"b", owner="bob")
            store.write(f"anon-{k}-{SessionStorage.new_id()}", b"n")
        of = {o: [r.digest for r in store.sessions_of(o)] for o in ("alice", "bob")}
        owned = set(of["alice"]) | set(of["bob"])
        of[""] = [r.digest for r in store.sessions() if r.digest not in owned]
    return of


def _owned(name: str, owner: str) -> List[str]:
    with SessionStorage(name, create=False) as store:
        return [r.digest for r in store.sessions_of(owner)]


def test_ls_owner_lists_that_owners_sessions_in_the_order_they_became_its(name: str) -> None:
    of = fill_owners(name)
    result = run("ls", name, "--owner", "alice")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["DIGEST", "SIZE", "AGE", "TIME", "LEFT", "VERSION"]
    assert [row.split()[0] for row in lines[1:-1]] == of["alice"]
    assert re.fullmatch(r"3 live session\(s\) of owner 'alice', 600 B of values", lines[-1])

    listed = json.loads(run("ls", name, "--owner", "alice", "--json").stdout)
    assert [r["digest"] for r in listed] == of["alice"]
    assert set(listed[0]) == {"digest", "size", "age", "ttl", "version"}
    newest = json.loads(run("ls", name, "--owner", "alice", "-r", "--limit", "2",
                            "--json").stdout)
    assert [r["digest"] for r in newest] == of["alice"][::-1][:2]
    smallest = json.loads(run("ls", name, "--owner", "alice", "--sort", "size", "-r",
                              "--json").stdout)
    assert [r["size"] for r in smallest] == [100, 200, 300]
    assert [r["digest"] for r in json.loads(
        run("ls", name, "--owner", "bob", "--json").stdout)] == of["bob"]
    nobody = run("ls", name, "--owner", "carol")
    assert nobody.returncode == 0
    assert nobody.stdout == f"no live sessions of owner 'carol' in store {name!r}\n"


def test_ls_owner_needs_a_store_name_and_a_valid_owner(name: str) -> None:
    line = assert_one_line_error(run("ls", "--owner", "alice"), 2)
    assert "NAME" in line
    fill_owners(name)
    line = assert_one_line_error(run("ls", name, "--owner", ""), 2)
    assert "owner" in line


def test_revoke_deletes_every_session_of_the_owner_only(name: str) -> None:
    of = fill_owners(name)
    result = run("revoke", name, "--owner", "alice", "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"revoked 3 session(s) of owner 'alice' in store {name!r}\n"
    assert _owned(name, "alice") == [] and _owned(name, "bob") == of["bob"]
    assert _live(name) == 4  # bob's 2 and nobody's 2
    again = run("revoke", name, "--owner", "alice", "--yes")
    assert again.returncode == 0 and "revoked 0 session(s)" in again.stdout


def test_revoke_keep_digest_keeps_that_session(name: str) -> None:
    of = fill_owners(name)
    keep = of["alice"][1]
    result = run("revoke", name, "--owner", "alice", "--keep-digest", keep, "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"revoked 2 session(s) of owner 'alice' in store {name!r}; "
                             f"kept {keep}\n")
    assert _owned(name, "alice") == [keep] and _owned(name, "bob") == of["bob"]
    assert _live(name) == 5


@pytest.mark.parametrize("whose", ["bob", "", "none"])
def test_revoke_keep_digest_not_the_owners_deletes_nothing(name: str, whose: str) -> None:
    """A digest of another owner's session, of one with no owner, or of none at all: a
    mistyped D must not log the user out of the session they meant to keep."""
    of = fill_owners(name)
    keep = of[whose][0] if whose != "none" else "0" * 32
    line = assert_one_line_error(
        run("revoke", name, "--owner", "alice", "--keep-digest", keep, "--yes"), 1)
    assert "nothing was deleted" in line and keep in line
    assert _owned(name, "alice") == of["alice"] and _live(name) == 7


def test_revoke_refuses_without_yes_when_stdin_is_not_a_terminal(name: str) -> None:
    of = fill_owners(name)
    line = assert_one_line_error(run("revoke", name, "--owner", "alice", stdin="y\n"), 2)
    assert "--yes" in line
    assert _owned(name, "alice") == of["alice"]


def test_revoke_asks_on_a_terminal_and_takes_what_came_meanwhile(name: str,
                                                                  pty_run: List[Pty]) -> None:
    """The deletion is one step when the answer comes: a session the owner gained while the
    question was on the screen goes too (but the kept one stays)."""
    of = fill_owners(name)
    no = start(pty_run, "revoke", name, "--owner", "alice")
    no.read_until(r"Delete 3 session\(s\) of owner 'alice' in store '[^']+'\?.*\[y/N\] ")
    no.type(b"n\r")
    assert no.wait() == 1
    assert b"nothing was changed" in no.output
    assert _owned(name, "alice") == of["alice"]
    keep = of["alice"][0]
    yes = start(pty_run, "revoke", name, "--owner", "alice", "--keep-digest", keep)
    yes.read_until(rf"Delete 2 session\(s\) of owner 'alice' \(all but {keep}\) in store "
                   r"'[^']+'\?.*\[y/N\] ")
    with SessionStorage(name, create=False) as store:
        store.write("late-" + SessionStorage.new_id(), b"v", owner="alice")
    yes.type(b"y\r")
    assert yes.wait() == 0
    assert b"revoked 3 session(s)" in yes.output
    assert _owned(name, "alice") == [keep] and _live(name) == 5


# --------------------------------------------------------------------------------------------
# dump and load
# --------------------------------------------------------------------------------------------


def test_dump_load_round_trip_and_refusals(name: str, tmp_path: Path) -> None:
    ids = fill(name, 30)
    snap = tmp_path / "sessions.snap"
    target = name + "-b"
    try:
        dumped = run("dump", name, str(snap))
        assert dumped.returncode == 0, dumped.stderr
        assert re.match(rf"dumped 30 session\(s\) of store '{name}' to .* \(\d+\.\d KiB\)",
                        dumped.stdout)
        assert snap.stat().st_mode & 0o777 == 0o600

        loaded = run("load", target, str(snap), "--size", "2M", "--max-entries", "100")
        assert loaded.returncode == 0, loaded.stderr
        assert f"loaded 30 session(s) from {snap} into new store '{target}' (2.0 MiB)" \
            in loaded.stdout
        assert loaded.stderr == ""  # no progress bar: stderr is not a terminal
        with SessionStorage(target, create=False) as copy:
            assert copy.stats().max_entries == 100
            for k, sid in enumerate(ids):
                assert copy.read(sid) == b"v" * (100 * (k + 1))

        again = assert_one_line_error(run("load", target, str(snap)), 1)
        assert "exists" in again

        data = snap.read_bytes()
        truncated = tmp_path / "truncated.snap"
        truncated.write_bytes(data[: len(data) // 2])
        altered = tmp_path / "altered.snap"
        altered.write_bytes(data[:200] + bytes([data[200] ^ 0xFF]) + data[201:])
        for bad, why in ((truncated, "truncated"), (altered, "checksum")):
            line = assert_one_line_error(run("load", name + "-c", str(bad)), 1)
            assert why in line, line
            assert not SessionStorage.exists(name + "-c")
        line = assert_one_line_error(run("load", name + "-c", str(tmp_path / "none")), 1)
        assert "No such file" in line
        line = assert_one_line_error(run("load", name + "-c", str(snap), "--size", "1K"), 2)
        assert "size" in line and not SessionStorage.exists(name + "-c")
        # Too small for the snapshot: refused whole, rather than logging 14 users out...
        small = ("--size", "1M", "--max-entries", "16")
        line = assert_one_line_error(run("load", name + "-c", str(snap), *small), 1)
        assert "do not fit" in line and "nothing was created" in line
        assert not SessionStorage.exists(name + "-c")
        # ... unless asked to evict.
        evicting = run("load", name + "-c", str(snap), *small, "--evict")
        assert evicting.returncode == 0, evicting.stderr
        assert "loaded 16 session(s)" in evicting.stdout
        assert "14 evicted for lack of room" in evicting.stdout
    finally:
        remove_store(target)
        remove_store(name + "-c")


def test_load_without_sizes_makes_the_store_the_dumped_one_was(name: str, tmp_path: Path) -> None:
    """A 4 MiB store with its own max_entries comes back as it was, so the application that
    made it attaches again with its own options (not SegmentMismatch against 32 MiB)."""
    app_options = dict(size=4 << 20, max_entries=1000)
    snap = tmp_path / "sessions.snap"
    with SessionStorage(name, **app_options) as store:  # type: ignore[arg-type]
        store.write("k", b"v")
        before = store.stats()
    assert run("dump", name, str(snap)).returncode == 0
    SessionStorage.unlink_name(name)
    loaded = run("load", name, str(snap))
    assert loaded.returncode == 0, loaded.stderr
    assert "(4.0 MiB)" in loaded.stdout
    with SessionStorage(name, **app_options) as app:  # type: ignore[arg-type]
        after = app.stats()
        assert app.read("k") == b"v"
    assert (after.size, after.max_entries, after.table_slots, after.heap_size) == \
        (before.size, before.max_entries, before.table_slots, before.heap_size)
    usage = run("load", "--help").stdout
    assert "dumped store" in usage


def test_load_draws_a_progress_bar_on_a_terminal(name: str, tmp_path: Path,
                                                 pty_run: List[Pty]) -> None:
    snap = tmp_path / "big.snap"
    with SessionStorage(name, size=4 << 20, max_entries=3000) as store:
        for k in range(1500):
            store.write(f"s{k}", b"x" * 32)
        assert store.dump(str(snap)) == 1500
        store.unlink()
    session = start(pty_run, "load", name, str(snap), "--max-entries", "3000",
                    on_tty=("stderr",))
    session.read_until(r"loading \[#{30}\] 100%  1,500/1,500\r?\n")
    assert session.wait() == 0
    assert session.proc.stdout is not None
    assert session.proc.stdout.read().startswith(b"loaded 1,500 session(s)")
    assert _live(name) == 1500


# --------------------------------------------------------------------------------------------
# top
# --------------------------------------------------------------------------------------------


class Traffic:
    """Reads and writes on the store from a thread of this process, for bounded time."""

    def __init__(self, name: str, seconds: float = 30.0) -> None:
        self.stop = threading.Event()
        self.ops = 0
        self.thread = threading.Thread(target=self._run, args=(name, seconds), daemon=True)
        self.thread.start()

    def _run(self, name: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with SessionStorage(name, create=False) as store:
            while not self.stop.is_set() and time.monotonic() < deadline:
                for k in range(100):
                    store.write(f"t{k}", b"y" * 64)
                    store.get(f"t{k}")
                    store.get(f"absent{k}")
                self.ops += 300
                time.sleep(0.01)

    def join(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


#: The terminal the live ``top`` tests describe to curses: GNU screen's, whose terminfo
#: entry asks for nothing the emulator lacks (xterm's has REP, CSI b, which pyte ignores).
TOP_TERM = "screen"


def assert_terminal_restored(top: Pty) -> None:
    """What ``top`` leaves behind: the alternate screen left after it was entered, nothing
    after that but mode resets, the cursor shown, echo and line editing as they were."""
    out = top.output
    entered, left = out.rfind(b"\x1b[?1049h"), out.rfind(b"\x1b[?1049l")
    assert 0 <= entered < left, repr(out[-300:])
    after = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r", b"", out[left:])
    assert after == b"", repr(out[left:])
    assert not top.screen.cursor.hidden
    assert termios.tcgetattr(top.slave) == top.attrs_before


def test_top_live_view_under_a_terminal_then_ctrl_c(name: str, pty_run: List[Pty]) -> None:
    fill(name, 10)
    traffic = Traffic(name)
    try:
        top = start(pty_run, "top", name, "--interval", "0.3", term=TOP_TERM)
        top.read_until(r"\x1b\[\?1049h")  # the alternate screen
        # A frame with rates: operations per second above zero, a hit rate, both fills. The
        # pattern spans the frame from its rates to its hit rate: curses' output of one frame
        # may come in more than one read, and a screen read between them is half old.
        frame = top.shown_until(r"operations +[\d,]+ +[1-9][\d,]*\.\d/s(?s:.*)"
                                r"hit rate +\d+\.\d% +\d+\.\d%")
    finally:
        traffic.join()
    assert f"store '{name}'" in frame
    assert re.search(r"entries +\d+ / [\d,]+ \(\d+\.\d%\)", frame), frame
    assert re.search(r"heap used +\d+\.\d KiB / \d+\.\d MiB \(\d+\.\d%\)", frame), frame
    assert re.search(r"hit rate +\d+\.\d% +\d+\.\d%", frame), frame
    for label in ("largest free block", "evictions", "expirations", "lock waits",
                  "lock wait time"):
        assert label in frame
    assert top.screen.cursor.hidden  # while it runs
    shown_before = len(top.output)
    top.type(b"\x03")  # Ctrl-C, typed on the terminal: the kernel sends SIGINT
    assert top.wait() == 0
    tail = top.output[shown_before:].decode()
    assert "Traceback" not in tail and "interrupted" not in tail
    assert_terminal_restored(top)


def test_top_quits_on_q_and_its_keys_do_not_echo(name: str, pty_run: List[Pty]) -> None:
    fill(name, 3)
    top = start(pty_run, "top", name, "--interval", "0.2", term=TOP_TERM)
    top.shown_until(r"entries +3 / ")
    during = termios.tcgetattr(top.slave)
    assert not during[3] & (termios.ECHO | termios.ICANON)
    top.type(b"q")
    assert top.wait() == 0
    assert_terminal_restored(top)


def test_top_on_a_terminal_curses_does_not_know_prints_plain_lines(
    name: str, pty_run: List[Pty]
) -> None:
    fill(name, 2)
    top = start(pty_run, "top", name, "--interval", "0.1", "--iterations", "2",
                term="no-such-terminal")
    assert top.wait() == 0
    text = top.output.decode()
    assert "\x1b" not in text and "Traceback" not in text, repr(text)
    assert len(re.findall(r"^\d\d:\d\d:\d\d  entries 2/", text, re.M)) == 2, repr(text)


def test_top_prints_plain_lines_when_stdout_is_not_a_terminal(name: str) -> None:
    fill(name, 4)
    plain = run("top", name, "--interval", "0.1", "--iterations", "3")
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert len(lines) == 3 and "\x1b" not in plain.stdout
    for line in lines:
        assert re.match(r"\d\d:\d\d:\d\d  entries 4/[\d,]+ \(\d+\.\d%\)  heap ", line), line
    assert "ops -" in lines[0] and re.search(r"ops \d+\.\d/s", lines[1])
    machine = run("top", name, "--interval", "0.1", "--iterations", "2", "--json")
    first, second = (json.loads(line) for line in machine.stdout.splitlines())
    assert first["rates"] is None and first["entries"] == 4
    assert second["rates"]["ops"] == 0 and second["time"] > first["time"]


def test_top_stops_with_a_message_when_the_store_is_removed(name: str) -> None:
    fill(name, 1)
    proc = subprocess.Popen(COMMAND + ["top", name, "--interval", "0.1"], cwd=REPO_ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "entries 1/" in proc.stdout.readline()
        SessionStorage.unlink_name(name)
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
        assert proc.returncode == 1, (out, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert "unlinked" in err or "removed" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def test_top_ended_by_sigterm_restores_the_terminal(name: str, pty_run: List[Pty]) -> None:
    fill(name, 1)
    top = start(pty_run, "top", name, "--interval", "0.2", term=TOP_TERM)
    top.shown_until(r"entries +1 / ")
    top.proc.send_signal(signal.SIGTERM)
    assert top.wait() == 128 + signal.SIGTERM
    assert_terminal_restored(top)


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------


def test_demo_runs_through_the_command(name: str) -> None:
    result = run("demo", "--name", name, "--workers", "2", "--requests", "6",
                 "--clients", "2", "--burst-visits", "2", timeout=120)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    assert "All checks passed" in result.stdout
    assert not SessionStorage.exists(name)
