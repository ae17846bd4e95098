"""The first schema: one row per answered request, one feedback row per rated request.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("request_id", sa.String(200), primary_key=True),
        sa.Column("at", sa.Float, nullable=False, index=True),
        sa.Column("session_id", sa.String(200), index=True),
        sa.Column("endpoint", sa.String(40), nullable=False),
        sa.Column("model", sa.String(120)),
        sa.Column("chosen", sa.String(120)),
        sa.Column("rule", sa.String(60), nullable=False),
        sa.Column("task", sa.String(40)),
        sa.Column("policy_version", sa.String(200)),
        sa.Column("scores", sa.JSON),
        sa.Column("thresholds", sa.JSON),
        sa.Column("fallback", sa.Text),
        sa.Column("cascade", sa.JSON),
        sa.Column("ood_distance", sa.Float),
        sa.Column("latency_s", sa.Float),
        sa.Column("input_tokens", sa.Integer),
        sa.Column("output_tokens", sa.Integer),
        sa.Column("cost", sa.Float),
        sa.Column("prompt_sha256", sa.String(64)),
        sa.Column("prompt_embedding", sa.LargeBinary),
        sa.Column("prompt_text", sa.Text),
        sa.Column("response_text", sa.Text),
        sa.Column("response_embedding", sa.LargeBinary),
        sa.Column("response_toxicity", sa.Float),
    )
    op.create_table(
        "feedback",
        sa.Column("request_id", sa.String(200), sa.ForeignKey("decisions.request_id"), primary_key=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("rating", sa.String(20)),
        sa.Column("comment", sa.Text),
        sa.Column("extra", sa.JSON),
    )


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("decisions")
