"""Tamper cases against a trail of a few thousand records: each is detected and named (issue 12).

The trail is appended through the chain API (store.write_events, the group-commit path: records,
signed head, commit, witness), not over HTTP, so it takes well under a second. Every tamper is done
as a database owner would: with the append-only triggers lifted (conftest.audit_guards_off).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from server.audit import chain
from server.audit import store
from server.audit.events import AuditFacts
from server.audit.models import AuditCheckpoint
from server.audit.models import AuditRecord
from server.audit.verify import Verdict
from server.audit.verify import verify
from server.audit.witness import HeadTimer
from server.audit.witness import Witness
from server.audit.witness import files
from server.audit.witness import read_heads
from tests.conftest import as_owner
from tests.conftest import spawn_server
from tests.conftest import token_for

N = 3000
COLUMNS = (
    "recorded",
    "actor",
    "client",
    "patient",
    "action",
    "outcome",
    "type",
    "subtype",
    "resource",
    "query",
)
COLUMNS += ("body",)


@dataclass
class Trail:
    app: Any
    heads: list[chain.Head]  # the signed head of each group, in order
    half_witness: bytes  # the witness file as it was after the first half of the trail

    @property
    def cfg(self) -> Any:
        return self.app.extensions["rehabfhir.audit"]

    @property
    def engine(self) -> sa.Engine:
        return self.app.extensions["rehabfhir.engine"]  # type: ignore[no-any-return]


def facts(i: int) -> AuditFacts:
    return AuditFacts(
        subtype="read",
        outcome=0,
        recorded=chain.now(),
        server="http://testserver/fhir",
        user=f"Practitioner/{i % 7}",
        client_id="tamper-tests",
        resource=f"Patient/{i}/_history/1",
        patient=f"Patient/{i}",
    )


def write_group(app: Any, group: list[AuditFacts], witness: Any = "app") -> chain.Head:
    cfg = app.extensions["rehabfhir.audit"]
    session = app.extensions["rehabfhir.sessions"]()
    try:
        store.write_events(session, group, cfg.keyring, cfg.witness if witness == "app" else witness)
        head = chain.latest_head(session)
    finally:
        session.close()
    assert head is not None
    return head


@pytest.fixture
def trail(app: Any) -> Trail:
    """N records in groups of 1 to 60 (about a hundred signed heads), the witness copied half-way."""
    heads, written, size, half = [], 0, 1, b""
    while written < N:
        n = min(size, N - written)
        heads.append(write_group(app, [facts(written + i) for i in range(n)]))
        written, size = written + n, size % 60 + 1
        if not half and written >= N // 2:
            with open(app.extensions["rehabfhir.audit"].witness_path, "rb") as f:
                half = f.read()
    return Trail(app, heads, half)


def check(
    t: Trail, *, witness: bool = True, heads: tuple[chain.Head, ...] = (), grace: float | None = None
) -> Verdict:
    session = t.app.extensions["rehabfhir.sessions"]()
    try:
        given = [*read_heads(t.cfg.witness_path), *heads] if witness else None
        return verify(session, t.cfg.keyring, given, t.cfg.grace if grace is None else grace)
    finally:
        session.close()


def owner(t: Trail) -> contextlib.AbstractContextManager[sa.Connection]:
    return as_owner(t.engine)


def tamper(t: Trail, *statements: tuple[str, Any]) -> None:
    with owner(t) as conn:
        for sql, params in statements:
            conn.execute(sa.text(sql), params)


def rows(t: Trail, where: str = "", **params: Any) -> list[Any]:
    """Audit records, typed (datetimes, not SQLite's text)."""
    stmt = sa.select(AuditRecord.__table__).where(sa.text(where or "1 = 1")).order_by("pk")
    with t.engine.connect() as conn:
        return list(conn.execute(stmt, params))


def assert_broken(v: Verdict, kind: str, record: int) -> None:
    assert (v.intact, v.kind, v.record) == (False, kind, record), v.as_dict()


def test_trail_is_intact(trail: Trail) -> None:
    v = check(trail)
    assert v.intact, v.as_dict()
    assert (v.checked, v.seq, v.checkpoints, v.witnessed) == (N, N, len(trail.heads), len(trail.heads))
    assert v.head == trail.heads[-1].link


def test_flipped_byte_is_changed(trail: Trail) -> None:
    tamper(trail, ("UPDATE audit_event SET body = replace(body, '\"R\"', '\"U\"') WHERE pk = 1234", {}))
    assert_broken(check(trail), "changed", 1234)


def test_deleted_record_with_later_links_recomputed_is_missing(trail: Trail) -> None:
    prev = rows(trail, "pk = 1499")[0].hash
    updates = []
    for row in rows(trail, "pk > 1500"):
        digest = chain.record_hash(prev, {c: getattr(row, c) for c in COLUMNS})
        updates.append({"pk": row.pk, "p": prev, "h": digest})
        prev = digest
    with owner(trail) as conn:
        conn.execute(sa.text("DELETE FROM audit_event WHERE pk = 1500"))
        conn.execute(sa.text("UPDATE audit_event SET prev_hash = :p, hash = :h WHERE pk = :pk"), updates)
    assert_broken(check(trail), "missing", 1500)
    assert_broken(check(trail, witness=False), "missing", 1500)


def test_swapped_records_are_reordered(trail: Trail) -> None:
    a, b = rows(trail, "pk IN (1000, 1001)")
    names = [*COLUMNS, "prev_hash", "key_id"]
    sets = ", ".join(f"{n} = :{n}" for n in names)

    def values(row: Any) -> dict[str, Any]:
        return {n: getattr(row, n) for n in names}

    tamper(
        trail,
        (f"UPDATE audit_event SET {sets}, hash = 'parked' WHERE pk = 1000", values(b)),
        (f"UPDATE audit_event SET {sets}, hash = :hash WHERE pk = 1001", {**values(a), "hash": a.hash}),
        ("UPDATE audit_event SET hash = :hash WHERE pk = 1000", {"hash": b.hash}),
    )
    assert_broken(check(trail), "reordered", 1000)


def test_tail_cut_with_its_checkpoints_is_witnessed(trail: Trail) -> None:
    cut = trail.heads[-10].seq  # a group boundary: what is left is a consistent, signed chain
    tamper(
        trail,
        ("DELETE FROM audit_event WHERE pk > :s", {"s": cut}),
        ("DELETE FROM audit_checkpoint WHERE event_pk > :s", {"s": cut}),
    )
    assert check(trail, witness=False).intact  # the database alone cannot tell ...
    assert_broken(check(trail), "witness-ahead", cut + 1)  # ... the witness can


def test_tail_cut_inside_a_group(trail: Trail) -> None:
    cut = trail.heads[-2].seq - 3
    tamper(trail, ("DELETE FROM audit_event WHERE pk > :s", {"s": cut}))
    assert_broken(check(trail, witness=False), "tail-cut", cut + 1)
    tamper(trail, ("DELETE FROM audit_checkpoint WHERE event_pk > :s", {"s": cut}))
    assert_broken(check(trail, witness=False), "checkpoint-missing", cut)


def test_all_checkpoints_deleted(trail: Trail) -> None:
    tamper(trail, ("DELETE FROM audit_checkpoint", {}))
    assert_broken(check(trail), "checkpoint-missing", trail.heads[0].seq)
    assert_broken(check(trail, witness=False), "checkpoint-missing", N)


def test_forged_checkpoint_is_unsigned(trail: Trail) -> None:
    tamper(
        trail,
        (
            "UPDATE audit_checkpoint SET signature = :s WHERE event_pk = :e",
            {"s": "0" * 64, "e": trail.heads[20].seq},
        ),
    )
    assert_broken(check(trail), "checkpoint-unsigned", trail.heads[20].seq)


def test_truncated_trail(trail: Trail) -> None:
    if trail.engine.dialect.name == "postgresql":
        tamper(trail, ("TRUNCATE audit_checkpoint, audit_event", {}))
    else:
        tamper(trail, ("DELETE FROM audit_checkpoint", {}), ("DELETE FROM audit_event", {}))
    assert_broken(check(trail), "truncated", 1)


def _reinsert(t: Trail, new_rows: list[dict[str, Any]], checkpoints: list[Any]) -> None:
    with owner(t) as conn:
        if t.engine.dialect.name == "postgresql":
            conn.exec_driver_sql("TRUNCATE audit_checkpoint, audit_event")
        else:
            conn.exec_driver_sql("DELETE FROM audit_checkpoint")
            conn.exec_driver_sql("DELETE FROM audit_event")
        conn.execute(sa.insert(sa.table("audit_event", *map(sa.column, new_rows[0]))), new_rows)
        if checkpoints:
            cols = checkpoints[0]._fields
            conn.execute(
                sa.insert(sa.table("audit_checkpoint", *map(sa.column, cols))),
                [r._asdict() for r in checkpoints],
            )


def _rewrite(old: list[Any], keep: int, drop: int, edit: int) -> list[dict[str, Any]]:
    """Records 1..keep as they were, then the rest without `drop`, `edit` changed, renumbered and
    relinked with plain SHA-256 (all an insider without the key can do)."""
    out = [r._asdict() for r in old[:keep]]
    prev = out[-1]["hash"] if out else chain.GENESIS
    for r in old[keep:]:
        if r.pk == drop:
            continue
        d = r._asdict()
        if r.pk == edit:
            d["actor"] = "Practitioner/innocent"
        d.update(pk=len(out) + 1, key_id=None, prev_hash=prev)
        d["hash"] = prev = chain.record_hash(prev, {c: d[c] for c in COLUMNS})
        out.append(d)
    return out


def test_truncated_and_reinserted_trail(trail: Trail) -> None:
    old = rows(trail)
    with trail.engine.connect() as conn:
        cp = AuditCheckpoint.__table__
        cps = list(conn.execute(sa.select(cp).where(cp.c.event_pk < 1000).order_by(cp.c.pk)))
    _reinsert(trail, _rewrite(old, 999, 1000, 2000), cps)
    assert_broken(check(trail), "changed", 1000)
    assert_broken(check(trail, witness=False), "changed", 1000)


def test_trail_rewritten_from_genesis_without_the_key(trail: Trail) -> None:
    _reinsert(trail, _rewrite(rows(trail), 0, 1000, 2000), [])
    assert_broken(check(trail, witness=False), "checkpoint-missing", N - 1)
    assert_broken(check(trail), "changed", trail.heads[0].seq)


def test_older_witness_copy_is_behind(trail: Trail) -> None:
    path = trail.cfg.witness_path
    with open(path, "wb") as f:
        f.write(trail.half_witness)
    older = list(read_heads(path))
    v = check(trail, grace=0)  # the heads the old copy lacks were committed over more than `grace`
    assert_broken(v, "witness-behind", older[-1].seq + 1)
    # Within the grace period (60 s without a timer) such heads may still be on their way.
    assert check(trail).intact


def test_older_witness_and_cut_database_are_caught_by_an_out_of_band_head(trail: Trail) -> None:
    saved = trail.heads[-1]  # what `rehabfhir audit head` printed and an operator kept elsewhere
    path = trail.cfg.witness_path
    with open(path, "wb") as f:
        f.write(trail.half_witness)
    top = max(h.seq for h in read_heads(path))
    tamper(
        trail,
        ("DELETE FROM audit_event WHERE pk > :s", {"s": top}),
        ("DELETE FROM audit_checkpoint WHERE event_pk > :s", {"s": top}),
    )
    assert check(trail).intact  # database and witness agree with each other ...
    assert_broken(check(trail, heads=(saved,)), "witness-ahead", top + 1)  # ... not with the kept head


def test_witness_line_with_a_forged_signature(trail: Trail) -> None:
    forged = chain.Head(N + 5, "f" * 64, "2026-12-01T00:00:00.000Z", trail.cfg.keyring.key_id, "0" * 64)
    with open(trail.cfg.witness_path, "ab") as f:
        f.write(orjson.dumps(forged.as_dict()) + b"\n")
    assert_broken(check(trail), "checkpoint-unsigned", N + 5)


def test_links_recomputed_with_another_key_are_changed(trail: Trail) -> None:
    other = chain.Keyring.build(b"a key the insider made up", trail.cfg.keyring.key_id)
    start = rows(trail, "pk = 2499")[0]
    prev, updates = start.hash, []
    for row in rows(trail, "pk >= 2500"):
        cols = {c: getattr(row, c) for c in COLUMNS}
        prev = chain.link(other.key, row.pk, row.key_id, prev, cols)
        updates.append({"pk": row.pk, "h": prev, "p": updates[-1]["h"] if updates else start.hash})
    with owner(trail) as conn:
        conn.execute(sa.text("UPDATE audit_event SET prev_hash = :p, hash = :h WHERE pk = :pk"), updates)
    assert_broken(check(trail, witness=False), "changed", 2500)


def test_key_rotation(app: Any) -> None:
    first = write_group(app, [facts(i) for i in range(50)])
    cfg = app.extensions["rehabfhir.audit"]
    old = cfg.keyring
    new = chain.Keyring.build(b"the next key", "k2", f"{old.key_id}={old.key.decode()}")
    app.extensions["rehabfhir.audit"] = dataclasses.replace(cfg, keyring=new)
    try:
        last = write_group(app, [facts(i) for i in range(50)])
        assert (first.kid, last.kid) == (old.key_id, "k2")
        t = Trail(app, [first, last], b"")
        assert check(t).intact
        forgotten = chain.Keyring.build(b"the next key", "k2")  # the old key was not kept
        app.extensions["rehabfhir.audit"] = dataclasses.replace(cfg, keyring=forgotten)
        assert_broken(check(t), "unknown-key", 1)
    finally:
        app.extensions["rehabfhir.audit"] = cfg


def test_guards_refuse_update_delete_and_truncate(app: Any) -> None:
    write_group(app, [facts(i) for i in range(3)])
    engine = app.extensions["rehabfhir.engine"]
    statements = [
        "UPDATE audit_event SET actor = 'x'",
        "DELETE FROM audit_event",
        "UPDATE audit_checkpoint SET signature = 'x'",
        "DELETE FROM audit_checkpoint",
    ]
    if engine.dialect.name == "postgresql":
        statements += ["TRUNCATE audit_event CASCADE", "TRUNCATE audit_checkpoint"]
    for sql in statements:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.exec_driver_sql(sql)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM audit_event").scalar() == 3


def test_timer_republishes_a_head_the_witness_missed(app: Any) -> None:
    write_group(app, [facts(0)])
    head = write_group(app, [facts(1), facts(2)], witness=None)  # committed, then the process died
    cfg = app.extensions["rehabfhir.audit"]
    assert max(h.seq for h in read_heads(cfg.witness_path)) == 1
    timer = HeadTimer(cfg.witness, app.extensions["rehabfhir.sessions"], 10)
    assert timer.tick() == head
    assert max(h.seq for h in read_heads(cfg.witness_path)) == head.seq == 3


def test_witness_rotates_and_verify_reads_every_file(app: Any, tmp_path: Any) -> None:
    cfg = app.extensions["rehabfhir.audit"]
    witness = Witness(str(tmp_path / "w.jsonl"), max_bytes=1000)
    for i in range(40):
        write_group(app, [facts(i)], witness=witness)
    assert len(files(witness.path)) > 5
    session = app.extensions["rehabfhir.sessions"]()
    try:
        v = verify(session, cfg.keyring, read_heads(witness.path), cfg.grace)
    finally:
        session.close()
    assert v.intact and v.witnessed == 40, v.as_dict()


def verify_path(app: Any, path: str) -> Verdict:
    cfg = app.extensions["rehabfhir.audit"]
    session = app.extensions["rehabfhir.sessions"]()
    try:
        return verify(session, cfg.keyring, read_heads(path), cfg.grace)
    finally:
        session.close()


def test_cli_head_and_verify(trail: Trail, database_url: str, tmp_path: Any) -> None:
    from server.cli import cli

    runner = CliRunner()
    env = {"DATABASE_URL": database_url, "REHABFHIR_AUDIT_WITNESS": trail.cfg.witness_path}
    result = runner.invoke(cli, ["audit", "head"], env=env)
    assert result.exit_code == 0, result.output
    head = chain.Head.parse(result.output.strip().splitlines()[-1])
    assert head == trail.heads[-1]
    result = runner.invoke(cli, ["audit", "verify", "--head", orjson.dumps(head.as_dict()).decode()], env=env)
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output.strip().splitlines()[-1])["result"] == "intact"
    copy = tmp_path / "copy.jsonl"
    shutil.copy(trail.cfg.witness_path, copy)
    tamper(trail, ("DELETE FROM audit_event WHERE pk > :s", {"s": N - 100}))
    tamper(trail, ("DELETE FROM audit_checkpoint WHERE event_pk > :s", {"s": N - 100}))
    result = runner.invoke(cli, ["audit", "verify", "--witness", str(copy)], env=env)
    assert result.exit_code == 1
    out = orjson.loads(result.output.strip().splitlines()[-1])
    assert (out["result"], out["kind"], out["record"]) == ("broken", "witness-ahead", N - 99)


