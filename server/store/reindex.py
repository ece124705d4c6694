"""Rebuild every search index row and compartment membership from the stored bodies.

Run after the search definitions or the indexer change (`rehabfhir db reindex`). Works in
batches of resources in primary-key order, committing each batch, so memory stays flat and
a large database shows steady progress.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
import sqlalchemy as sa
from sqlalchemy import orm as so

from server.fhir.repository import WriteRequest
from server.fhir.search.indexer import compartments_of
from server.fhir.search.indexer import index_resource
from server.store import indexes
from server.store.models import ResourceRecord
from server.store.session import begin_write

ProgressCallback = Callable[[int, int], None]


def reindex(
    session: so.Session,
    progress_callback: ProgressCallback | None = None,
    *,
    batch_size: int = 500,
    resource_type: str | None = None,
) -> int:
    """Rewrite the index rows of every current resource; report (done, total); return done."""
    r = ResourceRecord
    scope = [r.type == resource_type] if resource_type else []
    total = int(session.scalar(sa.select(sa.func.count()).select_from(r).where(*scope)) or 0)
    session.rollback()
    done, last_pk = 0, -1
    if progress_callback is not None:
        progress_callback(0, total)
    while True:
        begin_write(session)
        rows = session.execute(
            sa.select(r.pk, r.deleted, r.body).where(r.pk > last_pk, *scope).order_by(r.pk).limit(batch_size)
        ).all()
        if not rows:
            session.rollback()
            break
        pending = indexes.PendingRows()
        for pk, deleted, body in rows:
            indexes.replace(session, pk, None if deleted or body is None else _write(body), pending)
        pending.flush(session)
        session.commit()
        done += len(rows)
        last_pk = rows[-1].pk
        if progress_callback is not None:
            progress_callback(done, total)
    return done


def _write(body: str) -> WriteRequest:
    resource = orjson.loads(body)
    return WriteRequest(
        resource=resource, rows=index_resource(resource), compartments=tuple(compartments_of(resource))
    )
