"""Tamper evidence: the hash chain catches a flipped byte, a deleted, reordered or cut record."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from server.audit import chain
from server.audit.flask_integration import audit_settings
from server.store.session import begin_write
from tests.conftest import FhirClient


def _engine(app: Any) -> sa.Engine:
    return app.extensions["rehabfhir.engine"]  # type: ignore[no-any-return]


def tamper(app: Any, *statements: tuple[str, dict[str, Any]]) -> None:
    """Change audit rows as a database superuser would: with the append-only trigger disabled."""
    engine = _engine(app)
    pg = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        if pg:
            conn.exec_driver_sql("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only")
        for sql, params in statements:
            conn.execute(sa.text(sql), params)
        if pg:
            conn.exec_driver_sql("ALTER TABLE audit_event ENABLE TRIGGER audit_event_append_only")


def pks(app: Any) -> list[int]:
    with _engine(app).connect() as conn:
        return list(conn.execute(sa.text("SELECT pk FROM audit_event ORDER BY pk")).scalars())


def checkpoint(app: Any) -> None:
    session = app.extensions["rehabfhir.sessions"]()
    try:
        begin_write(session)
        chain.checkpoint(session, audit_settings(app).key)
        session.commit()
    finally:
        session.close()


def verdict(fhir: FhirClient) -> dict[str, Any]:
    r = fhir.call("GET", "/AuditEvent/$verify")
    assert r.status_code == 200, r.get_data(as_text=True)
    out = {}
    for p in r.get_json()["parameter"]:
        out[p["name"]] = p.get("valueString", p.get("valueInteger"))
    return out


@pytest.fixture
def trail(fhir: FhirClient, app: Any) -> list[int]:
    """Seven audit records (the test client's token, a create and five reads), the head signed."""
    p = fhir.create({"resourceType": "Patient"})
    for _ in range(5):
        assert fhir.call("GET", f"/Patient/{p['id']}").status_code == 200
    checkpoint(app)
    return pks(app)


def test_intact_chain(fhir: FhirClient, trail: list[int]) -> None:
    got = verdict(fhir)
    assert got["result"] == "intact" and got["checked"] == 7 and got["checkpoints"] == 2


def test_flipped_byte_is_detected(fhir: FhirClient, app: Any, trail: list[int]) -> None:
    tamper(
        app,
        (
            'UPDATE audit_event SET body = replace(body, \'"action":"R"\', \'"action":"U"\') WHERE pk = :pk',
            {"pk": trail[2]},
        ),
    )
    got = verdict(fhir)
    assert got["result"] == "broken" and got["record"] == trail[2]
    assert "altered" in got["reason"]


def test_changed_column_is_detected(fhir: FhirClient, app: Any, trail: list[int]) -> None:
    tamper(app, ("UPDATE audit_event SET actor = 'Practitioner/innocent' WHERE pk = :pk", {"pk": trail[4]}))
    got = verdict(fhir)
    assert got["result"] == "broken" and got["record"] == trail[4]


def test_deleted_record_is_detected(fhir: FhirClient, app: Any, trail: list[int]) -> None:
    tamper(app, ("DELETE FROM audit_event WHERE pk = :pk", {"pk": trail[2]}))
    got = verdict(fhir)
    assert got["result"] == "broken" and got["record"] == trail[3]
    assert "deleted" in got["reason"]


def test_reordered_records_are_detected(fhir: FhirClient, app: Any, trail: list[int]) -> None:
    a, b = trail[1], trail[3]
    cols = "recorded, actor, client, patient, action, outcome, type, subtype, resource, query, prev_hash, hash, body"  # noqa: E501
    with _engine(app).connect() as conn:
        rows = {
            r.pk: r
            for r in conn.execute(
                sa.text(f"SELECT pk, {cols} FROM audit_event WHERE pk IN (:a, :b)"), {"a": a, "b": b}
            )
        }
    names = [c.strip() for c in cols.split(",")]
    sets = ", ".join(f"{n} = :{n}" for n in names if n != "hash")

    def values(pk: int) -> dict[str, Any]:
        return {n: getattr(rows[pk], n) for n in names if n != "hash"}

    # hash is unique: park one row's hash, then swap everything.
    tamper(
        app,
        (f"UPDATE audit_event SET {sets}, hash = 'parked' WHERE pk = :pk", {**values(b), "pk": a}),
        (
            f"UPDATE audit_event SET {sets}, hash = :hash WHERE pk = :pk",
            {**values(a), "hash": rows[a].hash, "pk": b},
        ),
        ("UPDATE audit_event SET hash = :hash WHERE pk = :pk", {"hash": rows[b].hash, "pk": a}),
    )
    got = verdict(fhir)
    assert got["result"] == "broken" and got["record"] == a


def test_cut_tail_is_detected_by_the_signed_checkpoint(fhir: FhirClient, app: Any, trail: list[int]) -> None:
    tamper(app, ("DELETE FROM audit_event WHERE pk >= :pk", {"pk": trail[4]}))
    got = verdict(fhir)
    assert got["result"] == "broken" and got["record"] == trail[-1]
    assert "tail" in got["reason"]


def test_forged_checkpoint_is_detected(fhir: FhirClient, app: Any, trail: list[int]) -> None:
    engine = _engine(app)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO audit_checkpoint (created, event_pk, head_hash, signature) "
                "VALUES (CURRENT_TIMESTAMP, :pk, 'x', 'forged')"
            ),
            {"pk": trail[5]},
        )
    got = verdict(fhir)
    assert got["result"] == "broken" and "signature" in got["reason"]


def test_cli_verify(app: Any, database_url: str, trail: list[int]) -> None:
    from server.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["audit", "verify"], env={"DATABASE_URL": database_url})
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output.strip().splitlines()[-1])["result"] == "intact"
    tamper(app, ("DELETE FROM audit_event WHERE pk = :pk", {"pk": trail[1]}))
    result = runner.invoke(cli, ["audit", "verify"], env={"DATABASE_URL": database_url})
    assert result.exit_code == 1
    out = orjson.loads(result.output.strip().splitlines()[-1])
    assert out["result"] == "broken" and out["record"] == trail[2]


def test_app_role_cannot_update_or_delete(app: Any, trail: list[int]) -> None:
    engine = _engine(app)
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no roles or triggers here: the chain is its only protection (dev/test only)")
    for sql in (
        "UPDATE audit_event SET actor = 'x'",
        "DELETE FROM audit_event",
        "UPDATE audit_checkpoint SET signature = 'x'",
        "DELETE FROM audit_checkpoint",
    ):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.exec_driver_sql(sql)
    assert pks(app) == trail


def test_concurrent_writers_make_one_linear_chain(app: Any, fhir: FhirClient) -> None:
    p = fhir.create({"resourceType": "Patient"})
    errors: list[str] = []

    def worker() -> None:
        client = FhirClient(app.test_client())
        for i in range(6):
            if i % 2:
                r = client.call(
                    "POST",
                    "/Observation",
                    {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"text": "c"},
                        "subject": {"reference": f"Patient/{p['id']}"},
                    },
                )
            else:
                r = client.call("GET", f"/Patient/{p['id']}")
            if r.status_code >= 300:
                errors.append(r.get_data(as_text=True))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with _engine(app).connect() as conn:
        prev = list(conn.execute(sa.text("SELECT prev_hash FROM audit_event ORDER BY pk")).scalars())
    # one token for the main client and one per thread, the create, then 6 requests per thread
    assert len(prev) == 1 + 8 + 1 + 8 * 6 and len(set(prev)) == len(prev)
    assert verdict(fhir)["result"] == "intact"
