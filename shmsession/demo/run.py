"""``python -m shmsession.demo``: make the store, start gunicorn, play the script, and clean
up in every case (see :mod:`shmsession.demo` for the steps and the exit statuses)."""

from __future__ import annotations

import argparse
import importlib
import os
import secrets
import signal
import subprocess
import sys
from typing import List, Optional, Sequence

from .. import InvalidName, MissingExtra, SessionStorage
from .._process import (
    ServerExited,
    Terminated,
    answering_workers,
    free_port,
    gunicorn_command,
    sigterm_interrupts,
    start_server,
    stop_server,
)
from .._errors import missing_extra
from .._segment import check_name
from .client import DemoError
from .script import run_script, say
from .wsgi import ENV_NAME, SESSION_TTL, STORE_SIZE

#: Seconds gunicorn may take until all its workers answer.
STARTUP_TIMEOUT = 30.0


def start_gunicorn(name: str, port: int, workers: int) -> "subprocess.Popen[bytes]":
    """Start gunicorn serving the demo's app on ``port`` with store ``name``; does not wait.
    Its messages go to stderr: stdout stays the demo's report alone."""
    # The workers must import this very package, even when it is not installed.
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
    return start_server(gunicorn_command("shmsession.demo:app", port, workers),
                        {ENV_NAME: name, "PYTHONPATH": path})


#: The demo's name in its usage line when run on its own; ``shmsession demo`` passes its own.
PROG = "python -m shmsession.demo"


def need_gunicorn() -> None:
    """:raises MissingExtra: gunicorn does not import (a plain ``pip install .``)."""
    try:
        importlib.import_module("gunicorn")  # only whether it is there
    except ImportError:
        raise missing_extra("demo", "gunicorn", "run the demo") from None


def _arguments(argv: Optional[Sequence[str]], prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Watch gunicorn workers share one shmsession store.",
    )
    parser.add_argument(
        "--name",
        help="segment name (default: demo-<pid>-<random hex>); must not be in use",
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    parser.add_argument(
        "--requests", type=int, default=32, help="scripted requests after login (default 32)"
    )
    parser.add_argument(
        "--clients", type=int, default=4, help="concurrent clients in the burst (default 4)"
    )
    parser.add_argument(
        "--burst-visits", type=int, default=8, help="visits per burst client (default 8)"
    )
    args = parser.parse_args(argv)
    args.name = args.name or f"demo-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        check_name(args.name)
    except InvalidName as exc:
        parser.error(f"--name: {exc}")
    for option in ("workers", "requests", "clients", "burst_visits"):
        if not 1 <= getattr(args, option) <= 1000:
            parser.error(f"--{option.replace('_', '-')} must be between 1 and 1000")
    return args


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """Run the demo; returns the exit status (see :mod:`shmsession.demo`)."""
    try:
        return run(argv, prog)
    except MissingExtra as exc:
        print(f"DEMO COULD NOT RUN: {exc}", file=sys.stderr, flush=True)
        return 2


def run(argv: Optional[Sequence[str]], prog: str) -> int:
    """:func:`main`, but a missing gunicorn raises :class:`MissingExtra` (checked after the
    arguments, so ``--help`` works without it, and before a store is made)."""
    args = _arguments(argv, prog)
    need_gunicorn()
    name: str = args.name
    store: Optional[SessionStorage] = None
    server: Optional["subprocess.Popen[bytes]"] = None
    status = 2
    with sigterm_interrupts():
        try:
            # The demo creates the segment before any worker starts, so the workers only
            # attach to it, and it owns the segment's removal.
            store = SessionStorage(name, size=STORE_SIZE, ttl=SESSION_TTL)
            port = free_port()
            say(f"shmsession demo: store {name!r} ({STORE_SIZE // 2**20} MiB of shared memory)")
            server = start_gunicorn(name, port, args.workers)
            say(
                f"started gunicorn (master pid {server.pid}) on http://127.0.0.1:{port} "
                f"with {args.workers} sync workers"
            )
            ready = _workers(server, port, args.workers)
            say(f"workers answering: {len(ready)} ({', '.join(map(str, ready))})")
            say()
            failed = run_script(port, store, args.requests, args.clients, args.burst_visits)
            say()
            if failed:
                say(f"DEMO FAILED: {len(failed)} check(s) failed:")
                for text in failed:
                    say(f"  - {text}")
                status = 1
            else:
                say("All checks passed: every worker saw the same session.")
                status = 0
        except KeyboardInterrupt as exc:
            # Leading newline: the signal may have cut a table row short.
            terminated = isinstance(exc, Terminated)
            say(f"\n{'terminated' if terminated else 'interrupted'}; cleaning up")
            status = 128 + (signal.SIGTERM if terminated else signal.SIGINT)
        except (DemoError, OSError) as exc:
            print(f"DEMO COULD NOT RUN: {exc}", file=sys.stderr, flush=True)
            status = 2
        finally:
            # A second Ctrl-C must not cut the clean-up short; every wait in it is bounded.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            status = _clean_up(name, store, server, status)
    return status


def _workers(server: "subprocess.Popen[bytes]", port: int, workers: int) -> List[int]:
    """The pids of the workers answering, once all ``workers`` do or STARTUP_TIMEOUT has
    passed (fewer is not an error here: the checks judge it). Raises ``DemoError`` when
    gunicorn exits, or no worker answers in time."""
    try:
        ready = answering_workers(server, port, "/", workers, STARTUP_TIMEOUT)
    except ServerExited:
        raise DemoError(f"gunicorn exited with status {server.returncode} before its workers "
                        "answered (its messages are above)") from None
    if not ready:
        raise DemoError(f"gunicorn did not answer on port {port} within {STARTUP_TIMEOUT} s")
    return ready


def _clean_up(
    name: str,
    store: Optional[SessionStorage],
    server: Optional["subprocess.Popen[bytes]"],
    status: int,
) -> int:
    """Stop gunicorn, then remove the segment; returns ``status``, or 2 if clean-up failed."""
    if server is not None:
        try:
            if not stop_server(server):
                print("gunicorn, or a process of its group, outlived SIGTERM: killed",
                      file=sys.stderr)
            say(f"stopped gunicorn (exit status {server.returncode})")
        except Exception as exc:  # keep going: the segment must be removed all the same
            print(f"could not stop gunicorn (pid {server.pid}): {exc!r}", file=sys.stderr)
            status = status or 2
    if store is not None:
        # After the workers are gone, so none of them re-creates the segment.
        try:
            store.unlink()
            say(f"removed segment {name!r}")
        except Exception as exc:
            print(f"could not remove segment {name!r}: {exc!r}", file=sys.stderr)
            status = status or 2
        finally:
            try:
                store.close()
            except Exception:  # closing after unlink may be refused; nothing is left to free
                pass
    return status
