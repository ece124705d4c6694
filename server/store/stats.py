"""Counts for /metrics, read at scrape time."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import orm as so

from server.store.jobs import ExportJob


def export_jobs_by_status(session: so.Session) -> dict[str, int]:
    """Return how many export jobs are in each status."""
    rows = session.execute(sa.select(ExportJob.status, sa.func.count()).group_by(ExportJob.status))
    return {str(status): int(count) for status, count in rows}


def pool_state(engine: sa.Engine) -> dict[str, int]:
    """Return the pool's size, checked-out, idle and overflow connections (where it counts them)."""
    pool = engine.pool
    state: dict[str, int] = {}
    for name, method in (
        ("size", "size"),
        ("checked_out", "checkedout"),
        ("idle", "checkedin"),
        ("overflow", "overflow"),
    ):
        counter = getattr(pool, method, None)
        if callable(counter):
            state[name] = int(counter())
    return state
