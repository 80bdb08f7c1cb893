"""gunicorn server hooks: make the store in the master, attach in each worker, and optionally
remove it when gunicorn stops for good.

In ``gunicorn.conf.py``::

    from shmsession.contrib.gunicorn import ShmSessionHooks

    shm = ShmSessionHooks("myapp", size=64 * 2**20, unlink_on_exit=True)
    on_starting, post_fork, on_exit = shm.on_starting, shm.post_fork, shm.on_exit

and in the application, ``shm.store()`` (or ``SessionStorage("myapp")``) is the worker's handle.

* ``on_starting`` creates the segment in the master before any worker exists, so a store
  that cannot be made (``/dev/shm`` too small, a segment of another user) stops gunicorn at
  start-up with the store's error instead of failing in every worker.
* ``post_fork`` attaches in each worker (with ``create=False``: a worker never makes a second
  segment behind the master's back).
* ``on_exit`` unlinks the segment only when gunicorn really goes away: not in an old master
  that has handed over to a new one (``USR2`` upgrade: its ``reexec_pid`` is set), nor in a
  new master whose old one still runs (its ``master_pid`` is set) -- the rule gunicorn itself
  applies before unlinking its unix sockets. A ``HUP`` reload re-forks the workers and keeps
  the master, so it never reaches ``on_exit``. The sessions go with the segment; leave
  ``unlink_on_exit`` off to keep them across restarts of gunicorn (not of the host).
* ``snapshot=PATH`` keeps sessions across a restart of the host too: the last master dumps
  the store to PATH in ``on_exit``, and ``on_starting`` loads it when no segment exists
  (each session with the time it had left, less the downtime: expired ones stay dead). The
  file is removed once loaded, or when a surviving segment makes it stale, so a session
  that was logged out later can never come back from an old snapshot.

The hooks hold no storage logic; they decide when the store's own create/attach/unlink run.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from ..store import SessionStorage

__all__ = ["ShmSessionHooks"]

# Options that fix the segment's geometry: given to the creator in the master only, so a
# worker attaches to whatever the master made.
_GEOMETRY = ("size", "max_entries", "max_value_size")


class ShmSessionHooks:
    """gunicorn hooks for the store ``name``; ``options`` go to :class:`SessionStorage`."""

    def __init__(
        self,
        name: str,
        *,
        unlink_on_exit: bool = False,
        snapshot: Optional[str] = None,
        **options: Any,
    ) -> None:
        self.name = name
        self.unlink_on_exit = unlink_on_exit
        self.snapshot = snapshot
        self.options = options
        self._store: Optional[SessionStorage] = None

    def on_starting(self, server: Any) -> None:
        """Master, before workers: create the segment (from the snapshot, if there is one),
        or attach to a surviving one."""
        snap = self.snapshot
        if snap is not None and os.path.exists(snap):
            if not SessionStorage.exists(self.name):
                with SessionStorage.load(self.name, snap, **self.options) as store:
                    server.log.info(
                        "shmsession: loaded %d sessions into %r from %s", len(store), self.name, snap
                    )
            os.unlink(snap)  # loaded, or stale beside a surviving segment: never load it twice
        with SessionStorage(self.name, **self.options):
            pass  # the segment outlives the handle; the master keeps no handle across forks

    def post_fork(self, server: Any, worker: Any) -> None:
        """Worker, just forked: attach to the master's segment."""
        attach = {k: v for k, v in self.options.items() if k not in _GEOMETRY}
        self._store = SessionStorage(self.name, create=False, **attach)

    def on_exit(self, server: Any) -> None:
        """Master, shutting down: dump the store to the snapshot and unlink the segment, as
        configured, unless another master takes over."""
        if not (self.unlink_on_exit or self.snapshot):
            return
        if getattr(server, "reexec_pid", 0) or getattr(server, "master_pid", 0):
            server.log.info("shmsession: keeping store %r for the other master", self.name)
            return
        if self.snapshot is not None:
            with SessionStorage(self.name, create=False) as store:
                count = store.dump(self.snapshot)
            server.log.info("shmsession: saved %d sessions to %s", count, self.snapshot)
        if self.unlink_on_exit:
            SessionStorage.unlink_name(self.name)
            server.log.info("shmsession: removed store %r", self.name)

    def store(self) -> SessionStorage:
        """This worker's handle (opened by ``post_fork``; opened here if the hook did not run)."""
        if self._store is None:
            attach = {k: v for k, v in self.options.items() if k not in _GEOMETRY}
            self._store = SessionStorage(self.name, **attach)
        return self._store
