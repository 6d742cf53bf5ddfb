"""Idempotent sends: a client-chosen id, unique per sender.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("messages", sa.Column("client_msg_id", sa.Text))
    # NULLs are distinct, so only messages that carry an id are deduplicated.
    op.create_unique_constraint("messages_sender_client_msg_id", "messages", ["sender_id", "client_msg_id"])


def downgrade():
    op.drop_constraint("messages_sender_client_msg_id", "messages")
    op.drop_column("messages", "client_msg_id")
