"""A study's run directory: plans, executes and reloads stages. Re-running skips finished stages.

A stage is done when its `stage.json` exists; that file is written last, so an interrupted run loses
at most the stage in flight. What each kind of stage computes lives in `lmc_core.studies.stages`;
the tables a run reports live in `lmc_core.studies.tables`.
"""

from __future__ import annotations

import copy
import shutil
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from lmc_core.connectivity.path import PathResult
from lmc_core.data.augment import Augmenter
from lmc_core.data.dataset import Dataset, load_dataset
from lmc_core.data.dsa import DSA, resolve_strategy
from lmc_core.distill.evaluation import matched_subset, recipe
from lmc_core.distill.synthetic import SyntheticSet
from lmc_core.foundations.config import StudyConfig
from lmc_core.foundations.device import resolve_device
from lmc_core.foundations.events import Callback, Event, no_callback
from lmc_core.foundations.layout import CONFIG_FILE, DENSE, MANIFEST_FILE, STAGE_FILE, mask_key, rewind_key, stage_dir, synthetic_key
from lmc_core.foundations.storage import load_arrays, load_json, load_tensors, save_json
from lmc_core.foundations.types import Masks, Splits, State
from lmc_core.foundations.version import versions
from lmc_core.landscape.surface import Surface
from lmc_core.models import build_model
from lmc_core.prune.magnitude import dense_masks, rewind
from lmc_core.studies import tables
from lmc_core.studies.plan import Stage, plan
from lmc_core.studies.stages import STAGE_KINDS
from lmc_core.studies.validation import validate_config
from lmc_core.train.loop import TrainResult, total_steps, train

MASKS_FILE = "masks.safetensors"  # a mask stage's masks
KEPT_FILE = "kept.safetensors"  # under pruning.rewind = "weights": the pruned network's entries that do not rewind


