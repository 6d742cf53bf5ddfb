"""Events record the process that wrote them by itself.

Each server process names its pooled connections (`application_name`), and
`events.origin` now defaults to that name: the code that writes an event no longer
passes its process along. A process delivers its own events at commit, and its
listener skips the rows that carry its name. `processes` and `presence` are keyed by
the same name.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.alter_column(
        "events",
        "origin",
        type_=sa.Text,
        postgresql_using="origin::text",
        server_default=sa.text("current_setting('application_name')"),
    )
    op.drop_constraint("presence_process_id_fkey", "presence", type_="foreignkey")
    op.alter_column("processes", "id", type_=sa.Text, postgresql_using="id::text")
    op.alter_column("presence", "process_id", type_=sa.Text, postgresql_using="process_id::text")
    op.create_foreign_key(
        "presence_process_id_fkey", "presence", "processes", ["process_id"], ["id"], ondelete="CASCADE"
    )


def downgrade():
    # Names are not uuids: the running processes' rows cannot be kept (they announce themselves again).
    op.execute("delete from processes")
    op.drop_constraint("presence_process_id_fkey", "presence", type_="foreignkey")
    op.alter_column("presence", "process_id", type_=sa.Uuid, postgresql_using="process_id::uuid")
    op.alter_column("processes", "id", type_=sa.Uuid, postgresql_using="id::uuid")
    op.create_foreign_key(
        "presence_process_id_fkey", "presence", "processes", ["process_id"], ["id"], ondelete="CASCADE"
    )
    op.alter_column("events", "origin", server_default=None)
    op.alter_column("events", "origin", type_=sa.Uuid, postgresql_using="null")
