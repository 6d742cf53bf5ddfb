"""A lighter write path for messages.

- A process delivers its own events itself, at once: `events.origin` names it, and that
  process's bus skips them (the others still read them). This replaces `skip_socket`: the
  socket an event skips is known only to the process that holds it.
- `unread.user_id` loses its foreign key. Its rows are written only from `chat_members`
  (which has one), and checking the nine rows of every message in a group of ten cost about
  a quarter of storing it (measured with bench/run.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("events", sa.Column("origin", UUID))  # NULL: every process's bus delivers it
    op.drop_column("events", "skip_socket")
    op.drop_constraint("unread_user_id_fkey", "unread", type_="foreignkey")


def downgrade():
    op.create_foreign_key("unread_user_id_fkey", "unread", "users", ["user_id"], ["id"], ondelete="CASCADE")
    op.add_column("events", sa.Column("skip_socket", UUID))
    op.drop_column("events", "origin")
