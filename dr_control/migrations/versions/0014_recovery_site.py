"""recovery sites: a recovery plan names the site it recovers to, and a task the site its
data is written to

A recovery plan recovered to its protection plan's target site (the only provider, EC2,
launches that site's EBS snapshots). Recovery into vSphere moves a repository point's
disks to another site, so a plan names its recovery site (rows before this one get
their protection plan's target site, which is what they meant), and the restore tasks
that upload the disks name the site they write to, whose settings the node gets with
the task (`destination_site`, "" for every other task).

Revision ID: 0014
Revises: 0013
"""
from alembic import op
import sqlalchemy as sa

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recovery_plans") as batch:
        batch.add_column(sa.Column("site_id", sa.String(63), nullable=False,
                                   server_default=""))
    op.execute("UPDATE recovery_plans SET site_id = (SELECT plans.target_site FROM plans "
               "WHERE plans.id = recovery_plans.plan_id)")
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("destination_site", sa.String(63), nullable=False,
                                   server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("destination_site")
    with op.batch_alter_table("recovery_plans") as batch:
        batch.drop_column("site_id")
