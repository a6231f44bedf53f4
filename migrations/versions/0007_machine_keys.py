"""a key pair per machine; the shared portal key is gone

Revision ID: 0007_machine_keys
Revises: 0006_log_indexes
Create Date: 2026-11-23 14:30:00

Machines using auth_method "portal_key" used one key pair shared by every machine
(`portal_keys`). Each machine now has its own pair (machines.key_enc / public_key).
The shared pair is dropped: it must not reach any machine again. Existing
"portal_key" machines get a new pair on their next edit / "check connection";
until their owner installs the new public line they cannot be reached.
"""

import sqlalchemy as sa
from alembic import op

import portal.db

revision = "0007_machine_keys"
down_revision = "0006_log_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_enc", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("public_key", sa.Text(), nullable=True))
    op.drop_table("portal_keys")


def downgrade() -> None:
    op.create_table(
        "portal_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_line", sa.Text(), nullable=False),
        sa.Column("private_enc", sa.Text(), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_keys")),
    )
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.drop_column("public_key")
        batch_op.drop_column("key_enc")
