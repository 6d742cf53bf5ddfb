"""Messages can be edited and deleted; a group has an owner.

`messages.edited_at` is the time of the last edit; `messages.deleted_at` marks a deleted
message, whose text is emptied (its row stays: its id keeps replies and client_msg_id retries
meaningful). `chats.owner_id` is the group's owner, its creator at first; for the groups that
exist already, the member who joined first (ties by user id), since the creator was not kept.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("messages", sa.Column("edited_at", sa.DateTime(timezone=True)))
    op.add_column("messages", sa.Column("deleted_at", sa.DateTime(timezone=True)))
    op.add_column("chats", sa.Column("owner_id", UUID, sa.ForeignKey("users.id", ondelete="SET NULL")))
    op.execute("""
        update chats c set owner_id = (
            select m.user_id from chat_members m where m.chat_id = c.id order by m.joined_at, m.user_id limit 1
        )
        where c.type = 'group'
    """)


def downgrade():
    op.drop_column("chats", "owner_id")
    op.drop_column("messages", "deleted_at")
    op.drop_column("messages", "edited_at")
