"""memcached through pymemcache over a unix socket: a private memcached in a temp dir.

One store at a time: ``create`` empties the server (flush_all), so each phase's keyspace is
alone in it. 1 GiB of item memory, so 10,000 x 16 KiB or 100,000 x 1 KiB never evict.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from peers import Handle, Peer

START_TIMEOUT = 10.0


class _Handle:
    def __init__(self, sock: str) -> None:
        from pymemcache.client.base import Client

        self.client = Client(sock, connect_timeout=5, timeout=5)
        self.client.version()  # connect now, not inside the first timed op

    def get(self, key: str) -> bytes | None:
        value: bytes | None = self.client.get(key)
        return value

    def set(self, key: str, value: bytes) -> None:
        self.client.set(key, value, noreply=False)

    def close(self) -> None:
        self.client.close()


class MemcachedPeer(Peer):
    label = "memcached"
    dists = ("pymemcache",)

    def __init__(self, workdir: str, tag: str) -> None:
        super().__init__(workdir, tag)
        self.sock = os.path.join(workdir, "memcached.sock")
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            ["memcached", "-u", "root", "-s", self.sock, "-a", "0700", "-m", "1024",
             "-c", "256", "-t", "2"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to us; we stop the server in order
        )
        out = subprocess.run(["memcached", "-V"], capture_output=True, text=True, timeout=10)
        self.server_version = out.stdout.split()[-1] if out.stdout.split() else "?"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"memcached exited with {self.proc.returncode}")
            try:
                _Handle(self.sock).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.cleanup()
                    raise RuntimeError("memcached did not answer in time") from None
                time.sleep(0.05)

    def versions(self) -> str:
        return f"{super().versions()}, memcached {self.server_version}"

    @staticmethod
    def unavailable() -> str | None:
        if shutil.which("memcached") is None:
            return "memcached is not on PATH (apt-get install memcached)"
        try:
            import pymemcache  # noqa: F401
        except ImportError:
            return "the pymemcache package does not import (pip install pymemcache)"
        return None

    def create(self, nkeys: int, size: int) -> str:
        handle = _Handle(self.sock)
        try:
            handle.client.flush_all(noreply=False)
        finally:
            handle.close()
        return self.sock

    @classmethod
    def open(cls, name: str) -> Handle:
        return _Handle(name)

    def drop(self, name: str) -> None:
        self.create(0, 0)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


PEER = MemcachedPeer
