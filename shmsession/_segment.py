"""The only importer of posix_ipc and mmap: create, attach, re-open after fork, unlink.

A segment is one named POSIX shared-memory object, ``/dev/shm/shmsession.NAME`` on Linux,
mapped whole. Its life cycle (create + initialise, attach, unlink) is serialised by the
store's life-cycle lock, ``_lock.LifecycleLock`` on ``/dev/shm/shmsession-lock.NAME`` (flock
on a file this package opens itself, refusing whatever someone planted there): so an
attacher never sees a half-initialised segment, and a segment is never removed while
another process makes or attaches it. The hot path never touches that lock (see ``_lock``).

The lock file lives as long as the segment. It is removed, only while its lock is held,
when the segment is (``unlink``) or when none was made (``create=False`` finding no store,
or a creation undone): removed any later, a process waiting on the old file and a newcomer
on a new one would both hold "the" lock (``_lock`` explains the lock-and-verify that makes
removal under the lock safe). The lock file's prefix differs from the segments' at a
character no name can change, so no store's segment is ever another store's lock file.

Foreign errors (posix_ipc's, ``OSError``) are translated here and nowhere else (``_lock``
translates its own).
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import zlib
from typing import Callable, Optional

import posix_ipc  # type: ignore[import-not-found, unused-ignore]

from . import _layout as L
from ._rules import check_name as check_name  # the store-name rule, re-exported
from ._errors import (
    CorruptSegment,
    InsufficientSharedMemory,
    LayoutVersionMismatch,
    SegmentError,
    SegmentPermissionError,
    SegmentUnlinked,
    StoreNotFound,
)
from ._lock import LifecycleLock

PREFIX = "shmsession."
LOCK_PREFIX = "shmsession-lock."
SHM_DIR = "/dev/shm"
def shm_name(name: str) -> str:
    """The POSIX name of the segment of store ``name``."""
    return "/" + PREFIX + name


def lock_path(name: str) -> str:
    """The life-cycle lock file of store ``name``."""
    return os.path.join(SHM_DIR, LOCK_PREFIX + name)


def segment_path(name: str) -> str:
    """Where Linux shows the segment of store ``name``."""
    return os.path.join(SHM_DIR, PREFIX + name)


def lifecycle_lock(name: str, timeout: float, *, clear_refused: bool = False) -> LifecycleLock:
    """The life-cycle lock of store ``name``, to take with ``with`` (see ``LifecycleLock``)."""
    return LifecycleLock(lock_path(name), timeout, clear_refused=clear_refused)


class Segment:
    """An open, mapped segment: ``fd`` (for flock) and ``buf`` (the mapping)."""

    __slots__ = ("name", "fd", "buf", "size", "created", "ino")

    def __init__(self, name: str, fd: int, buf: mmap.mmap, size: int, created: bool) -> None:
        self.name = name
        self.fd = fd
        self.buf = buf
        self.size = size
        self.created = created
        self.ino = os.fstat(fd).st_ino

    @classmethod
    def open(
        cls,
        name: str,
        size: int,
        initialise: Callable[[mmap.mmap], None],
        create: bool = True,
        timeout: float = 10.0,
    ) -> "Segment":
        """Attach to segment ``name``, or create it with ``size`` bytes and ``initialise`` it.

        Raises the ``SegmentError`` family: not ours, wrong mode, wrong layout version,
        a damaged header, not enough room in /dev/shm.
        """
        try:
            with lifecycle_lock(name, timeout) as held:
                try:
                    return cls._open_locked(name, size, initialise, create)
                except _NoSegment:
                    # Nothing was made (create=False, or creation failed and was undone): the
                    # lock file has nothing left to guard. Removed while held (see above).
                    held.remove_file()
                    raise
        except _NoSegment as exc:
            public: type = SegmentError
            if isinstance(exc, InsufficientSharedMemory):
                public = InsufficientSharedMemory
            elif isinstance(exc, _NoStore):
                public = StoreNotFound
            raise public(str(exc)) from None
        except SegmentError:
            raise
        except OSError as exc:
            raise SegmentError(f"cannot open store {name!r}: {exc}") from None

    @classmethod
    def _open_locked(
        cls, name: str, size: int, initialise: Callable[[mmap.mmap], None], create: bool
    ) -> "Segment":
        """``open`` with the life-cycle lock held."""
        fd = _open_existing(name)
        if fd is None:
            if not create:
                raise _NoStore(f"no store named {name!r} exists")
            return cls._create(name, size, initialise)
        try:
            _check_owner(fd, name)
            actual = os.fstat(fd).st_size
            if actual < L.HEADER_SIZE:  # before mmap, which refuses an empty file
                validate_identity(None, actual, name)
            buf = _map(fd, actual)
            try:
                validate_identity(buf, actual, name)
            except BaseException:
                buf.close()
                raise
        except BaseException:
            os.close(fd)
            raise
        return cls(name, fd, buf, actual, created=False)

    @classmethod
    def _create(cls, name: str, size: int, initialise: Callable[[mmap.mmap], None]) -> "Segment":
        free = _shm_free()
        if free is not None and size > free:
            raise _NoRoom(
                f"a store of {size} bytes does not fit: {SHM_DIR} has {free} bytes free; "
                f"ask for a smaller size, or enlarge {SHM_DIR} (docker: --shm-size)"
            )
        try:
            shm = posix_ipc.SharedMemory(shm_name(name), posix_ipc.O_CREX, mode=0o600, size=0)
        except posix_ipc.ExistentialError:
            raise SegmentError(f"segment {shm_name(name)} appeared while creating it") from None
        except (posix_ipc.PermissionsError, OSError) as exc:
            raise SegmentError(f"cannot create {shm_name(name)}: {exc}") from None
        fd = shm.fd
        try:
            # umask may have narrowed the mode; make it exactly owner read/write.
            os.fchmod(fd, 0o600)
            try:
                # A sparse tmpfs file kills a writer with SIGBUS when /dev/shm fills; reserving
                # every page now turns that into this clean error at creation.
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                    raise _NoRoom(
                        f"cannot reserve {size} bytes in {SHM_DIR}: {exc.strerror}; ask for a "
                        f"smaller size, or enlarge {SHM_DIR} (docker: --shm-size)"
                    ) from None
                raise SegmentError(f"cannot reserve {size} bytes for the store: {exc}") from None
            buf = _map(fd, size)
            initialise(buf)
        except BaseException:
            os.close(fd)
            _unlink_quietly(name)
            raise
        return cls(name, fd, buf, size, created=True)

    def reopen(self) -> None:
        """Give this process its own open file description (after fork).

        flock belongs to the open file description, which fork shares: without this, the
        parent and child would not exclude each other. The mapping stays as it is.
        """
        old = self.fd
        try:
            fd = os.open(f"/proc/self/fd/{old}", os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            again = _open_existing(self.name)
            if again is None or os.fstat(again).st_ino != self.ino:
                if again is not None:
                    os.close(again)
                raise SegmentUnlinked(
                    f"store {self.name!r} was removed before this process could re-open it"
                ) from None
            fd = again
        self.fd = fd
        os.close(old)

    def close(self) -> None:
        """Unmap and close; the segment itself stays."""
        try:
            self.buf.close()
        except BufferError:
            pass  # a memoryview still points into it; the mapping goes with the process
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def unlinked(self) -> bool:
        """True when the name no longer leads to this segment (``st_nlink == 0``)."""
        return os.fstat(self.fd).st_nlink == 0


def unlink(name: str, timeout: float = 10.0) -> bool:
    """Remove segment ``name`` and its lock file; returns whether the segment existed.

    A lock file that every process refuses (a symlink, another user's file...) guards
    nothing, and clearing the way is what unlinking is for: it is removed, then the lock is
    taken on a new file. Raises the ``SegmentError`` family (a timeout, a refused lock file
    that this user may not remove).
    """
    check_name(name)
    with lifecycle_lock(name, timeout, clear_refused=True) as held:
        existed = _unlink_quietly(name)
        held.remove_file()
    return existed


def exists(name: str) -> bool:
    fd = _open_existing(check_name(name))
    if fd is None:
        return False
    os.close(fd)
    return True


class _NoSegment(SegmentError):
    """Raised inside ``Segment.open`` when it leaves no segment behind."""


class _NoRoom(_NoSegment, InsufficientSharedMemory):
    pass


class _NoStore(_NoSegment):
    pass


def validate_identity(buf: Optional[mmap.mmap], actual_size: int, name: str) -> None:
    """Refuse a segment that is not a shmsession store of this layout, or is damaged."""
    fix = f"remove it with `SessionStorage.unlink_name({name!r})` if nothing uses it"
    if actual_size < L.HEADER_SIZE or buf is None:
        raise CorruptSegment(f"segment {shm_name(name)} is {actual_size} bytes, too small; {fix}")
    ident = L.IDENTITY.unpack_from(buf, 0)
    if ident[0] != L.MAGIC:
        raise CorruptSegment(f"segment {shm_name(name)} is not a shmsession store; {fix}")
    if ident[1] != L.LAYOUT_VERSION:
        raise LayoutVersionMismatch(
            f"segment {shm_name(name)} has layout version {ident[1]}, this shmsession reads "
            f"version {L.LAYOUT_VERSION}; stop the processes of the other version and {fix}"
        )
    (crc,) = L.IDENTITY_CRC.unpack_from(buf, L.IDENTITY_CRC_OFF)
    if crc != zlib.crc32(bytes(buf[: L.IDENTITY.size])):
        raise CorruptSegment(f"segment {shm_name(name)} has a damaged header; {fix}")
    if ident[3] != actual_size:
        raise CorruptSegment(
            f"segment {shm_name(name)} says it is {ident[3]} bytes but is {actual_size}; {fix}"
        )


def _open_existing(name: str) -> Optional[int]:
    try:
        shm = posix_ipc.SharedMemory(shm_name(name), 0, size=0)
    except posix_ipc.ExistentialError:
        return None
    except posix_ipc.PermissionsError:
        raise SegmentPermissionError(
            f"segment {shm_name(name)} exists and this user may not open it; it belongs to "
            "another user: pick another store name"
        ) from None
    return int(shm.fd)


def _check_owner(fd: int, name: str) -> None:
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        raise SegmentPermissionError(
            f"segment {shm_name(name)} belongs to uid {st.st_uid}, not to this process "
            f"(uid {os.geteuid()}); another user may have planted it: pick another store "
            "name, or have its owner remove it"
        )
    if st.st_mode & 0o077:
        raise SegmentPermissionError(
            f"segment {shm_name(name)} has mode {stat.S_IMODE(st.st_mode):o}: group or others "
            "may read it, so its sessions may have leaked; remove it and create it anew"
        )


def _map(fd: int, size: int) -> mmap.mmap:
    try:
        return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except (OSError, ValueError) as exc:
        raise SegmentError(f"cannot map the segment: {exc}") from None


def _shm_free() -> Optional[int]:
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _unlink_quietly(name: str) -> bool:
    try:
        posix_ipc.unlink_shared_memory(shm_name(name))
    except posix_ipc.ExistentialError:
        return False
    except posix_ipc.PermissionsError:
        raise SegmentPermissionError(
            f"segment {shm_name(name)} belongs to another user, who alone may remove it "
            f"({SHM_DIR} is sticky): ask its owner, or root"
        ) from None
    return True
