"""Mask sources: where a study's sparse masks come from, one pluggable class per kind of source.

A source is named `kind` or `kind.arg[.arg]` (e.g. `imp`, `distilled.dm`, `combined.dm.r2`). For each
(rewind step k, round r >= 1) it names the stages its mask needs and builds the mask from their
outputs. Round 0 of every source is the dense network, shared by all sources. Every mask records
the sample-gradient evaluations spent finding it (`examples`, cumulative over rounds and including
the dense parent run to step k): the unit of the paper's "150x fewer training points".
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # the study and the config import this module; the reverse imports are only for type hints
    from lmc_core.foundations.config import StudyConfig
    from lmc_core.prune.magnitude import Masks
    from lmc_core.data.dataset import Dataset
    from lmc_core.foundations.events import Callback
    from lmc_core.studies.run import Run

DENSE = "dense"


def mask_id(source: str, k: int, r: int) -> str:
    """Return the id of a source's round-r mask found with rewind step k; every round 0 is 'dense'."""
    return DENSE if r == 0 else f"{source}-k{k}-r{r}"


def mask_key(mid: str) -> str:
    return f"mask/{mid}"


def copies_key(mid: str, k: int, pair: int) -> str:
    return f"copies/{mid}/k{k}/p{pair}"


def path_key(mid: str, k: int, pair: int) -> str:
    return f"path/{mid}/k{k}/p{pair}"


def rewind_key(k: int) -> str:
    return "init" if k == 0 else f"parent/k{k}"


def synthetic_key(name: str) -> str:
    return f"synthetic/{name}"


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
        raise NotImplementedError

    def build(self, run: Run, k: int, r: int, callback: Callback) -> tuple[Masks, dict[str, Any]]:
        """Return the round-r mask and its bookkeeping: `examples` (cumulative) and optionally `distill_examples`."""
        raise NotImplementedError


MASK_SOURCES: dict[str, type[MaskSource]] = {}


def register_mask_source(cls: type[MaskSource]) -> type[MaskSource]:
    MASK_SOURCES[cls.kind] = cls
    return cls


def get_mask_source(name: str) -> MaskSource:
    """Return the source called `name`, or a ValueError listing the registered kinds and their syntax."""
    kind, *args = name.split(".")
    cls = MASK_SOURCES.get(kind)
    if cls is None or len(args) != cls.arity:
        known = ", ".join(c.usage for c in MASK_SOURCES.values())
        raise ValueError(f"unknown mask source {name!r}; registered: {known}")
    return cls(name, args)


def _prune(run: Run, state: dict, prev_masks: Masks, r: int) -> Masks:
    from lmc_core.prune.magnitude import eligible_names, magnitude_prune, round_sparsity  # torch: keep config validation (the API) torch-free
    p = run.cfg.pruning
    return magnitude_prune(
        state, prev_masks, round_sparsity(p.rate, r), scope=p.scope,
        eligible=eligible_names(list(prev_masks), p.keep_first_dense, p.keep_last_dense),
    )


def _spent_before(run: Run, prev: str, k: int) -> dict[str, int]:
    """Return the bookkeeping of the mask a round starts from (the dense parent run for round 1)."""
    if prev == DENSE:
        return {"examples": run.parent_examples(k), "distill_examples": 0}
    info = run.stage_info(mask_key(prev))
    return {"examples": info["examples"], "distill_examples": info.get("distill_examples", 0)}


@register_mask_source
class Dense(MaskSource):
    """The unpruned network: round 0 only."""

    kind, usage = "dense", "dense"

    def rounds(self, cfg: StudyConfig) -> list[int]:
        return [0]


@register_mask_source
class IMP(MaskSource):
    """Iterative magnitude pruning on real data: prune copy A of pair 0 trained in the previous round, rewind to k."""

    kind, usage = "imp", "imp"

    def previous(self, k: int, r: int) -> str:
        return mask_id(self.name, k, r - 1)

    def dependencies(self, cfg: StudyConfig, k: int, r: int) -> list[str]:
        prev = self.previous(k, r)
        return [copies_key(prev, k, 0)] + ([mask_key(prev)] if prev != DENSE else [])

    def build(self, run: Run, k: int, r: int, callback: Callback) -> tuple[Masks, dict[str, Any]]:
        prev = self.previous(k, r)
        trained = copies_key(prev, k, 0)
        masks = _prune(run, run.load_state(trained, "a"), run.load_masks(prev), r)
        spent = _spent_before(run, prev, k)
        spent["examples"] += run.stage_info(trained)["copies"][0]["examples"]
        return masks, spent


