"""files: a record of every file transfer

Revision ID: 0011_files
Revises: 0010_mfa
Create Date: 2026-12-06 15:20:00

`file_uploads`: resumable (tus) uploads in progress, with their offset.
`file_transfers`: who moved which file to or from which machine, its size, SHA-256,
duration and result (portal.files).
"""

import sqlalchemy as sa
from alembic import op

import portal.db

revision = "0011_files"
down_revision = "0010_mfa"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "file_transfers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("result", sa.String(length=200), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machines.id"],
            name=op.f("fk_file_transfers_machine_id_machines"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_file_transfers_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_file_transfers")),
    )
    op.create_index(
        "ix_file_transfers_machine_id_id", "file_transfers", ["machine_id", "id"], unique=False
    )


    op.create_table(
        "file_uploads",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("temp_path", sa.Text(), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("conflict", sa.String(length=16), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machines.id"],
            name=op.f("fk_file_uploads_machine_id_machines"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_file_uploads_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_file_uploads")),
    )
    op.create_index(
        op.f("ix_file_uploads_updated_at"), "file_uploads", ["updated_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_file_uploads_updated_at"), table_name="file_uploads")
    op.drop_table("file_uploads")
    op.drop_index("ix_file_transfers_machine_id_id", table_name="file_transfers")
    op.drop_table("file_transfers")
