"""Running a benchmark script in a quick smoke run, for the tests of benchmarks/: the run
itself, bounded, and what it may have left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, NamedTuple

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


class Run(NamedTuple):
    pid: int
    returncode: int
    stdout: str
    stderr: str


def run_bench(script: str, *args: str, timeout: float = 100) -> Run:
    """``benchmarks/SCRIPT ARGS`` run to the end (killed after ``timeout`` seconds)."""
    proc = subprocess.Popen(
        [sys.executable, str(BENCHMARKS / script), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()  # its finally blocks do not run; a traces_of check says so
            proc.wait()
    return Run(proc.pid, proc.returncode, stdout, stderr)


def traces_of(tag: str) -> List[str]:
    """Files and processes still carrying the run's tag: a segment or lock file in /dev/shm,
    a temp dir, a gunicorn (its environment names the store) or a redis-server (its command
    line names the socket in the temp dir)."""
    found = []
    for folder in ("/dev/shm", tempfile.gettempdir()):
        found += [os.path.join(folder, n) for n in os.listdir(folder) if tag in n]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for part in ("environ", "cmdline"):
            try:
                if tag.encode() in Path(f"/proc/{pid}/{part}").read_bytes():
                    found.append(f"process {pid}")
            except OSError:  # gone meanwhile, or not ours to read
                pass
    return found
