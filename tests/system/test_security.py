"""Who may see and steer a store: file modes and owners, squatters, damaged or foreign
segments, names, the keyed hash, a full /dev/shm, and errors that cross process boundaries.

The tests run as root (chown needs it); a root process opens any file, so these check the
package's own owner and mode checks, not the kernel's.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

import shmsession
from shmsession import (
    CorruptSegment,
    InvalidName,
    LayoutVersionMismatch,
    SegmentError,
    SegmentPermissionError,
    SessionStorage,
    ShmSessionError,
)
from shmsession import _layout as L
from shmsession._segment import lock_path, segment_path

from tests._stores import remove_store

SIZE = 2 << 20
OTHER_UID = 12345


def _file_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _make(name: str, **kwargs: object) -> str:
    """Create store ``name`` with one session, close it; returns the segment's path."""
    with SessionStorage(name, size=SIZE, **kwargs) as s:  # type: ignore[arg-type]
        s.write("k", b"secret session data")
    return segment_path(name)


def _assert_usable_again(name: str) -> None:
    """``unlink_name`` removes whatever is there, and the name then makes a working store."""
    assert SessionStorage.unlink_name(name) is True
    assert not SessionStorage.exists(name)
    assert not os.path.exists(segment_path(name))
    assert not os.path.exists(lock_path(name))
    with SessionStorage(name, size=SIZE) as s:
        s.write("k", b"fresh")
        assert s.read("k") == b"fresh"
        s.check()


# ---------------------------------------------------------------------------- mode and owner
def test_segment_is_created_0600_and_ours_even_with_umask_0(name: str) -> None:
    old = os.umask(0)
    try:
        s = SessionStorage(name, size=SIZE)
    finally:
        os.umask(old)
    try:
        st = os.stat(segment_path(name))
        assert stat.S_ISREG(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
        assert st.st_uid == os.geteuid()
        lst = os.stat(lock_path(name))
        assert stat.S_IMODE(lst.st_mode) & 0o077 == 0, oct(lst.st_mode)
        assert lst.st_uid == os.geteuid()
    finally:
        s.close()


def test_segment_is_0600_with_a_restrictive_umask_too(name: str) -> None:
    old = os.umask(0o277)  # would make it read-only for the owner
    try:
        s = SessionStorage(name, size=SIZE)
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.stat(segment_path(name)).st_mode) == 0o600
        s.write("k", b"v")
        assert s.read("k") == b"v"
    finally:
        s.close()


def test_attach_refuses_a_segment_owned_by_another_uid(name: str) -> None:
    path = _make(name)
    os.chown(path, OTHER_UID, -1)
    before = _file_bytes(path)
    with pytest.raises(SegmentPermissionError) as info:
        SessionStorage(name)
    err = info.value
    assert isinstance(err, PermissionError)
    assert isinstance(err, SegmentError) and isinstance(err, ShmSessionError)
    msg = str(err)
    assert str(OTHER_UID) in msg
    assert "pick another store name" in msg or "remove" in msg, msg  # says what to do
    # Refused, not used: the segment is as it was, still the other user's.
    assert _file_bytes(path) == before
    assert os.stat(path).st_uid == OTHER_UID
    # Attaching only (create=False) is refused the same way.
    with pytest.raises(SegmentPermissionError):
        SessionStorage(name, create=False)
    _assert_usable_again(name)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o606, 0o666, 0o620, 0o602],
                         ids=lambda m: f"{m:o}")
def test_attach_refuses_a_segment_open_to_group_or_others(name: str, mode: int) -> None:
    path = _make(name)
    os.chmod(path, mode)
    before = _file_bytes(path)
    with pytest.raises(SegmentPermissionError) as info:
        SessionStorage(name)
    assert isinstance(info.value, PermissionError)
    msg = str(info.value)
    assert f"{mode:o}" in msg, msg
    assert "remove it" in msg, msg  # says what to do
    assert _file_bytes(path) == before
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    _assert_usable_again(name)


