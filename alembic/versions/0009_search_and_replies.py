"""Search over messages, and replies.

- `messages_search`: a GIN index of each message's words, for /search. The expression is
  the one the search query matches (queries.sql: search_messages), to the character: an
  index on another expression is never used. Punctuation becomes a space first, so that
  "staging.example.com" is three words, as a person reads it, not one host name; the
  `simple` configuration lowercases each word in the database's locale and keeps it whole
  (no stemming, no stop words): a word is found by any prefix of it, in any language.
  The pending list is kept small, as for `events_user_ids` (see 0008).
- `messages.reply_to`: the message a message replies to. A deleted message stays as a
  tombstone, so the id keeps meaning.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("messages", sa.Column("reply_to", sa.BigInteger, sa.ForeignKey("messages.id"), nullable=True))
    op.execute("""
        create index messages_search on messages
        using gin (to_tsvector('simple', regexp_replace(text, '[^[:alnum:]]+', ' ', 'g')))
        with (gin_pending_list_limit = 256)
    """)


def downgrade():
    op.drop_index("messages_search", "messages")
    op.drop_column("messages", "reply_to")