# -- kill -9 during a write load -------------------------------------------------------------


@contextlib.contextmanager
def _server(database_url: str) -> Iterator[tuple[str, Any]]:
    from tests.functional.test_audit_durability import TOKENS
    from tests.functional.test_audit_durability import kill

    proc, base = spawn_server(database_url, workers=2, new_session=True)
    try:
        TOKENS[base] = token_for(base, database_url)
        yield base, proc
    finally:
        kill(proc)


def test_kill_during_write_load_keeps_the_trail_intact(app: Any, database_url: str) -> None:
    from tests.functional.test_audit_durability import call
    from tests.functional.test_audit_durability import kill

    acknowledged: list[str] = []
    read: list[str] = []  # reads answered 200: their events came through the group commit
    with _server(database_url) as (base, proc):
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    status, body = call(base, "POST", "/Patient", {"resourceType": "Patient"})
                    if status == 201:
                        acknowledged.append(body["id"])
                        if call(base, "GET", f"/Patient/{body['id']}")[0] == 200:
                            read.append(body["id"])

        threads = [threading.Thread(target=load) for _ in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acknowledged) >= 60, "the server did not take the load"
        kill(proc)
        stop.set()
        for t in threads:
            t.join(60)
    engine = app.extensions["rehabfhir.engine"]
    with engine.connect() as conn:
        audited = set(
            conn.execute(sa.text("SELECT resource FROM audit_event WHERE subtype = 'create'")).scalars()
        )
        reads = set(
            conn.execute(sa.text("SELECT resource FROM audit_event WHERE subtype = 'read'")).scalars()
        )
    assert {f"Patient/{i}/_history/1" for i in acknowledged} <= audited  # nothing acknowledged is lost
    assert read and {f"Patient/{i}/_history/1" for i in read} <= reads  # no answered read unaudited
    assert verify_path(app, app.extensions["rehabfhir.audit"].witness_path).intact  # before the restart
    with _server(database_url) as (base, _proc):
        from tests.functional.test_audit_durability import call as call_again

        assert call_again(base, "GET", f"/Patient/{acknowledged[0]}")[0] == 200
    v = verify_path(app, app.extensions["rehabfhir.audit"].witness_path)
    assert v.intact, v.as_dict()
