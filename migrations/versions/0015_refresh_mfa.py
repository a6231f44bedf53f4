"""refresh tokens remember the second-factor check of their sign-in

Revision ID: 0015_refresh_mfa
Revises: 0014_machine_names
Create Date: 2026-12-06 21:00:00

`refresh_tokens.mfa_at`: the Unix time of the second-factor check behind the sign-in that
started this token's family (NULL: none). A refreshed access JWT carries it as its `mfa_at`
claim, so the fact survives a refresh while its freshness (step-up) does not grow.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_refresh_mfa"
down_revision = "0014_machine_names"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("refresh_tokens", sa.Column("mfa_at", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_column("mfa_at")
