"""paired topology: a node's site, transfer address and pair health; a task's site

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("site", sa.String(length=63), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("transfer_address", sa.Text(), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("pairs", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("site", sa.String(length=63), nullable=False,
                                   server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("site")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("pairs")
        batch.drop_column("transfer_address")
        batch.drop_column("site")
