"""subscription_state: the owning user (subject) and the creating token's jti and refresh family

A subscription is owned by its client and, for a user's token, that user (server.fhir.access
OWNER_USER_TAG), and its deliveries stop when the creating token or its family is revoked
(server.subscriptions.grants). Existing subscriptions created by a user's token get their user
as subject, and every stored version of their Subscription its client-and-user owner tag in
place of the client-only one (the body and the current version's `_tag` index row), so their
owner keeps reading them and the app's other users do not. Their token is not known: only the
client's registration and the user bound their deliveries.

Revision ID: s003
Revises: a004
Create Date: 2026-12-08 04:00:00
"""

from __future__ import annotations

import json
from urllib.parse import quote

import sqlalchemy as sa
from alembic import op

revision = "s003"
down_revision = "a004"
branch_labels = None
depends_on = None

# As server.fhir.access has them at this revision (a migration does not import the application).
OWNER_TAG = "https://rehabfhir.org/fhir/CodeSystem/owner-client"
OWNER_USER_TAG = "https://rehabfhir.org/fhir/CodeSystem/owner-client-user"


def _retagged(body: str | None, old: dict[str, str], new: dict[str, str]) -> str | None:
    if not body:
        return body
    resource = json.loads(body)
    meta = resource.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    if not isinstance(tags, list) or old not in tags:
        return body
    meta["tag"] = [new if t == old else t for t in tags]
    return json.dumps(resource, separators=(",", ":"), ensure_ascii=False)


def upgrade() -> None:
    with op.batch_alter_table("subscription_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("token_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("token_family", sa.String(length=255), nullable=True))
    conn = op.get_bind()
    owners = conn.execute(
        sa.text(
            "SELECT id, client_id, user_id, patient FROM subscription_state"
            " WHERE client_id IS NOT NULL AND (user_id IS NOT NULL OR patient IS NOT NULL)"
        )
    ).all()
    for id_, client_id, user_id, patient in owners:
        subject = user_id or f"Patient/{patient}"
        conn.execute(
            sa.text("UPDATE subscription_state SET subject = :s WHERE id = :id"), {"s": subject, "id": id_}
        )
        old = {"system": OWNER_TAG, "code": client_id}
        new = {"system": OWNER_USER_TAG, "code": f"{quote(subject, safe='/:')}@{client_id}"}
        for table in ("resource", "resource_version"):
            rows = conn.execute(
                sa.text(f"SELECT pk, body FROM {table} WHERE type = 'Subscription' AND id = :id"), {"id": id_}
            ).all()
            for pk, body in rows:
                changed = _retagged(body, old, new)
                if changed != body:
                    conn.execute(
                        sa.text(f"UPDATE {table} SET body = :b WHERE pk = :pk"), {"b": changed, "pk": pk}
                    )
        conn.execute(
            sa.text(
                "UPDATE idx_token SET system = :new_system, code = :new_code"
                " WHERE param = '_tag' AND system = :old_system AND code = :old_code AND res_pk IN"
                " (SELECT pk FROM resource WHERE type = 'Subscription' AND id = :id)"
            ),
            {
                "new_system": new["system"],
                "new_code": new["code"],
                "old_system": old["system"],
                "old_code": old["code"],
                "id": id_,
            },
        )


def downgrade() -> None:
    # The tags stay as they are (client and user): the older code shows such a version to no one
    # but the in-process system, which is the safe side.
    with op.batch_alter_table("subscription_state", schema=None) as batch_op:
        batch_op.drop_column("token_family")
        batch_op.drop_column("token_id")
        batch_op.drop_column("subject")
