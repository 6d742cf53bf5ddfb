"""`unread.message_id` loses its foreign key, as `unread.user_id` did in 0004.

Its rows are written only in the statement that stores their message (create_messages), from
the row just inserted, and messages are never deleted by the server (a deleted message stays
as a tombstone, its unread rows removed first). Checking the key cost one lookup and row lock
on `messages` per recipient: nine per message in a group of ten, 499 in a group of 500.
Measured (PostgreSQL CPU per stored message, create_messages from two connections, the
embedded PostgreSQL 18 alone on the machine): groups of ten, batches of 16, 161 → 121 µs
(9,264 → 11,191 messages/s); a group of 500, one at a time, 5.4 → 2.7 ms. Rows whose message
an operator deletes by hand are left behind, and every query joins them to `messages`, so they
are never seen.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    op.drop_constraint("unread_message_id_fkey", "unread", type_="foreignkey")


def downgrade():
    op.execute("delete from unread u where not exists (select from messages m where m.id = u.message_id)")
    op.create_foreign_key("unread_message_id_fkey", "unread", "messages", ["message_id"], ["id"], ondelete="CASCADE")
