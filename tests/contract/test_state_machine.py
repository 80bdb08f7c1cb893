"""Hypothesis drives the store beside a dict; after every step the structures are sound and
the store holds exactly what the model says, owners included: each owner's sessions, oldest
first."""

from __future__ import annotations

import os
import uuid
from typing import Dict, List, Optional, Tuple

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shmsession import SessionNotFound, SessionStorage, StoreFull, VersionConflict

from tests._stores import remove_store

IDS = st.sampled_from([f"id-{k}" for k in range(12)] + ["é" * 40, "x" * 1024])
VALUES = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda n, b: bytes([b]) * n, st.integers(0, 40_000), st.integers(0, 255)),
)
OWNERS = st.sampled_from(["alice", "bob", "ø" * 300])


class StoreModel(RuleBasedStateMachine):
    """Small store (1 MiB, 10 entries, raise when full) so that full-store paths are hit."""

    def __init__(self) -> None:
        super().__init__()
        self.name = f"t-sm-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.store = SessionStorage(self.name, size=1 << 20, max_entries=10, ttl=None,
                                    max_value_size=64 << 10, when_full="raise")
        self.model: Dict[str, Tuple[bytes, int]] = {}
        self.owner: Dict[str, str] = {}  # sid -> its owner, for the owned ones
        self.joined: List[str] = []  # owned sids, in the order they became their owner's

    def teardown(self) -> None:
        self.store.close()
        remove_store(self.name)

    def _fits(self, sid: str, value: bytes) -> bool:
        return sid in self.model or len(self.model) < 10

    @rule(sid=IDS, value=VALUES)
    def write(self, sid: str, value: bytes) -> None:
        try:
            version = self.store.write(sid, value)
        except StoreFull:
            # Allowed only when the table is full or the heap cannot take it.
            st_ = self.store.stats()
            assert not self._fits(sid, value) or st_.largest_free < len(value) + 64 or \
                st_.bytes_free < len(value) + 64
            return
        assert all(version > v for _, v in self.model.values())
        self.model[sid] = (value, version)

    def _disown(self, sid: str) -> None:
        if self.owner.pop(sid, None) is not None:
            self.joined.remove(sid)

    @rule(sid=IDS, value=VALUES, owner=OWNERS)
    def write_with_owner(self, sid: str, value: bytes, owner: str) -> None:
        try:
            version = self.store.write(sid, value, owner=owner)
        except StoreFull:
            return
        self.model[sid] = (value, version)
        if self.owner.get(sid) != owner:
            self._disown(sid)
            self.owner[sid] = owner
            self.joined.append(sid)

    @rule(owner=OWNERS, keep=st.one_of(st.none(), IDS))
    def invalidate_owner(self, owner: str, keep: Optional[str]) -> None:
        doomed = [sid for sid, o in self.owner.items() if o == owner and sid != keep]
        assert self.store.invalidate_owner(owner, keep=keep) == len(doomed)
        for sid in doomed:
            self._disown(sid)
            del self.model[sid]

    @rule(owner=OWNERS)
    def sessions_of(self, owner: str) -> None:
        want = [sid for sid in self.joined if self.owner[sid] == owner]
        infos = self.store.sessions_of(owner)
        assert [i.digest for i in infos] == [self.store._digests.of(sid).hex() for sid in want]
        assert [(i.size, i.version) for i in infos] == [
            (len(self.model[sid][0]), self.model[sid][1]) for sid in want]

    @rule(sid=IDS, value=VALUES)
    def add(self, sid: str, value: bytes) -> None:
        try:
            added = self.store.add(sid, value)
        except StoreFull:
            assert sid not in self.model
            return
        assert added == (sid not in self.model)
        if added:
            self.model[sid] = (value, self.store.read_versioned(sid)[1])

    @rule(sid=IDS, value=VALUES, stale=st.booleans())
    def compare_and_set(self, sid: str, value: bytes, stale: bool) -> None:
        current: Optional[int] = self.model[sid][1] if sid in self.model else None
        expect = (current or 0) + (1000 if stale else 0) if current is not None else 1
        try:
            version = self.store.write(sid, value, expect=expect)
        except VersionConflict:
            assert current is None or stale
            return
        except StoreFull:
            return
        assert current is not None and not stale
        self.model[sid] = (value, version)

    @rule(sid=IDS)
    def read(self, sid: str) -> None:
        if sid in self.model:
            assert self.store.read_versioned(sid) == self.model[sid]
        else:
            try:
                self.store.read(sid)
            except SessionNotFound:
                pass
            else:
                raise AssertionError("read a session the model does not have")

    @rule(sid=IDS)
    def invalidate(self, sid: str) -> None:
        assert self.store.invalidate(sid) == (sid in self.model)
        self.model.pop(sid, None)
        self._disown(sid)

    @rule(sid=IDS)
    def touch(self, sid: str) -> None:
        assert self.store.touch(sid, ttl=3600) == (sid in self.model)

    @precondition(lambda self: len(self.model) > 5)
    @rule()
    def clear(self) -> None:
        self.store.clear()
        self.model.clear()
        self.owner.clear()
        self.joined.clear()

    @invariant()
    def matches_the_model(self) -> None:
        self.store.check()
        assert len(self.store) == len(self.model)
        assert self.store.stats().entries == len(self.model)


StoreModel.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
test_store_against_a_dict = StoreModel.TestCase
