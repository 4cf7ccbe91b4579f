"""Reliability: when a job was last sent to the broker (`jobs.dispatched_at`), a submit's
idempotency key and body digest (`jobs.idempotency_key`, `jobs.request_digest`), and the class
of a failure (`jobs.failure_class`) (reviewed).

- `dispatched_at`: the sweep sends a job queued this long ago again (a lost message);
- `idempotency_key`: the `Idempotency-Key` header of `POST /jobs`, unique per owner, so a client
  retrying a submit gets the job it already made; `request_digest` tells a reuse of the key
  with another body;
- `failure_class`: why a failed job failed (`user`, `infrastructure`, `worker_lost`,
  `out_of_memory`, `timeout`), which decides whether it is retried.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 08:30:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


# Plain ALTER TABLE (as in 0003), never a rebuild of `jobs`: under SQLite's foreign keys a
# rebuild would cascade-delete every job's metrics and artifacts.


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('jobs', recreate='never') as batch_op:
        batch_op.add_column(sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('request_digest', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('failure_class', sa.String(length=32), nullable=True))
    op.create_index(
        'uq_jobs_owner_id_idempotency_key',
        'jobs',
        ['owner_id', 'idempotency_key'],
        unique=True,
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('uq_jobs_owner_id_idempotency_key', table_name='jobs')
    with op.batch_alter_table('jobs', recreate='never') as batch_op:
        batch_op.drop_column('failure_class')
        batch_op.drop_column('request_digest')
        batch_op.drop_column('idempotency_key')
        batch_op.drop_column('dispatched_at')
