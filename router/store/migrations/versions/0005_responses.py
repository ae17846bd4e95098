"""Stored Responses (POST /v1/responses with store on): the Response as the client got it, its input items, and
the conversation so far as chat messages, which a later request continues with previous_response_id, and the
session its decisions are recorded under (the chain's first response id, unless the client named one).

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("response_id", sa.String(64), primary_key=True),
        sa.Column("at", sa.Float, nullable=False, index=True),
        sa.Column("response", sa.JSON, nullable=False),
        sa.Column("input_items", sa.JSON, nullable=False),
        sa.Column("conversation", sa.JSON, nullable=False),
        sa.Column("session_id", sa.String(200)),
    )


def downgrade() -> None:
    op.drop_table("responses")
