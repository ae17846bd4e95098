"""The policy profile a request asked for ("auto:NAME"), whose thresholds decided; NULL: the policy's own
thresholds (every row before 0004).

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as table:  # batch mode: SQLite cannot ALTER every kind of column
        table.add_column(sa.Column("profile", sa.String(40)))


def downgrade() -> None:
    with op.batch_alter_table("decisions") as table:
        table.drop_column("profile")
