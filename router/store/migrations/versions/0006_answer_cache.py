"""The answer cache shared by every ingress replica (the policy's `cache.shared`): a greedy request's answer under
its cache key, with the time it was kept, from which its TTL runs.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "answer_cache",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("at", sa.Float, nullable=False, index=True),
        sa.Column("answer", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("answer_cache")
