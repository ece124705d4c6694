"""Tamper evidence over HTTP: $verify and the CLI name a flipped byte, a deleted, reordered or cut record.

tests/functional/test_audit_tamper.py covers every tamper case on a trail of thousands of records.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tests.conftest import FhirClient
from tests.conftest import as_owner
from tests.conftest import witness_path


def _engine(app: Any) -> sa.Engine:
    return app.extensions["rehabfhir.engine"]  # type: ignore[no-any-return]


def tamper(app: Any, *statements: tuple[str, dict[str, Any]]) -> None:
    """Change audit rows as a database owner would: with the append-only triggers lifted."""
    with as_owner(_engine(app)) as conn:
        for sql, params in statements:
            conn.execute(sa.text(sql), params)


def pks(app: Any) -> list[int]:
    with _engine(app).connect() as conn:
        return list(conn.execute(sa.text("SELECT pk FROM audit_event ORDER BY pk")).scalars())


def verdict(fhir: FhirClient) -> dict[str, Any]:
    r = fhir.call("GET", "/AuditEvent/$verify")
    assert r.status_code == 200, r.get_data(as_text=True)
    out = {}
    for p in r.get_json()["parameter"]:
        out[p["name"]] = p.get("valueString", p.get("valueInteger"))
    return out


@pytest.fixture
def trail(fhir: FhirClient, app: Any) -> list[int]:
    """Seven audit records (the test client's token, a create and five reads), each commit signed."""
    p = fhir.create({"resourceType": "Patient"})
    for _ in range(5):
        assert fhir.call("GET", f"/Patient/{p['id']}").status_code == 200
    return pks(app)


def test_intact_chain(fhir: FhirClient, trail: list[int]) -> None:
    got = verdict(fhir)
    assert got["result"] == "intact" and got["checked"] == 7 and got["checkpoints"] == 7
    assert got["witnessed"] == 7  # one signed head per commit, in the database and in the witness


def test_flipped_byte_is_detected(fhir: FhirClient, app: Any, trail: list[int]) -> None:
    tamper(
        app,
        (
            'UPDATE audit_event SET body = replace(body, \'"action":"R"\', \'"action":"U"\') WHERE pk = :pk',
            {"pk": trail[2]},
        ),
    )
    got = verdict(fhir)
    assert (got["result"], got["kind"], got["record"]) == ("broken", "changed", trail[2])
    assert "altered" in got["reason"]


def test_changed_column_is_detected(fhir: FhirClient, app: Any, trail: list[int]) -> None:
    tamper(app, ("UPDATE audit_event SET actor = 'Practitioner/innocent' WHERE pk = :pk", {"pk": trail[4]}))
    got = verdict(fhir)
    assert (got["result"], got["kind"], got["record"]) == ("broken", "changed", trail[4])


def test_deleted_record_is_detected(fhir: FhirClient, app: Any, trail: list[int]) -> None:
    tamper(app, ("DELETE FROM audit_event WHERE pk = :pk", {"pk": trail[2]}))
    got = verdict(fhir)
    assert (got["result"], got["kind"], got["record"]) == ("broken", "missing", trail[2])


def test_reordered_records_are_detected(fhir: FhirClient, app: Any, trail: list[int]) -> None:
    a, b = trail[1], trail[3]
    cols = "recorded, actor, client, patient, action, outcome, type, subtype, resource, query, prev_hash, hash, body"  # noqa: E501
    cols += ", key_id"
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
    assert (got["result"], got["kind"], got["record"]) == ("broken", "reordered", a)


def test_cut_tail_is_detected_by_the_signed_checkpoint(fhir: FhirClient, app: Any, trail: list[int]) -> None:
    tamper(app, ("DELETE FROM audit_event WHERE pk >= :pk", {"pk": trail[4]}))
    got = verdict(fhir)
    assert (got["result"], got["kind"], got["record"]) == ("broken", "tail-cut", trail[4])
    assert "tail" in got["reason"] or "ends" in got["reason"]


def test_cut_tail_and_its_checkpoints_is_detected_by_the_witness(
    fhir: FhirClient, app: Any, trail: list[int]
) -> None:
    tamper(
        app,
        ("DELETE FROM audit_event WHERE pk >= :pk", {"pk": trail[4]}),
        ("DELETE FROM audit_checkpoint WHERE event_pk >= :pk", {"pk": trail[4]}),
    )
    got = verdict(fhir)
    assert (got["result"], got["kind"], got["record"]) == ("broken", "witness-ahead", trail[4])


def test_forged_checkpoint_is_detected(fhir: FhirClient, app: Any, trail: list[int]) -> None:
    engine = _engine(app)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO audit_checkpoint (created, event_pk, head_hash, signature, key_id) "
                "VALUES (CURRENT_TIMESTAMP, :pk, 'x', 'forged', 'k1')"
            ),
            {"pk": trail[5]},
        )
    got = verdict(fhir)
    assert got["result"] == "broken" and got["kind"] in ("checkpoint-unsigned", "unknown-key")


def test_cli_verify(app: Any, database_url: str, trail: list[int]) -> None:
    from server.cli import cli

    runner = CliRunner()
    env = {"DATABASE_URL": database_url, "REHABFHIR_AUDIT_WITNESS": witness_path(database_url)}
    result = runner.invoke(cli, ["audit", "verify"], env=env)
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output.strip().splitlines()[-1])["result"] == "intact"
    tamper(app, ("DELETE FROM audit_event WHERE pk = :pk", {"pk": trail[1]}))
    result = runner.invoke(cli, ["audit", "verify"], env=env)
    assert result.exit_code == 1
    out = orjson.loads(result.output.strip().splitlines()[-1])
    assert (out["result"], out["kind"], out["record"]) == ("broken", "missing", trail[1])


def test_app_role_cannot_update_or_delete(app: Any, trail: list[int]) -> None:
    engine = _engine(app)
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
