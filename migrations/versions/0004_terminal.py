"""terminal: terminal_sessions

Revision ID: 0004_terminal
Revises: 0002_machines
Create Date: 2026-11-23 13:10:00.000000
"""
from alembic import op
import sqlalchemy as sa
import portal.db


revision = '0004_terminal'
down_revision = '0002_machines'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('terminal_sessions',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('machine_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('close_reason', sa.String(length=255), nullable=True),
    sa.Column('cols', sa.Integer(), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('bytes_in', sa.BigInteger(), nullable=False),
    sa.Column('bytes_out', sa.BigInteger(), nullable=False),
    sa.Column('client_addr', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=255), nullable=True),
    sa.Column('recording_path', sa.String(length=255), nullable=True),
    sa.Column('shared', sa.Boolean(), nullable=False),
    sa.Column('server_id', sa.String(length=200), nullable=True),
    sa.Column('started_at', portal.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ended_at', portal.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_activity_at', portal.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['machine_id'], ['machines.id'], name=op.f('fk_terminal_sessions_machine_id_machines'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_terminal_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_terminal_sessions'))
    )
    with op.batch_alter_table('terminal_sessions', schema=None) as batch_op:
        batch_op.create_index('ix_terminal_sessions_machine_id_started_at', ['machine_id', 'started_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_terminal_sessions_status'), ['status'], unique=False)
        batch_op.create_index('ix_terminal_sessions_user_id_status', ['user_id', 'status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('terminal_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_terminal_sessions_user_id_status')
        batch_op.drop_index(batch_op.f('ix_terminal_sessions_status'))
        batch_op.drop_index('ix_terminal_sessions_machine_id_started_at')

    op.drop_table('terminal_sessions')
