"""Which encoder made each prompt embedding: a router on the static encoder stores its own embeddings beside
MiniLM's, and retraining and monitoring read only those of the router's encoder. NULL (every row before 0003)
is the catalogue's encoder, the only one the ingress stored until then.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as table:  # batch mode: SQLite cannot ALTER every kind of column
        table.add_column(sa.Column("prompt_embedding_encoder", sa.String(80)))


def downgrade() -> None:
    with op.batch_alter_table("decisions") as table:
        table.drop_column("prompt_embedding_encoder")
