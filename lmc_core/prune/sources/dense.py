"""The unpruned network, shared by every source as its round 0."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmc_core.prune.sources.base import MaskSource

if TYPE_CHECKING:
    from lmc_core.foundations.config import StudyConfig


class Dense(MaskSource):
    """The unpruned network: round 0 only."""

    kind, usage = "dense", "dense"

    def rounds(self, cfg: StudyConfig) -> list[int]:
        return [0]
