"""Real servers with several worker processes on 127.0.0.1, for the adapters' multi-worker
tests: start one, wait until two or more of its workers answer, talk to it over a fresh
connection per request, and always reap it (terminate, bounded wait, kill its process group).
Starting, waiting and stopping are the package's own harness (``shmsession._process``), the
one the demo runs gunicorn with.
"""

from __future__ import annotations

import http.client
import json
import sys
import tempfile
import threading
import time
from email.utils import parsedate_to_datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar

from shmsession import Store
from shmsession._process import (
    ServerExited,
    answering_workers,
    free_port,
    group_gone,
    start_server,
    stop_server,
)

__all__ = ["Reply", "Server", "call", "free_port", "in_threads", "python", "serve"]

REPO_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

#: Most rounds of requests a test sends until two workers have answered one kind of request:
#: a server's workers take new connections as the kernel wakes them, and an idle (or loaded)
#: machine may hand one worker a whole round.
SPREAD_ROUNDS = 10


class Reply:
    """One HTTP answer: status, JSON body, and the ``Set-Cookie`` headers."""

    def __init__(self, status: int, body: bytes, set_cookies: List[str]) -> None:
        self.status = status
        self.raw = body
        self.set_cookies = set_cookies

    def json(self) -> Dict[str, Any]:
        data = json.loads(self.raw)
        assert isinstance(data, dict), data
        return data

    def cookie(self, name: str) -> Optional[Tuple[str, bool]]:
        """``(value, deleted)`` of the last ``Set-Cookie`` for ``name``, or ``None``;
        ``deleted`` when it expires at once (``max-age=0`` or an ``expires`` in the past)."""
        found: Optional[Tuple[str, bool]] = None
        for header in self.set_cookies:
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            morsel = jar.get(name)
            if morsel is None:
                continue
            deleted = morsel["max-age"] not in ("", None) and int(morsel["max-age"]) <= 0
            if morsel["expires"]:
                deleted = deleted or parsedate_to_datetime(morsel["expires"]).timestamp() < time.time()
            found = (morsel.value, deleted)
        return found

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.raw[:200]!r} set-cookie={self.set_cookies}>"


def call(port: int, method: str, path: str, cookies: Optional[Mapping[str, str]] = None,
         timeout: float = 20.0, body: Any = None) -> Reply:
    """One request over a new connection (so any worker may take it); ``body``, if given,
    goes as JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Connection": "close"}
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        payload = b""
        if body is not None:
            headers["Content-Type"] = "application/json"
            payload = json.dumps(body).encode()
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        return Reply(resp.status, resp.read(), resp.headers.get_all("Set-Cookie") or [])
    finally:
        conn.close()


def in_threads(jobs: Sequence[Callable[[], T]], threads: int, timeout: float = 60.0) -> List[T]:
    """Run ``jobs`` on ``threads`` threads at once; their results in order. Any error (or a
    job still running after ``timeout``) is raised here."""
    results: List[Any] = [None] * len(jobs)
    errors: List[BaseException] = []
    next_job = iter(range(len(jobs)))
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def work() -> None:
        try:
            start.wait(timeout)
        except threading.BrokenBarrierError:
            pass
        while True:
            with lock:
                i = next(next_job, None)
            if i is None:
                return
            try:
                results[i] = jobs[i]()
            except BaseException as exc:  # reported by the caller
                errors.append(exc)
                return

    pool = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    deadline = time.monotonic() + timeout
    for t in pool:
        t.join(max(0.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    if any(t.is_alive() for t in pool):
        raise TimeoutError(f"requests still running after {timeout} s")
    return results


class Server:
    """A server started as ``argv`` in its own process group, output kept in files."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], port: int,
                 store_name: str, store: Optional[Store] = None) -> None:
        self.port = port
        self.store_name = store_name
        self.store = store  # a handle of the test's own on the sessions' store, if given
        self._out = tempfile.TemporaryFile()
        self.proc = start_server(argv, env, cwd=str(REPO_ROOT), output=self._out)

    def output(self) -> str:
        """What the server printed so far."""
        self._out.seek(0)
        return self._out.read().decode(errors="replace")

    def wait_for_workers(self, path: str, at_least: int = 2, timeout: float = 60.0) -> None:
        """Probe with bursts of concurrent requests until ``at_least`` distinct worker pids
        have answered (each answer's JSON carries ``pid``)."""
        try:
            seen = answering_workers(self.proc, self.port, path, at_least, timeout)
        except ServerExited as exc:
            raise RuntimeError(f"{exc}:\n{self.output()[-6000:]}") from None
        if len(seen) < at_least:
            raise TimeoutError(f"fewer than {at_least} workers answered within {timeout} s "
                               f"(saw {seen}):\n{self.output()[-6000:]}")

    def stop(self) -> None:
        """Terminate, wait (bounded), then kill the whole process group; always reaps."""
        stop_server(self.proc, timeout=20.0)

    def group_gone(self, timeout: float = 10.0) -> bool:
        """Wait (bounded) until no process of the server's group is left (orphaned workers
        are reaped by init); whether none is."""
        return group_gone(self.proc.pid, timeout)


def serve(argv: Sequence[str], env: Mapping[str, str], port: int, store_name: str,
          probe: str, store: Optional[Store] = None) -> Iterator[Server]:
    """Generator for a fixture: a started server of the sessions in store ``store_name``
    (``store``: a handle on it, for the test), with at least 2 workers answering; reaped
    after, and its output checked for errors."""
    server = Server(argv, env, port, store_name, store)
    try:
        server.wait_for_workers(probe)
        yield server
    finally:
        try:
            server.stop()
            output = server.output()
        finally:
            server._out.close()
    assert server.group_gone(), f"processes of the server's group {server.proc.pid} remain"
    assert "Traceback" not in output, f"the server logged an error:\n{output[-6000:]}"


def python(*args: str) -> List[str]:
    return [sys.executable, *args]
