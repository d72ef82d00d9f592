"""at most one active (queued or running) cycle per plan, enforced by the database

With several control replicas, a scheduler hand-over (or a RunPlan on one replica while
another's scheduler starts the plan) could otherwise queue two cycles of one plan.
A partial unique index, which PostgreSQL and SQLite both support, makes the second
insert fail; cycles.start_cycle turns that into "already running".

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ACTIVE = sa.text("state IN ('queued', 'running')")
NAME = "uq_cycles_plan_id_active"


def upgrade() -> None:
    # The index cannot be built over duplicates. One process never made them, but fail
    # all but the newest active cycle of a plan if some exist, with their queued tasks.
    op.execute("""
        UPDATE cycles SET state = 'failed', error_reason = 'duplicate-cycle',
            error_message = 'another cycle of the plan was active (found by migration 0007)'
        WHERE state IN ('queued', 'running') AND id NOT IN (
            SELECT max(id) FROM cycles WHERE state IN ('queued', 'running') GROUP BY plan_id)
    """)
    op.execute("""
        UPDATE tasks SET state = 'cancelled' WHERE state = 'queued' AND cycle_id IN (
            SELECT id FROM cycles WHERE error_reason = 'duplicate-cycle')
    """)
    op.create_index(NAME, "cycles", ["plan_id"], unique=True,
                    postgresql_where=ACTIVE, sqlite_where=ACTIVE)


def downgrade() -> None:
    op.drop_index(NAME, table_name="cycles")
