"""The SQL store: studies, their jobs and results, artifacts, users and tokens, notes, tags and the gallery.

The database is the source of truth; Redis holds only the queue, so every row here can outlive an empty Redis.
Migrations (app/api/migrations) create exactly these tables; a test compares the two.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints let Alembic's batch mode (SQLite) find and alter them; unnamed ones cannot be dropped by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

STUDY_STATES = ("queued", "running", "finished", "failed", "cancelled")
ACTIVE_STATES = ("queued", "running")
ROLES = ("viewer", "editor", "admin")


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(timezone.utc)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime on every backend: SQLite drops the zone, so it is put back as UTC on load."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        """Return `value` in UTC (naive values are taken as UTC)."""
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        """Return `value` with its UTC zone restored."""
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan", passive_deletes=True)


class ApiToken(Base):
    """An API token: only its sha256 is stored, so a leaked database yields no usable token."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # enough of the token to tell tokens apart in a list
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    user: Mapped[User] = relationship(back_populates="tokens")


class Study(Base):
    """A study: a validated config, its run id (content hash) and where it stands; `progress` mirrors the queue."""

    __tablename__ = "studies"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    preset: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("studies.id", ondelete="SET NULL"), nullable=True)
    submitted: Mapped[bool] = mapped_column(Boolean, default=False)  # False until Redis accepted the plan job
    plan_job_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    stages_done: Mapped[int] = mapped_column(Integer, default=0)
    stages_total: Mapped[int] = mapped_column(Integer, default=0)
    # None only for rows made before queues were chosen per study; the sync fills them with LMC_QUEUE on start.
    queue: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Key results, copied from the results table by the sync (app.api.key_results) so the study list stays one query.
    final_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)  # %, mean of the copies, main source's last round
    largest_barrier: Mapped[float | None] = mapped_column(Float, nullable=True)  # test error barrier, percentage points
    sparsity_reached: Mapped[float | None] = mapped_column(Float, nullable=True)  # %, of that same round
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    owner: Mapped[User | None] = relationship(lazy="joined")
    tags: Mapped[list[StudyTag]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, lazy="selectin", order_by="StudyTag.name"
    )


class StudyTag(Base):
    __tablename__ = "study_tags"

    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    author: Mapped[User | None] = relationship(lazy="joined")


class Job(Base):
    """One stage of a study as the queue last reported it (mirrored by the sync task; workers never write SQL)."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("study_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    eta_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Result(Base):
    """A study's summary tables (the worker's summary.json): the study table, the analysis and synthetic-set tables."""

    __tablename__ = "results"

    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    table: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    analysis: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    synthetic: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    stages: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Artifact(Base):
    """A file of a run directory, addressed by a service-generated id so no request ever names a path."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("run_id", "stage", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    stage: Mapped[str] = mapped_column(String(255))  # "" for run-level files (config.json, summary.json)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # npz, safetensors, json, png, other
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class GalleryEntry(Base):
    """A published result or figure; its id is the permalink."""

    __tablename__ = "gallery_entries"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "result" or "figure"
    figure: Mapped[str | None] = mapped_column(String(32), nullable=True)
    stage: Mapped[str | None] = mapped_column(String(255), nullable=True)
    title: Mapped[str] = mapped_column(String(200))
    notes: Mapped[str] = mapped_column(Text, default="")
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    author: Mapped[User | None] = relationship(lazy="joined")
    study: Mapped[Study] = relationship(lazy="joined")
    tags: Mapped[list[GalleryTag]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, lazy="selectin", order_by="GalleryTag.name"
    )


class GalleryTag(Base):
    __tablename__ = "gallery_tags"

    entry_id: Mapped[str] = mapped_column(ForeignKey("gallery_entries.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class GalleryStar(Base):
    __tablename__ = "gallery_stars"

    entry_id: Mapped[str] = mapped_column(ForeignKey("gallery_entries.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class GalleryThumbnail(Base):
    """A gallery entry's PNG card picture (checked by app.api.thumbnails); a table of its own so listings never load the bytes."""

    __tablename__ = "gallery_thumbnails"

    entry_id: Mapped[str] = mapped_column(ForeignKey("gallery_entries.id", ondelete="CASCADE"), primary_key=True)
    png: Mapped[bytes] = mapped_column(LargeBinary)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))  # the ETag
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
