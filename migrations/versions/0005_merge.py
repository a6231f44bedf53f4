"""merge the community and terminal branches into one head

Revision ID: 0005_merge
Revises: 0003_community, 0004_terminal
Create Date: 2026-11-23 14:00:00
"""

revision = "0005_merge"
down_revision = ("0003_community", "0004_terminal")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
