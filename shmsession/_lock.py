"""Cross-process and in-process locking, and what fork does to both.

The store's lock is ``fcntl.flock`` on the segment's own descriptor (~1 us uncontended),
behind a per-process ``threading.Lock``:

* flock belongs to the open file description. Threads of one process share it, so they
  would not exclude each other: the ``threading.Lock`` serialises them. A descriptor
  inherited through fork shares it with the parent, so the child re-opens its own
  (``os.register_at_fork``), and fork waits for any critical section in progress.
* The kernel drops a flock when its holder dies, so a SIGKILLed worker never blocks the
  others; the next holder finds the journal dirty and rolls it back (see ``_journal``).
* A busy lock is tried again for up to ``_SPIN_NS`` (tens of microseconds; a write holds
  it for about five), then waited for in the kernel, never by sleeping a set time: a
  blocking flock in the calling thread when there is no timeout (the default). With a
  timeout, a few yields and retries come next, then a helper thread blocks in flock, since
  a blocking flock cannot be given a deadline, while the caller waits on an Event for at
  most ``timeout``. (Yielding while trying measured worse: with 4 processes on 2 cores it
  hands the core to another waiter as often as to the holder.)
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import weakref
from typing import Callable, List, Optional

from ._errors import LockTimeout, SegmentError

_LOCK_EX = fcntl.LOCK_EX
_LOCK_NB = fcntl.LOCK_EX | fcntl.LOCK_NB
_LOCK_UN = fcntl.LOCK_UN
_flock = fcntl.flock
_monotonic_ns = time.monotonic_ns
_SPINS = 20  # retries before a timed wait starts its helper thread
# A waiter tries for a busy lock this long before it sleeps in flock. A write holds the
# lock ~5 us; a sleep and wake-up cost tens of microseconds on a VM, and a waiter that sleeps
# leaves a queue that every later writer joins (4 processes, 50% writes: p99 ~230 us with a
# ~10 us spin, ~40 us with this one). A holder that stays busy longer has most likely been
# descheduled: spinning on would only keep it off the core, so the waiter sleeps.
_SPIN_NS = 50_000
_SPIN_LOADS = 100  # looks at the holder's progress between two flock tries (~6 us)


class StoreLock:
    """Exclusive lock of one store handle. ``acquire``/``release`` pair in one thread."""

    __slots__ = ("fd", "timeout", "_tlock", "_handed_over", "waits", "wait_ns", "_reopen",
                 "busy", "__weakref__")

    def __init__(self, fd: int, timeout: Optional[float], reopen: Callable[[], int]) -> None:
        self.fd = fd
        self.timeout = timeout
        self._tlock = threading.Lock()
        # True while an abandoned helper thread (see _wait_in_thread) owns the thread lock.
        self._handed_over = False
        self._reopen = reopen
        # Waits seen by this handle since the last ``take_waits``; the store adds them to the
        # shared counters while it holds the lock.
        self.waits = 0
        self.wait_ns = 0
        # Set by the store: true while the holder is mid-transaction (the journal's dirty
        # word is set). A waiter watches it between its tries for the lock: a try while the
        # holder is mid-change cannot win.
        self.busy: Optional[Callable[[], bool]] = None
        _live.add(self)

    def acquire(self) -> None:
        """Take the lock, or raise :class:`LockTimeout` after ``timeout`` seconds."""
        tlock = self._tlock
        if not tlock.acquire(False):
            self._thread_wait(tlock)
        if not self._flock_now(tlock):
            self._process_wait()

    def try_acquire(self) -> bool:
        """Take the lock if it is free this instant; never waits."""
        tlock = self._tlock
        if not tlock.acquire(False):
            return False
        if self._flock_now(tlock):
            return True
        tlock.release()
        return False

    def _flock_now(self, tlock: threading.Lock) -> bool:
        """With ``tlock`` held, take the flock if it is free this instant: True when taken,
        False when another process holds it. Any other failure lets go of ``tlock``."""
        try:
            _flock(self.fd, _LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            tlock.release()
            raise SegmentError(
                f"the store's descriptor is unusable ({exc.strerror}); re-open the store"
            ) from None
        except BaseException:
            tlock.release()
            raise
        return True

    def release(self) -> None:
        _flock(self.fd, _LOCK_UN)
        self._tlock.release()

    def _thread_wait(self, tlock: threading.Lock) -> None:
        t0 = time.monotonic_ns()
        if not tlock.acquire(True, -1 if self.timeout is None else self.timeout):
            raise LockTimeout(
                f"another thread of this process held the store's lock for over "
                f"{self.timeout} s; raise lock_timeout, or look for a stuck thread"
            )
        self.waits += 1
        self.wait_ns += time.monotonic_ns() - t0

    def _process_wait(self) -> None:
        """Called with the thread lock held and the flock busy; returns holding both."""
        t0 = time.monotonic_ns()
        fd = self.fd
        handed_over = [False]
        try:
            if self._spin_until_free(fd):
                pass
            elif self.timeout is None:
                _flock(fd, _LOCK_EX)
            else:
                for _ in range(_SPINS):
                    os.sched_yield()
                    try:
                        _flock(fd, _LOCK_NB)
                        break
                    except BlockingIOError:
                        continue
                else:
                    self._wait_in_thread(fd, self.timeout, handed_over)
        except BaseException:
            # Unless an abandoned helper thread owns the locks now, give back what we hold
            # (LOCK_UN of a flock not held is a no-op; no other thread of ours holds it).
            if not handed_over[0]:
                try:
                    _flock(fd, _LOCK_UN)
                except OSError:
                    pass
                self._tlock.release()
            raise
        self.waits += 1
        self.wait_ns += time.monotonic_ns() - t0

    def _spin_until_free(self, fd: int) -> bool:
        """Try for the lock for up to ``_SPIN_NS``; True when that got it. Between two tries
        watch the holder's progress (``busy``): a try while it is mid-change cannot win."""
        busy = self.busy
        deadline = _monotonic_ns() + _SPIN_NS
        while True:
            if busy is not None:
                for _ in range(_SPIN_LOADS):
                    if not busy():
                        break
            try:
                _flock(fd, _LOCK_NB)
                return True
            except BlockingIOError:
                pass
            if _monotonic_ns() >= deadline:
                return False

    def _wait_in_thread(self, fd: int, timeout: float, handed_over: List[bool]) -> None:
        # A blocking flock cannot be given a deadline, so a helper thread blocks in it. If the
        # deadline passes first, the helper is abandoned: when the lock finally comes it lets
        # go of the flock and of the thread lock, which it then owns (no other thread of this
        # process may touch the descriptor's lock until then).
        done = threading.Event()
        gate = threading.Lock()
        state: List[Optional[BaseException]] = [None]
        abandoned = [False]
        tlock = self._tlock

        def wait() -> None:
            error: Optional[BaseException] = None
            try:
                _flock(fd, _LOCK_EX)
            except OSError as exc:
                error = exc
            with gate:
                if abandoned[0]:
                    if error is None:
                        _flock(fd, _LOCK_UN)
                    self._handed_over = False
                    tlock.release()
                else:
                    state[0] = error
                    done.set()

        helper = threading.Thread(target=wait, name="shmsession-lock-wait", daemon=True)
        helper.start()
        finished = False
        try:
            finished = done.wait(timeout)
        finally:
            with gate:
                finished = done.is_set()
                if not finished:
                    abandoned[0] = True
                    handed_over[0] = True
                    self._handed_over = True
        if not finished:
            raise LockTimeout(
                f"the store's lock was held by another process for over {timeout} s; a "
                "process may be stopped (SIGSTOP, a debugger) while holding it"
            )
        if state[0] is not None:
            raise state[0]

    def after_fork_in_child(self) -> None:
        self._tlock = threading.Lock()
        self._handed_over = False
        self.fd = self._reopen()


_live: "weakref.WeakSet[StoreLock]" = weakref.WeakSet()
_fork_held: List[StoreLock] = []


def _before_fork() -> None:
    # Wait out every critical section of this process, so the child starts with no lock held
    # and the parent's shared bytes are not mid-change when copied. A thread lock owned by an
    # abandoned lock wait guards no critical section: fork need not wait for it (the holder
    # it waits on may be stopped for good), and the child gets fresh locks anyway.
    _fork_held.clear()
    for lock in sorted(_live, key=id):
        while not lock._tlock.acquire(True, 0.05):
            if lock._handed_over:
                break
        else:
            _fork_held.append(lock)


def _after_fork_parent() -> None:
    for lock in _fork_held:
        lock._tlock.release()
    _fork_held.clear()


def _after_fork_child() -> None:
    _fork_held.clear()
    for lock in list(_live):
        try:
            lock.after_fork_in_child()
        except Exception:  # noqa: BLE001 - the handle reports it on first use instead
            lock.fd = -1


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child
)
