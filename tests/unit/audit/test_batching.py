"""Group commit of read events: every caller returns only after its own events are written."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from server.audit.batching import GroupCommit


class FakeSession:
    """Counts its own closes; `opened` lists every session the batcher made."""

    opened: list[FakeSession] = []

    def __init__(self) -> None:
        self.closed = False
        FakeSession.opened.append(self)

    def close(self) -> None:
        self.closed = True


def test_concurrent_callers_share_transactions_and_all_are_written() -> None:
    written: list[list[Any]] = []

    def write(_session: Any, facts: list[Any]) -> None:
        time.sleep(0.01)  # a commit that waits for the disk
        written.append(list(facts))

    FakeSession.opened.clear()
    gc = GroupCommit(write, FakeSession)
    returned: list[int] = []

    def call(i: int) -> None:
        gc.write([i])  # type: ignore[list-item]
        assert any(i in batch for batch in written)  # committed before the caller goes on
        returned.append(i)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(returned) == list(range(40))
    assert sorted(f for batch in written for f in batch) == list(range(40))
    assert gc.batches == len(written) < 40  # grouped
    assert len(FakeSession.opened) == gc.batches and all(s.closed for s in FakeSession.opened)


def test_a_failed_batch_fails_every_caller_in_it_and_the_next_one_works() -> None:
    fail = {"on": True}

    def write(_session: Any, facts: list[Any]) -> None:
        if fail["on"]:
            raise RuntimeError("audit store down")

    gc = GroupCommit(write, FakeSession)
    with pytest.raises(RuntimeError, match="audit store down"):
        gc.write(["x"])  # type: ignore[list-item]
    fail["on"] = False
    gc.write(["y"])  # type: ignore[list-item]
    assert gc.batches == 1
