"""Request and response bodies (pydantic v2): XCreate in, XPublic out, lists as {data, count, limit, offset}."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator


def _no_nul(v: str) -> str:
    # SQLite would store it, PostgreSQL refuses it: reject it the same way on both.
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


Text = Annotated[str, AfterValidator(_no_nul)]
Tag = Text
FigureName = Literal["interpolation", "sparsity", "surface", "hessian"]


def _clean_tags(v: list[str] | None) -> list[str] | None:
    if v is None:
        return None
    out: list[str] = []
    for tag in v:
        tag = tag.strip()
        if not tag or len(tag) > 64 or "\x00" in tag:
            raise ValueError("a tag is 1 to 64 characters, without NUL")
        if tag not in out:
            out.append(tag)
    return out


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- errors ---------------------------------------------------------------------------------------------------


class ErrorOut(BaseModel):
    detail: str = Field(description="What went wrong and what to do about it.")


class FieldError(BaseModel):
    loc: str = Field(description="Dotted path of the field, e.g. train.epochs or query.limit.")
    msg: str
    type: str


class FieldErrorsOut(BaseModel):
    detail: list[FieldError]
    message: str = Field(description="All field errors in one line.")


# ---- studies --------------------------------------------------------------------------------------------------

_QUEUE_HELP = "The RQ queue its jobs go to (GET /api/queues lists the allowed ones, LMC_QUEUE and LMC_QUEUES); default: LMC_QUEUE."
QueueName = Annotated[Text, Field(min_length=1, max_length=64)]
_CONFIG_HELP = "A StudyConfig (JSON Schema: GET /api/schema/study); omitted fields take their defaults."
_OVERRIDES_HELP = 'Dotted field paths set on top, e.g. {"train.epochs": 5, "pruning.rounds": 3}.'


class StudyCreate(_In):
    preset: Text | None = Field(None, description="Start from this preset (GET /api/presets); exclusive with `config`.")
    config: dict[str, Any] | None = Field(None, description=_CONFIG_HELP)
    overrides: dict[str, Any] = Field(default_factory=dict, description=_OVERRIDES_HELP)
    name: Text | None = Field(None, min_length=1, max_length=200, description="The study's name (config.name); defaults to the config's.")
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    note: Text | None = Field(None, max_length=10_000, description="A first note attached to the study.")
    queue: QueueName | None = Field(None, description=_QUEUE_HELP)

    _tags = field_validator("tags")(_clean_tags)


class StudyClone(_In):
    config: dict[str, Any] | None = Field(None, description="A partial StudyConfig merged into the source study's config.")
    overrides: dict[str, Any] = Field(default_factory=dict, description=_OVERRIDES_HELP)
    name: Text | None = Field(None, min_length=1, max_length=200)
    tags: list[Tag] | None = Field(None, max_length=20, description="Tags of the clone; default: the source's.")
    queue: QueueName | None = Field(None, description="The clone's queue; default: the source's (when still allowed), else LMC_QUEUE.")

    _tags = field_validator("tags")(_clean_tags)


class StudyRetry(_In):
    queue: QueueName | None = Field(
        None, description="Run the retry on another queue (e.g. one with bigger GPUs); default: the study's own."
    )


class StudyUpdate(_In):
    name: Text | None = Field(None, min_length=1, max_length=200)
    tags: list[Tag] | None = Field(None, max_length=20)
    archived: bool | None = None

    _tags = field_validator("tags")(_clean_tags)


class ValidationOut(BaseModel):
    valid: bool = True
    run_id: str = Field(description="Content hash of the config; studies with the same run id share results.")
    name: str
    config: dict[str, Any] = Field(description="The full config with every default filled in.")
    existing: list[str] = Field(default_factory=list, description="Ids of studies that already have this run id.")


class StudyOut(BaseModel):
    id: str
    name: str
    run_id: str
    preset: str | None
    status: Literal["queued", "running", "finished", "failed", "cancelled"]
    archived: bool
    owner: str | None
    parent_id: str | None
    submitted: bool = Field(description="False while Redis has not accepted the study (it is submitted again by reconciliation).")
    tags: list[str]
    stages_done: int
    stages_total: int
    queue: str | None = Field(description="The RQ queue the study's jobs go to.")
    final_accuracy: float | None = Field(description="Test accuracy (%, mean of the copies) at the main mask source's last finished round.")
    largest_barrier: float | None = Field(
        description="Largest test error barrier of the main mask source's subnetworks (every round and rewind step), in percentage points."
    )
    sparsity_reached: float | None = Field(description="Sparsity (%) of the subnetwork final_accuracy was measured on.")
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class StudyDetail(StudyOut):
    config: dict[str, Any]
    progress: dict[str, Any] | None


class StudiesPage(BaseModel):
    data: list[StudyOut]
    count: int = Field(description="Studies matching the filter, over all pages.")
    limit: int
    offset: int


class NoteCreate(_In):
    text: Text = Field(min_length=1, max_length=10_000)


class NoteOut(BaseModel):
    id: int
    text: str
    author: str | None
    created_at: datetime


class JobOut(BaseModel):
    key: str
    kind: str
    status: str
    step: int | None
    total: int | None
    eta_s: float | None
    metrics: dict[str, Any] | None
    message: str | None
    error: str | None
    worker: str | None
    started_at: datetime | None
    ended_at: datetime | None


class ProgressOut(BaseModel):
    study_id: str
    status: str
    done: int
    total: int
    fraction: float | None = Field(description="done / total, or null before the plan is known.")
    eta_s: float | None = Field(
        description="Seconds left: median finished-stage duration x stages left / live workers on the study's queue "
        "(at most one per stage left); null before a stage has finished or while no worker listens."
    )
    running: list[JobOut]
    failed: list[JobOut]
    log_tail: list[str]
    error: str | None
    updated_at: datetime


class QueueOut(BaseModel):
    name: str
    default: bool = Field(description="True for LMC_QUEUE, where studies that name no queue go.")
    workers: list[str] | None = Field(description="Names of the live workers listening on it; null when Redis does not answer.")
    busy: int | None = Field(description="How many of those workers are running a job now.")
    queued: int | None = Field(description="Jobs waiting on the queue for a worker.")


class CancelOut(BaseModel):
    study: StudyOut
    jobs_cancelled: int


# ---- results --------------------------------------------------------------------------------------------------


class StageRefOut(BaseModel):
    """What a stage key names, read by lmc_core.foundations.layout.parse_key (the one description of the key grammar);
    fields a kind does not have are null (a synthetic set has no round)."""

    key: str = Field(description="The stage key, e.g. surface/imp-k0-r2/k0/p0.")
    kind: str = Field(description="init, parent, mask, copies, path, surface, hessian, experts, synthetic or synthetic_eval.")
    mask: str | None = Field(description="The mask id, e.g. imp-k0-r2 or dense.")
    source: str | None = Field(description="The mask source, e.g. imp, random, distilled.dm; dense for the shared round-0 mask.")
    round: int | None = Field(description="The pruning round (0 = dense).")
    k: int | None = Field(description="The rewind step: the training step whose weights the subnetwork restarts from.")
    pair: int | None = Field(description="The seed pair (index into stability.pairs).")
    set: str | None = Field(description="The synthetic set's name.")


class MaskRefOut(BaseModel):
    """What a mask id names, read by lmc_core.foundations.layout.parse_mask_id; the dense mask is (dense, null, 0)."""

    mask: str
    source: str
    k: int | None = Field(description="The rewind step the mask was found with; null for the dense mask.")
    round: int


class ResultRow(BaseModel):
    """One row of a summary table as lmc_core's Run tables write it (every field kept), with the reading of its mask id."""

    model_config = ConfigDict(extra="allow")

    mask: str | None = Field(None, description="The subnetwork's mask id, e.g. imp-k0-r2.")
    mask_ref: MaskRefOut | None = Field(None, description="The mask id read: source, rewind step k and round.")


