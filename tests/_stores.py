"""The tests' stores: names that carry the pid of the test run, removal whatever state a store
is in, and the two backends an adapter test runs on -- shared memory ("shm") and Redis
("redis", on the run's private redis-server) -- for the fixtures in conftest.py and for the
servers the system tests start (whose apps read their store from the environment).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

from shmsession import SessionStorage, Store
from shmsession._segment import LOCK_PREFIX, PREFIX, SHM_DIR, lock_path, segment_path

TEST_PREFIX = "t-"
BACKENDS = ["shm", "redis"]
REDIS_SECRET = b"a test secret of more than 16 bytes"  # every test store's, on Redis
OpenStore = Callable[..., Store]
T = TypeVar("T")

#: What a server's app reads: its store's name, the Redis server's unix socket when the store
#: is in Redis, and the secret (the Redis store's, and the app's own where it signs cookies).
ENV_STORE = "SHMSESSION_TEST_STORE"
ENV_REDIS = "SHMSESSION_TEST_REDIS"
ENV_SECRET = "SHMSESSION_TEST_SECRET"


def shm_leftovers(tag: str = TEST_PREFIX) -> List[str]:
    """Entries in /dev/shm that belong to test stores of this test run (their names carry
    the pid of the pytest process, so a run beside this one does not count)."""
    pid = str(os.getpid())
    return sorted(
        f for f in os.listdir(SHM_DIR)
        for prefix in (PREFIX, LOCK_PREFIX)
        if f.startswith(prefix + tag) and pid in f[len(prefix) :].split("-")
    )


def remove_store(name: str) -> None:
    """Remove a store's segment and lock file whatever state they are in."""
    for path in (segment_path(name), lock_path(name)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def handed_out(open_one: Callable[..., T], close: Callable[[T], object]
               ) -> Iterator[Callable[..., T]]:
    """The body of a fixture that hands out ``open_one(**options)`` as often as the test
    asks, and closes all it handed out after."""
    made: List[T] = []

    def make(**options: Any) -> T:
        made.append(open_one(**options))
        return made[-1]

    try:
        yield make
    finally:
        for one in made:
            close(one)


@contextlib.contextmanager
def store_handles(backend: str, name: str, redis_socket: Optional[str]) -> Iterator[OpenStore]:
    """``open_store(suffix="", **options)`` for the block: a new handle on store ``name`` in
    ``backend`` (another store, of its own, for each ``suffix``). After the block every handle
    is closed and every store deleted; a Redis store must leave no key."""
    from tests.redis_server import redis_keys

    handles: List[Store] = []
    suffixes = {""}
    if backend == "redis":
        from shmsession.redis import RedisSessionStorage

        def open_handle(store_name: str, **options: Any) -> Store:
            return RedisSessionStorage(store_name, f"unix://{redis_socket}",
                                       secret=REDIS_SECRET, **options)
    else:
        def open_handle(store_name: str, **options: Any) -> Store:
            return SessionStorage(store_name, size=4 << 20, **options)

    def open_store(suffix: str = "", **options: Any) -> Store:
        suffixes.add(suffix)
        handles.append(open_handle(name + suffix, **options))
        return handles[-1]

    try:
        yield open_store
    finally:
        for handle in handles:
            handle.close()
        for suffix in sorted(suffixes):
            if backend == "shm":
                remove_store(name + suffix)
                continue
            last: Any = open_handle(name + suffix)  # a Redis store: it has a prefix
            last.unlink()  # its sessions and its counters (and closes the handle)
            prefix = last.prefix
            assert redis_socket is not None and redis_keys(redis_socket, prefix) == [], prefix


def server_env(backend: str, name: str, redis_socket: Optional[str]) -> Dict[str, str]:
    """The environment that tells a server's app where store ``name`` is."""
    env = {ENV_STORE: name, ENV_SECRET: REDIS_SECRET.decode()}
    if backend == "redis":
        assert redis_socket is not None
        env[ENV_REDIS] = redis_socket
    return env


def store_from_env() -> Tuple[str, Optional[str], str]:
    """In a server's app: ``(name, redis_url, secret)`` of its store; ``redis_url`` is None
    for a store in shared memory (which the test made: attach, never create)."""
    sock = os.environ.get(ENV_REDIS)
    return (os.environ[ENV_STORE], f"unix://{sock}" if sock else None,
            os.environ[ENV_SECRET])
