"""upload_tasks.finalize_attempts: the number of the finalize run in force

Revision ID: 0004_finalize_attempts
Revises: 0003_tasks
Create Date: 2026-11-27 08:00:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0004_finalize_attempts'
down_revision = '0003_tasks'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('upload_tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('finalize_attempts', sa.Integer(), server_default='0', nullable=False))


def downgrade():
    with op.batch_alter_table('upload_tasks', schema=None) as batch_op:
        batch_op.drop_column('finalize_attempts')