class ResultsOut(BaseModel):
    study_id: str
    run_id: str
    status: str
    available: bool = Field(description="False until a worker has written the study's summary.")
    table: list[ResultRow] = Field(
        description="One row per (mask source, rewind step, round): sparsity, accuracies, barriers, training_points (measured "
        "sample-gradients) and distill_points (real examples the synthetic set's distillation consumed; null = unknown, an "
        "imported set whose cost its source does not report), points_ratio (real IMP's training points over this source's at the "
        "same round, measured in decoded examples as they ran) and points_ratio_with_distilling (the same with distill_points "
        "added; null when that cost is unknown)."
    )
    analysis: list[ResultRow] = Field(description="One row per analysed subnetwork and pair: top eigenvalue, trace, surface loss range.")
    synthetic: list[dict[str, Any]]
    distances: list[dict[str, Any]] = Field(
        default_factory=list,
        description="One row per two masks of the same rewind step and round (source_a / init_a vs source_b / init_b): hamming "
        "(the fraction of prunable weights whose keep / prune decision differs), differ and total (its count and denominator), "
        "overlap and jaccard of the kept weights, chance (the average distance of random masks with the same per-layer counts).",
    )
    stages: dict[str, str]
    updated_at: datetime | None


class ArtifactOut(BaseModel):
    id: str
    stage: str = Field(description="The stage key of the file's stage; '' for run-level files (config.json, summary.json, ...).")
    stage_ref: StageRefOut | None = Field(description="The stage key read; null for run-level files.")
    name: str
    kind: str
    bytes: int
    url: str


class FigureOut(BaseModel):
    """A figure's data; arrays are plotly typed arrays ({dtype, bdata, shape}) or lists, as `encoding` asked."""

    model_config = ConfigDict(extra="allow")

    study_id: str
    figure: str
    encoding: Literal["typed", "list"]


