"""Group commit of read events (server/audit/batching.py) and the witness's group fsync, no database."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from server.audit.batching import GroupCommit
from server.audit.chain import Head
from server.audit.witness import Witness
from server.audit.witness import read_heads


class _Session:
    def close(self) -> None:
        pass


class _Log:
    """A fake store: records batches; each write takes a while (so requests pile up)."""

    def __init__(self, delay: float = 0.005, fail: bool = False) -> None:
        self.batches: list[list[Any]] = []
        self.durable: list[int] = []
        self.delay, self.fail = delay, fail
        self.lock = threading.Lock()

    def write(self, _session: Any, facts: list[Any]) -> int:
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("store down")
        with self.lock:
            self.batches.append(facts)
            return len(self.batches)

    def sync(self, token: int) -> None:
        with self.lock:
            self.durable.append(token)


def _run(group: GroupCommit, n: int) -> list[BaseException | None]:
    errors: list[BaseException | None] = [None] * n

    def one(i: int) -> None:
        try:
            group.write([i])
        except BaseException as exc:
            errors[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return errors


def test_every_event_is_written_once_in_fewer_batches_and_made_durable() -> None:
    log = _Log()
    group = GroupCommit(log.write, _Session, log.sync)
    assert _run(group, 40) == [None] * 40
    written = sorted(f for b in log.batches for f in b)
    assert written == list(range(40))
    assert group.batches == len(log.batches) < 40  # requests shared transactions
    assert group.records == 40
    assert sorted(log.durable) == list(range(1, len(log.batches) + 1))  # each batch's head synced


def test_a_failed_write_fails_every_request_of_its_batch_and_the_next_batch_still_runs() -> None:
    log = _Log(fail=True)
    group = GroupCommit(log.write, _Session, log.sync)
    errors = _run(group, 12)
    assert all(isinstance(e, RuntimeError) for e in errors)
    assert log.durable == []  # nothing committed, nothing synced
    log.fail = False
    group.write(["after"])
    assert log.batches == [["after"]]


def test_a_failed_sync_fails_its_requests() -> None:
    log = _Log()

    def broken(_token: int) -> None:
        raise OSError("disk full")

    group = GroupCommit(log.write, _Session, broken)
    with pytest.raises(OSError):
        group.write(["x"])


def test_the_leader_waits_for_expected_requests_only_within_its_window() -> None:
    log = _Log(delay=0)
    group = GroupCommit(log.write, _Session, log.sync, window=0.2)
    group.expect()  # a request in progress that will queue soon
    done = threading.Event()

    def later() -> None:
        time.sleep(0.05)
        group.write(["late"], expected=True)
        done.set()

    threading.Thread(target=later).start()
    group.write(["first"])
    assert done.wait(5)
    assert log.batches == [["first", "late"]]  # one transaction for both
    group.expect()
    group.unexpect()  # announced, but it queued nothing: no waiting
    start = time.monotonic()
    group.write(["alone"])
    assert time.monotonic() - start < 0.15


def _head(seq: int) -> Head:
    return Head(seq, f"{seq:064x}", "2026-12-07T00:00:00.000Z", "k1", "0" * 64)


def test_witness_lines_written_then_synced_in_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "w.jsonl")
    witness = Witness(path)
    fsyncs: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real(fd)))
    tickets = [witness.write(_head(seq)) for seq in (1, 2, 3)]
    assert [h.seq for h in read_heads(path)] == [1, 2, 3]  # written before any fsync
    witness.sync(tickets[0])
    witness.sync(tickets[2])  # covered by the first fsync: lines 2 and 3 were written before it
    assert len(fsyncs) == 1
    witness.publish(_head(4))
    assert len(fsyncs) == 2 and witness.last_seq == 4
    witness.close()


def test_witness_reopens_a_removed_or_rotated_file(tmp_path: Path) -> None:
    path = str(tmp_path / "w.jsonl")
    witness = Witness(path, max_bytes=300)
    witness.publish(_head(1))
    os.unlink(path)
    witness.publish(_head(2))
    assert [h.seq for h in read_heads(path)] == [2]
    for seq in range(3, 8):
        witness.publish(_head(seq))
    assert [h.seq for h in read_heads(path)] == [2, 3, 4, 5, 6, 7]
    assert len(os.listdir(tmp_path)) > 1  # rotated past max_bytes
    witness.close()
