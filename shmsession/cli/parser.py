"""The command line's arguments (argparse: every command, its options and its help), and
:func:`main`, which runs a command and turns whatever ends it into one line on stderr and an
exit status (see :data:`EPILOG`), never a traceback."""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
from typing import Any, Callable, Optional, Sequence

from .. import InvalidName, InvalidOwner, ShmSessionError
from .._rules import check_digest
from .commands import (
    EXIT_INTERRUPTED,
    EXIT_PROBLEM,
    EXIT_USAGE,
    Exit,
    cmd_check,
    cmd_clear,
    cmd_demo,
    cmd_dump,
    cmd_load,
    cmd_ls,
    cmd_revoke,
    cmd_stats,
    cmd_top,
    cmd_unlink,
)


PROG = "shmsession"

EPILOG = """\
exit status:
  0    success (check: the store is sound)
  1    a problem: check found damage, a snapshot is truncated or altered, the store
       refused (permission, layout version, lock timeout...), or you answered "no"
  2    usage error, or clear/unlink/revoke without --yes when stdin is not a terminal
  3    no store of that name exists
  130  interrupted (Ctrl-C); `top` exits 0 on Ctrl-C or q

A store NAME is the one given to SessionStorage(NAME); it lives in /dev/shm/shmsession.NAME.
Only `load` creates a store; every other command attaches to an existing one.
"""

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """``1048576``, ``512K``, ``64M``, ``64MiB``, ``1G`` -> bytes (powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(?:i?[bB])?\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: give bytes, or a number with K, M or G (e.g. 64M)"
        )
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return n


def _positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    if not 0 < x < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return x


def _digest(text: str) -> str:
    try:
        return check_digest(text).hex()
    except ShmSessionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from .._build import BUILD

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Look into, watch, check, snapshot and remove shmsession stores "
                    "(session stores in POSIX shared memory).",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__} ({BUILD})",
        help="show the version and the hot path this process runs: compiled (the C "
             "extension) or pure (Python; without a compiler at install, or SHMSESSION_PURE=1)")
    timeout = argparse.ArgumentParser(add_help=False)
    timeout.add_argument(
        "--lock-timeout", type=_positive_float, default=10.0, metavar="SECONDS",
        help="give up when the store's lock is not free within SECONDS (default 10): a "
             "worker stopped inside the store must not hang this command",
    )
    common = argparse.ArgumentParser(add_help=False, parents=[timeout])
    common.add_argument("name", metavar="NAME", help="the store's name")
    # ls alone lists the stores on the host, so its NAME may be left out.
    optional_name = argparse.ArgumentParser(add_help=False, parents=[timeout])
    optional_name.add_argument("name", metavar="NAME", nargs="?",
                               help="the store's name; without it, list the host's stores")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str, func: Callable[..., int], description: str = "",
                parents: Sequence[argparse.ArgumentParser] = (common,),
                **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=description or summary,
                           epilog=EPILOG, formatter_class=formatter, parents=list(parents),
                           **kw)
        p.set_defaults(func=func)
        return p

    p = command(
        "stats", "the store's figures: entries, fill, hit rate, evictions, lock waits",
        cmd_stats,
        "Show entries, fill of the table (entries / max_entries) and of the heap (bytes used /\n"
        "heap size), the largest free block, hit rate, evictions, expirations, lock waits and\n"
        "lock wait time. Counters count since the store was created; each process adds its\n"
        "hits, misses and writes every 64 operations, so the last few may not show yet.",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object, for machines")
    fmt.add_argument(
        "--prometheus", action="store_true",
        help="the Prometheus text format (for the node exporter's textfile collector)",
    )

    p = command(
        "top", "a live view of the figures and their rates per second", cmd_top,
        "Redraw the store's figures and their rates per second (operations = hits + misses +\n"
        "writes) every --interval, until q or Ctrl-C. When stdout is not a terminal, print\n"
        "one line per interval instead (--json: one JSON object per line).",
    )
    p.add_argument("--interval", type=_positive_float, default=1.0, metavar="SECONDS",
                   help="seconds between two samples (default 1)")
    p.add_argument("--iterations", type=_positive_int, default=None, metavar="N",
                   help="stop after N samples (default: run until interrupted)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per interval, with the rates (never a live view)")

    p = command(
        "ls", "one line per live session (without NAME: one line per store on the host)",
        cmd_ls,
        "List the live sessions: the keyed digest each is filed under (the store never holds\n"
        "raw session ids), the size of its value, its age, its time left and its version.\n"
        "Without NAME, list the stores on this host, like ipcs -m: name, size, heap fill,\n"
        "entries, owner and mode (a store that cannot be opened shows ? and why, in --json).\n"
        "With --owner ID, list only the sessions of that owner (written with owner=ID), in\n"
        "the order they became the owner's unless --sort says otherwise.",
        parents=(optional_name,),
    )
    p.add_argument("--owner", metavar="ID",
                   help="only the sessions of this owner (a user id), as sessions_of(ID)")
    p.add_argument("--sort", choices=("age", "size", "ttl"), default=None,
                   help="age: oldest first (default); size: largest first; ttl: soonest to "
                        "expire first")
    p.add_argument("-r", "--reverse", action="store_true", help="reverse the order")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="show the first N only")
    p.add_argument("--json", action="store_true", help="a JSON list, for machines")

    p = command(
        "check", "verify every structural invariant of the store", cmd_check,
        "Verify the store's structures. Exit 0 when it is sound; 1, with one problem per\n"
        "line, when it is damaged.",
    )
    p.add_argument("--json", action="store_true", help="a JSON object, for machines")

    p = command("clear", "delete every session of the store (asks first)", cmd_clear,
                "Delete every session; the store stays. Asks on the terminal unless --yes.")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")

    p = command(
        "revoke", "delete every session of one owner: log a user out everywhere (asks first)",
        cmd_revoke,
        "Delete every live session of owner ID (those written with owner=ID) in one step\n"
        "against concurrent writes, as invalidate_owner(ID) does; with --keep-digest D, all\n"
        "but the owner's session of digest D (as `ls NAME --owner ID` shows it). A D that is\n"
        "not one of the owner's live sessions deletes nothing (exit 1). Asks on the terminal\n"
        "unless --yes.",
    )
    p.add_argument("--owner", metavar="ID", required=True,
                   help="the owner (a user id) whose sessions to delete")
    p.add_argument("--keep-digest", type=_digest, metavar="D",
                   help="keep the owner's session of this digest (32 hex digits)")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")

    p = command(
        "unlink", "remove the store from the system (asks first)", cmd_unlink,
        "Remove the store's segment (also a damaged one). Processes attached to it get\n"
        "SegmentUnlinked on their next call. Asks on the terminal unless --yes.",
    )
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")

    p = command(
        "dump", "write every live session to a snapshot file", cmd_dump,
        "Write every live session, with its time left, to FILE: a versioned, checksummed\n"
        "snapshot, mode 0600 (it holds every session), replaced atomically.",
    )
    p.add_argument("file", metavar="FILE", help="the snapshot to write")

    p = command(
        "load", "create a store from a snapshot file", cmd_load,
        "Create store NAME from the snapshot FILE (the store must not exist). Each session\n"
        "gets the time it had left less the time since the dump. The new store has the\n"
        "dumped store's size, max entries and max value size, unless told otherwise: a\n"
        "limit the dumped store had at its size's default follows a new --size. A truncated\n"
        "or altered file is refused before anything is created, and so is a snapshot that\n"
        "does not fit in the sizes given (unless --evict).",
    )
    p.add_argument("file", metavar="FILE", help="the snapshot to read")
    p.add_argument("--size", type=parse_size, metavar="BYTES",
                   help="shared memory for the new store, e.g. 64M (default: the dumped "
                        "store's; 32M for an older snapshot that does not record it)")
    p.add_argument("--max-entries", type=_positive_int, metavar="N",
                   help="most sessions the new store holds (default: the dumped store's)")
    p.add_argument("--max-value-size", type=parse_size, metavar="BYTES",
                   help="largest value, e.g. 256K (default: the dumped store's)")
    p.add_argument("--evict", action="store_true",
                   help="when the sessions do not fit, evict the least recently used instead "
                        "of refusing to load")

    command(
        "demo", "run the demo: 4 gunicorn workers share one store", cmd_demo,
        "Run the demo (python -m shmsession.demo); `shmsession demo --help` lists its options.",
        parents=(), add_help=False,
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``shmsession`` command; returns its exit status (see :data:`EPILOG`)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command != "demo" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        status: int = cmd_demo(args, extra) if args.command == "demo" else args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is handled below, not at exit
        return status
    except Exit as exc:
        if exc.message:
            print(f"{PROG} {args.command}: {exc.message}", file=sys.stderr)
        return exc.code
    except (InvalidName, InvalidOwner) as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ShmSessionError as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except BrokenPipeError:
        # The reader went away (`shmsession ls NAME | head`): say nothing more, as a
        # command killed by SIGPIPE would. Python would complain when flushing at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as exc:  # the snapshot file: not found, not writable...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{PROG} {args.command}: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        print(f"\n{PROG} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