class StageFigureOut(FigureOut):
    """The data of a figure of one stage (a surface or a Hessian)."""

    stage: str = Field(description="The stage key drawn, e.g. surface/imp-k0-r2/k0/p0.")
    stage_ref: StageRefOut | None = Field(description="The stage key read.")


class CurveOut(BaseModel):
    """One interpolation curve: error and loss per split along the path between pair `pair`'s two copies."""

    model_config = ConfigDict(extra="allow")

    stage: str = Field(description="The path stage's key, e.g. path/imp-k0-r2/k0/p0.")
    stage_ref: StageRefOut = Field(description="The stage key read.")
    mask: str
    source: str
    round: int
    rewind_step: int
    pair: int
    sparsity: float | None = Field(description="Sparsity (%) of the subnetwork, from the results table; null until its row exists.")


class InterpolationFigureOut(FigureOut):
    curves: list[CurveOut]


class FiguresIndex(BaseModel):
    study_id: str
    figures: dict[str, list[str]] = Field(description="Figure name -> the stages it can be drawn for ([] = the whole study).")
    stage_refs: dict[str, list[StageRefOut]] = Field(description="Figure name -> those stages' keys read, in the same order.")


# ---- presets, health, users -------------------------------------------------------------------------------------


class PresetOut(BaseModel):
    name: str
    description: str
    run_id: str
    config: dict[str, Any]


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    database: dict[str, Any]
    redis: dict[str, Any]
    workers: int | None = Field(description="Live workers, or null when Redis does not answer.")
    version: str


class MeOut(BaseModel):
    user: str | None
    role: str | None
    anonymous: bool


class UserCreate(_In):
    name: Text = Field(min_length=1, max_length=64)


class UserOut(BaseModel):
    id: int
    name: str
    created_at: datetime
    tokens: int = Field(description="Tokens not revoked.")


class TokenCreate(_In):
    user: Text = Field(min_length=1, max_length=64, description="User name; created when missing.")
    role: Literal["viewer", "editor", "admin"]


class TokenOut(BaseModel):
    id: int
    user: str
    role: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="The token itself, shown only this once; send it as 'Authorization: Bearer <token>'.")


# ---- gallery --------------------------------------------------------------------------------------------------


# Base64 of the largest PNG any setting could allow is checked in app.api.thumbnails; this bound only keeps absurd
# strings out of validation (the request-size limit, LMC_MAX_REQUEST_BYTES, stops most of them earlier).
THUMBNAIL_CHARS = 16_000_000
_THUMBNAIL_HELP = (
    "A PNG card picture as base64, optionally as a data URL (data:image/png;base64,...), as Plotly.toImage gives it; "
    "checked: PNG signature, IHDR, at most LMC_MAX_THUMBNAIL_BYTES and LMC_MAX_THUMBNAIL_SIDE pixels a side."
)


class GalleryCreate(_In):
    study_id: Text = Field(min_length=1, max_length=64)
    kind: Literal["result", "figure"] = "figure"
    figure: FigureName | None = Field(None, description="Which figure, for kind 'figure'.")
    stage: Text | None = Field(
        None, max_length=255, description="The stage a surface or Hessian figure shows, e.g. surface/imp-k0-r2/k0/p0."
    )
    title: Text = Field(min_length=1, max_length=200)
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    notes: Text = Field("", max_length=10_000)
    thumbnail: str | None = Field(None, max_length=THUMBNAIL_CHARS, description=_THUMBNAIL_HELP)

    _tags = field_validator("tags")(_clean_tags)


class ThumbnailIn(_In):
    png: str = Field(min_length=1, max_length=THUMBNAIL_CHARS, description=_THUMBNAIL_HELP)


class ThumbnailOut(BaseModel):
    url: str = Field(description="GET it for the PNG (ETag; 304 when If-None-Match matches).")
    width: int
    height: int
    bytes: int
    etag: str


class GalleryUpdate(_In):
    title: Text | None = Field(None, min_length=1, max_length=200)
    tags: list[Tag] | None = Field(None, max_length=20)
    notes: Text | None = Field(None, max_length=10_000)

    _tags = field_validator("tags")(_clean_tags)


class GalleryOut(BaseModel):
    id: str = Field(description="The permalink id: GET /api/gallery/{id}.")
    study_id: str
    study_name: str
    kind: str
    figure: str | None
    stage: str | None
    title: str
    notes: str
    tags: list[str]
    author: str | None
    stars: int
    starred: bool = Field(description="Whether the caller starred it.")
    thumbnail: ThumbnailOut | None = Field(
        description="The PNG card picture, when one was sent; null: draw a preview from the figure's data."
    )
    permalink: str
    created_at: datetime
    updated_at: datetime


class GalleryPage(BaseModel):
    data: list[GalleryOut]
    count: int
    limit: int
    offset: int
