"""The shadow policy's decision beside the live one: what a candidate policy would have chosen, never served.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = [("shadow_policy_version", sa.String(200)), ("shadow_model", sa.String(120)),
           ("shadow_rule", sa.String(60)), ("shadow_scores", sa.JSON)]


def upgrade() -> None:
    with op.batch_alter_table("decisions") as table:  # batch mode: SQLite cannot ALTER every kind of column
        for name, kind in COLUMNS:
            table.add_column(sa.Column(name, kind))


def downgrade() -> None:
    with op.batch_alter_table("decisions") as table:
        for name, _ in COLUMNS:
            table.drop_column(name)
