"""command log indexes for the dashboard's counts

Revision ID: 0006_log_indexes
Revises: 0005_merge
Create Date: 2026-11-23 14:00:00
"""

from alembic import op

revision = "0006_log_indexes"
down_revision = "0005_merge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_command_logs_machine_id_created_at",
        "command_logs",
        ["machine_id", "created_at", "exit_code"],
    )
    op.create_index(
        "ix_command_logs_created_at_exit_code", "command_logs", ["created_at", "exit_code"]
    )


def downgrade() -> None:
    op.drop_index("ix_command_logs_created_at_exit_code", table_name="command_logs")
    op.drop_index("ix_command_logs_machine_id_created_at", table_name="command_logs")
