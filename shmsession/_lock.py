"""Cross-process and in-process locking, and what fork does to both.

The store's lock is ``fcntl.flock`` on the segment's own descriptor (~1 us uncontended),
behind a per-process ``threading.Lock``:

* flock belongs to the open file description. Threads of one process share it, so they
  would not exclude each other: the ``threading.Lock`` serialises them. A descriptor
  inherited through fork shares it with the parent, so the child re-opens its own
  (``os.register_at_fork``), and fork waits for any critical section in progress. Two
  threads may fork at once: each fork keeps the locks it took apart from the other's and
  takes them in the same order, so the second waits for the first to end.
* A closed lock stays closed: every acquire raises ``StoreClosed``, also in a thread that
  was waiting when it was closed (see ``StoreLock.close``).
* The kernel drops a flock when its holder dies, so a SIGKILLed worker never blocks the
  others; the next holder finds the journal dirty and rolls it back (see ``_journal``).
* A busy lock is tried again for up to ``_SPIN_NS`` (tens of microseconds; a write holds
  it for about five), then waited for in the kernel, never by sleeping a set time: a
  blocking flock in the calling thread when there is no timeout (the default). With a
  timeout, a few yields and retries come next, then a helper thread blocks in flock, since
  a blocking flock cannot be given a deadline, while the caller waits on an Event for at
  most ``timeout``. (Yielding while trying measured worse: with 4 processes on 2 cores it
  hands the core to another waiter as often as to the holder.)

A store's life cycle (create + initialise, attach, unlink) is serialised by another lock,
:class:`LifecycleLock`: ``fcntl.flock`` on a lock file in /dev/shm beside the segment, which
exists before the segment does (so it cannot be the segment's own descriptor). It guards
the segment's making and removal, not a thread's work: each use opens its own descriptor,
so threads of one process exclude each other as processes do. Its speed does not matter
(a few uses per process), so a busy lock is polled with a growing sleep up to a deadline.

* One lock for every process at every moment, although ``unlink`` removes its file: a
  process that waited on a file another removed would lock a file no newcomer opens. So
  the file is removed only by its holder, before it lets go (:meth:`LifecycleLock.remove_file`),
  and a process that gets the lock checks that the path still names the file it locked
  (lock-and-verify); when it does not, it closes it and starts again.
* Opening it is safe whatever someone planted at the path first (/dev/shm is writable by
  every user): ``O_NOFOLLOW`` (a symlink is refused, its target never opened, let alone
  truncated), ``O_NONBLOCK`` (a FIFO cannot block the open), and ``fstat`` of what was
  opened: a regular file of this user that group and others cannot open, or refused with a
  message that says what to do. Nothing at the path is ever written to or truncated.
* Not ``filelock`` (used here before): what it does with a planted symlink or a file of
  another mode changed between its versions (3.12 followed a symlink and truncated its
  target; 4.x refuses it), and the safety of opening must not depend on which version is
  installed; its removal of the file after releasing also broke the one-lock rule above.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
import weakref
from typing import Callable, List, Optional, Union

from ._errors import LockTimeout, SegmentError, SegmentPermissionError, StoreClosed

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
    """Exclusive lock of one store handle. ``acquire``/``release`` pair in one thread.

    The handle keeps one for life. ``close()`` marks it closed under the thread lock, so a
    thread that obtains the thread lock sees whether it is closed before it touches the
    descriptor or the mapping, and raises :class:`StoreClosed` if it is: the threads that
    were waiting when the handle was closed let go and raise, one after the other.
    """

    __slots__ = ("fd", "timeout", "_tlock", "_handed_over", "waits", "wait_ns", "_reopen",
                 "busy", "closed", "__weakref__")

    def __init__(self, fd: int, timeout: Optional[float], reopen: Callable[[], int]) -> None:
        self.fd = fd
        self.timeout = timeout
        self._tlock = threading.Lock()
        # True while an abandoned helper thread (see _wait_in_thread) owns the thread lock.
        self._handed_over = False
        self._reopen = reopen
        # Waits seen by this handle since the store last added them to the shared counters
        # (which it does while it holds the lock).
        self.waits = 0
        self.wait_ns = 0
        # Set by the store: true while the holder is mid-transaction (the journal's dirty
        # word is set). A waiter watches it between its tries for the lock: a try while the
        # holder is mid-change cannot win.
        self.busy: Optional[Callable[[], bool]] = None
        self.closed = False  # set once, with the thread lock held (see close)
        with _live_guard:
            _live.add(self)

    def acquire(self) -> None:
        """Take the lock, or raise :class:`LockTimeout` after ``timeout`` seconds, or
        :class:`StoreClosed` once the lock is closed (also if it was closed while this
        thread waited)."""
        tlock = self._tlock
        if not tlock.acquire(False):
            self._thread_wait(tlock)
        if self.closed:
            tlock.release()
            raise _closed()
        if not self._flock_now(tlock):
            self._process_wait()

    def try_acquire(self) -> bool:
        """Take the lock if it is free this instant; never waits. :raises StoreClosed:"""
        tlock = self._tlock
        if not tlock.acquire(False):
            return False
        if self.closed:
            tlock.release()
            raise _closed()
        if self._flock_now(tlock):
            return True
        tlock.release()
        return False

    def acquire_within(self, seconds: float) -> bool:
        """Take the lock if it comes within ``seconds`` (0: only if it is free this
        instant); False if it does not. For the callers that must neither wait long nor
        start a thread -- at exit, before fork, in a finalizer -- so it tries again every
        millisecond rather than sleep in flock, which cannot be given a deadline.

        :raises StoreClosed:
        """
        deadline = _monotonic_ns() + int(seconds * 1e9)
        while not self.try_acquire():
            if _monotonic_ns() >= deadline:
                return False
            time.sleep(0.001)
        return True

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

    def close(self) -> None:
        """Mark the lock closed and let go of it; the caller holds it (``acquire`` returned).
        From here on every ``acquire``/``try_acquire`` raises :class:`StoreClosed`: those
        of the threads waiting now as they get the thread lock, the later ones at once. The
        caller may then close the descriptor: no thread of this process touches it again."""
        self.closed = True
        self.release()

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
        self.waits = self.wait_ns = 0  # the parent's to count, not the child's
        if not self.closed:  # a closed handle's descriptor is gone: nothing to re-open
            self.fd = self._reopen()


def _closed() -> StoreClosed:
    return StoreClosed("this SessionStorage was closed; open a new one to use the store")


# Every lock of this process, for the fork hooks. A WeakSet that another thread changes
# while a hook iterates it raises RuntimeError, so adding and taking a snapshot are guarded
# (removals by the garbage collector wait for an iteration to end by themselves).
_live: "weakref.WeakSet[StoreLock]" = weakref.WeakSet()
_live_guard = threading.Lock()
# The thread locks a fork holds, per forking thread: before-fork and after-in-parent run in
# the thread that forks, and two threads may fork at once. (One shared list let the second
# fork clear the first one's entries, and the first then never released those locks.)
_forking = threading.local()


def _live_locks() -> List[StoreLock]:
    with _live_guard:
        return sorted(_live, key=id)


def _before_fork() -> None:
    # Wait out every critical section of this process, so the child starts with no lock held
    # and the parent's shared bytes are not mid-change when copied. A thread lock owned by an
    # abandoned lock wait guards no critical section: fork need not wait for it (the holder
    # it waits on may be stopped for good), and the child gets fresh locks anyway.
    # Every fork takes the locks in one order (by id), so two forks at once never each hold
    # a lock the other waits for: the later one waits until the earlier has forked.
    held: List[StoreLock] = []
    _forking.held = held
    for lock in _live_locks():
        if lock.closed:
            continue  # no critical section to wait out (the child gets fresh locks anyway)
        while not lock._tlock.acquire(True, 0.05):
            if lock._handed_over:
                break
        else:
            held.append(lock)


def _after_fork_parent() -> None:
    held: List[StoreLock] = getattr(_forking, "held", [])
    _forking.held = []
    for lock in held:
        lock._tlock.release()


def _after_fork_child() -> None:
    global _live_guard
    # Only the forking thread goes on in the child: a guard that another thread held at the
    # fork would stay held for good. The locks get fresh thread locks the same way.
    _live_guard = threading.Lock()
    _forking.held = []
    for lock in list(_live):
        try:
            lock.after_fork_in_child()
        except Exception:  # noqa: BLE001 - the handle reports it on first use instead
            lock.fd = -1


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child
)


# ---------------------------------------------------------------------------- the life cycle
# O_NOFOLLOW: a symlink planted at the path is refused (ELOOP), never followed. O_NONBLOCK: a
# FIFO planted there cannot block the open. O_CLOEXEC: no program this process runs inherits
# the lock. (A device node would need root to plant: mknod needs CAP_MKNOD.)
_LIFECYCLE_OPEN = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_POLL_FIRST = 0.001  # seconds between the first tries of a busy life-cycle lock...
_POLL_MAX = 0.02  # ...doubling up to this: a life-cycle step takes milliseconds


class LifecycleLock:
    """The life-cycle lock of one store, at ``path``: ``with LifecycleLock(path, timeout):``.

    Exclusive among all processes and threads, each use with its own object; not reentrant.
    Entering waits at most ``timeout`` seconds, then raises :class:`SegmentError`. A file
    at ``path`` that is not a regular file of this user closed to group and others is
    refused: :class:`SegmentPermissionError` (another user's, or open to others) or
    :class:`SegmentError` (a symlink, a FIFO, a directory), and left as it is, unless
    ``clear_refused`` (for ``unlink``, whose job is to clear the way): then it is removed,
    which no process holding or waiting for the lock can notice, since all of them refuse
    it too, and the lock is taken on a new file.
    """

    __slots__ = ("path", "timeout", "clear_refused", "_fd")

    def __init__(self, path: str, timeout: float, *, clear_refused: bool = False) -> None:
        self.path = path
        self.timeout = timeout
        self.clear_refused = clear_refused
        self._fd = -1

    def __enter__(self) -> "LifecycleLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock; see the class for what it raises."""
        deadline = time.monotonic() + self.timeout
        clear = self.clear_refused
        while True:
            opened = _open_lock_file(self.path)
            if isinstance(opened, SegmentError):
                if not clear:
                    raise opened
                clear = False  # once: refused again, someone keeps planting it
                _remove_refused(self.path, opened)
                continue
            fd = opened
            try:
                self._flock_by(fd, deadline)
                if _names_file(self.path, fd):
                    self._fd = fd
                    return
            except BaseException:
                self._fd = -1
                os.close(fd)
                raise
            # Its holder removed the file while we waited: a newcomer would lock another file
            # at the path, so this one guards nothing. Start again on what is there now.
            os.close(fd)

    def _flock_by(self, fd: int, deadline: float) -> None:
        pause = _POLL_FIRST
        while True:
            try:
                _flock(fd, _LOCK_NB)
                return
            except BlockingIOError:
                pass
            except OSError as exc:
                raise SegmentError(f"cannot lock {self.path}: {exc.strerror}") from None
            left = deadline - time.monotonic()
            if left <= 0:
                raise SegmentError(
                    f"timed out after {self.timeout} s waiting for {self.path}; another "
                    "process is creating or removing the store (or hung doing so)"
                )
            time.sleep(min(pause, left))
            pause = min(pause * 2, _POLL_MAX)

    def remove_file(self) -> None:
        """Remove the lock file; call only while holding the lock. Processes waiting on it
        find it gone when they get it, and start again on a new file."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise SegmentError(f"cannot remove {self.path}: {exc.strerror}") from None

    def release(self) -> None:
        """Let go of the lock (a no-op when not held)."""
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        try:
            # Unlock before closing: a fork in another thread may have copied the descriptor
            # into a child, and the lock lasts while any copy of it is open.
            _flock(fd, _LOCK_UN)
        finally:
            os.close(fd)


def _open_lock_file(path: str) -> Union[int, SegmentError]:
    """The open lock file at ``path``, made (mode 0600) when there is none; or the error
    that refuses what is there, returned rather than raised (``clear_refused`` acts on it).
    Raises :class:`SegmentError` when no lock file can be opened at all."""
    while True:
        try:
            fd = os.open(path, _LIFECYCLE_OPEN | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise _cannot_open(path, exc) from None
        else:
            try:
                # Ours alone, just made: the umask may have narrowed the mode, so that a later
                # O_RDWR open fails. Only a file this call made is changed, never one found.
                os.fchmod(fd, 0o600)
            except OSError as exc:
                os.close(fd)
                raise _cannot_open(path, exc) from None
            return fd
        try:
            fd = os.open(path, _LIFECYCLE_OPEN)
        except FileNotFoundError:
            continue  # removed by its holder since: make it anew
        except OSError as exc:
            refused = _refusal_of_open(path, exc)
            if refused is None:
                raise _cannot_open(path, exc) from None
            return refused
        try:
            refused = _refusal(path, os.fstat(fd))
        except OSError as exc:
            os.close(fd)
            raise _cannot_open(path, exc) from None
        if refused is None:
            return fd
        os.close(fd)
        return refused


def _refusal(path: str, st: os.stat_result) -> Optional[SegmentError]:
    """The error refusing the file ``st`` at ``path`` as a lock file, or None if it is fit."""
    if stat.S_ISLNK(st.st_mode):
        return _symlink_refused(path)
    if not stat.S_ISREG(st.st_mode):
        return SegmentError(
            f"{path} is not a regular file ({stat.filemode(st.st_mode)}); someone may have "
            f"planted it to disturb this store: remove it (rm {path}; it holds no sessions)"
        )
    if st.st_uid != os.geteuid():
        return SegmentPermissionError(
            f"{path} belongs to uid {st.st_uid}, not to this process (uid {os.geteuid()}); "
            "another user may have planted it: pick another store name, or have its owner "
            "or root remove it"
        )
    if st.st_mode & 0o077:
        # Refused, not chmod-ed: a process of another user may have opened it already and
        # could hold the lock for ever; a chmod now would not take its descriptor away.
        return SegmentPermissionError(
            f"{path} has mode {stat.S_IMODE(st.st_mode):o}: group or others may open it and "
            f"hold the lock; remove it (rm {path}; it holds no sessions) and try again"
        )
    return None


def _refusal_of_open(path: str, exc: OSError) -> Optional[SegmentError]:
    """The refusal an open of an existing ``path`` failing with ``exc`` means, if any."""
    if exc.errno == errno.ELOOP:
        return _symlink_refused(path)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return SegmentPermissionError(
            f"cannot open {path} ({exc.strerror}); another user may have planted it: pick "
            "another store name, or have its owner or root remove it"
        )
    if exc.errno in (errno.EISDIR, errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):
        return SegmentError(
            f"{path} is not a regular file ({exc.strerror}); someone may have planted it to "
            f"disturb this store: remove it (rm {path}; it holds no sessions)"
        )
    return None


def _symlink_refused(path: str) -> SegmentError:
    return SegmentError(
        f"{path} is a symlink; someone may have planted it to make this process write to its "
        f"target: remove it (rm {path}; it holds no sessions, and its target is untouched)"
    )


def _cannot_open(path: str, exc: OSError) -> SegmentError:
    cls = SegmentPermissionError if isinstance(exc, PermissionError) else SegmentError
    return cls(f"cannot open the lock file {path}: {exc.strerror}")


def _names_file(path: str, fd: int) -> bool:
    """Whether ``path`` still names the file open at ``fd`` (not the path's target)."""
    try:
        there = os.stat(path, follow_symlinks=False)
        held = os.fstat(fd)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise SegmentError(f"cannot look at {path}: {exc.strerror}") from None
    # fd keeps its file alive, so its inode number cannot have been reused by another.
    return (there.st_dev, there.st_ino) == (held.st_dev, held.st_ino)


def _remove_refused(path: str, refused: SegmentError) -> None:
    """Remove the refused file at ``path``. No process of ours holds or waits for it (each
    refuses it), so no lock is taken from anyone. Looked at again just before: if someone
    replaced it with a fit lock file meanwhile, that one stays."""
    try:
        if _refusal(path, os.lstat(path)) is None:
            return
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise type(refused)(f"{refused}; removing it failed: {exc.strerror}") from None
