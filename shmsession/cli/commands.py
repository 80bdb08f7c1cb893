"""The commands: each opens the store (never creating one, but for ``load``), asks it, and
hands the answer to :mod:`.format` or :mod:`.live`. A command returns its exit status, or
raises :class:`Exit` or the store's own errors, which :func:`.parser.main` reports."""

from __future__ import annotations

import argparse
import math
import os
import pwd
import stat
import sys
from typing import Any, Callable, Dict, List, Optional

from .. import (
    CorruptSegment,
    InvalidOption,
    LayoutVersionMismatch,
    SegmentError,
    SegmentPermissionError,
    SessionInfo,
    SessionStorage,
    ShmSessionError,
    StoreFull,
)
from .._segment import PREFIX, SHM_DIR, segment_path
from . import live
from .format import (derived, format_bytes, json_text, prometheus_text, session_lines,
                     stats_lines, store_lines)


EXIT_OK = 0
EXIT_PROBLEM = 1  # the check or operation found a problem (or a store error, or "no")
EXIT_USAGE = 2  # bad arguments (argparse's own code), or a confirmation that cannot be asked
EXIT_NO_STORE = 3  # no store of that name exists
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), except in `top`, where Ctrl-C is how to quit


class Exit(Exception):
    """Ends the command with ``code`` and (unless empty) ``message`` on stderr."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------------------------
# Opening a store, asking
# --------------------------------------------------------------------------------------------


def _open(args: argparse.Namespace) -> SessionStorage:
    """Attach to store ``args.name``; never creates one."""
    name: str = args.name
    try:
        return SessionStorage(name, create=False, lock_timeout=args.lock_timeout)
    except SegmentError as exc:
        if isinstance(exc, (SegmentPermissionError, CorruptSegment, LayoutVersionMismatch)):
            raise
        if not _exists(name):
            raise Exit(EXIT_NO_STORE, _no_store(name)) from None
        raise


def _exists(name: str) -> bool:
    try:
        return SessionStorage.exists(name)
    except ShmSessionError:  # there is something, which we may not open
        return True


def _no_store(name: str) -> str:
    return (f"no store named {name!r} ({segment_path(name)} does not exist); check the name, "
            "and that the application that creates it has started")


def _confirm(question: str, yes: bool, action: str) -> None:
    """Ask ``question`` on the terminal unless ``yes``; raise :class:`Exit` unless the
    answer is yes. Without a terminal to ask on, refuse: only ``--yes`` may go ahead."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise Exit(EXIT_USAGE, f"refusing to {action} without --yes: stdin is not a terminal "
                                "to ask for confirmation")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if answer.strip().lower() not in ("y", "yes"):
        if not answer.endswith("\n"):
            sys.stderr.write("\n")
        raise Exit(EXIT_PROBLEM, "not confirmed; nothing was changed")


# --------------------------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------------------------


def cmd_stats(args: argparse.Namespace) -> int:
    with _open(args) as store:
        s = store.stats()
    if args.json:
        print(json_text({**s.as_dict(), **derived(s)}))
    elif args.prometheus:
        sys.stdout.write(prometheus_text(s))
    else:
        print("\n".join(stats_lines(s)))
    return EXIT_OK


def cmd_top(args: argparse.Namespace) -> int:
    with _open(args) as store:
        return live.top(store, args.interval, args.iterations, args.json)


def _store_row(name: str, lock_timeout: float) -> Dict[str, Any]:
    """One store of the host for ``ls`` without a name: the file's facts, and the store's
    when it opens (else ``error`` says why and its figures are None)."""
    st = os.stat(segment_path(name))
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:  # a uid with no name
        owner = str(st.st_uid)
    row: Dict[str, Any] = dict(name=name, size=st.st_size, owner=owner,
                               mode=stat.filemode(st.st_mode), entries=None, max_entries=None,
                               heap_fill=None, error=None)
    try:
        with SessionStorage(name, create=False, lock_timeout=lock_timeout) as store:
            s = store.stats()
    except ShmSessionError as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    else:
        row.update(entries=s.entries, max_entries=s.max_entries,
                   heap_fill=s.bytes_used / s.heap_size if s.heap_size else 0.0)
    return row