@register_mask_source
class Combined(IMP):
    """Real-data IMP started from a distilled mask at round R (McDermott & Parhi 2025; the authors' combined_prune.py)."""

    kind, usage, arity = "combined", "combined.<set>.r<R>", 2

    def __init__(self, name: str, args: list[str]):
        super().__init__(name, args)
        self.set = args[0]
        match = re.fullmatch(r"r(\d+)", args[1])
        if match is None:
            raise ValueError(f"mask source {name!r}: the start round is written r<R>, e.g. combined.{self.set}.r2")
        self.start = int(match.group(1))

    def problem(self, cfg: StudyConfig) -> str | None:
        if f"distilled.{self.set}" not in cfg.pruning.mask_sources:
            return f"needs distilled.{self.set} among the mask sources (its round-{self.start} subnetwork is trained on real data and pruned)"
        if not 1 <= self.start < cfg.pruning.rounds:
            return f"start round {self.start} must be in [1, pruning.rounds - 1 = {cfg.pruning.rounds - 1}]"
        return None

    def rounds(self, cfg: StudyConfig) -> list[int]:
        return list(range(self.start + 1, cfg.pruning.rounds + 1))

    def previous(self, k: int, r: int) -> str:
        return mask_id(f"distilled.{self.set}", k, r - 1) if r == self.start + 1 else mask_id(self.name, k, r - 1)


@register_mask_source
class DistilledIMP(MaskSource):
    """IMP whose training runs on a synthetic set (the paper's distilled pruning): train, prune, rewind to k."""

    kind, usage, arity = "distilled", "distilled.<set>", 1

    def __init__(self, name: str, args: list[str]):
        super().__init__(name, args)
        self.set = args[0]

    def problem(self, cfg: StudyConfig) -> str | None:
        if self.set not in cfg.synthetic.sets:
            return f"no synthetic set named {self.set!r}; define it under synthetic.sets (defined: {sorted(cfg.synthetic.sets) or 'none'})"
        return None

    def dependencies(self, cfg: StudyConfig, k: int, r: int) -> list[str]:
        prev = mask_id(self.name, k, r - 1)
        return [synthetic_key(self.set), rewind_key(k)] + ([mask_key(prev)] if prev != DENSE else [])

    def training_data(self, run: Run) -> Dataset:
        return run.synthetic_dataset(self.set)

    def build(self, run: Run, k: int, r: int, callback: Callback) -> tuple[Masks, dict[str, Any]]:
        prev = mask_id(self.name, k, r - 1)
        prev_masks = run.load_masks(prev)
        result = run.train_on_small_set(self.training_data(run), k, None if prev == DENSE else prev_masks, self.set,
                                        stage=mask_key(mask_id(self.name, k, r)), callback=callback)
        spent = _spent_before(run, prev, k)
        spent["examples"] += result.examples
        if prev == DENSE and self.kind == "distilled":
            spent["distill_examples"] = run.stage_info(synthetic_key(self.set))["real_examples"]
        return _prune(run, result.state, prev_masks, r), spent


@register_mask_source
class SubsetIMP(DistilledIMP):
    """The control: IMP trained, with the synthetic recipe, on a random real subset with the synthetic set's class counts."""

    kind, usage, arity = "subset", "subset.<set>", 1

    def training_data(self, run: Run) -> Dataset:
        return run.subset_dataset(self.set)


@register_mask_source
class RandomPruning(MaskSource):
    """Random masks with IMP's per-layer counts at the same round (uniform per layer when the study has no IMP)."""

    kind, usage = "random", "random"

    def dependencies(self, cfg: StudyConfig, k: int, r: int) -> list[str]:
        return [mask_key(mask_id("imp", k, r))] if "imp" in cfg.pruning.mask_sources else []

    def build(self, run: Run, k: int, r: int, callback: Callback) -> tuple[Masks, dict[str, Any]]:
        from lmc_core.prune.magnitude import dense_masks, eligible_names, magnitude_prune, random_masks_like, round_sparsity
        from lmc_core.foundations.seeding import derive_seed

        p = run.cfg.pruning
        if "imp" in p.mask_sources:
            reference = run.load_masks(mask_id("imp", k, r))
        else:
            dense = dense_masks(run.template)
            reference = magnitude_prune(
                {n: m.float() for n, m in dense.items()},  # all ties: layerwise counts only matter here
                dense,
                round_sparsity(p.rate, r),
                scope="layerwise",
                eligible=eligible_names(list(dense), p.keep_first_dense, p.keep_last_dense),
            )
        return random_masks_like(reference, derive_seed(p.seed, f"random-k{k}-r{r}")), {"examples": 0}
