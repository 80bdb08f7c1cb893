"""What every adapter's constructor takes: a store's name with its options (the adapter opens
it), or a store the caller opened (``store=``), never both, never neither. The async adapters
wrap a ``SessionStorage`` they are given, use an async store as it is, and refuse anything
else."""

from __future__ import annotations

from importlib import import_module
from typing import Any

import pytest

from shmsession import SessionStorage, Store
from shmsession.aio import AsyncSessionStorage

ADAPTERS = {  # name: (module, class, async)
    "flask": ("shmsession.contrib.flask", "ShmSessionInterface", False),
    "cachelib": ("shmsession.contrib.cachelib", "ShmCache", False),
    "starsessions": ("shmsession.contrib.starsessions", "ShmStore", True),
    "aiohttp": ("shmsession.contrib.aiohttp", "ShmStorage", True),
}


@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_an_adapter_takes_a_name_or_an_open_store(adapter: str, name: str) -> None:
    module, cls_name, is_async = ADAPTERS[adapter]
    cls: Any = getattr(import_module(module), cls_name)
    with pytest.raises(TypeError):
        cls()
    by_name = cls(name, size=1 << 20)
    try:
        with SessionStorage(name) as sync:
            with pytest.raises(TypeError):
                cls(name, store=sync)
            with pytest.raises(TypeError):
                cls(store=sync, size=1 << 20)
            given = cls(store=sync)
            made = by_name.store
            opened: Store  # the store the adapter made by name opened
            if not is_async:
                assert isinstance(made, SessionStorage) and given.store is sync
                opened = made
            else:
                assert isinstance(made, AsyncSessionStorage)
                assert isinstance(given.store, AsyncSessionStorage) and given.store.sync is sync
                wrapped = AsyncSessionStorage(sync)
                assert cls(store=wrapped).store is wrapped
                with pytest.raises(TypeError, match="async store"):
                    cls(store=object())
                opened = made.sync
            opened.write("k", b"by name")
            assert sync.read("k") == b"by name"  # the store it opened is the named one
    finally:
        (by_name.store.sync if is_async else by_name.store).close()