def _ls_stores(args: argparse.Namespace) -> int:
    if args.sort is not None or args.reverse or args.limit is not None:
        raise Exit(EXIT_USAGE, "--sort, --reverse and --limit order one store's sessions: "
                               "give its NAME")
    rows = []
    for entry in sorted(os.listdir(SHM_DIR)):
        if entry.startswith(PREFIX):
            try:
                rows.append(_store_row(entry[len(PREFIX):], args.lock_timeout))
            except FileNotFoundError:  # unlinked meanwhile
                continue
    if args.json:
        print(json_text(rows))
    elif not rows:
        print(f"no shmsession stores in {SHM_DIR}")
    else:
        print("\n".join(store_lines(rows)))
        print(f"{len(rows):,} store(s) in {SHM_DIR}")
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    if args.name is None:
        if args.owner is not None:
            raise Exit(EXIT_USAGE, "--owner lists one owner's sessions in one store: give "
                                   "its NAME")
        return _ls_stores(args)
    with _open(args) as store:
        rows = store.sessions() if args.owner is None else store.sessions_of(args.owner)
    if args.owner is None or args.sort is not None:
        key: Callable[[SessionInfo], Any] = {
            "age": lambda r: r.age,  # oldest first
            "size": lambda r: r.size,  # largest first
            "ttl": lambda r: -math.inf if r.ttl is None else -r.ttl,  # soonest to expire first
        }[args.sort or "age"]
        rows.sort(key=key, reverse=not args.reverse)
    elif args.reverse:  # an owner's sessions come in the order they became the owner's
        rows.reverse()
    shown = rows if args.limit is None else rows[: args.limit]
    if args.json:
        print(json_text([
            {"digest": r.digest, "size": r.size, "age": r.age, "ttl": r.ttl,
             "version": r.version}
            for r in shown
        ]))
        return EXIT_OK
    of = "" if args.owner is None else f" of owner {args.owner!r}"
    if not rows:
        print(f"no live sessions{of} in store {args.name!r}")
        return EXIT_OK
    print("\n".join(session_lines(shown)))
    total = sum(r.size for r in rows)
    more = f"; showing {len(shown):,} (--limit)" if len(shown) < len(rows) else ""
    print(f"{len(rows):,} live session(s){of}, {format_bytes(total)} of values{more}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    problems: List[str] = []
    entries: Optional[int] = None
    try:
        with _open(args) as store:
            store.check()
            entries = store.stats().entries
    except CorruptSegment as exc:
        # check() lists every problem in .problems; a header too damaged to open has none,
        # and its message is the one problem.
        problems = list(exc.problems) or [str(exc)]
    if args.json:
        print(json_text({"name": args.name, "sound": not problems, "problems": problems,
                         "problem_count": len(problems)}))
    elif not problems:
        print(f"store {args.name!r} is sound ({entries:,} entries checked)")
    else:
        print(f"store {args.name!r} is DAMAGED: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        print(f"Its sessions cannot be trusted: remove it (shmsession unlink {args.name}) and "
              "let the application create it again.")
    return EXIT_PROBLEM if problems else EXIT_OK


def cmd_clear(args: argparse.Namespace) -> int:
    with _open(args) as store:
        n = len(store)
        _confirm(f"Delete all {n:,} session(s) of store {args.name!r}? Every user of it is "
                 "logged out.", args.yes, "clear the store")
        store.clear()
    print(f"cleared store {args.name!r}: {n:,} session(s) deleted")
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    owner: str = args.owner
    keep: Optional[str] = args.keep_digest
    with _open(args) as store:
        mine = [r.digest for r in store.sessions_of(owner)]
        if keep is not None and keep not in mine:
            raise Exit(EXIT_PROBLEM, f"owner {owner!r} has no live session of digest {keep} "
                                     f"in store {args.name!r} (see `shmsession ls "
                                     f"{args.name} --owner ID`); nothing was deleted")
        doomed = [d for d in mine if d != keep]
        but = "" if keep is None else f" (all but {keep})"
        _confirm(f"Delete {len(doomed):,} session(s) of owner {owner!r}{but} in store "
                 f"{args.name!r}? They are logged out.", args.yes, "revoke the sessions")
        # One step: sessions the owner gained since the question go too.
        n = store.invalidate_owner(owner, keep_digest=keep)
    kept = "" if keep is None else f"; kept {keep}"
    print(f"revoked {n:,} session(s) of owner {owner!r} in store {args.name!r}{kept}")
    return EXIT_OK


def cmd_unlink(args: argparse.Namespace) -> int:
    name: str = args.name
    if not _exists(name):
        raise Exit(EXIT_NO_STORE, _no_store(name))
    try:
        with _open(args) as store:
            what = f" ({len(store):,} session(s), {format_bytes(store.stats().size)})"
    except ShmSessionError:  # damaged or foreign: unlinking is the remedy, so go on
        what = " (it cannot be opened)"
    _confirm(f"Remove store {name!r}{what}? Its sessions are lost, and processes attached to "
             "it get SegmentUnlinked on their next call.", args.yes, "unlink the store")
    if not SessionStorage.unlink_name(name):
        raise Exit(EXIT_NO_STORE, _no_store(name))
    print(f"removed store {name!r}")
    return EXIT_OK


def cmd_dump(args: argparse.Namespace) -> int:
    with _open(args) as store:
        n = store.dump(args.file)
    size = os.stat(args.file).st_size
    print(f"dumped {n:,} session(s) of store {args.name!r} to {args.file} "
          f"({format_bytes(size)})")
    return EXIT_OK


def cmd_load(args: argparse.Namespace) -> int:
    options: Dict[str, Any] = {
        key: getattr(args, key)
        for key in ("size", "max_entries", "max_value_size")
        if getattr(args, key) is not None
    }
    # A store too small for the snapshot would evict (log out) some of its users as it
    # loads; unless asked to, refuse instead (the store then removes what it began).
    options["when_full"] = "evict" if args.evict else "raise"
    bar = live.ProgressBar("loading", sys.stderr)
    try:
        with SessionStorage.load(args.name, args.file, progress=bar,
                                 lock_timeout=args.lock_timeout, **options) as store:
            loaded = len(store)
            s = store.stats()
    except StoreFull:
        raise Exit(EXIT_PROBLEM, f"the sessions of {args.file} do not fit in a store of these "
                                  "sizes: give a larger --size or --max-entries (or --evict "
                                  "to drop the least recently used); nothing was created"
                    ) from None
    except InvalidOption as exc:
        raise Exit(EXIT_USAGE, str(exc)) from None  # options the store refused
    finally:
        bar.finish()
    notes = []
    expired = bar.total - loaded - s.evictions
    if expired > 0:
        notes.append(f"{expired:,} expired while the store was down")
    if s.evictions:
        notes.append(f"{s.evictions:,} evicted for lack of room (--evict)")
    print(f"loaded {loaded:,} session(s) from {args.file} into new store {args.name!r} "
          f"({format_bytes(s.size)})" + "".join(f"; {note}" for note in notes))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, extra: List[str]) -> int:
    from ..demo import run  # starts gunicorn, imports http.client and friends: only when asked

    return run.run(extra, "shmsession demo")  # no gunicorn: MissingExtra, status 1