class Run:
    """A study's run directory: plans, executes and reloads stages. Re-running skips finished stages.

    Besides storing stages, a Run is the context every stage kind and mask source builds from
    (`lmc_core.prune.sources.MaskContext` names the part mask sources may use).
    """

    def __init__(self, cfg: StudyConfig, root: str | Path = "runs"):
        self.cfg = validate_config(cfg)  # a config built in a notebook meets the registries here
        self.id = cfg.run_id()
        self.dir = Path(root) / self.id
        self.stages = plan(cfg)
        self._by_key = {s.key: s for s in self.stages}

    # ---- lazily built context -------------------------------------------------------------
    @cached_property
    def device(self) -> torch.device:
        return resolve_device(self.cfg.device)

    @cached_property
    def data(self) -> Dataset:
        return load_dataset(self.cfg.data).to(self.device)

    @cached_property
    def augmenter(self) -> Augmenter:
        return Augmenter(self.cfg.data, self.data.kind)

    @cached_property
    def template(self) -> torch.nn.Module:
        """The architecture on the device; stages copy it and never train it."""
        return build_model(self.cfg.model, self.data.input_shape, self.data.num_classes, self.cfg.seed).to(self.device)

    @cached_property
    def synthetic_augmenter(self) -> DSA:
        """The DSA applied whenever a network trains on a synthetic set or its size-matched real subset."""
        return DSA(resolve_strategy(self.cfg.synthetic.augmentation, self.data.kind), self.data.kind)

    @property
    def total_steps(self) -> int:
        return total_steps(self.cfg.train, len(self.data.x_train))

    def fresh_model(self) -> torch.nn.Module:
        """Return a copy of the template that a stage may train."""
        return copy.deepcopy(self.template)

    def all_splits(self) -> Splits:
        """Return both evaluation splits of the dataset."""
        d = self.data
        return {"test": (d.x_test, d.y_test), "train": (d.x_train, d.y_train)}

    def splits(self) -> Splits:
        """Return the splits the study evaluates paths and copies on (`stability.splits`)."""
        both = self.all_splits()
        return {s: both[s] for s in self.cfg.stability.splits}

    def to_device(self, state: State) -> State:
        return {k: v.to(self.device) for k, v in state.items()}

    # ---- files ----------------------------------------------------------------------------
    def stage_dir(self, key: str) -> Path:
        return stage_dir(self.dir, key)

    def is_done(self, key: str) -> bool:
        return (self.stage_dir(key) / STAGE_FILE).is_file()

    def stage_info(self, key: str) -> dict[str, Any]:
        info: dict[str, Any] = load_json(self.stage_dir(key) / STAGE_FILE)
        return info

    def load_state(self, key: str, name: str = "state") -> State:
        """Return the weights a stage saved: "state" for init and parents, "a" / "b" for a pair's copies."""
        return load_tensors(self.stage_dir(key) / f"{name}.safetensors")

    def load_masks(self, mid: str) -> Masks:
        if mid == DENSE:
            return dense_masks(self.template)
        return load_tensors(self.stage_dir(mask_key(mid)) / MASKS_FILE)

    def load_kept(self, mid: str) -> State | None:
        """Return what a subnetwork of mask `mid` keeps instead of rewinding, or None for a full rewind.

        Under `pruning.rewind = "weights"` a mask stage saves the biases, norms and buffers of the network it pruned;
        the dense mask, a full rewind, and a mask no trained network chose (random) keep nothing.
        """
        if mid == DENSE or self.cfg.pruning.rewind == "full":
            return None
        path = self.stage_dir(mask_key(mid)) / KEPT_FILE
        return load_tensors(path) if path.is_file() else None

    def start_state(self, mid: str, k: int) -> State:
        """Return the state a subnetwork of mask `mid` starts from at rewind step k (the copies' start, on the device).

        theta_k with the pruned weights zeroed, and, under `pruning.rewind = "weights"`, the biases, norms and
        buffers of the network the mask pruned in place of theta_k's (`load_kept`).
        """
        model = self.fresh_model()
        rewind(model, self.load_state(rewind_key(k)), None if mid == DENSE else self.load_masks(mid), self.load_kept(mid))
        return {n: v.detach().clone() for n, v in model.state_dict().items()}

    def load_path(self, key: str) -> PathResult:
        info = self.stage_info(key)
        return PathResult.from_arrays(load_arrays(self.stage_dir(key) / "path.npz"), info["bn_mode"])

    def load_surface(self, key: str) -> Surface:
        return Surface.from_arrays(load_arrays(self.stage_dir(key) / "surface.npz"))

    def synthetic_set(self, name: str) -> SyntheticSet:
        return SyntheticSet.load(self.stage_dir(synthetic_key(name)))

    def synthetic_dataset(self, name: str) -> Dataset:
        return self.synthetic_set(name).as_dataset(self.data)

    def subset_dataset(self, name: str) -> Dataset:
        """Return the random real subset with set `name`'s class counts (the control of distilled pruning)."""
        return matched_subset(self.synthetic_set(name), self.data, self.cfg.seed).as_dataset(self.data)

    def train_on_small_set(
        self,
        train_set: Dataset,
        k: int,
        masks: Masks | None,
        set_name: str,
        stage: str,
        callback: Callback,
        kept: State | None = None,
    ) -> TrainResult:
        """Train the subnetwork (masks, theta_k, kept) on a synthetic set or its matched subset with the synthetic recipe.

        The set's learned lr (MTT) applies to its matched subset too, so the control differs only in the data.
        The noise seeds are pair 0's copy A seeds, the copy real-data IMP prunes. `kept` (a weights-only rewind)
        overrides theta_k's biases, norms and buffers; see `lmc_core.prune.magnitude.rewind`.
        """
        lr = self.synthetic_set(set_name).lr if self.cfg.synthetic.use_learned_lr else None
        model = self.fresh_model()
        rewind(model, self.load_state(rewind_key(k)), masks, kept)
        seed = self.cfg.stability.pairs[0][0]
        return train(
            model,
            train_set,
            recipe(self.cfg.synthetic.train, lr),
            self.synthetic_augmenter,
            data_seed=seed,
            augment_seed=seed,
            masks=masks,
            stage=stage,
            callback=callback,
        )

    def parent_examples(self, k: int) -> int:
        return 0 if k == 0 else self.stage_info(rewind_key(k))["examples"]

    def write_manifest(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        save_json(self.dir / CONFIG_FILE, self.cfg.model_dump(mode="json"))
        manifest = self.dir / MANIFEST_FILE
        if not manifest.exists():
            save_json(manifest, {"run_id": self.id, "name": self.cfg.name, "created": time.time(), "versions": versions()})

    # ---- execution ------------------------------------------------------------------------
    def run(self, callback: Callback = no_callback) -> list[dict[str, Any]]:
        """Execute every unfinished stage in order and return the study table (see `table`)."""
        self.write_manifest()
        todo = [s for s in self.stages if not self.is_done(s.key)]
        done = len(self.stages) - len(todo)
        callback(Event("study", done, len(self.stages), message=f"{len(todo)} of {len(self.stages)} stages to run"))
        for stage in todo:
            self.execute(stage, callback)
            done += 1
            callback(Event("study", done, len(self.stages), message=stage.key))
        return self.table()

    def execute(self, stage: Stage, callback: Callback = no_callback) -> dict[str, Any]:
        """Run one stage whose dependencies are done, persist its outputs, and return its stage.json."""
        missing = [d for d in stage.deps if not self.is_done(d)]
        if missing:
            raise RuntimeError(f"stage {stage.key} needs unfinished stages {missing}")
        out = self.stage_dir(stage.key)
        if out.exists():  # leftovers of an interrupted attempt
            shutil.rmtree(out)
        out.mkdir(parents=True)
        t0 = time.perf_counter()
        info = STAGE_KINDS.get(stage.kind).run(self, stage, out, callback)
        info = {
            "key": stage.key,
            "kind": stage.kind,
            **stage.params,
            **info,
            "seconds": time.perf_counter() - t0,
            "device": str(self.device),
        }
        save_json(out / STAGE_FILE, info)
        return info

    # ---- results --------------------------------------------------------------------------
    def table(self) -> list[dict[str, Any]]:
        """Return the study table: one row per (source, rewind step, round); see `tables.study_table`."""
        return tables.study_table(self)

    def analysis_table(self) -> list[dict[str, Any]]:
        """Return one row per analysed subnetwork and pair; see `tables.analysis_table`."""
        return tables.analysis_table(self)

    def synthetic_table(self) -> list[dict[str, Any]]:
        """Return one row per synthetic set; see `tables.synthetic_table`."""
        return tables.synthetic_table(self)
