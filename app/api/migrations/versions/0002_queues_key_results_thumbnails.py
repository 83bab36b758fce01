"""Per-study queue, key results on the study row, gallery thumbnails.

Existing studies get queue NULL and no key results here: the API's sync fills both on its first tick (the queue
from LMC_QUEUE, which is where they were submitted; key results from the mirrored results tables), because a
migration knows neither the settings nor how the key results are computed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

KEY_RESULTS = ("final_accuracy", "largest_barrier", "sparsity_reached")


def upgrade() -> None:
    """Add studies.queue and the key-result columns; create gallery_thumbnails."""
    # Batch mode: SQLite cannot ALTER a table in place beyond ADD COLUMN; on PostgreSQL it is plain ALTER TABLE.
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("queue", sa.String(64), nullable=True))
        for name in KEY_RESULTS:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))
    op.create_table(
        "gallery_thumbnails",
        sa.Column("entry_id", sa.String(16), nullable=False),
        sa.Column("png", sa.LargeBinary(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["gallery_entries.id"], name=op.f("fk_gallery_thumbnails_entry_id_gallery_entries"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_gallery_thumbnails")),
    )


def downgrade() -> None:
    """Drop gallery_thumbnails and the new study columns."""
    op.drop_table("gallery_thumbnails")
    with op.batch_alter_table("studies") as batch:
        for name in ("queue", *KEY_RESULTS):
            batch.drop_column(name)
