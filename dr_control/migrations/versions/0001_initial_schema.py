"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 07:55:15.972590
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('nodes',
    sa.Column('id', sa.String(length=63), nullable=False),
    sa.Column('hostname', sa.Text(), nullable=False),
    sa.Column('version', sa.String(length=32), nullable=False),
    sa.Column('max_tasks', sa.Integer(), nullable=False),
    sa.Column('budget_bytes', sa.BigInteger(), nullable=False),
    sa.Column('running_tasks', sa.Integer(), nullable=False),
    sa.Column('inflight_bytes', sa.BigInteger(), nullable=False),
    sa.Column('last_heartbeat_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('register_time', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('sites',
    sa.Column('id', sa.String(length=63), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('credential_ref', sa.Text(), nullable=False),
    sa.Column('create_time', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('plans',
    sa.Column('id', sa.String(length=63), nullable=False),
    sa.Column('source_site', sa.String(length=63), nullable=False),
    sa.Column('target_site', sa.String(length=63), nullable=False),
    sa.Column('target_kind', sa.String(length=16), nullable=False),
    sa.Column('workloads', sa.JSON(), nullable=False),
    sa.Column('disks', sa.JSON(), nullable=False),
    sa.Column('rpo_seconds', sa.BigInteger(), nullable=False),
    sa.Column('keep_last', sa.Integer(), nullable=False),
    sa.Column('chunk_size', sa.BigInteger(), nullable=False),
    sa.Column('compression', sa.String(length=16), nullable=False),
    sa.Column('paused', sa.Boolean(), nullable=False),
    sa.Column('create_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('run_requested', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['source_site'], ['sites.id'], ),
    sa.ForeignKeyConstraint(['target_site'], ['sites.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('workloads',
    sa.Column('site_id', sa.String(length=63), nullable=False),
    sa.Column('id', sa.String(length=63), nullable=False),
    sa.Column('display_name', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ),
    sa.PrimaryKeyConstraint('site_id', 'id')
    )
    op.create_table('cycles',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('plan_id', sa.String(length=63), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('create_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('end_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('recovery_point_id', sa.String(length=63), nullable=True),
    sa.Column('error_reason', sa.String(length=64), nullable=False),
    sa.Column('error_message', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('plan_id', 'seq')
    )
    with op.batch_alter_table('cycles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cycles_plan_id'), ['plan_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_cycles_state'), ['state'], unique=False)

    op.create_table('disks',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('site_id', sa.String(length=63), nullable=False),
    sa.Column('workload_id', sa.String(length=63), nullable=False),
    sa.Column('id', sa.String(length=63), nullable=False),
    sa.Column('display_name', sa.Text(), nullable=False),
    sa.Column('locator', sa.Text(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sector_size', sa.Integer(), nullable=False),
    sa.Column('cbt', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['site_id', 'workload_id'], ['workloads.site_id', 'workloads.id'], ),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('recovery_points',
    sa.Column('plan_id', sa.String(length=63), nullable=False),
    sa.Column('id', sa.String(length=63), nullable=False),
    sa.Column('cycle_id', sa.Integer(), nullable=False),
    sa.Column('cycle_seq', sa.Integer(), nullable=False),
    sa.Column('create_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('disks', sa.JSON(), nullable=False),
    sa.Column('stats', sa.JSON(), nullable=False),
    sa.Column('locked', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['cycle_id'], ['cycles.id'], ),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], ),
    sa.PrimaryKeyConstraint('plan_id', 'id')
    )
    with op.batch_alter_table('recovery_points', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recovery_points_create_time'), ['create_time'], unique=False)

    op.create_table('tasks',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('cycle_id', sa.Integer(), nullable=True),
    sa.Column('plan_id', sa.String(length=63), nullable=True),
    sa.Column('disk', sa.String(length=255), nullable=False),
    sa.Column('target', sa.String(length=255), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('node_id', sa.String(length=63), nullable=True),
    sa.Column('lease_token', sa.BigInteger(), nullable=False),
    sa.Column('lease_expire_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('checkpoint', sa.JSON(), nullable=False),
    sa.Column('stats', sa.JSON(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('bytes_done', sa.BigInteger(), nullable=False),
    sa.Column('bytes_total', sa.BigInteger(), nullable=False),
    sa.Column('full_sync', sa.Boolean(), nullable=False),
    sa.Column('error_reason', sa.String(length=64), nullable=False),
    sa.Column('error_message', sa.Text(), nullable=False),
    sa.Column('create_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('end_time', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['cycle_id'], ['cycles.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tasks_cycle_id'), ['cycle_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tasks_state'), ['state'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tasks_state'))
        batch_op.drop_index(batch_op.f('ix_tasks_cycle_id'))

    op.drop_table('tasks')
    with op.batch_alter_table('recovery_points', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recovery_points_create_time'))

    op.drop_table('recovery_points')
    op.drop_table('disks')
    with op.batch_alter_table('cycles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cycles_state'))
        batch_op.drop_index(batch_op.f('ix_cycles_plan_id'))

    op.drop_table('cycles')
    op.drop_table('workloads')
    op.drop_table('plans')
    op.drop_table('sites')
    op.drop_table('nodes')

