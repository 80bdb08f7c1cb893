"""Child processes for the multi-process tests: every child is started through
:class:`Children`, which talks to it over a pipe, bounds every wait, and always reaps it
(join with a deadline, then SIGKILL) in ``finally``. Targets must be module-level functions
(spawned children re-import their module).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection
import os
import time
import traceback
from typing import Any, Callable, Iterator, List, Tuple, Union

from shmsession import SessionStorage

Conn = multiprocessing.connection.Connection
StoreOrName = Union[SessionStorage, str]

WAIT = 30.0  # longest wait for any one message from a child (a generous bound, not a sleep)


def attach(store: StoreOrName) -> SessionStorage:
    """A store name is attached by name; a handle (inherited through fork) is used as is."""
    return SessionStorage(store) if isinstance(store, str) else store


def _entry(conn: Conn, fn: Callable[..., Any], args: Tuple[Any, ...]) -> None:
    """Child main: run ``fn(conn, *args)``, report ("done", result) or ("error", traceback)."""
    try:
        result = fn(conn, *args)
    except BaseException:  # noqa: BLE001 - everything goes back to the parent
        try:
            conn.send(("error", traceback.format_exc()))
        finally:
            os._exit(1)
    conn.send(("done", result))
    conn.close()


class Child:
    def __init__(self, proc: Any, conn: Conn) -> None:
        self.proc = proc
        self.conn = conn

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def recv(self, timeout: float = WAIT) -> Tuple[str, Any]:
        """The child's next message; fails the test on a child error, death or silence."""
        if not self.conn.poll(timeout):
            raise AssertionError(
                f"child {self.pid} sent nothing within {timeout} s (exitcode {self.proc.exitcode})"
            )
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            self.proc.join(5)
            raise AssertionError(
                f"child {self.pid} died without reporting (exitcode {self.proc.exitcode})"
            ) from None
        if kind == "error":
            raise AssertionError(f"child {self.pid} failed:\n{payload}")
        return kind, payload

    def expect(self, kind: str, timeout: float = WAIT) -> Any:
        got, payload = self.recv(timeout)
        assert got == kind, f"child {self.pid} sent {got!r}, expected {kind!r}"
        return payload

    def send(self, *msg: Any) -> None:
        self.conn.send(msg)

    def call(self, *cmd: Any) -> Any:
        """Run one command in a ``_serve`` child and return its answer."""
        self.send(*cmd)
        return self.expect("ok")


class Children:
    """Starts children of one multiprocessing context and always reaps them."""

    def __init__(self, method: str) -> None:
        self.ctx = mp.get_context(method)
        self.children: List[Child] = []

    def start(self, fn: Callable[..., Any], *args: Any) -> Child:
        parent_end, child_end = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(  # type: ignore[attr-defined]
            target=_entry, args=(child_end, fn, args), daemon=True)
        try:
            proc.start()
        finally:
            child_end.close()
        child = Child(proc, parent_end)
        self.children.append(child)
        return child

    def join_all(self, timeout: float = WAIT) -> None:
        """Wait for every child to exit by itself; fail if one does not in time or fails."""
        deadline = time.monotonic() + timeout
        for c in self.children:
            c.proc.join(max(0.0, deadline - time.monotonic()))
            assert not c.proc.is_alive(), f"child {c.pid} still running after {timeout} s"
            assert c.proc.exitcode == 0, f"child {c.pid} exited with {c.proc.exitcode}"

    def __enter__(self) -> "Children":
        return self

    def __exit__(self, *exc: object) -> None:
        deadline = time.monotonic() + 10.0
        for c in self.children:
            c.proc.join(max(0.0, deadline - time.monotonic()))
            if c.proc.is_alive():
                c.proc.kill()
                c.proc.join(10.0)
            c.conn.close()
        for c in self.children:
            assert not c.proc.is_alive(), f"could not reap child {c.pid}"
            c.proc.close()


def hold_lock_child(conn: Conn, store: StoreOrName, hold: float) -> float:
    """Take the store's lock, say so, keep it ``hold`` seconds (or until told to let go);
    sends ("released", t) with the CLOCK_MONOTONIC time just before letting go. It holds the
    store's own lock (``_access``, ``_lock``): no public call keeps it held."""
    s = attach(store)
    s._access.acquire()
    conn.send(("held", time.monotonic()))
    conn.poll(hold)  # returns early if the parent says "release"
    t_release = time.monotonic()
    s._lock.release()
    conn.send(("released", t_release))
    return os.getpid()


@contextlib.contextmanager
def lock_held_by_a_child(store: StoreOrName, hold: float,
                         target: Callable[..., Any] = hold_lock_child,
                         *args: Any) -> Iterator[Tuple["Children", Child]]:
    """For the block: a forked child (``target``, by default :func:`hold_lock_child`) that
    has said it holds the lock of ``store`` (a name, or a handle it inherits), for ``hold``
    seconds at most; yields the children and that child, all reaped after."""
    with Children("fork") as kids:
        child = kids.start(target, store, hold, *args)
        child.expect("held")
        yield kids, child
