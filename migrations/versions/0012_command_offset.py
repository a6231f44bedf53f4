"""terminal command lines carry their moment in the recording

Revision ID: 0012_command_offset
Revises: 0011_files
Create Date: 2026-12-06 15:40:00

`command_logs.offset_ms`: milliseconds from the terminal session's start to the Enter that
ran the command (NULL for other sources and older rows); the session page jumps the
recording there.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_command_offset"
down_revision = "0011_files"
branch_labels = None
depends_on = None


# Plain ALTER TABLE (SQLite >= 3.35 drops columns natively): a batch copy of command_logs
# would break the search view that reads it.
def upgrade() -> None:
    op.add_column("command_logs", sa.Column("offset_ms", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("command_logs", "offset_ms")
