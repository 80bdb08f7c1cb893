"""The ``shmsession`` command line: look into, watch, check, snapshot and remove stores.

Formatting only: every figure comes from :class:`~shmsession.SessionStorage` (``stats``,
``sessions``, ``check``, ``dump``, ``load``, ``clear``, ``unlink_name``), and a store is
opened with ``create=False``, so no command but ``load`` ever makes one. Store errors become
one line on stderr and an exit status, never a traceback.

``parser``: the arguments and :func:`main`; ``commands``: one function a command;
``format``: what they print; ``live``: the ``top`` view and the progress bar.
"""

from .commands import EXIT_INTERRUPTED, EXIT_NO_STORE, EXIT_OK, EXIT_PROBLEM, EXIT_USAGE
from .format import format_bytes, format_duration, prometheus_text
from .parser import main

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_NO_STORE",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "EXIT_USAGE",
    "format_bytes",
    "format_duration",
    "main",
    "prometheus_text",
]