def _in_child_as(uid: int, fn: "Callable[[], object]") -> str:
    """Run ``fn`` in a forked child that has become ``uid``; returns what it ended with: the
    class name of what it raised (qualified by its module), or "returned"."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                os.setuid(uid)
                fn()
                answer = "returned"
            except BaseException as exc:  # noqa: BLE001 - the answer is its class
                answer = f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
            os.write(w, answer.encode()[:4000])
        finally:
            os._exit(0)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], 30.0)
        assert ready, "the child said nothing within 30 s"
        return os.read(r, 4096).decode()
    finally:
        os.close(r)
        deadline = time.monotonic() + 10.0
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.01)


def test_unlink_name_of_another_users_store_is_a_segment_permission_error(name: str) -> None:
    """/dev/shm is sticky: only a segment's owner (or root) may remove it. A user who may
    not gets the package's SegmentPermissionError, not posix_ipc's own exception, and the
    segment stays."""
    path = _make(name)
    os.chown(path, OTHER_UID, -1)  # the store of user OTHER_UID ...
    # ... whose lock file the unlinking user may use, so the refusal is the segment's own
    os.chown(lock_path(name), OTHER_UID + 1, -1)
    answer = _in_child_as(OTHER_UID + 1, lambda: SessionStorage.unlink_name(name))  # ... not ours
    assert answer.startswith("shmsession.SegmentPermissionError: "), answer
    assert "sticky" in answer, answer  # refused by the unlink, not by the lock file
    assert os.stat(path).st_uid == OTHER_UID  # still there


def _plant(path: str, uid: int, mode: int,
           payload: bytes = b"planted by another user\n" * 200) -> bytes:
    """A plain file at ``path``, made by "someone else"."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, payload)
    finally:
        os.close(fd)
    os.chown(path, uid, -1)
    os.chmod(path, mode)
    return payload


@pytest.mark.parametrize("uid,mode", [(OTHER_UID, 0o600), (OTHER_UID, 0o666), (0, 0o666)],
                         ids=["other-user-0600", "other-user-0666", "ours-0666"])
def test_a_squatted_segment_path_is_refused_not_used(name: str, uid: int, mode: int) -> None:
    payload = _plant(segment_path(name), uid, mode)
    path = segment_path(name)
    with pytest.raises(SegmentPermissionError):
        SessionStorage(name, size=SIZE)
    st = os.stat(path)
    assert (st.st_uid, stat.S_IMODE(st.st_mode), st.st_size) == (uid, mode, len(payload))
    assert _file_bytes(path) == payload
    _assert_usable_again(name)


@pytest.mark.parametrize("kind", ["other-user-file", "symlink"])
def test_a_squatted_lock_file_is_refused_with_a_store_error(name: str, kind: str,
                                                            tmp_path: Path) -> None:
    """Another user can plant the lock file (``lock_path(NAME)``) before the store exists. It must
    not be followed or used, and the refusal is one of the package's errors (the module
    promises foreign errors are translated) so that ``except ShmSessionError`` sees it."""
    path = lock_path(name)
    target = str(tmp_path / "target")
    if kind == "symlink":
        os.symlink(target, path)
    else:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        os.close(fd)
        os.chown(path, OTHER_UID, -1)
        os.chmod(path, 0o666)
    with pytest.raises(ShmSessionError) as info:
        SessionStorage(name, size=SIZE)
    assert isinstance(info.value, SegmentError)
    assert not os.path.exists(segment_path(name))
    assert not os.path.exists(target)


# ---------------------------------------------------------------------------- the lock file
# The life-cycle lock file (``lock_path(NAME)``) sits in /dev/shm, where anyone may plant a file
# before the store exists. Whatever is there, opening the store must not follow, write to or
# truncate it, and the refusal must say what to do.
TARGET_CONTENT = b"a file the attacker wants destroyed\n" * 100


def _assert_lock_file_remedy(name: str) -> None:
    """With no store made, ``unlink_name`` removes the refused lock file (never what it points
    to), and the name then makes a working store with a lock file of its own."""
    assert SessionStorage.unlink_name(name) is False
    assert not os.path.lexists(lock_path(name))
    with SessionStorage(name, size=SIZE) as s:
        s.write("k", b"fresh")
        assert s.read("k") == b"fresh"
    st = os.lstat(lock_path(name))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()


