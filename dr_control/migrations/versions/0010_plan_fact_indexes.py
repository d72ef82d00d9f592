"""indexes for per-plan facts read for many plans at once (control-plane load)

A plan's newest recovery point is found by an index probe on (plan_id, create_time)
(dr_control/services/planfacts.py), for ListPlans, the RPO report and the scheduler.

Revision ID: 0010
Revises: 0009
"""
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_recovery_points_plan_id_create_time", "recovery_points",
                    ["plan_id", "create_time"])


def downgrade() -> None:
    op.drop_index("ix_recovery_points_plan_id_create_time", table_name="recovery_points")
