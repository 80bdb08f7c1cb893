"""Processes of both builds on one store at once: one runs the compiled hot path, the other
the pure one (SHMSESSION_PURE=1 in its environment), both on the same segment and the same
ids. Every value says what it is (its id, its writer, its length, and bytes that follow from
those), so a torn or misplaced one is caught wherever it is read. And a writer of one build
killed at a random moment leaves a store that a process of the other build finds sound.

Each child is this module run as ``python -m tests.system.test_builds``, started in the
checkout with its own environment (the build is picked at import), bounded by a deadline and
always killed and reaped. Where the compiled module was not built, both children run pure;
CI sets SHMSESSION_EXPECT_COMPILED=1, and then the compiled child must be compiled."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from shmsession import SessionNotFound, SessionStorage

REPO_ROOT = Path(__file__).resolve().parents[2]
IDS = [f"shared-{i}" for i in range(24)]
RUN_FOR = 2.0  # seconds both children work on the store at once
WAIT = 30.0  # longest wait for one line from a child
COMPILED = importlib.util.find_spec("shmsession._hot") is not None
EXPECT_COMPILED = os.environ.get("SHMSESSION_EXPECT_COMPILED") == "1"


# ----------------------------------------------------------------------------- the values
def value_of(sid: str, writer: str, seq: int, length: int) -> bytes:
    """A value that says whose it is: a header line, then ``length`` bytes that follow from it."""
    head = f"{sid} {writer} {seq} {length}\n".encode()
    pad = hashlib.blake2b(head).digest()
    return head + (pad * (length // len(pad) + 1))[:length]


def whole(sid: str, value: bytes) -> bool:
    """``value`` is one that ``value_of`` made for ``sid``, every byte of it."""
    head, _, _ = value.partition(b"\n")
    try:
        got_sid, writer, seq, length = head.decode().split(" ")
        return got_sid == sid and value == value_of(sid, writer, int(seq), int(length))
    except ValueError:
        return False


def every_value_is_whole(store: SessionStorage) -> int:
    """Read every shared id; fails on a torn one; returns how many are there."""
    there = 0
    for sid in IDS:
        try:
            value = store.read(sid)
        except SessionNotFound:
            continue
        assert whole(sid, value), f"{sid}: torn value {value[:80]!r}..."
        there += 1
    return there


# ------------------------------------------------------------------------------ the child
def work(store: SessionStorage, writer: str, seed: int, until: float) -> Dict[str, int]:
    """Write, overwrite, read, touch and invalidate the shared ids until ``until``; checks
    every value it reads. Returns how many of each it did."""
    rng = random.Random(seed)
    done = {"write": 0, "read": 0, "touch": 0, "invalidate": 0, "missing": 0}
    seq = 0
    while time.monotonic() < until:
        sid = rng.choice(IDS)
        op = rng.choices(["write", "read", "touch", "invalidate"], [40, 35, 10, 15])[0]
        if op == "write":
            seq += 1
            length = rng.choice([rng.randrange(0, 200), rng.randrange(200, 6000)])
            store.write(sid, value_of(sid, writer, seq, length))
        elif op == "read":
            try:
                value = store.read(sid)
            except SessionNotFound:
                done["missing"] += 1
            else:
                if not whole(sid, value):
                    raise AssertionError(f"{writer} read a torn value of {sid}: {value[:80]!r}")
        elif op == "touch":
            store.touch(sid)
        else:
            store.invalidate(sid)
        done[op] += 1
    return done


def child(mode: str, name: str, seed: int) -> None:
    """``work``: say ready, wait for go, work RUN_FOR seconds (or until killed), say done.
    ``verify``: check the store and every value, then write and read one, say verified."""
    from shmsession._build import BUILD

    writer = f"{BUILD}-{os.getpid()}"
    with SessionStorage(name) as store:
        if mode == "work":
            print("ready", BUILD, flush=True)
            if sys.stdin.readline().split() != ["go", str(seed)]:
                raise SystemExit("expected go")
            done = work(store, writer, seed, time.monotonic() + float(os.environ["RUN_FOR"]))
            print("done", json.dumps(done, separators=(",", ":")), flush=True)
        else:
            store.check()
            there = every_value_is_whole(store)
            sid = random.Random(seed).choice(IDS)
            store.write(sid, value_of(sid, writer, 0, 3000))
            assert whole(sid, store.read(sid))
            store.check()
            print("verified", BUILD, there, flush=True)


# ----------------------------------------------------------------------------- the parent
class Proc:
    """A child process of this module, talked to by lines; killed and reaped by ``started``."""

    def __init__(self, popen: "subprocess.Popen[str]") -> None:
        self.popen = popen

    def line(self, timeout: float = WAIT) -> List[str]:
        assert self.popen.stdout is not None
        ready, _, _ = select.select([self.popen.stdout], [], [], timeout)
        words = self.popen.stdout.readline().split() if ready else []
        if not words:
            self.popen.kill()
            _, err = self.popen.communicate(timeout=WAIT)
            raise AssertionError(f"child {self.popen.pid} said nothing (exit "
                                 f"{self.popen.returncode}):\n{err}")
        return words

    def send(self, *words: object) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(" ".join(map(str, words)) + "\n")
        self.popen.stdin.flush()

    def finish(self) -> None:
        _, err = self.popen.communicate(timeout=WAIT)
        assert self.popen.returncode == 0, err


@contextlib.contextmanager
def started(pure: bool, *args: object, run_for: float = RUN_FOR) -> Iterator[Proc]:
    """A child of the build asked for, in the checkout; killed and reaped whatever happens."""
    env = {k: v for k, v in os.environ.items() if k != "SHMSESSION_PURE"}
    env["RUN_FOR"] = str(run_for)
    if pure:
        env["SHMSESSION_PURE"] = "1"
    popen = subprocess.Popen([sys.executable, "-m", "tests.system.test_builds", *map(str, args)],
                             cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield Proc(popen)
    finally:
        if popen.poll() is None:
            popen.kill()
        popen.wait(WAIT)
        for pipe in (popen.stdin, popen.stdout, popen.stderr):
            assert pipe is not None
            pipe.close()


def build_of(pure: bool) -> str:
    """The build a child should say it runs: in CI, the compiled one unless ``pure``."""
    assert COMPILED or not EXPECT_COMPILED, (
        "SHMSESSION_EXPECT_COMPILED=1, but shmsession._hot was not built")
    return "compiled" if COMPILED and not pure else "pure"


def test_a_compiled_and_a_pure_process_share_one_store_at_once(store: SessionStorage) -> None:
    seed = random.randrange(1 << 30)
    with started(False, "work", store.name, seed) as compiled, \
            started(True, "work", store.name, seed + 1) as pure:
        assert compiled.line() == ["ready", build_of(False)]
        assert pure.line() == ["ready", "pure"]
        compiled.send("go", seed)
        pure.send("go", seed + 1)
        done = [json.loads(p.line(WAIT + RUN_FOR)[1]) for p in (compiled, pure)]
        compiled.finish()
        pure.finish()
    for counts in done:  # both worked on the store, every kind of step, at length
        assert min(counts.values()) > 0 and sum(counts.values()) > 500, (seed, done)
    store.check()
    every_value_is_whole(store)


@pytest.mark.parametrize("killed_pure", [False, True], ids=["compiled-killed", "pure-killed"])
def test_a_writer_killed_at_random_leaves_a_store_the_other_build_finds_sound(
        store: SessionStorage, killed_pure: bool) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    for round_ in range(4):
        with started(killed_pure, "work", store.name, seed + round_, run_for=WAIT) as writer:
            assert writer.line() == ["ready", build_of(killed_pure)]
            writer.send("go", seed + round_)
            time.sleep(rng.uniform(0.05, 0.6))
            writer.popen.send_signal(signal.SIGKILL)
            assert writer.popen.wait(WAIT) == -signal.SIGKILL, "the writer ended before its kill"
        with started(not killed_pure, "verify", store.name, seed + round_) as verifier:
            words = verifier.line()
            assert words[:2] == ["verified", build_of(not killed_pure)], (seed, round_)
            verifier.finish()
    store.check()
    every_value_is_whole(store)


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
