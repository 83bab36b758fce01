"""Results of a study: summary tables as JSON, arrays as npz files, artifacts by id, and figure-ready JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse

from .. import artifacts, figures, results
from ..deps import NOT_FOUND, READ_ERRORS, Reader, SessionDep, SettingsDep
from ..errors import NotFound
from ..schemas import ArtifactOut, FigureOut, FiguresIndex, InterpolationFigureOut, ResultsOut, StageFigureOut
from .studies import StudyDep

router = APIRouter(tags=["results"], responses={**READ_ERRORS, **NOT_FOUND})
StageQuery = Annotated[str | None, Query(max_length=255, description="A stage key, e.g. path/imp-k0-r2/k0/p0; default: the first one.")]
EncodingQuery = Annotated[Literal["typed", "list"], Query(description="Arrays as plotly typed arrays (float32, base64) or as lists.")]
_FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "The file"},
    304: {"description": "Unchanged since the ETag in If-None-Match"},
}


def _send(request: Request, path: Path, media_type: str, filename: str) -> Response:
    tag = artifacts.etag(path)
    if tag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers={"ETag": tag})
    # no-cache = revalidate every time: cheap with the ETag, and a rewritten run-level file is never served stale.
    return FileResponse(path, media_type=media_type, filename=filename, headers={"ETag": tag, "Cache-Control": "private, no-cache"})


@router.get("/studies/{study_id}/results", response_model=ResultsOut)
def get_results(study: StudyDep, session: SessionDep, settings: SettingsDep) -> dict:
    """Return the study's summary tables: one row per (mask source, rewind step, round), the analysis and synthetic-set tables,
    and the Hamming distances between mask sources' masks."""
    return {**results.public(session, study), "distances": results.distances(session, settings, study)}


@router.get("/studies/{study_id}/artifacts", response_model=list[ArtifactOut])
def list_artifacts(study: StudyDep, session: SessionDep) -> list[dict]:
    """Return the files of the study's finished stages (weights, masks, arrays, stage.json), each with its download URL and
    the reading of its stage key."""
    refs: dict[str, dict | None] = {}
    out = []
    for a in artifacts.for_run(session, study.run_id):
        if a.stage not in refs:
            refs[a.stage] = figures.stage_ref(a.stage) if a.stage else None
        out.append(
            {
                "id": a.id,
                "stage": a.stage,
                "stage_ref": refs[a.stage],
                "name": a.name,
                "kind": a.kind,
                "bytes": a.bytes,
                "url": f"/api/artifacts/{a.id}",
            }
        )
    return out


@router.get("/artifacts/{artifact_id}", response_class=FileResponse, responses=_FILE_RESPONSES)
def download_artifact(artifact_id: str, request: Request, session: SessionDep, settings: SettingsDep, _: Reader) -> Response:
    """Download an artifact by id (ETag; 304 when If-None-Match matches)."""
    row = artifacts.get(session, artifact_id)
    path = artifacts.path_of(settings, row)
    return _send(request, path, artifacts.MEDIA[row.kind], f"{row.stage.replace('/', '_') + '_' if row.stage else ''}{row.name}")


@router.get("/studies/{study_id}/arrays/{kind}", response_class=FileResponse, responses=_FILE_RESPONSES)
def download_arrays(
    kind: Literal["path", "surface", "hessian", "sharpness"],
    study: StudyDep,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    stage: StageQuery = None,
) -> Response:
    """Download a stage's arrays as npz: path (alphas, loss_/error_<split>), surface (xs, ys, grids), hessian (density, diagonal)
    or sharpness (the common network's diagonal and, per source, removed indices and values, histogram, band and null draws)."""
    key, path = results.stage_file(session, settings, study, stage, f"{kind}.npz")
    return _send(request, path, "application/octet-stream", f"{study.run_id}_{key.replace('/', '_')}.npz")


@router.get("/studies/{study_id}/stages/info", responses={200: {"description": "The stage.json of a finished stage"}})
def stage_info(
    study: StudyDep,
    session: SessionDep,
    settings: SettingsDep,
    stage: Annotated[str, Query(min_length=1, max_length=255, description="A stage key, e.g. copies/dense/k0/p0.")],
) -> dict:
    """Return a finished stage's stage.json (metrics, seeds, timings, barriers)."""
    return results.stage_info(session, settings, study, stage)


