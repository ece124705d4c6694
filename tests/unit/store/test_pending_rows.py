"""PendingRows on PostgreSQL: an update drops its resource's index rows still queued, and only those."""

from __future__ import annotations

from types import SimpleNamespace

from server.fhir.search.rows import IndexRows
from server.fhir.search.rows import StringRow
from server.fhir.search.rows import TokenRow
from server.store import indexes
from server.store.index_models import CompartmentMembership
from server.store.index_models import StringIndex
from server.store.index_models import TokenIndex

_POSTGRES = SimpleNamespace(get_bind=lambda: SimpleNamespace(dialect=SimpleNamespace(name="postgresql")))


def _write(code: str) -> SimpleNamespace:
    rows = IndexRows(tokens=[TokenRow("code", "s", code, None)], strings=[StringRow("name", code, code)])
    return SimpleNamespace(rows=rows, compartments=(("Patient", "p1"),))


def _queued(pending: indexes.PendingRows) -> dict[str, list[tuple[object, object]]]:
    tables = {"token": TokenIndex, "string": StringIndex, "compartment": CompartmentMembership}
    return {
        name: sorted(
            (r["res_pk"], r.get("code") or r.get("norm") or r.get("owner_id"))
            for r in pending.rows[t.__table__]
        )
        for name, t in tables.items()
    }


def test_an_update_drops_only_its_own_queued_rows() -> None:
    pending = indexes.PendingRows()
    indexes.replace(_POSTGRES, 1, _write("a"), pending, fresh=True)  # type: ignore[arg-type]
    indexes.replace(_POSTGRES, 2, _write("b"), pending, fresh=True)  # type: ignore[arg-type]
    indexes.replace(_POSTGRES, 1, _write("c"), pending)  # type: ignore[arg-type]
    indexes.replace(_POSTGRES, 3, _write("d"), pending)  # type: ignore[arg-type]  (nothing of 3 queued)
    assert _queued(pending) == {
        "token": [(1, "c"), (2, "b"), (3, "d")],
        "string": [(1, "c"), (2, "b"), (3, "d")],
        "compartment": [(1, "p1"), (2, "p1"), (3, "p1")],
    }
    assert pending.replaced == [1, 3]
    indexes.replace(_POSTGRES, 1, None, pending)  # type: ignore[arg-type]  (a delete: no new rows)
    indexes.replace(_POSTGRES, 2, _write("e"), pending)  # type: ignore[arg-type]
    assert _queued(pending) == {
        "token": [(2, "e"), (3, "d")],
        "string": [(2, "e"), (3, "d")],
        "compartment": [(2, "p1"), (3, "p1")],
    }
    assert pending.replaced == [1, 3, 1, 2]
    pending.clear()
    assert not pending and not pending.indexed
