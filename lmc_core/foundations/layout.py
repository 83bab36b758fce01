"""The run directory and the stage-key grammar: the one description that lmc_core, the worker and the API share.

Torch-free and dependency-free, so the API process (which never imports torch) reads runs with it.

    <runs folder>/<run id>/        the artifact root's `runs/`, or `lmc run --out`
      config.json                  the resolved study config
      manifest.json                run id, name, creation time, versions
      stages.json                  the plan: [{key, kind, deps}] in execution order (written by the worker)
      summary.json                 study, analysis and synthetic tables (the worker rewrites it after each stage)
      stages/<stage key>/          one folder per stage; stage.json is written last and marks the stage done

Stage keys (they double as folders under `stages/`):

    init                         the initialisation theta_0
    parent/k{K}                  the dense network trained to step K (the rewind point theta_K)
    mask/{mask id}               a mask source's round-r mask found with rewind step k
    copies/{mask id}/k{K}/p{P}   the subnetwork (mask, theta_K) trained twice with pair P's SGD-noise seeds
    path/{mask id}/k{K}/p{P}     the linear path between pair P's two copies, with its barriers
    surface/{mask id}/k{K}/p{P}  a 2-D loss surface through pair P's copies
    hessian/{mask id}/k{K}/p{P}  the Hessian of pair P's copy A in its unpruned subspace
    {kind}/{mask id}/k{K}/p{P}   any other analysis kind, keyed like the two above
    distances/k{K}/r{R}          Hamming distances between the round-R masks (rewind step K) of every two mask sources
    sharpness/k{K}/r{R}          the Hessian diagonal of one common network at the weights every source removes in round R
    experts/{hash}               MTT expert trajectories, shared by every set with the same settings
    synthetic/{set}              a distilled (or imported) synthetic set
    synthetic-eval/{set}         fresh networks trained on the set, on a size-matched real subset and on noise

A mask id is `dense` (round 0 of every source) or `{source}-k{K}-r{R}`, e.g. `distilled.dm-k625-r2`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RUNS_DIR = "runs"
STAGES_DIR = "stages"
CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
PLAN_FILE = "stages.json"
SUMMARY_FILE = "summary.json"
STAGE_FILE = "stage.json"
RUN_FILES = (CONFIG_FILE, MANIFEST_FILE, PLAN_FILE, SUMMARY_FILE)

DENSE = "dense"

_MASK_ID = re.compile(r"(?P<source>.+)-k(?P<k>\d+)-r(?P<round>\d+)")
# copies, path and every analysis kind (surface, hessian, and kinds registered later) key a subnetwork and a pair.
_SUBNETWORK = re.compile(r"(?P<kind>[a-z][a-z0-9_]*)/(?P<mask>[^/]+)/k(?P<k>\d+)/p(?P<pair>\d+)")
_DISTANCES = re.compile(r"distances/k(?P<k>\d+)/r(?P<round>\d+)")
_BY_NAME = {"synthetic": "synthetic", "synthetic-eval": "synthetic_eval", "experts": "experts"}


# ---- building keys ---------------------------------------------------------------------------------
def mask_id(source: str, k: int, r: int) -> str:
    """Return the id of a source's round-r mask found with rewind step k; every round 0 is 'dense'."""
    return DENSE if r == 0 else f"{source}-k{k}-r{r}"


def rewind_key(k: int) -> str:
    """Return the key of the stage holding theta_k: the init for k = 0, else the dense parent run to step k."""
    return "init" if k == 0 else f"parent/k{k}"


def mask_key(mid: str) -> str:
    return f"mask/{mid}"


def copies_key(mid: str, k: int, pair: int) -> str:
    return f"copies/{mid}/k{k}/p{pair}"


def path_key(mid: str, k: int, pair: int) -> str:
    return f"path/{mid}/k{k}/p{pair}"


def surface_key(mid: str, k: int, pair: int) -> str:
    return f"surface/{mid}/k{k}/p{pair}"


def hessian_key(mid: str, k: int, pair: int) -> str:
    return f"hessian/{mid}/k{k}/p{pair}"


def sharpness_key(k: int, r: int) -> str:
    """Return the key of the stage comparing, at rewind step k, the weights every mask source removes in round r."""
    return f"sharpness/k{k}/r{r}"


def distances_key(k: int, r: int) -> str:
    """Return the key of the stage comparing every mask source's round-r mask found with rewind step k."""
    return f"distances/k{k}/r{r}"


def synthetic_key(name: str) -> str:
    return f"synthetic/{name}"


def eval_key(name: str) -> str:
    return f"synthetic-eval/{name}"


def experts_key(digest: str) -> str:
    return f"experts/{digest}"


# ---- reading keys back -----------------------------------------------------------------------------
@dataclass(frozen=True)
class StageRef:
    """What a stage key names. Fields a kind does not have are None (a synthetic set has no round)."""

    key: str
    kind: str
    mask: str | None = None
    source: str | None = None
    round: int | None = None
    k: int | None = None
    pair: int | None = None
    set: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_mask_id(mid: str) -> tuple[str, int | None, int]:
    """Return (source, k, round) of a mask id; the shared dense mask is ('dense', None, 0)."""
    if mid == DENSE:
        return DENSE, None, 0
    m = _MASK_ID.fullmatch(mid)
    if m is None:
        raise ValueError(f"not a mask id: {mid!r}; expected 'dense' or '<source>-k<K>-r<R>', e.g. 'imp-k0-r2'")
    return m["source"], int(m["k"]), int(m["round"])


def parse_key(key: str) -> StageRef:
    """Return the StageRef a stage key names, or a ValueError naming the grammar it breaks."""
    if key == "init":
        return StageRef(key, "init", k=0)
    head, _, rest = key.partition("/")
    if head == "parent" and re.fullmatch(r"k\d+", rest):
        return StageRef(key, "parent", k=int(rest[1:]))
    if head == "mask" and rest:
        source, k, rnd = parse_mask_id(rest)
        return StageRef(key, "mask", mask=rest, source=source, round=rnd, k=k)
    if head == "sharpness" and (m := re.fullmatch(r"k(\d+)/r(\d+)", rest)) is not None:
        return StageRef(key, "sharpness", round=int(m[2]), k=int(m[1]))
    if head in _BY_NAME and rest and "/" not in rest:
        return StageRef(key, _BY_NAME[head], set=None if head == "experts" else rest)
    d = _DISTANCES.fullmatch(key)
    if d is not None:
        return StageRef(key, "distances", round=int(d["round"]), k=int(d["k"]))
    m = _SUBNETWORK.fullmatch(key)
    if m is not None:
        source, _, rnd = parse_mask_id(m["mask"])
        return StageRef(key, m["kind"], mask=m["mask"], source=source, round=rnd, k=int(m["k"]), pair=int(m["pair"]))
    raise ValueError(f"not a stage key: {key!r}; see lmc_core.foundations.layout for the grammar")


# ---- the run directory -----------------------------------------------------------------------------
def run_dir(runs: str | Path, run_id: str) -> Path:
    """Return the directory of `run_id` inside a runs folder."""
    return Path(runs) / run_id


def stage_dir(run: str | Path, key: str) -> Path:
    """Return the folder of stage `key` inside a run directory (the caller confines untrusted keys)."""
    return Path(run) / STAGES_DIR / key


def stage_file(run: str | Path, key: str) -> Path:
    """Return the stage.json of `key`: it exists exactly when the stage is done."""
    return stage_dir(run, key) / STAGE_FILE
