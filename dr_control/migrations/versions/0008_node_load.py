"""node load and draining: the backpressure a node reports, and DrainNode's flag

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("backpressure", sa.Float(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("draining", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("draining")
        batch.drop_column("backpressure")
