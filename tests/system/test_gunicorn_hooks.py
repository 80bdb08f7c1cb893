"""shmsession.contrib.gunicorn with a real gunicorn: created by the master, kept across a
USR2 upgrade and a HUP reload, removed when the last master stops (unlink_on_exit=True)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, Optional

import pytest

from shmsession import SessionStorage
from shmsession import demo
from shmsession._process import start_server, stop_server
from shmsession._segment import segment_path

pytestmark = pytest.mark.timeout(150)


def _wait(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _answers(port: int) -> bool:
    try:
        demo.request(port, "GET", "/visit")
        return True
    except OSError:
        return False


def _read_pid(path: Path) -> Optional[int]:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None


def test_created_by_the_master_kept_across_usr2_and_hup_removed_at_the_end(
    name: str, tmp_path: Path
) -> None:
    port = demo.free_port()
    pidfile = tmp_path / "gunicorn.pid"
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(textwrap.dedent(f"""
        from shmsession.contrib.gunicorn import ShmSessionHooks
        shm = ShmSessionHooks({name!r}, size=demo_size, unlink_on_exit=True)
        on_starting, post_fork, on_exit = shm.on_starting, shm.post_fork, shm.on_exit
        bind = "127.0.0.1:{port}"
        workers = 2
        pidfile = {str(pidfile)!r}
        loglevel = "warning"
    """).replace("demo_size", str(demo.STORE_SIZE)))
    env = dict(os.environ, **{demo.ENV_NAME: name})
    src = str(Path(demo.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    # The console script, not `python -m gunicorn`: a USR2 re-exec of the latter runs
    # gunicorn/__main__.py as a script, whose folder then shadows the standard `http`.
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    with open(tmp_path / "gunicorn.log", "wb") as log:
        old = start_server([gunicorn, "-c", str(conf), "shmsession.demo:app"], env,
                           cwd=str(tmp_path), output=log)
    try:
        _wait("gunicorn to answer", lambda: _answers(port))
        # The master made the segment before any request reached a worker.
        assert os.path.exists(segment_path(name))
        login = demo.request(port, "POST", "/login?user=alice")
        cookie = "sid=" + login.set_cookies[0].split(";")[0].split("=", 1)[1]
        assert demo.request(port, "GET", "/visit", cookie).status == 200

        # USR2: a new master starts beside the old one; then the old one is stopped.
        os.kill(old.pid, signal.SIGUSR2)
        pidfile2 = Path(str(pidfile) + ".2")
        _wait("the new master", lambda: _read_pid(pidfile2) not in (None, old.pid))
        new_pid = _read_pid(pidfile2)
        assert new_pid is not None
        old.send_signal(signal.SIGTERM)
        assert old.wait(timeout=30) == 0
        assert os.path.exists(segment_path(name)), "the old master removed the new one's store"
        _wait("the new master's workers", lambda: _answers(port))
        answer = demo.request(port, "GET", "/visit", cookie)
        assert answer.status == 200 and answer.session["visits"] == 2, "the session was lost"

        # HUP: workers re-forked, same master, same store.
        os.kill(new_pid, signal.SIGHUP)
        time.sleep(1.0)
        _wait("the reloaded workers", lambda: _answers(port))
        assert demo.request(port, "GET", "/visit", cookie).session["visits"] == 3

        # The last master stops: the store goes with it.
        os.kill(new_pid, signal.SIGTERM)
        _wait("the new master to exit", lambda: not _alive(new_pid))
        assert not os.path.exists(segment_path(name))
        assert not SessionStorage.exists(name)
    finally:
        stop_server(old)  # the new master, forked by the old one, is in the old one's group
        print((tmp_path / "gunicorn.log").read_text(errors="replace")[-3000:])  # on failure


def _start(tmp_path: Path, name: str, port: int, hooks_args: str) -> "subprocess.Popen[bytes]":
    conf = tmp_path / "keep.conf.py"
    conf.write_text(textwrap.dedent(f"""
        from shmsession.contrib.gunicorn import ShmSessionHooks
        shm = ShmSessionHooks({name!r}, {hooks_args})
        on_starting, post_fork, on_exit = shm.on_starting, shm.post_fork, shm.on_exit
        bind = "127.0.0.1:{port}"
        workers = 2
        loglevel = "warning"
    """))
    with open(tmp_path / "keep.log", "wb") as log:
        return start_server(
            [str(Path(sys.executable).with_name("gunicorn")), "-c", str(conf),
             "shmsession.demo:app"],
            {demo.ENV_NAME: name}, cwd=str(tmp_path), output=log,
        )


def test_without_unlink_on_exit_the_sessions_outlive_gunicorn(name: str, tmp_path: Path) -> None:
    port = demo.free_port()
    server = _start(tmp_path, name, port, f"size={demo.STORE_SIZE}")
    try:
        _wait("gunicorn to answer", lambda: _answers(port))
        login = demo.request(port, "POST", "/login?user=bob")
        assert login.status == 200
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        with SessionStorage(name) as store:
            assert len(store) == 1  # bob's session is still there for the next gunicorn
    finally:
        stop_server(server)


def test_a_store_that_cannot_be_made_stops_gunicorn_at_start(name: str, tmp_path: Path) -> None:
    port = demo.free_port()
    server = _start(tmp_path, name, port, "size=1000")  # under the 1 MiB minimum
    try:
        assert server.wait(timeout=30) != 0
        log = (tmp_path / "keep.log").read_text(errors="replace")
        assert "size must be at least" in log
        assert not SessionStorage.exists(name)
    finally:
        stop_server(server)


def test_a_snapshot_keeps_sessions_across_a_full_restart(name: str, tmp_path: Path) -> None:
    port = demo.free_port()
    snap = tmp_path / "sessions.snap"
    args = f"size={demo.STORE_SIZE}, unlink_on_exit=True, snapshot={str(snap)!r}"
    server = _start(tmp_path, name, port, args)
    try:
        _wait("gunicorn to answer", lambda: _answers(port))
        login = demo.request(port, "POST", "/login?user=carol")
        cookie = "sid=" + login.set_cookies[0].split(";")[0].split("=", 1)[1]
        assert demo.request(port, "GET", "/visit", cookie).session["visits"] == 1
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        # As after a reboot: no segment, only the snapshot.
        assert not SessionStorage.exists(name) and snap.exists()
        assert snap.stat().st_mode & 0o777 == 0o600

        server = _start(tmp_path, name, port, args)
        _wait("gunicorn to answer again", lambda: _answers(port))
        assert not snap.exists(), "a loaded snapshot must not be loadable twice"
        answer = demo.request(port, "GET", "/visit", cookie)
        assert answer.status == 200 and answer.session["user"] == "carol"
        assert answer.session["visits"] == 2, "the session did not survive the restart"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        stop_server(server)
