"""community board: issues, tags, fixes, likes, attachments (+ full-text search)

Revision ID: 0003_community
Revises: 0001_accounts
"""
from alembic import op
import sqlalchemy as sa
import portal.db


revision = "0003_community"
down_revision = "0001_accounts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "community_issues",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=True),
        sa.Column("fixes_count", sa.Integer(), nullable=False),
        sa.Column("likes_count", sa.Integer(), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["author_id"], ["users.id"], name=op.f("fk_community_issues_author_id_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_community_issues")),
    )
    with op.batch_alter_table("community_issues", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_community_issues_author_id"), ["author_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_community_issues_created_at"), ["created_at"], unique=False)
        batch_op.create_index("ix_community_issues_fixes", ["fixes_count", "created_at"], unique=False)
        batch_op.create_index("ix_community_issues_likes", ["likes_count", "created_at"], unique=False)
        batch_op.create_index("ix_community_issues_status_created", ["status", "created_at"], unique=False)

    op.create_table(
        "community_issue_tags",
        sa.Column("issue_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["issue_id"], ["community_issues.id"], name=op.f("fk_community_issue_tags_issue_id_community_issues"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("issue_id", "tag", name=op.f("pk_community_issue_tags")),
    )
    with op.batch_alter_table("community_issue_tags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_community_issue_tags_tag"), ["tag"], unique=False)

    op.create_table(
        "community_fixes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issue_id", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("likes_count", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["author_id"], ["users.id"], name=op.f("fk_community_fixes_author_id_users"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["issue_id"], ["community_issues.id"], name=op.f("fk_community_fixes_issue_id_community_issues"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_community_fixes")),
    )
    with op.batch_alter_table("community_fixes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_community_fixes_author_id"), ["author_id"], unique=False)
        batch_op.create_index("ix_community_fixes_issue_order", ["issue_id", "accepted", "likes_count"], unique=False)

    op.create_table(
        "community_fix_likes",
        sa.Column("fix_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["fix_id"], ["community_fixes.id"], name=op.f("fk_community_fix_likes_fix_id_community_fixes"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_community_fix_likes_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("fix_id", "user_id", name=op.f("pk_community_fix_likes")),
    )
    with op.batch_alter_table("community_fix_likes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_community_fix_likes_user_id"), ["user_id"], unique=False)

    op.create_table(
        "community_attachments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=64), nullable=False),
        sa.Column("content_type", sa.String(length=32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("uploader_id", sa.Integer(), nullable=True),
        sa.Column("issue_id", sa.Integer(), nullable=True),
        sa.Column("fix_id", sa.Integer(), nullable=True),
        sa.Column("created_at", portal.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["fix_id"], ["community_fixes.id"], name=op.f("fk_community_attachments_fix_id_community_fixes"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["issue_id"], ["community_issues.id"], name=op.f("fk_community_attachments_issue_id_community_issues"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["uploader_id"], ["users.id"], name=op.f("fk_community_attachments_uploader_id_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_community_attachments")),
        sa.UniqueConstraint("filename", name=op.f("uq_community_attachments_filename")),
    )
    with op.batch_alter_table("community_attachments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_community_attachments_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_community_attachments_fix_id"), ["fix_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_community_attachments_issue_id"), ["issue_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_community_attachments_uploader_id"), ["uploader_id"], unique=False)

    # Full-text search over title and body. Not part of the models on purpose: engine-specific.
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_community_issues_search ON community_issues "
            "USING gin (to_tsvector('english', title || ' ' || body))"
        )
    elif bind.dialect.name == "sqlite":
        # A plain FTS5 table keyed by rowid = issue id, kept in step by triggers.
        op.execute("CREATE VIRTUAL TABLE community_issues_fts USING fts5(title, body, tokenize='unicode61')")
        op.execute(
            "CREATE TRIGGER community_issues_fts_ai AFTER INSERT ON community_issues BEGIN "
            "INSERT INTO community_issues_fts(rowid, title, body) VALUES (new.id, new.title, new.body); END"
        )
        op.execute(
            "CREATE TRIGGER community_issues_fts_au AFTER UPDATE OF title, body ON community_issues BEGIN "
            "UPDATE community_issues_fts SET title = new.title, body = new.body WHERE rowid = old.id; END"
        )
        op.execute(
            "CREATE TRIGGER community_issues_fts_ad AFTER DELETE ON community_issues BEGIN "
            "DELETE FROM community_issues_fts WHERE rowid = old.id; END"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_community_issues_search")
    elif bind.dialect.name == "sqlite":
        for trig in ("ai", "au", "ad"):
            op.execute(f"DROP TRIGGER IF EXISTS community_issues_fts_{trig}")
        op.execute("DROP TABLE IF EXISTS community_issues_fts")
    op.drop_table("community_attachments")
    op.drop_table("community_fix_likes")
    op.drop_table("community_fixes")
    op.drop_table("community_issue_tags")
    op.drop_table("community_issues")
