"""A real, private ``redis-server`` for the tests: session-scoped fixtures, bounded start-up,
always stopped and its temp dir removed.

``redis_socket``: a server on a unix socket only (``--port 0``), no persistence; yields the
socket path. ``redis_tls``: a second server, TLS only on a free 127.0.0.1 port, with a CA and
a certificate made for the run by ``openssl``; yields ``(port, ca_path)``.

Without ``redis-server`` (Debian: ``apt-get install redis-server``) or redis-py, the tests that
need them fail when ``CI`` is set, and are skipped with the reason otherwise (``-ra`` prints
it in the summary).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, List, NoReturn, Tuple

import pytest

START_TIMEOUT = 15.0  # seconds; the machine is shared and may be slow to start a process
STOP_TIMEOUT = 10.0
START_TRIES = 1000  # PINGs, 20 ms apart


def _unavailable(what: str) -> NoReturn:
    message = f"{what}: the Redis store's tests cannot run"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must install it (.ci/run)", pytrace=False)
    pytest.skip(message)


def _need_redis() -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        _unavailable("redis-server is not installed (Debian: apt-get install redis-server)")
    try:
        import redis  # noqa: F401
    except ImportError:
        _unavailable("redis-py is not installed (pip install 'shmsession[redis]')")
    return exe


def _log_tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def _ping_over(connect: Callable[[], socket.socket]) -> bool:
    """Whether a Redis server answers PING on the socket ``connect`` opens. Plain sockets,
    closed whatever happens (redis-py 5.0 leaks the socket of a refused connection, which
    ``filterwarnings = error`` turns into an error of some later test)."""
    try:
        with connect() as s:
            s.settimeout(2)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:  # refused, not there yet, timed out, TLS not ready
        return False


def _unix(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except BaseException:
        s.close()
        raise
    return s


def _tls(port: int, ca: str) -> socket.socket:
    context = ssl.create_default_context(cafile=ca)
    raw = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        return context.wrap_socket(raw, server_hostname="127.0.0.1")
    except BaseException:
        raw.close()
        raise


@contextlib.contextmanager
def _server(exe: str, tmp: Path, args: List[str], ping: Callable[[], bool]) -> Iterator[None]:
    """Run ``redis-server ARGS`` until the block ends, once ``ping()`` says it answers
    (waiting a bounded time and number of tries)."""
    log = tmp / "redis.log"
    proc = subprocess.Popen(
        [exe, *args, "--save", "", "--appendonly", "no", "--dir", str(tmp),
         "--logfile", str(log)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C at the terminal reaches pytest, which stops it
    )
    try:
        ready = False
        deadline = time.monotonic() + START_TIMEOUT
        for _ in range(START_TRIES):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {proc.returncode} at start:\n{_log_tail(log)}"
                )
            ready = ping()
            if ready or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if not ready:
            raise RuntimeError(
                f"redis-server did not answer within {START_TIMEOUT:.0f} s:\n{_log_tail(log)}"
            )
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # no persistence configured: exits at once
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)


@pytest.fixture(scope="session")
def redis_socket() -> Iterator[str]:
    """A private redis-server on a unix socket in a temp dir; yields the socket path."""
    exe = _need_redis()
    tmp = Path(tempfile.mkdtemp(prefix="shmsession-redis-"))
    try:
        sock = str(tmp / "redis.sock")
        with _server(exe, tmp, ["--port", "0", "--unixsocket", sock, "--unixsocketperm", "700"],
                     lambda: _ping_over(lambda: _unix(sock))):
            yield sock
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _openssl(tmp: Path, *args: str) -> None:
    out = subprocess.run(["openssl", *args], cwd=tmp, capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    if out.returncode:
        raise RuntimeError(f"openssl {args[0]} failed: {out.stderr[-2000:]}")


def _make_certificates(tmp: Path) -> Tuple[Path, Path, Path]:
    """A throwaway CA, and a certificate for 127.0.0.1 that it signed."""
    if shutil.which("openssl") is None:
        _unavailable("openssl is not installed (Debian: apt-get install openssl)")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(tmp, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=shmsession test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl(tmp, "req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1")
    (tmp / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    _openssl(tmp, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext")
    return tmp / "ca.crt", tmp / "server.crt", tmp / "server.key"


def redis_keys(sock: str, prefix: str, drop: bool = False) -> List[bytes]:
    """The keys under ``prefix`` on the server at ``sock``, seen by a client of the test's own;
    with ``drop``, also deleted (the server outlives the test)."""
    import redis

    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"  # the prefix, not a glob
    with redis.Redis(unix_socket_path=sock) as r:
        keys = sorted(r.scan_iter(match=pattern, count=1000))
        if drop and keys:
            r.delete(*keys)
        return keys


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tls_supported(exe: str) -> bool:
    """Whether this redis-server was built with TLS: one without it refuses ``tls-port``
    as an unknown directive, while one with it reaches its TLS checks."""
    out = subprocess.run(
        [exe, "--port", "0", "--tls-port", "1", "--tls-cert-file", "/nonexistent",
         "--save", "", "--appendonly", "no", "--logfile", ""],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    return "Bad directive" not in out.stdout + out.stderr


@pytest.fixture(scope="session")
def redis_tls() -> Iterator[Tuple[int, str]]:
    """A private redis-server that speaks only TLS, on 127.0.0.1; yields (port, CA path)."""
    exe = _need_redis()
    if not tls_supported(exe):
        pytest.skip("this redis-server was built without TLS (rediss:// URL parsing is "
                    "still tested)")
    tmp = Path(tempfile.mkdtemp(prefix="shmsession-redis-tls-"))
    try:
        ca, cert, key = _make_certificates(tmp)
        for attempt in range(3):  # the free port can be taken before the server binds it
            port = _free_port()
            args = ["--port", "0", "--bind", "127.0.0.1", "--tls-port", str(port),
                    "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                    "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
            try:
                with _server(exe, tmp, args,
                             lambda: _ping_over(lambda: _tls(port, str(ca)))):
                    yield port, str(ca)
                return
            except RuntimeError:
                if attempt == 2:
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
