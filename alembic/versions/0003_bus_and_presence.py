"""The event bus between server processes, and who is online.

`events` is the outbox: every frame that must reach sockets is a row, written in the
transaction that caused it; a NOTIFY on "chat_events" (sent only if that transaction
commits) wakes every process to read the new rows. `processes` holds each running
server process with a heartbeat, `presence` which users have a socket on which process.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("user_ids", ARRAY(UUID), nullable=False),  # whose sockets get it
        sa.Column("skip_socket", UUID),  # the socket that caused it, answered directly
        # The frame itself, or NULL for new_message: built from the message row instead.
        sa.Column("frame", JSONB),
        sa.Column("message_id", sa.BigInteger, sa.ForeignKey("messages.id", ondelete="CASCADE")),
        sa.CheckConstraint("(frame is null) <> (message_id is null)", name="events_frame_or_message"),
    )
    # Append-only by time: a BRIN index makes pruning old events cheap and costs inserts next to nothing.
    op.create_index("events_created_at", "events", ["created_at"], postgresql_using="brin")
    op.execute(
        """
        create function notify_chat_events() returns trigger language plpgsql as $$
        begin
            -- One wake-up per statement; the payload is empty, readers fetch the rows.
            if exists (select from inserted) then
                perform pg_notify('chat_events', '');
            end if;
            return null;
        end $$
        """
    )
    op.execute(
        """
        create trigger events_notify after insert on events
        referencing new table as inserted
        for each statement execute function notify_chat_events()
        """
    )
    op.create_table(
        "processes",
        sa.Column("id", UUID, primary_key=True),
        # Pushed forward by every heartbeat; a process past it has died.
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "presence",
        sa.Column("user_id", UUID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("process_id", UUID, sa.ForeignKey("processes.id", ondelete="CASCADE"), primary_key=True),
    )
    op.create_index("presence_process_id", "presence", ["process_id"])


def downgrade():
    op.drop_table("presence")
    op.drop_table("processes")
    op.execute("drop trigger events_notify on events")
    op.execute("drop function notify_chat_events()")
    op.drop_table("events")
