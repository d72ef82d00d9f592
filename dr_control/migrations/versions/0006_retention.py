"""retention rules per plan, recovery point state, garbage-collection bookkeeping

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("plans") as batch:
        for name in ("keep_hourly", "keep_daily", "keep_weekly"):
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False,
                                       server_default="0"))
        batch.add_column(sa.Column("gc_requested", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("last_gc_time", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("recovery_points") as batch:
        batch.add_column(sa.Column("state", sa.String(length=16), nullable=False,
                                   server_default="ready"))


def downgrade() -> None:
    with op.batch_alter_table("recovery_points") as batch:
        batch.drop_column("state")
    with op.batch_alter_table("plans") as batch:
        for name in ("last_gc_time", "gc_requested", "keep_weekly", "keep_daily",
                     "keep_hourly"):
            batch.drop_column(name)