@router.get("/studies/{study_id}/figures", response_model=FiguresIndex)
def figures_index(study: StudyDep, session: SessionDep) -> dict:
    """Return which figures the study can draw now, and for surface and Hessian figures the stages to choose from, each
    with its reading (stage_refs)."""
    available: dict[str, list[str]] = {}
    if results.stages_with(session, study.run_id, "path.npz"):
        available["interpolation"] = []
    if results.public(session, study)["table"]:
        available["sparsity"] = []
    for name in ("surface", "hessian", "sharpness"):
        stages = results.stages_with(session, study.run_id, f"{name}.npz")
        if stages:
            available[name] = stages
    refs = {name: [ref for ref in map(figures.stage_ref, keys) if ref is not None] for name, keys in available.items()}
    return {"study_id": study.id, "figures": available, "stage_refs": refs}


@router.get("/studies/{study_id}/figures/interpolation", response_model=InterpolationFigureOut)
def interpolation_figure(study: StudyDep, session: SessionDep, settings: SettingsDep, encoding: EncodingQuery = "typed") -> dict:
    """Return every interpolation curve (error and loss along the path, per split) with its mask source, round and sparsity."""
    stages = results.stages_with(session, study.run_id, "path.npz")
    if not stages:
        raise NotFound(f"study {study.id} has no finished path yet (status: {study.status})")
    curves = [(key, results.load_arrays(results.stage_file(session, settings, study, key, "path.npz")[1])) for key in stages]
    table = results.public(session, study)["table"]
    return {"study_id": study.id, "figure": "interpolation", "encoding": encoding, **figures.interpolation(curves, table, encoding)}


@router.get("/studies/{study_id}/figures/sparsity", response_model=FigureOut)
def sparsity_figure(study: StudyDep, session: SessionDep) -> dict:
    """Return accuracy and error/loss barriers vs sparsity, one series per mask source and rewind step, and the rewind sweep."""
    table = results.public(session, study)["table"]
    if not table:
        raise NotFound(f"study {study.id} has no summary table yet (status: {study.status})")
    return {"study_id": study.id, "figure": "sparsity", "encoding": "list", **figures.sparsity(table)}


@router.get("/studies/{study_id}/figures/surface", response_model=StageFigureOut)
def surface_figure(
    study: StudyDep,
    session: SessionDep,
    settings: SettingsDep,
    stage: StageQuery = None,
    split: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=r"^(train|test|synthetic\.[A-Za-z0-9_]+)$",
            description="train, test or synthetic.<set>; default: the stage's first split.",
        ),
    ] = None,
    encoding: EncodingQuery = "typed",
) -> dict:
    """Return a loss surface (x, y, loss and error grids with rows along y) and the positions of the rewind point and both copies."""
    key, path = results.stage_file(session, settings, study, stage, "surface.npz")
    info = results.stage_info(session, settings, study, key)
    data = figures.surface(key, results.load_arrays(path), info, split, encoding)
    if isinstance(data, str):
        raise NotFound(data)
    return {"study_id": study.id, "figure": "surface", "encoding": encoding, **data}


@router.get("/studies/{study_id}/figures/hessian", response_model=StageFigureOut)
def hessian_figure(
    study: StudyDep,
    session: SessionDep,
    settings: SettingsDep,
    stage: StageQuery = None,
    bins: Annotated[int, Query(ge=1, le=1000, description="Bins of the diagonal's histogram.")] = 50,
    encoding: EncodingQuery = "typed",
) -> dict:
    """Return top eigenvalues, trace and its standard error, the spectral density and a histogram of the Hessian diagonal."""
    key, path = results.stage_file(session, settings, study, stage, "hessian.npz")
    info = results.stage_info(session, settings, study, key)
    return {
        "study_id": study.id,
        "figure": "hessian",
        "encoding": encoding,
        **figures.hessian(key, results.load_arrays(path), info, bins, encoding),
    }


@router.get("/studies/{study_id}/figures/sharpness", response_model=StageFigureOut)
def sharpness_figure(
    study: StudyDep,
    session: SessionDep,
    settings: SettingsDep,
    stage: StageQuery = None,
    encoding: EncodingQuery = "typed",
) -> dict:
    """Return, per mask source, the Hessian diagonal of the common network at the weights the source removes in the stage's
    round: a log10 H_ii histogram with the random-removal band, and mean, median and top-decile fraction against the null."""
    key, path = results.stage_file(session, settings, study, stage, "sharpness.npz")
    info = results.stage_info(session, settings, study, key)
    return {
        "study_id": study.id,
        "figure": "sharpness",
        "encoding": encoding,
        **figures.sharpness(key, results.load_arrays(path), info, encoding),
    }
