"""Progress events: the one shape of progress that the CLI, the worker and the dashboard all consume."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """`step` of `total` done in `stage`; `metrics` holds the latest numbers (loss, lr, ...)."""

    stage: str
    step: int
    total: int
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Callback = Callable[[Event], None]


def no_callback(event: Event) -> None:
    """Ignore an event; the default sink."""
