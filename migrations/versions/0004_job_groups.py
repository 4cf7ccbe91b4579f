"""Job groups (`job_groups`) and a job's group membership (`jobs.group_id`, `jobs.group_index`,
`jobs.sweep_values`) (reviewed).

A group is a sweep (grid x zip over dotted spec keys) submitted at once; its members are
ordinary jobs that carry the group's id, their index in the expansion and the values the sweep
set for them. Jobs submitted alone have nulls in all three.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 08:10:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


# `jobs` is altered in place (as in 0003), never rebuilt: a rebuild under SQLite's foreign keys
# would cascade-delete every job's metrics and artifacts. SQLite accepts `ADD COLUMN ...
# REFERENCES` for a nullable column (and drops it in place), so the foreign key is the
# column's own clause there. It has no ON DELETE action (SQLAlchemy does not reflect one from
# a column clause, so models and migrations could not be compared): a group is not deleted
# while it has members; deleting an owner deletes both.


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('job_groups',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('family', sa.String(length=64), nullable=False),
    sa.Column('spec', JSON_TYPE, nullable=False),
    sa.Column('sweep', JSON_TYPE, nullable=False),
    sa.Column('metric', sa.String(length=128), nullable=True),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['owners.id'], name=op.f('fk_job_groups_owner_id_owners'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_groups'))
    )
    op.create_index('ix_job_groups_owner_id_created_at', 'job_groups', ['owner_id', 'created_at'], unique=False)
    if op.get_bind().dialect.name == 'sqlite':
        # Alembic has no in-place foreign key for SQLite; the column clause is plain SQL.
        op.execute(
            'ALTER TABLE jobs ADD COLUMN group_id VARCHAR(36) CONSTRAINT '
            'fk_jobs_group_id_job_groups REFERENCES job_groups (id)'
        )
        with op.batch_alter_table('jobs', recreate='never') as batch_op:
            batch_op.add_column(sa.Column('group_index', sa.Integer(), nullable=True))
            batch_op.add_column(sa.Column('sweep_values', JSON_TYPE, nullable=True))
    else:
        op.add_column('jobs', sa.Column('group_id', sa.String(length=36), nullable=True))
        op.add_column('jobs', sa.Column('group_index', sa.Integer(), nullable=True))
        op.add_column('jobs', sa.Column('sweep_values', JSON_TYPE, nullable=True))
        op.create_foreign_key(op.f('fk_jobs_group_id_job_groups'), 'jobs', 'job_groups', ['group_id'], ['id'])
    op.create_index('ix_jobs_group_id_group_index', 'jobs', ['group_id', 'group_index'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_jobs_group_id_group_index', table_name='jobs')
    if op.get_bind().dialect.name == 'sqlite':
        # SQLite >= 3.35 drops these in place (the foreign key is the column's own clause).
        with op.batch_alter_table('jobs', recreate='never') as batch_op:
            batch_op.drop_column('sweep_values')
            batch_op.drop_column('group_index')
            batch_op.drop_column('group_id')
    else:
        op.drop_constraint(op.f('fk_jobs_group_id_job_groups'), 'jobs', type_='foreignkey')
        op.drop_column('jobs', 'sweep_values')
        op.drop_column('jobs', 'group_index')
        op.drop_column('jobs', 'group_id')
    op.drop_index('ix_job_groups_owner_id_created_at', table_name='job_groups')
    op.drop_table('job_groups')

