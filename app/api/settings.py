"""The service's settings: one pydantic-settings object read from LMC_* environment variables."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, NonNegativeInt, PositiveInt, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# RQ keys a queue by its name (rq:queue:<name>) and workers list names on the command line: keep them plain.
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check_queue_name(name: str) -> str:
    if not QUEUE_NAME.match(name):
        raise ValueError(f"queue name {name!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return name


class Settings(BaseSettings):
    """Where the store, the queue and the artifacts live, who may read, and the limits on what a request may ask for."""

    model_config = SettingsConfigDict(env_prefix="LMC_", env_ignore_empty=True, extra="ignore")

    data_dir: Path = Field(Path("lmc-data"), description="Folder holding the SQLite database and, by default, the artifacts.")
    database_url: str = Field("", description="SQLAlchemy URL; empty = sqlite:///<data_dir>/lmc.db. postgresql://... selects psycopg 3.")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis holding the RQ queues (and nothing the service cannot rebuild).")
    artifact_root: Path | None = Field(
        None, description="Folder every worker and the API can reach; run directories live in <artifact_root>/runs."
    )
    queue: str = Field("lmc", description="The default RQ queue: studies that name none are submitted to it.")
    queues: str = Field(
        "", description="Comma-separated further RQ queues a study may name (e.g. 'gpu-big,cpu'); LMC_QUEUE is always allowed."
    )
    anonymous_read: bool = Field(True, description="Allow reads without a token; writes always need one.")
    max_request_bytes: PositiveInt = Field(1_000_000, description="Largest request body accepted (413 beyond).")
    max_grid_resolution: PositiveInt = Field(201, description="Largest analysis.surface.resolution a study may ask for.")
    max_epochs: PositiveInt = Field(1000, description="Largest train.epochs (and synthetic.train.epochs) a study may ask for.")
    max_jobs_per_user: NonNegativeInt = Field(10, description="Active (queued or running) studies per user; 0 = no limit.")
    max_thumbnail_bytes: PositiveInt = Field(
        500_000, description="Largest gallery thumbnail PNG accepted (422 beyond); its base64 text also counts against max_request_bytes."
    )
    max_thumbnail_side: PositiveInt = Field(2048, description="Largest width or height, in pixels, of a gallery thumbnail.")
    sync_interval_s: float = Field(
        1.0, ge=0.0, description="Seconds between mirrors of Redis and the artifact root into the database; 0 = no background sync."
    )

    @field_validator("database_url")
    @classmethod
    def _driver(cls, v: str) -> str:
        # Users paste the URLs their PostgreSQL docs show; SQLAlchemy would pick psycopg2, which is not installed.
        for prefix in ("postgres://", "postgresql://"):
            if v.startswith(prefix):
                return "postgresql+psycopg://" + v[len(prefix) :]
        return v

    @field_validator("queue")
    @classmethod
    def _queue_name(cls, v: str) -> str:
        return _check_queue_name(v)

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, v: str) -> str:
        return ",".join(_check_queue_name(name.strip()) for name in v.split(",") if name.strip())

    @model_validator(mode="after")
    def _defaults_under_data_dir(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'lmc.db'}"
        if self.artifact_root is None:
            self.artifact_root = self.data_dir / "artifacts"
        return self

    @property
    def allowed_queues(self) -> list[str]:
        """Return the queues a study may be submitted to: LMC_QUEUE first, then LMC_QUEUES in their order, without repeats."""
        out = [self.queue]
        for name in self.queues.split(","):
            if name and name not in out:
                out.append(name)
        return out

    @property
    def runs_dir(self) -> Path:
        """Return the folder holding the run directories (`<artifact_root>/runs`)."""
        assert self.artifact_root is not None  # filled by the validator
        return self.artifact_root / "runs"

    def prepare_dirs(self) -> None:
        """Create the data directory and the artifact root if they are missing."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
