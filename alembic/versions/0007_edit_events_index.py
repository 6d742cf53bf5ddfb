"""Deleting a message finds its edit events by an index, not by reading every event.

A deleted message's old texts leave the database with the `message_edited` events that
carried them; the lookup by message id was a sequential scan of `events` (4 ms at 22,000
rows, and events are kept for a while). The index is partial: only edit events are in it,
so storing a message (a `new_message` event) costs no more than before.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("""
        create index events_edited_message on events (((frame -> 'data' ->> 'id')::bigint))
        where frame ->> 'action' = 'message_edited'
    """)


def downgrade():
    op.drop_index("events_edited_message", "events")
