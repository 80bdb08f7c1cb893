"""shmsession: a session store shared by every worker process on one host, in POSIX shared
memory. ``SessionStorage(name)`` creates or attaches; see its docstring for the API."""

from . import _errors
from ._errors import *  # noqa: F403 (every public error: _errors.__all__ names them)
from ._types import AsyncStore, SessionInfo, Stats, Store
from ._version import __version__
from .store import SessionStorage

__all__ = ["AsyncStore", "SessionInfo", "SessionStorage", "Stats", "Store", "__version__"]
__all__ += _errors.__all__
__all__.sort()  # as sorted as a hand-kept list would be (test_public_surface_is_pinned)

# The errors are public here: they print, and are documented, as ``shmsession.StoreFull``
# rather than under the private module that defines them (pickling finds them here too).
for _name in _errors.__all__:
    getattr(_errors, _name).__module__ = __name__
del _name