@pytest.mark.parametrize("umask", [0, 0o277], ids=["umask-0", "umask-277"])
def test_the_lock_file_is_made_0600_whatever_the_umask(name: str, umask: int) -> None:
    old = os.umask(umask)
    try:
        with SessionStorage(name, size=SIZE) as s:
            s.write("k", b"v")
    finally:
        os.umask(old)
    st = os.lstat(lock_path(name))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    with SessionStorage(name) as s:  # and it is not refused on the next open
        assert s.read("k") == b"v"


def test_a_symlink_at_the_lock_path_is_not_followed(name: str, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(TARGET_CONTENT)
    os.chmod(target, 0o644)
    os.symlink(target, lock_path(name))
    for call in (lambda: SessionStorage(name, size=SIZE),
                 lambda: SessionStorage(name, create=False)):
        with pytest.raises(SegmentError) as info:
            call()
        msg = str(info.value)
        assert lock_path(name) in msg and "symlink" in msg and "remove" in msg, msg
        assert target.read_bytes() == TARGET_CONTENT, "the symlink's target was written to"
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
        assert not os.path.exists(segment_path(name))
        assert os.path.islink(lock_path(name))  # refused, not removed behind the user's back
    _assert_lock_file_remedy(name)
    assert target.read_bytes() == TARGET_CONTENT, "unlink_name wrote to the symlink's target"


@pytest.mark.timeout(20)
def test_a_fifo_at_the_lock_path_is_refused_without_blocking(name: str) -> None:
    os.mkfifo(lock_path(name), 0o600)
    with pytest.raises(SegmentError) as info:
        SessionStorage(name, size=SIZE)
    msg = str(info.value)
    assert lock_path(name) in msg and "not a regular file" in msg and "remove" in msg, msg
    assert not os.path.exists(segment_path(name))
    assert stat.S_ISFIFO(os.lstat(lock_path(name)).st_mode)
    _assert_lock_file_remedy(name)


def test_another_users_lock_file_is_refused_with_a_permission_error(name: str) -> None:
    path = lock_path(name)
    _plant(path, OTHER_UID, 0o600, TARGET_CONTENT)
    with pytest.raises(SegmentPermissionError) as info:
        SessionStorage(name, size=SIZE)
    msg = str(info.value)
    assert path in msg and str(OTHER_UID) in msg and "pick another store name" in msg, msg
    st = os.stat(path)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (OTHER_UID, 0o600)
    assert _file_bytes(path) == TARGET_CONTENT
    assert not os.path.exists(segment_path(name))
    _assert_lock_file_remedy(name)


def test_our_lock_file_open_to_others_is_refused_not_fixed(name: str) -> None:
    """A lock file of ours that group or others may open is refused, like such a segment: a
    process of theirs could already hold it open (and flock it), which a chmod now would not
    undo. It holds no sessions, so the message says to remove it."""
    path = lock_path(name)
    with SessionStorage(name, size=SIZE) as s:
        s.write("k", b"v")
    os.chmod(path, 0o666)
    with pytest.raises(SegmentPermissionError) as info:
        SessionStorage(name)
    msg = str(info.value)
    assert path in msg and "666" in msg and "remove" in msg, msg
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    assert SessionStorage.exists(name)  # the store itself is untouched
    os.unlink(path)  # the remedy the message gives: the sessions are still there
    with SessionStorage(name) as s:
        assert s.read("k") == b"v"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# ---------------------------------------------------------------------------- foreign segments
def _pwrite(path: str, data: bytes, offset: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        assert os.pwrite(fd, data, offset) == len(data)
    finally:
        os.close(fd)


def _flip(path: str, offset: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        (b,) = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([b ^ 0x5A]), offset)
    finally:
        os.close(fd)


def _refused(name: str, cls: type) -> SegmentError:
    with pytest.raises(cls) as info:
        SessionStorage(name)
    err = info.value
    assert isinstance(err, ShmSessionError) and isinstance(err, SegmentError)
    assert "unlink_name" in str(err), str(err)  # says what to do
    return err


@pytest.mark.parametrize("version", [0, L.LAYOUT_VERSION - 1, L.LAYOUT_VERSION + 1, 0xFFFFFFFF])
def test_another_layout_version_is_refused(name: str, version: int) -> None:
    path = _make(name)
    assert L.IDENTITY.unpack_from(_file_bytes(path)[:L.IDENTITY.size])[1] == L.LAYOUT_VERSION
    _pwrite(path, struct.pack("<I", version), 8)
    err = _refused(name, LayoutVersionMismatch)
    assert str(version) in str(err)
    _assert_usable_again(name)


def test_a_garbage_magic_is_refused(name: str) -> None:
    path = _make(name)
    _pwrite(path, b"NOTASTOR", 0)
    err = _refused(name, CorruptSegment)
    assert not isinstance(err, LayoutVersionMismatch)
    _assert_usable_again(name)


# Every identity field but the layout version (a changed version is LayoutVersionMismatch):
# magic, header size, total size, capacity, max entries, offsets, sizes, reserved, secret,
# and the crc itself.
FLIP_OFFSETS = [0, 7, 12, 16, 24, 28, 32, 40, 48, 56, 64, 72, 76, 80, 95, 111, 112, 115]


@pytest.mark.parametrize("offset", FLIP_OFFSETS)
def test_one_flipped_identity_byte_is_refused(name: str, offset: int) -> None:
    path = _make(name)
    _flip(path, offset)
    _refused(name, CorruptSegment)
    _assert_usable_again(name)


@pytest.mark.parametrize("size", [L.HEADER_SIZE + 4096, L.HEADER_SIZE, 100, 1, 0],
                         ids=["header+4k", "header", "100", "1", "empty"])
def test_a_truncated_segment_is_refused_as_corrupt(name: str, size: int) -> None:
    """An empty segment is what a creator killed between shm_open and fallocate leaves."""
    path = _make(name)
    os.truncate(path, size)
    _refused(name, CorruptSegment)
    _assert_usable_again(name)


def test_a_grown_segment_is_refused_as_corrupt(name: str) -> None:
    path = _make(name)
    os.truncate(path, SIZE + 4096)
    _refused(name, CorruptSegment)
    _assert_usable_again(name)


# ---------------------------------------------------------------------------- names
BAD_NAMES = ["", "a/b", "../x", "x" * 101, "spaces here", None, 5, "é", ".", "..", "a\nb",
             "a\x00b", b"bytes", "/abs"]


@pytest.mark.parametrize("bad", BAD_NAMES, ids=repr)
def test_invalid_names_raise_invalid_name(bad: object) -> None:
    before = set(os.listdir("/dev/shm"))
    for call in (lambda: SessionStorage(bad), lambda: SessionStorage.unlink_name(bad),  # type: ignore[arg-type]
                 lambda: SessionStorage.exists(bad)):  # type: ignore[arg-type]
        with pytest.raises(InvalidName) as info:
            call()
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, ShmSessionError)
        assert "A-Z a-z 0-9" in str(info.value)
    assert not {f for f in set(os.listdir("/dev/shm")) - before if "shmsession" in f}


def test_longest_valid_name_works() -> None:
    name = "t-" + "n" * 98
    try:
        with SessionStorage(name, size=SIZE) as s:
            s.write("k", b"v")
            assert s.read("k") == b"v"
    finally:
        remove_store(name)


@pytest.fixture
def lock_named(name: str) -> Iterator[str]:
    """``name + ".lock"``: a valid store name, removed after the test."""
    try:
        yield name + ".lock"
    finally:
        remove_store(name + ".lock")


def test_a_store_named_like_another_stores_lock_file_is_independent(name: str,
                                                                    lock_named: str) -> None:
    """Store "X.lock" has the segment /dev/shm/shmsession.X.lock, which once was the path of
    store X's life-cycle lock file: the two must not destroy each other."""
    with SessionStorage(lock_named, size=SIZE) as other:
        other.write("k", b"in X.lock")
    with SessionStorage(name, size=SIZE) as s:
        s.write("k", b"in X")
    SessionStorage.unlink_name(name)  # removes store X and X's lock file only
    assert SessionStorage.exists(lock_named), "unlinking store X removed store X.lock"
    with SessionStorage(lock_named) as other:
        assert other.read("k") == b"in X.lock"


def test_a_store_named_like_an_existing_stores_lock_file_can_be_created(name: str,
                                                                       lock_named: str) -> None:
    with SessionStorage(name, size=SIZE) as s:
        s.write("k", b"in X")
        with SessionStorage(lock_named, size=SIZE) as other:
            other.write("k", b"in X.lock")
            assert other.read("k") == b"in X.lock"
        assert s.read("k") == b"in X"


# ---------------------------------------------------------------------------- keyed hash
def test_digests_are_keyed_per_segment(name: str) -> None:
    """A test of internals: the keyed digest (``_digests``) the table is indexed by."""
    other = name + "-b"
    try:
        with SessionStorage(name, size=SIZE) as a, SessionStorage(other, size=SIZE) as b:
            ids = [f"user-{i}" for i in range(50)] + ["x", "é" * 30]
            for sid in ids:
                da, db = a._digests.of(sid), b._digests.of(sid)
                assert len(da) == len(db) == L.DIGEST_SIZE
                assert da != db
                assert da != hashlib.blake2b(sid.encode(), digest_size=L.DIGEST_SIZE).digest()
                assert a._digests.of(sid) == da  # stable within one segment
            # Another handle on the same segment agrees (the key lives in the segment).
            with SessionStorage(name) as a2:
                assert all(a2._digests.of(sid) == a._digests.of(sid) for sid in ids)
        # A segment made anew under the same name gets a new key.
        with SessionStorage(name) as a:
            before = a._digests.of("user-0")
        SessionStorage.unlink_name(name)
        with SessionStorage(name, size=SIZE) as a:
            assert a._digests.of("user-0") != before
    finally:
        remove_store(other)


def test_ids_colliding_under_an_unkeyed_hash_do_not_pile_up(name: str) -> None:
    """A test of internals: it reads the table's geometry and home slots (``_engine.t``)."""
    with SessionStorage(name, size=SIZE, max_entries=300, ttl=None) as s:
        t = s._engine.t
        mask = t.mask
        assert t.capacity == 512
        # 200 ids an attacker would pick if the table were indexed by unkeyed blake2b: all of
        # them share one home slot.
        target = 7
        ids: List[str] = []
        i = 0
        while len(ids) < 200:
            sid = f"attack-{i}"
            i += 1
            d = hashlib.blake2b(sid.encode(), digest_size=L.DIGEST_SIZE).digest()
            if struct.unpack_from("<Q", d)[0] & mask == target:
                ids.append(sid)
        for sid in ids:
            s.write(sid, b"x")
        homes = {t.home(s._digests.of(sid)) for sid in ids}
        assert len(homes) > 100, f"the keyed hash sent 200 ids to only {len(homes)} homes"
        longest = max((idx - t.home(slot[0])) & mask for idx, slot in t.used())
        assert longest < 20, f"longest probe distance {longest}"
        assert len(s) == 200
        s.check()


# ---------------------------------------------------------------------------- full /dev/shm
UNSHARE = shutil.which("unshare")


def _in_small_dev_shm(script: str, size: str = "2m") -> str:
    """Run ``script`` in a child whose /dev/shm is a fresh tmpfs of ``size`` (a private
    mount namespace: the host's /dev/shm is not touched); returns its stdout."""
    assert UNSHARE, "unshare (util-linux) is needed"
    shell = (f"mount -t tmpfs -o size={size},mode=1777 tmpfs /dev/shm && "
             f'exec "$0" -c "$1"')
    proc = subprocess.run(
        [UNSHARE, "--mount", "--propagation", "private", "sh", "-c", shell, sys.executable,
         textwrap.dedent(script)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


_SMALL_SHM_PREAMBLE = """
    import os, resource, signal
    from shmsession import InsufficientSharedMemory, SegmentError, SessionStorage
    free = os.statvfs("/dev/shm")
    print("FREE", free.f_bavail * free.f_frsize)
"""


def test_too_small_dev_shm_is_refused_by_the_statvfs_check() -> None:
    out = _in_small_dev_shm(_SMALL_SHM_PREAMBLE + """
    try:
        SessionStorage("x", size=8 << 20)
    except InsufficientSharedMemory as exc:
        print("RAISED", type(exc).__name__, isinstance(exc, SegmentError))
        print("MESSAGE", exc)
    else:
        print("NO ERROR")
    print("SEGMENT", os.path.exists("/dev/shm/shmsession.x"))
    print("EXISTS", SessionStorage.exists("x"))
    # The space is really free: a store that fits is made in the same /dev/shm.
    with SessionStorage("y", size=1 << 20, max_entries=64, max_value_size=4096) as s:
        s.write("k", b"v")
        print("SMALL", s.read("k"))
        s.unlink()
    """)
    assert "FREE 2097152" in out, out
    assert "RAISED InsufficientSharedMemory True" in out, out
    assert "--shm-size" in out and "smaller size" in out, out  # says what to do
    assert "SEGMENT False" in out and "EXISTS False" in out, out
    assert "SMALL b'v'" in out, out


def test_failed_fallocate_is_insufficient_shared_memory_and_leaves_no_segment() -> None:
    """statvfs says there is room but reserving the pages fails: forced with RLIMIT_FSIZE
    (EFBIG, SIGXFSZ ignored) below the size asked for."""
    out = _in_small_dev_shm(_SMALL_SHM_PREAMBLE + """
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (512 << 10, 512 << 10))
    try:
        SessionStorage("x", size=1 << 20, max_entries=64, max_value_size=4096)
    except InsufficientSharedMemory as exc:
        print("RAISED", type(exc).__name__)
    else:
        print("NO ERROR")
    print("SEGMENT", os.path.exists("/dev/shm/shmsession.x"))
    """)
    assert "RAISED InsufficientSharedMemory" in out, out
    assert "SEGMENT False" in out, out


def test_failed_creation_leaves_nothing_in_dev_shm() -> None:
    out = _in_small_dev_shm(_SMALL_SHM_PREAMBLE + """
    try:
        SessionStorage("x", size=8 << 20)
    except InsufficientSharedMemory:
        print("RAISED")
    print("LEFT", sorted(os.listdir("/dev/shm")))
    """)
    assert "RAISED" in out, out
    assert "LEFT []" in out, out


# ---------------------------------------------------------------------------- pickling
EXCEPTIONS = [getattr(shmsession, n) for n in shmsession.__all__
              if isinstance(getattr(shmsession, n), type)
              and issubclass(getattr(shmsession, n), BaseException)]


def test_every_exported_exception_is_covered() -> None:
    assert len(EXCEPTIONS) == 23
    assert all(issubclass(cls, ShmSessionError) for cls in EXCEPTIONS)


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda c: c.__name__)
def test_errors_pickle_with_class_and_message(cls: type[BaseException]) -> None:
    message = f"{cls.__name__} happened: do this about it"
    exc = cls(message)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(exc, protocol=protocol))
        assert type(back) is cls
        assert str(back) == str(exc) == message
        assert back.args == (message,)


def test_raised_errors_pickle_too(name: str) -> None:
    raised: List[BaseException] = []
    with SessionStorage(name, size=SIZE) as s:
        not_bytes: object = "str"
        for bad in (lambda: s.read("nobody"), lambda: s.write("k", not_bytes),  # type: ignore[arg-type]
                    lambda: s.write("", b"v"), lambda: s.write("k", b"v", ttl=-1),
                    lambda: SessionStorage("a/b"), lambda: SessionStorage(name, size=4 << 20)):
            with pytest.raises(ShmSessionError) as info:
                bad()
            raised.append(info.value)
    path = _make(name + "-v")
    try:
        _pwrite(path, struct.pack("<I", 99), 8)
        with pytest.raises(LayoutVersionMismatch) as info2:
            SessionStorage(name + "-v")
        raised.append(info2.value)
    finally:
        remove_store(name + "-v")
    for exc in raised:
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc)
        assert str(back) == str(exc)
