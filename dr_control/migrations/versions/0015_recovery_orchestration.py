"""recovery orchestration: plan-level scripts, validation results, cancel, the config an
execution ran with

A recovery plan gets its plan-level pre/post scripts (its workloads' checks and scripts
live in boot_groups, like their other settings) and the failover that recovered it last.
An execution records the recovery plan as it was when it started (`config`: a resumed
execution, and a later forecast, see what it ran with even if the plan changed), each
workload's state and check results, and whether a cancel was asked for.

Revision ID: 0015
Revises: 0014
"""
from alembic import op
import sqlalchemy as sa

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recovery_plans") as batch:
        batch.add_column(sa.Column("scripts", sa.JSON, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("failed_over_by", sa.String(255), nullable=False,
                                   server_default=""))
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("config", sa.JSON, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("workloads", sa.JSON, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("cancel_requested", sa.Boolean, nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        for column in ("cancel_requested", "workloads", "config"):
            batch.drop_column(column)
    with op.batch_alter_table("recovery_plans") as batch:
        batch.drop_column("failed_over_by")
        batch.drop_column("scripts")
