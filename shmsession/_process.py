"""Servers run as child processes, and being stopped like Ctrl-C.

One way to run a multi-worker server (gunicorn, uvicorn...) on 127.0.0.1, for the demo and
for the test suite's servers (``tests/_servers.py``): start it in a process group of its own,
wait until several of its workers answer, stop it with every process of its group. And one
SIGTERM handler, for the demo and the ``top`` command: raised like Ctrl-C, so that the same
clean-up runs. Standard library only.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from types import FrameType
from typing import IO, Iterator, List, Mapping, Optional, Sequence, Set, Union

__all__ = [
    "ServerExited",
    "Terminated",
    "answering_workers",
    "free_port",
    "group_gone",
    "gunicorn_command",
    "sigterm_interrupts",
    "start_server",
    "stop_server",
]

#: Seconds one probe of a worker may take, connect to last byte.
PROBE_TIMEOUT = 5.0
#: Seconds a server may take to stop after SIGTERM before its process group is killed.
SHUTDOWN_TIMEOUT = 15.0


class ServerExited(RuntimeError):
    """The server exited while it was waited for."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same clean-up runs."""


def _terminate(signum: int, frame: Optional[FrameType]) -> None:
    raise Terminated


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside, SIGTERM raises :class:`Terminated` in the main thread; the handler there
    before is put back on the way out. Install it before ``curses.initscr``: curses installs
    its own SIGTERM handler, which ends the process without our clean-up, only where
    none is set."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def gunicorn_command(app: str, port: int, workers: int, *options: str) -> List[str]:
    """The command that runs gunicorn with ``workers`` sync workers serving ``app``
    (``module:callable``) on 127.0.0.1:``port``, logging warnings and errors only."""
    return [
        sys.executable, "-m", "gunicorn",
        "--workers", str(workers),
        "--worker-class", "sync",
        "--bind", f"127.0.0.1:{port}",
        "--log-level", "warning",
        *options,
        app,
    ]  # fmt: skip


def start_server(
    argv: Sequence[str],
    env: Optional[Mapping[str, str]] = None,
    *,
    cwd: Optional[str] = None,
    output: Union[int, IO[bytes]] = 2,
) -> "subprocess.Popen[bytes]":
    """Start ``argv`` (with ``env`` added to this environment); does not wait.

    Its stdout and stderr both go to ``output`` (a file, or a descriptor: by default this
    process's stderr); stdin is empty. It gets a session, so a process group, of its own:
    Ctrl-C in the terminal reaches only this process, which then stops the server in order,
    and the whole group can be killed as a last resort (see :func:`stop_server`).
    """
    return subprocess.Popen(
        list(argv), cwd=cwd, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
        stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
    )


def _probe(port: int, path: str) -> Optional[int]:
    """The ``pid`` in a worker's JSON answer to ``GET path``; None when nothing answered, or
    something other than a JSON object with an int ``pid`` and a status below 500."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = json.loads(response.read())
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()
    pid = body.get("pid") if isinstance(body, dict) else None
    return pid if isinstance(pid, int) and response.status < 500 else None


def answering_workers(server: "subprocess.Popen[bytes]", port: int, path: str, want: int,
                      timeout: float, burst: int = 8) -> List[int]:
    """Probe ``GET path`` until ``want`` distinct workers have answered, or ``timeout``
    seconds have passed; returns the pids seen, sorted (fewer than ``want`` on a timeout:
    the caller judges).

    Each answer must be a JSON object carrying the worker's ``pid``. Probes go in bursts of
    ``burst`` at once, each over a new connection: a sync worker busy with one leaves the
    next to another worker, where one probe at a time may find the same worker every time.

    :raises ServerExited: the server exited meanwhile.
    """
    seen: Set[int] = set()
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(burst) as pool:
        while True:
            if server.poll() is not None:
                raise ServerExited(f"the server exited with status {server.returncode}")
            answers = pool.map(lambda _: _probe(port, path), range(burst))
            seen.update(pid for pid in answers if pid is not None)
            if len(seen) >= want or time.monotonic() > deadline:
                return sorted(seen)
            time.sleep(0.1 if not seen else 0.02)  # not listening yet, or all seen were busy


def stop_server(server: "subprocess.Popen[bytes]", timeout: float = SHUTDOWN_TIMEOUT) -> bool:
    """Stop ``server`` and every process of its group; returns once they are gone.

    SIGTERM first (gunicorn's graceful shutdown: the master stops its workers, then exits);
    SIGKILL to the whole process group when the server is still running after ``timeout``
    seconds, or when processes of its group outlive it (a master that died abruptly leaves
    its workers). Returns whether SIGTERM was enough. Raises ``subprocess.TimeoutExpired``
    only if even SIGKILL does not end the server.
    """
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # start_new_session made the group's id the server's pid.
    if server.poll() is not None and group_gone(server.pid, within=2.0):
        return True
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    server.wait(timeout)
    group_gone(server.pid, within=2.0)
    return False


def group_gone(pgid: int, within: float) -> bool:
    """Whether process group ``pgid`` is empty, waiting up to ``within`` seconds for it
    (orphaned members are reaped by init; zombies awaiting their parent still count)."""
    deadline = time.monotonic() + within
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
