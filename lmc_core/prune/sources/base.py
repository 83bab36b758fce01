"""The mask-source interface and the narrow view of a study that building a mask needs.

For each (rewind step k, round r >= 1) a source names the stages its mask needs and builds the mask
from their outputs. Round 0 of every source is the dense network, shared by all sources. Every mask
records the sample-gradient evaluations spent finding it (`examples`, cumulative over rounds and
including the dense parent run to step k): the unit of the paper's "150x fewer training points".
A source that prunes a trained network also hands that network back (`find`), because a weights-only
rewind (`pruning.rewind = "weights"`, the authors' code) keeps its biases, norms and buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from lmc_core.foundations.layout import DENSE, mask_key

if TYPE_CHECKING:  # config validation (the torch-free API) imports this module
    from torch import nn

    from lmc_core.data.dataset import Dataset
    from lmc_core.foundations.config import StudyConfig
    from lmc_core.foundations.events import Callback
    from lmc_core.foundations.types import Masks, State


class Trained(Protocol):
    """What a training run hands back to a mask source: the final weights and the sample-gradients spent."""

    state: State
    examples: int


class MaskContext(Protocol):
    """The view of a study a mask source builds from: its config, finished stages, and training on a small set."""

    cfg: StudyConfig

    @property
    def template(self) -> nn.Module: ...

    def stage_info(self, key: str) -> dict[str, Any]: ...

    def load_state(self, key: str, name: str = "state") -> State: ...

    def load_masks(self, mid: str) -> Masks: ...

    def load_kept(self, mid: str) -> State | None: ...

    def parent_examples(self, k: int) -> int: ...

    def synthetic_dataset(self, name: str) -> Dataset: ...

    def subset_dataset(self, name: str) -> Dataset: ...

    def train_on_small_set(
        self,
        train_set: Dataset,
        k: int,
        masks: Masks | None,
        set_name: str,
        stage: str,
        callback: Callback,
        kept: State | None = None,
    ) -> Trained: ...


@dataclass(frozen=True)
class Found:
    """A round's mask, its bookkeeping (`examples`, ...), and the trained network whose magnitudes chose it (None: no network did)."""

    masks: Masks
    info: dict[str, Any]
    pruned: State | None = field(default=None, repr=False)


class MaskSource:
    """Base class: the rounds a source contributes and, per round, its dependencies and its mask."""

    kind: ClassVar[str]
    usage: ClassVar[str]  # the name's syntax, shown in errors
    arity: ClassVar[int] = 0

    def __init__(self, name: str, args: list[str]):
        self.name = name

    def problem(self, cfg: StudyConfig) -> str | None:
        """Return why this source cannot run under `cfg` (a missing synthetic set, say), or None."""
        return None

    def rounds(self, cfg: StudyConfig) -> list[int]:
        """Return the rounds this source adds to the study table (0 = the shared dense network)."""
        return list(range(cfg.pruning.rounds + 1))

    def dependencies(self, cfg: StudyConfig, k: int, r: int) -> list[str]:
        """Return the stage keys the round-r mask found with rewind step k is built from."""
        raise NotImplementedError

    def build(self, ctx: MaskContext, k: int, r: int, callback: Callback) -> tuple[Masks, dict[str, Any]]:
        """Return the round-r mask and its bookkeeping: `examples` (cumulative) and optionally `distill_examples`."""
        raise NotImplementedError

    def find(self, ctx: MaskContext, k: int, r: int, callback: Callback) -> Found:
        """Return the round-r mask with the network it was pruned from; this default (from `build`) names none, so it rewinds in full."""
        masks, info = self.build(ctx, k, r, callback)
        return Found(masks, info)


class PrunesTrained(MaskSource):
    """A source whose round-r mask prunes a network trained in round r - 1: it implements `find`, and `build` follows."""

    def build(self, ctx: MaskContext, k: int, r: int, callback: Callback) -> tuple[Masks, dict[str, Any]]:
        found = self.find(ctx, k, r, callback)
        return found.masks, found.info

    def find(self, ctx: MaskContext, k: int, r: int, callback: Callback) -> Found:
        raise NotImplementedError


def prune_round(ctx: MaskContext, state: State, prev_masks: Masks, r: int) -> Masks:
    """Return round r's mask: magnitude pruning of `state` under `prev_masks` with the study's pruning settings."""
    from lmc_core.prune.magnitude import eligible_names, magnitude_prune, round_sparsity  # torch: keep validation torch-free

    p = ctx.cfg.pruning
    return magnitude_prune(
        state,
        prev_masks,
        round_sparsity(p.rate, r),
        scope=p.scope,
        eligible=eligible_names(list(prev_masks), p.keep_first_dense, p.keep_last_dense),
    )


def spent_before(ctx: MaskContext, prev: str, k: int) -> dict[str, int]:
    """Return the bookkeeping of the mask a round starts from (the dense parent run for round 1)."""
    if prev == DENSE:
        return {"examples": ctx.parent_examples(k), "distill_examples": 0}
    info = ctx.stage_info(mask_key(prev))
    return {"examples": info["examples"], "distill_examples": info.get("distill_examples", 0)}  # None stays unknown
