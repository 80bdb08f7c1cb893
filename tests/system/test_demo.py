"""The demo (``python -m shmsession.demo``) end to end: a real gunicorn, real workers.

Always runs, in CI too: no skip, no opt-in marker. It needs Linux (``/dev/shm``, ``/proc``),
which the store needs anyway, and takes a few seconds.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from shmsession import SessionStorage, demo
from shmsession._process import stop_server
from shmsession.demo import wsgi

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT = 90.0
#: conftest's prefix of test store names: its end-of-session check then also covers these.
TEST_PREFIX = "t-"

pytestmark = pytest.mark.timeout(DEMO_TIMEOUT + 60)


def _unique_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(4)}"


def _shm_entries(name: str) -> List[str]:
    """Entries of /dev/shm that belong to store ``name`` (the segment and its lock file)."""
    return sorted(entry for entry in os.listdir("/dev/shm") if name in entry)


def _processes_started_for(name: str) -> List[int]:
    """Live pids whose environment says they serve store ``name`` (gunicorn and its workers)."""
    marker = f"{demo.ENV_NAME}={name}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path("/proc", entry, "environ").read_bytes()
            state = Path("/proc", entry, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or a process we may not look into
            continue
        if marker in environ.split(b"\0") and state != "Z":
            found.append(int(entry))
    return found


def _force_clean(name: str) -> None:
    """Last-resort clean-up after a demo that did not finish: kill its processes, unlink."""
    for pid in _processes_started_for(name):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for entry in _shm_entries(name):
        try:
            os.unlink(os.path.join("/dev/shm", entry))
        except FileNotFoundError:
            pass


def _run_demo(name: str) -> Tuple[int, str, str]:
    """Run the demo as a user would; returns (exit status, stdout, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "shmsession.demo", "--name", name],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=DEMO_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # let the demo clean up after itself first
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"demo did not finish within {DEMO_TIMEOUT} s\n{out}\n{err}")
    return proc.returncode, out, err


def test_demo_shows_every_worker_sharing_one_session() -> None:
    name = _unique_name(f"{TEST_PREFIX}demo")
    try:
        status, out, err = _run_demo(name)
        report = f"exit status {status}\n--- stdout\n{out}\n--- stderr\n{err}"
        assert status == 0, report
        assert "All checks passed" in out, report
        assert "FAIL" not in out, report

        workers = re.search(r"distinct worker pids\s*:\s*(\d+)\s+\(([\d, ]+)\)", out)
        assert workers is not None, report
        pids = [int(pid) for pid in workers.group(2).split(",")]
        assert int(workers.group(1)) == len(set(pids)) >= 2, report

        visits = re.search(r"final visits\s*:\s*(\d+) == (\d+) visit requests", out)
        assert visits is not None, report
        assert int(visits.group(1)) == int(visits.group(2)) > 0, report

        assert re.search(r"GET /visit \(old cookie\)\s+401\b", out), report

        # Nothing is left behind: no segment, no lock file, no gunicorn master or worker.
        assert _shm_entries(name) == [], report
        assert _processes_started_for(name) == [], report
        for pid in pids:
            assert not Path("/proc", str(pid)).exists() or pid in _zombies(), report
    finally:
        _force_clean(name)


def _zombies() -> List[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                found.append(int(entry))
    return found


# --- the WSGI app in-process: quick, and pinpoints a failing route ---------------------------


@pytest.fixture
def demo_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = _unique_name(f"{TEST_PREFIX}demoapp")
    monkeypatch.setenv(demo.ENV_NAME, name)
    monkeypatch.setattr(wsgi, "_store", None)
    monkeypatch.setattr(wsgi, "_store_pid", None)
    try:
        yield name
    finally:
        if wsgi._store is not None:  # the demo app's own handle (internals), opened lazily
            wsgi._store.close()
        SessionStorage.unlink_name(name)
        _force_clean(name)


def _call(
    method: str, path: str, cookie: Optional[str] = None
) -> Tuple[int, Dict[str, Any], List[str]]:
    """Call the app like a WSGI server would; returns (status, JSON body, Set-Cookie values)."""
    target, _, query = path.partition("?")
    environ: Dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": target,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
    }
    if cookie is not None:
        environ["HTTP_COOKIE"] = cookie
    started: List[Tuple[str, List[Tuple[str, str]]]] = []

    def start_response(status: str, headers: List[Tuple[str, str]], exc_info: object = None) -> Any:
        started.append((status, headers))
        return lambda data: None

    body = b"".join(demo.app(environ, start_response))
    status, headers = started[0]
    assert ("Content-Type", "application/json") in headers
    cookies = [value for key, value in headers if key.lower() == "set-cookie"]
    return int(status.split()[0]), json.loads(body), cookies


def test_app_routes(demo_store: str) -> None:
    pid = os.getpid()
    assert _call("GET", "/") == (401, {"anonymous": True, "pid": pid}, [])
    assert _call("GET", "/visit", "sid=not-a-session")[0] == 401
    assert _call("POST", "/login")[0] == 400
    assert _call("GET", "/login?user=bob")[0] == 405
    assert _call("GET", "/nowhere")[0] == 404

    status, body, cookies = _call("POST", "/login?user=bob")
    assert status == 200 and body["session"] == {"user": "bob", "visits": 0, "cart": []}
    assert len(cookies) == 1 and cookies[0].endswith("; HttpOnly; Path=/; SameSite=Lax")
    cookie = cookies[0].split(";")[0]

    assert _call("GET", "/", cookie)[1]["session"]["visits"] == 1
    assert _call("GET", "/visit", cookie)[1]["session"]["visits"] == 2
    assert _call("POST", "/cart?item=tea", cookie)[1]["session"] == {
        "user": "bob",
        "visits": 2,
        "cart": ["tea"],
    }
    assert _call("POST", "/cart", cookie)[0] == 400

    status, body, cookies = _call("POST", "/logout", cookie)
    assert (status, body["logged_out"]) == (200, True)
    assert cookies and "Max-Age=0" in cookies[0]
    assert _call("GET", "/", cookie)[0] == 401
    assert _call("POST", "/logout", cookie)[1]["logged_out"] is False


def test_stop_server_leaves_no_process_behind() -> None:
    """stop_server (how the demo and tests/_servers.py stop gunicorn) also ends workers whose
    master died without stopping them."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; "
         "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"],
        start_new_session=True,
    )  # fmt: skip
    time.sleep(0.5)  # let it start its own child, standing in for a worker
    os.kill(child.pid, signal.SIGKILL)
    child.wait(5)
    assert _live_group_members(child.pid), "the stand-in worker should still run"
    assert stop_server(child) is False  # SIGTERM was not enough: the group was killed
    assert _live_group_members(child.pid) == []


def _live_group_members(pgid: int) -> List[int]:
    """Pids of process group ``pgid`` that still run (zombies, awaiting their reaper, do not)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path("/proc", entry, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # After the command: state, ppid, pgrp, ...
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry))
    return found
