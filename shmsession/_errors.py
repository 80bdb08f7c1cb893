"""Every exception the package raises. Foreign errors (OSError, posix_ipc's) are translated
into these where they arise: in ``_segment`` and ``_lock``, the only modules that call the OS.

Each class inherits :class:`ShmSessionError` and, where one fits, the builtin a caller would
already catch (``SessionNotFound`` is a ``KeyError``, ``LockTimeout`` a ``TimeoutError``...).
Messages say what to do about the error. Every class takes a single message argument, so
instances pickle and cross process boundaries unchanged.
"""

from __future__ import annotations

__all__ = [
    "CorruptSegment",
    "CorruptSnapshot",
    "InsufficientSharedMemory",
    "InvalidName",
    "InvalidOption",
    "InvalidOwner",
    "InvalidSessionId",
    "InvalidTTL",
    "InvalidType",
    "LayoutVersionMismatch",
    "LockTimeout",
    "MissingExtra",
    "SegmentError",
    "SegmentMismatch",
    "SegmentPermissionError",
    "SegmentUnlinked",
    "SessionNotFound",
    "ShmSessionError",
    "StoreClosed",
    "StoreFull",
    "StoreNotFound",
    "ValueTooLarge",
    "VersionConflict",
]


class ShmSessionError(Exception):
    """Base class of every error raised by shmsession."""


class SessionNotFound(ShmSessionError, KeyError):
    """The session id is not in the store, or its session has expired."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and wrap it in quotes.
        return str(self.args[0]) if self.args else ""


class InvalidType(ShmSessionError, TypeError):
    """An argument has the wrong type (an id that is not ``str``, a value that is not bytes...)."""


class InvalidSessionId(ShmSessionError, ValueError):
    """A session id that is empty or too long."""


class InvalidOwner(ShmSessionError, ValueError):
    """An owner (``owner=``, ``sessions_of``, ``invalidate_owner``) that is empty or too long."""


class ValueTooLarge(ShmSessionError, ValueError):
    """A value longer than the store's ``max_value_size``."""


class InvalidTTL(ShmSessionError, ValueError):
    """A ttl that is not a positive number of seconds."""


class InvalidName(ShmSessionError, ValueError):
    """A store name that cannot name a shared-memory segment."""


class InvalidOption(ShmSessionError, ValueError):
    """A constructor option out of range (a size under the minimum, an unknown policy...)."""


class StoreFull(ShmSessionError):
    """No room for the value, and the store is set to raise rather than evict."""


class VersionConflict(ShmSessionError):
    """A compare-and-set write found another version than the one expected."""


class LockTimeout(ShmSessionError, TimeoutError):
    """The store's lock was not acquired within ``lock_timeout`` seconds."""


class MissingExtra(ShmSessionError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def missing_extra(extra: str, module: str, to: str = "use this adapter") -> MissingExtra:
    """The error raised when ``module`` of extra ``extra`` does not import (an adapter's
    framework, or gunicorn for the demo: ``to="run the demo"``)."""
    return MissingExtra(f"{module} is not installed: pip install 'shmsession[{extra}]' to {to}")


class StoreClosed(ShmSessionError, ValueError):
    """The handle was closed (like I/O on a closed file)."""


class SegmentError(ShmSessionError, OSError):
    """A problem with the shared-memory segment itself."""


class SegmentPermissionError(SegmentError, PermissionError):
    """The segment belongs to another user or is open to group or others."""


class LayoutVersionMismatch(SegmentError):
    """The segment was made by another version of shmsession's layout."""


class CorruptSegment(SegmentError):
    """The segment's header or structures fail their checks. ``check()`` also puts the list
    of problems found in ``problems`` (a tuple of str, pickled with the error)."""

    problems: "tuple[str, ...]" = ()


class CorruptSnapshot(CorruptSegment):
    """A snapshot file (``dump``/``load``) that is truncated, altered, or not a snapshot."""


class StoreNotFound(SegmentError, FileNotFoundError):
    """No store of that name exists (and the call was not allowed to create one)."""


class SegmentMismatch(SegmentError):
    """The segment exists with other sizes than the ones asked for."""


class SegmentUnlinked(SegmentError):
    """The segment was unlinked while this handle was attached to it."""


class InsufficientSharedMemory(SegmentError):
    """``/dev/shm`` has less free space than the segment needs."""
