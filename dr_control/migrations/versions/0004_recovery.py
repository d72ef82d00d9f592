"""recovery plans and their executions

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recovery_plans",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("plan_id", sa.String(length=63), nullable=False),
        sa.Column("boot_groups", sa.JSON(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("recovery_plans") as batch:
        batch.create_index(batch.f("ix_recovery_plans_plan_id"), ["plan_id"], unique=False)
    op.create_table(
        "executions",
        sa.Column("recovery_plan_id", sa.String(length=63), nullable=False),
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("recovery_point", sa.String(length=255), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("cleanup_requested", sa.Boolean(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("instances", sa.JSON(), nullable=False),
        sa.Column("error_reason", sa.String(length=64), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["recovery_plan_id"], ["recovery_plans.id"]),
        sa.PrimaryKeyConstraint("recovery_plan_id", "id"),
        sa.UniqueConstraint("recovery_plan_id", "seq"),
    )
    with op.batch_alter_table("executions") as batch:
        batch.create_index(batch.f("ix_executions_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_index(batch.f("ix_executions_state"))
    op.drop_table("executions")
    with op.batch_alter_table("recovery_plans") as batch:
        batch.drop_index(batch.f("ix_recovery_plans_plan_id"))
    op.drop_table("recovery_plans")
