"""shmsession: a session store shared by every worker process on one host, in POSIX shared
memory. ``SessionStorage(name)`` creates or attaches; see its docstring for the API."""

from ._errors import (
    CorruptSegment,
    CorruptSnapshot,
    InsufficientSharedMemory,
    InvalidName,
    InvalidOption,
    InvalidSessionId,
    InvalidTTL,
    InvalidType,
    LayoutVersionMismatch,
    LockTimeout,
    MissingExtra,
    SegmentError,
    SegmentMismatch,
    SegmentPermissionError,
    SegmentUnlinked,
    SessionNotFound,
    ShmSessionError,
    StoreClosed,
    StoreFull,
    StoreNotFound,
    ValueTooLarge,
    VersionConflict,
)
from ._types import AsyncStore, SessionInfo, Stats, Store
from .store import SessionStorage

__version__ = "0.1.0"

__all__ = [
    "AsyncStore",
    "CorruptSegment",
    "CorruptSnapshot",
    "InsufficientSharedMemory",
    "InvalidName",
    "InvalidOption",
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
    "SessionInfo",
    "SessionNotFound",
    "SessionStorage",
    "ShmSessionError",
    "Stats",
    "Store",
    "StoreClosed",
    "StoreFull",
    "StoreNotFound",
    "ValueTooLarge",
    "VersionConflict",
    "__version__",
]
