"""The initial schema: users and tokens, studies with tags, notes, jobs and results, artifacts, the gallery.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = False) -> sa.Column:
    # Frozen here on purpose: a migration must not change when app.api.models.UtcDateTime does.
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create every table of the store."""
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        _when("created_at"),
        _when("last_used_at", nullable=True),
        _when("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(op.f("ix_api_tokens_user_id"), "api_tokens", ["user_id"])

    op.create_table(
        "studies",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("preset", sa.String(64), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("parent_id", sa.String(32), nullable=True),
        sa.Column("submitted", sa.Boolean(), nullable=False),
        sa.Column("plan_job_id", sa.String(200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=True),
        sa.Column("stages_done", sa.Integer(), nullable=False),
        sa.Column("stages_total", sa.Integer(), nullable=False),
        _when("created_at"),
        _when("updated_at"),
        _when("started_at", nullable=True),
        _when("finished_at", nullable=True),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_studies_owner_id_users"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["parent_id"], ["studies.id"], name=op.f("fk_studies_parent_id_studies"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
    )
    for column in ("created_at", "name", "owner_id", "preset", "run_id", "status"):
        op.create_index(op.f(f"ix_studies_{column}"), "studies", [column])

    op.create_table(
        "study_tags",
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name=op.f("fk_study_tags_study_id_studies"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("study_id", "name", name=op.f("pk_study_tags")),
    )
    op.create_index(op.f("ix_study_tags_name"), "study_tags", ["name"])

    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        _when("created_at"),
        sa.ForeignKeyConstraint(["author_id"], ["users.id"], name=op.f("fk_notes_author_id_users"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name=op.f("fk_notes_study_id_studies"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notes")),
    )
    op.create_index(op.f("ix_notes_study_id"), "notes", ["study_id"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("eta_s", sa.Float(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(255), nullable=True),
        _when("started_at", nullable=True),
        _when("ended_at", nullable=True),
        _when("updated_at"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name=op.f("fk_jobs_study_id_studies"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("study_id", "key", name=op.f("uq_jobs_study_id")),
    )
    op.create_index(op.f("ix_jobs_study_id"), "jobs", ["study_id"])

    op.create_table(
        "results",
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("table", sa.JSON(), nullable=False),
        sa.Column("analysis", sa.JSON(), nullable=False),
        sa.Column("synthetic", sa.JSON(), nullable=False),
        sa.Column("stages", sa.JSON(), nullable=False),
        _when("updated_at"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name=op.f("fk_results_study_id_studies"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("study_id", name=op.f("pk_results")),
    )
    op.create_index(op.f("ix_results_run_id"), "results", ["run_id"])

    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("stage", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint("run_id", "stage", "name", name=op.f("uq_artifacts_run_id")),
    )
    op.create_index(op.f("ix_artifacts_run_id"), "artifacts", ["run_id"])

    op.create_table(
        "gallery_entries",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("study_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("figure", sa.String(32), nullable=True),
        sa.Column("stage", sa.String(255), nullable=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=True),
        _when("created_at"),
        _when("updated_at"),
        sa.ForeignKeyConstraint(["author_id"], ["users.id"], name=op.f("fk_gallery_entries_author_id_users"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name=op.f("fk_gallery_entries_study_id_studies"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gallery_entries")),
    )
    op.create_index(op.f("ix_gallery_entries_created_at"), "gallery_entries", ["created_at"])
    op.create_index(op.f("ix_gallery_entries_study_id"), "gallery_entries", ["study_id"])

    op.create_table(
        "gallery_tags",
        sa.Column("entry_id", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["gallery_entries.id"], name=op.f("fk_gallery_tags_entry_id_gallery_entries"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("entry_id", "name", name=op.f("pk_gallery_tags")),
    )
    op.create_index(op.f("ix_gallery_tags_name"), "gallery_tags", ["name"])

    op.create_table(
        "gallery_stars",
        sa.Column("entry_id", sa.String(16), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        _when("created_at"),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["gallery_entries.id"], name=op.f("fk_gallery_stars_entry_id_gallery_entries"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_gallery_stars_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("entry_id", "user_id", name=op.f("pk_gallery_stars")),
    )


def downgrade() -> None:
    """Drop every table (children first)."""
    for table in (
        "gallery_stars",
        "gallery_tags",
        "gallery_entries",
        "artifacts",
        "results",
        "jobs",
        "notes",
        "study_tags",
        "studies",
        "api_tokens",
        "users",
    ):
        op.drop_table(table)
